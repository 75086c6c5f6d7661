"""`dynsel verify PLAN`: checksums, invariants, and provenance against factor tables and features.

Tampering that keeps the checksums consistent (an attacker or a buggy tool that also rewrites the
manifest) must still be caught by the invariant and provenance checks.
"""

from __future__ import annotations

import json
import re
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
    """Keep only the bin form (as `--formats bin` writes it), so that a forged indices.bin is judged by the
    invariants alone: the txt / npy / parquet files go from the manifest and from the disk."""
    manifest = json.loads((plan / "manifest.json").read_text())
    for name in [
        n for n in manifest["files"] if n.startswith("epochs/") or n in ("indices.npy", "offsets.npy", "plan.parquet")
    ]:
        del manifest["files"][name]
        (plan / name).unlink()
    (plan / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(plan: Path, edit) -> None:
    manifest = json.loads((plan / "manifest.json").read_text())
    edit(manifest)
    (plan / "manifest.json").write_text(json.dumps(manifest))


def _other_ids(plan: Path) -> bytes:
    """indices.bin of the same size whose every epoch is another valid selection: the ids it left out."""
    manifest = json.loads((plan / "manifest.json").read_text())
    indices = np.fromfile(plan / "indices.bin", dtype="<u4")
    offsets = np.fromfile(plan / "offsets.bin", dtype="<u8")
    n = manifest["n_samples"]
    assert 2 * manifest["budget"] == n  # ratio 0.5: the complement of an epoch is a full budget
    forged = [np.setdiff1d(np.arange(n), indices[offsets[e] : offsets[e + 1]]) for e in range(len(offsets) - 1)]
    data = np.concatenate(forged).astype("<u4").tobytes()
    assert len(data) == (plan / "indices.bin").stat().st_size
    return data


def _checks(result) -> dict[str, bool | None]:
    return {c.name: c.ok for c in result.checks}


def test_an_intact_plan_passes_every_check_and_is_reproduced(pipeline_run: PipelineRun) -> None:
    result = invoke(
        "verify", pipeline_run.plan, "--factors", pipeline_run.factors, "--features", pipeline_run.features, "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "checksums",
        "layout",
        "budget",
        "distinct",
        "steps",
        "copies",
        "inputs",
        "ids",
        "features",
        "ids",
        "reproduced",
    ]
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


def test_a_duplicated_id_with_forged_checksums_fails_distinct_and_reproduction(
    pipeline_run: PipelineRun, tmp_path: Path
) -> None:
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


def test_a_plan_checked_against_other_factor_tables_or_features_fails_provenance(
    pipeline_run: PipelineRun, tmp_path: Path
) -> None:
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


def test_a_geometric_plan_without_features_fails_reproduction(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    made = invoke(
        "plan",
        pipeline_run.factors,
        "--out",
        tmp_path / "knn",
        "--epochs",
        "2",
        "--method",
        "knn-density",
        "--features",
        pipeline_run.features,
    )
    assert made.exit_code == 0, made.stderr
    result = invoke("verify", tmp_path / "knn", "--factors", pipeline_run.factors)
    assert result.exit_code == 2, result.stderr
    assert "FAIL reproduced" in result.stderr and "needs --features" in result.stderr and "skip" not in result.stderr
    again = invoke("verify", tmp_path / "knn", "--factors", pipeline_run.factors, "--features", pipeline_run.features)
    assert again.exit_code == 0 and "ok   reproduced" in again.stderr


@pytest.mark.parametrize("missing", ["--factors", "--features"])
def test_unreadable_reference_artifacts_are_user_errors(
    pipeline_run: PipelineRun, tmp_path: Path, missing: str
) -> None:
    result = invoke("verify", pipeline_run.plan, missing, tmp_path / "nope")
    assert result.exit_code == 2
    assert (
        result.stderr.startswith("error:") and "nope" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    )


@pytest.mark.parametrize("remove_files", [False, True], ids=["copies-left-on-disk", "copies-deleted"])
def test_a_swapped_indices_bin_dropped_from_the_manifest_fails(
    pipeline_run: PipelineRun, tmp_path: Path, remove_files: bool
) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    (plan / "indices.bin").write_bytes(_other_ids(plan))

    def unlist(manifest: dict) -> None:
        for name in [
            n for n in manifest["files"] if n == "indices.bin" or n.startswith("epochs/") or n == "plan.parquet"
        ]:
            del manifest["files"][name]
            if remove_files and name != "indices.bin":
                (plan / name).unlink()

    _edit_manifest(plan, unlist)
    result = invoke("verify", plan, "--factors", pipeline_run.factors, "--features", pipeline_run.features)
    assert result.exit_code == 2, result.stderr
    assert "FAIL checksums" in result.stderr and re.search(
        r"indices\.bin[^;]*: not listed in the manifest", result.stderr
    )
    assert "ok   reproduced" not in result.stderr


def test_a_swapped_indices_bin_with_a_consistent_manifest_is_not_reproduced(
    pipeline_run: PipelineRun, tmp_path: Path
) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    _drop_copies(plan)
    _rewrite(plan, "indices.bin", _other_ids(plan))
    result = invoke("verify", plan, "--factors", pipeline_run.factors, "--features", pipeline_run.features, "--json")
    assert result.exit_code == 2, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert all(
        checks[name]["ok"] for name in ("checksums", "layout", "budget", "distinct", "steps", "inputs", "features")
    )
    assert checks["reproduced"]["ok"] is False and "another epoch 0 than indices.bin" in checks["reproduced"]["detail"]


def test_a_listed_indices_bin_with_the_old_manifest_sha256_fails_checksums(
    pipeline_run: PipelineRun, tmp_path: Path
) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    _drop_copies(plan)
    (plan / "indices.bin").write_bytes(_other_ids(plan))
    _edit_manifest(
        plan, lambda m: m["files"].update({"indices.bin": file_entry(plan / "indices.bin")})
    )  # sha256 left as it was
    result = invoke("verify", plan, "--factors", pipeline_run.factors)
    assert result.exit_code == 2
    assert "FAIL checksums" in result.stderr and "manifest's sha256" in result.stderr


@pytest.mark.parametrize(
    "settings_edit, expected",
    [
        (lambda s: s.update(method="kcenter"), "method kcenter needs --features"),
        (lambda s: s.clear(), "records no settings"),
        (lambda s: s.update(method="oracle"), "unknown method 'oracle'"),
    ],
    ids=["kcenter", "no-settings", "unknown-method"],
)
def test_a_plan_verify_cannot_recompute_fails_reproduction(
    pipeline_run: PipelineRun, tmp_path: Path, settings_edit, expected: str
) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    _edit_manifest(plan, lambda m: settings_edit(m["settings"]))
    result = invoke("verify", plan, "--factors", pipeline_run.factors)
    assert result.exit_code == 2, result.stderr
    assert "FAIL reproduced" in result.stderr and expected in result.stderr and "skip" not in result.stderr


@pytest.mark.parametrize("name", ["offsets.bin", "epochs/epoch-0003.txt"])
def test_a_required_file_missing_with_its_entry_fails_checksums(
    pipeline_run: PipelineRun, tmp_path: Path, name: str
) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    (plan / name).unlink()
    _edit_manifest(plan, lambda m: m["files"].pop(name))
    result = invoke("verify", plan)
    assert result.exit_code == 2, result.stderr
    assert "FAIL checksums" in result.stderr and f"{Path(name).name}: missing" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error:")


def test_an_unlisted_text_copy_that_disagrees_with_indices_bin_fails(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    plan = _copy_plan(pipeline_run, tmp_path)
    text = plan / "epochs" / "epoch-0001.txt"
    text.write_text((plan / "epochs" / "epoch-0000.txt").read_text())
    _edit_manifest(plan, lambda m: [m["files"].pop(n) for n in list(m["files"]) if n.startswith("epochs/")])
    result = invoke("verify", plan)
    assert result.exit_code == 2, result.stderr
    assert "FAIL checksums" in result.stderr and re.search(
        r"epoch-0001\.txt[^;]*: not listed in the manifest", result.stderr
    )


def test_a_parquet_copy_in_another_order_fails_copies(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan = _copy_plan(pipeline_run, tmp_path)
    table = pq.read_table(plan / "plan.parquet")
    position = table.column("position").to_numpy().copy()
    position[[0, 1]] = position[[1, 0]]  # the rows' ids stay; their training order changes
    table = table.set_column(table.schema.get_field_index("position"), "position", pa.array(position))
    pq.write_table(table, plan / "plan.parquet")
    _rewrite(plan, "plan.parquet", (plan / "plan.parquet").read_bytes())
    result = invoke("verify", plan)
    assert result.exit_code == 2, result.stderr
    assert "FAIL copies" in result.stderr and "plan.parquet differs from indices.bin" in result.stderr
