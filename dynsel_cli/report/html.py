"""Render a report as one self-contained HTML page: inline CSS, inline SVG charts, no scripts, no fetches.

Every chart is an ``<svg data-chart="NAME">``; with a comparison report every chart shows both plans
(plan A in blue, plan B in orange; a second metric of the same plan is dashed). Points carry
``<title>`` tooltips, so hovering shows exact values without JavaScript. The report itself is embedded
as ``<script type="application/json" id="dynsel-report">`` (data, never executed) for tools.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from typing import Any

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

GENERATOR = "dynsel report"  # the <meta name='generator'> that lets `report --html` replace its own page

COLORS = {"A": "#2563eb", "B": "#ea580c"}
W, H = 560, 260
M_LEFT, M_RIGHT, M_TOP, M_BOTTOM = 52, 16, 34, 40

#: the charts a report with factor tables and labels shows, in page order
CHARTS_ALL = (
    "coverage",
    "budget",
    "usage-histogram",
    "usage-trend",
    "overlap",
    "lambda",
    "scores",
    "factor-coverage",
    "class-deviation",
    "class-share",
)
#: the charts that need no factor tables
CHARTS_PLAN_ONLY = ("coverage", "budget", "usage-histogram", "usage-trend", "overlap", "lambda")


def _esc(value: Any) -> str:
    return escape(str(value), quote=True)


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * mag:
            return mult * mag
    return 10 * mag


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (about ``target`` of them)."""
    if hi <= lo:
        hi = lo + 1.0
    step = _nice_step(hi - lo, target)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, max(last, first + 1) + 1)]


def _tick_label(value: float, kind: str) -> str:
    if kind == "pct":
        return f"{value * 100:.0f}%" if abs(value * 100 - round(value * 100)) < 1e-6 else f"{value * 100:.1f}%"
    if kind == "pp":
        return f"{value * 100:.0f}"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:g}"


class _Frame:
    """Coordinates of one chart: epochs (or categories) on x, a value range on y."""

    def __init__(self, x_count: int, y_lo: float, y_hi: float, width: int = W, height: int = H) -> None:
        self.n = max(x_count, 1)
        self.width, self.height = width, height
        self.y_ticks = nice_ticks(y_lo, y_hi)
        self.y_lo, self.y_hi = self.y_ticks[0], self.y_ticks[-1]
        self.x0, self.x1 = M_LEFT, width - M_RIGHT
        self.y0, self.y1 = height - M_BOTTOM, M_TOP

    def x(self, i: float) -> float:
        if self.n == 1:
            return (self.x0 + self.x1) / 2
        return self.x0 + (self.x1 - self.x0) * i / (self.n - 1)

    def y(self, v: float) -> float:
        span = self.y_hi - self.y_lo or 1.0
        return self.y0 - (self.y0 - self.y1) * (v - self.y_lo) / span


def _svg_open(name: str, title: str, width: int = W, height: int = H) -> list[str]:
    return [
        f'<svg data-chart="{_esc(name)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_esc(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{_esc(title)}</title>",
    ]


def _axes(frame: _Frame, y_kind: str, x_label: str, y_label: str, x_ticks: Sequence[tuple[float, str]]) -> list[str]:
    out = []
    for t in frame.y_ticks:
        y = frame.y(t)
        out.append(f'<line class="grid" x1="{frame.x0}" x2="{frame.x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{frame.x0 - 6}" y="{y + 3.5:.1f}" text-anchor="end">{_esc(_tick_label(t, y_kind))}</text>'
        )
    out.append(f'<line class="axis" x1="{frame.x0}" x2="{frame.x1}" y1="{frame.y0}" y2="{frame.y0}"/>')
    for pos, text in x_ticks:
        x = frame.x(pos)
        out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{frame.y0}" y2="{frame.y0 + 4}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{frame.y0 + 16}" text-anchor="middle">{_esc(text)}</text>')
    out.append(
        f'<text class="axis-label" x="{(frame.x0 + frame.x1) / 2:.1f}" y="{frame.height - 6}" text-anchor="middle">{_esc(x_label)}</text>'
    )
    out.append(
        f'<text class="axis-label" x="12" y="{(frame.y0 + frame.y1) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(frame.y0 + frame.y1) / 2:.1f})">{_esc(y_label)}</text>'
    )
    return out


def _epoch_ticks(n: int) -> list[tuple[float, str]]:
    if n <= 1:
        return [(0, "0")]
    step = max(1, int(_nice_step(n - 1, 8)))
    return [(e, str(e)) for e in range(0, n, step)]


