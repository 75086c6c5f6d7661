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

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, TextIO

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

    def __getitem__(self, epoch: int) -> np.ndarray:  # type: ignore[override]
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
    """Write a plan into ``directory`` (a temporary directory of an atomic write); returns the manifest.

    ``bin`` (indices.bin, offsets.bin) is always written: it is the canonical form the checksum covers.
    """
    check_formats(formats)
    counts = [int(len(e)) for e in epochs]
    max_id = max((int(e.max()) for e in epochs if len(e)), default=0)
    index_dtype = index_dtype_for(max_id)
    offsets = np.zeros(len(epochs) + 1, dtype=OFFSETS_DTYPE)
    np.cumsum(counts, out=offsets[1:])
    with open(directory / "indices.bin", "wb") as handle:
        for epoch in epochs:
            handle.write(np.ascontiguousarray(epoch, dtype=index_dtype).tobytes())
    (directory / "offsets.bin").write_bytes(offsets.tobytes())
    names = ["indices.bin", "offsets.bin"]
    if weights is not None:
        with open(directory / "weights.bin", "wb") as handle:
            for w in weights:
                handle.write(np.ascontiguousarray(w, dtype="<f4").tobytes())
        names.append("weights.bin")
    if "txt" in formats:
        (directory / "epochs").mkdir()
        for e, epoch in enumerate(epochs):
            name = f"epochs/epoch-{e:04d}.txt"
            with open(directory / name, "w", encoding="ascii", newline="\n") as handle:
                write_index_lines(handle, epoch)
            names.append(name)
    if "npy" in formats:
        np.save(directory / "indices.npy", np.concatenate(epochs).astype(index_dtype) if epochs else np.zeros(0, index_dtype))
        np.save(directory / "offsets.npy", offsets)
        names += ["indices.npy", "offsets.npy"]
    if "parquet" in formats:
        _write_parquet(directory / "plan.parquet", epochs, weights)
        names.append("plan.parquet")
    if signals is not None:
        import pyarrow.parquet as pq

        pq.write_table(signals, directory / "signals.parquet", compression="zstd")
        names.append("signals.parquet")
    files = {name: file_entry(directory / name) for name in names}
    steps = [steps_for(c, batch_size, world_size, drop_last) for c in counts]
    manifest = {
        "format": KIND,
        "format_version": FORMAT_VERSION,
        "n_samples": int(n_samples),
        "epochs": len(epochs),
        "counts": counts,
        "total_selected": int(sum(counts)),
        "index_dtype": index_dtype,
        "offsets_dtype": OFFSETS_DTYPE,
        "has_weights": weights is not None,
        "batch_size": batch_size,
        "world_size": world_size,
        "drop_last": drop_last,
        "steps_per_epoch": steps,
        "total_steps": int(sum(steps)),
        "files": files,
        "sha256": files["indices.bin"]["sha256"],
        **extra,
    }
    write_json(directory / "manifest.json", manifest)
    return manifest


def _write_parquet(path: Path, epochs: Sequence[np.ndarray], weights: Sequence[np.ndarray] | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts = np.array([len(e) for e in epochs], dtype=np.int64)
    epoch_col = np.repeat(np.arange(len(epochs), dtype=np.int32), counts)
    position = np.concatenate([np.arange(c, dtype=np.int64) for c in counts]) if len(counts) else np.zeros(0, np.int64)
    index = np.concatenate(epochs).astype(np.int64) if len(epochs) else np.zeros(0, np.int64)
    columns = {"epoch": pa.array(epoch_col), "position": pa.array(position), "index": pa.array(index)}
    if weights is not None:
        columns["weight"] = pa.array(np.concatenate(weights).astype(np.float32))
    pq.write_table(pa.table(columns), path, compression="zstd")


def write_index_lines(handle: TextIO, indices: np.ndarray) -> None:
    """One decimal index per line, "\\n"-terminated."""
    if len(indices):
        handle.write("\n".join(map(str, np.asarray(indices, dtype=np.int64).tolist())))
        handle.write("\n")


def write_plan_stream(handle: TextIO, epochs: Sequence[np.ndarray]) -> None:
    """The stdout form of a plan (``--out -``): one line per epoch, sample ids separated by single spaces."""
    for epoch in epochs:
        handle.write(" ".join(map(str, np.asarray(epoch, dtype=np.int64).tolist())))
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
