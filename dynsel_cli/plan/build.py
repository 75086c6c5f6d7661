"""The plan stage: factor tables → per-epoch sample ids in training order → plan directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import PlanConfig, as_settings
from ..formats.common import atomic_directory
from ..formats.factors import FactorTables, read_factor_tables
from ..formats.plan import write_plan
from ..progress import ProgressFn, null_progress
from .budget import epoch_budget
from .methods import select


@dataclass(frozen=True)
class PlanResult:
    epochs: list[np.ndarray]  # int64 sample ids per epoch, training order
    manifest_extra: dict[str, Any]


def training_order(rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """A seeded shuffle of one epoch's rows (PCG64 keyed by seed and epoch: same on every platform)."""
    rng = np.random.default_rng([seed, epoch, 1])
    return rows[rng.permutation(len(rows))]


def compute_plan(tables: FactorTables, config: PlanConfig, progress: ProgressFn = null_progress) -> PlanResult:
    """Select and order every epoch; the ids are the factor table's sample ids."""
    selection = select(tables, config, progress)
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
        "settings": settings,
        "schedule": {"kind": config.schedule, "lambda": selection.lambdas} if config.method == "dynsel" else None,
        "inputs": {"factors": tables.fingerprint},
        "dataset_fingerprint": tables.manifest.get("inputs", {}).get("features"),
        "classes": tables.manifest.get("classes"),
    }
    return PlanResult(epochs=epochs, manifest_extra=extra)


def build_plan(factors: Path, out: Path, config: PlanConfig = PlanConfig(), progress: ProgressFn = null_progress, formats: tuple[str, ...] = ("bin", "txt", "parquet")) -> dict[str, Any]:
    """The plan stage: read the factor tables, compute the plan, write it atomically; returns the manifest."""
    tables = read_factor_tables(Path(factors))
    result = compute_plan(tables, config, progress)
    with atomic_directory(Path(out)) as tmp:
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
