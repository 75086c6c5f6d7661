"""The training-evidence harness (benchmarks/evidence.py) keeps working: its --quick mode runs end to end.

It reuses the session's `dynsel run` of the sample data, so only the plans and three short trainings run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, PipelineRun, subprocess_env


def test_quick_mode_trains_on_plans_and_reports_every_method(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(pipeline_run.out, work)
    out_json = tmp_path / "quick.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "evidence.py"), "vision", "--quick", "--work", str(work), "--threads", "1", "--json", str(out_json)],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fit-sae: →" not in proc.stderr, "the session's SAE was reused, not retrained"
    result = json.loads(out_json.read_text())
    rows = {(r["method"], r["ratio"]): r for r in result["summary"]}
    assert set(rows) == {("full", 1.0), ("random", 0.5), ("dynsel", 0.5)}
    for row in rows.values():
        assert 50.0 < row["acc_mean"] <= 100.0, row  # a real model learned (10 balanced classes: chance is 10%)
    assert rows[("random", 0.5)]["steps"] * 2 == rows[("full", 1.0)]["steps"]  # 2000 samples, batch 128: 8 vs 16 per epoch
    assert "| 0.5 | dynsel |" in proc.stdout
    runs = [json.loads(line) for line in out_json.with_suffix(".runs.jsonl").read_text().splitlines()]
    assert len(runs) == 3
