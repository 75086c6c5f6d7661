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

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ExtractConfig, FactorsConfig, PlanConfig, SaeConfig
from .errors import ArtifactError, DynselError
from .extract.stage import EXTRACT
from .extract.work import remove_abandoned
from .factors.stage import FACTORS
from .formats import storage
from .formats.common import sweep_stale_temporaries
from .formats.output import RUN_KIND, check_output
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
    artifacts: dict[str, Path]  # artifact name → its local directory

    @property
    def plan(self) -> Path:
        return self.artifacts["plan"]


@dataclass(frozen=True)
class LocalRun:
    """A run directory: each stage builds straight into ``root``/ARTIFACT."""

    root: Path

    @property
    def out(self) -> Path:
        return self.root

    def existing(self, stage: Stage, inputs: dict[str, Path], config: Any, options: BuildOptions) -> Path | None:
        """The stage's artifact, when it is current."""
        path = self.root / stage.artifact
        return path if stage.current(path, inputs, config, options) is not None else None

    def shown(self, artifact: str) -> str:
        return str(self.root / artifact)

    def publish(self, stage: Stage, *, force: bool = False) -> Path:
        return self.root / stage.artifact


@dataclass(frozen=True)
class RemoteRun:
    """A run prefix: each stage builds into the staging directory ``root``/ARTIFACT and is published to
    ``loc``/ARTIFACT as it finishes, then kept in the artifact cache as the next stage's input."""

    loc: storage.Location
    root: Path

    @property
    def out(self) -> str:
        return self.loc.uri

    def existing(self, stage: Stage, inputs: dict[str, Path], config: Any, options: BuildOptions) -> Path | None:
        """The local copy of the stage's published artifact, when it is current: judged by its manifest
        first, so a stale artifact is never downloaded."""
        loc = self.loc.child(stage.artifact)
        try:
            _, manifest = storage.read_manifest(loc, stage.kind)
            if not stage.current_manifest(manifest, inputs, config, options):
                return None
            local = storage.fetch_artifact(loc, stage.kind)  # each file checked against the manifest as it arrives
            stage.read_manifest(local)
        except ArtifactError:
            return None
        return local

    def shown(self, artifact: str) -> str:
        return self.loc.at(artifact)

    def publish(self, stage: Stage, *, force: bool = False) -> Path:
        built = self.root / stage.artifact
        return storage.adopt(
            built, storage.publish_artifact(built, self.loc.child(stage.artifact), stage.kind, force=force)
        )


@contextlib.contextmanager
def run_destination(out: Path | str, source: Path | str, *, force: bool = False) -> Iterator[LocalRun | RemoteRun]:
    """Where ``dynsel run --out OUT`` puts its artifacts, after checking that ``out`` may be written."""
    if not storage.is_uri(str(out)):
        check_output(Path(out), RUN_KIND, inputs=[] if storage.is_uri(str(source)) else [Path(source)], force=force)
        yield LocalRun(Path(out))
        return
    with storage.remote_output(str(out), RUN_KIND, force=force, inputs=[source]) as (loc, root):
        yield RemoteRun(loc, root)


def validate_settings(config: RunConfig) -> None:
    """Refuse bad options before anything is touched, so a doomed run leaves nothing behind."""
    for stage in STAGES:
        stage.validate(config.for_stage(stage))


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
    validate_settings(config)  # before any bucket is touched or a source downloaded
    source_name = storage.describe(source) if storage.is_uri(str(source)) else None  # not the local copy's path
    options = BuildOptions(force=force, restart=restart, formats=formats, log=null_log, source_name=source_name)
    with run_destination(out, source, force=force) as destination:
        local_source = storage.local_source(source)
        if not local_source.exists():
            raise DynselError(f"{local_source}: no such file or directory; pass the data set to plan for")
        paths: dict[str, Path] = {"source": local_source}
        stages: dict[str, str] = {}
        for stage in STAGES:
            stage_config = config.for_stage(stage)
            inputs = {name: paths[name] for name in stage.inputs(stage_config)}
            existing = destination.existing(stage, inputs, stage_config, options)
            if existing is not None:
                paths[stage.artifact] = existing
                stages[stage.command] = "up to date"
                continue
            shown = f"{storage.describe(source)} " if "source" in inputs else ""
            log(f"{stage.command}: {shown}→ {destination.shown(stage.artifact)}")
            stage.build(inputs, destination.root / stage.artifact, stage_config, progress, options)
            paths[stage.artifact] = destination.publish(stage, force=force)
            stages[stage.command] = "built"
        _clean_up(destination.root, stages)
    for command, status in stages.items():
        log(f"{command}: {status}")
    return RunResult(
        out=destination.out, stages=stages, artifacts={stage.artifact: paths[stage.artifact] for stage in STAGES}
    )


def _clean_up(build_root: Path, stages: dict[str, str]) -> None:
    """A run killed after a stage's artifact was in place, but before the stage had cleaned up, left its
    temporaries and resume state; a built stage has removed them, an up-to-date one does it now."""
    for stage in STAGES:
        sweep_stale_temporaries(build_root / stage.artifact)
    if stages["extract"] == "up to date":
        remove_abandoned(build_root / "features")
    if stages["fit-sae"] == "up to date":
        remove_state(resume_dir(build_root / "sae"))
