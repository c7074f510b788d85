"""Variable genes: the columns of largest variance of any matrix, and the course's log1p-CPM gene filter."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .._validation import as_float_matrix as _as_float_matrix
from .._validation import check_counts as _check_counts
from .._validation import check_finite as _check_finite
from .._validation import check_float as _check_float
from .._validation import check_int as _check_int
from .._validation import check_key as _check_key
from .._validation import is_anndata as _is_anndata

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["select_variable_genes", "top_variable_genes"]


def top_variable_genes(X, n: int) -> np.ndarray:
    """Column indices of the ``n`` columns of largest variance ``(1/N) Σ_i (x_ig − x̄_g)²``, largest first
    (ties broken by column index).

    Parameters
    ----------
    X
        (cells x genes) matrix: numpy, scipy.sparse or torch; finite and numeric.
    n
        How many columns (>= 1); all of them if ``X`` has fewer.

    Returns
    -------
    numpy.ndarray
        int64 column indices, sorted by decreasing variance.
    """
    n = _check_int(n, "n", minimum=1)
    if sp.issparse(X):
        if X.dtype.kind not in "biuf":
            raise ValueError(f"X must be a real numeric matrix, got dtype {X.dtype}")
        _check_finite(X, "X")
        X = sp.csr_matrix(X, dtype=np.float64)
    else:
        X = _as_float_matrix(X).astype(np.float64)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape}); it needs at least one cell and one gene")
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0)).ravel()
        var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    else:
        var = X.var(axis=0)
    n = min(n, var.size)
    return np.argsort(-var, kind="stable")[:n]


def select_variable_genes(
    adata: AnnData,
    n_top_genes: int = 4000,
    *,
    layer: str | None = None,
    target_sum: float = 1e6,
    key_added: str = "log1p_cpm_var",
) -> AnnData:
    """Keep the ``n_top_genes`` genes with the largest variance of log1p(CPM) across cells.

    For each cell, counts are scaled to ``target_sum`` (CPM for 1e6), then ``log(1 + x)``; the
    per-gene sample variance (ddof=1) ranks the genes (ties: original order). The raw counts of the
    kept genes are returned, in their original order, with the variances in ``var[key_added]``.

    Parameters
    ----------
    adata
        AnnData of raw counts (cells x genes; finite, non-negative whole numbers).
    n_top_genes
        How many genes to keep (all of them if the matrix has fewer).
    layer
        Count layer to rank on (default ``.X``).
    target_sum
        Library size each cell is scaled to before the log.
    key_added
        Column of the result's ``var`` that receives the variances.

    Returns
    -------
    AnnData
        A new object (copy) with the selected genes; ``adata`` is not modified.
    """
    if not _is_anndata(adata):
        raise TypeError(f"select_variable_genes expects an AnnData, got {type(adata).__name__}")
    n_top_genes = _check_int(n_top_genes, "n_top_genes", minimum=1)
    target_sum = _check_float(target_sum, "target_sum", minimum=0.0, strict=True)
    key = _check_key(key_added)
    if layer is not None and layer not in adata.layers:
        raise ValueError(f"layer {layer!r} not in adata.layers (has {list(adata.layers)})")
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    X = adata.X if layer is None else adata.layers[layer]
    if X is None:
        raise ValueError(f"{where} is empty (None); pass raw counts")
    _check_counts(X, where=where)
    X = sp.csr_matrix(X, dtype=np.float64)
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"need at least two cells to compute a variance, got {n}")
    if X.shape[1] == 0:
        raise ValueError("adata has no genes to select from")
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    L = sp.diags(scale) @ X
    L.data = np.log1p(L.data)
    mean = np.asarray(L.mean(axis=0)).ravel()
    sq = np.asarray(L.multiply(L).sum(axis=0)).ravel()
    var = np.maximum(sq - n * mean**2, 0.0) / (n - 1)
    n_keep = min(n_top_genes, X.shape[1])
    top = np.sort(np.argsort(-var, kind="stable")[:n_keep])
    out = adata[:, top].copy()
    out.var[key] = var[top]
    return out
