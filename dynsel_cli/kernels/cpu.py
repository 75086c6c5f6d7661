"""numpy reference path of the fused scoring/selection loop.

Same float32 operations in the same order as the Triton kernels (see ``docs/kernels.md``): no
per-sample Python loops; loops only run over the k code slots, over row chunks, over classes and over
epochs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from ._common import class_members, epoch_scalars, run_chunks, unit_tables
from .philox import gumbel_noise

if TYPE_CHECKING:  # pragma: no cover
    from . import SelectionParams

__all__ = ["factor_scores_cpu", "epoch_keys_cpu", "composite_keys", "top_indices", "select_epochs_cpu"]

_ROW_CHUNK = 1 << 12  # rows per chunk in factor_scores_cpu (keeps the [chunk, k] transposes in cache)


def factor_scores_cpu(
    units: np.ndarray, acts: np.ndarray, unit_freq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
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
    r: np.ndarray, d: np.ndarray, counts: np.ndarray, params: "SelectionParams", t: int
) -> np.ndarray:
    """float32 selection keys of epoch ``t`` given the counts ``c`` before epoch ``t``.

    ``B = R + lam·(D − R)``; ``q = c / norm``; additive ``S = B − beta·q`` or multiplicative
    ``S = B / (1 + beta·q)``; ``key = S + tau·G`` when ``tau > 0``.
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
        g = gumbel_noise(int(params.seed), t, r.shape[0])
        return s + f(sc.tau) * g
    return s


def composite_keys(key: np.ndarray) -> np.ndarray:
    """Exact, device-independent ranking key: int64 ``(ordered(key) << 32) | (0xFFFFFFFF − i)``.

    ``ordered`` maps the float32 bit pattern to an int32 that sorts like the float (``-0.0`` is folded onto
    ``+0.0``); a larger composite means a larger key, and for equal keys the smaller sample index.
    """
    bits = np.ascontiguousarray(key, dtype=np.float32).view(np.int32)
    bits = np.where(bits == np.int32(-(2**31)), np.int32(0), bits)
    ordered = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    low = np.int64(0xFFFFFFFF) - np.arange(key.shape[0], dtype=np.int64)
    return (ordered.astype(np.int64) << np.int64(32)) | low


def top_indices(comp: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest entries of ``comp`` (all distinct), int64, unsorted."""
    n = comp.shape[0]
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    return np.argpartition(comp, n - k)[n - k :].astype(np.int64, copy=False)


def select_epochs_cpu(
    r: np.ndarray,
    d: np.ndarray,
    params: "SelectionParams",
    labels: np.ndarray | None,
    quota: np.ndarray | None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Generator of the per-epoch selections (int64, ascending); inputs already validated."""
    n = r.shape[0]
    counts = np.zeros(n, dtype=np.float32)
    members = class_members(labels, quota.shape[0]) if quota is not None else None
    decay = np.float32(params.decay)
    for t in range(len(params.lambdas)):
        comp = composite_keys(epoch_keys_cpu(r, d, counts, params, t))
        picked = np.zeros(n, dtype=bool)
        if members is None:
            picked[top_indices(comp, params.n_select)] = True
        else:
            for m, q in zip(members, quota):
                if q > 0:
                    picked[m[top_indices(comp[m], int(q))]] = True
        sel = np.flatnonzero(picked).astype(np.int64, copy=False)  # ascending, O(N) instead of a sort
        if t + 1 < len(params.lambdas):
            # c <- decay·c + 1[selected] (adding 0.0 leaves the others unchanged)
            counts = decay * counts
            counts += picked
        if progress is not None:
            progress(t + 1)
        yield sel
