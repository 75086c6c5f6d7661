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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import DynselError
from ..formats.common import sha256_file

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
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


class Source:
    """Base class: ``kind`` is 'images', 'text' or 'vectors'."""

    kind: str
    path: Path
    labels: np.ndarray | None = None  # int64 [N]; -1 marks a missing label (a per-sample problem)
    classes: list[str] | None = None
    ids: np.ndarray | None = None  # int64 [N] when the source names its ids; None = positions
    dim: int | None = None  # vectors only

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

    def _label_problems(self, positions: np.ndarray) -> list[SampleProblem]:
        if self.labels is None:
            return []
        missing = positions[self.labels[positions] < 0]
        return [SampleProblem(int(p), self.where(int(p)), "missing-label", "the label is missing") for p in missing]


# ---------------------------------------------------------------------------------------------- arrays


class ArraySource(Source):
    """Samples held in one numpy array (memory-mapped for .npy)."""

    def __init__(self, path: Path, samples: np.ndarray, labels: np.ndarray | None, classes: list[str] | None, sample_key: str | None, label_key: str | None) -> None:
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

    def read(self, start: int, stop: int) -> RawBatch:
        block = np.asarray(self.samples[start:stop])
        positions = np.arange(start, stop, dtype=np.int64)
        problems: list[SampleProblem] = []
        if block.dtype.kind == "f":
            finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
            if not finite.all():
                what = "vector" if self.kind == "vectors" else "image"
                problems = [SampleProblem(int(p), self.where(int(p)), "non-finite", f"the {what} contains NaN or Inf") for p in positions[~finite]]
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
            raise DynselError(f"{path}: holds Python objects (pickled), which dynsel never loads; save a numeric array instead") from None
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


def _validated_array(path: Path, samples: np.ndarray, labels: np.ndarray | None, classes: list[str] | None, sample_key: str | None, label_key: str | None) -> ArraySource:
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
    return ArraySource(path, samples, labels, classes, sample_key, label_key)


