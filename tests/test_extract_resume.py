"""extract resume: a run killed with SIGKILL (or interrupted) resumes from its completed shards and writes
exactly the features an uninterrupted run writes: same rows, no duplicates or gaps, same fingerprint."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dynsel_cli.config import ExtractConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.extract import extract
from dynsel_cli.extract.work import JOURNAL, work_dir_for
from dynsel_cli.formats.features import read_features

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT / "sample_data" / "fashion_mnist_2k.npz"

# efficientnet-lite0 itself, slowed down per batch (by an environment variable that is not a setting) so
# the test can reliably kill the process between shards.
SLOW_ENCODER = """
import os, time
import torch
from dynsel_cli.extract.encoders import EfficientNetLite0Encoder

class Slow(EfficientNetLite0Encoder):
    def encode(self, prepared):
        time.sleep(float(os.environ.get("SLOW_ENCODER_SLEEP", "0")))
        return super().encode(prepared)

def make(device, image_size):
    return Slow(image_size, device)
"""
SETTINGS = dict(
    encoder="slow_encoder:make",
    allow_user_code=True,
    limit=160,
    image_size=32,
    batch_size=8,
    shard_size=16,
    device="cpu",
)
ARGS = [
    "--encoder",
    "slow_encoder:make",
    "--allow-user-code",
    "--limit",
    "160",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--shard-size",
    "16",
    "--device",
    "cpu",
]


@pytest.fixture
def slow_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "slow_encoder.py").write_text(SLOW_ENCODER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "slow_encoder", raising=False)
    return tmp_path


def _env(sleep: float) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["SLOW_ENCODER_SLEEP"] = str(sleep)
    env["OMP_NUM_THREADS"] = os.environ.get("DYNSEL_TEST_THREADS", "1")
    return env


def _shards_done(out: Path) -> int:
    try:
        return len(json.loads((work_dir_for(out) / JOURNAL).read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_mid_run_then_resume_gives_identical_features(slow_encoder: Path) -> None:
    out = slow_encoder / "feats"
    command = [sys.executable, "-m", "dynsel_cli", "extract", str(FASHION), "--out", str(out), *ARGS]
    proc = subprocess.Popen(command, cwd=slow_encoder, env=_env(0.15), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _shards_done(out) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = _shards_done(out)
    assert 3 <= done < 10 and not out.exists()  # nothing a later stage could read

    resumed = subprocess.run(command, cwd=slow_encoder, env=_env(0), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after {done} of 10 completed shards" in resumed.stderr
    assert not work_dir_for(out).exists()

    # the same run, never interrupted (in-process: same code, same threads)
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(int(_env(0)["OMP_NUM_THREADS"]))
    try:
        reference = extract(FASHION, slow_encoder / "reference", ExtractConfig(**SETTINGS))  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)
    features = read_features(out)
    assert features.ids.tolist() == list(range(160))  # no duplicated or missing samples
    assert features.fingerprint == reference["fingerprint"]
    assert (out / "_manifest.json").read_bytes() == (slow_encoder / "reference" / "_manifest.json").read_bytes()


class _Interrupt(Exception):
    pass


def _interrupt_after(out: Path, shards: int):  # type: ignore[no-untyped-def]
    def progress(task: str, done: int, total: int | None) -> None:
        if _shards_done(out) >= shards:
            raise KeyboardInterrupt

    return progress


def test_interrupted_run_resumes_skips_bad_shards_and_stale_state(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).normal(size=(100, 6)).astype(np.float32)
    vectors[[13, 57], 2] = np.nan
    np.save(tmp_path / "v.npy", vectors)
    config = ExtractConfig(shard_size=10, batch_size=4, on_error="skip")
    reference = extract(tmp_path / "v.npy", tmp_path / "ref", config)
    assert reference["n_samples"] == 98 and len(reference["shards"]) == 10
    # skipped rows leave gaps: the ids are positions 0..99, not 0..97, and the manifest says so
    assert (reference["id_min"], reference["id_max"], reference["ids_dense"]) == (0, 99, False)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        extract(tmp_path / "v.npy", out, config, progress=_interrupt_after(out, 6))
    assert _shards_done(out) == 6 and not out.exists()

    # damage the third shard: it and everything after it are redone
    third = work_dir_for(out) / "shard-00002.parquet"
    third.write_bytes(third.read_bytes()[:-10])
    logs: list[str] = []
    manifest = extract(tmp_path / "v.npy", out, config, log=logs.append)
    assert logs == [
        f"extract: {tmp_path / 'v.npy'}: 2 rows contain NaN or Inf (rows 13, 57); skipping them (--on-error skip)",
        "extract: resuming after 2 of 10 completed shards (20 of 100 samples)",
    ]
    assert manifest["fingerprint"] == reference["fingerprint"] and manifest["skipped"] == reference["skipped"]
    assert (out / "_manifest.json").read_bytes() == (tmp_path / "ref" / "_manifest.json").read_bytes()

    # state left by other settings is not reused
    with pytest.raises(KeyboardInterrupt):
        extract(tmp_path / "v.npy", out, config, progress=_interrupt_after(out, 3))
    logs.clear()
    half = extract(
        tmp_path / "v.npy",
        out,
        ExtractConfig(shard_size=10, batch_size=4, on_error="skip", dtype="float16"),
        log=logs.append,
    )
    assert logs[1:] == [f"extract: {work_dir_for(out)} was left by a run with other inputs or settings; starting over"]
    assert half["dtype"] == "float16" and half["n_samples"] == 98


def test_resuming_with_on_error_stop_reports_a_bad_sample_in_a_completed_shard(tmp_path: Path) -> None:
    vectors = np.ones((40, 3), np.float32)
    vectors[5, 0] = np.inf
    np.save(tmp_path / "v.npy", vectors)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        extract(
            tmp_path / "v.npy", out, ExtractConfig(shard_size=10, on_error="skip"), progress=_interrupt_after(out, 2)
        )
    journal = (work_dir_for(out) / JOURNAL).read_bytes()
    # found by the check before any encoding, which leaves the completed shards alone
    with pytest.raises(
        DynselError, match=r"v\.npy row 5: the vector contains NaN or Inf \(sample id 5\); fix or remove it"
    ):
        extract(tmp_path / "v.npy", out, ExtractConfig(shard_size=10, on_error="stop"))
    assert not out.exists() and (work_dir_for(out) / JOURNAL).read_bytes() == journal
    logs: list[str] = []
    manifest = extract(tmp_path / "v.npy", out, ExtractConfig(shard_size=10, on_error="skip"), log=logs.append)
    assert logs[-1] == "extract: resuming after 2 of 4 completed shards (20 of 40 samples)"
    assert manifest["n_samples"] == 39 and manifest["skipped"][0]["id"] == 5


def test_resuming_with_on_error_stop_reports_a_bad_image_a_completed_shard_skipped(tmp_path: Path) -> None:
    """Corrupt images are found only by decoding: a resumed run with --on-error stop stops on the first one
    a completed shard had skipped, as a fresh run would, and keeps the shards."""
    Image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(np.full((8, 8), i * 20, np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    out = tmp_path / "out"
    config = dict(image_size=32, shard_size=4, batch_size=4, workers=0, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        extract(tmp_path / "imgs", out, ExtractConfig(on_error="skip", **config), progress=_interrupt_after(out, 2))  # type: ignore[arg-type]
    with pytest.raises(DynselError, match=r"03\.png: not a readable image .*\(sample id 3\).*completed shards kept"):
        extract(tmp_path / "imgs", out, ExtractConfig(on_error="stop", **config))  # type: ignore[arg-type]
    assert not out.exists() and _shards_done(out) == 2


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((8, 2), np.float32))
    work = work_dir_for(tmp_path / "out")
    work.mkdir()
    with open(work / "lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DynselError, match="another dynsel extract is writing this output"):
            extract(tmp_path / "v.npy", tmp_path / "out")
    assert extract(tmp_path / "v.npy", tmp_path / "out")["n_samples"] == 8
    assert not work.exists()
