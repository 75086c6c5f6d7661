"""Rotation: who trains this epoch when every sample should come around, at its own rate.

Two selectors, both returning each epoch's rows sorted ascending:

- :func:`rs2_epochs` — RS2 without replacement (Okanovic et al., "Repeated Random Sampling for Minimizing
  the Time-to-Accuracy of Learning", ICLR 2024): walk a seeded permutation ``budget`` rows at a time and
  start a fresh permutation when one runs out, so no row repeats before every row has been seen. Under
  class quotas each class walks its own permutation.
- :func:`weighted_rotation_epochs` — the same rotation, but row i comes around at a rate proportional to
  its exposure weight π_i (dynsel's default method; the weights say which rows are near-duplicates of one
  another and which labels look wrong, see :mod:`.signals`). Each epoch takes the rows with the lowest
  *next turn* ``(c_i + u_i) / π_i``, where c_i counts the row's earlier selections and u_i ∈ [0, 1) is a
  hashed uniform of (seed, row, c_i): a fresh random phase per turn. With all π equal this is RS2 in
  distribution (count-0 rows first in random order, then count-1 rows, ...); with unequal π it is stride
  scheduling, so over E epochs row i is drawn about E·budget·π_i / Σπ times (capped at once per epoch).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from . import streams


def _class_members(n: int, labels: np.ndarray | None, quotas: np.ndarray | None) -> list[tuple[np.ndarray, int]]:
    if quotas is None or labels is None:
        return [(np.arange(n, dtype=np.int64), -1)]
    return [(np.flatnonzero(labels == c).astype(np.int64), c) for c in range(len(quotas))]


class _Walk:
    """One seeded permutation stream over ``members``, taken ``quota`` rows at a time."""

    def __init__(self, members: np.ndarray, stream_id: int, seed: int) -> None:
        self.members, self.stream_id, self.seed = members, stream_id, seed
        self.passes = 0
        self.order = self._permutation()
        self.position = 0

    def _permutation(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.passes, streams.RS2, self.stream_id + 1])
        return self.members[rng.permutation(len(self.members))]

    def take(self, quota: int) -> np.ndarray:
        taken = self.order[self.position : self.position + quota]
        self.position += len(taken)
        if len(taken) < quota:  # this pass is used up: a fresh permutation, this epoch's rows moved to its end
            self.passes += 1
            fresh = self._permutation()
            just_taken = np.isin(fresh, taken)
            self.order = np.concatenate([fresh[~just_taken], fresh[just_taken]])
            need = quota - len(taken)
            taken = np.concatenate([taken, self.order[:need]])
            self.position = need
        return taken


def rs2_epochs(n: int, budget: int, epochs: int, seed: int, labels: np.ndarray | None = None, quotas: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """RS2 without replacement: ``budget`` rows per epoch (``quotas[c]`` of class c when given)."""
    parts = _class_members(n, labels, quotas)
    walks = [(_Walk(members, c, seed), budget if c < 0 else int(quotas[c])) for members, c in parts]  # type: ignore[index]
    for _ in range(epochs):
        yield np.sort(np.concatenate([walk.take(quota) for walk, quota in walks])).astype(np.int64)


def weighted_rotation_epochs(
    weights: np.ndarray, budget: int, epochs: int, seed: int, labels: np.ndarray | None = None, quotas: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Rotation at rates proportional to ``weights`` (π_i > 0); see the module docstring."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or not np.all(weights > 0) or not np.all(np.isfinite(weights)):
        raise ValueError("rotation weights must be a 1-D array of finite positive numbers")
    n = len(weights)
    rows = np.arange(n, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    parts = _class_members(n, labels, quotas)
    for _ in range(epochs):
        turn = (counts + streams.hashed_uniform(seed, streams.ROTATION, rows, counts)) / weights
        chosen = []
        for members, c in parts:
            quota = budget if c < 0 else int(quotas[c])  # type: ignore[index]
            if quota:
                chosen.append(members[np.argsort(turn[members], kind="stable")[:quota]])
        epoch = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
        counts[epoch] += 1
        yield epoch.astype(np.int64)