# ----------------------------------------------------------------------------------------- image folders


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DynselError("image folders need Pillow: pip install 'dynsel[vision]'") from None
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
                return SampleProblem(position, where, "image-too-large", f"the image is {width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit (a decompression bomb?)")
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        return SampleProblem(position, where, "image-too-large", f"refused as a decompression bomb ({exc})")
    except PermissionError as exc:
        return SampleProblem(position, where, "unreadable", f"cannot read the file ({exc.strerror})")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return SampleProblem(position, where, "unreadable", "cannot open the file (missing, a broken link or not a file)")
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

    def __init__(self, root: Path, files: list[str], labels: np.ndarray | None, classes: list[str] | None, layout: str, labels_csv: Path | None, mixed_sizes: str) -> None:
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

    def read(self, start: int, stop: int) -> RawBatch:
        positions, images, problems = [], [], []
        for position in range(start, stop):
            if self.labels is not None and self.labels[position] < 0:
                problems.append(SampleProblem(position, self.where(position), "missing-label", f"no row for {self.files[position]!r} in the labels CSV {self.labels_csv}"))
                continue
            image = decode_image(self.path / self.files[position], position, self.where(position))
            if isinstance(image, SampleProblem):
                problems.append(image)
                continue
            if self.reference_size is not None and (image.shape[1], image.shape[0]) != self.reference_size:
                w, h = self.reference_size
                first = self.files[self.reference[0]] if self.reference else "the first image"
                problems.append(SampleProblem(position, self.where(position), "mixed-size", f"the image is {image.shape[1]}x{image.shape[0]} but {first} is {w}x{h}; make the sizes equal or pass --mixed-sizes resize"))
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
        raise DynselError(f"{root}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))}); point at a folder of images")
    csv_path = Path(labels_csv) if labels_csv else (root / DEFAULT_LABELS_CSV if (root / DEFAULT_LABELS_CSV).is_file() else None)
    if labels_csv and not csv_path.is_file():  # type: ignore[union-attr]
        raise DynselError(f"--labels-csv {labels_csv}: no such file")
    if csv_path is not None:
        return files, "flat", csv_path
    top_level = [f for f in files if "/" not in f]
    if top_level and len(top_level) != len(files):
        raise DynselError(f"{root}: holds images both directly ({top_level[0]}) and in subfolders; use class subfolders only, or a flat folder with a labels CSV")
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
    """Rows of a Parquet/CSV/TSV/JSONL table: text (kept as raw bytes until read) or vectors."""

    def __init__(self, path: Path, fmt: str, kind: str, values: Any, problems: dict[int, SampleProblem], labels: np.ndarray | None, classes: list[str] | None, ids: np.ndarray | None, columns: dict[str, str | None], n: int) -> None:
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
        self.dim = int(values.shape[1]) if kind == "vectors" else None

    def __len__(self) -> int:
        return self.n

    def where(self, position: int) -> str:
        return f"row {position}"

    def read(self, start: int, stop: int) -> RawBatch:
        problems = [self.row_problems[p] for p in range(start, stop) if p in self.row_problems]
        bad = {p.position for p in problems}
        label_bad = {p.position: p for p in self._label_problems(np.arange(start, stop, dtype=np.int64)) if p.position not in bad}
        problems += label_bad.values()
        bad |= set(label_bad)
        positions: list[int] = []
        if self.kind == "vectors":
            positions = [p for p in range(start, stop) if p not in bad]
            samples: Any = self.values[np.asarray(positions, dtype=np.int64)] if positions else np.zeros((0, self.dim), np.float32)
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

    def describe(self) -> dict[str, Any]:
        return {
            "type": "table",
            "format": self.fmt,
            "path": str(self.path),
            "sha256": sha256_file(self.path),
            "bytes": self.path.stat().st_size,
            "kind": self.kind,
            "rows": self.n,
            "columns": self.columns,
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


def open_table(path: Path, options: SourceOptions) -> TableSource:
    fmt = _table_format(path)
    assert fmt is not None
    if fmt == "jsonl":
        columns, n, parse_problems = _read_jsonl(path)
        names = list(columns)
    else:
        table = _read_arrow_table(path, fmt, options)
        names = table.column_names
        n = table.num_rows
        columns = {name: table.column(name) for name in names}
        parse_problems = {}
    if n == 0:
        raise DynselError(f"{path}: the table has no rows")
    if not names and parse_problems:  # no line could be read at all: say why, not "no column"
        first = parse_problems[min(parse_problems)]
        raise DynselError(f"{path} {first.where}: {first.detail}; no line of the file could be read (is it UTF-8 JSON Lines?)")

    text_col, vector_col = options.text_column, options.vector_column
    if vector_col is None and text_col == "text" and "text" not in names:
        vector_col = next((c for c in _VECTOR_COLUMNS if c in names), None)
    label_col = options.label_column if options.label_column else ("label" if "label" in names else None)
    chosen = {"text": None if vector_col else text_col, "vector": vector_col, "label": label_col, "id": options.id_column}
    for role, name in chosen.items():
        if name is not None and name not in names:
            flag = {"text": "--text-column", "vector": "--vector-column", "label": "--label-column", "id": "--id-column"}[role]
            raise DynselError(f"{path}: no column {name!r} (columns: {', '.join(names)}); name the {role} column with {flag}")

    labels, classes = (None, None) if label_col is None else _labels_from_column(path, label_col, columns[label_col], n)
    ids = None if options.id_column is None else _ids_from_column(path, options.id_column, columns[options.id_column], n, parse_problems)
    if vector_col is not None:
        vectors, problems = _vectors_from_column(path, vector_col, columns[vector_col], n, parse_problems)
        return TableSource(path, fmt, "vectors", vectors, problems, labels, classes, ids, chosen, n)
    values = columns[text_col]
    if hasattr(values, "combine_chunks"):
        values = values.combine_chunks()
    return TableSource(path, fmt, "text", values, parse_problems, labels, classes, ids, chosen, n)


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
            problems[position] = SampleProblem(position, where.format(position), "non-utf8", f"the line is not valid UTF-8 (byte {exc.start})")
            rows.append(None)
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            problems[position] = SampleProblem(position, where.format(position), "bad-json", f"not valid JSON ({exc.msg})")
            rows.append(None)
            continue
        if not isinstance(value, dict):
            problems[position] = SampleProblem(position, where.format(position), "bad-json", "the line is not a JSON object")
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
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present) or all(isinstance(v, float) and v.is_integer() for v in present):
        labels = np.asarray([-1 if v is None or v == "" else int(v) for v in values], dtype=np.int64)
        if (labels[[v is not None and v != "" for v in values]] < 0).any():
            raise DynselError(f"{path}: integer labels in {name!r} must be non-negative class ids")
        return labels, None
    if not all(isinstance(v, str) for v in present):
        raise DynselError(f"{path}: the label column {name!r} mixes types; use integer class ids or class names")
    classes = sorted(set(present))
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index.get(v, -1) if v else -1 for v in values], dtype=np.int64), classes


