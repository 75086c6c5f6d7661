"""``dynsel run``: every stage into one directory, skipping stages whose inputs and settings are unchanged.

The pipeline knows stages only through the stage contract (:mod:`dynsel_cli.stage`): for each stage in
order it gathers the stage's inputs (the source, or earlier stages' artifacts), asks whether the
existing artifact is current (same dynsel version, same settings, same input fingerprints, checksums
intact) and builds it when not.

``out`` may be a URI (``s3://bucket/run``): each stage is built in a local staging directory and published
to ``out``/ARTIFACT as it finishes; a published artifact that is current is reused (fetched into the
local cache once), not rebuilt (:mod:`dynsel_cli.formats.storage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ExtractConfig, FactorsConfig, PlanConfig, SaeConfig
from .errors import DynselError
from .extract.stage import EXTRACT
from .extract.work import remove_abandoned
from .factors.stage import FACTORS
from .formats import storage
from .formats.common import sweep_stale_temporaries
from .plan.stage import PLAN
from .progress import LogFn, ProgressFn, null_log, null_progress
from .sae.resume import remove_state, resume_dir
from .sae.stage import FIT_SAE
from .stage import BuildOptions, Stage

STAGES: tuple[Stage, ...] = (EXTRACT, FIT_SAE, FACTORS, PLAN)


@dataclass(frozen=True)
class RunConfig:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    sae: SaeConfig = field(default_factory=SaeConfig)
    factors: FactorsConfig = field(default_factory=FactorsConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)

    def for_stage(self, stage: Stage) -> Any:
        return {"extract": self.extract, "fit-sae": self.sae, "factors": self.factors, "plan": self.plan}[stage.command]


@dataclass(frozen=True)
class RunResult:
    out: Path | str  # the run directory, or the run prefix's URI
    stages: dict[str, str]  # stage → "built" or "up to date"
    artifacts: dict[str, Path] = field(default_factory=dict)  # artifact name → its local directory

    @property
    def plan(self) -> Path:
        return self.artifacts.get("plan", Path(self.out) / "plan")


def validate_run(source: Path, config: RunConfig) -> None:
    """Refuse bad input and options before any stage runs, so a doomed run leaves nothing behind."""
    validate_settings(config)
    check_source(source)


def validate_settings(config: RunConfig) -> None:
    for stage in STAGES:
        stage.validate(config.for_stage(stage))


def check_source(source: Path) -> None:
    if not Path(source).exists():
        raise DynselError(f"{source}: no such file or directory; pass the data set to plan for")


def run_pipeline(
    source: Path | str,
    out: Path | str,
    config: RunConfig = RunConfig(),
    progress: ProgressFn = null_progress,
    log: LogFn = null_log,
    *,
    force: bool = False,
    formats: tuple[str, ...] = ("bin", "txt", "parquet"),
    restart: bool = False,
) -> RunResult:
    """Run extract → fit-sae → factors → plan into ``out``/{features,sae,factors,plan}.

    ``out`` must be new, empty, or a run directory (only stage artifacts inside); ``force`` lets a stage
    folder replace a dynsel artifact of another kind. ``formats`` are the plan's files; ``restart`` ignores the
    saved state of an interrupted fit-sae. ``source`` and ``out`` may be URIs (see the module doc).
    """
    destination = storage.run_destination(out, inputs=[source], force=force)
    validate_settings(config)  # before a source is downloaded
    local_source = storage.local_source(source)
    check_source(local_source)
    options = BuildOptions(force=force, restart=restart, formats=formats, log=null_log)
    paths: dict[str, Path] = {"source": local_source}
    stages: dict[str, str] = {}
    for stage in STAGES:
        stage_config = config.for_stage(stage)
        inputs = {name: paths[name] for name in stage.inputs(stage_config)}
        existing = destination.existing(stage.artifact, stage.kind)
        if existing is not None and stage.current(existing, inputs, stage_config, options) is not None:
            paths[stage.artifact] = existing
            stages[stage.command] = "up to date"
            continue
        shown = f"{storage.describe(source)} " if "source" in inputs else ""
        log(f"{stage.command}: {shown}→ {destination.shown(stage.artifact)}")
        stage.build(inputs, destination.root / stage.artifact, stage_config, progress, options)
        paths[stage.artifact] = destination.publish(stage.artifact, stage.kind, force=force)
        stages[stage.command] = "built"
    _clean_up(destination.root, stages)
    for command, status in stages.items():
        log(f"{command}: {status}")
    return RunResult(out=destination.out, stages=stages, artifacts={stage.artifact: paths[stage.artifact] for stage in STAGES})


def _clean_up(build_root: Path, stages: dict[str, str]) -> None:
    """A run killed after a stage's artifact was in place, but before the stage had cleaned up, left its
    temporaries and resume state; a built stage has removed them, an up-to-date one does it now."""
    for stage in STAGES:
        sweep_stale_temporaries(build_root / stage.artifact)
    if stages["extract"] == "up to date":
        remove_abandoned(build_root / "features")
    if stages["fit-sae"] == "up to date":
        remove_state(resume_dir(build_root / "sae"))
