"""Sources: where samples come from, in a stable order with stable ids (spec: docs/extract.md).

A source is opened once in the main process (listing, labels, validation of the whole source) and then
read in contiguous position ranges, possibly inside DataLoader worker processes (``read``). A sample's
*position* is its place in the source's order; its *id* is the position, or the value of ``--id-column``
for tables that have one.

- Numpy arrays (``.npy`` memory-mapped, ``.npz``): images [N, H, W(, C)] or vectors [N, D]; order = the
  first axis.
- Image folders: class-per-subfolder (the first path component is the class; classes sorted by name), or
  flat (optionally labelled by a CSV with ``file`` and ``label`` columns, default ``labels.csv`` inside the
  folder). Order = relative paths sorted component by component (Python string order).
- Tables (Parquet, CSV, TSV, JSONL; ``.gz`` for the text formats): a text column (default ``text``) or a
  vector column (``--vector-column``, or ``vector``/``embedding`` when there is no text column), an
  optional label column (default ``label`` when present) and an optional integer id column. Order = row
  order.

Per-sample problems (corrupt images, empty or non-UTF-8 text, NaN/Inf vectors, ...) are reported as
:class:`SampleProblem` records so the loop can stop with a one-line error or skip them; problems with the
whole source (missing columns, bad labels file) raise :class:`DynselError` at once.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DynselError, install_hint
from ..formats.common import sha256_file

INT64_MAX = 2**63 - 1  # ids and class ids are stored as int64

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
TABLE_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb guard: 8000 x 8000; larger images are refused per sample
DEFAULT_LABELS_CSV = "labels.csv"
_SAMPLE_KEYS = ("x_train", "x", "data", "images", "embeddings")
_LABEL_FOR = {"x_train": "y_train", "x": "y", "data": "labels", "images": "labels", "embeddings": "labels"}
_VECTOR_COLUMNS = ("vector", "embedding", "embeddings")


@dataclass(frozen=True)
class SampleProblem:
    """One bad sample: its position, where it is (a file, a row) and why it cannot be used."""

    position: int
    where: str
    reason: str  # a short code: unreadable, corrupt-image, image-too-large, mixed-size, empty-text, ...
    detail: str  # one human sentence


@dataclass
class RawBatch:
    """The readable samples of positions [start, stop) and the problems of the others."""

    positions: np.ndarray  # int64, the positions of ``samples`` (ascending)
    samples: Any  # ndarray [b, ...] or list of length b
    problems: list[SampleProblem] = field(default_factory=list)


@dataclass(frozen=True)
class SourceOptions:
    """What a source needs from the extract settings."""

    array: str | None = None
    labels: str | None = None
    text_column: str = "text"
    label_column: str | None = None
    id_column: str | None = None
    vector_column: str | None = None
    labels_csv: str | None = None
    mixed_sizes: str = "error"
    split: str | None = None


class Source:
    """Base class: ``kind`` is 'images', 'text' or 'vectors'."""

    kind: str
    path: Path
    labels: np.ndarray | None = None  # int64 [N]; -1 marks a missing label (a per-sample problem)
    classes: list[str] | None = None
    ids: np.ndarray | None = None  # int64 [N] when the source names its ids; None = positions
    dim: int | None = None  # vectors only
    unit: tuple[str, str] = ("row", "rows")  # what a sample is called in messages: singular, plural

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, start: int, stop: int) -> RawBatch:
        raise NotImplementedError

    def where(self, position: int) -> str:
        """Where a sample is, relative to the source (a file inside a folder, ``row N``): recorded for skipped samples."""
        raise NotImplementedError

    def full_where(self, where: str) -> str:
        """``where`` with the source's path, for messages."""
        return f"{self.path} {where}"

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def sample_ids(self, positions: np.ndarray) -> np.ndarray:
        return positions.astype(np.int64) if self.ids is None else self.ids[positions]

    def check(self, stop: int) -> list[SampleProblem]:
        """The bad samples among positions [0, ``stop``) that can be found without encoding, in order.

        Tables and arrays: every problem :meth:`read` would report (one pass over rows already in memory,
        or over the memory-mapped array). Image folders override this: only what needs no decoding.
        """
        problems: list[SampleProblem] = []
        step = self._check_rows()
        for start in range(0, stop, step):
            problems += self.read(start, min(start + step, stop)).problems
        return problems

    def _check_rows(self) -> int:
        return 65_536

    def _label_problems(self, positions: np.ndarray) -> list[SampleProblem]:
        if self.labels is None:
            return []
        missing = positions[self.labels[positions] < 0]
        return [SampleProblem(int(p), self.where(int(p)), "missing-label", "the label is missing") for p in missing]


# ---------------------------------------------------------------------------------------------- arrays


