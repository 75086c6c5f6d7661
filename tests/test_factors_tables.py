"""The factors stage's tables: Parquet schemas, per-class frequencies, streaming over shards, bad input.

tests/test_factors.py covers the codes themselves on hand-built and small fitted SAEs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import assert_one_line_error, invoke, sparse_dictionary_data
from safetensors.torch import load_file, save_file

from dynsel_cli.config import FactorsConfig, SaeConfig
from dynsel_cli.errors import ArtifactError, DynselError
from dynsel_cli.factors import build_factor_tables
from dynsel_cli.formats.common import atomic_directory, file_entry, sha256_bytes, write_json
from dynsel_cli.formats.factors import read_factor_tables
from dynsel_cli.formats.features import FeatureShardWriter
from dynsel_cli.formats.sae import read_sae
from dynsel_cli.sae import fit_sae

CPU = FactorsConfig(device="cpu")
N, D, WIDTH, K = 500, 16, 40, 3
CLASSES = ["a", "b", "c", "d"]  # class "d" has no samples


def write_sharded(
    path: Path, vectors: np.ndarray, labels: np.ndarray | None, shard_rows: int, classes: list[str] | None = None
) -> Path:
    with atomic_directory(path) as tmp:
        writer = FeatureShardWriter(
            tmp, vectors.shape[1], "float32", has_labels=labels is not None, shard_rows=shard_rows
        )
        writer.add(np.arange(len(vectors)), labels, vectors)
        writer.finish({"classes": classes})
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tables")
    x = sparse_dictionary_data(N, D, 32)
    labels = np.arange(N) % 3
    write_sharded(root / "features", x, labels, shard_rows=128, classes=CLASSES)  # 4 shards
    fit_sae(root / "features", root / "sae", SaeConfig(width=WIDTH, k=K, epochs=3, batch_size=64, device="cpu"))
    build_factor_tables(root / "features", root / "sae", root / "factors", FactorsConfig(device="cpu", batch_size=50))
    return root


def test_table_schemas(run: Path) -> None:
    samples = pq.read_schema(run / "factors" / "samples.parquet")
    assert samples.names == ["id", "label", "units", "acts"]
    assert samples.field("id").type == pa.int64() and samples.field("label").type == pa.int64()
    assert samples.field("units").type == pa.list_(pa.int32(), K)
    assert samples.field("acts").type == pa.list_(pa.float32(), K)
    units = pq.read_schema(run / "factors" / "units.parquet")
    assert units.names == ["unit", "count", "frequency", "mass", "mean_act", "max_act", "dead", "class_frequency"]
    expected = [
        pa.int32(),
        pa.int64(),
        pa.float64(),
        pa.float64(),
        pa.float64(),
        pa.float64(),
        pa.bool_(),
        pa.list_(pa.float64(), len(CLASSES)),
    ]
    assert [units.field(n).type for n in units.names] == expected
    table = pq.read_table(run / "factors" / "units.parquet")
    assert table.num_rows == WIDTH and table.column("unit").to_pylist() == list(range(WIDTH))


def test_rows_stream_across_shards_in_order(run: Path) -> None:
    tables = read_factor_tables(run / "factors")
    np.testing.assert_array_equal(tables.samples.ids, np.arange(N))
    np.testing.assert_array_equal(tables.samples.labels, np.arange(N) % 3)
    units, acts = tables.samples.units, tables.samples.acts
    assert ((units == -1) == (acts == 0)).all() and (np.diff(acts, axis=1) <= 0).all()
    # the same codes when encoded in one batch
    build_factor_tables(run / "features", run / "sae", run / "one-batch", CPU)
    other = read_factor_tables(run / "one-batch")
    np.testing.assert_allclose(other.samples.acts, acts, rtol=1e-5, atol=1e-6)
    assert (other.samples.units == units).mean() > 0.99


def test_per_class_frequencies(run: Path) -> None:
    tables = read_factor_tables(run / "factors")
    cf = tables.units.class_frequency
    assert cf.shape == (WIDTH, len(CLASSES))  # one column per named class, even an empty one
    units, labels = tables.samples.units, tables.samples.labels
    for c in range(3):
        rows = units[labels == c]
        expected = np.array([(rows == j).any(axis=1).mean() for j in range(WIDTH)])
        np.testing.assert_allclose(cf[:, c], expected)
    np.testing.assert_array_equal(cf[:, 3], 0.0)
    # frequency is the class-size-weighted mean of the class frequencies
    sizes = np.bincount(labels, minlength=4)
    np.testing.assert_allclose(cf @ sizes / N, tables.units.frequency)
    assert tables.manifest["classes"] == CLASSES
    assert tables.manifest["dead_units"] == int(tables.units.dead.sum())


def test_nan_and_empty_features_are_refused(run: Path, tmp_path: Path) -> None:
    x = sparse_dictionary_data(300, D, 32)
    x[299, 0] = np.nan
    write_sharded(tmp_path / "nan", x, None, shard_rows=100)
    with pytest.raises(DynselError, match=r"NaN or Inf \(first at row 299\)"):
        build_factor_tables(tmp_path / "nan", run / "sae", tmp_path / "out", CPU, allow_foreign_sae=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_json(
        empty / "_manifest.json",
        {
            "format": "dynsel.features",
            "format_version": 1,
            "n_samples": 0,
            "dim": D,
            "dtype": "float32",
            "has_labels": False,
            "shards": [],
            "fingerprint": sha256_bytes(b""),
        },
    )
    with pytest.raises(DynselError, match="no samples"):
        build_factor_tables(empty, run / "sae", tmp_path / "out", CPU)
    with pytest.raises(DynselError, match="--batch-size 0"):
        build_factor_tables(run / "features", run / "sae", tmp_path / "out", FactorsConfig(batch_size=0, device="cpu"))
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def _tamper(sae: Path, target: Path, edit) -> Path:
    """A copy of the SAE with ``edit`` applied, its manifest checksums updated so only the content is wrong."""
    import shutil

    shutil.copytree(sae, target)
    edit(target)
    manifest = json.loads((target / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = file_entry(target / name)
    write_json(target / "manifest.json", manifest)
    return target


def test_inconsistent_checkpoints_are_refused(run: Path, tmp_path: Path) -> None:
    def short_decoder(path: Path) -> None:
        tensors = load_file(str(path / "sae.safetensors"))
        tensors["W_dec"] = tensors["W_dec"][:-1].contiguous()
        save_file(tensors, str(path / "sae.safetensors"))

    def big_k(path: Path) -> None:
        cfg = json.loads((path / "cfg.json").read_text())
        cfg["k"] = WIDTH + 1
        write_json(path / "cfg.json", cfg)

    def other_width(path: Path) -> None:
        cfg = json.loads((path / "cfg.json").read_text())
        cfg["num_latents"] = WIDTH * 2
        write_json(path / "cfg.json", cfg)

    for name, edit, message in (
        ("short", short_decoder, r"W_dec \[39, 16\] \(expected \[40, 16\]\)"),
        ("bigk", big_k, "exceeds the SAE width"),
        ("width", other_width, "say width 80"),
    ):
        bad = _tamper(run / "sae", tmp_path / name, edit)
        with pytest.raises(ArtifactError, match=message):
            read_sae(bad)
        with pytest.raises(DynselError, match=message):
            build_factor_tables(run / "features", bad, tmp_path / "out", CPU)
        assert not (tmp_path / "out").exists()


def test_cli_dimension_mismatch_is_one_line(run: Path, tmp_path: Path) -> None:
    write_sharded(tmp_path / "f8", sparse_dictionary_data(50, 8, 16), None, shard_rows=100)
    result = invoke("factors", tmp_path / "f8", "--sae", run / "sae", "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 2
    line = assert_one_line_error(result.stderr)
    assert "dimension 8" in line and "expects 16" in line
    assert not (tmp_path / "out").exists()


def test_factors_use_the_requested_device(run: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():  # on a GPU machine: same codes on cuda as on the CPU
        build_factor_tables(run / "features", run / "sae", tmp_path / "gpu", FactorsConfig(device="cuda"))
        a, b = read_factor_tables(run / "factors"), read_factor_tables(tmp_path / "gpu")
        np.testing.assert_allclose(a.samples.acts, b.samples.acts, rtol=1e-4, atol=1e-5)
        assert (a.samples.units == b.samples.units).mean() > 0.99
    else:
        with pytest.raises(DynselError, match="--device cuda"):
            build_factor_tables(run / "features", run / "sae", tmp_path / "gpu", FactorsConfig(device="cuda"))
        assert not (tmp_path / "gpu").exists()


def test_a_repeated_id_in_factor_tables_made_elsewhere_is_refused_by_plan(tmp_path) -> None:
    # factor tables written by another tool, ids out of order and one of them twice: the plan would list
    # one id for two rows, so plan refuses them with the id (exit 2)
    from dynsel_cli.errors import ArtifactError
    from dynsel_cli.formats.common import check_unique_ids

    check_unique_ids(np.array([3, 1, 2, 0]), "t")  # another order, unique: accepted
    with pytest.raises(ArtifactError, match="sample id 2 appears 2 times"):
        check_unique_ids(np.array([3, 2, 1, 2]), "t")
