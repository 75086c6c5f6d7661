"""Rotation selectors and the factor signals behind dynsel's default method.

- ``rs2``: exact budgets, no repeat before a full pass, stratified counts, determinism;
- weighted rotation: exposure proportional to the weights; equal weights behave as RS2;
- signals, on hand-built factor tables where the right answer is known: exact and near-duplicate groups
  share one turn, a sample labelled against all its factor neighbours is suspected, and nothing is
  suspected when the factors carry no label information.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dynsel_cli.config import PlanConfig
from dynsel_cli.factors import unit_statistics
from dynsel_cli.formats.factors import FactorTables, SampleFactors
from dynsel_cli.plan import compute_plan
from dynsel_cli.plan.budget import balanced_class_quotas, class_quotas
from dynsel_cli.plan.rotation import rs2_epochs, weighted_rotation_epochs
from dynsel_cli.plan.signals import compute_signals, connected_groups


def _usage(epochs: list[np.ndarray], n: int) -> np.ndarray:
    counts = np.zeros(n, dtype=np.int64)
    for epoch in epochs:
        counts[epoch] += 1
    return counts


# ---------------------------------------------------------------------------------------------------- rs2


@pytest.mark.parametrize(("n", "budget"), [(10, 3), (100, 50), (97, 30), (50, 50), (7, 1)])
def test_rs2_takes_the_budget_and_repeats_nobody_before_a_full_pass(n: int, budget: int) -> None:
    epochs = list(rs2_epochs(n, budget, 12, seed=3))
    for epoch in epochs:
        assert len(epoch) == budget and len(np.unique(epoch)) == budget
        assert np.all(np.diff(epoch) > 0)
    # no sample comes back before every sample has been seen: after every epoch, usage differs by <= 1
    for t in range(1, len(epochs) + 1):
        counts = _usage(epochs[:t], n)
        assert counts.max() - counts.min() <= 1, t


def test_rs2_is_stratified_under_quotas_and_deterministic() -> None:
    labels = np.repeat(np.arange(3), [60, 30, 10])
    quotas = class_quotas(labels, 40)
    epochs = list(rs2_epochs(100, 40, 9, seed=1, labels=labels, quotas=quotas))
    for epoch in epochs:
        np.testing.assert_array_equal(np.bincount(labels[epoch], minlength=3), quotas)
    for c in range(3):
        usage = _usage(epochs, 100)[labels == c]
        assert usage.max() - usage.min() <= 1  # each class rotates through all of its members
    again = list(rs2_epochs(100, 40, 9, seed=1, labels=labels, quotas=quotas))
    other = list(rs2_epochs(100, 40, 9, seed=2, labels=labels, quotas=quotas))
    assert all(np.array_equal(a, b) for a, b in zip(epochs, again))
    assert not all(np.array_equal(a, b) for a, b in zip(epochs, other))


def test_balanced_quotas_share_equally_and_cap_small_classes() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 10, 2])
    np.testing.assert_array_equal(balanced_class_quotas(labels, 80), [34, 34, 10, 2])
    np.testing.assert_array_equal(
        balanced_class_quotas(labels, 40), [14, 14, 10, 2]
    )  # the full classes' leftover is shared
    np.testing.assert_array_equal(balanced_class_quotas(labels, 162), [100, 50, 10, 2])
    assert balanced_class_quotas(labels, 7).sum() == 7


# -------------------------------------------------------------------------------------- weighted rotation


def test_equal_weights_rotate_like_rs2() -> None:
    epochs = list(weighted_rotation_epochs(np.ones(90), 30, 9, seed=0))
    counts = np.zeros(90, dtype=np.int64)
    for t, epoch in enumerate(epochs):
        assert len(np.unique(epoch)) == 30
        counts[epoch] += 1
        if (t + 1) % 3 == 0:  # a pass is 3 epochs: after each, everyone was drawn equally often
            assert np.all(counts == (t + 1) // 3)


def test_exposure_follows_the_weights() -> None:
    weights = np.ones(1000)
    weights[:100] = 0.1
    counts = _usage(list(weighted_rotation_epochs(weights, 500, 40, seed=0)), 1000)
    ratio = counts[:100].mean() / counts[100:].mean()
    assert 0.08 < ratio < 0.12, ratio


def test_uniform_weights_need_no_array_and_rotate_like_ones() -> None:
    labels = np.repeat([0, 1, 2], 30)
    quotas = class_quotas(labels, 30)
    for lab, quota in ((None, None), (labels, quotas)):
        ones = list(weighted_rotation_epochs(np.ones(90), 30, 9, 5, lab, quota))
        uniform = list(weighted_rotation_epochs(None, 30, 9, 5, lab, quota, n=90))
        assert [e.tolist() for e in uniform] == [e.tolist() for e in ones]
    with pytest.raises(ValueError, match="number of rows"):
        next(weighted_rotation_epochs(None, 1, 1, seed=0))


def test_rotation_refuses_bad_weights() -> None:
    with pytest.raises(ValueError):
        next(weighted_rotation_epochs(np.array([1.0, 0.0]), 1, 1, seed=0))


# ---------------------------------------------------------------------------------------- factor signals


def _codes(profiles: np.ndarray, noise: float, seed: int, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """SAE-like codes: each sample's k largest units of its profile plus a little noise."""
    rng = np.random.default_rng(seed)
    dense = np.maximum(profiles + noise * rng.random(profiles.shape), 0)
    units = np.argsort(-dense, axis=1, kind="stable")[:, :k].astype(np.int32)
    acts = np.take_along_axis(dense, units, axis=1).astype(np.float32)
    return units, acts


