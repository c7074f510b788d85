"""Entropic affinities, elastic embedding (EE) and NeuralEE: nonlinear embeddings that scale to 10⁶ cells.

The elastic embedding of data ``Y`` (N × D) is the ``X`` (N × d) minimising

.. math:: E(X) = \\sum_{nm} w^+_{nm} \\|x_n - x_m\\|^2 + \\lambda \\sum_{nm} w^-_{nm} e^{-\\|x_n - x_m\\|^2}

where ``W⁺`` are entropic affinities of ``Y`` (sparse, over k nearest neighbours) and ``W⁻`` repulsive
weights (uniform by default). :class:`ElasticEmbedding` optimises the coordinates directly with the
spectral direction; :class:`NeuralEE` trains a network ``X = f(Y)`` on mini-batches of the same loss,
so it scales to millions of cells and maps new cells with :meth:`NeuralEE.transform`.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from . import _ee_kernels as K
from ._device import get_device
from ._ee_data import prepare_pcs

__all__ = [
    "ElasticEmbedding",
    "NeuralEE",
    "batch_ee_loss",
    "dense_ee_loss",
    "ee_gradient",
    "ee_objective",
    "entropic_affinities",
    "epoch_batches",
    "fit_held_out",
    "mlp",
    "prepare_pcs",
    "repulsive_weights",
    "train_ee_network",
]

_DENSE_CHOLESKY_MAX = 12_000  # above this many cells the spectral direction uses a sparse LU (scipy)
_EXACT_KNN_MAX_CPU = 30_000  # above this (on CPU) knn="auto" uses pynndescent
# ε of 4L⁺ + εI, relative to the mean degree: large enough that the null space of L⁺ (one direction per
# connected component) does not swamp the step, small enough to keep the partial-Hessian curvature.
_SPECTRAL_EPS = 1e-6
# the first step tried is this fraction of the previous line search's parabola minimiser
_STEP_DAMPING = 0.7


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _data_matrix(Y, *, name: str = "Y", use_rep: str | None = None) -> np.ndarray:
    """Y as a finite float array (cells × features); AnnData → ``obsm[use_rep]`` (or ``.X``)."""
    try:
        import anndata as ad

        if isinstance(Y, ad.AnnData):
            if use_rep is not None and use_rep in Y.obsm:
                Y = Y.obsm[use_rep]
            elif use_rep is not None and use_rep != "X":
                raise ValueError(
                    f"{name}: AnnData has no obsm[{use_rep!r}] (present: {list(Y.obsm)}); "
                    "run a PCA first or pass use_rep='X'"
                )
            else:
                Y = Y.X
    except ImportError:  # pragma: no cover
        pass
    if isinstance(Y, torch.Tensor):
        Y = Y.detach().cpu().numpy()
    if sp.issparse(Y):
        Y = Y.toarray()
    arr = np.asarray(Y)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (cells × features), got shape {arr.shape}")
    if arr.shape[0] < 3:
        raise ValueError(f"{name} must hold at least 3 cells, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers")
    return arr


def _check_perplexity(perplexity, n: int) -> float:
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float, np.integer, np.floating)):
        raise TypeError(f"perplexity must be a number, got {perplexity!r}")
    perplexity = float(perplexity)
    if not (perplexity > 1.0) or not math.isfinite(perplexity):
        raise ValueError(f"perplexity must be a finite number > 1, got {perplexity}")
    if perplexity >= n - 1:
        raise ValueError(
            f"perplexity ({perplexity:g}) must be smaller than the number of cells - 1 ({n - 1}); "
            "lower the perplexity or embed more cells"
        )
    return perplexity


def _positive_int(v, name: str, *, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _check_lam(lam) -> float:
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a non-negative number, got {lam!r}") from None
    if not (lam >= 0) or not math.isfinite(lam):
        raise ValueError(f"lam must be a finite non-negative number, got {lam}")
    return lam


# --------------------------------------------------------------------------------------
# affinities
# --------------------------------------------------------------------------------------
def entropic_affinities(
    Y,
    perplexity: float = 30.0,
    *,
    n_neighbors: int | str | None = None,
    method: str = "ea",
    knn: str = "auto",
    tol: float = 1e-10,
    max_iter: int = 200,
    use_rep: str | None = "X_pca",
    return_info: bool = False,
    device="auto",
    seed: int = 0,
):
    """Symmetric entropic affinities W⁺ of the rows of ``Y`` (a sparse N × N matrix summing to 1).

    For each cell ``n`` the precision β_n of ``p(m|n) ∝ exp(−β_n ‖y_n − y_m‖²)`` (over its neighbours m)
    is set so that the entropy ``H_n = −Σ_m p(m|n) log p(m|n)`` equals ``log(perplexity)``;
    then ``W⁺ = (P + Pᵀ) / (2N)``.

    Parameters
    ----------
    Y
        cells × features (numpy, torch, scipy.sparse) or AnnData (``obsm[use_rep]``, else ``.X``).
    perplexity
        Effective number of neighbours, > 1 and < N − 1.
    n_neighbors
        Neighbours per cell over which ``p(·|n)`` is defined: ``None`` → ``min(N − 1, ⌈3 · perplexity⌉)``;
        ``"all"`` (or ``N − 1``) → every other cell (dense, for small N).
    method
        ``"ea"``: Newton iterations in log β with a bisection safeguard (entropic affinities);
        ``"x2p"``: plain bisection on β (the t-SNE recipe; slower, same answer).
    knn
        ``"exact"`` (blocked brute force on ``device``), ``"pynndescent"`` (approximate) or ``"auto"``
        (exact on GPU or up to 30,000 cells on CPU, pynndescent beyond).
    tol, max_iter
        Stop when ``|H_n − log perplexity| < tol`` for every cell, or after ``max_iter`` iterations.
    return_info
        Also return a dict with ``beta`` (N,), ``neighbors`` (N × k), ``converged`` (N,) arrays.
    device, seed
        Where the distances and the calibration run; seed of pynndescent.

    Returns
    -------
    scipy.sparse.csr_matrix
        W⁺, symmetric, non-negative, entries summing to 1 (and the info dict when ``return_info``).
    """
    dev = get_device(device)
    Yn = _data_matrix(Y, use_rep=use_rep)
    n = Yn.shape[0]
    perplexity = _check_perplexity(perplexity, n)
    if method not in ("ea", "x2p"):
        raise ValueError(f"method must be 'ea' or 'x2p', got {method!r}")
    if knn not in ("auto", "exact", "pynndescent"):
        raise ValueError(f"knn must be 'auto', 'exact' or 'pynndescent', got {knn!r}")
    if n_neighbors is None:
        k = min(n - 1, math.ceil(3 * perplexity))
    elif isinstance(n_neighbors, str):
        if n_neighbors != "all":
            raise ValueError(f"n_neighbors must be None, 'all' or an integer, got {n_neighbors!r}")
        k = n - 1
    else:
        k = _positive_int(n_neighbors, "n_neighbors")
        if k > n - 1:
            raise ValueError(f"n_neighbors ({k}) must be at most N - 1 = {n - 1}")
    if perplexity >= k:
        raise ValueError(
            f"perplexity ({perplexity:g}) must be smaller than n_neighbors ({k}): the entropy of "
            f"{k} neighbours is at most log({k})"
        )
    if not (tol > 0):
        raise ValueError(f"tol must be positive, got {tol}")
    max_iter = _positive_int(max_iter, "max_iter")

    Yt = torch.as_tensor(Yn, device=dev)
    if k == n - 1:
        idx = torch.arange(n, device=dev).repeat(n, 1)
        idx = idx[~torch.eye(n, dtype=torch.bool, device=dev)].reshape(n, n - 1)
        d2 = K.exact_sqdist(Yt, idx)
    else:
        use_exact = knn == "exact" or (knn == "auto" and (dev.type == "cuda" or n <= _EXACT_KNN_MAX_CPU))
        if use_exact:
            idx, d2 = K.knn_exact(Yt.to(torch.float32) if dev.type == "cuda" else Yt, k)
            d2 = K.exact_sqdist(Yt, idx)
        else:
            idx = torch.as_tensor(K.knn_nndescent(Yn, k, seed=seed), device=dev)
            d2 = K.exact_sqdist(Yt, idx)
    # calibrate in chunks of rows so that temporaries stay small
    chunk = max(1, int(2**23 // k))
    P = torch.empty_like(d2)
    beta = torch.empty(n, dtype=torch.float64, device=dev)
    conv = torch.empty(n, dtype=torch.bool, device=dev)
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        P[i0:i1], beta[i0:i1], conv[i0:i1] = K.calibrate(
            d2[i0:i1], perplexity, method=method, tol=tol, max_iter=max_iter
        )
    idx_np = idx.cpu().numpy()
    W = K.symmetrise(idx_np, P.cpu().numpy(), n)
    if return_info:
        # β on the unshifted distances is the same (a per-row shift does not change p)
        return W, {"beta": beta.cpu().numpy(), "neighbors": idx_np, "converged": conv.cpu().numpy(), "k": k}
    return W


def repulsive_weights(
    Y=None, *, kind: str = "uniform", n: int | None = None, use_rep: str | None = "X_pca", device="auto"
) -> K.RepulsiveWeights:
    """Repulsive weights w⁻ as a lazy, block-wise object (no N × N matrix is stored).

    ``kind="uniform"``: ``w⁻_nm = 1/N²`` (n ≠ m); give ``n`` or ``Y``.
    ``kind="distance"``: ``w⁻_nm = ‖y_n − y_m‖² / Σ_ab ‖y_a − y_b‖²`` (NeuralEE's choice); needs ``Y``.
    Pass the result as ``Wneg`` to :func:`ee_objective`, :class:`ElasticEmbedding` or :class:`NeuralEE`.
    """
    if kind not in ("uniform", "distance"):
        raise ValueError(f"kind must be 'uniform' or 'distance', got {kind!r}")
    if kind == "distance" or n is None:
        if Y is None:
            raise ValueError(
                f"repulsive_weights(kind={kind!r}) needs the data Y"
                + ("" if kind == "distance" else " or the number of cells n")
            )
        Yn = _data_matrix(Y, use_rep=use_rep)
        n = Yn.shape[0]
        return K.RepulsiveWeights(
            n, kind, Y=torch.as_tensor(Yn, device=get_device(device)) if kind == "distance" else None
        )
    return K.RepulsiveWeights(_positive_int(n, "n", minimum=2), "uniform")


def _max_asymmetry(W) -> float:
    """``max |W − Wᵀ|`` of a dense square matrix, compared tile by tile (cache-friendly, no N × N temporary)."""
    Wt = torch.as_tensor(W)
    n, t, worst = Wt.shape[0], 512, 0.0
    for i in range(0, n, t):
        for j in range(i, n, t):
            worst = max(worst, float((Wt[i : i + t, j : j + t] - Wt[j : j + t, i : i + t].T).abs().max()))
    return worst


def _as_wneg(Wneg, n: int, device) -> K.RepulsiveWeights:
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
    Wt = torch.as_tensor(np.asarray(Wneg, dtype=np.float64) if not isinstance(Wneg, torch.Tensor) else Wneg)
    if Wt.shape != (n, n):
        raise ValueError(f"Wneg must be {n} × {n}, got shape {tuple(Wt.shape)}")
    if not torch.isfinite(Wt).all() or (Wt < 0).any():
        raise ValueError("Wneg must hold finite, non-negative weights")
    if _max_asymmetry(Wt) > 1e-6 * float(Wt.abs().max()):
        raise ValueError("Wneg must be symmetric")
    return K.RepulsiveWeights(n, "dense", dense=Wt.to(get_device(device)))


def _check_wpos(Wpos, n: int | None = None):
    if isinstance(Wpos, torch.Tensor):
        Wpos = Wpos.detach().cpu()
        Wpos = sp.csr_matrix(Wpos.to_dense().numpy()) if Wpos.is_sparse else Wpos.numpy()
    if sp.issparse(Wpos):
        W = sp.csr_matrix(Wpos, dtype=np.float64)
        data = W.data
        asym = abs(W - W.T)
        asym_max = asym.max() if asym.nnz else 0.0
    else:
        W = np.asarray(Wpos, dtype=np.float64)
        if W.ndim != 2:
            raise ValueError(f"Wpos must be an N × N matrix, got shape {W.shape}")
        data = W.ravel()
        asym_max = _max_asymmetry(W) if W.shape[0] == W.shape[1] else np.inf
    if W.shape[0] != W.shape[1]:
        raise ValueError(f"Wpos must be square (N × N), got shape {W.shape}")
    if n is not None and W.shape[0] != n:
        raise ValueError(f"Wpos is {W.shape[0]} × {W.shape[0]} but X has {n} rows")
    if data.size and (not np.isfinite(data).all() or (data < 0).any()):
        raise ValueError("Wpos must hold finite, non-negative weights")
    scale = float(np.abs(data).max()) if data.size else 0.0
    if asym_max > 1e-8 * scale + 1e-300:
        raise ValueError("Wpos must be symmetric (use entropic_affinities, which returns (P + Pᵀ)/(2N))")
    return W


def _as_embedding(X, name: str = "X"):
    if isinstance(X, torch.Tensor):
        return X, True
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (cells × n_components), got shape {arr.shape}")
    return torch.as_tensor(arr, dtype=torch.float64), False


# --------------------------------------------------------------------------------------
# objective
# --------------------------------------------------------------------------------------
def ee_objective(
    X,
    Wpos,
    lam: float = 1.0,
    *,
    Wneg=None,
    return_grad: bool = False,
    max_block_mb: float = K.DEFAULT_BLOCK_MB,
    device="auto",
):
    """Elastic-embedding objective (and optionally its analytic gradient).

    ``E(X) = Σ_nm w⁺_nm ‖x_n − x_m‖² + λ Σ_nm w⁻_nm exp(−‖x_n − x_m‖²)``,
    ``∇E = 4 (L⁺ − λ L̃⁻) X`` with ``L = diag(W 1) − W`` and ``w̃⁻_nm = w⁻_nm exp(−‖x_n − x_m‖²)``.

    The repulsive sum is taken in row blocks on ``device``: one block (exact, dense) when
    ``N² · 24 bytes ≤ max_block_mb``, otherwise blocks of rows × N that never exceed ``max_block_mb`` MiB.

    Parameters
    ----------
    X
        N × d embedding (numpy or torch; the gradient is returned in the same type).
    Wpos
        N × N symmetric attractive weights (scipy.sparse, numpy or torch).
    lam
        Trade-off λ ≥ 0.
    Wneg
        ``None``/``"uniform"`` (1/N²), :func:`repulsive_weights` (``kind="distance"``) or a dense N × N array.

    Returns
    -------
    float, or (float, gradient) when ``return_grad``.
    """
    Xt, was_torch = _as_embedding(X)
    n = Xt.shape[0]
    if not torch.isfinite(Xt).all():
        raise ValueError("X contains NaN or infinite values")
    lam = _check_lam(lam)
    W = _check_wpos(Wpos, n)
    dev = get_device(device)
    wneg = _as_wneg(Wneg, n, dev)
    dtype = Xt.dtype if Xt.dtype in (torch.float32, torch.float64) else torch.float64
    prob = K.EEProblem(W, wneg, lam, device=dev, dtype=dtype, max_block_mb=max_block_mb)
    value, grad = prob.value_and_grad(Xt.to(device=dev, dtype=dtype).detach(), need_grad=return_grad)
    if not return_grad:
        return value
    if was_torch:
        return value, grad.to(X.device)
    return value, grad.cpu().numpy()


def ee_gradient(
    X, Wpos, lam: float = 1.0, *, Wneg=None, max_block_mb: float = K.DEFAULT_BLOCK_MB, device="auto"
):
    """Analytic gradient ``4 (L⁺ − λ L̃⁻) X`` of :func:`ee_objective` (same arguments)."""
    return ee_objective(X, Wpos, lam, Wneg=Wneg, return_grad=True, max_block_mb=max_block_mb, device=device)[
        1
    ]


# --------------------------------------------------------------------------------------
# shared estimator plumbing
# --------------------------------------------------------------------------------------
def _prepare_affinities(Y, Wpos, *, perplexity, n_neighbors, affinity, use_rep, device, seed):
    if Wpos is not None:
        return _check_wpos(Wpos, None if Y is None else Y.shape[0])
    if Y is None:
        raise ValueError("give the data Y (cells × features) or precomputed affinities Wpos")
    return entropic_affinities(
        Y, perplexity, n_neighbors=n_neighbors, method=affinity, use_rep=None, device=device, seed=seed
    )


def _write_back(adata, key: str, X: np.ndarray) -> None:
    try:
        import anndata as ad

        if isinstance(adata, ad.AnnData):
            adata.obsm[key] = X
    except ImportError:  # pragma: no cover
        pass


class ElasticEmbedding:
    """Elastic embedding optimised over the coordinates with the spectral direction.

    Each iteration takes the direction ``P = −(4L⁺ + εI)⁻¹ ∇E`` (ε = 10⁻⁶ × mean diagonal of 4L⁺; the
    Cholesky factor is computed once — the attractive Laplacian does not change — or, above 12,000 cells, a
    sparse LU), then backtracks ``X ← X + αP`` until the Armijo condition
    ``E(X + αP) ≤ E(X) + c α ⟨∇E, P⟩`` holds, so the objective decreases monotonically. The first α tried is
    0.7 × the minimiser of the parabola fitted to the previous line search (within a factor 2 of the previous
    step, at most 1); a rejected α is replaced by the minimiser of the parabola through ``E(X)``, the slope
    and ``E(X + αP)`` (within [0.1α, ρα]).
    ``optimizer="gd"`` uses ``P = −∇E`` instead (for comparison), with the same Armijo backtracking: its first
    step is ``1 / (8 max_n d⁺_n)`` (at most ``1/λ_max(4L⁺)``; the degrees d⁺ of W⁺ are about 1/N, so a unit step
    would be far too short), and every later iteration first tries twice the previous accepted step.

    Parameters
    ----------
    n_components
        Embedding dimension d.
    lam
        Trade-off λ (larger spreads the points more).
    perplexity, n_neighbors, affinity
        Passed to :func:`entropic_affinities` (``affinity`` is its ``method``).
    repulsion
        ``"uniform"`` or ``"distance"`` (see :func:`repulsive_weights`), used when ``fit`` gets no ``Wneg``.
    optimizer
        ``"spectral"`` or ``"gd"``.
    max_iter, tol
        Stop after ``max_iter`` iterations or when ``‖ΔX‖ / ‖X‖ < tol``.
    target
        Optional: also stop as soon as the objective is ``≤ target`` (for time-to-objective benchmarks).
    init
        ``"random"`` (N(0, 10⁻⁴) coordinates from ``seed``) or an N × d array.
    max_block_mb
        Memory cap of one repulsive block (see :func:`ee_objective`).
    dtype
        Working precision of the iterations, ``torch.float32`` or ``torch.float64``; ``None`` (the default)
        means float32 for the spectral direction and float64 for gradient descent. Sums of the objective are
        accumulated in float64 either way, and a ``target`` is confirmed in float64. Gradient descent needs
        float64: near the collapsed random start (‖x_n − x_m‖² ≈ 10⁻⁸) ``exp(−‖x_n − x_m‖²)`` rounds to 1 in
        float32, so the decrease of the repulsive term is invisible, every expanding step looks like an
        increase and the line search stalls (the spectral direction's first step leaves that region at once).
    device, seed, progress
        As everywhere in sccourse.

    Attributes
    ----------
    embedding_ : ndarray (N × d)
    history_ : DataFrame with ``iteration``, ``objective``, ``step``, ``time_s`` (seconds since the start
        of the optimisation, affinities excluded); objectives as evaluated in ``dtype`` (float32: within about
        10⁻⁴ relative of the float64 value — the squared distances ``|x_n|² + |x_m|² − 2 x_n·x_m`` lose digits
        to cancellation once the embedding is much wider than its neighbour distances)
    objective_ : float, the last objective in ``history_``
    Wpos_ : scipy.sparse.csr_matrix, the attractive weights used
    n_iter_ : int
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        lam: float = 1.0,
        perplexity: float = 30.0,
        n_neighbors=None,
        affinity: str = "ea",
        repulsion: str = "uniform",
        optimizer: str = "spectral",
        max_iter: int = 200,
        tol: float = 1e-5,
        init="random",
        c: float = 1e-4,
        rho: float = 0.5,
        target: float | None = None,
        max_block_mb: float = K.DEFAULT_BLOCK_MB,
        dtype: torch.dtype | None = None,
        device="auto",
        seed: int = 0,
        progress: bool = False,
    ):
        self.n_components = _positive_int(n_components, "n_components")
        if dtype not in (None, torch.float32, torch.float64):
            raise ValueError(f"dtype must be None, torch.float32 or torch.float64, got {dtype!r}")
        self.dtype = dtype
        self.target = None if target is None else float(target)
        self.lam = _check_lam(lam)
        self.perplexity, self.n_neighbors, self.affinity = perplexity, n_neighbors, affinity
        if repulsion not in ("uniform", "distance"):
            raise ValueError(f"repulsion must be 'uniform' or 'distance', got {repulsion!r}")
        if optimizer not in ("spectral", "gd"):
            raise ValueError(f"optimizer must be 'spectral' or 'gd', got {optimizer!r}")
        self.repulsion, self.optimizer = repulsion, optimizer
        self.max_iter = _positive_int(max_iter, "max_iter")
        if not (tol >= 0):
            raise ValueError(f"tol must be >= 0, got {tol}")
        if not (0 < c < 1) or not (0 < rho < 1):
            raise ValueError(
                f"line-search constants must satisfy 0 < c < 1 and 0 < rho < 1, got c={c}, rho={rho}"
            )
        self.tol, self.init, self.c, self.rho = float(tol), init, float(c), float(rho)
        self.max_block_mb, self.device, self.seed, self.progress = max_block_mb, device, seed, progress

    # -- solver ---------------------------------------------------------------------
    def _direction_solver(self, prob: K.EEProblem):
        n = prob.n
        if self.optimizer == "gd":
            return lambda G: -G
        if n <= _DENSE_CHOLESKY_MAX:
            # Cholesky factor of 4L⁺ + εI once (in float64), kept in the working precision
            L = 4.0 * prob.laplacian_dense().to(torch.float64)
            L.diagonal().add_(_SPECTRAL_EPS * float(torch.diagonal(L).mean()))
            low = torch.linalg.cholesky(L).to(prob.dtype)
            del L
            up = low.T.contiguous()
            # two triangular solves (L y = G, Lᵀ p = y): the same numbers as cholesky_solve, about twice as fast
            return lambda G: (
                -torch.linalg.solve_triangular(
                    up, torch.linalg.solve_triangular(low, G, upper=False), upper=True
                )
            )
        from scipy.sparse.linalg import splu

        L = 4.0 * prob.laplacian_scipy()
        eps = _SPECTRAL_EPS * float(L.diagonal().mean())
        lu = splu((L + eps * sp.identity(n)).tocsc())
        return lambda G: (
            -torch.as_tensor(lu.solve(G.cpu().numpy().astype(np.float64)), dtype=G.dtype, device=G.device)
        )

    def fit(
        self,
        Y=None,
        *,
        Wpos=None,
        Wneg=None,
        init=None,
        use_rep: str | None = "X_pca",
        key_added: str = "X_ee",
    ) -> ElasticEmbedding:
        """Embed ``Y`` (or the graph ``Wpos``). AnnData in → ``obsm[key_added]`` written."""
        from tqdm.auto import tqdm

        adata = Y
        Yn = None if Y is None else _data_matrix(Y, use_rep=use_rep)
        dev = get_device(self.device)
        W = _prepare_affinities(
            Yn,
            Wpos,
            perplexity=self.perplexity,
            n_neighbors=self.n_neighbors,
            affinity=self.affinity,
            use_rep=use_rep,
            device=dev,
            seed=self.seed,
        )
        n = W.shape[0]
        if Wneg is None and self.repulsion == "distance":
            if Yn is None:
                raise ValueError("repulsion='distance' needs the data Y")
            Wneg = repulsive_weights(Yn, kind="distance", device=dev)
        wneg = _as_wneg(Wneg, n, dev)
        init = self.init if init is None else init
        if isinstance(init, str):
            if init != "random":
                raise ValueError(f"init must be 'random' or an N × d array, got {init!r}")
            rng = np.random.default_rng(self.seed)
            X0 = 1e-4 * rng.standard_normal((n, self.n_components))
        else:
            X0 = np.asarray(init, dtype=np.float64)
            if X0.shape != (n, self.n_components):
                raise ValueError(f"init must have shape {(n, self.n_components)}, got {X0.shape}")
        dtype = self.dtype or (torch.float64 if self.optimizer == "gd" else torch.float32)
        prob = K.EEProblem(W, wneg, self.lam, device=dev, dtype=dtype, max_block_mb=self.max_block_mb)
        exact = None  # float64 twin, built only to confirm a `target` reached in float32
        X = torch.as_tensor(X0, dtype=dtype, device=dev)
        t0 = time.perf_counter()
        solve = self._direction_solver(prob)
        E, G = prob.value_and_grad(X)
        rows = [{"iteration": 0, "objective": E, "step": 0.0, "time_s": time.perf_counter() - t0}]
        alpha, model_step = 1.0, None
        if self.optimizer == "gd":
            # first step 1 / (8 max degree) ≤ 1 / λ_max(4L⁺) (Gershgorin): stable for the attraction, whose
            # curvature scales with the degrees (~1/N), where a unit step would be ~N times too short
            alpha = self.rho / (8.0 * max(float(prob.deg.max()), 1e-300))
        bar = tqdm(range(1, self.max_iter + 1), disable=not self.progress, desc=f"EE ({self.optimizer})")
        it = 0
        for it in bar:
            P = solve(G)
            slope = float((G * P).sum(dtype=torch.float64))
            if not slope < 0:  # not a descent direction (numerically converged)
                break
            if self.optimizer == "gd":
                a = alpha / self.rho
            elif model_step is None:
                a = min(1.0, 2.0 * alpha)
            else:  # the last line search's parabola, damped, within a factor 2 of the last step
                a = min(1.0, max(alpha / 2.0, min(2.0 * alpha, _STEP_DAMPING * model_step)))
            while True:
                Xn = X + a * P
                En, Gn = prob.value_and_grad(Xn)
                # E along the line as a parabola through E(0), E'(0) = slope and E(a); its minimiser
                curv = (En - E - slope * a) / (a * a)
                model_step = -slope / (2.0 * curv) if curv > 0 else None
                if En <= E + self.c * a * slope:
                    break
                if self.optimizer == "spectral" and model_step is not None:  # interpolate, within [0.1a, ρa]
                    a = max(0.1 * a, min(self.rho * a, model_step))
                else:
                    a *= self.rho
                if a < 1e-20:
                    Xn = None
                    break
            if Xn is None:
                break
            dx = float(torch.linalg.norm(Xn - X)) / max(float(torch.linalg.norm(Xn)), 1e-300)
            X, E, G, alpha = Xn, En, Gn, a
            rows.append({"iteration": it, "objective": E, "step": a, "time_s": time.perf_counter() - t0})
            bar.set_postfix(objective=f"{E:.5g}")
            if dx < self.tol:
                break
            if self.target is not None and E <= self.target:
                if dtype == torch.float64:
                    break
                if exact is None:
                    exact = K.EEProblem(
                        W, wneg, self.lam, device=dev, dtype=torch.float64, max_block_mb=self.max_block_mb
                    )
                if exact.value_and_grad(X.to(torch.float64), need_grad=False)[0] <= self.target:
                    break
        bar.close()
        self.n_iter_ = len(rows) - 1
        self.history_ = pd.DataFrame(rows)
        self.objective_ = E
        self.Wpos_ = sp.csr_matrix(W) if sp.issparse(W) else W
        self.embedding_ = X.to(torch.float64).cpu().numpy()
        _write_back(adata, key_added, self.embedding_)
        return self

    def fit_transform(self, Y=None, **kwargs) -> np.ndarray:
        """:meth:`fit` and return ``embedding_``."""
        return self.fit(Y, **kwargs).embedding_


# --------------------------------------------------------------------------------------
# NeuralEE
# --------------------------------------------------------------------------------------
def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A fresh random partition of ``range(n)`` into ``ceil(n / batch_size)`` near-equal batches.

    Every cell is in exactly one batch, so one epoch trains on every cell once.
    """
    perm = rng.permutation(n)
    return np.array_split(perm, max(1, math.ceil(n / batch_size)))


def _mlp(d_in: int, hidden: tuple[int, ...], d_out: int) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    prev = d_in
    for h in hidden:
        layers += [torch.nn.Linear(prev, h), torch.nn.ELU()]
        prev = h
    layers.append(torch.nn.Linear(prev, d_out))
    return torch.nn.Sequential(*layers)


def mlp(
    d_in: int,
    hidden: tuple[int, ...] = (64, 32),
    d_out: int = 2,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.nn.Module:
    """The network of :class:`NeuralEE`: ``Linear → ELU`` per hidden width, then ``Linear`` to ``d_out``.

    Weights are PyTorch's default initialisation drawn under ``torch.manual_seed(seed)`` (the global torch
    generator is left as it was), then cast to ``dtype``; the same arguments give the same network.
    """
    d_in, d_out = _positive_int(d_in, "d_in"), _positive_int(d_out, "d_out")
    hidden = tuple(_positive_int(h, "every hidden width") for h in hidden)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _mlp(d_in, hidden, d_out)
    return net.to(dtype)


def dense_ee_loss(X: torch.Tensor, Wp: torch.Tensor, Wn: torch.Tensor, lam: float) -> torch.Tensor:
    """``Σ_nm Wp_nm ‖x_n − x_m‖² + λ Σ_nm Wn_nm exp(−‖x_n − x_m‖²)`` for dense N × N weights (every ordered
    pair, the diagonal included as given), a 0-d tensor that autograd can differentiate.

    Forms N × N temporaries: for small N and mini-batches (:func:`ee_objective` is the blocked version).
    """
    if X.ndim != 2 or Wp.shape != (X.shape[0], X.shape[0]) or Wn.shape != Wp.shape:
        raise ValueError(
            f"X must be N × d and Wp, Wn N × N; got {tuple(X.shape)}, {tuple(Wp.shape)}, {tuple(Wn.shape)}"
        )
    sq = (X * X).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)).clamp_min(0.0)
    return (Wp * d2).sum() + lam * (Wn * torch.exp(-d2)).sum()


def train_ee_network(
    net: torch.nn.Module,
    Y,
    Wpos,
    lam: float,
    *,
    batch_size: int = 250,
    epochs: int = 30,
    lr: float = 3e-3,
    seed: int = 0,
    batches=None,
) -> tuple[list[float], np.ndarray]:
    """Train ``net`` in place on the mini-batch EE loss: the plain NeuralEE loop, in the network's dtype.

    Inputs are standardised as ``(Y − mean over cells) / (one standard deviation over all entries)``. Every
    epoch draws a new partition ``batches(n, batch_size, rng)`` (default :func:`epoch_batches`, with
    ``rng = numpy.random.default_rng(seed)`` created once); for each batch B (``b`` cells) the loss
    ``N(N−1) / (b(b−1)) · dense_ee_loss(net(Y_B), W⁺_BB, W⁻_BB, λ)`` with ``W⁻_BB = 1/N²`` off the diagonal
    and 0 on it, then ``zero_grad``, ``backward`` and one Adam step (learning rate ``lr``).

    Returns
    -------
    losses : list of float
        Per epoch, the batch losses averaged with weights ``b`` (``Σ_B b·loss_B / Σ_B b``).
    coverage : ndarray (N,)
        How many times each cell was in a batch.
    """
    batches = epoch_batches if batches is None else batches
    Yn = _data_matrix(Y, use_rep=None)
    n = Yn.shape[0]
    W = sp.csr_matrix(_check_wpos(Wpos, n))
    dtype = next(net.parameters()).dtype
    Yt = torch.as_tensor((Yn - Yn.mean(0)) / Yn.std(), dtype=dtype)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    coverage = np.zeros(n, dtype=np.int64)
    losses = []
    for _ in range(_positive_int(epochs, "epochs")):
        total, seen = 0.0, 0
        for B in batches(n, batch_size, rng):
            B = np.asarray(B)
            b = B.size
            coverage[B] += 1
            Wpb = torch.as_tensor(W[B][:, B].toarray(), dtype=dtype)
            Wnb = torch.full((b, b), 1.0 / n**2, dtype=dtype)
            Wnb.fill_diagonal_(0.0)
            loss = n * (n - 1.0) / (b * (b - 1.0)) * dense_ee_loss(net(Yt[torch.as_tensor(B)]), Wpb, Wnb, lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * b
            seen += b
        losses.append(total / seen)
    return losses, coverage


def batch_ee_loss(
    Xb: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, w: torch.Tensor, wneg: torch.Tensor, lam: float
) -> torch.Tensor:
    """EE loss of a batch embedding ``Xb`` (b × d), differentiable by autograd.

    Attractive term over the listed edges ``Σ_e w_e ‖x_rows[e] − x_cols[e]‖²`` plus
    ``λ Σ_nm wneg_nm exp(−‖x_n − x_m‖²)`` over all pairs of the batch (``wneg`` is b × b).
    """
    att = (w * ((Xb[rows] - Xb[cols]) ** 2).sum(1)).sum()
    return att + lam * _Repulsion.apply(Xb, wneg)


class _Repulsion(torch.autograd.Function):
    """``Σ_nm w⁻_nm exp(−‖x_n − x_m‖²)`` for a symmetric ``w⁻``, with its gradient
    ``−4 (diag(K1) − K) X`` (``K = w⁻ ∘ exp(−D²)``) computed in the same blocked pass, so neither the
    forward nor the backward pass keeps a b × b intermediate alive.
    """

    @staticmethod
    def forward(ctx, X, wneg):
        tile = K.repulsion_tile(X.shape[0], device=X.device, itemsize=X.element_size())
        total, grad = K.repulsion(X.detach(), lambda i0, i1, j0, j1: wneg[i0:i1, j0:j1], tile=tile)
        ctx.save_for_backward(grad)
        return total.to(X.dtype)

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return g * grad, None


class NeuralEE:
    """A neural network ``X = f(Y)`` trained on the elastic-embedding loss, with mini-batches.

    Every epoch draws a new random partition of the cells into batches (so every cell is trained on
    once per epoch); each batch's loss is the EE objective restricted to the batch, rescaled by
    ``N(N−1) / (b(b−1))`` so that it estimates the full objective. Attractive weights come from the
    sparse global graph W⁺ restricted to the batch (``attraction="global"``) or from entropic affinities
    recomputed on the batch (``attraction="batch"``, NeuralEE's scheme at ``1/b`` normalisation).

    Parameters
    ----------
    n_components, lam, perplexity, n_neighbors, affinity, repulsion
        As in :class:`ElasticEmbedding`.
    hidden
        Widths of the hidden layers (ELU activations).
    batch_size
        Cells per batch: an integer, or a fraction of N in (0, 1] (1.0 = full batch, the exact objective).
    epochs, lr, weight_decay
        Adam training schedule.
    attraction
        ``"global"`` or ``"batch"`` (see above).
    device, seed, progress
        As everywhere in sccourse.

    Attributes
    ----------
    history_ : DataFrame with ``epoch``, ``loss`` (mean batch estimate of E), ``n_batches``, ``cells_seen``,
        ``time_s``
    coverage_ : ndarray (N,), how many times each cell was in a batch (= ``epochs`` for every cell)
    embedding_ : ndarray (N × d), ``transform`` of the training cells after training
    net_ : torch.nn.Module
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        lam: float = 1.0,
        perplexity: float = 30.0,
        n_neighbors=None,
        affinity: str = "ea",
        repulsion: str = "uniform",
        hidden: tuple[int, ...] = (256, 128),
        batch_size: float = 1.0,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        attraction: str = "global",
        device="auto",
        seed: int = 0,
        progress: bool = True,
    ):
        self.n_components = _positive_int(n_components, "n_components")
        self.lam = _check_lam(lam)
        self.perplexity, self.n_neighbors, self.affinity = perplexity, n_neighbors, affinity
        if repulsion not in ("uniform", "distance"):
            raise ValueError(f"repulsion must be 'uniform' or 'distance', got {repulsion!r}")
        if attraction not in ("global", "batch"):
            raise ValueError(f"attraction must be 'global' or 'batch', got {attraction!r}")
        hidden = tuple(hidden)
        for h in hidden:
            _positive_int(h, "every hidden width")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, float, np.integer, np.floating)):
            raise TypeError(f"batch_size must be an integer or a fraction in (0, 1], got {batch_size!r}")
        if isinstance(batch_size, (float, np.floating)) and not (0 < batch_size <= 1):
            raise ValueError(f"a fractional batch_size must be in (0, 1], got {batch_size}")
        if isinstance(batch_size, (int, np.integer)) and batch_size < 2:
            raise ValueError(f"an integer batch_size must be >= 2, got {batch_size}")
        if not (lr > 0):
            raise ValueError(f"lr must be positive, got {lr}")
        self.repulsion, self.attraction, self.hidden, self.batch_size = (
            repulsion,
            attraction,
            hidden,
            batch_size,
        )
        self.epochs = _positive_int(epochs, "epochs")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.device, self.seed, self.progress = device, seed, progress

    def _batch_size(self, n: int) -> int:
        b = self.batch_size
        b = math.ceil(b * n) if isinstance(b, (float, np.floating)) else int(b)
        return max(2, min(n, b))

    def _standardise(self, Y: np.ndarray) -> np.ndarray:
        return (Y - self.mean_) / self.scale_

    def fit(self, Y, *, Wpos=None, use_rep: str | None = "X_pca", key_added: str = "X_neuralee") -> NeuralEE:
        """Train the network on ``Y`` (cells × features, or AnnData ``obsm[use_rep]``)."""
        from tqdm.auto import tqdm

        adata = Y
        Yn = _data_matrix(Y, use_rep=use_rep)
        n, D = Yn.shape
        dev = get_device(self.device)
        perplexity = _check_perplexity(self.perplexity, n)
        b = self._batch_size(n)
        if self.attraction == "batch" and perplexity >= b - 1:
            raise ValueError(
                f"attraction='batch' needs batch_size ({b}) > perplexity + 1 ({perplexity + 1:g})"
            )
        W = None
        if self.attraction == "global":
            W = _prepare_affinities(
                Yn,
                Wpos,
                perplexity=perplexity,
                n_neighbors=self.n_neighbors,
                affinity=self.affinity,
                use_rep=None,
                device=dev,
                seed=self.seed,
            )
            W = sp.csr_matrix(W)
        wneg = _as_wneg(
            "uniform" if self.repulsion == "uniform" else repulsive_weights(Yn, kind="distance", device=dev),
            n,
            dev,
        ).to(dev, torch.float32)
        self.mean_ = Yn.mean(0)
        self.scale_ = float(Yn.std()) or 1.0
        Yt = torch.as_tensor(self._standardise(Yn), dtype=torch.float32, device=dev)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(self.seed)
            net = _mlp(D, self.hidden, self.n_components).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        rng = np.random.default_rng(self.seed)
        coverage = np.zeros(n, dtype=np.int64)
        pos = np.full(n, -1, dtype=np.int64)
        rows_out = []
        t0 = time.perf_counter()
        full_wneg = None  # the full-batch w⁻ (b = N), formed once
        bar = tqdm(range(1, self.epochs + 1), disable=not self.progress, desc="NeuralEE")
        for epoch in bar:
            batches = epoch_batches(n, b, rng)
            total, seen = 0.0, 0
            for B in batches:
                nb = B.size
                if nb == n:  # full batch: the loss does not depend on the order, keep the cached w⁻
                    B = np.arange(n)
                coverage[B] += 1
                Bt = torch.as_tensor(B, device=dev)
                if self.attraction == "global":
                    pos[B] = np.arange(nb)
                    sub = W[B]
                    cols = pos[sub.indices]
                    keep = cols >= 0
                    r = np.repeat(np.arange(nb), np.diff(sub.indptr))[keep]
                    c, w = cols[keep], sub.data[keep]
                    pos[B] = -1
                    scale = (n * (n - 1.0)) / (nb * (nb - 1.0))
                    if nb < n:
                        wneg_b = wneg.sub(Bt, torch.float32)
                    else:
                        if full_wneg is None:
                            full_wneg = wneg.sub(Bt, torch.float32)
                        wneg_b = full_wneg
                else:
                    Wb = entropic_affinities(
                        Yn[B],
                        perplexity,
                        n_neighbors=None,
                        method=self.affinity,
                        use_rep=None,
                        device=dev,
                        seed=self.seed,
                    ).tocoo()
                    r, c, w = Wb.row, Wb.col, Wb.data
                    scale = 1.0
                    wneg_b = torch.full((nb, nb), 1.0 / (nb * nb), dtype=torch.float32, device=dev)
                    wneg_b.fill_diagonal_(0.0)
                rt = torch.as_tensor(r, device=dev)
                ct = torch.as_tensor(c, device=dev)
                wt = torch.as_tensor(w, dtype=torch.float32, device=dev)
                Xb = net(Yt[Bt])
                loss = scale * batch_ee_loss(Xb, rt, ct, wt, wneg_b, self.lam)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * nb
                seen += nb
            rows_out.append(
                {
                    "epoch": epoch,
                    "loss": total / seen,
                    "n_batches": len(batches),
                    "cells_seen": seen,
                    "time_s": time.perf_counter() - t0,
                }
            )
            bar.set_postfix(loss=f"{total / seen:.5g}")
        bar.close()
        self.net_ = net.eval()
        self.history_ = pd.DataFrame(rows_out)
        self.coverage_ = coverage
        self.Wpos_ = W
        self.batch_size_ = b
        self.n_features_in_ = D
        self.embedding_ = self.transform(Yn)
        _write_back(adata, key_added, self.embedding_)
        return self

    @torch.no_grad()
    def transform(self, Y, *, use_rep: str | None = "X_pca", chunk: int = 65536) -> np.ndarray:
        """Map cells (the training ones or new ones, same features) through the trained network."""
        if not hasattr(self, "net_"):
            raise ValueError("this NeuralEE is not fitted yet; call fit(Y) first")
        Yn = _data_matrix(Y, use_rep=use_rep)
        if Yn.shape[1] != self.n_features_in_:
            raise ValueError(
                f"Y has {Yn.shape[1]} features but the network was trained on {self.n_features_in_}"
            )
        dev = next(self.net_.parameters()).device
        out = []
        for i0 in range(0, Yn.shape[0], chunk):
            Yt = torch.as_tensor(self._standardise(Yn[i0 : i0 + chunk]), dtype=torch.float32, device=dev)
            out.append(self.net_(Yt).double().cpu().numpy())
        return np.concatenate(out, 0)

    def fit_transform(self, Y, **kwargs) -> np.ndarray:
        """:meth:`fit` and return the embedding of the training cells."""
        return self.fit(Y, **kwargs).embedding_


def fit_held_out(Y, *, train_fraction: float = 0.8, seed: int = 0, **kwargs):
    """Split the cells at random and train :class:`NeuralEE` on the training part only.

    ``rng = numpy.random.default_rng(seed)``; the first ``round(train_fraction · N)`` cells of
    ``rng.permutation(N)`` train, the rest are held out (both returned sorted). The model (``NeuralEE(seed=seed,
    **kwargs)``, its affinities computed from the training cells) never sees a held-out cell, so
    ``model.transform(Y[test_idx])`` is an honest out-of-sample map.

    Returns
    -------
    (train_idx, test_idx, model)
    """
    Yn = _data_matrix(Y, use_rep=None)
    n = Yn.shape[0]
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n_train = int(round(train_fraction * n))
    if not 3 <= n_train <= n - 1:
        raise ValueError(
            f"train_fraction {train_fraction} of {n} cells leaves {n_train} training and "
            f"{n - n_train} held-out cells; need at least 3 and 1"
        )
    perm = np.random.default_rng(seed).permutation(n)
    train_idx, test_idx = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    model = NeuralEE(seed=seed, **kwargs).fit(Yn[train_idx])
    return train_idx, test_idx, model
