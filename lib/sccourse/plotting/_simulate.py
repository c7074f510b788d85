"""Figures for the NB / ZINB simulation lesson."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = [
    "plot_gene_correlations",
    "plot_mean_curves",
    "plot_nb_pmfs",
    "plot_parameter_recovery",
    "plot_real_vs_synthetic",
]


def _dense(X) -> np.ndarray:
    import scipy.sparse as sp

    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=float)


def plot_nb_pmfs(
    logpmf,
    mean: float = 10.0,
    sizes=(0.5, 2.0, 10.0),
    *,
    y_max: int | None = None,
    title: str | None = None,
    save=None,
):
    """P(y) of the NB with one mean and several sizes r, next to the Poisson with that mean.

    Two panels share the counts axis: the probabilities on a linear scale (the bulk) and on a log scale
    (the zeros and the tail, where the sizes differ most).

    Parameters
    ----------
    logpmf
        ``logpmf(y, mu, r)`` → log P(y) as an array (e.g. :func:`sccourse.simulate.nb_logpmf` or your own).
    mean
        The common mean μ.
    sizes
        NB sizes r to draw (variance μ + μ²/r).
    y_max
        Largest count shown (default: where the most dispersed NB has 99 % of its mass, at least 3μ).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from scipy import stats

    sizes = [float(r) for r in sizes]
    if mean <= 0 or not sizes or min(sizes) <= 0:
        raise ValueError("mean and sizes must be positive")
    if y_max is None:
        r0 = min(sizes)
        y_max = int(max(3 * mean, stats.nbinom.ppf(0.99, r0, r0 / (r0 + mean))))
    y = np.arange(y_max + 1, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True, sharex=True)
    for k, r in enumerate(sizes):
        p = np.exp(np.asarray(logpmf(y, np.full_like(y, mean), np.full_like(y, r)), dtype=float))
        label = f"NB, r = {r:g} (variance {mean + mean**2 / r:.0f})"
        for ax in axes:
            ax.plot(y, p, marker="o", ms=2.5, lw=1.2, color=f"C{k}", label=label)
    poisson = stats.poisson.pmf(y, mean)
    for ax in axes:
        ax.plot(y, poisson, color="0.1", ls="--", lw=1.5, label=f"Poisson (variance {mean:g})")
        ax.set(xlabel="count y")
        ax.grid(alpha=0.3)
    axes[0].set(ylabel="P(y)", title=f"mean μ = {mean:g}: probabilities")
    axes[1].set(
        yscale="log",
        ylabel="P(y), log scale",
        title="the same on a log scale: zeros and tail",
        ylim=(max(1e-8, min(poisson.min(), 1e-8)), 1.0),
    )
    axes[0].legend(fontsize=8, frameon=False)
    return _finish(fig, title=title, save=save)


def _term_names(name, T, E) -> list[str]:
    """Row labels of a coefficient block: the estimate's (or the truth's) index when it has one, else term i."""
    import pandas as pd

    for M in (E, T):
        if isinstance(M, pd.DataFrame) and not isinstance(M.index, pd.RangeIndex):
            return [str(i) for i in M.index]
    return [f"{name} term {i}" for i in range(np.shape(T)[0])]


