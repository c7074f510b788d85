"""Negative-binomial (NB) and zero-inflated NB regression simulators for count data.

Each gene ``g`` in cell ``i`` is modelled as

.. math::

    y_{ig} \\sim \\mathrm{NB}(\\mu_{ig}, r_{ig}),\\quad \\log\\mu_{ig} = x_{1,i}^\\top\\beta_g,\\quad
    \\log r_{ig} = x_{2,i}^\\top\\gamma_g,

with ``P(y) = Γ(y+r)/(Γ(r) y!) · p^r (1−p)^y``, ``p = r/(r+μ)``, mean ``μ`` and variance ``μ + μ²/r``.
The zero-inflated model mixes in structural zeros with probability ``π_ig = sigmoid(x_{3,i}^⊤ ω_g)``.
Design matrices come from formulaic formulas over ``adata.obs``.

Fitting is exact maximum likelihood: genes are independent given the design, so all genes are
fitted at once by a batched, damped Newton iteration (float64, any torch device), with a per-gene
convergence report. This is the interface of scDesigner's ``NegBinRegressionSimulator`` /
``ZeroInflatedNegBinRegressionSimulator`` (``fit`` → ``params`` → ``predict`` → ``sample``).
"""

from __future__ import annotations

import re
import warnings
from typing import ClassVar

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ._device import get_device
from ._simulate_kernels import (
    cpu_threads,
    damped_newton,
    nb_derivatives,
    nb_loglik_natural,
    zinb_loglik_natural,
)

__all__ = [
    "NegBinRegressionSimulator",
    "ZeroInflatedNegBinRegressionSimulator",
    "gene_summary",
    "likelihood_ratio_test",
    "nb_logpmf",
    "sample_nb",
    "zinb_logpmf",
]


# --------------------------------------------------------------------------------------
# log-pmfs
# --------------------------------------------------------------------------------------
def _as_tensors(*arrays):
    ref = next((a for a in arrays if isinstance(a, torch.Tensor)), None)
    if ref is not None:
        dtype = ref.dtype if ref.dtype.is_floating_point else torch.float64
        device = ref.device
    else:
        dtype, device = torch.float64, torch.device("cpu")
    return [torch.as_tensor(a, dtype=dtype, device=device) for a in arrays]


def nb_logpmf(y, mu, r) -> torch.Tensor:
    """Log-probability of counts under NB(mean ``mu``, size ``r``), elementwise with broadcasting.

    ``log P(y) = log Γ(y+r) − log Γ(r) − log Γ(y+1) + r log(r/(r+μ)) + y log(μ/(r+μ))``, the two
    logarithms computed as ``−softplus(log μ − log r)`` and ``−softplus(log r − log μ)`` so that
    neither ``r ≫ μ`` nor ``μ ≫ r`` loses precision. Variance is ``μ + μ²/r``.

    Parameters
    ----------
    y, mu, r
        Counts (≥ 0), means (≥ 0) and sizes (> 0): tensors on any device, or array-likes (then
        float64 on the CPU). Tensors keep their dtype and device.

    Returns
    -------
    torch.Tensor
        ``log P(y)``, broadcast shape of the inputs; ``-inf`` for counts that cannot occur (negative or
        non-integer ``y``, ``y > 0`` when ``μ = 0``), ``0`` for ``y = 0`` when ``μ = 0``.

    Raises
    ------
    ValueError
        For negative, NaN or infinite means, sizes ``≤ 0`` (or NaN/inf), or NaN counts.
    """
    y, mu, r = _as_tensors(y, mu, r)
    _check_domain(mu, r)
    out = nb_loglik_natural(y, torch.log(mu), torch.log(r))
    return _impossible_counts(out, y, mu)


def _check_domain(mu: torch.Tensor, r: torch.Tensor) -> None:
    """Means must be finite and >= 0, sizes finite and > 0: anything else is an error, not a NaN."""
    if torch.isnan(mu).any() or torch.isinf(mu).any() or (mu < 0).any():
        raise ValueError(
            f"mu must hold finite means >= 0; found values down to {float(mu.nan_to_num(-1).min()):g} "
            "(or NaN/inf)"
        )
    if torch.isnan(r).any() or torch.isinf(r).any() or (r <= 0).any():
        raise ValueError(
            f"r (the NB size, 1/dispersion) must hold finite values > 0; found "
            f"{float(r.nan_to_num(0).min()):g} (or NaN/inf)"
        )


