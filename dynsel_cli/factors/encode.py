"""The factors stage: SAE codes of every sample → the sample and unit factor tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import FactorsConfig
from ..provenance import provenance
from ..devices import torch_device
from ..errors import ArtifactError, DynselError
from ..formats.common import atomic_directory
from ..formats.output import check_output
from ..formats.factors import KIND as FACTORS_KIND
from ..formats.factors import SampleFactors, UnitStats, write_factor_tables
from ..formats.features import iter_feature_batches, read_features_manifest
from ..formats.sae import SaeWeights, read_sae
from ..progress import ProgressFn, null_progress
from ..sae.model import TopKSae


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
def encode_codes(vectors: np.ndarray, weights: SaeWeights, config: FactorsConfig = FactorsConfig(), progress: ProgressFn = null_progress) -> tuple[np.ndarray, np.ndarray]:
    """Top-k unit ids (int32, -1 where the activation is 0) and activations (float32) of in-memory vectors."""
    if vectors.ndim != 2 or vectors.shape[1] != weights.dim:
        raise DynselError(f"the features have dimension {vectors.shape[-1]} but the SAE expects {weights.dim}; use the SAE fitted on these features")
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


def unit_statistics(units: np.ndarray, acts: np.ndarray, width: int, labels: np.ndarray | None = None, n_classes: int | None = None) -> UnitStats:
    """Per-unit count, frequency, activation mass, mean and max; per-class frequency when labelled."""
    n = len(units)
    fired = units >= 0
    ids = units[fired].astype(np.int64)
    values = acts[fired].astype(np.float64)
    count = np.bincount(ids, minlength=width).astype(np.int64)
    mass = np.bincount(ids, weights=values, minlength=width)
    max_act = np.zeros(width, dtype=np.float64)
    np.maximum.at(max_act, ids, values)
    mean_act = np.divide(mass, count, out=np.zeros(width), where=count > 0)
    class_frequency = None
    if labels is not None and n:
        if labels.min() < 0:
            raise DynselError(f"the features have a negative label ({int(labels.min())}); labels must be class ids 0..C-1")
        n_classes = max(int(labels.max()) + 1, n_classes or 0)
        row_labels = np.broadcast_to(labels[:, None], units.shape)[fired]
        joint = np.bincount(row_labels * width + ids, minlength=n_classes * width).reshape(n_classes, width)
        class_sizes = np.bincount(labels, minlength=n_classes).astype(np.float64)
        class_frequency = np.divide(joint, class_sizes[:, None], out=np.zeros(joint.shape), where=class_sizes[:, None] > 0).T
    return UnitStats(count=count, frequency=count / max(n, 1), mass=mass, mean_act=mean_act, max_act=max_act, class_frequency=class_frequency)


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

    Only the codes (N × k) are held in memory, not the feature vectors. An SAE trained on other features
    (another data set, or another encoder's features of the same width) is refused unless
    ``allow_foreign_sae``: its units were never fitted to this data, and that is usually a mix-up.
    """
    features, sae = Path(features), Path(sae)
    check_output(Path(out), FACTORS_KIND, inputs=[features, sae], force=force)
    feature_manifest = read_features_manifest(features)
    weights, sae_manifest = read_sae(sae)
    n, dim = int(feature_manifest["n_samples"]), int(feature_manifest["dim"])
    if dim != weights.dim:
        raise DynselError(f"{features} has dimension {dim} but the SAE {sae} expects {weights.dim}; fit the SAE on these features (dynsel fit-sae)")
    if n == 0:
        raise DynselError(f"{features}: the features hold no samples; extract a non-empty data set first")
    trained_on = sae_manifest.get("inputs", {}).get("features")
    if trained_on != feature_manifest["fingerprint"] and not allow_foreign_sae:
        raise DynselError(
            f"{sae}: this SAE was trained on other features (fingerprint {str(trained_on)[:16]}…) than {features} ({feature_manifest['fingerprint'][:16]}…); "
            "fit one on these features (dynsel fit-sae) or pass --allow-foreign-sae"
        )
    encoder = _Encoder(weights, config)
    ids = np.empty(n, dtype=np.int64)
    labels = np.empty(n, dtype=np.int64) if feature_manifest.get("has_labels") else None
    units = np.empty((n, weights.k), dtype=np.int32)
    acts = np.empty((n, weights.k), dtype=np.float32)
    done = 0
    for batch_ids, batch_labels, vectors in iter_feature_batches(features, batch_rows=config.batch_size, manifest=feature_manifest):
        rows = len(batch_ids)
        if done + rows > n:
            raise ArtifactError(f"{features}: shards hold more rows than the manifest's {n}; re-extract the features")
        _check_batch(vectors, done, str(features))
        ids[done : done + rows] = batch_ids
        if labels is not None:
            if batch_labels is None:
                raise ArtifactError(f"{features}: the manifest says labelled but a shard has no label column; re-extract the features")
            labels[done : done + rows] = batch_labels
        units[done : done + rows], acts[done : done + rows] = encoder(vectors)
        done += rows
        progress("factors", done, n)
    if done != n:
        raise ArtifactError(f"{features}: manifest says {n} rows, shards hold {done}; re-extract the features")
    classes = feature_manifest.get("classes")
    stats = unit_statistics(units, acts, weights.width, labels, len(classes) if classes else None)
    samples = SampleFactors(ids=ids, labels=labels, units=units, acts=acts)
    with atomic_directory(Path(out), FACTORS_KIND, force) as tmp:
        manifest = write_factor_tables(
            tmp,
            samples,
            stats,
            {
                **provenance("factors", config, {"features": feature_manifest["fingerprint"], "sae": sae_manifest["fingerprint"]}),
                "sae_trained_on_these_features": trained_on == feature_manifest["fingerprint"],
                "classes": classes,
                "dead_units": int(stats.dead.sum()),
            },
        )
    return manifest
