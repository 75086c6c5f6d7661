"""The factors stage streams: codes go to samples.parquet and the unit statistics shard by shard, never N × k.

Row groups are shrunk (``SAMPLES_ROW_GROUP``) so that small data sets span many of them, and features are
cut into many small shards, so these runs exercise every boundary a 100M-row run crosses.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sha256_of, sparse_dictionary_data

import dynsel_cli.formats.factors as factor_format
from dynsel_cli.config import FactorsConfig
from dynsel_cli.factors import UnitStatsAccumulator, build_factor_tables
from dynsel_cli.formats.common import atomic_directory
from dynsel_cli.formats.factors import SampleTableWriter, UnitStats, read_factor_tables, write_factor_tables
from dynsel_cli.formats.features import FeatureShardWriter
from dynsel_cli.formats.sae import SaeWeights, write_sae

WIDTH, K, DIM = 24, 4, 8
CPU = FactorsConfig(device="cpu", batch_size=64)


@pytest.fixture
def small_row_groups(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(factor_format, "SAMPLES_ROW_GROUP", 100)
    return 100


def random_sae(path: Path) -> Path:
    g = torch.Generator().manual_seed(3)
    decoder = torch.randn(WIDTH, DIM, generator=g)
    weights = SaeWeights(
        encoder_weight=torch.randn(WIDTH, DIM, generator=g),
        encoder_bias=0.1 * torch.randn(WIDTH, generator=g),
        decoder_weight=decoder / decoder.norm(dim=1, keepdim=True),
        decoder_bias=torch.zeros(DIM),
        input_mean=torch.zeros(DIM),
        input_scale=torch.ones(1),
        k=K,
    )
    with atomic_directory(path) as tmp:
        write_sae(tmp, weights, {}, {"inputs": {"features": "other"}})
    return path


def features(path: Path, n: int, shard_rows: int, labelled: bool) -> Path:
    labels = (np.arange(n) * 7) % 5 if labelled else None
    with atomic_directory(path) as tmp:
        writer = FeatureShardWriter(tmp, DIM, "float32", has_labels=labelled, shard_rows=shard_rows)
        writer.add(np.arange(n), labels, sparse_dictionary_data(n, DIM, 16, seed=n))
        writer.finish({"classes": None})
    return path


def reference_statistics(units: np.ndarray, acts: np.ndarray, labels: np.ndarray | None) -> UnitStats:
    """The all-in-memory statistics (one bincount over all N × k codes)."""
    fired = units >= 0
    ids, values = units[fired].astype(np.int64), acts[fired].astype(np.float64)
    count = np.bincount(ids, minlength=WIDTH)
    mass = np.bincount(ids, weights=values, minlength=WIDTH)
    max_act = np.zeros(WIDTH)
    np.maximum.at(max_act, ids, values)
    class_frequency = None
    if labels is not None:
        classes = int(labels.max()) + 1
        row_labels = np.broadcast_to(labels[:, None], units.shape)[fired]
        joint = np.bincount(row_labels * WIDTH + ids, minlength=classes * WIDTH).reshape(classes, WIDTH)
        sizes = np.bincount(labels, minlength=classes)[:, None]
        class_frequency = np.divide(joint, sizes, out=np.zeros(joint.shape), where=sizes > 0).T
    return UnitStats(
        count,
        count / len(units),
        mass,
        np.divide(mass, count, out=np.zeros(WIDTH), where=count > 0),
        max_act,
        class_frequency,
    )


@pytest.mark.parametrize("labelled", [True, False])
def test_a_many_shard_many_row_group_run_equals_the_in_memory_tables(
    tmp_path: Path, small_row_groups: int, labelled: bool
) -> None:
    sae = random_sae(tmp_path / "sae")
    n = 1037  # 11 row groups, the last one partial
    runs = {}
    for shard_rows in (64, 192, 4096):
        source = features(tmp_path / f"features-{shard_rows}", n, shard_rows, labelled)
        runs[shard_rows] = build_factor_tables(
            source, sae, tmp_path / f"factors-{shard_rows}", CPU, allow_foreign_sae=True
        )
    # shards of whole batches: the same products, so the tables are the same bytes however the rows arrive
    digests = {
        shard_rows: [
            sha256_of(tmp_path / f"factors-{shard_rows}" / name) for name in ("samples.parquet", "units.parquet")
        ]
        for shard_rows in runs
    }
    assert digests[64] == digests[192] == digests[4096]

    tables = read_factor_tables(tmp_path / "factors-64")
    codes = tables.samples
    assert tables.n_samples == n and (codes.labels is not None) == labelled
    with atomic_directory(tmp_path / "in-memory") as tmp:
        write_factor_tables(tmp, codes, reference_statistics(codes.units, codes.acts, codes.labels), {})
    assert sha256_of(tmp_path / "in-memory" / "samples.parquet") == digests[64][0]
    expected = reference_statistics(codes.units, codes.acts, codes.labels)
    np.testing.assert_array_equal(tables.units.count, expected.count)
    np.testing.assert_allclose(tables.units.mass, expected.mass, rtol=1e-12)
    np.testing.assert_array_equal(tables.units.mass, expected.mass)  # added in the same order: the same float64s
    np.testing.assert_array_equal(tables.units.max_act, expected.max_act)
    np.testing.assert_array_equal(tables.units.frequency, expected.frequency)
    if labelled:
        np.testing.assert_array_equal(tables.units.class_frequency, expected.class_frequency)
    assert sha256_of(tmp_path / "in-memory" / "units.parquet") == digests[64][1]


def test_the_writer_and_the_statistics_are_fed_shard_by_shard(
    tmp_path: Path, small_row_groups: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed: list[int] = []
    add = SampleTableWriter.add
    monkeypatch.setattr(
        SampleTableWriter, "add", lambda self, samples: (fed.append(len(samples.ids)), add(self, samples))[1]
    )
    build_factor_tables(
        features(tmp_path / "features", 1000, 128, True),
        random_sae(tmp_path / "sae"),
        tmp_path / "factors",
        CPU,
        allow_foreign_sae=True,
    )
    assert fed == [128] * 7 + [104]


def test_accumulating_in_chunks_gives_the_statistics_of_one_pass() -> None:
    rng = np.random.default_rng(0)
    units = rng.integers(-1, WIDTH, (5000, K)).astype(np.int32)
    acts = np.where(units >= 0, rng.random((5000, K)), 0).astype(np.float32)
    labels = rng.integers(0, 3, 5000)
    labels[4000:] = 6  # a class first seen late; classes 3..5 never
    stats = UnitStatsAccumulator(WIDTH, has_labels=True, n_classes=2)
    for start in (0, 1, 999, 1000, 3333, 4999):  # uneven chunks, one of a single row, one empty
        stop = {0: 1, 1: 999, 999: 1000, 1000: 3333, 3333: 4999, 4999: 5000}[start]
        stats.add(units[start:stop], acts[start:stop], labels[start:stop])
    stats.add(units[:0], acts[:0], labels[:0])
    got, expected = stats.finish(), reference_statistics(units, acts, labels)
    for name in ("count", "frequency", "mass", "mean_act", "max_act", "class_frequency"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.class_frequency.shape == (WIDTH, 7) and not got.class_frequency[:, 3:6].any()


def _peak_bytes(tmp_path: Path, n: int) -> int:
    source = features(tmp_path / f"features-{n}", n, 5000, True)
    sae = random_sae(tmp_path / f"sae-{n}")
    tracemalloc.start()
    try:
        build_factor_tables(source, sae, tmp_path / f"factors-{n}", CPU, allow_foreign_sae=True)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_number_of_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factor_format, "SAMPLES_ROW_GROUP", 512)
    small, large = (
        _peak_bytes(tmp_path, 50_000),
        _peak_bytes(tmp_path, 150_000),
    )  # both hash samples.parquet through a full 1 MiB buffer
    codes_growth = (150_000 - 50_000) * (8 + 8 + K * (4 + 4))  # what N × k codes (ids, labels, units, acts) would add
    assert large - small < codes_growth / 4, (small, large, codes_growth)
