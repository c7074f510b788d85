"""Figures for the NB / ZINB simulation lesson."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["plot_gene_correlations", "plot_mean_curves", "plot_parameter_recovery", "plot_real_vs_synthetic"]


def _dense(X) -> np.ndarray:
    import scipy.sparse as sp

    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=float)


def plot_parameter_recovery(truth: dict, estimates: dict, *, title: str | None = None, save=None):
    """Estimated vs true coefficients, one panel per parameter block, with the mean absolute error.

    Parameters
    ----------
    truth
        ``{name: array (terms × genes)}``.
    estimates
        ``{name: DataFrame or array}`` with the same names and shapes (e.g. a simulator's ``params``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    missing = [k for k in truth if k not in estimates]
    if missing:
        raise ValueError(f"estimates lack {missing}; got {list(estimates)}")
    fig, axes = plt.subplots(1, len(truth), figsize=(3.6 * len(truth), 3.6), constrained_layout=True,
                             squeeze=False)
    for ax, (name, T) in zip(axes[0], truth.items()):
        T = np.asarray(T, dtype=float)
        E = np.asarray(estimates[name], dtype=float)
        if T.shape != E.shape:
            raise ValueError(f"{name}: truth has shape {T.shape}, estimate {E.shape}")
        lim = [min(T.min(), E.min()) - 0.2, max(T.max(), E.max()) + 0.2]
        ax.plot(lim, lim, color="0.6", lw=1, ls="--")
        for i in range(T.shape[0]):
            ax.scatter(T[i], E[i], s=18, alpha=0.8, label=f"term {i}")
        ax.set(xlim=lim, ylim=lim, xlabel="true coefficient", ylabel="estimate",
               title=f"{name}\nmean |error| = {np.abs(T - E).mean():.3f}")
        ax.grid(alpha=0.3)
        if T.shape[0] > 1:
            ax.legend(fontsize=8, frameon=False)
    return _finish(fig, title=title, save=save)


def plot_mean_curves(adata, simulator, genes, *, covariate: str = "pseudotime", ncols: int = 3,
                     title: str | None = None, save=None):
    """Observed counts of ``genes`` against ``covariate``, with the fitted mean μ of each cell on top.

    Parameters
    ----------
    adata
        The counts the simulator was fitted to (``.X``) and their ``.obs``.
    simulator
        A fitted :class:`sccourse.simulate.NegBinRegressionSimulator` (or the ZINB one).
    genes
        Gene names to show.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    genes = list(genes)
    unknown = [g for g in genes if g not in adata.var_names]
    if unknown or not genes:
        raise ValueError(f"genes must be a non-empty list of var_names; unknown: {unknown}")
    if covariate not in adata.obs:
        raise ValueError(f"covariate {covariate!r} is not an obs column; obs has {list(adata.obs.columns)}")
    t = adata.obs[covariate].to_numpy(dtype=float)
    order = np.argsort(t)
    mean = simulator.predict(adata.obs)["mean"]
    ncols = min(ncols, len(genes))
    nrows = int(np.ceil(len(genes) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows), constrained_layout=True,
                             squeeze=False)
    for ax, g in zip(axes.ravel(), genes):
        y = _dense(adata[:, g].X).ravel()
        ax.scatter(t, y, s=4, alpha=0.25, color="0.4", rasterized=True, label="observed")
        ax.plot(t[order], mean[g].to_numpy()[order], color="C3", lw=2, label="fitted mean")
        ax.set(title=g, xlabel=covariate, ylabel="counts")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(genes):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=8, frameon=False)
    return _finish(fig, title=title, save=save)


def plot_real_vs_synthetic(real, synthetic, *, title: str | None = None, save=None):
    """Real vs simulated counts: per-gene mean–variance, zero fraction vs mean, and library sizes.

    Parameters
    ----------
    real, synthetic
        AnnData (or cells × genes arrays) of counts over the same genes.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    A = _dense(getattr(real, "X", real))
    B = _dense(getattr(synthetic, "X", synthetic))
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"real and synthetic must have the same genes; got {A.shape[1]} and {B.shape[1]}")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.7), constrained_layout=True)
    for M, name, colour in ((A, "real", "C0"), (B, "synthetic", "C1")):
        m, v, z = M.mean(0), M.var(0), (M == 0).mean(0)
        axes[0].scatter(m, v, s=12, alpha=0.7, color=colour, label=name)
        axes[1].scatter(m, z, s=12, alpha=0.7, color=colour, label=name)
        axes[2].hist(M.sum(1), bins=40, alpha=0.5, color=colour, label=name)
    grid = np.logspace(np.log10(max(A.mean(0).min(), 1e-3)), np.log10(A.mean(0).max()), 50)
    axes[0].plot(grid, grid, color="0.5", ls="--", lw=1, label="Poisson (var = mean)")
    axes[0].set(xscale="log", yscale="log", xlabel="gene mean", ylabel="gene variance", title="mean–variance")
    axes[1].set(xscale="log", xlabel="gene mean", ylabel="fraction of zeros", title="zeros")
    axes[2].set(xlabel="library size (counts per cell)", ylabel="cells", title="library size")
    for ax in axes:
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    return _finish(fig, title=title, save=save)


