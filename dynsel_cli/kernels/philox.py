"""Counter-based Philox4x32-10 generator and Gumbel noise, in vectorised numpy.

This module is the host (CPU) reference for the random stream used by the selection kernels. The Triton
path (:mod:`dynsel_cli.kernels.triton_kernels`) draws the same numbers with Triton's own
``tl.randint``; both follow this layout (see ``docs/kernels.md``):

* key   ``(k0, k1) = (seed, 0)``                       (Triton: the 64-bit ``seed`` argument, ``seed < 2**32``)
* counter ``(c0, c1, c2, c3) = (sample index, epoch, 0, 0)``   (Triton: ``offset = (epoch << 32) | index``)
* the uint32 used is output word 0.

The uint32 ``x`` becomes a uniform ``u = ((x >> 8) + 0.5) * 2**-24`` (exact in float32, strictly inside
(0, 1)) and the Gumbel variate ``G = float32(-log(-log(float64(u))))``.
"""

from __future__ import annotations

import numpy as np

from ._common import run_chunks

__all__ = [
    "PHILOX_M0",
    "PHILOX_M1",
    "PHILOX_W0",
    "PHILOX_W1",
    "philox4x32",
    "philox_uint32",
    "gumbel_from_uint32",
    "gumbel_noise",
]

#: Philox4x32 round multipliers (Salmon et al. 2011; Random123).
PHILOX_M0: int = 0xD2511F53
PHILOX_M1: int = 0xCD9E8D57
#: Weyl key increments (golden ratio, sqrt(3) - 1).
PHILOX_W0: int = 0x9E3779B9
PHILOX_W1: int = 0xBB67AE85

_MASK32 = 0xFFFFFFFF
_CHUNK = 1 << 15  # samples per chunk: keeps the temporaries in cache


def _as_u64(x: np.ndarray | int, shape: tuple[int, ...]) -> np.ndarray:
    """A fresh uint64 array of ``shape`` holding ``x`` mod 2**32 (an int or an integer array, broadcast)."""
    if isinstance(x, (int, np.integer)):
        return np.full(shape, int(x) & _MASK32, dtype=np.uint64)
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"Philox counter words must be integers, got {arr.dtype}")
    out = np.empty(shape, dtype=np.uint64)
    out[...] = arr.astype(np.uint64) if arr.dtype != np.uint64 else arr
    np.bitwise_and(out, np.uint64(_MASK32), out=out)
    return out


def philox4x32(
    counter: tuple[np.ndarray | int, np.ndarray | int, np.ndarray | int, np.ndarray | int],
    key: tuple[int, int],
    rounds: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32-``rounds`` block function, vectorised over counters.

    The state is kept in uint64 arrays holding 32-bit values, so each round is two exact 32x32→64-bit
    products, two shifts (high words), two masks (low words) and four xors, all in place.

    Args:
        counter: the four 32-bit counter words ``(c0, c1, c2, c3)``; each an int or an integer array (all
            arrays broadcast together; values are taken mod 2**32).
        key: the two 32-bit key words ``(k0, k1)``.
        rounds: number of rounds (10 for Philox4x32-10).

    Returns:
        The four output words as uint32 arrays of the broadcast shape.
    """
    shape = np.broadcast_shapes(*(np.shape(c) for c in counter))
    c0, c1, c2, c3 = (_as_u64(c, shape) for c in counter)
    k0, k1 = int(key[0]) & _MASK32, int(key[1]) & _MASK32
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    mask, s32 = np.uint64(_MASK32), np.uint64(32)
    p0 = np.empty(shape, dtype=np.uint64)
    p1 = np.empty(shape, dtype=np.uint64)
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W0) & _MASK32
            k1 = (k1 + PHILOX_W1) & _MASK32
        np.multiply(c0, m0, out=p0)  # c0 < 2**32: the product is exact in uint64
        np.multiply(c2, m1, out=p1)
        # (c0, c1, c2, c3) <- (hi(p1) ^ c1 ^ k0, lo(p1), hi(p0) ^ c3 ^ k1, lo(p0))
        np.right_shift(p1, s32, out=c0)
        np.bitwise_xor(c0, c1, out=c0)
        np.bitwise_xor(c0, np.uint64(k0), out=c0)
        np.right_shift(p0, s32, out=c2)
        np.bitwise_xor(c2, c3, out=c2)
        np.bitwise_xor(c2, np.uint64(k1), out=c2)
        np.bitwise_and(p1, mask, out=c1)
        np.bitwise_and(p0, mask, out=c3)
    return c0.astype(np.uint32), c1.astype(np.uint32), c2.astype(np.uint32), c3.astype(np.uint32)


def philox_uint32(seed: int, epoch: int, index: np.ndarray) -> np.ndarray:
    """Word 0 of Philox4x32-10 with key ``(seed, 0)`` and counter ``(index, epoch, 0, 0)``.

    This is bit-identical to Triton's ``tl.randint(seed, (epoch << 32) | index)``.

    Args:
        seed: 0 <= seed < 2**32.
        epoch: 0 <= epoch < 2**32.
        index: sample indices (any integer dtype, values in [0, 2**32)).

    Returns:
        uint32 array shaped like ``index``.
    """
    x, _, _, _ = philox4x32((np.asarray(index), epoch, 0, 0), (seed, 0))
    return x


def gumbel_from_uint32(x: np.ndarray) -> np.ndarray:
    """Map uint32 draws to float32 Gumbel(0, 1) variates.

    ``u = ((x >> 8) + 0.5) * 2**-24`` (exact), ``G = float32(-log(-log(float64(u))))``.
    """
    u = ((x >> np.uint32(8)).astype(np.float64) + 0.5) * (2.0**-24)
    return (-np.log(-np.log(u))).astype(np.float32)


def gumbel_noise(seed: int, epoch: int, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """Gumbel noise ``G[i]`` for samples ``i = 0..n-1`` of ``epoch`` under ``seed`` (float32 [n]).

    Computed in chunks (on worker threads, see :func:`run_chunks`) so the temporaries stay in cache; no
    Python loop over samples.
    """
    if out is None:
        out = np.empty(n, dtype=np.float32)

    def chunk(start: int, stop: int) -> None:
        idx = np.arange(start, stop, dtype=np.uint64)
        out[start:stop] = gumbel_from_uint32(philox_uint32(seed, epoch, idx))

    run_chunks(n, _CHUNK, chunk)
    return out
