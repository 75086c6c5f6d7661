"""Messy-data regimes: seeded transforms of a TRAINING split (the test split is never touched).

Each regime turns clean training data into data with one well-known defect, so that the evidence harness
(benchmarks/evidence.py) can ask whether a selection method still helps when the data is not clean.
Inputs are either images (a uint8 numpy array [N, H, W]) or texts (a list of str), with integer labels
0..C-1 (C = max label + 1). Every regime draws from its own random stream,
``np.random.default_rng([seed, STREAM])`` with the constant in :data:`STREAMS`, so the same inputs and seed
give identical output and different seeds give different output. ``round`` below is Python's ``round``.

``clean``
    Identity. The rows, in order, are the input rows.
``long``
    Identity as well: the data is clean; the regime differs only in the number of training epochs, which
    the harness chooses (30 instead of 8).
``redundant``
    Near-duplicates, as web-scraped data has them. ``D = round(0.3 N)`` distinct items are the first D of a
    seeded permutation of the rows. The data set is expanded back to N rows by heavy-tailed duplication:
    every distinct item appears once, and the ``N - D`` extra copies are allocated by one multinomial draw
    whose probabilities are proportional to Pareto weights of shape 1.1 (``1 + Lomax(1.1)``, scale 1), so
    a few items are copied many times and most 0-2 extra times. The first occurrence of an item is kept
    byte for byte; every extra copy is perturbed so that duplicates are near, not exact:

    - images: shifted by (dy, dx) drawn uniformly from {-2..2}^2 without (0, 0), with zero fill (no
      wrap-around), then Gaussian pixel noise of standard deviation 8 is added; the result is rounded and
      clipped to [0, 255]. If the copy still equals the original byte for byte, 1 is added to one random
      pixel below 255 (or 1 subtracted from one pixel if all are 255).
    - texts: one of three edits, chosen uniformly: (a) append a signature, one of :data:`SIGNATURES`
      chosen uniformly; (b) prepend a quoted line, ``"> " + L + "\\n"`` for a uniformly chosen non-empty line
      L of the same text (lines split on ``"\\n"``; with no non-empty line, (a) instead); (c) delete one
      uniformly chosen line when the text has at least 3 lines (otherwise (a) instead). If the edited
      text equals the original, a signature is appended.

    Finally the N rows are shuffled by a seeded permutation, so copies are not adjacent. Labels are the
    source's labels.
``noisy``
    Label noise: exactly ``round(0.3 N)`` rows, a seeded choice without replacement, get a label drawn
    uniformly from the C - 1 OTHER classes (never the original). Samples and order are unchanged.
``imbalanced``
    Long-tailed classes: class c (of C) keeps ``min(n_c, max(1, round(n_c * 50 ** (-c / (C - 1)))))`` of
    its n_c samples (C = 1: all), a seeded choice without replacement; the kept rows stay in input order.
    Class 0 keeps everything, class C-1 keeps a 50th (at least one).

:func:`make_regime` returns a :class:`RegimeData` with the rows, ``source_index`` (the input row each row
came from), ``flipped`` (label replaced, only ``noisy``) and ``info`` (JSON-able statistics).

Command line (prints ``info`` as JSON on stdout)::

    python benchmarks/regimes.py vision --regime redundant --seed 0 --data fm.npz --out fm-redundant.npz
    python benchmarks/regimes.py text --regime noisy --seed 0 --train train.jsonl --out-train noisy.jsonl

``vision`` reads an .npz with x_train, y_train, x_test, y_test (and optionally class_names) and writes the
same keys with the training split transformed, plus ``source_index`` and ``flipped``; every other array is
copied unchanged, except arrays named ``*_train`` with one row per training sample, which are reindexed
with the training rows. ``text`` reads JSONL rows {"text", "label"} and writes the transformed training
rows with the same schema (string labels are mapped to their sorted order for the transform and back).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REGIMES: tuple[str, ...] = ("clean", "long", "redundant", "noisy", "imbalanced")
#: Regimes whose training rows are the input rows unchanged.
IDENTITY_REGIMES: tuple[str, ...] = ("clean", "long")
#: The second entry of each regime's ``default_rng([seed, STREAM])``.
STREAMS: dict[str, int] = {"redundant": 7_301, "noisy": 7_302, "imbalanced": 7_303}

DISTINCT_SHARE = 0.3  # redundant: share of distinct items
PARETO_SHAPE = 1.1  # redundant: tail of the copy-count weights
MAX_SHIFT = 2  # redundant, images: shifts in {-2..2}^2 without (0, 0)
PIXEL_NOISE = 8.0  # redundant, images: Gaussian noise std (uint8 units)
NOISE_RATE = 0.3  # noisy: share of labels replaced
IMBALANCE = 50.0  # imbalanced: kept share of class 0 / kept share of the last class
#: Made-up signatures that redundant text copies may gain.
SIGNATURES: tuple[str, ...] = (
    "\n--\nSent from my phone",
    "\n--\nJ. Doe | Widget Corp. | opinions are my own",
    "\n\n-- \nThis message was scanned for viruses.",
    "\n--\nreply-to: nobody@example.invalid",
    "\n\n~ posted via the mail-news gateway ~",
    "\n--\n\"The map is not the territory.\"",
)

Samples = np.ndarray | list[str]


@dataclass(frozen=True)
class RegimeData:
    """A transformed training split: rows, their labels, statistics and provenance."""

    x: Samples  # images uint8 [N, H, W] or texts
    y: np.ndarray  # int64 labels
    info: dict[str, Any]  # JSON-able statistics
    source_index: np.ndarray  # int64 [N]: the input row each row came from
    flipped: np.ndarray  # bool [N]: label replaced (noisy), else all False


def make_regime(name: str, x: Samples | Sequence[str], y: np.ndarray, seed: int) -> RegimeData:
    """Apply regime ``name`` (one of :data:`REGIMES`) to training samples ``x`` with labels ``y``."""
    if name not in REGIMES:
        raise ValueError(f"unknown regime {name!r}; choose one of {', '.join(REGIMES)}")
    x, y = _validated(x, y)
    n = len(y)
    if name in IDENTITY_REGIMES:
        index = np.arange(n, dtype=np.int64)
        info: dict[str, Any] = {"regime": name, "seed": int(seed), "n": n}
        return RegimeData(_take(x, index), y.copy(), info, index, np.zeros(n, dtype=bool))
    rng = np.random.default_rng([int(seed), STREAMS[name]])
    if name == "redundant":
        return _redundant(x, y, rng, seed)
    if name == "noisy":
        return _noisy(x, y, rng, seed)
    return _imbalanced(x, y, rng, seed)


# ------------------------------------------------------------------------------------------- transforms


def _redundant(x: Samples, y: np.ndarray, rng: np.random.Generator, seed: int) -> RegimeData:
    n = len(y)
    distinct = max(1, round(DISTINCT_SHARE * n))
    items = rng.permutation(n)[:distinct].astype(np.int64)
    weights = 1.0 + rng.pareto(PARETO_SHAPE, size=distinct)
    extra = rng.multinomial(n - distinct, weights / weights.sum())
    copies = 1 + extra
    source = np.repeat(items, copies)  # each item's run starts with its first (unperturbed) occurrence
    first = np.zeros(n, dtype=bool)
    first[np.concatenate([[0], np.cumsum(copies)[:-1]])] = True
    if isinstance(x, np.ndarray):
        out_x: Samples = x[source].copy()
        for row in np.flatnonzero(~first):
            out_x[row] = _perturb_image(x[source[row]], rng)
    else:
        out_x = [x[s] if is_first else _perturb_text(x[s], rng) for s, is_first in zip(source.tolist(), first.tolist())]
    order = rng.permutation(n)
    source = source[order]
    out_x = out_x[order] if isinstance(out_x, np.ndarray) else [out_x[i] for i in order.tolist()]
    edges = [1, 2, 3, 5, 10, 100]
    labels = ["1", "2", "3-4", "5-9", "10-99", "100+"]
    bucket = np.searchsorted(edges, copies, side="right") - 1
    info = {
        "regime": "redundant",
        "seed": int(seed),
        "n": n,
        "n_distinct": distinct,
        "duplicate_share": (n - distinct) / n,
        "max_copies": int(copies.max()),
        "median_copies": float(np.median(copies)),
        "mean_copies": float(copies.mean()),
        "copies_histogram": {label: int((bucket == i).sum()) for i, label in enumerate(labels)},
        "top_copies": sorted(copies.tolist(), reverse=True)[:10],
    }
    return RegimeData(out_x, y[source], info, source, np.zeros(n, dtype=bool))


def _perturb_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shifts = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1) if (dy, dx) != (0, 0)]
    dy, dx = shifts[int(rng.integers(len(shifts)))]
    h, w = image.shape[:2]
    shifted = np.zeros_like(image)
    shifted[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    noisy = shifted.astype(np.float64) + rng.normal(0.0, PIXEL_NOISE, size=image.shape)
    copy = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if np.array_equal(copy, image):
        flat = copy.reshape(-1)
        room = np.flatnonzero(flat < 255)
        if len(room):
            flat[room[int(rng.integers(len(room)))]] += 1
        else:
            flat[int(rng.integers(len(flat)))] -= 1
    return copy


def _perturb_text(text: str, rng: np.random.Generator) -> str:
    def signature() -> str:
        return text + SIGNATURES[int(rng.integers(len(SIGNATURES)))]

    lines = text.split("\n")
    edit = int(rng.integers(3))
    if edit == 1 and any(line.strip() for line in lines):
        nonempty = [line for line in lines if line.strip()]
        edited = "> " + nonempty[int(rng.integers(len(nonempty)))] + "\n" + text
    elif edit == 2 and len(lines) >= 3:
        drop = int(rng.integers(len(lines)))
        edited = "\n".join(lines[:drop] + lines[drop + 1 :])
    else:
        edited = signature()
    return edited if edited != text and edited.strip() else signature()  # never the original, never blank


def _noisy(x: Samples, y: np.ndarray, rng: np.random.Generator, seed: int) -> RegimeData:
    n = len(y)
    classes = int(y.max()) + 1
    if classes < 2:
        raise ValueError("noisy: needs at least 2 classes")
    count = round(NOISE_RATE * n)
    rows = rng.choice(n, size=count, replace=False)
    new_y = y.copy()
    new_y[rows] = (y[rows] + rng.integers(1, classes, size=count)) % classes  # uniform over the other classes
    flipped = np.zeros(n, dtype=bool)
    flipped[rows] = True
    index = np.arange(n, dtype=np.int64)
    info = {"regime": "noisy", "seed": int(seed), "n": n, "noise_rate": count / n, "n_flipped": int(count)}
    return RegimeData(_take(x, index), new_y, info, index, flipped)


def _imbalanced(x: Samples, y: np.ndarray, rng: np.random.Generator, seed: int) -> RegimeData:
    classes = int(y.max()) + 1
    before = np.bincount(y, minlength=classes)
    keep = np.zeros(len(y), dtype=bool)
    for c in range(classes):
        rows = np.flatnonzero(y == c)
        target = len(rows) if classes == 1 else min(len(rows), max(1, round(len(rows) * IMBALANCE ** (-c / (classes - 1)))))
        keep[rng.choice(rows, size=target, replace=False)] = True
    index = np.flatnonzero(keep).astype(np.int64)
    after = np.bincount(y[index], minlength=classes)
    nonzero = after[after > 0]
    info = {
        "regime": "imbalanced",
        "seed": int(seed),
        "n_before": int(len(y)),
        "n": int(len(index)),
        "counts_before": before.tolist(),
        "counts_after": after.tolist(),
        "imbalance_ratio": float(nonzero.max() / nonzero.min()),
    }
    return RegimeData(_take(x, index), y[index].copy(), info, index, np.zeros(len(index), dtype=bool))


# -------------------------------------------------------------------------------------------- helpers


def _validated(x: Samples | Sequence[str], y: np.ndarray) -> tuple[Samples, np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) == 0:
        raise ValueError(f"labels must be a non-empty 1-D integer array (got shape {y.shape}, dtype {y.dtype})")
    if y.min() < 0:
        raise ValueError("labels must be non-negative class ids")
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim != 3:
            raise ValueError(f"images must be uint8 [N, H, W] (got {x.dtype} {x.shape})")
    else:
        x = list(x)
        if not all(isinstance(t, str) for t in x):
            raise ValueError("texts must be a list of str")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} samples but {len(y)} labels")
    return x, y.astype(np.int64)


def _take(x: Samples, index: np.ndarray) -> Samples:
    return x[index].copy() if isinstance(x, np.ndarray) else [x[i] for i in index.tolist()]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_vision_regime(data: Path, out: Path, regime: str, seed: int, limit: int | None = None) -> dict[str, Any]:
    """Write ``data``'s regime ``regime`` to ``out`` (atomically); ``limit`` keeps the first N training rows first."""
    with np.load(data, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.keys()}
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise ValueError(f"{data}: missing arrays {missing} (keys: {sorted(arrays)})")
    n_train = len(arrays["y_train"])
    keep = n_train if not limit else min(limit, n_train)
    train_like = [k for k in arrays if k.endswith("_train") and k not in ("x_train", "y_train") and len(arrays[k].shape) and arrays[k].shape[0] == n_train]
    result = make_regime(regime, arrays["x_train"][:keep], arrays["y_train"][:keep], seed)
    out_arrays = dict(arrays)
    out_arrays["x_train"], out_arrays["y_train"] = result.x, result.y
    for key in train_like:
        out_arrays[key] = arrays[key][:keep][result.source_index]
    out_arrays["source_index"], out_arrays["flipped"] = result.source_index, result.flipped
    _atomic_write(out, lambda handle: np.savez(handle, **out_arrays))
    return result.info


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_text_regime(train: Path, out: Path, regime: str, seed: int, limit: int | None = None) -> dict[str, Any]:
    """Write the regime of JSONL rows {"text", "label"} to ``out`` (atomically); ``limit``: first N rows first."""
    rows = read_jsonl(train)[: limit or None]
    raw = [r["label"] for r in rows]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        classes: list[Any] | None = None
        y = np.asarray(raw, dtype=np.int64)
    else:
        classes = sorted({str(v) for v in raw})
        y = np.asarray([classes.index(str(v)) for v in raw], dtype=np.int64)
    result = make_regime(regime, [str(r["text"]) for r in rows], y, seed)
    labels = result.y.tolist() if classes is None else [classes[i] for i in result.y.tolist()]
    body = "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in zip(result.x, labels))
    _atomic_write(out, lambda handle: handle.write(body.encode("utf-8")))
    return result.info


def _atomic_write(out: Path, write: Any) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    vision = sub.add_parser("vision", help="transform an .npz's training split")
    vision.add_argument("--data", type=Path, required=True, help=".npz with x_train, y_train, x_test, y_test")
    vision.add_argument("--out", type=Path, required=True)
    text = sub.add_parser("text", help="transform training JSONL rows {text, label}")
    text.add_argument("--train", type=Path, required=True)
    text.add_argument("--out-train", type=Path, required=True)
    for p in (vision, text):
        p.add_argument("--regime", required=True, choices=REGIMES)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--limit", type=int, default=None, help="keep only the first N training rows, before the transform")
    args = parser.parse_args(argv)
    if args.kind == "vision":
        info = write_vision_regime(args.data, args.out, args.regime, args.seed, args.limit)
    else:
        info = write_text_regime(args.train, args.out_train, args.regime, args.seed, args.limit)
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
