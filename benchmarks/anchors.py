"""Anchor pipelines: what a user would build from standard tools, then RS2 over the rows they keep.

Each anchor decides once which training rows to keep (the decision depends on the data only, not on the
plan's seed or ratio, so :func:`anchor_decision` caches it), then :func:`anchor_epochs` trains at the SAME
step budget as every other method at a ratio r: ``ceil(r N)`` rows per epoch of the full N.

``semdedup`` (SemDeDup, Abbas et al. 2023)
    k-means (faiss, seed 0, ``k = max(1, round(N / 100))``, 20 iterations) on the L2-normalised encoder
    features; within each cluster, rows joined by cosine >= 0.95 form one group (connected components of
    that graph); one row per group is kept, the one closest to its cluster's centroid.
``cleanlab`` (confident learning, Northcutt et al. 2021, through its reference implementation)
    5-fold cross-validated probabilities of ``LogisticRegression(max_iter=1000)`` on the standardised
    encoder features (``cross_val_predict`` with ``StratifiedKFold(5, shuffle=True, random_state=0)``),
    then ``cleanlab.filter.find_label_issues(labels, pred_probs)`` with its defaults; the issues are dropped.
``semdedup+cleanlab``
    semdedup, then cleanlab on the rows semdedup kept (its own standardisation and folds over them).

Rotation over the kept rows: RS2 without replacement, one seeded permutation walk per class, with the
epoch's ``ceil(r N)`` split over classes in proportion to the KEPT rows' class counts (largest remainder,
ties to the lower class id). When a class's quota exceeds its kept rows the walk wraps within the epoch
(a row can appear twice), so every method trains the same number of steps. Each epoch is then shuffled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

ANCHORS: tuple[str, ...] = ("semdedup", "cleanlab", "semdedup+cleanlab")
SEMDEDUP_COSINE = 0.95
ROWS_PER_CLUSTER = 100
ANCHOR_STREAM = 9_411  # second entry of the anchors' rotation streams
_BLOCK = 2048  # rows per block of a cluster's cosine matrix


@dataclass(frozen=True)
class AnchorDecision:
    """Which rows an anchor keeps, and why the others went."""

    kept: np.ndarray  # bool [N]
    duplicate: np.ndarray  # bool [N]: dropped as a near-duplicate (semdedup)
    issue: np.ndarray  # bool [N]: dropped as a label issue (cleanlab); only rows semdedup kept can be
    group: np.ndarray | None  # int64 [N]: semdedup's group (its kept row's index); None without semdedup
    seconds: float


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def semdedup_groups(
    features: np.ndarray, cosine: float = SEMDEDUP_COSINE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(group int64 [N]: the index of the row each row's group keeps, kept bool [N])."""
    import faiss
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    x = unit_rows(features)
    n = len(x)
    k = max(1, round(n / ROWS_PER_CLUSTER))
    if k > 1:
        kmeans = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, verbose=False)
        kmeans.train(x)
        _, assign = kmeans.index.search(x, 1)
        assign = assign[:, 0].astype(np.int64)
        centroids = kmeans.centroids
    else:
        assign = np.zeros(n, dtype=np.int64)
        centroids = x.mean(0, keepdims=True)
    sources, targets = [], []
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(k + 1))
    for c in range(k):
        members = order[bounds[c] : bounds[c + 1]]
        for start in range(0, len(members), _BLOCK):
            block = members[start : start + _BLOCK]
            sim = x[block] @ x[members].T
            i, j = np.nonzero(sim >= cosine)
            upper = members[j] > block[i]
            sources.append(block[i[upper]])
            targets.append(members[j[upper]])
    src = np.concatenate(sources) if sources else np.zeros(0, dtype=np.int64)
    dst = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # the row closest to its cluster's centroid represents its group (unit rows: the largest dot product)
    closeness = np.einsum("ij,ij->i", x, np.asarray(centroids, dtype=np.float32)[assign])
    best = np.lexsort((np.arange(n), -closeness, component))  # by component, then closest first
    first = np.ones(n, dtype=bool)
    first[1:] = component[best][1:] != component[best][:-1]
    keeper_of_component = np.empty(component.max() + 1, dtype=np.int64)
    keeper_of_component[component[best][first]] = best[first]
    group = keeper_of_component[component]
    return group, group == np.arange(n)


