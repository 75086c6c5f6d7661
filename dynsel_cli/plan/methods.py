"""Selection methods: dynsel's scheduled, penalised scoring and the baselines, all returning per-epoch
sets of factor-table rows (sorted ascending; ordering within the epoch happens later)."""

from __future__ import annotations

from dataclasses import dataclass
import itertools
from typing import Callable, Iterator

import numpy as np

from .. import kernels
from ..config import PlanConfig
from ..devices import resolve_device
from ..errors import DynselError
from ..limits import check_epochs
from . import streams
from .budget import QUOTA_MODES, class_floors, content_class_quotas, epoch_budget, quotas_for
from .geometric import kcenter_greedy, knn_density
from .inputs import PlanInputs
from .neighbour_index import MODES as NEIGHBOURS
from .rotation import rs2_epochs, weighted_rotation_epochs
from .schedule import scheduler_weights
from .scores import normalise
from .signals import Signals, compute_signals

METHODS = ("dynsel", "rs2", "score", "full", "random", "static-random", "static-top", "knn-density", "kcenter")
NEEDS_FEATURES = ("knn-density", "kcenter")
PENALTIES = ("additive", "multiplicative", "none")
LABEL_TRUST = ("vote", "probe", "probe-odds", "probe-checked")
DUP_RULES = ("fixed", "gap")


@dataclass(frozen=True)
class Selection:
    """Per-epoch row sets, produced one epoch at a time, and what the report needs to explain them."""

    rows: Iterator[np.ndarray]  # int64, sorted, one per epoch, computed when asked for
    counts: list[int]  # rows per epoch
    lambdas: list[float | None]  # scheduler weight per epoch (None where it does not apply)
    signals: Signals | None = None  # dynsel: near-duplicate groups and label trust behind the weights


@dataclass(frozen=True)
class Needs:
    """What a method reads from the factor tables besides ids and labels."""

    scores: tuple[str, ...]  # normalised scores: "R" (representativeness), "D" (rarity)
    codes: bool  # every sample's SAE code at once (dynsel's neighbour signals)


def needs(config: PlanConfig, n_samples: int) -> Needs:
    """What ``config.method`` needs from factor tables of ``n_samples`` rows (nothing when every epoch is full)."""
    if config.method == "full" or epoch_budget(config.ratio, n_samples) == n_samples:
        return Needs((), False)
    if config.method == "score":
        return Needs(("R", "D"), False)
    if config.method == "static-top":
        return Needs(("R",), False)
    return Needs((), config.method == "dynsel" and (config.dedup or config.trust))


def validate(config: PlanConfig) -> None:
    if config.method not in METHODS:
        raise DynselError(f"--method {config.method!r}: use one of {', '.join(METHODS)}")
    check_epochs(config.epochs)
    if not 0 <= config.full_epochs <= config.epochs:
        raise DynselError(f"--full-epochs {config.full_epochs}: must be between 0 and --epochs ({config.epochs})")
    resolve_device(config.device, needs_triton=config.method in ("score", "static-top"))
    if config.class_quota not in QUOTA_MODES:
        raise DynselError(f"--class-quota {config.class_quota!r}: use one of {', '.join(QUOTA_MODES)}")
    if not config.trust_full > 0:
        raise DynselError(f"--trust-full {config.trust_full}: must be > 0 (turn label trust off with --no-trust)")
    if config.label_trust not in LABEL_TRUST:
        raise DynselError(f"--label-trust {config.label_trust!r}: use one of {', '.join(LABEL_TRUST)}")
    if config.class_quota == "content" and config.method != "dynsel":
        raise DynselError(f"--class-quota content: only --method dynsel has content weights; use proportional with --method {config.method}")
    if config.neighbours not in NEIGHBOURS:
        raise DynselError(f"--neighbours {config.neighbours!r}: use one of {', '.join(NEIGHBOURS)}")
    if config.dup_rule not in DUP_RULES:
        raise DynselError(f"--dup-rule {config.dup_rule!r}: use one of {', '.join(DUP_RULES)}")
    if not 0 < config.dup_cosine <= 1:
        raise DynselError(f"--dup-cosine {config.dup_cosine}: must be in (0, 1]")
    if config.penalty not in PENALTIES:
        raise DynselError(f"--penalty {config.penalty!r}: use one of {', '.join(PENALTIES)}")
    if config.beta < 0 or config.tau < 0:
        raise DynselError("--beta and --tau must be non-negative")
    if not 0 < config.decay <= 1:
        raise DynselError(f"--decay {config.decay}: must be in (0, 1]")
    if not 0 <= config.seed < 2**32:
        raise DynselError(f"--seed {config.seed}: must be in [0, 2^32)")
    if config.batch_size < 1 or config.world_size < 1:
        raise DynselError("--batch-size and --world-size must be at least 1")


