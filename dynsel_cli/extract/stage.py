"""The extract stage behind the stage contract (:mod:`dynsel_cli.stage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ExtractConfig
from ..formats.features import KIND, read_features_manifest
from ..progress import ProgressFn
from ..stage import BuildOptions, Stage
from .loop import _check, extract, source_options
from .sources import source_fingerprint


def _fingerprints(inputs: dict[str, Path], config: ExtractConfig) -> dict[str, str]:
    return {"source": source_fingerprint(Path(inputs["source"]), source_options(config))}


def _recorded(manifest: dict[str, Any]) -> dict[str, Any]:
    return {"source": (manifest.get("source") or {}).get("sha256")}


def _build(
    inputs: dict[str, Path], out: Path, config: ExtractConfig, progress: ProgressFn, options: BuildOptions
) -> dict[str, Any]:
    return extract(
        Path(inputs["source"]),
        out,
        config,
        progress,
        log=options.log,
        force=options.force,
        source_name=options.source_name,
    )


EXTRACT = Stage(
    command="extract",
    artifact="features",
    kind=KIND,
    inputs=lambda config: ("source",),
    validate=_check,
    read_manifest=read_features_manifest,
    input_fingerprints=_fingerprints,
    recorded_inputs=_recorded,
    build=_build,
)
