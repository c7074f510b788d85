"""Figures of the elastic-embedding assignment: embedding grids with quality scores, objective vs time."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["bandwidths", "embedding_grid", "held_out_map", "objective_vs_time"]


def _scatter(ax, X, labels, *, cmap_cat="tab20", cmap_num="viridis", s=4.0, legend=True):
    import pandas as pd

    lab = pd.Series(np.asarray(labels, dtype=object) if labels is not None else np.zeros(X.shape[0]))
    numeric = (
        labels is not None
        and pd.api.types.is_numeric_dtype(pd.Series(labels).dtype)
        and pd.Series(labels).nunique() > 20
    )
    if numeric:
        vals = pd.Series(labels).astype(float).to_numpy()
        missing = np.isnan(vals)
        if missing.any():  # cells without a value: grey, underneath
            ax.scatter(X[missing, 0], X[missing, 1], s=s, color="lightgrey", linewidths=0)
        order = np.flatnonzero(~missing)[np.argsort(vals[~missing])]
        sc = ax.scatter(X[order, 0], X[order, 1], c=vals[order], cmap=cmap_num, s=s, linewidths=0)
        return sc
    cats = pd.Categorical(lab.astype(str).where(lab.notna(), "NA"))
    import matplotlib.pyplot as plt

    colours = plt.get_cmap(cmap_cat if len(cats.categories) > 10 else "tab10")
    for i, cat in enumerate(cats.categories):
        m = np.asarray(cats == cat)
        ax.scatter(
            X[m, 0],
            X[m, 1],
            s=s,
            color="lightgrey" if cat == "NA" else colours(i % colours.N),
            label=cat,
            linewidths=0,
            rasterized=X.shape[0] > 20_000,
        )
    return None


def embedding_grid(
    embeddings: dict,
    labels=None,
    *,
    X_high=None,
    k: int = 10,
    ncols: int | None = None,
    label_name: str = "cell type",
    title: str | None = None,
    point_size: float = 4.0,
    axis_name: str = "dim",
    save=None,
):
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
    axis_name
        Axes are labelled ``"<axis_name> 1"`` and ``"<axis_name> 2"`` (the panel names stay in the titles).
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
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols + 1.8, 3.5 * nrows), squeeze=False, constrained_layout=True
    )
    mappable = None
    for ax, (name, X) in zip(axes.ravel(), arrays.items()):
        sc = _scatter(ax, X, labels, s=point_size)
        mappable = sc if sc is not None else mappable
        t = name
        if X_high is not None:
            t += (
                f"\nT={trustworthiness(X_high, X, k=k):.3f}, "
                f"{k}-NN kept={knn_preservation(X_high, X, k=k):.3f}"
            )
        ax.set_title(t, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{axis_name} 1", fontsize=8)
        ax.set_ylabel(f"{axis_name} 2", fontsize=8)
    for ax in axes.ravel()[len(arrays) :]:
        ax.axis("off")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, label=label_name)
    elif labels is not None:
        handles, names = axes.ravel()[0].get_legend_handles_labels()
        fig.legend(
            handles,
            names,
            loc="outside right center",
            markerscale=3,
            frameon=False,
            fontsize=8,
            title=label_name,
        )
    return _finish(fig, title=title, save=save)


def objective_vs_time(
    histories: dict,
    *,
    x="time_s",
    y: str = "objective",
    logy: bool = True,
    title: str | None = "EE objective",
    save=None,
):
    """Objective against wall-clock time and/or iterations for several optimisers.

    ``histories`` maps a name to a DataFrame with columns ``x`` and ``y`` (e.g. ``ElasticEmbedding.history_``).
    ``x`` is one column (one panel) or a tuple of columns, e.g. ``("iteration", "time_s")`` (one panel each,
    sharing the y-axis). With ``logy`` the y-axis shows ``E − min E`` over all runs (the gap to the best
    objective reached, plus 10⁻⁶ of it so that the best point stays on the log scale).
    """
    import matplotlib.pyplot as plt

    xs = (x,) if isinstance(x, str) else tuple(x)
    if not histories:
        raise ValueError("histories must hold at least one name → DataFrame entry")
    for name, h in histories.items():
        for col in (*xs, y):
            if col not in h:
                raise ValueError(f"history {name!r} needs columns {xs + (y,)}, has {list(h.columns)}")
    best = min(float(h[y].min()) for h in histories.values())
    fig, axes = plt.subplots(
        1, len(xs), figsize=(4.6 * len(xs) + 1.6, 3.8), squeeze=False, sharey=True, constrained_layout=True
    )
    labels = {"time_s": "wall-clock time (s)", "iteration": "iteration"}
    for ax, col in zip(axes[0], xs):
        for name, h in histories.items():
            vals = h[y].to_numpy(float)
            if logy:
                vals = vals - best + 1e-6 * max(abs(best), 1e-12)
            ax.plot(
                h[col].to_numpy(float), vals, lw=1.6, marker="o" if len(h) < 25 else None, ms=3, label=name
            )
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(labels.get(col, col))
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel(f"{y} − best {y} reached" if logy else y)
    handles, names = axes[0, 0].get_legend_handles_labels()
    if len(xs) == 1:
        axes[0, 0].set_title(title)
        axes[0, 0].legend(frameon=False)
        return _finish(fig, save=save)
    fig.legend(handles, names, loc="outside right center", frameon=False)
    return _finish(fig, title=title, save=save)


def held_out_map(
    X_train,
    X_test,
    labels_test=None,
    *,
    label_name: str = "cell type",
    title: str | None = None,
    axis_name: str = "dim",
    save=None,
):
    """Cells mapped by a trained network: training cells in grey, held-out cells on top, coloured by label.

    Parameters
    ----------
    X_train, X_test
        (n_train × 2) and (n_test × 2) coordinates from the same map.
    labels_test
        Optional labels of the held-out cells (categories: legend).
    """
    import matplotlib.pyplot as plt

    X_train, X_test = np.asarray(X_train, dtype=float), np.asarray(X_test, dtype=float)
    for name, X in (("X_train", X_train), ("X_test", X_test)):
        if X.ndim != 2 or X.shape[1] < 2:
            raise ValueError(f"{name} must be n × 2, got shape {X.shape}")
    if labels_test is not None and len(labels_test) != X_test.shape[0]:
        raise ValueError(f"labels_test has {len(labels_test)} entries but X_test has {X_test.shape[0]} rows")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
    ax.scatter(
        X_train[:, 0],
        X_train[:, 1],
        s=3,
        color="lightgrey",
        linewidths=0,
        label=f"training cells ({X_train.shape[0]:,})",
    )
    if labels_test is None:
        ax.scatter(
            X_test[:, 0],
            X_test[:, 1],
            s=8,
            color="C3",
            linewidths=0,
            label=f"held-out cells ({X_test.shape[0]:,})",
        )
    else:
        _scatter(ax, X_test[:, :2], labels_test, s=8.0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{axis_name} 1")
    ax.set_ylabel(f"{axis_name} 2")
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="outside right center",
        markerscale=2.5,
        frameon=False,
        fontsize=8,
        title=None if labels_test is None else f"held-out cells, by {label_name}",
    )
    return _finish(fig, title=title, save=save)


def bandwidths(
    beta,
    d_knn,
    labels=None,
    *,
    k: int = 30,
    label_name: str = "cell type",
    title: str | None = None,
    save=None,
):
    """Per-cell Gaussian bandwidth ``σ_n = 1/√(2β_n)`` against the distance to the ``k``-th nearest neighbour.

    Both axes are logarithmic; with ``labels`` the points are coloured by category (legend).
    """
    import matplotlib.pyplot as plt

    beta = np.asarray(beta, dtype=float).ravel()
    d_knn = np.asarray(d_knn, dtype=float).ravel()
    if beta.shape != d_knn.shape:
        raise ValueError(f"beta and d_knn must have the same length, got {beta.size} and {d_knn.size}")
    if not (np.all(beta > 0) and np.all(d_knn > 0)):
        raise ValueError("beta and d_knn must be positive (they are shown on log axes)")
    if labels is not None and len(labels) != beta.size:
        raise ValueError(f"labels has {len(labels)} entries but beta has {beta.size}")
    sigma = 1.0 / np.sqrt(2.0 * beta)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    if labels is None:
        ax.scatter(d_knn, sigma, s=8, linewidths=0)
    else:
        _scatter(ax, np.column_stack([d_knn, sigma]), labels, s=10.0)
        fig.legend(
            *ax.get_legend_handles_labels(),
            loc="outside right center",
            markerscale=2,
            frameon=False,
            fontsize=8,
            title=label_name,
        )
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")

    def plain(v, _pos, *, minor=False):  # 2, 3, 5, 10, 20, ... rather than 2 × 10⁰
        lead = round(v / 10 ** np.floor(np.log10(v))) if v > 0 else 0
        return f"{v:g}" if not minor or lead in (2, 3, 5) else ""

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(plain))
        axis.set_minor_formatter(FuncFormatter(lambda v, p: plain(v, p, minor=True)))
    ax.set_xlabel(f"distance to the {k}th nearest neighbour (PC units)")
    ax.set_ylabel(r"bandwidth $\sigma_n = 1/\sqrt{2\beta_n}$ (PC units)")
    ax.grid(alpha=0.3, which="both")
    return _finish(fig, title=title, save=save)
