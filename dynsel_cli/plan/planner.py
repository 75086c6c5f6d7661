"""The plan stage: factor tables → per-epoch sample ids in training order → plan directory.

Epochs are selected, ordered and written one at a time (:class:`~dynsel_cli.formats.plan.PlanWriter`), so
the plan's size on disk never has to fit in memory; what a method holds per sample is in docs/method.md,
"Memory".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from ..config import PlanConfig
from ..errors import DynselError
from ..formats.common import atomic_directory, check_unique_ids
from ..formats.factors import FactorTables, read_factors_manifest
from ..formats.features import Features, read_features
from ..formats.output import check_output
from ..formats.plan import KIND, PlanWriter, index_dtype_for, write_plan_stream
from ..progress import ProgressFn, null_progress
from ..provenance import provenance
from . import streams
from .budget import epoch_budget
from .inputs import PlanInputs, inputs_from_tables, read_plan_inputs
from .methods import Needs, needs, quotas_apply, select, validate
from .signals import Signals


@dataclass(frozen=True)
class PlanResult:
    epochs: list[np.ndarray]  # int64 sample ids per epoch, training order
    manifest_extra: dict[str, Any]
    signals: pa.Table | None = None  # dynsel: per-sample near-duplicate groups and label trust (signals.parquet)


@dataclass(frozen=True)
class PlanStream:
    """A plan whose epochs are computed as they are iterated (each int64 ids in training order)."""

    epochs: Iterator[np.ndarray]
    counts: list[int]
    index_dtype: str  # fits every id of the data set, so it is known before any epoch is selected
    manifest_extra: dict[str, Any]
    inputs: PlanInputs
    signals: Signals | None = None  # dynsel: what the rotation weights rest on

    def signals_table(self) -> pa.Table | None:
        """signals.parquet's table, built when asked for (after the epochs, when their memory is free)."""
        return signals_table(self.inputs.all_ids(), self.signals) if self.signals is not None else None


