"""extract checks what it can before any encoding: a table's bad rows (empty, non-text or non-UTF-8 text,
missing labels, broken lines) and NaN/Inf in ready-made vectors are found in one pass, before the encoder is
even loaded. Without --on-error skip that is one error naming the file, the first bad rows and how many
there are; with it, the run goes on and the manifest lists the skipped rows as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dynsel_cli.config import ExtractConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.extract import encoding, extract
from dynsel_cli.extract.work import work_dir_for
from dynsel_cli.formats.features import read_features

EMPTY = [12, 40, 41, 97, 130] + list(range(150, 182))  # 37 empty or blank posts


@pytest.fixture
def no_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if extract gets as far as loading an encoder."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the encoder was loaded before the bad rows were found")

    monkeypatch.setattr(encoding, "make_encoder", refuse)


def _posts(path: Path, n: int = 200) -> Path:
    lines = [
        json.dumps(
            {
                "text": ("  \n" if i % 2 else "") if i in EMPTY else f"post number {i} about topic {i % 3}",
                "label": i % 3,
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _nothing_written(out: Path) -> None:
    assert not out.exists() and not work_dir_for(out).exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


def test_empty_posts_are_found_before_encoding(tmp_path: Path, no_encoder: None) -> None:
    posts = _posts(tmp_path / "posts.jsonl")
    with pytest.raises(DynselError) as caught:
        extract(posts, tmp_path / "f", ExtractConfig(encoder="wordllama"))
    assert (
        str(caught.value)
        == f"{posts}: 37 rows have empty text (rows 12, 40, 41, 97, 130, …); fix or remove them, or pass --on-error skip"
    )
    _nothing_written(tmp_path / "f")
    # --limit: only the rows it reads are checked
    with pytest.raises(DynselError, match=r"posts\.jsonl: 3 rows have empty text \(rows 12, 40, 41\);"):
        extract(posts, tmp_path / "f", ExtractConfig(encoder="wordllama", limit=97))


def test_empty_posts_with_skip_are_listed_as_before(tmp_path: Path) -> None:
    pytest.importorskip("wordllama")
    posts = _posts(tmp_path / "posts.jsonl")
    logs: list[str] = []
    manifest = extract(
        posts,
        tmp_path / "f",
        ExtractConfig(encoder="wordllama", on_error="skip", workers=0, shard_size=64),
        log=logs.append,
    )
    assert (
        logs[0]
        == f"extract: {posts}: 37 rows have empty text (rows 12, 40, 41, 97, 130, …); skipping them (--on-error skip)"
    )
    assert (
        manifest["n_read"] == 200 and manifest["n_samples"] == 163 and manifest["skipped_reasons"] == {"empty-text": 37}
    )
    assert manifest["skipped"] == [
        {"id": i, "source": f"row {i}", "reason": "empty-text", "detail": "the text is empty"} for i in EMPTY
    ]
    assert read_features(tmp_path / "f").ids.tolist() == [i for i in range(200) if i not in EMPTY]


def test_non_text_values_missing_labels_and_broken_lines_in_one_line(tmp_path: Path, no_encoder: None) -> None:
    rows = [
        b'{"text": "fine", "label": "a"}',
        b'{"text": 5, "label": "b"}',
        b'{"text": "ok", "label": null}',
        b"not json",
        b'{"text": ["a", "list"], "label": "a"}',
        b'{"text": "good", "label": "b"}',
    ]
    (tmp_path / "t.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(DynselError) as caught:
        extract(tmp_path / "t.jsonl", tmp_path / "f", ExtractConfig(encoder="wordllama"))
    assert str(caught.value) == (
        f"{tmp_path / 't.jsonl'}: 4 bad rows: 2 rows hold values that are not text (rows 1, 4), 1 row has no label (row 2), "
        "1 row is not a JSON object (row 3); fix or remove them, or pass --on-error skip"
    )
    _nothing_written(tmp_path / "f")


def test_a_single_bad_row_keeps_its_detail_and_named_ids_are_shown(tmp_path: Path, no_encoder: None) -> None:
    pq.write_table(pa.table({"text": ["a", "b", None, "d"], "label": [0, None, 1, 1]}), tmp_path / "one.parquet")
    with pytest.raises(
        DynselError,
        match=r"one\.parquet: 2 bad rows: 1 row has no label \(row 1\), 1 row has no text \(null\) \(row 2\);",
    ):
        extract(tmp_path / "one.parquet", tmp_path / "f", ExtractConfig(encoder="wordllama"))
    pq.write_table(pa.table({"text": ["a", "", "c"]}), tmp_path / "single.parquet")
    with pytest.raises(
        DynselError,
        match=r"single\.parquet row 1: the text is empty \(sample id 1\); fix or remove it, or pass --on-error skip$",
    ):
        extract(tmp_path / "single.parquet", tmp_path / "f", ExtractConfig(encoder="wordllama"))
    # with --id-column the message names the sample ids too
    pq.write_table(
        pa.table({"text": ["a", "", "c", " ", "e"], "key": [100, 101, 102, 103, 104]}), tmp_path / "ids.parquet"
    )
    with pytest.raises(DynselError, match=r"ids\.parquet: 2 rows have empty text \(rows 1, 3; sample ids 101, 103\);"):
        extract(tmp_path / "ids.parquet", tmp_path / "f", ExtractConfig(encoder="wordllama", id_column="key"))
    _nothing_written(tmp_path / "f")


def test_nan_in_ready_made_vectors_is_found_before_writing(tmp_path: Path, no_encoder: None) -> None:
    vectors = np.random.default_rng(0).normal(size=(5000, 4)).astype(np.float32)
    bad = [10, 11, 2000, 3001, 4000, 4001, 4999]
    vectors[bad, 1] = np.nan
    vectors[4999, 2] = np.inf
    np.save(tmp_path / "v.npy", vectors)
    with pytest.raises(DynselError) as caught:
        extract(tmp_path / "v.npy", tmp_path / "f", ExtractConfig(shard_size=100))
    assert (
        str(caught.value)
        == f"{tmp_path / 'v.npy'}: 7 rows contain NaN or Inf (rows 10, 11, 2000, 3001, 4000, …); fix or remove them, or pass --on-error skip"
    )
    _nothing_written(tmp_path / "f")  # not one shard was written first

    rows = [[0.0, 1.0], [np.nan, 1.0], [1.0], None, [2.0, np.inf]]
    pq.write_table(pa.table({"embedding": rows}), tmp_path / "e.parquet")
    with pytest.raises(
        DynselError,
        match=r"e\.parquet: 4 bad rows: 2 rows contain NaN or Inf \(rows 1, 4\), 2 rows have missing or malformed vectors \(rows 2, 3\);",
    ):
        extract(tmp_path / "e.parquet", tmp_path / "f")
    _nothing_written(tmp_path / "f")


def test_nan_vectors_with_skip_are_listed_as_before(tmp_path: Path) -> None:
    vectors = np.ones((50, 3), np.float32)
    vectors[[7, 31], 0] = np.nan
    np.save(tmp_path / "v.npy", vectors)
    logs: list[str] = []
    manifest = extract(
        tmp_path / "v.npy", tmp_path / "f", ExtractConfig(on_error="skip", shard_size=16), log=logs.append
    )
    assert logs == [
        f"extract: {tmp_path / 'v.npy'}: 2 rows contain NaN or Inf (rows 7, 31); skipping them (--on-error skip)"
    ]
    assert manifest["skipped"] == [
        {"id": i, "source": f"row {i}", "reason": "non-finite", "detail": "the vector contains NaN or Inf"}
        for i in (7, 31)
    ]
    assert manifest["n_samples"] == 48
