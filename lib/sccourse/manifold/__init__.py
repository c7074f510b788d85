"""Cell graphs, heat diffusion on the cell manifold, and denoisers trained against manifold noise.

The pipeline of assignment ``01_tcell_manifold``:

1. :func:`preprocess_and_cluster` — filter, normalise, log1p, PCA, kNN graph, Leiden, UMAP (scanpy);
   :func:`marker_table`, :func:`select_clusters_by_markers` and :func:`select_t_cells` pick the T-cell clusters
   from marker expression.
2. :func:`embed_cells` — re-embed a subset (PCA, cosine kNN graph, UMAP, diffusion map).
3. Graph operators from the kNN affinities ``W`` (all ``scipy.sparse``): :func:`degree`,
   :func:`markov_operator` ``P = D⁻¹W``, :func:`symmetrized_operator` ``S = (P + Pᵀ)/2``,
   :func:`laplacian` ``L = I − D^{-1/2} W D^{-1/2}`` (or ``D − W``); :func:`to_torch_sparse`, :func:`to_torch`.
4. Noise processes :class:`GaussianNoise` (``X + σε``) and :class:`ManifoldHeat` (``S^k X``).
5. :func:`train_denoiser` (MLP d→hidden→d, GELU, AdamW, MSE, noise re-drawn each epoch, validation cells from
   :func:`split_cells`) and :func:`denoise`; :func:`match_sigma`; :func:`laplacian_energy` ``tr(XᵀLX)``.
6. Stretch: :func:`train_conditional_denoiser` (conditioned on the number of heat steps) and
   :func:`iterative_denoise` (from the strongest level down, cold-diffusion update).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from ._device import get_device, seeded

__all__ = [
    "PBMC_MARKERS",
    "T_CELL_MARKERS",
    "Denoiser",
    "GaussianNoise",
    "LevelDenoiser",
    "ManifoldHeat",
    "NoiseProcess",
    "degree",
    "denoise",
    "embed_cells",
    "iterative_denoise",
    "laplacian",
    "laplacian_energy",
    "marker_table",
    "markov_operator",
    "match_sigma",
    "preprocess_and_cluster",
    "select_clusters_by_markers",
    "select_t_cells",
    "split_cells",
    "symmetrized_operator",
    "t_cell_clusters",
    "to_torch",
    "to_torch_sparse",
    "top_variable_genes",
    "train_conditional_denoiser",
    "train_denoiser",
]

PBMC_MARKERS = ("CD3D", "CD3E", "MS4A1", "LYZ", "NKG7", "GNLY", "PPBP")
T_CELL_MARKERS = ("CD3D", "CD3E")


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _as_affinity(W, *, symmetric: bool = False) -> sp.csr_matrix:
    """Validate a (cells x cells) affinity matrix and return it as float64 CSR."""
    if isinstance(W, torch.Tensor):
        W = W.to_dense().detach().cpu().numpy() if W.layout != torch.strided else W.detach().cpu().numpy()
    if sp.issparse(W):
        M = sp.csr_matrix(W, dtype=np.float64)
    else:
        arr = np.asarray(W)
        if arr.dtype == object or arr.ndim != 2:
            raise ValueError(f"W must be a 2-D (cells x cells) matrix, got an array of shape {arr.shape}")
        M = sp.csr_matrix(arr.astype(np.float64))
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"W must be square (cells x cells), got shape {M.shape}")
    if M.shape[0] == 0:
        raise ValueError("W is empty (0 cells)")
    if not np.isfinite(M.data).all():
        raise ValueError("W contains NaN or infinite values; affinities must be finite")
    if (M.data < 0).any():
        raise ValueError(f"W must hold non-negative affinities, found a minimum of {M.data.min():.3g}")
    M.eliminate_zeros()
    if symmetric:
        diff = abs(M - M.T)
        scale = max(float(abs(M).max()), 1e-300)
        if diff.nnz and diff.max() > 1e-8 * scale:
            raise ValueError(
                f"W must be symmetric (an undirected graph), max |W - Wᵀ| is {diff.max():.3g}; "
                "symmetrise it first, e.g. (W + W.T) / 2"
            )
    return M


def _degrees_checked(M: sp.csr_matrix) -> np.ndarray:
    d = np.asarray(M.sum(axis=1)).ravel()
    if (d <= 0).any():
        bad = np.flatnonzero(d <= 0)
        raise ValueError(
            f"{bad.size} cell(s) have zero degree (no neighbours), e.g. row {bad[0]}; "
            "the operator needs every row of W to have a positive sum"
        )
    return d


def _as_float_array(X, name: str = "X") -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if sp.issparse(X):
        X = X.toarray()
    arr = np.asarray(X)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (cells x genes) matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_tensor(X, name: str = "X", *, dtype=torch.float32, device=None) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        if X.layout != torch.strided:
            X = X.to_dense()
        if X.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (cells x genes) matrix, got shape {tuple(X.shape)}")
        if not torch.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        out = X.to(dtype=dtype)
    else:
        out = torch.from_numpy(np.ascontiguousarray(_as_float_array(X, name))).to(dtype)
    return out if device is None else out.to(device)


# --------------------------------------------------------------------------------------
# scanpy pipeline (AnnData in, AnnData out)
# --------------------------------------------------------------------------------------
def preprocess_and_cluster(
    adata,
    *,
    min_cells: int = 3,
    target_sum: float = 1e4,
    n_comps: int = 50,
    n_neighbors: int = 15,
    n_pcs: int = 30,
    resolution: float = 0.5,
    n_top_genes: int | None = None,
    keep_genes: Sequence[str] = PBMC_MARKERS,
    umap: bool = True,
    seed: int = 0,
    copy: bool = True,
):
    """Standard scanpy preprocessing and clustering of raw counts.

    Filter genes seen in fewer than ``min_cells`` cells, scale every cell to ``target_sum`` counts,
    ``log1p``; PCA (``n_comps``), kNN graph (``n_neighbors`` on the first ``n_pcs`` PCs), Leiden
    (igraph flavour, ``resolution``), UMAP.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X``.
    n_top_genes
        If given, keep only the ``n_top_genes`` genes of largest log-expression variance (plus
        ``keep_genes``) before PCA: a faster, smaller variant for quick runs.
    seed
        Seeds PCA, the graph, Leiden and UMAP.
    copy
        Work on a copy (default) and return it.

    Returns
    -------
    AnnData
        Log-normalised ``.X``, raw counts in ``layers["counts"]``, ``obsm["X_pca"]``, ``obsm["X_umap"]``,
        ``obs["leiden"]`` and the graph in ``obsp``.
    """
    import scanpy as sc

    from ._validation import check_anndata, check_counts, check_float

    seed = _check_seed(seed)
    check_anndata(adata)
    check_counts(adata.X, where="adata.X")
    for name, v in {
        "min_cells": min_cells,
        "n_comps": n_comps,
        "n_neighbors": n_neighbors,
        "n_pcs": n_pcs,
    }.items():
        _check_positive_int(v, name)
    if n_pcs > n_comps:
        raise ValueError(f"n_pcs ({n_pcs}) must not exceed n_comps ({n_comps})")
    check_float(resolution, "resolution", minimum=0.0, strict=True)
    check_float(target_sum, "target_sum", minimum=0.0, strict=True)
    if adata.n_obs <= n_neighbors:
        raise ValueError(f"need more cells ({adata.n_obs}) than n_neighbors ({n_neighbors})")
    a = adata.copy() if copy else adata
    sc.pp.filter_genes(a, min_cells=min_cells)
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=target_sum)
    sc.pp.log1p(a)
    if n_top_genes is not None:
        n_top_genes = _check_positive_int(n_top_genes, "n_top_genes")
        keep = np.zeros(a.n_vars, dtype=bool)
        keep[top_variable_genes(a.X, n_top_genes)] = True
        keep |= a.var_names.isin(list(keep_genes))
        a._inplace_subset_var(keep)
    sc.pp.pca(a, n_comps=min(n_comps, min(a.shape) - 1), random_state=seed)
    sc.pp.neighbors(a, n_neighbors=n_neighbors, n_pcs=min(n_pcs, a.obsm["X_pca"].shape[1]), random_state=seed)
    sc.tl.leiden(a, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
    if umap:
        sc.tl.umap(a, random_state=seed)
    return a


def _gene_matrix(adata, genes: Sequence[str]) -> np.ndarray:
    genes = list(genes)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise ValueError(f"genes {missing} are not in adata.var_names")
    X = adata[:, genes].X
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def marker_table(
    adata, markers: Sequence[str] = PBMC_MARKERS, *, groupby: str = "leiden", stat: str = "mean"
) -> pd.DataFrame:
    """Per-group summary of marker expression (groups x markers).

    ``stat="mean"``: mean of ``.X`` (log-normalised); ``stat="fraction"``: fraction of cells with
    expression > 0.
    """
    if groupby not in adata.obs:
        raise ValueError(f"adata.obs has no column {groupby!r}; run preprocess_and_cluster first")
    if stat not in ("mean", "fraction"):
        raise ValueError(f"stat must be 'mean' or 'fraction', got {stat!r}")
    X = _gene_matrix(adata, markers)
    if stat == "fraction":
        X = (X > 0).astype(float)
    df = pd.DataFrame(X, columns=list(markers), index=adata.obs_names)
    groups = adata.obs[groupby]
    out = df.groupby(groups.values, observed=True).mean()
    out.index.name = groupby
    if isinstance(groups.dtype, pd.CategoricalDtype):
        out = out.reindex([c for c in groups.cat.categories if c in out.index])
    return out


def t_cell_clusters(
    adata,
    *,
    groupby: str = "leiden",
    markers: Sequence[str] = T_CELL_MARKERS,
    min_ratio: float = 0.5,
    min_fraction: float = 0.5,
) -> list:
    """Clusters whose cells express the T-cell receptor complex (CD3).

    A cluster is a T-cell cluster when its mean CD3 score (mean of ``markers`` in log-normalised
    units) is at least ``min_ratio`` times the largest cluster score, and at least ``min_fraction``
    of its cells express one of ``markers``. No cluster id is hard-coded.
    """
    if not 0 < min_ratio <= 1 or not 0 <= min_fraction <= 1:
        raise ValueError("min_ratio must be in (0, 1] and min_fraction in [0, 1]")
    means = marker_table(adata, markers, groupby=groupby).mean(axis=1)
    X = _gene_matrix(adata, markers)
    frac = pd.Series((X > 0).any(axis=1)).groupby(adata.obs[groupby].values, observed=True).mean()
    top = means.max()
    if top <= 0:
        return []
    return [c for c in means.index if means[c] >= min_ratio * top and frac[c] >= min_fraction]


def select_clusters_by_markers(
    adata,
    markers: Sequence[str] = T_CELL_MARKERS,
    *,
    groupby: str = "leiden",
    min_ratio: float = 0.5,
    min_fraction: float = 0.0,
) -> np.ndarray:
    """Boolean mask (length ``n_obs``) of the cells of every group that expresses a set of markers.

    A group's score is the mean over its cells of the mean of ``markers`` (``.X``, log-normalised); a group is
    selected when its score is at least ``min_ratio`` times the largest group score (``>=``), and at least
    ``min_fraction`` of its cells express one of the markers (``> 0``; the default 0 switches this off). No group
    id is hard-coded, so the result does not depend on the group names.

    Parameters
    ----------
    adata
        AnnData with log-normalised ``.X`` (dense or sparse) and the groups in ``obs[groupby]``.
    markers
        Gene names in ``adata.var_names``, e.g. ``("CD3D", "CD3E")`` for T cells or ``("MS4A1",)`` for B cells.
    groupby
        Column of ``adata.obs`` with the group (cluster) labels.
    min_ratio
        In (0, 1]: the fraction of the best group's score a group needs.
    min_fraction
        In [0, 1]: the fraction of a group's cells that must express a marker.

    Returns
    -------
    numpy.ndarray of bool
    """
    chosen = t_cell_clusters(
        adata, groupby=groupby, markers=markers, min_ratio=min_ratio, min_fraction=min_fraction
    )
    return adata.obs[groupby].isin(chosen).to_numpy()


def select_t_cells(
    adata,
    *,
    groupby: str = "leiden",
    markers: Sequence[str] = T_CELL_MARKERS,
    min_ratio: float = 0.5,
    min_fraction: float = 0.5,
) -> np.ndarray:
    """Boolean mask (length ``n_obs``) of cells in the T-cell clusters of :func:`t_cell_clusters`."""
    chosen = t_cell_clusters(
        adata, groupby=groupby, markers=markers, min_ratio=min_ratio, min_fraction=min_fraction
    )
    return adata.obs[groupby].isin(chosen).to_numpy()


def embed_cells(
    adata,
    *,
    n_comps: int = 50,
    n_neighbors: int = 15,
    n_pcs: int = 30,
    metric: str = "cosine",
    umap: bool = True,
    diffmap: bool = True,
    n_diffmap: int = 10,
    seed: int = 0,
    copy: bool = True,
):
    """Re-embed a subset of cells: PCA, kNN graph (``metric``), UMAP and diffusion map.

    Returns
    -------
    AnnData
        ``obsm["X_pca"]``, ``obsp["connectivities"]`` (the affinities W), ``obsm["X_umap"]``,
        ``obsm["X_diffmap"]`` (component 0 is the trivial constant one).
    """
    import scanpy as sc

    seed = _check_seed(seed)
    if adata.n_obs <= n_neighbors:
        raise ValueError(f"need more cells ({adata.n_obs}) than n_neighbors ({n_neighbors})")
    a = adata.copy() if copy else adata
    n_comps = min(n_comps, min(a.shape) - 1)
    sc.pp.pca(a, n_comps=n_comps, random_state=seed)
    sc.pp.neighbors(a, n_neighbors=n_neighbors, n_pcs=min(n_pcs, n_comps), metric=metric, random_state=seed)
    if umap:
        sc.tl.umap(a, random_state=seed)
    if diffmap:
        sc.tl.diffmap(a, n_comps=n_diffmap)
    return a


def top_variable_genes(X, n: int) -> np.ndarray:
    """Column indices of the ``n`` columns of largest variance (ties broken by index), sorted by variance."""
    n = _check_positive_int(n, "n")
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        mean = np.asarray(X.mean(axis=0)).ravel()
        var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    else:
        var = _as_float_array(X).astype(np.float64).var(axis=0)
    n = min(n, var.size)
    return np.argsort(-var, kind="stable")[:n]


# --------------------------------------------------------------------------------------
# graph operators (scipy.sparse)
# --------------------------------------------------------------------------------------
def degree(W) -> np.ndarray:
    """Degree vector ``d = W 1`` (row sums of the affinity matrix)."""
    return np.asarray(_as_affinity(W).sum(axis=1)).ravel()


def markov_operator(W) -> sp.csr_matrix:
    """Random-walk operator ``P = D⁻¹ W`` (rows sum to 1).

    Parameters
    ----------
    W
        (cells x cells) non-negative affinities, scipy.sparse or dense; every row needs a positive sum.

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    M = _as_affinity(W)
    d = _degrees_checked(M)
    return sp.csr_matrix(sp.diags(1.0 / d) @ M)