def _distinct_profiles(n: int, width: int, seed: int) -> np.ndarray:
    """Samples with disjoint dominant units: no two are alike."""
    rng = np.random.default_rng(seed)
    profiles = np.zeros((n, width))
    for i in range(n):
        profiles[i, rng.choice(width, size=4, replace=False)] = rng.uniform(1, 2, size=4)
    return profiles


def test_exact_and_near_duplicates_form_groups_that_share_one_turn() -> None:
    width = 400
    base = _distinct_profiles(60, width, seed=0)
    # rows 60-64: five exact copies of row 0; rows 65-67: near copies of row 1 (tiny activation changes)
    profiles = np.vstack([base, np.repeat(base[:1], 5, axis=0), base[1:2] * np.array([[1.02], [0.98], [1.01]])])
    units, acts = _codes(profiles, noise=0.0, seed=1)
    signals = compute_signals(units, acts, width, labels=None)
    assert signals.group[60:65].tolist() == [0] * 5 and signals.group[0] == 0
    assert signals.group[65:68].tolist() == [1] * 3 and signals.group[1] == 1
    assert signals.group_size[0] == 6 and signals.group_size[1] == 4
    assert np.all(signals.group_size[2:60] == 1)
    np.testing.assert_allclose(signals.weights[[0, 60]], 1 / 6)
    # the six copies of row 0 together come around as often as one distinct sample
    counts = _usage(list(weighted_rotation_epochs(signals.weights, 20, 60, seed=0)), len(profiles))
    group_total = counts[[0, *range(60, 65)]].sum()
    singles = counts[2:60]
    assert abs(group_total - singles.mean()) <= 2, (group_total, singles.mean())


def test_without_dedup_every_sample_is_its_own_group() -> None:
    profiles = np.vstack([_distinct_profiles(20, 100, seed=0)] * 2)
    units, acts = _codes(profiles, noise=0.0, seed=0)
    signals = compute_signals(units, acts, 100, labels=None, dedup=False)
    assert np.all(signals.group_size == 1) and np.all(signals.weights == 1)
    assert signals.groups is None and signals.sizes is None and signals.rotation_weights is None


def test_signals_that_are_off_hold_nothing_per_sample_and_write_the_trivial_table() -> None:
    from dynsel_cli.plan.planner import signals_table

    signals = compute_signals(None, None, 0, np.array([0, 1, 1, 0, 2]), n=5, dedup=False, trust=False)
    assert (signals.groups, signals.sizes, signals.suspects, signals.trusts, signals.label_support) == (None,) * 5
    assert signals.rotation_weights is None
    assert signals.summary() == {
        "near_duplicate_groups": 0,
        "rows_in_near_duplicate_groups": 0,
        "distinct_groups": 5,
        "suspected_mislabels": 0,
        "separability": None,
    }
    ids = np.array([10, 11, 12, 20, 21], dtype=np.int64)
    table = signals_table(ids, signals)
    assert table.to_pydict() == {
        "id": ids.tolist(),
        "group": ids.tolist(),
        "group_size": [1] * 5,
        "label_support": [None] * 5,
        "suspect": [False] * 5,
        "weight": [1.0] * 5,
    }
    assert [str(t) for t in table.schema.types] == ["int64", "int64", "int64", "float", "bool", "double"]


