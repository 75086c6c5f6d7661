"""Factor tables (spec: docs/formats.md, "Factor tables").

Layout::

    FACTORS/
      samples.parquet   id int64, [label int64], units fixed_size_list<int32>[k], acts fixed_size_list<float32>[k]
                        (one row per sample in feature order; units sorted by activation, largest first;
                        an activation of 0 means the unit did not fire)
      units.parquet     unit int32, count int64, frequency float64, mass float64, mean_act float64,
                        max_act float64, dead bool, [class_frequency fixed_size_list<float64>[C]]
      manifest.json     settings, input fingerprints (features, SAE), checksums, content fingerprint
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ArtifactError
from .common import FORMAT_VERSION, IdRange, file_entry, read_artifact_manifest, write_json

KIND = "dynsel.factors"
WHAT = "factor tables directory"


@dataclass(frozen=True)
class SampleFactors:
    """Per-sample SAE codes: the k largest units of each sample and their activations."""

    ids: np.ndarray  # int64 [N]
    labels: np.ndarray | None  # int64 [N]
    units: np.ndarray  # int32 [N, k]
    acts: np.ndarray  # float32 [N, k]


@dataclass(frozen=True)
class UnitStats:
    """Per-unit statistics over the data set."""

    count: np.ndarray  # int64 [m] samples in which the unit fired
    frequency: np.ndarray  # float64 [m] count / N
    mass: np.ndarray  # float64 [m] total activation
    mean_act: np.ndarray  # float64 [m] mass / count (0 for dead units)
    max_act: np.ndarray  # float64 [m]
    class_frequency: np.ndarray | None  # float64 [m, C] share of class-c samples in which the unit fired

    @property
    def dead(self) -> np.ndarray:
        return self.count == 0


@dataclass(frozen=True)
class FactorTables:
    path: Path
    manifest: dict[str, Any]
    samples: SampleFactors
    units: UnitStats

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def n_samples(self) -> int:
        return int(len(self.samples.ids))


def _fixed_list(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), dtype), values.shape[1])


#: Rows per row group of samples.parquet: pyarrow's default, so writing in chunks gives the bytes of one
#: ``write_table`` call over the whole table.
SAMPLES_ROW_GROUP = 1024 * 1024


class SampleTableWriter:
    """samples.parquet written chunk by chunk (memory: one row group), with the running id range.

    Chunks are copied into one row-group buffer (allocated once, its pages touched only as rows arrive), so
    the caller's arrays can be freed after :meth:`add`, and the file does not depend on how the rows were
    chunked.
    """

    def __init__(self, path: Path, k: int, has_labels: bool) -> None:
        fields = [("id", pa.int64())] + ([("label", pa.int64())] if has_labels else [])
        fields += [("units", pa.list_(pa.int32(), k)), ("acts", pa.list_(pa.float32(), k))]
        self.k, self.has_labels, self.n_samples = k, has_labels, 0
        self._schema = pa.schema(fields)
        self._writer = pq.ParquetWriter(path, self._schema, compression="zstd")
        self._buffer: SampleFactors | None = None
        self._pending_rows = 0
        self._ids = IdRange()

    def add(self, samples: SampleFactors) -> None:
        if samples.units.shape[1:] != (self.k,) or samples.acts.shape != samples.units.shape:
            raise ValueError(f"units and acts must be [rows, {self.k}]")
        if (samples.labels is not None) != self.has_labels:
            raise ValueError("labels must be given exactly when the table has labels")
        if len(samples.ids):  # IdRange takes any sequence; give it two numbers, not a long array
            self._ids.update(np.array([samples.ids.min(), samples.ids.max()]))
        self.n_samples += len(samples.ids)
        buffer = self._row_group_buffer()
        start, rows = 0, len(samples.ids)
        while start < rows:
            take = min(rows - start, SAMPLES_ROW_GROUP - self._pending_rows)
            into, source = slice(self._pending_rows, self._pending_rows + take), slice(start, start + take)
            buffer.ids[into] = samples.ids[source]
            if buffer.labels is not None and samples.labels is not None:
                buffer.labels[into] = samples.labels[source]
            buffer.units[into], buffer.acts[into] = samples.units[source], samples.acts[source]
            self._pending_rows += take
            start += take
            if self._pending_rows == SAMPLES_ROW_GROUP:
                self._flush()

    def _row_group_buffer(self) -> SampleFactors:
        if self._buffer is None:
            rows = SAMPLES_ROW_GROUP
            self._buffer = SampleFactors(
                ids=np.empty(rows, dtype=np.int64),
                labels=np.empty(rows, dtype=np.int64) if self.has_labels else None,
                units=np.empty((rows, self.k), dtype=np.int32),
                acts=np.empty((rows, self.k), dtype=np.float32),
            )
        return self._buffer

    def _flush(self) -> None:
        buffer, rows = self._row_group_buffer(), self._pending_rows
        columns = [pa.array(buffer.ids[:rows], pa.int64())]
        if buffer.labels is not None:
            columns.append(pa.array(buffer.labels[:rows], pa.int64()))
        columns.append(_fixed_list(buffer.units[:rows], pa.int32()))
        columns.append(_fixed_list(buffer.acts[:rows], pa.float32()))
        self._writer.write_table(pa.Table.from_arrays(columns, schema=self._schema))
        self._pending_rows = 0

    def close(self) -> dict[str, Any]:
        """Finish the file; returns the manifest's id fields (``id_min``, ``id_max``, ``ids_dense``)."""
        if self._pending_rows:
            self._flush()
        elif not self.n_samples:  # write_table of an empty table writes one empty row group
            self._writer.write_table(self._schema.empty_table())
        self._writer.close()
        self._buffer = None
        return self._ids.manifest_fields(self.n_samples)


