"""dynsel: precompute dynamic data-selection plans that any trainer can read."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Plan", "__version__", "read_plan"]


def __getattr__(name: str) -> Any:
    """``Plan`` and ``read_plan`` are imported on first use, so the command line starts without numpy."""
    if name in ("Plan", "read_plan"):
        from .formats import plan

        return getattr(plan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