def _impossible_counts(logp: torch.Tensor, y: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """-inf for counts that cannot occur: negative or non-integer y, and y > 0 when mu = 0 (then P(0) = 1)."""
    if torch.isnan(y).any():
        raise ValueError("y must hold counts, found NaN")
    impossible = (y < 0) | (y != torch.floor(y)) | ((mu == 0) & (y > 0))
    certain = (mu == 0) & (y == 0)
    if impossible.any() or certain.any():
        logp = torch.where(impossible, torch.full_like(logp, -torch.inf), logp)
        logp = torch.where(certain & ~impossible, torch.zeros_like(logp), logp)
    return logp


def zinb_logpmf(y, mu, r, pi_logit) -> torch.Tensor:
    """Log-probability under the zero-inflated NB, ``π·1[y=0] + (1−π)·NB(y | μ, r)``, ``π = sigmoid(pi_logit)``.

    Stable without exponentiating: ``log(1−π) = −softplus(ω)``, ``log π = −softplus(−ω)``; for ``y = 0``
    the mixture is ``logaddexp(log π, log(1−π) + log NB(0))``, for ``y > 0`` it is ``log(1−π) + log NB(y)``,
    exact at any count (no floor on small probabilities).

    Parameters
    ----------
    y, mu, r
        As in :func:`nb_logpmf`.
    pi_logit
        Logit of the zero-inflation probability ``π``.

    Returns
    -------
    torch.Tensor
    """
    y, mu, r, w = _as_tensors(y, mu, r, pi_logit)
    _check_domain(mu, r)
    if torch.isnan(w).any():
        raise ValueError("pi_logit must not hold NaN")
    out = zinb_loglik_natural(y, torch.log(mu), torch.log(r), w)
    # mu = 0: NB(0) = 1, so P(0) = 1 and P(y > 0) = 0; negative or non-integer y cannot occur
    impossible = (y < 0) | (y != torch.floor(y)) | ((mu == 0) & (y > 0))
    if impossible.any() or (mu == 0).any():
        out = torch.where((mu == 0) & (y == 0), torch.zeros_like(out), out)
        out = torch.where(impossible, torch.full_like(out, -torch.inf), out)
    return out


def sample_nb(mu, r, *, seed: int = 0) -> np.ndarray:
    """Draw NB(mean ``mu``, size ``r``) counts elementwise with ``np.random.default_rng(seed)``.

    NumPy's ``negative_binomial(n, p)`` counts failures before the ``n``-th success with success probability
    ``p``; with ``n = r`` and ``p = r / (r + μ)`` its mean is ``μ`` and its variance ``μ + μ²/r``.

    Parameters
    ----------
    mu, r
        Means (≥ 0) and sizes (> 0), array-likes that broadcast (e.g. ``exp(X₁ B)`` and ``exp(X₂ D)``, cells ×
        genes).
    seed
        Seed of the generator: the same seed gives the same counts.

    Returns
    -------
    numpy.ndarray
        int64 counts of the broadcast shape.
    """
    mu, r = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(r, dtype=np.float64))
    if np.any(~np.isfinite(mu)) or np.any(mu < 0):
        raise ValueError("mu must be finite and non-negative")
    if np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ValueError("r must be finite and positive")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    return rng.negative_binomial(r, r / (r + mu)).astype(np.int64)


def gene_summary(X) -> pd.DataFrame:
    """Per-gene mean, population variance (``ddof=0``) and fraction of zero counts of a cells × genes matrix.

    Parameters
    ----------
    X
        Counts, dense or scipy-sparse (an explicitly stored zero counts as a zero), or an AnnData (its ``.X``).

    Returns
    -------
    pandas.DataFrame
        One row per gene (column of ``X``), columns ``mean``, ``variance``, ``zero_fraction``.
    """
    if isinstance(X, ad.AnnData):
        X = X.X
    if sp.issparse(X):
        X = sp.csc_matrix(X, dtype=np.float64)
        n, g = X.shape
        col = np.repeat(np.arange(g), np.diff(X.indptr))  # the column of every stored entry
        stored = np.diff(X.indptr)
        mean = np.bincount(col, weights=X.data, minlength=g) / n
        # squared deviations of the stored entries, plus those of the implicit zeros (two-pass: no cancellation)
        var = (np.bincount(col, weights=(X.data - mean[col]) ** 2, minlength=g) + (n - stored) * mean**2) / n
        zero = 1.0 - np.bincount(col, weights=(X.data != 0).astype(float), minlength=g) / n
    else:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"expected a cells × genes matrix, got shape {X.shape}")
        mean, var, zero = X.mean(0), X.var(0), (X == 0).mean(0)
    return pd.DataFrame({"mean": mean, "variance": var, "zero_fraction": zero})


# --------------------------------------------------------------------------------------
# formulas and designs
# --------------------------------------------------------------------------------------
_DOT = re.compile(r"(?<![\w.`])\.(?![\w.`])")


