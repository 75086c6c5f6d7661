"""Readers and writers of every dynsel artifact; docs/formats.md is the normative spec.

The names below are imported on first use (PEP 562), so that reading a plan never pays for torch (the
SAE format needs it) or pyarrow: ``dynsel --help`` and ``dynsel report`` start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "FORMAT_VERSION": "common",
    "atomic_directory": "common",
    "FactorTables": "factors",
    "read_factor_tables": "factors",
    "Features": "features",
    "read_features": "features",
    "Plan": "plan",
    "read_plan": "plan",
    "SaeWeights": "sae",
    "read_sae": "sae",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