def cleanlab_issues(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """bool [N]: cleanlab's label issues from 5-fold logistic-regression probabilities."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    dense = np.searchsorted(present, labels)  # cleanlab wants classes 0..K-1, all present
    x = np.asarray(features, dtype=np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    probabilities = cross_val_predict(LogisticRegression(max_iter=1000), x, dense, cv=folds, method="predict_proba")
    return np.asarray(find_label_issues(dense, probabilities), dtype=bool)


def decide(name: str, features: np.ndarray, labels: np.ndarray) -> AnchorDecision:
    """Run anchor ``name`` (one of :data:`ANCHORS`) on the training features and labels."""
    import time

    if name not in ANCHORS:
        raise ValueError(f"unknown anchor {name!r}")
    start = time.perf_counter()
    n = len(labels)
    duplicate, issue = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    group = None
    kept = np.ones(n, dtype=bool)
    if name.startswith("semdedup"):
        group, kept = semdedup_groups(features)
        duplicate = ~kept
    if name.endswith("cleanlab"):
        rows = np.flatnonzero(kept)
        issue[rows] = cleanlab_issues(np.asarray(features)[rows], np.asarray(labels)[rows])
        kept = kept & ~issue
    return AnchorDecision(kept, duplicate, issue, group, time.perf_counter() - start)


def anchor_decision(
    name: str, features: np.ndarray, labels: np.ndarray, cache: Path, key: dict[str, Any]
) -> AnchorDecision:
    """:func:`decide`, cached in ``cache`` (an .npz with its ``key`` beside it) for the same ``key``."""
    sidecar = cache.with_name(cache.name + ".json")
    if cache.exists() and sidecar.exists():
        try:
            recorded = json.loads(sidecar.read_text())
        except ValueError:
            recorded = {}
        if recorded.get("key") == key:
            with np.load(cache, allow_pickle=False) as a:
                group = a["group"] if a["group"].size else None
                return AnchorDecision(a["kept"], a["duplicate"], a["issue"], group, float(recorded["seconds"]))
    decision = decide(name, features, labels)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.tmp.npz")
    group = decision.group if decision.group is not None else np.zeros(0, dtype=np.int64)
    np.savez(tmp, kept=decision.kept, duplicate=decision.duplicate, issue=decision.issue, group=group)
    tmp.replace(cache)
    sidecar.write_text(
        json.dumps({"key": key, "seconds": decision.seconds, "kept": int(decision.kept.sum())}, indent=2)
    )
    return decision


def epoch_budget(ratio: float, n: int) -> int:
    """ceil(ratio · N), exactly (as dynsel's plans count it)."""
    return min(n, math.ceil(Fraction(repr(float(ratio))) * n))


def proportional_quotas(counts: np.ndarray, budget: int) -> np.ndarray:
    """Split ``budget`` over classes in proportion to ``counts`` (largest remainder; ties → lower class id)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    exact = [Fraction(int(c) * budget, total) for c in counts]
    quotas = np.array([math.floor(q) for q in exact], dtype=np.int64)
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - quotas[c]), c))
    for c in order[: budget - int(quotas.sum())]:
        quotas[c] += 1
    return quotas


class _Walk:
    """RS2 over ``members``: a seeded permutation taken in turn, a fresh one when it runs out."""

    def __init__(self, members: np.ndarray, seed: int, stream: int) -> None:
        self.members, self.seed, self.stream = members, seed, stream
        self.passes, self.position = 0, 0
        self.order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, ANCHOR_STREAM, self.stream, self.passes]).permutation(
            len(self.members)
        )

    def take(self, quota: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        this_epoch = np.zeros(len(self.members), dtype=bool)
        while quota > 0:
            if self.position == len(self.order):
                self.passes += 1
                fresh = self._permutation()
                # rows this epoch already took go last, so a row repeats within an epoch only when it must
                self.order = np.concatenate([fresh[~this_epoch[fresh]], fresh[this_epoch[fresh]]])
                self.position = 0
            taken = self.order[self.position : self.position + quota]
            self.position += len(taken)
            this_epoch[taken] = True
            quota -= len(taken)
            parts.append(taken)
        return self.members[np.concatenate(parts)] if parts else self.members[:0]


def anchor_epochs(kept: np.ndarray, labels: np.ndarray, ratio: float, epochs: int, seed: int) -> list[np.ndarray]:
    """``epochs`` epochs of ``ceil(ratio N)`` row ids each (N = all rows), drawn by RS2 among the kept rows."""
    kept = np.asarray(kept, dtype=bool)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(kept)
    if not kept.any():
        raise ValueError("the anchor kept no rows")
    budget = epoch_budget(ratio, n)
    rows = np.flatnonzero(kept)
    classes = int(labels.max()) + 1
    quotas = proportional_quotas(np.bincount(labels[rows], minlength=classes), budget)
    walks = [(_Walk(rows[labels[rows] == c], seed, c), int(quotas[c])) for c in range(classes) if quotas[c] > 0]
    out = []
    for t in range(epochs):
        ids = np.concatenate([walk.take(q) for walk, q in walks])
        order = np.random.default_rng([seed, ANCHOR_STREAM + 1, t]).permutation(len(ids))  # the training order
        out.append(ids[order].astype(np.int64))
    return out
