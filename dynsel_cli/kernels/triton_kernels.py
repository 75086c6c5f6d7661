"""Triton path of the fused scoring/selection loop (CUDA natively, CPU under ``TRITON_INTERPRET=1``).

Imported lazily by :mod:`dynsel_cli.kernels`; importing this module imports torch and triton. Kernels are
launched with ``enable_fp_fusion=False`` so that ``acc + a·x`` is a rounded multiply then a rounded add
(no FMA contraction), exactly like numpy. Divisions use ``tl.math.div_rn`` (IEEE round-to-nearest; plain
``/`` lowers to the approximate ``div.full.f32`` on NVIDIA GPUs). The Gumbel logs are float64.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from ._common import class_members, epoch_scalars, unit_tables

if TYPE_CHECKING:  # pragma: no cover
    from . import SelectionParams

__all__ = [
    "INTERPRET",
    "factor_scores_triton",
    "select_epochs_triton",
    "philox_uint32_triton",
    "gumbel_from_uint32_triton",
    "epoch_composite_triton",
]

#: True when Triton kernels run in the numpy interpreter (TRITON_INTERPRET=1 at import time).
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

_BLOCK_GPU = 1024
_BLOCK_INTERP = 4096  # fewer Python-level program instances in the interpreter
_FACTOR_BLOCK_GPU = 128
_FACTOR_BLOCK_INTERP = 2048


def _block(device: torch.device, gpu: int, interp: int) -> int:
    return gpu if device.type == "cuda" and not INTERPRET else interp


def _launch_opts(device: torch.device) -> dict[str, object]:
    return {"num_warps": 4, "enable_fp_fusion": False}


# ----------------------------------------------------------------------------------------------------
# device functions
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _log_f64(x, LIBDEVICE: tl.constexpr):
    # float64 natural log: libdevice __nv_log on the GPU, numpy's log in the interpreter
    if LIBDEVICE:
        y = libdevice.log(x)
    else:
        y = tl.log(x)
    return y


@triton.jit
def _gumbel(x, LIBDEVICE: tl.constexpr):
    # x: uint32 Philox output -> float32 Gumbel(0, 1); u = ((x >> 8) + 0.5) * 2**-24, logs in float64
    u = ((x >> 8).to(tl.float64) + 0.5) * 5.9604644775390625e-08
    g = -_log_f64(-_log_f64(u, LIBDEVICE), LIBDEVICE)
    return g.to(tl.float32)


@triton.jit
def _composite(key, offs):
    # order-preserving int64: (ordered(bits(key)) << 32) | (0xFFFFFFFF - index); -0.0 folded onto +0.0
    bits = key.to(tl.int32, bitcast=True)
    bits = tl.where(bits == -2147483648, 0, bits)
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    low = (offs ^ -1) & 0xFFFFFFFF  # == 0xFFFFFFFF - offs for 0 <= offs < 2**32 (offs is int64)
    return (ordered.to(tl.int64) << 32) | low


# ----------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["n"])
def _factor_kernel(units_ptr, acts_ptr, f_ptr, l_ptr, r_ptr, d_ptr, n, K: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = rows < n
    base = rows * K
    s = tl.zeros([BLOCK], dtype=tl.float32)
    for j in range(K):
        u = tl.load(units_ptr + base + j, mask=m, other=-1)
        a = tl.load(acts_ptr + base + j, mask=m, other=0.0)
        s = s + tl.where(u >= 0, a, 0.0)
    pos = s > 0.0
    s_safe = tl.where(pos, s, 1.0)
    r_acc = tl.zeros([BLOCK], dtype=tl.float32)
    d_acc = tl.zeros([BLOCK], dtype=tl.float32)
    for j in range(K):
        u = tl.load(units_ptr + base + j, mask=m, other=-1)
        w = tl.load(acts_ptr + base + j, mask=m, other=0.0)
        valid = u >= 0
        w = tl.where(valid, w, 0.0)
        a = tl.where(pos, tl.math.div_rn(w, s_safe), 0.0)
        u_safe = tl.where(valid, u, 0)
        fj = tl.load(f_ptr + u_safe, mask=m & valid, other=0.0)
        lj = tl.load(l_ptr + u_safe, mask=m & valid, other=0.0)
        r_acc = r_acc + a * fj
        d_acc = d_acc + a * lj
    tl.store(r_ptr + rows, r_acc, mask=m)
    tl.store(d_ptr + rows, d_acc, mask=m)


@triton.jit(do_not_specialize=["n", "lam", "norm", "beta", "tau", "decay", "seed", "epoch"])
def _epoch_kernel(
    r_ptr,
    d_ptr,
    c_ptr,
    prev_ptr,
    comp_ptr,
    n,
    lam,
    norm,
    beta,
    tau,
    decay,
    seed,
    epoch,
    UPDATE: tl.constexpr,
    MULTIPLICATIVE: tl.constexpr,
    NOISE: tl.constexpr,
    LIBDEVICE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # one pass per epoch: counts update from the previous selection mask, score, noise, composite key
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    r = tl.load(r_ptr + offs, mask=m, other=0.0)
    d = tl.load(d_ptr + offs, mask=m, other=0.0)
    c = tl.load(c_ptr + offs, mask=m, other=0.0)
    if UPDATE:
        picked = tl.load(prev_ptr + offs, mask=m, other=0).to(tl.float32)
        c = decay * c + picked
        tl.store(c_ptr + offs, c, mask=m)
    b = r + lam * (d - r)
    q = tl.math.div_rn(c, tl.zeros_like(c) + norm)
    if MULTIPLICATIVE:
        s = tl.math.div_rn(b, 1.0 + beta * q)
    else:
        s = b - beta * q
    if NOISE:
        x = tl.randint(seed, offs | (epoch.to(tl.int64) << 32))
        key = s + tau * _gumbel(x, LIBDEVICE)
    else:
        key = s
    tl.store(comp_ptr + offs, _composite(key, offs), mask=m)


@triton.jit(do_not_specialize=["n", "seed", "epoch"])
def _philox_kernel(out_ptr, n, seed, epoch, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.randint(seed, offs | (epoch.to(tl.int64) << 32))
    tl.store(out_ptr + offs, x.to(tl.int32, bitcast=True), mask=m)


@triton.jit(do_not_specialize=["n"])
def _gumbel_kernel(x_ptr, g_ptr, n, LIBDEVICE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0).to(tl.uint32, bitcast=True)
    tl.store(g_ptr + offs, _gumbel(x, LIBDEVICE), mask=m)


@triton.jit(do_not_specialize=["n"])
def _composite_kernel(key_ptr, comp_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    key = tl.load(key_ptr + offs, mask=m, other=0.0)
    tl.store(comp_ptr + offs, _composite(key, offs), mask=m)


# ----------------------------------------------------------------------------------------------------
# host wrappers
# ----------------------------------------------------------------------------------------------------


def _to_dev(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    """numpy → torch on ``dev`` (read-only arrays, e.g. memory maps, are copied first)."""
    return torch.from_numpy(np.require(a, requirements=["C", "W"])).to(dev)


def _check_device(torch_device: str | torch.device) -> torch.device:
    dev = torch.device(torch_device)
    if dev.type == "cpu" and not INTERPRET:
        raise ValueError(
            "running Triton kernels on the CPU needs TRITON_INTERPRET=1 in the environment before triton is "
            "imported (tests set it at the top of the module)"
        )
    if dev.type == "cuda" and INTERPRET:
        raise ValueError("TRITON_INTERPRET=1 is set: the Triton interpreter cannot launch on cuda; unset it")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported torch device for the Triton path: {dev}")
    return dev


def _libdevice(dev: torch.device) -> bool:
    return dev.type == "cuda" and not INTERPRET


def philox_uint32_triton(seed: int, epoch: int, n: int, torch_device: str = "cpu") -> np.ndarray:
    """``tl.randint(seed, (epoch << 32) | i)`` for ``i = 0..n-1`` as uint32 (for tests and benchmarks)."""
    dev = _check_device(torch_device)
    out = torch.empty(n, dtype=torch.int32, device=dev)
    block = _block(dev, _BLOCK_GPU, _BLOCK_INTERP)
    _philox_kernel[(triton.cdiv(n, block),)](out, n, seed, epoch, BLOCK=block, **_launch_opts(dev))
    return out.cpu().numpy().view(np.uint32)


def gumbel_from_uint32_triton(x: np.ndarray, torch_device: str = "cpu") -> np.ndarray:
    """The kernels' uint32 → float32 Gumbel map applied on the device (for tests and benchmarks)."""
    dev = _check_device(torch_device)
    xs = _to_dev(np.ascontiguousarray(x, dtype=np.uint32).view(np.int32), dev)
    n = xs.shape[0]
    g = torch.empty(n, dtype=torch.float32, device=dev)
    block = _block(dev, _BLOCK_GPU, _BLOCK_INTERP)
    if n:
        _gumbel_kernel[(triton.cdiv(n, block),)](xs, g, n, LIBDEVICE=_libdevice(dev), BLOCK=block, **_launch_opts(dev))
    return g.cpu().numpy()


