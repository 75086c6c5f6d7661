"""--dup-rule gap: near-duplicates are told from paraphrases by how far they stand out from a row's own
neighbours, not by one cosine threshold (docs/method.md, "Copies or paraphrases")."""

from __future__ import annotations

import numpy as np

from dynsel_cli.plan.signals import compute_signals

WIDTH, K = 512, 8


def paraphrase_cloud(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows of one intent: the same dominant factors, each row's strengths drawn afresh, a few factors of
    its own. Neighbours come at every distance, smoothly; many pairs pass a code cosine of 0.9."""
    core = rng.choice(WIDTH, size=K - 2, replace=False)
    units = np.empty((rows, K), np.int64)
    acts = np.empty((rows, K), np.float32)
    for r in range(rows):
        own = rng.choice(np.setdiff1d(np.arange(WIDTH), core), size=2, replace=False)
        units[r] = np.concatenate([core, own])
        acts[r] = np.concatenate([rng.lognormal(0.0, 0.25, K - 2) * 3, rng.uniform(0.1, 1.0, 2)])
    return units, acts


def items_with_copies(
    items: int, copies: int, copied: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct items (random factors), the first ``copied`` of them repeated ``copies`` more times with
    strengths edited by 1%: (units, acts, source item of each row)."""
    units = np.stack([rng.choice(WIDTH, size=K, replace=False) for _ in range(items)])
    acts = rng.uniform(0.5, 3.0, (items, K)).astype(np.float32)
    source = np.concatenate([np.arange(items), np.repeat(np.arange(copied), copies)])
    edited = acts[source] * rng.normal(1.0, 0.01, (len(source), K)).astype(np.float32)
    return units[source], edited, source


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    clouds = [paraphrase_cloud(60, rng) for _ in range(4)]
    cu = np.concatenate([c[0] for c in clouds])
    ca = np.concatenate([c[1] for c in clouds])
    iu, ia, source = items_with_copies(items=120, copies=4, copied=30, rng=rng)
    units = np.concatenate([cu, iu])
    acts = np.concatenate([ca, ia])
    in_cloud = len(cu)
    source = np.concatenate([-1 - np.repeat(np.arange(4), 60), source])  # clouds: no source shared with anything
    return units, acts, source, in_cloud


def grouped(units: np.ndarray, acts: np.ndarray, rule: str) -> np.ndarray:
    return compute_signals(units, acts, WIDTH, None, trust=False, dup_rule=rule).group


def test_a_tight_paraphrase_cloud_forms_no_groups_but_a_fixed_threshold_groups_it() -> None:
    units, acts, _, in_cloud = data()
    fixed = grouped(units, acts, "fixed")
    fixed_sizes = np.bincount(fixed, minlength=len(fixed))[fixed]
    assert (fixed_sizes[:in_cloud] > 1).mean() > 0.3  # the cloud does pass cosine 0.9: the case is real
    gap = grouped(units, acts, "gap")
    sizes = np.bincount(gap, minlength=len(gap))[gap]
    assert (sizes[:in_cloud] > 1).mean() <= 0.02


def test_planted_copies_are_grouped_with_their_item_and_nothing_else() -> None:
    units, acts, source, in_cloud = data(seed=1)
    group = grouped(units, acts, "gap")
    copy_rows = np.flatnonzero(np.bincount(source[in_cloud:])[source[in_cloud:]] > 1) + in_cloud
    same_item = [group[r] == group[np.flatnonzero(source == source[r])].min() for r in copy_rows]
    assert np.mean(same_item) >= 0.95  # recall: each copy joins its item
    for g in np.unique(group[copy_rows]):  # precision: a group holds copies of one item only
        assert len(np.unique(source[group == g])) == 1
    singles = np.flatnonzero(np.bincount(source[in_cloud:])[source[in_cloud:]] == 1) + in_cloud
    assert np.all(np.bincount(group, minlength=len(group))[group[singles]] == 1)


def test_a_copy_cluster_larger_than_the_candidate_list_is_still_one_group() -> None:
    rng = np.random.default_rng(2)
    iu, ia, source = items_with_copies(items=200, copies=40, copied=1, rng=rng)  # item 0: 41 rows, beyond 24 candidates
    group = grouped(iu, ia, "gap")
    assert len(np.unique(group[source == 0])) == 1
    assert np.count_nonzero(group == group[0]) == 41
