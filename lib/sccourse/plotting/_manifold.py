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


def _scatter(
    ax,
    fig,
    xy,
    values,
    *,
    title,
    cmap="viridis",
    size=None,
    vmin=None,
    vmax=None,
    cbar_label=None,
    extend="neither",
):
    import pandas as pd

    size = size if size is not None else max(2.0, 12000 / max(len(xy), 1) / 4)
    if isinstance(values, pd.Series) and not pd.api.types.is_numeric_dtype(values):
        cats = values.astype("category")
        palette = __import__("matplotlib").colormaps["tab20"]
        for i, c in enumerate(cats.cat.categories):
            m = (cats == c).to_numpy()
            ax.scatter(
                xy[m, 0], xy[m, 1], s=size, color=palette(i % 20), label=str(c), linewidths=0, rasterized=True
            )
        ax.legend(
            markerscale=3,
            fontsize=7,
            frameon=False,
            loc="center left",
            bbox_to_anchor=(1, 0.5),
            ncol=1 if len(cats.cat.categories) <= 14 else 2,
        )
    else:
        v = np.asarray(values, dtype=float)
        order = np.argsort(v, kind="stable")  # highest values on top
        sc = ax.scatter(
            xy[order, 0],
            xy[order, 1],
            c=v[order],
            s=size,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            linewidths=0,
            rasterized=True,
        )
        cb = fig.colorbar(sc, ax=ax, shrink=0.8, extend=extend)
        if cbar_label:
            cb.set_label(cbar_label)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def embedding_panels(
    adata,
    color,
    *,
    basis: str = "umap",
    components=(0, 1),
    ncols: int = 4,
    cmap: str = "viridis",
    title: str | None = None,
    cbar_label: str | None = "log1p expr.",
    save=None,
):
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
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 3.1 * nrows), constrained_layout=True, squeeze=False
    )
    name = basis.replace("X_", "").upper() if basis != "diffmap" else "DC"
    for ax, key in zip(axes.ravel(), keys):
        vals = _values(adata, key)
        _scatter(
            ax, fig, xy, vals, title=key, cmap=cmap, cbar_label=cbar_label if key not in adata.obs else None
        )
        ax.set_xlabel(f"{name}{components[0] + (basis != 'diffmap')}")
        ax.set_ylabel(f"{name}{components[1] + (basis != 'diffmap')}")
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    return _finish(fig, title=title, save=save)


def marker_matrixplot(
    table,
    *,
    title: str = "mean marker expression by cluster",
    cmap: str = "Reds",
    standardize: bool = True,
    highlight=None,
    save=None,
):
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
    fig, ax = plt.subplots(
        figsize=(0.6 * vals.shape[1] + 2.5, 0.35 * vals.shape[0] + 1.6), constrained_layout=True
    )
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


