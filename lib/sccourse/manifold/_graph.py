"""Graph operators on kNN affinities ``W`` (scipy.sparse) and their torch forms.

``d = W1``, ``P = D⁻¹W``, ``S = (P + Pᵀ)/2``, ``L = I − D^{-1/2} W D^{-1/2}`` (or ``D − W``), the Dirichlet energy
``tr(XᵀLX)``; :func:`to_torch_sparse` and :func:`to_torch` move matrices onto a device.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from .._device import get_device
from .._validation import as_float_matrix as _as_float_matrix

__all__ = [
    "degree",
    "laplacian",
    "laplacian_energy",
    "markov_operator",
    "symmetrized_operator",
    "to_torch",
    "to_torch_sparse",
]


# --------------------------------------------------------------------------------------
# input handling shared by the manifold submodules
# --------------------------------------------------------------------------------------
def _as_tensor(X, name: str = "X", *, dtype=torch.float32, device=None) -> torch.Tensor:
    """A dense, finite 2-D torch tensor (torch input keeps its device; others go through numpy)."""
    if isinstance(X, torch.Tensor):
        if X.layout != torch.strided:
            X = X.to_dense()
        if X.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (cells x genes) matrix, got shape {tuple(X.shape)}")
        if X.dtype.is_complex or X.dtype == torch.bool:
            raise ValueError(f"{name} must be a real numeric matrix, got dtype {X.dtype}")
        if not torch.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        out = X.to(dtype=dtype)
    else:
        out = torch.from_numpy(np.ascontiguousarray(_as_float_matrix(X, name))).to(dtype)
    return out if device is None else out.to(device)


def _unwrap_anndata(X):
    """``.X`` of an AnnData, anything else unchanged."""
    return X.X if hasattr(X, "obs_names") and hasattr(X, "X") else X


def _as_affinity(W, *, symmetric: bool = False) -> sp.csr_matrix:
    """Validate a (cells x cells) affinity matrix and return it as float64 CSR."""
    if isinstance(W, torch.Tensor):
        W = W.to_dense().detach().cpu().numpy() if W.layout != torch.strided else W.detach().cpu().numpy()
    if sp.issparse(W):
        M = sp.csr_matrix(W, dtype=np.float64)
    else:
        arr = np.asarray(W)
        if arr.dtype == object or arr.ndim != 2:
            raise ValueError(f"W must be a 2-D (cells x cells) matrix, got an array of shape {arr.shape}")
        M = sp.csr_matrix(arr.astype(np.float64))
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"W must be square (cells x cells), got shape {M.shape}")
    if M.shape[0] == 0:
        raise ValueError("W is empty (0 cells)")
    if not np.isfinite(M.data).all():
        raise ValueError("W contains NaN or infinite values; affinities must be finite")
    if (M.data < 0).any():
        raise ValueError(f"W must hold non-negative affinities, found a minimum of {M.data.min():.3g}")
    M.eliminate_zeros()
    if symmetric:
        diff = abs(M - M.T)
        scale = max(float(abs(M).max()), 1e-300)
        if diff.nnz and diff.max() > 1e-8 * scale:
            raise ValueError(
                f"W must be symmetric (an undirected graph), max |W - Wᵀ| is {diff.max():.3g}; "
                "symmetrise it first, e.g. (W + W.T) / 2"
            )
    return M


def _degrees_checked(M: sp.csr_matrix) -> np.ndarray:
    d = np.asarray(M.sum(axis=1)).ravel()
    if (d <= 0).any():
        bad = np.flatnonzero(d <= 0)
        raise ValueError(
            f"{bad.size} cell(s) have zero degree (no neighbours), e.g. row {bad[0]}; "
            "the operator needs every row of W to have a positive sum"
        )
    return d


# --------------------------------------------------------------------------------------
# operators
# --------------------------------------------------------------------------------------
def degree(W) -> np.ndarray:
    """Degree vector ``d = W 1`` (row sums of the affinity matrix).

    Parameters
    ----------
    W
        (cells x cells) non-negative affinities: scipy.sparse, dense numpy or torch.

    Returns
    -------
    numpy.ndarray
        float64, one degree per cell.
    """
    return np.asarray(_as_affinity(W).sum(axis=1)).ravel()


def markov_operator(W) -> sp.csr_matrix:
    """Random-walk operator ``P = D⁻¹ W`` (rows sum to 1).

    Parameters
    ----------
    W
        (cells x cells) non-negative affinities, scipy.sparse or dense; every row needs a positive sum.

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    M = _as_affinity(W)
    d = _degrees_checked(M)
    return sp.csr_matrix(sp.diags(1.0 / d) @ M)


