"""Library-size normalisation and log1p of raw counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._validation import check_anndata as _check_anndata
from .._validation import check_float as _check_float
from .._validation import check_key as _check_key
from ._common import _check_nonempty, _check_raw_counts

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["normalize_log1p"]


def normalize_log1p(adata: AnnData, *, target_sum: float = 1e4, key_added: str = "counts") -> AnnData:
    """``x̃_cg = log(1 + target_sum · x_cg / Σ_g x_cg)``; the raw counts are kept in ``adata.layers[key_added]``.

    Works in place and returns ``adata`` for chaining. A cell without counts stays all zero.

    Parameters
    ----------
    adata
        AnnData with raw counts (finite, non-negative whole numbers) in ``.X``, dense or sparse.
    target_sum
        Library size every cell is scaled to (> 0).
    key_added
        Layer that receives the raw counts; it must not exist yet (running twice would overwrite the counts
        with log data).

    Returns
    -------
    AnnData
        ``adata`` itself.
    """
    import scanpy as sc

    _check_anndata(adata)
    key = _check_key(key_added)
    if key in adata.layers:
        raise ValueError(
            f"adata.layers[{key!r}] already exists: adata looks normalised already (running this twice "
            "would overwrite the raw counts with log data). Start from the raw counts, or pass another "
            "key_added"
        )
    _check_raw_counts(adata)
    _check_nonempty(adata, what="normalisation")
    target_sum = _check_float(target_sum, "target_sum", minimum=0.0, strict=True)
    adata.layers[key] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    return adata
