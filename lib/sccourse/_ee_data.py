"""Kept for :mod:`sccourse.ee`, which imports :func:`prepare_pcs` from here; it lives in :mod:`sccourse.pp`."""

from .pp import prepare_pcs as prepare_pcs
