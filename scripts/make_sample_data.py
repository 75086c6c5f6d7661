#!/usr/bin/env python3
"""Regenerate the small sample data sets shipped in ``sample_data/``.

Outputs (all byte-identical on every run for the same inputs):

* ``fashion_mnist_2k.npz``: a class-balanced cut of Fashion-MNIST (200 train and
  50 test images per class), read from the idx files installed by the Debian
  package ``dataset-fashion-mnist``.
* ``sms_spam_1k.csv``: 1,000 messages cut from the SMS Spam Collection, stratified
  so the ham/spam ratio of the source is kept.
* ``README.md``, ``LICENSE-fashion-mnist.txt``, ``LICENSE-sms-spam.txt``.

Determinism: selection uses ``numpy.random.default_rng(0)``; the ``.npz`` is
written with :mod:`zipfile` using a fixed member timestamp and fixed attributes
(``np.savez_compressed`` stamps members with the current time); nothing written
depends on the time, the host or the absolute paths involved.

Usage::

    python scripts/make_sample_data.py
    python scripts/make_sample_data.py --fashion-dir DIR --sms FILE --out DIR

Only the standard library and numpy are needed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

REPO_ROOT: Path = Path(__file__).resolve().parent.parent

DEFAULT_FASHION_DIR: Path = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_SMS: Path = REPO_ROOT / ".." / "shared" / "data" / "sms_spam.tsv.gz"
DEFAULT_OUT: Path = REPO_ROOT / "sample_data"

SEED: int = 0

FASHION_NPZ: str = "fashion_mnist_2k.npz"
SMS_CSV: str = "sms_spam_1k.csv"
README: str = "README.md"
LICENSE_FASHION: str = "LICENSE-fashion-mnist.txt"
LICENSE_SMS: str = "LICENSE-sms-spam.txt"

FASHION_CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_TRAIN_PER_CLASS: int = 200
FASHION_TEST_PER_CLASS: int = 50
FASHION_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

IDX_MAGIC_IMAGES: int = 2051  # 0x00000803: unsigned byte, 3 dimensions
IDX_MAGIC_LABELS: int = 2049  # 0x00000801: unsigned byte, 1 dimension

SMS_SAMPLE_SIZE: int = 1000
SMS_LABELS: tuple[str, ...] = ("ham", "spam")

# Fixed zip member timestamp (the earliest date a zip entry can hold).
ZIP_DATE_TIME: tuple[int, int, int, int, int, int] = (1980, 1, 1, 0, 0, 0)

FASHION_MIT_NOTICE: str = """\
The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a
copy of this software and associated documentation files (the "Software"),
to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense,
and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included
in all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

SMS_ATTRIBUTION: str = """\
SMS Spam Collection v.1

Licence: Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/

Source: UCI Machine Learning Repository, dataset 228,
https://archive.ics.uci.edu/dataset/228

Credit: Tiago A. Almeida and José María Gómez Hidalgo.

Cite: Almeida, T.A., Gómez Hidalgo, J.M., Yamakami, A. "Contributions to the
Study of SMS Spam Filtering: New Collection and Results." Proc. 2011 ACM
Symposium on Document Engineering (DocEng'11).

Changes: sms_spam_1k.csv is a 1,000-message subset of the collection, drawn
by stratified random sampling (seed 0) so the ham/spam ratio of the full
collection is kept. Messages are unchanged; an `id` column (the message's
0-based line number in the full collection) was added. The subset was made
with scripts/make_sample_data.py.
"""


