"""Sources, inputs and ``--out`` on an object store (S3, served by moto on 127.0.0.1).

The module starts one ``moto.server`` that checks credentials (``INITIAL_NO_AUTH_ACTION_COUNT``: after the
IAM calls that make the test user, every request must be signed by a known key), so refused credentials
are real refusals. Commands run in-process (``invoke``) and, where the real process matters, as
subprocesses; both get the endpoint and credentials from the standard AWS environment variables.

Covered: the stage-by-stage round trip through S3 byte-compared with a local run; ``dynsel run`` to a run
prefix and its reruns; the publish protocol (its order of operations, and a crash after every single
step: a reader sees the old artifact, the new one, or none, never a manifest without its files); the
replacement rule; and the bad inputs of docs/reliability.md's "Object stores" table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, invoke, sparse_dictionary_data, subprocess_env, tree_digests

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

from dynsel_cli.errors import ArtifactError, DynselError  # noqa: E402
from dynsel_cli.formats import storage  # noqa: E402

BUCKET = "dynsel-test"
LOCKED = "dynsel-locked"  # its bucket policy denies every write
NO_DELETE = "dynsel-no-delete"  # its bucket policy denies deletes only
SAE_ARGS = ("--width", "32", "--k", "3", "--epochs", "3", "--device", "cpu")
PLAN_ARGS = ("--epochs", "4", "--ratio", "0.25")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"moto server exited with {process.returncode}")
        with socket.socket() as probe:  # a TCP connect is not a request: it does not use up the unauthenticated ones
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail("moto server did not start")


@pytest.fixture(scope="module")
def moto() -> Iterator[dict[str, str]]:
    """A moto S3 server that enforces credentials; yields the AWS environment of its one user."""
    port = _free_port()
    env = {
        **os.environ,
        "INITIAL_NO_AUTH_ACTION_COUNT": "3",
    }  # the three IAM calls below; then every request is checked
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port, process)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
            region_name="us-east-1",
        )
        iam.create_user(UserName="dynsel")
        allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="dynsel", PolicyName="s3", PolicyDocument=json.dumps(allow))
        key = iam.create_access_key(UserName="dynsel")["AccessKey"]
        aws = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        s3 = _client(aws)
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=LOCKED)
        deny = {
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": f"arn:aws:s3:::{LOCKED}/*",
        }
        s3.put_bucket_policy(Bucket=LOCKED, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]}))
        s3.create_bucket(Bucket=NO_DELETE)
        deny = {
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["s3:DeleteObject"],
            "Resource": f"arn:aws:s3:::{NO_DELETE}/*",
        }
        s3.put_bucket_policy(Bucket=NO_DELETE, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]}))
        yield aws
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _client(aws: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


@pytest.fixture()
def s3(moto: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The test's environment points at the moto server, with its own dynsel cache; yields a boto3 client."""
    for name, value in moto.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DYNSEL_CACHE", str(tmp_path / "cache"))
    return _client(moto)


