"""Feeding features to SAE training without holding them all in memory.

One pass over the features directory (:meth:`FeatureStream.scan`) checks every value is finite, picks the
held-out rows, computes the input normalisation (mean and scale over the training rows, in float64) and
draws the sample the decoder bias is initialised from. After that, each epoch streams the training rows
in a seeded shuffled order:

- the *blocks* of the features (consecutive runs of 65,536 rows in row order, whatever the files and
  Parquet row groups that store them, so that training never depends on how the features were sharded)
  are put in a random order;
- consecutive blocks in that order are loaded into a shuffle buffer of at most ``buffer_rows`` rows (at
  least one block); the buffer's training rows are shuffled and cut into batches; a partial batch left at
  the end of a buffer is carried into the next one.

When the training split fits in the buffer (N ≤ ``buffer_rows``, e.g. every data set up to 262,144 rows by
default) the scan keeps it in memory and the epochs read no more files; the order is then a full shuffle,
the same order streaming would give. Larger data sets are re-read from disk every epoch and are shuffled
only within a buffer, which mixes rows from ``buffer_rows / 65,536`` random row groups. Memory is then
bounded by the buffer, the held-out rows (at most :data:`MAX_HOLDOUT`) and the initialisation sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from ..errors import ArtifactError, DynselError
from ..formats.common import safe_child
from ..formats.features import WHAT, _decode, read_features_manifest

MAX_HOLDOUT = 65_536  # held-out rows are kept in memory
MEDIAN_SAMPLE = 8_192  # rows the geometric median (decoder bias initialisation) is computed on
BLOCK_ROWS = 65_536  # rows per logical block: the unit of the shuffled block order and of reading


def _logical_blocks(n: int, block_rows: int) -> list[Block]:
    return [Block(None, 0, start, min(block_rows, n - start)) for start in range(0, n, block_rows)]


def holdout_size(n: int, share: float) -> int:
    """Rows held out: ``share`` of N, at least 1, at most :data:`MAX_HOLDOUT`."""
    return min(MAX_HOLDOUT, max(1, round(share * n)))


@dataclass(frozen=True)
class Block:
    """A contiguous run of rows: a Parquet row group (``file`` set) or a logical block of rows (``file`` None)."""

    file: Path | None
    row_group: int
    start: int  # global row position of its first row
    rows: int


@dataclass
class ScanResult:
    n: int
    dim: int
    holdout_rows: np.ndarray  # int64 global row positions, sorted
    holdout: torch.Tensor  # [n_holdout, d] raw float32 vectors, in holdout_rows order
    mean: torch.Tensor  # [d] float32, over training rows
    scale: torch.Tensor  # [] float32: sqrt(mean squared norm of centred training rows / d)
    median_sample: torch.Tensor  # [<= MEDIAN_SAMPLE, d] raw training vectors
    train_cache: torch.Tensor | None = None  # [n_train, d] raw training vectors in row order, when they fit
    stats: dict[str, Any] = field(default_factory=dict)


class FeatureStream:
    """Seeded, shuffled batches of the training rows of a features directory."""

    def __init__(
        self,
        path: Path,
        buffer_rows: int,
        manifest: dict[str, Any] | None = None,
        cache: bool = True,
        block_rows: int = BLOCK_ROWS,
    ) -> None:
        self.path = Path(path)
        self.array: np.ndarray | None = None
        self.manifest = manifest if manifest is not None else read_features_manifest(self.path)
        self.n = int(self.manifest["n_samples"])
        self.dim = int(self.manifest["dim"])
        self.buffer_rows = max(1, int(buffer_rows))
        self.allow_cache = cache
        self.row_groups = self._row_groups()
        self.blocks = _logical_blocks(self.n, block_rows)
        self.is_holdout = np.zeros(self.n, dtype=bool)
        self.scan_result: ScanResult | None = None

    @classmethod
    def from_array(
        cls, vectors: np.ndarray, buffer_rows: int, block_rows: int = BLOCK_ROWS, cache: bool = True
    ) -> FeatureStream:
        """A stream over an in-memory [N, d] array, cut into blocks of ``block_rows`` rows like row groups."""
        if vectors.ndim != 2:
            raise DynselError(f"expected vectors of shape [N, d], got {tuple(vectors.shape)}")
        self = cls.__new__(cls)
        self.path = Path("<array>")
        self.array = vectors
        self.manifest = {}
        self.n, self.dim = int(vectors.shape[0]), int(vectors.shape[1])
        self.buffer_rows = max(1, int(buffer_rows))
        self.allow_cache = cache
        self.row_groups = []
        self.blocks = _logical_blocks(self.n, block_rows)
        self.is_holdout = np.zeros(self.n, dtype=bool)
        self.scan_result = None
        return self

    def _row_groups(self) -> list[Block]:
        """The physical row groups of every shard, in row order."""
        blocks: list[Block] = []
        start = 0
        for shard in self.manifest["shards"]:
            file = safe_child(self.path, shard["file"], WHAT)
            try:
                meta = pq.ParquetFile(file).metadata
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"{file}: unreadable Parquet ({exc}); re-extract the features") from None
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                if rows:
                    blocks.append(Block(file, group, start, rows))
                start += rows
        if start != self.n:
            raise ArtifactError(f"{self.path}: manifest says {self.n} rows, shards hold {start}; rebuild it")
        return blocks

    def read_block(self, block: Block) -> np.ndarray:
        """The rows of a logical block, read from the row groups that hold them."""
        stop = block.start + block.rows
        if self.array is not None:
            return np.require(self.array[block.start : stop], np.float32, ["C", "W"])
        parts = []
        for group in self.row_groups:
            if group.start >= stop or group.start + group.rows <= block.start:
                continue
            vectors = self._read_row_group(group)
            parts.append(vectors[max(block.start - group.start, 0) : stop - group.start])
        return np.require(np.concatenate(parts) if len(parts) > 1 else parts[0], np.float32, ["C", "W"])

    def _read_row_group(self, group: Block) -> np.ndarray:
        assert group.file is not None
        table = pq.ParquetFile(group.file).read_row_group(group.row_group, columns=["id", "vector"])
        vectors = _decode(table, self.dim, self.path)[2]
        if len(vectors) != group.rows:
            raise ArtifactError(
                f"{group.file}: row group {group.row_group} changed while training; re-extract the features"
            )
        return vectors

    def scan(self, holdout_share: float, generator: torch.Generator) -> ScanResult:
        """The one pass before training: finiteness, held-out split, normalisation, median sample."""
        n, d = self.n, self.dim
        order = torch.randperm(n, generator=generator).numpy()
        n_holdout = holdout_size(n, holdout_share)
        holdout_rows = np.sort(order[:n_holdout])
        self.is_holdout[:] = False
        self.is_holdout[holdout_rows] = True
        train_order = order[n_holdout:]
        median_rows = np.sort(train_order[:MEDIAN_SAMPLE])
        n_train = n - n_holdout
        cache = (
            torch.empty((n_train, d), dtype=torch.float32) if self.allow_cache and n_train <= self.buffer_rows else None
        )

        holdout = torch.empty((n_holdout, d), dtype=torch.float32)
        median_sample = torch.empty((len(median_rows), d), dtype=torch.float32)
        total = np.zeros(d, dtype=np.float64)
        total_sq = 0.0
        filled_train = 0
        for block in self.blocks:
            vectors = self.read_block(block)
            if not np.isfinite(vectors).all():
                bad = block.start + int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
                raise DynselError(
                    f"{self.path}: the features contain NaN or Inf (first at row {bad}); re-extract or clean them"
                )
            rows = np.arange(block.start, block.start + block.rows)
            held = self.is_holdout[rows]
            train = vectors[~held]
            total += train.sum(axis=0, dtype=np.float64)
            total_sq += float(np.einsum("ij,ij->", train, train, dtype=np.float64))
            if held.any():
                at = np.searchsorted(holdout_rows, rows[held])
                holdout[torch.from_numpy(at)] = torch.from_numpy(vectors[held])
            lo, hi = np.searchsorted(median_rows, [block.start, block.start + block.rows])
            if hi > lo:
                median_sample[lo:hi] = torch.from_numpy(vectors[median_rows[lo:hi] - block.start])
            if cache is not None:
                cache[filled_train : filled_train + len(train)] = torch.from_numpy(train)
            filled_train += len(train)
        mean64 = total / max(n_train, 1)
        centred_sq = max(total_sq / max(n_train, 1) - float(mean64 @ mean64), 0.0)
        scale = math.sqrt(centred_sq / d) if centred_sq > 0 else 1.0
        self.scan_result = ScanResult(
            n=n,
            dim=d,
            holdout_rows=holdout_rows,
            holdout=holdout,
            mean=torch.from_numpy(mean64.astype(np.float32)),
            scale=torch.tensor(max(scale, 1e-12), dtype=torch.float32),
            median_sample=median_sample,
            train_cache=cache,
            stats={"n_train": n_train, "n_holdout": n_holdout, "in_memory": cache is not None},
        )
        return self.scan_result

    def _train_positions(self, block: Block) -> np.ndarray:
        """Positions of the block's training rows within the cached training matrix."""
        first = block.start - self._holdout_before(block.start)
        return np.arange(first, first + int((~self.is_holdout[block.start : block.start + block.rows]).sum()))

    def _holdout_before(self, row: int) -> int:
        assert self.scan_result is not None
        return int(np.searchsorted(self.scan_result.holdout_rows, row))

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """The training rows (raw float32 vectors) of one epoch in shuffled batches; every batch is full but the last."""
        assert self.scan_result is not None, "scan() first"
        cache = self.scan_result.train_cache
        order = torch.randperm(len(self.blocks), generator=generator).tolist()
        pending: torch.Tensor | None = None  # rows carried over from the previous buffer (fewer than a batch)
        at = 0
        while at < len(order):
            group = [self.blocks[order[at]]]
            filled = group[0].rows
            at += 1
            while at < len(order) and filled + self.blocks[order[at]].rows <= self.buffer_rows:
                group.append(self.blocks[order[at]])
                filled += self.blocks[order[at]].rows
                at += 1
            if cache is not None:
                source = cache
                positions = torch.from_numpy(np.concatenate([self._train_positions(b) for b in group]))
                index = positions[torch.randperm(len(positions), generator=generator)]
            else:
                parts = [self.read_block(b)[~self.is_holdout[b.start : b.start + b.rows]] for b in group]
                source = torch.from_numpy(np.concatenate(parts))
                index = torch.randperm(len(source), generator=generator)
            if pending is not None:
                need = batch_size - len(pending)
                if len(index) < need:
                    pending = torch.cat([pending, source[index]])
                    continue
                yield torch.cat([pending, source[index[:need]]])
                index, pending = index[need:], None
            full = len(index) - len(index) % batch_size
            for start in range(0, full, batch_size):
                yield source[index[start : start + batch_size]]
            if full < len(index):
                pending = source[index[full:]]
        if pending is not None and len(pending):
            yield pending

    def all_rows(self, batch_rows: int) -> Iterator[torch.Tensor]:
        """Every row (training and held-out), raw, in batches; for data-set-wide statistics."""
        assert self.scan_result is not None
        if self.scan_result.train_cache is not None:
            yield from torch.split(self.scan_result.train_cache, batch_rows)
            yield from torch.split(self.scan_result.holdout, batch_rows)
            return
        for block in self.blocks:
            yield from torch.split(torch.from_numpy(self.read_block(block)), batch_rows)
