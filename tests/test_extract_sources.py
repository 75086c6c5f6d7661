"""extract sources: every source type on small real data, sample ids and order, and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dynsel_cli.cli import app
from dynsel_cli.config import ExtractConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.extract import extract, open_source, source_fingerprint
from dynsel_cli.extract.loop import source_options
from dynsel_cli.extract.work import work_dir_for
from dynsel_cli.formats.features import read_features

Image = pytest.importorskip("PIL.Image")

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT / "sample_data" / "fashion_mnist_2k.npz"
SMS = ROOT / "sample_data" / "sms_spam_1k.csv"
FAST_IMAGES = dict(image_size=32, batch_size=8, workers=0)


def _digits(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, scaled to 0..255 uint8 (a real image data set shipped in the wheel)."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    return (digits.images[:n] * 16).clip(0, 255).astype(np.uint8), digits.target[:n].astype(np.int64)


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _class_folder(root: Path, n: int = 12) -> tuple[list[str], np.ndarray]:
    """Digits as PNGs under root/<class name>/; returns the expected order and labels."""
    images, labels = _digits(n)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for i, (image, label) in enumerate(zip(images, labels)):
        _png(root / names[label] / f"img{i:03d}.png", image)
    files = sorted(f"{names[c]}/img{i:03d}.png" for i, c in enumerate(labels))
    return files, labels


def _config(**kw: object) -> ExtractConfig:
    return ExtractConfig(**kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- image folders


def test_class_folder_order_labels_and_ids(tmp_path: Path) -> None:
    files, _ = _class_folder(tmp_path / "digits")
    src = open_source(tmp_path / "digits")
    assert src.kind == "images" and src.files == files  # type: ignore[attr-defined]
    classes = sorted({f.split("/")[0] for f in files})
    assert src.classes == classes
    assert [classes[i] for i in src.labels] == [f.split("/")[0] for f in files]  # type: ignore[union-attr]

    manifest = extract(tmp_path / "digits", tmp_path / "feats", _config(**FAST_IMAGES))
    table = pq.read_table(tmp_path / "feats")
    assert table.column("id").to_pylist() == list(range(len(files)))
    assert table.column("label").to_pylist() == src.labels.tolist()  # type: ignore[union-attr]
    assert manifest["classes"] == classes and manifest["source"]["layout"] == "class-folders"
    assert manifest["source"]["sha256"] == source_fingerprint(tmp_path / "digits")
    assert manifest["encoder"]["name"] == "efficientnet-lite0" and manifest["dim"] == 1280


def test_image_folder_matches_the_same_pixels_as_an_array(tmp_path: Path) -> None:
    """A PNG folder and an .npz of the same greyscale pixels give the same vectors (greyscale → RGB is exact)."""
    images, labels = _digits(8)
    for i, image in enumerate(images):
        _png(tmp_path / "flat" / f"{i:02d}.png", image)
    np.savez(tmp_path / "digits.npz", x=images, y=labels)
    a = read_features(extract(tmp_path / "flat", tmp_path / "fa", _config(**FAST_IMAGES)) and tmp_path / "fa")
    b = read_features(extract(tmp_path / "digits.npz", tmp_path / "fb", _config(**FAST_IMAGES)) and tmp_path / "fb")
    assert a.labels is None and b.labels is not None
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_flat_folder_with_labels_csv(tmp_path: Path) -> None:
    images, _ = _digits(6)
    folder = tmp_path / "flat"
    for i, image in enumerate(images):
        _png(folder / f"b{i}.png", image)
    (folder / "labels.csv").write_text(
        "file,label\n" + "".join(f"b{i}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(6))
    )
    manifest = extract(folder, tmp_path / "feats", _config(**FAST_IMAGES))
    features = read_features(tmp_path / "feats")
    assert manifest["classes"] == ["cat", "dog"] and manifest["source"]["layout"] == "flat"
    assert features.labels.tolist() == [1, 0, 1, 0, 1, 0]  # type: ignore[union-attr]

    # an explicit CSV elsewhere, integer labels; a file without a row is a bad sample
    (tmp_path / "other.csv").write_text("file,label\n" + "".join(f"b{i}.png,{i}\n" for i in range(5)))
    (folder / "labels.csv").unlink()
    with pytest.raises(DynselError, match=r"b5\.png.*no row"):
        extract(folder, tmp_path / "f2", _config(labels_csv=str(tmp_path / "other.csv"), **FAST_IMAGES))
    manifest = extract(
        folder, tmp_path / "f2", _config(labels_csv=str(tmp_path / "other.csv"), on_error="skip", **FAST_IMAGES)
    )
    assert manifest["n_samples"] == 5 and manifest["skipped"][0]["source"] == "b5.png"
    assert read_features(tmp_path / "f2").labels.tolist() == [0, 1, 2, 3, 4]  # type: ignore[union-attr]

    (tmp_path / "bad.csv").write_text("file,label\nmissing.png,1\n")
    with pytest.raises(DynselError, match="not an image in the folder"):
        open_source(folder, source_options(_config(labels_csv=str(tmp_path / "bad.csv"))))


def test_folder_layout_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DynselError, match="no image files"):
        open_source(tmp_path / "empty")
    images, _ = _digits(2)
    _png(tmp_path / "mixed" / "a" / "x.png", images[0])
    _png(tmp_path / "mixed" / "y.png", images[1])
    with pytest.raises(DynselError, match="both directly"):
        open_source(tmp_path / "mixed")


def test_folder_fingerprint_follows_content(tmp_path: Path) -> None:
    _class_folder(tmp_path / "d", 4)
    first = source_fingerprint(tmp_path / "d")
    (tmp_path / "d" / "notes.txt").write_text("not an image")  # not part of the source
    assert source_fingerprint(tmp_path / "d") == first
    victim = sorted((tmp_path / "d").rglob("*.png"))[0]
    _png(victim, np.full((8, 8), 7, np.uint8))
    assert source_fingerprint(tmp_path / "d") != first


# ----------------------------------------------------------------------------------------- arrays


def test_npz_images_and_npy_vectors(tmp_path: Path) -> None:
    manifest = extract(FASHION, tmp_path / "fm", _config(limit=16, **FAST_IMAGES))
    assert manifest["n_samples"] == 16 and manifest["classes"][0] == "T-shirt/top"
    assert read_features(tmp_path / "fm").labels.tolist() == np.load(FASHION)["y_train"][:16].tolist()  # type: ignore[union-attr]

    vectors = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    np.save(tmp_path / "emb.npy", vectors)
    manifest = extract(tmp_path / "emb.npy", tmp_path / "ev", _config(shard_size=16))
    features = read_features(tmp_path / "ev")
    assert manifest["encoder"]["name"] == "identity" and len(manifest["shards"]) == 4
    np.testing.assert_array_equal(features.vectors, vectors)
    assert features.ids.tolist() == list(range(50))


def test_embeddings_with_nan_stop_or_skip(tmp_path: Path) -> None:
    vectors = np.ones((10, 4), np.float32)
    vectors[3, 1], vectors[7, 0] = np.nan, np.inf
    np.save(tmp_path / "emb.npy", vectors)
    with pytest.raises(
        DynselError,
        match=r"emb\.npy: 2 rows contain NaN or Inf \(rows 3, 7\); fix or remove them, or pass --on-error skip$",
    ):
        extract(tmp_path / "emb.npy", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not work_dir_for(tmp_path / "out").exists()
    manifest = extract(tmp_path / "emb.npy", tmp_path / "out", _config(on_error="skip"))
    assert manifest["n_samples"] == 8 and manifest["n_read"] == 10 and manifest["skipped_reasons"] == {"non-finite": 2}
    assert [s["id"] for s in manifest["skipped"]] == [3, 7]
    assert read_features(tmp_path / "out").ids.tolist() == [0, 1, 2, 4, 5, 6, 8, 9]


# ----------------------------------------------------------------------------------------- tables


def test_csv_text_with_string_labels_and_ids(tmp_path: Path) -> None:
    src = open_source(SMS)
    assert src.kind == "text" and src.classes == ["ham", "spam"] and src.ids is None and len(src) == 1000
    batch = src.read(0, 3)
    assert batch.samples[0].startswith("Ok lar")
    src = open_source(SMS, source_options(_config(id_column="id")))
    csv_ids = [int(line.split(",", 1)[0]) for line in SMS.read_text().splitlines()[1:4]]
    assert src.ids[:3].tolist() == csv_ids  # type: ignore[index]
    manifest = extract(SMS, tmp_path / "f", _config(encoder="wordllama", id_column="id", limit=40, shard_size=16))
    features = read_features(tmp_path / "f")
    assert features.ids.tolist() == src.ids[:40].tolist() and manifest["classes"] == ["ham", "spam"]  # type: ignore[index]
    assert manifest["source"]["columns"] == {"text": "text", "label": "label", "id": "id", "vector": None}


def test_parquet_and_jsonl_text_with_named_columns(tmp_path: Path) -> None:
    texts = ["a red apple", "a green pear", "the sea is blue", "stars at night"]
    pq.write_table(pa.table({"body": texts, "topic": [0, 0, 1, 1]}), tmp_path / "t.parquet")
    with pytest.raises(
        DynselError, match=r"no column 'text' \(columns: body, topic\); name the text column with --text-column"
    ):
        extract(tmp_path / "t.parquet", tmp_path / "f", _config(encoder="wordllama"))
    with pytest.raises(DynselError, match="no column 'label'.*--label-column"):
        extract(
            tmp_path / "t.parquet",
            tmp_path / "f",
            _config(encoder="wordllama", text_column="body", label_column="label"),
        )
    m1 = extract(
        tmp_path / "t.parquet", tmp_path / "f1", _config(encoder="wordllama", text_column="body", label_column="topic")
    )
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"body": t, "topic": i // 2}) + "\n" for i, t in enumerate(texts)) + "\n"
    )
    m2 = extract(
        tmp_path / "t.jsonl", tmp_path / "f2", _config(encoder="wordllama", text_column="body", label_column="topic")
    )
    assert m1["fingerprint"] == m2["fingerprint"] and m1["classes"] is None
    assert read_features(tmp_path / "f1").labels.tolist() == [0, 0, 1, 1]  # type: ignore[union-attr]


def test_bad_text_rows(tmp_path: Path) -> None:
    raw = b'text,label\nfine,0\n,1\n"   ",0\nbad \xff\xfe bytes,1\nalso fine,0\n'
    (tmp_path / "t.csv").write_bytes(raw)
    with pytest.raises(
        DynselError,
        match=r"t\.csv: 3 bad rows: 2 rows have empty text \(rows 1, 2\), 1 row is not valid UTF-8 \(row 3\); fix or remove them, or pass --on-error skip$",
    ):
        extract(tmp_path / "t.csv", tmp_path / "f", _config(encoder="wordllama"))
    (tmp_path / "one.csv").write_bytes(b"text,label\nfine,0\nbad \xff bytes,1\n")  # one bad row: its own detail
    with pytest.raises(
        DynselError,
        match=r"one\.csv row 1: the text is not valid UTF-8 \(byte 4\) \(sample id 1\); fix or remove it, or pass --on-error skip$",
    ):
        extract(tmp_path / "one.csv", tmp_path / "f", _config(encoder="wordllama"))
    manifest = extract(tmp_path / "t.csv", tmp_path / "f", _config(encoder="wordllama", on_error="skip"))
    assert [(s["id"], s["reason"]) for s in manifest["skipped"]] == [
        (1, "empty-text"),
        (2, "empty-text"),
        (3, "non-utf8"),
    ]
    assert manifest["skipped"][2]["source"] == "row 3"
    assert read_features(tmp_path / "f").ids.tolist() == [0, 4]

    (tmp_path / "t.jsonl").write_bytes(
        b'{"text": "ok"}\n{"text": null}\nnot json\n{"text": "caf\xe9"}\n{"text": "ok too"}\n'
    )
    manifest = extract(tmp_path / "t.jsonl", tmp_path / "g", _config(encoder="wordllama", on_error="skip"))
    assert [(s["id"], s["reason"]) for s in manifest["skipped"]] == [
        (1, "missing-text"),
        (2, "bad-json"),
        (3, "non-utf8"),
    ]
    assert manifest["n_samples"] == 2


def test_ready_embeddings_in_parquet(tmp_path: Path) -> None:
    rows = [[0.0, 1.0, 2.0], [1.0, float("nan"), 0.0], [3.0, 4.0, 5.0]]
    pq.write_table(pa.table({"embedding": rows, "label": [1, 0, 1]}), tmp_path / "e.parquet")
    with pytest.raises(DynselError, match=r"e\.parquet row 1: the vector contains NaN"):
        extract(tmp_path / "e.parquet", tmp_path / "f")
    manifest = extract(tmp_path / "e.parquet", tmp_path / "f", _config(on_error="skip"))
    features = read_features(tmp_path / "f")
    assert manifest["encoder"]["name"] == "identity" and features.ids.tolist() == [0, 2]
    np.testing.assert_array_equal(features.vectors, np.asarray([rows[0], rows[2]], np.float32))


def test_id_column_must_be_unique_integers(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["a", "b"], "key": [5, 5]}), tmp_path / "dup.parquet")
    with pytest.raises(DynselError, match="appears more than once"):
        open_source(tmp_path / "dup.parquet", source_options(_config(id_column="key")))
    pq.write_table(pa.table({"text": ["a", "b"], "key": ["x", "y"]}), tmp_path / "str.parquet")
    with pytest.raises(DynselError, match="not a non-negative integer"):
        open_source(tmp_path / "str.parquet", source_options(_config(id_column="key")))


def test_unsupported_and_missing_sources(tmp_path: Path) -> None:
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(DynselError, match="unsupported source type"):
        open_source(tmp_path / "x.xlsx")
    with pytest.raises(DynselError, match="no such file or folder"):
        open_source(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------- bad images


def test_bad_images_stop_with_one_line_or_skip(tmp_path: Path) -> None:
    images, _ = _digits(6)
    folder = tmp_path / "imgs" / "a"
    for i, image in enumerate(images[:3]):
        _png(folder / f"{i}.png", image)
    (folder / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")  # corrupt
    good = (folder / "0.png").read_bytes()
    (folder / "4.png").write_bytes(good[: len(good) // 2])  # truncated
    _png(folder / "5.png", np.zeros((9, 8), np.uint8))  # another size
    (folder / "6.png").symlink_to(tmp_path / "gone.png")  # broken link: unreadable
    runner = CliRunner()
    result = runner.invoke(
        app, ["extract", str(tmp_path / "imgs"), "--out", str(tmp_path / "f"), "--image-size", "32", "--workers", "0"]
    )
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and "3.png" in line and "not a readable image" in line and "--on-error skip" in line
    assert not (tmp_path / "f").exists()

    result = runner.invoke(
        app,
        [
            "extract",
            str(tmp_path / "imgs"),
            "--out",
            str(tmp_path / "f"),
            "--image-size",
            "32",
            "--on-error",
            "skip",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skipped 4 of 7" in result.output
    manifest = json.loads((tmp_path / "f" / "_manifest.json").read_text())
    assert [(s["source"], s["reason"]) for s in manifest["skipped"]] == [
        ("a/3.png", "corrupt-image"),
        ("a/4.png", "corrupt-image"),
        ("a/5.png", "mixed-size"),
        ("a/6.png", "unreadable"),
    ]
    assert manifest["skipped_reasons"] == {"corrupt-image": 2, "mixed-size": 1, "unreadable": 1}
    assert pq.read_table(tmp_path / "f").column("id").to_pylist() == [0, 1, 2]

    # --mixed-sizes resize accepts the odd size
    manifest = extract(tmp_path / "imgs", tmp_path / "g", _config(mixed_sizes="resize", on_error="skip", **FAST_IMAGES))
    assert manifest["n_samples"] == 4


def test_decompression_bomb_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dynsel_cli.extract import sources

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    _png(tmp_path / "big" / "a.png", np.zeros((100, 100), np.uint8))
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 6000)  # our own check
    with pytest.raises(DynselError, match="a.png: the image is 100x100 pixels, over the 6,000-pixel limit"):
        extract(tmp_path / "big", tmp_path / "f", _config(**FAST_IMAGES))
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 4000)  # Pillow's DecompressionBombError (over twice the limit)
    with pytest.raises(DynselError, match="a.png: .*decompression bomb"):
        extract(tmp_path / "big", tmp_path / "f", _config(**FAST_IMAGES))