def _expand_formula(formula: str, columns: list[str], part: str) -> str:
    if not isinstance(formula, str):
        raise TypeError(f"the {part!r} formula must be a string like '~ x + y', got {type(formula).__name__}")
    text = formula.strip()
    if not text.startswith("~"):
        raise ValueError(
            f"the {part!r} formula must be one-sided (start with '~', e.g. '~ pseudotime'); got {formula!r}. "
            "The response is always the counts of each gene."
        )
    if _DOT.search(text):
        if not columns:
            raise ValueError(f"'~ .' in the {part!r} formula needs at least one column in obs; obs has none")
        everything = "(" + " + ".join(f"`{c}`" for c in columns) + ")"
        text = _DOT.sub(everything, text)
    return text


class _Design:
    """One formula's model matrix on the fit data, and how to rebuild it on new obs."""

    def __init__(self, part: str, formula: str, obs: pd.DataFrame):
        import formulaic

        self.part = part
        self.formula = formula
        self.expanded = _expand_formula(formula, [str(c) for c in obs.columns], part)
        try:
            parsed = formulaic.Formula(self.expanded)
        except Exception as err:  # formulaic's parser errors
            raise ValueError(f"could not parse the {part!r} formula {formula!r}: {err}") from err
        needed = sorted(str(v) for v in parsed.required_variables)
        unknown = [v for v in needed if v not in obs.columns]
        if unknown:
            raise ValueError(
                f"the {part!r} formula {formula!r} uses {unknown}, which are not columns of obs; "
                f"obs has {list(map(str, obs.columns))}"
            )
        self.variables = needed
        _check_no_nan(obs, needed, part, formula)
        try:
            mm = formulaic.model_matrix(self.expanded, obs, na_action="raise")
        except Exception as err:
            raise ValueError(
                f"could not build the design for the {part!r} formula {formula!r}: {err}"
            ) from err
        self.spec = mm.model_spec
        self.columns = [str(c) for c in mm.columns]
        X = np.asarray(mm, dtype=np.float64)
        if X.shape[1] == 0:
            raise ValueError(
                f"the {part!r} formula {formula!r} has no terms (did you remove the intercept only?)"
            )
        self.keep, self.aliased = _independent_columns(X, self.columns)
        self.X = X
        # the levels each categorical variable had at fit time: new obs may not bring others
        self.levels = {
            v: set(obs[v].astype(str).unique())
            for v in needed
            if not pd.api.types.is_numeric_dtype(obs[v]) or pd.api.types.is_bool_dtype(obs[v])
        }

    def matrix(self, obs: pd.DataFrame) -> np.ndarray:
        missing = [v for v in self.variables if v not in obs.columns]
        if missing:
            raise ValueError(
                f"obs lacks {missing}, needed by the {self.part!r} formula {self.formula!r}; "
                f"obs has {list(map(str, obs.columns))}"
            )
        _check_no_nan(obs, self.variables, self.part, self.formula)
        for v, known in getattr(self, "levels", {}).items():
            unseen = sorted(set(obs[v].astype(str).unique()) - known)
            if unseen:
                raise ValueError(
                    f"obs[{v!r}] has levels the model never saw: {unseen} (the {self.part!r} formula {self.formula!r} "
                    f"was fitted on {sorted(known)}); a level it never saw has no coefficient"
                )
        try:
            mm = self.spec.get_model_matrix(obs, na_action="raise")
        except Exception as err:
            raise ValueError(f"could not build the {self.part!r} design on the new obs: {err}") from err
        return np.asarray(mm, dtype=np.float64)


def _check_no_nan(obs: pd.DataFrame, variables: list[str], part: str, formula: str) -> None:
    bad = {v: int(obs[v].isna().sum()) for v in variables if v in obs.columns and obs[v].isna().any()}
    if bad:
        raise ValueError(
            f"obs columns used by the {part!r} formula {formula!r} contain missing values "
            f"(NaN counts per column: {bad}); drop or fill those cells first"
        )


