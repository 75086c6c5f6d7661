"""Unix behaviour of the real ``dynsel`` process: one-line usage errors, quiet exits on a closed pipe,
no mid-sentence wrapping in a narrow terminal, and ``run`` taking every stage's options."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, PipelineRun, subprocess_env


def _dynsel(*args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    env = subprocess_env()
    env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "dynsel_cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["plan", "F", "--out", "x", "--ratio", "abc"], "'--ratio'"),
        (["plan", "F", "--out", "x", "--no-such-option"], "--no-such-option"),
        (["plan", "--out", "x"], "'factors'"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_usage_errors_are_one_line_with_a_pointer_to_help(args: list[str], fragment: str) -> None:
    result = _dynsel(*args, columns=40)  # narrow: the line must still not wrap
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0] and "--help`" in lines[0]
    assert "Traceback" not in result.stderr and "╭" not in result.stderr


def _pipe_into_head(args: list[str], head_bytes: int) -> tuple[int, str]:
    """Run ``dynsel ARGS | head -c N``; returns dynsel's exit code and its stderr."""
    env = subprocess_env()
    dynsel = subprocess.Popen(
        [sys.executable, "-m", "dynsel_cli", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    head = subprocess.run(["head", "-c", str(head_bytes)], stdin=dynsel.stdout, capture_output=True, timeout=300)
    assert dynsel.stdout is not None
    dynsel.stdout.close()
    _, err = dynsel.communicate(timeout=300)
    assert len(head.stdout) == head_bytes
    return dynsel.returncode, err.decode()


def test_a_closed_pipe_ends_plan_and_report_quietly(pipeline_run: PipelineRun) -> None:
    # 300 epochs of ids are far more than a pipe buffer: the write fails once head has gone
    code, err = _pipe_into_head(
        ["plan", str(pipeline_run.factors), "--out", "-", "--epochs", "300", "--ratio", "0.9", "--method", "rs2"], 200
    )
    assert code == 141 and "error" not in err and "Traceback" not in err, err
    code, err = _pipe_into_head(["report", str(pipeline_run.plan)], 100)
    assert code in (0, 141) and "error" not in err and "Traceback" not in err, err


def test_run_accepts_every_option_of_the_stages_it_runs() -> None:
    import dataclasses

    from dynsel_cli.config import ExtractConfig, FactorsConfig, PlanConfig, SaeConfig

    result = _dynsel("run", "--help", columns=250)
    assert result.returncode == 0
    help_text = result.stdout
    for cls, prefix in (
        (PlanConfig, ""),
        (ExtractConfig, "extract-"),
        (SaeConfig, "sae-"),
        (FactorsConfig, "factors-"),
    ):
        for field in dataclasses.fields(cls):
            flag = field.name.replace("_", "-")
            assert f"--{flag}" in help_text or f"--{prefix}{flag}" in help_text, f"run lacks --{flag} of {cls.__name__}"
    for flag in (
        "--formats",
        "--restart",
        "--force",
        "--sae-epochs",
        "--extract-batch-size",
        "--on-error",
        "--text-column",
        "--label-column",
    ):
        assert flag in help_text
    for kind in ("image folder", ".npy/.npz", "Parquet/CSV/TSV/JSONL"):
        assert kind in help_text, kind


def test_help_and_report_start_without_heavy_libraries(pipeline_run: PipelineRun, tmp_path) -> None:
    """Start-up time is measured in benchmarks/bench_startup.py; here, that nothing slow creeps back in:
    `--help` and `report PLAN` import none of torch, faiss, pyarrow; a dynsel plan's report needs pyarrow
    only to read its signals.parquet."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_startup import heavy_imports

    from dynsel_cli.config import PlanConfig
    from dynsel_cli.plan import build_plan

    build_plan(pipeline_run.factors, tmp_path / "rs2", PlanConfig(epochs=3, method="rs2", device="cpu"))
    assert heavy_imports(["--help"]) == []
    assert heavy_imports(["report", str(tmp_path / "rs2")]) == []
    assert heavy_imports(["report", str(pipeline_run.plan)]) == ["pyarrow"]
