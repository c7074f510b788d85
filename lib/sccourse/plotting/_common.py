"""What every figure function of :mod:`sccourse.plotting` ends with."""

from __future__ import annotations


def _finish(fig, *, title: str | None = None, save=None):
    """Give ``fig`` its overall ``title`` (when one is given), write it to ``save`` (a path or file object,
    120 dpi) when asked, and return it.
    """
    if title:
        fig.suptitle(title)
    if save is not None:
        fig.savefig(save, dpi=120)
    return fig