def _legend(items: Sequence[tuple[str, str, str]], width: int = W, swatch: str = "line") -> list[str]:
    """Legend entries (text, color, dash) laid out left to right above the plot; swatch "line" or "box"."""
    out = []
    x = M_LEFT
    for text, color, dash in items:
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if swatch == "box":
            out.append(f'<rect x="{x + 3}" y="8" width="12" height="12" rx="2" fill="{color}"/>')
        else:
            out.append(f'<line x1="{x}" x2="{x + 18}" y1="14" y2="14" stroke="{color}" stroke-width="2.5"{dash_attr}/>')
        out.append(f'<text class="legend" x="{x + 23}" y="18">{_esc(text)}</text>')
        x += 23 + 6.6 * len(text) + 16
        if x > width - 60:
            break
    return out


class Series:
    """One line: its legend name, per-epoch values, colour, dash pattern, value kind and stroke width."""

    def __init__(
        self,
        name: str,
        values: Sequence[float | None],
        color: str,
        dash: str = "",
        kind: str = "float",
        width: float = 2.2,
    ) -> None:
        self.name, self.values, self.color, self.dash, self.kind, self.width = (
            name,
            list(values),
            color,
            dash,
            kind,
            width,
        )


def line_chart(
    name: str,
    title: str,
    series_list: Sequence[Series],
    y_label: str,
    y_kind: str = "float",
    y_range: tuple[float | None, float | None] = (None, None),
    x_label: str = "epoch",
    empty_note: str = "no data",
) -> str:
    """An SVG line chart of per-epoch series (None values break the line)."""
    series_list = [s for s in series_list if has_values(s.values)]
    out = _svg_open(name, title)
    if not series_list:
        out.append(f'<text class="note" x="{W / 2}" y="{H / 2}" text-anchor="middle">{_esc(empty_note)}</text>')
        out.append("</svg>")
        return "\n".join(out)
    finite = [v for s in series_list for v in s.values if v is not None]
    lo = y_range[0] if y_range[0] is not None else min(finite)
    hi = y_range[1] if y_range[1] is not None else max(finite)
    lo, hi = min(lo, min(finite)), max(hi, max(finite))
    if hi - lo < 1e-12:
        lo, hi = lo - (abs(lo) * 0.1 or 0.5), hi + (abs(hi) * 0.1 or 0.5)
        if y_range[0] is not None:
            lo = max(lo, y_range[0])
    n = max(len(s.values) for s in series_list)
    frame = _Frame(n, lo, hi)
    out += _axes(frame, y_kind, x_label, y_label, _epoch_ticks(n))
    out += _legend([(s.name, s.color, s.dash) for s in series_list])
    show_points = n <= 60
    for s in series_list:
        segments: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                segments.append([])
                continue
            segments[-1].append(f"{frame.x(i):.1f},{frame.y(v):.1f}")
        dash_attr = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        for seg in segments:
            if len(seg) > 1:
                out.append(
                    f'<polyline class="series" points="{" ".join(seg)}" stroke="{s.color}" stroke-width="{s.width}"{dash_attr}/>'
                )
        for i, v in enumerate(s.values):
            if v is None:
                continue
            if show_points or len([x for x in s.values if x is not None]) == 1:
                out.append(
                    f'<circle class="point" cx="{frame.x(i):.1f}" cy="{frame.y(v):.1f}" r="{s.width + 0.8:.1f}" fill="{s.color}">'
                    f"<title>{_esc(f'epoch {i} · {s.name}: {fmt(v, s.kind)}')}</title></circle>"
                )
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    name: str,
    title: str,
    categories: Sequence[str],
    groups: Sequence[tuple[str, Sequence[float | None], str]],
    y_label: str,
    x_label: str,
    y_kind: str = "int",
) -> str:
    """Grouped SVG bar chart: one bar per (category, group)."""
    out = _svg_open(name, title)
    finite = [v for _, vals, _ in groups for v in vals if v is not None]
    if not categories or not finite:
        out.append(f'<text class="note" x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text></svg>')
        return "\n".join(out)
    frame = _Frame(len(categories), 0.0, max(finite) or 1.0)
    # bars are centred on category slots: use slot coordinates instead of point coordinates
    slot = (frame.x1 - frame.x0) / len(categories)
    ticks_every = max(1, math.ceil(len(categories) / 16))

    def cx(i: float) -> float:
        return frame.x0 + slot * (i + 0.5)

    out_axes = _axes(frame, y_kind, x_label, y_label, [])
    out += out_axes
    for i, cat in enumerate(categories):
        if i % ticks_every == 0:
            out.append(
                f'<text class="tick" x="{cx(i):.1f}" y="{frame.y0 + 16}" text-anchor="middle">{_esc(cat)}</text>'
            )
    out += _legend([(g, color, "") for g, _, color in groups], swatch="box")
    inner = slot * 0.8
    bw = inner / max(len(groups), 1)
    for gi, (gname, vals, color) in enumerate(groups):
        for i, v in enumerate(vals):
            if v is None:
                continue
            x = cx(i) - inner / 2 + gi * bw
            y = frame.y(v)
            out.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" height="{max(frame.y0 - y, 0):.1f}" fill="{color}">'
                f"<title>{_esc(f'{gname} · {x_label} {categories[i]}: {fmt(v, y_kind)}')}</title></rect>"
            )
    out.append("</svg>")
    return "\n".join(out)


