"""What a selection method is: its declaration (:class:`Method`), what it is given (:class:`Context`) and
what it returns (:class:`Chosen`), with the helpers several methods share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ... import kernels

if TYPE_CHECKING:
    from ...config import PlanConfig
    from ..inputs import PlanInputs
    from ..signals import Signals


@dataclass(frozen=True)
class Context:
    """Everything a method's ``select`` may read: the inputs, the settings and the budgets derived from them."""

    inputs: PlanInputs
    config: PlanConfig
    vectors: np.ndarray | None  # the features, for methods with ``needs_features``
    n: int  # rows of the factor tables
    budget: int  # rows per selected epoch
    epochs: int  # epochs to select (--epochs minus --full-epochs)
    labels: np.ndarray | None  # class ids 0..C-1 per row
    quotas: np.ndarray | None  # rows per class per epoch (--class-quota), None without labels or quotas


@dataclass(frozen=True)
class Chosen:
    """A method's epochs (int64 rows, sorted, computed lazily) and what the report needs to explain them."""

    rows: Iterator[np.ndarray]
    lambdas: list[float] | None = None  # the scheduler weight per epoch, where the method has one
    signals: Signals | None = None  # near-duplicate groups and label trust behind the weights


def _no_codes(config: PlanConfig) -> bool:
    return False


@dataclass(frozen=True)
class Method:
    """One selection method, declared by its module under ``plan/methods/`` as ``METHOD``."""

    name: str  # the --method value
    help: str  # one line for --help and the docs
    select: Callable[[Context], Chosen]
    position: int  # where it is listed (help, error messages): the default first, then baselines
    needs_features: bool = False  # reads the encoder's features (pass --features)
    needs_triton: bool = False  # scores through the fused kernels (the device must support them)
    quotas_apply: bool = True  # --class-quota changes what it selects
    scores: tuple[str, ...] = ()  # normalised scores it reads: "R" (representativeness), "D" (rarity)
    needs_codes: Callable[[PlanConfig], bool] = field(default=_no_codes)  # every row's SAE code at once


def uniform(
    n: int, budget: int, rng: np.random.Generator, labels: np.ndarray | None = None, quotas: np.ndarray | None = None
) -> np.ndarray:
    """A uniform subset; with quotas, a uniform subset of each class (stratified), classes in id order."""
    if quotas is None or labels is None:
        return np.sort(rng.choice(n, size=budget, replace=False)).astype(np.int64)
    parts = []
    for c, quota in enumerate(quotas):
        members = np.flatnonzero(labels == c)
        parts.append(rng.choice(members, size=int(quota), replace=False))
    return np.sort(np.concatenate(parts)).astype(np.int64)


def repeat(choose: Callable[[], np.ndarray], epochs: int) -> Iterator[np.ndarray]:
    """A static method: one row set, chosen when the first epoch is asked for, in every epoch."""
    if epochs:
        rows = choose()
        for _ in range(epochs):
            yield rows


def all_rows(n: int, epochs: int) -> Iterator[np.ndarray]:
    for _ in range(epochs):
        yield np.arange(n, dtype=np.int64)


def scores_of(inputs: PlanInputs) -> tuple[np.ndarray, np.ndarray]:
    """(representativeness, rarity); rarity falls back to representativeness when it was not read."""
    if inputs.representativeness is None:
        raise ValueError("the plan inputs hold no scores: read them with the scores the method declares")
    return inputs.representativeness, inputs.rarity if inputs.rarity is not None else inputs.representativeness


def score_epochs(
    r: np.ndarray, d: np.ndarray, weights: list[float], context: Context, beta: float, tau: float
) -> Iterator[np.ndarray]:
    """Epochs chosen by the fused kernels: top keys of λ_t·R + (1−λ_t)·D under the usage penalty."""
    config = context.config
    # The penalty normaliser r·max(t, 1) is the usage expected under uniform selection. Below r = 1/N the
    # budget is 1 sample (a share of 1/N) and float32(r·t) can underflow to 0 or make c / norm overflow,
    # turning keys into nan (0/0, 0·inf) and the selection into "lowest indices"; so r is at least 1/N.
    # Plans with r >= 1/N are unchanged.
    params = kernels.SelectionParams(
        n_select=context.budget,
        lambdas=weights,
        ratio=max(config.ratio, 1.0 / max(len(r), 1)),
        beta=beta,
        penalty="additive" if config.penalty == "none" else config.penalty,
        decay=config.decay,
        tau=tau,
        seed=config.seed,
        labels=context.labels if context.quotas is not None else None,
        class_quota=context.quotas,
    )
    device = kernels.resolve_device(config.device)
    for chosen in kernels.select_epochs(r, d, params, device=device):
        yield np.asarray(chosen, dtype=np.int64)


def top(score: np.ndarray, context: Context) -> np.ndarray:
    """The ``budget`` highest scores (within class quotas when given), by the kernels' exact tie rule."""
    return next(score_epochs(score, score, [0.0], context, beta=0.0, tau=0.0))
