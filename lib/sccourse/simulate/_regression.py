"""NB and zero-inflated NB regression simulators: scDesigner's ``fit`` → ``params`` → ``predict`` → ``sample``
interface, fitted by exact maximum likelihood (batched damped Newton over genes, float64, any torch device).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import ClassVar, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._device import get_device
from .._progress import enabled
from .._simulate_kernels import (
    cpu_threads,
    damped_newton,
    nb_derivatives,
    nb_loglik_natural,
    zinb_loglik_natural,
)
from .._validation import check_anndata, check_counts, check_float, check_int, check_seed
from ._design import _Design

Part = Literal["mean", "dispersion", "zero_inflation"]


def _counts_matrix(adata: ad.AnnData, layer: str | None) -> np.ndarray:
    """The raw counts of ``adata`` (``.X`` or a layer) as a dense float64 cells × genes array, checked."""
    check_anndata(adata)
    if layer is None:
        X, where = adata.X, "adata.X"
    else:
        if not isinstance(layer, str) or layer not in adata.layers:
            raise ValueError(f"layer {layer!r} not found; adata.layers has {list(adata.layers.keys())}")
        X, where = adata.layers[layer], f"adata.layers[{layer!r}]"
    if X is None:
        raise ValueError("adata.X is empty; pass layer= naming the counts")
    if adata.n_obs < 2 or adata.n_vars < 1:
        raise ValueError(
            f"{where} must be a cells × genes count matrix with at least 2 cells and 1 gene, got shape "
            f"{adata.shape}"
        )
    check_counts(X, where=where)
    return (X.toarray() if sp.issparse(X) else np.asarray(X)).astype(np.float64)


def _lstsq(X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Least-squares coefficients (p × g) of ``X θ ≈ B`` through the normal equations (X has full rank)."""
    XtX = X.T @ X
    return torch.linalg.solve(XtX + 1e-10 * torch.eye(X.shape[1], dtype=X.dtype, device=X.device), X.T @ B)


