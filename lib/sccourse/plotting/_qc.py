"""Quality-control figures."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["qc_overview"]


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

    cols = [("total_counts", "library size (UMIs)"), ("n_genes_by_counts", "genes detected"),
            ("pct_counts_mt", "mitochondrial %")]
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
    sc_ = axes[3].scatter(obs["total_counts"], obs["n_genes_by_counts"], c=obs["pct_counts_mt"], s=4,
                          cmap="viridis", rasterized=True)
    axes[3].set(xlabel="library size (UMIs)", ylabel="genes detected", title="joint view")
    fig.colorbar(sc_, ax=axes[3], label="mitochondrial %")
    return _finish(fig, save=save)
