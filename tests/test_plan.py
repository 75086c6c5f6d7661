"""The plan stage: exact budgets, every method's invariants, scheduler, penalty, quotas, determinism.

Uses the factor tables of the session's real pipeline run (2000 Fashion-MNIST samples, 10 balanced
classes); each plan here costs ~0.1 s.
"""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from conftest import tree_digests

from dynsel_cli import read_plan
from dynsel_cli.config import PlanConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.factors import unit_statistics
from dynsel_cli.formats.factors import FactorTables, SampleFactors
from dynsel_cli.formats.features import read_features
from dynsel_cli.plan import build_plan, compute_plan
from dynsel_cli.plan.budget import class_quotas, epoch_budget
from dynsel_cli.plan.schedule import scheduler_weights
from dynsel_cli.plan.scores import normalise, representativeness_and_rarity

N = 2000
BASE = PlanConfig(
    epochs=4, ratio=0.3, seed=0, method="score", device="cpu"
)  # the scored method; dynsel and rs2: test_rotation.py
SET_METHODS = ("score", "dynsel", "rs2", "random", "static-random", "static-top")
GEOMETRIC = ("knn-density", "kcenter")


def exact_budget(ratio: float, n: int) -> int:
    """ceil(ratio · n) with the ratio read as the decimal the user typed."""
    return math.ceil(Decimal(repr(ratio)) * n)


def check_epoch(epoch: np.ndarray, n: int, count: int) -> None:
    assert epoch.dtype == np.int64
    assert len(epoch) == count, (len(epoch), count)
    assert len(np.unique(epoch)) == count, "duplicate ids in an epoch"
    assert epoch.min() >= 0 and epoch.max() < n


@pytest.fixture(scope="module")
def features(pipeline_run):
    return read_features(pipeline_run.features)


def plan_epochs(tables, config: PlanConfig, features=None) -> list[np.ndarray]:
    return compute_plan(tables, config, features=features).epochs


# ----------------------------------------------------------------------------------------------- budgets


@pytest.mark.parametrize(
    ("ratio", "n", "budget"),
    [
        (0.3, 2000, 600),
        (0.1, 3, 1),
        (0.5, 2000, 1000),
        (0.7, 2000, 1400),
        (0.333, 2000, 666),
        (0.07, 100, 7),
        (0.14, 100, 14),
        (0.7, 10, 7),
        (1.0, 5, 5),
        (1e-9, 2000, 1),
        (0.5, 1, 1),
        (0.999, 1000, 999),
    ],
)
def test_epoch_budget_is_exact(ratio: float, n: int, budget: int) -> None:
    assert epoch_budget(ratio, n) == budget == exact_budget(ratio, n)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_epoch_budget_refuses_bad_ratios(ratio: float) -> None:
    with pytest.raises(DynselError, match="--ratio"):
        epoch_budget(ratio, 100)


def test_class_quotas() -> None:
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    # shares 2.5, 1.5, 1.0 → floors 2, 1, 1; the one left over goes to the tied remainder with the lower id
    np.testing.assert_array_equal(class_quotas(labels, 5), [3, 1, 1])
    np.testing.assert_array_equal(class_quotas(labels, 10), [5, 3, 2])
    np.testing.assert_array_equal(class_quotas(labels, 1), [1, 0, 0])
    balanced = np.repeat(np.arange(10), 200)
    quotas = class_quotas(balanced, 666)
    np.testing.assert_array_equal(quotas, [67] * 6 + [66] * 4)
    assert quotas.sum() == 666


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7, 0.333])
def test_every_epoch_holds_exactly_ceil_ratio_n_distinct_ids(pipeline_run, ratio: float, tmp_path: Path) -> None:
    build_plan(pipeline_run.factors, tmp_path / "plan", replace(BASE, ratio=ratio, epochs=3))
    plan = read_plan(tmp_path / "plan")
    budget = exact_budget(ratio, N)
    assert plan.counts == [budget] * 3 and plan.manifest["budget"] == budget and plan.n_samples == N
    for epoch in plan.epochs:
        check_epoch(epoch, N, budget)


def test_float_ceil_trap_on_a_subset(factor_tables) -> None:
    """0.07 · 100 is 7.000000000000001 in floats: the plan must still hold exactly 7 per epoch."""
    sub = subset(factor_tables, 100)
    for ratio, budget in ((0.07, 7), (0.14, 14), (0.55, 55), (0.56, 56)):
        for method in ("dynsel", "random", "static-top"):
            for epoch in plan_epochs(sub, replace(BASE, ratio=ratio, method=method)):
                check_epoch(epoch, 100, budget)


