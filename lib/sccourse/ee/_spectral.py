"""Elastic embedding over the free coordinates: the spectral direction with a backtracking line search."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .. import _ee_kernels as K
from .. import _progress
from .._validation import check_choice, check_float, check_int
from ._affinities import repulsive_weights
from ._checks import Data, Device, Graph, as_wneg, data_matrix, write_back
from ._estimator import _EmbeddingEstimator

_DENSE_CHOLESKY_MAX = 12_000  # above this many cells the spectral direction uses a sparse LU (scipy)
# ε of 4L⁺ + εI, relative to the mean degree: large enough that the null space of L⁺ (one direction per
# connected component) does not swamp the step, small enough to keep the partial-Hessian curvature.
_SPECTRAL_EPS = 1e-6
# the first step tried is this fraction of the previous line search's parabola minimiser
_STEP_DAMPING = 0.7
_SMALLEST_STEP = 1e-20


def _direction_solver(prob: K.EEProblem, optimizer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``G ↦ P``: ``−(4L⁺ + εI)⁻¹ G`` (spectral; dense Cholesky up to 12,000 cells, sparse LU beyond) or ``−G``."""
    n = prob.n
    if optimizer == "gd":
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
            -torch.linalg.solve_triangular(up, torch.linalg.solve_triangular(low, G, upper=False), upper=True)
        )
    from scipy.sparse.linalg import splu

    L = 4.0 * prob.laplacian_scipy()
    eps = _SPECTRAL_EPS * float(L.diagonal().mean())
    lu = splu((L + eps * sp.identity(n)).tocsc())
    return lambda G: (
        -torch.as_tensor(lu.solve(G.cpu().numpy().astype(np.float64)), dtype=G.dtype, device=G.device)
    )


def _line_search(
    prob: K.EEProblem,
    X: torch.Tensor,
    E: float,
    P: torch.Tensor,
    slope: float,
    a: float,
    *,
    c: float,
    rho: float,
    interpolate: bool,
):
    """Backtracking from step ``a`` along ``P`` until the Armijo condition ``E(X + aP) ≤ E + c a slope`` holds.

    After each trial the parabola through ``E(0) = E``, ``E'(0) = slope`` and ``E(a)`` has its minimiser at
    ``−slope / (2 curv)``, ``curv = (E(a) − E − slope a) / a²`` (when ``curv > 0``). A rejected ``a`` becomes that
    minimiser, kept within ``[0.1a, ρa]`` (``interpolate``), or ``ρa``.

    Returns
    -------
    (X_new, E_new, G_new, a, parabola minimiser or None), or None when no step ≥ 1e-20 is accepted.
    """
    while True:
        Xn = X + a * P
        En, Gn = prob.value_and_grad(Xn)
        curv = (En - E - slope * a) / (a * a)
        model_step = -slope / (2.0 * curv) if curv > 0 else None
        if En <= E + c * a * slope:
            return Xn, En, Gn, a, model_step
        if interpolate and model_step is not None:
            a = max(0.1 * a, min(rho * a, model_step))
        else:
            a *= rho
        if a < _SMALLEST_STEP:
            return None


def _first_step(optimizer: str, alpha: float, model_step: float | None, rho: float) -> float:
    """The step a line search starts from, given the last accepted step ``alpha`` and parabola minimiser."""
    if optimizer == "gd":
        return alpha / rho
    if model_step is None:
        return min(1.0, 2.0 * alpha)
    # the last line search's parabola, damped, within a factor 2 of the last step
    return min(1.0, max(alpha / 2.0, min(2.0 * alpha, _STEP_DAMPING * model_step)))


def _initial_embedding(init, n: int, d: int, seed: int) -> np.ndarray:
    if isinstance(init, str):
        if init != "random":
            raise ValueError(f"init must be 'random' or an N × d array, got {init!r}")
        return 1e-4 * np.random.default_rng(seed).standard_normal((n, d))
    X0 = data_matrix(init, name="init", use_rep=None, min_cells=1)
    if X0.shape != (n, d):
        raise ValueError(f"init must have shape {(n, d)} (cells × n_components), got {X0.shape}")
    if n > 1 and not (np.ptp(X0, axis=0) > 0).any():
        raise ValueError(
            "init puts every cell at the same point; there the gradient is zero by symmetry and EE cannot move. "
            "Use init='random' or give distinct starting coordinates"
        )
    return X0


