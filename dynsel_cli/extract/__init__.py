"""The extract stage: samples from a source → feature vectors on disk."""

from .loop import extract

__all__ = ["extract"]