class ArraySource(Source):
    """Samples held in one numpy array (memory-mapped for .npy)."""

    def __init__(
        self,
        path: Path,
        samples: np.ndarray,
        labels: np.ndarray | None,
        classes: list[str] | None,
        sample_key: str | None,
        label_key: str | None,
    ) -> None:
        self.path = path
        self.samples = samples
        self.labels = labels
        self.classes = classes
        self.sample_key = sample_key
        self.label_key = label_key
        self.kind = "vectors" if samples.ndim == 2 else "images"
        self.dim = int(samples.shape[1]) if self.kind == "vectors" else None

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def where(self, position: int) -> str:
        return f"{self.sample_key} row {position}" if self.sample_key else f"row {position}"

    def _check_rows(self) -> int:  # about 64 MiB of the array per block
        row_bytes = max(1, int(np.prod(self.samples.shape[1:])) * self.samples.dtype.itemsize)
        return max(1, (64 << 20) // row_bytes)

    def check(self, stop: int) -> list[SampleProblem]:
        if self.samples.dtype.kind != "f":  # integers are always finite, and labels were checked on opening
            return []
        return super().check(stop)

    def read(self, start: int, stop: int) -> RawBatch:
        block = np.asarray(self.samples[start:stop])
        positions = np.arange(start, stop, dtype=np.int64)
        problems: list[SampleProblem] = []
        if block.dtype.kind == "f":
            finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
            if not finite.all():
                what = "vector" if self.kind == "vectors" else "image"
                problems = [
                    SampleProblem(int(p), self.where(int(p)), "non-finite", f"the {what} contains NaN or Inf")
                    for p in positions[~finite]
                ]
                block, positions = block[finite], positions[finite]
        problems += self._label_problems(positions)
        if problems:
            keep = ~np.isin(positions, [p.position for p in problems])
            block, positions = block[keep], positions[keep]
        return RawBatch(positions, block, sorted(problems, key=lambda p: p.position))

    def describe(self) -> dict[str, Any]:
        return {
            "type": "array",
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
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            if label_key:
                raise DynselError(f"--labels {label_key!r}: a .npy file holds one array; use an .npz for labels")
            samples = np.load(path, mmap_mode="r", allow_pickle=False)
            return _validated_array(path, samples, None, None, None, None)
        return _open_npz(path, sample_key, label_key)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if "Python objects" in str(exc) or "Object arrays" in str(exc):
            raise DynselError(
                f"{path}: holds Python objects (pickled), which dynsel never loads; save a numeric array instead"
            ) from None
        raise DynselError(f"{path}: not a readable numpy file ({exc})") from None


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
        classes = [str(c) for c in archive["class_names"].tolist()] if "class_names" in keys else None
    return _validated_array(path, samples, labels, classes, sample_key, label_key)


def _validated_array(
    path: Path,
    samples: np.ndarray,
    labels: np.ndarray | None,
    classes: list[str] | None,
    sample_key: str | None,
    label_key: str | None,
) -> ArraySource:
    if samples.ndim not in (2, 3, 4):
        raise DynselError(
            f"{path}: samples have shape {samples.shape}; expected [N, D] vectors or [N, H, W(, C)] images"
        )
    if samples.shape[0] == 0:
        raise DynselError(f"{path}: the sample array is empty")
    if 0 in samples.shape[1:]:
        raise DynselError(
            f"{path}: samples have shape {samples.shape}; every sample needs at least one value per dimension"
        )
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
    return ArraySource(path, samples, labels, classes, sample_key, label_key)


# ----------------------------------------------------------------------------------------- image folders


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DynselError(f"image folders need Pillow: {install_hint('vision')}") from None
    return Image


@contextlib.contextmanager
def _quiet_bomb_warning(Image: Any) -> Iterator[None]:
    """Pillow warns between 1x and 2x its pixel limit; our own size check decides instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def decode_image(path: Path, position: int, where: str) -> np.ndarray | SampleProblem:
    """Decode one image file to RGB uint8 [H, W, 3] (EXIF orientation applied), or say why not."""
    Image = _pil()
    from PIL import ImageOps, UnidentifiedImageError

    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # never loosen a stricter limit set by the caller
    try:
        with _quiet_bomb_warning(Image), Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                return SampleProblem(
                    position,
                    where,
                    "image-too-large",
                    f"the image is {width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit (a decompression bomb?)",
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        return SampleProblem(position, where, "image-too-large", f"refused as a decompression bomb ({exc})")
    except PermissionError as exc:
        return SampleProblem(position, where, "unreadable", f"cannot read the file ({exc.strerror})")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return SampleProblem(
            position, where, "unreadable", "cannot open the file (missing, a broken link or not a file)"
        )
    except UnidentifiedImageError:
        return SampleProblem(position, where, "corrupt-image", "not a readable image (unknown or corrupt format)")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return SampleProblem(position, where, "corrupt-image", f"corrupt image ({exc})")


def image_size_of(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header, or None when it cannot be read."""
    Image = _pil()
    try:
        with _quiet_bomb_warning(Image), Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)  # EXIF rotation swaps the sides
        return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    except Exception:  # noqa: BLE001 - any header problem is reported per sample later
        return None


class ImageFolderSource(Source):
    kind = "images"
    unit = ("image", "images")

    def __init__(
        self,
        root: Path,
        files: list[str],
        labels: np.ndarray | None,
        classes: list[str] | None,
        layout: str,
        labels_csv: Path | None,
        mixed_sizes: str,
    ) -> None:
        self.path = root
        self.files = files  # relative POSIX paths, in source order
        self.labels = labels
        self.classes = classes
        self.layout = layout
        self.labels_csv = labels_csv
        self.mixed_sizes = mixed_sizes
        self.reference: tuple[int, str] | None = None  # (position, size) of the first image whose header reads
        self.reference_size: tuple[int, int] | None = None
        if mixed_sizes == "error":
            for position, name in enumerate(files):
                size = image_size_of(root / name)
                if size is not None:
                    self.reference, self.reference_size = (position, name), size
                    break

    def __len__(self) -> int:
        return len(self.files)

    def where(self, position: int) -> str:
        return self.files[position]

    def full_where(self, where: str) -> str:
        return str(self.path / where)

    def check(self, stop: int) -> list[SampleProblem]:
        """Only what needs no decoding: images without a row in the labels CSV."""
        if self.labels is None:
            return []
        missing = np.flatnonzero(self.labels[:stop] < 0)
        return [
            SampleProblem(
                int(p),
                self.where(int(p)),
                "missing-label",
                f"no row for {self.files[p]!r} in the labels CSV {self.labels_csv}",
            )
            for p in missing
        ]

    def read(self, start: int, stop: int) -> RawBatch:
        positions, images, problems = [], [], []
        for position in range(start, stop):
            if self.labels is not None and self.labels[position] < 0:
                problems.append(
                    SampleProblem(
                        position,
                        self.where(position),
                        "missing-label",
                        f"no row for {self.files[position]!r} in the labels CSV {self.labels_csv}",
                    )
                )
                continue
            image = decode_image(self.path / self.files[position], position, self.where(position))
            if isinstance(image, SampleProblem):
                problems.append(image)
                continue
            if self.reference_size is not None and (image.shape[1], image.shape[0]) != self.reference_size:
                w, h = self.reference_size
                first = self.files[self.reference[0]] if self.reference else "the first image"
                problems.append(
                    SampleProblem(
                        position,
                        self.where(position),
                        "mixed-size",
                        f"the image is {image.shape[1]}x{image.shape[0]} but {first} is {w}x{h}; make the sizes equal or pass --mixed-sizes resize",
                    )
                )
                continue
            positions.append(position)
            images.append(image)
        return RawBatch(np.asarray(positions, dtype=np.int64), images, problems)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "image-folder",
            "path": str(self.path),
            "sha256": folder_fingerprint(self.path, self.files, self.labels_csv),
            "layout": self.layout,
            "files": len(self.files),
            "labels_csv": None if self.labels_csv is None else str(self.labels_csv),
            "kind": "images",
            "reference_size": None if self.reference_size is None else list(self.reference_size),
        }


