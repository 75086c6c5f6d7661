"""The HTML report in a real headless browser: loads offline with no console errors, every chart drawn.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the Python package ``playwright``
(``pip install playwright``; never ``playwright install``: the system chromium is used). Skips cleanly
when either is absent. Saves a screenshot to ``test-artifacts/report.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dynsel_cli.formats.common import atomic_directory
from dynsel_cli.formats.factors import (
    SampleFactors,
    UnitStats,
    read_factor_tables,
    write_factor_tables,
)
from dynsel_cli.formats.plan import read_plan, write_plan
from dynsel_cli.report import build_report, render_html
from dynsel_cli.report.fmt import fmt
from dynsel_cli.report.html import CHARTS_ALL

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str | None:
    for candidate in (
        os.environ.get("DYNSEL_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def synthetic(root: Path, n: int = 300, m: int = 64, k: int = 6, classes: int = 5, epochs: int = 12):
    """Factor tables with Zipf-like unit popularity, a score-ranked 'dynsel' plan and a random baseline."""
    rng = np.random.default_rng(0)
    pop = 1.0 / np.arange(1, m + 1) ** 1.1
    pop /= pop.sum()
    units = np.stack([rng.choice(m, k, replace=False, p=pop) for _ in range(n)]).astype(np.int32)
    acts = -np.sort(-rng.gamma(2.0, 1.0, (n, k)).astype(np.float32), axis=1)
    fired = np.zeros((n, m), dtype=bool)
    fired[np.arange(n)[:, None], units] = acts > 0
    count = fired.sum(0).astype(np.int64)
    stats = UnitStats(
        count=count,
        frequency=count / n,
        mass=count.astype(float),
        mean_act=np.ones(m),
        max_act=np.ones(m),
        class_frequency=None,
    )
    samples = SampleFactors(
        ids=np.arange(n, dtype=np.int64), labels=rng.integers(0, classes, n), units=units, acts=acts
    )
    with atomic_directory(root / "factors") as tmp:
        write_factor_tables(tmp, samples, stats, {})
    tables = read_factor_tables(root / "factors")
    budget = int(0.3 * n)
    lam = [float(0.5 - 0.5 * np.cos(np.pi * e / (epochs - 1))) for e in range(epochs)]
    rarity = -(np.log(stats.frequency[units] + 1e-9) * acts).sum(1) / acts.sum(1)
    used = np.zeros(n)
    dyn = []
    for e in range(epochs):
        score = lam[e] * rarity / rarity.max() - used / (0.3 * (e + 1)) + 0.1 * rng.standard_normal(n)
        sel = np.argsort(-score)[:budget]
        used[sel] += 1
        dyn.append(rng.permutation(sel))
    rand = [rng.choice(n, budget, replace=False) for _ in range(epochs)]
    plans = []
    for name, eps, extra in (
        ("dynsel", dyn, {"method": "score", "schedule": {"kind": "cosine", "lambda": lam}}),
        ("random", rand, {"method": "random", "schedule": None}),
    ):
        with atomic_directory(root / name) as tmp:
            write_plan(
                tmp,
                eps,
                n,
                16,
                1,
                False,
                {"ratio": 0.3, "seed": 0, "settings": {}, "inputs": {"factors": tables.fingerprint}, **extra},
                formats=("bin",),
            )
        plans.append(read_plan(root / name))
    return tables, plans


def test_html_report_in_headless_chromium(tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Python package playwright is not installed (pip install playwright)"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")

    tables, (dyn, rand) = synthetic(tmp_path)
    a, b = build_report(dyn, tables), build_report(rand, tables)
    page_path = tmp_path / "report.html"
    page_path.write_text(render_html(a, b), encoding="utf-8")

    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda msg: (
                    problems.append(f"console {msg.type}: {msg.text}") if msg.type in ("error", "warning") else None
                ),
            )
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "request",
                lambda req: (
                    problems.append(f"request: {req.url}") if not req.url.startswith(("file:", "data:")) else None
                ),
            )
            page.goto(page_path.as_uri(), wait_until="load")
            charts = page.evaluate(
                """() => Array.from(document.querySelectorAll('svg[data-chart]')).map(svg => {
                    const box = svg.getBoundingClientRect();
                    return {name: svg.dataset.chart, width: box.width, height: box.height,
                            marks: svg.querySelectorAll('polyline, rect, circle').length};
                })"""
            )
            legends = page.evaluate("() => document.querySelectorAll('svg[data-chart] .legend').length")
            messy_text = page.inner_text("#messy-data") if page.locator("#messy-data").is_visible() else ""
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()

    assert problems == []
    names = [c["name"] for c in charts]
    assert sorted(names) == sorted(CHARTS_ALL), names
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 50, chart
        assert chart["marks"] > 0, chart
    assert legends >= 2 * len(CHARTS_ALL) - 2  # both plans named in (almost) every chart
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    # the messy-data shares are on the visible page, not only in the embedded JSON
    messy = a["messy_data"]
    for value in (
        messy["near_duplicates_data_share"],
        messy["near_duplicates_draw_share"],
        messy["suspected_mislabels_data_share"],
        b["messy_data"]["near_duplicates_draw_share"],
    ):
        assert fmt(value, "pct") in messy_text, (value, messy_text)
    assert "near-duplicates" in messy_text and "suspected mislabels" in messy_text


def test_a_dynsel_plan_page_shows_its_signals_and_no_empty_schedule_or_score_charts(tmp_path) -> None:
    tables, (scored, _) = synthetic(tmp_path)
    with atomic_directory(tmp_path / "rotation") as tmp:
        epochs = [np.arange(e * 30, e * 30 + 90) % 300 for e in range(4)]
        write_plan(
            tmp,
            epochs,
            300,
            16,
            1,
            False,
            {
                "ratio": 0.3,
                "seed": 0,
                "settings": {},
                "inputs": {"factors": tables.fingerprint},
                "method": "dynsel",
                "schedule": None,
            },
            formats=("bin",),
        )
    report = build_report(read_plan(tmp_path / "rotation"), tables)
    page = render_html(report)
    assert "id='chart-lambda'" not in page and "id='chart-scores'" not in page
    assert "id='chart-factor-coverage'" in page and "id='messy-data'" in page
    assert fmt(report["messy_data"]["near_duplicates_data_share"], "pct") in page
    scored_page = render_html(build_report(scored, tables))  # the scored method keeps both
    assert "id='chart-lambda'" in scored_page and "id='chart-scores'" in scored_page


def test_captions_say_what_this_plans_schedule_does() -> None:
    from dynsel_cli.report.html import captions_for

    assert "constant at 0.5" in captions_for({"schedule": {"kind": "constant", "lambda": [0.5, 0.5, 0.5]}})["lambda"]
    rising = captions_for({"schedule": {"kind": "cosine", "lambda": [0.0, 0.5, 1.0]}})
    assert "rises from 0 to 1" in rising["lambda"] and "R for D" in rising["scores"]
    assert "no scheduler weight" in captions_for({"schedule": None})["lambda"]
    assert "rises" not in captions_for({"schedule": None})["scores"]
