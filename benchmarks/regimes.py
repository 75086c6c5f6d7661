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
``redundant-exact``
    As ``redundant`` (same distinct share and Pareto copy counts), but every extra copy is the item byte
    for byte: exact duplicates, as a crawl that stores one page twice has them.
``redundant-uniform``
    As ``redundant`` (edited copies), but the copy counts are uniform instead of heavy-tailed: with
    ``D = round(0.3 N)`` items, every item appears ``N // D`` times and ``N mod D`` of them (a seeded
    choice) once more, so counts differ by at most one.
``noisy-pair``
    Class-conditional label noise: exactly ``round(0.3 N)`` rows (a seeded choice) get the label of ONE
    partner class, ``partner(c) = (c + 1) mod C`` in class-id order. For 20 Newsgroups the ids are the
    sorted group names, so a partner is mostly a related group (comp.graphics → comp.os.ms-windows.misc,
    rec.autos → rec.motorcycles, sci.crypt → sci.electronics, talk.politics.guns → talk.politics.mideast),
    the noise a confused annotator makes; a few pairs cross topics (alt.atheism → comp.graphics,
    talk.religion.misc → alt.atheism).
``redundant-noisy``
    ``redundant``, then ``noisy`` applied to its rows (one stream drawn in that order); ``flipped`` marks
    the rows whose label the noise replaced, copies of one item can disagree.
``imbalanced-redundant``
    ``imbalanced``, then ``redundant`` applied to the kept rows (one stream, in that order);
    ``source_index`` points into the input rows.
