"""Quality control of raw count matrices (the orientation lesson).

Thin, documented wrappers around scanpy so the notebooks make one call per step; the
assignment asks students to write the underlying computations themselves. Normalisation lives in
:mod:`sccourse.pp`; :func:`normalize_log1p` is re-exported here (the same function), so blocking
``"sccourse.qc"`` in a graded cell still blocks it.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._validation import check_anndata as _check_anndata
from ._validation import check_counts as _check_counts_values
from ._validation import check_float as _check_float
from ._validation import check_int as _check_int
from ._validation import check_key as _check_key
from .pp import normalize_log1p

__all__ = [
    "mito_genes",
    "qc_metrics",
    "cell_gene_masks",
    "filter_cells_genes",
    "normalize_log1p",
    "top_genes_by_fraction",
]


_QC_COLUMNS = ("total_counts", "n_genes_by_counts", "pct_counts_mt", "n_cells_by_counts", "mt")


def _check_counts(adata: ad.AnnData) -> None:
    _check_anndata(adata)
    if adata.X is None:
        raise ValueError("adata.X is empty (None); pass an AnnData with raw counts in .X")
    _check_counts_values(adata.X, where="adata.X")


def _qc_keys(key_added: str | None) -> dict[str, str]:
    """Column names written by :func:`qc_metrics`: scanpy's, or each prefixed with ``key_added + "_"``."""
    if key_added is None:
        return {c: c for c in _QC_COLUMNS}
    k = _check_key(key_added)
    return {c: f"{k}_{c}" for c in _QC_COLUMNS}


def _detected(X: sp.csr_matrix, *, axis: int) -> np.ndarray:
    """Number of entries > 0 per row (axis=1) or column (axis=0); explicitly stored zeros do not count."""
    present = sp.csr_matrix(((X.data > 0).astype(np.int64), X.indices, X.indptr), shape=X.shape)
    return np.asarray(present.sum(axis=axis)).ravel().astype(np.int64)


def _check_prefix(prefix, name: str) -> tuple[str, ...]:
    prefixes = prefix if isinstance(prefix, tuple) else (prefix,)
    if not prefixes or not all(isinstance(p, str) and p for p in prefixes):
        raise ValueError(f"{name} must be a non-empty string or a tuple of non-empty strings, got {prefix!r}")
    return prefixes


def mito_genes(var_names, *, prefix: str | tuple[str, ...] = ("MT-", "mt-")) -> np.ndarray:
    """Boolean mask of mitochondrial genes (names starting with ``prefix``; human ``MT-``, mouse ``mt-``)."""
    prefixes = _check_prefix(prefix, "prefix")
    if isinstance(var_names, str) or np.ndim(var_names) != 1:
        raise ValueError(
            f"var_names must be a one-dimensional sequence of gene names (e.g. adata.var_names), got "
            f"{var_names!r}"[:200]
        )
    return np.asarray(pd.Index(var_names).astype(str).str.startswith(prefixes), dtype=bool)