def symmetrized_operator(W) -> sp.csr_matrix:
    """Symmetrised random-walk operator ``S = (P + Pᵀ)/2`` with ``P = D⁻¹W``.

    Its eigenvalues are real but not confined to [0, 1]: ``I − S`` can be indefinite.
    """
    P = markov_operator(W)
    return sp.csr_matrix(0.5 * (P + P.T))


def laplacian(W, *, normalized: bool = True) -> sp.csr_matrix:
    """Graph Laplacian of a symmetric affinity matrix.

    ``normalized=True``: ``L = I − D^{-1/2} W D^{-1/2}`` (PSD, eigenvalues in [0, 2],
    ``L D^{1/2} 1 = 0``). ``normalized=False``: ``L = D − W`` (PSD, ``L 1 = 0``).
    ``W`` must be symmetric, non-negative and (for the normalized form) have no zero rows.
    For a ``W`` with zero diagonal this equals ``scipy.sparse.csgraph.laplacian(W, normed=...)``.
    """
    M = _as_affinity(W, symmetric=True)
    n = M.shape[0]
    if normalized:
        d = _degrees_checked(M)
        s = 1.0 / np.sqrt(d)
        A = sp.diags(s) @ M @ sp.diags(s)
        L = sp.identity(n, format="csr") - A
    else:
        d = np.asarray(M.sum(axis=1)).ravel()
        L = sp.diags(d) - M
    L = sp.csr_matrix(L)
    L = 0.5 * (L + L.T)  # exact symmetry after floating-point scaling
    return sp.csr_matrix(L)


