"""The extract stage: samples from a source → feature vectors on disk (docs/extract.md)."""

from .loop import extract
from .sources import open_source, source_fingerprint

__all__ = ["extract", "open_source", "source_fingerprint"]
