"""Labels and number formatting shared by the terminal and HTML renderers (no rich, no HTML here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: key -> (label, kind). kind: "pct" (a share shown as a percentage), "pp" (share points), "int",
#: "float" (3 significant decimals), "num" (integer or 1 decimal).
FIELDS: dict[str, tuple[str, str]] = {
    "count": ("budget (samples)", "int"),
    "count_mean": ("mean budget", "num"),
    "count_min": ("min budget", "int"),
    "count_max": ("max budget", "int"),
    "unique": ("distinct samples", "int"),
    "duplicates": ("duplicate entries", "int"),
    "budget_share": ("budget / N", "pct"),
    "steps": ("steps", "int"),
    "total_selected": ("samples trained on (all epochs)", "int"),
    "total_steps": ("optimizer steps (all epochs)", "int"),
    "new": ("first-time samples", "int"),
    "cumulative_seen": ("data set seen so far", "pct"),
    "epochs_to_full_coverage": ("epoch when all samples seen", "int"),
    "overlap_prev": ("overlap with previous epoch", "pct"),
    "jaccard_prev": ("Jaccard with previous epoch", "float"),
    "overlap_prev_mean": ("mean overlap with previous epoch", "pct"),
    "overlap_lag2": ("overlap with epoch e−2", "pct"),
    "overlap_lag2_mean": ("mean overlap with epoch e−2", "pct"),
    "repeats_epoch": ("same set as epoch", "int"),
    "distinct_epoch_sets": ("distinct epoch sets", "int"),
    "repeated_epoch_sets": ("epochs repeating an earlier set", "int"),
    "jaccard_prev_mean": ("mean Jaccard with previous epoch", "float"),
    "lambda": ("scheduler weight λ", "float"),
    "lambda_first": ("λ first epoch", "float"),
    "lambda_last": ("λ last epoch", "float"),
    "usage_min": ("usage min", "int"),
    "usage_median": ("usage median", "num"),
    "usage_max": ("usage max", "int"),
    "usage_mean": ("usage mean", "float"),
    "usage_gini": ("usage Gini", "float"),
    "usage_never_selected_share": ("never selected", "pct"),
    "usage_longest_run_max": ("longest run (max)", "int"),
    "usage_longest_run_mean": ("longest run (mean)", "float"),
    "r_mean": ("mean representativeness R of selected", "float"),
    "d_mean": ("mean rarity D of selected", "float"),
    "frequent_covered": ("frequent factors covered", "pct"),
    "rare_covered": ("rare factors covered", "pct"),
    "live_covered": ("live factors covered", "pct"),
    "frequent_covered_mean": ("frequent factors covered (mean/epoch)", "pct"),
    "rare_covered_mean": ("rare factors covered (mean/epoch)", "pct"),
    "class_worst_deviation": ("worst class deviation", "pp"),
    "class_worst_deviation_mean": ("worst class deviation (mean/epoch)", "pp"),
    "class_worst_epoch": ("epoch of worst class deviation", "int"),
    "class_worst": ("class of worst deviation", "int"),
}


def label(key: str) -> str:
    return FIELDS.get(key, (key.replace("_", " "), "num"))[0]


def fmt(value: Any, kind: str = "num") -> str:
    """A compact, human-readable rendering of a report value; "–" for null."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "pp":
        return f"{value * 100:.1f} pp"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "float":
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"


def fmt_field(key: str, value: Any) -> str:
    return fmt(value, FIELDS.get(key, ("", "num"))[1])


def fmt_delta(key: str, delta: Any) -> str:
    """A signed delta (b − a) in the field's unit; "–" for null, "±0" for zero."""
    if delta is None or isinstance(delta, bool):
        return "–"
    kind = FIELDS.get(key, ("", "num"))[1]
    if delta == 0:
        return "±0"
    sign = "+" if delta > 0 else "−"
    mag = abs(delta)
    if kind in ("pct", "pp"):
        return f"{sign}{mag * 100:.1f} pp"
    if kind == "int":
        return f"{sign}{int(mag):,}"
    if kind == "float":
        return f"{sign}{mag:.3f}"
    return f"{sign}{mag:.3g}"


def class_label(report: dict[str, Any], i: int) -> str:
    """The display name of the report's i-th class (name if known, else the label value)."""
    names = report.get("class_names")
    classes = report.get("classes") or []
    if names and i < len(names):
        return str(names[i])
    return str(classes[i]) if i < len(classes) else str(i)


def series(report: dict[str, Any], key: str) -> list[float | None]:
    """One per-epoch field as a list (None where absent)."""
    return [rec.get(key) for rec in report.get("per_epoch", [])]


def has_values(values: Sequence[Any]) -> bool:
    return any(v is not None for v in values)


def plan_title(report: dict[str, Any]) -> str:
    method = report.get("method") or "plan"
    return f"{report.get('name') or 'plan'} ({method})"