def symmetrized_operator(W) -> sp.csr_matrix:
    """Symmetrised random-walk operator ``S = (P + Pᵀ)/2`` with ``P = D⁻¹W``.

    Its eigenvalues are real but not confined to [0, 1]: ``I − S`` can be indefinite.

    Parameters
    ----------
    W
        (cells x cells) non-negative affinities; every row needs a positive sum.

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    P = markov_operator(W)
    return sp.csr_matrix(0.5 * (P + P.T))


def laplacian(W, *, normalized: bool = True) -> sp.csr_matrix:
    """Graph Laplacian of a symmetric affinity matrix.

    ``normalized=True``: ``L = I − D^{-1/2} W D^{-1/2}`` (PSD, eigenvalues in [0, 2], ``L D^{1/2} 1 = 0``).
    ``normalized=False``: ``L = D − W`` (PSD, ``L 1 = 0``). For a ``W`` with zero diagonal this equals
    ``scipy.sparse.csgraph.laplacian(W, normed=...)``.

    Parameters
    ----------
    W
        Symmetric, non-negative (cells x cells) affinities; for the normalized form no zero rows.
    normalized
        The normalized (default) or the combinatorial Laplacian.

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    M = _as_affinity(W, symmetric=True)
    n = M.shape[0]
    if normalized:
        d = _degrees_checked(M)
        s = 1.0 / np.sqrt(d)
        A = sp.diags(s) @ M @ sp.diags(s)
        L = sp.identity(n, format="csr") - A
    else:
        d = np.asarray(M.sum(axis=1)).ravel()
        L = sp.diags(d) - M
    L = sp.csr_matrix(L)
    L = 0.5 * (L + L.T)  # exact symmetry after floating-point scaling
    return sp.csr_matrix(L)


def laplacian_energy(L, X, *, per_cell: bool = False) -> float | np.ndarray | torch.Tensor:
    """Dirichlet energy ``tr(Xᵀ L X)`` of a signal ``X`` (cells x genes) on a graph with Laplacian ``L``.

    For the normalized Laplacian ``tr(XᵀLX) = ½ Σ_ij w_ij ‖x_i/√d_i − x_j/√d_j‖²``: small when neighbours look
    alike.

    Parameters
    ----------
    L
        (cells x cells) Laplacian: scipy.sparse, dense numpy or torch.
    X
        (cells x genes) signal. Torch inputs stay torch (differentiable: ``∂/∂X = (L + Lᵀ) X``); anything else
        is computed in float64 numpy.
    per_cell
        Return ``e_i = x_iᵀ (L X)_i`` (``Σ_i e_i = tr(XᵀLX)``); single terms can be negative, the total cannot
        for a PSD ``L``.

    Returns
    -------
    float, numpy.ndarray or torch.Tensor
        The total (a float, or a 0-d tensor for torch input) or one value per cell.
    """
    if isinstance(X, torch.Tensor):
        Xt = X if X.layout == torch.strided else X.to_dense()
        if Xt.ndim != 2:
            raise ValueError(f"X must be a 2-D (cells x genes) matrix, got shape {tuple(Xt.shape)}")
        if not torch.isfinite(Xt.detach()).all():
            raise ValueError("X contains NaN or infinite values")
        if isinstance(L, torch.Tensor):
            Lt = L.to(Xt.device, Xt.dtype)
        else:
            Lt = to_torch_sparse(L if sp.issparse(L) else np.asarray(L), device=Xt.device, dtype=Xt.dtype)
        if Lt.shape[0] != Lt.shape[1] or Lt.shape[1] != Xt.shape[0]:
            raise ValueError(f"L is {tuple(Lt.shape)} but X has {Xt.shape[0]} rows (cells); they must match")
        LX = Lt @ Xt if Lt.layout == torch.strided else torch.sparse.mm(Lt, Xt)
        e = (Xt * LX).sum(dim=1)
        return e if per_cell else e.sum()
    Xa = _as_float_matrix(X).astype(np.float64)
    Lm = L if sp.issparse(L) else np.asarray(L, dtype=np.float64)
    if Lm.ndim != 2 or Lm.shape[0] != Lm.shape[1] or Lm.shape[1] != Xa.shape[0]:
        raise ValueError(f"L is {Lm.shape} but X has {Xa.shape[0]} rows (cells); they must match")
    if sp.issparse(Lm) and Lm.nnz and not np.isfinite(Lm.data).all():
        raise ValueError("L contains NaN or infinite values")
    e = np.einsum("ij,ij->i", Xa, np.asarray(Lm @ Xa))
    return e if per_cell else float(e.sum())


