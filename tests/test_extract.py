"""The extract stage: sources (.npy/.npz), encoders (identity, efficientnet-lite0), the features it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE, sha256_of

from dynsel_cli.config import ExtractConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.extract import extract
from dynsel_cli.formats.features import read_features

IDENTITY = ExtractConfig(encoder="identity", device="cpu")


def no_output(out: Path, resumable: bool = False) -> None:
    """A failed extraction leaves neither the output nor a temporary sibling.

    ``resumable``: the failure came after completed shards, whose resume state (``.OUT.partial``, not an
    artifact) may stay so that a rerun (e.g. with --on-error skip) continues from them.
    """
    assert not out.exists()
    allowed = {f".{out.name}.partial"} if resumable else set()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and p.name not in allowed] == []


@pytest.fixture
def vectors_npy(tmp_path: Path) -> tuple[Path, np.ndarray]:
    vectors = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    path = tmp_path / "vectors.npy"
    np.save(path, vectors)
    return path, vectors


def test_identity_encoder_on_vectors(tmp_path: Path, vectors_npy: tuple[Path, np.ndarray]) -> None:
    path, vectors = vectors_npy
    manifest = extract(path, tmp_path / "feat", ExtractConfig(device="cpu"))  # auto → identity for vectors
    assert manifest["encoder"]["name"] == "identity"
    assert manifest["n_samples"] == 30 and manifest["dim"] == 8 and manifest["has_labels"] is False
    assert manifest["source"]["kind"] == "vectors" and manifest["source"]["sha256"] == sha256_of(path)
    features = read_features(tmp_path / "feat")
    np.testing.assert_array_equal(features.ids, np.arange(30))
    np.testing.assert_array_equal(features.vectors, vectors)
    assert features.labels is None
    assert pq.read_table(tmp_path / "feat").column_names == ["id", "vector"]


def test_npz_picks_x_train_and_y_train(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_train = rng.normal(size=(20, 4)).astype(np.float32)
    y_train = rng.integers(0, 3, 20)
    path = tmp_path / "data.npz"
    np.savez(
        path,
        x_test=rng.normal(size=(5, 4)).astype(np.float32),
        y_test=rng.integers(0, 3, 5),
        x_train=x_train,
        y_train=y_train,
        class_names=np.array(["cat", "dog", "eel"]),
    )
    manifest = extract(path, tmp_path / "feat", IDENTITY)
    assert manifest["source"]["sample_key"] == "x_train" and manifest["source"]["label_key"] == "y_train"
    assert manifest["classes"] == ["cat", "dog", "eel"]
    features = read_features(tmp_path / "feat")
    np.testing.assert_array_equal(features.vectors, x_train)
    np.testing.assert_array_equal(features.labels, y_train)
    assert features.classes == ["cat", "dog", "eel"]
    assert pq.read_table(tmp_path / "feat").column_names == ["id", "label", "vector"]

    # Explicit keys win over the defaults.
    extract(path, tmp_path / "test", ExtractConfig(encoder="identity", device="cpu", array="x_test", labels="y_test"))
    assert len(read_features(tmp_path / "test").ids) == 5


def test_wrong_array_key_lists_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((4, 2), np.float32), y_train=np.zeros(4, np.int64))
    with pytest.raises(DynselError, match=r"no array 'pixels' \(keys: \['x_train', 'y_train'\]\); pass --array KEY"):
        extract(path, tmp_path / "feat", ExtractConfig(encoder="identity", array="pixels"))
    with pytest.raises(DynselError, match=r"no array 'classes'.*fix --labels"):
        extract(path, tmp_path / "feat", ExtractConfig(encoder="identity", labels="classes"))
    no_output(tmp_path / "feat")


def test_ambiguous_npz_asks_for_array(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, first=np.zeros((4, 2), np.float32), second=np.zeros((4, 2), np.float32))
    with pytest.raises(
        DynselError,
        match=r"cannot tell which array holds the samples \(keys: \['first', 'second'\]\); pass --array KEY",
    ):
        extract(path, tmp_path / "feat", IDENTITY)
    extract(path, tmp_path / "feat", ExtractConfig(encoder="identity", array="second"))
    assert read_features(tmp_path / "feat").vectors.shape == (4, 2)


def test_nan_in_vectors_is_refused(tmp_path: Path) -> None:
    vectors = np.ones((100, 3), np.float32)
    vectors[70, 1] = np.nan  # in the second batch: the first batch was already written to the temp dir
    np.save(tmp_path / "nan.npy", vectors)
    with pytest.raises(DynselError, match="NaN"):
        extract(tmp_path / "nan.npy", tmp_path / "feat", ExtractConfig(encoder="identity", batch_size=64))
    no_output(tmp_path / "feat", resumable=True)

    vectors[70, 1] = np.inf
    np.save(tmp_path / "inf.npy", vectors)
    with pytest.raises(DynselError, match="Inf"):
        extract(tmp_path / "inf.npy", tmp_path / "feat", IDENTITY)


def test_limit_reads_a_prefix(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    y = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    manifest = extract(tmp_path / "d.npz", tmp_path / "feat", ExtractConfig(encoder="identity", limit=4))
    assert manifest["n_samples"] == 4 and manifest["settings"]["limit"] == 4
    features = read_features(tmp_path / "feat")
    np.testing.assert_array_equal(features.ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(features.labels, y[:4])
    np.testing.assert_array_equal(features.vectors, x[:4])
    # a limit above N reads everything
    assert (
        extract(tmp_path / "d.npz", tmp_path / "all", ExtractConfig(encoder="identity", limit=1000))["n_samples"] == 10
    )
    with pytest.raises(DynselError, match="--limit 0"):
        extract(tmp_path / "d.npz", tmp_path / "none", ExtractConfig(encoder="identity", limit=0))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(9, np.int64), r"labels have shape \(9,\), expected \(10,\)"),
        (np.zeros((10, 1), np.int64), r"labels have shape \(10, 1\), expected \(10,\)"),
        (np.zeros(10, np.float32), "expected integer class ids"),
        (np.array([0, 1, -1, 0, 1, 0, 1, 0, 1, 0]), "non-negative"),
    ],
)
def test_bad_labels_are_refused(tmp_path: Path, labels: np.ndarray, message: str) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), np.float32), y=labels)
    with pytest.raises(DynselError, match=message):
        extract(tmp_path / "d.npz", tmp_path / "feat", IDENTITY)
    no_output(tmp_path / "feat")


def test_bad_sources_and_options(tmp_path: Path, vectors_npy: tuple[Path, np.ndarray]) -> None:
    path, _ = vectors_npy
    with pytest.raises(DynselError, match="no such file"):
        extract(tmp_path / "missing.npz", tmp_path / "feat", IDENTITY)
    (tmp_path / "data.xyz").write_text("1,2\n")
    with pytest.raises(DynselError, match="xyz"):
        extract(tmp_path / "data.xyz", tmp_path / "feat", IDENTITY)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DynselError, match="not a readable numpy file"):
        extract(tmp_path / "broken.npz", tmp_path / "feat", IDENTITY)
    with pytest.raises(DynselError, match="unknown encoder"):
        extract(path, tmp_path / "feat", ExtractConfig(encoder="clip"))
    with pytest.raises(DynselError, match=r"efficientnet-lite0 .*images.*vectors"):
        extract(path, tmp_path / "feat", ExtractConfig(encoder="efficientnet-lite0"))
    np.save(tmp_path / "images.npy", np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DynselError, match=r"--encoder identity .*vectors.*images"):
        extract(tmp_path / "images.npy", tmp_path / "feat", IDENTITY)
    np.save(tmp_path / "rank1.npy", np.zeros(5, np.float32))
    with pytest.raises(DynselError, match="expected \\[N, D\\] vectors"):
        extract(tmp_path / "rank1.npy", tmp_path / "feat", IDENTITY)
    with pytest.raises(DynselError, match="--dtype 'float64'"):  # raised inside the atomic write
        extract(path, tmp_path / "feat", ExtractConfig(encoder="identity", dtype="float64"))
    no_output(tmp_path / "feat")


def test_features_are_deterministic(tmp_path: Path, vectors_npy: tuple[Path, np.ndarray]) -> None:
    path, vectors = vectors_npy
    a = extract(path, tmp_path / "a", IDENTITY)
    b = extract(path, tmp_path / "b", ExtractConfig(encoder="identity", batch_size=7))  # batching does not matter
    assert a["fingerprint"] == b["fingerprint"]
    assert sha256_of(tmp_path / "a" / "part-00000.parquet") == sha256_of(tmp_path / "b" / "part-00000.parquet")
    extract(path, tmp_path / "again", IDENTITY)
    assert (tmp_path / "a" / "_manifest.json").read_bytes() == (tmp_path / "again" / "_manifest.json").read_bytes()
    np.save(tmp_path / "other.npy", vectors * 2)
    assert extract(tmp_path / "other.npy", tmp_path / "c", IDENTITY)["fingerprint"] != a["fingerprint"]


def test_extract_and_the_fixture_writer_write_the_same_features(tmp_path: Path) -> None:
    """One writer: extract's shards (built in its resume work directory) and FeatureShardWriter's (the tests'
    fixtures) come from the same code, so the same rows give the same files, fingerprint and common fields."""
    from dynsel_cli.formats.common import atomic_directory
    from dynsel_cli.formats.features import FeatureShardWriter

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    manifest = extract(
        tmp_path / "d.npz", tmp_path / "extracted", ExtractConfig(encoder="identity", shard_size=16, batch_size=5)
    )
    with atomic_directory(tmp_path / "written") as tmp:
        writer = FeatureShardWriter(tmp, 5, "float32", has_labels=True, shard_rows=16)
        writer.add(np.arange(40), y, x)
        written = writer.finish({})
    common = (
        "format",
        "format_version",
        "n_samples",
        "dim",
        "dtype",
        "has_labels",
        "shards",
        "fingerprint",
        "id_min",
        "id_max",
        "ids_dense",
    )
    assert {k: manifest[k] for k in common} == {k: written[k] for k in common}
    assert set(written) == set(common)
    for shard in written["shards"]:
        assert sha256_of(tmp_path / "extracted" / shard["file"]) == sha256_of(tmp_path / "written" / shard["file"])


def test_float16_storage(tmp_path: Path, vectors_npy: tuple[Path, np.ndarray]) -> None:
    path, vectors = vectors_npy
    manifest = extract(path, tmp_path / "feat", ExtractConfig(encoder="identity", dtype="float16"))
    assert manifest["dtype"] == "float16"
    np.testing.assert_array_equal(
        read_features(tmp_path / "feat").vectors, vectors.astype(np.float16).astype(np.float32)
    )
    assert str(pq.read_table(tmp_path / "feat").schema.field("vector").type.value_type) == "halffloat"


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float16_overflow_is_refused(tmp_path: Path) -> None:
    """Values beyond ±65504 would be stored as inf: refused with a hint instead."""
    np.save(tmp_path / "big.npy", np.full((4, 3), 1e5, np.float32))
    with pytest.raises(DynselError, match="float16"):
        extract(tmp_path / "big.npy", tmp_path / "feat", ExtractConfig(encoder="identity", dtype="float16"))
    no_output(tmp_path / "feat", resumable=True)


def test_efficientnet_on_sample_images(tmp_path: Path, sample_arrays: dict[str, np.ndarray]) -> None:
    manifest = extract(SAMPLE, tmp_path / "feat", ExtractConfig(limit=16, device="cpu"))
    assert manifest["encoder"]["name"] == "efficientnet-lite0" and manifest["encoder"]["image_size"] == 112
    assert manifest["source"]["kind"] == "images" and manifest["source"]["shape"] == [2000, 28, 28]
    assert manifest["classes"] == [str(c) for c in sample_arrays["class_names"]]
    features = read_features(tmp_path / "feat")
    assert features.vectors.shape == (16, 1280)
    assert np.isfinite(features.vectors).all()
    np.testing.assert_array_equal(features.labels, sample_arrays["y_train"][:16])
    np.testing.assert_array_equal(features.ids, np.arange(16))
    # real image features: different images give different vectors, and the pooled ReLU6 maps are >= 0
    assert np.linalg.matrix_rank(features.vectors.astype(np.float64)) > 8
    assert features.vectors.min() >= 0
