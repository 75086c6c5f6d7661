"""The extraction loop: batches of samples → encoder → sharded Parquet features, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import ExtractConfig, as_settings
from ..devices import torch_device
from ..errors import DynselError
from ..formats.common import atomic_directory
from ..formats.features import FeatureShardWriter
from ..progress import ProgressFn, null_progress
from .encoders import make_encoder
from .sources import open_array_source


def extract(source: Path, out: Path, config: ExtractConfig = ExtractConfig(), progress: ProgressFn = null_progress) -> dict[str, Any]:
    """Encode every sample of ``source`` and write the features directory ``out``; returns its manifest."""
    if config.batch_size < 1:
        raise DynselError(f"--batch-size {config.batch_size}: must be at least 1")
    if config.limit is not None and config.limit < 1:
        raise DynselError(f"--limit {config.limit}: must be at least 1")
    array_source = open_array_source(Path(source), config.array, config.labels)
    n = len(array_source) if config.limit is None else min(config.limit, len(array_source))
    device = torch_device(config.device)
    encoder = make_encoder(config.encoder, array_source.kind, array_source.samples.shape[1:], config.image_size, device)
    source_info = array_source.describe()
    with atomic_directory(Path(out)) as tmp:
        writer = FeatureShardWriter(tmp, encoder.dim, config.dtype, has_labels=array_source.labels is not None)
        progress("extract", 0, n)
        for start in range(0, n, config.batch_size):
            stop = min(start + config.batch_size, n)
            vectors = encoder.encode(np.asarray(array_source.samples[start:stop]))
            if not np.isfinite(vectors).all():
                raise DynselError(f"{source}: the encoder produced NaN/Inf for samples {start}..{stop - 1}; check the input values")
            labels = None if array_source.labels is None else array_source.labels[start:stop]
            writer.add(np.arange(start, stop, dtype=np.int64), labels, vectors)
            progress("extract", stop, n)
        manifest = writer.finish(
            {
                "dynsel_version": __version__,
                "created_by": "dynsel extract",
                "source": source_info,
                "encoder": {"name": encoder.name, **encoder.settings()},
                "classes": array_source.classes,
                "settings": _recorded_settings(config),
            }
        )
    return manifest


def _recorded_settings(config: ExtractConfig) -> dict[str, Any]:
    """Settings that determine the output; where the encoder ran does not (CPU and CUDA agree closely)."""
    settings = as_settings(config)
    settings.pop("device")
    return settings
