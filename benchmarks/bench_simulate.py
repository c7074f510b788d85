"""NB / ZINB regression fits: sccourse.simulate vs the scdesigner package and a per-gene scipy MLE.

Run with ``python -m benchmarks simulate`` from ``.venv-bench`` (where scdesigner 0.0.25 is installed; see
``benchmarks/README-simulate.md``). Without scdesigner the scdesigner cases are recorded without a reference.

Cases (same data, side by side):

* ``nb_sim_1000x20``: n = 1,000 simulated cells, 20 genes, 2 mean + 2 dispersion covariates (no intercepts);
  quality = mean |estimate − truth| for β and γ, and the largest distance to the scipy MLE.
* ``pancreas_2087x100``: ``pancreas_pseudotime()``, ``mean ~ pseudotime`` (dispersion ``~ 1``); quality = number of
  genes whose coefficients are > 0.1 away from the scipy MLE.
* ``zinb_sim_50000x20``: ZINB with mean, dispersion and zero-inflation covariates; quality = errors vs truth.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.special as sps

from benchmarks._harness import Case
from benchmarks._synthetic import nb_regression

NB_FORMULA = {"mean": "~ m0 + m1 - 1", "dispersion": "~ d0 + d1 - 1"}
ZINB_FORMULA = dict(NB_FORMULA, zero_inflation="~ z0 + z1 - 1")


def _design(formula: str, obs: pd.DataFrame) -> np.ndarray:
    import formulaic

    return np.asarray(formulaic.model_matrix(formula, obs), dtype=float)


def scipy_nb_mle(Y: np.ndarray, X1: np.ndarray, X2: np.ndarray) -> dict:
    """Per-gene NB MLE with L-BFGS-B and the analytic gradient (the exact-MLE reference)."""
    p1 = X1.shape[1]
    est = np.zeros((p1 + X2.shape[1], Y.shape[1]))
    for j in range(Y.shape[1]):
        y = Y[:, j]

        def f(t, y=y):
            eta, zeta = X1 @ t[:p1], X2 @ t[p1:]
            mu, r = np.exp(eta), np.exp(zeta)
            lr = np.log(r + mu)
            ll = sps.gammaln(y + r) - sps.gammaln(r) - sps.gammaln(y + 1) + r * (zeta - lr) + y * (eta - lr)
            d_eta = r * (y - mu) / (r + mu)
            d_zeta = r * (sps.digamma(y + r) - sps.digamma(r) + zeta - lr + (mu - y) / (r + mu))
            return -ll.sum(), -np.concatenate([X1.T @ d_eta, X2.T @ d_zeta])

        t0 = np.zeros(est.shape[0])
        t0[:p1] = np.linalg.lstsq(X1, np.log1p(y), rcond=None)[0]
        res = scipy.optimize.minimize(
            f, t0, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-8}
        )
        est[:, j] = res.x
    return {"mean": est[:p1], "dispersion": est[p1:]}


def _ours(adata, formula, cls_name="NegBinRegressionSimulator", device="cpu"):
    from sccourse import simulate

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim = getattr(simulate, cls_name)().fit(adata, formula, device=device)
        names = list(sim.params)
        parts = ["mean", "dispersion", "zero_inflation"][: len(names)]
        return {p: sim.params[k].to_numpy() for p, k in zip(parts, names)}

    return run


def _scdesigner(adata, formula, *, zero_inflation=False, **fit_kwargs):
    try:
        from scdesigner.distributions import NegBin, ZeroInflatedNegBin
    except ImportError:
        return None

    cls = ZeroInflatedNegBin if zero_inflation else NegBin
    batch = fit_kwargs.pop("batch_size", None)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls(formula=formula)
            model.setup_data(adata, **({"batch_size": batch} if batch else {}))
            model.fit(verbose=False, **fit_kwargs)
        return {k: v.to_numpy() for k, v in model.parameters.items()}

    return run


def _errors(truth):
    def quality(ours, ref):
        out = {}
        for name, res in (("ours", ours), ("ref", ref)):
            if res is None:
                continue
            for part, T in truth.items():
                out[f"{name}_err_{part}"] = float(np.abs(res[part] - T).mean())
        return out

    return quality


def cases(quick: bool):
    n, g = (400, 10) if quick else (1000, 20)
    adata, truth = nb_regression(n, g, seed=0)
    X1, X2 = _design(NB_FORMULA["mean"], adata.obs), _design(NB_FORMULA["dispersion"], adata.obs)
    Y = np.asarray(adata.X, dtype=float)
    mle = scipy_nb_mle(Y, X1, X2)
    base_quality = _errors(truth)

    def quality_sim(ours, ref):
        q = base_quality(ours, ref)
        q["ours_max_dist_to_scipy_mle"] = float(max(np.abs(ours[p] - mle[p]).max() for p in mle))
        if ref is not None:
            q["ref_max_dist_to_scipy_mle"] = float(max(np.abs(ref[p] - mle[p]).max() for p in mle))
        return q

    ref = _scdesigner(adata, NB_FORMULA)
    yield Case(
        f"nb_sim_{n}x{g}",
        _ours(adata, NB_FORMULA),
        ref,
        "scdesigner 0.0.25 NegBin, defaults" if ref else "scdesigner not installed",
        quality=quality_sim,
        notes="exact MLE vs mini-batch AdamW with early stopping on 10 % held out",
    )
    epochs = 50 if quick else 2000
    ref = _scdesigner(adata, NB_FORMULA, max_epochs=epochs, val_frac=0.0, batch_size=n)
    yield Case(
        f"nb_sim_{n}x{g}_fullbatch",
        _ours(adata, NB_FORMULA),
        ref,
        f"scdesigner 0.0.25 NegBin, {epochs} full-batch epochs" if ref else "scdesigner not installed",
        quality=quality_sim,
        repeats=1,
    )
    yield Case(
        f"nb_sim_{n}x{g}_scipy",
        _ours(adata, NB_FORMULA),
        lambda: scipy_nb_mle(Y, X1, X2),
        "scipy L-BFGS-B per gene, analytic gradient",
        quality=quality_sim,
    )

    # real data: pancreas, mean ~ pseudotime
    try:
        from sccourse import datasets

        panc = datasets.pancreas_pseudotime()
    except (OSError, ValueError) as err:  # no data mirror (DataUnavailableError is an OSError)
        print(f"pancreas case skipped: {err}")
    else:
        if quick:
            panc = panc[:, :20].copy()
        P1 = _design("~ pseudotime", panc.obs)
        P2 = np.ones((panc.n_obs, 1))
        PY = panc.X.toarray().astype(float)
        pmle = scipy_nb_mle(PY, P1, P2)

        def quality_panc(ours, ref):
            q = {}
            for name, res in (("ours", ours), ("ref", ref)):
                if res is None:
                    continue
                dist = np.maximum(
                    np.abs(res["mean"] - pmle["mean"]).max(0),
                    np.abs(res["dispersion"] - pmle["dispersion"]).max(0),
                )
                q[f"{name}_genes_off_mle_by_0.1"] = int((dist > 0.1).sum())
                q[f"{name}_max_dist_to_scipy_mle"] = float(dist.max())
            return q

        formula = {"mean": "~ pseudotime", "dispersion": "~ 1"}
        ref = _scdesigner(panc, formula)
        yield Case(
            f"pancreas_{panc.n_obs}x{panc.n_vars}",
            _ours(panc, formula),
            ref,
            "scdesigner 0.0.25 NegBin, defaults" if ref else "scdesigner not installed",
            quality=quality_panc,
        )
        yield Case(
            f"pancreas_{panc.n_obs}x{panc.n_vars}_scipy",
            _ours(panc, formula),
            lambda: scipy_nb_mle(PY, P1, P2),
            "scipy L-BFGS-B per gene, analytic gradient",
            quality=quality_panc,
        )

    # ZINB at 50,000 cells
    nz = 5000 if quick else 50000
    zdata, ztruth = nb_regression(nz, 20, seed=1, zero_inflation=True)
    ref = _scdesigner(zdata, ZINB_FORMULA, zero_inflation=True)
    yield Case(
        f"zinb_sim_{nz}x20",
        _ours(zdata, ZINB_FORMULA, "ZeroInflatedNegBinRegressionSimulator"),
        ref,
        "scdesigner 0.0.25 ZeroInflatedNegBin, defaults" if ref else "scdesigner not installed",
        quality=_errors(ztruth),
        repeats=1,
    )
