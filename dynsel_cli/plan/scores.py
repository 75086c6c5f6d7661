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


_BLOCK = 1 << 20  # values per block in the rank and min-max passes (bounds their float64 temporaries)


def normalise(values: np.ndarray, how: str = "rank") -> np.ndarray:
    """Scale scores to [0, 1] as float32.

    rank: average rank of each value divided by N - 1 (ties share their mean rank; robust to outliers);
    minmax: (x - min) / (max - min). A constant input maps to 0.5 either way.

    Memory: the input, the float32 result and, for rank, one int64 sort order and one sorted copy of the
    input (float32 input: 20 bytes per value in all); float64 arithmetic runs in blocks.
    """
    if how not in NORMALISERS:
        raise DynselError(f"--normalise {how!r}: use one of {', '.join(NORMALISERS)}")
    x = np.asarray(values)
    if x.dtype not in (np.float32, np.float64):  # float32 and float64 compare and sort like their float64 values
        x = x.astype(np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return np.full(n, 0.5, dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    if how == "minmax":
        for start in range(0, n, _BLOCK):
            out[start : start + _BLOCK] = (x[start : start + _BLOCK].astype(np.float64) - lo) / (hi - lo)
        return out
    _mean_ranks(x, out)
    return out


def _mean_ranks(x: np.ndarray, out: np.ndarray) -> None:
    """out[i] = float32(mean rank of x[i] / (N − 1)), ranks 0-based, ties sharing their mean.

    A value's tie group in the sorted values spans [left, right) (``searchsorted``); its mean rank
    ``left + (right − left − 1) / 2`` is the float64 expression ``np.unique``'s first rank and count give,
    so the result is bit-for-bit the unique-based definition. The queries run in sorted order, which
    keeps each binary search next to the last.
    """
    order = np.argsort(x)
    ordered = x[order]
    scale = len(x) - 1
    for start in range(0, len(x), _BLOCK):
        block = ordered[start : start + _BLOCK]
        left = np.searchsorted(ordered, block, side="left")
        right = np.searchsorted(ordered, block, side="right")
        out[order[start : start + _BLOCK]] = (left + (right - left - 1) / 2.0) / scale


def raw_scores(tables: FactorTables, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised (R, D), float32 [N], in factor-table row order."""
    frequency = tables.units.frequency.astype(np.float32)
    return kernels.factor_scores(tables.samples.units, tables.samples.acts, frequency, device=device)


def representativeness_and_rarity(
    tables: FactorTables, how: str = "rank", device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (R, D) in [0, 1], float32 [N], in factor-table row order."""
    r, d = raw_scores(tables, device)
    return normalise(r, how), normalise(d, how)
