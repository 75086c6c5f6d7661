"""The factors stage: SAE codes of every sample → the sample and unit factor tables."""

from .encode import build_factor_tables, encode_codes
from .statistics import UnitStatsAccumulator, unit_statistics

__all__ = ["UnitStatsAccumulator", "build_factor_tables", "encode_codes", "unit_statistics"]