def to_torch_sparse(
    M, *, device="auto", dtype: torch.dtype = torch.float32, layout: str = "coo"
) -> torch.Tensor:
    """A scipy.sparse (or dense numpy) matrix as a torch sparse tensor on ``device``.

    ``layout="coo"`` gives a coalesced ``torch.sparse_coo_tensor``; ``layout="csr"`` a
    ``torch.sparse_csr_tensor`` (faster ``S @ X`` on CPU).
    """
    if layout not in ("coo", "csr"):
        raise ValueError(f"layout must be 'coo' or 'csr', got {layout!r}")
    dev = get_device(device)
    if isinstance(M, torch.Tensor):
        M = M.to_dense().detach().cpu().numpy() if M.layout != torch.strided else M.detach().cpu().numpy()
    if not sp.issparse(M):
        arr = np.asarray(M)
        if arr.ndim != 2:
            raise ValueError(f"M must be a 2-D matrix, got shape {arr.shape}")
        M = sp.csr_matrix(arr)
    M = sp.csr_matrix(M)
    if M.nnz and not np.isfinite(M.data).all():
        raise ValueError("M contains NaN or infinite values")
    M.sum_duplicates()
    M.sort_indices()
    if layout == "coo":
        C = M.tocoo()
        idx = torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64))
        val = torch.from_numpy(C.data).to(dtype)
        return torch.sparse_coo_tensor(idx, val, size=C.shape, check_invariants=False).coalesce().to(dev)
    # 32-bit CSR indices when they fit: torch's CSR x dense product (MKL, cuSPARSE) is markedly faster with them
    itype = np.int32 if max(M.nnz, *M.shape) < 2**31 - 1 else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        T = torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype(itype)),
            torch.from_numpy(M.indices.astype(itype)),
            torch.from_numpy(M.data).to(dtype),
            size=M.shape,
            check_invariants=False,
        )
    return T.to(dev)


