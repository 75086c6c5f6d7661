"""The geometric baselines the paper argues against, computed on the features with faiss.

- k-NN density: a sample is "representative" when its k nearest neighbours are close;
- k-center: a greedy farthest-point cover of the feature space ("diversity" as geometric spread).
Both choose one fixed subset (static), so a user can compare them with dynsel on their own data.
"""

from __future__ import annotations

import numpy as np

from ..errors import DynselError


def knn_density(vectors: np.ndarray, k: int = 10) -> np.ndarray:
    """Minus the mean L2 distance to the k nearest other samples (exact search): larger = denser."""
    from .neighbour_index import load_faiss

    faiss = load_faiss()

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 2:
        raise DynselError("k-NN density needs at least 2 samples")
    k = min(k, n - 1)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    distances, neighbours = index.search(x, k + 1)
    # Drop each sample's match with itself (normally the first column; duplicates can reorder it).
    is_self = neighbours == np.arange(n)[:, None]
    keep = ~is_self
    keep[keep.sum(axis=1) > k, -1] = False  # rows without a self match: drop the farthest instead
    sq = np.where(keep, np.maximum(distances, 0.0), 0.0)
    return -(np.sqrt(sq).sum(axis=1) / k)


def reduce_dimensions(vectors: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """PCA to ``dims`` dimensions: eigenvectors of the covariance of at most 65,536 seeded rows.

    Done in float64 numpy (a d×d eigendecomposition) because faiss's PCAMatrix training was slow here.
    Eigenvector signs are fixed (largest component positive) so the projection is reproducible.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.shape[1] <= dims:
        return x
    rng = np.random.default_rng([seed, 2])
    sample = x if len(x) <= 65_536 else x[np.sort(rng.choice(len(x), 65_536, replace=False))]
    mean = sample.mean(axis=0, dtype=np.float64)
    centred = sample.astype(np.float64) - mean
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)
    basis = eigenvectors[:, ::-1][:, :dims]
    signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(dims)])
    basis = (basis * signs).astype(np.float32)
    return (x - mean.astype(np.float32)) @ basis


def kcenter_greedy(vectors: np.ndarray, budget: int, seed: int, dims: int = 64) -> np.ndarray:
    """Greedy k-center (farthest point first) in a PCA space; returns the chosen rows, sorted.

    The first center is a seeded random row; each next center is the row farthest from all chosen ones
    (ties → smaller row). Cost: budget × N × dims.
    """
    x = reduce_dimensions(vectors, dims, seed).astype(np.float32)
    n = len(x)
    if not 0 < budget <= n:
        raise DynselError(f"k-center budget {budget} must be in [1, {n}]")
    squared_norms = np.einsum("ij,ij->i", x, x)
    chosen = np.empty(budget, dtype=np.int64)
    chosen[0] = np.random.default_rng([seed, 3]).integers(n)
    nearest = np.full(n, np.inf, dtype=np.float32)
    for step in range(budget):
        if step:
            chosen[step] = int(np.argmax(nearest))
        c = chosen[step]
        distance = squared_norms - 2.0 * (x @ x[c]) + squared_norms[c]
        np.minimum(nearest, distance, out=nearest)
        nearest[c] = -np.inf  # never choose a center twice
    return np.sort(chosen)
