"""The factors stage: SAE codes of every sample → the sample and unit factor tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .config import FactorsConfig, as_settings
from .devices import torch_device
from .errors import DynselError
from .formats.common import atomic_directory
from .formats.factors import SampleFactors, UnitStats, write_factor_tables
from .formats.features import read_features
from .formats.sae import SaeWeights, read_sae
from .progress import ProgressFn, null_progress
from .sae.model import TopKSae


def load_model(weights: SaeWeights, device: torch.device) -> TopKSae:
    model = TopKSae(weights.dim, weights.width, weights.k)
    with torch.no_grad():
        model.encoder.weight.copy_(weights.encoder_weight)
        model.encoder.bias.copy_(weights.encoder_bias)
        model.W_dec.copy_(weights.decoder_weight)
        model.b_dec.copy_(weights.decoder_bias)
    return model.eval().to(device)


@torch.no_grad()
def encode_codes(vectors: np.ndarray, weights: SaeWeights, config: FactorsConfig, progress: ProgressFn = null_progress) -> tuple[np.ndarray, np.ndarray]:
    """Top-k unit ids (int32, -1 where the activation is 0) and activations (float32) of every sample."""
    if vectors.shape[1] != weights.dim:
        raise DynselError(f"the features have dimension {vectors.shape[1]} but the SAE expects {weights.dim}; use the SAE fitted on these features")
    if not np.isfinite(vectors).all():
        raise DynselError("the features contain NaN or Inf; re-extract or clean them")
    device = torch_device(config.device)
    model = load_model(weights, device)
    mean, scale = weights.input_mean.to(device), weights.input_scale.to(device)
    n = len(vectors)
    units = np.empty((n, weights.k), dtype=np.int32)
    acts = np.empty((n, weights.k), dtype=np.float32)
    for start in range(0, n, config.batch_size):
        x = torch.from_numpy(np.ascontiguousarray(vectors[start : start + config.batch_size])).to(device)
        encoded = model.encode((x - mean) / scale)
        values = encoded.values.float().cpu().numpy()
        indices = encoded.indices.cpu().numpy().astype(np.int32)
        indices[values <= 0] = -1
        units[start : start + len(x)] = indices
        acts[start : start + len(x)] = np.maximum(values, 0)
        progress("factors", min(start + config.batch_size, n), n)
    return units, acts


def unit_statistics(units: np.ndarray, acts: np.ndarray, width: int, labels: np.ndarray | None = None) -> UnitStats:
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
    if labels is not None:
        n_classes = int(labels.max()) + 1
        row_labels = np.broadcast_to(labels[:, None], units.shape)[fired]
        joint = np.bincount(row_labels * width + ids, minlength=n_classes * width).reshape(n_classes, width)
        class_sizes = np.bincount(labels, minlength=n_classes).astype(np.float64)
        class_frequency = np.divide(joint, class_sizes[:, None], out=np.zeros(joint.shape), where=class_sizes[:, None] > 0).T
    return UnitStats(count=count, frequency=count / max(n, 1), mass=mass, mean_act=mean_act, max_act=max_act, class_frequency=class_frequency)


def build_factor_tables(features: Path, sae: Path, out: Path, config: FactorsConfig = FactorsConfig(), progress: ProgressFn = null_progress) -> dict[str, Any]:
    """The factors stage: encode every sample with the SAE and write both tables atomically."""
    table = read_features(Path(features))
    weights, sae_manifest = read_sae(Path(sae))
    trained_on = sae_manifest.get("inputs", {}).get("features")
    units, acts = encode_codes(table.vectors, weights, config, progress)
    stats = unit_statistics(units, acts, weights.width, table.labels)
    samples = SampleFactors(ids=table.ids, labels=table.labels, units=units, acts=acts)
    settings = as_settings(config)
    settings.pop("device")
    with atomic_directory(Path(out)) as tmp:
        manifest = write_factor_tables(
            tmp,
            samples,
            stats,
            {
                "dynsel_version": __version__,
                "created_by": "dynsel factors",
                "inputs": {"features": table.fingerprint, "sae": sae_manifest["fingerprint"]},
                "sae_trained_on_these_features": trained_on == table.fingerprint,
                "classes": table.classes,
                "dead_units": int(stats.dead.sum()),
                "settings": settings,
            },
        )
    return manifest