def composite_keys_triton(key: np.ndarray, torch_device: str = "cpu") -> np.ndarray:
    """The kernels' composite-key map applied on the device (for tests)."""
    dev = _check_device(torch_device)
    k = _to_dev(np.ascontiguousarray(key, dtype=np.float32), dev)
    n = k.shape[0]
    out = torch.empty(n, dtype=torch.int64, device=dev)
    block = _block(dev, _BLOCK_GPU, _BLOCK_INTERP)
    if n:
        _composite_kernel[(triton.cdiv(n, block),)](k, out, n, BLOCK=block, **_launch_opts(dev))
    return out.cpu().numpy()


def factor_scores_triton(
    units: np.ndarray, acts: np.ndarray, unit_freq: np.ndarray, torch_device: str = "cuda"
) -> tuple[np.ndarray, np.ndarray]:
    """Triton ``factor_scores`` (inputs already validated); returns float32 numpy arrays."""
    dev = _check_device(torch_device)
    f_tab, l_tab = unit_tables(unit_freq)
    n, k = units.shape
    r = torch.empty(n, dtype=torch.float32, device=dev)
    d = torch.empty(n, dtype=torch.float32, device=dev)
    if n:
        u_t = _to_dev(units, dev)
        a_t = _to_dev(acts, dev)
        # an empty unit table still needs a valid pointer
        f_t = _to_dev(f_tab if f_tab.size else np.zeros(1, np.float32), dev)
        l_t = _to_dev(l_tab if l_tab.size else np.zeros(1, np.float32), dev)
        block = _block(dev, _FACTOR_BLOCK_GPU, _FACTOR_BLOCK_INTERP)
        _factor_kernel[(triton.cdiv(n, block),)](u_t, a_t, f_t, l_t, r, d, n, K=k, BLOCK=block, **_launch_opts(dev))
    return r.cpu().numpy(), d.cpu().numpy()


