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

from collections.abc import Iterator

import numpy as np

from . import streams

_CHUNK = 1 << 16  # samples per chunk of the turn computation (bounds the hashing temporaries)


def _class_members(n: int, labels: np.ndarray | None, quotas: np.ndarray | None) -> list[tuple[np.ndarray | None, int]]:
    """(rows of the class as uint32 — None for "all n rows", class id or -1) per rotation stream."""
    if quotas is None or labels is None:
        return [(None, -1)]
    return [(_index_array(np.flatnonzero(labels == c), n), c) for c in range(len(quotas))]


def _index_array(positions: np.ndarray, n: int) -> np.ndarray:
    """Row numbers in 4 bytes each when they fit (the values are what matter, not the dtype)."""
    return positions.astype(np.uint32 if n < 2**32 else np.int64)


class _Walk:
    """One seeded permutation stream over ``members`` (None: all ``size`` rows), taken ``quota`` rows at a time.

    The walk holds positions into ``members``; a fresh pass moves the rows this epoch already took to its
    end (found with a mask over positions).
    """

    def __init__(self, members: np.ndarray | None, size: int, stream_id: int, seed: int) -> None:
        self.members, self.size, self.stream_id, self.seed = members, size, stream_id, seed
        self.passes = 0
        self.order = self._permutation()
        self.position = 0

    def _permutation(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.passes, streams.RS2, self.stream_id + 1])
        return _index_array(rng.permutation(self.size), self.size)

    def take(self, quota: int) -> np.ndarray:
        """The rows of the next ``quota`` turns."""
        taken = self.order[self.position : self.position + quota]
        self.position += len(taken)
        if len(taken) < quota:  # this pass is used up: a fresh permutation, this epoch's rows moved to its end
            self.passes += 1
            fresh = self._permutation()
            mask = np.zeros(self.size, dtype=bool)
            mask[taken] = True
            just_taken = mask[fresh]
            del mask
            self.order = np.concatenate([fresh[~just_taken], fresh[just_taken]])
            need = quota - len(taken)
            taken = np.concatenate([taken, self.order[:need]])
            self.position = need
        return taken if self.members is None else self.members[taken]


def rs2_epochs(
    n: int, budget: int, epochs: int, seed: int, labels: np.ndarray | None = None, quotas: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """RS2 without replacement: ``budget`` rows per epoch (``quotas[c]`` of class c when given)."""
    parts = _class_members(n, labels, quotas)
    walks = [
        (_Walk(members, n if members is None else len(members), c, seed), budget if c < 0 else int(quotas[c]))
        for members, c in parts
    ]  # type: ignore[index]
    for _ in range(epochs):
        yield _rows_of([walk.take(quota) for walk, quota in walks], n)


def _smallest(values: np.ndarray, quota: int) -> np.ndarray:
    """Positions (ascending) of the ``quota`` smallest values, ties to the lower position: the first
    ``quota`` of a stable argsort, found with one partition and two passes instead of a sort."""
    if quota >= len(values):
        return np.arange(len(values), dtype=np.int64)
    kth = np.partition(values, quota - 1)[quota - 1]
    chosen = values < kth
    missing = quota - int(np.count_nonzero(chosen))
    if missing:
        chosen[np.flatnonzero(values == kth)[:missing]] = True
    return np.flatnonzero(chosen)


def _rows_of(parts: list[np.ndarray], n: int) -> np.ndarray:
    """The union of disjoint row sets, sorted, int64 (a mask pass: O(N) instead of a sort)."""
    picked = np.zeros(n, dtype=bool)
    for rows in parts:
        picked[rows] = True
    return np.flatnonzero(picked)


def _turns(weights: np.ndarray | None, counts: np.ndarray, seed: int) -> np.ndarray:
    """Every row's next turn ``(c_i + u_i) / π_i`` (π_i = 1 when ``weights`` is None), float64 [N], in chunks."""
    turn = np.empty(len(counts), dtype=np.float64)
    for start in range(0, len(counts), _CHUNK):
        stop = min(start + _CHUNK, len(counts))
        c = counts[start:stop]
        turn[start:stop] = c + streams.hashed_uniform(
            seed, streams.ROTATION, np.arange(start, stop, dtype=np.uint64), c
        )
        if weights is not None:
            turn[start:stop] /= weights[start:stop]
    return turn


def weighted_rotation_epochs(
    weights: np.ndarray | None,
    budget: int,
    epochs: int,
    seed: int,
    labels: np.ndarray | None = None,
    quotas: np.ndarray | None = None,
    *,
    n: int | None = None,
) -> Iterator[np.ndarray]:
    """Rotation at rates proportional to ``weights`` (π_i > 0); see the module docstring. ``weights`` None:
    every one of ``n`` rows has weight 1 (nothing per row is held for them)."""
    if weights is None:
        if n is None:
            raise ValueError("uniform rotation weights (None) need the number of rows n")
    else:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or not np.all(weights > 0) or not np.all(np.isfinite(weights)):
            raise ValueError("rotation weights must be a 1-D array of finite positive numbers")
        n = len(weights)
    counts = np.zeros(n, dtype=np.uint32)  # selections so far: at most one per epoch
    parts = _class_members(n, labels, quotas)
    for _ in range(epochs):
        turn = _turns(weights, counts, seed)
        chosen = []
        for members, c in parts:
            quota = budget if c < 0 else int(quotas[c])  # type: ignore[index]
            if quota:
                chosen.append(_smallest(turn, quota) if members is None else members[_smallest(turn[members], quota)])
        del turn
        epoch = _rows_of(chosen, n)
        counts[epoch] += 1
        yield epoch
