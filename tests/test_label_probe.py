"""Label trust by confident learning on a cross-validated code probe, and class budgets over content."""

from __future__ import annotations

import numpy as np

from dynsel_cli.plan.budget import content_class_quotas
from dynsel_cli.plan.probe import fold_of, label_trust
from dynsel_cli.plan.signals import compute_signals

WIDTH = 64
K = 4


def topic_codes(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes whose units say the class: each class owns 8 units, a sample fires 3 of its class's and 1 random unit."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    own = labels[:, None] * 8 + np.stack([rng.choice(8, 3, replace=False) for _ in range(n)])
    noise_unit = rng.integers(classes * 8, WIDTH, size=(n, 1))
    units = np.concatenate([own, noise_unit], axis=1).astype(np.int32)
    acts = rng.uniform(0.5, 1.0, size=(n, K)).astype(np.float32)
    return units, acts, labels.astype(np.int64)


def test_flipped_labels_are_found_with_high_precision_and_clean_labels_are_left_alone() -> None:
    units, acts, labels = topic_codes(1200, 4)
    clean = label_trust(units, acts, WIDTH, labels)
    assert clean.gate_open and clean.accuracy > 0.95
    assert clean.suspects.mean() <= 0.02

    rng = np.random.default_rng(1)
    flipped = rng.choice(len(labels), 240, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, 4, size=240)) % 4
    truth = np.zeros(len(labels), bool)
    truth[flipped] = True
    verdict = label_trust(units, acts, WIDTH, noisy)
    precision = (verdict.suspects & truth).sum() / max(verdict.suspects.sum(), 1)
    recall = (verdict.suspects & truth).sum() / truth.sum()
    assert precision >= 0.9 and recall >= 0.8, (precision, recall)


def test_a_probe_that_cannot_beat_chance_suspects_nobody() -> None:
    units, acts, _ = topic_codes(1000, 4)
    random_labels = np.random.default_rng(3).integers(0, 4, size=1000)
    verdict = label_trust(units, acts, WIDTH, random_labels)
    assert not verdict.gate_open
    assert not verdict.suspects.any()


def test_the_verdict_is_the_same_for_the_same_inputs_and_folds_do_not_depend_on_n() -> None:
    units, acts, labels = topic_codes(600, 3)
    labels = labels.copy()
    labels[:60] = (labels[:60] + 1) % 3
    first, second = label_trust(units, acts, WIDTH, labels), label_trust(units, acts, WIDTH, labels)
    assert np.array_equal(first.suspects, second.suspects)
    assert np.array_equal(first.label_probability, second.label_probability)
    assert np.array_equal(fold_of(100, 0), fold_of(1000, 0)[:100])
    assert set(np.unique(fold_of(1000, 0))) == set(range(5))


def test_probe_suspects_leave_the_rotation() -> None:
    units, acts, labels = topic_codes(800, 4)
    labels = labels.copy()
    labels[:80] = (labels[:80] + 1) % 4
    signals = compute_signals(units, acts, WIDTH, labels, dedup=False, label_trust="probe")
    assert signals.suspects is not None and signals.suspects[:80].mean() > 0.8
    assert signals.weights[signals.suspects].max() < 1e-3
    assert np.all(signals.weights[~signals.suspects] == 1.0)


def test_content_quotas_follow_distinct_content_not_rows() -> None:
    # class 0: 300 rows that are 30 items copied 10 times (weight 1/10 each); classes 1 and 2: 100 distinct rows each
    labels = np.repeat([0, 1, 2], [300, 100, 100])
    weights = np.concatenate([np.full(300, 0.1), np.ones(200)])
    quotas = content_class_quotas(labels, weights, 150)
    # mass 30 : 100 : 100, so class 0 gets 30/230 of the budget (row counts would give it 90 of 150)
    assert quotas.tolist() == [20, 65, 65]
    # past the distinct rows of classes 1 and 2, the rest of the budget goes to class 0's copies
    assert content_class_quotas(labels, weights, 250).tolist() == [50, 100, 100]


def test_content_quotas_are_capped_by_class_size_and_fill_the_budget() -> None:
    labels = np.repeat([0, 1], [10, 500])
    weights = np.concatenate([np.ones(10) * 5.0, np.ones(500) * 0.01])  # class 0 holds most mass but has 10 rows
    quotas = content_class_quotas(labels, weights, 200)
    assert quotas.tolist() == [10, 190]


def test_many_small_classes_keep_their_row_share_under_content_quotas() -> None:
    labels = np.repeat(np.arange(60), 20)
    quotas = content_class_quotas(labels, np.ones(len(labels)), 600)
    assert np.all(quotas >= 0.8 * 10)


