"""Picking cell populations from clustered data: marker tables per cluster and the clusters that express a set
of markers (the T cells of ``01_tcell_manifold``). The clustering itself is :func:`sccourse.pp.preprocess_and_cluster`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validation import check_anndata as _check_anndata
from .._validation import check_choice as _check_choice
from .._validation import check_float as _check_float

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "PBMC_MARKERS",
    "T_CELL_MARKERS",
    "marker_table",
    "select_clusters_by_markers",
    "select_t_cells",
    "t_cell_clusters",
]

PBMC_MARKERS = ("CD3D", "CD3E", "MS4A1", "LYZ", "NKG7", "GNLY", "PPBP")
T_CELL_MARKERS = ("CD3D", "CD3E")


def _check_groupby(adata, groupby) -> None:
    _check_anndata(adata)
    if not isinstance(groupby, str) or groupby not in adata.obs:
        raise ValueError(
            f"groupby must name a column of adata.obs, got {groupby!r} (columns: {list(adata.obs.columns)}); "
            "run sccourse.pp.preprocess_and_cluster first"
        )


def _gene_matrix(adata, genes: Sequence[str]) -> np.ndarray:
    if isinstance(genes, str):
        raise ValueError(f"markers must be a sequence of gene names, got the string {genes!r}")
    genes = list(genes)
    if not genes:
        raise ValueError("markers must name at least one gene")
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise ValueError(f"genes {missing} are not in adata.var_names")
    X = adata[:, genes].X
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError("adata.X holds NaN or infinite values in the marker columns")
    return X


def marker_table(
    adata: AnnData,
    markers: Sequence[str] = PBMC_MARKERS,
    *,
    groupby: str = "leiden",
    stat: Literal["mean", "fraction"] = "mean",
) -> pd.DataFrame:
    """Per-group summary of marker expression (groups x markers).

    ``stat="mean"``: ``(1/|c|) Σ_{i∈c} x_ig`` of ``.X`` (log-normalised); ``stat="fraction"``: the fraction of
    the group's cells with ``x_ig > 0``.

    Parameters
    ----------
    adata
        AnnData with log-normalised ``.X`` and the groups in ``obs[groupby]``.
    markers
        Gene names in ``adata.var_names``.
    groupby
        Column of ``adata.obs`` with the group labels.
    stat
        ``"mean"`` or ``"fraction"``.

    Returns
    -------
    pandas.DataFrame
        One row per group (in category order), one column per marker.
    """
    _check_groupby(adata, groupby)
    _check_choice(stat, "stat", ("mean", "fraction"))
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


def _check_thresholds(min_ratio, min_fraction) -> None:
    _check_float(min_ratio, "min_ratio", minimum=0.0, maximum=1.0, strict=True)
    _check_float(min_fraction, "min_fraction", minimum=0.0, maximum=1.0)


def t_cell_clusters(
    adata: AnnData,
    *,
    groupby: str = "leiden",
    markers: Sequence[str] = T_CELL_MARKERS,
    min_ratio: float = 0.5,
    min_fraction: float = 0.5,
) -> list:
    """Groups whose cells express a set of markers (by default the T-cell receptor complex, CD3).

    A group is kept when its score ``s_c = mean_{i∈c} mean_g x_ig`` (``markers``, log-normalised) is at least
    ``min_ratio · max_c s_c``, and at least ``min_fraction`` of its cells express one of ``markers``. No group id
    is hard-coded.

    Parameters
    ----------
    adata
        AnnData with log-normalised ``.X`` and the groups in ``obs[groupby]``.
    groupby
        Column of ``adata.obs`` with the group labels.
    markers
        Gene names in ``adata.var_names``.
    min_ratio
        In (0, 1]: the fraction of the best group's score a group needs.
    min_fraction
        In [0, 1]: the fraction of a group's cells that must express a marker.

    Returns
    -------
    list
        The kept group labels, in the order of :func:`marker_table`.
    """
    _check_thresholds(min_ratio, min_fraction)
    means = marker_table(adata, markers, groupby=groupby).mean(axis=1)
    X = _gene_matrix(adata, markers)
    frac = pd.Series((X > 0).any(axis=1)).groupby(adata.obs[groupby].values, observed=True).mean()
    top = means.max()
    if top <= 0:
        return []
    return [c for c in means.index if means[c] >= min_ratio * top and frac[c] >= min_fraction]


def select_clusters_by_markers(
    adata: AnnData,
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
    adata: AnnData,
    *,
    groupby: str = "leiden",
    markers: Sequence[str] = T_CELL_MARKERS,
    min_ratio: float = 0.5,
    min_fraction: float = 0.5,
) -> np.ndarray:
    """Boolean mask (length ``n_obs``) of the cells in the T-cell groups of :func:`t_cell_clusters`.

    Parameters
    ----------
    adata
        AnnData with log-normalised ``.X`` and the groups in ``obs[groupby]``.
    groupby, markers, min_ratio, min_fraction
        As in :func:`t_cell_clusters`.

    Returns
    -------
    numpy.ndarray of bool
    """
    return select_clusters_by_markers(
        adata, markers, groupby=groupby, min_ratio=min_ratio, min_fraction=min_fraction
    )
