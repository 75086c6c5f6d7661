"""What a plan does with messy data: near-duplicates, suspected mislabels and small classes.

The signals are dynsel's own (``signals.parquet`` in a ``--method dynsel`` plan, or computed from the
factor tables for any other plan when the report has them), so a user can see, for any plan, how much of
its budget goes to copies of one item and to samples whose labels look wrong, against their share of the
data set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: The imbalance at which docs/method.md suggests ``--class-quota balanced`` (largest / smallest class size).
BALANCED_QUOTA_HINT_RATIO = 10.0


def read_plan_signals(
    plan_dir: Path, to_rows: Callable[[np.ndarray], np.ndarray], n: int
) -> dict[str, np.ndarray] | None:
    """signals.parquet of a plan, as per-row arrays (rows as the report numbers them), or None."""
    path = Path(plan_dir) / "signals.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    rows = to_rows(table.column("id").to_numpy())
    out = {"group_size": np.ones(n, dtype=np.int64), "suspect": np.zeros(n, dtype=bool)}
    out["group_size"][rows] = table.column("group_size").to_numpy()
    out["suspect"][rows] = table.column("suspect").to_numpy(zero_copy_only=False)
    return out


#: (label, key prefix) of the messy-data summary's signals, in the order the reports show them
MESSY_ROWS = (("near-duplicates", "near_duplicates"), ("suspected mislabels", "suspected_mislabels"))

_COMPUTED: dict[
    tuple[str, float, str], dict[str, np.ndarray]
] = {}  # (factor tables, dup cosine, label trust) → signals


def signals_from_factors(factors: Any, settings: dict[str, Any]) -> dict[str, np.ndarray]:
    """The signals of the factor tables, computed once per process (a report with --compare asks twice)."""
    from ..config import PlanConfig
    from ..plan.signals import (
        compute_signals,  # imported late: only reports that need it pay for faiss
    )

    cosine = float(settings.get("dup_cosine") or 0.9)
    # the plan's own label-trust rule where it has one (a dynsel plan), else the default method's
    trust = settings.get("label_trust") if isinstance(settings.get("label_trust"), str) else PlanConfig.label_trust
    key = (str(factors.manifest.get("fingerprint")), cosine, trust)
    if key not in _COMPUTED:
        signals = compute_signals(
            factors.samples.units,
            factors.samples.acts,
            int(factors.manifest.get("width", 0)),
            factors.samples.labels,
            dup_cosine=cosine,
            label_trust=trust,
        )
        _COMPUTED[key] = {"group_size": signals.group_size, "suspect": signals.suspect}
    return _COMPUTED[key]


def messy_data_summary(
    usage: np.ndarray, signals: dict[str, np.ndarray] | None, labels: np.ndarray | None
) -> dict[str, Any] | None:
    """Shares of the data set and of the plan's draws (all epochs) that are near-duplicates and suspects;
    the class-size imbalance and whether it calls for balanced quotas."""
    if signals is None and labels is None:
        return None
    total = float(usage.sum())
    out: dict[str, Any] = {}
    if signals is not None:
        duplicate = signals["group_size"] > 1
        suspect = signals["suspect"]
        out["near_duplicates_data_share"] = float(duplicate.mean()) if len(duplicate) else 0.0
        out["near_duplicates_draw_share"] = float(usage[duplicate].sum() / total) if total else 0.0
        out["suspected_mislabels_data_share"] = float(suspect.mean()) if len(suspect) else 0.0
        out["suspected_mislabels_draw_share"] = float(usage[suspect].sum() / total) if total else 0.0
    if labels is not None and len(labels):
        sizes = np.bincount(np.unique(labels, return_inverse=True)[1])
        ratio = float(sizes.max() / sizes.min())
        out["class_size_ratio"] = ratio
        out["balanced_quota_suggested"] = ratio >= BALANCED_QUOTA_HINT_RATIO
    return out
