"""The plan stage behind the stage contract (:mod:`dynsel_cli.stage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import PlanConfig
from ..formats.factors import read_factors_manifest
from ..formats.features import read_features_manifest
from ..formats.plan import KIND, read_plan
from ..progress import ProgressFn
from ..stage import BuildOptions, Stage, recorded_inputs
from .budget import epoch_budget
from .methods import NEEDS_FEATURES, validate
from .planner import build_plan


def _inputs(config: PlanConfig) -> tuple[str, ...]:
    return ("factors", "features") if config.method in NEEDS_FEATURES else ("factors",)


def _validate(config: PlanConfig) -> None:
    validate(config)
    epoch_budget(config.ratio, 1)


def _fingerprints(inputs: dict[str, Path], config: PlanConfig) -> dict[str, str]:
    found = {"factors": read_factors_manifest(Path(inputs["factors"]), verify=False)["fingerprint"]}
    if "features" in inputs:
        found["features"] = read_features_manifest(Path(inputs["features"]), verify=False)["fingerprint"]
    return found


def _build(
    inputs: dict[str, Path], out: Path, config: PlanConfig, progress: ProgressFn, options: BuildOptions
) -> dict[str, Any]:
    features = Path(inputs["features"]) if "features" in inputs else None
    return build_plan(
        Path(inputs["factors"]), out, config, progress, formats=options.formats, features=features, force=options.force
    )


def _has_formats(manifest: dict[str, Any], options: BuildOptions) -> bool:
    """Whether an existing plan holds exactly the files ``--formats`` asks for."""
    files = set(manifest.get("files") or {})
    present = {
        "txt": any(f.startswith("epochs/") for f in files),
        "npy": "indices.npy" in files,
        "parquet": "plan.parquet" in files,
    }
    return all(present[name] == (name in options.formats) for name in present)


PLAN = Stage(
    command="plan",
    artifact="plan",
    kind=KIND,
    inputs=_inputs,
    validate=_validate,
    read_manifest=lambda path: read_plan(path).manifest,
    input_fingerprints=_fingerprints,
    recorded_inputs=recorded_inputs,
    build=_build,
    has_options=_has_formats,
)
