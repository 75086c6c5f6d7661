"""dynsel: precompute dynamic data-selection plans that any trainer can read."""

from .formats.plan import Plan, read_plan

__version__ = "0.1.0"

__all__ = ["Plan", "__version__", "read_plan"]