def subset(tables: FactorTables, n: int) -> FactorTables:
    """The first n samples of a factor table, with unit statistics recomputed."""
    s = tables.samples
    samples = SampleFactors(
        ids=s.ids[:n], labels=None if s.labels is None else s.labels[:n], units=s.units[:n], acts=s.acts[:n]
    )
    units = unit_statistics(samples.units, samples.acts, len(tables.units.count), samples.labels)
    return FactorTables(path=tables.path, manifest=tables.manifest, samples=samples, units=units)


# --------------------------------------------------------------------------------------- every method


@pytest.mark.parametrize("method", [*SET_METHODS, "full", *GEOMETRIC])
def test_method_invariants_and_determinism(factor_tables, features, method: str) -> None:
    config = replace(BASE, method=method)
    feats = features if method in GEOMETRIC else None
    epochs = plan_epochs(factor_tables, config, feats)
    assert len(epochs) == 4
    count = N if method == "full" else 600
    for epoch in epochs:
        check_epoch(epoch, N, count)
        assert (np.diff(epoch) < 0).any(), "epochs are shuffled into training order, not sorted"
    again = plan_epochs(factor_tables, config, feats)
    assert all(np.array_equal(a, b) for a, b in zip(epochs, again))
    if method != "kcenter":  # (k-center's PCA costs seconds; the order's seed is shared by all methods)
        other_seed = plan_epochs(factor_tables, replace(config, seed=1), feats)
        assert any(not np.array_equal(a, b) for a, b in zip(epochs, other_seed))

    sets = [frozenset(e.tolist()) for e in epochs]
    if method in ("static-random", "static-top", "full", *GEOMETRIC):
        assert len(set(sets)) == 1, "a static method selects the same set every epoch"
        assert not np.array_equal(epochs[0], epochs[1]), "... but in a new order each epoch"
    else:
        assert len(set(sets)) == 4, "a dynamic method changes its set every epoch"


def test_static_top_selects_the_most_representative(factor_tables) -> None:
    r, _ = representativeness_and_rarity(factor_tables, "rank", "cpu")
    chosen = set(plan_epochs(factor_tables, replace(BASE, method="static-top", class_quota="none"))[0].tolist())
    mask = np.zeros(N, bool)
    mask[list(chosen)] = True
    assert r[mask].min() >= r[~mask].max()
    # dynsel's first epoch with λ = 0 (no usage yet) is the same top-R selection
    first = plan_epochs(factor_tables, replace(BASE, class_quota="none", lambda_start=0.0))[0]
    assert set(first.tolist()) == chosen


def test_seed_only_reorders_a_deterministic_plan(factor_tables) -> None:
    """With τ = 0 the selection is a pure top-k: the seed changes only the order within each epoch."""
    a = plan_epochs(factor_tables, BASE)
    b = plan_epochs(factor_tables, replace(BASE, seed=7))
    for x, y in zip(a, b):
        assert set(x.tolist()) == set(y.tolist()) and not np.array_equal(x, y)
    noisy = [plan_epochs(factor_tables, replace(BASE, tau=0.3, seed=s)) for s in (0, 1)]
    assert set(noisy[0][0].tolist()) != set(noisy[1][0].tolist())


def test_full_epochs_are_full(factor_tables) -> None:
    epochs = plan_epochs(factor_tables, replace(BASE, epochs=5, full_epochs=2))
    for epoch in epochs[:3]:
        check_epoch(epoch, N, 600)
    for epoch in epochs[3:]:
        check_epoch(epoch, N, N)
        np.testing.assert_array_equal(np.sort(epoch), np.arange(N))
    assert not np.array_equal(epochs[3], epochs[4])
    result = compute_plan(factor_tables, replace(BASE, epochs=5, full_epochs=2))
    assert result.manifest_extra["schedule"]["lambda"][3:] == [None, None]
    all_full = plan_epochs(factor_tables, replace(BASE, epochs=2, full_epochs=2))
    assert [len(e) for e in all_full] == [N, N]


def test_ratio_one_selects_everything(factor_tables) -> None:
    for epoch in plan_epochs(factor_tables, replace(BASE, ratio=1.0)):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(N))


# ------------------------------------------------------------------------------------------ class quotas


@pytest.mark.parametrize("method", ["dynsel", "static-top", "knn-density"])
@pytest.mark.parametrize("ratio", [0.3, 0.333])
def test_class_quotas_are_met_exactly(factor_tables, features, method: str, ratio: float) -> None:
    labels = factor_tables.samples.labels
    quotas = class_quotas(labels, epoch_budget(ratio, N))
    feats = features if method in GEOMETRIC else None
    for epoch in plan_epochs(
        factor_tables,
        replace(BASE, ratio=ratio, method=method, tau=0.2 if method == "score" else 0.0, class_quota="proportional"),
        feats,
    ):
        np.testing.assert_array_equal(np.bincount(labels[epoch], minlength=10), quotas)


