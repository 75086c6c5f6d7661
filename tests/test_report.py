"""dynsel report: metrics on hand-built plans whose values are known by hand, JSON schema, compare, terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from dynsel_cli.errors import DynselError
from dynsel_cli.formats.common import atomic_directory, write_json
from dynsel_cli.formats.factors import FactorTables, SampleFactors, UnitStats, read_factor_tables, write_factor_tables
from dynsel_cli.formats.plan import read_plan, write_plan
from dynsel_cli.report import build_report, compare_reports, render_html
from dynsel_cli.report import metrics as m
from dynsel_cli.report.html import CHARTS_PLAN_ONLY, nice_ticks
from dynsel_cli.report.summary import EPOCH_FIELDS, SCHEMA_VERSION
from dynsel_cli.report.terminal import bar, render_terminal, sparkline

# --------------------------------------------------------------------------------------------------
# The hand-built plan used throughout. Samples s = 0..5 have ids 10 + s. Epochs (as samples):
#   E0 {0,1,2}   E1 {2,3,4}   E2 {0,2,3}   E3 {5,2,0}
# usage = [3,1,4,2,1,1]; longest runs = [2,1,4,2,1,1]; seen after each epoch 3/6, 5/6, 5/6, 6/6.
EPOCHS_S = [[0, 1, 2], [2, 3, 4], [0, 2, 3], [5, 2, 0]]
IDS = np.arange(10, 16, dtype=np.int64)
LAMBDA = [0.0, 0.25, 0.5, 1.0]
# factor tables list the samples in reverse order (row = 5 - s) so the id -> row mapping is exercised
ROW_OF_S = 5 - np.arange(6)
# units 0..9; unit 9 is dead. 9 live units: frequent = {0} (ceil 0.9), rare = {5,6,7,8} (floor 4.5)
FREQUENCY = np.array([0.9, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.0])
UNITS_S = np.array([[0, 5], [1, 6], [0, 2], [7, 3], [8, 4], [6, 1]], dtype=np.int32)
ACTS_S = np.array([[1, 1], [1, 0], [2, 1], [1, 1], [1, 1], [1, 1]], dtype=np.float32)  # s1's unit 6 did not fire
LABELS_S = np.array([0, 0, 1, 1, 2, 2])
R_S = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def make_plan(path: Path, epochs_s=EPOCHS_S, extra=None, n=6, ids=IDS, batch_size=2) -> Path:
    base = {
        "ratio": 0.5,
        "seed": 7,
        "method": "score",
        "schedule": {"kind": "linear", "lambda": LAMBDA},
        "settings": {"beta": 1.0},
    }
    base.update(extra or {})
    with atomic_directory(path) as tmp:
        write_plan(
            tmp, [ids[np.array(e, dtype=np.int64)] for e in epochs_s], n, batch_size, 1, False, base, formats=("bin",)
        )
    return path


def make_tables(path: Path, labels=True) -> FactorTables:
    order = np.argsort(ROW_OF_S)  # s for each row
    count = np.round(FREQUENCY * 6).astype(np.int64)
    units = UnitStats(
        count=count,
        frequency=FREQUENCY,
        mass=count.astype(float),
        mean_act=np.ones(10),
        max_act=np.ones(10),
        class_frequency=None,
    )
    samples = SampleFactors(
        ids=IDS[order], labels=LABELS_S[order] if labels else None, units=UNITS_S[order], acts=ACTS_S[order]
    )
    with atomic_directory(path) as tmp:
        write_factor_tables(tmp, samples, units, {"classes": ["shirt", "bag", "boot"]})
    return read_factor_tables(path)


@pytest.fixture
def fake_scores(monkeypatch):
    """Known R and D (D = 1 - R) per factor-table row instead of the planner's scoring."""
    import dynsel_cli.plan.scores as scores

    def fake(tables, how="rank", device="cpu"):
        r = np.empty(len(tables.samples.ids), dtype=np.float32)
        r[ROW_OF_S] = R_S
        return r, (1.0 - r).astype(np.float32)

    monkeypatch.setattr(scores, "representativeness_and_rarity", fake)


@pytest.fixture
def hand(tmp_path, fake_scores):
    tables = make_tables(tmp_path / "factors")
    plan = read_plan(make_plan(tmp_path / "plan", extra={"inputs": {"factors": tables.fingerprint}}))
    return plan, tables


# --------------------------------------------------------------------------------------------------
# pure metrics


