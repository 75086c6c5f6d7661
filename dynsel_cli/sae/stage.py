"""The fit-sae stage behind the stage contract (:mod:`dynsel_cli.stage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import SaeConfig
from ..errors import DynselError
from ..formats.features import read_features_manifest
from ..formats.sae import KIND, read_sae_manifest
from ..progress import ProgressFn
from ..stage import BuildOptions, Stage, recorded_inputs
from .train import fit_sae


def _validate(config: SaeConfig) -> None:
    if config.k < 1 or (config.width and config.k > config.width):
        raise DynselError(f"--k {config.k}: must be between 1 and the SAE width ({config.width})")


def _fingerprints(inputs: dict[str, Path], config: SaeConfig) -> dict[str, str]:
    return {"features": read_features_manifest(Path(inputs["features"]), verify=False)["fingerprint"]}


def _build(
    inputs: dict[str, Path], out: Path, config: SaeConfig, progress: ProgressFn, options: BuildOptions
) -> dict[str, Any]:
    return fit_sae(
        Path(inputs["features"]),
        out,
        config,
        progress,
        log=options.log,
        resume=not options.restart,
        force=options.force,
    )


FIT_SAE = Stage(
    command="fit-sae",
    artifact="sae",
    kind=KIND,
    inputs=lambda config: ("features",),
    validate=_validate,
    read_manifest=read_sae_manifest,
    input_fingerprints=_fingerprints,
    recorded_inputs=recorded_inputs,
    build=_build,
)
