"""The factors stage: SAE codes → sample factor table and unit statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sha256_of, sparse_dictionary_data, tree_digests, write_features_dir

from dynsel_cli.config import FactorsConfig, SaeConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.factors import build_factor_tables, encode_codes, unit_statistics
from dynsel_cli.formats.factors import read_factor_tables
from dynsel_cli.formats.sae import SaeWeights, read_sae
from dynsel_cli.sae import fit_sae

CPU = FactorsConfig(device="cpu")


def hand_sae() -> SaeWeights:
    """6 units on 4-d inputs: units 0/1 read +x0/+x1, units 2/3 read -x0/-x1, units 4/5 read x2/x3."""
    encoder = torch.tensor(
        [[1, 0, 0, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float32
    )
    return SaeWeights(
        encoder_weight=encoder,
        encoder_bias=torch.zeros(6),
        decoder_weight=encoder.clone(),
        decoder_bias=torch.zeros(4),
        input_mean=torch.zeros(4),
        input_scale=torch.ones(1),
        k=4,
    )


def test_units_are_minus_one_where_the_activation_is_zero() -> None:
    x = np.array([[2, 1, 0, 0], [-1, 0, 3, 0], [0, 0, 0, 0], [1, -2, 0.5, 4]], dtype=np.float32)
    units, acts = encode_codes(x, hand_sae(), CPU)
    assert units.dtype == np.int32 and acts.dtype == np.float32 and units.shape == acts.shape == (4, 4)
    np.testing.assert_array_equal(units[0], [0, 1, -1, -1])
    np.testing.assert_array_equal(acts[0], [2, 1, 0, 0])
    np.testing.assert_array_equal(units[1], [4, 2, -1, -1])
    np.testing.assert_array_equal(acts[1], [3, 1, 0, 0])
    np.testing.assert_array_equal(units[2], [-1, -1, -1, -1])  # nothing fires
    np.testing.assert_array_equal(acts[2], [0, 0, 0, 0])
    np.testing.assert_array_equal(units[3], [5, 3, 0, 4])  # largest first: 4, 2, 1, 0.5
    np.testing.assert_array_equal(acts[3], [4, 2, 1, 0.5])
    assert ((units == -1) == (acts == 0)).all()


def test_unit_statistics_on_a_tiny_example() -> None:
    units = np.array([[0, 1], [1, -1], [2, 0]], dtype=np.int32)
    acts = np.array([[2.0, 1.0], [3.0, 0.0], [1.0, 0.5]], dtype=np.float32)
    labels = np.array([0, 1, 1])
    stats = unit_statistics(units, acts, width=4, labels=labels)
    np.testing.assert_array_equal(stats.count, [2, 2, 1, 0])
    np.testing.assert_allclose(stats.frequency, [2 / 3, 2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(stats.mass, [2.5, 4.0, 1.0, 0.0])
    np.testing.assert_allclose(stats.mean_act, [1.25, 2.0, 1.0, 0.0])
    np.testing.assert_allclose(stats.max_act, [2.0, 3.0, 1.0, 0.0])
    np.testing.assert_array_equal(stats.dead, [False, False, False, True])
    # [unit, class]: class 0 is sample 0 (units 0, 1); class 1 is samples 1 (unit 1) and 2 (units 2, 0)
    np.testing.assert_allclose(stats.class_frequency, [[1.0, 0.5], [1.0, 0.5], [0.0, 0.5], [0.0, 0.0]])
    assert stats.class_frequency.shape == (4, 2)
    assert unit_statistics(units, acts, width=4).class_frequency is None


def test_unit_statistics_with_an_empty_class() -> None:
    stats = unit_statistics(
        np.array([[0], [1]], dtype=np.int32), np.array([[1.0], [2.0]], dtype=np.float32), 2, labels=np.array([0, 2])
    )
    np.testing.assert_allclose(stats.class_frequency, [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------- the stage on small data


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("factors")
    vectors = sparse_dictionary_data(400, 16, 32)
    labels = np.arange(400) % 3
    write_features_dir(root / "features", vectors, labels, classes=["a", "b", "c"])
    fit_sae(root / "features", root / "sae", SaeConfig(width=32, k=3, epochs=3, batch_size=64, seed=0, device="cpu"))
    build_factor_tables(root / "features", root / "sae", root / "factors", CPU)
    return root


def test_factor_tables_of_a_small_run(small_run: Path) -> None:
    tables = read_factor_tables(small_run / "factors")
    weights, sae_manifest = read_sae(small_run / "sae")
    features_manifest = json.loads((small_run / "features" / "_manifest.json").read_text())
    assert tables.n_samples == 400 and tables.samples.units.shape == (400, 3)
    np.testing.assert_array_equal(tables.samples.ids, np.arange(400))
    np.testing.assert_array_equal(tables.samples.labels, np.arange(400) % 3)
    m = tables.manifest
    assert m["inputs"] == {"features": features_manifest["fingerprint"], "sae": sae_manifest["fingerprint"]}
    assert m["sae_trained_on_these_features"] is True and m["classes"] == ["a", "b", "c"]
    assert m["width"] == 32 and m["k"] == 3 and m["dead_units"] == int((tables.units.count == 0).sum())

    # The codes are the SAE's top-k of the normalised features, computed here independently.
    x = sparse_dictionary_data(400, 16, 32)
    xn = (torch.from_numpy(x) - weights.input_mean) / weights.input_scale
    pre = torch.relu((xn - weights.decoder_bias) @ weights.encoder_weight.T + weights.encoder_bias)
    values, indices = pre.topk(3, dim=1)
    np.testing.assert_allclose(tables.samples.acts, values.numpy(), rtol=1e-5, atol=1e-6)
    agree = (tables.samples.units == np.where(values.numpy() > 0, indices.numpy(), -1)).mean()
    assert agree > 0.99  # (near-)ties may order differently


def test_unit_table_matches_the_sample_table(small_run: Path) -> None:
    tables = read_factor_tables(small_run / "factors")
    expected = unit_statistics(tables.samples.units, tables.samples.acts, 32, tables.samples.labels)
    for name in ("count", "frequency", "mass", "mean_act", "max_act", "class_frequency"):
        np.testing.assert_allclose(getattr(tables.units, name), getattr(expected, name), rtol=1e-12, err_msg=name)


def test_factors_are_deterministic(small_run: Path, tmp_path: Path) -> None:
    build_factor_tables(small_run / "features", small_run / "sae", tmp_path / "again", CPU)
    assert tree_digests(tmp_path / "again") == tree_digests(small_run / "factors")
    # the batch size is a speed knob: codes agree (to float rounding of the batched product)
    build_factor_tables(
        small_run / "features", small_run / "sae", tmp_path / "batched", FactorsConfig(device="cpu", batch_size=7)
    )
    a, b = read_factor_tables(small_run / "factors"), read_factor_tables(tmp_path / "batched")
    np.testing.assert_allclose(a.samples.acts, b.samples.acts, rtol=1e-5, atol=1e-6)
    assert (a.samples.units == b.samples.units).mean() > 0.99


def test_sae_of_other_dimension_is_refused(small_run: Path, tmp_path: Path) -> None:
    write_features_dir(tmp_path / "features8", sparse_dictionary_data(40, 8, 16))
    with pytest.raises(DynselError, match="dimension 8 but the SAE.* expects 16"):
        build_factor_tables(tmp_path / "features8", small_run / "sae", tmp_path / "factors", CPU)
    assert not (tmp_path / "factors").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".factors.")] == []


def test_sae_trained_on_other_features_is_refused_unless_allowed_and_then_recorded(
    small_run: Path, tmp_path: Path
) -> None:
    write_features_dir(tmp_path / "other", sparse_dictionary_data(50, 16, 32, seed=5))
    with pytest.raises(DynselError, match="trained on other features .* --allow-foreign-sae"):
        build_factor_tables(tmp_path / "other", small_run / "sae", tmp_path / "factors", CPU)
    assert not (tmp_path / "factors").exists()
    manifest = build_factor_tables(
        tmp_path / "other", small_run / "sae", tmp_path / "factors", CPU, allow_foreign_sae=True
    )
    assert manifest["sae_trained_on_these_features"] is False
    assert manifest["n_samples"] == 50 and manifest["has_labels"] is False


def test_factors_refuses_non_artifacts(small_run: Path, tmp_path: Path) -> None:
    with pytest.raises(DynselError, match="not a features directory"):
        build_factor_tables(tmp_path / "missing", small_run / "sae", tmp_path / "factors", CPU)
    with pytest.raises(DynselError, match="not a dynsel SAE checkpoint"):
        build_factor_tables(small_run / "features", small_run / "factors", tmp_path / "factors", CPU)


# ----------------------------------------------------------------------------- the real sample pipeline


def test_sample_run_factor_tables(pipeline_run, factor_tables, sample_arrays) -> None:
    tables = factor_tables
    n, k = tables.samples.units.shape
    width = tables.manifest["width"]
    assert n == 2000 and k == 32 and width == 512  # auto width for 2000 samples
    np.testing.assert_array_equal(tables.samples.ids, np.arange(n))
    np.testing.assert_array_equal(tables.samples.labels, sample_arrays["y_train"])
    assert tables.manifest["classes"] == [str(c) for c in sample_arrays["class_names"]]
    units, acts = tables.samples.units, tables.samples.acts
    assert ((units >= -1) & (units < width)).all()
    assert ((units == -1) == (acts == 0)).all() and (acts >= 0).all()
    assert (np.diff(acts, axis=1) <= 0).all()  # largest first
    fired = units[units >= 0]
    rows = np.repeat(np.arange(n), k)[(units >= 0).ravel()]
    assert len(np.unique(rows * width + fired)) == len(fired)  # no unit twice in a sample
    count = np.bincount(fired, minlength=width)
    np.testing.assert_array_equal(tables.units.count, count)
    np.testing.assert_allclose(tables.units.frequency, count / n)
    assert (
        tables.manifest["inputs"]["sae"] == json.loads((pipeline_run.sae / "manifest.json").read_text())["fingerprint"]
    )
    assert (
        tables.manifest["inputs"]["features"]
        == json.loads((pipeline_run.features / "_manifest.json").read_text())["fingerprint"]
    )
    assert tables.fingerprint == sha256_of(pipeline_run.factors / "samples.parquet")