def plot_gene_correlations(counts: dict, *, n_genes: int = 30, title: str | None = None, save=None):
    """Gene–gene correlation matrices of several count matrices over the same genes, side by side.

    Correlations are Pearson correlations of ``log1p`` counts, over the ``n_genes`` genes with the largest
    variance in the *first* matrix, ordered by hierarchical clustering of that first matrix. A last panel
    plots every off-diagonal correlation of the others against the first.

    Parameters
    ----------
    counts
        ``{name: AnnData or cells × genes array}``; the first entry is the reference (the real cells).
    n_genes
        Genes shown.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import leaves_list, linkage

    if not isinstance(counts, dict) or len(counts) < 2:
        raise ValueError("counts must be a dict of at least two count matrices, the first being the reference")
    mats = {k: np.log1p(_dense(getattr(v, "X", v)).astype(float)) for k, v in counts.items()}
    shapes = {m.shape[1] for m in mats.values()}
    if len(shapes) != 1:
        raise ValueError(f"all matrices must have the same genes (columns); got {sorted(shapes)}")
    ref = next(iter(mats.values()))
    keep = np.argsort(-ref.var(0), kind="stable")[: min(n_genes, ref.shape[1])]
    keep = keep[ref[:, keep].std(0) > 0]
    corr = {k: np.nan_to_num(np.corrcoef(m[:, keep], rowvar=False)) for k, m in mats.items()}
    first = next(iter(corr.values()))
    order = leaves_list(linkage(1.0 - first[np.triu_indices(len(first), 1)], method="average"))
    n = len(corr)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.6 * (n + 1), 3.6), constrained_layout=True)
    off = ~np.eye(len(first), dtype=bool)
    for ax, (name, C) in zip(axes[:n], corr.items()):
        im = ax.imshow(C[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(title=f"{name}\nmean |r| off-diagonal {np.abs(C[off]).mean():.3f}", xticks=[], yticks=[])
    fig.colorbar(im, ax=axes[n - 1], shrink=0.8, label="correlation of log1p counts")
    names = list(corr)
    for i, name in enumerate(names[1:], start=1):
        axes[n].scatter(first[off], corr[name][off], s=6, alpha=0.5, color=f"C{i}", label=name)
    axes[n].plot([-1, 1], [-1, 1], color="0.5", ls="--", lw=1)
    axes[n].set(xlabel=f"{names[0]} correlation", ylabel="synthetic correlation", title="gene pairs",
                xlim=(-1, 1), ylim=(-1, 1))
    axes[n].legend(fontsize=8, frameon=False)
    return _finish(fig, title=title, save=save)
