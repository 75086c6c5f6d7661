"""`dynsel verify PLAN`: checksums, invariants, and provenance against factor tables and features.

Tampering that keeps the checksums consistent (an attacker or a buggy tool that also rewrites the
manifest) must still be caught by the invariant and provenance checks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import PipelineRun, invoke, write_features_dir
from dynsel_cli.formats.common import file_entry
from dynsel_cli.verify import verify_plan


def _copy_plan(run: PipelineRun, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run.plan, tmp_path / "plan"))


def _rewrite(plan: Path, name: str, data: bytes, manifest_changes: dict | None = None) -> None:
    """Replace one file and make the manifest agree with it (sizes, sha256), as a careful forger would."""
    (plan / name).write_bytes(data)
    manifest = json.loads((plan / "manifest.json").read_text())
    manifest["files"][name] = file_entry(plan / name)
    if name == "indices.bin":
        manifest["sha256"] = manifest["files"][name]["sha256"]
    manifest.update(manifest_changes or {})
    (plan / "manifest.json").write_text(json.dumps(manifest))


def _drop_copies(plan: Path) -> None:
    """Keep only the bin form, so that a forged indices.bin is judged by the invariants alone."""
    manifest = json.loads((plan / "manifest.json").read_text())
    for name in [n for n in manifest["files"] if n not in ("indices.bin", "offsets.bin")]:
        del manifest["files"][name]
    (plan / "manifest.json").write_text(json.dumps(manifest))


def _checks(result) -> dict[str, bool | None]:
    return {c.name: c.ok for c in result.checks}


def test_an_intact_plan_passes_every_check_and_is_reproduced(pipeline_run: PipelineRun) -> None:
    result = invoke("verify", pipeline_run.plan, "--factors", pipeline_run.factors, "--features", pipeline_run.features, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    assert names == ["checksums", "layout", "budget", "distinct", "steps", "copies", "inputs", "ids", "features", "ids", "reproduced"]
    assert all(c["ok"] is True for c in report["checks"])
    terminal = invoke("verify", pipeline_run.plan)
    assert terminal.exit_code == 0 and "error" not in terminal.stderr and terminal.stderr.count("ok ") == 6


def test_a_flipped_byte_fails_the_checksums_with_exit_2(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    data = bytearray((plan / "indices.bin").read_bytes())
    data[10] ^= 0x01
    (plan / "indices.bin").write_bytes(bytes(data))
    result = invoke("verify", plan)
    assert result.exit_code == 2
    assert "FAIL checksums" in result.stderr and "indices.bin: checksum mismatch" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error:") and "Traceback" not in result.stderr


def test_a_duplicated_id_with_forged_checksums_fails_distinct_and_reproduction(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    _drop_copies(plan)
    indices = np.fromfile(plan / "indices.bin", dtype="<u4")
    indices[1] = indices[0]  # epoch 0 now lists one id twice; the budget still holds
    _rewrite(plan, "indices.bin", indices.tobytes())
    checks = _checks(verify_plan(plan, factors=pipeline_run.factors))
    assert checks["checksums"] is True and checks["budget"] is True
    assert checks["distinct"] is False and checks["reproduced"] is False


def test_a_short_epoch_with_forged_offsets_fails_the_budget(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    _drop_copies(plan)
    manifest = json.loads((plan / "manifest.json").read_text())
    indices = np.fromfile(plan / "indices.bin", dtype="<u4")
    offsets = np.fromfile(plan / "offsets.bin", dtype="<u8")
    indices = np.delete(indices, 0)  # epoch 0 loses its first id
    offsets[1:] -= 1
    counts = [int(c) for c in np.diff(offsets)]
    _rewrite(plan, "indices.bin", indices.tobytes())
    _rewrite(plan, "offsets.bin", offsets.tobytes(), {"counts": counts, "total_selected": int(sum(counts))})
    result = verify_plan(plan)
    checks = _checks(result)
    assert checks["layout"] is True and checks["budget"] is False
    assert "epoch 0 holds" in next(c.detail for c in result.checks if c.name == "budget")
    assert manifest["budget"] == counts[1]


def test_an_edited_text_copy_fails_copies(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    lines = (plan / "epochs" / "epoch-0002.txt").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    _rewrite(plan, "epochs/epoch-0002.txt", ("\n".join(lines) + "\n").encode())
    result = verify_plan(plan)
    assert _checks(result)["copies"] is False
    assert "epoch-0002.txt differs from epoch 2" in next(c.detail for c in result.checks if c.name == "copies")


def test_a_plan_checked_against_other_factor_tables_or_features_fails_provenance(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    other = invoke("plan", pipeline_run.factors, "--out", tmp_path / "plan-seed1", "--epochs", "3", "--seed", "1")
    assert other.exit_code == 0, other.stderr
    factors = Path(shutil.copytree(pipeline_run.factors, tmp_path / "factors"))
    manifest = json.loads((factors / "manifest.json").read_text())
    manifest["fingerprint"] = "0" * 64  # the same rows under another identity: tables of another data set
    (factors / "manifest.json").write_text(json.dumps(manifest))
    checks = _checks(verify_plan(pipeline_run.plan, factors=factors))
    assert checks["inputs"] is False

    dim = json.loads((pipeline_run.features / "_manifest.json").read_text())["dim"]
    write_features_dir(tmp_path / "other", np.ones((5, dim), np.float32))
    checks = _checks(verify_plan(pipeline_run.plan, features=tmp_path / "other"))
    assert checks["features"] is False and checks["ids"] is False


def test_a_geometric_plan_without_features_skips_reproduction_but_passes(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    made = invoke("plan", pipeline_run.factors, "--out", tmp_path / "knn", "--epochs", "2", "--method", "knn-density", "--features", pipeline_run.features)
    assert made.exit_code == 0, made.stderr
    result = invoke("verify", tmp_path / "knn", "--factors", pipeline_run.factors)
    assert result.exit_code == 0, result.stderr
    assert "skip reproduced" in result.stderr and "needs --features" in result.stderr
    again = invoke("verify", tmp_path / "knn", "--factors", pipeline_run.factors, "--features", pipeline_run.features)
    assert again.exit_code == 0 and "ok   reproduced" in again.stderr


@pytest.mark.parametrize("missing", ["--factors", "--features"])
def test_unreadable_reference_artifacts_are_user_errors(pipeline_run: PipelineRun, tmp_path: Path, missing: str) -> None:
    result = invoke("verify", pipeline_run.plan, missing, tmp_path / "nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and "nope" in result.stderr and len(result.stderr.strip().splitlines()) == 1
