"""Per-sample representativeness R and rarity D from the factor tables (docs/method.md, "The paper's scored method").

With a_ij = z_ij / Σ_j z_ij and unit frequency f_j:  R_i = Σ_j a_ij f_j,  D_i = Σ_j a_ij log(1 / f_j).
The gather over each sample's k units runs in the kernels package (CPU or Triton, same result).
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import DynselError
from ..formats.factors import FactorTables

NORMALISERS = ("rank", "minmax")


def normalise(values: np.ndarray, how: str = "rank") -> np.ndarray:
    """Scale scores to [0, 1] as float32.

    rank: average rank of each value divided by N - 1 (ties share their mean rank; robust to outliers);
    minmax: (x - min) / (max - min). A constant input maps to 0.5 either way.
    """
    if how not in NORMALISERS:
        raise DynselError(f"--normalise {how!r}: use one of {', '.join(NORMALISERS)}")
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return np.zeros(0, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return np.full(len(x), 0.5, dtype=np.float32)
    if how == "minmax":
        return ((x - lo) / (hi - lo)).astype(np.float32)
    unique, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first_rank = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean_rank = first_rank + (counts - 1) / 2.0
    return (mean_rank[inverse] / (len(x) - 1)).astype(np.float32)


def raw_scores(tables: FactorTables, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised (R, D), float32 [N], in factor-table row order."""
    frequency = tables.units.frequency.astype(np.float32)
    return kernels.factor_scores(tables.samples.units, tables.samples.acts, frequency, device=device)


def representativeness_and_rarity(tables: FactorTables, how: str = "rank", device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Normalised (R, D) in [0, 1], float32 [N], in factor-table row order."""
    r, d = raw_scores(tables, device)
    return normalise(r, how), normalise(d, how)
