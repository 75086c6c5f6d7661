"""Resolving ``--device auto|cpu|cuda``: the one place every stage (torch or Triton) asks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import DeviceError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    try:
        import torch
    except Exception:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def resolve_device(name: str, *, needs_triton: bool = False) -> str:
    """``"cpu"`` or ``"cuda"`` for ``--device NAME``; raises :class:`DeviceError` (exit 2) when it cannot be had.

    ``auto`` is ``cuda`` when torch sees a GPU (and, with ``needs_triton``, triton imports), else ``cpu``.
    """
    if name not in DEVICES:
        raise DeviceError(f"--device {name!r}: use auto, cpu or cuda")
    if name == "cpu":
        return "cpu"
    cuda = cuda_available()
    if name == "auto":
        return "cuda" if cuda and (not needs_triton or triton_importable()) else "cpu"
    if not cuda:
        raise DeviceError(
            "--device cuda: torch sees no CUDA GPU here (none present, or a CPU-only torch build); use --device cpu or auto"
        )
    if needs_triton and not triton_importable():
        raise DeviceError(
            "--device cuda: the fused scoring kernel needs the triton package (pip install triton); use --device cpu or auto"
        )
    return "cuda"


def torch_device(name: str) -> torch.device:
    import torch

    return torch.device(resolve_device(name))
