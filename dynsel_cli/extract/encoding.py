"""Where extract's batches are encoded: the local executor or the Ray executor (``--executor``).

Both take the same list of batches (positions ``[start, stop)``, never crossing a shard boundary) and
yield one :class:`EncodedBatch` per batch, in order; the extraction loop (``loop.py``) writes them through
the one shard writer whatever produced them. Each batch is read, prepared and encoded by the same code,
so with a deterministic encoder the vectors are the same bytes either way.

- local: ``--workers`` DataLoader processes read and prepare batches; this process runs the encoder.
- ray: ``--workers`` Ray actors, each opening the source and loading the encoder once
  (:class:`BatchEncoder`), read, prepare and encode whole batches; the driver only writes.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import ExtractConfig
from ..devices import torch_device
from ..errors import DynselError
from ..progress import LogFn
from .encoders import Encoder, make_encoder
from .sources import ArraySource, SampleProblem, Source, SourceOptions, open_source

Range = tuple[int, int]


@dataclass
class EncodedBatch:
    start: int
    stop: int
    positions: np.ndarray  # int64: the readable samples of [start, stop)
    vectors: np.ndarray | None  # float32 [len(positions), dim]; None when no sample was readable
    problems: list[SampleProblem]


@dataclass(frozen=True)
class EncoderInfo:
    """What the manifest and the resume key record about the encoder, and where it ran."""

    name: str
    settings: dict[str, Any]
    dim: int
    device: str  # "cpu" or "cuda"

    def manifest(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}


@dataclass(frozen=True)
class Encoding:
    """An executor ready to encode: its encoder's description and ``batches(ranges)``."""

    executor: str
    encoder: EncoderInfo
    batches: Callable[[list[Range]], Iterator[EncodedBatch]]


def describe_encoder(encoder: Encoder, device: torch.device) -> EncoderInfo:
    return EncoderInfo(name=encoder.name, settings=dict(encoder.settings()), dim=int(encoder.dim), device=device.type)


def read_prepared(
    source: Source, encoder: Encoder, start: int, stop: int
) -> tuple[np.ndarray, Any, list[SampleProblem]]:
    """Positions ``[start, stop)`` read from the source and prepared for the encoder (None: nothing readable)."""
    raw = source.read(start, stop)
    prepared = encoder.prepare(raw.samples) if len(raw.positions) else None
    return raw.positions, prepared, raw.problems


# ------------------------------------------------------------------------------------------------ local


def default_workers(source: Source) -> int:
    """Arrays need no decoding: preprocess in the main process. Files and text: up to 4 worker processes."""
    if source.kind == "vectors" or isinstance(source, ArraySource):
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class _Batches(Dataset):
    """Item i: batch i of ``ranges`` read from the source and prepared by the encoder (in a worker)."""

    def __init__(self, source: Source, encoder: Encoder, ranges: list[Range]) -> None:
        self.source = source
        self.encoder = encoder
        self.ranges = ranges

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, index: int) -> tuple[int, int, np.ndarray, Any, Any]:
        start, stop = self.ranges[index]
        try:
            positions, prepared, problems = read_prepared(self.source, self.encoder, start, stop)
        except DynselError as exc:  # sent back as a value: the DataLoader would wrap it in a traceback
            return start, stop, np.zeros(0, np.int64), None, exc
        return start, stop, positions, prepared, problems


def _identity(item: Any) -> Any:
    return item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _local_batches(
    source: Source, encoder: Encoder, workers: int, device: torch.device, ranges: list[Range]
) -> Iterator[EncodedBatch]:
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    context = (
        multiprocessing.get_context("fork") if workers and "fork" in multiprocessing.get_all_start_methods() else None
    )
    loader = DataLoader(
        _Batches(source, encoder, ranges),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        multiprocessing_context=context,
    )
    for start, stop, positions, prepared, problems in loader:
        if isinstance(problems, DynselError):
            raise problems
        yield EncodedBatch(start, stop, positions, encoder.encode(prepared) if len(positions) else None, problems)


@contextlib.contextmanager
def local_encoding(source: Source, config: ExtractConfig) -> Iterator[Encoding]:
    device = torch_device(config.device)
    encoder = make_encoder(config.encoder, source.kind, source.dim, config.image_size, device, config.allow_user_code)
    workers = default_workers(source) if config.workers is None else config.workers
    yield Encoding(
        "local", describe_encoder(encoder, device), functools.partial(_local_batches, source, encoder, workers, device)
    )


# -------------------------------------------------------------------------------------------------- ray


class BatchEncoder:
    """A Ray actor's worker: opens the source and loads the encoder once, then encodes whole batches.

    It reads the source from its own path, so every node must see the source there (a shared file system).
    """

    def __init__(self, source: Path, options: SourceOptions, config: ExtractConfig, n: int) -> None:
        self.source = open_source(source, options)
        if len(self.source) < n:
            raise DynselError(
                f"{source}: a Ray worker sees {len(self.source)} samples there, the driver {n}; every node must see the same source (a shared file system)"
            )
        self.device = torch_device(config.device)
        self.encoder = make_encoder(
            config.encoder, self.source.kind, self.source.dim, config.image_size, self.device, config.allow_user_code
        )

    def describe(self) -> EncoderInfo:
        return describe_encoder(self.encoder, self.device)

    def __call__(self, start: int, stop: int) -> EncodedBatch:
        positions, prepared, problems = read_prepared(self.source, self.encoder, start, stop)
        return EncodedBatch(start, stop, positions, self.encoder.encode(prepared) if len(positions) else None, problems)


def _samples(task: tuple[Any, ...]) -> str:
    return f"encoding samples [{task[0]}, {task[1]})"


@contextlib.contextmanager
def ray_encoding(
    source_path: Path, source: Source, options: SourceOptions, config: ExtractConfig, n: int, batches: int, log: LogFn
) -> Iterator[Encoding]:
    """Connect to Ray and start the actors (before any output exists, so an unreachable cluster leaves
    nothing behind); every actor must describe the same encoder on the same device type."""
    from ..executors import ray_executor

    executor = ray_executor()
    factory = functools.partial(BatchEncoder, Path(source_path).resolve(), options, config, n)
    with executor.pool(
        config.ray_address, factory, config.workers, config.gpus_per_worker, most=max(1, batches)
    ) as actors:
        infos = actors.describe()
        if any(info != infos[0] for info in infos):
            devices = ", ".join(sorted({i.device for i in infos}))
            raise DynselError(
                f"the Ray workers run the encoder differently (devices: {devices}); pass --device cpu, or --gpus-per-worker so that every worker has a GPU"
            )
        log(f"extract: {len(actors.actors)} Ray workers ({infos[0].name} on {infos[0].device})")

        def encode(ranges: list[Range]) -> Iterator[EncodedBatch]:
            return actors.map(ranges, what=_samples)

        yield Encoding("ray", infos[0], encode)
