"""One set of argument checks for the whole library (scikit-learn's ``check_*`` spirit).

Every message says what was wrong (the argument's name and the value or what was found) and what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp


def is_anndata(x) -> bool:
    try:
        import anndata as ad
    except ImportError:  # pragma: no cover  (a hard dependency)
        return False
    return isinstance(x, ad.AnnData)


def check_anndata(adata, name: str = "adata"):
    if not is_anndata(adata):
        raise TypeError(f"{name} must be an AnnData, got {type(adata).__name__}")
    return adata


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool, not a float) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_seed(seed, name: str = "seed") -> int:
    """A seed: an integer in [0, 2**32 - 1] (what numpy and torch both accept)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= 2**32 - 1:
        raise ValueError(f"{name} must be an integer between 0 and 2**32 - 1, got {seed!r}")
    return int(seed)


def check_float(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    allow_inf: bool = False,
) -> float:
    """A real number (finite unless ``allow_inf``) with ``value >= minimum`` (``>`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if np.isnan(value) or (np.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _values(X):
    """The stored values of a dense, sparse or torch matrix, as a numpy array (no densification)."""
    if sp.issparse(X):
        return np.asarray(X.data)
    try:
        import torch

        if isinstance(X, torch.Tensor):
            X = X.coalesce().values() if X.is_sparse else X
            return X.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(X)


def check_counts(X, *, where: str = "adata.X", integer: bool = True) -> None:
    """Raise unless ``X`` holds raw counts: finite, non-negative and (``integer``) whole numbers.

    ``where`` names the matrix in the message (``"adata.layers['counts']"``), so that a user who passed
    log-normalised data sees which slot held it.
    """
    values = _values(X)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{where} must hold numbers (raw counts), found dtype {values.dtype}")
    if values.size == 0:
        return
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{where} must hold finite raw counts; found NaN or inf values")
    if np.min(values) < 0:
        raise ValueError(
            f"{where} must hold non-negative raw counts; found values down to {np.min(values):g}"
        )
    if integer and values.dtype.kind == "f" and not np.all(np.equal(np.floor(values), values)):
        bad = values[np.floor(values) != values][0]
        raise ValueError(
            f"{where} must hold raw integer counts, found {bad:g}: is it normalised or log-transformed "
            "data? Pass the raw counts (e.g. adata.layers['counts'])"
        )


def check_finite(X, name: str) -> None:
    values = _values(X)
    if values.dtype.kind == "f" and values.size and not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or inf values")


def check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    """One label per cell: a 1-D array of length ``n``."""
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one label per cell), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have one entry per cell ({n}), got {arr.shape[0]}")
    return arr


def check_key(key, name: str = "key_added") -> str:
    """The name of an AnnData slot (``obs``/``obsm``/``obsp``/``uns``/``layers`` key): a non-empty string without
    ``/`` (which h5ad files cannot store in a key).
    """
    if not isinstance(key, str):
        raise TypeError(f"{name} must be a string (the key of an AnnData slot), got {type(key).__name__}")
    if not key.strip() or "/" in key:
        raise ValueError(f"{name} must be a non-empty string without '/', got {key!r}")
    return key


def as_float_matrix(X, name: str = "X", *, what: str = "(cells x genes)") -> np.ndarray:
    """A finite, numeric, 2-D numpy array from numpy, scipy.sparse or torch (dense or sparse; densified)."""
    try:
        import torch

        if isinstance(X, torch.Tensor):
            X = (X.to_dense() if X.layout != torch.strided else X).detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if sp.issparse(X):
        X = X.toarray()
    arr = np.asarray(X)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric matrix, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D {what} matrix, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr
