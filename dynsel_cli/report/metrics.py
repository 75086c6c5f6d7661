"""Plan metrics as pure, vectorised numpy functions (definitions: docs/report.md).

Every function works on *rows*: dense positions 0..N-1 of the samples of a data set (see
:func:`ids_to_rows`). Nothing here loops over samples in Python; callers loop over epochs and carry
small per-sample state arrays (usage counts, current and longest runs) from one epoch to the next.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DynselError

# --------------------------------------------------------------------------------------------------
# ids -> rows


class IdIndex:
    """Maps sample ids to positions in ``universe`` (distinct int64 ids, any order); sorts once."""

    def __init__(self, universe: np.ndarray, what: str = "plan") -> None:
        universe = np.asarray(universe, dtype=np.int64)
        self.order = np.argsort(universe, kind="stable")
        self.sorted_ids = universe[self.order]
        self.what = what
        # the common case: ids are exactly the row numbers 0..N-1
        self.identity = bool(np.array_equal(universe, np.arange(len(universe), dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.sorted_ids)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        n = len(self.sorted_ids)
        if len(ids) == 0:
            return np.zeros(0, dtype=np.int64)
        if self.identity and int(ids.min()) >= 0 and int(ids.max()) < n:
            return ids
        pos = np.searchsorted(self.sorted_ids, ids)
        if n:
            found = (pos < n) & (self.sorted_ids[np.minimum(pos, n - 1)] == ids)
        else:
            found = np.zeros(len(ids), dtype=bool)
        if not found.all():
            missing = int(ids[np.argmin(found)])
            raise DynselError(
                f"{self.what}: sample id {missing} is not in the factor tables ({int((~found).sum())} ids missing); "
                "pass the factor tables the plan was built from"
            )
        return self.order[pos].astype(np.int64)


def ids_to_rows(ids: np.ndarray, universe: np.ndarray, what: str = "plan") -> np.ndarray:
    """Map sample ids to positions in ``universe`` (an int64 array of distinct ids, any order).

    Raises :class:`DynselError` naming the first id that is not in ``universe``.
    """
    return IdIndex(universe, what)(ids)


def membership(rows: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask [n]: True for every row that occurs in ``rows`` (duplicates count once)."""
    mask = np.zeros(n, dtype=bool)
    mask[np.asarray(rows, dtype=np.int64)] = True
    return mask


# --------------------------------------------------------------------------------------------------
# usage counts and runs


def usage_counts(epochs: Sequence[np.ndarray], n: int) -> np.ndarray:
    """int64 [n]: in how many epochs each row was selected (an epoch that lists a row twice counts once)."""
    counts = np.zeros(n, dtype=np.int64)
    for rows in epochs:
        counts += membership(rows, n)
    return counts


def update_runs(current: np.ndarray, longest: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of run tracking, vectorised over samples.

    ``current[i]`` is the length of the run of consecutive selections of i that ends at the previous
    epoch; ``member`` says who is selected now. Returns the new (current, longest).
    """
    current = (current + 1) * member
    return current, np.maximum(longest, current)


def longest_runs(epochs: Sequence[np.ndarray], n: int) -> np.ndarray:
    """int64 [n]: the longest run of consecutive epochs in which each row was selected."""
    current = np.zeros(n, dtype=np.int64)
    longest = np.zeros(n, dtype=np.int64)
    for rows in epochs:
        current, longest = update_runs(current, longest, membership(rows, n))
    return longest


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 = all equal, (n-1)/n = one value holds everything.

    G = Σ_i (2i − n − 1) x_(i) / (n Σ x), x sorted ascending, i = 1..n. 0 for an empty or all-zero array.
    Small non-negative integers (usage counts) take an O(n) histogram path with the same result.
    """
    x = np.asarray(values).ravel()
    n = len(x)
    if n == 0:
        return 0.0
    if np.issubdtype(x.dtype, np.integer) and x.min() >= 0 and x.max() <= 4 * n + 1024:
        hist = np.bincount(x.astype(np.int64)).astype(np.float64)
        k = np.arange(len(hist), dtype=np.float64)
        total = float(np.dot(hist, k))
        if total == 0.0:
            return 0.0
        start = np.concatenate(([0.0], np.cumsum(hist)[:-1]))  # sorted positions s+1..s+h hold value k
        sum_i = hist * start + hist * (hist + 1.0) / 2.0
        return float((2.0 * np.dot(sum_i, k) - (n + 1.0) * total) / (n * total))
    xs = np.sort(x.astype(np.float64))
    total = float(xs.sum())
    if total == 0.0:
        return 0.0
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.dot(2.0 * i - n - 1.0, xs) / (n * total))


def usage_histogram(counts: np.ndarray, n_epochs: int) -> list[int]:
    """Number of samples selected exactly k times, for k = 0..n_epochs."""
    return np.bincount(np.asarray(counts, dtype=np.int64), minlength=n_epochs + 1)[: n_epochs + 1].astype(int).tolist()


