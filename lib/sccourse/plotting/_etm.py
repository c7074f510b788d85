"""Figures of the topic-model assignment: t-SNE pairs, cells x topics clustermap, top genes per topic."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["topic_clustermap", "topic_gene_heatmap", "tsne_side_by_side"]


def _embedding(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if hasattr(x, "toarray"):
        x = x.toarray()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or not np.isfinite(a).all():
        raise ValueError(f"{name} must be a finite 2-D cells x dims array, got shape {a.shape}")
    return a


def _palette(categories) -> dict:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20")
    return {c: cmap(i % 20) for i, c in enumerate(categories)}


def _labels(labels, n: int, name: str = "labels"):
    import pandas as pd

    lab = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    if len(lab) != n:
        raise ValueError(f"{name} has {len(lab)} entries but the embedding has {n} cells")
    cats = sorted(lab.unique())
    return lab.to_numpy(), cats


def tsne_side_by_side(
    embeddings: dict, labels, *, perplexity: float = 30.0, seed: int = 0, title: str | None = None, save=None
):
    """t-SNE (:func:`scanpy.tl.tsne`) of several cell embeddings, one panel each, coloured by label.

    Parameters
    ----------
    embeddings
        ``{"panel title": cells x dims array}``; all with the same cells.
    labels
        Cell labels (colours; one shared legend).
    perplexity, seed
        t-SNE perplexity and random state.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import anndata as ad
    import matplotlib.pyplot as plt
    import scanpy as sc

    if not isinstance(embeddings, dict) or not embeddings:
        raise ValueError("embeddings must be a non-empty dict {title: cells x dims array}")
    arrays = {k: _embedding(v, f"embeddings[{k!r}]") for k, v in embeddings.items()}
    n = {a.shape[0] for a in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"all embeddings must have the same number of cells, got {sorted(n)}")
    lab, cats = _labels(labels, n.pop())
    colours = _palette(cats)
    fig, axes = plt.subplots(
        1, len(arrays), figsize=(4.6 * len(arrays) + 1.8, 4.4), constrained_layout=True, squeeze=False
    )
    for ax, (name, emb) in zip(axes[0], arrays.items()):
        a = ad.AnnData(np.zeros((emb.shape[0], 1), dtype=np.float32))
        a.obsm["X_emb"] = emb
        sc.tl.tsne(a, use_rep="X_emb", perplexity=perplexity, random_state=seed)
        xy = a.obsm["X_tsne"]
        for c in cats:
            m = lab == c
            ax.scatter(xy[m, 0], xy[m, 1], s=6, color=colours[c], label=f"{c} ({m.sum()})", linewidths=0)
        ax.set(title=name, xlabel="t-SNE 1", ylabel="t-SNE 2", xticks=[], yticks=[])
    axes[0, -1].legend(
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        frameon=False,
        markerscale=2.5,
        fontsize=8,
        title="cell type",
    )
    return _finish(fig, title=title, save=save)


def topic_clustermap(
    theta,
    labels,
    *,
    title: str | None = None,
    cmap: str = "viridis",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    save=None,
):
    """Cells x topics heatmap (:func:`seaborn.clustermap`), rows and topics clustered, with a cell-type colour bar.

    Parameters
    ----------
    theta
        cells x topics proportions (or any cells x K embedding: then pass ``vmin``/``vmax`` = None).
    labels
        Cell labels, shown as the row colour bar (legend on the right).
    vmin, vmax
        Colour scale; 0 to 1 suits proportions and keeps figures comparable. None: the data's range.

    Returns
    -------
    matplotlib.figure.Figure
        The clustermap's figure (``fig.axes`` holds the heatmap, dendrograms, colour bars); the colourbar is
        horizontal, above the row dendrogram, with its label under its ticks.
    """
    import warnings

    import pandas as pd
    import seaborn as sns
    from matplotlib.patches import Patch

    T = _embedding(theta, "theta")
    lab, cats = _labels(labels, T.shape[0])
    colours = _palette(cats)
    df = pd.DataFrame(T, columns=[str(k) for k in range(T.shape[1])])
    row_colors = pd.Series([colours[c] for c in lab], name="cell type")
    with (
        warnings.catch_warnings()
    ):  # seaborn suggests fastcluster for large matrices; scipy is fast enough here
        warnings.filterwarnings("ignore", message="Clustering large matrix with scipy")
        grid = sns.clustermap(
            df,
            row_colors=row_colors,
            col_cluster=True,
            row_cluster=True,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            yticklabels=False,
            xticklabels=True,
            figsize=(8.5, 7),
            method="average",
            dendrogram_ratio=(0.12, 0.1),
            cbar_pos=(0.02, 0.9, 0.11, 0.02),
            cbar_kws={"label": "θ (topic proportion)", "orientation": "horizontal"},
        )
    grid.ax_cbar.xaxis.set_ticks_position("top")  # ticks and label above the bar, clear of the dendrogram
    grid.ax_cbar.xaxis.set_label_position("top")
    grid.ax_cbar.tick_params(labelsize=8)
    grid.ax_heatmap.set(xlabel="topic", ylabel=f"cells ({T.shape[0]})")
    handles = [Patch(color=colours[c], label=f"{c} ({(lab == c).sum()})") for c in cats]
    grid.ax_heatmap.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.07, 0.5),
        frameon=False,
        fontsize=8,
        title="cell type",
    )
    grid.figure.suptitle(title or "cells x topics", y=1.02)
    if save is not None:
        grid.figure.savefig(save, dpi=120, bbox_inches="tight")
    return grid.figure


def topic_gene_heatmap(
    weights, *, n_top: int = 5, vmax: float | None = 0.2, title: str | None = None, save=None
):
    """Heatmap (:func:`seaborn.heatmap`) of the top ``n_top`` genes of every topic (rows) over all topics.

    Parameters
    ----------
    weights
        genes x topics DataFrame of topic-gene probabilities β (e.g. :func:`sccourse.etm.topic_gene_weights`).
    n_top
        Genes per topic; a gene that tops several topics appears once.
    vmax
        Cap of the colour scale (the classic figure caps at 0.2 so that small weights stay visible).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    if not isinstance(weights, pd.DataFrame):
        raise TypeError(f"weights must be a genes x topics DataFrame, got {type(weights).__name__}")
    if isinstance(n_top, bool) or not isinstance(n_top, (int, np.integer)) or not 1 <= n_top <= len(weights):
        raise ValueError(f"n_top must be an integer in [1, {len(weights)}], got {n_top!r}")
    rows: list = []
    for k in weights.columns:
        for g in weights[k].sort_values(ascending=False, kind="stable").index[:n_top]:
            if g not in rows:
                rows.append(g)
    sub = weights.loc[rows]
    fig, ax = plt.subplots(
        figsize=(0.42 * weights.shape[1] + 2.8, 0.19 * len(rows) + 1.5), constrained_layout=True
    )
    sns.heatmap(
        sub,
        ax=ax,
        cmap="Reds",
        vmin=0,
        vmax=vmax,
        cbar_kws={
            "label": f"β (colour capped at {vmax:g})" if vmax else "β",
            "shrink": min(1.0, 12 / len(rows)),
        },
        yticklabels=True,
        xticklabels=True,
    )
    ax.tick_params(axis="y", labelsize=7)
    ax.set(xlabel="topic", ylabel="gene", title=title or f"top {n_top} genes per topic")
    return _finish(fig, save=save)
