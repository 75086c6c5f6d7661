"""Output safety: ``--out`` replaces only an artifact dynsel wrote, of the same kind (or another kind with
``--force``), and never the current directory, an input, or a folder holding one.

The one-line messages of each refusal are in the bad-input suite (tests/test_bad_inputs.py); this file
checks the rule itself and the race the early check cannot see: a folder appearing at the output path
while the stage computes is left byte-identical.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import PipelineRun, invoke, tree_digests
from dynsel_cli.config import PlanConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.formats.output import RUN_KIND, artifact_kind, check_output, check_replaceable
from dynsel_cli.plan import build_plan


def _user_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("my thesis\n")
    (path / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return path


def test_artifact_kind_reads_the_manifest_of_each_stage(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    assert artifact_kind(pipeline_run.features) == "dynsel.features"
    assert artifact_kind(pipeline_run.sae) == "dynsel.sae"
    assert artifact_kind(pipeline_run.factors) == "dynsel.factors"
    assert artifact_kind(pipeline_run.plan) == "dynsel.plan"
    assert artifact_kind(_user_folder(tmp_path / "user")) is None
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "manifest.json").write_text('{"format": "something.else"}')
    assert artifact_kind(tmp_path / "fake") is None


def test_same_kind_and_empty_folders_are_replaceable_others_are_not(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    check_replaceable(pipeline_run.plan, "dynsel.plan")
    check_replaceable(tmp_path / "missing", "dynsel.plan")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", "dynsel.plan")
    with pytest.raises(DynselError, match="--force"):
        check_replaceable(pipeline_run.features, "dynsel.plan")
    check_replaceable(pipeline_run.features, "dynsel.plan", force=True)
    user = _user_folder(tmp_path / "user")
    for force in (False, True):
        with pytest.raises(DynselError, match="not a dynsel plan"):
            check_replaceable(user, "dynsel.plan", force=force)


def test_a_run_directory_is_replaceable_only_when_it_holds_stage_artifacts(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    check_replaceable(pipeline_run.out, RUN_KIND)
    run = tmp_path / "run"
    shutil.copytree(pipeline_run.out, run)
    (run / ".plan.tmp-abc123").mkdir()  # a killed writer's temporary: the run's own
    check_replaceable(run, RUN_KIND)
    (run / "README.txt").write_text("mine\n")
    with pytest.raises(DynselError, match="README.txt"):
        check_replaceable(run, RUN_KIND)
    (run / "README.txt").unlink()
    shutil.rmtree(run / "plan")
    _user_folder(run / "plan")
    with pytest.raises(DynselError, match="plan: exists and is not a dynsel plan"):
        check_replaceable(run, RUN_KIND)


def test_cwd_inputs_and_their_parents_are_refused(pipeline_run: PipelineRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    (work / "deep").mkdir(parents=True)
    monkeypatch.chdir(work / "deep")
    with pytest.raises(DynselError, match="is the current directory"):
        check_output(Path("."), "dynsel.plan")
    with pytest.raises(DynselError, match="holds the current directory"):
        check_output(Path(".."), "dynsel.plan")
    factors = pipeline_run.factors
    with pytest.raises(DynselError, match="is an input"):
        check_output(factors, "dynsel.factors", inputs=[factors])
    with pytest.raises(DynselError, match="holds the input"):
        check_output(pipeline_run.out, RUN_KIND, inputs=[factors])
    with pytest.raises(DynselError, match="lies inside the input"):
        check_output(factors / "plan", "dynsel.plan", inputs=[factors])


def test_a_folder_that_appears_while_the_plan_computes_is_left_byte_identical(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    """The early check passed (nothing at --out); a user folder is created before the swap: the swap-time
    check refuses, the folder is untouched and no temporary is left."""
    out = tmp_path / "plan"
    created: list[dict[str, str]] = []

    def progress(task: str, done: int, total: int | None) -> None:
        if not created:
            created.append(tree_digests(_user_folder(out)))

    with pytest.raises(DynselError, match="not a dynsel plan"):
        build_plan(pipeline_run.factors, out, PlanConfig(epochs=2, ratio=0.5), progress)
    assert created and tree_digests(out) == created[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]


def test_force_replaces_another_kind_through_the_cli(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    target = tmp_path / "was-features"
    shutil.copytree(pipeline_run.features, target)
    refused = invoke("plan", pipeline_run.factors, "--out", target, "--epochs", "2")
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert artifact_kind(target) == "dynsel.features"
    forced = invoke("plan", pipeline_run.factors, "--out", target, "--epochs", "2", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert artifact_kind(target) == "dynsel.plan"
    again = invoke("plan", pipeline_run.factors, "--out", target, "--epochs", "3")  # same kind: no --force needed
    assert again.exit_code == 0, again.stderr


def test_report_html_replaces_its_own_page_but_not_a_user_file(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    first = invoke("report", pipeline_run.plan, "--html", page)
    assert first.exit_code == 0 and f"{page}" in first.stderr
    assert invoke("report", pipeline_run.plan, "--html", page).exit_code == 0
    user = tmp_path / "notes.html"
    user.write_text("<html>my notes</html>\n")
    refused = invoke("report", pipeline_run.plan, "--html", user)
    assert refused.exit_code == 2 and "not written by dynsel" in refused.stderr
    assert user.read_text() == "<html>my notes</html>\n"


def test_symlinks_and_dot_names_are_refused(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for path in (tmp_path / "link", tmp_path / "dangling"):
        with pytest.raises(DynselError, match="symbolic link"):
            check_output(path, "dynsel.plan")
    shutil.copytree(pipeline_run.plan, tmp_path / "a-plan")
    with pytest.raises(DynselError, match="does not name a directory"):
        check_output(tmp_path / "a-plan" / "missing" / "..", "dynsel.plan")
    assert not (tmp_path / "a-plan" / "missing").exists()
