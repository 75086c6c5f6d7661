"""Host-side helpers shared by the numpy and Triton paths: input checks and the per-epoch scalars.

Everything that must be identical on both paths and is not per-sample arithmetic is computed here, once,
on the host (float64 where the spec says so, then rounded to float32).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from . import SelectionParams

__all__ = [
    "EpochScalars",
    "epoch_scalars",
    "unit_tables",
    "check_factor_inputs",
    "check_selection_inputs",
    "class_members",
    "run_chunks",
    "num_threads",
]

#: Largest sample count the composite key (32-bit index field) supports.
MAX_SAMPLES: int = 2**32 - 1


@dataclass(frozen=True)
class EpochScalars:
    """The float32 scalars of one epoch, as Python floats that are exactly representable in float32."""

    lam: float
    norm: float
    beta: float
    tau: float
    decay: float


def _f32(x: float) -> float:
    return float(np.float32(x))


def epoch_scalars(params: SelectionParams, t: int) -> EpochScalars:
    """Scalars for epoch ``t``: ``lam = f32(λ_t)``, ``norm = f32(r·max(t,1))`` (product in float64)."""
    return EpochScalars(
        lam=_f32(params.lambdas[t]),
        norm=_f32(float(params.ratio) * float(max(t, 1))),
        beta=_f32(params.beta),
        tau=_f32(params.tau),
        decay=_f32(params.decay),
    )


def unit_tables(unit_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit tables ``(f, L)`` (float32 [m]).

    ``L = float32(-log(float64(f)))`` computed once on the host; a unit with ``f == 0`` (never used) gets
    ``L = 0`` so it contributes nothing (and never ``0 · inf = nan``). ``-0.0`` (from ``f == 1``) is
    canonicalised to ``+0.0``.
    """
    f64 = unit_freq.astype(np.float64)
    with np.errstate(divide="ignore"):
        neg_log = np.where(f64 > 0.0, -np.log(np.where(f64 > 0.0, f64, 1.0)), 0.0) + 0.0
    return np.ascontiguousarray(unit_freq, dtype=np.float32), neg_log.astype(np.float32)


def _require_array(name: str, x: object) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    return x


def _require_float32(name: str, x: np.ndarray) -> None:
    if x.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {x.dtype} (cast with .astype(np.float32) first)")


def _as_int(name: str, x: np.ndarray, dtype: type) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {x.dtype}")
    info = np.iinfo(dtype)
    if x.size and (int(x.min()) < info.min or int(x.max()) > info.max):
        raise ValueError(f"{name} has values outside the {np.dtype(dtype).name} range")
    return np.ascontiguousarray(x, dtype=dtype)


