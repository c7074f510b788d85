"""Figures for factor models: which factor marks which cell type, and which genes drive each factor."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["factor_celltype_heatmap", "top_genes_heatmap"]


def _dense(a, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(a, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {arr.shape}")
    return arr


def factor_celltype_heatmap(embedding, labels, *, normalize: bool = True, title: str | None = None, save=None):
    """Mean factor value per cell type (rows: cell types, columns: factors).

    Parameters
    ----------
    embedding
        cells x K factors (e.g. ``Hᵀ`` of NMF or θ of a topic model).
    labels
        length-N cell types.
    normalize
        Scale every factor (column) to a maximum of 1, so weak factors are visible too.
    save
        Optional path for the figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    E = _dense(embedding, "embedding")
    lab = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    if len(lab) != E.shape[0]:
        raise ValueError(f"labels has {len(lab)} entries but embedding has {E.shape[0]} rows")
    means = pd.DataFrame(E).groupby(lab.to_numpy()).mean()
    counts = lab.value_counts()
    means = means.loc[counts.index]  # most abundant type first
    M = means.to_numpy()
    if normalize:
        M = M / np.where(M.max(axis=0) > 0, M.max(axis=0), 1.0)
    K = E.shape[1]
    fig, ax = plt.subplots(figsize=(0.45 * K + 2.8, 0.32 * len(means) + 1.6), constrained_layout=True)
    im = ax.imshow(M, aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(K), [str(k) for k in range(K)])
    ax.set_yticks(range(len(means)), [f"{t} ({counts[t]})" for t in means.index])
    ax.set(xlabel="factor", ylabel="cell type (cells)", title=title or "mean factor value per cell type")
    fig.colorbar(im, ax=ax, label="mean / factor max" if normalize else "mean")
    return _finish(fig, save=save)


def top_genes_heatmap(W, gene_names, *, n_top: int = 5, normalize: bool = True, vmax: float | None = None,
                      title: str | None = None, save=None):
    """Loadings of each factor's ``n_top`` genes (rows: genes, grouped by factor; columns: factors).

    Parameters
    ----------
    W
        genes x K loadings.
    gene_names
        length-M gene names.
    n_top
        Genes shown per factor (a gene that tops several factors appears once).
    normalize
        Scale every factor to sum 1 (a distribution over genes, as in a topic model).
    vmax
        Upper end of the colour scale (None: the largest value shown).
    """
    import matplotlib.pyplot as plt

    A = _dense(W, "W")
    names = np.asarray(gene_names, dtype=object)
    if len(names) != A.shape[0]:
        raise ValueError(f"gene_names has {len(names)} entries but W has {A.shape[0]} rows")
    if isinstance(n_top, bool) or not isinstance(n_top, (int, np.integer)) or not 1 <= n_top <= A.shape[0]:
        raise ValueError(f"n_top must be an integer in [1, {A.shape[0]}], got {n_top!r}")
    if normalize:
        A = A / np.where(A.sum(axis=0) > 0, A.sum(axis=0), 1.0)
    rows: list[int] = []
    for k in range(A.shape[1]):
        for g in np.argsort(-A[:, k], kind="stable")[:n_top]:
            if g not in rows:
                rows.append(int(g))
    M = A[rows]
    K = A.shape[1]
    fig, ax = plt.subplots(figsize=(0.45 * K + 2.6, 0.2 * len(rows) + 1.4), constrained_layout=True)
    im = ax.imshow(M, aspect="auto", cmap="Reds", vmin=0, vmax=vmax)
    ax.set_xticks(range(K), [str(k) for k in range(K)])
    ax.set_yticks(range(len(rows)), names[rows], fontsize=7)
    ax.set(xlabel="factor", title=title or f"top {n_top} genes per factor")
    fig.colorbar(im, ax=ax, label="loading (share of factor)" if normalize else "loading")
    return _finish(fig, save=save)