def test_group_sizes_are_held_narrow_and_read_as_int64() -> None:
    profiles = np.vstack([_distinct_profiles(20, 100, seed=0)] * 2)
    units, acts = _codes(profiles, noise=0.0, seed=0)
    signals = compute_signals(units, acts, 100, labels=None, trust=False)
    assert signals.sizes is not None and signals.sizes.dtype == np.int32 and signals.groups.dtype == np.uint32
    assert signals.group_size.dtype == np.int64 and np.all(signals.group_size == 2)
    assert signals.group.tolist() == list(range(20)) * 2
    np.testing.assert_array_equal(signals.weights, 0.5)


def test_a_label_against_all_its_factor_neighbours_is_suspected() -> None:
    # two classes, each a tight cluster in factor space (shared dominant units + per-sample variation)
    rng = np.random.default_rng(0)
    width, n = 200, 200
    labels = np.repeat([0, 1], n // 2)
    profiles = rng.random((n, width))
    profiles[labels == 0, :5] += 0.8
    profiles[labels == 1, 5:10] += 0.8
    wrong = np.array([3, 17, 150, 180])
    noisy = labels.copy()
    noisy[wrong] = 1 - noisy[wrong]
    units, acts = _codes(profiles, noise=0.0, seed=0, k=8)
    signals = compute_signals(units, acts, width, noisy)
    assert set(np.flatnonzero(signals.suspect)) == set(wrong.tolist())
    assert signals.separability is not None and signals.separability > 0.9
    assert np.all(signals.trust[wrong] < 0.2) and np.all(np.delete(signals.trust, wrong) == 1)


def test_nothing_is_held_back_when_factors_carry_no_label_information() -> None:
    rng = np.random.default_rng(1)
    width, n = 300, 400
    units, acts = _codes(rng.random((n, width)), noise=0.0, seed=0, k=8)
    labels = rng.integers(0, 4, size=n)  # labels unrelated to the codes
    signals = compute_signals(units, acts, width, labels)
    assert signals.separability is not None and signals.separability < 0.1
    assert signals.trust.min() > 0.9  # whatever is "suspected" by chance is barely held back


def test_connected_groups_are_components_named_by_their_smallest_row() -> None:
    groups = connected_groups(8, np.array([5, 1, 6, 3]), np.array([2, 5, 7, 6]))
    assert groups.tolist() == [0, 1, 1, 3, 4, 1, 3, 3]


# --------------------------------------------------------------------------------------------- the plan


def _tables(units: np.ndarray, acts: np.ndarray, labels: np.ndarray | None, width: int) -> FactorTables:
    n = len(units)
    samples = SampleFactors(ids=np.arange(n, dtype=np.int64), labels=labels, units=units, acts=acts)
    stats = unit_statistics(units, acts, width, labels, None if labels is None else int(labels.max()) + 1)
    return FactorTables(path=None, manifest={"fingerprint": "test", "width": width}, samples=samples, units=stats)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["dynsel", "rs2"])
def test_methods_keep_exact_budgets_quotas_and_are_deterministic(method: str) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [90, 60, 30])
    units, acts = _codes(rng.random((180, 120)), noise=0.0, seed=0, k=6)
    tables = _tables(units, acts, labels, 120)
    config = PlanConfig(epochs=5, ratio=0.4, seed=2, method=method, device="cpu")
    first = compute_plan(tables, config)
    for epoch in first.epochs:
        assert len(epoch) == 72 and len(np.unique(epoch)) == 72
        np.testing.assert_array_equal(np.bincount(labels[epoch], minlength=3), class_quotas(labels, 72))
    balanced = compute_plan(tables, replace(config, class_quota="balanced")).epochs[0]
    np.testing.assert_array_equal(np.bincount(labels[balanced], minlength=3), [24, 24, 24])
    again = compute_plan(tables, config)
    assert all(np.array_equal(a, b) for a, b in zip(first.epochs, again.epochs))
    assert (first.manifest_extra["id_min"], first.manifest_extra["id_max"], first.manifest_extra["ids_dense"]) == (
        0,
        179,
        True,
    )


