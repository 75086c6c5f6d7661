"""Fine-grained 20 Newsgroups: every class split into 4 sub-topics, 80 classes (regimes fine, fine-noisy, fine-redundant).

The split needs the encoder's features, so it is made by the harness (benchmarks/evidence.py), before a
regime transform of benchmarks/regimes.py:

1. the clean training split (first ``--limit`` rows) and the test split are extracted once;
2. :func:`refine_labels`: per class c, k-means with ``SUBCLASSES`` = 4 clusters (scikit-learn
   ``KMeans(n_clusters=4, n_init=4, random_state=seed)``; fewer clusters when the class has fewer rows) on
   the L2-normalised training features of that class; a training row's label becomes ``4 c + cluster``;
   a test row of class c gets the cluster of the nearest of class c's centroids (the same 80 labels;
   test rows of a class with no training row, possible only under ``--limit``, are left out);
3. the refined splits are written as JSONL (``newsgroups-train-fine.jsonl``, ``newsgroups-test-fine.jsonl``)
   and the test split is extracted again (its features then carry the refined labels);
4. the regime's base transform (:data:`FINE_REGIMES`: clean, noisy or redundant) is applied to the
   refined training JSONL, as any regime is to the clean one.

Which cluster gets which number within a class is k-means' choice, fixed by the seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Fine regime → the regimes.py transform applied to the relabelled training split.
FINE_REGIMES: dict[str, str] = {"fine": "clean", "fine-noisy": "noisy", "fine-redundant": "redundant"}
SUBCLASSES = 4


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def refine_labels(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int = 0, k: int = SUBCLASSES
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Refined training and test labels (``k * class + cluster``) and statistics (JSON-able).

    A test row whose class has no training row (a small ``--limit``) gets -1: the harness leaves it out.
    """
    from sklearn.cluster import KMeans

    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    train_u, test_u = _unit(train_x), _unit(test_x)
    fine_train = np.full(len(train_y), -1, dtype=np.int64)
    fine_test = np.full(len(test_y), -1, dtype=np.int64)
    for c in np.unique(train_y).tolist():
        rows = np.flatnonzero(train_y == c)
        clusters = min(k, len(rows))
        model = KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit(train_u[rows])
        fine_train[rows] = k * c + model.labels_
        held = np.flatnonzero(test_y == c)
        if len(held):
            distances = ((test_u[held, None, :] - model.cluster_centers_[None, :, :]) ** 2).sum(-1)
            fine_test[held] = k * c + distances.argmin(1)
    train_counts = np.bincount(fine_train, minlength=k * (int(train_y.max()) + 1))
    info = {
        "subclasses": k,
        "seed": int(seed),
        "classes": int((train_counts > 0).sum()),
        "train_counts_min": int(train_counts[train_counts > 0].min()),
        "train_counts_max": int(train_counts.max()),
        "test_classes": int(len(np.unique(fine_test[fine_test >= 0]))),
        "test_rows_without_class": int((fine_test < 0).sum()),
    }
    return fine_train, fine_test, info
