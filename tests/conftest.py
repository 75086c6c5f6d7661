"""Shared fixtures: one real pipeline run per session, CLI helpers, small synthetic data.

The full pipeline on sample_data/fashion_mnist_2k.npz (~1 minute of CPU) runs at most once per test
session, through the real command line (``python -m dynsel_cli run``), in the ``pipeline_run`` fixture.
Every other test reuses its features, SAE and factor tables and never modifies that directory (tests that
tamper with an artifact copy it first).

Threads: on a small, shared machine torch's intra-op thread pool makes tiny SAE steps 10x slower (threads
spin against other processes), so the tests run torch single-threaded, in-process and in subprocesses.
Set DYNSEL_TEST_THREADS to change that.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "fashion_mnist_2k.npz"
THREADS = os.environ.get("DYNSEL_TEST_THREADS", "1")

# The session run: `dynsel run SAMPLE --out DIR --epochs 6 --ratio 0.5 --seed 0`.
RUN_EPOCHS = 6
RUN_RATIO = 0.5
RUN_SEED = 0
RUN_ARGS = ("--epochs", str(RUN_EPOCHS), "--ratio", str(RUN_RATIO), "--seed", str(RUN_SEED))
STAGE_DIRS = ("features", "sae", "factors", "plan")

# In-process too: OpenMP users (torch, faiss) read this when their runtime starts.
os.environ.setdefault("OMP_NUM_THREADS", THREADS)

try:  # keep the in-process torch single-threaded too (see the module docstring)
    import torch

    torch.set_num_threads(int(THREADS))
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = THREADS
    env["MKL_NUM_THREADS"] = THREADS
    env["HF_HUB_OFFLINE"] = "1"
    env["COLUMNS"] = "100"
    return env


def dynsel(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dynsel_cli ARGS`` as a real process from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "dynsel_cli", *map(str, args)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def invoke(*args: str | Path) -> Any:
    """Run the Typer app in-process (no interpreter start-up); the result has exit_code, stdout, stderr."""
    from typer.testing import CliRunner

    from dynsel_cli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, keyed by relative path."""
    root = Path(root)
    return {str(p.relative_to(root)): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


def tree_mtimes(root: Path) -> dict[str, int]:
    """st_mtime_ns of every file and directory under ``root`` (root included), keyed by relative path."""
    root = Path(root)
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in [root, *sorted(root.rglob("*"))]}


def assert_one_line_error(stderr: str, only_line: bool = True) -> str:
    """A user error is one line on stderr, starting 'error:', without a traceback; returns that line.

    ``only_line=False`` allows log lines before it (`dynsel run` announces each stage as it starts).
    """
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line on stderr:\n{stderr}"
    if only_line:
        assert len(lines) == 1, f"expected only the error line on stderr, got {len(lines)} lines:\n{stderr}"
    return errors[0]


@dataclass(frozen=True)
class PipelineRun:
    out: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    mtimes: dict[str, int]  # snapshot right after the run: later tests check nothing rewrote it

    @property
    def plan(self) -> Path:
        return self.out / "plan"

    @property
    def features(self) -> Path:
        return self.out / "features"

    @property
    def sae(self) -> Path:
        return self.out / "sae"

    @property
    def factors(self) -> Path:
        return self.out / "factors"


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """`dynsel run sample_data/fashion_mnist_2k.npz --out DIR --epochs 6 --ratio 0.5 --seed 0 --json`, once."""
    out = tmp_path_factory.mktemp("pipeline") / "fm"
    start = time.perf_counter()
    proc = dynsel("run", SAMPLE.relative_to(REPO), "--out", out, *RUN_ARGS, "--json")
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        pytest.fail(f"dynsel run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return PipelineRun(out, proc.returncode, proc.stdout, proc.stderr, seconds, tree_mtimes(out))


@pytest.fixture(scope="session")
def factor_tables(pipeline_run: PipelineRun) -> Any:
    from dynsel_cli.formats.factors import read_factor_tables

    return read_factor_tables(pipeline_run.factors)


@pytest.fixture(scope="session")
def sample_arrays() -> dict[str, np.ndarray]:
    with np.load(SAMPLE, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.keys()}


def sparse_dictionary_data(
    n: int,
    d: int = 32,
    atoms: int = 64,
    active: int = 3,
    noise: float = 0.01,
    seed: int = 0,
    dictionary_seed: int = 123,
) -> np.ndarray:
    """Vectors that truly are sparse: each a positive combination of ``active`` of ``atoms`` unit directions.

    ``dictionary_seed`` fixes the directions, ``seed`` the draws, so fresh samples of the same
    distribution can be made for held-out checks.
    """
    dictionary = np.random.default_rng(dictionary_seed).normal(size=(atoms, d))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    chosen = np.argsort(rng.random((n, atoms)), axis=1)[:, :active]
    coefficients = np.zeros((n, atoms))
    np.put_along_axis(coefficients, chosen, rng.uniform(1.0, 2.0, size=(n, active)), axis=1)
    x = coefficients @ dictionary + noise * rng.normal(size=(n, d))
    return x.astype(np.float32)


def write_features_dir(
    path: Path, vectors: np.ndarray, labels: np.ndarray | None = None, classes: list[str] | None = None
) -> dict[str, Any]:
    """A features directory written with the format's own writer (no encoder involved)."""
    from dynsel_cli.formats.common import atomic_directory
    from dynsel_cli.formats.features import FeatureShardWriter

    with atomic_directory(Path(path)) as tmp:
        writer = FeatureShardWriter(tmp, vectors.shape[1], "float32", has_labels=labels is not None)
        writer.add(np.arange(len(vectors)), labels, vectors)
        return writer.finish({"classes": classes})


def write_random_plan(
    root: Path,
    counts: Sequence[int],
    n_samples: int,
    *,
    batch_size: int = 4,
    world_size: int = 1,
    drop_last: bool = False,
    weights: bool = False,
    ratio: float = 0.1,
    name: str = "plan",
    seed: int = 0,
) -> Any:
    """A plan (read back) whose epoch e is a random subset, without repeats, of range(n_samples) in random order."""
    from dynsel_cli.formats.common import atomic_directory
    from dynsel_cli.formats.plan import read_plan, write_plan

    rng = np.random.default_rng(seed)
    epochs = [rng.permutation(n_samples)[:c].astype(np.int64) for c in counts]
    w = [rng.random(c).astype(np.float32) for c in counts] if weights else None
    path = root / name
    with atomic_directory(path) as tmp:
        ids = {"id_min": 0, "id_max": n_samples - 1, "ids_dense": True}  # as in a plan of dense features
        write_plan(
            tmp, epochs, n_samples, batch_size, world_size, drop_last, {"ratio": ratio, "seed": seed, **ids}, weights=w
        )
    return read_plan(path)
