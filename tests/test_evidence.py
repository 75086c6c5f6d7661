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
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout,
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
    proc = evidence("vision", "--quick", "--regime", "all", "--epochs", EPOCHS, "--work", work, "--threads", "1", "--json", out_json, timeout=1800)
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
        assert archive["x_test"].tobytes() == original["x_test"].tobytes() and archive["y_test"].tobytes() == original["y_test"].tobytes()
    task = evidence.vision_task(source, limit)
    assert len(task.y_train) == 300 and len(task.y_test) == 500
    stamp = source.stat().st_mtime_ns
    assert evidence.vision_regime_source(evidence.SAMPLE, tmp_path, "noisy", 0, 300)[2] == info
    assert source.stat().st_mtime_ns == stamp, "same data, regime, seed and limit: the file is reused"
    assert evidence.vision_regime_source(evidence.SAMPLE, tmp_path, "noisy", 0, 400)[2]["n"] == 400, "another limit: rebuilt"
    # clean data is the input itself, the limit left to extract and the task
    assert evidence.vision_regime_source(evidence.SAMPLE, tmp_path, "long", 0, 300) == (evidence.SAMPLE, 300, {"regime": "long"})


def test_metrics_and_summary_tables() -> None:
    import torch

    import evidence

    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predictions = torch.tensor([0, 0, 0, 0, 1, 0, 0, 0])
    metrics = evidence.class_metrics(predictions, labels)
    assert metrics == pytest.approx({"acc": 62.5, "balanced_acc": 50.0, "worst_class_recall": 0.0})

    def run(regime: str | None, method: str, ratio: float, seed: int, acc: float, balanced: float | None) -> dict:
        r = {"method": method, "ratio": ratio, "seed": seed, "acc": acc, "train_s": 10.0 * ratio, "plan_s": 1.0, "steps": int(100 * ratio)}
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
    assert list(rows) == [("clean", "usage-cycle"), ("clean", "full"), ("noisy", "rs2"), ("noisy", "dynsel"), ("noisy", "full")]  # regime, ratio, VARIANTS order
    dynsel = rows[("noisy", "dynsel")]
    assert dynsel["acc_mean"] == 71.0 and dynsel["balanced_acc_mean"] == 62.0 and dynsel["worst_class_recall_mean"] == 31.0
    assert dynsel["balanced_acc_std"] == pytest.approx(2.8284271, rel=1e-6)
    assert dynsel["speedup_with_precompute"] == pytest.approx(10.0 / (5.0 + 4.0 + 1.0)), "dynsel pays for the factors"
    assert rows[("noisy", "rs2")]["speedup_with_precompute"] == rows[("noisy", "rs2")]["speedup_train"] == 2.0, "rs2 needs no factors"
    assert rows[("clean", "usage-cycle")]["balanced_acc_mean"] is None
    table = evidence.markdown(list(rows.values()))
    assert "| noisy | 0.5 | dynsel | 2 | 71.00 ± 1.41 | 62.00 ± 2.83 | 31.00 ± 1.41 |" in table
    assert "| clean | 0.5 | usage-cycle | 1 | 85.00 ± 0.00 | – | – |" in table
    assert [evidence.needs_factors(m) for m in ("full", "random", "rs2", "rs2-balanced", "static-random", "random-anneal")] == [False] * 6
    assert all(evidence.needs_factors(m) for m in ("dynsel", "dynsel-balanced", "dynsel-no-dedup", "dynsel-no-trust", "score", "dynsel-anneal", "static-top"))


def test_regime_all_needs_quick() -> None:
    proc = evidence("vision", "--regime", "all", "--work", "unused", timeout=300)
    assert proc.returncode == 2 and "--regime all runs only with --quick" in proc.stderr
