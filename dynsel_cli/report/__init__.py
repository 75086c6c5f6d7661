"""Plan reports: metrics (pure numpy), the JSON-able report, terminal and HTML rendering.

Entry points::

    build_report(plan, factors=None) -> dict        # JSON-able; schema in docs/report.md
    compare_reports(a, b) -> dict                   # two reports side by side, with deltas
    render_terminal(report, console, compare=None)  # rich tables and sparklines
    render_html(report, compare=None) -> str        # one self-contained HTML page, inline SVG charts

``compare`` in the renderers is the second plan's report (a ``build_report`` result). The terminal
renderer (the only module that imports rich) is loaded lazily.
"""

from __future__ import annotations

from typing import Any

from .html import render_html
from .summary import SCHEMA_VERSION, build_report, compare_reports

__all__ = ["SCHEMA_VERSION", "build_report", "compare_reports", "render_html", "render_terminal"]


def __getattr__(name: str) -> Any:
    if name == "render_terminal":
        from .terminal import render_terminal

        return render_terminal
    raise AttributeError(name)