@pytest.mark.parametrize("method", ["random", "static-random"])
def test_class_quotas_for_the_baselines(factor_tables, features, method: str) -> None:
    labels = factor_tables.samples.labels
    quotas = class_quotas(labels, epoch_budget(0.333, N))
    feats = features if method in GEOMETRIC else None
    for epoch in plan_epochs(factor_tables, replace(BASE, ratio=0.333, method=method), feats):
        np.testing.assert_array_equal(np.bincount(labels[epoch], minlength=10), quotas)


def test_without_quotas_the_budget_is_still_exact(factor_tables) -> None:
    for epoch in plan_epochs(factor_tables, replace(BASE, ratio=0.333, class_quota="none")):
        check_epoch(epoch, N, 666)


# ------------------------------------------------------------------------------- scheduler and scores


def test_scheduler_weights_at_known_points() -> None:
    cosine = scheduler_weights("cosine", 0.0, 1.0, 5)
    assert cosine == pytest.approx([0.0, (1 - math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(math.pi / 4)) / 2, 1.0])
    assert cosine[1] == pytest.approx(0.1464466, abs=1e-6)
    assert scheduler_weights("linear", 0.0, 1.0, 5) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert scheduler_weights("linear", 0.2, 0.6, 3) == pytest.approx([0.2, 0.4, 0.6])
    assert scheduler_weights("cosine", 1.0, 0.0, 3) == pytest.approx([1.0, 0.5, 0.0])
    assert scheduler_weights("step", 0.1, 0.9, 4) == [0.1, 0.1, 0.9, 0.9]
    assert scheduler_weights("step", 0.1, 0.9, 5) == [0.1, 0.1, 0.1, 0.9, 0.9]
    assert scheduler_weights("constant", 0.3, 0.9, 4) == [0.3] * 4
    for kind in ("cosine", "linear", "step", "constant"):
        assert scheduler_weights(kind, 0.25, 1.0, 1) == [0.25]
        assert scheduler_weights(kind, 0.25, 1.0, 0) == []
    with pytest.raises(DynselError, match="--schedule 'exp'"):
        scheduler_weights("exp", 0.0, 1.0, 3)
    with pytest.raises(DynselError, match="--lambda-start 1.5"):
        scheduler_weights("cosine", 1.5, 1.0, 3)
    with pytest.raises(DynselError, match="--lambda-end -0.1"):
        scheduler_weights("cosine", 0.0, -0.1, 3)


def test_plan_manifest_records_the_schedule(factor_tables) -> None:
    extra = compute_plan(
        factor_tables, replace(BASE, epochs=6, schedule="linear", lambda_start=0.0, lambda_end=1.0)
    ).manifest_extra
    assert extra["schedule"] == {"kind": "linear", "lambda": pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])}
    assert compute_plan(factor_tables, replace(BASE, method="random")).manifest_extra["schedule"] is None