``paraphrase``
    Clean labels, many rewrites. ``D = round(0.3 N)`` items are the first D of a seeded permutation; the
    rows are views of the items, not copies, about N in all: every item gets as close to the same number
    of views as its room allows (water-filling up to N, capped by the item's number of distinct views).
    No two views of one item are identical, and no view is the item unchanged except where noted.

    - texts: a view is a contiguous window of ``max(1, round(m / 2))`` of the item's m non-empty lines
      (joined with ``"\\n"``), at a start drawn without replacement among those giving distinct text;
      an item with fewer than 4 non-empty lines gives one view: itself.
    - images: a view is the item shifted by (dy, dx) in {-3..3}^2 with zero fill and, independently,
      mirrored left-right; the (dy, dx, mirror) combinations are drawn without replacement, the identity
      excluded, and a view equal to an earlier one of the item is skipped.

    The rows are shuffled by a seeded permutation; labels are the items' labels.

The 20 Newsgroups regimes ``fine``, ``fine-noisy`` and ``fine-redundant`` (80 sub-topic classes) need the
encoder's features before the transform, so they live in the harness (benchmarks/fine_labels.py), which
relabels the data and then applies ``clean``, ``noisy`` or ``redundant`` from here.

:func:`make_regime` returns a :class:`RegimeData` with the rows, ``source_index`` (the input row each row
came from), ``flipped`` (label replaced: the noisy regimes) and ``info`` (JSON-able statistics). The
file writers also store the ground truth per training row next to their output, ``OUT.truth.npz`` with
``source_index`` and ``flipped``, so that a harness can score what a method detected.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REGIMES: tuple[str, ...] = (
    "clean",
    "long",
    "redundant",
    "noisy",
    "imbalanced",
    "redundant-exact",
    "redundant-uniform",
    "noisy-pair",
    "redundant-noisy",
    "imbalanced-redundant",
    "paraphrase",
)
#: Regimes whose training rows are the input rows unchanged.
IDENTITY_REGIMES: tuple[str, ...] = ("clean", "long")
#: Regimes that replace labels (their ``flipped`` marks rows).
NOISY_REGIMES: tuple[str, ...] = ("noisy", "noisy-pair", "redundant-noisy")
#: Regimes whose rows share sources (several rows per input row).
COPY_REGIMES: tuple[str, ...] = (
    "redundant",
    "redundant-exact",
    "redundant-uniform",
    "redundant-noisy",
    "imbalanced-redundant",
    "paraphrase",
)
#: The second entry of each regime's ``default_rng([seed, STREAM])``.
STREAMS: dict[str, int] = {
    "redundant": 7_301,
    "noisy": 7_302,
    "imbalanced": 7_303,
    "redundant-exact": 7_304,
    "redundant-uniform": 7_305,
    "noisy-pair": 7_306,
    "redundant-noisy": 7_307,
    "imbalanced-redundant": 7_308,
    "paraphrase": 7_309,
}

DISTINCT_SHARE = 0.3  # redundant: share of distinct items
PARETO_SHAPE = 1.1  # redundant: tail of the copy-count weights
MAX_SHIFT = 2  # redundant, images: shifts in {-2..2}^2 without (0, 0)
PIXEL_NOISE = 8.0  # redundant, images: Gaussian noise std (uint8 units)
NOISE_RATE = 0.3  # noisy: share of labels replaced
IMBALANCE = 50.0  # imbalanced: kept share of class 0 / kept share of the last class
VIEW_SHIFT = 3  # paraphrase, images: shifts in {-3..3}^2
MIN_VIEW_LINES = 4  # paraphrase, texts: fewer non-empty lines give one view (the post itself)
#: Made-up signatures that redundant text copies may gain.
SIGNATURES: tuple[str, ...] = (
    "\n--\nSent from my phone",
    "\n--\nJ. Doe | Widget Corp. | opinions are my own",
    "\n\n-- \nThis message was scanned for viruses.",
    "\n--\nreply-to: nobody@example.invalid",
    "\n\n~ posted via the mail-news gateway ~",
    '\n--\n"The map is not the territory."',
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
    if name == "redundant-exact":
        return _redundant(x, y, rng, seed, exact=True, name=name)
    if name == "redundant-uniform":
        return _redundant(x, y, rng, seed, uniform=True, name=name)
    if name == "noisy":
        return _noisy(x, y, rng, seed)
    if name == "noisy-pair":
        return _noisy(x, y, rng, seed, pair=True, name=name)
    if name == "redundant-noisy":
        first = _redundant(x, y, rng, seed)
        return _then(name, seed, first, _noisy(first.x, first.y, rng, seed))
    if name == "imbalanced-redundant":
        first = _imbalanced(x, y, rng, seed)
        return _then(name, seed, first, _redundant(first.x, first.y, rng, seed))
    if name == "paraphrase":
        return _paraphrase(x, y, rng, seed)
    return _imbalanced(x, y, rng, seed)


def _then(name: str, seed: int, first: RegimeData, second: RegimeData) -> RegimeData:
    """``second`` applied to ``first``'s rows, with provenance back to the input rows."""
    info = {"regime": name, "seed": int(seed), "n": len(second.y), "steps": [first.info, second.info]}
    return RegimeData(
        second.x,
        second.y,
        info,
        first.source_index[second.source_index],
        second.flipped | first.flipped[second.source_index],
    )


# ------------------------------------------------------------------------------------------- transforms


def _redundant(
    x: Samples,
    y: np.ndarray,
    rng: np.random.Generator,
    seed: int,
    exact: bool = False,
    uniform: bool = False,
    name: str = "redundant",
) -> RegimeData:
    n = len(y)
    distinct = max(1, round(DISTINCT_SHARE * n))
    items = rng.permutation(n)[:distinct].astype(np.int64)
    if uniform:
        copies = np.full(distinct, n // distinct, dtype=np.int64)
        copies[rng.choice(distinct, size=n % distinct, replace=False)] += 1
    else:
        weights = 1.0 + rng.pareto(PARETO_SHAPE, size=distinct)
        copies = 1 + rng.multinomial(n - distinct, weights / weights.sum())
    source = np.repeat(items, copies)  # each item's run starts with its first (unperturbed) occurrence
    first = np.zeros(n, dtype=bool)
    first[np.concatenate([[0], np.cumsum(copies)[:-1]])] = True
    if exact:
        out_x: Samples = _take(x, source)
    elif isinstance(x, np.ndarray):
        out_x = x[source].copy()
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
        "regime": name,
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
    shifts = [
        (dy, dx)
        for dy in range(-MAX_SHIFT, MAX_SHIFT + 1)
        for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)
        if (dy, dx) != (0, 0)
    ]
    dy, dx = shifts[int(rng.integers(len(shifts)))]
    h, w = image.shape[:2]
    shifted = np.zeros_like(image)
    shifted[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
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


def _noisy(
    x: Samples, y: np.ndarray, rng: np.random.Generator, seed: int, pair: bool = False, name: str = "noisy"
) -> RegimeData:
    n = len(y)
    classes = int(y.max()) + 1
    if classes < 2:
        raise ValueError(f"{name}: needs at least 2 classes")
    count = round(NOISE_RATE * n)
    rows = rng.choice(n, size=count, replace=False)
    new_y = y.copy()
    shift = 1 if pair else rng.integers(1, classes, size=count)  # the partner, or uniform over the other classes
    new_y[rows] = (y[rows] + shift) % classes
    flipped = np.zeros(n, dtype=bool)
    flipped[rows] = True
    index = np.arange(n, dtype=np.int64)
    info = {"regime": name, "seed": int(seed), "n": n, "noise_rate": count / n, "n_flipped": int(count)}
    return RegimeData(_take(x, index), new_y, info, index, flipped)


def _imbalanced(x: Samples, y: np.ndarray, rng: np.random.Generator, seed: int) -> RegimeData:
    classes = int(y.max()) + 1
    before = np.bincount(y, minlength=classes)
    keep = np.zeros(len(y), dtype=bool)
    for c in range(classes):
        rows = np.flatnonzero(y == c)
        target = (
            len(rows) if classes == 1 else min(len(rows), max(1, round(len(rows) * IMBALANCE ** (-c / (classes - 1)))))
        )
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


def _paraphrase(x: Samples, y: np.ndarray, rng: np.random.Generator, seed: int) -> RegimeData:
    n = len(y)
    distinct = max(1, round(DISTINCT_SHARE * n))
    items = rng.permutation(n)[:distinct].astype(np.int64)
    if isinstance(x, np.ndarray):
        combos = [
            (dy, dx, m)
            for dy in range(-VIEW_SHIFT, VIEW_SHIFT + 1)
            for dx in range(-VIEW_SHIFT, VIEW_SHIFT + 1)
            for m in (False, True)
            if (dy, dx, m) != (0, 0, False)
        ]
        room = np.full(distinct, len(combos), dtype=np.int64)
    else:
        candidates = [_text_views(x[i]) for i in items.tolist()]
        room = np.array([len(c) for c in candidates], dtype=np.int64)
    counts = _even_fill(room, n)
    views: list[Any] = []
    source_parts = []
    for k, item in enumerate(items.tolist()):
        if isinstance(x, np.ndarray):
            seen: set[bytes] = set()
            for j in rng.permutation(len(combos)).tolist():
                if len(seen) == counts[k]:
                    break
                view = _shifted(x[item], *combos[j])
                if view.tobytes() not in seen:
                    seen.add(view.tobytes())
                    views.append(view)
            got = len(seen)
        else:
            chosen = rng.permutation(len(candidates[k]))[: counts[k]]
            views += [candidates[k][j] for j in chosen.tolist()]
            got = len(chosen)
        source_parts.append(np.full(got, item, dtype=np.int64))
    source = np.concatenate(source_parts)
    order = rng.permutation(len(source))
    source = source[order]
    out_x: Samples = np.stack(views)[order] if isinstance(x, np.ndarray) else [views[i] for i in order.tolist()]
    per_item = np.bincount(np.searchsorted(np.sort(items), source), minlength=distinct)
    info = {
        "regime": "paraphrase",
        "seed": int(seed),
        "n_before": n,
        "n": int(len(source)),
        "n_items": distinct,
        "views_min": int(per_item.min()),
        "views_max": int(per_item.max()),
        "views_mean": float(per_item.mean()),
        "single_view_items": int((per_item == 1).sum()),
    }
    return RegimeData(out_x, y[source], info, source, np.zeros(len(source), dtype=bool))


def _text_views(text: str) -> list[str]:
    """The distinct windows of about half the non-empty lines of ``text`` (in start order); short texts: itself."""
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) < MIN_VIEW_LINES:
        return [text]
    width = max(1, round(len(lines) / 2))
    return list(dict.fromkeys("\n".join(lines[s : s + width]) for s in range(len(lines) - width + 1)))


def _even_fill(room: np.ndarray, total: int) -> np.ndarray:
    """As even a split of ``total`` as the caps ``room`` allow: ``min(room, L)`` each for the highest level L
    that fits, and one more for the first rows (in order) with room left, up to ``total`` (water-filling)."""
    room = np.asarray(room, dtype=np.int64)
    total = min(int(total), int(room.sum()))
    levels = np.arange(int(room.max()) + 1)
    filled = np.minimum(room[None, :], levels[:, None]).sum(1) if len(room) else np.zeros(1, dtype=np.int64)
    level = int(np.searchsorted(filled, total, side="right")) - 1
    counts = np.minimum(room, level)
    rest = total - int(counts.sum())
    more = np.flatnonzero(room > level)[:rest]
    counts[more] += 1
    return counts


def _shifted(image: np.ndarray, dy: int, dx: int, mirror: bool) -> np.ndarray:
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out[:, ::-1].copy() if mirror else out


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
    train_like = [
        k
        for k in arrays
        if k.endswith("_train")
        and k not in ("x_train", "y_train")
        and len(arrays[k].shape)
        and arrays[k].shape[0] == n_train
    ]
    result = make_regime(regime, arrays["x_train"][:keep], arrays["y_train"][:keep], seed)
    out_arrays = dict(arrays)
    out_arrays["x_train"], out_arrays["y_train"] = result.x, result.y
    for key in train_like:
        out_arrays[key] = arrays[key][:keep][result.source_index]
    out_arrays["source_index"], out_arrays["flipped"] = result.source_index, result.flipped
    _atomic_write(out, lambda handle: np.savez(handle, **out_arrays))
    write_truth(out, result.source_index, result.flipped)
    return result.info


def truth_path(out: Path) -> Path:
    """Where the ground truth of the regime file ``out`` lives: ``out``.truth.npz."""
    return Path(out).with_name(Path(out).name + ".truth.npz")


def write_truth(out: Path, source_index: np.ndarray, flipped: np.ndarray) -> None:
    """Store per training row ``source_index`` (int64) and ``flipped`` (bool) next to ``out``."""
    arrays = {"source_index": np.asarray(source_index, dtype=np.int64), "flipped": np.asarray(flipped, dtype=bool)}
    _atomic_write(truth_path(out), lambda handle: np.savez(handle, **arrays))


def read_truth(out: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(source_index, flipped) of the regime file ``out``; without a sidecar the rows are clean input rows."""
    path = truth_path(out)
    if not path.exists():
        return np.arange(n, dtype=np.int64), np.zeros(n, dtype=bool)
    with np.load(path, allow_pickle=False) as archive:
        source, flipped = archive["source_index"], archive["flipped"]
    if len(source) != n or len(flipped) != n:
        raise ValueError(f"{path}: {len(source)} truth rows for {n} training rows")
    return source.astype(np.int64), flipped.astype(bool)


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
    write_truth(out, result.source_index, result.flipped)
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
        p.add_argument(
            "--limit", type=int, default=None, help="keep only the first N training rows, before the transform"
        )
    args = parser.parse_args(argv)
    if args.kind == "vision":
        info = write_vision_regime(args.data, args.out, args.regime, args.seed, args.limit)
    else:
        info = write_text_regime(args.train, args.out_train, args.regime, args.seed, args.limit)
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
