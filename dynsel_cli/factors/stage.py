"""The factors stage behind the stage contract (:mod:`dynsel_cli.stage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import FactorsConfig
from ..formats.factors import KIND, read_factors_manifest
from ..formats.features import read_features_manifest
from ..formats.sae import read_sae_manifest
from ..progress import ProgressFn
from ..stage import BuildOptions, Stage, recorded_inputs
from .encode import build_factor_tables, check_factors_config


def _fingerprints(inputs: dict[str, Path], config: FactorsConfig) -> dict[str, str]:
    return {
        "features": read_features_manifest(Path(inputs["features"]), verify=False)["fingerprint"],
        "sae": read_sae_manifest(Path(inputs["sae"]), verify=False)["fingerprint"],
    }


def _build(
    inputs: dict[str, Path], out: Path, config: FactorsConfig, progress: ProgressFn, options: BuildOptions
) -> dict[str, Any]:
    return build_factor_tables(
        Path(inputs["features"]), Path(inputs["sae"]), out, config, progress, force=options.force
    )


FACTORS = Stage(
    command="factors",
    artifact="factors",
    kind=KIND,
    inputs=lambda config: ("features", "sae"),
    validate=check_factors_config,
    read_manifest=read_factors_manifest,
    input_fingerprints=_fingerprints,
    recorded_inputs=recorded_inputs,
    build=_build,
)