def test_content_quotas_are_row_shares_for_methods_without_signals() -> None:
    # the default --class-quota content with --method rs2 (no near-duplicate or trust weights: every row
    # weighs 1) gives exactly the proportional plan
    from test_rotation import _tables

    from dynsel_cli.config import PlanConfig
    from dynsel_cli.plan import compute_plan

    units, acts, labels = topic_codes(300, 3)
    labels = np.where(np.arange(300) < 200, 0, labels)  # imbalanced, so quotas matter
    tables = _tables(units, acts, labels, WIDTH)
    content = compute_plan(tables, PlanConfig(method="rs2", class_quota="content", ratio=0.3, epochs=3, device="cpu"))
    rows = compute_plan(tables, PlanConfig(method="rs2", class_quota="proportional", ratio=0.3, epochs=3, device="cpu"))
    assert all(np.array_equal(a, b) for a, b in zip(content.epochs, rows.epochs))


def test_class_floors_keep_a_distrusted_class_served_but_give_copies_no_floor() -> None:
    from dynsel_cli.plan.budget import class_floors

    # 60 classes of 20 rows; class 0's rows are all suspects (weight 1e-6); class 1 is 2 items copied 10 times each
    labels = np.repeat(np.arange(60), 20)
    weights = np.ones(len(labels))
    weights[:20] = 1e-6
    groups = np.arange(len(labels))
    groups[20:30], groups[30:40] = 20, 30
    weights[20:40] = 0.1
    budget = 600
    without = content_class_quotas(labels, weights, budget)
    assert without[0] == 0  # mass alone starves the distrusted class
    floors = class_floors(labels, groups, budget)
    quotas = content_class_quotas(labels, weights, budget, floors)
    assert quotas.sum() == budget and np.all(quotas <= 20)
    distinct_share = budget * 20 / (len(labels) - 18)  # class 1 counts 2 distinct rows, not 20
    assert quotas[0] >= 0.8 * distinct_share
    assert np.all(quotas[2:] >= 0.8 * distinct_share)
    assert quotas[1] < 0.8 * budget * 20 / len(labels)  # copies earn no floor of a row share


def test_graded_probe_trust_keeps_ambiguous_suspects_and_drops_confident_ones() -> None:
    units, acts, labels = topic_codes(1200, 4)
    labels = labels.copy()
    rng = np.random.default_rng(5)
    # rows 0..119: labels flipped (their codes say another class); rows 120..239: codes half of their own
    # class, half of the next (a boundary case whose given label is about as likely as the other)
    labels[:120] = (labels[:120] + 1) % 4
    ambiguous = np.arange(120, 240)
    other = (labels[ambiguous] + 1) % 4
    units[ambiguous, 2:] = (other[:, None] * 8 + np.stack([rng.choice(8, 2, replace=False) for _ in ambiguous])).astype(
        np.int32
    )
    units[ambiguous, :2] = (
        labels[ambiguous, None] * 8 + np.stack([rng.choice(8, 2, replace=False) for _ in ambiguous])
    ).astype(np.int32)
    graded = compute_signals(units, acts, WIDTH, labels, dedup=False, label_trust="probe-odds")
    hard = compute_signals(units, acts, WIDTH, labels, dedup=False, label_trust="probe")
    assert graded.suspects is not None and np.array_equal(graded.suspects, hard.suspects)  # same verdicts
    flipped_weight = graded.weights[:120][graded.suspects[:120]]
    assert len(flipped_weight) > 100 and flipped_weight.mean() < 0.15
    ambiguous_suspects = ambiguous[graded.suspects[ambiguous]]
    assert len(ambiguous_suspects) > 10
    # a suspected boundary row keeps more turns than a confidently flipped one (with "probe" both get ~0)
    assert graded.weights[ambiguous_suspects].mean() > 1.5 * flipped_weight.mean()
    assert hard.weights[ambiguous_suspects].max() < 1e-3
    assert np.all(graded.weights[~graded.suspects] == 1.0)
    assert np.all((graded.weights > 0) & (graded.weights <= 1.0))


def rare_mode_codes(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Correct labels with a learnable hard case: a fifth of each class's rows fire three units of the next
    class strongly and one of 32 units private to their own class weakly (0.4). A probe that sees them
    learns part of the private units; out of fold it still contradicts many of them."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    units = np.concatenate(
        [
            labels[:, None] * 8 + np.stack([rng.choice(8, 3, replace=False) for _ in range(n)]),
            rng.integers(classes * 8, classes * 8 + 16, size=(n, 1)),
        ],
        axis=1,
    ).astype(np.int32)
    acts = rng.uniform(0.5, 1.0, size=(n, K)).astype(np.float32)
    hard = rng.random(n) < 0.2
    units[hard, :3] = ((labels[hard] + 1) % classes)[:, None] * 8 + np.stack(
        [rng.choice(8, 3, replace=False) for _ in range(int(hard.sum()))]
    )
    units[hard, 3] = classes * 8 + 16 + labels[hard] * 32 + rng.integers(0, 32, int(hard.sum()))
    acts[hard, 3] = 0.4
    return units, acts, labels.astype(np.int64), classes * 8 + 16 + classes * 32


