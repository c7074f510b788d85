"""Figures for the T-cell manifold assignment: embeddings, marker tables, losses, energies, denoised markers."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["denoised_marker_grid", "embedding_panels", "energy_bars", "loss_histories", "marker_matrixplot"]


def _coords(adata, basis: str, components=(0, 1)) -> np.ndarray:
    key = basis if basis.startswith("X_") else f"X_{basis}"
    if key not in adata.obsm:
        raise ValueError(f"adata.obsm has no {key!r}; compute the embedding first (have: {list(adata.obsm)})")
    emb = np.asarray(adata.obsm[key])
    c = list(components)
    if max(c) >= emb.shape[1]:
        raise ValueError(f"{key} has {emb.shape[1]} components, asked for {c}")
    return emb[:, c]


def _values(adata, key):
    import scipy.sparse as sp

    if key in adata.obs:
        return adata.obs[key]
    if key in adata.var_names:
        x = adata[:, key].X
        return np.asarray(x.toarray() if sp.issparse(x) else x).ravel()
    raise ValueError(f"{key!r} is neither an obs column nor a gene in var_names")


def _scatter(ax, fig, xy, values, *, title, cmap="viridis", size=None, vmin=None, vmax=None, cbar_label=None):
    import pandas as pd

    size = size if size is not None else max(2.0, 12000 / max(len(xy), 1) / 4)
    if isinstance(values, pd.Series) and not pd.api.types.is_numeric_dtype(values):
        cats = values.astype("category")
        palette = __import__("matplotlib").colormaps["tab20"]
        for i, c in enumerate(cats.cat.categories):
            m = (cats == c).to_numpy()
            ax.scatter(xy[m, 0], xy[m, 1], s=size, color=palette(i % 20), label=str(c), linewidths=0, rasterized=True)
        ax.legend(markerscale=3, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5),
                  ncol=1 if len(cats.cat.categories) <= 14 else 2)
    else:
        v = np.asarray(values, dtype=float)
        order = np.argsort(v, kind="stable")  # highest values on top
        sc = ax.scatter(xy[order, 0], xy[order, 1], c=v[order], s=size, cmap=cmap, vmin=vmin, vmax=vmax,
                        linewidths=0, rasterized=True)
        cb = fig.colorbar(sc, ax=ax, shrink=0.8)
        if cbar_label:
            cb.set_label(cbar_label)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def embedding_panels(adata, color, *, basis: str = "umap", components=(0, 1), ncols: int = 4,
                     cmap: str = "viridis", title: str | None = None, cbar_label: str | None = "log1p expr.",
                     save=None):
    """One scatter panel per entry of ``color`` (obs columns or genes) on ``obsm["X_<basis>"]``.

    Categorical values get a legend, continuous ones a colour bar. For a diffusion map pass
    ``basis="diffmap", components=(1, 2)`` (component 0 is constant).
    """
    import matplotlib.pyplot as plt

    keys = [color] if isinstance(color, str) else list(color)
    if not keys:
        raise ValueError("color must name at least one obs column or gene")
    xy = _coords(adata, basis, components)
    ncols = min(ncols, len(keys))
    nrows = int(np.ceil(len(keys) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.1 * nrows), constrained_layout=True,
                             squeeze=False)
    name = basis.replace("X_", "").upper() if basis != "diffmap" else "DC"
    for ax, key in zip(axes.ravel(), keys):
        vals = _values(adata, key)
        _scatter(ax, fig, xy, vals, title=key, cmap=cmap,
                 cbar_label=cbar_label if key not in adata.obs else None)
        ax.set_xlabel(f"{name}{components[0] + (basis != 'diffmap')}")
        ax.set_ylabel(f"{name}{components[1] + (basis != 'diffmap')}")
    for ax in axes.ravel()[len(keys):]:
        ax.set_visible(False)
    return _finish(fig, title=title, save=save)


def marker_matrixplot(table, *, title: str = "mean marker expression by cluster", cmap: str = "Reds",
                      standardize: bool = True, highlight=None, save=None):
    """Heatmap of a (groups x markers) table, e.g. :func:`sccourse.manifold.marker_table`.

    ``standardize=True`` scales each marker to [0, 1] across groups (as scanpy's ``standard_scale="var"``);
    ``highlight`` (group labels) marks selected rows with a frame.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    vals = np.asarray(table, dtype=float)
    if vals.ndim != 2 or vals.size == 0:
        raise ValueError("table must be a non-empty (groups x markers) DataFrame")
    shown = vals
    if standardize:
        lo, hi = vals.min(axis=0), vals.max(axis=0)
        shown = (vals - lo) / np.where(hi > lo, hi - lo, 1.0)
    fig, ax = plt.subplots(figsize=(0.6 * vals.shape[1] + 2.5, 0.35 * vals.shape[0] + 1.6), constrained_layout=True)
    im = ax.imshow(shown, cmap=cmap, aspect="auto", vmin=0)
    ax.set_xticks(range(vals.shape[1]), [str(c) for c in table.columns], rotation=90)
    ax.set_yticks(range(vals.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel("marker")
    ax.set_ylabel(str(table.index.name or "group"))
    ax.set_title(title, fontsize=10)
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("scaled mean" if standardize else "mean log1p expr.")
    if highlight is not None:
        rows = [i for i, g in enumerate(table.index) if g in set(highlight)]
        for r in rows:
            ax.add_patch(Rectangle((-0.5, r - 0.5), vals.shape[1], 1, fill=False, ec="black", lw=1.5))
    return _finish(fig, save=save)


def loss_histories(histories: dict, *, title: str = "denoiser training", ylabel: str = "MSE", save=None):
    """Train (solid) and validation (dashed) loss per epoch for several named histories."""
    import matplotlib.pyplot as plt

    if not histories:
        raise ValueError("histories must hold at least one named history DataFrame")
    fig, ax = plt.subplots(figsize=(5.8, 3.6), constrained_layout=True)
    for i, (name, h) in enumerate(histories.items()):
        ax.plot(h["epoch"], h["train_loss"], color=f"C{i}", lw=1.6, label=f"{name} (train)")
        if "val_loss" in h and np.isfinite(h["val_loss"]).any():
            ax.plot(h["epoch"], h["val_loss"], color=f"C{i}", lw=1.6, ls="--", label=f"{name} (validation)")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return _finish(fig, save=save)


def energy_bars(energies: dict, *, ylabel: str = r"Dirichlet energy $\mathrm{tr}(X^\top L X)$",
                title: str = "smoothness on the T-cell graph", save=None):
    """Bar chart of named energies (one bar per matrix), value printed above each bar."""
    import matplotlib.pyplot as plt

    if not energies:
        raise ValueError("energies must hold at least one named value")
    names, vals = list(energies), [float(v) for v in energies.values()]
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2.5, 3.6), constrained_layout=True)
    bars = ax.bar(names, vals, color=[f"C{i}" for i in range(len(names))])
    for b, v in zip(bars, vals):
        ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    ax.set(ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=20)
    ax.grid(alpha=0.3, axis="y")
    return _finish(fig, save=save)


def denoised_marker_grid(adata, versions: dict, genes, *, gene_names=None, basis: str = "umap",
                         cmap: str = "viridis", title: str | None = "marker expression: raw vs denoised", save=None):
    """Rows: versions of the expression matrix (``{"raw": X, "manifold": X̂_m, ...}``, cells x genes);
    columns: marker genes, on the same embedding, with one colour scale per marker.

    ``genes`` are marker names; ``gene_names`` names the columns of the matrices (default ``adata.var_names``).
    """
    import matplotlib.pyplot as plt
    import scipy.sparse as sp

    if not versions:
        raise ValueError("versions must hold at least one named (cells x genes) matrix")
    genes = [genes] if isinstance(genes, str) else list(genes)
    names = list(adata.var_names if gene_names is None else gene_names)
    pos = {g: i for i, g in enumerate(names)}
    missing = [g for g in genes if g not in pos]
    if missing:
        raise ValueError(f"genes {missing} are not among the matrix columns")
    xy = _coords(adata, basis)
    mats = {}
    for k, M in versions.items():
        M = M.toarray() if sp.issparse(M) else np.asarray(M.detach().cpu() if hasattr(M, "detach") else M)
        if M.shape != (adata.n_obs, len(names)):
            raise ValueError(f"version {k!r} has shape {M.shape}, expected ({adata.n_obs}, {len(names)})")
        mats[k] = M
    fig, axes = plt.subplots(len(mats), len(genes), figsize=(3.3 * len(genes), 2.9 * len(mats)),
                             constrained_layout=True, squeeze=False)
    for j, g in enumerate(genes):
        cols = [m[:, pos[g]] for m in mats.values()]
        vmin = min(float(np.percentile(c, 1)) for c in cols)
        vmax = max(float(np.percentile(c, 99)) for c in cols)
        for i, (k, c) in enumerate(zip(mats, cols)):
            _scatter(axes[i, j], fig, xy, c, title=f"{g} — {k}", cmap=cmap, vmin=vmin, vmax=vmax)
    return _finish(fig, title=title, save=save)
