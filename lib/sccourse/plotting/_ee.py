"""Figures of the elastic-embedding assignment: embedding grids with quality scores, objective vs time."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["embedding_grid", "objective_vs_time"]


def _scatter(ax, X, labels, *, cmap_cat="tab20", cmap_num="viridis", s=4.0, legend=True):
    import pandas as pd

    lab = pd.Series(np.asarray(labels, dtype=object) if labels is not None else np.zeros(X.shape[0]))
    numeric = labels is not None and pd.api.types.is_numeric_dtype(pd.Series(labels).dtype) and \
        pd.Series(labels).nunique() > 20
    if numeric:
        vals = pd.Series(labels).astype(float).to_numpy()
        order = np.argsort(np.nan_to_num(vals, nan=-np.inf))
        sc = ax.scatter(X[order, 0], X[order, 1], c=vals[order], cmap=cmap_num, s=s, linewidths=0)
        return sc
    cats = pd.Categorical(lab.astype(str).where(lab.notna(), "NA"))
    import matplotlib.pyplot as plt

    colours = plt.get_cmap(cmap_cat if len(cats.categories) > 10 else "tab10")
    for i, cat in enumerate(cats.categories):
        m = np.asarray(cats == cat)
        ax.scatter(X[m, 0], X[m, 1], s=s, color="lightgrey" if cat == "NA" else colours(i % colours.N),
                   label=cat, linewidths=0, rasterized=X.shape[0] > 20_000)
    return None


def embedding_grid(embeddings: dict, labels=None, *, X_high=None, k: int = 10, ncols: int | None = None,
                   label_name: str = "cell type", title: str | None = None, point_size: float = 4.0, save=None):
    """One panel per 2-D embedding, coloured by ``labels``, scores in the titles.

    Parameters
    ----------
    embeddings
        ``{"EE": X_ee, "NeuralEE": X_nee, "t-SNE": ..., "UMAP": ...}``, each N × 2.
    labels
        N labels: categories (legend) or a continuous value such as pseudotime (colour bar).
    X_high
        The high-dimensional data; when given, each title shows trustworthiness T and k-NN preservation
        (:func:`sccourse.metrics.trustworthiness`, :func:`sccourse.metrics.knn_preservation`) at ``k``.
    save
        Optional path for the figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from ..metrics import knn_preservation, trustworthiness

    if not embeddings:
        raise ValueError("embeddings must hold at least one (name → N × 2 array) entry")
    arrays = {}
    for name, X in embeddings.items():
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] < 2:
            raise ValueError(f"embedding {name!r} must be N × 2, got shape {X.shape}")
        arrays[name] = X[:, :2]
    n = {X.shape[0] for X in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"all embeddings must have the same number of cells, got {sorted(n)}")
    n = n.pop()
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but the embeddings have {n} cells")
    ncols = ncols or min(4, len(arrays))
    nrows = int(np.ceil(len(arrays) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 1.8, 3.5 * nrows), squeeze=False,
                             constrained_layout=True)
    mappable = None
    for ax, (name, X) in zip(axes.ravel(), arrays.items()):
        sc = _scatter(ax, X, labels, s=point_size)
        mappable = sc if sc is not None else mappable
        t = name
        if X_high is not None:
            t += f"\nT={trustworthiness(X_high, X, k=k):.3f}  kNN={knn_preservation(X_high, X, k=k):.3f}"
        ax.set_title(t, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{name} 1", fontsize=8)
        ax.set_ylabel(f"{name} 2", fontsize=8)
    for ax in axes.ravel()[len(arrays):]:
        ax.axis("off")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, label=label_name)
    elif labels is not None:
        handles, names = axes.ravel()[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right center", markerscale=3, frameon=False, fontsize=8,
                   title=label_name)
    return _finish(fig, title=title, save=save)


def objective_vs_time(histories: dict, *, x: str = "time_s", y: str = "objective", logy: bool = True,
                      title: str | None = "EE objective", save=None):
    """Objective against wall-clock time (or ``x="iteration"``) for several optimisers.

    ``histories`` maps a name to a DataFrame with columns ``x`` and ``y`` (e.g. ``ElasticEmbedding.history_``).
    With ``logy`` the y-axis shows ``E − min E + ε`` over all runs (the gap to the best objective reached).
    """
    import matplotlib.pyplot as plt

    if not histories:
        raise ValueError("histories must hold at least one name → DataFrame entry")
    for name, h in histories.items():
        if x not in h or y not in h:
            raise ValueError(f"history {name!r} needs columns {x!r} and {y!r}, has {list(h.columns)}")
    best = min(float(h[y].min()) for h in histories.values())
    fig, ax = plt.subplots(figsize=(5.8, 3.8), constrained_layout=True)
    for name, h in histories.items():
        vals = h[y].to_numpy(float)
        if logy:
            vals = vals - best + 1e-6 * max(abs(best), 1e-12)
        ax.plot(h[x].to_numpy(float), vals, lw=1.6, marker="o" if len(h) < 25 else None, ms=3, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel={"time_s": "time (s)"}.get(x, x), ylabel=f"{y} − best" if logy else y, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False)
    return _finish(fig, save=save)