def _ids_from_column(path: Path, name: str, column: Any, n: int, problems: dict[int, SampleProblem]) -> np.ndarray:
    values = _to_list(column)
    ids = np.full(n, -1, dtype=np.int64)
    for position, value in enumerate(values):
        if position in problems:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DynselError(f"{path} row {position}: id {value!r} in {name!r} is not a non-negative integer; sample ids must be")
        ids[position] = int(value)
    valid = ids[ids >= 0]
    if len(np.unique(valid)) != len(valid):
        uniq, counts = np.unique(valid, return_counts=True)
        raise DynselError(f"{path}: id {int(uniq[counts > 1][0])} appears more than once in {name!r}; sample ids must be unique")
    return ids


def _vectors_from_column(path: Path, name: str, column: Any, n: int, problems: dict[int, SampleProblem]) -> tuple[np.ndarray, dict[int, SampleProblem]]:
    values = _to_list(column)
    dim = next((len(v) for i, v in enumerate(values) if isinstance(v, (list, tuple)) and i not in problems and len(v)), None)
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
            problems[position] = SampleProblem(position, where, "bad-vector", f"the vector has {len(value)} values, expected {dim}")
        else:
            try:
                row = np.asarray([np.nan if v is None else v for v in value], dtype=np.float32)
            except (TypeError, ValueError):
                problems[position] = SampleProblem(position, where, "bad-vector", "the vector holds non-numbers")
                continue
            if not np.isfinite(row).all():
                problems[position] = SampleProblem(position, where, "non-finite", "the vector contains NaN, Inf or null")
            else:
                vectors[position] = row
    return vectors, problems


# ------------------------------------------------------------------------------------------- dispatch


def open_source(path: Path, options: SourceOptions = SourceOptions()) -> Source:
    """Open any supported source; the type is chosen by what ``path`` is (a folder) or its suffix."""
    path = Path(path)
    if path.is_dir():
        return open_image_folder(path, options)
    if not path.is_file():
        raise DynselError(f"{path}: no such file or folder; pass an image folder, a .npy/.npz array, or a Parquet/CSV/JSONL table")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return open_array_source(path, options.array, options.labels)
    if _table_format(path) is not None:
        return open_table(path, options)
    raise DynselError(
        f"{path}: unsupported source type {''.join(path.suffixes)!r}; use an image folder, .npy/.npz, .parquet, .csv, .tsv or .jsonl (.gz for the text formats)"
    )


def source_fingerprint(path: Path, options: SourceOptions = SourceOptions()) -> str:
    """The ``source.sha256`` that ``extract`` records: a file's sha256, or an image folder's content fingerprint.

    ``dynsel run`` compares it to the features manifest to decide whether extraction is up to date.
    """
    path = Path(path)
    if path.is_dir():
        files, _, csv_path = _image_folder_layout(path, options.labels_csv)
        return folder_fingerprint(path, files, csv_path)
    return sha256_file(path)


__all__ = [
    "ArraySource",
    "ImageFolderSource",
    "RawBatch",
    "SampleProblem",
    "Source",
    "SourceOptions",
    "TableSource",
    "open_array_source",
    "open_source",
    "source_fingerprint",
]
