"""Readers and writers of every dynsel artifact; docs/formats.md is the normative spec."""

from .common import FORMAT_VERSION, atomic_directory
from .factors import FactorTables, read_factor_tables
from .features import Features, read_features
from .plan import Plan, read_plan
from .sae import SaeWeights, read_sae

__all__ = [
    "FORMAT_VERSION",
    "FactorTables",
    "Features",
    "Plan",
    "SaeWeights",
    "atomic_directory",
    "read_factor_tables",
    "read_features",
    "read_plan",
    "read_sae",
]
