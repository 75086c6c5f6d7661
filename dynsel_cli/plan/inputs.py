"""What the plan stage reads from the factor tables, and how: one chunked pass, or the whole table.

Most methods need a few bytes per sample: the labels (for class quotas), the ids (only when they are not
simply the row numbers) and, for the scored methods, normalised representativeness R and rarity D. These
come from one pass over samples.parquet in record batches (:func:`scan_factor_tables`), never holding the
N × k codes. dynsel's neighbour signals need every code at once and read the whole table instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import kernels
from ..errors import ArtifactError
from ..formats.common import id_fields
from ..formats.factors import (
    FactorTables,
    iter_sample_batches,
    read_factor_tables,
    read_factors_manifest,
    read_unit_frequency,
    sample_table_columns,
)
from .scores import normalise, raw_scores


@dataclass(frozen=True)
class PlanInputs:
    """The per-sample data a plan is computed from, in factor-table row order."""

    path: Path  # the factor tables directory
    n_samples: int
    manifest: dict[str, Any]  # the factor tables' manifest
    ids: np.ndarray | None  # int64 [N] sample ids; None when every id equals its row
    labels: np.ndarray | None  # [N] class ids in the narrowest integer dtype that holds them
    representativeness: np.ndarray | None = None  # float32 [N] normalised R (score, static-top)
    rarity: np.ndarray | None = None  # float32 [N] normalised D (score)
    codes: tuple[np.ndarray, np.ndarray] | None = None  # (units int32 [N, k], acts float32 [N, k]): dynsel's signals

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """The sample ids of factor-table rows."""
        return rows if self.ids is None else self.ids[rows]

    def id_fields(self) -> dict[str, Any]:
        """The plan manifest's ``id_min``, ``id_max``, ``ids_dense``."""
        if self.ids is None and self.n_samples:
            return {"id_min": 0, "id_max": self.n_samples - 1, "ids_dense": True}
        return id_fields(self.ids if self.ids is not None else np.zeros(0, np.int64))

    def all_ids(self) -> np.ndarray:
        """Every sample id, int64 [N] (made on demand when the ids are the rows)."""
        return np.arange(self.n_samples, dtype=np.int64) if self.ids is None else self.ids


def narrow_labels(labels: np.ndarray) -> np.ndarray:
    """Labels in the narrowest integer dtype that holds them (uint8 for up to 256 classes)."""
    if len(labels) == 0:
        return labels.astype(np.uint8)
    dtype = np.result_type(np.min_scalar_type(int(labels.min())), np.min_scalar_type(int(labels.max())))
    return labels.astype(dtype)


def row_ids(ids: np.ndarray) -> np.ndarray | None:
    """None when ``ids`` are exactly the row numbers 0 … N − 1 (then a row is its own id), else ``ids``."""
    return None if np.array_equal(ids, np.arange(len(ids))) else ids


def inputs_from_tables(
    tables: FactorTables,
    scores: tuple[str, ...] = (),
    normaliser: str = "rank",
    device: str = "cpu",
    codes: bool = False,
) -> PlanInputs:
    """:class:`PlanInputs` of factor tables already in memory. ``scores`` names any of "R", "D"."""
    r = d = None
    if scores:
        raw_r, raw_d = raw_scores(tables, device)
        r = normalise(raw_r, normaliser) if "R" in scores else None
        d = normalise(raw_d, normaliser) if "D" in scores else None
    labels = tables.samples.labels
    return PlanInputs(
        path=tables.path,
        n_samples=tables.n_samples,
        manifest=tables.manifest,
        ids=row_ids(tables.samples.ids),
        labels=narrow_labels(labels) if labels is not None else None,
        representativeness=r,
        rarity=d,
        codes=(tables.samples.units, tables.samples.acts) if codes else None,
    )


class _Column:
    """An [N] column filled batch by batch in the narrowest dtype seen so far (widened when a batch needs it)."""

    def __init__(self, n: int) -> None:
        self.values = np.zeros(n, dtype=np.uint8)

    def put(self, start: int, batch: np.ndarray) -> None:
        if len(batch):
            wanted = np.result_type(
                self.values.dtype, np.min_scalar_type(int(batch.min())), np.min_scalar_type(int(batch.max()))
            )
            if wanted != self.values.dtype:
                self.values = self.values.astype(wanted)
        self.values[start : start + len(batch)] = batch


def scan_factor_tables(
    path: Path, scores: tuple[str, ...] = (), normaliser: str = "rank", device: str = "cpu", verify: bool = True
) -> PlanInputs:
    """:class:`PlanInputs` from one pass over samples.parquet in record batches.

    ``scores`` names the normalised scores to compute, any of "R" and "D" (raw values per batch with
    :func:`kernels.factor_scores`, exactly as over the whole table, then :func:`normalise`). Memory per
    sample: the labels (1 byte up to 256 classes), 8 bytes of ids only when the ids are not the row numbers,
    and 4 bytes per score (plus the transient 20 bytes of the rank normalisation of one score).
    """
    path = Path(path)
    manifest = read_factors_manifest(path, verify=verify)
    n = int(manifest["n_samples"])
    has_labels = "label" in sample_table_columns(path)
    columns = ["id"] + (["label"] if has_labels else []) + (["units", "acts"] if scores else [])
    frequency = read_unit_frequency(path).astype(np.float32) if scores else None
    raw = {name: np.empty(n, dtype=np.float32) for name in scores}
    labels = _Column(n) if has_labels else None
    ids: np.ndarray | None = None  # materialised only once an id differs from its row
    start = 0
    for batch in iter_sample_batches(path, columns):
        rows = len(batch["id"])
        if start + rows > n:
            raise ArtifactError(
                f"{path}: samples.parquet has more rows than the manifest's n_samples ({n}); rebuild the factor tables"
            )
        if ids is None and not np.array_equal(batch["id"], np.arange(start, start + rows)):
            ids = np.empty(n, dtype=np.int64)
            ids[:start] = np.arange(start)
        if ids is not None:
            ids[start : start + rows] = batch["id"]
        if labels is not None:
            labels.put(start, batch["label"])
        if scores:
            r, d = kernels.factor_scores(batch["units"], batch["acts"], frequency, device=device)
            for name, values in (("R", r), ("D", d)):
                if name in raw:
                    raw[name][start : start + rows] = values
        start += rows
    if start != n:
        raise ArtifactError(
            f"{path}: samples.parquet has {start} rows, the manifest says n_samples {n}; rebuild the factor tables"
        )
    normalised = {}
    for name in scores:
        normalised[name] = normalise(raw.pop(name), normaliser)  # frees each raw score as soon as it is scaled
    return PlanInputs(
        path=path,
        n_samples=n,
        manifest=manifest,
        ids=ids,
        labels=labels.values if labels is not None else None,
        representativeness=normalised.get("R"),
        rarity=normalised.get("D"),
    )


def read_plan_inputs(
    path: Path, scores: tuple[str, ...] = (), normaliser: str = "rank", device: str = "cpu", codes: bool = False
) -> PlanInputs:
    """What a method needs from the factor tables at ``path``: the whole table when it needs the ``codes``
    (dynsel's neighbour signals), else one chunked pass (:func:`scan_factor_tables`)."""
    if codes:
        return inputs_from_tables(read_factor_tables(Path(path)), scores, normaliser, device, codes=True)
    return scan_factor_tables(Path(path), scores, normaliser, device)