# --------------------------------------------------------------------------------------
# simulators
# --------------------------------------------------------------------------------------
class NegBinRegressionSimulator:
    """NB regression per gene: ``log μ = X₁β``, ``log r = X₂γ`` (r is the NB size, ``p = r/(r+μ)``).

    Fitted by exact maximum likelihood, all genes at once (batched damped Newton in float64).

    Attributes (after :meth:`fit`)
    ------------------------------
    params : dict of pandas.DataFrame
        ``beta`` (mean) and ``gamma`` (dispersion): rows are design columns, columns are genes.
    formula : dict
        The formulas used, by part (``mean``, ``dispersion``).
    convergence : pandas.DataFrame
        Per gene: ``converged``, ``n_iter``, ``grad_norm`` (max |∂ℓ/∂θ| at the end), ``log_likelihood``.
    log_likelihood, aic, bic : float
        Summed over genes; ``k`` counts the estimated (non-aliased) coefficients of all genes,
        ``AIC = 2k − 2ℓ``, ``BIC = k log n − 2ℓ``.
    aliased : dict
        Per part, the design columns dropped as linear combinations of earlier columns.

    Notes
    -----
    Rank-deficient designs: columns are scanned in design order and a column that does not raise the
    rank of those before it is *aliased*. It is dropped from the fit, its coefficient is reported as
    exactly 0 (so ``predict`` is unchanged by it), and a ``UserWarning`` names it. The fitted values
    are then the unique MLE over the column space of the design.
    """

    _parts: ClassVar[tuple[str, ...]] = ("mean", "dispersion")
    _names: ClassVar[dict[str, str]] = {"mean": "beta", "dispersion": "gamma"}

    def __init__(self):
        self.params: dict[str, pd.DataFrame] | None = None
        self.formula: dict[str, str] | None = None
        self.convergence: pd.DataFrame | None = None
        self.aliased: dict[str, list[str]] = {}
        self._designs: dict[str, _Design] = {}
        self._seed = 0
        self.copula: pd.DataFrame | None = None
        self._copula_factor: np.ndarray | None = None

    # ---------------------------------------------------------------- formulas
    def _formulas(self, formula: str | Mapping[str, str]) -> dict[str, str]:
        if isinstance(formula, str):
            out = {"mean": formula, "dispersion": "~ 1"}
        elif isinstance(formula, Mapping):
            unknown = [k for k in formula if k not in self._parts]
            if unknown:
                raise ValueError(f"unknown formula keys {unknown}; expected keys among {list(self._parts)}")
            if "mean" not in formula:
                raise ValueError(f"the formula dict needs a 'mean' entry; got keys {list(formula)}")
            out = {p: formula.get(p, "~ 1") for p in self._parts}
        else:
            raise TypeError(
                f"formula must be a string (the mean formula) or a dict with keys {list(self._parts)}, "
                f"got {type(formula).__name__}"
            )
        if "zero_inflation" in self._parts:
            out.setdefault("zero_inflation", "~ 1")
        return out

    def _loglik_fn(self):
        return nb_loglik_natural

    def _derivs_fn(self):
        return nb_derivatives

    # ---------------------------------------------------------------- fit
    def fit(
        self,
        adata: ad.AnnData,
        formula: str | Mapping[Part, str],
        *,
        layer: str | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        max_iter: int = 100,
        tol: float = 1e-10,
        progress: bool | None = None,
    ) -> NegBinRegressionSimulator:
        """Fit every gene's coefficients by maximum likelihood.

        Parameters
        ----------
        adata
            Cells × genes of raw integer counts (``.X`` or ``layers[layer]``), covariates in ``.obs``.
        formula
            A string (the mean formula; dispersion ``~ 1``) or a dict with keys ``mean``,
            ``dispersion`` (and ``zero_inflation`` for the ZINB), each a one-sided formulaic formula
            over ``adata.obs`` columns; ``"~ ."`` means all obs columns. Missing parts default to ``~ 1``.
        layer
            Layer holding the counts (default ``.X``).
        device
            ``"auto"``, ``"cpu"`` or ``"cuda"``; the fit runs in float64 there.
        seed
            Default seed of :meth:`sample` (the fit itself is deterministic).
        max_iter
            Maximum Newton iterations.
        tol
            A gene has converged when its Newton decrement is below ``tol · (1 + |negative log-likelihood|)``.
        progress
            Show a progress bar of the Newton iterations (``None``: only on a terminal or in Jupyter).

        Returns
        -------
        NegBinRegressionSimulator
            ``self``, fitted: ``params``, ``convergence``, ``log_likelihood``, ``aic``, ``bic``, ``aliased``.
        """
        max_iter = check_int(max_iter, "max_iter", minimum=1)
        tol = check_float(tol, "tol", minimum=0.0, strict=True)
        seed = check_seed(seed)
        enabled(progress)  # a bad value fails here, before any work
        dev = get_device(device)
        formulas = self._formulas(formula)
        Y = _counts_matrix(adata, layer)
        obs = adata.obs
        designs = {p: _Design(p, formulas[p], obs) for p in self._parts}
        for p, d in designs.items():
            if d.aliased:
                warnings.warn(
                    f"the {p!r} design of {formulas[p]!r} is rank-deficient: {d.aliased} "
                    f"{'is a linear combination' if len(d.aliased) == 1 else 'are linear combinations'} of "
                    "earlier columns and cannot be estimated (not identifiable). They were dropped; their "
                    "coefficients are reported as 0.",
                    UserWarning,
                    stacklevel=2,
                )
        n_cells, n_genes = Y.shape
        n_coef = sum(len(d.keep) for d in designs.values())
        if n_cells <= n_coef:
            raise ValueError(
                f"{n_cells} cells cannot identify {n_coef} coefficients per gene; need more cells"
            )
        zero_genes = [str(g) for g in adata.var_names[Y.sum(0) == 0]]
        if zero_genes:
            warnings.warn(
                f"{len(zero_genes)} gene(s) have no counts (e.g. {zero_genes[:5]}): their mean MLE is 0, "
                "so log-mean coefficients run off to −∞ and the fit reports them as not converged.",
                UserWarning,
                stacklevel=2,
            )

        dtype = torch.float64
        Yt = torch.as_tensor(Y, dtype=dtype, device=dev)
        Xs = [torch.as_tensor(designs[p].X[:, designs[p].keep], dtype=dtype, device=dev) for p in self._parts]
        with cpu_threads(dev, Y.size):
            theta0 = self._initial(Yt, Xs)
            res = damped_newton(
                self._loglik_fn(),
                Yt,
                Xs,
                theta0,
                max_iter=max_iter,
                tol=tol,
                progress=progress,
                derivs_fn=self._derivs_fn(),
            )

        theta = res.theta.cpu().numpy()
        genes = pd.Index(adata.var_names.astype(str))
        params, start = {}, 0
        for p in self._parts:
            d = designs[p]
            full = np.zeros((len(d.columns), n_genes))
            full[d.keep] = theta[:, start : start + len(d.keep)].T
            start += len(d.keep)
            params[self._names[p]] = pd.DataFrame(full, index=pd.Index(d.columns), columns=genes)
        self.params = params
        self.formula = formulas
        self.aliased = {p: d.aliased for p, d in designs.items() if d.aliased}
        self._designs = designs
        self._seed = seed
        self.var_names = genes
        self.copula, self._copula_factor = None, None  # a copula belongs to the marginals it was fitted on
        self.n_obs = n_cells
        self.n_coef = n_coef  # estimated (non-aliased) coefficients per gene, all parts together
        self.n_params = n_coef * n_genes
        self.device = dev
        ll = res.loglik.cpu().numpy()
        self.convergence = pd.DataFrame(
            {
                "converged": res.converged.cpu().numpy(),
                "n_iter": res.n_iter.cpu().numpy(),
                "grad_norm": res.grad_norm.cpu().numpy(),
                "log_likelihood": ll,
            },
            index=genes,
        )
        self.log_likelihood = float(ll.sum())
        n_bad = int((~self.convergence["converged"]).sum())
        if n_bad:
            warnings.warn(
                f"{n_bad} of {n_genes} genes did not converge in {max_iter} iterations "
                "(see .convergence); raise max_iter or check those genes (e.g. all zeros, "
                "or a dispersion that runs off to a Poisson limit)",
                UserWarning,
                stacklevel=2,
            )
        return self

    def _initial(self, Y: torch.Tensor, Xs: list[torch.Tensor]) -> torch.Tensor:
        """Start: β from least squares on log(y + 1); γ from per-gene method-of-moments sizes; ω at π ≈ 0.1."""
        m = Y.mean(0)
        v = Y.var(0)
        size = torch.clamp(m**2 / torch.clamp(v - m, min=1e-8), min=0.05, max=1e3)
        blocks = [_lstsq(Xs[0], torch.log1p(Y)), _lstsq(Xs[1], torch.log(size).expand(Y.shape[0], -1))]
        if len(Xs) > 2:
            blocks.append(_lstsq(Xs[2], torch.full_like(Y, -2.0)))
        return torch.cat(blocks, 0).T.contiguous()

    # ---------------------------------------------------------------- use
    def _check_fitted(self):
        if self.params is None:
            raise RuntimeError("call fit(adata, formula) first")

    def _natural(self, obs: pd.DataFrame | ad.AnnData) -> dict[str, np.ndarray]:
        self._check_fitted()
        if isinstance(obs, ad.AnnData):
            obs = obs.obs
        if not isinstance(obs, pd.DataFrame):
            raise TypeError(f"obs must be a pandas DataFrame (or an AnnData), got {type(obs).__name__}")
        return {p: self._designs[p].matrix(obs) @ self.params[self._names[p]].to_numpy() for p in self._parts}

    def predict(self, obs: pd.DataFrame | ad.AnnData) -> dict[str, pd.DataFrame]:
        """Per-cell parameters for new covariates.

        Parameters
        ----------
        obs
            DataFrame (or AnnData) with every column the formulas use.

        Returns
        -------
        dict of pandas.DataFrame
            ``mean`` (μ = exp(X₁β)) and ``dispersion`` (the NB size r = exp(X₂γ); variance μ + μ²/r),
            plus ``zero_inflation`` (π) for the ZINB; cells × genes, indexed like ``obs``.
        """
        eta = self._natural(obs)
        index = (obs.obs if isinstance(obs, ad.AnnData) else obs).index
        out = {"mean": np.exp(eta["mean"]), "dispersion": np.exp(eta["dispersion"])}
        if "zero_inflation" in eta:
            out["zero_inflation"] = 1.0 / (1.0 + np.exp(-eta["zero_inflation"]))
        return {k: pd.DataFrame(v, index=index, columns=self.var_names) for k, v in out.items()}

    def sample(
        self, obs: pd.DataFrame | ad.AnnData, *, seed: int | None = None, copula: bool = False
    ) -> ad.AnnData:
        """Draw synthetic counts for the cells described by ``obs``.

        Independent genes: counts are drawn as a gamma–Poisson mixture, ``λ ~ Gamma(r, μ/r)``,
        ``y ~ Poisson(λ)`` (which is NB(μ, r)); for the ZINB a cell-gene is then zeroed with probability π.
        With ``copula=True`` (after :meth:`fit_copula`): ``z ~ N(0, R)`` per cell and ``y = F⁻¹(Φ(z))``
        gene by gene, so the marginals are unchanged and the genes keep the fitted correlation R.

        Parameters
        ----------
        obs
            DataFrame (or AnnData) with every column the formulas use.
        seed
            Seed of the NumPy generator (default: the ``seed`` given to :meth:`fit`).
        copula
            Draw genes jointly through the Gaussian copula fitted by :meth:`fit_copula`.

        Returns
        -------
        anndata.AnnData
            CSR int64 counts, cells × genes, with ``obs`` copied.
        """
        if copula and self.copula is None:
            raise RuntimeError("sample(..., copula=True) needs a fitted copula: call fit_copula(adata) first")
        pred = self.predict(obs)
        frame = obs.obs if isinstance(obs, ad.AnnData) else obs
        rng = np.random.default_rng(self._check_seed(seed))
        mu = pred["mean"].to_numpy()
        r = pred["dispersion"].to_numpy()
        pi = pred["zero_inflation"].to_numpy() if "zero_inflation" in pred else None
        if copula:
            from scipy import stats

            z = rng.standard_normal(mu.shape) @ self._copula_factor.T
            Y = self._quantile(stats.norm.cdf(z), mu, r, pi)
        else:
            lam = rng.gamma(shape=r, scale=mu / r)
            Y = rng.poisson(lam)
            if pi is not None:
                Y = Y * (rng.random(Y.shape) >= pi)
        out = ad.AnnData(
            X=sp.csr_matrix(Y.astype(np.int64)),
            obs=frame.copy(),
            var=pd.DataFrame(index=self.var_names.copy()),
        )
        return out

    def _check_seed(self, seed: int | None) -> int:
        return check_seed(self._seed if seed is None else seed)

    # ---------------------------------------------------------------- Gaussian copula
    @staticmethod
    def _cdf(y, mu, r, pi):
        """F(y) of NB(μ, r), or of the ZINB π·δ₀ + (1 − π)·NB; F(−1) = 0."""
        from scipy import stats

        F = stats.nbinom.cdf(y, r, r / (r + mu))
        if pi is not None:
            F = np.where(y >= 0, pi + (1.0 - pi) * F, 0.0)
        return F

    @staticmethod
    def _quantile(u, mu, r, pi):
        """F⁻¹(u) = smallest y with F(y) ≥ u, for the NB or ZINB of every cell-gene."""
        from scipy import stats

        u = np.clip(u, 0.0, 1.0 - 1e-12)  # Φ(z) rounds to 1 for z > 8.3; the NB quantile of 1 is infinite
        if pi is not None:  # y = 0 on the point mass, else the NB quantile of the rescaled u
            u = np.clip((u - pi) / (1.0 - pi), 0.0, 1.0 - 1e-12)
        y = stats.nbinom.ppf(u, r, r / (r + mu))  # scipy's ppf(0) is −1 (below the support): count 0
        return np.maximum(np.nan_to_num(y, nan=0.0), 0.0).astype(np.int64)

    def fit_copula(
        self, adata: ad.AnnData, *, layer: str | None = None, seed: int | None = None, shrinkage: float = 0.0
    ) -> pd.DataFrame:
        """Fit a Gaussian copula over genes to the cells the marginals were fitted on.

        Each count becomes a normal score ``z = Φ⁻¹(u)``, ``u ~ U(F(y − 1), F(y))`` (randomised probability
        integral transform under the fitted marginal of that cell and gene); ``R = (1 − s)·corr(z) + s·I``.
        Afterwards ``sample(obs, copula=True)`` draws cells whose genes keep this correlation.

        Parameters
        ----------
        adata
            Cells × genes counts with the genes of the fit (same order) and the covariates in ``.obs``.
        layer
            Counts layer (default ``.X``).
        seed
            Seed of the uniform draws of the randomised transform (default: the fit's seed).
        shrinkage
            Weight ``s`` in [0, 1] of the identity in ``R`` (useful when genes outnumber cells).

        Returns
        -------
        pandas.DataFrame
            ``R``, genes × genes (also kept as ``.copula``).
        """
        from scipy import stats

        self._check_fitted()
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"fit_copula expects an AnnData, got {type(adata).__name__}")
        if list(adata.var_names) != list(self.var_names):
            raise ValueError(
                "fit_copula: adata must hold the genes of the fit, in the same order "
                f"({len(self.var_names)} genes); got {adata.n_vars} genes"
            )
        shrinkage = check_float(shrinkage, "shrinkage", minimum=0.0, maximum=1.0)
        if adata.n_obs < 3:
            raise ValueError(f"fit_copula needs at least 3 cells, got {adata.n_obs}")
        Y = _counts_matrix(adata, layer).astype(np.float64)
        pred = self.predict(adata.obs)
        mu, r = pred["mean"].to_numpy(), pred["dispersion"].to_numpy()
        pi = pred["zero_inflation"].to_numpy() if "zero_inflation" in pred else None
        lo, hi = self._cdf(Y - 1, mu, r, pi), self._cdf(Y, mu, r, pi)
        rng = np.random.default_rng(self._check_seed(seed))
        u = np.clip(lo + rng.random(Y.shape) * (hi - lo), 1e-12, 1.0 - 1e-12)
        z = stats.norm.ppf(u)
        R = np.corrcoef(z, rowvar=False)
        R = np.nan_to_num(R, nan=0.0)  # a gene with constant scores correlates with nothing
        np.fill_diagonal(R, 1.0)
        R = (1.0 - shrinkage) * R + shrinkage * np.eye(len(R))
        # nearest correlation matrix that admits a Cholesky factor (clip tiny negative eigenvalues)
        w, V = np.linalg.eigh(R)
        R = (V * np.clip(w, 1e-8, None)) @ V.T
        d = np.sqrt(np.diag(R))
        R = R / d[:, None] / d[None, :]
        self._copula_factor = np.linalg.cholesky(R)
        self.copula = pd.DataFrame(R, index=self.var_names, columns=self.var_names)
        return self.copula

    @property
    def aic(self) -> float:
        """Akaike information criterion, ``2k − 2ℓ`` (k: estimated coefficients over all genes)."""
        self._check_fitted()
        return 2.0 * self.n_params - 2.0 * self.log_likelihood

    @property
    def bic(self) -> float:
        """Bayesian information criterion, ``k log n − 2ℓ`` (n: cells)."""
        self._check_fitted()
        return self.n_params * np.log(self.n_obs) - 2.0 * self.log_likelihood

    def __repr__(self) -> str:
        if self.params is None:
            return f"{type(self).__name__}() (not fitted)"
        return (
            f"{type(self).__name__}(formula={self.formula}, genes={len(self.var_names)}, "
            f"cells={self.n_obs}, log_likelihood={self.log_likelihood:.2f})"
        )


class ZeroInflatedNegBinRegressionSimulator(NegBinRegressionSimulator):
    """Zero-inflated NB regression: ``y = 0`` with probability π, else NB(μ, r).

    ``log μ = X₁β``, ``log r = X₂γ``, ``logit π = X₃ω``; ``.params`` holds ``beta_mean``,
    ``beta_dispersion`` and ``beta_zero_inflation``. Fitting, rank handling and outputs as in
    :class:`NegBinRegressionSimulator`; the log-likelihood is the stable mixture of :func:`zinb_logpmf`.
    """

    _parts: ClassVar[tuple[str, ...]] = ("mean", "dispersion", "zero_inflation")
    _names: ClassVar[dict[str, str]] = {
        "mean": "beta_mean",
        "dispersion": "beta_dispersion",
        "zero_inflation": "beta_zero_inflation",
    }

    def _loglik_fn(self):
        return zinb_loglik_natural

    def _derivs_fn(self):
        return None  # autograd