def select(inputs: PlanInputs, config: PlanConfig, vectors: np.ndarray | None = None) -> Selection:
    """Run the configured method over all epochs (``vectors``: the features, for the geometric baselines).

    ``inputs`` must hold what :func:`needs` asks for. Epochs are selected lazily, as ``rows`` is iterated.
    """
    validate(config)
    if config.method in NEEDS_FEATURES and vectors is None:
        raise DynselError(f"--method {config.method} works on the features: pass --features FEATURES")
    n = inputs.n_samples
    budget = epoch_budget(config.ratio, n)
    n_select_epochs = config.epochs - config.full_epochs
    labels = inputs.labels
    quotas = quotas_for(config.class_quota, labels, budget)
    lambdas: list[float | None] = [None] * n_select_epochs
    signals = None
    rows: Iterator[np.ndarray]
    if config.method == "full" or budget == n:
        rows = _full(n, n_select_epochs)
    elif config.method == "random":
        rows = (_uniform(n, budget, np.random.default_rng([config.seed, t, streams.RANDOM]), labels, quotas) for t in range(n_select_epochs))
    elif config.method == "static-random":
        rows = _repeat(lambda: _uniform(n, budget, np.random.default_rng([config.seed, 0, streams.RANDOM]), labels, quotas), n_select_epochs)
    elif config.method == "rs2":
        rows = rs2_epochs(n, budget, n_select_epochs, config.seed, labels, quotas)
    elif config.method == "dynsel":
        units, acts = inputs.codes if inputs.codes is not None else (None, None)
        signals = compute_signals(
            units, acts, int(inputs.manifest.get("width", 0)), labels,
            n=n,
            dedup=config.dedup,
            trust=config.trust,
            dup_cosine=config.dup_cosine,
            dup_rule=config.dup_rule,
            trust_full=config.trust_full,
            neighbours=config.neighbours,
            label_trust=config.label_trust,
        )
        if config.class_quota == "content" and labels is not None:
            quotas = content_class_quotas(labels, signals.weights, budget, class_floors(labels, signals.groups, budget))
        rows = weighted_rotation_epochs(signals.rotation_weights, budget, n_select_epochs, config.seed, labels, quotas, n=n)
    elif config.method == "static-top":
        r = _scores(inputs)[0]
        rows = _repeat(lambda: _top(r, budget, config, labels, quotas), n_select_epochs)
    elif config.method == "knn-density":
        assert vectors is not None
        density = normalise(knn_density(vectors), "rank")
        rows = _repeat(lambda: _top(density, budget, config, labels, quotas), n_select_epochs)
    elif config.method == "kcenter":
        assert vectors is not None
        rows = _repeat(lambda: kcenter_greedy(vectors, budget, config.seed), n_select_epochs)
    else:  # score: the paper's representativeness → rarity schedule with the usage-frequency penalty
        r, d = _scores(inputs)
        weights = scheduler_weights(config.schedule, config.lambda_start, config.lambda_end, n_select_epochs)
        beta = 0.0 if config.penalty == "none" else config.beta
        rows = _score_epochs(r, d, weights, budget, config, labels, quotas, beta, config.tau)
        lambdas = list(weights)
    counts = [n if config.method == "full" else budget] * n_select_epochs + [n] * config.full_epochs
    return Selection(
        rows=itertools.chain(rows, _full(n, config.full_epochs)),
        counts=counts,
        lambdas=lambdas + [None] * config.full_epochs,
        signals=signals,
    )


def _scores(inputs: PlanInputs) -> tuple[np.ndarray, np.ndarray]:
    if inputs.representativeness is None:
        raise ValueError("the plan inputs hold no scores: read them with the scores needs() names")
    return inputs.representativeness, inputs.rarity if inputs.rarity is not None else inputs.representativeness


def _full(n: int, epochs: int) -> Iterator[np.ndarray]:
    for _ in range(epochs):
        yield np.arange(n, dtype=np.int64)


def _repeat(choose: Callable[[], np.ndarray], epochs: int) -> Iterator[np.ndarray]:
    """A static method: one row set, chosen when the first epoch is asked for, in every epoch."""
    if epochs:
        rows = choose()
        for _ in range(epochs):
            yield rows


def _top(score: np.ndarray, budget: int, config: PlanConfig, labels: np.ndarray | None, quotas: np.ndarray | None) -> np.ndarray:
    """The ``budget`` highest scores (within class quotas when given), by the kernels' exact tie rule."""
    return next(_score_epochs(score, score, [0.0], budget, config, labels, quotas, beta=0.0, tau=0.0))


def _uniform(n: int, budget: int, rng: np.random.Generator, labels: np.ndarray | None = None, quotas: np.ndarray | None = None) -> np.ndarray:
    """A uniform subset; with quotas, a uniform subset of each class (stratified), classes in id order."""
    if quotas is None or labels is None:
        return np.sort(rng.choice(n, size=budget, replace=False)).astype(np.int64)
    parts = []
    for c, quota in enumerate(quotas):
        members = np.flatnonzero(labels == c)
        parts.append(rng.choice(members, size=int(quota), replace=False))
    return np.sort(np.concatenate(parts)).astype(np.int64)


def quotas_apply(method: str) -> bool:
    """Whether --class-quota changes what ``method`` selects (k-center covers space, not classes)."""
    return method not in ("full", "kcenter")


def _score_epochs(r: np.ndarray, d: np.ndarray, weights: list[float], budget: int, config: PlanConfig, labels: np.ndarray | None, quotas: np.ndarray | None, beta: float, tau: float) -> Iterator[np.ndarray]:
    # The penalty normaliser r·max(t, 1) is the usage expected under uniform selection. Below r = 1/N the
    # budget is 1 sample (a share of 1/N) and float32(r·t) can underflow to 0 or make c / norm overflow,
    # turning keys into nan (0/0, 0·inf) and the selection into "lowest indices"; so r is at least 1/N.
    # Plans with r >= 1/N are unchanged.
    params = kernels.SelectionParams(
        n_select=budget,
        lambdas=weights,
        ratio=max(config.ratio, 1.0 / max(len(r), 1)),
        beta=beta,
        penalty="additive" if config.penalty == "none" else config.penalty,
        decay=config.decay,
        tau=tau,
        seed=config.seed,
        labels=labels if quotas is not None else None,
        class_quota=quotas,
    )
    device = kernels.resolve_device(config.device)
    for chosen in kernels.select_epochs(r, d, params, device=device):
        yield np.asarray(chosen, dtype=np.int64)