def _independent_columns(X: np.ndarray, names: list[str]) -> tuple[list[int], list[str]]:
    """Greedy, in design order: keep a column when it raises the rank of those kept before it."""
    keep: list[int] = []
    scale = np.linalg.norm(X, axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale
    for j in range(X.shape[1]):
        trial = keep + [j]
        if np.linalg.matrix_rank(Xs[:, trial]) == len(trial):
            keep.append(j)
    aliased = [names[j] for j in range(X.shape[1]) if j not in keep]
    return keep, aliased


def _counts_matrix(adata: ad.AnnData, layer: str | None) -> np.ndarray:
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"fit expects an AnnData (cells × genes of counts), got {type(adata).__name__}")
    if layer is None:
        X = adata.X
    else:
        if layer not in adata.layers:
            raise ValueError(f"layer {layer!r} not found; adata.layers has {list(adata.layers.keys())}")
        X = adata.layers[layer]
    if X is None:
        raise ValueError("adata.X is empty; pass layer= naming the counts")
    Y = X.toarray() if sp.issparse(X) else np.asarray(X)
    Y = Y.astype(np.float64)
    if Y.ndim != 2 or Y.shape[0] < 2 or Y.shape[1] < 1:
        raise ValueError(f"expected a cells × genes count matrix with at least 2 cells, got shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("counts contain NaN or infinite values; expected non-negative integer counts")
    if Y.min() < 0:
        raise ValueError(f"counts must be non-negative integers; found a minimum of {Y.min():g}")
    if not np.all(Y == np.round(Y)):
        frac = Y[Y != np.round(Y)][:3]
        raise ValueError(
            f"counts must be integers (raw counts, not normalised values); found non-integers such as {frac.tolist()}"
        )
    return Y


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
    def _formulas(self, formula) -> dict[str, str]:
        if isinstance(formula, str):
            out = {"mean": formula, "dispersion": "~ 1"}
        elif isinstance(formula, dict):
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
        formula,
        *,
        layer: str | None = None,
        device="auto",
        seed: int = 0,
        max_iter: int = 100,
        tol: float = 1e-10,
        progress: bool = False,
    ):
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
            Show a progress bar.

        Returns
        -------
        self
        """
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        if not (isinstance(tol, (int, float)) and tol > 0):
            raise ValueError(f"tol must be a positive number, got {tol!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
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

        dev = get_device(device)
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
                max_iter=int(max_iter),
                tol=float(tol),
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
        self._seed = int(seed)
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

    def _natural(self, obs) -> dict[str, np.ndarray]:
        self._check_fitted()
        if isinstance(obs, ad.AnnData):
            obs = obs.obs
        if not isinstance(obs, pd.DataFrame):
            raise TypeError(f"obs must be a pandas DataFrame (or an AnnData), got {type(obs).__name__}")
        return {p: self._designs[p].matrix(obs) @ self.params[self._names[p]].to_numpy() for p in self._parts}

    def predict(self, obs) -> dict[str, pd.DataFrame]:
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

    def sample(self, obs, *, seed: int | None = None, copula: bool = False) -> ad.AnnData:
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

    def _check_seed(self, seed) -> int:
        seed = self._seed if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        return int(seed)

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
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage!r}")
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


# --------------------------------------------------------------------------------------
# model comparison
# --------------------------------------------------------------------------------------
def likelihood_ratio_test(
    null: NegBinRegressionSimulator, alternative: NegBinRegressionSimulator
) -> pd.DataFrame:
    """Per-gene likelihood-ratio test of a fitted model against a larger one that contains it.

    ``statistic = 2 (ℓ_alt − ℓ_null)`` from each gene's maximised log-likelihood (``convergence["log_likelihood"]``),
    ``df`` = the difference in estimated coefficients per gene (aliased design columns are not estimated, so they
    do not count), and ``p_value = P(χ²_df ≥ statistic)``, the large-sample null distribution (Wilks) when the
    null model is nested in the alternative.

    Parameters
    ----------
    null, alternative
        Simulators fitted to the same cells and genes; ``null`` must be nested in ``alternative`` (its designs
        span subspaces of the alternative's), which is the caller's responsibility.

    Returns
    -------
    pandas.DataFrame
        Indexed by gene: ``statistic``, ``df``, ``p_value``.
    """
    from scipy import stats

    for name, sim in (("null", null), ("alternative", alternative)):
        if not isinstance(sim, NegBinRegressionSimulator):
            raise TypeError(f"{name} must be a fitted simulator, got {type(sim).__name__}")
        sim._check_fitted()
    if list(null.var_names) != list(alternative.var_names) or null.n_obs != alternative.n_obs:
        raise ValueError("the two models must be fitted to the same cells and genes")
    df = int(alternative.n_coef - null.n_coef)
    if df < 1:
        raise ValueError(
            f"the alternative must have more estimated coefficients per gene than the null "
            f"({alternative.n_coef} vs {null.n_coef})"
        )
    stat = 2.0 * (alternative.convergence["log_likelihood"] - null.convergence["log_likelihood"])
    stat = stat.clip(lower=0.0)  # a nested model cannot fit worse; tiny negatives are rounding
    return pd.DataFrame(
        {"statistic": stat, "df": df, "p_value": stats.chi2.sf(stat.to_numpy(), df)},
        index=alternative.var_names.copy(),
    )
