"""Data with a known answer, shared by the benchmarks and the tests (``tests/conftest.py`` imports it)."""

from __future__ import annotations

import numpy as np


def nb_regression(n: int, g: int, *, seed: int = 0, zero_inflation: bool = False):
    """Counts from a known NB (or ZINB) regression: log mu = X1 B, log r = X2 D (logit pi = X3 Z); (AnnData, truth).

    Covariates ``m0, m1`` (mean), ``d0, d1`` (dispersion) and ``z0, z1`` (zero inflation) are in ``obs``; genes are
    named ``g0 … g{g-1}``; ``truth`` holds the coefficient matrices (covariates x genes) under the simulators' part
    names.
    """
    import anndata as ad
    import pandas as pd
    import scipy.special as sps

    rng = np.random.default_rng(seed)
    X1, X2 = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    B, D = rng.normal(size=(2, g)), rng.normal(size=(2, g))
    mu, r = np.exp(X1 @ B), np.exp(X2 @ D)
    Y = rng.negative_binomial(r, r / (r + mu))
    cols = {"m0": X1[:, 0], "m1": X1[:, 1], "d0": X2[:, 0], "d1": X2[:, 1]}
    truth = {"mean": B, "dispersion": D}
    if zero_inflation:
        X3, Z = rng.normal(size=(n, 2)), rng.normal(size=(2, g))
        Y = Y * (rng.random((n, g)) >= sps.expit(X3 @ Z))
        cols.update(z0=X3[:, 0], z1=X3[:, 1])
        truth["zero_inflation"] = Z
    obs = pd.DataFrame(cols, index=[f"cell{i}" for i in range(n)])
    adata = ad.AnnData(X=Y.astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    return adata, truth
