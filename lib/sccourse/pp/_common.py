"""Checks and slot names shared by the preprocessing functions."""

from __future__ import annotations

import contextlib
import random

import numpy as np

from .._validation import check_anndata as _check_anndata
from .._validation import check_counts as _check_counts
from .._validation import check_key as _check_key


# --------------------------------------------------------------------------------------
# shared checks
# --------------------------------------------------------------------------------------
def _check_nonempty(adata, *, min_cells: int = 1, what: str = "") -> None:
    if adata.n_obs < min_cells or adata.n_vars == 0:
        need = "at least one gene and " + ("one cell" if min_cells == 1 else f"{min_cells} cells")
        raise ValueError(
            f"adata has {adata.n_obs} cells x {adata.n_vars} genes; {what or 'this step'} needs {need}"
        )


def _check_raw_counts(adata, where: str = "adata.X") -> None:
    _check_anndata(adata)
    X = adata.X
    if X is None:
        raise ValueError(f"{where} is empty (None); pass an AnnData with raw counts in .X")
    _check_counts(X, where=where)


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


@contextlib.contextmanager
def _global_random_state_kept():
    """Scanpy's neighbour search and UMAP may draw from (or seed) numpy's and Python's global generators; the
    caller's random state is put back afterwards, so a library call never changes what a notebook draws next.
    """
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002 (saved to be restored)
    try:
        yield
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


def _pipeline_keys(key_added: str | None) -> dict[str, str | None]:
    """Slot names of the clustering pipeline: scanpy's defaults, or every slot named after ``key_added``."""
    if key_added is None:
        return {
            "counts": "counts",
            "pca": None,  # scanpy: obsm["X_pca"], varm["PCs"], uns["pca"]
            "neighbors": None,  # scanpy: uns["neighbors"], obsp["distances"], obsp["connectivities"]
            "leiden": "leiden",
            "umap": None,  # scanpy: obsm["X_umap"], uns["umap"]
            "diffmap": "X_diffmap",
            "diffmap_evals": "diffmap_evals",
        }
    k = _check_key(key_added)
    return {
        "counts": f"{k}_counts",
        "pca": f"X_{k}_pca",
        "neighbors": f"{k}_neighbors",
        "leiden": f"{k}_leiden",
        "umap": f"X_{k}_umap",
        "diffmap": f"X_{k}_diffmap",
        "diffmap_evals": f"{k}_diffmap_evals",
    }