def training_order(rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """A seeded shuffle of one epoch's rows (PCG64 keyed by seed and epoch: same on every platform)."""
    rng = np.random.default_rng([seed, epoch, streams.ORDER])
    return rows[rng.permutation(len(rows))]


def plan_stream(inputs: PlanInputs, config: PlanConfig, features: Features | None = None) -> PlanStream:
    """Select and order every epoch, lazily; the ids are the factor table's sample ids.

    ``features`` (needed by the geometric baselines) must be the features the factor tables were made from.
    """
    check_unique_ids(inputs.all_ids(), inputs.path)  # factor tables written elsewhere may repeat an id
    vectors = None
    if features is not None:
        check_same_data_set(inputs, features)
        vectors = features.vectors
    selection = select(inputs, config, vectors)
    recorded = {"factors": inputs.fingerprint, **({"features": features.fingerprint} if features is not None else {})}
    id_span = inputs.id_fields()
    extra = {
        **provenance("plan", config, recorded),
        "method": config.method,
        "ratio": config.ratio,
        "seed": config.seed,
        "budget": epoch_budget(config.ratio, inputs.n_samples),
        "class_quota_applied": bool(
            config.class_quota != "none" and inputs.labels is not None and quotas_apply(config.method)
        ),
        "schedule": {"kind": config.schedule, "lambda": selection.lambdas} if config.method == "score" else None,
        "dataset_fingerprint": inputs.manifest.get("inputs", {}).get("features"),
        **id_span,
        "classes": inputs.manifest.get("classes"),
        "signals": selection.signals.summary() if selection.signals is not None else None,
    }
    epochs = (inputs.ids_of(training_order(rows, config.seed, t)) for t, rows in enumerate(selection.rows))
    return PlanStream(
        epochs, selection.counts, index_dtype_for(id_span["id_max"] or 0), extra, inputs, selection.signals
    )


def compute_plan(
    tables: FactorTables, config: PlanConfig, progress: ProgressFn = null_progress, features: Features | None = None
) -> PlanResult:
    """The whole plan in memory, from factor tables in memory (verify, tests, small data sets)."""
    validate(config)
    wanted = needs(config, tables.n_samples)
    inputs = inputs_from_tables(
        tables, wanted.scores, config.normalise, _score_device(config, wanted), codes=wanted.codes
    )
    stream = plan_stream(inputs, config, features)
    epochs = list(_reported(stream, progress))
    return PlanResult(epochs=epochs, manifest_extra=stream.manifest_extra, signals=stream.signals_table())


def _score_device(config: PlanConfig, wanted: Needs) -> str:
    """Where the scores are computed: only the scored methods need a scoring device."""
    from .. import kernels

    return kernels.resolve_device(config.device) if wanted.scores else "cpu"


def read_inputs(factors: Path, config: PlanConfig) -> PlanInputs:
    """What ``config.method`` needs from the factor tables at ``factors`` (chunked unless it needs the codes)."""
    validate(config)
    n = int(read_factors_manifest(Path(factors), verify=False)["n_samples"])
    wanted = needs(config, n)
    return read_plan_inputs(
        Path(factors), wanted.scores, config.normalise, _score_device(config, wanted), codes=wanted.codes
    )


_SIGNALS_CHUNK = 1 << 20  # rows per repeated chunk of a constant signals column (a multiple of the writer's batches)


def signals_table(ids: np.ndarray, signals: Signals) -> pa.Table:
    """signals.parquet: what dynsel's rotation weights rest on, one row per sample (docs/formats.md).

    A signal that is off is a column of one value: it is made of one chunk referenced over and over, so
    it takes no memory per sample (the Parquet bytes are those of the same values in one piece)."""
    n = len(ids)
    weights = signals.rotation_weights
    columns = {
        "id": pa.array(ids, pa.int64()),
        "group": pa.array(ids if signals.groups is None else ids[signals.groups], pa.int64()),
        "group_size": _constant(n, 1, pa.int64()) if signals.sizes is None else pa.array(signals.sizes, pa.int64()),
        "label_support": pa.array(signals.label_support, pa.float32())
        if signals.label_support is not None
        else _constant(n, None, pa.float32()),
        "suspect": _constant(n, False, pa.bool_())
        if signals.suspects is None
        else pa.array(signals.suspects, pa.bool_()),
        "weight": _constant(n, 1.0, pa.float64()) if weights is None else pa.array(weights, pa.float64()),
    }
    return pa.table(columns)


def _constant(n: int, value: Any, kind: pa.DataType) -> pa.ChunkedArray:
    """A column of ``n`` copies of ``value`` (None: nulls), as one shared chunk repeated."""
    chunk = (
        pa.nulls(min(n, _SIGNALS_CHUNK), kind)
        if value is None
        else pa.array(np.full(min(n, _SIGNALS_CHUNK), value), kind)
    )
    whole, rest = divmod(n, _SIGNALS_CHUNK)
    return pa.chunked_array([chunk] * whole + ([chunk.slice(0, rest)] if rest else []), kind)


def print_plan(
    factors: Path,
    handle: TextIO,
    config: PlanConfig = PlanConfig(),
    progress: ProgressFn = null_progress,
    features: Path | None = None,
) -> None:
    """``dynsel plan --out -``: compute the plan and print one line of ids per epoch (nothing on disk)."""
    inputs = read_inputs(Path(factors), config)
    feature_table = read_features(Path(features)) if features is not None else None
    stream = plan_stream(inputs, config, feature_table)
    write_plan_stream(handle, _reported(stream, progress))


def _reported(stream: PlanStream, progress: ProgressFn) -> Iterator[np.ndarray]:
    for e, epoch in enumerate(stream.epochs):
        yield epoch
        progress("plan", e + 1, len(stream.counts))


def check_same_data_set(inputs: PlanInputs, features: Features) -> None:
    expected = inputs.manifest.get("inputs", {}).get("features")
    if expected != features.fingerprint or not np.array_equal(features.ids, inputs.all_ids()):
        raise DynselError(
            f"{features.path}: these features are not the ones {inputs.path} was made from (fingerprint mismatch); pass the matching --features"
        )


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
    """The plan stage: read what the method needs from the factor tables (and features, if given), then
    select, order and write one epoch at a time into a directory swapped into place when complete."""
    check_output(Path(out), KIND, inputs=[Path(factors), features], force=force)
    inputs = read_inputs(Path(factors), config)
    feature_table = read_features(Path(features)) if features is not None else None
    stream = plan_stream(inputs, config, feature_table)
    with (
        atomic_directory(Path(out), KIND, force) as tmp,
        PlanWriter(tmp, stream.counts, stream.index_dtype, formats) as writer,
    ):
        for epoch in _reported(stream, progress):
            writer.add(epoch)
        return writer.finish(
            inputs.n_samples,
            config.batch_size,
            config.world_size,
            config.drop_last,
            stream.manifest_extra,
            stream.signals_table(),
        )
