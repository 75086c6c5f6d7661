"""The messy-data regimes (benchmarks/regimes.py): seeded, documented transforms of a training split only."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import REPO, subprocess_env

sys.path.insert(0, str(REPO / "benchmarks"))
from regimes import NOISY_REGIMES, REGIMES, SIGNATURES, make_regime, read_truth, truth_path  # noqa: E402

CLASSES = 10


def synthetic_images(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blobs of per-class brightness on a zero border (shifts then lose little), 28x28, balanced labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % CLASSES
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    x[:, 4:24, 4:24] = rng.integers(0, 256, size=(n, 20, 20), dtype=np.uint8)
    return x, y


def synthetic_texts(n: int = 120) -> tuple[list[str], np.ndarray]:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    texts = []
    for i in range(n):
        lines = [" ".join(words[(i + j + k) % len(words)] for k in range(10)) + f" {i}-{j}" for j in range(3 + i % 4)]
        texts.append("\n".join(lines))
    return texts, np.arange(n, dtype=np.int64) % 4


def as_bytes(d: object) -> bytes:
    x = d.x  # type: ignore[attr-defined]
    body = x.tobytes() if isinstance(x, np.ndarray) else json.dumps(x).encode()
    return body + d.y.tobytes() + d.source_index.tobytes() + d.flipped.tobytes()  # type: ignore[attr-defined]


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("kind", ["images", "texts"])
def test_each_regime_is_seeded_and_well_formed(regime: str, kind: str) -> None:
    x, y = synthetic_images() if kind == "images" else synthetic_texts()
    a, b, c = (make_regime(regime, x, y, seed) for seed in (0, 0, 1))
    assert as_bytes(a) == as_bytes(b), "same inputs and seed: identical output"
    if regime in ("clean", "long"):
        assert as_bytes(a) == as_bytes(c)  # identity: nothing to draw
        assert (np.array_equal(a.x, x) if kind == "images" else a.x == x) and np.array_equal(a.y, y)
    else:
        assert as_bytes(a) != as_bytes(c), "another seed: another draw"
    n = len(a.y)
    assert a.y.dtype == np.int64 and a.source_index.dtype == np.int64 and a.flipped.dtype == np.bool_
    assert len(a.x) == n == len(a.source_index) == len(a.flipped)
    assert a.flipped.any() == (regime in NOISY_REGIMES)
    if kind == "images":
        assert a.x.dtype == np.uint8 and a.x.shape[1:] == x.shape[1:]
    json.dumps(a.info)  # JSON-able
    # labels come from the source row unless flipped
    assert np.array_equal(a.y[~a.flipped], y[a.source_index][~a.flipped])


def test_inputs_are_not_modified() -> None:
    x, y = synthetic_images()
    x0, y0 = x.copy(), y.copy()
    for regime in REGIMES:
        make_regime(regime, x, y, 3)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)


def test_noisy_flips_exactly_thirty_percent_to_another_class() -> None:
    x, y = synthetic_images(n=1001)
    d = make_regime("noisy", x, y, 0)
    assert d.flipped.sum() == round(0.3 * 1001) == d.info["n_flipped"]
    assert np.all(d.y[d.flipped] != y[d.flipped])
    assert np.array_equal(d.y[~d.flipped], y[~d.flipped])
    assert np.array_equal(d.x, x) and np.array_equal(d.source_index, np.arange(1001))
    assert set(np.unique(d.y[d.flipped])) <= set(range(CLASSES))
    # uniform over the other classes: every (old → new) pair occurs among ~2000 flips
    x2, y2 = synthetic_images(n=6700)
    d2 = make_regime("noisy", x2, y2, 1)
    pairs = Counter(zip(y2[d2.flipped].tolist(), d2.y[d2.flipped].tolist()))
    assert len(pairs) == CLASSES * (CLASSES - 1)


def test_redundant_images_are_heavy_tailed_near_duplicates() -> None:
    n = 2000
    x, y = synthetic_images(n=n)
    d = make_regime("redundant", x, y, 0)
    assert len(d.x) == n
    copies = np.bincount(d.source_index, minlength=n)
    sources = np.flatnonzero(copies)
    assert len(sources) == round(0.3 * n) == d.info["n_distinct"]
    assert copies[sources].min() >= 1 and copies.sum() == n
    assert copies.max() >= 5 * np.median(copies[sources]), "a few items are copied many times"
    assert d.info["max_copies"] == copies.max() and d.info["median_copies"] == np.median(copies[sources])
    assert np.array_equal(d.y, y[d.source_index]), "copies keep the source's label"
    exact = 0
    for s in sources:
        rows = np.flatnonzero(d.source_index == s)
        blobs = {d.x[r].tobytes() for r in rows}
        assert len(blobs) == len(rows), "no two copies of one source are byte-equal"
        exact += int(x[s].tobytes() in blobs)
        for r in rows:  # near: a shift of at most 2 pixels plus noise, not a different image
            if not np.array_equal(d.x[r], x[s]):
                best = min(
                    np.abs(d.x[r].astype(int) - np.roll(x[s], (dy, dx), axis=(0, 1)).astype(int)).mean()
                    for dy in range(-2, 3)
                    for dx in range(-2, 3)
                )
                assert best < 12, best
    assert exact == len(sources), "each source's first occurrence is kept as is"
    # shuffled: copies of the most duplicated item are not one adjacent block
    top = int(np.argmax(copies))
    rows = np.flatnonzero(d.source_index == top)
    assert rows[-1] - rows[0] + 1 > len(rows)


def test_redundant_texts_are_edited_copies() -> None:
    x, y = synthetic_texts(n=300)
    d = make_regime("redundant", x, y, 2)
    copies = np.bincount(d.source_index, minlength=len(x))
    assert (copies > 0).sum() == round(0.3 * len(x)) and len(d.x) == len(x)
    originals = 0
    edits = Counter()
    for text, s in zip(d.x, d.source_index.tolist()):
        if text == x[s]:
            originals += 1
            continue
        shared = sum((Counter(text) & Counter(x[s])).values())
        assert shared > 0.6 * max(len(text), len(x[s])), (text, x[s])  # shares most characters
        if any(text == x[s] + sig for sig in SIGNATURES):
            edits["signature"] += 1
        elif text.startswith("> ") and text.split("\n", 1)[1] == x[s]:
            edits["quote"] += 1
        else:
            assert len(text.split("\n")) == len(x[s].split("\n")) - 1
            edits["delete"] += 1
    assert originals == (copies > 0).sum(), "exactly one unedited occurrence per source"
    assert set(edits) == {"signature", "quote", "delete"}


def test_imbalanced_follows_the_long_tail_formula() -> None:
    x, y = synthetic_images(n=600)
    d = make_regime("imbalanced", x, y, 0)
    counts = np.bincount(d.y, minlength=CLASSES)
    n_c = np.bincount(y, minlength=CLASSES)
    expected = [max(1, round(n_c[c] * 50 ** (-c / (CLASSES - 1)))) for c in range(CLASSES)]
    assert counts.tolist() == expected == d.info["counts_after"]
    assert counts[0] == n_c[0] == 60 and counts[-1] == round(60 / 50) == 1
    assert np.all(np.diff(d.source_index) > 0), "order kept"
    assert np.array_equal(d.x, x[d.source_index]) and np.array_equal(d.y, y[d.source_index])
    other = make_regime("imbalanced", x, y, 1)
    assert np.bincount(other.y, minlength=CLASSES).tolist() == expected
    assert not np.array_equal(other.source_index, d.source_index)


def test_unknown_regime_and_bad_inputs_are_refused() -> None:
    x, y = synthetic_images(n=20)
    with pytest.raises(ValueError, match="unknown regime"):
        make_regime("dirty", x, y, 0)
    with pytest.raises(ValueError, match="uint8"):
        make_regime("noisy", x.astype(np.float32), y, 0)
    with pytest.raises(ValueError, match="labels"):
        make_regime("noisy", x, y[:-1], 0)


def test_vision_cli_transforms_train_only(tmp_path) -> None:
    x, y = synthetic_images(n=200)
    xt, yt = synthetic_images(n=50, seed=9)
    data = tmp_path / "tiny.npz"
    np.savez(
        data,
        x_train=x,
        y_train=y,
        x_test=xt,
        y_test=yt,
        class_names=np.array([f"c{i}" for i in range(CLASSES)]),
        source_index_train=np.arange(200) + 1000,
    )
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "regimes.py"),
            "vision",
            "--regime",
            "redundant",
            "--seed",
            "4",
            "--data",
            str(data),
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["n"] == 200 and info["n_distinct"] == 60
    with np.load(out, allow_pickle=False) as archive:
        got = {k: archive[k] for k in archive.keys()}
    assert set(got) == {
        "x_train",
        "y_train",
        "x_test",
        "y_test",
        "class_names",
        "source_index_train",
        "source_index",
        "flipped",
    }
    assert got["x_test"].tobytes() == xt.tobytes() and got["y_test"].tobytes() == yt.tobytes()
    assert got["class_names"].tolist() == [f"c{i}" for i in range(CLASSES)]
    expected = make_regime("redundant", x, y, 4)
    assert np.array_equal(got["x_train"], expected.x) and np.array_equal(got["y_train"], expected.y)
    assert np.array_equal(got["source_index"], expected.source_index) and not got["flipped"].any()
    assert np.array_equal(got["source_index_train"], 1000 + expected.source_index), (
        "train-aligned arrays follow the rows"
    )
    source, flipped = read_truth(out, 200)
    assert np.array_equal(source, expected.source_index) and not flipped.any()


def test_text_cli_keeps_the_schema(tmp_path) -> None:
    texts, y = synthetic_texts(n=40)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": int(v)}) + "\n" for t, v in zip(texts, y)))
    out = tmp_path / "noisy.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "regimes.py"),
            "text",
            "--regime",
            "noisy",
            "--seed",
            "0",
            "--train",
            str(train),
            "--out-train",
            str(out),
        ],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n_flipped"] == 12
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [set(r) for r in rows] == [{"text", "label"}] * 40
    assert [r["text"] for r in rows] == texts
    labels = np.array([r["label"] for r in rows])
    assert (labels != y).sum() == 12 and labels.dtype.kind == "i"
    source, flipped = read_truth(out, 40)
    assert truth_path(out).exists() and np.array_equal(flipped, labels != y) and np.array_equal(source, np.arange(40))


def long_texts(n: int, short_every: int = 0) -> tuple[list[str], np.ndarray]:
    """Texts of 5-11 distinct lines (every ``short_every``-th of 2 lines), with blank lines between some."""
    texts = []
    for i in range(n):
        count = 2 if short_every and i % short_every == 0 else 5 + i % 7
        lines = [f"post {i} line {j} " + "word " * (j % 3) for j in range(count)]
        texts.append("\n\n".join(lines[:2] + [""]) + "\n".join(lines[2:]) if i % 2 else "\n".join(lines))
    return texts, np.arange(n, dtype=np.int64) % 4


def nonempty(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def test_redundant_exact_copies_are_byte_identical_and_heavy_tailed() -> None:
    for x, y in (synthetic_images(n=2000), synthetic_texts(n=600)):
        d = make_regime("redundant-exact", x, y, 0)
        n = len(y)
        copies = np.bincount(d.source_index, minlength=n)
        assert (copies > 0).sum() == round(0.3 * n) == d.info["n_distinct"] and copies.sum() == n
        assert copies.max() >= 5 * np.median(copies[copies > 0]), "Pareto counts: a few items copied many times"
        if isinstance(x, np.ndarray):
            assert np.array_equal(d.x, x[d.source_index]), "every copy is the item byte for byte"
        else:
            assert d.x == [x[s] for s in d.source_index.tolist()]
        assert np.array_equal(d.y, y[d.source_index]) and not d.flipped.any()


def test_redundant_uniform_counts_differ_by_at_most_one_and_copies_are_edited() -> None:
    for x, y in (synthetic_images(n=1000), synthetic_texts(n=301)):
        d = make_regime("redundant-uniform", x, y, 1)
        n = len(y)
        copies = np.bincount(d.source_index, minlength=n)
        counts = copies[copies > 0]
        assert len(counts) == round(0.3 * n) and counts.sum() == n
        assert counts.max() - counts.min() <= 1 and set(counts.tolist()) <= {n // len(counts), n // len(counts) + 1}
        as_key = (lambda v: v.tobytes()) if isinstance(x, np.ndarray) else (lambda v: v)
        for s in np.flatnonzero(copies).tolist():
            rows = np.flatnonzero(d.source_index == s)
            keys = [as_key(d.x[r]) for r in rows.tolist()]
            assert keys.count(as_key(x[s])) == 1, "copies are edited: one unedited occurrence per item"
            if isinstance(x, np.ndarray):  # (two text copies may gain the same edit, as in redundant)
                assert len(set(keys)) == len(keys), "image copies are all different"
    other = make_regime("redundant-uniform", x, y, 2)
    assert not np.array_equal(other.source_index, d.source_index)


def test_noisy_pair_flips_thirty_percent_to_the_partner_class() -> None:
    x, y = synthetic_images(n=1001)
    d = make_regime("noisy-pair", x, y, 0)
    assert d.flipped.sum() == round(0.3 * 1001) == d.info["n_flipped"]
    assert np.array_equal(d.y[d.flipped], (y[d.flipped] + 1) % CLASSES), "to partner(c) = (c + 1) mod C only"
    assert np.array_equal(d.y[~d.flipped], y[~d.flipped]) and np.array_equal(d.x, x)
    pairs = Counter(zip(y[d.flipped].tolist(), d.y[d.flipped].tolist()))
    assert set(pairs) == {(c, (c + 1) % CLASSES) for c in range(CLASSES)}
    assert not np.array_equal(make_regime("noisy-pair", x, y, 1).flipped, d.flipped)


def test_redundant_noisy_is_redundant_then_noisy() -> None:
    x, y = synthetic_images(n=1000)
    d = make_regime("redundant-noisy", x, y, 0)
    copies = np.bincount(d.source_index, minlength=1000)
    assert (copies > 0).sum() == 300 and copies.max() >= 5 * np.median(copies[copies > 0])
    assert d.flipped.sum() == 300, "30% of the redundant rows"
    assert np.all(d.y[d.flipped] != y[d.source_index][d.flipped])
    assert np.array_equal(d.y[~d.flipped], y[d.source_index][~d.flipped])
    assert [step["regime"] for step in d.info["steps"]] == ["redundant", "noisy"]
    # some item has copies that disagree: noise hits rows, not items
    disagree = [s for s in np.flatnonzero(copies > 1) if len(set(d.y[d.source_index == s].tolist())) > 1]
    assert disagree


def test_imbalanced_redundant_is_imbalanced_then_redundant() -> None:
    x, y = synthetic_images(n=600)
    d = make_regime("imbalanced-redundant", x, y, 0)
    n_c = np.bincount(y, minlength=CLASSES)
    kept = sum(max(1, round(n_c[c] * 50 ** (-c / (CLASSES - 1)))) for c in range(CLASSES))
    assert len(d.y) == kept, "redundant keeps the imbalanced row count"
    sources = np.unique(d.source_index)
    assert len(sources) == round(0.3 * kept) and np.array_equal(d.y, y[d.source_index])
    assert [step["regime"] for step in d.info["steps"]] == ["imbalanced", "redundant"]
    # the distinct sources come from the long-tailed selection: no class has more than imbalanced keeps
    expected = np.array([max(1, round(n_c[c] * 50 ** (-c / (CLASSES - 1)))) for c in range(CLASSES)])
    assert np.all(np.bincount(y[sources], minlength=CLASSES) <= expected)
    assert d.info["steps"][0]["counts_after"] == expected.tolist()


def test_paraphrase_texts_are_distinct_half_windows() -> None:
    x, y = long_texts(400, short_every=10)
    d = make_regime("paraphrase", x, y, 0)
    assert not d.flipped.any() and np.array_equal(d.y, y[d.source_index])
    sources = np.unique(d.source_index)
    assert len(sources) == round(0.3 * 400) == d.info["n_items"]
    assert len(d.y) == 400 == d.info["n"], "short items' share goes to the others: N rows in all"
    for s in sources.tolist():
        views = [d.x[r] for r in np.flatnonzero(d.source_index == s).tolist()]
        lines = nonempty(x[s])
        if len(lines) < 4:
            assert views == [x[s]], "a short post is its one view"
            continue
        assert len(set(views)) == len(views) > 1, "views of one item differ from each other"
        width = round(len(lines) / 2)
        windows = {"\n".join(lines[i : i + width]) for i in range(len(lines) - width + 1)}
        assert set(views) <= windows and x[s] not in views, "a view is a contiguous half of the item, not a copy"
    counts = np.bincount(d.source_index)[sources]
    room = np.array(
        [
            1 if len(nonempty(x[s])) < 4 else len(nonempty(x[s])) - round(len(nonempty(x[s])) / 2) + 1
            for s in sources.tolist()
        ]
    )
    below = counts < counts.max() - 1
    assert np.array_equal(counts[below], room[below]), "as even as room allows: only items out of views get fewer"
    assert below.any() and (counts <= room).all()


def test_paraphrase_images_are_shifted_or_mirrored_views() -> None:
    x, y = synthetic_images(n=500)
    d = make_regime("paraphrase", x, y, 3)
    assert len(d.y) == 500 and len(np.unique(d.source_index)) == 150 and not d.flipped.any()
    counts = np.bincount(d.source_index)[np.unique(d.source_index)]
    assert counts.max() - counts.min() <= 1
    for s in np.unique(d.source_index).tolist():
        rows = np.flatnonzero(d.source_index == s)
        assert len({d.x[r].tobytes() for r in rows}) == len(rows) and all(
            not np.array_equal(d.x[r], x[s]) for r in rows
        )
        for r in rows.tolist():
            candidates = [x[s], x[s][:, ::-1]]
            best = min(
                np.abs(d.x[r].astype(int)[6:22, 6:22] - np.roll(c, (dy, dx), axis=(0, 1)).astype(int)[6:22, 6:22]).max()
                for c in candidates
                for dy in range(-3, 4)
                for dx in range(-3, 4)
            )
            assert best == 0, "a view is a shift (±3 px) of the item or of its mirror image"
