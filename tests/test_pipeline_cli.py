"""The command line contract: `dynsel run` artifacts and skipping, `dynsel report --json`, read_plan,
exit codes and one-line errors, help and version, `--out -`, and the stage-by-stage shell pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REPO,
    RUN_ARGS,
    SAMPLE,
    STAGE_DIRS,
    assert_one_line_error,
    dynsel,
    invoke,
    sha256_of,
    sparse_dictionary_data,
    tree_digests,
    tree_mtimes,
)

import dynsel_cli
from dynsel_cli import read_plan
from dynsel_cli.errors import DynselError

STAGES = ("extract", "fit-sae", "factors", "plan")


def stage_status(stderr: str) -> dict[str, str]:
    """'extract: up to date' / 'plan: built' lines of the run log."""
    status = {}
    for line in stderr.splitlines():
        for stage in STAGES:
            for word in ("up to date", "built"):
                if line.strip() == f"{stage}: {word}":
                    status[stage] = word
    return status


@pytest.fixture(scope="module")
def vectors_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "vectors.npz"
    np.savez(path, x=sparse_dictionary_data(120, 16, 32), y=np.arange(120) % 4)
    return path


# ------------------------------------------------------------------------------------------ dynsel run


def test_run_creates_every_artifact(pipeline_run) -> None:
    out = pipeline_run.out
    print(f"dynsel run took {pipeline_run.seconds:.1f} s")
    assert sorted(p.name for p in out.iterdir()) == sorted(STAGE_DIRS)
    assert {"cfg.json", "sae.safetensors", "metrics.json"} <= {p.name for p in pipeline_run.sae.iterdir()}
    metrics = json.loads((pipeline_run.sae / "metrics.json").read_text())
    assert {"fvu", "l0", "dead_fraction"} <= set(metrics)
    assert 0 < metrics["fvu"] < 1 and metrics["l0"] == pytest.approx(32) and 0 <= metrics["dead_fraction"] <= 1
    assert {"samples.parquet", "units.parquet"} <= {p.name for p in pipeline_run.factors.iterdir()}
    assert {"manifest.json", "indices.bin", "offsets.bin"} <= {p.name for p in pipeline_run.plan.iterdir()}
    assert any(p.suffix == ".parquet" for p in pipeline_run.features.iterdir())
    assert stage_status(pipeline_run.stderr) == dict.fromkeys(STAGES, "built")
    assert not [p for p in out.parent.rglob(".*")], "temporary or partial directories left behind"


def test_run_json_prints_one_report_object(pipeline_run) -> None:
    lines = pipeline_run.stdout.splitlines()
    assert len(lines) == 1, "stdout carries exactly the JSON report (logs go to stderr)"
    report = json.loads(lines[0])
    assert report["n_samples"] == 2000 and report["epochs"] == 6 and report["ratio"] == 0.5 and report["seed"] == 0
    assert report["counts"] == [1000] * 6
    assert report["sha256"] == sha256_of(pipeline_run.plan / "indices.bin")


def test_rerun_with_unchanged_settings_skips_every_stage(pipeline_run) -> None:
    before = tree_digests(pipeline_run.out)
    proc = dynsel("run", SAMPLE.relative_to(REPO), "--out", pipeline_run.out, *RUN_ARGS, "--json")
    assert proc.returncode == 0, proc.stderr
    assert stage_status(proc.stderr) == dict.fromkeys(STAGES, "up to date"), proc.stderr
    assert tree_mtimes(pipeline_run.out) == pipeline_run.mtimes, "a skipped stage rewrote its artifact"
    assert tree_digests(pipeline_run.out) == before
    assert json.loads(proc.stdout)["sha256"] == sha256_of(pipeline_run.plan / "indices.bin")


def test_changing_only_the_ratio_rebuilds_only_the_plan(pipeline_run, tmp_path: Path) -> None:
    out = tmp_path / "fm"
    shutil.copytree(pipeline_run.out, out)
    before = tree_mtimes(out)
    args = ["--epochs", "6", "--ratio", "0.3", "--seed", "0"]
    proc = dynsel("run", SAMPLE.relative_to(REPO), "--out", out, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert stage_status(proc.stderr) == {
        "extract": "up to date",
        "fit-sae": "up to date",
        "factors": "up to date",
        "plan": "built",
    }, proc.stderr
    after = tree_mtimes(out)
    for name in ("features", "sae", "factors"):
        kept = {k: v for k, v in before.items() if k == name or k.startswith(name + "/")}
        assert kept and all(after[k] == v for k, v in kept.items()), f"{name} was rewritten"
    assert after["plan/indices.bin"] != before["plan/indices.bin"]
    plan = read_plan(out / "plan")
    assert plan.ratio == 0.3 and plan.counts == [600] * 6
    assert sorted(p.name for p in out.iterdir()) == sorted(STAGE_DIRS)


# -------------------------------------------------------------------------------------- dynsel report


def test_report_json(pipeline_run) -> None:
    result = invoke("report", pipeline_run.plan, "--json")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert isinstance(report, dict)
    assert report["n_samples"] == 2000 and report["epochs"] == 6 and report["ratio"] == 0.5 and report["seed"] == 0
    assert report["counts"] == [1000] * 6
    assert report["sha256"] == sha256_of(pipeline_run.plan / "indices.bin")
    with_factors = invoke("report", pipeline_run.plan, "--factors", pipeline_run.factors, "--json")
    assert with_factors.exit_code == 0, with_factors.stderr
    assert json.loads(with_factors.stdout)["sha256"] == report["sha256"]
    terminal = invoke("report", pipeline_run.plan)
    assert terminal.exit_code == 0 and terminal.stdout.strip()


def test_report_refuses_a_tampered_plan(pipeline_run, tmp_path: Path) -> None:
    shutil.copytree(pipeline_run.plan, tmp_path / "plan")
    data = bytearray((tmp_path / "plan" / "indices.bin").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "plan" / "indices.bin").write_bytes(bytes(data))
    result = invoke("report", tmp_path / "plan", "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert "checksum mismatch" in assert_one_line_error(result.stderr)


# --------------------------------------------------------------------------------------- read_plan


def test_read_plan_gives_int64_epochs_in_training_order(pipeline_run) -> None:
    plan = read_plan(pipeline_run.plan)
    assert len(plan.epochs) == 6 and plan.n_samples == 2000
    flat = np.fromfile(pipeline_run.plan / "indices.bin", dtype=plan.manifest["index_dtype"])
    offsets = np.fromfile(pipeline_run.plan / "offsets.bin", dtype="<u8")
    for e in range(6):
        epoch = plan.epochs[e]
        assert isinstance(epoch, np.ndarray) and epoch.dtype == np.int64
        assert len(epoch) == 1000 == len(np.unique(epoch)) and epoch.min() >= 0 and epoch.max() < 2000
        np.testing.assert_array_equal(epoch, flat[offsets[e] : offsets[e + 1]])
        text = (pipeline_run.plan / "epochs" / f"epoch-{e:04d}.txt").read_text().split()
        np.testing.assert_array_equal(epoch, np.array(text, dtype=np.int64))
    assert plan.sha256 == sha256_of(pipeline_run.plan / "indices.bin")


# ------------------------------------------------------------------------------------------- plan --out -


def test_plan_to_stdout(pipeline_run, tmp_path: Path) -> None:
    result = invoke("plan", pipeline_run.factors, "--out", "-", "--epochs", "3", "--ratio", "0.3", "--seed", "0")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    epochs = [np.array(line.split(" "), dtype=np.int64) for line in lines]
    for epoch in epochs:
        assert len(epoch) == 600 == len(np.unique(epoch)) and epoch.min() >= 0 and epoch.max() < 2000
    written = invoke(
        "plan", pipeline_run.factors, "--out", tmp_path / "plan", "--epochs", "3", "--ratio", "0.3", "--seed", "0"
    )
    assert written.exit_code == 0, written.stderr
    plan = read_plan(tmp_path / "plan")  # the same plan as files
    for a, b in zip(epochs, plan.epochs):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------- errors and exit codes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratio", "0"], "--ratio"),
        (["--ratio", "1.5"], "--ratio"),
        (["--epochs", "0"], "--epochs 0"),
        (["--method", "bogus"], "--method 'bogus'"),
        (["--epochs", "6", "--full-epochs", "7"], "--full-epochs 7"),
    ],
)
def test_plan_rejects_bad_options_with_one_line(pipeline_run, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "plan"
    result = invoke("plan", pipeline_run.factors, "--out", out, *args)
    assert result.exit_code == 2
    assert message in assert_one_line_error(result.stderr)
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == [], "no output (and no temporary directory) is left behind"


def test_plan_rejects_unknown_formats_before_computing(pipeline_run, tmp_path: Path) -> None:
    result = invoke("plan", pipeline_run.factors, "--out", tmp_path / "plan", "--formats", "bin,xml")
    assert result.exit_code == 2
    assert "--formats" in assert_one_line_error(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_bad_option_in_a_real_process(pipeline_run, tmp_path: Path) -> None:
    proc = dynsel("plan", pipeline_run.factors, "--out", tmp_path / "plan", "--ratio", "1.5")
    assert proc.returncode == 2
    assert "--ratio 1.5" in assert_one_line_error(proc.stderr)
    assert not (tmp_path / "plan").exists()


def test_missing_and_wrong_inputs_exit_2(pipeline_run, tmp_path: Path) -> None:
    cases = [
        (["extract", tmp_path / "missing.npz", "--out", tmp_path / "f"], "no such file"),
        (["fit-sae", tmp_path / "missing", "--out", tmp_path / "s"], "not a features directory"),
        (
            ["factors", pipeline_run.features, "--sae", tmp_path / "missing", "--out", tmp_path / "x"],
            "not an SAE checkpoint",
        ),
        (["plan", tmp_path / "missing", "--out", tmp_path / "p"], "not a factor tables directory"),
        (["plan", pipeline_run.features, "--out", tmp_path / "p"], "factor tables"),
        (["report", tmp_path / "missing"], "not a plan directory"),
        (["report", pipeline_run.factors], "not a dynsel plan directory"),
        (["report", pipeline_run.features], "plan"),
        (["run", tmp_path / "missing.npz", "--out", tmp_path / "run"], "no such file"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((["report", tmp_path / "empty"], "manifest.json: missing"))
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.exit_code, result.stderr, result.exception)
        line = assert_one_line_error(result.stderr, only_line=args[0] != "run")
        assert message in line, (args, line)
        assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_run_with_a_missing_source_over_an_existing_run_exits_2(pipeline_run, tmp_path: Path) -> None:
    result = invoke("run", tmp_path / "gone.npz", "--out", pipeline_run.out, *RUN_ARGS)
    assert tree_mtimes(pipeline_run.out) == pipeline_run.mtimes
    assert result.exit_code == 2, result.stderr
    assert "gone.npz" in assert_one_line_error(result.stderr, only_line=False)


def test_run_with_bad_plan_options_fails_before_any_work(vectors_npz: Path, tmp_path: Path) -> None:
    result = invoke("run", vectors_npz, "--out", tmp_path / "run", "--ratio", "0", "--device", "cpu")
    assert result.exit_code == 2
    assert "--ratio" in assert_one_line_error(result.stderr)
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_real_exception(tmp_path: Path) -> None:
    result = invoke("--debug", "report", tmp_path / "missing")
    assert result.exit_code != 0 and isinstance(result.exception, DynselError)


# ------------------------------------------------------------------------------------ help and version


def test_version() -> None:
    proc = dynsel("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"dynsel {dynsel_cli.__version__}"


@pytest.mark.parametrize("command", ["extract", "fit-sae", "factors", "plan", "report", "run"])
def test_every_subcommand_help_shows_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"dynsel {command}" in " ".join(result.stdout.split())


def _panel(text: str, title: str) -> str:
    """The lines of one rich help panel of ``text``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"╭─ {title} "))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("╰"))
    return "\n".join(lines[start:end])