def test_normalise_rank_with_ties() -> None:
    got = normalise(np.array([10.0, 20.0, 20.0, 30.0]), "rank")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(normalise(np.array([3.0, 1.0, 2.0, 1.0, 1.0]), "rank"), [1.0, 0.25, 0.75, 0.25, 0.25])
    np.testing.assert_allclose(normalise(np.array([5.0, -5.0, 0.0, 1000.0]), "rank"), [2 / 3, 0, 1 / 3, 1])
    np.testing.assert_allclose(normalise(np.array([0.0, 1.0, 4.0]), "minmax"), [0.0, 0.25, 1.0])
    np.testing.assert_array_equal(normalise(np.array([2.0, 2.0, 2.0]), "rank"), [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(normalise(np.array([2.0, 2.0]), "minmax"), [0.5, 0.5])
    assert len(normalise(np.array([]), "rank")) == 0
    with pytest.raises(DynselError, match="--normalise 'zscore'"):
        normalise(np.array([1.0, 2.0]), "zscore")


def test_scores_are_in_unit_interval_and_differ(factor_tables) -> None:
    r, d = representativeness_and_rarity(factor_tables, "rank", "cpu")
    assert r.shape == d.shape == (N,) and r.min() >= 0 and r.max() <= 1 and d.min() >= 0 and d.max() <= 1
    assert r.max() == 1.0 and r.min() == 0.0
    # R weights frequent factors, D rare ones: strongly anti-correlated on real data (−0.97 was measured on Fashion-MNIST)
    assert np.corrcoef(r, d)[0, 1] < -0.5


# ----------------------------------------------------------------------------------------------- penalty


def usage_counts(epochs: list[np.ndarray]) -> np.ndarray:
    counts = np.zeros(N, dtype=np.int64)
    for epoch in epochs:
        counts[epoch] += 1
    return counts


def test_usage_frequency_penalty_rotates_samples(factor_tables) -> None:
    config = PlanConfig(epochs=6, ratio=0.5, seed=0, method="score", device="cpu")
    with_penalty = usage_counts(plan_epochs(factor_tables, replace(config, beta=1.0)))
    without = plan_epochs(factor_tables, replace(config, penalty="none", tau=0.0, schedule="constant"))
    no_penalty = usage_counts(without)
    print(f"usage std with penalty {with_penalty.std():.3f}, without {no_penalty.std():.3f}")
    print(
        f"usage histogram with penalty {np.bincount(with_penalty, minlength=7).tolist()}, without {np.bincount(no_penalty, minlength=7).tolist()}"
    )
    assert with_penalty.max() < 6, "with the penalty no sample is selected in every epoch"
    assert all(set(e.tolist()) == set(without[0].tolist()) for e in without), (
        "no penalty, τ = 0, constant λ: the same set repeats"
    )
    assert no_penalty.std() == pytest.approx(3.0)  # 1000 samples used 6 times, 1000 never
    assert with_penalty.std() < no_penalty.std() / 3
    multiplicative = usage_counts(
        plan_epochs(factor_tables, replace(config, penalty="multiplicative", schedule="constant"))
    )
    assert multiplicative.std() < no_penalty.std()


# --------------------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ratio": 0.0}, "--ratio"),
        ({"ratio": 1.5}, "--ratio"),
        ({"epochs": 0}, "--epochs 0"),
        ({"method": "bogus"}, "--method 'bogus'"),
        ({"full_epochs": 5}, "--full-epochs 5"),
        ({"full_epochs": -1}, "--full-epochs -1"),
        ({"penalty": "square"}, "--penalty 'square'"),
        ({"beta": -1.0}, "--beta"),
        ({"tau": -0.5}, "--tau"),
        ({"decay": 0.0}, "--decay"),
        ({"schedule": "exp"}, "--schedule"),
        ({"lambda_end": 2.0}, "--lambda-end"),
        ({"normalise": "zscore"}, "--normalise"),
        ({"seed": -1}, "--seed"),
        ({"batch_size": 0}, "--batch-size"),
    ],
)
def test_invalid_options_are_refused(pipeline_run, factor_tables, tmp_path: Path, changes: dict, message: str) -> None:
    config = replace(BASE, **changes)
    with pytest.raises(DynselError, match=message.replace("'", ".")):
        compute_plan(factor_tables, config)
    with pytest.raises(DynselError):
        build_plan(pipeline_run.factors, tmp_path / "plan", config)
    assert list(tmp_path.iterdir()) == []


def test_geometric_methods_need_the_features(pipeline_run, factor_tables) -> None:
    with pytest.raises(DynselError, match="--features"):
        compute_plan(factor_tables, replace(BASE, method="kcenter"))


# ---------------------------------------------------------------------------------------- determinism


def test_same_inputs_give_byte_identical_plans(pipeline_run, tmp_path: Path) -> None:
    config = PlanConfig(epochs=6, ratio=0.5, seed=0)  # what the session's `dynsel run` used
    build_plan(pipeline_run.factors, tmp_path / "a", config)
    build_plan(pipeline_run.factors, tmp_path / "b", config)
    digests = tree_digests(tmp_path / "a")
    assert len(digests) == 1 + 2 + 1 + 6 + 1  # manifest, indices/offsets, parquet, 6 text files, signals.parquet
    assert tree_digests(tmp_path / "b") == digests
    # ... and identical, manifest included, to the plan `dynsel run` wrote with the same settings
    assert tree_digests(pipeline_run.plan) == digests

    build_plan(pipeline_run.factors, tmp_path / "c", replace(config, seed=1))
    assert (tmp_path / "c" / "indices.bin").read_bytes() != (tmp_path / "a" / "indices.bin").read_bytes()
    assert read_plan(tmp_path / "c").sha256 != read_plan(tmp_path / "a").sha256


def test_plan_manifest_contents(pipeline_run, factor_tables, tmp_path: Path) -> None:
    build_plan(pipeline_run.factors, tmp_path / "plan", replace(BASE, batch_size=128))
    plan = read_plan(tmp_path / "plan")
    m = plan.manifest
    assert m["method"] == "score" and m["ratio"] == 0.3 and m["seed"] == 0 and m["epochs"] == 4
    assert m["steps_per_epoch"] == [5] * 4 and m["total_steps"] == 20  # ceil(600 / 128) = 5
    assert m["inputs"]["factors"] == factor_tables.fingerprint
    assert m["dataset_fingerprint"] == factor_tables.manifest["inputs"]["features"]
    assert m["classes"] == factor_tables.manifest["classes"]
    assert "device" not in m["settings"] and m["settings"]["ratio"] == 0.3
