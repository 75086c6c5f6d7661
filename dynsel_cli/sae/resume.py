"""Epoch checkpoints of SAE training, so a killed ``fit-sae`` continues where it stopped.

After every epoch the whole training state is written atomically into a hidden sibling of the output,
``.OUT.fit-sae-resume/`` (``state.safetensors``: weights, best weights, Adam moments, dead-unit counters,
the random generator's state; ``state.json``: epoch, step, history, early-stopping state, and the *key*
— a fingerprint of the features, the settings and the dynsel version). A later run with the same key
restores it and continues with the next epoch; since every random draw comes from the saved generator,
the result is byte-identical to an uninterrupted run (on the CPU). A state with another key is ignored
and replaced. The directory is removed when the checkpoint is written. Nothing here is unpickled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..formats.common import atomic_directory, canonical_json, sweep_stale_temporaries

STATE_VERSION = 1


def resume_dir(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.fit-sae-resume"


def save_state(directory: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    with atomic_directory(directory) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(canonical_json({"state_version": STATE_VERSION, **info}), encoding="utf-8")


def load_state(directory: Path, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The saved state if it exists, is readable and has this key; otherwise None."""
    try:
        info = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        if not isinstance(info, dict) or info.get("state_version") != STATE_VERSION or info.get("key") != key:
            return None
        return load_file(str(directory / "state.safetensors")), info
    except (OSError, ValueError, SafetensorError):
        return None


def remove_state(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    sweep_stale_temporaries(directory)  # a save_state killed half-way


def optimiser_tensors(optimiser: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for index, state in optimiser.state_dict()["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"adam.{index}.{name}"] = value.reshape(-1) if value.dim() == 0 else value
    return tensors


def load_optimiser(optimiser: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    current = optimiser.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.reshape(()) if name == "step" else value
    optimiser.load_state_dict({"state": state, "param_groups": current["param_groups"]})
