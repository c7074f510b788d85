"""The clustering pipeline (scanpy; AnnData in, AnnData out) and the re-embedding of a subset of cells."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp

from .._validation import check_anndata as _check_anndata
from .._validation import check_choice as _check_choice
from .._validation import check_finite as _check_finite
from .._validation import check_float as _check_float
from .._validation import check_int as _check_int
from .._validation import check_seed as _check_seed
from ._common import _check_bool, _check_raw_counts, _global_random_state_kept, _pipeline_keys
from ._genes import top_variable_genes

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["Metric", "embed_cells", "preprocess_and_cluster"]

Metric = Literal["cosine", "euclidean", "manhattan", "correlation"]
_METRICS = ("cosine", "euclidean", "manhattan", "correlation")


def preprocess_and_cluster(
    adata: AnnData,
    *,
    min_cells: int = 3,
    target_sum: float = 1e4,
    n_comps: int = 50,
    n_neighbors: int = 15,
    n_pcs: int = 30,
    resolution: float = 0.5,
    n_top_genes: int | None = None,
    keep_genes: Sequence[str] | None = None,
    umap: bool = True,
    seed: int = 0,
    copy: bool = True,
    key_added: str | None = None,
) -> AnnData:
    """Standard scanpy preprocessing and clustering of raw counts.

    Filter genes seen in fewer than ``min_cells`` cells, scale every cell to ``target_sum`` counts, ``log1p``;
    PCA (``n_comps``), kNN graph (``n_neighbors`` on the first ``n_pcs`` PCs), Leiden (igraph flavour,
    ``resolution``), UMAP.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X``.
    min_cells, target_sum, n_comps, n_neighbors, n_pcs, resolution
        The steps' settings (``n_pcs <= n_comps``; more cells than ``n_neighbors``).
    n_top_genes
        If given, keep only the ``n_top_genes`` genes of largest log-expression variance (plus
        ``keep_genes``) before PCA: a faster, smaller variant for quick runs.
    keep_genes
        Genes kept whatever their variance; ``None``: :data:`sccourse.manifold.PBMC_MARKERS`.
    umap
        Compute the UMAP.
    seed
        Seeds PCA, the graph, Leiden and UMAP (the caller's global random state is left as it was).
    copy
        Work on a copy (default) and return it; ``False`` works in place (and returns ``adata``).
    key_added
        ``None``: scanpy's keys — ``layers["counts"]``, ``obsm["X_pca"]``/``varm["PCs"]``/``uns["pca"]``,
        ``uns["neighbors"]``/``obsp["distances"]``/``obsp["connectivities"]``, ``obs["leiden"]``/``uns["leiden"]``,
        ``obsm["X_umap"]``/``uns["umap"]``. A string ``k``: ``layers["k_counts"]``, ``X_k_pca`` (obsm, varm, uns),
        ``uns["k_neighbors"]``/``obsp["k_neighbors_distances"]``/``obsp["k_neighbors_connectivities"]``,
        ``obs["k_leiden"]``/``uns["k_leiden"]``, ``X_k_umap`` (obsm, uns). ``uns["log1p"]`` keeps scanpy's name
        (scanpy reads it to know the data are logged).

    Returns
    -------
    AnnData
        Log-normalised ``.X`` with the slots above.
    """
    import scanpy as sc

    seed = _check_seed(seed)
    _check_raw_counts(adata)
    min_cells = _check_int(min_cells, "min_cells", minimum=1)
    n_comps = _check_int(n_comps, "n_comps", minimum=1)
    n_neighbors = _check_int(n_neighbors, "n_neighbors", minimum=1)
    n_pcs = _check_int(n_pcs, "n_pcs", minimum=1)
    if n_pcs > n_comps:
        raise ValueError(f"n_pcs ({n_pcs}) must not exceed n_comps ({n_comps})")
    _check_float(resolution, "resolution", minimum=0.0, strict=True)
    target_sum = _check_float(target_sum, "target_sum", minimum=0.0, strict=True)
    if n_top_genes is not None:
        n_top_genes = _check_int(n_top_genes, "n_top_genes", minimum=1)
    if keep_genes is None:
        from ..manifold._pipeline import PBMC_MARKERS as keep_genes
    if isinstance(keep_genes, str):
        raise ValueError(f"keep_genes must be a sequence of gene names, got the string {keep_genes!r}")
    keep_genes = list(keep_genes)
    umap = _check_bool(umap, "umap")
    copy = _check_bool(copy, "copy")
    keys = _pipeline_keys(key_added)
    if adata.n_obs <= n_neighbors:
        raise ValueError(f"need more cells ({adata.n_obs}) than n_neighbors ({n_neighbors})")
    seen = np.asarray((sp.csr_matrix(adata.X) > 0).sum(axis=0)).ravel() >= min_cells
    if seen.sum() < 2:
        raise ValueError(
            f"only {int(seen.sum())} gene(s) are seen in >= min_cells={min_cells} cells; need >= 2"
        )
    a = adata.copy() if copy else adata
    sc.pp.filter_genes(a, min_cells=min_cells)
    a.layers[keys["counts"]] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=target_sum)
    sc.pp.log1p(a)
    if n_top_genes is not None:
        keep = np.zeros(a.n_vars, dtype=bool)
        keep[top_variable_genes(a.X, n_top_genes)] = True
        keep |= a.var_names.isin(keep_genes)
        a._inplace_subset_var(keep)
    with _global_random_state_kept():
        sc.pp.pca(a, n_comps=min(n_comps, min(a.shape) - 1), random_state=seed, key_added=keys["pca"])
        pcs = a.obsm[keys["pca"] or "X_pca"]
        sc.pp.neighbors(
            a,
            n_neighbors=n_neighbors,
            n_pcs=min(n_pcs, pcs.shape[1]),
            use_rep=keys["pca"],
            random_state=seed,
            key_added=keys["neighbors"],
        )
        sc.tl.leiden(
            a,
            resolution=resolution,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
            key_added=keys["leiden"],
            neighbors_key=keys["neighbors"],
        )
        if umap:
            sc.tl.umap(
                a, random_state=seed, key_added=keys["umap"], neighbors_key=keys["neighbors"] or "neighbors"
            )
    return a


def embed_cells(
    adata: AnnData,
    *,
    n_comps: int = 50,
    n_neighbors: int = 15,
    n_pcs: int = 30,
    metric: Metric = "cosine",
    umap: bool = True,
    diffmap: bool = True,
    n_diffmap: int = 10,
    seed: int = 0,
    copy: bool = True,
    key_added: str | None = None,
) -> AnnData:
    """Re-embed a subset of cells: PCA, kNN graph (``metric``), UMAP and diffusion map.

    Parameters
    ----------
    adata
        AnnData with log-normalised ``.X`` (finite).
    n_comps, n_neighbors, n_pcs
        PCA size, neighbours per cell and PCs the graph uses (more cells than ``n_neighbors``).
    metric
        Distance of the kNN graph.
    umap, diffmap
        Compute the UMAP, the diffusion map (``n_diffmap`` components; component 0 is the trivial constant one).
    n_diffmap
        Diffusion components.
    seed
        Seeds PCA, the graph and UMAP (the caller's global random state is left as it was).
    copy
        Work on a copy (default) and return it.
    key_added
        ``None``: scanpy's keys — ``obsm["X_pca"]``/``varm["PCs"]``/``uns["pca"]``, ``uns["neighbors"]``/
        ``obsp["distances"]``/``obsp["connectivities"]`` (the affinities W), ``obsm["X_umap"]``/``uns["umap"]``,
        ``obsm["X_diffmap"]``/``uns["diffmap_evals"]``. A string ``k``: ``X_k_pca``, ``k_neighbors``
        (``obsp["k_neighbors_connectivities"]``, ...), ``X_k_umap``, ``obsm["X_k_diffmap"]``/
        ``uns["k_diffmap_evals"]``.

    Returns
    -------
    AnnData
    """
    import scanpy as sc

    _check_anndata(adata)
    seed = _check_seed(seed)
    n_comps = _check_int(n_comps, "n_comps", minimum=1)
    n_neighbors = _check_int(n_neighbors, "n_neighbors", minimum=1)
    n_pcs = _check_int(n_pcs, "n_pcs", minimum=1)
    n_diffmap = _check_int(n_diffmap, "n_diffmap", minimum=2)
    _check_choice(metric, "metric", _METRICS)
    umap = _check_bool(umap, "umap")
    diffmap = _check_bool(diffmap, "diffmap")
    copy = _check_bool(copy, "copy")
    keys = _pipeline_keys(key_added)
    if adata.X is None:
        raise ValueError("adata.X is empty (None); pass log-normalised expression")
    if adata.X.dtype.kind not in "biuf":
        raise ValueError(f"adata.X must hold numbers, found dtype {adata.X.dtype}")
    _check_finite(adata.X, "adata.X")
    if adata.n_vars < 2:
        raise ValueError(f"adata has {adata.n_vars} gene(s); a PCA needs at least 2")
    if adata.n_obs <= n_neighbors:
        raise ValueError(f"need more cells ({adata.n_obs}) than n_neighbors ({n_neighbors})")
    a = adata.copy() if copy else adata
    n_comps = min(n_comps, min(a.shape) - 1)
    with _global_random_state_kept():
        sc.pp.pca(a, n_comps=n_comps, random_state=seed, key_added=keys["pca"])
        sc.pp.neighbors(
            a,
            n_neighbors=n_neighbors,
            n_pcs=min(n_pcs, n_comps),
            use_rep=keys["pca"],
            metric=metric,
            random_state=seed,
            key_added=keys["neighbors"],
        )
        if umap:
            sc.tl.umap(
                a, random_state=seed, key_added=keys["umap"], neighbors_key=keys["neighbors"] or "neighbors"
            )
        if diffmap:
            _diffmap(a, n_diffmap, keys)
    return a


def _diffmap(a, n_comps: int, keys: dict) -> None:
    """``sc.tl.diffmap`` (which always writes ``obsm["X_diffmap"]``, ``uns["diffmap_evals"]``) into the keys asked
    for, leaving any diffusion map already stored under scanpy's names as it was.
    """
    import scanpy as sc

    target, evals = keys["diffmap"], keys["diffmap_evals"]
    if target == "X_diffmap":
        sc.tl.diffmap(a, n_comps=n_comps, neighbors_key=keys["neighbors"])
        return
    saved = {"obsm": a.obsm.get("X_diffmap"), "uns": a.uns.get("diffmap_evals")}
    try:
        sc.tl.diffmap(a, n_comps=n_comps, neighbors_key=keys["neighbors"])
        a.obsm[target] = a.obsm["X_diffmap"]
        a.uns[evals] = a.uns["diffmap_evals"]
    finally:
        for slot, name in (("obsm", "X_diffmap"), ("uns", "diffmap_evals")):
            store = getattr(a, slot)
            if saved[slot] is None:
                store.pop(name, None)
            else:
                store[name] = saved[slot]