def test_plan_help_guides_the_choice_and_groups_each_methods_options() -> None:
    result = invoke("plan", "--help")
    assert result.exit_code == 0
    text = result.stdout
    assert "start with the default" in " ".join(text.split()) and "--method rs2" in text
    dynsel_panel, score_panel = _panel(text, "Method dynsel (the default)"), _panel(text, "Method score")
    for option in ("--dup-rule", "--label-trust", "--dedup", "--trust-full"):
        assert option in dynsel_panel and option not in score_panel
    for option in ("--tau", "--beta", "--lambda-start", "--penalty"):
        assert option in score_panel and option not in dynsel_panel
    flags = [line for line in text.splitlines() if "<bool>" in line]
    assert len(flags) == 1 and "--help" in flags[0]  # Typer's own --help keeps its "<bool>"; flag pairs show none


def test_top_level_help_shows_an_example() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout


# --------------------------------------------------------------------------- the shell pipeline, stage by stage


def test_stage_by_stage_pipeline(vectors_npz: Path, tmp_path: Path) -> None:
    steps = [
        ["extract", vectors_npz, "--out", tmp_path / "features", "--device", "cpu"],
        [
            "fit-sae",
            tmp_path / "features",
            "--out",
            tmp_path / "sae",
            "--width",
            "32",
            "--k",
            "3",
            "--epochs",
            "3",
            "--device",
            "cpu",
        ],
        ["factors", tmp_path / "features", "--sae", tmp_path / "sae", "--out", tmp_path / "factors", "--device", "cpu"],
        [
            "plan",
            tmp_path / "factors",
            "--out",
            tmp_path / "plan",
            "--epochs",
            "4",
            "--ratio",
            "0.25",
            "--formats",
            "bin,txt,npy,parquet",
        ],
    ]
    for args in steps:
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.stderr)
        assert result.stdout == "", "stage logs go to stderr, stdout carries data only"
    plan = read_plan(tmp_path / "plan")
    assert plan.counts == [30] * 4 and plan.n_samples == 120
    assert {"indices.npy", "offsets.npy", "plan.parquet", "epochs"} <= {p.name for p in (tmp_path / "plan").iterdir()}
    labels = np.arange(120) % 4
    for epoch in plan.epochs:
        assert len(np.unique(epoch)) == 30
        counts = np.bincount(labels[epoch], minlength=4)  # content quotas: 7.5 each, give or take the remainder
        assert counts.sum() == 30 and set(counts) <= {7, 8}
    result = invoke("report", tmp_path / "plan", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["counts"] == [30] * 4


def test_every_stage_meets_the_contract_and_run_uses_only_it(pipeline_run) -> None:
    """The four stages behind one contract: each says its artifact's kind, its inputs and whether an
    artifact is current; changing a setting that defines an artifact makes it stale, `device` does not."""
    from dataclasses import replace

    from conftest import RUN_EPOCHS, RUN_RATIO, RUN_SEED

    from dynsel_cli.config import FactorsConfig, PlanConfig, SaeConfig
    from dynsel_cli.formats.output import artifact_kind
    from dynsel_cli.pipeline import STAGES

    assert [s.command for s in STAGES] == ["extract", "fit-sae", "factors", "plan"]
    configs = {
        "fit-sae": SaeConfig(seed=RUN_SEED),
        "factors": FactorsConfig(),
        "plan": PlanConfig(epochs=RUN_EPOCHS, ratio=RUN_RATIO, seed=RUN_SEED),
    }
    paths = {
        "features": pipeline_run.features,
        "sae": pipeline_run.sae,
        "factors": pipeline_run.factors,
        "plan": pipeline_run.plan,
    }
    for stage in STAGES[1:]:
        config = configs[stage.command]
        inputs = {name: paths[name] for name in stage.inputs(config)}
        out = paths[stage.artifact]
        assert artifact_kind(out) == stage.kind
        assert stage.current(out, inputs, config) is not None, stage.command
        assert stage.current(out, inputs, replace(config, device="cpu")) is not None  # where it runs does not matter
        changed = {"fit-sae": {"k": 16}, "factors": {"batch_size": 7}, "plan": {"ratio": 0.3}}[stage.command]
        assert stage.current(out, inputs, replace(config, **changed)) is None, (
            f"{stage.command}: a changed setting must make it stale"
        )


def test_run_rebuilds_the_plan_when_only_its_formats_change(pipeline_run, tmp_path) -> None:
    import shutil

    from conftest import RUN_EPOCHS, RUN_RATIO, RUN_SEED, SAMPLE

    from dynsel_cli.config import PlanConfig, SaeConfig
    from dynsel_cli.pipeline import RunConfig, run_pipeline

    out = tmp_path / "run"
    shutil.copytree(pipeline_run.out, out)
    config = RunConfig(sae=SaeConfig(seed=RUN_SEED), plan=PlanConfig(epochs=RUN_EPOCHS, ratio=RUN_RATIO, seed=RUN_SEED))
    same = run_pipeline(SAMPLE, out, config)
    assert same.stages["plan"] == "up to date"
    changed = run_pipeline(SAMPLE, out, config, formats=("bin",))
    assert changed.stages == {
        "extract": "up to date",
        "fit-sae": "up to date",
        "factors": "up to date",
        "plan": "built",
    }
    assert not (out / "plan" / "epochs").exists() and not (out / "plan" / "plan.parquet").exists()


def test_a_run_directory_given_for_an_artifact_points_at_the_one_inside(pipeline_run, tmp_path) -> None:
    run_dir = pipeline_run.out
    planned = invoke("plan", run_dir, "--out", tmp_path / "p")
    assert planned.exit_code == 2
    assert planned.stderr.strip().endswith(f"{run_dir} holds one: pass {run_dir / 'factors'}")
    reported = invoke("report", run_dir)
    assert reported.exit_code == 2 and reported.stderr.strip().endswith(f"pass {run_dir / 'plan'}")
    assert len(reported.stderr.strip().splitlines()) == 1
