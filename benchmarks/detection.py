"""Detection metrics of a plan against a regime's ground truth (benchmarks/regimes.py's ``.truth.npz``).

Recorded in every run of benchmarks/evidence.py where they apply (shares and precisions in [0, 1]):

``flipped_draw_share``
    Share of all the plan's draws (every epoch's ids, repeats counted) that go to flipped rows; regimes
    with flipped labels only, every method.
``grouped_share`` / ``flagged_share``
    dynsel variants: share of rows in a near-duplicate group of more than one row (signals' group_size > 1)
    / marked suspect. Anchors: share of rows dropped as near-duplicates (semdedup) / as label issues
    (cleanlab).
``suspect_precision`` / ``suspect_recall``
    Flagged rows (dynsel's suspects, cleanlab's issues) against the flipped rows; regimes with flips.
``copy_pair_precision`` / ``copy_pair_recall``
    A pair of rows is a true copy pair when the rows share a source (``source_index``); a predicted pair
    shares a dynsel group or a semdedup group. Counted per group and per (group, source) with bincounts,
    never as an N x N matrix; regimes where some source has several rows.

A precision is None when nothing was predicted.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pairs(sizes: np.ndarray) -> int:
    sizes = np.asarray(sizes, dtype=np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def copy_pair_scores(group: np.ndarray, source: np.ndarray) -> tuple[float | None, float | None]:
    """(precision, recall) of "same group" as a predictor of "same source", over all pairs of rows."""
    _, g = np.unique(np.asarray(group), return_inverse=True)
    _, s = np.unique(np.asarray(source), return_inverse=True)
    predicted = _pairs(np.bincount(g))
    true = _pairs(np.bincount(s))
    both = _pairs(np.unique(g.astype(np.int64) * (int(s.max()) + 1) + s, return_counts=True)[1])
    return (both / predicted if predicted else None), (both / true if true else None)


def flag_scores(flagged: np.ndarray, truth: np.ndarray) -> tuple[float | None, float | None]:
    """(precision, recall) of ``flagged`` rows against ``truth`` rows."""
    flagged, truth = np.asarray(flagged, dtype=bool), np.asarray(truth, dtype=bool)
    hit = int((flagged & truth).sum())
    return (hit / int(flagged.sum()) if flagged.any() else None), (hit / int(truth.sum()) if truth.any() else None)


def signal_columns(table: Any, n: int) -> dict[str, np.ndarray]:
    """The signals table's group, group_size and suspect columns (those present), indexed by row id."""
    if table is None:
        return {}
    names = set(table.column_names)
    ids = (
        table.column("id").to_numpy(zero_copy_only=False).astype(np.int64)
        if "id" in names
        else np.arange(table.num_rows)
    )
    if len(ids) != n or ids.min() < 0 or ids.max() >= n:
        raise ValueError(f"signals: {len(ids)} rows with ids {ids.min()}..{ids.max()} for {n} training rows")
    out = {}
    for name in ("group", "group_size", "suspect"):
        if name in names:
            column = table.column(name).to_numpy(zero_copy_only=False)
            if name == "suspect":
                column = (
                    np.asarray([bool(v) if v is not None else False for v in column], dtype=bool)
                    if column.dtype == object
                    else column.astype(bool)
                )
            values = np.empty(n, dtype=column.dtype)
            values[ids] = column
            out[name] = values
    return out


def detection_metrics(
    epochs: list[np.ndarray],
    source: np.ndarray,
    flipped: np.ndarray,
    signals: Any = None,
    duplicate: np.ndarray | None = None,
    issue: np.ndarray | None = None,
    anchor_group: np.ndarray | None = None,
) -> dict[str, float | None]:
    """The metrics that apply (see the module docstring). ``signals``: a dynsel plan's signals table;
    ``duplicate``/``issue``/``anchor_group``: an anchor's drops and semdedup groups."""
    n = len(source)
    flipped = np.asarray(flipped, dtype=bool)
    has_flips = bool(flipped.any())
    has_copies = len(np.unique(source)) < n
    out: dict[str, float | None] = {}
    if has_flips:
        draws = (
            np.concatenate([np.asarray(e, dtype=np.int64) for e in epochs]) if epochs else np.zeros(0, dtype=np.int64)
        )
        out["flipped_draw_share"] = float(flipped[draws].mean()) if len(draws) else None
    columns = signal_columns(signals, n)
    groups = columns.get("group", anchor_group)
    flags = columns.get("suspect", issue)
    if "group_size" in columns:
        out["grouped_share"] = float((columns["group_size"] > 1).mean())
    elif duplicate is not None:
        out["grouped_share"] = float(np.asarray(duplicate, dtype=bool).mean())
    if flags is not None:
        out["flagged_share"] = float(np.asarray(flags, dtype=bool).mean())
        if has_flips:
            out["suspect_precision"], out["suspect_recall"] = flag_scores(flags, flipped)
    if groups is not None and has_copies:
        out["copy_pair_precision"], out["copy_pair_recall"] = copy_pair_scores(groups, source)
    return out
