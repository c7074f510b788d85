"""Corruptions of a clean (cells x genes) matrix: Gaussian noise ``X + σε`` and heat diffusion ``S^k X`` along the
cell graph, and the σ whose Gaussian deviation matches a given corruption.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from .._validation import check_choice as _check_choice
from .._validation import check_int as _check_int
from .._validation import check_seed as _check_seed
from ._graph import _as_tensor, to_torch_sparse

__all__ = ["GaussianNoise", "ManifoldHeat", "NoiseProcess", "match_sigma"]


class NoiseProcess:
    """Interface: ``sample(X)`` returns a corrupted copy of the clean (cells x genes) ``X``."""

    def sample(self, X: torch.Tensor, **kwargs) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__}.sample is not implemented: NoiseProcess is an interface; use GaussianNoise or "
            "ManifoldHeat, or subclass it and define sample(X)"
        )

    @property
    def name(self) -> str:
        return type(self).__name__


def _check_sigma(sigma) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    return float(sigma)


class GaussianNoise(NoiseProcess):
    """Isotropic Gaussian corruption ``X̃ = X + σ ε``, ``ε ~ N(0, I)``.

    Parameters
    ----------
    sigma
        Noise standard deviation (>= 0).
    seed
        Seeds a private CPU generator: the sequence of draws is the same on every run and every
        device (noise is drawn on the CPU, then moved). ``None`` uses torch's global generator.
    """

    def __init__(self, sigma: float = 0.1, *, seed: int | None = None):
        self.sigma = _check_sigma(sigma)
        self.seed = None if seed is None else _check_seed(seed)
        self._gen = None
        if seed is not None:
            self._gen = torch.Generator().manual_seed(self.seed)

    def sample(self, X, sigma: float | None = None, *, generator: torch.Generator | None = None, **kwargs):
        """``X + σ ε`` (same type as ``X``: torch in, torch out; numpy in, numpy out).

        Parameters
        ----------
        X
            Clean (cells x genes) matrix.
        sigma
            Overrides ``self.sigma`` for this draw.
        generator
            A torch CPU generator to draw from instead of the process's own.

        Returns
        -------
        torch.Tensor or numpy.ndarray
        """
        s = self.sigma if sigma is None else _check_sigma(sigma)
        numpy_in = not isinstance(X, torch.Tensor)
        Xt = _as_tensor(X, dtype=torch.float64 if numpy_in else X.dtype)
        gen = generator if generator is not None else self._gen
        eps = torch.randn(Xt.shape, generator=gen, dtype=Xt.dtype, device="cpu")
        out = Xt + s * eps.to(Xt.device)
        return out.numpy() if numpy_in else out

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma:.4g}, seed={self.seed})"


class ManifoldHeat(NoiseProcess):
    """Heat diffusion along the cell graph: ``k`` steps of ``X ← S X``, i.e. ``X̃ = S^k X``.

    Parameters
    ----------
    S
        (cells x cells) diffusion operator: scipy.sparse, dense numpy or torch (sparse or dense),
        usually :func:`symmetrized_operator`.
    steps
        Default number of steps ``k`` (>= 0).
    """

    def __init__(self, S, steps: int = 1):
        if isinstance(S, torch.Tensor):
            if S.ndim != 2 or S.shape[0] != S.shape[1]:
                raise ValueError(f"S must be a square (cells x cells) operator, got shape {tuple(S.shape)}")
            S_t = S.coalesce() if S.layout == torch.sparse_coo else S
            vals = S_t.values() if S_t.layout in (torch.sparse_coo, torch.sparse_csr) else S_t
            if not torch.isfinite(vals).all():
                raise ValueError("S contains NaN or infinite values")
            self._base = S_t
        else:
            M = sp.csr_matrix(S) if sp.issparse(S) else None
            if M is None:
                arr = np.asarray(S)
                if arr.ndim != 2:
                    raise ValueError(f"S must be a square (cells x cells) operator, got shape {arr.shape}")
                if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
                    raise ValueError(f"S must be a numeric operator, got dtype {arr.dtype}")
                M = sp.csr_matrix(arr.astype(np.float64))
            if M.shape[0] != M.shape[1]:
                raise ValueError(f"S must be a square (cells x cells) operator, got shape {M.shape}")
            if M.nnz and not np.isfinite(M.data).all():
                raise ValueError("S contains NaN or infinite values")
            self._base = to_torch_sparse(M, device="cpu", dtype=torch.float64, layout="csr")
        self._S: dict = {}
        self.n = int(self._base.shape[0])
        self.steps = _check_int(steps, "steps", minimum=0)

    def operator(self, device, dtype) -> torch.Tensor:
        """The operator as a torch tensor on ``device`` with ``dtype`` (cached).

        Parameters
        ----------
        device
            A torch device.
        dtype
            A torch dtype.

        Returns
        -------
        torch.Tensor
        """
        key = (torch.device(device), dtype)
        if key not in self._S:
            self._S[key] = self._base.to(dtype).to(device)
        return self._S[key]

    def _apply(self, S, X):
        return S @ X if S.layout == torch.strided else torch.sparse.mm(S, X)

    def sample(self, X, steps: int | None = None, **kwargs):
        """``S^k X`` with ``k = steps`` (default ``self.steps``); torch in, torch out; numpy in, numpy out.

        Parameters
        ----------
        X
            (cells x genes) matrix holding the graph's cells in its order.
        steps
            Number of heat steps (>= 0).

        Returns
        -------
        torch.Tensor or numpy.ndarray
        """
        k = self.steps if steps is None else _check_int(steps, "steps", minimum=0)
        numpy_in = not isinstance(X, torch.Tensor)
        Xt = _as_tensor(X, dtype=torch.float64 if numpy_in else X.dtype)
        if Xt.shape[0] != self.n:
            raise ValueError(
                f"X has {Xt.shape[0]} rows (cells) but the operator S is {self.n} x {self.n}; "
                "X must hold the same cells as the graph, in the same order"
            )
        S = self.operator(Xt.device, Xt.dtype)
        for _ in range(k):
            Xt = self._apply(S, Xt)
        return Xt.numpy() if numpy_in else Xt

    def powers(self, X: torch.Tensor, max_steps: int) -> torch.Tensor:
        """Stack ``[S⁰X, S¹X, …, S^K X]`` of shape ``(K+1, cells, genes)``.

        Parameters
        ----------
        X
            (cells x genes) tensor.
        max_steps
            ``K`` (>= 0).

        Returns
        -------
        torch.Tensor
        """
        K = _check_int(max_steps, "max_steps", minimum=0)
        out = [X]
        for _ in range(K):
            out.append(self.sample(out[-1], steps=1))
        return torch.stack(out)

    def __repr__(self) -> str:
        return f"ManifoldHeat(n={self.n}, steps={self.steps})"


def match_sigma(X, target, *, seed: int = 0, method: Literal["empirical", "expected"] = "empirical") -> float:
    """Gaussian σ whose mean per-cell L2 deviation ``mean_i ‖σ ε_i‖`` equals a target.

    Parameters
    ----------
    X
        Clean (cells x genes) matrix (its shape sets the number of cells and dimensions).
    target
        A number (the target mean deviation) or a corrupted copy of ``X`` (same shape), whose
        ``mean_i ‖X̃_i − X_i‖`` is the target (e.g. ``ManifoldHeat(S, k).sample(X)``).
    seed
        ``method="empirical"``: ``ε`` is the draw ``GaussianNoise(σ, seed=seed).sample(X)`` makes, and
        ``σ = target / mean_i ‖ε_i‖`` exactly (the deviation is linear in σ for a fixed draw).
    method
        ``"expected"``: closed form ``σ = target / c_d`` with ``c_d = E‖ε‖ = √2 Γ((d+1)/2) / Γ(d/2)``.

    Returns
    -------
    float
    """
    from scipy.special import gammaln

    _check_choice(method, "method", ("empirical", "expected"))
    seed = _check_seed(seed)
    Xt = _as_tensor(X, dtype=torch.float64 if not isinstance(X, torch.Tensor) else X.dtype)
    if isinstance(target, (int, float, np.floating, np.integer)) and not isinstance(target, bool):
        tgt = float(target)
    else:
        T = _as_tensor(target, "target", dtype=torch.float64).cpu()
        if tuple(T.shape) != tuple(Xt.shape):
            raise ValueError(f"target has shape {tuple(T.shape)} but X has shape {tuple(Xt.shape)}")
        tgt = float(torch.linalg.norm(T - Xt.cpu().to(torch.float64), dim=1).mean())
    if not np.isfinite(tgt) or tgt < 0:
        raise ValueError(f"the target deviation must be a finite number >= 0, got {tgt!r}")
    n, d = Xt.shape
    if n == 0 or d == 0:
        raise ValueError(f"X must have at least one cell and one gene, got shape {(n, d)}")
    if method == "expected":
        c = math.sqrt(2.0) * math.exp(gammaln((d + 1) / 2) - gammaln(d / 2))
        return tgt / c
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn((n, d), generator=gen, dtype=Xt.dtype, device="cpu")
    return tgt / float(torch.linalg.norm(eps.to(torch.float64), dim=1).mean())
