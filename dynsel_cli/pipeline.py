"""``dynsel run``: every stage into one directory, skipping stages whose inputs and settings are unchanged.

A stage is up to date when its artifact exists, passes its checksums, was made by this dynsel version,
and records the same settings and the same input fingerprints the run would use now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .config import ExtractConfig, FactorsConfig, PlanConfig, SaeConfig, as_settings
from .errors import ArtifactError, DynselError
from .extract import extract
from .extract.loop import source_options
from .extract.sources import source_fingerprint
from .extract.work import remove_abandoned
from .factors import build_factor_tables
from .formats.common import sweep_stale_temporaries
from .formats.output import RUN_KIND, check_output
from .formats.factors import read_factors_manifest
from .formats.features import read_features_manifest
from .formats.plan import read_plan
from .formats.sae import read_sae_manifest
from .plan import build_plan
from .plan.budget import epoch_budget
from .plan.methods import NEEDS_FEATURES
from .plan.methods import validate as validate_plan_config
from .progress import LogFn, ProgressFn, null_log, null_progress
from .sae import fit_sae
from .sae.resume import remove_state, resume_dir


@dataclass(frozen=True)
class RunConfig:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    sae: SaeConfig = field(default_factory=SaeConfig)
    factors: FactorsConfig = field(default_factory=FactorsConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)


@dataclass(frozen=True)
class RunResult:
    out: Path
    stages: dict[str, str]  # stage → "built" or "up to date"

    @property
    def plan(self) -> Path:
        return self.out / "plan"


def _settings(config: Any) -> dict[str, Any]:
    settings = as_settings(config)
    settings.pop("device", None)
    return settings


def _current(read_manifest: Callable[[Path], dict[str, Any]], path: Path, inputs: dict[str, str], settings: dict[str, Any]) -> dict[str, Any] | None:
    """The artifact's manifest if it is up to date, else None."""
    if not path.exists():
        return None
    try:
        manifest = read_manifest(path)
    except ArtifactError:
        return None
    if manifest.get("dynsel_version") != __version__ or manifest.get("settings") != settings:
        return None
    if any(manifest.get("inputs", {}).get(k) != v for k, v in inputs.items()):
        return None
    return manifest


def _plan_manifest(path: Path) -> dict[str, Any]:
    return read_plan(path).manifest


def validate_run(source: Path, config: RunConfig) -> None:
    """Refuse bad input and options before any stage runs, so a doomed run leaves nothing behind."""
    if not source.exists():
        raise DynselError(f"{source}: no such file or directory; pass the data set to plan for")
    validate_plan_config(config.plan)
    epoch_budget(config.plan.ratio, 1)
    if config.sae.k < 1 or (config.sae.width and config.sae.k > config.sae.width):
        raise DynselError(f"--k {config.sae.k}: must be between 1 and the SAE width ({config.sae.width})")


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
    stages: dict[str, str] = {}
    paths = {name: out / name for name in ("features", "sae", "factors", "plan")}

    features = _current(read_features_manifest, paths["features"], {}, _settings(config.extract))
    if features is not None and features.get("source", {}).get("sha256") != source_fingerprint(Path(source), source_options(config.extract)):
        features = None
    stages["extract"] = "up to date" if features else "built"
    if features is None:
        log(f"extract: {source} → {paths['features']}")
        features = extract(Path(source), paths["features"], config.extract, progress, force=force)

    sae = _current(read_sae_manifest, paths["sae"], {"features": features["fingerprint"]}, _settings(config.sae))
    stages["fit-sae"] = "up to date" if sae else "built"
    if sae is None:
        log(f"fit-sae: → {paths['sae']}")
        sae = fit_sae(paths["features"], paths["sae"], config.sae, progress, force=force, resume=not restart)

    factor_inputs = {"features": features["fingerprint"], "sae": sae["fingerprint"]}
    factors = _current(read_factors_manifest, paths["factors"], factor_inputs, _settings(config.factors))
    stages["factors"] = "up to date" if factors else "built"
    if factors is None:
        log(f"factors: → {paths['factors']}")
        factors = build_factor_tables(paths["features"], paths["sae"], paths["factors"], config.factors, progress, force=force)

    plan = _current(_plan_manifest, paths["plan"], {"factors": factors["fingerprint"]}, _settings(config.plan))
    stages["plan"] = "up to date" if plan else "built"
    if plan is None:
        log(f"plan: → {paths['plan']}")
        features_for_plan = paths["features"] if config.plan.method in NEEDS_FEATURES else None
        build_plan(paths["factors"], paths["plan"], config.plan, progress, formats=formats, features=features_for_plan, force=force)
    # a run killed after a stage's artifact was in place, but before the stage had cleaned up, left its
    # temporaries and resume state; a built stage has removed them, an up-to-date one does it now
    for path in paths.values():
        sweep_stale_temporaries(path)
    if stages["extract"] == "up to date":
        remove_abandoned(paths["features"])
    if stages["fit-sae"] == "up to date":
        remove_state(resume_dir(paths["sae"]))
    for stage, status in stages.items():
        log(f"{stage}: {status}")
    return RunResult(out=out, stages=stages)
