"""Data that tries to take over the terminal or the machine: class names with rich markup and escape
sequences, an --html target that would block, labels that would size arrays by their value.

What a user relies on: such data is shown as typed (markup literally, control characters as their
escapes), never obeyed; an impossible request ends at once with exit 2 and one line. The option limits
(--epochs, --image-size, --batch-size) are rows of the bad-input table in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, invoke, subprocess_env
from rich.console import Console

from dynsel_cli.errors import DynselError
from dynsel_cli.factors.statistics import UnitStatsAccumulator
from dynsel_cli.formats.common import atomic_directory
from dynsel_cli.formats.factors import SampleFactors, UnitStats, read_factor_tables, write_factor_tables
from dynsel_cli.formats.plan import read_plan, write_plan
from dynsel_cli.report import build_report
from dynsel_cli.report.terminal import render_terminal

ESC = "\x1b"
HOSTILE = ["[/]", "[bold red]x", "[link=http://e]x[/link]", "\x1b[2J\x1b]0;t\x07"]
# how each must appear: markup as typed, control characters as their Python escapes
SHOWN = ["[/]", "[bold red]x", "[link=http://e]x[/link]", "\\x1b[2J\\x1b]0;t\\x07"]


def _run(*args: str | Path, timeout: float = 120, columns: int = 250) -> subprocess.CompletedProcess[str]:
    env = {**subprocess_env(), "COLUMNS": str(columns)}
    try:
        return subprocess.run(
            [sys.executable, "-m", "dynsel_cli", *map(str, args)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"dynsel {' '.join(map(str, args))} did not finish within {timeout} s")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Factor tables of 8 samples in 4 classes named HOSTILE, and a 3-epoch plan of them in a folder named with markup."""
    root = tmp_path_factory.mktemp("hostile")
    ids = np.arange(8, dtype=np.int64)
    units = np.array([[i % 4, 4 + i % 3] for i in range(8)], dtype=np.int32)
    count = np.bincount(units.ravel(), minlength=8).astype(np.int64)
    stats = UnitStats(
        count=count,
        frequency=count / 8,
        mass=count.astype(float),
        mean_act=np.ones(8),
        max_act=np.ones(8),
        class_frequency=None,
    )
    samples = SampleFactors(ids=ids, labels=ids % 4, units=units, acts=np.ones((8, 2), dtype=np.float32))
    with atomic_directory(root / "factors") as tmp:
        write_factor_tables(tmp, samples, stats, {"classes": HOSTILE})
    tables = read_factor_tables(root / "factors")
    plan = root / "plan[bold]\x1b[2J"
    with atomic_directory(plan) as tmp:
        epochs = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 0]), np.array([1, 3, 5, 7])]
        write_plan(
            tmp,
            epochs,
            8,
            2,
            1,
            False,
            {"ratio": 0.5, "seed": 0, "method": "random", "inputs": {"factors": tables.fingerprint}},
            formats=("bin",),
        )
    return plan, root / "factors"


def test_report_shows_hostile_class_names_as_typed(hostile_run: tuple[Path, Path]) -> None:
    plan, factors = hostile_run
    result = _run("report", plan, "--factors", factors)

    assert result.returncode == 0, result.stderr
    assert ESC not in result.stdout + result.stderr
    for shown in SHOWN:
        assert shown in result.stdout, f"{shown!r} not shown as typed:\n{result.stdout}"
    assert "plan[bold]\\x1b[2J" in result.stdout  # the plan's folder name, in the title


def test_report_on_a_terminal_obeys_no_markup_or_escape_from_the_data(hostile_run: tuple[Path, Path]) -> None:
    plan, factors = hostile_run
    out = io.StringIO()
    render_terminal(
        build_report(read_plan(plan), read_factor_tables(factors)),
        Console(file=out, force_terminal=True, color_system="truecolor", width=250),
    )
    text = out.getvalue()

    assert "\x1b]8;" not in text, "a class name became a hyperlink"
    assert "\x1b[2J" not in text and "\x1b]0;" not in text and "\x07" not in text
    for shown in SHOWN:
        assert shown in text


def test_an_error_line_shows_a_hostile_path_as_typed(tmp_path: Path) -> None:
    source = tmp_path / "no[/]\x1b[2J\x1b]0;t\x07:warning:.npz"
    result = invoke("extract", source, "--out", tmp_path / "out")

    assert result.exit_code == 2
    line = assert_one_line_error(result.stderr)
    assert ESC not in result.stderr and "\x07" not in result.stderr
    assert "no[/]\\x1b[2J\\x1b]0;t\\x07:warning:.npz" in line


@pytest.mark.parametrize("target", ["fifo", "/dev/stdout"])
def test_report_html_refuses_a_pipe_at_once(hostile_run: tuple[Path, Path], tmp_path: Path, target: str) -> None:
    """A FIFO (or stdout, a pipe here) as --html: refused by its type, never opened (opening it blocks)."""
    plan, _ = hostile_run
    path = tmp_path / "page.html" if target == "fifo" else Path(target)
    if target == "fifo":
        os.mkfifo(path)
    result = _run("report", plan, "--html", path, timeout=30)

    assert result.returncode == 2, result.stderr
    line = assert_one_line_error(result.stderr)
    assert str(path) in line and "named pipe" in line and "--html" in line
    if target == "fifo":
        assert path.is_fifo()


def test_a_label_of_ten_to_the_eight_is_refused_by_the_statistics() -> None:
    """Per-class statistics are indexed by class id: label 10^8 would need 10^8 × width counts."""
    stats = UnitStatsAccumulator(16, has_labels=True, source="FEATURES")
    units = np.array([[0, 1], [2, 3]], dtype=np.int32)
    with pytest.raises(
        DynselError,
        match=r"^FEATURES: label 100000000 is above the largest class id 8,388,607 .*number the classes 0\.\.C-1",
    ):
        stats.add(units, np.ones((2, 2), dtype=np.float32), np.array([0, 10**8]))
    with pytest.raises(DynselError, match="class names"):
        UnitStatsAccumulator(16, has_labels=True, n_classes=10**8)
