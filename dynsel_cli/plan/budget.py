"""Exact budgets: how many samples an epoch holds, overall and per class."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..errors import DynselError


def epoch_budget(ratio: float, n_samples: int) -> int:
    """ceil(ratio · N), computed exactly (0.3 · 2000 is 600, not 601 through float rounding)."""
    if not 0.0 < ratio <= 1.0:
        raise DynselError(f"--ratio {ratio}: must be in (0, 1]")
    return min(n_samples, math.ceil(Fraction(repr(float(ratio))) * n_samples))


def class_quotas(labels: np.ndarray, budget: int) -> np.ndarray:
    """Split ``budget`` over classes in proportion to their sizes (largest remainder; ties → lower class id)."""
    sizes = np.bincount(labels).astype(np.int64)
    n = int(sizes.sum())
    exact = [Fraction(int(s) * budget, n) for s in sizes]
    quotas = np.array([math.floor(q) for q in exact], dtype=np.int64)
    remainder = budget - int(quotas.sum())
    order = sorted(range(len(sizes)), key=lambda c: (-(exact[c] - quotas[c]), c))
    for c in order[:remainder]:
        quotas[c] += 1
    if (quotas > sizes).any():  # cannot happen with proportional shares; guard the invariant anyway
        raise DynselError("class quotas exceed class sizes")
    return quotas


QUOTA_MODES = ("proportional", "balanced", "content", "none")


def balanced_class_quotas(labels: np.ndarray, budget: int) -> np.ndarray:
    """Split ``budget`` as evenly as possible over classes, capped by class size (water-filling).

    Every class gets the same share unless it is too small, in which case it contributes all its samples
    and the rest is shared again among the larger classes; remainders go to the lower class ids.
    """
    sizes = np.bincount(labels).astype(np.int64)
    quotas = np.zeros_like(sizes)
    left = min(int(budget), int(sizes.sum()))
    open_classes = [c for c in range(len(sizes)) if sizes[c] > 0]
    while left > 0 and open_classes:
        share, extra = divmod(left, len(open_classes))
        still_open = []
        for position, c in enumerate(open_classes):
            want = share + (1 if position < extra else 0)
            give = min(want, int(sizes[c] - quotas[c]))
            quotas[c] += give
            left -= give
            if quotas[c] < sizes[c]:
                still_open.append(c)
        if len(still_open) == len(open_classes):
            break
        open_classes = still_open
    return quotas


def quotas_for(mode: str, labels: np.ndarray | None, budget: int) -> np.ndarray | None:
    """Per-class budgets for ``--class-quota MODE`` (None: no quotas, or no labels)."""
    if labels is None or mode == "none":
        return None
    if mode == "balanced":
        return balanced_class_quotas(labels, budget)
    # "content" with every row weighing 1 is the row share; a method with content weights (dynsel)
    # replaces these quotas with its own (methods/dynsel.py)
    return class_quotas(labels, budget)


CLASS_FLOOR = 0.8  # content quotas: a class keeps at least this share of its distinct-row share of the budget


def class_floors(labels: np.ndarray, groups: np.ndarray | None, budget: int, floor: float = CLASS_FLOOR) -> np.ndarray:
    """Per class, ⌈floor · budget · distinct_c / Σ distinct⌉ (⌊…⌋ where the ceilings overdraw the budget), capped by class size: distinct_c counts the
    class's near-duplicate groups (its rows when ``groups`` is None), so copies earn no floor but a class
    that the label-trust signal distrusts wholesale still keeps its turn."""
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.bincount(labels).astype(np.int64)
    if groups is None:
        distinct = sizes
    else:
        pairs = np.unique(np.stack([labels, np.asarray(groups, dtype=np.int64)]), axis=1)
        distinct = np.bincount(pairs[0], minlength=len(sizes)).astype(np.int64)
    total = int(distinct.sum())
    if total == 0:
        return np.zeros_like(sizes)
    exact = [Fraction(floor).limit_denominator(1000) * int(budget) * int(d) / total for d in distinct]
    wanted = np.minimum(np.array([math.ceil(q) for q in exact], dtype=np.int64), sizes)
    if int(wanted.sum()) > budget:  # many tiny classes: rounding up would overdraw the epoch
        wanted = np.minimum(np.array([math.floor(q) for q in exact], dtype=np.int64), sizes)
    return wanted


def content_class_quotas(
    labels: np.ndarray, weights: np.ndarray, budget: int, floors: np.ndarray | None = None
) -> np.ndarray:
    """Split ``budget`` over classes in proportion to the exposure mass each holds, Σ π_i over its rows
    (distinct, trusted content), not its row count; capped by class size, the excess shared again by mass.

    ``floors`` (per class, see :func:`class_floors`) are given first and the rest of the budget is shared
    by mass. Largest remainder, ties to the lower class id. A class whose mass is 0 gets only its floor
    unless the budget cannot be filled otherwise.
    """
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.bincount(labels).astype(np.int64)
    mass = np.bincount(labels, weights=np.asarray(weights, dtype=np.float64), minlength=len(sizes))
    quotas = (
        np.zeros_like(sizes) if floors is None else np.minimum(np.asarray(floors, dtype=np.int64)[: len(sizes)], sizes)
    )
    left = min(int(budget), int(sizes.sum())) - int(quotas.sum())
    if left < 0:
        raise DynselError("class floors exceed the epoch budget")
    open_classes = quotas < sizes
    while left > 0 and open_classes.any():
        share = np.where(open_classes, mass, 0.0)
        if share.sum() <= 0:  # only mass-less rows remain: share what is left by rows
            share = np.where(open_classes, (sizes - quotas).astype(np.float64), 0.0)
        exact = share * left / share.sum()
        give = np.floor(exact).astype(np.int64)
        order = sorted(np.flatnonzero(open_classes).tolist(), key=lambda c: (-(exact[c] - give[c]), c))
        for c in order[: left - int(give.sum())]:
            give[c] += 1
        give = np.minimum(give, sizes - quotas)
        quotas += give
        left -= int(give.sum())
        open_classes = quotas < sizes
    return quotas
