"""Resolving ``--device auto|cpu|cuda``."""

from __future__ import annotations

import torch

from .errors import DynselError


def torch_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DynselError("--device cuda: torch sees no CUDA GPU here; use --device cpu or auto")
        return torch.device("cuda")
    raise DynselError(f"--device {name!r}: use auto, cpu or cuda")
