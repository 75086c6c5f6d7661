"""The training-evidence harness (benchmarks/evidence.py) keeps working: its --quick mode runs end to end.

It reuses the session's `dynsel run` of the sample data (copied into WORK/run, the harness's run
directory), so only the plans and three short trainings run on clean data. The regime sweep
(`--quick --regime all`) extracts the three transformed training sets from scratch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, PipelineRun, subprocess_env

sys.path.insert(0, str(REPO / "benchmarks"))
from regimes import REGIMES  # noqa: E402

EPOCHS = 15
QUICK = {("full", 1.0), ("rs2", 0.5), ("dynsel", 0.5)}


def evidence(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "evidence.py"), *map(str, args)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_quick_mode_trains_on_plans_and_reports_every_method(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(pipeline_run.out, work / "run")
    out_json = tmp_path / "quick.json"
    proc = evidence("vision", "--quick", "--work", work, "--threads", "1", "--json", out_json)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fit-sae: →" not in proc.stderr, "the session's SAE was reused, not retrained"
    assert not list(work.glob("regime-*")), "clean data is the input file itself"
    result = json.loads(out_json.read_text())
    rows = {(r["method"], r["ratio"]): r for r in result["summary"]}
    assert set(rows) == QUICK
    for row in rows.values():
        assert row["regime"] == "clean"
        assert 50.0 < row["acc_mean"] <= 100.0, row  # a real model learned (10 balanced classes: chance is 10%)
        # balanced test set (50 per class): balanced accuracy is the accuracy; the worst class is below both
        assert row["balanced_acc_mean"] == pytest.approx(row["acc_mean"])
        assert 0.0 <= row["worst_class_recall_mean"] <= row["balanced_acc_mean"]
    assert rows[("rs2", 0.5)]["steps"] * 2 == rows[("full", 1.0)]["steps"]  # 2000 samples, batch 128: 8 vs 16 per epoch
    assert rows[("full", 1.0)]["steps"] == 2 * 16  # --quick: 2 epochs
    assert "| clean | 0.5 | dynsel |" in proc.stdout
    runs = [json.loads(line) for line in out_json.with_suffix(".runs.jsonl").read_text().splitlines()]
    assert len(runs) == 3
    assert all(r["regime"] == "clean" and {"acc", "balanced_acc", "worst_class_recall"} <= set(r) for r in runs)


@pytest.mark.slow  # about 1.5 min idle (3 min on a busy machine): CI runs it (.ci/run), the default suite does not
def test_quick_mode_runs_every_regime(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    work = tmp_path / "work"
    for regime in ("clean", "long"):  # clean data: the session's run is reused
        shutil.copytree(pipeline_run.out, work / regime / "run")
    out_json = tmp_path / "regimes.json"
    # 2 quick epochs are too few on messy data (imbalanced keeps 560 images: 6 steps, chance accuracy), so
    # this sweep trains 15 epochs (each run still takes seconds; --epochs applies to every regime, long too).
    proc = evidence(
        "vision",
        "--quick",
        "--regime",
        "all",
        "--epochs",
        EPOCHS,
        "--work",
        work,
        "--threads",
        "1",
        "--json",
        out_json,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out_json.read_text())
    rows = {(r["regime"], r["method"], r["ratio"]): r for r in result["summary"]}
    assert set(rows) == {(regime, method, ratio) for regime in REGIMES for method, ratio in QUICK}
    for row in rows.values():
        assert row["acc_mean"] > 30.0, row
        assert row["balanced_acc_mean"] is not None and row["worst_class_recall_mean"] is not None, row
    runs = result["runs"]
    assert len(runs) == 3 * len(REGIMES)
    assert all({"acc", "balanced_acc", "worst_class_recall", "regime"} <= set(r) for r in runs)
    assert {r["epochs"] for r in runs} == {EPOCHS}
    # each transformed regime trained on its own data, from its own work folder
    n_train = {r["regime"]: r["n_train"] for r in runs}
    assert n_train["clean"] == n_train["redundant"] == n_train["noisy"] == 2000 and n_train["imbalanced"] < 1000
    for regime in ("redundant", "noisy", "imbalanced"):
        with np.load(work / regime / f"regime-{regime}-seed0.npz") as archive:
            assert len(archive["y_train"]) == n_train[regime] and len(archive["y_test"]) == 500
        assert (work / regime / "run" / "factors").is_dir()
    assert result["regimes"]["noisy"]["info"]["n_flipped"] == 600
    assert "| imbalanced | 0.5 | dynsel |" in proc.stdout


def test_regime_data_is_cut_to_limit_first_and_cached(tmp_path: Path) -> None:
    import evidence

    source, limit, info = evidence.vision_regime_source(evidence.SAMPLE, tmp_path, "noisy", 0, 300)
    assert source == tmp_path / "regime-noisy-seed0.npz" and limit is None
    assert info["n"] == 300 and info["n_flipped"] == 90  # --limit: the first 300 images, then the transform
    with np.load(source) as archive, np.load(evidence.SAMPLE) as original:
        assert np.array_equal(archive["x_train"], original["x_train"][:300])
        assert (
            archive["x_test"].tobytes() == original["x_test"].tobytes()
            and archive["y_test"].tobytes() == original["y_test"].tobytes()
        )
    task = evidence.vision_task(source, limit)
    assert len(task.y_train) == 300 and len(task.y_test) == 500
    stamp = source.stat().st_mtime_ns
    assert evidence.vision_regime_source(evidence.SAMPLE, tmp_path, "noisy", 0, 300)[2] == info
    assert source.stat().st_mtime_ns == stamp, "same data, regime, seed and limit: the file is reused"
    assert evidence.vision_regime_source(evidence.SAMPLE, tmp_path, "noisy", 0, 400)[2]["n"] == 400, (
        "another limit: rebuilt"
    )
    # clean data is the input itself, the limit left to extract and the task
    assert evidence.vision_regime_source(evidence.SAMPLE, tmp_path, "long", 0, 300) == (
        evidence.SAMPLE,
        300,
        {"regime": "long"},
    )


def test_metrics_and_summary_tables() -> None:
    import evidence
    import torch

    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predictions = torch.tensor([0, 0, 0, 0, 1, 0, 0, 0])
    metrics = evidence.class_metrics(predictions, labels)
    assert metrics == pytest.approx({"acc": 62.5, "balanced_acc": 50.0, "worst_class_recall": 0.0})

    def run(regime: str | None, method: str, ratio: float, seed: int, acc: float, balanced: float | None) -> dict:
        r = {
            "method": method,
            "ratio": ratio,
            "seed": seed,
            "acc": acc,
            "train_s": 10.0 * ratio,
            "plan_s": 1.0,
            "steps": int(100 * ratio),
        }
        if regime is not None:
            r["regime"] = regime
        if balanced is not None:
            r.update(balanced_acc=balanced, worst_class_recall=balanced / 2)
        return r

    runs = [
        run("noisy", "full", 1.0, 0, 80.0, 70.0),
        run("noisy", "dynsel", 0.5, 0, 70.0, 60.0),
        run("noisy", "dynsel", 0.5, 1, 72.0, 64.0),
        run("noisy", "rs2", 0.5, 0, 71.0, 61.0),
        run(None, "full", 1.0, 0, 90.0, None),  # a log line from before regimes and balanced accuracy
        run(None, "usage-cycle", 0.5, 0, 85.0, None),  # a removed control: still summarised, no precompute
    ]
    rows = {(r["regime"], r["method"]): r for r in evidence.summarise(runs, {"noisy": 4.0, "clean": 4.0})}
    assert list(rows) == [
        ("clean", "usage-cycle"),
        ("clean", "full"),
        ("noisy", "rs2"),
        ("noisy", "dynsel"),
        ("noisy", "full"),
    ]  # regime, ratio, VARIANTS order
    dynsel = rows[("noisy", "dynsel")]
    assert (
        dynsel["acc_mean"] == 71.0 and dynsel["balanced_acc_mean"] == 62.0 and dynsel["worst_class_recall_mean"] == 31.0
    )
    assert dynsel["balanced_acc_std"] == pytest.approx(2.8284271, rel=1e-6)
    assert dynsel["speedup_with_precompute"] == pytest.approx(10.0 / (5.0 + 4.0 + 1.0)), "dynsel pays for the factors"
    assert rows[("noisy", "rs2")]["speedup_with_precompute"] == rows[("noisy", "rs2")]["speedup_train"] == 2.0, (
        "rs2 needs no factors"
    )
    assert rows[("clean", "usage-cycle")]["balanced_acc_mean"] is None
    table = evidence.markdown(list(rows.values()))
    assert "| noisy | 0.5 | dynsel | 2 | 71.00 ± 1.41 | 62.00 ± 2.83 | 31.00 ± 1.41 |" in table
    assert "| clean | 0.5 | usage-cycle | 1 | 85.00 ± 0.00 | – | – |" in table
    assert [
        evidence.needs_factors(m) for m in ("full", "random", "rs2", "rs2-balanced", "static-random", "random-anneal")
    ] == [False] * 6
    assert all(
        evidence.needs_factors(m)
        for m in (
            "dynsel",
            "dynsel-balanced",
            "dynsel-no-dedup",
            "dynsel-no-trust",
            "score",
            "dynsel-anneal",
            "static-top",
        )
    )


def test_regime_all_needs_quick() -> None:
    proc = evidence("vision", "--regime", "all", "--work", "unused", timeout=300)
    assert proc.returncode == 2 and "--regime all runs only with --quick" in proc.stderr


# ------------------------------------------------------------------ anchors, detection, fine labels, mlp task


def test_anchor_epochs_walk_the_kept_rows_at_the_common_budget() -> None:
    from anchors import anchor_epochs

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [500, 300, 200])
    kept = rng.random(1000) < 0.7
    epochs = anchor_epochs(kept, labels, 0.3, 6, seed=4)
    assert [len(e) for e in epochs] == [300] * 6, "ceil(r N) of the full N"
    counts = np.bincount(labels[kept], minlength=3)
    quota = np.array([np.bincount(labels[e], minlength=3) for e in epochs])
    assert np.all(np.abs(quota - 300 * counts / counts.sum()) < 1), "proportional to the kept rows' classes"
    for e in epochs:
        assert kept[e].all() and len(np.unique(e)) == len(e), "kept rows only, no repeat while the pass lasts"
    seen = np.concatenate(epochs[:2])  # RS2: two epochs of 300 cover 600 distinct of ~700 kept rows
    assert len(np.unique(seen)) == 600
    assert np.array_equal(np.concatenate(anchor_epochs(kept, labels, 0.3, 6, seed=4)), np.concatenate(epochs))
    assert not np.array_equal(np.concatenate(anchor_epochs(kept, labels, 0.3, 6, seed=5)), np.concatenate(epochs))
    few = np.zeros(1000, dtype=bool)
    few[rng.choice(1000, 100, replace=False)] = True
    wrapped = anchor_epochs(few, labels, 0.5, 2, seed=0)
    assert [len(e) for e in wrapped] == [500, 500] and few[np.concatenate(wrapped)].all()
    per_row = np.bincount(wrapped[0], minlength=1000)[few]
    assert per_row.min() >= 4 and per_row.max() <= 6, "the walk wraps evenly when the budget exceeds the kept rows"


def test_semdedup_groups_near_duplicates_and_keeps_the_central_row() -> None:
    from anchors import semdedup_groups

    rng = np.random.default_rng(1)
    base = rng.normal(size=(300, 32))
    rows = [base]
    copies = rng.choice(300, 60, replace=False)
    rows.append(base[copies] + 0.01 * rng.normal(size=(60, 32)))  # cosine ~0.9999 with their item
    x = np.concatenate(rows).astype(np.float32)
    group, kept = semdedup_groups(x)
    assert kept.sum() == 300 and np.array_equal(group[group], group), "one kept row per group, the group's id"
    for i, c in enumerate(copies.tolist()):
        assert group[300 + i] == group[c], "a near-copy joins its item's group"
    assert len(np.unique(group[:300])) == 300, "random directions in 32-d are never that close"
    exact = np.concatenate([x, x[:5]])
    group2, kept2 = semdedup_groups(exact)
    assert kept2.sum() == len(exact) - 5 - (len(x) - kept.sum())


def test_cleanlab_anchor_finds_flipped_labels() -> None:
    pytest.importorskip("cleanlab")
    from anchors import cleanlab_issues

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(4, 16)) * 4
    y = np.repeat(np.arange(4), 150)
    x = centres[y] + rng.normal(size=(600, 16))
    noisy = y.copy()
    flip = rng.choice(600, 60, replace=False)
    noisy[flip] = (y[flip] + 1) % 4
    issues = cleanlab_issues(x, noisy)
    truth = np.zeros(600, dtype=bool)
    truth[flip] = True
    assert (issues & truth).sum() >= 0.9 * 60 and (issues & ~truth).sum() <= 15


def test_copy_pairs_match_the_quadratic_count() -> None:
    from detection import copy_pair_scores, detection_metrics, flag_scores

    rng = np.random.default_rng(3)
    for _ in range(5):
        source = rng.integers(0, 40, size=150)
        group = np.where(rng.random(150) < 0.8, source, rng.integers(0, 60, size=150))
        same_source = source[:, None] == source[None, :]
        same_group = group[:, None] == group[None, :]
        upper = np.triu(np.ones((150, 150), dtype=bool), 1)
        tp = (same_source & same_group & upper).sum()
        precision, recall = copy_pair_scores(group, source)
        assert precision == pytest.approx(tp / (same_group & upper).sum()) and recall == pytest.approx(
            tp / (same_source & upper).sum()
        )
    assert copy_pair_scores(np.arange(10), np.arange(10) // 2) == (None, 0.0), "nothing predicted: no precision"
    assert flag_scores(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == (0.5, 0.5)

    import pyarrow as pa

    source = np.array([0, 0, 1, 2, 2, 2])
    flipped = np.array([0, 1, 0, 0, 0, 1], dtype=bool)
    epochs = [np.array([0, 1, 2]), np.array([1, 5, 5])]
    signals = pa.table(
        {
            "id": [5, 4, 3, 2, 1, 0],
            "group": [3, 3, 3, 2, 0, 0],
            "group_size": [3, 3, 3, 1, 2, 2],
            "suspect": [True, False, False, False, True, True],
        }
    )
    got = detection_metrics(epochs, source, flipped, signals=signals)
    assert got["flipped_draw_share"] == pytest.approx(4 / 6)
    assert got["grouped_share"] == pytest.approx(5 / 6) and got["flagged_share"] == pytest.approx(0.5)
    assert got["suspect_precision"] == pytest.approx(2 / 3) and got["suspect_recall"] == 1.0  # rows 0, 1, 5 flagged
    assert got["copy_pair_precision"] == 1.0 and got["copy_pair_recall"] == 1.0
    partial = detection_metrics(epochs, np.arange(6), np.zeros(6, bool), signals=signals.select(["id", "group_size"]))
    assert partial == {"grouped_share": pytest.approx(5 / 6)}, "missing columns, no flips, no copies: what applies"
    anchor = detection_metrics(
        epochs, source, flipped, duplicate=np.array([0, 1, 0, 0, 1, 1], bool), anchor_group=np.array([0, 0, 2, 3, 3, 3])
    )
    assert anchor["grouped_share"] == 0.5 and anchor["copy_pair_recall"] == 1.0 and "suspect_precision" not in anchor


def test_fine_labels_refine_each_class_into_four() -> None:
    from fine_labels import refine_labels

    rng = np.random.default_rng(4)
    centres = rng.normal(size=(2, 4, 8)) * 5  # 2 classes x 4 well-separated sub-topics
    y, sub = np.repeat([0, 1], 200), np.tile(np.repeat(np.arange(4), 50), 2)
    x = centres[y, sub] + rng.normal(size=(400, 8))
    yt, subt = np.repeat([0, 1], 40), np.tile(np.repeat(np.arange(4), 10), 2)
    xt = centres[yt, subt] + rng.normal(size=(80, 8))
    train, test, info = refine_labels(x, y, xt, yt, seed=0)
    assert np.array_equal(train // 4, y) and np.array_equal(test // 4, yt), "a sub-class stays within its class"
    assert info["classes"] == 8 and info["test_classes"] == 8
    for f in range(8):  # each fine label is one true sub-topic, in training and test alike
        assert len(np.unique(sub[train == f])) == 1 and np.array_equal(
            np.unique(subt[test == f]), np.unique(sub[train == f])
        )
    again = refine_labels(x, y, xt, yt, seed=0)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


def test_vision_mlp_task_with_anchors_records_detection(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(pipeline_run.out, work / "run")
    out_json = tmp_path / "mlp.json"
    methods = ["rs2", "dynsel", "semdedup"] + (
        ["cleanlab"] if __import__("importlib").util.find_spec("cleanlab") else []
    )
    proc = evidence(
        "vision",
        "--quick",
        "--vision-model",
        "mlp",
        "--epochs",
        4,
        "--work",
        work,
        "--threads",
        "1",
        "--methods",
        *methods,
        "--test-features",
        tmp_path / "test-features",
        "--json",
        out_json,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r["method"]: r for r in map(json.loads, out_json.with_suffix(".runs.jsonl").read_text().splitlines())}
    assert set(runs) == set(methods)
    assert len({r["steps"] for r in runs.values()}) == 1, "anchors train the same steps as rs2 and dynsel"
    for r in runs.values():
        assert r["modality"] == "vision" and r["vision_model"] == "mlp" and r["acc"] > 50.0, r
        assert "flipped_draw_share" not in r and "copy_pair_precision" not in r, "clean data: no flips, no copies"
    assert 0.0 <= runs["dynsel"]["grouped_share"] <= 1.0 and 0.0 <= runs["dynsel"]["flagged_share"] <= 1.0
    assert runs["semdedup"]["grouped_share"] == pytest.approx(1.0 - runs["semdedup"]["kept_share"])
    assert (work / "anchor-semdedup.npz").exists() and (tmp_path / "test-features" / "_manifest.json").exists()


def test_selection_tables_pair_by_seed_and_judge_the_targets(tmp_path: Path) -> None:
    import selection_tables

    def run(regime: str, method: str, seed: int, acc: float, ratio: float = 0.5, **extra: float) -> dict:
        return {
            "regime": regime,
            "method": method,
            "ratio": ratio,
            "seed": seed,
            "acc": acc,
            "balanced_acc": acc - 10,
            **extra,
        }

    runs = []
    for seed in range(3):
        runs += [
            run("noisy", "rs2", seed, 70.0 + seed),
            run("noisy", "dynsel", seed, 72.5 + seed + 0.1 * seed, suspect_precision=0.8, flipped_draw_share=0.1),
            run("noisy", "cleanlab", seed, 72.0 + seed, suspect_precision=0.6, flipped_draw_share=0.05),
            run("noisy", "semdedup", seed, 60.0),
            run("clean", "rs2", seed, 80.0 + seed),
            run("clean", "dynsel", seed, 79.8 + seed, grouped_share=0.02),
            run("imbalanced", "rs2-balanced", seed, 50.0 + seed),
            run("imbalanced", "dynsel-balanced", seed, 50.5 + seed),
        ]
    runs.append(run("noisy", "rs2", 3, 99.0))  # a seed dynsel lacks: not paired
    path = tmp_path / "selection-text-noisy.runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in runs))
    out = tmp_path / "tables.md"
    text = selection_tables.main([str(path), "--out", str(out)])
    assert out.read_text().strip() == text.strip()
    assert "| text | noisy | 0.5 | dynsel − best anchor (cleanlab) >= −0.2 | +0.60 ± 0.10 (n=3) | yes |" in text
    assert "| text | noisy | 0.5 | dynsel − rs2 >= +2.0 | +2.60 ± 0.10 (n=3) | yes |" in text
    assert "| text | clean | 0.5 | dynsel − rs2 >= −0.1 | -0.20 ± 0.00 (n=3) | no |" in text
    assert (
        "| text | imbalanced | 0.5 | dynsel-balanced − rs2-balanced >= 0 (balanced acc) | +0.50 ± 0.00 (n=3) | yes |"
        in text
    )
    assert "| rs2 | 4 | 78.00 ± 14.02 |" in text and "| cleanlab (best anchor) | 3 |" in text
    assert "balanced accuracy % (mean ± std)" in text.split("### text: imbalanced")[1]
    noisy_detection = text.split("### text: noisy")[1].split("###")[0]
    assert "| dynsel | – | – | 0.800 | – | 0.100 |" not in noisy_detection  # only the columns that apply
    assert "| dynsel | 0.800 | 0.100 |" in noisy_detection and "| cleanlab | 0.600 | 0.050 |" in noisy_detection