def epoch_composite_triton(
    r: torch.Tensor,
    d: torch.Tensor,
    counts: torch.Tensor,
    prev: torch.Tensor,
    comp: torch.Tensor,
    params: SelectionParams,
    t: int,
    update: bool,
) -> None:
    """Launch the epoch kernel: updates ``counts`` in place from ``prev`` (if ``update``), writes ``comp``."""
    n = r.shape[0]
    if n == 0:
        return
    dev = r.device
    sc = epoch_scalars(params, t)
    block = _block(dev, _BLOCK_GPU, _BLOCK_INTERP)
    _epoch_kernel[(triton.cdiv(n, block),)](
        r,
        d,
        counts,
        prev,
        comp,
        n,
        sc.lam,
        sc.norm,
        sc.beta,
        sc.tau,
        sc.decay,
        int(params.seed),
        t,
        UPDATE=update,
        MULTIPLICATIVE=params.penalty == "multiplicative",
        NOISE=params.tau > 0,
        LIBDEVICE=_libdevice(dev),
        BLOCK=block,
        **_launch_opts(dev),
    )


def select_epochs_triton(
    r_np: np.ndarray,
    d_np: np.ndarray,
    params: SelectionParams,
    labels: np.ndarray | None,
    quota: np.ndarray | None,
    progress: Callable[[int], None] | None = None,
    torch_device: str = "cuda",
) -> Iterator[np.ndarray]:
    """Generator of per-epoch selections on the device (inputs already validated).

    r, d and the counts stay on the device across epochs. Per epoch: one Triton kernel (counts update +
    keys + composite), ``torch.topk`` on the int64 composites, a sort of the winners, the selection mask
    for the next epoch's counts update, and an asynchronous copy of the indices into pinned host memory.
    On CUDA the host yields epoch t-1 while the device already works on epoch t.
    """
    dev = _check_device(torch_device)
    is_cuda = dev.type == "cuda"
    if is_cuda and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())  # pin the device for all epochs
    n = r_np.shape[0]
    n_epochs = len(params.lambdas)
    k = int(params.n_select)
    r = _to_dev(r_np, dev)
    d = _to_dev(d_np, dev)
    counts = torch.zeros(n, dtype=torch.float32, device=dev)
    prev = torch.zeros(n, dtype=torch.uint8, device=dev)
    comp = torch.empty(n, dtype=torch.int64, device=dev)
    members: list[tuple[torch.Tensor, int]] | None = None
    if quota is not None:
        members = [(_to_dev(mem, dev), int(q)) for mem, q in zip(class_members(labels, quota.shape[0]), quota) if q > 0]
    bufs = [torch.empty(k, dtype=torch.int64, pin_memory=is_cuda) for _ in range(2 if is_cuda else 1)]
    events: list[object] = [None, None]
    empty = torch.empty(0, dtype=torch.int64, device=dev)

    def enqueue(t: int) -> None:
        epoch_composite_triton(r, d, counts, prev, comp, params, t, update=t > 0)
        if members is None:
            sel = (
                torch.topk(comp, k, sorted=False).indices
                if 0 < k < n
                else (torch.arange(n, device=dev) if k == n else empty)
            )
        else:
            parts = [mem[torch.topk(comp[mem], q, sorted=False).indices] for mem, q in members]
            sel = torch.cat(parts) if parts else empty
        sel = torch.sort(sel).values
        if t + 1 < n_epochs:
            prev.zero_()
            prev[sel] = 1
        buf = bufs[t % len(bufs)]
        buf.copy_(sel, non_blocking=is_cuda)
        if is_cuda:
            ev = torch.cuda.Event()
            ev.record()
            events[t % 2] = ev

    def collect(t: int) -> np.ndarray:
        if is_cuda:
            events[t % 2].synchronize()  # type: ignore[union-attr]
        out = bufs[t % len(bufs)].numpy().copy()
        if progress is not None:
            progress(t + 1)
        return out

    if not is_cuda:
        for t in range(n_epochs):
            enqueue(t)
            yield collect(t)
        return
    for t in range(n_epochs):
        # the device context covers the launches only, never a yield: the consumer's current device is its own
        with torch.cuda.device(dev):
            enqueue(t)
        if t > 0:
            yield collect(t - 1)
    if n_epochs:
        yield collect(n_epochs - 1)
