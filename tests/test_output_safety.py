"""Output safety: ``--out`` replaces only an artifact dynsel wrote, of the same kind (or another kind with
``--force``), holding nothing but the files its manifest lists, and never the current directory, an
input, or a folder holding one; and dynsel removes or moves only temporaries that carry its marker.

The one-line messages of each refusal are in the bad-input suite (tests/test_bad_inputs.py); this file
checks the rule itself and the race the early check cannot see: a folder appearing at the output path
while the stage computes is left byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import PipelineRun, assert_one_line_error, invoke, tree_digests

from dynsel_cli.config import PlanConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.formats import common
from dynsel_cli.formats.output import (
    KIND_NAMES,
    RUN_KIND,
    artifact_kind,
    check_output,
    check_replaceable,
    local_ownership,
)
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


def test_a_run_directory_is_replaceable_only_when_it_holds_stage_artifacts(
    pipeline_run: PipelineRun, tmp_path: Path
) -> None:
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


def test_cwd_inputs_and_their_parents_are_refused(
    pipeline_run: PipelineRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_a_folder_that_appears_while_the_plan_computes_is_left_byte_identical(
    pipeline_run: PipelineRun, tmp_path: Path
) -> None:
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


# ------------------------------------------------------ issue 21, item 4: what the user put inside an artifact


def test_an_artifact_holding_the_users_files_is_never_replaced(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    """A plan directory where the user added notes.txt and checkpoints/ used to be replaced, both deleted
    (the same content on S3 was refused)."""
    out = tmp_path / "plan"
    shutil.copytree(pipeline_run.plan, out)
    (out / "notes.txt").write_text("my thesis\n")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "step-100.pt").write_bytes(b"weights")
    before = tree_digests(out)
    for force in ((), ("--force",)):
        result = invoke("plan", pipeline_run.factors, "--out", out, "--epochs", "2", *force)
        assert result.exit_code == 2
        assert assert_one_line_error(result.stderr) == (
            f"error: {out}: holds files dynsel did not write ('checkpoints/step-100.pt', …); dynsel replaces only its own artifacts: choose a new --out or remove them yourself"
        )
    assert tree_digests(out) == before
    (out / "notes.txt").unlink()
    shutil.rmtree(out / "checkpoints")
    (out / "epochs-scratch").mkdir()  # an empty folder holds nothing to lose
    check_replaceable(out, "dynsel.plan")


def test_a_stub_manifest_does_not_make_a_folder_dynsels(tmp_path: Path, pipeline_run: PipelineRun) -> None:
    """`{"format": "dynsel.plan"}` beside results.csv used to be replaced, results.csv deleted."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "dynsel.plan"}\n')
    (out / "results.csv").write_text("a,b\n1,2\n")
    before = tree_digests(out)
    assert artifact_kind(out) is None
    for force in ((), ("--force",)):
        result = invoke("plan", pipeline_run.factors, "--out", out, "--epochs", "2", *force)
        assert result.exit_code == 2
        assert (
            assert_one_line_error(result.stderr)
            == f"error: {out}: exists and is not a dynsel plan; dynsel replaces only its own artifacts: choose a new --out or remove it yourself"
        )
    assert tree_digests(out) == before
    (out / "results.csv").unlink()  # the stub alone: still not dynsel's
    with pytest.raises(DynselError, match="not a dynsel plan"):
        check_replaceable(out, "dynsel.plan")


@pytest.mark.parametrize("artifact", ["features", "sae", "factors", "plan"])
def test_each_kind_lists_every_file_it_writes_and_a_copy_with_one_more_is_foreign(
    pipeline_run: PipelineRun, tmp_path: Path, artifact: str
) -> None:
    path = getattr(pipeline_run, artifact)
    kind = f"dynsel.{artifact}"
    found, owned = local_ownership(path)
    assert found == kind and owned == set(tree_digests(path)), (
        "the manifest and the files it lists are the whole artifact"
    )
    check_replaceable(path, kind)
    copy = tmp_path / artifact
    shutil.copytree(path, copy)
    (copy / "README").write_text("mine\n")
    with pytest.raises(DynselError, match=r"holds files dynsel did not write \('README'\)"):
        check_replaceable(copy, kind, force=True)
    manifest = copy / ("_manifest.json" if artifact == "features" else "manifest.json")
    value = json.loads(manifest.read_text())
    value.pop("fingerprint" if artifact != "plan" else "sha256")
    (copy / "README").unlink()
    manifest.write_text(json.dumps(value))
    with pytest.raises(DynselError, match=f"exists and is not a dynsel {KIND_NAMES[kind]}"):  # a required field missing
        check_replaceable(copy, kind)


