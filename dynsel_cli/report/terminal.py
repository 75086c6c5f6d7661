"""Render a report in the terminal with rich: compact tables and unicode sparklines/bars.

Every cell, header and title goes to rich as a :class:`~rich.text.Text` made by :func:`_text`, never as a
markup string: class names, plan names and manifest strings are data, so ``[/]`` or ``[link=...]`` in a
class name is shown as typed, and control characters as their escapes (:func:`~dynsel_cli.printable.printable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..printable import printable
from .fmt import (
    class_label,
    fmt,
    fmt_delta,
    fmt_field,
    has_values,
    label,
    plan_title,
    series,
)
from .messy import MESSY_ROWS

SPARK = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
COLOR_A = "cyan"
COLOR_B = "dark_orange"


def sparkline(values: Sequence[float | None], lo: float | None = None, hi: float | None = None, width: int = 48) -> str:
    """One character per value (▁..█) on the scale [lo, hi] (default: the values' range); gaps for None.

    Longer series are resampled to ``width`` characters by taking evenly spaced values.
    """
    vals = list(values)
    if len(vals) > width:
        step = (len(vals) - 1) / (width - 1)
        vals = [vals[round(i * step)] for i in range(width)]
    finite = [v for v in vals if v is not None]
    if not finite:
        return " " * len(vals)
    lo = min(finite) if lo is None else lo
    hi = max(finite) if hi is None else hi
    span = hi - lo
    out = []
    for v in vals:
        if v is None:
            out.append(" ")
        elif span <= 0:
            out.append(SPARK[3])
        else:
            frac = min(max((v - lo) / span, 0.0), 1.0)
            out.append(SPARK[min(int(frac * len(SPARK)), len(SPARK) - 1)])
    return "".join(out)


def bar(fraction: float | None, width: int = 12) -> str:
    """A horizontal bar of ``width`` cells filled to ``fraction`` (eighth-cell resolution)."""
    if fraction is None:
        return ""
    eighths = round(min(max(fraction, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


def _text(value: Any, style: str = "") -> Text:
    """A cell, header or title: the value as plain text (no markup, no emoji codes, no control characters)."""
    return Text(printable(value), style=style)


def _add_row(table: Table, cells: Sequence[Any]) -> None:
    table.add_row(*(_text(cell) for cell in cells))


def _header(report: dict[str, Any], compare: dict[str, Any] | None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_header=compare is not None, pad_edge=False)
    table.add_column("", style="bold")
    table.add_column(_text(plan_title(report)), style=COLOR_A)
    if compare is not None:
        table.add_column(_text(plan_title(compare)), style=COLOR_B)
    rows = [
        ("method", lambda r: fmt(r.get("method"))),
        ("samples", lambda r: fmt(r.get("n_samples"), "int")),
        ("epochs", lambda r: fmt(r.get("epochs"), "int")),
        ("ratio", lambda r: fmt(r.get("ratio"), "float")),
        ("seed", lambda r: fmt(r.get("seed"))),
        ("batch × world", lambda r: f"{fmt(r.get('batch_size'))} × {fmt(r.get('world_size'))}"),
        ("total steps", lambda r: fmt(r.get("total_steps"), "int")),
        ("sha256", lambda r: (r.get("sha256") or "–")[:16]),
        ("factors", lambda r: ((r.get("factors") or {}).get("fingerprint") or "–")[:16]),
    ]
    for name, get in rows:
        cells = [get(report)] + ([get(compare)] if compare is not None else [])
        _add_row(table, [name, *cells])
    return table


def _overall(report: dict[str, Any], compare: dict[str, Any] | None) -> Table:
    table = Table(title="Overall", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("metric")
    table.add_column("A" if compare is not None else "value", justify="right", style=COLOR_A)
    if compare is not None:
        table.add_column("B", justify="right", style=COLOR_B)
        table.add_column("Δ (B − A)", justify="right")
    oa = report.get("overall", {})
    ob = compare.get("overall", {}) if compare is not None else {}
    keys = [
        "total_selected",
        "total_steps",
        "count_mean",
        "cumulative_seen",
        "epochs_to_full_coverage",
        "usage_min",
        "usage_median",
        "usage_max",
        "usage_gini",
        "usage_never_selected_share",
        "usage_longest_run_max",
        "usage_longest_run_mean",
        "overlap_prev_mean",
        "jaccard_prev_mean",
        "overlap_lag2_mean",
        "distinct_epoch_sets",
        "repeated_epoch_sets",
        "lambda_first",
        "lambda_last",
        "r_mean",
        "d_mean",
        "frequent_covered_mean",
        "rare_covered_mean",
        "frequent_covered",
        "rare_covered",
        "class_worst_deviation",
        "class_worst_deviation_mean",
    ]
    for key in keys:
        a, b = oa.get(key), ob.get(key)
        if a is None and b is None:
            continue
        cells = [label(key), fmt_field(key, a)]
        if compare is not None:
            delta = None if a is None or b is None else b - a
            cells += [fmt_field(key, b), fmt_delta(key, delta)]
        _add_row(table, cells)
    return table


TREND_KEYS = [
    ("count", None, None),
    ("cumulative_seen", 0.0, 1.0),
    ("overlap_prev", 0.0, 1.0),
    ("jaccard_prev", 0.0, 1.0),
    ("lambda", 0.0, 1.0),
    ("usage_gini", 0.0, None),
    ("usage_never_selected_share", 0.0, 1.0),
    ("r_mean", 0.0, 1.0),
    ("d_mean", 0.0, 1.0),
    ("frequent_covered", 0.0, 1.0),
    ("rare_covered", 0.0, 1.0),
    ("class_worst_deviation", 0.0, None),
]


def _trends(report: dict[str, Any], compare: dict[str, Any] | None) -> Table:
    table = Table(title="Per-epoch trends (first → last)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("metric")
    table.add_column("A" if compare is not None else "trend", style=COLOR_A, no_wrap=True)
    if compare is not None:
        table.add_column("B", style=COLOR_B, no_wrap=True)
    for key, lo, hi in TREND_KEYS:
        sa = series(report, key)
        sb = series(compare, key) if compare is not None else []
        if not has_values(sa) and not has_values(sb):
            continue
        finite = [v for v in sa + sb if v is not None]
        lo_ = min(finite) if lo is None else min(lo, min(finite))
        hi_ = max(finite) if hi is None else max(hi, max(finite))

        def cell(values: list[Any]) -> str:
            if not has_values(values):
                return "–"
            first = next(v for v in values if v is not None)
            last = next(v for v in reversed(values) if v is not None)
            return f"{sparkline(values, lo_, hi_)} {fmt_field(key, first)} → {fmt_field(key, last)}"  # noqa: B023 (called in this iteration)

        _add_row(table, [label(key), cell(sa), *([cell(sb)] if compare is not None else [])])
    return table


def _per_epoch(report: dict[str, Any], title: str, style: str, width: int) -> Table:
    """The per-epoch table; on narrow consoles the least important columns are left out (and named)."""
    recs = report.get("per_epoch", [])

    def worst(r: dict[str, Any]) -> str:
        if r["class_worst_deviation"] is None:
            return "–"
        return f"{fmt(r['class_worst_deviation'], 'pp')} ({_class_name(report, r['class_worst'])})"

    # (header, field, render, priority: lower = kept longer)
    cols: list[tuple[str, str, Any, int]] = [
        ("ep", "epoch", lambda r: str(r["epoch"]), 0),
        ("budget", "count", lambda r: fmt(r["count"], "int"), 1),
        ("steps", "steps", lambda r: fmt(r["steps"], "int"), 9),
        ("seen", "cumulative_seen", lambda r: fmt(r["cumulative_seen"], "pct"), 2),
        ("overlap", "overlap_prev", lambda r: fmt(r["overlap_prev"], "pct"), 3),
        ("Jacc.", "jaccard_prev", lambda r: fmt(r["jaccard_prev"], "float"), 12),
        ("λ", "lambda", lambda r: fmt(r["lambda"], "float"), 6),
        ("Gini", "usage_gini", lambda r: fmt(r["usage_gini"], "float"), 5),
        ("never", "usage_never_selected_share", lambda r: fmt(r["usage_never_selected_share"], "pct"), 4),
        ("run max", "usage_longest_run_max", lambda r: fmt(r["usage_longest_run_max"], "int"), 11),
        ("R", "r_mean", lambda r: fmt(r["r_mean"], "float"), 7),
        ("D", "d_mean", lambda r: fmt(r["d_mean"], "float"), 7),
        ("freq cov", "frequent_covered", lambda r: fmt(r["frequent_covered"], "pct"), 10),
        ("rare cov", "rare_covered", lambda r: fmt(r["rare_covered"], "pct"), 10),
        ("worst class", "class_worst_deviation", worst, 8),
    ]
    cols = [c for c in cols if c[1] == "epoch" or has_values([r.get(c[1]) for r in recs])]
    cells = {c[1]: [printable(c[2](r)) for r in recs] for c in cols}  # as shown, for the widths

    def need(columns: list[tuple[str, str, Any, int]], seen_bar: bool) -> int:
        total = 0
        for head, key, _, _ in columns:
            w = max([cell_len(head)] + [cell_len(x) for x in cells[key]])
            total += w + (9 if key == "cumulative_seen" and seen_bar else 0) + 3
        return total

    seen_bar = need(cols, True) <= width
    dropped: list[str] = []
    while need(cols, seen_bar) > width and len(cols) > 2:
        worst_priority = max(c[3] for c in cols)
        victims = [c for c in cols if c[3] == worst_priority]
        cols = [c for c in cols if c[3] != worst_priority]
        dropped += [c[0] for c in victims]
    caption = f"not shown at this width: {', '.join(dropped)} (see --json or --html)" if dropped else None
    table = Table(
        title=_text(title, f"bold {style}"),
        caption=caption,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        caption_justify="left",
        pad_edge=False,
    )
    for head, _, _, _ in cols:
        table.add_column(head, justify="right", no_wrap=True)
    for i, rec in enumerate(recs):
        row = []
        for _, key, _, _ in cols:
            text = cells[key][i]
            if key == "cumulative_seen" and seen_bar:
                text = f"{bar(rec['cumulative_seen'], 8)} {text}"
            row.append(text)
        _add_row(table, row)
    return table


def _class_name(report: dict[str, Any], value: Any) -> str:
    classes = report.get("classes") or []
    if value in classes:
        return class_label(report, classes.index(value))
    return fmt(value)


def _histogram(report: dict[str, Any], compare: dict[str, Any] | None) -> Table:
    ha = report.get("overall", {}).get("usage_histogram", [])
    hb = compare.get("overall", {}).get("usage_histogram", []) if compare is not None else []
    top = max(ha + hb + [1])
    table = Table(
        title="Usage counts (samples selected k times)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False
    )
    table.add_column("k", justify="right")
    table.add_column("A" if compare is not None else "samples", style=COLOR_A, no_wrap=True)
    if compare is not None:
        table.add_column("B", style=COLOR_B, no_wrap=True)
    for k in range(max(len(ha), len(hb))):
        a = ha[k] if k < len(ha) else None
        b = hb[k] if k < len(hb) else None
        if not a and not b and 0 < k:
            continue
        cells = [str(k), f"{bar(a / top if a is not None else None, 20)} {fmt(a, 'int')}"]
        if compare is not None:
            cells.append(f"{bar(b / top if b is not None else None, 20)} {fmt(b, 'int')}")
        _add_row(table, cells)
    return table


def _classes(report: dict[str, Any], compare: dict[str, Any] | None) -> Table | None:
    ref = report.get("class_share_dataset")
    if not ref:
        return None
    table = Table(
        title="Class shares per epoch (vs data set)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False
    )
    table.add_column("class")
    table.add_column("data set", justify="right")
    with_b = (
        compare is not None
        and compare.get("class_share_dataset") is not None
        and compare.get("classes") == report.get("classes")
    )
    a = "A: " if compare is not None else ""  # the A/B prefixes only where there is a B
    table.add_column(f"{a}per epoch", style=COLOR_A, no_wrap=True)
    table.add_column(f"{a}min–max", justify="right", style=COLOR_A)
    if with_b:
        table.add_column("B: per epoch", style=COLOR_B, no_wrap=True)
        table.add_column("B: min–max", justify="right", style=COLOR_B)
    sa = [rec.get("class_share") for rec in report.get("per_epoch", [])]
    sb = [rec.get("class_share") for rec in compare.get("per_epoch", [])] if with_b else []
    every = [v for row in sa + sb if row for v in row]
    hi = max(every + [max(ref)]) if every else max(ref)
    for c, share in enumerate(ref):
        a_vals = [row[c] if row else None for row in sa]
        cells = [class_label(report, c), fmt(share, "pct"), sparkline(a_vals, 0.0, hi), _range(a_vals)]
        if with_b:
            b_vals = [row[c] if row else None for row in sb]
            cells += [sparkline(b_vals, 0.0, hi), _range(b_vals)]
        _add_row(table, cells)
    return table


def _messy(report: dict[str, Any], compare: dict[str, Any] | None) -> Table | None:
    """Near-duplicates and suspected mislabels: share of the data set vs share of the plan's draws."""
    mine = report.get("messy_data") or {}
    if "near_duplicates_data_share" not in mine and "class_size_ratio" not in mine:
        return None
    other = (compare or {}).get("messy_data") or {}
    table = Table(
        title="Messy data (share of the data set vs of the plan's draws)",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
    )
    table.add_column("signal")
    table.add_column("data set", justify="right")
    table.add_column("A: draws" if compare is not None else "draws", justify="right", style=COLOR_A)
    if compare is not None:
        table.add_column("B: draws", justify="right", style=COLOR_B)
    for name, key in MESSY_ROWS:
        if f"{key}_data_share" in mine:
            cells = [name, fmt(mine[f"{key}_data_share"], "pct"), fmt(mine[f"{key}_draw_share"], "pct")]
            if compare is not None:
                cells.append(fmt(other.get(f"{key}_draw_share"), "pct"))
            _add_row(table, cells)
    if "class_size_ratio" in mine:
        hint = (
            "  (≥ 10: consider --class-quota balanced, docs/method.md)" if mine.get("balanced_quota_suggested") else ""
        )
        cells = ["largest / smallest class", f"{mine['class_size_ratio']:.1f}×{hint}", ""]
        if compare is not None:
            cells.append("")
        _add_row(table, cells)
    return table


def _range(values: list[Any]) -> str:
    finite = [v for v in values if v is not None]
    if not finite:
        return "–"
    return f"{fmt(min(finite), 'pct')}–{fmt(max(finite), 'pct')}"


def render_terminal(report: dict[str, Any], console: Console, compare: dict[str, Any] | None = None) -> None:
    """Print ``report`` (and, side by side, a second plan's report ``compare``) to ``console``."""
    title = f"dynsel report: {plan_title(report)}" + (f"  vs  {plan_title(compare)}" if compare is not None else "")
    parts: list[Any] = [_header(report, compare)]
    for who, r in (("A", report), ("B", compare)):
        if r is None:
            continue
        for w in r.get("warnings", []):
            parts.append(_text(f"warning ({who}): {w}" if compare is not None else f"warning: {w}", "yellow"))
    console.print(Panel(Group(*parts), title=_text(title), title_align="left", border_style="dim"))
    console.print(_overall(report, compare))
    console.print(_trends(report, compare))
    width = console.width
    console.print(
        _per_epoch(
            report, f"Per epoch: A = {plan_title(report)}" if compare is not None else "Per epoch", COLOR_A, width
        )
    )
    if compare is not None:
        console.print(_per_epoch(compare, f"Per epoch: B = {plan_title(compare)}", COLOR_B, width))
    console.print(_histogram(report, compare))
    classes = _classes(report, compare)
    if classes is not None:
        console.print(classes)
    messy = _messy(report, compare)
    if messy is not None:
        console.print(messy)