def plot_parameter_recovery(
    truth: dict, estimates: dict, *, errors: bool = True, title: str | None = None, save=None
):
    """Estimated vs true coefficients, one panel per parameter block, with the mean absolute error.

    Points are coloured by design term; the legend names the terms by the estimate's row index (a simulator's
    ``params`` carry the design's column names, e.g. ``mean_dim0``), or the truth's when only it has one. With
    ``errors=True`` a last panel puts the errors (estimate − truth) of all blocks side by side on one axis, so
    their spreads can be compared directly.

    Parameters
    ----------
    truth
        ``{name: array or DataFrame (terms × genes)}``.
    estimates
        ``{name: DataFrame or array}`` with the same names and shapes (e.g. a simulator's ``params``).
    errors
        Add the panel of errors per block.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    missing = [k for k in truth if k not in estimates]
    if missing:
        raise ValueError(f"estimates lack {missing}; got {list(estimates)}")
    n = len(truth) + (1 if errors else 0)
    fig, axes = plt.subplots(1, n, figsize=(3.9 * n, 3.9), constrained_layout=True, squeeze=False)
    diffs = {}
    for ax, (name, T0) in zip(axes[0], truth.items()):
        T = np.asarray(T0, dtype=float)
        E = np.asarray(estimates[name], dtype=float)
        if T.shape != E.shape:
            raise ValueError(f"{name}: truth has shape {T.shape}, estimate {E.shape}")
        diffs[name] = (E - T).ravel()
        labels = _term_names(name, T0, estimates[name])
        lim = [min(T.min(), E.min()) - 0.2, max(T.max(), E.max()) + 0.2]
        ax.plot(lim, lim, color="0.6", lw=1, ls="--", label="estimate = truth")
        for i in range(T.shape[0]):
            ax.scatter(T[i], E[i], s=18, alpha=0.8, label=labels[i])
        ax.set(
            xlim=lim,
            ylim=lim,
            xlabel="true coefficient",
            ylabel="estimated coefficient",
            title=f"{name}\nmean |error| = {np.abs(T - E).mean():.3f}",
        )
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    if errors:
        ax = axes[0, -1]
        names = list(diffs)
        ax.boxplot([diffs[k] for k in names], widths=0.5, showfliers=False, medianprops=dict(color="0.2"))
        jitter = np.random.default_rng(0)
        for i, k in enumerate(names, start=1):
            ax.scatter(
                i + jitter.uniform(-0.15, 0.15, diffs[k].size), diffs[k], s=10, alpha=0.6, color=f"C{i - 1}"
            )
        ax.axhline(0.0, color="0.6", lw=1, ls="--")
        ax.set_xticks(range(1, len(names) + 1), names, rotation=15)
        ax.set(ylabel="estimate − truth", title="errors side by side")
        ax.grid(alpha=0.3, axis="y")
    return _finish(fig, title=title, save=save)


def plot_mean_curves(
    adata,
    simulator,
    genes,
    *,
    covariate: str = "pseudotime",
    ncols: int = 3,
    title: str | None = None,
    save=None,
):
    """Observed counts of ``genes`` against ``covariate``, with the fitted mean μ of each cell on top.

    The count axis is linear up to 1 and logarithmic above (``symlog``), so zeros and large counts both show.

    Parameters
    ----------
    adata
        The counts the simulator was fitted to (``.X``) and their ``.obs``.
    simulator
        A fitted :class:`sccourse.simulate.NegBinRegressionSimulator` (or the ZINB one), or a dict
        ``{label: simulator}`` to compare several models' fitted means (one line style each).
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
    sims = simulator if isinstance(simulator, dict) else {"fitted mean": simulator}
    t = adata.obs[covariate].to_numpy(dtype=float)
    order = np.argsort(t)
    means = {label: sim.predict(adata.obs)["mean"] for label, sim in sims.items()}
    styles = [dict(color="C3", lw=2, ls="-"), dict(color="C0", lw=2, ls="--"), dict(color="C2", lw=2, ls=":")]
    ncols = min(ncols, len(genes))
    nrows = int(np.ceil(len(genes) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.5 * ncols, 2.9 * nrows), constrained_layout=True, squeeze=False
    )
    for ax, g in zip(axes.ravel(), genes):
        y = _dense(adata[:, g].X).ravel()
        ax.scatter(t, y, s=4, alpha=0.25, color="0.4", rasterized=True, label="observed counts")
        for k, (label, mean) in enumerate(means.items()):
            ax.plot(t[order], mean[g].to_numpy()[order], label=label, **styles[k % len(styles)])
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)
        ax.set(title=g, xlabel=covariate, ylabel="counts (symlog)")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(genes) :]:
        ax.set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=len(labels),
        fontsize=9,
        frameon=False,
        markerscale=3,
    )
    return _finish(fig, title=title, save=save)