def list_images(root: Path) -> list[str]:
    """Every image file under ``root`` (hidden files and folders skipped), as relative POSIX paths in order."""
    found: list[tuple[str, ...]] = []
    for directory, subdirs, names in os.walk(root, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        rel = Path(directory).relative_to(root).parts
        for name in names:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append((*rel, name))
    found.sort()
    return ["/".join(parts) for parts in found]


def _image_folder_layout(root: Path, labels_csv: str | None) -> tuple[list[str], str, Path | None]:
    files = list_images(root)
    if not files:
        raise DynselError(
            f"{root}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))}); point at a folder of images"
        )
    csv_path = (
        Path(labels_csv)
        if labels_csv
        else (root / DEFAULT_LABELS_CSV if (root / DEFAULT_LABELS_CSV).is_file() else None)
    )
    if labels_csv and not csv_path.is_file():  # type: ignore[union-attr]
        raise DynselError(f"--labels-csv {labels_csv}: no such file")
    if csv_path is not None:
        return files, "flat", csv_path
    top_level = [f for f in files if "/" not in f]
    if top_level and len(top_level) != len(files):
        raise DynselError(
            f"{root}: holds images both directly ({top_level[0]}) and in subfolders; use class subfolders only, or a flat folder with a labels CSV"
        )
    return files, ("flat" if top_level else "class-folders"), None


def open_image_folder(root: Path, options: SourceOptions) -> ImageFolderSource:
    files, layout, csv_path = _image_folder_layout(root, options.labels_csv)
    labels = classes = None
    if layout == "class-folders":
        names = [f.split("/", 1)[0] for f in files]
        classes = sorted(set(names))
        index = {c: i for i, c in enumerate(classes)}
        labels = np.asarray([index[c] for c in names], dtype=np.int64)
    elif csv_path is not None:
        labels, classes = _labels_from_csv(csv_path, files)
    return ImageFolderSource(root, files, labels, classes, layout, csv_path, options.mixed_sizes)


def _labels_from_csv(path: Path, files: list[str]) -> tuple[np.ndarray, list[str] | None]:
    """Labels of ``files`` from a CSV with header columns ``file`` and ``label``; -1 where a file has no row."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DynselError(f"{path}: not a readable UTF-8 CSV ({exc})") from None
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        raise DynselError(f"{path}: the labels CSV needs a header with columns 'file' and 'label'")
    known = set(files)
    by_file: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        name = (row["file"] or "").strip().replace("\\", "/")
        label = (row["label"] or "").strip()
        if name not in known:
            raise DynselError(f"{path} line {number}: {name!r} is not an image in the folder; fix the labels CSV")
        if not label:
            raise DynselError(f"{path} line {number}: empty label for {name!r}")
        if name in by_file:
            raise DynselError(f"{path} line {number}: {name!r} is listed twice")
        by_file[name] = label
    values = list(by_file.values())
    classes: list[str] | None = None
    if all(_is_int(v) for v in values):
        codes = {v: int(v) for v in values}
        if min(codes.values()) < 0:
            raise DynselError(f"{path}: integer labels must be non-negative class ids")
    else:
        classes = sorted(set(values))
        codes = {c: i for i, c in enumerate(classes)}
    labels = np.asarray([codes[by_file[f]] if f in by_file else -1 for f in files], dtype=np.int64)
    return labels, classes


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _hash_file_or_marker(path: Path) -> tuple[int, str]:
    try:
        return path.stat().st_size, sha256_file(path)
    except OSError as exc:
        return -1, f"unreadable:{exc.errno}"


def folder_fingerprint(root: Path, files: Sequence[str], labels_csv: Path | None) -> str:
    """sha256 over the listing and content: per image file in order ``path\\0size\\0sha256\\n``, then the labels CSV's."""
    digest = hashlib.sha256()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for name, (size, sha) in zip(files, pool.map(lambda f: _hash_file_or_marker(root / f), files, chunksize=64)):
            digest.update(f"{name}\0{size}\0{sha}\n".encode())
    if labels_csv is not None:
        size, sha = _hash_file_or_marker(labels_csv)
        digest.update(f"\0labels.csv\0{size}\0{sha}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- tables


def _table_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1:
        fmt = TABLE_SUFFIXES.get(suffixes[-2])
        return fmt if fmt in ("csv", "tsv", "jsonl") else None
    return TABLE_SUFFIXES.get(suffixes[-1]) if suffixes else None


class TableSource(Source):
    """Rows of a Parquet/CSV/TSV/JSONL table: text (kept as raw bytes until read) or vectors.

    With a split filter, position i is the table's row ``rows[i]``: ids are positions, messages and
    ``skipped`` records name the table's own row.
    """

    def __init__(
        self,
        path: Path,
        fmt: str,
        kind: str,
        values: Any,
        problems: dict[int, SampleProblem],
        labels: np.ndarray | None,
        classes: list[str] | None,
        ids: np.ndarray | None,
        columns: dict[str, str | None],
        n: int,
        rows: np.ndarray | None = None,
        split: str | None = None,
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.kind = kind
        self.values = values  # text: pyarrow array (binary or string) or list; vectors: float32 ndarray [N, D]
        self.row_problems = problems  # problems found while parsing (bad JSON lines, bad vectors)
        self.labels = labels
        self.classes = classes
        self.ids = ids
        self.columns = columns
        self.n = n
        self.rows = rows  # int64 [N]: the table row of each position (a split filter); None = the identity
        self.split = split
        self.dim = int(values.shape[1]) if kind == "vectors" else None

    def __len__(self) -> int:
        return self.n

    def where(self, position: int) -> str:
        return f"row {position if self.rows is None else int(self.rows[position])}"

    def read(self, start: int, stop: int) -> RawBatch:
        problems = [self.row_problems[p] for p in range(start, stop) if p in self.row_problems]
        bad = {p.position for p in problems}
        label_bad = {
            p.position: p for p in self._label_problems(np.arange(start, stop, dtype=np.int64)) if p.position not in bad
        }
        problems += label_bad.values()
        bad |= set(label_bad)
        positions: list[int] = []
        if self.kind == "vectors":
            positions = [p for p in range(start, stop) if p not in bad]
            samples: Any = (
                self.values[np.asarray(positions, dtype=np.int64)] if positions else np.zeros((0, self.dim), np.float32)
            )
        else:
            raw = self.values[start:stop]
            raw = raw.to_pylist() if hasattr(raw, "to_pylist") else raw
            samples = []
            for offset, value in enumerate(raw):
                position = start + offset
                if position in bad:
                    continue
                text = _checked_text(value, position, self.where(position))
                if isinstance(text, SampleProblem):
                    problems.append(text)
                    continue
                positions.append(position)
                samples.append(text)
        return RawBatch(np.asarray(positions, dtype=np.int64), samples, sorted(problems, key=lambda p: p.position))

    def content(self) -> dict[str, Any]:
        """``sha256`` and ``bytes`` of what was read."""
        return {"sha256": sha256_file(self.path), "bytes": self.path.stat().st_size}

    def describe(self) -> dict[str, Any]:
        return {
            "type": "table",
            "format": self.fmt,
            "path": str(self.path),
            **self.content(),
            "kind": self.kind,
            "rows": self.n,
            "columns": self.columns,
            "split": self.split,
        }


def _checked_text(value: Any, position: int, where: str) -> str | SampleProblem:
    if value is None:
        return SampleProblem(position, where, "missing-text", "the text is missing (null)")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return SampleProblem(position, where, "non-utf8", f"the text is not valid UTF-8 (byte {exc.start})")
    elif not isinstance(value, str):
        return SampleProblem(position, where, "not-text", f"expected a string, found {type(value).__name__}")
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return SampleProblem(position, where, "non-utf8", "the text holds unpaired surrogates (not valid UTF-8)")
    if not value.strip():
        return SampleProblem(position, where, "empty-text", "the text is empty")
    return value


SPLIT_COLUMN = "split"


def open_table(path: Path, options: SourceOptions) -> TableSource:
    fmt = _table_format(path)
    assert fmt is not None
    if fmt == "jsonl":
        columns, n, parse_problems = _read_jsonl(path)
    else:
        table = _read_arrow_table(path, fmt, options)
        n = table.num_rows
        repeated = sorted({name for name in table.column_names if table.column_names.count(name) > 1})
        if repeated:
            raise DynselError(
                f"{path}: the column name {repeated[0]!r} appears more than once; give each column its own name"
            )
        columns = {name: table.column(index) for index, name in enumerate(table.column_names)}
        parse_problems = {}
    return _table_source(path, fmt, columns, n, parse_problems, options)


def _table_source(
    path: Path,
    fmt: str,
    columns: dict[str, Any],
    n: int,
    parse_problems: dict[int, SampleProblem],
    options: SourceOptions,
    class_names: dict[str, list[str]] | None = None,
    split: str | None = None,
    cls: type[TableSource] = TableSource,
) -> TableSource:
    """Choose the text/vector, label and id columns of a table read whole, apply ``--split``, check them.

    ``class_names``: columns whose integers are indices into known class names (a Hugging Face ClassLabel,
    where -1 means no label). ``split``: already chosen by the caller (a DatasetDict's split); no filter.
    """
    names = list(columns)
    if n == 0:
        raise DynselError(f"{path}: the table has no rows")
    if not names and parse_problems:  # no line could be read at all: say why, not "no column"
        first = parse_problems[min(parse_problems)]
        raise DynselError(
            f"{path} {first.where}: {first.detail}; no line of the file could be read (is it UTF-8 JSON Lines?)"
        )

    text_col, vector_col = options.text_column, options.vector_column
    if vector_col is None and text_col == "text" and "text" not in names:
        vector_col = next((c for c in _VECTOR_COLUMNS if c in names), None)
    label_col = options.label_column if options.label_column else ("label" if "label" in names else None)
    chosen = {
        "text": None if vector_col else text_col,
        "vector": vector_col,
        "label": label_col,
        "id": options.id_column,
    }
    for role, name in chosen.items():
        if name is not None and name not in names:
            flag = {
                "text": "--text-column",
                "vector": "--vector-column",
                "label": "--label-column",
                "id": "--id-column",
            }[role]
            raise DynselError(
                f"{path}: no column {name!r} (columns: {', '.join(names)}); name the {role} column with {flag}"
            )
    rows = None
    if split is None and options.split is not None:
        rows = _split_rows(path, options.split, columns, names, parse_problems)
        split = options.split

    # Labels and ids are read over every row, so that every split numbers class names alike.
    names_of_labels = (class_names or {}).get(label_col or "")
    if label_col is None:
        labels, classes = None, None
    elif names_of_labels is not None:
        labels, classes = _class_label_column(path, label_col, columns[label_col], names_of_labels)
    else:
        labels, classes = _labels_from_column(path, label_col, columns[label_col], n)
    ids = (
        None
        if options.id_column is None
        else _ids_from_column(path, options.id_column, columns[options.id_column], n, parse_problems)
    )
    if vector_col is not None:
        values, problems = _vectors_from_column(path, vector_col, columns[vector_col], n, parse_problems)
        kind = "vectors"
    else:
        values, problems, kind = columns[text_col], parse_problems, "text"
        if hasattr(values, "combine_chunks"):
            values = values.combine_chunks()
    if rows is not None:
        labels = None if labels is None else labels[rows]
        ids = None if ids is None else ids[rows]
        if kind == "vectors":
            values = values[rows]
        else:
            values = values.take(rows) if hasattr(values, "take") else [values[r] for r in rows.tolist()]
        position_of = {int(r): i for i, r in enumerate(rows.tolist()) if int(r) in problems}
        problems = {
            position_of[r]: SampleProblem(position_of[r], p.where, p.reason, p.detail)
            for r, p in problems.items()
            if r in position_of
        }
        n = len(rows)
    return cls(path, fmt, kind, values, problems, labels, classes, ids, chosen, n, rows=rows, split=split)


def _split_rows(
    path: Path, split: str, columns: dict[str, Any], names: list[str], parse_problems: dict[int, SampleProblem]
) -> np.ndarray:
    """The rows of a table whose ``split`` column equals ``split``, in order. A line too broken to have a
    split (bad JSON) stays, as a bad row, so that it is reported rather than silently dropped."""
    if SPLIT_COLUMN not in names:
        raise DynselError(
            f"--split {split}: {path} has no column {SPLIT_COLUMN!r} (columns: {', '.join(names)}); --split keeps the rows whose {SPLIT_COLUMN!r} column equals it"
        )
    values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in _to_list(columns[SPLIT_COLUMN])]
    rows = [i for i, v in enumerate(values) if v == split or i in parse_problems]
    if not any(values[i] == split for i in rows):
        found = sorted({str(v) for v in values if v is not None})
        shown = ", ".join(repr(v) for v in found[:10]) + (", …" if len(found) > 10 else "")
        raise DynselError(
            f"--split {split}: no row of {path} has {SPLIT_COLUMN!r} = {split!r} (found: {shown or 'only nulls'})"
        )
    return np.asarray(rows, dtype=np.int64)


def _read_arrow_table(path: Path, fmt: str, options: SourceOptions) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            return pq.read_table(path)
        # Text as raw bytes so that one row of invalid UTF-8 is a per-row problem, not a failed read.
        return pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types={options.text_column: pa.binary()}),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DynselError(f"{path}: cannot read it as {fmt.upper()} ({message})") from None


def _read_jsonl(path: Path) -> tuple[dict[str, list[Any]], int, dict[int, SampleProblem]]:
    """One JSON object per line; blank lines are ignored. Lines that are not JSON objects are per-row problems."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            lines = [line for line in handle.read().split(b"\n") if line.strip()]
    except (OSError, EOFError) as exc:
        raise DynselError(f"{path}: cannot read it ({exc})") from None
    rows: list[dict[str, Any] | None] = []
    problems: dict[int, SampleProblem] = {}
    where = "row {}"
    for position, line in enumerate(lines):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems[position] = SampleProblem(
                position, where.format(position), "non-utf8", f"the line is not valid UTF-8 (byte {exc.start})"
            )
            rows.append(None)
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            problems[position] = SampleProblem(
                position, where.format(position), "bad-json", f"not valid JSON ({exc.msg})"
            )
            rows.append(None)
            continue
        except RecursionError:
            problems[position] = SampleProblem(
                position, where.format(position), "bad-json", "the JSON is nested too deeply to read"
            )
            rows.append(None)
            continue
        if not isinstance(value, dict):
            problems[position] = SampleProblem(
                position, where.format(position), "bad-json", "the line is not a JSON object"
            )
            rows.append(None)
            continue
        rows.append(value)
    names: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for key in row or ():
            if key not in seen:
                seen.add(key)
                names.append(key)
    columns = {name: [None if row is None else row.get(name) for row in rows] for name in names}
    return columns, len(rows), problems


def _to_list(column: Any) -> list[Any]:
    return column.to_pylist() if hasattr(column, "to_pylist") else list(column)


def _labels_from_column(path: Path, name: str, column: Any, n: int) -> tuple[np.ndarray, list[str] | None]:
    """Integer class ids used as they are; strings mapped to their index among the sorted distinct names. -1 = missing."""
    values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in _to_list(column)]
    present = [v for v in values if v is not None and v != ""]
    if not present:
        raise DynselError(f"{path}: the label column {name!r} is empty")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present) or all(
        isinstance(v, float) and v.is_integer() for v in present
    ):
        too_large = next((v for v in present if abs(int(v)) > INT64_MAX), None)
        if too_large is not None:
            raise DynselError(
                f"{path}: label {too_large!r} in {name!r} is beyond a 64-bit integer; use class ids 0..C-1 or class names"
            )
        labels = np.asarray([-1 if v is None or v == "" else int(v) for v in values], dtype=np.int64)
        if (labels[[v is not None and v != "" for v in values]] < 0).any():
            raise DynselError(f"{path}: integer labels in {name!r} must be non-negative class ids")
        return labels, None
    if not all(isinstance(v, str) for v in present):
        raise DynselError(f"{path}: the label column {name!r} mixes types; use integer class ids or class names")
    classes = sorted(set(present))
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index.get(v, -1) if v else -1 for v in values], dtype=np.int64), classes


def _class_label_column(path: Path, name: str, column: Any, class_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """A Hugging Face ClassLabel column: integer indices into ``class_names``; -1 or null = no label."""
    values = _to_list(column)
    labels = np.asarray([-1 if v is None or v < 0 else int(v) for v in values], dtype=np.int64)
    if (labels >= len(class_names)).any():
        raise DynselError(
            f"{path}: the label column {name!r} holds {int(labels.max())}, but its ClassLabel has {len(class_names)} names"
        )
    if (labels < 0).all():
        raise DynselError(f"{path}: the label column {name!r} is empty")
    return labels, list(class_names)


def _ids_from_column(path: Path, name: str, column: Any, n: int, problems: dict[int, SampleProblem]) -> np.ndarray:
    values = _to_list(column)
    ids = np.full(n, -1, dtype=np.int64)
    for position, value in enumerate(values):
        if position in problems:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DynselError(
                f"{path} row {position}: id {value!r} in {name!r} is not a non-negative integer; sample ids must be"
            )
        if value > INT64_MAX:
            raise DynselError(
                f"{path} row {position}: id {value!r} in {name!r} is beyond a 64-bit integer; sample ids must fit in int64"
            )
        ids[position] = int(value)
    valid = ids[ids >= 0]
    if len(np.unique(valid)) != len(valid):
        uniq, counts = np.unique(valid, return_counts=True)
        raise DynselError(
            f"{path}: id {int(uniq[counts > 1][0])} appears more than once in {name!r}; sample ids must be unique"
        )
    return ids


def _vectors_from_column(
    path: Path, name: str, column: Any, n: int, problems: dict[int, SampleProblem]
) -> tuple[np.ndarray, dict[int, SampleProblem]]:
    values = _to_list(column)
    dim = next(
        (len(v) for i, v in enumerate(values) if isinstance(v, (list, tuple)) and i not in problems and len(v)), None
    )
    if dim is None:
        raise DynselError(f"{path}: the vector column {name!r} holds no lists of numbers")
    vectors = np.zeros((n, dim), dtype=np.float32)
    problems = dict(problems)
    for position, value in enumerate(values):
        if position in problems:
            continue
        where = f"row {position}"
        if not isinstance(value, (list, tuple)):
            problems[position] = SampleProblem(position, where, "bad-vector", "the vector is missing or not a list")
        elif len(value) != dim:
            problems[position] = SampleProblem(
                position, where, "bad-vector", f"the vector has {len(value)} values, expected {dim}"
            )
        else:
            try:
                row = np.asarray([np.nan if v is None else v for v in value], dtype=np.float32)
            except (TypeError, ValueError):
                problems[position] = SampleProblem(position, where, "bad-vector", "the vector holds non-numbers")
                continue
            if not np.isfinite(row).all():
                problems[position] = SampleProblem(
                    position, where, "non-finite", "the vector contains NaN, Inf or null"
                )
            else:
                vectors[position] = row
    return vectors, problems


# ------------------------------------------------------------------------------ Hugging Face datasets

HF_DICT_FILE = "dataset_dict.json"  # a DatasetDict directory: one Dataset directory per split
HF_STATE_FILE = "state.json"  # a Dataset directory: its Arrow files, in order
HF_INFO_FILE = "dataset_info.json"  # a Dataset directory: its features (column types, ClassLabel names)


def is_hf_dataset(path: Path) -> bool:
    """A directory written by ``datasets.Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return (path / HF_DICT_FILE).is_file() or ((path / HF_STATE_FILE).is_file() and (path / HF_INFO_FILE).is_file())


def _hf_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DynselError(f"{path}: not readable JSON ({exc}); is this a directory written by save_to_disk?") from None


def _hf_split_dir(root: Path, split: str | None) -> tuple[Path, str | None, bool]:
    """(the Dataset directory to read, its split name, whether ``split`` is still to be applied as a column filter)."""
    if not (root / HF_DICT_FILE).is_file():
        return root, None, split is not None
    listing = _hf_json(root / HF_DICT_FILE)
    splits = listing.get("splits") if isinstance(listing, dict) else None
    if not isinstance(splits, list) or not all(isinstance(x, str) for x in splits) or not splits:
        raise DynselError(
            f'{root / HF_DICT_FILE}: expected {{"splits": [names]}}; is this a directory written by DatasetDict.save_to_disk?'
        )
    if split is None:
        if len(splits) > 1:
            raise DynselError(f"{root}: a Hugging Face DatasetDict with splits {', '.join(splits)}; pass --split NAME")
        split = splits[0]
    if split not in splits:
        raise DynselError(f"--split {split}: {root} has splits {', '.join(splits)}")
    directory = root / split
    if not is_hf_dataset(directory) or (directory / HF_DICT_FILE).exists():
        raise DynselError(
            f"{directory}: split {split!r} is not a Dataset directory (no {HF_STATE_FILE} and {HF_INFO_FILE})"
        )
    return directory, split, False


def _hf_files(directory: Path) -> list[str]:
    """The files of a Dataset directory its content comes from: ``state.json``, ``dataset_info.json`` and
    the Arrow files ``state.json`` lists, in that order (not cache files ``map`` may have left there)."""
    state = _hf_json(directory / HF_STATE_FILE)
    listed = (
        [f.get("filename") for f in state.get("_data_files", []) if isinstance(f, dict)]
        if isinstance(state, dict)
        else []
    )
    return [HF_STATE_FILE, HF_INFO_FILE, *[f for f in listed if isinstance(f, str)]]


class HFDatasetSource(TableSource):
    """A ``save_to_disk`` directory: read like any table; ``path`` is the Dataset directory read (a
    DatasetDict's split folder), ``root`` the directory given."""

    root: Path

    def content(self) -> dict[str, Any]:
        files = _hf_files(self.path)
        return {
            "sha256": folder_fingerprint(self.path, files, None),
            "bytes": sum((self.path / f).stat().st_size for f in files),
        }

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.root)}


