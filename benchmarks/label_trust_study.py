"""Suspect detection of `--label-trust probe` beside cleanlab, on one dynsel run's features and factors.

    python benchmarks/label_trust_study.py RUN_DIR      # RUN_DIR holds features/ and factors/ of a dynsel run

The labels of the run are taken as clean; two noisy versions are made from them (seed 1): 30% of rows
flipped uniformly to another class, and 30% flipped to the partner class (c + 1) mod C. For each labelling
it prints the share of rows flagged, and precision and recall against the flipped rows, for
dynsel's probe (confident learning on a cross-validated probe of the SAE codes) and for cleanlab's
``find_label_issues`` on 5-fold logistic-regression probabilities over the standardised encoder features
(trained with Adam, 30 passes; what a user would build). Needs ``pip install cleanlab``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from dynsel_cli.formats.factors import read_factor_tables
from dynsel_cli.formats.features import read_features
from dynsel_cli.plan.probe import label_trust


def feature_probabilities(x: np.ndarray, y: np.ndarray, classes: int, folds: int = 5, passes: int = 30) -> np.ndarray:
    """Out-of-fold softmax-regression probabilities on standardised features."""
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(y)) % folds
    out = np.zeros((len(y), classes), np.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for f in range(folds):
        torch.manual_seed(f)
        model = torch.nn.Linear(x.shape[1], classes)
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
        train = np.flatnonzero(fold != f)
        for _ in range(passes):
            order = torch.from_numpy(rng.permutation(train))
            for start in range(0, len(order), 256):
                batch = order[start : start + 256]
                loss = torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch]) + 1e-5 * (model.weight**2).sum()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        with torch.no_grad():
            held = torch.from_numpy(np.flatnonzero(fold == f))
            out[held.numpy()] = torch.softmax(model(xt[held]), 1).numpy()
    return out


def describe(name: str, flagged: np.ndarray, flipped: np.ndarray | None) -> str:
    if flipped is None:
        return f"{name}: flagged {100 * flagged.mean():.1f}%"
    hit = int((flagged & flipped).sum())
    return f"{name}: flagged {100 * flagged.mean():.1f}%, precision {hit / max(int(flagged.sum()), 1):.3f}, recall {hit / int(flipped.sum()):.3f}"


def main(run: str) -> None:
    from cleanlab.filter import find_label_issues

    torch.set_num_threads(1)
    tables = read_factor_tables(f"{run}/factors")
    features = read_features(f"{run}/features")
    y = tables.samples.labels.astype(np.int64)
    n, classes = len(y), int(y.max()) + 1
    x = features.vectors.astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    rng = np.random.default_rng(1)
    labellings: list[tuple[str, np.ndarray, np.ndarray | None]] = [("clean", y, None)]
    for name, shift in (("uniform 30%", None), ("to partner 30%", 1)):
        rows = rng.choice(n, round(0.3 * n), replace=False)
        noisy = y.copy()
        noisy[rows] = (y[rows] + (rng.integers(1, classes, len(rows)) if shift is None else shift)) % classes
        flipped = np.zeros(n, bool)
        flipped[rows] = True
        labellings.append((name, noisy, flipped))
    for name, labels, flipped in labellings:
        start = time.perf_counter()
        verdict = label_trust(tables.samples.units, tables.samples.acts, int(tables.manifest["width"]), labels)
        seconds = time.perf_counter() - start
        print(
            describe(
                f"{name}, dynsel probe ({seconds:.0f} s, accuracy {verdict.accuracy:.3f})", verdict.suspects, flipped
            )
        )
        issues = find_label_issues(labels, feature_probabilities(x, labels, classes))
        print(describe(f"{name}, cleanlab", issues, flipped), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