@dataclass(frozen=True)
class UsageStats:
    """Distribution of usage counts (and longest runs) over all samples of the data set."""

    min: int
    median: float
    max: int
    mean: float
    gini: float
    never_selected_share: float
    longest_run_max: int
    longest_run_mean: float

    def as_dict(self, prefix: str = "") -> dict[str, float | int]:
        return {prefix + k: v for k, v in self.__dict__.items()}


def usage_stats(counts: np.ndarray, longest: np.ndarray) -> UsageStats:
    """Summary of usage counts and longest runs over all N samples (never-selected samples included)."""
    counts = np.asarray(counts)
    longest = np.asarray(longest)
    if len(counts) == 0:
        return UsageStats(0, 0.0, 0, 0.0, 0.0, 0.0, 0, 0.0)
    return UsageStats(
        min=int(counts.min()),
        median=float(np.median(counts)),
        max=int(counts.max()),
        mean=float(counts.mean()),
        gini=gini(counts),
        never_selected_share=float(np.mean(counts == 0)),
        longest_run_max=int(longest.max()),
        longest_run_mean=float(longest.mean()),
    )


# --------------------------------------------------------------------------------------------------
# overlaps


def overlap(previous: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(|A∩B| / |B|, |A∩B| / |A∪B|) for the sets A and B given as membership masks (see :func:`membership`):
    A an earlier epoch, B the current one.

    The first value is the share of this epoch that was also selected in the earlier epoch. Both are 0
    when the sets are empty.
    """
    inter = int(np.count_nonzero(previous & current))
    union = int(np.count_nonzero(previous | current))
    size = int(np.count_nonzero(current))
    return (inter / size if size else 0.0), (inter / union if union else 0.0)


# --------------------------------------------------------------------------------------------------
# factors


def frequent_rare_units(
    frequency: np.ndarray, frequent_share: float = 0.1, rare_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks [m] of the *frequent* and *rare* units among live units (frequency > 0).

    Live units are ranked by frequency, descending, ties broken by unit id (lower first). Frequent: the
    first ⌈frequent_share · L⌉ of the L live units (the top decile by default). Rare: the last
    ⌊rare_share · L⌋ (the bottom half by default). The two sets never overlap for the defaults.
    """
    frequency = np.asarray(frequency, dtype=np.float64)
    live = np.flatnonzero(frequency > 0)
    frequent = np.zeros(len(frequency), dtype=bool)
    rare = np.zeros(len(frequency), dtype=bool)
    n_live = len(live)
    if n_live == 0:
        return frequent, rare
    # lexsort: last key is primary -> sort by -frequency, then unit id
    ranked = live[np.lexsort((live, -frequency[live]))]
    n_frequent = math.ceil(frequent_share * n_live - 1e-9)
    n_rare = math.floor(rare_share * n_live + 1e-9)
    frequent[ranked[:n_frequent]] = True
    if n_rare:
        rare[ranked[n_live - n_rare :]] = True
    return frequent, rare


def fired_codes(units: np.ndarray, acts: np.ndarray, width: int) -> np.ndarray:
    """The codes' unit ids [N, k] with every entry that did not fire (activation <= 0, or a unit id
    outside 0..width-1) replaced by the sentinel ``width``. Computed once per report."""
    units = np.asarray(units, dtype=np.int64)
    valid = (np.asarray(acts) > 0) & (units >= 0) & (units < width)
    return np.where(valid, units, width)


def covered_units(codes: np.ndarray, member: np.ndarray, width: int) -> np.ndarray:
    """Boolean mask [width]: units that fired in at least one sample of ``member`` (a boolean mask over
    rows); ``codes`` from :func:`fired_codes`."""
    return np.bincount(codes[member].ravel(), minlength=width + 1)[:width] > 0


def fired_units(units: np.ndarray, acts: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """Boolean mask [width]: units that fired (activation > 0) in at least one of ``rows``."""
    return covered_units(fired_codes(units, acts, width), membership(rows, len(units)), width)


def covered_share(covered: np.ndarray, subset: np.ndarray) -> float | None:
    """|covered ∩ subset| / |subset|, or None for an empty subset."""
    total = int(subset.sum())
    if total == 0:
        return None
    return float((covered & subset).sum() / total)


# --------------------------------------------------------------------------------------------------
# classes


def class_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, codes): the sorted distinct labels, and each sample's position in them."""
    classes, codes = np.unique(np.asarray(labels, dtype=np.int64), return_inverse=True)
    return classes, codes.astype(np.int64)


def class_shares(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """float64 [C]: share of each class among ``codes`` (all zeros when empty)."""
    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes, minlength=n_classes)[:n_classes].astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def worst_deviation(shares: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """(max_c |shares_c − reference_c|, argmax c): the worst class's absolute deviation, in share points."""
    dev = np.abs(np.asarray(shares, dtype=np.float64) - np.asarray(reference, dtype=np.float64))
    if len(dev) == 0:
        return 0.0, -1
    worst = int(np.argmax(dev))
    return float(dev[worst]), worst


def set_key(member: np.ndarray) -> str:
    """A short identity of an epoch's sample set (its membership mask), to find sets that come back."""
    import hashlib

    return hashlib.sha256(np.packbits(member).tobytes()).hexdigest()[:32]
