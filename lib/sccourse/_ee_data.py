"""Data preparation for the elastic-embedding assignment (re-exported as :func:`sccourse.ee.prepare_pcs`)."""

from __future__ import annotations

import numpy as np


def prepare_pcs(
    adata,
    *,
    n_top_genes: int | None = 2000,
    n_pcs: int = 50,
    n_cells: int | None = None,
    label_key: str | None = None,
    seed: int = 0,
):
    """Counts → library-size normalisation → log1p → top variable genes → standardise → PCA.

    ``x_ng = log(1 + 10⁴ c_ng / Σ_g c_ng)``, genes scaled to unit variance (clipped at 10), then the
    first ``n_pcs`` principal components in ``obsm["X_pca"]`` (scanpy, seeded).

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X``; it is not modified (a processed copy is returned).
    n_top_genes
        Highly variable genes kept (Seurat flavour); ``None`` keeps every gene.
    n_pcs
        Principal components (at most ``min(cells, genes) − 1``).
    n_cells
        Optional random subsample of cells (for quick runs), drawn with ``seed``.
    label_key
        When given, cells whose ``obs[label_key]`` is missing are dropped.
    """
    import scanpy as sc

    if n_pcs < 2:
        raise ValueError(f"n_pcs must be >= 2, got {n_pcs}")
    a = adata.copy()
    if label_key is not None:
        if label_key not in a.obs:
            raise ValueError(f"obs has no column {label_key!r} (present: {list(a.obs.columns)})")
        a = a[a.obs[label_key].notna().to_numpy()].copy()
    if n_cells is not None and n_cells < a.n_obs:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(a.n_obs, size=n_cells, replace=False))
        a = a[keep].copy()
    a.X = a.X.astype(np.float32)
    sc.pp.filter_genes(a, min_cells=3)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    if n_top_genes is not None and n_top_genes < a.n_vars:
        sc.pp.highly_variable_genes(a, n_top_genes=n_top_genes, flavor="seurat")
        a = a[:, a.var["highly_variable"].to_numpy()].copy()
    if hasattr(a.X, "toarray"):  # scaling centres every gene, so the matrix becomes dense anyway
        a.X = a.X.toarray()
    sc.pp.scale(a, max_value=10)
    n_pcs = min(n_pcs, min(a.shape) - 1)
    sc.pp.pca(a, n_comps=n_pcs, random_state=seed)
    if label_key is not None and hasattr(a.obs[label_key], "cat"):
        a.obs[label_key] = a.obs[label_key].cat.remove_unused_categories()
    return a