def test_the_filter_check_keeps_planted_flips_out_and_leaves_hard_correct_rows_in() -> None:
    units, acts, labels = topic_codes(1200, 4)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(labels), 240, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, 4, size=240)) % 4
    plain = label_trust(units, acts, WIDTH, noisy)
    checked = label_trust(units, acts, WIDTH, noisy, check_filter=True)
    # dropping flips helps a probe predict held-out labels: the suspects stand, the same as without the check
    assert checked.filtered_accuracy is not None and checked.filtered_accuracy >= checked.accuracy
    assert np.array_equal(checked.suspects, plain.suspects) and checked.suspects.sum() > 150
    signals = compute_signals(units, acts, WIDTH, noisy, dedup=False, label_trust="probe-checked")
    assert signals.weights[flipped].mean() < 0.2

    units, acts, labels, width = rare_mode_codes(1200, 4)
    plain = label_trust(units, acts, width, labels)
    checked = label_trust(units, acts, width, labels, check_filter=True)
    assert plain.suspects.sum() > 50  # confident learning alone flags correct rows of the hard case
    # without those rows the probe never learns the hard case: it predicts held-out labels worse, so nobody is a suspect
    assert checked.filter_rejected and checked.candidates == plain.suspects.sum()
    assert not checked.suspects.any()
    signals = compute_signals(units, acts, width, labels, dedup=False, label_trust="probe-checked")
    assert signals.suspects is not None and not signals.suspects.any() and np.all(signals.weights == 1.0)


def test_the_held_out_cut_removes_about_the_planted_share_and_nothing_from_hard_correct_rows() -> None:
    from dynsel_cli.plan.probe import held_out_cut

    units, acts, labels = topic_codes(1200, 4)
    rng = np.random.default_rng(2)
    flipped = rng.choice(len(labels), 240, replace=False)  # 20% of the labels
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, 4, size=240)) % 4
    truth = np.zeros(len(labels), bool)
    truth[flipped] = True
    verdict, share = held_out_cut(units, acts, WIDTH, noisy)
    assert 0.15 <= share <= 0.25, share
    assert verdict.filtered_accuracy is not None and verdict.filtered_accuracy > verdict.accuracy
    assert (verdict.suspects & truth).sum() / verdict.suspects.sum() >= 0.9  # what is cut is mostly flips
    signals = compute_signals(units, acts, WIDTH, noisy, dedup=False, label_trust="probe-heldout")
    assert np.array_equal(signals.suspects, verdict.suspects)

    units, acts, labels, width = rare_mode_codes(1200, 4)
    verdict, share = held_out_cut(units, acts, width, labels)
    assert share == 0.0 and not verdict.suspects.any()  # every cut loses held-out accuracy: nothing leaves


def test_checked_removal_cuts_only_where_confident_learning_passes_the_check() -> None:
    from dynsel_cli.plan.probe import checked_removal, held_out_cut

    units, acts, labels = topic_codes(1200, 4)
    rng = np.random.default_rng(2)
    flipped = rng.choice(len(labels), 240, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, 4, size=240)) % 4
    truth = np.zeros(len(labels), bool)
    truth[flipped] = True
    chosen = checked_removal(units, acts, WIDTH, noisy)
    confident = label_trust(units, acts, WIDTH, noisy, check_filter=True)
    cut, _ = held_out_cut(units, acts, WIDTH, noisy)
    # the flags pass the check, and the set kept is the one held-out probes do best without
    assert confident.suspects.any() and chosen.filtered_accuracy == max(
        confident.filtered_accuracy, cut.filtered_accuracy
    )
    assert (chosen.suspects & truth).sum() / chosen.suspects.sum() >= 0.9 and (
        chosen.suspects & truth
    ).sum() >= 0.8 * 240

    units, acts, labels, width = rare_mode_codes(1200, 4)
    assert not checked_removal(units, acts, width, labels).suspects.any()  # the check rejects: nothing is cut


def test_a_gain_in_held_out_hits_counts_only_beyond_the_paired_noise() -> None:
    from dynsel_cli.plan.probe import significantly_better

    reference = np.zeros(10_000, bool)
    reference[:6000] = True
    tie_ish = reference.copy()
    tie_ish[6000:6504] = True  # 504 rows newly right ...
    tie_ish[:500] = False  # ... and 500 newly wrong: a gain of 4 hits among 1,004 discordant rows
    assert not significantly_better(tie_ish, reference)
    clear = reference.copy()
    clear[6000:6250] = True  # 250 newly right, none lost: far beyond 2 * sqrt(250)
    assert significantly_better(clear, reference)
    assert not significantly_better(reference, clear)


def test_the_check_weighs_every_class_alike() -> None:
    # removing the hard rows of a small class can raise plain accuracy (the large class gets easier) while
    # the small class is learnt worse: class-balanced, that is no gain
    from dynsel_cli.plan.probe import class_balanced_weights, significantly_better

    labels = np.r_[np.zeros(9000, np.int64), np.ones(1000, np.int64)]
    reference = np.r_[np.arange(9000) < 8000, np.arange(1000) < 600]  # 80% and 60% right
    candidate = np.r_[np.arange(9000) < 8400, np.arange(1000) < 300]  # +400 in the large class, -300 in the small
    assert significantly_better(candidate, reference)  # +100 hits of 700 discordant rows: a "gain" unweighted
    assert not significantly_better(candidate, reference, class_balanced_weights(labels))
