"""Figures for factor models: which factor marks which cell type, and which genes drive each factor."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["factor_celltype_heatmap", "factor_order", "top_genes_heatmap"]


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


def _type_means(embedding, labels):
    """(means: cell types x K DataFrame, most abundant type first; counts per type)."""
    import pandas as pd

    E = _dense(embedding, "embedding")
    lab = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    if len(lab) != E.shape[0]:
        raise ValueError(f"labels has {len(lab)} entries but embedding has {E.shape[0]} rows")
    counts = lab.value_counts()  # descending; ties keep first-seen order
    means = pd.DataFrame(E).groupby(lab.to_numpy()).mean().loc[counts.index]
    return means, counts


def _normalise_rows_or_columns(M: np.ndarray, normalize) -> tuple[np.ndarray, str]:
    if normalize is True:  # the historical meaning
        normalize = "factor"
    if normalize in (None, False):
        return M, "mean factor value"
    if normalize == "type":
        s = M.sum(axis=1, keepdims=True)
        return M / np.where(s > 0, s, 1.0), "share of the cell type's mean factor total"
    if normalize == "factor":
        m = M.max(axis=0, keepdims=True)
        return M / np.where(m > 0, m, 1.0), "mean / largest cell-type mean of the factor"
    raise ValueError(f"normalize must be 'type', 'factor' or None, got {normalize!r}")


def factor_order(embedding, labels) -> np.ndarray:
    """Factors ordered so that each one sits under the cell type that uses it most.

    Cell types are taken most abundant first; each factor goes to the type with its largest mean value (after
    scaling each type's means to sum 1), and factors of the same type are ordered by that value, largest first.
    Use the result as ``order=`` in :func:`factor_celltype_heatmap` and :func:`top_genes_heatmap` so that both
    figures list the factors in the same order.
    """
    means, _ = _type_means(embedding, labels)
    M, _ = _normalise_rows_or_columns(means.to_numpy(), "type")
    best = M.argmax(axis=0)
    value = M[best, np.arange(M.shape[1])]
    return np.lexsort((-value, best))


def _check_order(order, K: int) -> np.ndarray:
    order = np.asarray(order, dtype=int)
    if sorted(order.tolist()) != list(range(K)):
        raise ValueError(f"order must be a permutation of the {K} factors, got {order.tolist()}")
    return order


def factor_celltype_heatmap(
    embedding,
    labels,
    *,
    normalize="type",
    order="auto",
    vmax: float | None = None,
    small: int = 10,
    annotate: float | None = 0.15,
    colorbar_label: str | None = None,
    title: str | None = None,
    save=None,
):
    """Mean factor value per cell type (rows: cell types, most abundant first; columns: factors).

    Parameters
    ----------
    embedding
        cells x K factors (e.g. ``Hᵀ`` of NMF, :func:`sccourse.nmf.factor_shares`, or θ of a topic model).
    labels
        length-N cell types.
    normalize
        ``"type"`` (default): each cell type's means are scaled to sum 1, so a row reads "how this type's factor
        mass is spread over the factors", whatever the size of the type; ``"factor"``: each factor (column) is
        scaled to a maximum of 1 (``True`` means this too); ``None``: the means themselves.
    order
        Column order: ``"auto"`` (:func:`factor_order`), ``None`` (0 … K-1) or a permutation of the factors.
        Ticks always show the factors' own indices.
    vmax
        Cap of the colour scale (values above it get the top colour; the colour bar then has an arrow).
        ``None``: the largest value shown.
    small
        Cell types with fewer cells are labelled in grey (their means rest on few cells).
    annotate
        Write the value in every square at or above this level (``None``: no numbers).
    colorbar_label
        Label of the colour bar (default: says how the values were normalised).
    save
        Optional path for the figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    means, counts = _type_means(embedding, labels)
    M, label = _normalise_rows_or_columns(means.to_numpy(), normalize)
    K = M.shape[1]
    if isinstance(order, str) and order == "auto":
        order = factor_order(embedding, labels)
    elif order is None:
        order = np.arange(K)
    order = _check_order(order, K)
    M = M[:, order]
    top = float(M.max()) if vmax is None else float(vmax)
    fig, ax = plt.subplots(figsize=(0.5 * K + 3.4, 0.34 * len(means) + 1.7), constrained_layout=True)
    im = ax.imshow(M, aspect="auto", cmap="viridis", vmin=0, vmax=top if top > 0 else 1.0)
    if annotate is not None:
        for i, j in zip(*np.nonzero(M >= annotate)):
            ax.text(
                j,
                i,
                f"{M[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=6.5,
                color="black" if M[i, j] > 0.6 * top else "white",
            )
    ax.set_xticks(range(K), [str(k) for k in order])
    ax.set_yticks(range(len(means)), [f"{t} ({counts[t]})" for t in means.index])
    for tick, t in zip(ax.get_yticklabels(), means.index):
        if counts[t] < small:
            tick.set_color("0.45")
    ylabel = "cell type (number of cells)"
    if (counts < small).any():
        ylabel = f"cell type (number of cells; grey: fewer than {small})"
    ax.set(xlabel="factor", ylabel=ylabel, title=title or "mean factor value per cell type")
    fig.colorbar(
        im,
        ax=ax,
        label=colorbar_label or label,
        extend="max" if vmax is not None and M.max() > vmax else "neither",
    )
    return _finish(fig, save=save)


def top_genes_heatmap(
    W,
    gene_names,
    *,
    n_top: int = 5,
    normalize="max",
    order=None,
    vmax: float | None = None,
    title: str | None = None,
    save=None,
):
    """Loadings of each factor's ``n_top`` genes (rows: genes, in blocks by factor; columns: factors).

    Parameters
    ----------
    W
        genes x K loadings.
    gene_names
        length-M gene names.
    n_top
        Genes shown per factor (a gene among the top genes of several factors appears once, in its first block).
    normalize
        ``"max"`` (default): each factor scaled to a largest loading of 1, so every factor's top genes stand out
        whatever its overall scale; ``"sum"``: each factor scaled to sum 1 (a distribution over genes, as in a
        topic model; ``True`` means this too); ``None``: raw loadings.
    order
        Factor order (columns and blocks): ``None`` (0 … K-1) or a permutation, e.g. from :func:`factor_order`.
    vmax
        Cap of the colour scale (``None``: the largest value shown), e.g. 0.2 with ``normalize="sum"``.
    """
    import matplotlib.pyplot as plt

    A = _dense(W, "W")
    names = np.asarray(gene_names, dtype=object)
    if len(names) != A.shape[0]:
        raise ValueError(f"gene_names has {len(names)} entries but W has {A.shape[0]} rows")
    if isinstance(n_top, bool) or not isinstance(n_top, (int, np.integer)) or not 1 <= n_top <= A.shape[0]:
        raise ValueError(f"n_top must be an integer in [1, {A.shape[0]}], got {n_top!r}")
    if normalize is True:
        normalize = "sum"
    if normalize == "sum":
        A = A / np.where(A.sum(axis=0) > 0, A.sum(axis=0), 1.0)
        label = "loading (share of the factor's total)"
    elif normalize == "max":
        A = A / np.where(A.max(axis=0) > 0, A.max(axis=0), 1.0)
        label = "loading / the factor's largest loading"
    elif normalize in (None, False):
        label = "loading"
    else:
        raise ValueError(f"normalize must be 'max', 'sum' or None, got {normalize!r}")
    K = A.shape[1]
    order = _check_order(np.arange(K) if order is None else order, K)
    rows: list[int] = []
    starts: list[int] = []
    for k in order:
        starts.append(len(rows))
        for g in np.argsort(-A[:, k], kind="stable")[:n_top]:
            if g not in rows:
                rows.append(int(g))
    M = A[rows][:, order]
    fig, ax = plt.subplots(figsize=(0.45 * K + 2.8, 0.19 * len(rows) + 1.5), constrained_layout=True)
    im = ax.imshow(M, aspect="auto", cmap="Reds", vmin=0, vmax=vmax)
    for s in starts[1:]:
        ax.axhline(s - 0.5, color="0.75", lw=0.6)
    ax.set_xticks(range(K), [str(k) for k in order])
    ax.set_yticks(range(len(rows)), names[rows], fontsize=7)
    ax.set(
        xlabel="factor",
        ylabel=f"top {n_top} genes of each factor",
        title=title or f"top {n_top} genes per factor",
    )
    extend = "max" if vmax is not None and M.max() > vmax else "neither"
    fig.colorbar(im, ax=ax, label=label, extend=extend)
    return _finish(fig, save=save)