def check_factor_inputs(
    units: np.ndarray, acts: np.ndarray, unit_freq: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``factor_scores`` inputs; return contiguous ``(units int32, acts float32, unit_freq float32)``."""
    units = _require_array("units", units)
    acts = _require_array("acts", acts)
    unit_freq = _require_array("unit_freq", unit_freq)
    if units.ndim != 2:
        raise ValueError(f"units must be 2-D [N, k], got shape {units.shape}")
    if acts.shape != units.shape:
        raise ValueError(f"acts must have the shape of units {units.shape}, got {acts.shape}")
    if unit_freq.ndim != 1:
        raise ValueError(f"unit_freq must be 1-D [m], got shape {unit_freq.shape}")
    _require_float32("acts", acts)
    _require_float32("unit_freq", unit_freq)
    units = _as_int("units", units, np.int32)
    m = unit_freq.shape[0]
    if units.size:
        lo, hi = int(units.min()), int(units.max())
        if lo < -1 or hi >= m:
            raise ValueError(f"units must be SAE unit ids in [0, {m}) or -1 for padding; found values in [{lo}, {hi}]")
    if acts.size and not (np.isfinite(acts).all() and acts.min() >= 0):
        raise ValueError("acts must be finite and >= 0")
    if unit_freq.size and not (np.isfinite(unit_freq).all() and unit_freq.min() >= 0 and unit_freq.max() <= 1):
        raise ValueError("unit_freq must be finite and in [0, 1]")
    if units.shape[0] > MAX_SAMPLES:
        raise ValueError(f"at most {MAX_SAMPLES} samples are supported, got {units.shape[0]}")
    return units, np.ascontiguousarray(acts), np.ascontiguousarray(unit_freq)


def check_selection_inputs(
    r_score: np.ndarray, d_score: np.ndarray, params: SelectionParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate ``select_epochs`` inputs.

    Returns contiguous ``(r, d, labels | None, class_quota int64 | None)`` (labels keep their integer
    dtype); labels are returned only when a class quota is used.
    """
    r_score = _require_array("r_score", r_score)
    d_score = _require_array("d_score", d_score)
    if r_score.ndim != 1 or d_score.ndim != 1:
        raise ValueError(f"r_score and d_score must be 1-D, got shapes {r_score.shape} and {d_score.shape}")
    if r_score.shape != d_score.shape:
        raise ValueError(
            f"r_score and d_score must have the same length, got {r_score.shape[0]} and {d_score.shape[0]}"
        )
    _require_float32("r_score", r_score)
    _require_float32("d_score", d_score)
    n = r_score.shape[0]
    if n > MAX_SAMPLES:
        raise ValueError(f"at most {MAX_SAMPLES} samples are supported, got {n}")
    if not (np.isfinite(r_score).all() and np.isfinite(d_score).all()):
        raise ValueError("r_score and d_score must be finite (no nan/inf)")
    if not 0 <= params.n_select <= n:
        raise ValueError(f"n_select must be in [0, N={n}], got {params.n_select}")
    labels = quota = None
    if params.class_quota is not None:
        if params.labels is None:
            raise ValueError("class_quota needs labels (int64 [N] class ids)")
        labels = _require_array("labels", params.labels)
        quota = _require_array("class_quota", params.class_quota)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        if quota.ndim != 1:
            raise ValueError(f"class_quota must be 1-D [C], got shape {quota.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
        labels = np.ascontiguousarray(labels)  # any integer dtype: a uint8 copy of N labels is 1 byte per sample
        quota = _as_int("class_quota", quota, np.int64)
        n_classes = quota.shape[0]
        if n and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"labels must be class ids in [0, {n_classes}) (C = len(class_quota))")
        if quota.size and quota.min() < 0:
            raise ValueError("class_quota must be >= 0")
        if int(quota.sum()) != params.n_select:
            raise ValueError(f"class_quota sums to {int(quota.sum())}, but n_select is {params.n_select}")
        sizes = np.bincount(labels, minlength=n_classes)
        over = np.nonzero(quota > sizes)[0]
        if over.size:
            c = int(over[0])
            raise ValueError(f"class_quota[{c}] = {int(quota[c])} exceeds the class size {int(sizes[c])}")
    return np.ascontiguousarray(r_score), np.ascontiguousarray(d_score), labels, quota


def class_members(labels: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """Sample indices (int64, ascending) of each class 0..n_classes-1."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_classes + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(n_classes)]


def check_scalar_params(
    n_select: int,
    lambdas: Sequence[float],
    ratio: float,
    beta: float,
    penalty: str,
    decay: float,
    tau: float,
    seed: int,
) -> None:
    """Validate the scalar fields of :class:`SelectionParams` (raises ValueError)."""
    if isinstance(n_select, bool) or not isinstance(n_select, (int, np.integer)) or n_select < 0:
        raise ValueError(f"n_select must be an int >= 0, got {n_select!r}")
    try:
        lams = [float(v) for v in lambdas]
    except TypeError as exc:
        raise ValueError(f"lambdas must be a sequence of floats: {exc}") from None
    if not all(math.isfinite(v) for v in lams):
        raise ValueError("lambdas must all be finite")

    def finite(name: str, v: float, lo: float, lo_open: bool = False, hi: float | None = None) -> None:
        if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
        v = float(v)
        if (v <= lo if lo_open else v < lo) or (hi is not None and v > hi):
            rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}{']' if hi is not None else ')'}"
            raise ValueError(f"{name} must be in {rng}, got {v}")

    finite("ratio", ratio, 0.0, lo_open=True)
    finite("beta", beta, 0.0)
    finite("tau", tau, 0.0)
    finite("decay", decay, 0.0, hi=1.0)
    if penalty not in ("additive", "multiplicative"):
        raise ValueError(f"penalty must be 'additive' or 'multiplicative', got {penalty!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an int with 0 <= seed < 2**32, got {seed!r}")
    if len(lams) >= 2**32:
        raise ValueError("too many epochs (the epoch index is a 32-bit Philox counter word)")


def num_threads() -> int:
    """Worker threads for the chunked numpy loops: ``DYNSEL_NUM_THREADS`` or min(8, CPU count)."""
    env = os.environ.get("DYNSEL_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"DYNSEL_NUM_THREADS must be an integer, got {env!r}") from None
    return max(1, min(8, os.cpu_count() or 1))


def run_chunks(n: int, chunk: int, fn: Callable[[int, int], None]) -> None:
    """Call ``fn(start, stop)`` for consecutive chunks of ``range(n)``, on threads when worthwhile.

    numpy releases the GIL inside its loops, so chunks run in parallel; each call must write only its own
    output slice, which keeps the result independent of the thread count and the scheduling.
    """
    bounds = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    workers = min(num_threads(), len(bounds))
    if workers <= 1:
        for start, stop in bounds:
            fn(start, stop)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for fut in [pool.submit(fn, start, stop) for start, stop in bounds]:
            fut.result()