# --------------------------------------------------------------------------- #
# Fashion-MNIST
# --------------------------------------------------------------------------- #


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read a gzip-compressed idx file of unsigned bytes and validate its header."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4:
        raise ValueError(f"{path}: too short to be an idx file")
    magic = int.from_bytes(data[0:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: idx magic {magic} (0x{magic:08x}), expected {expected_magic}")
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n_values = int(np.prod(shape, dtype=np.int64))
    if len(data) != header_len + n_values:
        raise ValueError(
            f"{path}: idx payload is {len(data) - header_len} bytes, header shape {shape} needs {n_values}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def load_fashion_split(fashion_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one Fashion-MNIST split (``"train"`` or ``"test"``) as (images, labels)."""
    images = read_idx(fashion_dir / FASHION_FILES[f"{split}_images"], IDX_MAGIC_IMAGES)
    labels = read_idx(fashion_dir / FASHION_FILES[f"{split}_labels"], IDX_MAGIC_LABELS)
    expected_n = {"train": 60000, "test": 10000}[split]
    if images.shape != (expected_n, 28, 28):
        raise ValueError(f"Fashion-MNIST {split} images have shape {images.shape}")
    if labels.shape != (expected_n,):
        raise ValueError(f"Fashion-MNIST {split} labels have shape {labels.shape}")
    if int(labels.max()) >= len(FASHION_CLASS_NAMES):
        raise ValueError(f"Fashion-MNIST {split} labels out of range: max {int(labels.max())}")
    return images, labels


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``per_class`` row indices of every class without replacement, sorted ascending."""
    chosen: list[np.ndarray] = []
    for cls in range(len(FASHION_CLASS_NAMES)):
        pool = np.flatnonzero(labels == cls)
        if pool.size < per_class:
            raise ValueError(f"class {cls} has only {pool.size} rows, need {per_class}")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def build_fashion_arrays(fashion_dir: Path, seed: int = SEED) -> dict[str, np.ndarray]:
    """Build the arrays stored in ``fashion_mnist_2k.npz``."""
    rng = np.random.default_rng(seed)
    x_tr, y_tr = load_fashion_split(fashion_dir, "train")
    x_te, y_te = load_fashion_split(fashion_dir, "test")
    idx_tr = balanced_indices(y_tr, FASHION_TRAIN_PER_CLASS, rng)
    idx_te = balanced_indices(y_te, FASHION_TEST_PER_CLASS, rng)
    return {
        "x_train": np.ascontiguousarray(x_tr[idx_tr], dtype=np.uint8),
        "y_train": y_tr[idx_tr].astype(np.int64),
        "x_test": np.ascontiguousarray(x_te[idx_te], dtype=np.uint8),
        "y_test": y_te[idx_te].astype(np.int64),
        "class_names": np.array(FASHION_CLASS_NAMES, dtype=np.str_),
        "source_index_train": idx_tr,
        "source_index_test": idx_te,
    }


def write_deterministic_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an ``.npz`` readable by ``np.load`` whose bytes depend only on ``arrays``.

    Members are written in the given order, each as ``<name>.npy`` (npy format
    via ``np.lib.format.write_array``), deflated, with a fixed timestamp and
    fixed file attributes.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, regardless of the host
            info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
            zf.writestr(info, npy.getvalue(), compresslevel=9)
    path.write_bytes(buf.getvalue())


# --------------------------------------------------------------------------- #
# SMS Spam Collection
# --------------------------------------------------------------------------- #


def read_sms(path: Path) -> list[tuple[str, str]]:
    """Read the gzip TSV (``label<TAB>text`` per line, no header) as (label, text) pairs."""
    rows: list[tuple[str, str]] = []
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as fh:
        for lineno, line in enumerate(fh):
            if not line.endswith("\n"):
                raise ValueError(f"{path}: line {lineno} has no trailing newline")
            label, sep, text = line[:-1].partition("\t")
            if not sep or label not in SMS_LABELS:
                raise ValueError(f"{path}: line {lineno} is not 'ham|spam<TAB>text': {line[:60]!r}")
            rows.append((label, text))
    return rows


def stratified_quotas(counts: Mapping[str, int], total: int) -> dict[str, int]:
    """Split ``total`` over the labels in proportion to ``counts`` (largest remainder)."""
    n = sum(counts.values())
    exact = {lab: total * c / n for lab, c in counts.items()}
    quotas = {lab: int(v) for lab, v in exact.items()}
    short = total - sum(quotas.values())
    for lab in sorted(exact, key=lambda k: (-(exact[k] - quotas[k]), k))[:short]:
        quotas[lab] += 1
    return quotas


def sample_sms(rows: Sequence[tuple[str, str]], total: int, seed: int = SEED) -> list[int]:
    """Stratified sample of source row indices, returned in ascending order."""
    rng = np.random.default_rng(seed)
    labels = np.array([lab for lab, _ in rows])
    counts = {lab: int((labels == lab).sum()) for lab in SMS_LABELS}
    quotas = stratified_quotas(counts, total)
    chosen: list[np.ndarray] = []
    for lab in SMS_LABELS:
        pool = np.flatnonzero(labels == lab)
        chosen.append(rng.choice(pool, size=quotas[lab], replace=False))
    return [int(i) for i in np.sort(np.concatenate(chosen))]


def write_sms_csv(path: Path, rows: Sequence[tuple[str, str]], indices: Sequence[int]) -> None:
    """Write ``id,text,label`` rows as UTF-8 CSV with ``\\n`` line endings."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["id", "text", "label"])
        for i in indices:
            label, text = rows[i]
            writer.writerow([i, text, label])


# --------------------------------------------------------------------------- #
# README / licences
# --------------------------------------------------------------------------- #


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_readme(
    fashion: Mapping[str, np.ndarray],
    sms_counts: Mapping[str, int],
    sms_source_counts: Mapping[str, int],
    sizes: Mapping[str, int],
    digests: Mapping[str, str],
    sms_source_sha256: str,
    sms_dups: int,
) -> str:
    """Render ``sample_data/README.md``."""
    n_sms = sum(sms_counts.values())
    n_src = sum(sms_source_counts.values())
    class_rows = "\n".join(
        f"| {k} | {name} | {int((fashion['y_train'] == k).sum())} | {int((fashion['y_test'] == k).sum())} |"
        for k, name in enumerate(FASHION_CLASS_NAMES)
    )
    sms_rows = "\n".join(
        f"| {lab} | {sms_counts[lab]} ({100 * sms_counts[lab] / n_sms:.1f}%) "
        f"| {sms_source_counts[lab]} ({100 * sms_source_counts[lab] / n_src:.1f}%) |"
        for lab in SMS_LABELS
    )
    file_rows = "\n".join(
        f"| `{name}` | {sizes[name]:,} | `{digests[name]}` |"
        for name in (FASHION_NPZ, SMS_CSV, LICENSE_FASHION, LICENSE_SMS)
    )
    n_tr = len(fashion["y_train"])
    n_te = len(fashion["y_test"])
    return f"""\
# Sample data

Small data sets shipped with dynsel so the examples, tests and tutorials run
without downloads. Everything here is generated by

```sh
python scripts/make_sample_data.py
```

run from the repository root (needs only Python and numpy, plus the Debian
package `dataset-fashion-mnist` and `../shared/data/sms_spam.tsv.gz`). The
script is deterministic (numpy `default_rng({SEED})`, fixed zip timestamps), so
rerunning it reproduces these files byte for byte.

## Files

| file | bytes | sha256 |
|---|---|---|
{file_rows}

(This README is also written by the script.)

## `{FASHION_NPZ}`: Fashion-MNIST, class-balanced 2k cut

Load with `np.load("sample_data/{FASHION_NPZ}")` (no pickle needed).

| array | dtype | shape | meaning |
|---|---|---|---|
| `x_train` | uint8 | {list(fashion["x_train"].shape)} | 28x28 grayscale images, 0 = background |
| `y_train` | int64 | {list(fashion["y_train"].shape)} | class index 0..9 |
| `x_test` | uint8 | {list(fashion["x_test"].shape)} | images from the official t10k (test) split |
| `y_test` | int64 | {list(fashion["y_test"].shape)} | class index 0..9 |
| `class_names` | {fashion["class_names"].dtype.str} (unicode) | {list(fashion["class_names"].shape)} | name of each class index |
| `source_index_train` | int64 | {list(fashion["source_index_train"].shape)} | row of each `x_train` image in the 60,000-image train split |
| `source_index_test` | int64 | {list(fashion["source_index_test"].shape)} | row of each `x_test` image in the 10,000-image t10k split |

Rows are in ascending source-row order (not grouped by class), so shuffle
before mini-batching. Per-class counts ({n_tr} train, {n_te} test):

| index | class | train | test |
|---|---|---|---|
{class_rows}

**How it was cut:** for each class in index order, {FASHION_TRAIN_PER_CLASS} train rows
were drawn without replacement with `rng.choice` from one
`np.random.default_rng({SEED})`, then {FASHION_TEST_PER_CLASS} test rows per class
with the same generator; the chosen rows are sorted by source index. Pixels and
labels are unchanged.

**Source:** Fashion-MNIST by Zalando Research
(https://github.com/zalandoresearch/fashion-mnist), read from the idx files of
the Debian package `dataset-fashion-mnist` (0.0~git20200523.55506a9-1,
`/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz`).
Xiao, H., Rasul, K., Vollgraf, R. "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms." arXiv:1708.07747, 2017.

**Licence:** MIT. The notice, also in [`{LICENSE_FASHION}`]({LICENSE_FASHION}):

```text
{FASHION_MIT_NOTICE}```

## `{SMS_CSV}`: SMS Spam Collection, 1k stratified sample

UTF-8 CSV with a header line and `\\n` line endings, written with Python's
`csv` module (fields quoted only when needed; `"` inside a field is doubled).
{n_sms} rows, columns:

| column | type | meaning |
|---|---|---|
| `id` | int | 0-based line number of the message in the full collection (`sms_spam.tsv.gz`) |
| `text` | str | the message, unchanged (may have leading/trailing spaces, quotes, non-ASCII) |
| `label` | str | `ham` or `spam` |

| label | sample | full collection |
|---|---|---|
{sms_rows}

Load with `csv.DictReader(open(path, encoding="utf-8", newline=""))` or
`pandas.read_csv(path)`. About 3% of the messages have leading or trailing
spaces; keep them if you need the exact source text (readers that strip
whitespace will change them).

**How it was cut:** per-label quotas proportional to the full collection
({n_src} messages) by largest remainder, each drawn without replacement with
`rng.choice` from `np.random.default_rng({SEED})` (ham first, then spam);
rows are in ascending `id` order.

**Quirks kept from the source:** the collection contains exact duplicate
messages ({sms_dups} rows of this sample repeat the text of an earlier row);
deduplicate before splitting if leakage between train and test matters. A few
messages carry Windows-1252 punctuation mis-decoded as C1 control characters
(e.g. U+0092 where an apostrophe was meant).

**Source:** SMS Spam Collection v.1 (Tiago A. Almeida and José María Gómez
Hidalgo), UCI Machine Learning Repository dataset 228,
https://archive.ics.uci.edu/dataset/228, via the packed copy
`../shared/data/sms_spam.tsv.gz` (sha256
`{sms_source_sha256}`).

**Licence:** CC BY 4.0. Attribution, also in [`{LICENSE_SMS}`]({LICENSE_SMS}):

```text
{SMS_ATTRIBUTION}```
"""


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text with ``\\n`` line endings."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--fashion-dir",
        type=Path,
        default=DEFAULT_FASHION_DIR,
        help="folder with the Fashion-MNIST idx .gz files (default: %(default)s)",
    )
    p.add_argument(
        "--sms",
        type=Path,
        default=DEFAULT_SMS,
        help="SMS Spam Collection as gzip TSV (default: ../shared/data/sms_spam.tsv.gz next to the repo)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output folder (default: sample_data/ in the repo root)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate every file in the output folder."""
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    fashion = build_fashion_arrays(args.fashion_dir)
    write_deterministic_npz(out / FASHION_NPZ, fashion)

    sms_rows = read_sms(args.sms)
    sms_idx = sample_sms(sms_rows, SMS_SAMPLE_SIZE)
    write_sms_csv(out / SMS_CSV, sms_rows, sms_idx)

    write_text(out / LICENSE_FASHION, FASHION_MIT_NOTICE)
    write_text(out / LICENSE_SMS, SMS_ATTRIBUTION)

    sms_counts = {lab: sum(1 for i in sms_idx if sms_rows[i][0] == lab) for lab in SMS_LABELS}
    sms_source_counts = {lab: sum(1 for r in sms_rows if r[0] == lab) for lab in SMS_LABELS}
    sms_dups = len(sms_idx) - len({sms_rows[i][1] for i in sms_idx})
    names = (FASHION_NPZ, SMS_CSV, LICENSE_FASHION, LICENSE_SMS)
    sizes = {n: (out / n).stat().st_size for n in names}
    digests = {n: sha256_file(out / n) for n in names}
    write_text(
        out / README,
        render_readme(fashion, sms_counts, sms_source_counts, sizes, digests, sha256_file(args.sms), sms_dups),
    )

    for n in (*names, README):
        print(f"{sha256_file(out / n)}  {(out / n).stat().st_size:>9,}  {out / n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
