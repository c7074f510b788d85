"""Training / optimisation curves."""

from __future__ import annotations

import numpy as np

from ._common import _finish

__all__ = ["monitor_perf", "compare_curves"]


def _as_perf(perf, columns):
    import pandas as pd

    if isinstance(perf, pd.DataFrame):
        return perf
    arr = np.asarray(perf, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(
            f"perf must be an (iterations x 3) array [iteration, objective, ARI], got shape {arr.shape}"
        )
    return pd.DataFrame(arr, columns=columns)


def monitor_perf(perf, *, objective: str = "objective", title: str | None = None, save=None):
    """Two panels: the objective and the ARI against the iteration.

    Parameters
    ----------
    perf
        (iterations x 3) array with columns (iteration, objective, ARI), or a DataFrame with
        columns ``iteration``, ``objective`` name and ``ari``.
    objective
        Name of the objective (y-axis label of the left panel), e.g. ``"MSE"`` or ``"-ELBO"``.
    save
        Optional path; the figure is written there (format from the suffix).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    df = _as_perf(perf, ["iteration", objective, "ari"])
    it_col = "iteration" if "iteration" in df else df.columns[0]
    obj_col = objective if objective in df else df.columns[1]
    ari_col = "ari" if "ari" in df else df.columns[2]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    axes[0].plot(df[it_col], df[obj_col], color="C0", lw=1.5)
    axes[0].set(xlabel="iteration", ylabel=objective, title="objective")
    ok = df[ari_col].notna()
    axes[1].plot(
        df.loc[ok, it_col], df.loc[ok, ari_col], color="C1", lw=1.5, marker="o" if ok.sum() < 30 else None
    )
    axes[1].set(
        xlabel="iteration", ylabel="ARI", title="ARI vs cell types", ylim=(min(0, df[ari_col].min()), 1)
    )
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, title=title, save=save)


def compare_curves(
    curves: dict,
    *,
    xlabel: str = "iteration",
    ylabel: str = "ARI",
    title: str | None = None,
    logy: bool = False,
    save=None,
):
    """Several named curves on one axis: ``{"NMF-SSE": (x, y), "NMF-Poisson": (x, y)}``.

    The legend sits to the right of the axes, never over the curves; a curve with few points gets markers; integer
    x values (iterations, epochs) get integer ticks.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not curves:
        raise ValueError("curves must hold at least one (x, y) pair")
    fig, ax = plt.subplots(figsize=(7.2, 3.6), constrained_layout=True)
    integer_x = True
    for label, (x, y) in curves.items():
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        ok = np.isfinite(y)
        integer_x &= bool(np.all(x == np.round(x)))
        ax.plot(x[ok], y[ok], label=label, lw=1.5, marker="o" if ok.sum() < 30 else None, ms=3.5)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _finish(fig, save=save)
