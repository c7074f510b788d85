"""Per-gene summaries of count matrices and the likelihood-ratio test between nested fitted simulators."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import ArrayLike

from .._validation import check_finite
from ._regression import NegBinRegressionSimulator


def gene_summary(X: ArrayLike | sp.spmatrix | sp.sparray | ad.AnnData) -> pd.DataFrame:
    """Per-gene mean, population variance (``ddof=0``) and fraction of zero counts of a cells × genes matrix.

    For gene ``g`` over ``n`` cells: ``mean = Σᵢ xᵢ/n``, ``variance = Σᵢ (xᵢ − mean)²/n`` (two passes, no
    cancellation) and ``zero_fraction = #{i : xᵢ = 0}/n``.

    Parameters
    ----------
    X
        Counts, dense or scipy-sparse (an explicitly stored zero counts as a zero), or an AnnData (its ``.X``).

    Returns
    -------
    pandas.DataFrame
        One row per gene (column of ``X``), columns ``mean``, ``variance``, ``zero_fraction``.

    Raises
    ------
    ValueError
        When ``X`` is not a two-dimensional numeric matrix with at least one cell, or holds NaN or inf.
    """
    if isinstance(X, ad.AnnData):
        X = X.X
    if not sp.issparse(X):
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise ValueError(f"X must be a numeric cells × genes matrix, got dtype {X.dtype}")
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be a cells × genes matrix with at least one cell, got shape {X.shape}")
    check_finite(X, "X")
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
        X = X.astype(np.float64, copy=False)
        mean, var, zero = X.mean(0), X.var(0), (X == 0).mean(0)
    return pd.DataFrame({"mean": mean, "variance": var, "zero_fraction": zero})


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
        if sim.params is None:
            raise RuntimeError(f"{name} is not fitted: call {name}.fit(adata, formula) first")
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
