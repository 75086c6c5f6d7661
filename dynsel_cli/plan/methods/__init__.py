"""Selection methods, one module each, found by the registry: a module here that declares ``METHOD``
(:class:`~.base.Method`) is a ``--method``. Every method returns per-epoch sets of factor-table rows
(sorted ascending; the order within an epoch is drawn later, by the planner).

Adding a method: a module with its ``select`` and ``METHOD``, its test, and its line in docs/method.md.
"""

from __future__ import annotations

import importlib
import itertools
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...devices import resolve_device
from ...errors import DynselError
from ...limits import check_epochs
from ..budget import QUOTA_MODES, epoch_budget, quotas_for
from ..neighbour_index import MODES as NEIGHBOURS
from .base import Chosen, Context, Method, all_rows

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ...config import PlanConfig
    from ..inputs import PlanInputs
    from ..signals import Signals


def _discover() -> dict[str, Method]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            declared = getattr(importlib.import_module(f"{__name__}.{module.name}"), "METHOD", None)
            if isinstance(declared, Method):
                found.append(declared)
    return {method.name: method for method in sorted(found, key=lambda m: (m.position, m.name))}


REGISTRY: dict[str, Method] = _discover()
METHODS: tuple[str, ...] = tuple(REGISTRY)
NEEDS_FEATURES: tuple[str, ...] = tuple(name for name, method in REGISTRY.items() if method.needs_features)
PENALTIES = ("additive", "multiplicative", "none")
LABEL_TRUST = ("vote", "probe", "probe-odds", "probe-checked", "probe-heldout")
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


def method_of(name: str) -> Method:
    """The registered method called ``name`` (a usage error, exit 2, naming the choices otherwise)."""
    if name not in REGISTRY:
        raise DynselError(f"--method {name!r}: use one of {', '.join(METHODS)}")
    return REGISTRY[name]


def needs(config: PlanConfig, n_samples: int) -> Needs:
    """What ``config.method`` needs from factor tables of ``n_samples`` rows (nothing when every epoch is full)."""
    method = method_of(config.method)
    if config.method == "full" or epoch_budget(config.ratio, n_samples) == n_samples:
        return Needs((), False)
    return Needs(method.scores, method.needs_codes(config))


def quotas_apply(name: str) -> bool:
    """Whether --class-quota changes what the method ``name`` selects (k-center covers space, not classes)."""
    return method_of(name).quotas_apply


def validate(config: PlanConfig) -> None:
    method = method_of(config.method)
    check_epochs(config.epochs)
    if not 0 <= config.full_epochs <= config.epochs:
        raise DynselError(f"--full-epochs {config.full_epochs}: must be between 0 and --epochs ({config.epochs})")
    resolve_device(config.device, needs_triton=method.needs_triton)
    if config.class_quota not in QUOTA_MODES:
        raise DynselError(f"--class-quota {config.class_quota!r}: use one of {', '.join(QUOTA_MODES)}")
    if not config.trust_full > 0:
        raise DynselError(f"--trust-full {config.trust_full}: must be > 0 (turn label trust off with --no-trust)")
    if config.label_trust not in LABEL_TRUST:
        raise DynselError(f"--label-trust {config.label_trust!r}: use one of {', '.join(LABEL_TRUST)}")
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
    """Run the configured method over all epochs (``vectors``: the features, for methods that need them).

    ``inputs`` must hold what :func:`needs` asks for. Epochs are selected lazily, as ``rows`` is iterated.
    """
    validate(config)
    method = method_of(config.method)
    if method.needs_features and vectors is None:
        raise DynselError(f"--method {config.method} works on the features: pass --features FEATURES")
    n = inputs.n_samples
    budget = epoch_budget(config.ratio, n)
    n_select_epochs = config.epochs - config.full_epochs
    labels = inputs.labels
    context = Context(
        inputs, config, vectors, n, budget, n_select_epochs, labels, quotas_for(config.class_quota, labels, budget)
    )
    chosen = Chosen(all_rows(n, n_select_epochs)) if budget == n else method.select(context)
    lambdas: list[float | None] = list(chosen.lambdas) if chosen.lambdas is not None else [None] * n_select_epochs
    counts = [n if config.method == "full" else budget] * n_select_epochs + [n] * config.full_epochs
    return Selection(
        rows=itertools.chain(chosen.rows, all_rows(n, config.full_epochs)),
        counts=counts,
        lambdas=lambdas + [None] * config.full_epochs,
        signals=chosen.signals,
    )
