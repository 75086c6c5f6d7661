"""Plans: the product (spec: docs/formats.md, "Plan").

Layout of a plan directory::

    PLAN/
      manifest.json         counts, dtypes, steps, seed, settings, input fingerprints, per-file sha256
      indices.bin           all epochs' sample ids concatenated in training order, little-endian
                            uint32 ("<u4"), or uint64 ("<u8") when ids do not fit in 32 bits
      offsets.bin           little-endian uint64 ("<u8"), epochs + 1 entries (CSR): epoch e is
                            indices[offsets[e]:offsets[e + 1]]
      weights.bin           optional little-endian float32 per entry of indices.bin
      epochs/epoch-0000.txt one decimal sample id per line, training order (no library needed)
      plan.parquet          columns epoch int32, position int64, index int64[, weight float32]

``sha256`` in the manifest (and in ``dynsel report --json``) is the sha256 of ``indices.bin``.
"""

from __future__ import annotations

import hashlib
import operator
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, overload

import numpy as np

from ..errors import ArtifactError, DynselError

if TYPE_CHECKING:  # pyarrow is imported where plans are written, not where they are read
    import pyarrow as pa
from .common import FORMAT_VERSION, check_manifest_kind, file_entry, read_json, safe_child, verify_files, write_json

KIND = "dynsel.plan"
WHAT = "plan directory"
OFFSETS_DTYPE = "<u8"


def index_dtype_for(max_id: int) -> str:
    """The narrowest index dtype the plan format allows for sample ids up to ``max_id``."""
    return "<u4" if max_id < 2**32 else "<u8"


