"""The extract stage: samples from a source → feature vectors on disk (docs/extract.md).

``extract``, ``open_source`` and ``source_fingerprint`` are imported on first use, so that the light
modules of this package (the encoder registry) can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"extract": "loop", "open_source": "sources", "source_fingerprint": "sources"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
