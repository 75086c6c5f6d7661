"""Sources: where samples come from. Sample ids are row positions in the source (0, 1, 2, ...).

Supported here: numpy arrays in .npy or .npz files, holding either images (uint8 [N, H, W] or
[N, H, W, C]) or ready-made vectors (float [N, D]).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DynselError
from ..formats.common import sha256_file

_SAMPLE_KEYS = ("x_train", "x", "data", "images", "embeddings")
_LABEL_FOR = {"x_train": "y_train", "x": "y", "data": "labels", "images": "labels", "embeddings": "labels"}


@dataclass(frozen=True)
class ArraySource:
    """Samples held in one numpy array (memory-mapped for .npy)."""

    path: Path
    samples: np.ndarray  # [N, ...]
    labels: np.ndarray | None  # int64 [N]
    classes: list[str] | None
    sample_key: str | None
    label_key: str | None

    @property
    def kind(self) -> str:
        """'images' for integer/float pixel arrays of rank 3 or 4, 'vectors' for rank 2."""
        return "vectors" if self.samples.ndim == 2 else "images"

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": sha256_file(self.path),
            "bytes": self.path.stat().st_size,
            "sample_key": self.sample_key,
            "label_key": self.label_key,
            "kind": self.kind,
            "shape": list(self.samples.shape),
        }


def open_array_source(path: Path, sample_key: str | None = None, label_key: str | None = None) -> ArraySource:
    """Open a .npy or .npz source; never unpickles (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise DynselError(f"{path}: no such file; pass a .npy or .npz array file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            if label_key:
                raise DynselError(f"--labels {label_key!r}: a .npy file holds one array; use an .npz for labels")
            samples = np.load(path, mmap_mode="r", allow_pickle=False)
            return _validated(path, samples, None, None, None, None)
        if suffix == ".npz":
            return _open_npz(path, sample_key, label_key)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DynselError(f"{path}: not a readable numpy file ({exc})") from None
    raise DynselError(f"{path}: unsupported source type {suffix!r}; this version reads .npy and .npz arrays")


def _open_npz(path: Path, sample_key: str | None, label_key: str | None) -> ArraySource:
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        if sample_key is None:
            candidates = [k for k in _SAMPLE_KEYS if k in keys] or (keys if len(keys) == 1 else [])
            if not candidates:
                raise DynselError(f"{path}: cannot tell which array holds the samples (keys: {keys}); pass --array KEY")
            sample_key = candidates[0]
        if sample_key not in keys:
            raise DynselError(f"{path}: no array {sample_key!r} (keys: {keys}); pass --array KEY")
        if label_key is None:
            guess = _LABEL_FOR.get(sample_key)
            label_key = guess if guess in keys else None
        elif label_key not in keys:
            raise DynselError(f"{path}: no array {label_key!r} (keys: {keys}); fix --labels")
        samples = archive[sample_key]
        labels = archive[label_key] if label_key else None
        classes = None
        if "class_names" in keys:
            classes = [str(c) for c in archive["class_names"].tolist()]
    return _validated(path, samples, labels, classes, sample_key, label_key)


def _validated(path: Path, samples: np.ndarray, labels: np.ndarray | None, classes: list[str] | None, sample_key: str | None, label_key: str | None) -> ArraySource:
    if samples.ndim not in (2, 3, 4):
        raise DynselError(f"{path}: samples have shape {samples.shape}; expected [N, D] vectors or [N, H, W(, C)] images")
    if samples.shape[0] == 0:
        raise DynselError(f"{path}: the sample array is empty")
    if samples.dtype.kind not in "uif":
        raise DynselError(f"{path}: samples have dtype {samples.dtype}; expected numbers")
    if labels is not None:
        if labels.shape != (samples.shape[0],):
            raise DynselError(f"{path}: labels have shape {labels.shape}, expected ({samples.shape[0]},)")
        if labels.dtype.kind not in "iu":
            raise DynselError(f"{path}: labels have dtype {labels.dtype}; expected integer class ids")
        labels = labels.astype(np.int64)
        if labels.min() < 0:
            raise DynselError(f"{path}: labels must be non-negative class ids (found {int(labels.min())})")
    return ArraySource(path=path, samples=samples, labels=labels, classes=classes, sample_key=sample_key, label_key=label_key)
