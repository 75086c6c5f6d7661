"""extract from Hugging Face ``save_to_disk`` directories (a Dataset, a DatasetDict and its --split), and
--split on tables with a ``split`` column: which rows, their ids, labels and where bad rows are."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke

from dynsel_cli.config import ExtractConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.extract import extract, open_source, source_fingerprint
from dynsel_cli.extract.loop import source_options
from dynsel_cli.formats.features import read_features

TEXTS = ["a red apple", "a green pear", "the sea is blue", "stars at night", "", "rain on the roof", "a quiet street"]
LABELS = [1, 1, 0, 0, 1, -1, 0]  # -1: a ClassLabel's "no label"
SPLITS = ["train", "test", "train", "train", "test", "train", "test"]


@pytest.fixture
def hf() -> object:
    return pytest.importorskip("datasets")


def _features(hf: object, vectors: bool = False) -> object:
    datasets = hf
    columns = {"label": datasets.ClassLabel(names=["fruit", "nature"]), "split": datasets.Value("string")}  # type: ignore[attr-defined]
    if vectors:
        columns["embedding"] = datasets.Sequence(datasets.Value("float32"))  # type: ignore[attr-defined]
    else:
        columns["text"] = datasets.Value("string")  # type: ignore[attr-defined]
    return datasets.Features(columns)  # type: ignore[attr-defined]


def _vectors(n: int = 7) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(n, 5)).astype(np.float32)


def _save_dataset(hf: object, path: Path, vectors: bool = False) -> Path:
    data = {"label": LABELS, "split": SPLITS, **({"embedding": _vectors().tolist()} if vectors else {"text": TEXTS})}
    hf.Dataset.from_dict(data, features=_features(hf, vectors)).save_to_disk(str(path))  # type: ignore[attr-defined]
    return path


def _save_dict(hf: object, path: Path) -> Path:
    vectors = _vectors()

    def part(rows: list[int]) -> object:
        data = {
            "label": [LABELS[i] for i in rows],
            "split": [SPLITS[i] for i in rows],
            "embedding": vectors[rows].tolist(),
        }
        return hf.Dataset.from_dict(data, features=_features(hf, vectors=True))  # type: ignore[attr-defined]

    hf.DatasetDict({"train": part([0, 2, 3, 5]), "test": part([1, 4, 6])}).save_to_disk(str(path))  # type: ignore[attr-defined]
    return path


def test_dataset_directory_with_text_and_class_labels(
    tmp_path: Path, hf: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wordllama")
    path = _save_dataset(hf, tmp_path / "ds")
    config = ExtractConfig(encoder="wordllama", workers=0)
    with pytest.raises(
        DynselError, match=r"ds: 2 bad rows: 1 row has empty text \(row 4\), 1 row has no label \(row 5\)"
    ):
        extract(path, tmp_path / "f", config)
    config = ExtractConfig(encoder="wordllama", workers=0, on_error="skip")
    manifest = extract(path, tmp_path / "f", config)
    features = read_features(tmp_path / "f")
    assert manifest["classes"] == ["fruit", "nature"]  # the ClassLabel's names
    assert features.ids.tolist() == [0, 1, 2, 3, 6] and features.labels.tolist() == [1, 1, 0, 0, 0]  # type: ignore[union-attr]
    assert [(s["id"], s["reason"]) for s in manifest["skipped"]] == [(4, "empty-text"), (5, "missing-label")]
    source = manifest["source"]
    assert (source["type"], source["format"], source["path"], source["rows"], source["split"]) == (
        "table",
        "hf-dataset",
        str(path),
        7,
        None,
    )
    assert source["sha256"] == source_fingerprint(path, source_options(config))  # what `dynsel run` compares

    # Without the datasets package its Arrow files are read directly: the same features, byte for byte.
    monkeypatch.setitem(sys.modules, "datasets", None)
    again = extract(path, tmp_path / "g", config)
    assert (tmp_path / "g" / "_manifest.json").read_bytes() == (tmp_path / "f" / "_manifest.json").read_bytes()
    assert again["fingerprint"] == manifest["fingerprint"]


def test_dataset_directory_with_a_split_column(tmp_path: Path, hf: object) -> None:
    path = _save_dataset(hf, tmp_path / "ds", vectors=True)
    manifest = extract(path, tmp_path / "f", ExtractConfig(split="train", on_error="skip"))
    features = read_features(tmp_path / "f")
    # rows 0, 2, 3, 5 of the dataset are the train split; ids are positions after the filter
    assert (
        manifest["n_read"] == 4 and manifest["source"]["split"] == "train" and manifest["settings"]["split"] == "train"
    )
    assert features.ids.tolist() == [0, 1, 2] and features.labels.tolist() == [1, 0, 0]  # type: ignore[union-attr]
    np.testing.assert_array_equal(features.vectors, _vectors()[[0, 2, 3]])
    assert manifest["skipped"] == [
        {"id": 3, "source": "row 5", "reason": "missing-label", "detail": "the label is missing"}
    ]


def test_dataset_dict_needs_a_split(tmp_path: Path, hf: object) -> None:
    path = _save_dict(hf, tmp_path / "dd")
    with pytest.raises(DynselError, match=r"dd: a Hugging Face DatasetDict with splits train, test; pass --split NAME"):
        extract(path, tmp_path / "f", ExtractConfig())
    with pytest.raises(DynselError, match=r"--split validation: .*dd has splits train, test"):
        extract(path, tmp_path / "f", ExtractConfig(split="validation"))
    manifest = extract(path, tmp_path / "f", ExtractConfig(split="test"))
    features = read_features(tmp_path / "f")
    assert features.ids.tolist() == [0, 1, 2] and features.labels.tolist() == [1, 1, 0]  # type: ignore[union-attr]
    np.testing.assert_array_equal(features.vectors, _vectors()[[1, 4, 6]])
    assert manifest["source"]["split"] == "test" and manifest["source"]["path"] == str(path)
    assert manifest["source"]["sha256"] == source_fingerprint(path, source_options(ExtractConfig(split="test")))
    assert source_fingerprint(path, source_options(ExtractConfig(split="train"))) != manifest["source"]["sha256"]
    # a bad row of the split names the split's folder
    with pytest.raises(DynselError, match=r"dd/train row 3: the label is missing \(sample id 3\)"):
        extract(path, tmp_path / "g", ExtractConfig(split="train"))

    # the same through the command line: --split is an option of extract
    result = invoke("extract", path, "--out", tmp_path / "cli", "--split", "test")
    assert result.exit_code == 0, result.output
    assert read_features(tmp_path / "cli").fingerprint == features.fingerprint


def test_split_column_of_csv_and_jsonl(tmp_path: Path) -> None:
    rows = [
        ("alpha one", "a", "train"),
        ("beta two", "b", "test"),
        ("", "a", "train"),
        ("gamma three", "c", "test"),
        ("delta four", "b", "train"),
    ]
    with open(tmp_path / "t.csv", "w") as handle:
        handle.write("text,label,split\n" + "".join(f"{t},{lab},{s}\n" for t, lab, s in rows))
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": lab, "split": s}) + "\n" for t, lab, s in rows)
    )
    for name in ("t.csv", "t.jsonl"):
        src = open_source(tmp_path / name, source_options(ExtractConfig(split="test")))
        # class names are numbered over every row, so both splits agree: "c" is 2 although train has no "c"
        assert len(src) == 2 and src.classes == ["a", "b", "c"] and src.labels.tolist() == [1, 2]  # type: ignore[union-attr]
        assert src.read(0, 2).samples == ["beta two", "gamma three"] and src.where(1) == "row 3"
        src = open_source(tmp_path / name, source_options(ExtractConfig(split="train")))
        problems = src.check(len(src))
        assert [(p.position, p.where, p.reason) for p in problems] == [
            (1, "row 2", "empty-text")
        ]  # id 1 is the table's row 2
    with pytest.raises(DynselError, match=r"t\.csv row 2: the text is empty \(sample id 1\); fix or remove it"):
        extract(tmp_path / "t.csv", tmp_path / "f", ExtractConfig(encoder="wordllama", split="train"))
    with pytest.raises(
        DynselError, match=r"--split dev: no row of .*t\.csv has 'split' = 'dev' \(found: 'test', 'train'\)"
    ):
        open_source(tmp_path / "t.csv", source_options(ExtractConfig(split="dev")))

    pq.write_table(pa.table({"text": ["x", "y"]}), tmp_path / "nosplit.parquet")
    with pytest.raises(DynselError, match=r"--split train: .*nosplit\.parquet has no column 'split' \(columns: text\)"):
        open_source(tmp_path / "nosplit.parquet", source_options(ExtractConfig(split="train")))
    np.save(tmp_path / "v.npy", np.ones((3, 2), np.float32))
    with pytest.raises(DynselError, match=r"--split train: .*v\.npy is a numpy array"):
        extract(tmp_path / "v.npy", tmp_path / "f", ExtractConfig(split="train"))


def test_split_of_a_jsonl_with_a_broken_line(tmp_path: Path) -> None:
    """A line too broken to have a split is kept as a bad row of every split, so it is reported."""
    (tmp_path / "t.jsonl").write_text(
        '{"text": "one", "split": "train"}\n{"text": "two", "split": "test"}\n{broken\n{"text": "three", "split": "train"}\n'
    )
    src = open_source(tmp_path / "t.jsonl", source_options(ExtractConfig(split="train")))
    assert len(src) == 3 and [(p.position, p.where, p.reason) for p in src.check(3)] == [(1, "row 2", "bad-json")]
    manifest = extract(
        tmp_path / "t.jsonl",
        tmp_path / "f",
        ExtractConfig(encoder="wordllama", split="train", on_error="skip", workers=0),
    )
    assert read_features(tmp_path / "f").ids.tolist() == [0, 2] and manifest["skipped"][0]["source"] == "row 2"
