"""Quality-control figures."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["normalisation_effect", "qc_overview"]


def qc_overview(obs, *, thresholds: dict | None = None, save=None):
    """Three histograms (library size, genes detected, mitochondrial %) and their joint scatter.

    Parameters
    ----------
    obs
        DataFrame with ``total_counts``, ``n_genes_by_counts`` and ``pct_counts_mt``.
    thresholds
        Optional ``{"n_genes_by_counts": (low, high), "pct_counts_mt": (None, high)}`` drawn as dashed lines.
    """
    import matplotlib.pyplot as plt

    cols = [
        ("total_counts", "library size (UMIs)"),
        ("n_genes_by_counts", "genes detected"),
        ("pct_counts_mt", "mitochondrial %"),
    ]
    missing = [c for c, _ in cols if c not in obs]
    if missing:
        raise ValueError(f"obs lacks QC columns {missing}; compute them first (sccourse.qc.qc_metrics)")
    thresholds = thresholds or {}
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), constrained_layout=True)
    for ax, (col, label) in zip(axes[:3], cols):
        vals = np.asarray(obs[col], dtype=float)
        ax.hist(vals, bins=60, color="#4C72B0", alpha=0.85)
        for t in thresholds.get(col, ()):
            if t is not None:
                ax.axvline(t, color="#C44E52", ls="--", lw=1.2)
        ax.set(xlabel=label, ylabel="cells", title=label)
    sc_ = axes[3].scatter(
        obs["total_counts"],
        obs["n_genes_by_counts"],
        c=obs["pct_counts_mt"],
        s=4,
        cmap="viridis",
        rasterized=True,
    )
    axes[3].set(xlabel="library size (UMIs)", ylabel="genes detected", title="joint view")
    fig.colorbar(sc_, ax=axes[3], label="mitochondrial %")
    return _finish(fig, save=save)


def normalisation_effect(
    adata, gene: str, *, groupby: str | None = None, layer: str = "counts", title=None, save=None
):
    """One gene against library size, before and after normalisation, with Spearman's ρ in each panel.

    Left: raw counts of ``gene`` (``adata.layers[layer]``) against the cell's library size; right: its normalised
    value (``adata.X``) against the same. Cells are coloured by ``groupby`` when given.

    Returns
    -------
    (Figure, dict)
        The figure and ``{"raw": ρ, "normalised": ρ}``.
    """
    import matplotlib.pyplot as plt
    import scipy.sparse as sp
    from scipy.stats import spearmanr

    if gene not in adata.var_names:
        raise ValueError(f"gene {gene!r} is not in adata.var_names")
    if layer not in adata.layers:
        raise ValueError(
            f"adata.layers has no {layer!r} layer of raw counts (run sccourse.qc.normalize_log1p)"
        )

    def column(M):
        col = M[:, adata.var_names.get_loc(gene)]
        return np.asarray(col.todense() if sp.issparse(col) else col, dtype=float).ravel()

    raw, norm = column(adata.layers[layer]), column(adata.X)
    counts = adata.layers[layer]
    libsize = np.asarray(counts.sum(axis=1), dtype=float).ravel()
    rho = {
        "raw": float(spearmanr(raw, libsize).statistic),
        "normalised": float(spearmanr(norm, libsize).statistic),
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, constrained_layout=True)
    groups = adata.obs[groupby].astype("category") if groupby else None
    for ax, values, label, key in (
        (axes[0], raw, f"{gene}, raw UMI count", "raw"),
        (axes[1], norm, f"{gene}, log(1 + counts per $10^4$)", "normalised"),
    ):
        if groups is None:
            ax.scatter(libsize, values, s=5, alpha=0.6, rasterized=True)
        else:
            for i, cat in enumerate(groups.cat.categories):
                sel = (groups == cat).to_numpy()
                ax.scatter(
                    libsize[sel],
                    values[sel],
                    s=5,
                    alpha=0.7,
                    color=plt.cm.tab10(i % 10),
                    label=str(cat),
                    rasterized=True,
                )
        ax.set_xscale("log")
        lo, hi = libsize[libsize > 0].min(), libsize.max()
        ticks = [
            t for t in (100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000) if lo / 1.5 <= t <= hi * 1.5
        ]
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set(
            xlabel="library size (UMIs per cell, log scale)",
            ylabel=label,
            title=f"{'raw' if key == 'raw' else 'normalised'}: Spearman ρ = {rho[key]:.2f}",
        )
        ax.grid(alpha=0.3)
    if groups is not None:
        axes[1].legend(
            title=groupby,
            fontsize=8,
            markerscale=2.5,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )
    return _finish(fig, title=title, save=save), rho
