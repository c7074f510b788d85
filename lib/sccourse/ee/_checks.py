"""Argument checks shared by the elastic-embedding modules: data matrices, the graphs W⁺ and W⁻, embeddings.

Generic checks (integers, seeds, numbers, choices, matrices) come from :mod:`sccourse._validation`; this module
adds what is specific to EE (AnnData slots, symmetric non-negative weights, the trade-off λ).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import scipy.sparse as sp
import torch

from .. import _ee_kernels as K
from .._device import get_device
from .._validation import as_float_matrix, check_float, check_key, is_anndata

if TYPE_CHECKING:
    from anndata import AnnData

#: what the data arguments accept: cells × features as numpy, scipy.sparse or torch, or AnnData
Data: TypeAlias = "np.ndarray | sp.spmatrix | sp.sparray | torch.Tensor | AnnData"
#: a square weight matrix: numpy, scipy.sparse or torch (dense or sparse)
Graph: TypeAlias = "np.ndarray | sp.spmatrix | sp.sparray | torch.Tensor"
Device: TypeAlias = "str | torch.device | None"


def _number(value):
    """A 0-d numpy array or torch tensor as a Python number (other values unchanged), for the scalar checks."""
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def check_lam(lam, *, positive: bool = False) -> float:
    """λ ≥ 0 (``positive``: λ > 0, for the estimators, where λ = 0 collapses every cell onto one point)."""
    lam = check_float(_number(lam), "lam", minimum=0.0, strict=positive)
    return lam


def data_matrix(Y, *, name: str = "Y", use_rep: str | None = None, min_cells: int = 3) -> np.ndarray:
    """Y as a finite float64 array (cells × features); AnnData → ``obsm[use_rep]`` (or ``.X``)."""
    if is_anndata(Y):
        if use_rep is not None and use_rep in Y.obsm:
            Y, name = Y.obsm[use_rep], f"{name}.obsm[{use_rep!r}]"
        elif use_rep is not None and use_rep != "X":
            raise ValueError(
                f"{name}: AnnData has no obsm[{use_rep!r}] (present: {list(Y.obsm)}); "
                "run a PCA first or pass use_rep='X'"
            )
        else:
            Y, name = Y.X, f"{name}.X"
    if isinstance(Y, torch.Tensor) and Y.dtype in (torch.bfloat16, torch.float16):
        Y = Y.double()
    arr = np.asarray(as_float_matrix(Y, name, what="(cells × features)"), dtype=np.float64)
    if not np.isfinite(arr).all():  # integer input is not checked for finiteness there; it always is
        raise ValueError(f"{name} contains NaN or infinite values")
    if arr.shape[0] < min_cells:
        raise ValueError(f"{name} must hold at least {min_cells} cells (rows), got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature (column), got shape {arr.shape}")
    return arr


def check_perplexity(perplexity, n: int) -> float:
    perplexity = check_float(_number(perplexity), "perplexity", minimum=1.0, strict=True)
    if perplexity >= n - 1:
        raise ValueError(
            f"perplexity ({perplexity:g}) must be smaller than the number of cells - 1 ({n - 1}); "
            "lower the perplexity or embed more cells"
        )
    return perplexity


def check_not_constant(Y: np.ndarray, name: str = "Y") -> None:
    """Refuse data whose cells all coincide: no distance, no neighbourhood, nothing to embed."""
    if Y.shape[0] > 1 and not (np.ptp(Y, axis=0) > 0).any():
        raise ValueError(
            f"{name}: every cell has the same values (all pairwise distances are 0), so affinities and "
            "embeddings are undefined; expected at least two different cells"
        )


def max_asymmetry(W) -> float:
    """``max |W − Wᵀ|`` of a dense square matrix, compared tile by tile (cache-friendly, no N × N temporary)."""
    Wt = torch.as_tensor(W)
    n, t, worst = Wt.shape[0], 512, 0.0
    for i in range(0, n, t):
        for j in range(i, n, t):
            worst = max(worst, float((Wt[i : i + t, j : j + t] - Wt[j : j + t, i : i + t].T).abs().max()))
    return worst


def _torch_to_scipy_or_numpy(W: torch.Tensor):
    W = W.detach().cpu()
    if W.layout == torch.sparse_coo:
        W = W.coalesce()
        i = W.indices().numpy()
        if i.shape[0] != 2:
            raise ValueError(f"Wpos must be an N × N matrix, got a sparse tensor of shape {tuple(W.shape)}")
        return sp.csr_matrix((W.values().numpy(), (i[0], i[1])), shape=tuple(W.shape))
    if W.layout == torch.sparse_csr:
        parts = (W.values(), W.col_indices(), W.crow_indices())
        return sp.csr_matrix(tuple(t.numpy() for t in parts), shape=tuple(W.shape))
    if W.layout != torch.strided:
        W = W.to_dense()
    return W.numpy()


def check_wpos(Wpos: Graph, n: int | None = None, *, attraction: bool = False):
    """W⁺ as scipy CSR or a float64 numpy array: square, ``n`` × ``n``, finite, non-negative, symmetric.

    ``attraction``: also require a positive weight (the estimators: with W⁺ = 0 nothing holds the cells together
    and the embedding has no minimiser).
    """
    if isinstance(Wpos, torch.Tensor):
        Wpos = _torch_to_scipy_or_numpy(Wpos)
    if sp.issparse(Wpos):
        if Wpos.dtype.kind not in "biuf":
            raise TypeError(f"Wpos must hold real numbers, got dtype {Wpos.dtype}")
        W = sp.csr_matrix(Wpos, dtype=np.float64)
        data = W.data
    else:
        W = np.asarray(Wpos)
        if W.dtype.kind not in "biuf":
            raise TypeError(f"Wpos must hold real numbers, got dtype {W.dtype}")
        W = W.astype(np.float64, copy=False)
        if W.ndim != 2:
            raise ValueError(f"Wpos must be an N × N matrix, got shape {W.shape}")
        data = W.ravel()
    if W.shape[0] != W.shape[1]:
        raise ValueError(f"Wpos must be square (N × N), got shape {W.shape}")
    if n is not None and W.shape[0] != n:
        raise ValueError(f"Wpos is {W.shape[0]} × {W.shape[0]} but there are {n} cells (rows of X or Y)")
    if data.size and (not np.isfinite(data).all() or (data < 0).any()):
        raise ValueError("Wpos must hold finite, non-negative weights")
    scale = float(np.abs(data).max()) if data.size else 0.0
    if sp.issparse(W):
        asym = abs(W - W.T)
        asym_max = asym.max() if asym.nnz else 0.0
    else:
        asym_max = max_asymmetry(W)
    if asym_max > 1e-8 * scale + 1e-300:
        raise ValueError("Wpos must be symmetric (use entropic_affinities, which returns (P + Pᵀ)/(2N))")
    if attraction:
        if W.shape[0] < 2:
            raise ValueError(f"Wpos must describe at least 2 cells, got shape {W.shape}")
        if not scale > 0:
            raise ValueError(
                "Wpos has no positive weight (all zero): with no attraction the cells drift apart without "
                "bound and the embedding has no minimiser; pass affinities such as entropic_affinities(Y)"
            )
    return W


def as_wneg(Wneg, n: int, device, *, repulsion: bool = False) -> K.RepulsiveWeights:
    """W⁻ as :class:`sccourse._ee_kernels.RepulsiveWeights` for ``n`` cells (``repulsion``: require a positive
    weight, for the estimators).
    """
    if Wneg is None or (isinstance(Wneg, str) and Wneg == "uniform"):
        return K.RepulsiveWeights(n, "uniform")
    if isinstance(Wneg, K.RepulsiveWeights):
        if Wneg.n != n:
            raise ValueError(f"Wneg is for {Wneg.n} cells but the embedding has {n}")
        return Wneg
    if isinstance(Wneg, str):
        raise TypeError(
            f"Wneg must be None, 'uniform', repulsive_weights(...) or an N × N array; got {Wneg!r}"
        )
    if sp.issparse(Wneg):
        Wneg = Wneg.toarray()
    if isinstance(Wneg, torch.Tensor):
        Wt = Wneg.detach()
        Wt = Wt.to_dense() if Wt.layout != torch.strided else Wt
    else:
        arr = np.asarray(Wneg)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"Wneg must hold real numbers, got dtype {arr.dtype}")
        Wt = torch.as_tensor(arr.astype(np.float64, copy=False))
    if Wt.is_complex():
        raise TypeError(f"Wneg must hold real numbers, got dtype {Wt.dtype}")
    if not Wt.is_floating_point():
        Wt = Wt.to(torch.float64)
    if Wt.shape != (n, n):
        raise ValueError(f"Wneg must be {n} × {n}, got shape {tuple(Wt.shape)}")
    if not torch.isfinite(Wt).all() or (Wt < 0).any():
        raise ValueError("Wneg must hold finite, non-negative weights")
    if max_asymmetry(Wt) > 1e-6 * float(Wt.abs().max()):
        raise ValueError("Wneg must be symmetric")
    if repulsion and n > 1 and not bool((Wt > 0).any()):
        raise ValueError(
            "Wneg has no positive weight (all zero): with no repulsion every cell collapses onto one point"
        )
    return K.RepulsiveWeights(n, "dense", dense=Wt.to(get_device(device)))


def check_key_added(key_added, adata) -> None:
    if is_anndata(adata):
        check_key(key_added, "key_added")


def write_back(adata, key: str, X: np.ndarray) -> None:
    if is_anndata(adata):
        adata.obsm[key] = X
