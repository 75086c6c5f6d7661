"""The factors stage: SAE codes of every sample → the sample and unit factor tables.

The codes are computed one feature shard at a time by :class:`ShardCodes`, in this process (``--executor
local``) or in Ray actors (``--executor ray``), with the same batches either way; the driver collects the
shards in order and writes both tables.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import FactorsConfig
from ..devices import torch_device
from ..errors import ArtifactError, DynselError
from ..executors import check_executor
from ..formats.common import atomic_directory
from ..formats.factors import KIND as FACTORS_KIND
from ..formats.factors import SampleFactors, SampleTableWriter, finish_factor_tables
from ..formats.features import check_feature_ids, iter_shard_batches, read_features_manifest
from ..formats.output import check_output
from ..formats.sae import SaeWeights, read_sae
from ..progress import ProgressFn, null_progress
from ..provenance import provenance
from ..sae.model import TopKSae
from .statistics import UnitStatsAccumulator


def load_model(weights: SaeWeights, device: torch.device) -> TopKSae:
    model = TopKSae(weights.dim, weights.width, weights.k)
    with torch.no_grad():
        model.encoder.weight.copy_(weights.encoder_weight)
        model.encoder.bias.copy_(weights.encoder_bias)
        model.W_dec.copy_(weights.decoder_weight)
        model.b_dec.copy_(weights.decoder_bias)
    return model.eval().to(device)


def _check_batch(vectors: np.ndarray, first_row: int, where: str) -> None:
    if not np.isfinite(vectors).all():
        bad = first_row + int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise DynselError(f"{where}: the features contain NaN or Inf (first at row {bad}); re-extract or clean them")


class _Encoder:
    """Batched SAE encoding on the configured device (a GPU when present and ``device`` is auto)."""

    def __init__(self, weights: SaeWeights, config: FactorsConfig) -> None:
        if config.batch_size < 1:
            raise DynselError(f"--batch-size {config.batch_size}: must be at least 1")
        self.device = torch_device(config.device)
        self.model = load_model(weights, self.device)
        self.mean = weights.input_mean.to(self.device)
        self.scale = weights.input_scale.to(self.device)

    @torch.no_grad()
    def __call__(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.require(vectors, np.float32, ["C", "W"])).to(self.device, non_blocking=True)
        encoded = self.model.encode((x - self.mean) / self.scale)
        values = encoded.values.float().cpu().numpy()
        indices = encoded.indices.to(torch.int32).cpu().numpy()
        indices[values <= 0] = -1
        return indices, np.maximum(values, 0)


@torch.no_grad()
def encode_codes(
    vectors: np.ndarray,
    weights: SaeWeights,
    config: FactorsConfig = FactorsConfig(),
    progress: ProgressFn = null_progress,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k unit ids (int32, -1 where the activation is 0) and activations (float32) of in-memory vectors."""
    if vectors.ndim != 2 or vectors.shape[1] != weights.dim:
        raise DynselError(
            f"the features have dimension {vectors.shape[-1]} but the SAE expects {weights.dim}; use the SAE fitted on these features"
        )
    encoder = _Encoder(weights, config)
    n = len(vectors)
    units = np.empty((n, weights.k), dtype=np.int32)
    acts = np.empty((n, weights.k), dtype=np.float32)
    for start in range(0, n, config.batch_size):
        part = vectors[start : start + config.batch_size]
        _check_batch(part, start, "encode")
        units[start : start + len(part)], acts[start : start + len(part)] = encoder(part)
        progress("factors", start + len(part), n)
    return units, acts


ShardTask = tuple[str, int]  # a shard's file and its first row
Codes = tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]  # ids, labels, units, acts of a shard


def check_factors_config(config: FactorsConfig) -> None:
    if config.batch_size < 1:
        raise DynselError(f"--batch-size {config.batch_size}: must be at least 1")
    check_executor(config, local_workers=False)


class ShardCodes:
    """The SAE codes of whole feature shards: the SAE is built once (in this process, or once per Ray actor),
    and each shard is encoded in batches of ``batch_size`` rows (the batches :func:`iter_feature_batches`
    forms, so both executors compute the same products). ``where`` names the features in messages."""

    def __init__(self, features: Path, dim: int, weights: SaeWeights, config: FactorsConfig, where: str) -> None:
        self.features, self.dim, self.batch_size, self.where = Path(features), dim, config.batch_size, where
        self.encoder = _Encoder(weights, config)

    def describe(self) -> str:
        return self.encoder.device.type

    def __call__(self, file: str, first_row: int) -> Codes:
        parts = []
        row = first_row
        for ids, labels, vectors in iter_shard_batches(self.features, file, self.dim, self.batch_size):
            _check_batch(vectors, row, self.where)
            parts.append((ids, labels, *self.encoder(vectors)))
            row += len(ids)
        if not parts:
            raise ArtifactError(f"{self.where}: shard {file} holds no rows; re-extract the features")
        ids, labels, units, acts = (
            None if part[0] is None else np.concatenate(part) for part in zip(*parts)
        )  # labels: one schema per shard
        return ids, labels, units, acts