def loss_histories(
    histories: dict, *, title: str = "denoiser training", ylabel: str = "MSE", logy: bool = False, save=None
):
    """Train (solid) and validation (dashed) loss per epoch for several named histories.

    Each history is a DataFrame with columns ``epoch``, ``train_loss`` and (optionally) ``val_loss``. Epochs get
    integer ticks, short runs get markers, and the legend sits beside the axes, never over the curves.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not histories:
        raise ValueError("histories must hold at least one named history DataFrame")
    fig, ax = plt.subplots(figsize=(7.6, 3.6), constrained_layout=True)
    for i, (name, h) in enumerate(histories.items()):
        marker = "o" if len(h) <= 25 else None
        ax.plot(
            h["epoch"],
            h["train_loss"],
            color=f"C{i}",
            lw=1.6,
            marker=marker,
            ms=3,
            label=f"{name} (training cells)",
        )
        if "val_loss" in h and np.isfinite(h["val_loss"]).any():
            ax.plot(
                h["epoch"],
                h["val_loss"],
                color=f"C{i}",
                lw=1.6,
                ls="--",
                marker=marker,
                ms=3,
                label=f"{name} (validation cells)",
            )
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _finish(fig, save=save)


def _readable(v: float) -> str:
    """A number as a reader writes it: 1,060 / 18.0 / 1.78 / 0.042."""
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.1 or a == 0:
        return f"{v:.2f}"
    return f"{v:.2g}"


def energy_bars(
    energies: dict,
    *,
    ylabel: str = r"energy per cell, $\mathrm{tr}(X^\top L X)\,/\,n$",
    title: str = "smoothness on the T-cell graph",
    logy: bool | None = None,
    save=None,
):
    """Bar chart of named energies (one bar per matrix) with the value written above each bar.

    ``logy`` (default: when all values are positive and span more than a factor 20) puts the bars on a
    logarithmic axis, so that small and large values are all visible; tick labels are plain numbers.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if not energies:
        raise ValueError("energies must hold at least one named value")
    names, vals = list(energies), [float(v) for v in energies.values()]
    if not np.isfinite(vals).all():
        raise ValueError("energies must be finite numbers")
    positive = min(vals) > 0
    if logy is None:
        logy = positive and max(vals) / min(vals) > 20
    if logy and not positive:
        raise ValueError("a logarithmic axis needs positive energies")
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2.8, 3.8), constrained_layout=True)
    bottom = 10 ** np.floor(np.log10(min(vals)) - 0.3) if logy else 0.0
    bars = ax.bar(names, np.asarray(vals) - bottom, bottom=bottom, color=[f"C{i}" for i in range(len(names))])
    for b, v in zip(bars, vals):
        ax.annotate(
            _readable(v),
            (b.get_x() + b.get_width() / 2, v),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    if logy:
        ax.set_yscale("log")
        ax.set_ylim(bottom, 10 ** np.ceil(np.log10(max(vals)) + 0.3))
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:,.0f}" if y >= 1 else f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(min(0.0, min(vals) * 1.15), max(vals) * 1.15 if max(vals) > 0 else 1.0)
    ax.set(ylabel=ylabel + (" (log scale)" if logy else ""), title=title)
    ax.tick_params(axis="x", rotation=20)
    ax.grid(alpha=0.3, axis="y")
    return _finish(fig, save=save)


def denoised_marker_grid(
    adata,
    versions: dict,
    genes,
    *,
    gene_names=None,
    basis: str = "umap",
    cmap: str = "viridis",
    cbar_label: str = "log1p expression",
    title: str | None = "marker expression: raw vs denoised",
    save=None,
):
    """Rows: versions of the expression matrix (``{"raw": X, "manifold": X̂_m, ...}``, cells x genes);
    columns: marker genes, on the same embedding, with one colour scale per marker.

    ``genes`` are marker names; ``gene_names`` names the columns of the matrices (default ``adata.var_names``).
    The colour scale of a marker (one colour bar under its column, labelled with the gene and ``cbar_label``) runs
    from 0 (expression cannot be negative; a denoiser's small negative outputs take the lowest colour, and a pointed
    end of the colour bar says so) to the 99th percentile over all versions.
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
    fig, axes = plt.subplots(
        len(mats),
        len(genes),
        figsize=(3.1 * len(genes), 2.7 * len(mats) + 0.8),
        constrained_layout=True,
        squeeze=False,
    )
    size = max(2.0, 12000 / max(len(xy), 1) / 4)
    for j, g in enumerate(genes):
        cols = [m[:, pos[g]] for m in mats.values()]
        vmax = max(float(np.percentile(c, 99)) for c in cols)
        vmax = vmax if vmax > 0 else max(float(np.max(c)) for c in cols) or 1.0
        below = any(bool((c < 0).any()) for c in cols)
        above = any(bool((c > vmax).any()) for c in cols)
        extend = "both" if below and above else "min" if below else "max" if above else "neither"
        for i, (k, c) in enumerate(zip(mats, cols)):
            ax = axes[i, j]
            order = np.argsort(c, kind="stable")  # highest values on top
            sc = ax.scatter(
                xy[order, 0],
                xy[order, 1],
                c=c[order],
                s=size,
                cmap=cmap,
                vmin=0.0,
                vmax=vmax,
                linewidths=0,
                rasterized=True,
            )
            ax.set_title(f"{g} — {k}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(
            sc,
            ax=axes[:, j],
            orientation="horizontal",
            shrink=0.85,
            aspect=25,
            extend=extend,
            label=f"{g}: {cbar_label}",
        )
    return _finish(fig, title=title, save=save)