# ------------------------------------------------------------------------------------- extending a plan


@pytest.mark.parametrize("method", ["dynsel", "rs2", "random", "score", "static-random"])
def test_a_longer_plan_extends_the_shorter_one(method: str) -> None:
    """`--epochs 20` with the same inputs and seed starts with the 10-epoch plan, epoch for epoch and in
    training order, for every method whose schedule does not depend on the number of epochs."""
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(3), [70, 50, 30])
    units, acts = _codes(rng.random((150, 90)), noise=0.0, seed=1, k=6)
    tables = _tables(units, acts, labels, 90)
    short = compute_plan(tables, PlanConfig(epochs=10, ratio=0.3, seed=5, method=method, device="cpu")).epochs
    long = compute_plan(tables, PlanConfig(epochs=20, ratio=0.3, seed=5, method=method, device="cpu")).epochs
    for a, b in zip(short, long[:10]):
        np.testing.assert_array_equal(a, b)


def test_a_schedule_that_depends_on_the_length_does_not_extend() -> None:
    """The documented exception: a cosine schedule stretches over all epochs, so its early epochs change."""
    rng = np.random.default_rng(4)
    units, acts = _codes(rng.random((150, 90)), noise=0.0, seed=1, k=6)
    tables = _tables(units, acts, None, 90)
    config = PlanConfig(epochs=10, ratio=0.3, seed=5, method="score", schedule="cosine", lambda_start=0.0, device="cpu")
    short = compute_plan(tables, config).epochs
    long = compute_plan(tables, replace(config, epochs=20)).epochs
    assert any(not np.array_equal(a, b) for a, b in zip(short, long[:10]))


def test_an_item_copied_many_times_casts_one_vote() -> None:
    from dynsel_cli.plan.signals import label_support

    # row 0 (label 0): its 24 candidates are 15 copies of one item (group 1, label 1), then 9 label-0 samples
    n = 25
    labels = np.array([0] + [1] * 15 + [0] * 9)
    group = np.array([0] + [1] * 15 + list(range(16, 25)))
    neighbours = np.tile(np.arange(1, 25), (n, 1))
    cosines = np.tile(np.linspace(0.99, 0.8, 24), (n, 1))
    p, used = label_support(neighbours, cosines, group, labels)
    assert used[0].sum() == 10 and used[0, 0] and not used[0, 1:15].any()  # one copy votes, then 9 others
    assert p[0, 0] > 0.8  # its own label wins: 9 distinct neighbours against one item


def test_signals_do_not_depend_on_faiss_threads_even_with_tied_codes() -> None:
    """Each query row has 40 identical candidates with random labels: which of the tied rows faiss keeps
    would depend on its thread count, and so would the votes; the search is pinned to one thread."""
    import faiss

    rng = np.random.default_rng(3)
    blocks = []
    for _ in range(100):
        item = rng.random(60)
        blocks += [(item + rng.random(60) * 0.6)[None], np.repeat(item[None], 40, axis=0)]
    units, acts = _codes(np.vstack(blocks), noise=0.0, seed=0, k=6)
    labels = rng.integers(0, 5, size=len(units))
    before = faiss.omp_get_max_threads()
    results = []
    try:
        for threads in (1, 8):
            faiss.omp_set_num_threads(threads)
            s = compute_signals(units, acts, 60, labels, dedup=False)
            results.append((s.suspect.tolist(), s.trust.tolist()))
    finally:
        faiss.omp_set_num_threads(before)
    assert results[0] == results[1]


def test_trust_full_must_be_positive() -> None:
    from dynsel_cli.errors import DynselError
    from dynsel_cli.plan.methods import validate

    with pytest.raises(DynselError, match="--trust-full"):
        validate(PlanConfig(trust_full=0.0, device="cpu"))
