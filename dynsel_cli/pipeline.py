"""``dynsel run``: every stage into one directory, skipping stages whose inputs and settings are unchanged.

The pipeline knows stages only through the stage contract (:mod:`dynsel_cli.stage`): for each stage in
order it gathers the stage's inputs (the source, or earlier stages' artifacts), asks whether the
existing artifact is current (same dynsel version, same settings, same input fingerprints, checksums
intact) and builds it when not.
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
    out: Path
    stages: dict[str, str]  # stage → "built" or "up to date"

    @property
    def plan(self) -> Path:
        return self.out / "plan"


def validate_run(source: Path, config: RunConfig) -> None:
    """Refuse bad input and options before any stage runs, so a doomed run leaves nothing behind."""
    if not Path(source).exists():
        raise DynselError(f"{source}: no such file or directory; pass the data set to plan for")
    for stage in STAGES:
        stage.validate(config.for_stage(stage))


def run_pipeline(
    source: Path,
    out: Path,
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
    saved state of an interrupted fit-sae.
    """
    out = Path(out)
    check_output(out, RUN_KIND, inputs=[Path(source)], force=force)
    validate_run(Path(source), config)
    options = BuildOptions(force=force, restart=restart, formats=formats, log=null_log)
    paths: dict[str, Path] = {"source": Path(source), **{stage.artifact: out / stage.artifact for stage in STAGES}}
    stages: dict[str, str] = {}
    for stage in STAGES:
        stage_config = config.for_stage(stage)
        inputs = {name: paths[name] for name in stage.inputs(stage_config)}
        target = paths[stage.artifact]
        if stage.current(target, inputs, stage_config, options) is not None:
            stages[stage.command] = "up to date"
            continue
        source = f"{inputs['source']} " if "source" in inputs else ""
        log(f"{stage.command}: {source}→ {target}")
        stage.build(inputs, target, stage_config, progress, options)
        stages[stage.command] = "built"
    # a run killed after a stage's artifact was in place, but before the stage had cleaned up, left its
    # temporaries and resume state; a built stage has removed them, an up-to-date one does it now
    for stage in STAGES:
        sweep_stale_temporaries(paths[stage.artifact])
    if stages["extract"] == "up to date":
        remove_abandoned(paths["features"])
    if stages["fit-sae"] == "up to date":
        remove_state(resume_dir(paths["sae"]))
    for command, status in stages.items():
        log(f"{command}: {status}")
    return RunResult(out=out, stages=stages)
