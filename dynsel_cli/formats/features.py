"""Features: sharded Parquet with one row per sample (spec: docs/formats.md, "Features").

Layout of a features directory::

    FEATURES/
      _manifest.json        what produced it; shards with row counts and sha256; the content fingerprint
      part-00000.parquet    columns: id int64, [label int64], vector fixed_size_list<float32|float16>[dim]
      part-00001.parquet    ...

The manifest's name starts with "_" so Arrow dataset readers skip it: ``pyarrow.parquet.read_table(FEATURES)``
reads the directory as one table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ArtifactError, DynselError
from .common import (
    FORMAT_VERSION,
    IdRange,
    check_unique_ids,
    file_entry,
    read_artifact_manifest,
    safe_child,
    verify_files,
    write_json,
)

KIND = "dynsel.features"
MANIFEST = "_manifest.json"
WHAT = "features directory"
VECTOR_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


@dataclass(frozen=True)
class Features:
    """All features of a data set in memory."""

    path: Path
    manifest: dict[str, Any]
    ids: np.ndarray  # int64 [N]
    labels: np.ndarray | None  # int64 [N]
    vectors: np.ndarray  # float32 [N, dim]

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def classes(self) -> list[str] | None:
        return self.manifest.get("classes")


def stored_dtype(dtype: str) -> np.dtype:
    """The numpy dtype vectors are stored and hashed in (little-endian float32 or float16)."""
    if dtype not in VECTOR_DTYPES:
        raise DynselError(f"--dtype {dtype!r}: use one of {', '.join(VECTOR_DTYPES)}")
    return np.dtype(dtype).newbyteorder("<")


def shard_name(index: int) -> str:
    """The file name of the ``index``-th shard of a features directory (dense: 0, 1, 2, ...)."""
    return f"part-{index:05d}.parquet"


class FeatureShards:
    """The one writer of features shards: every shard of a features directory goes through :meth:`write`
    (or, for a shard an interrupted run wrote, :meth:`reuse`), in row order, and :meth:`write_manifest`
    writes the manifest's common fields. ``dynsel extract`` (whose shards wait in its resume work directory
    until the last one is done) and :class:`FeatureShardWriter` both use it.

    The content fingerprint is the sha256 of, per row in order, the id (int64 LE), the label (int64 LE, if
    any) and the vector bytes in the stored dtype; it does not depend on how rows are split into shards.
    """

    def __init__(self, dim: int, dtype: str, has_labels: bool) -> None:
        self.np_dtype = stored_dtype(dtype)
        self.dim = int(dim)
        self.dtype = dtype
        self.has_labels = has_labels
        self.schema = pa.schema(
            [pa.field("id", pa.int64(), nullable=False)]
            + ([pa.field("label", pa.int64(), nullable=False)] if has_labels else [])
            + [pa.field("vector", pa.list_(VECTOR_DTYPES[dtype], self.dim), nullable=False)]
        )
        self.entries: list[dict[str, Any]] = []  # per shard in order: rows, bytes, sha256
        self.n_rows = 0
        self._digest = hashlib.sha256()
        self._ids = IdRange()

    def stored(
        self, ids: np.ndarray, labels: np.ndarray | None, vectors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Rows as they are stored and hashed: int64 LE ids and labels, vectors in the stored dtype."""
        vectors = np.ascontiguousarray(vectors, dtype=self.np_dtype)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(ids):
            raise DynselError(
                f"features: vectors of shape {vectors.shape} for {len(ids)} ids, expected ({len(ids)}, {self.dim})"
            )
        if (labels is not None) != self.has_labels:
            raise ValueError("labels must be given exactly when the features have labels")
        return (
            np.ascontiguousarray(ids, dtype="<i8"),
            None if labels is None else np.ascontiguousarray(labels, dtype="<i8"),
            vectors,
        )

    def write(self, path: Path, ids: np.ndarray, labels: np.ndarray | None, vectors: np.ndarray) -> dict[str, Any]:
        """Write the next shard (at least one row) to ``path`` and hash it; returns its rows, bytes and sha256."""
        ids, labels, vectors = self.stored(ids, labels, vectors)
        if not len(ids):
            raise ValueError("a features shard holds at least one row")
        columns: list[pa.Array] = [pa.array(ids, pa.int64())]
        if labels is not None:
            columns.append(pa.array(labels, pa.int64()))
        columns.append(
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), VECTOR_DTYPES[self.dtype]), self.dim)
        )
        pq.write_table(
            pa.Table.from_arrays(columns, schema=self.schema), path, compression="zstd", row_group_size=65_536
        )
        self._hash(ids, labels, vectors)
        return self._count({"rows": len(ids), **file_entry(path)})

    def reuse(self, path: Path, entry: dict[str, Any] | None = None) -> dict[str, Any]:
        """Count a shard :meth:`write` wrote earlier (a resumed run): read it back and hash it in its turn.
        ``entry``: its rows, bytes and sha256 when known (checked by the caller)."""
        table = pq.read_table(path)
        ids = table.column("id").to_numpy()
        labels = table.column("label").to_numpy() if self.has_labels else None
        values = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        ids, labels, vectors = self.stored(
            ids, labels, np.asarray(values, dtype=self.np_dtype).reshape(len(ids), self.dim)
        )
        self._hash(ids, labels, vectors)
        return self._count(dict(entry) if entry is not None else {"rows": len(ids), **file_entry(path)})

    def _hash(self, ids: np.ndarray, labels: np.ndarray | None, vectors: np.ndarray) -> None:
        self._ids.update(ids)
        for row in range(0, len(ids), 65_536):  # row-interleaved content in blocks, no per-row loop
            sl = slice(row, row + 65_536)
            block = [ids[sl].reshape(-1, 1).view(np.uint8)]
            if labels is not None:
                block.append(labels[sl].reshape(-1, 1).view(np.uint8))
            block.append(vectors[sl].view(np.uint8).reshape(len(ids[sl]), -1))
            self._digest.update(np.ascontiguousarray(np.concatenate(block, axis=1)).tobytes())

    def _count(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.entries.append(entry)
        self.n_rows += int(entry["rows"])
        return entry

    def write_manifest(self, directory: Path, extra: dict[str, Any]) -> dict[str, Any]:
        """Write ``directory``/_manifest.json: the common fields, its shards named ``part-00000.parquet``, ...
        in the order written (the caller puts the files there), and ``extra``; returns the manifest."""
        manifest = {
            "format": KIND,
            "format_version": FORMAT_VERSION,
            "n_samples": self.n_rows,
            "dim": self.dim,
            "dtype": self.dtype,
            "has_labels": self.has_labels,
            "shards": [{"file": shard_name(i), **entry} for i, entry in enumerate(self.entries)],
            "fingerprint": self._digest.hexdigest(),
            **self._ids.manifest_fields(self.n_rows),
            **extra,
        }
        write_json(Path(directory) / MANIFEST, manifest)
        return manifest


class FeatureShardWriter:
    """Writes a features directory (a temporary one, see ``atomic_directory``) from batches of rows, in
    shards of ``shard_rows`` rows, through :class:`FeatureShards`."""

    def __init__(self, directory: Path, dim: int, dtype: str, has_labels: bool, shard_rows: int = 262_144) -> None:
        self.directory = Path(directory)
        self.shards = FeatureShards(dim, dtype, has_labels)
        self.shard_rows = shard_rows
        self._pending: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []
        self._pending_rows = 0

    def schema(self) -> pa.Schema:
        return self.shards.schema

    @property
    def n_rows(self) -> int:
        return self.shards.n_rows

    def add(self, ids: np.ndarray, labels: np.ndarray | None, vectors: np.ndarray) -> None:
        """Queue a batch of rows; full shards are written as they fill."""
        self._pending.append(self.shards.stored(ids, labels, vectors))
        self._pending_rows += len(ids)
        while self._pending_rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, rows: int) -> None:
        ids, labels, vectors = _concat(self._pending)
        rest = (ids[rows:], None if labels is None else labels[rows:], vectors[rows:])
        self._pending = [rest] if len(rest[0]) else []
        self._pending_rows = len(rest[0])
        self.shards.write(
            self.directory / shard_name(len(self.shards.entries)),
            ids[:rows],
            None if labels is None else labels[:rows],
            vectors[:rows],
        )

    def finish(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Write the last shard and the manifest; returns the manifest."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        if self.n_rows == 0:
            raise DynselError("no samples were read from the source; check the input path and options")
        return self.shards.write_manifest(self.directory, extra)


def _concat(
    parts: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    ids = np.concatenate([p[0] for p in parts])
    labels = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])  # type: ignore[misc]
    vectors = np.concatenate([p[2] for p in parts])
    return ids, labels, vectors


