"""The plan stage: factor tables → per-epoch sample ids in training order → plan directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import PlanConfig, as_settings
from ..errors import DynselError
from ..formats.common import atomic_directory
from ..formats.output import check_output
from ..formats.factors import FactorTables, read_factor_tables
from ..formats.features import Features, read_features
from ..formats.plan import KIND, write_plan
from ..progress import ProgressFn, null_progress
from .budget import epoch_budget
from .methods import quotas_apply, select


@dataclass(frozen=True)
class PlanResult:
    epochs: list[np.ndarray]  # int64 sample ids per epoch, training order
    manifest_extra: dict[str, Any]


def training_order(rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """A seeded shuffle of one epoch's rows (PCG64 keyed by seed and epoch: same on every platform)."""
    rng = np.random.default_rng([seed, epoch, 1])
    return rows[rng.permutation(len(rows))]


def compute_plan(tables: FactorTables, config: PlanConfig, progress: ProgressFn = null_progress, features: Features | None = None) -> PlanResult:
    """Select and order every epoch; the ids are the factor table's sample ids.

    ``features`` (needed by the geometric baselines) must be the features the factor tables were made from.
    """
    vectors = None
    if features is not None:
        check_same_data_set(tables, features)
        vectors = features.vectors
    selection = select(tables, config, progress, vectors)
    ids = tables.samples.ids
    epochs = [ids[training_order(rows, config.seed, t)] for t, rows in enumerate(selection.rows)]
    settings = as_settings(config)
    settings.pop("device")
    extra = {
        "dynsel_version": __version__,
        "created_by": "dynsel plan",
        "method": config.method,
        "ratio": config.ratio,
        "seed": config.seed,
        "budget": epoch_budget(config.ratio, tables.n_samples),
        "class_quota_applied": bool(config.class_quota and tables.samples.labels is not None and quotas_apply(config.method)),
        "settings": settings,
        "schedule": {"kind": config.schedule, "lambda": selection.lambdas} if config.method == "dynsel" else None,
        "inputs": {"factors": tables.fingerprint, **({"features": features.fingerprint} if features is not None else {})},
        "dataset_fingerprint": tables.manifest.get("inputs", {}).get("features"),
        "classes": tables.manifest.get("classes"),
    }
    return PlanResult(epochs=epochs, manifest_extra=extra)


def check_same_data_set(tables: FactorTables, features: Features) -> None:
    expected = tables.manifest.get("inputs", {}).get("features")
    if expected != features.fingerprint or not np.array_equal(features.ids, tables.samples.ids):
        raise DynselError(f"{features.path}: these features are not the ones {tables.path} was made from (fingerprint mismatch); pass the matching --features")


def build_plan(
    factors: Path,
    out: Path,
    config: PlanConfig = PlanConfig(),
    progress: ProgressFn = null_progress,
    formats: tuple[str, ...] = ("bin", "txt", "parquet"),
    features: Path | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """The plan stage: read the factor tables (and features, if given), compute the plan, write it atomically."""
    check_output(Path(out), KIND, inputs=[Path(factors), features], force=force)
    tables = read_factor_tables(Path(factors))
    feature_table = read_features(Path(features)) if features is not None else None
    result = compute_plan(tables, config, progress, feature_table)
    with atomic_directory(Path(out), KIND, force) as tmp:
        return write_plan(
            tmp,
            result.epochs,
            n_samples=tables.n_samples,
            batch_size=config.batch_size,
            world_size=config.world_size,
            drop_last=config.drop_last,
            extra=result.manifest_extra,
            formats=formats,
        )