def open_hf_dataset(root: Path, options: SourceOptions) -> HFDatasetSource:
    """Read a Dataset directory with ``datasets.load_from_disk`` when installed, else its Arrow files with pyarrow."""
    directory, split, filter_rows = _hf_split_dir(root, options.split)
    table = _read_hf_table(directory)
    info = _hf_json(directory / HF_INFO_FILE)
    features = info.get("features") if isinstance(info, dict) else None
    class_names = {
        name: list(f["names"])
        for name, f in (features or {}).items()
        if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)
    }
    columns = {name: table.column(name) for name in table.column_names}
    if filter_rows:
        state = _hf_json(directory / HF_STATE_FILE)
        if SPLIT_COLUMN not in columns and isinstance(state, dict) and state.get("_split") == options.split:
            filter_rows = False  # saved from load_dataset(..., split=NAME): the whole dataset is that split
        split = options.split
    source = _table_source(
        directory,
        "hf-dataset",
        columns,
        table.num_rows,
        {},
        options,
        class_names,
        split=None if filter_rows else split,
        cls=HFDatasetSource,
    )
    source.root = root  # type: ignore[attr-defined]
    return source  # type: ignore[return-value]


def _read_hf_table(directory: Path) -> Any:
    try:
        import datasets
    except ImportError:
        return _read_hf_arrow_files(directory)
    try:
        dataset = datasets.load_from_disk(str(directory))
    except Exception as exc:  # noqa: BLE001 - any failure of the library is a bad source
        raise DynselError(
            f"{directory}: cannot read it as a Hugging Face dataset ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(dataset, datasets.Dataset):
        raise DynselError(f"{directory}: not a Hugging Face Dataset directory; pass --split NAME for a DatasetDict")
    return dataset.with_format("arrow")[:] if len(dataset) else dataset.data.table.slice(0, 0)


def _read_hf_arrow_files(directory: Path) -> Any:
    """Without the ``datasets`` package: the Arrow stream files ``state.json`` lists, concatenated in order."""
    import pyarrow as pa

    state = _hf_json(directory / HF_STATE_FILE)
    files = [f.get("filename") for f in state.get("_data_files", [])] if isinstance(state, dict) else []
    if (
        not files
        or not all(isinstance(f, str) for f in files)
        or (isinstance(state, dict) and state.get("_indices_files"))
    ):
        raise DynselError(
            f"{directory / HF_STATE_FILE}: no plain list of data files; pip install datasets to read this directory"
        )
    tables = []
    for name in files:
        path = directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not path.is_file():
            raise DynselError(f"{directory / HF_STATE_FILE}: lists {name!r}, which is not a file in {directory}")
        try:
            tables.append(pa.ipc.open_stream(pa.memory_map(str(path))).read_all())
        except (pa.ArrowInvalid, OSError) as exc:
            raise DynselError(f"{path}: not a readable Arrow stream ({exc})") from None
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        raise DynselError(f"{directory}: its Arrow files have different columns ({exc})") from None


# ------------------------------------------------------------------------------------------- dispatch


def open_source(path: Path, options: SourceOptions = SourceOptions()) -> Source:
    """Open any supported source; the type is chosen by what ``path`` is (a folder) or its suffix."""
    path = Path(path)
    if path.is_dir():
        if is_hf_dataset(path):
            return open_hf_dataset(path, options)
        _no_split(path, options, "an image folder")
        return open_image_folder(path, options)
    if not path.is_file():
        raise DynselError(
            f"{path}: no such file or folder; pass an image folder, a .npy/.npz array, a Parquet/CSV/JSONL table or a Hugging Face dataset directory"
        )
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        _no_split(path, options, "a numpy array")
        return open_array_source(path, options.array, options.labels)
    if _table_format(path) is not None:
        return open_table(path, options)
    raise DynselError(
        f"{path}: unsupported source type {''.join(path.suffixes)!r}; use an image folder, .npy/.npz, .parquet, .csv, .tsv or .jsonl (.gz for the text formats)"
    )


def _no_split(path: Path, options: SourceOptions, what: str) -> None:
    if options.split is not None:
        raise DynselError(
            f"--split {options.split}: {path} is {what}; --split applies to tables with a {SPLIT_COLUMN!r} column and Hugging Face dataset directories"
        )


def source_fingerprint(path: Path, options: SourceOptions = SourceOptions()) -> str:
    """The ``source.sha256`` that ``extract`` records: a file's sha256, or a folder's content fingerprint
    (an image folder's; a Hugging Face dataset directory's, over the Dataset directory read).

    ``dynsel run`` compares it to the features manifest to decide whether extraction is up to date.
    """
    path = Path(path)
    if path.is_dir() and is_hf_dataset(path):
        directory = _hf_split_dir(path, options.split)[0]
        return folder_fingerprint(directory, _hf_files(directory), None)
    if path.is_dir():
        files, _, csv_path = _image_folder_layout(path, options.labels_csv)
        return folder_fingerprint(path, files, csv_path)
    return sha256_file(path)


__all__ = [
    "ArraySource",
    "HFDatasetSource",
    "ImageFolderSource",
    "RawBatch",
    "SampleProblem",
    "Source",
    "SourceOptions",
    "TableSource",
    "is_hf_dataset",
    "open_array_source",
    "open_hf_dataset",
    "open_source",
    "source_fingerprint",
]
