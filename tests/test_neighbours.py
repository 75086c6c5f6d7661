"""dynsel's neighbour search: which index ``--neighbours`` picks, and the approximate (IVF) path.

The IVF path must be reproducible byte for byte (fixed training sample, k-means seed and one faiss
thread) and find what the exact search finds on data whose neighbours are clear.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from dynsel_cli.config import PlanConfig, artifact_settings
from dynsel_cli.errors import DynselError
from dynsel_cli.plan import neighbour_index
from dynsel_cli.plan.methods import validate
from dynsel_cli.plan.signals import code_neighbours, compute_signals


def test_auto_is_exact_up_to_the_threshold_and_ivf_above() -> None:
    assert neighbour_index.EXACT_UP_TO == 200_000
    assert neighbour_index.resolve("auto", 200_000) == "exact"
    assert neighbour_index.resolve("auto", 200_001) == "ivf"
    assert neighbour_index.resolve("exact", 10**9) == "exact"
    assert neighbour_index.resolve("ivf", 10) == "ivf"
    with pytest.raises(ValueError, match="neighbours mode"):
        neighbour_index.resolve("hnsw", 10)


def test_cells_grow_as_four_square_roots_with_enough_points_each() -> None:
    assert [neighbour_index.cells_for(n) for n in (1, 100, 10_000, 1_000_000, 10_000_000)] == [1, 2, 256, 4000, 12649]


def test_the_setting_is_validated_and_defines_the_plan() -> None:
    assert PlanConfig().neighbours == "auto"
    assert artifact_settings(PlanConfig())["neighbours"] == "auto"
    with pytest.raises(DynselError, match="--neighbours 'hnsw'"):
        validate(PlanConfig(neighbours="hnsw", device="cpu"))
    validate(replace(PlanConfig(device="cpu"), neighbours="ivf"))


def _clustered_codes(n_items: int, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct items (8 of 512 units each, random strengths) and ``copies`` slightly rescaled copies of
    every item: codes whose nearest neighbours are clear. Labels: item mod 3 (no information across items)."""
    rng = np.random.default_rng(seed)
    units = np.stack([rng.choice(512, size=8, replace=False) for _ in range(n_items)]).astype(np.int32)
    acts = rng.uniform(1, 2, size=(n_items, 8)).astype(np.float32)
    scale = 1 + 0.01 * rng.standard_normal((n_items * copies, 1)).astype(np.float32)
    all_units = np.concatenate([units, np.tile(units, (copies, 1))])
    all_acts = np.concatenate([acts, np.tile(acts, (copies, 1)) * scale])
    labels = np.tile(np.arange(n_items) % 3, copies + 1)
    return all_units, all_acts, labels


def test_ivf_finds_the_planted_copies_the_exact_search_finds() -> None:
    units, acts, labels = _clustered_codes(1000, 3, seed=0)
    exact = compute_signals(units, acts, 512, labels, neighbours="exact")
    ivf = compute_signals(units, acts, 512, labels, neighbours="ivf")
    assert np.all(exact.group_size == 4) and np.all(ivf.group_size == 4)
    np.testing.assert_array_equal(ivf.group, exact.group)
    np.testing.assert_array_equal(ivf.group, np.tile(np.arange(1000), 4))


def test_ivf_finds_each_copy_and_most_exact_neighbours() -> None:
    rng = np.random.default_rng(1)
    units, acts, _ = _clustered_codes(2000, 1, seed=1)
    acts = acts * rng.uniform(0.7, 1.3, size=acts.shape).astype(np.float32)
    exact, exact_cos = code_neighbours(units, acts, 512, neighbours="exact")
    approx, approx_cos = code_neighbours(units, acts, 512, neighbours="ivf")
    assert np.mean(approx[:, 0] == exact[:, 0]) > 0.99  # each row's copy
    recall = np.mean((exact[:, :, None] == approx[:, None, :]).any(axis=2))
    assert recall > 0.6, recall  # beyond its copy, a row's neighbours here are unrelated codes, near-ties
    assert np.all(approx_cos <= exact_cos[:, :1] + 1e-12)  # cosines are exact: none beats the true best


def test_ivf_signals_are_identical_run_to_run_and_across_faiss_threads() -> None:
    import faiss

    units, acts, labels = _clustered_codes(600, 2, seed=2)
    labels = np.random.default_rng(2).integers(0, 4, size=len(labels))  # disagreeing neighbours: suspects, trust
    before = faiss.omp_get_max_threads()
    runs = []
    try:
        for threads in (1, 1, 4):
            faiss.omp_set_num_threads(threads)
            s = compute_signals(units, acts, 512, labels, neighbours="ivf")
            runs.append(
                (s.group.tobytes(), s.suspect.tobytes(), s.trust.tobytes(), s.label_support.tobytes(), s.separability)
            )
            assert faiss.omp_get_max_threads() == threads  # restored after the search
    finally:
        faiss.omp_set_num_threads(before)
    assert runs[0] == runs[1] == runs[2]
    assert np.frombuffer(runs[0][1], dtype=bool).any()  # the comparison covers some suspects


def test_faiss_loads_without_its_info_lines_even_where_logging_is_configured() -> None:
    # some encoders' libraries call logging.basicConfig(level=INFO); faiss's loader then printed eight lines
    # (one a ModuleNotFoundError for the AVX512 build) before dynsel's own output
    script = "import logging; logging.basicConfig(level=logging.INFO); from dynsel_cli.plan.neighbour_index import load_faiss; load_faiss()"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "faiss" not in done.stderr and done.stdout == ""