def write_factor_tables(
    directory: Path, samples: SampleFactors, units: UnitStats, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write both tables and the manifest into ``directory`` (a temporary directory of an atomic write)."""
    writer = SampleTableWriter(directory / "samples.parquet", int(samples.units.shape[1]), samples.labels is not None)
    writer.add(samples)
    return finish_factor_tables(directory, writer, units, extra)


def finish_factor_tables(
    directory: Path, samples: SampleTableWriter, units: UnitStats, extra: dict[str, Any]
) -> dict[str, Any]:
    """Close the samples table, write units.parquet and the manifest (after :class:`SampleTableWriter` was fed)."""
    id_span = samples.close()
    width = len(units.count)
    unit_columns: dict[str, pa.Array] = {
        "unit": pa.array(np.arange(width, dtype=np.int32)),
        "count": pa.array(units.count.astype(np.int64)),
        "frequency": pa.array(units.frequency.astype(np.float64)),
        "mass": pa.array(units.mass.astype(np.float64)),
        "mean_act": pa.array(units.mean_act.astype(np.float64)),
        "max_act": pa.array(units.max_act.astype(np.float64)),
        "dead": pa.array(units.dead),
    }
    if units.class_frequency is not None:
        unit_columns["class_frequency"] = _fixed_list(units.class_frequency.astype(np.float64), pa.float64())
    pq.write_table(pa.table(unit_columns), directory / "units.parquet", compression="zstd")

    files = {name: file_entry(directory / name) for name in ("samples.parquet", "units.parquet")}
    manifest = {
        "format": KIND,
        "format_version": FORMAT_VERSION,
        "n_samples": samples.n_samples,
        "k": samples.k,
        "width": width,
        "has_labels": samples.has_labels,
        **id_span,
        "files": files,
        "fingerprint": files["samples.parquet"]["sha256"],
        **extra,
    }
    write_json(directory / "manifest.json", manifest)
    return manifest


def read_factors_manifest(path: Path, verify: bool = True) -> dict[str, Any]:
    return read_artifact_manifest(path, KIND, WHAT, "a factor tables directory", "dynsel factors", verify)


def _fixed_list_to_numpy(column: pa.ChunkedArray, dtype: type, path: Path, name: str) -> np.ndarray:
    array = column.combine_chunks()
    if not pa.types.is_fixed_size_list(array.type):
        raise ArtifactError(f"{path}: column {name!r} must be a fixed-size list")
    return np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(
        len(array), array.type.list_size
    )


def read_factor_tables(path: Path, verify: bool = True) -> FactorTables:
    """Load both tables (checksums verified)."""
    path = Path(path)
    manifest = read_factors_manifest(path, verify=verify)
    try:
        sample_table = pq.read_table(path / "samples.parquet")
        unit_table = pq.read_table(path / "units.parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable Parquet ({exc}); rebuild the factor tables") from None
    labels = None
    if "label" in sample_table.column_names:
        labels = sample_table.column("label").to_numpy().astype(np.int64)
    samples = SampleFactors(
        ids=sample_table.column("id").to_numpy().astype(np.int64),
        labels=labels,
        units=_fixed_list_to_numpy(sample_table.column("units"), np.int32, path, "units"),
        acts=_fixed_list_to_numpy(sample_table.column("acts"), np.float32, path, "acts"),
    )
    class_frequency = None
    if "class_frequency" in unit_table.column_names:
        class_frequency = _fixed_list_to_numpy(
            unit_table.column("class_frequency"), np.float64, path, "class_frequency"
        )
    units = UnitStats(
        count=unit_table.column("count").to_numpy().astype(np.int64),
        frequency=unit_table.column("frequency").to_numpy().astype(np.float64),
        mass=unit_table.column("mass").to_numpy().astype(np.float64),
        mean_act=unit_table.column("mean_act").to_numpy().astype(np.float64),
        max_act=unit_table.column("max_act").to_numpy().astype(np.float64),
        class_frequency=class_frequency,
    )
    return FactorTables(path=path, manifest=manifest, samples=samples, units=units)


#: Rows per record batch when the plan stage streams samples.parquet (k = 32: ~17 MB of units and acts).
SCAN_BATCH = 1 << 16


def iter_sample_batches(
    path: Path, columns: Sequence[str], batch_rows: int = SCAN_BATCH
) -> Iterator[dict[str, np.ndarray]]:
    """samples.parquet of a factor tables directory, ``batch_rows`` rows at a time, as numpy arrays.

    ``columns`` names any of ``id``, ``label`` (int64 [rows]), ``units`` (int32 [rows, k]) and ``acts``
    (float32 [rows, k]); only those are read. Memory: one batch, never N × k.
    """
    path = Path(path)
    try:
        # Column chunks streamed through a 1 MiB buffer instead of read whole: memory of a batch, not of a
        # row group (k = 32: ~130 MB instead of ~430 MB).
        table = pq.ParquetFile(path / "samples.parquet", pre_buffer=False, buffer_size=1 << 20)
        for batch in table.iter_batches(batch_size=batch_rows, columns=list(columns), use_threads=False):
            yield {name: _batch_column(batch.column(name), name, path) for name in columns}
    except (pa.ArrowInvalid, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable Parquet ({exc}); rebuild the factor tables") from None
    finally:
        pa.default_memory_pool().release_unused()  # the pool keeps freed batches cached; the plan needs the memory


def _batch_column(array: pa.Array, name: str, path: Path) -> np.ndarray:
    if name in ("id", "label"):
        return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.int64)
    if not pa.types.is_fixed_size_list(array.type):
        raise ArtifactError(f"{path}: column {name!r} must be a fixed-size list")
    dtype = np.int32 if name == "units" else np.float32
    return np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(
        len(array), array.type.list_size
    )


def read_unit_frequency(path: Path) -> np.ndarray:
    """units.parquet's ``frequency`` column (float64 [width]), without the sample table."""
    path = Path(path)
    try:
        return (
            pq.read_table(path / "units.parquet", columns=["frequency"])
            .column("frequency")
            .to_numpy()
            .astype(np.float64)
        )
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise ArtifactError(f"{path}: unreadable Parquet ({exc}); rebuild the factor tables") from None


def sample_table_columns(path: Path) -> list[str]:
    """Column names of samples.parquet (read from its footer)."""
    try:
        return list(pq.ParquetFile(Path(path) / "samples.parquet").schema_arrow.names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable Parquet ({exc}); rebuild the factor tables") from None
