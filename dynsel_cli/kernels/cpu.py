"""numpy reference path of the fused scoring/selection loop.

Same float32 operations in the same order as the Triton kernels (see ``docs/kernels.md``): no
per-sample Python loops; loops only run over the k code slots, over row chunks, over classes and over
epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from ._common import epoch_scalars, run_chunks, unit_tables
from .philox import gumbel_from_uint32, philox_uint32

if TYPE_CHECKING:  # pragma: no cover
    from . import SelectionParams

__all__ = ["factor_scores_cpu", "epoch_keys_cpu", "composite_keys", "select_epochs_cpu"]

_ROW_CHUNK = 1 << 12  # rows per chunk in factor_scores_cpu (keeps the [chunk, k] transposes in cache)
_KEY_CHUNK = 1 << 16  # samples per chunk of the per-epoch key and mask passes


def factor_scores_cpu(units: np.ndarray, acts: np.ndarray, unit_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw representativeness and rarity per sample (float32 [N] each); inputs already validated.

    ``s_i = Σ_j w_ij`` with ``w_ij = acts_ij`` (0 for padding ``units_ij = -1``), accumulated over
    ``j = 0..k-1`` in float32; ``a_ij = w_ij / s_i`` (0 when ``s_i == 0``);
    ``R_i = Σ_j a_ij · f[u_ij]``, ``D_i = Σ_j a_ij · L[u_ij]``, each ``acc = acc + a·x`` in float32.
    """
    f_tab, l_tab = unit_tables(unit_freq)
    n, k = units.shape
    r_out = np.empty(n, dtype=np.float32)
    d_out = np.empty(n, dtype=np.float32)
    zero = np.float32(0.0)
    one = np.float32(1.0)

    def chunk(start: int, stop: int) -> None:
        u = np.ascontiguousarray(units[start:stop].T)  # [k, rows]
        valid = u >= 0
        w = np.where(valid, acts[start:stop].T, zero)  # float32 [k, rows]
        u_safe = np.where(valid, u, 0)
        s = np.zeros(stop - start, dtype=np.float32)
        for j in range(k):
            s = s + w[j]
        pos = s > zero
        s_safe = np.where(pos, s, one)
        r_acc = np.zeros(stop - start, dtype=np.float32)
        d_acc = np.zeros(stop - start, dtype=np.float32)
        for j in range(k):
            a = np.where(pos, w[j] / s_safe, zero)
            fj = np.where(valid[j], f_tab[u_safe[j]], zero)
            lj = np.where(valid[j], l_tab[u_safe[j]], zero)
            r_acc = r_acc + a * fj
            d_acc = d_acc + a * lj
        r_out[start:stop] = r_acc
        d_out[start:stop] = d_acc

    run_chunks(n, _ROW_CHUNK, chunk)
    return r_out, d_out


def epoch_keys_cpu(
    r: np.ndarray, d: np.ndarray, counts: np.ndarray, params: SelectionParams, t: int, start: int = 0
) -> np.ndarray:
    """float32 selection keys of epoch ``t`` given the counts ``c`` before epoch ``t``.

    ``B = R + lam·(D − R)``; ``q = c / norm``; additive ``S = B − beta·q`` or multiplicative
    ``S = B / (1 + beta·q)``; ``key = S + tau·G`` when ``tau > 0``. The arrays may be a slice of the
    samples beginning at sample ``start`` (the Gumbel noise is keyed by the sample index).
    """
    sc = epoch_scalars(params, t)
    f = np.float32
    b = r + f(sc.lam) * (d - r)
    q = counts / f(sc.norm)
    if params.penalty == "multiplicative":
        s = b / (f(1.0) + f(sc.beta) * q)
    else:
        s = b - f(sc.beta) * q
    if params.tau > 0:
        g = gumbel_from_uint32(
            philox_uint32(int(params.seed), t, np.arange(start, start + r.shape[0], dtype=np.uint64))
        )
        return s + f(sc.tau) * g
    return s


def composite_keys(key: np.ndarray, start: int = 0) -> np.ndarray:
    """Exact, device-independent ranking key: int64 ``(ordered(key) << 32) | (0xFFFFFFFF − i)``.

    ``ordered`` maps the float32 bit pattern to an int32 that sorts like the float (``-0.0`` is folded onto
    ``+0.0``); a larger composite means a larger key, and for equal keys the smaller sample index. ``key``
    may be a slice of the samples beginning at sample ``start``.
    """
    bits = np.ascontiguousarray(key, dtype=np.float32).view(np.int32)
    bits = np.where(bits == np.int32(-(2**31)), np.int32(0), bits)
    ordered = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    low = np.int64(0xFFFFFFFF) - np.arange(start, start + key.shape[0], dtype=np.int64)
    return (ordered.astype(np.int64) << np.int64(32)) | low