def objects(s3: Any, prefix: str, bucket: str = BUCKET) -> dict[str, bytes]:
    """Every object under ``prefix`` (directory markers left out), by key relative to it, with its bytes."""
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/").get("Contents", [])
    keys = [o["Key"] for o in listing if not o["Key"].endswith("/")]
    return {key[len(prefix) + 1 :]: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def upload_dir(s3: Any, local: Path, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(local)}", Body=path.read_bytes())


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m dynsel_cli ARGS`` as a real process, with this process's (monkeypatched) environment."""
    return subprocess.run(
        [sys.executable, "-m", "dynsel_cli", *map(str, args)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(*args: str | Path) -> Any:
    result = invoke(*args)
    assert result.exit_code == 0, (args, result.stderr)
    return result


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("object-store") / "vectors.npz"
    np.savez(path, x=sparse_dictionary_data(120, 16, 32), y=np.arange(120) % 4)
    return path


@pytest.fixture(scope="module")
def local_run(vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stages run on local paths: what the object-store runs must reproduce byte for byte."""
    root = tmp_path_factory.mktemp("local-run")
    ok("extract", vectors, "--out", root / "features", "--device", "cpu")
    ok("fit-sae", root / "features", "--out", root / "sae", *SAE_ARGS)
    ok("factors", root / "features", "--sae", root / "sae", "--out", root / "factors", "--device", "cpu")
    ok("plan", root / "factors", "--out", root / "plan", *PLAN_ARGS)
    return root


def _without_source_path(manifest: bytes) -> dict[str, Any]:
    """A features manifest minus ``source.path`` (where the source was read from: differs by design)."""
    value = json.loads(manifest)
    value["source"].pop("path")
    return value


# ------------------------------------------------------------------------------------------ round trips


def test_stage_by_stage_through_s3_matches_a_local_run(s3: Any, vectors: Path, local_run: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="trip/data/vectors.npz", Body=vectors.read_bytes())
    root = f"s3://{BUCKET}/trip"
    extract = run_cli("extract", f"{root}/data/vectors.npz", "--out", f"{root}/features", "--device", "cpu")
    assert extract.returncode == 0, extract.stderr
    assert f"→ {root}/features" in extract.stderr
    ok("fit-sae", f"{root}/features", "--out", f"{root}/sae", *SAE_ARGS)
    ok("factors", f"{root}/features", "--sae", f"{root}/sae", "--out", f"{root}/factors", "--device", "cpu")
    ok("plan", f"{root}/factors", "--out", f"{root}/plan", *PLAN_ARGS)

    for artifact in ("features", "sae", "factors", "plan"):
        published = objects(s3, f"trip/{artifact}")
        local = {name: (local_run / artifact / name).read_bytes() for name in tree_digests(local_run / artifact)}
        assert set(published) == set(local), artifact
        for name, data in published.items():
            if name == "_manifest.json":  # the source as the user named it, not the local copy it was read from
                assert json.loads(data)["source"]["path"] == f"{root}/data/vectors.npz"
                assert _without_source_path(data) == _without_source_path(local[name])
            else:
                assert data == local[name], f"{artifact}/{name}"

    verify = invoke("verify", f"{root}/plan", "--factors", f"{root}/factors", "--json")
    assert verify.exit_code == 0, verify.stderr
    checks = json.loads(verify.stdout)
    assert checks["ok"] is True and checks["plan"] == f"{root}/plan"
    assert {c["name"] for c in checks["checks"] if c["ok"]} >= {"checksums", "layout", "budget", "inputs", "reproduced"}
    remote_report = json.loads(ok("report", f"{root}/plan", "--factors", f"{root}/factors", "--json").stdout)
    local_report = json.loads(ok("report", local_run / "plan", "--factors", local_run / "factors", "--json").stdout)
    assert remote_report.pop("path") == f"{root}/plan"
    local_report.pop("path")
    assert remote_report == local_report


def test_a_second_read_comes_from_the_cache(s3: Any, local_run: Path, tmp_path: Path) -> None:
    upload_dir(s3, local_run / "plan", "cached/plan")
    first = storage.fetch_artifact(f"s3://{BUCKET}/cached/plan", "dynsel.plan")
    assert tree_digests(first) == tree_digests(local_run / "plan")
    assert first.is_relative_to(tmp_path / "cache")
    s3.delete_object(Bucket=BUCKET, Key="cached/plan/indices.bin")  # not read again: the manifest pins the cached copy
    assert storage.fetch_artifact(f"s3://{BUCKET}/cached/plan", "dynsel.plan") == first


def test_run_to_a_prefix_publishes_every_stage_and_reruns_reuse_them(
    s3: Any, vectors: Path, local_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=BUCKET, Key="runs/data/vectors.npz", Body=vectors.read_bytes())
    args = (
        "run",
        f"s3://{BUCKET}/runs/data/vectors.npz",
        "--out",
        f"s3://{BUCKET}/runs/fm",
        "--width",
        "32",
        "--k",
        "3",
        "--sae-epochs",
        "3",
        "--device",
        "cpu",
        *PLAN_ARGS,
        "--json",
    )
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert [line for line in first.stderr.splitlines() if line.endswith(": built")] == [
        "extract: built",
        "fit-sae: built",
        "factors: built",
        "plan: built",
    ]
    assert (
        json.loads(first.stdout)["counts"] == [30] * 4
        and json.loads(first.stdout)["path"] == f"s3://{BUCKET}/runs/fm/plan"
    )
    for artifact in ("sae", "factors", "plan"):
        assert objects(s3, f"runs/fm/{artifact}") == {
            n: (local_run / artifact / n).read_bytes() for n in tree_digests(local_run / artifact)
        }

    again = run_cli(*args)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert "extract: up to date" in again.stderr and "plan: up to date" in again.stderr

    monkeypatch.setenv(
        "DYNSEL_CACHE", str(tmp_path / "another-machine")
    )  # nothing cached: what is published is fetched and reused
    changed = run_cli(*args[:-5], "--epochs", "4", "--ratio", "0.5", "--json")
    assert changed.returncode == 0, changed.stderr
    status = [line for line in changed.stderr.splitlines() if line.endswith((": built", ": up to date"))]
    assert status == ["extract: up to date", "fit-sae: up to date", "factors: up to date", "plan: built"]
    assert json.loads(objects(s3, "runs/fm/plan")["manifest.json"])["ratio"] == 0.5
    # the published plan of other settings was judged by its manifest, never downloaded
    fetched = sorted((tmp_path / "another-machine" / "artifacts").glob("*/*"))
    assert sorted(p.name for p in fetched) == ["factors", "features", "plan", "sae"]
    assert [json.loads((p / "manifest.json").read_text())["ratio"] for p in fetched if p.name == "plan"] == [0.5]


# ------------------------------------------------------------------------------------- the publish protocol


@pytest.fixture()
def two_plans(local_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The local run's plan (bin, txt, parquet) and a plan of other settings with other files (bin, npy)."""
    other = tmp_path / "other-plan"
    ok("plan", local_run / "factors", "--out", other, "--epochs", "3", "--ratio", "0.5", "--formats", "bin,npy")
    return local_run / "plan", other


def _published(where: str) -> dict[str, str] | None:
    """What a reader gets from ``where``: the artifact's file digests, or None when it refuses it."""
    try:
        return tree_digests(storage.fetch_artifact(where, "dynsel.plan"))
    except ArtifactError:
        return None


def test_publish_deletes_the_manifest_first_uploads_it_last_then_removes_stale_objects(
    s3: Any, two_plans: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = two_plans
    loc = storage.open_location(f"s3://{BUCKET}/order/plan")
    storage.publish_artifact(old, loc, "dynsel.plan")
    steps: list[tuple[str, str]] = []
    for name in ("write_object", "delete_object", "upload_file"):
        original = getattr(storage, name)

        def recorder(*args: Any, _name: str = name, _original: Any = original) -> None:
            steps.append((_name, args[2] if _name == "upload_file" else args[1]))
            _original(*args)

        monkeypatch.setattr(storage, name, recorder)
    storage.publish_artifact(new, loc, "dynsel.plan")

    new_files = set(json.loads((new / "manifest.json").read_text())["files"])
    stale = set(json.loads((old / "manifest.json").read_text())["files"]) - new_files
    assert steps[0][0] == "delete_object" and steps[0][1].startswith(
        storage.PROBE
    )  # the test object: written, then deleted
    steps = steps[1:]
    assert steps[0] == ("write_object", storage.MARKER)
    assert steps[1] == ("delete_object", "manifest.json")
    assert {s for s in steps[2 : 2 + len(new_files)]} == {("upload_file", f) for f in new_files}
    assert steps[2 + len(new_files)] == ("write_object", "manifest.json")
    assert {s for s in steps[3 + len(new_files) : -1]} == {("delete_object", f) for f in stale}
    assert steps[-1] == ("delete_object", storage.MARKER)
    assert objects(s3, "order/plan") == {n: (new / n).read_bytes() for n in tree_digests(new)}


def test_a_crash_after_any_step_never_shows_a_manifest_without_its_files(
    s3: Any, two_plans: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Publish a plan over another and stop the process at each write or delete in turn; after each stop, a
    fresh reader gets the old plan, the new one, or a refusal; then a rerun publishes the new plan exactly."""
    old, new = two_plans
    monkeypatch.setattr(storage, "_WORKERS", 1)  # one step at a time, so "stopped at step k" is one state
    states = {"old": tree_digests(old), "new": tree_digests(new)}
    new_files = json.loads((new / "manifest.json").read_text())["files"]
    seen: list[str] = []
    for step in range(1, 40):
        where = f"s3://{BUCKET}/crash-{step}/plan"
        loc = storage.open_location(where)
        storage.publish_artifact(old, loc, "dynsel.plan")
        calls = {"n": 0}
        with pytest.MonkeyPatch.context() as crash:
            for name in ("write_object", "delete_object", "upload_file"):

                def stop_at_step(*args: Any, _original: Any = getattr(storage, name)) -> None:
                    calls["n"] += 1  # noqa: B023 (one counter shared by every patched call)
                    if calls["n"] == step:  # noqa: B023
                        raise KeyboardInterrupt  # the process dies here: nothing after this step happens
                    _original(*args)

                crash.setattr(storage, name, stop_at_step)
            try:
                storage.publish_artifact(new, loc, "dynsel.plan")
                finished = True
            except KeyboardInterrupt:
                finished = False
        monkeypatch.setenv("DYNSEL_CACHE", str(tmp_path / f"reader-{step}"))  # a fresh reader: no cached copy
        found = _published(where)
        state = next(
            (name for name, digests in states.items() if digests == found), "refused" if found is None else "mixed"
        )
        assert state != "mixed", f"stopped at step {step}: a reader saw a mixture of the two plans"
        if state == "refused":
            left = objects(s3, f"crash-{step}/plan")
            assert "manifest.json" not in left and storage.MARKER in left
        seen.append(state)
        storage.publish_artifact(new, loc, "dynsel.plan")  # the rerun replaces whatever the stop left
        assert objects(s3, f"crash-{step}/plan") == {n: (new / n).read_bytes() for n in states["new"]}
        if finished:
            break
    assert finished
    # steps: the test object's delete, marker, delete the old manifest, one upload per file, the new
    # manifest, stale deletes, marker delete
    assert seen[:3] == ["old"] * 3 and seen[3 : 4 + len(new_files)] == ["refused"] * (len(new_files) + 1)
    assert set(seen[4 + len(new_files) :]) == {"new"}


# -------------------------------------------------------------------------------------- replacement rules


def test_out_replaces_an_artifact_of_its_kind_and_another_kind_only_with_force(s3: Any, local_run: Path) -> None:
    upload_dir(s3, local_run / "features", "rules/feats")
    refused = invoke("plan", local_run / "factors", "--out", f"s3://{BUCKET}/rules/feats", *PLAN_ARGS)
    assert refused.exit_code == 2
    assert assert_one_line_error(refused.stderr) == BAD_INPUTS["out-other-kind"]
    assert set(objects(s3, "rules/feats")) == {"_manifest.json", "part-00000.parquet"}
    ok("plan", local_run / "factors", "--out", f"s3://{BUCKET}/rules/feats", *PLAN_ARGS, "--force")
    assert objects(s3, "rules/feats") == {
        n: (local_run / "plan" / n).read_bytes() for n in tree_digests(local_run / "plan")
    }
    ok(
        "plan",
        local_run / "factors",
        "--out",
        f"s3://{BUCKET}/rules/feats",
        "--epochs",
        "2",
        "--ratio",
        "0.5",
        "--formats",
        "bin",
    )
    assert set(objects(s3, "rules/feats")) == {"manifest.json", "indices.bin", "offsets.bin", "signals.parquet"}


def test_out_never_replaces_an_artifact_prefix_holding_objects_dynsel_did_not_write(s3: Any, local_run: Path) -> None:
    upload_dir(s3, local_run / "plan", "foreign/plan")
    s3.put_object(Bucket=BUCKET, Key="foreign/plan/notes.txt", Body=b"my thesis\n")
    before = objects(s3, "foreign")
    for force in ((), ("--force",)):
        result = invoke("plan", local_run / "factors", "--out", f"s3://{BUCKET}/foreign/plan", *PLAN_ARGS, *force)
        assert result.exit_code == 2
        assert assert_one_line_error(result.stderr) == BAD_INPUTS["out-foreign-objects"]
    assert objects(s3, "foreign") == before


def test_run_never_writes_into_a_prefix_holding_objects_dynsel_did_not_write(
    s3: Any, local_run: Path, vectors: Path
) -> None:
    upload_dir(s3, local_run / "plan", "user-run/plan")
    s3.put_object(Bucket=BUCKET, Key="user-run/notes.txt", Body=b"my thesis\n")
    before = objects(s3, "user-run")
    for force in ((), ("--force",)):
        result = invoke("run", vectors, "--out", f"s3://{BUCKET}/user-run", *force)
        assert result.exit_code == 2
        assert assert_one_line_error(result.stderr) == BAD_INPUTS["run-out-foreign-objects"]
    assert objects(s3, "user-run") == before


def test_out_may_not_be_an_input(s3: Any, local_run: Path) -> None:
    upload_dir(s3, local_run / "factors", "self/factors")
    result = invoke(
        "plan", f"s3://{BUCKET}/self/factors", "--out", f"s3://{BUCKET}/self/factors", *PLAN_ARGS, "--force"
    )
    assert result.exit_code == 2
    assert assert_one_line_error(result.stderr) == BAD_INPUTS["out-is-input"]


# ------------------------------------------------------------------------------------------- bad inputs

# docs/reliability.md, "Object stores", shows these lines.
BAD_INPUTS = {
    "no-such-bucket": "error: s3://no-such-bucket-here/plan: the bucket 'no-such-bucket-here' does not exist; create it or fix the URI",
    "unknown-access-key": "error: s3://dynsel-test/bad/plan: the object store refused the credentials (unknown access key); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    "wrong-secret-key": "error: s3://dynsel-test/bad/plan: the object store refused the credentials (wrong secret key); check AWS_SECRET_ACCESS_KEY",
    "write-denied": "error: s3://dynsel-locked/plan: access denied while writing a test object; check the credentials' permissions and the bucket policy",
    "connection-refused": "error: s3://dynsel-test/bad/plan: cannot connect to the object store; check the endpoint (AWS_ENDPOINT_URL or ?endpoint_override=) and the network",
    "whole-bucket": "error: s3://dynsel-test: names a whole bucket; add a prefix for the artifact (e.g. s3://dynsel-test/run)",
    "input-not-published": "error: s3://dynsel-test/bad/empty: no manifest.json, so not a published dynsel factor tables directory (or its publishing was interrupted: rerun the command that writes it)",
    "input-other-kind": "error: s3://dynsel-test/bad/sae: not a dynsel factor tables directory (format 'dynsel.sae', expected 'dynsel.factors')",
    "input-tampered": "error: s3://dynsel-test/bad/factors/samples.parquet: checksum mismatch (modified, truncated, or being replaced right now); rerun, or rebuild the factor tables directory",
    "source-missing": "error: s3://dynsel-test/bad/nope.npz: no such object or prefix; pass the data set to read",
    "out-other-kind": "error: s3://dynsel-test/rules/feats: holds a dynsel features directory, not a plan; choose another --out, or pass --force to replace it",
    "out-foreign-objects": "error: s3://dynsel-test/foreign/plan: holds objects dynsel did not write ('notes.txt'); dynsel replaces only its own artifacts: choose a new --out or remove them yourself",
    "run-out-foreign-objects": "error: s3://dynsel-test/user-run: exists and is not a dynsel run prefix (it holds 'notes.txt'); dynsel replaces only its own artifacts: choose a new --out",
    "out-is-input": "error: s3://dynsel-test/self/factors: is an input of this command; choose another --out",
    "delete-denied": "error: s3://dynsel-no-delete/plan: access denied while deleting a test object; check the credentials' permissions and the bucket policy",
    "out-malformed-manifest": "error: s3://dynsel-test/malformed/out/manifest.json: malformed manifest ('shards' must give every file's bytes and sha256); not a usable dynsel features directory",
    "input-malformed-manifest": "error: s3://dynsel-test/malformed/in: malformed manifest ('files' must give every file's bytes and sha256); not a usable dynsel plan",
    "source-changed": "error: s3://dynsel-test/changing/data.npz: changed while downloading; rerun",
    "out-busy": "error: another dynsel command is writing s3://dynsel-test/busy/plan; wait for it",
    "uri-dot-segments": "error: s3://dynsel-test/x/../ud: has a '..' segment in its path, which dynsel does not resolve (an object store reads keys literally); write it as s3://dynsel-test/ud",
    "uri-empty-segment": "error: s3://dynsel-test//ud2: has an empty segment ('//') in its path, which dynsel does not resolve (an object store reads keys literally); write it as s3://dynsel-test/ud2",
    "uri-above-the-bucket": "error: s3://dynsel-test/../other/fac: has a '..' segment in its path, which dynsel does not resolve (an object store reads keys literally); write the path without them",
}


def _bad(case: str, args: list[str | Path], s3: Any) -> None:
    before = {bucket: _all(s3, bucket) for bucket in (BUCKET, LOCKED)}
    result = invoke(*args)
    assert result.exit_code == 2, (case, result.stderr)
    assert assert_one_line_error(result.stderr) == BAD_INPUTS[case]
    assert {bucket: _all(s3, bucket) for bucket in (BUCKET, LOCKED)} == before, f"{case}: the object store was changed"


def _all(s3: Any, bucket: str) -> dict[str, str]:
    return {
        o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if not o["Key"].endswith("/")
    }


def test_bad_outputs_exit_2_with_one_line_and_write_nothing(
    s3: Any, local_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = [local_run / "factors", *PLAN_ARGS]
    _bad("no-such-bucket", ["plan", *plan, "--out", "s3://no-such-bucket-here/plan"], s3)
    _bad("write-denied", ["plan", *plan, "--out", f"s3://{LOCKED}/plan"], s3)
    _bad("whole-bucket", ["run", local_run / "missing.npz", "--out", f"s3://{BUCKET}"], s3)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    _bad("wrong-secret-key", ["plan", *plan, "--out", f"s3://{BUCKET}/bad/plan"], s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    _bad("unknown-access-key", ["plan", *plan, "--out", f"s3://{BUCKET}/bad/plan"], s3)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    _bad("connection-refused", ["plan", *plan, "--out", f"s3://{BUCKET}/bad/plan"], s3)


def test_bad_remote_inputs_exit_2_with_one_line(s3: Any, local_run: Path, tmp_path: Path) -> None:
    upload_dir(s3, local_run / "sae", "bad/sae")
    upload_dir(s3, local_run / "factors", "bad/factors")
    s3.put_object(Bucket=BUCKET, Key="bad/factors/samples.parquet", Body=b"truncated")
    s3.put_object(Bucket=BUCKET, Key="bad/empty/readme.txt", Body=b"nothing here")
    out = tmp_path / "plan"
    _bad("input-not-published", ["plan", f"s3://{BUCKET}/bad/empty", "--out", out, *PLAN_ARGS], s3)
    _bad("input-other-kind", ["plan", f"s3://{BUCKET}/bad/sae", "--out", out, *PLAN_ARGS], s3)
    _bad("input-tampered", ["plan", f"s3://{BUCKET}/bad/factors", "--out", out, *PLAN_ARGS], s3)
    _bad("source-missing", ["extract", f"s3://{BUCKET}/bad/nope.npz", "--out", out], s3)
    assert not out.exists()


def test_the_docs_show_every_object_store_error() -> None:
    doc = (REPO / "docs" / "reliability.md").read_text()
    for case, line in BAD_INPUTS.items():
        assert f"`{case}`" in doc and f"`{line}`" in doc, case


# ------------------------------------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("location", "uri"),
    [
        ("s3://bucket/run", True),
        ("gs://b/x", True),
        ("runs/fm", False),
        ("C:\\runs", False),
        ("/abs/path", False),
        ("s3:/one-slash", False),
    ],
)
def test_is_uri(location: str, uri: bool) -> None:
    assert storage.is_uri(location) is uri
    assert storage.is_uri(Path("runs/fm")) is False


def test_messages_never_show_credentials_or_the_query() -> None:
    assert (
        storage.shown("s3://KEY:SECRET@bucket/run/?endpoint_override=127.0.0.1:9000&scheme=http") == "s3://bucket/run"
    )
    assert storage.describe("s3://KEY:SECRET@bucket/run?region=eu-west-1") == "s3://bucket/run"
    assert storage.describe("runs/fm/") == "runs/fm"


def test_a_source_folder_is_fetched_once_and_again_when_it_changes(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="folder/images/a/1.txt", Body=b"one")
    s3.put_object(Bucket=BUCKET, Key="folder/images/b/2.txt", Body=b"two")
    first = storage.fetch_source(f"s3://{BUCKET}/folder/images")
    assert first.name == "images" and tree_digests(first).keys() == {"a/1.txt", "b/2.txt"}
    assert (first / "b" / "2.txt").read_bytes() == b"two"
    assert storage.fetch_source(f"s3://{BUCKET}/folder/images") == first
    s3.put_object(Bucket=BUCKET, Key="folder/images/b/2.txt", Body=b"TWO!")
    second = storage.fetch_source(f"s3://{BUCKET}/folder/images")
    assert second != first and (second / "b" / "2.txt").read_bytes() == b"TWO!"


def test_query_parameters_set_the_endpoint(
    s3: Any, moto: dict[str, str], local_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    host = moto["AWS_ENDPOINT_URL"].removeprefix("http://")
    ok(
        "plan",
        local_run / "factors",
        "--out",
        f"s3://{BUCKET}/query/plan?endpoint_override={host}&scheme=http",
        *PLAN_ARGS,
    )
    assert set(objects(s3, "query/plan")) == set(tree_digests(local_run / "plan"))


def test_a_failed_command_publishes_nothing(s3: Any, local_run: Path) -> None:
    result = invoke(
        "plan", local_run / "factors", "--out", f"s3://{BUCKET}/failed/plan", "--epochs", "4", "--ratio", "0"
    )
    assert result.exit_code == 2
    assert objects(s3, "failed/plan") == {}
    with pytest.raises(DynselError, match="no manifest.json"):
        storage.fetch_artifact(f"s3://{BUCKET}/failed/plan", "dynsel.plan")


# ------------------------------------------------------------------------- review fixes: reading sources


def _same_second_overwrite(s3: Any, key: str, old: bytes, new: bytes) -> tuple[Path, Path]:
    """Write ``old``, fetch it, overwrite it with ``new`` of the same size within the same second (the
    store's mtime resolution), fetch again; the two cache paths."""
    for attempt in range(5):
        name = f"{key}-{attempt}"
        s3.put_object(Bucket=BUCKET, Key=name, Body=old)
        first = storage.fetch_source(f"s3://{BUCKET}/{name}")
        before = s3.head_object(Bucket=BUCKET, Key=name)["LastModified"]
        s3.put_object(Bucket=BUCKET, Key=name, Body=new)
        if s3.head_object(Bucket=BUCKET, Key=name)["LastModified"] == before:
            return first, storage.fetch_source(f"s3://{BUCKET}/{name}")
    pytest.skip("could not overwrite an object within one second")


def test_a_source_replaced_within_the_same_second_is_fetched_again(s3: Any) -> None:
    first, second = _same_second_overwrite(s3, "racy/data.bin", b"old!", b"new!")
    assert second == first  # the same key: same name, size and (whole-second) mtime
    assert second.read_bytes() == b"new!"


def test_a_source_fetched_a_second_after_its_last_change_is_reused(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="settled/data.bin", Body=b"data")
    time.sleep(1.1)
    first = storage.fetch_source(f"s3://{BUCKET}/settled/data.bin")
    inode = first.stat().st_ino
    again = storage.fetch_source(f"s3://{BUCKET}/settled/data.bin")
    assert again == first and again.stat().st_ino == inode and again.read_bytes() == b"data"


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_source_changed_while_downloading_is_refused(
    s3: Any, vectors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    s3.put_object(Bucket=BUCKET, Key="changing/data.npz", Body=vectors.read_bytes())
    original = storage._download

    def download_then_change(loc: Any, name: str, target: Path) -> tuple[int, str]:
        found = original(loc, name, target)
        if change == "replaced":
            s3.put_object(Bucket=BUCKET, Key="changing/data.npz", Body=vectors.read_bytes() + b"more")
        else:
            s3.delete_object(Bucket=BUCKET, Key="changing/data.npz")
        return found

    monkeypatch.setattr(storage, "_download", download_then_change)
    result = invoke("extract", f"s3://{BUCKET}/changing/data.npz", "--out", tmp_path / "features", "--device", "cpu")
    assert result.exit_code == 2
    assert assert_one_line_error(result.stderr) == BAD_INPUTS["source-changed"]
    assert not (tmp_path / "features").exists() and not list((tmp_path / "cache" / "sources").rglob("data.npz"))


def test_an_object_of_a_source_folder_deleted_while_downloading_is_refused(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.txt", "b.txt"):
        s3.put_object(Bucket=BUCKET, Key=f"vanishing/images/{name}", Body=name.encode())
    original = storage._download

    def delete_first(loc: Any, name: str, target: Path) -> tuple[int, str]:
        s3.delete_object(Bucket=BUCKET, Key=f"vanishing/images/{name}")
        return original(loc, name, target)

    monkeypatch.setattr(storage, "_download", delete_first)
    with pytest.raises(
        DynselError, match=r"^s3://dynsel-test/vanishing/images/[ab]\.txt: changed while downloading; rerun$"
    ):
        storage.fetch_source(f"s3://{BUCKET}/vanishing/images")


# ------------------------------------------------------------------------------- review fixes: writing


def test_an_interrupted_publish_says_the_prefix_may_stay_unpublished(
    s3: Any, local_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "publish_artifact", interrupted)
    result = invoke("plan", local_run / "factors", "--out", f"s3://{BUCKET}/interrupted/plan", *PLAN_ARGS)
    assert result.exit_code == 130
    assert " ".join(result.stderr.split()).endswith(
        f"interrupted; s3://{BUCKET}/interrupted/plan is unchanged or, if publishing had begun, the prefix stays unpublished "
        "until you rerun the command (resumable work, if any, is kept in the dynsel cache)"
    )
    assert "no output was written or changed" not in result.stderr


def test_the_first_failure_of_parallel_work_cancels_what_has_not_started() -> None:
    started: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        with lock:
            started.append(name)
        if name == "001":
            raise ValueError("the second one fails")
        time.sleep(0.5 if name == "000" else 0.05)  # the first is slow: its failing neighbour must not wait for it

    with pytest.raises(ValueError, match="the second one fails"):
        storage._each(work, [f"{i:03d}" for i in range(200)])
    assert len(started) <= 2 * storage._WORKERS


def test_a_leftover_test_object_is_dynsels_own_and_is_removed(s3: Any, local_run: Path, vectors: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="leftover/plan/.dynsel-write-check-999", Body=b"")
    ok("plan", local_run / "factors", "--out", f"s3://{BUCKET}/leftover/plan", *PLAN_ARGS)
    assert objects(s3, "leftover/plan") == {
        n: (local_run / "plan" / n).read_bytes() for n in tree_digests(local_run / "plan")
    }
    s3.put_object(Bucket=BUCKET, Key="leftover-run/.dynsel-write-check-999", Body=b"")
    upload_dir(s3, local_run / "plan", "leftover-run/plan")
    loc = storage.open_location(f"s3://{BUCKET}/leftover-run")
    present = storage.check_remote_output(loc, "dynsel.run")
    storage.check_writable(loc, present)
    assert ".dynsel-write-check-999" not in objects(s3, "leftover-run")


def test_a_bucket_that_denies_deletes_is_found_by_the_test_object(s3: Any, local_run: Path) -> None:
    result = invoke("plan", local_run / "factors", "--out", f"s3://{NO_DELETE}/plan", *PLAN_ARGS)
    assert result.exit_code == 2
    assert assert_one_line_error(result.stderr) == BAD_INPUTS["delete-denied"]
    assert "manifest.json" not in objects(s3, "plan", bucket=NO_DELETE)


def test_directory_markers_are_not_objects_dynsel_must_own(s3: Any, local_run: Path) -> None:
    """pyarrow leaves an empty ``KEY/`` object when it deletes the last object under a prefix (the test
    object does that to an empty prefix); such markers never make a prefix foreign."""
    loc = storage.open_location(f"s3://{BUCKET}/markers/new/plan")
    storage.check_writable(loc)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="markers/new/").get("Contents", [])] == [
        "markers/new/plan/"
    ]
    for key in ("markers/run/", "markers/run/plan/", "markers/run/plan/epochs/", "markers/run/notes/"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"")
    ok("plan", local_run / "factors", "--out", f"s3://{BUCKET}/markers/new/plan", *PLAN_ARGS)
    ok("plan", local_run / "factors", "--out", f"s3://{BUCKET}/markers/run/plan", *PLAN_ARGS)
    assert storage.check_remote_output(storage.open_location(f"s3://{BUCKET}/markers/run"), "dynsel.run") == set(
        objects(s3, "markers/run")
    )


def test_run_refuses_bad_settings_before_touching_the_bucket(s3: Any, vectors: Path) -> None:
    result = invoke("run", vectors, "--out", "s3://no-such-bucket-here/run", "--ratio", "0")
    assert result.exit_code == 2
    assert assert_one_line_error(result.stderr) == "error: --ratio 0.0: must be in (0, 1]"


def test_malformed_manifests_exit_2_with_one_line(s3: Any, local_run: Path, tmp_path: Path) -> None:
    s3.put_object(
        Bucket=BUCKET,
        Key="malformed/out/manifest.json",
        Body=json.dumps({"format": "dynsel.features", "shards": [1]}).encode(),
    )
    s3.put_object(
        Bucket=BUCKET,
        Key="malformed/in/manifest.json",
        Body=json.dumps({"format": "dynsel.plan", "format_version": 1, "files": {"a": "x"}}).encode(),
    )
    s3.put_object(Bucket=BUCKET, Key="malformed/in/a", Body=b"x")
    _bad(
        "out-malformed-manifest",
        ["plan", local_run / "factors", "--out", f"s3://{BUCKET}/malformed/out", *PLAN_ARGS, "--force"],
        s3,
    )
    _bad("input-malformed-manifest", ["report", f"s3://{BUCKET}/malformed/in"], s3)


def test_a_staged_file_gone_before_publishing_is_found_before_anything_is_touched(
    s3: Any, two_plans: tuple[Path, Path], tmp_path: Path
) -> None:
    """Item 2 of issue 21: a publish whose staged copy is incomplete used to delete the old manifest first."""
    old, new = two_plans
    loc = storage.open_location(f"s3://{BUCKET}/gone/plan")
    storage.publish_artifact(old, loc, "dynsel.plan")
    before = objects(s3, "gone/plan")
    staged = tmp_path / "plan"
    staged.mkdir()
    (staged / "manifest.json").write_bytes((new / "manifest.json").read_bytes())
    with pytest.raises(
        DynselError,
        match=r"^s3://dynsel-test/gone/plan: the staged plan lacks '\S+' or it changed after it was built, so nothing at s3://dynsel-test/gone/plan was changed; rerun the command$",
    ):
        storage.publish_artifact(staged, loc, "dynsel.plan")
    assert objects(s3, "gone/plan") == before
    assert _published(f"s3://{BUCKET}/gone/plan") == tree_digests(old)


def _network_dies_at(monkeypatch: pytest.MonkeyPatch, function: str, when: Callable[[tuple[Any, ...]], bool]) -> None:
    """From the first call of ``storage.FUNCTION`` for which ``when(args)`` holds, the store is unreachable."""
    original = getattr(storage, function)

    def failing(*args: Any) -> Any:
        if when(args):
            raise storage._failure(
                OSError("AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 7"),
                args[1] if function == "upload_file" else args[0],
                "uploading",
            )
        return original(*args)

    monkeypatch.setattr(storage, function, failing)


def test_a_publish_that_fails_half_way_says_the_previous_artifact_was_unpublished(
    s3: Any, local_run: Path, two_plans: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 2 of issue 21: the network dies after the old manifest was deleted; the line says so, and a rerun completes the publish."""
    old, _ = two_plans
    uri = f"s3://{BUCKET}/half-way/plan"
    storage.publish_artifact(old, storage.open_location(uri), "dynsel.plan")
    with monkeypatch.context() as network:
        _network_dies_at(network, "upload_file", lambda args: True)
        failed = invoke("plan", local_run / "factors", "--out", uri, "--epochs", "3", "--ratio", "0.5")
    assert failed.exit_code == 2
    line = assert_one_line_error(failed.stderr, only_line=False)
    assert line.startswith(
        f"error: {uri}: publishing failed ({uri}: cannot connect to the object store; check the endpoint"
    )
    assert line.endswith(
        f"the previous artifact at {uri} was unpublished (its manifest deleted) and nothing is published there until a rerun of the command completes the publish"
    )
    assert "manifest.json" not in objects(s3, "half-way/plan")
    ok("plan", local_run / "factors", "--out", uri, "--epochs", "3", "--ratio", "0.5")
    assert json.loads(objects(s3, "half-way/plan")["manifest.json"])["ratio"] == 0.5
    assert _published(uri) is not None


def test_a_publish_refused_before_the_point_of_no_return_leaves_the_previous_artifact(
    s3: Any, local_run: Path, two_plans: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes denied after the command started (a policy changed): the test object at publish time finds it
    before anything of the old artifact is touched; a failure writing the marker touches nothing either."""
    old, _ = two_plans
    bucket = "dynsel-revoked"
    s3.create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/plan"
    storage.publish_artifact(old, storage.open_location(uri), "dynsel.plan")
    before = objects(s3, "plan", bucket=bucket)
    original = storage.publish_artifact

    def revoke_then_publish(*args: Any, **kwargs: Any) -> bytes:
        deny = {"Effect": "Deny", "Principal": "*", "Action": ["s3:PutObject"], "Resource": f"arn:aws:s3:::{bucket}/*"}
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]}))
        return original(*args, **kwargs)

    try:
        with monkeypatch.context() as patch:
            patch.setattr(storage, "publish_artifact", revoke_then_publish)
            result = invoke("plan", local_run / "factors", "--out", uri, "--epochs", "3", "--ratio", "0.5")
        assert result.exit_code == 2
        assert (
            assert_one_line_error(result.stderr, only_line=False)
            == f"error: {uri}: access denied while writing a test object; check the credentials' permissions and the bucket policy"
        )
        assert objects(s3, "plan", bucket=bucket) == before
    finally:
        s3.delete_bucket_policy(Bucket=bucket)
    with monkeypatch.context() as network:
        _network_dies_at(network, "write_object", lambda args: args[1] == storage.MARKER)
        result = invoke("plan", local_run / "factors", "--out", uri, "--epochs", "3", "--ratio", "0.5")
    assert result.exit_code == 2
    assert objects(s3, "plan", bucket=bucket) == before
    assert _published(uri) == tree_digests(old)


def test_a_failed_clean_up_after_the_new_manifest_says_the_new_artifact_is_published(
    s3: Any, two_plans: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = two_plans
    uri = f"s3://{BUCKET}/clean-up/plan"
    loc = storage.open_location(uri)
    storage.publish_artifact(old, loc, "dynsel.plan")
    with monkeypatch.context() as network:
        _network_dies_at(network, "delete_object", lambda args: args[1] == storage.MARKER)
        with pytest.raises(
            DynselError,
            match=rf"^{uri}: the new plan is published, but removing the objects of the previous one failed \(.*\); rerun the command to remove them$",
        ):
            storage.publish_artifact(new, loc, "dynsel.plan")
    assert _published(uri) == tree_digests(new)
    storage.publish_artifact(new, loc, "dynsel.plan")
    assert objects(s3, "clean-up/plan") == {n: (new / n).read_bytes() for n in tree_digests(new)}


def test_a_staged_file_gone_during_its_upload_says_the_previous_artifact_was_unpublished(
    s3: Any, two_plans: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = two_plans
    uri = f"s3://{BUCKET}/gone-late/plan"
    loc = storage.open_location(uri)
    storage.publish_artifact(old, loc, "dynsel.plan")
    staged = tmp_path / "plan"
    shutil.copytree(new, staged)
    original = storage.upload_file

    def vanish(source: Path, *args: Any) -> None:
        source.unlink(missing_ok=True)  # the staged file goes away after the checks
        original(source, *args)

    monkeypatch.setattr(storage, "upload_file", vanish)
    with pytest.raises(
        DynselError,
        match=rf"^{uri}: publishing failed \({uri}/\S+: uploading failed \(.*\); rerun the command\); the previous artifact at {uri} was unpublished",
    ):
        storage.publish_artifact(staged, loc, "dynsel.plan")


def test_the_user_part_of_a_host_is_kept_unless_it_carries_a_password() -> None:
    from dynsel_cli.formats.output import check_not_input

    a, b = "abfs://containerA@acct.dfs.core.windows.net/run", "abfs://containerB@acct.dfs.core.windows.net/run"
    assert storage.shown(a) == a and storage.shown(b) == b
    assert storage.shown("s3://KEY:SECRET@bucket/run") == "s3://bucket/run"
    assert storage.staging_dir(storage.Location(None, "acct/run", storage.shown(a))) != storage.staging_dir(
        storage.Location(None, "acct/run", storage.shown(b))
    )
    check_not_input(
        storage.shown(a), [storage.shown(b)], "--out", resolve=PurePosixPath
    )  # two containers are two places
    with pytest.raises(DynselError, match="is an input"):
        check_not_input(storage.shown(a), [storage.shown(a)], "--out", resolve=PurePosixPath)


def test_a_second_writer_to_the_same_out_is_refused(s3: Any, local_run: Path, tmp_path: Path) -> None:
    loc = storage.open_location(f"s3://{BUCKET}/busy/plan")
    with storage._writer_lock(storage.staging_dir(loc).parent, loc.uri):
        result = invoke("plan", local_run / "factors", "--out", f"s3://{BUCKET}/busy/plan", *PLAN_ARGS)
        assert result.exit_code == 2
        assert assert_one_line_error(result.stderr) == BAD_INPUTS["out-busy"]
        assert objects(s3, "busy/plan") == {}
    ok("plan", local_run / "factors", "--out", f"s3://{BUCKET}/busy/plan", *PLAN_ARGS)


def test_a_standalone_command_keeps_no_staged_copy(
    s3: Any, local_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    ok("plan", local_run / "factors", "--out", f"s3://{BUCKET}/unstaged/plan", *PLAN_ARGS)
    assert set(objects(s3, "unstaged/plan")) == set(tree_digests(local_run / "plan"))
    assert (
        not (cache / "artifacts").exists()
        and [p for p in (cache / "staging").rglob("*") if p.parent != cache / "staging"] == []
    )

    def refused(*args: Any, **kwargs: Any) -> bytes:
        raise DynselError("publishing refused")

    monkeypatch.setattr(storage, "publish_artifact", refused)
    assert invoke("plan", local_run / "factors", "--out", f"s3://{BUCKET}/unstaged/other", *PLAN_ARGS).exit_code == 2
    assert (
        not (cache / "artifacts").exists()
        and [p for p in (cache / "staging").rglob("*") if p.parent != cache / "staging"] == []
    )


# ---------------------------------------------------------------- issue 21, item 1: one spelling of a key


@pytest.mark.parametrize("spelling", ["x/../ud", "./ud", "ud/.", "a/b/../../ud", "x/%2E%2E/ud"])
def test_an_out_with_dot_segments_is_refused_and_the_objects_under_it_stay(
    s3: Any, local_run: Path, spelling: str
) -> None:
    """`--out s3://b/x/../ud` used to list the literal prefix (empty) and then write `ud/`, replacing the
    user's objects there that `--out s3://b/ud` refuses."""
    prefix = "dots-" + spelling.replace("/", "_").replace("%", "")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/ud/notes.txt", Body=b"my thesis\n")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/ud/manifest.json", Body=b'{"mine": true}\n')
    before = _all(s3, BUCKET)
    result = invoke("plan", local_run / "factors", "--out", f"s3://{BUCKET}/{prefix}/{spelling}", *PLAN_ARGS)
    assert result.exit_code == 2, result.stderr
    line = assert_one_line_error(result.stderr)
    assert "which dynsel does not resolve" in line and line.endswith(f"write it as s3://{BUCKET}/{prefix}/ud")
    assert _all(s3, BUCKET) == before


def test_dot_and_empty_segments_are_one_line_exit_2(s3: Any, local_run: Path, tmp_path: Path) -> None:
    _bad("uri-dot-segments", ["plan", *[local_run / "factors", *PLAN_ARGS], "--out", f"s3://{BUCKET}/x/../ud"], s3)
    _bad(
        "uri-empty-segment", ["plan", *[local_run / "factors", *PLAN_ARGS], "--out", f"s3://{BUCKET}//ud2"], s3
    )  # was an internal error
    _bad(
        "uri-above-the-bucket", ["plan", f"s3://{BUCKET}/../other/fac", "--out", tmp_path / "plan", *PLAN_ARGS], s3
    )  # inputs too
    assert not (tmp_path / "plan").exists()


def test_a_respelled_out_is_still_the_commands_input(s3: Any, local_run: Path) -> None:
    """`--out s3://b/x/../fac --force` used to replace the factors the command reads; a percent-escaped
    spelling of the same key (which pyarrow decodes) is the same place too."""
    upload_dir(s3, local_run / "factors", "respelled/fac")
    before = _all(s3, BUCKET)
    dots = invoke(
        "plan", f"s3://{BUCKET}/respelled/fac", "--out", f"s3://{BUCKET}/respelled/x/../fac", *PLAN_ARGS, "--force"
    )
    assert dots.exit_code == 2 and "does not resolve" in assert_one_line_error(dots.stderr)
    escaped = invoke(
        "plan", f"s3://{BUCKET}/respelled/fac", "--out", f"s3://{BUCKET}/respelled/%66ac", *PLAN_ARGS, "--force"
    )
    assert escaped.exit_code == 2
    assert (
        assert_one_line_error(escaped.stderr)
        == f"error: s3://{BUCKET}/respelled/fac: is an input of this command; choose another --out"
    )
    assert _all(s3, BUCKET) == before


def test_canonical_uri_units() -> None:
    assert storage.canonical_uri("s3://KEY:SECRET@b/run/?region=x") == "s3://b/run"
    assert storage.canonical_uri("s3://b/%72un//") == "s3://b/run"
    assert storage.canonical_uri("s3://b") == "s3://b"
    for uri, fix in [
        ("s3://b/x/../y", "write it as s3://b/y"),
        ("s3://b/../y", "write the path without them"),
        ("s3://b/x/.", "write it as s3://b/x"),
        ("s3://b/a//c", "write it as s3://b/a/c"),
    ]:
        with pytest.raises(
            DynselError,
            match=rf"^{uri}: has .* in its path, which dynsel does not resolve \(an object store reads keys literally\); {fix}$",
        ):
            storage.canonical_uri(uri)


# --------------------------------------- issue 21, item 4: the local and the object-store rule agree


def test_a_stub_manifest_or_user_files_are_refused_locally_and_on_the_store_alike(
    s3: Any, local_run: Path, tmp_path: Path
) -> None:
    cases = {
        "stub": {"manifest.json": b'{"format": "dynsel.plan"}\n', "results.csv": b"a,b\n1,2\n"},
        "user-files": {
            **{n: (local_run / "plan" / n).read_bytes() for n in tree_digests(local_run / "plan")},
            "notes.txt": b"mine\n",
            "checkpoints/step-1.pt": b"w",
        },
    }
    for case, files in cases.items():
        local = tmp_path / case
        for name, data in files.items():
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(data)
            s3.put_object(Bucket=BUCKET, Key=f"agree/{case}/{name}", Body=data)
        before = (tree_digests(local), objects(s3, f"agree/{case}"))
        for out in (local, f"s3://{BUCKET}/agree/{case}"):
            for force in ((), ("--force",)):
                result = invoke("plan", local_run / "factors", "--out", out, *PLAN_ARGS, *force)
                assert result.exit_code == 2, (case, out, result.stderr)
                assert "dynsel did not write" in result.stderr or "is not a dynsel plan" in result.stderr
        assert (tree_digests(local), objects(s3, f"agree/{case}")) == before, case
