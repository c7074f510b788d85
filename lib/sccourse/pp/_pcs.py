"""Principal components of raw counts (the elastic-embedding assignment's preparation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._validation import check_int as _check_int
from .._validation import check_key as _check_key
from .._validation import check_seed as _check_seed
from ._common import _check_nonempty, _check_raw_counts, _global_random_state_kept

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["prepare_pcs"]


def prepare_pcs(
    adata: AnnData,
    *,
    n_top_genes: int | None = 2000,
    n_pcs: int = 50,
    n_cells: int | None = None,
    label_key: str | None = None,
    seed: int = 0,
    key_added: str | None = None,
) -> AnnData:
    """Counts → library-size normalisation → log1p → top variable genes → standardise → PCA.

    ``x_ng = log(1 + 10⁴ c_ng / Σ_g c_ng)``, genes scaled to unit variance (clipped at 10), then the
    first ``n_pcs`` principal components (scanpy, seeded).

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X``; it is not modified (a processed copy is returned).
    n_top_genes
        Highly variable genes kept (Seurat flavour); ``None`` keeps every gene.
    n_pcs
        Principal components (>= 2; at most ``min(cells, genes) − 1``).
    n_cells
        Optional random subsample of cells (for quick runs), drawn with ``numpy.random.default_rng(seed)``.
    label_key
        When given, cells whose ``obs[label_key]`` is missing are dropped.
    seed
        Seeds the subsample and the PCA.
    key_added
        ``None``: the PCs in ``obsm["X_pca"]``, loadings in ``varm["PCs"]``, variances in ``uns["pca"]``
        (scanpy's keys); a string ``k``: all three under ``k`` (scanpy's ``key_added`` rule).

    Returns
    -------
    AnnData
        The processed copy.
    """
    import scanpy as sc

    _check_raw_counts(adata)
    _check_nonempty(adata, min_cells=3, what="PCA")
    n_pcs = _check_int(n_pcs, "n_pcs", minimum=2)
    if n_top_genes is not None:
        n_top_genes = _check_int(n_top_genes, "n_top_genes", minimum=1)
    if n_cells is not None:
        n_cells = _check_int(n_cells, "n_cells", minimum=3)
    seed = _check_seed(seed)
    if key_added is not None:
        _check_key(key_added)
    if label_key is not None and label_key not in adata.obs:
        raise ValueError(f"obs has no column {label_key!r} (present: {list(adata.obs.columns)})")
    a = adata.copy()
    if label_key is not None:
        a = a[a.obs[label_key].notna().to_numpy()].copy()
    if n_cells is not None and n_cells < a.n_obs:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(a.n_obs, size=n_cells, replace=False))
        a = a[keep].copy()
    a.X = a.X.astype(np.float32)
    sc.pp.filter_genes(a, min_cells=3)
    if min(a.shape) - 1 < 2:
        raise ValueError(
            f"{a.n_obs} cells x {a.n_vars} genes (seen in >= 3 cells) remain: too few for 2 principal components"
        )
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    if n_top_genes is not None and n_top_genes < a.n_vars:
        sc.pp.highly_variable_genes(a, n_top_genes=n_top_genes, flavor="seurat")
        a = a[:, a.var["highly_variable"].to_numpy()].copy()
    if hasattr(a.X, "toarray"):  # scaling centres every gene, so the matrix becomes dense anyway
        a.X = a.X.toarray()
    sc.pp.scale(a, max_value=10)
    n_pcs = min(n_pcs, min(a.shape) - 1)
    with _global_random_state_kept():
        sc.pp.pca(a, n_comps=n_pcs, random_state=seed, key_added=key_added)
    if label_key is not None and hasattr(a.obs[label_key], "cat"):
        a.obs[label_key] = a.obs[label_key].cat.remove_unused_categories()
    return a