def read_features_manifest(path: Path, verify: bool = True) -> dict[str, Any]:
    """Read and check a features directory's manifest (and, by default, every shard's checksum)."""
    manifest = read_artifact_manifest(
        path, KIND, WHAT, "a features directory", "dynsel extract", verify=False, name=MANIFEST
    )
    if verify:
        verify_files(Path(path), {s["file"]: s for s in manifest["shards"]}, WHAT)
    return manifest


def iter_feature_batches(
    path: Path, batch_rows: int = 65_536, manifest: dict[str, Any] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
    """Stream (ids, labels, float32 vectors) batches in row order without loading the whole table."""
    path = Path(path)
    manifest = manifest or read_features_manifest(path)
    for shard in manifest["shards"]:
        yield from iter_shard_batches(path, shard["file"], int(manifest["dim"]), batch_rows)


def iter_shard_batches(
    path: Path, file: str, dim: int, batch_rows: int = 65_536
) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
    """The (ids, labels, float32 vectors) batches of one shard of ``path``, as :func:`iter_feature_batches` yields them."""
    reader = pq.ParquetFile(safe_child(Path(path), file, WHAT))
    for batch in reader.iter_batches(batch_size=batch_rows):
        yield _decode(batch, dim, Path(path))


def _decode(batch: pa.RecordBatch | pa.Table, dim: int, path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    names = batch.schema.names
    if "id" not in names or "vector" not in names:
        raise ArtifactError(f"{path}: features need columns 'id' and 'vector' (found {names})")
    ids = np.asarray(batch.column("id").to_numpy(zero_copy_only=False), dtype=np.int64)
    labels = None
    if "label" in names:
        labels = np.asarray(batch.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
    column = batch.column("vector")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(values, dtype=np.float32).reshape(len(ids), dim)
    return ids, labels, vectors


def check_feature_ids(path: Path, manifest: dict[str, Any]) -> None:
    """ArtifactError unless every row of the features has its own id. Reads only the id column; ids in
    increasing order (as extract writes them) are checked shard by shard without being kept, others are
    read again whole and sorted."""

    path = Path(path)

    def shard_ids() -> Iterator[np.ndarray]:
        for shard in manifest["shards"]:
            table = pq.ParquetFile(safe_child(path, shard["file"], WHAT)).read(columns=["id"])
            yield np.asarray(table.column("id").to_numpy(), dtype=np.int64)

    last = None
    for ids in shard_ids():
        if not len(ids):
            continue
        if (last is not None and int(ids[0]) <= last) or not bool(np.all(np.diff(ids) > 0)):
            check_unique_ids(np.sort(np.concatenate(list(shard_ids()))), path)
            return
        last = int(ids[-1])


def read_features(path: Path, verify: bool = True) -> Features:
    """Load a whole features directory into memory (checksums verified)."""
    path = Path(path)
    manifest = read_features_manifest(path, verify=verify)
    parts = list(iter_feature_batches(path, manifest=manifest))
    ids, labels, vectors = _concat(parts)
    if len(ids) != manifest["n_samples"]:
        raise ArtifactError(f"{path}: manifest says {manifest['n_samples']} rows, shards hold {len(ids)}; rebuild it")
    return Features(path=path, manifest=manifest, ids=ids, labels=labels, vectors=vectors)
