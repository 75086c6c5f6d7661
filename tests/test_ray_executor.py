"""--executor ray for extract and factors: the same artifact as the local executor, a killed worker is
retried, a killed driver resumes from its journal, and bad inputs are one line with nothing published.

One local Ray (2 CPUs, no dashboard, 127.0.0.1 only) serves the whole module; the stages reuse the
connection, and the subprocess driver of the resume test joins it by address, so no test leaves Ray
processes behind.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    REPO,
    SAMPLE,
    assert_one_line_error,
    dynsel,
    invoke,
    sparse_dictionary_data,
    subprocess_env,
    tree_digests,
)

from dynsel_cli.config import ExtractConfig, FactorsConfig, SaeConfig
from dynsel_cli.extract import extract
from dynsel_cli.extract.work import JOURNAL, work_dir_for
from dynsel_cli.factors import build_factor_tables
from dynsel_cli.formats.features import read_features
from dynsel_cli.sae import fit_sae

ray = pytest.importorskip("ray")

RAY = dict(executor="ray", workers=2)

# A passthrough encoder for vectors whose first encode() SIGKILLs its own actor; every construction is logged.
DYING_ENCODER = """
import os, signal
from pathlib import Path
import numpy as np

class Passthrough:
    input = "vectors"
    dim = 16

    def encode(self, batch):
        # O_EXCL: of actors racing here, exactly one creates the marker, and only that one is killed, once
        try:
            fd = os.open("killed.marker", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return np.asarray(batch, dtype=np.float32)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

def make():
    with open("constructed.log", "a") as log:
        log.write(f"{os.getpid()}\\n")
    return Passthrough()
"""

# A passthrough encoder that sleeps per batch (seconds in sleep.txt, if present) and logs "JOB_ID ROWS" per batch.
SLOW_ENCODER = """
import time
from pathlib import Path
import numpy as np
import ray

class Slow:
    input = "vectors"
    dim = 8

    def __init__(self, sleep):
        self.sleep = sleep

    def encode(self, batch):
        time.sleep(self.sleep)
        with open("encoded.log", "a") as log:
            log.write(f"{ray.get_runtime_context().get_job_id()} {len(batch)}\\n")
        return np.asarray(batch, dtype=np.float32)

def make():
    sleep = Path("sleep.txt")
    return Slow(float(sleep.read_text()) if sleep.exists() else 0.0)
"""


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[str]:
    """One local Ray for the module; yields its address (HOST:PORT of the GCS)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def vectors_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray") / "vectors.npz"
    np.savez(path, x=sparse_dictionary_data(120, 16, 32), y=np.arange(120) % 4)
    return path


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working directory, holding the test encoders (the actors resolve modules there too)."""
    (tmp_path / "ray_dying_encoder.py").write_text(DYING_ENCODER)
    (tmp_path / "ray_slow_encoder.py").write_text(SLOW_ENCODER)
    monkeypatch.chdir(tmp_path)
    for name in ("ray_dying_encoder", "ray_slow_encoder"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def manifest_name(path: Path) -> str:
    return "_manifest.json" if (path / "_manifest.json").exists() else "manifest.json"  # features, factor tables


def manifest_of(path: Path) -> dict[str, Any]:
    return json.loads((path / manifest_name(path)).read_text())


def assert_same_artifact(ray_out: Path, local_out: Path) -> None:
    """Every file byte-identical but the manifest, whose only difference is the executor."""
    ray_files, local_files = tree_digests(ray_out), tree_digests(local_out)
    assert ray_files.pop(manifest_name(ray_out)) != local_files.pop(manifest_name(local_out))
    assert ray_files == local_files and ray_files
    ray_manifest, local_manifest = manifest_of(ray_out), manifest_of(local_out)
    assert (ray_manifest.pop("executor"), local_manifest.pop("executor")) == ("ray", "local")
    assert ray_manifest == local_manifest


# ------------------------------------------------------------------------------------ same artifact


def test_extract_vectors_through_ray_is_the_local_artifact(vectors_npz: Path, tmp_path: Path) -> None:
    config = dict(
        batch_size=10, shard_size=32, device="cpu"
    )  # batches of 10 within shards of 32: last batches are short
    manifest = extract(vectors_npz, tmp_path / "ray", ExtractConfig(**config, **RAY))
    extract(vectors_npz, tmp_path / "local", ExtractConfig(**config))
    assert_same_artifact(tmp_path / "ray", tmp_path / "local")
    assert [s["rows"] for s in manifest["shards"]] == [32, 32, 32, 24] and manifest["encoder"]["name"] == "identity"
    assert "executor" not in manifest["settings"] and "workers" not in manifest["settings"]
    features = read_features(tmp_path / "ray")
    with np.load(vectors_npz) as data:
        np.testing.assert_array_equal(features.vectors, data["x"])  # passthrough: the source's own bytes
        np.testing.assert_array_equal(features.labels, data["y"])
    np.testing.assert_array_equal(features.ids, np.arange(120))


def test_extract_images_through_ray_is_the_local_artifact(tmp_path: Path) -> None:
    """efficientnet-lite0 on the CPU, one torch thread in the actors and here (conftest): bit-identical."""
    config = dict(limit=40, image_size=32, batch_size=8, shard_size=16, device="cpu")
    manifest = extract(SAMPLE, tmp_path / "ray", ExtractConfig(**config, **RAY))
    extract(SAMPLE, tmp_path / "local", ExtractConfig(**config))
    assert_same_artifact(tmp_path / "ray", tmp_path / "local")
    assert manifest["encoder"]["name"] == "efficientnet-lite0" and [s["rows"] for s in manifest["shards"]] == [
        16,
        16,
        8,
    ]
    np.testing.assert_array_equal(read_features(tmp_path / "ray").vectors, read_features(tmp_path / "local").vectors)


@pytest.fixture(scope="module")
def small_run(vectors_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Features in 4 shards and an SAE fitted on them."""
    root = tmp_path_factory.mktemp("ray-factors")
    extract(vectors_npz, root / "features", ExtractConfig(shard_size=32, device="cpu"))
    fit_sae(root / "features", root / "sae", SaeConfig(width=32, k=3, epochs=2, batch_size=32, device="cpu"))
    return root


def test_factors_through_ray_are_the_local_tables(small_run: Path, tmp_path: Path) -> None:
    config = dict(batch_size=7, device="cpu")  # batches of 7 rows within each shard, as the local executor forms them
    manifest = build_factor_tables(
        small_run / "features", small_run / "sae", tmp_path / "ray", FactorsConfig(**config, **RAY)
    )
    build_factor_tables(small_run / "features", small_run / "sae", tmp_path / "local", FactorsConfig(**config))
    assert_same_artifact(tmp_path / "ray", tmp_path / "local")
    assert manifest["n_samples"] == 120 and manifest["executor"] == "ray" and manifest["settings"] == {"batch_size": 7}


# ----------------------------------------------------------------------------------------- failures


def test_a_killed_worker_is_restarted_and_the_output_is_complete(vectors_npz: Path, user_code: Path) -> None:
    config = dict(encoder="ray_dying_encoder:make", allow_user_code=True, batch_size=10, shard_size=32, device="cpu")
    extract(vectors_npz, user_code / "ray", ExtractConfig(**config, **RAY))
    assert (user_code / "killed.marker").exists(), "no actor was killed"
    constructions = (user_code / "constructed.log").read_text().split()
    killed = (user_code / "killed.marker").read_text()
    # 2 actors, then exactly one restart of the one actor that was killed (the marker is created exclusively)
    assert len(constructions) == 3 and len(set(constructions)) == 3 and killed in constructions
    extract(vectors_npz, user_code / "local", ExtractConfig(**config))  # the marker exists now: nothing dies
    assert_same_artifact(user_code / "ray", user_code / "local")
    assert manifest_of(user_code / "ray")["n_samples"] == 120


def _shards_done(out: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((work_dir_for(out) / JOURNAL).read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return []


def test_a_killed_driver_resumes_and_redoes_only_unfinished_shards(ray_cluster: str, user_code: Path) -> None:
    vectors = sparse_dictionary_data(160, 8, 16)
    np.save(user_code / "v.npy", vectors)
    out = user_code / "feats"
    args = [
        "--encoder",
        "ray_slow_encoder:make",
        "--allow-user-code",
        "--batch-size",
        "8",
        "--shard-size",
        "16",
        "--device",
        "cpu",
    ]
    (user_code / "sleep.txt").write_text("0.3")
    command = [
        sys.executable,
        "-m",
        "dynsel_cli",
        "extract",
        "v.npy",
        "--out",
        str(out),
        *args,
        "--executor",
        "ray",
        "--workers",
        "2",
        "--ray-address",
        ray_cluster,
    ]
    proc = subprocess.Popen(
        command, cwd=user_code, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 180
    while not _shards_done(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {stderr.decode()[-2000:]}"
    kept = _shards_done(out)
    assert 1 <= len(kept) < 10 and not out.exists()
    kept_inodes = [(work_dir_for(out) / shard["file"]).stat().st_ino for shard in kept]

    (user_code / "sleep.txt").unlink()
    logs: list[str] = []
    config = ExtractConfig(
        encoder="ray_slow_encoder:make", allow_user_code=True, batch_size=8, shard_size=16, device="cpu", **RAY
    )
    manifest = extract(
        Path("v.npy"), out, config, log=logs.append
    )  # the same command: the source path is in the resume key
    assert f"extract: resuming after {len(kept)} of 10 completed shards ({16 * len(kept)} of 160 samples)" in logs
    this_job = ray.get_runtime_context().get_job_id()
    rerun_rows = sum(
        int(rows)
        for job, rows in (line.split() for line in (user_code / "encoded.log").read_text().splitlines())
        if job == this_job
    )
    assert rerun_rows == 160 - 16 * len(kept)  # the rerun encoded exactly the unfinished shards
    assert [
        (out / f"part-{i:05d}.parquet").stat().st_ino for i in range(len(kept))
    ] == kept_inodes  # kept shards linked, not rewritten
    assert not work_dir_for(out).exists() and manifest["n_samples"] == 160
    features = read_features(out)
    np.testing.assert_array_equal(features.ids, np.arange(160))
    np.testing.assert_array_equal(features.vectors, vectors)
    reference = extract(
        Path("v.npy"),
        user_code / "reference",
        ExtractConfig(encoder="ray_slow_encoder:make", allow_user_code=True, batch_size=8, shard_size=16, device="cpu"),
    )
    assert reference["fingerprint"] == manifest["fingerprint"] and reference["shards"] == manifest["shards"]


# --------------------------------------------------------------------------------------- bad inputs


def test_an_unreachable_ray_address_is_one_line_and_publishes_nothing(
    vectors_npz: Path, small_run: Path, tmp_path: Path
) -> None:
    for stage, args in (
        ("extract", ["extract", vectors_npz]),
        ("factors", ["factors", small_run / "features", "--sae", small_run / "sae"]),
    ):
        out = tmp_path / stage
        proc = dynsel(
            *args, "--out", out, "--executor", "ray", "--ray-address", "127.0.0.1:1", "--device", "cpu", timeout=120
        )
        assert proc.returncode == 2, proc.stderr
        line = assert_one_line_error(proc.stderr)
        assert "--ray-address 127.0.0.1:1: no Ray cluster answers there" in line
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no work directory, no temporary


def test_without_ray_installed_the_ray_executor_is_one_line_and_publishes_nothing(
    vectors_npz: Path, small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for args in (
        ["extract", vectors_npz, "--out", tmp_path / "features"],
        ["factors", small_run / "features", "--sae", small_run / "sae", "--out", tmp_path / "factors"],
        ["run", vectors_npz, "--out", tmp_path / "run"],
    ):
        result = invoke(*args, "--executor", "ray")
        assert result.exit_code == 2, result.stderr
        line = assert_one_line_error(result.stderr)
        assert line.startswith("error: --executor ray needs the ray extra: pip install 'dynsel[ray]'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["extract", "--ray-address", "127.0.0.1:6379"], "--ray-address applies to --executor ray"),
        (["extract", "--gpus-per-worker", "1"], "--gpus-per-worker applies to --executor ray"),
        (["extract", "--executor", "ray", "--workers", "0"], "--workers 0: --executor ray needs at least 1 actor"),
        (["extract", "--executor", "dask"], "--executor 'dask': use local or ray"),
        (["run", "--factors-workers", "2"], "--workers sets the Ray actors of --executor ray"),
    ],
)
def test_executor_options_are_checked_before_any_work(
    vectors_npz: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = invoke(args[0], vectors_npz, "--out", tmp_path / "out", *args[1:])
    assert result.exit_code == 2, result.stderr
    assert message in assert_one_line_error(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_run_takes_the_executor_options_of_both_stages() -> None:
    result = invoke("run", "--help")
    assert result.exit_code == 0
    for option in (
        "--executor",
        "--ray-address",
        "--workers",
        "--gpus-per-worker",
        "--factors-workers",
        "--extract-batch-size",
    ):
        assert option in result.stdout, option


def test_importing_dynsel_does_not_import_ray() -> None:
    code = "import sys, dynsel_cli, dynsel_cli.cli, dynsel_cli.executors, dynsel_cli.extract.stage, dynsel_cli.factors.stage; print('ray' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
