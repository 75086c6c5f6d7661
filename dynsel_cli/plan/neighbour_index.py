"""Which faiss index finds dynsel's neighbour candidates: exact below a size, inverted lists above it.

The exact search (``IndexFlatIP``) compares every sample with every other: O(N²), about an hour of one
core at a million samples. Above :data:`EXACT_UP_TO` rows ``--neighbours auto`` uses an inverted-file
index instead (``IndexIVFFlat``, inner product): k-means splits the projected codes into
nlist ≈ 4·√N cells, and each query scans only the :data:`NPROBE` cells whose centroids are nearest to it.
Only which candidates are found can differ from the exact search; their cosines are recomputed exactly
by the caller. The measurements behind the threshold and ``NPROBE`` are in
benchmarks/results/neighbours.json (benchmarks/bench_neighbours.py) and docs/method.md.

Every step is reproducible byte for byte on one machine: the training sample is a fixed numpy draw, the
k-means seed is fixed, and faiss runs on one thread (which of several tied candidates it keeps, and the
last bits of its BLAS products, depend on the thread count).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import streams

MODES = ("auto", "exact", "ivf")
EXACT_UP_TO = 200_000  # rows: above this, --neighbours auto searches inverted lists
NPROBE = 16  # cells scanned per query
TRAIN_PER_CELL = 64  # k-means training points per cell (faiss warns below 39)
KMEANS_ITERATIONS = 10
KMEANS_SEED = 1234
QUERY_CHUNK = 1 << 16  # queries per IVF search call (bounds the result buffers)
_TRAIN_SAMPLE_KEY = [streams.PROJECTION, 1]  # the IVF training sample: a draw of its own, not the plan seed's


def load_faiss() -> Any:
    """The faiss module, imported quietly: its loader logs every CPU variant it tries (and the
    ModuleNotFoundError of the ones this build lacks) at INFO, which reaches the user wherever a library
    has configured logging; only its warnings should."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("faiss").setLevel(logging.WARNING)
    import faiss

    return faiss


def resolve(mode: str, n: int) -> str:
    """The index ``--neighbours mode`` uses for ``n`` rows: "exact" or "ivf"."""
    if mode not in MODES:
        raise ValueError(f"neighbours mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "auto":
        return "exact" if n <= EXACT_UP_TO else "ivf"
    return mode


def cells_for(n: int) -> int:
    """nlist ≈ 4·√N, at least 1 and at most N / 39 (so k-means has enough points per cell)."""
    return int(max(1, min(round(4 * np.sqrt(n)), n // 39)))


@contextmanager
def one_thread() -> Iterator[None]:
    """faiss on one OpenMP thread for the duration (restored afterwards)."""
    faiss = load_faiss()

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def exact_search(vectors: np.ndarray, want: int) -> np.ndarray:
    """Each row's ``want`` best rows by inner product over all rows (itself included), int64 [N, want]."""
    faiss = load_faiss()

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    with one_thread():
        _, found = index.search(vectors, want)
    return found


def ivf_search(
    project: Callable[[int, int], np.ndarray],
    n: int,
    dim: int,
    want: int,
    nprobe: int | None = None,
    queries: int | None = None,
) -> np.ndarray:
    """Each row's ``want`` best rows by inner product found in its ``nprobe`` nearest cells, int64 [N, want]
    (−1 where fewer were found); ``nprobe`` defaults to :data:`NPROBE`, ``queries`` (benchmarks) searches only
    the first rows. ``project(start, stop)`` gives rows start..stop as L2-normalised float32
    vectors; they are computed again for the queries instead of being held twice (the index keeps a copy)."""
    faiss = load_faiss()

    nlist = cells_for(n)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = KMEANS_SEED
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.max_points_per_centroid = TRAIN_PER_CELL  # faiss never subsamples again: the sample below fits
    sample = np.sort(
        np.random.default_rng(_TRAIN_SAMPLE_KEY).choice(n, size=min(n, TRAIN_PER_CELL * nlist), replace=False)
    )
    searched = n if queries is None else min(n, queries)
    found = np.empty((searched, want), dtype=np.int64)
    with one_thread():
        index.train(_gather(project, sample))
        for start in range(0, n, QUERY_CHUNK):
            index.add(project(start, min(start + QUERY_CHUNK, n)))
        index.nprobe = NPROBE if nprobe is None else nprobe
        for start in range(0, searched, QUERY_CHUNK):
            stop = min(start + QUERY_CHUNK, searched)
            found[start:stop] = index.search(project(start, stop), want)[1]
    return found


def _gather(project: Callable[[int, int], np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The vectors of ``rows`` (sorted), projected one contiguous chunk at a time."""
    parts = []
    for start in range(0, int(rows[-1]) + 1, QUERY_CHUNK):
        lo, hi = np.searchsorted(rows, [start, start + QUERY_CHUNK])
        if hi > lo:
            parts.append(project(start, min(start + QUERY_CHUNK, int(rows[-1]) + 1))[rows[lo:hi] - start])
    return np.ascontiguousarray(np.concatenate(parts))