@contextlib.contextmanager
def _shard_codes(
    features: Path, dim: int, weights: SaeWeights, config: FactorsConfig, shards: int
) -> Iterator[Callable[[Sequence[ShardTask]], Iterator[Codes]]]:
    """``codes(tasks)``: the codes of each shard, in order, from the configured executor."""
    factory = functools.partial(ShardCodes, Path(features).resolve(), dim, weights, config, str(features))
    if config.executor == "local":
        worker = factory()
        yield lambda tasks: (worker(*task) for task in tasks)
        return
    from ..executors import ray_executor

    with ray_executor().pool(
        config.ray_address, factory, config.workers, config.gpus_per_worker, most=shards
    ) as actors:
        devices = set(actors.describe())
        if len(devices) > 1:
            raise DynselError(
                f"the Ray workers encode on different devices ({', '.join(sorted(devices))}); pass --device cpu, or --gpus-per-worker so that every worker has a GPU"
            )
        yield lambda tasks: actors.map(tasks, what=lambda task: f"encoding shard {task[0]} of {features}")


def _consume_codes(
    codes: Iterator[Codes],
    writer: SampleTableWriter,
    stats: UnitStatsAccumulator,
    n: int,
    features: Path,
    progress: ProgressFn,
) -> None:
    """Feed each shard's codes, in order, to the sample table and the unit statistics; check the row count."""
    done = 0
    for ids, labels, units, acts in codes:
        if done + len(ids) > n:
            raise ArtifactError(f"{features}: shards hold more rows than the manifest's {n}; re-extract the features")
        if writer.has_labels and labels is None:
            raise ArtifactError(
                f"{features}: the manifest says labelled but a shard has no label column; re-extract the features"
            )
        labels = labels if writer.has_labels else None
        writer.add(SampleFactors(ids=ids, labels=labels, units=units, acts=acts))
        stats.add(units, acts, labels)
        done += len(ids)
        progress("factors", done, n)
    if done != n:
        raise ArtifactError(f"{features}: manifest says {n} rows, shards hold {done}; re-extract the features")


def build_factor_tables(
    features: Path,
    sae: Path,
    out: Path,
    config: FactorsConfig = FactorsConfig(),
    progress: ProgressFn = null_progress,
    allow_foreign_sae: bool = False,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """The factors stage: stream the features, encode them in batches, write both tables atomically.

    Memory does not grow with N: each shard's codes go to samples.parquet (through
    :class:`SampleTableWriter`, one row group buffered) and into the running unit statistics
    (:class:`UnitStatsAccumulator`, O(width × classes)) as they arrive. An SAE trained on other features
    (another data set, or another encoder's features of the same width) is refused unless
    ``allow_foreign_sae``: its units were never fitted to this data, and that is usually a mix-up.
    """
    check_factors_config(config)
    features, sae = Path(features), Path(sae)
    check_output(Path(out), FACTORS_KIND, inputs=[features, sae], force=force)
    feature_manifest = read_features_manifest(features)
    weights, sae_manifest = read_sae(sae)
    n, dim = int(feature_manifest["n_samples"]), int(feature_manifest["dim"])
    if dim != weights.dim:
        raise DynselError(
            f"{features} has dimension {dim} but the SAE {sae} expects {weights.dim}; fit the SAE on these features (dynsel fit-sae)"
        )
    if n == 0:
        raise DynselError(f"{features}: the features hold no samples; extract a non-empty data set first")
    check_feature_ids(Path(features), feature_manifest)  # before any work: a repeated id makes no plan
    trained_on = sae_manifest.get("inputs", {}).get("features")
    if trained_on != feature_manifest["fingerprint"] and not allow_foreign_sae:
        raise DynselError(
            f"{sae}: this SAE was trained on other features (fingerprint {str(trained_on)[:16]}…) than {features} ({feature_manifest['fingerprint'][:16]}…); "
            "fit one on these features (dynsel fit-sae) or pass --allow-foreign-sae"
        )
    has_labels = bool(feature_manifest.get("has_labels"))
    classes = feature_manifest.get("classes")
    shards = feature_manifest["shards"]
    first_rows = np.cumsum([0] + [int(shard["rows"]) for shard in shards])[:-1]
    tasks = [(str(shard["file"]), int(row)) for shard, row in zip(shards, first_rows)]
    with atomic_directory(Path(out), FACTORS_KIND, force) as tmp:
        writer = SampleTableWriter(tmp / "samples.parquet", weights.k, has_labels)
        accumulator = UnitStatsAccumulator(
            weights.width, has_labels, len(classes) if classes else None, source=str(features)
        )
        with _shard_codes(features, dim, weights, config, len(tasks)) as codes:
            _consume_codes(codes(tasks), writer, accumulator, n, features, progress)
        stats = accumulator.finish()
        manifest = finish_factor_tables(
            tmp,
            writer,
            stats,
            {
                **provenance(
                    "factors", config, {"features": feature_manifest["fingerprint"], "sae": sae_manifest["fingerprint"]}
                ),
                "sae_trained_on_these_features": trained_on == feature_manifest["fingerprint"],
                "classes": classes,
                "dead_units": int(stats.dead.sum()),
                "executor": config.executor,
            },
        )
    return manifest