def plot_real_vs_synthetic(real, synthetic, *, quantile: float = 0.995, title: str | None = None, save=None):
    """Real vs simulated counts, gene by gene and cell by cell.

    Four panels: per-gene mean–variance (log–log, with the Poisson line), fraction of zeros against the mean,
    the distribution of library sizes (counts per cell) on shared logarithmic bins, and each gene's ratio of
    synthetic to real variance (sorted, log scale, with lines at 1/3 and 3).

    Parameters
    ----------
    real
        AnnData (or cells × genes array) of the observed counts.
    synthetic
        AnnData or array over the same genes, or a dict ``{name: AnnData or array}`` of several simulations.
    quantile
        The library-size panel spans the ``1 − quantile`` to ``quantile`` range of all library sizes; cells
        outside it are counted in the legend, not drawn.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    A = _dense(getattr(real, "X", real))
    sets = synthetic if isinstance(synthetic, dict) else {"synthetic": synthetic}
    mats = {name: _dense(getattr(S, "X", S)) for name, S in sets.items()}
    for name, M in mats.items():
        if M.shape[1] != A.shape[1]:
            raise ValueError(f"real and {name} must have the same genes; got {A.shape[1]} and {M.shape[1]}")
    if not 0.5 < quantile <= 1.0:
        raise ValueError(f"quantile must lie in (0.5, 1], got {quantile!r}")
    everything = {"real": A, **mats}
    colours = {"real": "0.15", **{name: f"C{i + 1}" for i, name in enumerate(mats)}}
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.0), constrained_layout=True)
    libs = {name: M.sum(1) for name, M in everything.items()}
    pooled = np.concatenate(list(libs.values()))
    lo = max(np.quantile(pooled, 1.0 - quantile), 1.0)
    hi = max(np.quantile(pooled, quantile), lo * 1.01)
    bins = np.geomspace(lo, hi, 41)
    var_real = A.var(0)
    for name in [*mats, "real"]:  # the real cells last, drawn on top
        M = everything[name]
        m, v, z = M.mean(0), M.var(0), (M == 0).mean(0)
        colour = colours[name]
        style = (
            dict(facecolors="none", edgecolors=colour, linewidths=1.0, s=16)
            if name == "real"
            else dict(color=colour, alpha=0.7, s=12)
        )
        axes[0].scatter(m, v, label=name, **style)
        axes[1].scatter(m, z, label=name, **style)
        L = libs[name]
        outside = int(((L < lo) | (L > hi)).sum())
        axes[2].hist(
            L[(L >= lo) & (L <= hi)],
            bins=bins,
            histtype="step",
            lw=1.8,
            color=colour,
            label=f"{name} ({outside} cells outside)" if outside else name,
        )
        if name != "real":
            ok = var_real > 0
            ratio = np.sort(v[ok] / var_real[ok])
            n_big = int((ratio > 3).sum())
            axes[3].plot(
                np.arange(1, ratio.size + 1),
                ratio,
                marker="o",
                ms=3,
                lw=1,
                color=colour,
                label=f"{name}: {n_big} gene{'' if n_big == 1 else 's'} above 3×",
            )
    positive = A.mean(0)[A.mean(0) > 0]
    grid = np.geomspace(max(positive.min(), 1e-3), positive.max(), 50)
    axes[0].plot(grid, grid, color="0.5", ls="--", lw=1, label="Poisson (var = mean)")
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="gene mean (counts per cell)",
        ylabel="gene variance (counts²)",
        title="mean–variance, one dot per gene",
    )
    axes[1].set(
        xscale="log",
        xlabel="gene mean (counts per cell)",
        ylabel="fraction of cells with 0 counts",
        title="zeros, one dot per gene",
    )
    axes[2].set(
        xscale="log",
        xlabel="library size (counts per cell, all genes)",
        ylabel="cells",
        title=f"library size ({100 * (1 - quantile):g}–{100 * quantile:g} % range)",
    )
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axes[2].xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes[2].xaxis.set_major_formatter(ScalarFormatter())
    axes[2].xaxis.set_minor_formatter(NullFormatter())
    for level, style in ((1.0, "-"), (3.0, "--"), (1.0 / 3.0, "--")):
        axes[3].axhline(level, color="0.5", ls=style, lw=1)
    axes[3].set(
        yscale="log",
        xlabel="genes, sorted by ratio",
        ylabel="synthetic variance / real variance",
        title="variance ratio per gene",
    )
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
        raise ValueError(
            "counts must be a dict of at least two count matrices, the first being the reference"
        )
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
    names = list(corr)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.6 * (n + 1), 3.6), constrained_layout=True)
    off = ~np.eye(len(first), dtype=bool)
    for ax, (name, C) in zip(axes[:n], corr.items()):
        im = ax.imshow(C[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(
            title=f"{name}\nmean |r| off-diagonal {np.abs(C[off]).mean():.3f}",
            xticks=[],
            yticks=[],
            xlabel=f"{len(first)} genes (clustered on {names[0]})",
            ylabel="same genes",
        )
    fig.colorbar(im, ax=axes[n - 1], shrink=0.8, label="correlation of log1p counts")
    for i, name in enumerate(names[1:], start=1):
        axes[n].scatter(first[off], corr[name][off], s=6, alpha=0.5, color=f"C{i}", label=name)
    axes[n].plot([-1, 1], [-1, 1], color="0.5", ls="--", lw=1)
    axes[n].set(
        xlabel=f"{names[0]} correlation",
        ylabel="synthetic correlation",
        title="gene pairs",
        xlim=(-1, 1),
        ylim=(-1, 1),
    )
    axes[n].legend(fontsize=8, frameon=False)
    return _finish(fig, title=title, save=save)