def qc_metrics(
    adata: ad.AnnData,
    *,
    mito_prefix: str | tuple[str, ...] = ("MT-", "mt-"),
    inplace: bool = True,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Per-cell QC: library size ``Σ_g x_cg``, genes detected ``#{g: x_cg > 0}``, mitochondrial percentage
    ``100 Σ_{g∈MT} x_cg / Σ_g x_cg``; per-gene ``n_cells_by_counts``.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X``.
    mito_prefix
        Prefix(es) of the mitochondrial gene names.
    inplace
        Write the columns into ``adata.obs`` / ``adata.var``.
    key_added
        ``None``: scanpy's :func:`scanpy.pp.calculate_qc_metrics` names — ``obs["total_counts"]``,
        ``obs["n_genes_by_counts"]``, ``obs["pct_counts_mt"]``, ``var["n_cells_by_counts"]`` and the flag
        ``var["mt"]``; a string ``k``: the same names prefixed with ``k_`` (``obs["k_total_counts"]``, ...).

    Returns
    -------
    pandas.DataFrame
        One row per cell with the columns ``total_counts``, ``n_genes_by_counts``, ``pct_counts_mt``.
    """
    _check_counts(adata)
    keys = _qc_keys(key_added)
    if not isinstance(inplace, (bool, np.bool_)):
        raise ValueError(f"inplace must be True or False, got {inplace!r}")
    X = sp.csr_matrix(adata.X)
    total = np.asarray(X.sum(axis=1)).ravel().astype(np.float64)
    detected = _detected(X, axis=1)
    mt = mito_genes(adata.var_names, prefix=_check_prefix(mito_prefix, "mito_prefix"))
    mt_total = np.asarray(X[:, mt].sum(axis=1)).ravel() if mt.any() else np.zeros_like(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(total > 0, 100.0 * mt_total / total, 0.0)
    df = pd.DataFrame(
        {
            "total_counts": total,
            "n_genes_by_counts": np.asarray(detected, dtype=np.int64),
            "pct_counts_mt": pct,
        },
        index=adata.obs_names,
    )
    if inplace:
        for col in df:
            adata.obs[keys[col]] = df[col]
        adata.var[keys["n_cells_by_counts"]] = _detected(X, axis=0)
        adata.var[keys["mt"]] = mt
    return df


def cell_gene_masks(
    adata: ad.AnnData,
    *,
    min_genes: int = 200,
    max_genes: int | None = 2500,
    max_pct_mt: float | None = 5.0,
    min_cells: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(keep_cells, keep_genes)``: cells with ``min_genes ≤ genes detected < max_genes`` and
    ``pct_counts_mt < max_pct_mt``, then genes detected (count > 0) in at least ``min_cells`` of the kept cells.
    """
    _check_counts(adata)
    min_genes = _check_int(min_genes, "min_genes", minimum=0)
    min_cells = _check_int(min_cells, "min_cells", minimum=0)
    if (
        max_genes is not None
    ):  # a cell is kept when min_genes <= genes < max_genes: an empty range keeps nothing
        max_genes = _check_int(
            max_genes, "max_genes (exclusive upper bound, > min_genes)", minimum=min_genes + 1
        )
    if max_pct_mt is not None:
        max_pct_mt = _check_float(max_pct_mt, "max_pct_mt (a percentage)", minimum=0.0, maximum=100.0)
    qc = qc_metrics(adata, inplace=False)
    keep = qc["n_genes_by_counts"].to_numpy() >= min_genes
    if max_genes is not None:
        keep &= qc["n_genes_by_counts"].to_numpy() < max_genes
    if max_pct_mt is not None:
        keep &= qc["pct_counts_mt"].to_numpy() < max_pct_mt
    gkeep = _detected(sp.csr_matrix(adata.X)[keep], axis=0) >= min_cells
    return keep, gkeep


def filter_cells_genes(
    adata: ad.AnnData,
    *,
    min_genes: int = 200,
    max_genes: int | None = 2500,
    max_pct_mt: float | None = 5.0,
    min_cells: int = 3,
    key_added: str | None = None,
) -> ad.AnnData:
    """Keep cells with ``min_genes ≤ genes detected < max_genes`` and ``pct_counts_mt < max_pct_mt``,
    then genes detected in at least ``min_cells`` of the kept cells (the Seurat tutorial thresholds).

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X``; left unchanged.
    min_genes, max_genes, max_pct_mt, min_cells
        The thresholds (``None`` switches an upper bound off).
    key_added
        Names of the QC columns written into the result, as in :func:`qc_metrics`.

    Returns
    -------
    AnnData
        A filtered copy with the QC columns of the kept cells and genes.
    """
    _qc_keys(key_added)  # validated before any work
    keep, gkeep = cell_gene_masks(
        adata, min_genes=min_genes, max_genes=max_genes, max_pct_mt=max_pct_mt, min_cells=min_cells
    )
    out = adata[keep][:, gkeep].copy()
    qc_metrics(out, inplace=True, key_added=key_added)
    return out


def top_genes_by_fraction(adata: ad.AnnData, *, n: int = 10) -> list[str]:
    """The ``n`` genes with the largest mean share of a cell's counts, ``(1/N) Σ_c x_cg / Σ_g' x_cg'``,
    largest first (cells without counts contribute 0).
    """
    _check_counts(adata)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"adata must have at least one cell and one gene, got shape {adata.shape}")
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    frac = sp.diags(np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)) @ X
    order = np.argsort(-np.asarray(frac.mean(axis=0)).ravel(), kind="stable")[:n]
    return [str(g) for g in adata.var_names[order]]
