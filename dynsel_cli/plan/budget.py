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