class ElasticEmbedding(_EmbeddingEstimator):
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
        Trade-off λ > 0 (larger spreads the points more).
    perplexity, n_neighbors, affinity
        Passed to :func:`entropic_affinities` (``affinity`` is its ``method``).
    repulsion
        ``"uniform"`` or ``"distance"`` (see :func:`repulsive_weights`), used when ``fit`` gets no ``Wneg``.
    optimizer
        ``"spectral"`` or ``"gd"``.
    max_iter, tol
        Stop after ``max_iter`` iterations or when ``‖ΔX‖ / ‖X‖ < tol``.
    init
        ``"random"`` (N(0, 10⁻⁴) coordinates from ``seed``) or an N × d array of finite, not all equal, rows.
    c, rho
        Armijo constant and backtracking factor, both in (0, 1).
    target
        Optional: also stop as soon as the objective is ``≤ target`` (for time-to-objective benchmarks).
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
        As everywhere in sccourse (``progress=None``: a bar on a terminal or in Jupyter only).

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
        n_neighbors: int | Literal["all"] | None = None,
        affinity: Literal["ea", "x2p"] = "ea",
        repulsion: Literal["uniform", "distance"] = "uniform",
        optimizer: Literal["spectral", "gd"] = "spectral",
        max_iter: int = 200,
        tol: float = 1e-5,
        init: Literal["random"] | np.ndarray = "random",
        c: float = 1e-4,
        rho: float = 0.5,
        target: float | None = None,
        max_block_mb: float = K.DEFAULT_BLOCK_MB,
        dtype: torch.dtype | None = None,
        device: Device = "auto",
        seed: int = 0,
        progress: bool | None = None,
    ):
        super().__init__(
            n_components,
            lam=lam,
            perplexity=perplexity,
            n_neighbors=n_neighbors,
            affinity=affinity,
            repulsion=repulsion,
            device=device,
            seed=seed,
            progress=progress,
        )
        self.optimizer, self.max_iter, self.tol, self.init, self.c, self.rho = (
            optimizer,
            max_iter,
            tol,
            init,
            c,
            rho,
        )
        self.target, self.max_block_mb, self.dtype = target, max_block_mb, dtype

    def _checked(self) -> SimpleNamespace:
        """The options, validated (the estimator's ``__init__`` only stores them)."""
        if self.dtype not in (None, torch.float32, torch.float64):
            raise ValueError(f"dtype must be None, torch.float32 or torch.float64, got {self.dtype!r}")
        c = check_float(self.c, "c", minimum=0.0, maximum=1.0, strict=True)
        rho = check_float(self.rho, "rho", minimum=0.0, maximum=1.0, strict=True)
        if c == 1.0 or rho == 1.0:
            raise ValueError(
                f"line-search constants must satisfy 0 < c < 1 and 0 < rho < 1, got c={c}, rho={rho}"
            )
        return SimpleNamespace(
            **self._common_checked(),
            optimizer=check_choice(self.optimizer, "optimizer", ("spectral", "gd")),
            max_iter=check_int(self.max_iter, "max_iter", minimum=1),
            tol=check_float(self.tol, "tol", minimum=0.0),
            c=c,
            rho=rho,
            target=None if self.target is None else check_float(self.target, "target"),
            max_block_mb=check_float(self.max_block_mb, "max_block_mb", minimum=0.0, strict=True),
        )

    def fit(
        self,
        Y: Data | None = None,
        *,
        Wpos: Graph | None = None,
        Wneg=None,
        init: Literal["random"] | np.ndarray | None = None,
        use_rep: str | None = "X_pca",
        key_added: str = "X_ee",
    ) -> ElasticEmbedding:
        """Embed ``Y`` (or the graph ``Wpos``). AnnData in → ``obsm[key_added]`` written.

        Parameters
        ----------
        Y
            cells × features (numpy, torch, scipy.sparse) or AnnData (``obsm[use_rep]``); may be ``None`` when
            ``Wpos`` is given.
        Wpos
            Precomputed attractive weights (N × N, symmetric, non-negative, not all zero); default: entropic
            affinities of ``Y``.
        Wneg
            Repulsive weights (see :func:`ee_objective`); default from ``repulsion``.
        init
            Overrides the estimator's ``init``.
        use_rep, key_added
            AnnData slots read and written.

        Returns
        -------
        ElasticEmbedding
            ``self``, fitted.
        """
        p, Yn = self._start_fit(Y, use_rep, key_added, optional=True)
        dev = p.device
        W = self._attraction(p, Yn, Wpos)
        n = W.shape[0]
        if Wneg is None and p.repulsion == "distance":
            if Yn is None:
                raise ValueError("repulsion='distance' needs the data Y")
            Wneg = repulsive_weights(Yn, kind="distance", device=dev)
        wneg = as_wneg(Wneg, n, dev, repulsion=True)
        X0 = _initial_embedding(self.init if init is None else init, n, p.n_components, p.seed)
        dtype = self.dtype or (torch.float64 if p.optimizer == "gd" else torch.float32)
        prob = K.EEProblem(W, wneg, p.lam, device=dev, dtype=dtype, max_block_mb=p.max_block_mb)
        X = torch.as_tensor(X0, dtype=dtype, device=dev)
        t0 = time.perf_counter()
        solve = _direction_solver(prob, p.optimizer)
        E, G = prob.value_and_grad(X)
        if not np.isfinite(E):
            raise ValueError(f"the objective at init is {E}: the starting coordinates are too large")
        self._iterate(p, prob, solve, X, E, G, t0, W, wneg)
        self.Wpos_ = sp.csr_matrix(W) if sp.issparse(W) else W
        write_back(Y, key_added, self.embedding_)
        return self

    def _iterate(self, p, prob, solve, X, E, G, t0, W, wneg) -> None:
        """The descent loop; sets ``n_iter_``, ``history_``, ``objective_`` and ``embedding_``."""
        dtype, dev = prob.dtype, prob.device
        exact = None  # float64 twin, built only to confirm a `target` reached in float32
        rows = [{"iteration": 0, "objective": E, "step": 0.0, "time_s": time.perf_counter() - t0}]
        alpha, model_step = 1.0, None
        if p.optimizer == "gd":
            # first step 1 / (8 max degree) ≤ 1 / λ_max(4L⁺) (Gershgorin): stable for the attraction, whose
            # curvature scales with the degrees (~1/N), where a unit step would be ~N times too short
            alpha = p.rho / (8.0 * max(float(prob.deg.max()), 1e-300))
        bar = _progress.bar(range(1, p.max_iter + 1), progress=self.progress, desc=f"EE ({p.optimizer})")
        for it in bar:
            P = solve(G)
            slope = float((G * P).sum(dtype=torch.float64))
            if not slope < 0:  # not a descent direction (numerically converged)
                break
            a = _first_step(p.optimizer, alpha, model_step, p.rho)
            found = _line_search(
                prob, X, E, P, slope, a, c=p.c, rho=p.rho, interpolate=p.optimizer == "spectral"
            )
            if found is None:
                break
            Xn, En, Gn, a, model_step = found
            dx = float(torch.linalg.norm(Xn - X)) / max(float(torch.linalg.norm(Xn)), 1e-300)
            X, E, G, alpha = Xn, En, Gn, a
            rows.append({"iteration": it, "objective": E, "step": a, "time_s": time.perf_counter() - t0})
            bar.set_postfix(objective=f"{E:.5g}")
            if dx < p.tol:
                break
            if p.target is not None and E <= p.target:
                if dtype == torch.float64:
                    break
                if exact is None:
                    exact = K.EEProblem(
                        W, wneg, p.lam, device=dev, dtype=torch.float64, max_block_mb=p.max_block_mb
                    )
                if exact.value_and_grad(X.to(torch.float64), need_grad=False)[0] <= p.target:
                    break
        bar.close()
        self.n_iter_ = len(rows) - 1
        self.history_ = pd.DataFrame(rows)
        self.objective_ = E
        self.embedding_ = X.to(torch.float64).cpu().numpy()

    def fit_transform(self, Y: Data | None = None, **kwargs) -> np.ndarray:
        """:meth:`fit` and return ``embedding_`` (N × d)."""
        return self.fit(Y, **kwargs).embedding_