def test_a_run_directory_whose_stage_holds_user_files_is_refused(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(pipeline_run.out, run)
    (run / "sae" / "notes.txt").write_text("mine\n")
    with pytest.raises(DynselError, match=r"sae: holds files dynsel did not write \('notes.txt'\)"):
        check_replaceable(run, RUN_KIND)


# ---------------------------------------------- issue 21, item 5: sibling folders named like dynsel's temporaries


def test_user_folders_named_like_temporaries_are_never_removed_or_moved(
    pipeline_run: PipelineRun, tmp_path: Path
) -> None:
    """`.NAME.old-2024/`, `.NAME.tmp-scratch/` beside `--out NAME` used to vanish, and a user's
    `.NAME.old-mine/artifact` to be moved into `NAME` when it was missing."""
    parent = tmp_path / "work"
    parent.mkdir()
    users = {}
    for name in (".plan.old-2024", ".plan.tmp-scratch", ".plan.old-mine", ".plan.tmp-0123456789abcdef"):
        folder = parent / name
        (folder / "artifact").mkdir(parents=True)
        (folder / "artifact" / "notes.txt").write_text(f"{name}\n")
        users[name] = tree_digests(folder)
    common.sweep_stale_temporaries(parent / "plan")  # `plan` missing: a parked version would be put back
    assert not (parent / "plan").exists()
    result = invoke("plan", pipeline_run.factors, "--out", parent / "plan", "--epochs", "2")
    assert result.exit_code == 0, result.stderr
    again = invoke("plan", pipeline_run.factors, "--out", parent / "plan", "--epochs", "3")
    assert again.exit_code == 0, again.stderr
    assert {name: tree_digests(parent / name) for name in users} == users
    assert sorted(p.name for p in parent.iterdir()) == sorted([*users, "plan"])


def test_a_killed_writers_temporaries_are_dynsels_and_are_cleaned(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    """What a killed run leaves (a marked temporary, or an empty one killed before its marker) is removed
    by the next write; a parked previous version is put back first."""
    parent = tmp_path / "work"
    shutil.copytree(pipeline_run.plan, parent / "parked")
    holder, fd = common._held_temporary(parent, ".plan.old-", "plan")
    os.close(fd)
    os.replace(parent / "parked", holder / "artifact")  # a two-rename replacement killed between its renames
    marked, fd = common._held_temporary(parent, ".plan.tmp-", "plan")
    os.close(fd)
    (marked / "artifact").mkdir()
    (marked / "artifact" / "indices.bin").write_bytes(b"half")
    empty = parent / ".plan.tmp-fedcba9876543210"
    empty.mkdir()
    assert (
        common.is_dynsel_temporary(holder)
        and common.is_dynsel_temporary(marked)
        and not common.is_dynsel_temporary(empty)
    )
    common.sweep_stale_temporaries(parent / "plan")
    assert sorted(p.name for p in parent.iterdir()) == ["plan"]
    assert tree_digests(parent / "plan") == tree_digests(pipeline_run.plan)


def test_a_live_writers_temporary_is_left_alone(tmp_path: Path) -> None:
    holder, fd = common._held_temporary(tmp_path, ".plan.tmp-", "plan")
    try:
        common.sweep_stale_temporaries(tmp_path / "plan")
        assert holder.is_dir() and common.is_dynsel_temporary(holder)
    finally:
        os.close(fd)
    common.sweep_stale_temporaries(tmp_path / "plan")
    assert not holder.exists()