def test_gini_known_values():
    assert m.gini(np.array([1, 1, 1, 1])) == 0.0
    assert m.gini(np.array([0, 0, 0, 5])) == pytest.approx(3 / 4)
    assert m.gini(np.array([3, 1, 4, 2, 1, 1])) == pytest.approx(22 / 72)
    assert m.gini(np.array([], dtype=np.int64)) == 0.0
    assert m.gini(np.zeros(5, dtype=np.int64)) == 0.0
    rng = np.random.default_rng(0)
    x = rng.integers(0, 9, 1000)
    assert m.gini(x) == pytest.approx(m.gini(x.astype(np.float64)))  # integer histogram path == sort path


def test_usage_counts_runs_histogram():
    epochs = [np.array(e) for e in EPOCHS_S]
    usage = m.usage_counts(epochs, 6)
    assert usage.tolist() == [3, 1, 4, 2, 1, 1]
    assert m.longest_runs(epochs, 6).tolist() == [2, 1, 4, 2, 1, 1]
    assert m.usage_histogram(usage, 4) == [0, 3, 1, 1, 1]
    # a duplicate within an epoch counts once
    assert m.usage_counts([np.array([0, 0, 1])], 3).tolist() == [1, 1, 0]
    stats = m.usage_stats(usage, m.longest_runs(epochs, 6))
    assert (stats.min, stats.median, stats.max) == (1, 1.5, 4)
    assert stats.never_selected_share == 0.0
    assert stats.longest_run_max == 4
    assert stats.longest_run_mean == pytest.approx(11 / 6)


def test_update_runs_resets_on_gap():
    current = np.zeros(2, dtype=np.int64)
    longest = np.zeros(2, dtype=np.int64)
    for member in ([1, 1], [1, 0], [1, 1], [0, 1], [0, 1], [0, 1]):
        current, longest = m.update_runs(current, longest, np.array(member, dtype=bool))
    assert current.tolist() == [0, 4]
    assert longest.tolist() == [3, 4]


def test_overlap():
    def sets(a: list[int], b: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return m.membership(np.array(a, dtype=np.int64), 6), m.membership(np.array(b, dtype=np.int64), 6)

    assert m.overlap(*sets([0, 1, 2], [2, 3, 4])) == pytest.approx((1 / 3, 1 / 5))
    assert m.overlap(*sets([2, 3, 4], [0, 2, 3])) == pytest.approx((2 / 3, 2 / 4))
    assert m.overlap(*sets([1, 2], [2, 1])) == (1.0, 1.0)
    assert m.overlap(*sets([], [])) == (0.0, 0.0)


def test_frequent_and_rare_units():
    frequent, rare = m.frequent_rare_units(FREQUENCY)
    assert np.flatnonzero(frequent).tolist() == [0]
    assert np.flatnonzero(rare).tolist() == [5, 6, 7, 8]
    # 20 live units with ties: top decile = 2 units, ties broken by lower unit id; bottom half = 10 units
    freq = np.array([0.5] * 3 + [0.1] * 17 + [0.0])
    frequent, rare = m.frequent_rare_units(freq)
    assert np.flatnonzero(frequent).tolist() == [0, 1]
    assert np.flatnonzero(rare).tolist() == list(range(10, 20))
    assert not m.frequent_rare_units(np.zeros(3))[0].any()


def test_fired_units_and_coverage():
    covered = m.fired_units(UNITS_S, ACTS_S, np.array([0, 1, 2]), 10)
    assert np.flatnonzero(covered).tolist() == [0, 1, 2, 5]  # s1's unit 6 has activation 0
    frequent, rare = m.frequent_rare_units(FREQUENCY)
    assert m.covered_share(covered, frequent) == 1.0
    assert m.covered_share(covered, rare) == 0.25
    assert m.covered_share(covered, np.zeros(10, dtype=bool)) is None


def test_class_shares_and_worst_deviation():
    classes, codes = m.class_index(np.array([7, 3, 7, 7]))
    assert classes.tolist() == [3, 7] and codes.tolist() == [1, 0, 1, 1]
    share = m.class_shares(np.array([0, 0, 1]), 3)
    assert share == pytest.approx([2 / 3, 1 / 3, 0])
    dev, worst = m.worst_deviation(np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.4, 0.2]))
    assert dev == pytest.approx(0.1) and worst in (0, 1)
    dev, worst = m.worst_deviation(np.array([0.1, 0.9]), np.array([0.5, 0.5]))
    assert (dev, worst) == (pytest.approx(0.4), 0)


def test_ids_to_rows():
    universe = np.array([15, 14, 13, 12, 11, 10])
    assert m.ids_to_rows(np.array([10, 15, 12]), universe).tolist() == [5, 0, 3]
    with pytest.raises(DynselError, match="sample id 99"):
        m.ids_to_rows(np.array([10, 99]), universe)


