"""Reproducibility: the same inputs, settings and seed give byte-identical artifacts; another seed another plan.

Two independent ``dynsel run`` processes (the real command line, CPU, the test thread count) on a small
image set — the first 240 Fashion-MNIST images of sample_data/, through the real image encoder
(efficientnet-lite0 at 64 px) — write into differently named directories; every file of the two (features
shards and manifest, SAE weights, metrics and manifest, factor tables, every plan file) must have the same
sha256, and neither may hold anything else. A plan computed from the same factor tables with another seed
must differ, and one with the same seed must again be identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE, STAGE_DIRS, dynsel, sha256_of

from dynsel_cli.formats import read_factor_tables, read_features, read_plan, read_sae

N_IMAGES = 240
RUN = ("--image-size", "64", "--epochs", "4", "--ratio", "0.5", "--device", "cpu")
PLAN = ("--epochs", "4", "--ratio", "0.5", "--device", "cpu")


def listing(root: Path) -> dict[str, str]:
    """Every entry under ``root``, hidden ones included: files by sha256, directories as '<dir>'."""
    return {str(p.relative_to(root)): ("<dir>" if p.is_dir() else sha256_of(p)) for p in sorted(Path(root).rglob("*"))}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("repro-data") / "fashion_240.npz"
    with np.load(SAMPLE, allow_pickle=False) as archive:
        np.savez(
            path,
            x_train=archive["x_train"][:N_IMAGES],
            y_train=archive["y_train"][:N_IMAGES],
            class_names=archive["class_names"],
        )
    return path


@pytest.fixture(scope="module")
def two_runs(images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("repro")
    outs = (
        root / "first" / "run",
        root / "second" / "again",
    )  # other paths, other names: no path gets into an artifact
    for out in outs:
        proc = dynsel("run", images, "--out", out, *RUN, "--seed", "0")
        assert proc.returncode == 0, proc.stderr[-3000:]
    return outs


def test_same_inputs_and_seed_give_byte_identical_artifacts(two_runs: tuple[Path, Path]) -> None:
    first, second = two_runs
    files = listing(first)
    assert sorted(p for p in files if "/" not in p) == sorted(STAGE_DIRS)  # the four artifacts, no leftovers
    for stage in STAGE_DIRS:  # each complete (checksums verify) and made of more than a manifest
        assert sum(1 for p in files if p.startswith(f"{stage}/") and files[p] != "<dir>") >= 2
    features = read_features(first / "features")
    assert (
        features.ids.tolist() == list(range(N_IMAGES)) and features.manifest["encoder"]["name"] == "efficientnet-lite0"
    )
    read_sae(first / "sae")
    read_factor_tables(first / "factors")
    read_plan(first / "plan")

    other = listing(second)
    differing = sorted(p for p in set(files) | set(other) if files.get(p) != other.get(p))
    assert not differing, f"two runs with the same inputs and seed differ in: {differing}"


def test_another_seed_gives_another_plan_and_the_same_seed_the_same(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = two_runs
    factors = first / "factors"
    for seed in (0, 1):
        proc = dynsel("plan", factors, "--out", tmp_path / f"seed{seed}", *PLAN, "--seed", str(seed))
        assert proc.returncode == 0, proc.stderr[-3000:]
    same, other = read_plan(tmp_path / "seed0"), read_plan(tmp_path / "seed1")
    # the same seed: the very plan `dynsel run` wrote
    assert listing(tmp_path / "seed0") == listing(first / "plan")
    # another seed: other index lists (same shape: every epoch still holds ceil(ratio * N) ids)
    assert (tmp_path / "seed0" / "indices.bin").read_bytes() != (tmp_path / "seed1" / "indices.bin").read_bytes()
    assert same.manifest["counts"] == other.manifest["counts"] == [N_IMAGES // 2] * 4
    assert same.manifest["seed"] == 0 and other.manifest["seed"] == 1


def test_plans_do_not_depend_on_how_the_features_were_sharded(tmp_path) -> None:
    """Same vectors, two --shard-size values: same features fingerprint, and byte-identical SAE, factor
    tables and plan (the SAE reads logical blocks of rows, not the files that store them)."""
    import numpy as np
    from conftest import sparse_dictionary_data, tree_digests

    from dynsel_cli.config import ExtractConfig, PlanConfig, SaeConfig
    from dynsel_cli.extract import extract
    from dynsel_cli.factors import build_factor_tables
    from dynsel_cli.plan import build_plan
    from dynsel_cli.sae import fit_sae

    np.save(tmp_path / "v.npy", sparse_dictionary_data(3000, d=32, seed=4))
    plans = []
    for shard_size in (250, 4096):
        root = tmp_path / f"shards-{shard_size}"
        features = extract(
            tmp_path / "v.npy",
            root / "features",
            ExtractConfig(encoder="identity", shard_size=shard_size, device="cpu"),
        )
        assert len(features["shards"]) == (12 if shard_size == 250 else 1)
        fit_sae(root / "features", root / "sae", SaeConfig(width=64, k=4, epochs=3, device="cpu"))
        build_factor_tables(root / "features", root / "sae", root / "factors")
        build_plan(root / "factors", root / "plan", PlanConfig(epochs=4, ratio=0.5, device="cpu"))
        plans.append(root)
    a, b = plans
    assert (a / "features" / "_manifest.json").read_text().count('"fingerprint"') == 1
    for stage in ("sae", "factors", "plan"):
        assert tree_digests(a / stage) == tree_digests(b / stage), f"{stage} differs between shard sizes"


GOLDEN = Path(__file__).parent / "data" / "golden_sample_run.json"
MANIFESTS = ("manifest.json", "_manifest.json")  # provenance (version, executor) may grow; the data must not change


# Files holding only integers and settings: the same bytes on every CPU. The others (features, SAE weights
# and metrics, factor tables, signals) come from float32 SIMD kernels whose last bits depend on the
# instruction set (oneDNN picks AMX, AVX-512 or AVX2 kernels), so their digests are checked only where
# they were recorded.
# Checked on every machine: the plan's budgets and the SAE's settings. The plan's ids are not: the default
# method's code probe computes in float32 numpy, whose last bits can follow the CPU's SIMD path, and a
# borderline suspect can then change (docs/reliability.md, "Reproducibility").
PORTABLE = ("plan/offsets.bin", "sae/cfg.json")


def _portable(path: str) -> bool:
    return path.startswith(PORTABLE)


def _machine() -> dict[str, str]:
    import torch

    flags: list[str] = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        line = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
        flags = sorted(flag for flag in line.split(":", 1)[-1].split() if flag.startswith(("avx", "amx", "fma")))
    return {
        "torch": torch.__version__.split("+")[0],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "simd_flags": " ".join(flags),
    }


def test_artifacts_match_the_recorded_sha256s(two_runs: tuple[Path, Path]) -> None:
    """Every data file of the run has the sha256 recorded in tests/data/golden_sample_run.json, so a
    refactor that changes any byte fails here.

    The plan's budgets (offsets.bin) and the SAE settings are checked on every machine. Files computed in float32
    (features, SAE weights, factor tables, signals) are checked where the recording was made (same torch
    and SIMD instruction set), since their last bits differ between CPUs. Re-record, after a deliberate
    change of an artifact, with
    ``DYNSEL_RECORD_GOLDEN=1 bash scripts/test.sh tests/test_reproducibility.py -k recorded``.
    """
    import json
    import os

    first, _ = two_runs
    found = {
        path: digest
        for path, digest in listing(first).items()
        if digest != "<dir>" and Path(path).name not in MANIFESTS
    }
    if os.environ.get("DYNSEL_RECORD_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"recorded_with": _machine(), "files": found}, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    assert sorted(found) == sorted(recorded["files"]), "the run writes other files than recorded"
    same_machine = recorded["recorded_with"] == _machine()
    checked = [path for path in found if same_machine or _portable(path)]
    assert any(_portable(path) for path in checked)
    changed = sorted(path for path in checked if found[path] != recorded["files"][path])
    assert not changed, f"these artifact files changed bytes: {changed}"