def _diverging(value: float, scale: float) -> str:
    """Blue (under-represented) → white → red (over-represented)."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    if t >= 0:
        r, g, b = 255, round(255 - 170 * t), round(255 - 190 * t)
    else:
        r, g, b = round(255 + 200 * t), round(255 + 120 * t), 255
    return f"rgb({r},{g},{b})"


def class_heatmap(name: str, report: dict[str, Any], compare: dict[str, Any] | None) -> str:
    """Per-class share minus the data set's share, per epoch: one panel per plan, side by side."""
    panels = [("A", report)] + ([("B", compare)] if compare is not None and compare.get("class_share_dataset") else [])
    n_classes = len(report.get("class_share_dataset") or [])
    devs = []
    for _, r in panels:
        ref = r["class_share_dataset"]
        for rec in r["per_epoch"]:
            if rec.get("class_share"):
                devs += [abs(s - ref[c]) for c, s in enumerate(rec["class_share"])]
    scale = max(devs + [0.01])
    label_w = 190
    panel_gap = 24
    width = W if len(panels) == 1 else 2 * W - 160
    panel_w = (width - label_w - M_RIGHT - panel_gap * (len(panels) - 1)) / len(panels)
    row_h = min(22.0, max(8.0, 200 / max(n_classes, 1)))
    height = int(M_TOP + 8 + row_h * n_classes + 56)
    out = _svg_open(name, "Class share minus data-set share, per epoch", width, height)
    y_top = M_TOP + 8
    data_share = report.get("class_share_dataset") or []
    drawn = (report.get("overall") or {}).get("class_share") or []
    for c in range(n_classes):
        shares = (
            f" {fmt(data_share[c], 'pct')} → {fmt(drawn[c], 'pct')}" if c < len(data_share) and c < len(drawn) else ""
        )
        out.append(
            f'<text class="tick" x="{label_w - 6}" y="{y_top + row_h * (c + 0.5) + 3.5:.1f}" text-anchor="end">{_esc(class_label(report, c) + shares)}</text>'
        )
    for p, (who, r) in enumerate(panels):
        x_left = label_w + p * (panel_w + panel_gap)
        recs = r["per_epoch"]
        ref = r["class_share_dataset"]
        n_ep = max(len(recs), 1)
        cw = panel_w / n_ep
        out.append(
            f'<text class="legend" x="{x_left}" y="{M_TOP}" style="fill:{COLORS[who]}">{_esc(f"{who}: {plan_title(r)}")}</text>'
        )
        for e, rec in enumerate(recs):
            shares = rec.get("class_share")
            for c in range(min(n_classes, len(ref))):
                x = x_left + e * cw
                y = y_top + c * row_h
                if not shares:
                    fill, tip = "transparent", f"epoch {e}: empty"
                else:
                    dv = shares[c] - ref[c]
                    fill = _diverging(dv, scale)
                    tip = f"{who} · epoch {e} · {class_label(r, c)}: {fmt(shares[c], 'pct')} (data set {fmt(ref[c], 'pct')}, {fmt_delta('class_worst_deviation', dv)})"
                out.append(
                    f'<rect class="cell" x="{x:.2f}" y="{y:.2f}" width="{cw + 0.3:.2f}" height="{row_h + 0.3:.2f}" fill="{fill}"><title>{_esc(tip)}</title></rect>'
                )
        for e, text in _epoch_ticks(n_ep):
            out.append(
                f'<text class="tick" x="{x_left + (e + 0.5) * cw:.1f}" y="{y_top + row_h * n_classes + 14:.1f}" text-anchor="middle">{_esc(text)}</text>'
            )
        out.append(
            f'<text class="axis-label" x="{x_left + panel_w / 2:.1f}" y="{y_top + row_h * n_classes + 30:.1f}" text-anchor="middle">epoch</text>'
        )
    # colour scale
    sx = label_w
    sy = height - 14
    for i in range(41):
        v = -scale + 2 * scale * i / 40
        out.append(f'<rect x="{sx + i * 4}" y="{sy - 8}" width="4.2" height="8" fill="{_diverging(v, scale)}"/>')
    out.append(
        f'<text class="tick" x="{sx - 4}" y="{sy}" text-anchor="end">{_esc(fmt_delta("class_worst_deviation", -scale))}</text>'
    )
    out.append(
        f'<text class="tick" x="{sx + 168}" y="{sy}">{_esc(fmt_delta("class_worst_deviation", scale))} vs data set share</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


def _plans(report: dict[str, Any], compare: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    return [("A", report)] + ([("B", compare)] if compare is not None else [])


def _prefix(who: str, compare: dict[str, Any] | None, text: str = "") -> str:
    return f"{who} · {text}" if compare is not None and text else (who if compare is not None else text)


def _charts(report: dict[str, Any], compare: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(name, heading, caption+svg html) for every chart this report can show."""
    plans = _plans(report, compare)
    with_factors = any(r.get("factors") for _, r in plans)
    with_classes = any(r.get("class_share_dataset") for _, r in plans)

    def one(key: str, kind: str, who: str, r: dict[str, Any], dash: str = "", text: str = "") -> Series:
        name = (
            f"{who}: {plan_title(r)}"
            if compare is not None and not text
            else _prefix(who, compare, text) or plan_title(r)
        )
        # plan A is drawn wider than plan B so that identical series stay visible as a B line inside an A band
        width = 3.4 if compare is not None and who == "A" else 2.0
        return Series(name, series(r, key), COLORS[who], dash, kind, width)

    charts: list[tuple[str, str, str]] = []
    charts.append(
        (
            "coverage",
            "Cumulative share of the data set seen",
            line_chart(
                "coverage",
                "Cumulative share of the data set seen",
                [one("cumulative_seen", "pct", w, r) for w, r in plans],
                "seen so far",
                "pct",
                (0.0, 1.0),
            ),
        )
    )
    charts.append(
        (
            "budget",
            "Budget per epoch (samples)",
            line_chart(
                "budget",
                "Budget per epoch",
                [one("count", "int", w, r) for w, r in plans],
                "samples",
                "int",
                (0.0, None),
            ),
        )
    )
    max_k = max(len(r["overall"]["usage_histogram"]) for _, r in plans)
    charts.append(
        (
            "usage-histogram",
            "Usage counts: how many samples were selected k times",
            bar_chart(
                "usage-histogram",
                "Usage-count histogram",
                [str(k) for k in range(max_k)],
                [
                    (
                        f"{w}: {plan_title(r)}" if compare is not None else plan_title(r),
                        [
                            (r["overall"]["usage_histogram"][k] if k < len(r["overall"]["usage_histogram"]) else None)
                            for k in range(max_k)
                        ],
                        COLORS[w],
                    )
                    for w, r in plans
                ],
                "samples",
                "times selected (k)",
            ),
        )
    )
    charts.append(
        (
            "usage-trend",
            "Usage spread over time: Gini (solid) and never-selected share (dashed)",
            line_chart(
                "usage-trend",
                "Usage Gini and never-selected share",
                [
                    s
                    for w, r in plans
                    for s in (
                        one("usage_gini", "float", w, r, "", "Gini"),
                        one("usage_never_selected_share", "pct", w, r, "6 4", "never selected"),
                    )
                ],
                "share / Gini",
                "float",
                (0.0, 1.0),
            ),
        )
    )
    charts.append(
        (
            "overlap",
            "Overlap with the previous epoch: share repeated (solid), Jaccard (dashed)",
            line_chart(
                "overlap",
                "Overlap with the previous epoch",
                [
                    s
                    for w, r in plans
                    for s in (
                        one("overlap_prev", "pct", w, r, "", "overlap"),
                        one("jaccard_prev", "float", w, r, "6 4", "Jaccard"),
                    )
                ],
                "overlap",
                "float",
                (0.0, 1.0),
                empty_note="overlap needs at least two epochs",
            ),
        )
    )
    if any(_has_schedule(r) for _, r in plans):  # only --method score has a scheduler weight
        charts.append(
            (
                "lambda",
                "Scheduler weight λ (0 = representativeness, 1 = rarity)",
                line_chart(
                    "lambda",
                    "Scheduler weight",
                    [one("lambda", "float", w, r) for w, r in plans],
                    "λ",
                    "float",
                    (0.0, 1.0),
                    empty_note="no scheduler weight in the plan (baselines select without a schedule)",
                ),
            )
        )
    if with_factors and any(r.get("method") in SCORED_METHODS for _, r in plans):  # elsewhere R and D sit near 0.5
        charts.append(
            (
                "scores",
                "Mean representativeness R (solid) and rarity D (dashed) of the selected samples",
                line_chart(
                    "scores",
                    "Mean R and D of selected samples",
                    [
                        s
                        for w, r in plans
                        for s in (one("r_mean", "float", w, r, "", "R"), one("d_mean", "float", w, r, "6 4", "D"))
                    ],
                    "mean score (0–1)",
                    "float",
                    (0.0, 1.0),
                ),
            )
        )
    if with_factors:
        charts.append(
            (
                "factor-coverage",
                "Factors covered per epoch: frequent (solid) and rare (dashed)",
                line_chart(
                    "factor-coverage",
                    "Frequent and rare factor coverage",
                    [
                        s
                        for w, r in plans
                        for s in (
                            one("frequent_covered", "pct", w, r, "", "frequent"),
                            one("rare_covered", "pct", w, r, "6 4", "rare"),
                        )
                    ],
                    "units covered",
                    "pct",
                    (0.0, 1.0),
                ),
            )
        )
    if with_classes:
        charts.append(
            (
                "class-deviation",
                "Worst class deviation from the data set's class shares",
                line_chart(
                    "class-deviation",
                    "Worst class deviation",
                    [one("class_worst_deviation", "pp", w, r) for w, r in plans],
                    "share points",
                    "pp",
                    (0.0, None),
                ),
            )
        )
        charts.append(
            (
                "class-share",
                "Per-class share per epoch minus the data set's share (red: over, blue: under)",
                class_heatmap("class-share", report, compare),
            )
        )
    return charts


SCORED_METHODS = ("score", "static-top")  # the methods that select by R and D


def _has_schedule(report: dict[str, Any]) -> bool:
    return any(v is not None for v in ((report.get("schedule") or {}).get("lambda") or []))


def _messy_section(report: dict[str, Any], compare: dict[str, Any] | None) -> str:
    """Near-duplicates and suspected mislabels: their share of the data set and of the plan's draws, and
    the class-size imbalance with its quota hint (the terminal report's "Messy data" table)."""
    mine = report.get("messy_data") or {}
    if not any(f"{key}_data_share" in mine for _, key in MESSY_ROWS) and "class_size_ratio" not in mine:
        return ""
    other = (compare or {}).get("messy_data") or {}
    head = (
        "<tr><th>signal</th><th>data set</th>"
        + ("<th class='a'>A: draws</th><th class='b'>B: draws</th>" if compare is not None else "<th>draws</th>")
        + "</tr>"
    )
    rows = []
    for name, key in MESSY_ROWS:
        if f"{key}_data_share" in mine:
            cells = [name, fmt(mine[f"{key}_data_share"], "pct"), fmt(mine[f"{key}_draw_share"], "pct")]
            if compare is not None:
                cells.append(fmt(other.get(f"{key}_draw_share"), "pct"))
            rows.append(
                f"<tr><td>{_esc(cells[0])}</td>"
                + "".join(f"<td class='num'>{_esc(c)}</td>" for c in cells[1:])
                + "</tr>"
            )
    hint = ""
    if "class_size_ratio" in mine:
        ratio = f"{mine['class_size_ratio']:.1f}×"
        rows.append(
            f"<tr><td>largest / smallest class</td><td class='num'>{_esc(ratio)}</td><td></td>{'<td></td>' if compare is not None else ''}</tr>"
        )
        if mine.get("balanced_quota_suggested"):
            hint = "<p class='sub'>The largest class is at least 10× the smallest: consider <code>--class-quota balanced</code> (docs/method.md).</p>"
    note = (
        "<p class='sub'>Near-duplicates: rows in a near-duplicate group of two or more. Suspected mislabels: rows "
        "whose given label the plan's label-trust signal contradicts. A share of the draws below the data-set "
        "share means the plan trains on them less often.</p>"
    )
    return f"<h2>Messy data</h2><table class='summary' id='messy-data'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>{hint}{note}"


CAPTIONS = {
    "coverage": "How fast the plan reaches the whole data set. A flat line below 100% means some samples are never trained on.",
    "budget": "Samples per epoch (the ratio's exact budget; full-data annealing epochs show as jumps).",
    "usage-histogram": "Samples by the number of epochs they were selected in. Uniform rotation puts most mass near ratio × epochs; a spike at 0 means never-selected samples.",
    "usage-trend": "Gini of usage counts (0 = every sample used equally) and the share of samples not selected yet, after each epoch.",
    "overlap": "Share of each epoch's samples that were also in the previous epoch. Random selection at ratio r gives about r; values near 1 mean the selection barely moves.",
    "lambda": "The scheduler's weight on rarity.",
    "scores": "Mean normalised R and D of the selected samples.",
    "factor-coverage": "Share of frequent (top decile by frequency) and rare (bottom half) live SAE units that fire in at least one selected sample.",
    "class-deviation": "max over classes of |class share in the epoch − class share in the data set|, in percentage points.",
    "class-share": "Left: each class's share of the data set → its share of the plan's draws. Each cell: one class in one epoch; colour = its share minus its data-set share (white: exactly its share, as class quotas keep it). Hover for exact values.",
}


def captions_for(report: dict[str, Any]) -> dict[str, str]:
    """The chart captions, with the ones about the scheduler saying what *this* plan's schedule does."""
    captions = dict(CAPTIONS)
    lambdas = [v for v in ((report.get("schedule") or {}).get("lambda") or []) if v is not None]
    if not lambdas:
        captions["lambda"] = "This plan has no scheduler weight (only --method score has one)."
        captions["scores"] = (
            "Mean normalised R and D of the selected samples. Random selection and rotation stay near 0.5."
        )
    elif max(lambdas) - min(lambdas) < 1e-9:
        captions["lambda"] = (
            f"The scheduler's weight on rarity is constant at {lambdas[0]:g} in this plan (--schedule constant)."
        )
        captions["scores"] = (
            "Mean normalised R and D of the selected samples. With a constant weight the usage penalty, not the schedule, moves them."
        )
    else:
        direction = "rises" if lambdas[-1] > lambdas[0] else "falls"
        captions["lambda"] = (
            f"The scheduler's weight on rarity {direction} from {lambdas[0]:g} to {lambdas[-1]:g} in this plan."
        )
        captions["scores"] = (
            f"Mean normalised R and D of the selected samples; as λ {direction}, the plan should trade {'R for D' if direction == 'rises' else 'D for R'}."
        )
    return captions


SUMMARY_GROUPS = (
    (
        "Budget and coverage",
        ("total_selected", "total_steps", "count_mean", "cumulative_seen", "epochs_to_full_coverage"),
    ),
    (
        "Usage",
        (
            "usage_min",
            "usage_median",
            "usage_max",
            "usage_gini",
            "usage_never_selected_share",
            "usage_longest_run_max",
            "usage_longest_run_mean",
        ),
    ),
    ("Overlap and schedule", ("overlap_prev_mean", "jaccard_prev_mean", "lambda_first", "lambda_last")),
    (
        "Factors and classes",
        (
            "r_mean",
            "d_mean",
            "frequent_covered_mean",
            "rare_covered_mean",
            "frequent_covered",
            "rare_covered",
            "live_covered",
            "class_worst_deviation",
            "class_worst_deviation_mean",
        ),
    ),
)


def _summary_table(report: dict[str, Any], compare: dict[str, Any] | None) -> str:
    """The overall metrics as a grid of small tables (one per group), with a Δ column when comparing."""
    oa = report["overall"]
    ob = compare["overall"] if compare is not None else {}
    head = (
        "<tr><th>{}</th>"
        + ("<th class='a'>A</th><th class='b'>B</th><th>Δ (B − A)</th>" if compare is not None else "<th>value</th>")
        + "</tr>"
    )
    tables = []
    for title, keys in SUMMARY_GROUPS:
        rows = []
        for key in keys:
            a, b = oa.get(key), ob.get(key)
            if a is None and b is None:
                continue
            cells = f"<td>{_esc(label(key))}</td><td class='num'>{_esc(fmt_field(key, a))}</td>"
            if compare is not None:
                delta = None if a is None or b is None else b - a
                cells += (
                    f"<td class='num'>{_esc(fmt_field(key, b))}</td><td class='num'>{_esc(fmt_delta(key, delta))}</td>"
                )
            rows.append(f"<tr>{cells}</tr>")
        if rows:
            tables.append(
                f"<table class='summary'><thead>{head.format(_esc(title))}</thead><tbody>{''.join(rows)}</tbody></table>"
            )
    return f"<div class='summary-grid'>{''.join(tables)}</div>"


def _identity(who: str, r: dict[str, Any], compare: dict[str, Any] | None) -> str:
    items = [
        ("method", fmt(r.get("method"))),
        ("samples", fmt(r.get("n_samples"), "int")),
        ("epochs", fmt(r.get("epochs"), "int")),
        ("ratio", fmt(r.get("ratio"), "float")),
        ("seed", fmt(r.get("seed"))),
        ("batch × world", f"{fmt(r.get('batch_size'))} × {fmt(r.get('world_size'))}"),
        ("total steps", fmt(r.get("total_steps"), "int")),
        ("sha256", (r.get("sha256") or "–")[:16]),
        ("factors", ((r.get("factors") or {}).get("fingerprint") or "–")[:16]),
    ]
    dl = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items)
    settings = json.dumps(r.get("settings") or {}, indent=2, sort_keys=True)
    warn = "".join(f"<p class='warning'>⚠ {_esc(w)}</p>" for w in r.get("warnings", []))
    tag = f"<span class='tag {who.lower()}'>{who}</span> " if compare is not None else ""
    return (
        f"<section class='card plan-{who.lower()}'><h2>{tag}{_esc(plan_title(r))}</h2>"
        f"<p class='path'>{_esc(r.get('path', ''))}</p><dl>{dl}</dl>{warn}"
        f"<details><summary>settings</summary><pre>{_esc(settings)}</pre></details></section>"
    )


def _epoch_table(who: str, r: dict[str, Any], compare: dict[str, Any] | None) -> str:
    cols = [
        ("epoch", "epoch"),
        ("count", "budget"),
        ("steps", "steps"),
        ("cumulative_seen", "seen"),
        ("new", "new"),
        ("overlap_prev", "overlap"),
        ("jaccard_prev", "Jaccard"),
        ("lambda", "λ"),
        ("usage_gini", "Gini"),
        ("usage_never_selected_share", "never"),
        ("usage_longest_run_max", "run max"),
        ("usage_longest_run_mean", "run mean"),
        ("r_mean", "R"),
        ("d_mean", "D"),
        ("frequent_covered", "freq cov"),
        ("rare_covered", "rare cov"),
        ("live_covered", "live cov"),
        ("class_worst_deviation", "worst class"),
    ]
    recs = r["per_epoch"]
    cols = [c for c in cols if c[0] == "epoch" or has_values([rec.get(c[0]) for rec in recs])]
    head = "".join(f"<th>{_esc(h)}</th>" for _, h in cols)
    body = []
    for rec in recs:
        cells = []
        for key, _ in cols:
            value = rec.get(key)
            text = str(value) if key == "epoch" else fmt_field(key, value)
            if key == "class_worst_deviation" and value is not None and rec.get("class_worst") is not None:
                classes = r.get("classes") or []
                name = (
                    class_label(r, classes.index(rec["class_worst"]))
                    if rec["class_worst"] in classes
                    else str(rec["class_worst"])
                )
                text += f" ({name})"
            cells.append(f"<td class='num'>{_esc(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    tag = f"<span class='tag {who.lower()}'>{who}</span> " if compare is not None else ""
    return (
        f"<details class='epochs'{' open' if len(recs) <= 20 else ''}><summary>{tag}Per epoch: {_esc(plan_title(r))}</summary>"
        f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div></details>"
    )


CSS = """
:root { --fg:#1f2937; --muted:#6b7280; --bg:#ffffff; --card:#f8fafc; --line:#e5e7eb; --grid:#eef0f3; }
@media (prefers-color-scheme: dark) {
  :root { --fg:#e5e7eb; --muted:#9ca3af; --bg:#111827; --card:#1f2937; --line:#374151; --grid:#2b3544; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1240px; padding: 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0 0 8px; } h3 { font-size: 14px; margin: 0 0 4px; }
.sub { color: var(--muted); margin: 0 0 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 14px; margin-bottom: 18px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
.plan-a { border-top: 3px solid #2563eb; } .plan-b { border-top: 3px solid #ea580c; }
.path { color: var(--muted); font-size: 12px; word-break: break-all; margin: 0 0 8px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; font-variant-numeric: tabular-nums; }
.tag { display: inline-block; color: #fff; border-radius: 4px; padding: 0 6px; font-size: 12px; vertical-align: 1px; }
.tag.a { background: #2563eb; } .tag.b { background: #ea580c; }
.warning { color: #b45309; margin: 8px 0 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
td.num { text-align: right; } th { color: var(--muted); font-weight: 600; }
th.a { color: #2563eb; } th.b { color: #ea580c; }
.summary-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 8px 24px; margin-bottom: 18px; align-items: start; }
.summary { width: 100%; } .summary td:first-child { width: 60%; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 14px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 12px 8px; }
figure.wide { grid-column: 1 / -1; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
svg { width: 100%; height: auto; display: block; }
svg text { fill: var(--fg); font: 11px system-ui, sans-serif; }
svg .tick { fill: var(--muted); } svg .axis-label { fill: var(--muted); font-size: 11px; }
svg .legend { font-size: 12px; } svg .note { fill: var(--muted); font-size: 13px; }
svg .grid { stroke: var(--grid); stroke-width: 1; } svg .axis { stroke: var(--muted); stroke-width: 1; }
svg .series { fill: none; stroke-linejoin: round; stroke-linecap: round; }
svg .point { stroke: var(--bg); stroke-width: 1; } svg .cell { stroke: none; }
details { margin-top: 10px; } summary { cursor: pointer; font-weight: 600; }
.scroll { overflow-x: auto; max-width: 100%; }
.scroll table { font-size: 12px; } .scroll th, .scroll td { padding: 2px 6px; }
pre { background: var(--bg); border: 1px solid var(--line); padding: 8px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; border-top: 1px solid var(--line); padding-top: 10px; }
"""


def render_html(report: dict[str, Any], compare: dict[str, Any] | None = None) -> str:
    """One self-contained HTML page for ``report`` (and a second plan's report ``compare``, side by side)."""
    plans = _plans(report, compare)
    title = f"dynsel report: {plan_title(report)}" + (f" vs {plan_title(compare)}" if compare is not None else "")
    charts = _charts(report, compare)
    captions = captions_for(report)
    figures = []
    for name, heading, svg in charts:
        wide = " wide" if name == "class-share" and compare is not None else ""
        figures.append(
            f"<figure class='chart{wide}' id='chart-{name}'><h3>{_esc(heading)}</h3>{svg}<figcaption>{_esc(captions.get(name, ''))}</figcaption></figure>"
        )
    if not any(r.get("factors") for _, r in plans):
        figures.append(
            "<figure class='chart note-card'><h3>Factor metrics</h3><p class='sub'>Pass the factor tables "
            "(<code>dynsel report PLAN --factors FACTORS</code>) to see the representativeness and rarity of the "
            "selected samples, factor coverage and class shares.</p></figure>"
        )
    payload = {"report": report, "compare": compare}
    # JSON inside <script>: escape <, > and & so no user text can close the element or look like markup
    data = (
        json.dumps(payload, sort_keys=True, allow_nan=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    sub = f"{report.get('n_samples', 0):,} samples · {report.get('epochs', 0)} epochs · ratio {fmt(report.get('ratio'), 'float')}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<html lang='en'><head><meta charset='utf-8'>",
            f"<meta name='generator' content='{GENERATOR}'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{_esc(title)}</h1><p class='sub'>{_esc(sub)}</p>",
            "<div class='cards'>" + "".join(_identity(w, r, compare) for w, r in plans) + "</div>",
            "<h2>Overall</h2>",
            _summary_table(report, compare),
            _messy_section(report, compare),
            "<h2>Charts</h2>",
            "<div class='charts'>" + "".join(figures) + "</div>",
            "<h2 style='margin-top:18px'>Per epoch</h2>",
            "".join(_epoch_table(w, r, compare) for w, r in plans),
            "<footer>Generated by <code>dynsel report</code> (report schema "
            f"{_esc(report.get('schema_version'))}). Metric definitions: docs/report.md. Hover points and cells for exact values.</footer>",
            f"<script type='application/json' id='dynsel-report'>{data}</script>",
            "</body></html>",
            "",
        ]
    )