def test_sparkline_bar_ticks():
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert sparkline([None, 1.0], 0.0, 1.0) == " █"
    assert sparkline([2.0, 2.0]) == "▄▄"
    assert len(sparkline(list(range(200)), width=40)) == 40
    assert bar(0.5, 4) == "██  "
    assert bar(None) == ""
    ticks = nice_ticks(0, 120)
    assert ticks[0] == 0 and ticks[-1] >= 120
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


# --------------------------------------------------------------------------------------------------
# build_report on the hand-built plan


def test_report_plan_metrics(hand):
    plan, _ = hand
    report = build_report(plan)
    assert report["schema_version"] == SCHEMA_VERSION
    assert (report["n_samples"], report["epochs"], report["ratio"], report["seed"]) == (6, 4, 0.5, 7)
    assert report["method"] == "score" and report["sha256"] == plan.sha256
    assert report["counts"] == [3, 3, 3, 3]
    assert report["steps_per_epoch"] == [2, 2, 2, 2] and report["total_steps"] == 8
    pe = report["per_epoch"]
    assert [r["cumulative_seen"] for r in pe] == pytest.approx([3 / 6, 5 / 6, 5 / 6, 1.0])
    assert [r["new"] for r in pe] == [3, 2, 0, 1]
    assert pe[0]["overlap_prev"] is None and pe[0]["jaccard_prev"] is None
    assert [r["overlap_prev"] for r in pe[1:]] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert [r["jaccard_prev"] for r in pe[1:]] == pytest.approx([1 / 5, 1 / 2, 1 / 2])
    assert [r["lambda"] for r in pe] == LAMBDA
    # usage after epoch 0: [1,1,1,0,0,0]
    assert (pe[0]["usage_min"], pe[0]["usage_median"], pe[0]["usage_max"]) == (0, 0.5, 1)
    assert pe[0]["usage_gini"] == pytest.approx(0.5)
    assert pe[0]["usage_never_selected_share"] == 0.5
    assert pe[0]["budget_share"] == 0.5
    ov = report["overall"]
    assert ov["usage_histogram"] == [0, 3, 1, 1, 1]
    assert (ov["usage_min"], ov["usage_median"], ov["usage_max"]) == (1, 1.5, 4)
    assert ov["usage_gini"] == pytest.approx(22 / 72)
    assert ov["usage_longest_run_max"] == 4 and ov["usage_longest_run_mean"] == pytest.approx(11 / 6)
    assert ov["epochs_to_full_coverage"] == 3 and ov["cumulative_seen"] == 1.0
    assert ov["overlap_prev_mean"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert ov["total_selected"] == 12 and ov["total_steps"] == 8
    assert (ov["lambda_first"], ov["lambda_last"]) == (0.0, 1.0)
    # no factor tables: factor fields are null
    assert report["factors"] is None and report["classes"] is None
    assert all(r["r_mean"] is None and r["class_share"] is None for r in pe)
    # ids 10..15 are not rows 0..5: without factor tables the report says so and still counts 6 samples
    assert len(report["warnings"]) == 1 and "not 0..n_samples-1" in report["warnings"][0]


def test_report_factor_metrics(hand):
    plan, tables = hand
    report = build_report(plan, tables)
    pe = report["per_epoch"]
    assert [r["r_mean"] for r in pe] == pytest.approx([0.2, 0.6, 1 / 3, 1.4 / 3])
    assert [r["d_mean"] for r in pe] == pytest.approx([0.8, 0.4, 2 / 3, 1.6 / 3])
    assert [r["frequent_covered"] for r in pe] == [1.0, 1.0, 1.0, 1.0]
    assert [r["rare_covered"] for r in pe] == [0.25, 0.5, 0.5, 0.5]
    assert [r["live_covered"] for r in pe] == pytest.approx([4 / 9, 6 / 9, 5 / 9, 5 / 9])
    f = report["factors"]
    assert (f["n_units"], f["n_live_units"], f["n_frequent_units"], f["n_rare_units"]) == (10, 9, 1, 4)
    assert f["matches_plan"] is True
    # classes: data set 1/3 each; E0 = [2/3, 1/3, 0], E3 = [1/3, 1/3, 1/3]
    assert report["classes"] == [0, 1, 2] and report["class_names"] == ["shirt", "bag", "boot"]
    assert report["class_share_dataset"] == pytest.approx([1 / 3] * 3)
    assert pe[0]["class_share"] == pytest.approx([2 / 3, 1 / 3, 0])
    assert pe[1]["class_share"] == pytest.approx([0, 2 / 3, 1 / 3])
    assert [r["class_worst_deviation"] for r in pe] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    ov = report["overall"]
    assert ov["r_mean"] == pytest.approx(np.mean([0.2, 0.6, 1 / 3, 1.4 / 3]))
    assert ov["rare_covered"] == 1.0 and ov["live_covered"] == 1.0 and ov["frequent_covered"] == 1.0
    assert ov["rare_covered_mean"] == pytest.approx(0.4375)
    assert ov["class_worst_deviation"] == pytest.approx(1 / 3)
    assert ov["class_worst_deviation_mean"] == pytest.approx(0.25)
    assert ov["class_share"] == pytest.approx([4 / 12, 6 / 12, 2 / 12])


def test_report_json_schema_round_trip(hand):
    plan, tables = hand
    report = build_report(plan, tables)
    text = json.dumps(report, allow_nan=False)
    back = json.loads(text)
    assert back == report
    for key in (
        "schema_version",
        "kind",
        "n_samples",
        "epochs",
        "ratio",
        "counts",
        "seed",
        "sha256",
        "method",
        "total_steps",
        "steps_per_epoch",
        "per_epoch",
        "overall",
        "factors",
        "classes",
        "class_share_dataset",
        "schedule",
        "settings",
        "inputs",
        "warnings",
    ):
        assert key in back, key
    for rec in back["per_epoch"]:
        assert set(EPOCH_FIELDS) <= set(rec)
    # every field documented in docs/report.md
    doc = (Path(__file__).resolve().parents[1] / "docs" / "report.md").read_text(encoding="utf-8")
    for key in list(back) + list(back["per_epoch"][0]) + list(back["overall"]) + list(back["factors"]):
        assert f"`{key}`" in doc, f"{key} is not documented in docs/report.md"


def test_report_edge_cases(tmp_path):
    # duplicates inside an epoch, an empty epoch, ids outside 0..n-1, missing optional manifest fields
    path = make_plan(tmp_path / "dup", epochs_s=[[0, 0, 1], [], [3]], n=4, ids=np.array([0, 1, 2, 100]))
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for key in ("method", "schedule", "settings", "steps_per_epoch", "total_steps", "ratio", "batch_size"):
        manifest.pop(key)
    write_json(manifest_path, manifest)
    report = build_report(read_plan(path))
    json.dumps(report, allow_nan=False)
    pe = report["per_epoch"]
    assert [r["count"] for r in pe] == [3, 0, 1]
    assert [r["unique"] for r in pe] == [2, 0, 1]
    assert pe[0]["duplicates"] == 1
    assert pe[1]["overlap_prev"] == 0.0 and pe[1]["jaccard_prev"] == 0.0
    assert report["method"] is None and report["ratio"] is None and report["total_steps"] is None
    assert pe[0]["steps"] is None and pe[0]["lambda"] is None
    assert report["overall"]["usage_never_selected_share"] == pytest.approx(1 / 4)
    assert any("not 0..n_samples-1" in w for w in report["warnings"])
    render_terminal(report, Console(file=io.StringIO(), width=120))
    assert "data-chart" in render_html(report)


def test_report_rejects_ids_missing_from_factors(tmp_path, fake_scores):
    tables = make_tables(tmp_path / "factors")
    plan = read_plan(make_plan(tmp_path / "plan", epochs_s=[[0, 1]], ids=np.array([10, 99])))
    with pytest.raises(DynselError, match="sample id 99 is not in the factor tables"):
        build_report(plan, tables)


def test_report_with_real_scores(tmp_path):
    """The planner's own R/D (no monkeypatch): means of the selection lie in [0, 1]."""
    pytest.importorskip("dynsel_cli.plan.scores")
    tables = make_tables(tmp_path / "factors", labels=False)
    report = build_report(read_plan(make_plan(tmp_path / "plan", extra={"settings": {"normalise": "minmax"}})), tables)
    for rec in report["per_epoch"]:
        assert 0.0 <= rec["r_mean"] <= 1.0 and 0.0 <= rec["d_mean"] <= 1.0
        assert rec["class_share"] is None
    assert report["classes"] is None and report["factors"]["has_labels"] is False
    assert report["factors"]["matches_plan"] is None  # the plan names no factor tables


# --------------------------------------------------------------------------------------------------
# compare and rendering


def test_compare_reports(hand, tmp_path):
    plan, tables = hand
    other = read_plan(
        make_plan(
            tmp_path / "random",
            epochs_s=[[0, 1, 2], [3, 4, 5], [0, 1, 2], [3, 4, 5]],
            extra={"method": "random", "schedule": None, "inputs": {"factors": "other"}},
        )
    )
    a, b = build_report(plan, tables), build_report(other, tables)
    assert any("other factor tables" in w for w in b["warnings"])
    cmp = compare_reports(a, b)
    json.dumps(cmp, allow_nan=False)
    assert cmp["kind"] == "dynsel.report-comparison" and cmp["a"] is a and cmp["b"] is b
    assert cmp["same_data_set"] is True
    d = cmp["diff"]
    assert d["header"]["method"] == {"a": "score", "b": "random", "delta": None}
    assert d["overall"]["usage_gini"]["delta"] == pytest.approx(b["overall"]["usage_gini"] - 22 / 72)
    assert d["overall"]["epochs_to_full_coverage"] == {"a": 3, "b": 1, "delta": -2}
    assert len(d["per_epoch"]) == 4
    assert d["per_epoch"][1]["overlap_prev"]["b"] == 0.0
    assert d["per_epoch"][1]["lambda"] == {"a": 0.25, "b": None, "delta": None}
    assert b["overall"]["usage_gini"] == 0.0  # everyone used exactly twice
    # different shapes: warnings, common epochs only
    short = read_plan(make_plan(tmp_path / "short", epochs_s=[[0, 1, 2]]))
    cmp2 = compare_reports(a, build_report(short))
    assert len(cmp2["diff"]["per_epoch"]) == 1 and any("epoch counts" in w for w in cmp2["warnings"])
    assert any("identical" in w for w in compare_reports(a, a)["warnings"])


def test_render_terminal_compare(hand, tmp_path):
    plan, tables = hand
    other = read_plan(make_plan(tmp_path / "random", extra={"method": "random", "schedule": None}))
    a, b = build_report(plan, tables), build_report(other, tables)
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    render_terminal(a, console, b)
    text = console.export_text()
    for needle in (
        "dynsel report",
        "Overall",
        "usage Gini",
        "Δ (B − A)",
        "Per epoch: B",
        "Usage counts",
        "shirt",
        "never selected",
    ):
        assert needle in text, needle
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    render_terminal(a, console)
    alone = console.export_text()
    assert "Per epoch" in alone
    assert "A: " not in alone and "A:" in text  # the A/B column prefixes only where there is a B


def test_render_html_static(hand, tmp_path):
    plan, tables = hand
    a, b = build_report(plan, tables), build_report(plan)
    page = render_html(a, b)
    assert page.startswith("<!DOCTYPE html>")
    for name in ("coverage", "usage-histogram", "overlap", "lambda", "scores", "factor-coverage", "class-share"):
        assert f'data-chart="{name}"' in page
    # self-contained: no scripts that run, no external references
    assert "<script>" not in page and "src=" not in page and "href=" not in page
    assert "https://" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    data = page.split("id='dynsel-report'>", 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["report"]["sha256"] == a["sha256"]
    # without factors only the plan charts, plus a hint
    plain = render_html(b)
    assert all(f'data-chart="{name}"' in plain for name in CHARTS_PLAN_ONLY if name != "lambda" or b["schedule"])
    assert 'data-chart="scores"' not in plain and "--factors" in plain
    # user text is escaped
    b2 = dict(b, name="<img onerror=x>", method="<b>")
    assert "<img onerror" not in render_html(b2)


def test_recurrence_shows_a_plan_that_alternates_two_halves(tmp_path: Path) -> None:
    alternating = make_plan(tmp_path / "alt", epochs_s=[[0, 1, 2], [3, 4, 5]] * 3, extra={"schedule": None})
    report = build_report(read_plan(alternating))
    overall = report["overall"]
    assert overall["overlap_prev_mean"] == 0.0  # "0% overlap with the previous epoch" hides it ...
    assert overall["overlap_lag2_mean"] == 1.0  # ... the lag-2 overlap and the set counts show it
    assert overall["distinct_epoch_sets"] == 2 and overall["repeated_epoch_sets"] == 4
    assert [rec["repeats_epoch"] for rec in report["per_epoch"]] == [None, None, 0, 1, 0, 1]
    rotating = make_plan(
        tmp_path / "rot", epochs_s=[[0, 1, 2], [3, 4, 5], [0, 2, 4], [1, 3, 5]], extra={"schedule": None}
    )
    overall = build_report(read_plan(rotating))["overall"]
    assert overall["distinct_epoch_sets"] == 4 and overall["repeated_epoch_sets"] == 0
    assert overall["overlap_lag2_mean"] == pytest.approx(2 / 3)  # {0,2,4} vs {0,1,2} and {1,3,5} vs {3,4,5}
