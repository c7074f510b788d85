"""The elastic-embedding objective and its analytic gradient (the blocked kernels of :mod:`sccourse._ee_kernels`)."""

from __future__ import annotations

import numpy as np
import torch

from .. import _ee_kernels as K
from .._device import get_device
from .._validation import check_float
from ._checks import Device, Graph, as_wneg, check_lam, check_wpos, data_matrix


def as_embedding(X, name: str = "X") -> tuple[torch.Tensor, bool]:
    """An N × d embedding as a finite float tensor (torch input keeps its dtype and device) and whether it was
    a tensor.
    """
    if isinstance(X, torch.Tensor):
        if X.layout != torch.strided:
            raise TypeError(f"{name} must be a dense tensor, got layout {X.layout}")
        if X.is_complex() or X.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D tensor (cells × n_components), got shape {tuple(X.shape)}"
            )
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(
                f"{name} must have at least one cell and one component, got shape {tuple(X.shape)}"
            )
        if not torch.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return X, True
    arr = data_matrix(X, name=name, use_rep=None, min_cells=1)
    return torch.as_tensor(arr, dtype=torch.float64), False


def ee_objective(
    X: np.ndarray | torch.Tensor,
    Wpos: Graph,
    lam: float = 1.0,
    *,
    Wneg=None,
    return_grad: bool = False,
    max_block_mb: float = K.DEFAULT_BLOCK_MB,
    device: Device = "auto",
) -> float | tuple[float, np.ndarray | torch.Tensor]:
    """Elastic-embedding objective (and optionally its analytic gradient).

    ``E(X) = Σ_nm w⁺_nm ‖x_n − x_m‖² + λ Σ_nm w⁻_nm exp(−‖x_n − x_m‖²)``,
    ``∇E = 4 (L⁺ − λ L̃⁻) X`` with ``L = diag(W 1) − W`` and ``w̃⁻_nm = w⁻_nm exp(−‖x_n − x_m‖²)``.

    The repulsive sum is taken in row blocks on ``device``: one block (exact, dense) when
    ``N² · 24 bytes ≤ max_block_mb``, otherwise blocks of rows × N that never exceed ``max_block_mb`` MiB.

    Parameters
    ----------
    X
        N × d embedding (numpy or torch; the gradient is returned in the same type), finite.
    Wpos
        N × N symmetric, non-negative attractive weights (scipy.sparse, numpy or torch).
    lam
        Trade-off λ ≥ 0.
    Wneg
        ``None``/``"uniform"`` (1/N²), :func:`repulsive_weights` (``kind="distance"``) or a dense N × N array.
    return_grad
        Also return ∇E.
    max_block_mb
        Memory cap (MiB, > 0) of one repulsive block.
    device
        Where the sums run (``"auto"``, ``"cpu"``, ``"cuda"``).

    Returns
    -------
    float, or (float, gradient) when ``return_grad``.
    """
    Xt, was_torch = as_embedding(X)
    n = Xt.shape[0]
    lam = check_lam(lam)
    W = check_wpos(Wpos, n)
    max_block_mb = check_float(max_block_mb, "max_block_mb", minimum=0.0, strict=True)
    dev = get_device(device)
    wneg = as_wneg(Wneg, n, dev)
    dtype = Xt.dtype if Xt.dtype in (torch.float32, torch.float64) else torch.float64
    prob = K.EEProblem(W, wneg, lam, device=dev, dtype=dtype, max_block_mb=max_block_mb)
    value, grad = prob.value_and_grad(Xt.to(device=dev, dtype=dtype).detach(), need_grad=return_grad)
    if not return_grad:
        return value
    if was_torch:
        return value, grad.to(X.device)
    return value, grad.cpu().numpy()


def ee_gradient(
    X: np.ndarray | torch.Tensor,
    Wpos: Graph,
    lam: float = 1.0,
    *,
    Wneg=None,
    max_block_mb: float = K.DEFAULT_BLOCK_MB,
    device: Device = "auto",
) -> np.ndarray | torch.Tensor:
    """Analytic gradient ``∇E = 4 (L⁺ − λ L̃⁻) X`` of :func:`ee_objective` (same arguments).

    Returns
    -------
    ndarray or torch.Tensor
        N × d, the type of ``X``.
    """
    return ee_objective(X, Wpos, lam, Wneg=Wneg, return_grad=True, max_block_mb=max_block_mb, device=device)[
        1
    ]