def to_torch(X, *, device="auto", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A dense (cells x genes) torch tensor on ``device`` from numpy, scipy.sparse, torch or AnnData (``.X``)."""
    if hasattr(X, "obs_names") and hasattr(X, "X"):
        X = X.X
    return _as_tensor(X, dtype=dtype, device=get_device(device))


# --------------------------------------------------------------------------------------
# noise processes
# --------------------------------------------------------------------------------------
class NoiseProcess:
    """Interface: ``sample(X)`` returns a corrupted copy of the clean (cells x genes) ``X``."""

    def sample(self, X: torch.Tensor, **kwargs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__


class GaussianNoise(NoiseProcess):
    """Isotropic Gaussian corruption ``X̃ = X + σ ε``, ``ε ~ N(0, I)``.

    Parameters
    ----------
    sigma
        Noise standard deviation (>= 0).
    seed
        Seeds a private CPU generator: the sequence of draws is the same on every run and every
        device (noise is drawn on the CPU, then moved). ``None`` uses torch's global generator.
    """

    def __init__(self, sigma: float = 0.1, *, seed: int | None = None):
        if not np.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.seed = None if seed is None else _check_seed(seed)
        self._gen = None
        if seed is not None:
            self._gen = torch.Generator().manual_seed(self.seed)

    def sample(self, X, sigma: float | None = None, *, generator: torch.Generator | None = None, **kwargs):
        """``X + σ ε`` (same type as ``X``: torch in, torch out; numpy in, numpy out)."""
        s = self.sigma if sigma is None else float(sigma)
        if not np.isfinite(s) or s < 0:
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        numpy_in = not isinstance(X, torch.Tensor)
        Xt = _as_tensor(X, dtype=torch.float64 if numpy_in else X.dtype)
        gen = generator if generator is not None else self._gen
        eps = torch.randn(Xt.shape, generator=gen, dtype=Xt.dtype, device="cpu")
        out = Xt + s * eps.to(Xt.device)
        return out.numpy() if numpy_in else out

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma:.4g}, seed={self.seed})"


class ManifoldHeat(NoiseProcess):
    """Heat diffusion along the cell graph: ``k`` steps of ``X ← S X``, i.e. ``X̃ = S^k X``.

    Parameters
    ----------
    S
        (cells x cells) diffusion operator: scipy.sparse, dense numpy or torch (sparse or dense),
        usually :func:`symmetrized_operator`.
    steps
        Default number of steps ``k`` (>= 0).
    """

    def __init__(self, S, steps: int = 1):
        if isinstance(S, torch.Tensor):
            if S.ndim != 2 or S.shape[0] != S.shape[1]:
                raise ValueError(f"S must be a square (cells x cells) operator, got shape {tuple(S.shape)}")
            S_t = S.coalesce() if S.layout == torch.sparse_coo else S
            vals = S_t.values() if S_t.layout in (torch.sparse_coo, torch.sparse_csr) else S_t
            if not torch.isfinite(vals).all():
                raise ValueError("S contains NaN or infinite values")
            self._base = S_t
            self._S = {}
        else:
            M = sp.csr_matrix(S) if sp.issparse(S) else None
            if M is None:
                arr = np.asarray(S)
                if arr.ndim != 2:
                    raise ValueError(f"S must be a square (cells x cells) operator, got shape {arr.shape}")
                M = sp.csr_matrix(arr.astype(np.float64))
            if M.shape[0] != M.shape[1]:
                raise ValueError(f"S must be a square (cells x cells) operator, got shape {M.shape}")
            if M.nnz and not np.isfinite(M.data).all():
                raise ValueError("S contains NaN or infinite values")
            self._base = to_torch_sparse(M, device="cpu", dtype=torch.float64, layout="csr")
            self._S = {}
        self.n = int(self._base.shape[0])
        self.steps = _check_positive_int(steps, "steps", minimum=0)

    def operator(self, device, dtype) -> torch.Tensor:
        """The operator as a torch tensor on ``device`` with ``dtype`` (cached)."""
        key = (torch.device(device), dtype)
        if key not in self._S:
            self._S[key] = self._base.to(dtype).to(device)
        return self._S[key]

    def _apply(self, S, X):
        return S @ X if S.layout == torch.strided else torch.sparse.mm(S, X)

    def sample(self, X, steps: int | None = None, **kwargs):
        """``S^k X`` with ``k = steps`` (default ``self.steps``); torch in, torch out; numpy in, numpy out."""
        k = self.steps if steps is None else _check_positive_int(steps, "steps", minimum=0)
        numpy_in = not isinstance(X, torch.Tensor)
        Xt = _as_tensor(X, dtype=torch.float64 if numpy_in else X.dtype)
        if Xt.shape[0] != self.n:
            raise ValueError(
                f"X has {Xt.shape[0]} rows (cells) but the operator S is {self.n} x {self.n}; "
                "X must hold the same cells as the graph, in the same order"
            )
        S = self.operator(Xt.device, Xt.dtype)
        for _ in range(k):
            Xt = self._apply(S, Xt)
        return Xt.numpy() if numpy_in else Xt

    def powers(self, X: torch.Tensor, max_steps: int) -> torch.Tensor:
        """Stack ``[S⁰X, S¹X, …, S^K X]`` of shape ``(K+1, cells, genes)``."""
        K = _check_positive_int(max_steps, "max_steps", minimum=0)
        out = [X]
        for _ in range(K):
            out.append(self.sample(out[-1], steps=1))
        return torch.stack(out)

    def __repr__(self) -> str:
        return f"ManifoldHeat(n={self.n}, steps={self.steps})"


# --------------------------------------------------------------------------------------
# denoisers
# --------------------------------------------------------------------------------------
class Denoiser(nn.Module):
    """MLP ``d → hidden → d`` with a GELU: ``x̂ = W₂ GELU(W₁ x̃ + b₁) + b₂``.

    ``genes`` (buffer) holds the columns of the full matrix the model was trained on.
    """

    def __init__(self, d: int, hidden: int = 512, genes=None):
        super().__init__()
        self.d, self.hidden = int(d), int(hidden)
        self.net = nn.Sequential(nn.Linear(self.d, self.hidden), nn.GELU(), nn.Linear(self.hidden, self.d))
        g = torch.arange(self.d) if genes is None else torch.as_tensor(np.asarray(genes), dtype=torch.long)
        self.register_buffer("genes", g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _level_embedding(level: torch.Tensor, max_level: int, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of a noise level in [0, max_level] (dim/2 frequencies)."""
    t = level.to(torch.float32)[:, None] / max(max_level, 1)
    freqs = torch.exp(torch.linspace(0.0, math.log(100.0), dim // 2, device=level.device))
    ang = t * freqs[None, :] * math.pi
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


class LevelDenoiser(nn.Module):
    """Noise-level-conditioned MLP: ``x̂₀ = f([x̃, emb(k)])`` with a sinusoidal embedding of ``k``."""

    def __init__(self, d: int, max_level: int, hidden: int = 512, emb_dim: int = 32, genes=None):
        super().__init__()
        self.d, self.max_level, self.emb_dim = int(d), int(max_level), int(emb_dim)
        self.net = nn.Sequential(
            nn.Linear(self.d + self.emb_dim, hidden), nn.GELU(), nn.Linear(hidden, self.d)
        )
        g = torch.arange(self.d) if genes is None else torch.as_tensor(np.asarray(genes), dtype=torch.long)
        self.register_buffer("genes", g)

    def forward(self, x: torch.Tensor, level) -> torch.Tensor:
        if not isinstance(level, torch.Tensor) or level.ndim == 0:
            level = torch.full((x.shape[0],), float(level), device=x.device)
        return self.net(torch.cat([x, _level_embedding(level.to(x.device), self.max_level, self.emb_dim)], 1))


def _resolve_genes(X: torch.Tensor, genes) -> np.ndarray:
    n_genes = X.shape[1]
    if genes is None:
        return np.arange(n_genes)
    if isinstance(genes, (int, np.integer)) and not isinstance(genes, bool):
        if genes < 1:
            raise ValueError(f"genes as a count must be >= 1, got {genes}")
        return np.sort(top_variable_genes(X.cpu().numpy(), int(genes)))
    g = np.asarray(genes)
    if g.dtype == bool:
        if g.shape != (n_genes,):
            raise ValueError(f"a boolean genes mask must have length {n_genes}, got shape {g.shape}")
        g = np.flatnonzero(g)
    if g.ndim != 1 or g.size == 0 or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(
            "genes must be None, a count, a boolean mask or a non-empty 1-D array of column indices"
        )
    if g.min() < 0 or g.max() >= n_genes:
        raise ValueError(f"gene indices must lie in [0, {n_genes}), got range [{g.min()}, {g.max()}]")
    return g


def _split(n: int, val_fraction: float, gen: torch.Generator):
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    perm = torch.randperm(n, generator=gen)
    n_val = round(val_fraction * n)
    if n - n_val < 1:
        raise ValueError("val_fraction leaves no training cells")
    return perm[n_val:], perm[:n_val]


def split_cells(n: int, val_fraction: float = 0.1, seed: int = 0):
    """The training and validation cells :func:`train_denoiser` uses (a fixed split for every epoch).

    ``perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))``; the first
    ``n_val = round(val_fraction * n)`` cells of ``perm`` are held out for validation, the rest train.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Training and validation cell indices (int64, CPU), in the order of ``perm``.
    """
    n = _check_positive_int(n, "n")
    return _split(n, val_fraction, torch.Generator().manual_seed(_check_seed(seed)))


def _check_training(epochs, batch_size, lr, weight_decay):
    _check_positive_int(epochs, "epochs")
    _check_positive_int(batch_size, "batch_size")
    if not lr > 0 or weight_decay < 0:
        raise ValueError(
            f"lr must be > 0 and weight_decay >= 0, got lr={lr!r}, weight_decay={weight_decay!r}"
        )


def _epoch(model, opt, inputs, targets, idx_tr, idx_va, batch_size, gen, extra=None):
    loss_fn = nn.MSELoss()
    model.train()
    order = idx_tr[torch.randperm(idx_tr.numel(), generator=gen)].to(inputs.device)
    total = 0.0
    for start in range(0, order.numel(), batch_size):
        b = order[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        pred = model(inputs[b]) if extra is None else model(inputs[b], extra[b])
        loss = loss_fn(pred, targets[b])
        loss.backward()
        opt.step()
        total += loss.item() * b.numel()
    train = total / order.numel()
    val = float("nan")
    if idx_va.numel():
        model.eval()
        with torch.no_grad():
            v = idx_va.to(inputs.device)
            pred = model(inputs[v]) if extra is None else model(inputs[v], extra[v])
            val = loss_fn(pred, targets[v]).item()
    return train, val


def train_denoiser(
    X,
    noise: NoiseProcess,
    *,
    genes=None,
    hidden: int = 512,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.1,
    device="auto",
    seed: int = 0,
    progress: bool = True,
):
    """Train an MLP to undo a corruption: minimise ``‖f(noise(X)) − X‖²`` (MSE) with AdamW.

    The corruption is re-drawn for every cell at the start of each epoch (over all cells, so a
    graph operator sees the whole graph); the cells :func:`split_cells` picks (``val_fraction``, ``seed``) are
    held out for validation.

    Parameters
    ----------
    X
        Clean (cells x genes) matrix: numpy, scipy.sparse, torch or AnnData (``.X``).
    noise
        A :class:`NoiseProcess` (:class:`GaussianNoise`, :class:`ManifoldHeat`), or any object with a
        ``sample(X)`` method returning a corrupted copy of ``X``; it acts on the selected gene columns (both
        library processes act column-wise, so this equals noising all genes).
    genes
        None (all), an int ``k`` (the ``k`` most variable columns), a boolean mask or column indices.
    hidden, epochs, batch_size, lr, weight_decay
        Model width and optimiser settings.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed
        Seeds weights, split, shuffling and Gaussian draws: same seed, same model on CPU.
    progress
        tqdm bar over epochs.

    Returns
    -------
    (Denoiser, pandas.DataFrame)
        The trained model (eval mode, ``model.genes`` = columns used) and the history with columns
        ``epoch``, ``train_loss``, ``val_loss`` (MSE).
    """
    from tqdm.auto import tqdm

    if not callable(getattr(noise, "sample", None)):
        raise TypeError(
            "noise must be a NoiseProcess (GaussianNoise, ManifoldHeat) or another object with a "
            f"sample(X) method, got {type(noise).__name__}"
        )
    _check_training(epochs, batch_size, lr, weight_decay)
    seed = _check_seed(seed)
    hidden = _check_positive_int(hidden, "hidden")
    if hasattr(X, "obs_names") and hasattr(X, "X"):
        X = X.X
    dev = get_device(device)
    Xt = _as_tensor(X)
    if isinstance(noise, ManifoldHeat) and Xt.shape[0] != noise.n:
        raise ValueError(f"X has {Xt.shape[0]} cells but the heat operator has {noise.n}")
    cols = _resolve_genes(Xt, genes)
    X0 = Xt[:, torch.from_numpy(cols)].contiguous().to(dev)
    with seeded(seed, dev):  # local randomness: the notebook's global state is left as it was
        gen = torch.Generator().manual_seed(seed)
        idx_tr, idx_va = _split(X0.shape[0], val_fraction, gen)
        model = Denoiser(X0.shape[1], hidden, genes=cols).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        rows = []
        label = getattr(noise, "name", type(noise).__name__)
        bar = tqdm(range(1, epochs + 1), desc=f"denoiser [{label}]", disable=not progress, leave=False)
        for epoch in bar:
            # the library's processes draw from the run's generator; any other object is called as noise.sample(X)
            Xn = noise.sample(X0, generator=gen) if isinstance(noise, NoiseProcess) else noise.sample(X0)
            tr, va = _epoch(model, opt, Xn, X0, idx_tr, idx_va, batch_size, gen)
            rows.append({"epoch": epoch, "train_loss": tr, "val_loss": va})
            bar.set_postfix(train=f"{tr:.4f}", val=f"{va:.4f}")
    model.eval()
    return model, pd.DataFrame(rows)


def denoise(model: nn.Module, X, *, level=None, device=None) -> np.ndarray:
    """Apply a trained denoiser to noisy inputs (already restricted to ``model.genes``); numpy out."""
    dev = next(model.parameters()).device if device is None else get_device(device)
    Xt = _as_tensor(X, device=dev)
    d = getattr(model, "d", None)
    if d is None:  # any MLP: the input width of its first linear layer
        d = next((mod.in_features for mod in model.modules() if isinstance(mod, nn.Linear)), Xt.shape[1])
    if Xt.shape[1] != d:
        raise ValueError(f"X has {Xt.shape[1]} columns but the model expects {d} (its genes)")
    model.eval()
    with torch.no_grad():
        out = model(Xt) if level is None else model(Xt, level)
    return out.cpu().numpy()


def match_sigma(X, target, *, seed: int = 0, method: str = "empirical") -> float:
    """Gaussian σ whose mean per-cell L2 deviation ``mean_i ‖σ ε_i‖`` equals a target.

    Parameters
    ----------
    X
        Clean (cells x genes) matrix (its shape sets the number of cells and dimensions).
    target
        A number (the target mean deviation) or a corrupted copy of ``X`` (same shape), whose
        ``mean_i ‖X̃_i − X_i‖`` is the target (e.g. ``ManifoldHeat(S, k).sample(X)``).
    seed
        ``method="empirical"``: ``ε`` is the draw ``GaussianNoise(σ, seed=seed).sample(X)`` makes, and
        ``σ = target / mean_i ‖ε_i‖`` exactly (the deviation is linear in σ for a fixed draw).
    method
        ``"expected"``: closed form ``σ = target / c_d`` with ``c_d = E‖ε‖ = √2 Γ((d+1)/2) / Γ(d/2)``.

    Returns
    -------
    float
    """
    from scipy.special import gammaln

    if method not in ("empirical", "expected"):
        raise ValueError(f"method must be 'empirical' or 'expected', got {method!r}")
    Xt = _as_tensor(X, dtype=torch.float64 if not isinstance(X, torch.Tensor) else X.dtype)
    if isinstance(target, (int, float, np.floating, np.integer)) and not isinstance(target, bool):
        tgt = float(target)
    else:
        T = _as_tensor(target, "target", dtype=torch.float64).cpu()
        if tuple(T.shape) != tuple(Xt.shape):
            raise ValueError(f"target has shape {tuple(T.shape)} but X has shape {tuple(Xt.shape)}")
        tgt = float(torch.linalg.norm(T - Xt.cpu().to(torch.float64), dim=1).mean())
    if not np.isfinite(tgt) or tgt < 0:
        raise ValueError(f"the target deviation must be a finite number >= 0, got {tgt!r}")
    n, d = Xt.shape
    if method == "expected":
        c = math.sqrt(2.0) * math.exp(gammaln((d + 1) / 2) - gammaln(d / 2))
        return tgt / c
    gen = torch.Generator().manual_seed(_check_seed(seed))
    eps = torch.randn((n, d), generator=gen, dtype=Xt.dtype, device="cpu")
    return tgt / float(torch.linalg.norm(eps.to(torch.float64), dim=1).mean())


def laplacian_energy(L, X, *, per_cell: bool = False):
    """Dirichlet energy ``tr(Xᵀ L X)`` of a signal ``X`` (cells x genes) on a graph with Laplacian ``L``.

    With ``per_cell=True`` returns ``e_i = x_iᵀ (L X)_i`` (``Σ_i e_i = tr(XᵀLX)``); single terms can be
    negative, the total cannot for a PSD ``L``. For the normalized Laplacian
    ``tr(XᵀLX) = ½ Σ_ij w_ij ‖x_i/√d_i − x_j/√d_j‖²``: small when neighbours look alike.

    Torch inputs stay torch (differentiable: ``∂/∂X = (L + Lᵀ) X``); otherwise float64 numpy.
    """
    if isinstance(X, torch.Tensor):
        Xt = X if X.layout == torch.strided else X.to_dense()
        if Xt.ndim != 2:
            raise ValueError(f"X must be a 2-D (cells x genes) matrix, got shape {tuple(Xt.shape)}")
        if not torch.isfinite(Xt.detach()).all():
            raise ValueError("X contains NaN or infinite values")
        if isinstance(L, torch.Tensor):
            Lt = L.to(Xt.device, Xt.dtype)
        else:
            Lt = to_torch_sparse(L if sp.issparse(L) else np.asarray(L), device=Xt.device, dtype=Xt.dtype)
        if Lt.shape[0] != Lt.shape[1] or Lt.shape[1] != Xt.shape[0]:
            raise ValueError(f"L is {tuple(Lt.shape)} but X has {Xt.shape[0]} rows (cells); they must match")
        LX = Lt @ Xt if Lt.layout == torch.strided else torch.sparse.mm(Lt, Xt)
        e = (Xt * LX).sum(dim=1)
        return e if per_cell else e.sum()
    Xa = _as_float_array(X).astype(np.float64)
    Lm = L if sp.issparse(L) else np.asarray(L, dtype=np.float64)
    if Lm.ndim != 2 or Lm.shape[0] != Lm.shape[1] or Lm.shape[1] != Xa.shape[0]:
        raise ValueError(f"L is {Lm.shape} but X has {Xa.shape[0]} rows (cells); they must match")
    if sp.issparse(Lm) and Lm.nnz and not np.isfinite(Lm.data).all():
        raise ValueError("L contains NaN or infinite values")
    e = np.einsum("ij,ij->i", Xa, np.asarray(Lm @ Xa))
    return e if per_cell else float(e.sum())


# --------------------------------------------------------------------------------------
# stretch: level-conditioned (diffusion-style) denoiser
# --------------------------------------------------------------------------------------
def train_conditional_denoiser(
    X,
    heat: ManifoldHeat,
    *,
    max_steps: int = 10,
    genes=None,
    hidden: int = 512,
    emb_dim: int = 32,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.1,
    device="auto",
    seed: int = 0,
    progress: bool = True,
):
    """Train ``f(x̃, k) ≈ x₀`` where ``x̃ = (S^k X)_i`` and the level ``k ~ U{1..max_steps}`` is drawn per cell
    and per epoch (a heat "diffusion model": deterministic blurring instead of Gaussian noise).

    Returns
    -------
    (LevelDenoiser, pandas.DataFrame)
        Model and history (``epoch``, ``train_loss``, ``val_loss``).
    """
    from tqdm.auto import tqdm

    if not isinstance(heat, ManifoldHeat):
        raise TypeError(f"heat must be a ManifoldHeat, got {type(heat).__name__}")
    K = _check_positive_int(max_steps, "max_steps")
    _check_training(epochs, batch_size, lr, weight_decay)
    seed = _check_seed(seed)
    if hasattr(X, "obs_names") and hasattr(X, "X"):
        X = X.X
    dev = get_device(device)
    Xt = _as_tensor(X)
    if Xt.shape[0] != heat.n:
        raise ValueError(f"X has {Xt.shape[0]} cells but the heat operator has {heat.n}")
    cols = _resolve_genes(Xt, genes)
    X0 = Xt[:, torch.from_numpy(cols)].contiguous().to(dev)
    H = heat.powers(X0, K)  # (K+1, n, d)
    with seeded(seed, dev):  # local randomness: the notebook's global state is left as it was
        gen = torch.Generator().manual_seed(seed)
        idx_tr, idx_va = _split(X0.shape[0], val_fraction, gen)
        model = LevelDenoiser(X0.shape[1], K, hidden, emb_dim, genes=cols).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        rows = []
        cells = torch.arange(X0.shape[0], device=dev)
        bar = tqdm(range(1, epochs + 1), desc="level-conditioned denoiser", disable=not progress, leave=False)
        for epoch in bar:
            levels = torch.randint(1, K + 1, (X0.shape[0],), generator=gen).to(dev)
            inputs = H[levels, cells]
            tr, va = _epoch(model, opt, inputs, X0, idx_tr, idx_va, batch_size, gen, extra=levels)
            rows.append({"epoch": epoch, "train_loss": tr, "val_loss": va})
            bar.set_postfix(train=f"{tr:.4f}", val=f"{va:.4f}")
    model.eval()
    return model, pd.DataFrame(rows)


def iterative_denoise(model: LevelDenoiser, X_noisy, heat: ManifoldHeat, *, steps: int) -> np.ndarray:
    """Denoise ``X_noisy = S^K X₀`` from level ``K = steps`` down to 0 (cold-diffusion sampling).

    At level ``s``: ``x̂₀ = f(x_s, s)``, then ``x_{s−1} = x_s − S^s x̂₀ + S^{s−1} x̂₀``; the last step returns ``x̂₀``.
    All cells are denoised together (the heat operator couples them). Returns numpy.
    """
    K = _check_positive_int(steps, "steps")
    dev = next(model.parameters()).device
    x = _as_tensor(X_noisy, device=dev)
    if x.shape[0] != heat.n or x.shape[1] != model.d:
        raise ValueError(f"X_noisy must be ({heat.n} cells x {model.d} genes), got {tuple(x.shape)}")
    model.eval()
    with torch.no_grad():
        for s in range(K, 0, -1):
            x0 = model(x, s)
            if s == 1:
                x = x0
                break
            blur_prev = heat.sample(x0, steps=s - 1)
            x = x - heat.sample(blur_prev, steps=1) + blur_prev
    return x.cpu().numpy()
