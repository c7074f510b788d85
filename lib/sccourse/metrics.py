"""Evaluation shared by all assignments: clustering agreement and embedding quality."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._validation import as_float_matrix as _as_float_matrix
from ._validation import check_int as _check_int
from ._validation import check_seed as _check_seed

__all__ = ["evaluate_ari", "leiden_labels", "knn_preservation", "knn_preservation_at_size", "trustworthiness"]


def _as_2d_array(x, name: str) -> np.ndarray:
    """A finite, real 2-D float64 array (cells x dimensions) from numpy, scipy.sparse or torch."""
    return _as_float_matrix(x, name, what="(cells x dimensions)").astype(np.float64, copy=False)


def _pair(X_high, X_low) -> tuple[np.ndarray, np.ndarray]:
    """The two representations of the same cells, checked (one row per cell in both)."""
    hi, lo = _as_2d_array(X_high, "X_high"), _as_2d_array(X_low, "X_low")
    if hi.shape[0] != lo.shape[0]:
        raise ValueError(
            f"X_high and X_low must have the same number of rows ({hi.shape[0]} vs {lo.shape[0]})"
        )
    return hi, lo


def leiden_labels(embedding, *, resolution: float = 0.15, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """Leiden clusters (igraph flavour) of the kNN graph of ``embedding`` (cells x dims).

    The graph is scanpy's (UMAP connectivities, ``n_neighbors``, Euclidean on the raw coordinates).
    """
    import sys

    import anndata as ad
    import scanpy as sc

    from ._validation import check_float

    emb = _as_2d_array(embedding, "embedding")
    check_float(resolution, "resolution", minimum=0.0, strict=True)
    n_neighbors = _check_int(n_neighbors, "n_neighbors", minimum=2)
    seed = _check_seed(seed)
    if emb.shape[0] <= n_neighbors:
        raise ValueError(f"need more cells ({emb.shape[0]}) than n_neighbors ({n_neighbors})")
    a = ad.AnnData(np.zeros((emb.shape[0], 1), dtype=np.float32))
    a.obsm["X_emb"] = emb
    # numba's first parallel call (inside scanpy's neighbours) resets torch's intra-op thread count; training code
    # that runs after an ARI evaluation must keep the threads it was given
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        sc.pp.neighbors(a, n_neighbors=n_neighbors, use_rep="X_emb", random_state=seed)
        sc.tl.leiden(
            a,
            resolution=resolution,
            flavor="igraph",
            n_iterations=-1,
            directed=False,
            random_state=seed,
            key_added="leiden",
        )
    finally:
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return a.obs["leiden"].astype(int).to_numpy()


def evaluate_ari(
    embedding, labels, *, resolution: float = 0.15, n_neighbors: int = 15, seed: int = 0
) -> float:
    """Adjusted Rand index between Leiden clusters of an embedding and known labels.

    kNN graph on ``embedding`` → Leiden (igraph flavour, ``resolution``) → ARI
    (:func:`sklearn.metrics.adjusted_rand_score`). Cells whose label is missing (NaN/None) are
    excluded from the score (they still take part in the graph).

    Parameters
    ----------
    embedding
        cells x dims (numpy, torch or sparse).
    labels
        length-n labels (array-like or pandas Series/Categorical).
    """
    from sklearn.metrics import adjusted_rand_score

    from ._validation import check_labels

    emb = _as_2d_array(embedding, "embedding")
    lab = pd.Series(check_labels(labels, emb.shape[0]))
    keep = lab.notna().to_numpy()
    if keep.sum() < 2:
        raise ValueError("need at least two cells with a label")
    clusters = leiden_labels(emb, resolution=resolution, n_neighbors=n_neighbors, seed=seed)
    return float(adjusted_rand_score(lab[keep].astype(str).to_numpy(), clusters[keep]))


def _knn(X: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    idx = nn.kneighbors(X, return_distance=False)
    return idx[:, 1:]


def knn_preservation(X_high, X_low, *, k: int = 10) -> float:
    """Mean fraction of each cell's ``k`` nearest neighbours in ``X_high`` kept in ``X_low``.

    ``(1/N) Σ_n |kNN_high(n) ∩ kNN_low(n)| / k``; 1 = every neighbourhood preserved.
    """
    hi, lo = _pair(X_high, X_low)
    k = _check_int(k, "k")
    if not 1 <= k < hi.shape[0]:
        raise ValueError(f"k must be in [1, n_cells - 1], got {k}")
    a, b = _knn(hi, k), _knn(lo, k)
    hits = [len(np.intersect1d(a[i], b[i], assume_unique=True)) for i in range(a.shape[0])]
    return float(np.mean(hits) / k)


def knn_preservation_at_size(
    X_high, X_low, size: int, *, k: int = 10, index=None, n_draws: int = 5, seed: int = 0
) -> tuple[float, float]:
    """k-NN preservation on random subsets of ``size`` cells: mean and standard deviation over ``n_draws``.

    :func:`knn_preservation` depends on how many cells it is computed on: among fewer cells a cell's ``k``
    nearest neighbours are farther apart and easier to keep. Scores of different maps or cell sets are
    comparable only at the same size; this draws ``n_draws`` subsets of ``size`` cells (without replacement)
    from ``index`` (default: all rows) with ``numpy.random.default_rng(seed)`` and scores each one.
    When ``size`` equals the number of candidate cells, the one possible subset is scored (standard deviation 0).
    """
    hi, lo = _pair(X_high, X_low)
    idx = np.arange(hi.shape[0]) if index is None else _check_index(index, hi.shape[0])
    k, size = _check_int(k, "k", minimum=1), _check_int(size, "size")
    n_draws, seed = _check_int(n_draws, "n_draws", minimum=1), _check_seed(seed)
    if not k < size <= idx.size:
        raise ValueError(f"size must be in (k, number of candidate cells] = ({k}, {idx.size}], got {size}")
    if size == idx.size:
        return knn_preservation(hi[idx], lo[idx], k=k), 0.0
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(n_draws):
        pick = rng.choice(idx, size=size, replace=False)
        scores.append(knn_preservation(hi[pick], lo[pick], k=k))
    return float(np.mean(scores)), float(np.std(scores))


def _check_index(index, n: int) -> np.ndarray:
    """Candidate rows: a boolean mask of length ``n`` or distinct integer positions in ``[0, n)``."""
    idx = np.asarray(index)
    if idx.ndim != 1:
        raise ValueError(f"index must be one-dimensional (row positions or a mask), got shape {idx.shape}")
    if idx.dtype == bool:
        if idx.size != n:
            raise ValueError(f"index as a boolean mask must have one entry per row ({n}), got {idx.size}")
        return np.flatnonzero(idx)
    if idx.size and idx.dtype.kind not in "iu":
        raise ValueError(f"index must hold integer row positions or be a boolean mask, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(
            f"index must hold row positions in [0, {n}), got values from {idx.min()} to {idx.max()}"
        )
    if np.unique(idx).size != idx.size:
        raise ValueError("index must not repeat a row (a repeated cell is its own nearest neighbour)")
    return idx


def trustworthiness(X_high, X_low, *, k: int = 10) -> float:
    """Trustworthiness of an embedding (:func:`sklearn.manifold.trustworthiness`), in [0, 1]."""
    from sklearn.manifold import trustworthiness as _tw

    hi, lo = _pair(X_high, X_low)
    k = _check_int(k, "k")
    if not 1 <= k < hi.shape[0] / 2:
        raise ValueError(f"k must be in [1, n_cells / 2), got {k}")
    return float(_tw(hi, lo, n_neighbors=k))