# --------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------
def to_torch_sparse(
    M,
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype = torch.float32,
    layout: Literal["coo", "csr"] = "coo",
) -> torch.Tensor:
    """A scipy.sparse (or dense numpy) matrix as a torch sparse tensor on ``device``.

    Parameters
    ----------
    M
        2-D matrix: scipy.sparse, numpy or torch.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` (:func:`sccourse.get_device`).
    dtype
        Value dtype of the result.
    layout
        ``"coo"``: a coalesced ``torch.sparse_coo_tensor``; ``"csr"``: a ``torch.sparse_csr_tensor`` (faster
        ``S @ X`` on CPU).

    Returns
    -------
    torch.Tensor
    """
    if layout not in ("coo", "csr"):
        raise ValueError(f"layout must be 'coo' or 'csr', got {layout!r}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float32), got {dtype!r}")
    dev = get_device(device)
    if isinstance(M, torch.Tensor):
        M = M.to_dense().detach().cpu().numpy() if M.layout != torch.strided else M.detach().cpu().numpy()
    if not sp.issparse(M):
        M = np.asarray(M)
        if M.ndim != 2:
            raise ValueError(f"M must be a 2-D matrix, got shape {M.shape}")
    if M.dtype.kind not in "biuf":
        raise ValueError(f"M must be a real numeric matrix, got dtype {M.dtype}")
    M = sp.csr_matrix(M)
    if M.nnz and not np.isfinite(M.data).all():
        raise ValueError("M contains NaN or infinite values")
    M.sum_duplicates()
    M.sort_indices()
    if layout == "coo":
        C = M.tocoo()
        idx = torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64))
        val = torch.from_numpy(C.data).to(dtype)
        return torch.sparse_coo_tensor(idx, val, size=C.shape, check_invariants=False).coalesce().to(dev)
    # 32-bit CSR indices when they fit: torch's CSR x dense product (MKL, cuSPARSE) is markedly faster with them
    itype = np.int32 if max(M.nnz, *M.shape) < 2**31 - 1 else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        T = torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype(itype)),
            torch.from_numpy(M.indices.astype(itype)),
            torch.from_numpy(M.data).to(dtype),
            size=M.shape,
            check_invariants=False,
        )
    return T.to(dev)


def to_torch(
    X, *, device: str | torch.device | None = "auto", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A dense (cells x genes) torch tensor on ``device``.

    Parameters
    ----------
    X
        numpy, scipy.sparse, torch or AnnData (its ``.X``); finite and numeric.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` (:func:`sccourse.get_device`).
    dtype
        dtype of the result.

    Returns
    -------
    torch.Tensor
    """
    return _as_tensor(_unwrap_anndata(X), dtype=dtype, device=get_device(device))