#: A threshold no composite key reaches: ordered(key) is at most 0x7FC00000 (nan), so every composite
#: is below 0x7FFFFFFF << 32. Used for classes with a quota of 0.
_NEVER = np.int64(np.iinfo(np.int64).max)


def _composites(r: np.ndarray, d: np.ndarray, counts: np.ndarray, params: SelectionParams, t: int) -> np.ndarray:
    """Composite keys of every sample for epoch ``t``, computed in chunks (temporaries stay chunk-sized)."""
    out = np.empty(r.shape[0], dtype=np.int64)

    def chunk(start: int, stop: int) -> None:
        out[start:stop] = composite_keys(
            epoch_keys_cpu(r[start:stop], d[start:stop], counts[start:stop], params, t, start), start
        )

    run_chunks(r.shape[0], _KEY_CHUNK, chunk)
    return out


def _kth_largest(values: np.ndarray, k: int) -> np.int64:
    """The k-th largest of distinct ``values`` (partitions ``values`` in place); _NEVER when k is 0."""
    if k <= 0:
        return _NEVER
    position = values.shape[0] - k
    values.partition(position)
    return values[position]


class _ClassGroups:
    """Samples grouped by class once (uint32 row order and bounds), for per-class thresholds."""

    def __init__(self, labels: np.ndarray, quota: np.ndarray) -> None:
        self.labels, self.quota = labels, quota
        self.order = np.argsort(labels, kind="stable").astype(np.uint32)
        self.bounds = np.searchsorted(labels[self.order], np.arange(quota.shape[0] + 1))

    def thresholds(self, comp: np.ndarray) -> np.ndarray:
        """Per class, the smallest composite key among its ``quota`` largest (int64 [C])."""
        grouped = comp[self.order]
        return np.array(
            [_kth_largest(grouped[a:b], int(q)) for a, b, q in zip(self.bounds[:-1], self.bounds[1:], self.quota)],
            dtype=np.int64,
        )


def _picked(comp: np.ndarray, thresholds: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """bool [N]: composite key at or above the sample's threshold (its class's, or the single one)."""
    picked = np.empty(comp.shape[0], dtype=bool)

    def chunk(start: int, stop: int) -> None:
        limit = thresholds[0] if labels is None else thresholds[labels[start:stop]]
        np.greater_equal(comp[start:stop], limit, out=picked[start:stop])

    run_chunks(comp.shape[0], _KEY_CHUNK, chunk)
    return picked


def select_epochs_cpu(
    r: np.ndarray,
    d: np.ndarray,
    params: SelectionParams,
    labels: np.ndarray | None,
    quota: np.ndarray | None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Generator of the per-epoch selections (int64, ascending); inputs already validated.

    The composite keys are all distinct, so the ``n_select`` largest (per class: the ``quota[c]`` largest)
    are exactly those at or above the k-th largest key: a threshold found by partitioning a copy, then
    one comparison pass. Memory per sample: R, D and the counts (12 bytes), the keys and their copy
    (16 bytes, per epoch), the 1-byte mask, and with quotas a 4-byte class order.
    """
    n = r.shape[0]
    counts = np.zeros(n, dtype=np.float32)
    groups = _ClassGroups(labels, quota) if quota is not None and labels is not None else None
    decay = np.float32(params.decay)
    for t in range(len(params.lambdas)):
        comp = _composites(r, d, counts, params, t)
        if groups is None:
            thresholds = np.array([_kth_largest(comp.copy(), params.n_select)], dtype=np.int64)
        else:
            thresholds = groups.thresholds(comp)
        picked = _picked(comp, thresholds, None if groups is None else labels)
        del comp
        sel = np.flatnonzero(picked).astype(np.int64, copy=False)  # ascending, O(N) instead of a sort
        if t + 1 < len(params.lambdas):
            # c <- decay·c + 1[selected] (adding 0.0 leaves the others unchanged)
            counts *= decay
            counts += picked
        del picked
        if progress is not None:
            progress(t + 1)
        yield sel
