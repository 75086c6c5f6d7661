"""The plan stage: factor tables → per-epoch sample ids in training order → plan directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from ..config import PlanConfig
from ..provenance import provenance
from ..errors import DynselError
from ..formats.common import atomic_directory, id_fields
from ..formats.output import check_output
from ..formats.factors import FactorTables, read_factor_tables
from ..formats.features import Features, read_features
from ..formats.plan import KIND, write_plan, write_plan_stream
from ..progress import ProgressFn, null_progress
from . import streams
from .budget import epoch_budget
from .methods import quotas_apply, select
from .signals import Signals


@dataclass(frozen=True)
class PlanResult:
    epochs: list[np.ndarray]  # int64 sample ids per epoch, training order
    manifest_extra: dict[str, Any]
    signals: pa.Table | None = None  # dynsel: per-sample near-duplicate groups and label trust (signals.parquet)


def training_order(rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """A seeded shuffle of one epoch's rows (PCG64 keyed by seed and epoch: same on every platform)."""
    rng = np.random.default_rng([seed, epoch, streams.ORDER])
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
    inputs = {"factors": tables.fingerprint, **({"features": features.fingerprint} if features is not None else {})}
    extra = {
        **provenance("plan", config, inputs),
        "method": config.method,
        "ratio": config.ratio,
        "seed": config.seed,
        "budget": epoch_budget(config.ratio, tables.n_samples),
        "class_quota_applied": bool(config.class_quota != "none" and tables.samples.labels is not None and quotas_apply(config.method)),
        "schedule": {"kind": config.schedule, "lambda": selection.lambdas} if config.method == "score" else None,
        "dataset_fingerprint": tables.manifest.get("inputs", {}).get("features"),
        **id_fields(ids),
        "classes": tables.manifest.get("classes"),
        "signals": selection.signals.summary() if selection.signals is not None else None,
    }
    signals = signals_table(ids, selection.signals) if selection.signals is not None else None
    return PlanResult(epochs=epochs, manifest_extra=extra, signals=signals)


def signals_table(ids: np.ndarray, signals: Signals) -> pa.Table:
    """signals.parquet: what dynsel's rotation weights rest on, one row per sample (docs/formats.md)."""
    columns = {
        "id": pa.array(ids, pa.int64()),
        "group": pa.array(ids[signals.group], pa.int64()),
        "group_size": pa.array(signals.group_size, pa.int64()),
        "label_support": pa.array(signals.label_support, pa.float32()) if signals.label_support is not None else pa.nulls(len(ids), pa.float32()),
        "suspect": pa.array(signals.suspect, pa.bool_()),
        "weight": pa.array(signals.weights, pa.float64()),
    }
    return pa.table(columns)


def print_plan(factors: Path, handle: TextIO, config: PlanConfig = PlanConfig(), progress: ProgressFn = null_progress, features: Path | None = None) -> None:
    """``dynsel plan --out -``: compute the plan and print one line of ids per epoch (nothing on disk)."""
    tables = read_factor_tables(Path(factors))
    feature_table = read_features(Path(features)) if features is not None else None
    write_plan_stream(handle, compute_plan(tables, config, progress, feature_table).epochs)


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
            signals=result.signals,
        )