def steps_for(count: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Optimizer steps one epoch of ``count`` samples takes on each of ``world_size`` ranks.

    Each rank gets ceil(count / world_size) samples (padded like DistributedSampler) unless drop_last,
    where it gets floor(count / world_size) and partial batches are dropped.
    """
    if drop_last:
        per_rank = count // world_size
        return per_rank // batch_size
    per_rank = -(-count // world_size)
    return -(-per_rank // batch_size)


class EpochView(Sequence[np.ndarray]):
    """Lazy, indexable view of a plan's epochs; each item is an int64 array of sample ids in training order."""

    def __init__(self, indices: np.ndarray, offsets: np.ndarray) -> None:
        self._indices = indices
        self._offsets = offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, epoch: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, epoch: slice) -> list[np.ndarray]: ...
    def __getitem__(self, epoch: int | slice) -> np.ndarray | list[np.ndarray]:
        """Epoch ``epoch`` (negative counts from the end), or a list of the epochs a slice names."""
        if isinstance(epoch, slice):
            return [self[e] for e in range(*epoch.indices(len(self)))]
        epoch = operator.index(epoch)
        if not -len(self) <= epoch < len(self):
            raise IndexError(f"epoch {epoch} out of range for a plan of {len(self)} epochs")
        epoch %= len(self)
        start, stop = int(self._offsets[epoch]), int(self._offsets[epoch + 1])
        return np.asarray(self._indices[start:stop], dtype=np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        for epoch in range(len(self)):
            yield self[epoch]


@dataclass(frozen=True)
class Plan:
    """A plan read from disk. ``epochs[e]`` is epoch e's int64 sample ids in training order."""

    path: Path
    manifest: dict[str, Any]
    indices: np.ndarray  # flat, memory-mapped, manifest["index_dtype"]
    offsets: np.ndarray  # uint64 [epochs + 1]
    weights: np.ndarray | None  # float32, aligned with indices

    @property
    def epochs(self) -> EpochView:
        return EpochView(self.indices, self.offsets)

    @property
    def n_samples(self) -> int:
        return int(self.manifest["n_samples"])

    @property
    def n_epochs(self) -> int:
        return int(self.manifest["epochs"])

    @property
    def ratio(self) -> float:
        return float(self.manifest["ratio"])

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    @property
    def counts(self) -> list[int]:
        return [int(c) for c in self.manifest["counts"]]

    @property
    def sha256(self) -> str:
        return str(self.manifest["sha256"])

    def epoch_weights(self, epoch: int) -> np.ndarray | None:
        if self.weights is None:
            return None
        start, stop = int(self.offsets[epoch]), int(self.offsets[epoch + 1])
        return np.asarray(self.weights[start:stop], dtype=np.float32)


PLAN_FORMATS = ("bin", "txt", "npy", "parquet")


def parse_formats(text: str) -> tuple[str, ...]:
    """``--formats bin,txt`` → ("bin", "txt"), refusing unknown names."""
    wanted = tuple(f.strip() for f in text.split(",") if f.strip())
    check_formats(wanted)
    return wanted


def check_formats(formats: Sequence[str]) -> None:
    unknown = set(formats) - set(PLAN_FORMATS)
    if unknown:
        raise DynselError(f"--formats: unknown plan format(s) {sorted(unknown)}; use any of {', '.join(PLAN_FORMATS)}")


class _HashedFile:
    """A binary file written front to back whose size and sha256 are kept while it is written."""

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self._handle.write(data)
        self._digest.update(data)
        self.size += len(data)
        return len(data)

    # What pyarrow's ParquetWriter needs of a Python sink besides write().
    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._handle.flush()

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self._handle.close()

    def entry(self) -> dict[str, Any]:
        """The manifest record of the file: what :func:`file_entry` would read back."""
        return {"bytes": self.size, "sha256": self._digest.hexdigest()}


#: Rows per row group of plan.parquet: pyarrow's default (``pq.write_table``), so a plan written epoch by
#: epoch has the row groups, and therefore the bytes, of one ``write_table`` call over the whole plan.
PARQUET_ROW_GROUP = 1024 * 1024


class _ParquetRows:
    """plan.parquet fed epoch by epoch, cut into full row groups regardless of epoch boundaries."""

    def __init__(self, sink: _HashedFile, has_weights: bool, worker: _Worker) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        fields = [("epoch", pa.int32()), ("position", pa.int64()), ("index", pa.int64())]
        self._schema = pa.schema(fields + ([("weight", pa.float32())] if has_weights else []))
        self._writer = pq.ParquetWriter(sink, self._schema, compression="zstd")
        self._pending: list[
            tuple[int, int, np.ndarray, np.ndarray | None]
        ] = []  # (epoch, first position, ids, weights)
        self._pending_rows = 0
        self._written = False
        self._worker = worker

    def add(self, epoch: int, ids: np.ndarray, weights: np.ndarray | None) -> None:
        start = 0
        while start < len(ids):
            take = min(len(ids) - start, PARQUET_ROW_GROUP - self._pending_rows)
            piece_weights = None if weights is None else weights[start : start + take]
            self._pending.append((epoch, start, ids[start : start + take], piece_weights))
            self._pending_rows += take
            start += take
            if self._pending_rows == PARQUET_ROW_GROUP:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        parts = self._pending
        columns = [
            pa.array(np.concatenate([np.full(len(ids), epoch, np.int32) for epoch, _, ids, _ in parts])),
            pa.array(
                np.concatenate([np.arange(first, first + len(ids), dtype=np.int64) for _, first, ids, _ in parts])
            ),
            pa.array(np.concatenate([ids.astype(np.int64) for _, _, ids, _ in parts])),
        ]
        if len(self._schema) == 4:
            columns.append(pa.array(np.concatenate([w.astype(np.float32) for _, _, _, w in parts])))  # type: ignore[union-attr]
        self._worker.submit(self._writer.write_table, pa.Table.from_arrays(columns, schema=self._schema))
        self._pending, self._pending_rows, self._written = [], 0, True

    def close(self) -> None:
        """Queue the last row group and the footer (the file is complete once the worker is drained)."""
        if self._pending_rows:
            self._flush()
        elif not self._written:  # an empty plan: write_table writes one empty row group
            self._worker.submit(self._writer.write_table, self._schema.empty_table())
        self._worker.submit(self._writer.close)


class _Worker:
    """One background thread that runs file writes in the order given, at most ``depth`` tasks behind.

    The text and Parquet forms of an epoch are encoded there while the planner selects the next epoch
    (numpy and pyarrow release the GIL while they encode); indices.bin stays on the caller's thread. An
    error in a task is raised by the next :meth:`submit` or by :meth:`drain`.
    """

    def __init__(self, depth: int = 8) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynsel-plan-writer")
        self._pending: deque[Future[None]] = deque()
        self._depth = depth

    def submit(self, task: Callable[..., None], *args: Any) -> None:
        self._pending.append(self._pool.submit(task, *args))
        while len(self._pending) > self._depth or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()

    def abandon(self) -> None:
        """Cancel what has not started and wait for what has, ignoring its errors (the caller is failing)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def drain(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class PlanWriter:
    """Writes a plan into ``directory`` one epoch at a time (the only plan writer; see :func:`write_plan`).

    The number of ids of every epoch (``counts``) and the index dtype are fixed up front: the npy header
    and offsets need the total, and the dtype must hold the largest id any epoch may contain. Each epoch
    goes to every requested format as soon as it is added; sizes and sha256s are computed while writing.
    ``bin`` (indices.bin, offsets.bin) is always written: it is the canonical form the checksum covers.
    """

    def __init__(
        self,
        directory: Path,
        counts: Sequence[int],
        index_dtype: str,
        formats: Sequence[str] = ("bin", "txt", "parquet"),
        has_weights: bool = False,
    ) -> None:
        check_formats(formats)
        if index_dtype not in ("<u4", "<u8"):
            raise ValueError(f"index_dtype must be '<u4' or '<u8', got {index_dtype!r}")
        self.directory = Path(directory)
        self.counts = [int(c) for c in counts]
        self.index_dtype = index_dtype
        self.formats = tuple(formats)
        self.has_weights = has_weights
        self._epoch = 0
        self._files: dict[str, dict[str, Any]] = {}
        self._indices = _HashedFile(self.directory / "indices.bin")
        self._weights = _HashedFile(self.directory / "weights.bin") if has_weights else None
        self._npy = None
        if "npy" in self.formats:
            self._npy = _HashedFile(self.directory / "indices.npy")
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(index_dtype)),
                "fortran_order": False,
                "shape": (sum(self.counts),),
            }
            np.lib.format.write_array_header_1_0(self._npy, header)  # type: ignore[arg-type]
        self._worker = _Worker()
        self._parquet_file = _HashedFile(self.directory / "plan.parquet") if "parquet" in self.formats else None
        self._parquet = (
            _ParquetRows(self._parquet_file, has_weights, self._worker) if self._parquet_file is not None else None
        )
        if "txt" in self.formats:
            (self.directory / "epochs").mkdir()

    def add(self, ids: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Write the next epoch: its sample ids in training order (and one weight per id when weighted)."""
        e = self._epoch
        if e >= len(self.counts) or len(ids) != self.counts[e]:
            raise ValueError(f"epoch {e}: {len(ids)} ids, but the plan was opened for counts {self.counts}")
        if (weights is None) == self.has_weights:
            raise ValueError("weights must be given for every epoch exactly when the writer has_weights")
        data = np.ascontiguousarray(ids, dtype=self.index_dtype)
        self._indices.write(memoryview(data).cast("B"))
        if self._npy is not None:
            self._npy.write(memoryview(data).cast("B"))
        del data
        if weights is not None and self._weights is not None:
            self._weights.write(np.ascontiguousarray(weights, dtype="<f4").tobytes())
        if "txt" in self.formats:
            self._worker.submit(self._write_text, f"epochs/epoch-{e:04d}.txt", ids)
        if self._parquet is not None:
            self._parquet.add(e, ids, weights)
        self._epoch += 1

    def __enter__(self) -> PlanWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the background writes when the plan is abandoned (after :meth:`finish` there are none)."""
        if exc[0] is not None:
            self._worker.abandon()

    def _write_text(self, name: str, ids: np.ndarray) -> None:
        text = _HashedFile(self.directory / name)
        try:
            for block in decimal_blocks(ids, b"\n"):
                text.write(block)
        finally:
            text.close()
        self._files[name] = text.entry()

    def finish(
        self,
        n_samples: int,
        batch_size: int,
        world_size: int,
        drop_last: bool,
        extra: dict[str, Any],
        signals: pa.Table | None = None,
    ) -> dict[str, Any]:
        """Close every file, write offsets, signals and the manifest; returns the manifest."""
        if self._epoch != len(self.counts):
            raise ValueError(f"{self._epoch} of {len(self.counts)} epochs were written")
        offsets = np.zeros(len(self.counts) + 1, dtype=OFFSETS_DTYPE)
        np.cumsum(self.counts, out=offsets[1:])
        self._indices.close()
        self._files["indices.bin"] = self._indices.entry()
        offsets_file = _HashedFile(self.directory / "offsets.bin")
        offsets_file.write(offsets.tobytes())
        offsets_file.close()
        self._files["offsets.bin"] = offsets_file.entry()
        if self._weights is not None:
            self._weights.close()
            self._files["weights.bin"] = self._weights.entry()
        if self._npy is not None:
            self._npy.close()
            self._files["indices.npy"] = self._npy.entry()
            np.save(self.directory / "offsets.npy", offsets)
            self._files["offsets.npy"] = file_entry(self.directory / "offsets.npy")
        if self._parquet is not None:
            self._parquet.close()
        self._worker.drain()
        if self._parquet_file is not None:
            self._parquet_file.close()
            self._files["plan.parquet"] = self._parquet_file.entry()
        if signals is not None:
            import pyarrow.parquet as pq

            pq.write_table(signals, self.directory / "signals.parquet", compression="zstd")
            self._files["signals.parquet"] = file_entry(self.directory / "signals.parquet")
        steps = [steps_for(c, batch_size, world_size, drop_last) for c in self.counts]
        manifest = {
            "format": KIND,
            "format_version": FORMAT_VERSION,
            "n_samples": int(n_samples),
            "epochs": len(self.counts),
            "counts": self.counts,
            "total_selected": int(sum(self.counts)),
            "index_dtype": self.index_dtype,
            "offsets_dtype": OFFSETS_DTYPE,
            "has_weights": self.has_weights,
            "batch_size": batch_size,
            "world_size": world_size,
            "drop_last": drop_last,
            "steps_per_epoch": steps,
            "total_steps": int(sum(steps)),
            "files": dict(sorted(self._files.items())),
            "sha256": self._files["indices.bin"]["sha256"],
            **extra,
        }
        write_json(self.directory / "manifest.json", manifest)
        return manifest


def write_plan(
    directory: Path,
    epochs: Sequence[np.ndarray],
    n_samples: int,
    batch_size: int,
    world_size: int,
    drop_last: bool,
    extra: dict[str, Any],
    weights: Sequence[np.ndarray] | None = None,
    formats: Sequence[str] = ("bin", "txt", "parquet"),
    signals: pa.Table | None = None,
) -> dict[str, Any]:
    """Write a plan held in memory into ``directory`` (a temporary directory of an atomic write); returns
    the manifest. The index dtype fits the largest id the epochs hold."""
    max_id = max((int(e.max()) for e in epochs if len(e)), default=0)
    with PlanWriter(
        directory, [len(e) for e in epochs], index_dtype_for(max_id), formats, has_weights=weights is not None
    ) as writer:
        for e, epoch in enumerate(epochs):
            writer.add(epoch, None if weights is None else weights[e])
        return writer.finish(n_samples, batch_size, world_size, drop_last, extra, signals)


_DECIMAL_BLOCK = 1 << 20  # ids formatted at once: bounds the [block, digits] byte matrix to ~20 MB


def decimal_blocks(values: np.ndarray, terminator: bytes) -> Iterator[bytes]:
    """ASCII decimal of each value followed by ``terminator`` (one byte), in blocks of bytes.

    The same bytes as ``"".join(f"{v}{terminator}" for v in values)``, but vectorised: the digits of a
    block are a [block, width] matrix from which each row's leading zeros are dropped.
    """
    values = np.asarray(values)
    for start in range(0, len(values), _DECIMAL_BLOCK):
        yield _decimal_block(values[start : start + _DECIMAL_BLOCK], terminator)


_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode("ascii"), dtype=np.uint16)  # "00" … "99"


def _decimal_block(values: np.ndarray, terminator: bytes) -> bytes:
    if len(values) == 0:
        return b""
    if int(values.min()) < 0:  # ids are non-negative in practice; keep the exact text form anyway
        end = terminator.decode("ascii")
        return "".join(f"{v}{end}" for v in values.tolist()).encode("ascii")
    top = int(values.max())
    rest = values.astype(np.uint32 if top < 2**32 else np.uint64)
    width = len(str(top))
    pairs = np.empty((len(values), (width + 1) // 2), dtype=np.uint16)  # two digits per division by 100
    hundred = rest.dtype.type(100)
    for position in range(pairs.shape[1] - 1, -1, -1):
        quotient = rest // hundred
        pairs[:, position] = _PAIRS[rest - quotient * hundred]
        rest = quotient
    padded = pairs.shape[1] * 2  # the digits, right-aligned, with a leading "0" when width is odd
    chars = np.empty((len(values), padded + 1), dtype=np.uint8)
    chars[:, :padded] = pairs.view(np.uint8).reshape(len(values), padded)
    chars[:, padded] = terminator[0]
    powers = np.array([10**p for p in range(1, width)], dtype=np.uint64)
    digits = 1 + np.searchsorted(powers, values.astype(np.uint64), side="right")
    keep = np.arange(padded + 1)[None, :] >= (padded - digits)[:, None]
    return chars[keep].tobytes()


def write_index_lines(handle: TextIO, indices: np.ndarray) -> None:
    """One decimal index per line, "\\n"-terminated."""
    for block in decimal_blocks(np.asarray(indices, dtype=np.int64), b"\n"):
        handle.write(block.decode("ascii"))


def write_plan_stream(handle: TextIO, epochs: Iterable[np.ndarray]) -> None:
    """The stdout form of a plan (``--out -``): one line per epoch, sample ids separated by single spaces."""
    for epoch in epochs:
        text = b"".join(decimal_blocks(np.asarray(epoch, dtype=np.int64), b" "))
        handle.write(text[:-1].decode("ascii") if text else "")
        handle.write("\n")


def read_plan(path: str | Path, verify: bool = True) -> Plan:
    """Open a plan directory. Index data is memory-mapped; checksums are verified unless ``verify=False``."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a plan directory (run `dynsel plan` to make one)")
    manifest = read_json(path / "manifest.json", WHAT)
    check_manifest_kind(manifest, KIND, path, WHAT)
    files = manifest.get("files", {})
    if verify:
        verify_files(path, files, WHAT)
    index_dtype = manifest.get("index_dtype")
    if index_dtype not in ("<u4", "<u8"):
        raise ArtifactError(f"{path}: unsupported index_dtype {index_dtype!r}")
    indices = _map(safe_child(path, "indices.bin", WHAT), index_dtype)
    offsets = np.fromfile(safe_child(path, "offsets.bin", WHAT), dtype=OFFSETS_DTYPE)
    epochs = int(manifest["epochs"])
    if len(offsets) != epochs + 1 or (epochs and int(offsets[-1]) != len(indices)):
        raise ArtifactError(f"{path}: offsets.bin does not match indices.bin and the manifest; rebuild the plan")
    weights = None
    if manifest.get("has_weights"):
        weights = _map(safe_child(path, "weights.bin", WHAT), "<f4")
    return Plan(path=path, manifest=manifest, indices=indices, offsets=offsets, weights=weights)


def _map(path: Path, dtype: str) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")
