"""Tests for sccourse.simulate: log-pmfs vs scipy, the fit vs an independent per-gene scipy MLE, recovery,
sampling moments, formulas, rank deficiency and bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.special as sps
import scipy.stats as st
import torch

from sccourse.simulate import (
    NegBinRegressionSimulator,
    ZeroInflatedNegBinRegressionSimulator,
    gene_summary,
    likelihood_ratio_test,
    nb_logpmf,
    sample_nb,
    zinb_logpmf,
)

# ----------------------------------------------------------------------------- helpers
NB_FORMULA = {"mean": "~ m0 + m1 - 1", "dispersion": "~ d0 + d1 - 1"}
ZINB_FORMULA = dict(NB_FORMULA, zero_inflation="~ z0 + z1 - 1")


def _scipy_nb_fit(y, X1, X2):
    """Independent per-gene MLE: scipy.stats.nbinom log-pmf, analytic gradient, L-BFGS-B."""
    p1 = X1.shape[1]

    def f(theta):
        eta, zeta = X1 @ theta[:p1], X2 @ theta[p1:]
        mu, r = np.exp(eta), np.exp(zeta)
        nll = -st.nbinom.logpmf(y, r, r / (r + mu)).sum()
        d_eta = r * (y - mu) / (r + mu)
        d_zeta = r * (sps.digamma(y + r) - sps.digamma(r) + np.log(r / (r + mu)) + (mu - y) / (r + mu))
        return nll, -np.concatenate([X1.T @ d_eta, X2.T @ d_zeta])

    x0 = np.zeros(X1.shape[1] + X2.shape[1])
    res = scipy.optimize.minimize(
        f, x0, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-9}
    )
    return res.x, -res.fun


def _zinb_ref_logpmf(y, mu, r, w):
    """ZINB log-pmf in float64: scipy's NB log-pmf mixed with logaddexp."""
    log_nb = st.nbinom.logpmf(y, r, r / (r + mu))
    log_pi, log_1m = -np.logaddexp(0, -w), -np.logaddexp(0, w)
    return np.where(y == 0, np.logaddexp(log_pi, log_1m + log_nb), log_1m + log_nb)


# ----------------------------------------------------------------------------- log-pmfs
Y_GRID = np.array([0, 1, 3, 17, 400, 2500, 9000], dtype=float)
MU_GRID = np.array([0.01, 1.0, 40.0, 3000.0])
R_GRID = np.array([1e-3, 0.1, 1.0, 25.0, 1e4])


def _grid():
    y, mu, r = np.meshgrid(Y_GRID, MU_GRID, R_GRID, indexing="ij")
    return y.ravel(), mu.ravel(), r.ravel()


def test_nb_logpmf_matches_scipy_including_large_counts():
    y, mu, r = _grid()
    ours = nb_logpmf(y, mu, r).numpy()
    ref = st.nbinom.logpmf(y, r, r / (r + mu))
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)
    assert ours.dtype == np.float64


def test_nb_and_zinb_logpmf_broadcast_every_way():
    """Counts of a smaller shape than the parameters (and the reverse) broadcast like numpy."""
    y = np.array([0, 1, 10, 400, 2500], dtype=float)[:, None, None]
    mu = np.array([0.05, 3.0, 300.0])[None, :, None]
    r = np.array([1e-3, 0.5, 10.0, 1e4])[None, None, :]
    ref = st.nbinom.logpmf(y, r, r / (r + mu))
    np.testing.assert_allclose(nb_logpmf(y, mu, r), ref, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(
        nb_logpmf(np.array([3.0]), np.full((2, 3), 2.0), 5.0),
        np.full((2, 3), st.nbinom.logpmf(3, 5.0, 5.0 / 7.0)),
        rtol=1e-10,
    )
    pi_logit = np.array([-60.0, 0.3])[None, None, None, :]  # π ≈ 1e-26: the NB itself
    z = zinb_logpmf(y[..., None], mu[..., None], r[..., None], pi_logit)
    assert z.shape == (5, 3, 4, 2)
    log_pi, log_1m = sps.log_expit(pi_logit), sps.log_expit(-pi_logit)
    nb = ref[..., None]
    ref_z = np.where(y[..., None] == 0, np.logaddexp(log_pi, log_1m + nb), log_1m + nb)
    np.testing.assert_allclose(z, ref_z, rtol=1e-7, atol=1e-8)


def test_nb_logpmf_keeps_tensor_dtype_and_mu_zero():
    y = torch.tensor([0.0, 2.0], dtype=torch.float32)
    out = nb_logpmf(y, torch.tensor([0.0, 0.0]), torch.tensor([2.0, 2.0]))
    assert out.dtype == torch.float32
    assert out[0].item() == 0.0 and out[1].item() == -np.inf


def test_zinb_logpmf_matches_float64_mixture():
    y, mu, r = _grid()
    for w in (-6.0, -0.3, 0.0, 2.5):
        ours = zinb_logpmf(y, mu, r, np.full_like(y, w)).numpy()
        np.testing.assert_allclose(ours, _zinb_ref_logpmf(y, mu, r, w), rtol=1e-9, atol=1e-9)


def test_zinb_logpmf_no_floor_at_large_counts():
    # a naive log(π·1[y=0] + (1−π)·NB + 1e-10) saturates at log(1e-10) ≈ −23; the exact value is far lower
    y, mu, r, w = 400.0, 20.0, 5.0, 0.0
    exact = _zinb_ref_logpmf(np.array([y]), np.array([mu]), np.array([r]), w)[0]
    assert exact < -40
    assert zinb_logpmf(y, mu, r, w).item() == pytest.approx(exact, rel=1e-10)


def test_zinb_logpmf_gradients_finite_far_apart():
    # y = 0 with an NB(0) hundreds of nats below log π: second derivatives must stay finite
    mu = torch.tensor([2000.0], dtype=torch.float64, requires_grad=True)
    out = zinb_logpmf(
        torch.tensor([0.0], dtype=torch.float64),
        mu,
        torch.tensor([700.0], dtype=torch.float64),
        torch.tensor([0.8], dtype=torch.float64),
    )
    (g,) = torch.autograd.grad(out.sum(), mu, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), mu)
    assert torch.isfinite(g).all() and torch.isfinite(h).all()


# ----------------------------------------------------------------------------- NB fit
def test_nb_closed_form_derivatives_match_autograd_and_scipy():
    """The Newton fit's closed-form NB derivatives in (η, ζ) against autograd, and its log-likelihood
    against scipy, on counts from 0 to thousands and μ, r over many orders of magnitude."""
    from sccourse._simulate_kernels import nb_derivatives

    rng = np.random.default_rng(3)
    n = 400
    eta = torch.tensor(rng.uniform(-4, 8, n), dtype=torch.float64)
    zeta = torch.tensor(rng.uniform(-3, 5, n), dtype=torch.float64)
    y = torch.tensor(
        np.r_[np.zeros(100), rng.integers(1, 5, 100), rng.integers(5, 5000, 200)], dtype=torch.float64
    )
    ll, first, second = nb_derivatives(y[:, None], eta[:, None], zeta[:, None])
    mu, r = np.exp(eta.numpy()), np.exp(zeta.numpy())
    ref_ll = st.nbinom.logpmf(y.numpy(), r, r / (r + mu))
    np.testing.assert_allclose(ll[:, 0].numpy(), ref_ll, rtol=1e-10, atol=1e-9)

    def f(e, z):
        mu_, r_ = torch.exp(e), torch.exp(z)
        return (
            torch.lgamma(y + r_)
            - torch.lgamma(r_)
            - torch.lgamma(y + 1)
            + r_ * torch.log(r_ / (r_ + mu_))
            + y * torch.log(mu_ / (r_ + mu_))
        )

    e, z = eta.clone().requires_grad_(True), zeta.clone().requires_grad_(True)
    ge, gz = torch.autograd.grad(f(e, z).sum(), (e, z), create_graph=True)
    hee, hez = torch.autograd.grad(ge.sum(), (e, z), retain_graph=True)
    (hzz,) = torch.autograd.grad(gz.sum(), (z,))
    for ours, ref in [
        (first[0], ge),
        (first[1], gz),
        (second[0][0], hee),
        (second[0][1], hez),
        (second[1][0], hez),
        (second[1][1], hzz),
    ]:
        np.testing.assert_allclose(ours[:, 0].numpy(), ref.detach().numpy(), rtol=1e-7, atol=1e-7)


@pytest.fixture(scope="module")
def nb_fit(make_nb_regression):
    adata, truth = make_nb_regression(1000, 20, seed=3)
    sim = NegBinRegressionSimulator().fit(adata, NB_FORMULA, device="cpu")
    return adata, truth, sim


def test_nb_fit_reaches_scipy_mle(nb_fit):
    adata, _, sim = nb_fit
    X1 = adata.obs[["m0", "m1"]].to_numpy()
    X2 = adata.obs[["d0", "d1"]].to_numpy()
    Y = adata.X
    ours = np.vstack([sim.params["beta"].to_numpy(), sim.params["gamma"].to_numpy()])
    total = 0.0
    for j in range(Y.shape[1]):
        theta, ll = _scipy_nb_fit(Y[:, j].astype(float), X1, X2)
        np.testing.assert_allclose(ours[:, j], theta, atol=1e-3)
        assert sim.convergence["log_likelihood"].iloc[j] >= ll - 1e-6
        total += ll
    assert sim.convergence["converged"].all()
    assert sim.log_likelihood == pytest.approx(total, abs=1e-4)
    assert list(sim.params["beta"].index) == ["m0", "m1"]
    assert list(sim.params["gamma"].columns) == list(adata.var_names)


def test_nb_fit_errors_vs_truth_are_the_mle_errors(nb_fit):
    _, truth, sim = nb_fit
    err_b = np.abs(sim.params["beta"].to_numpy() - truth["mean"]).mean()
    err_g = np.abs(sim.params["gamma"].to_numpy() - truth["dispersion"]).mean()
    # n = 1000: the MLE's mean-coefficient error is a few hundredths, dispersion several times larger
    assert err_b < 0.06 and err_g < 0.15 and err_g > err_b


def test_information_criteria(nb_fit):
    _, _, sim = nb_fit
    k, n = 4 * 20, 1000
    assert sim.aic == pytest.approx(2 * k - 2 * sim.log_likelihood)
    assert sim.bic == pytest.approx(k * np.log(n) - 2 * sim.log_likelihood)


def test_predict_shapes_and_values(nb_fit):
    adata, _, sim = nb_fit
    pred = sim.predict(adata.obs.iloc[:5])
    assert set(pred) == {"mean", "dispersion"}
    X1 = adata.obs[["m0", "m1"]].to_numpy()[:5]
    np.testing.assert_allclose(pred["mean"].to_numpy(), np.exp(X1 @ sim.params["beta"].to_numpy()))
    assert list(pred["mean"].index) == list(adata.obs_names[:5])


# ----------------------------------------------------------------------------- sampling
def test_sample_moments_match_theory():
    rng = np.random.default_rng(0)
    n = 4000
    obs = pd.DataFrame(
        {"grp": pd.Categorical(rng.choice(["a", "b"], size=n))}, index=[f"c{i}" for i in range(n)]
    )
    Y = rng.negative_binomial(2.0, 2.0 / (2.0 + np.where(obs["grp"] == "a", 3.0, 12.0)[:, None]), size=(n, 3))
    sim = NegBinRegressionSimulator().fit(ad.AnnData(X=Y, obs=obs), "~ grp", device="cpu")
    big = pd.DataFrame({"grp": pd.Categorical(["a"] * 20000 + ["b"] * 20000, categories=["a", "b"])})
    big.index = big.index.astype(str)
    out = sim.sample(big, seed=5)
    pred = sim.predict(big)
    assert out.X.dtype.kind == "i" and out.n_obs == 40000
    pd.testing.assert_frame_equal(out.obs, big)
    X = out.X.toarray()
    for grp in ("a", "b"):
        m = (big["grp"] == grp).to_numpy()
        mu = pred["mean"].to_numpy()[m][0]
        r = pred["dispersion"].to_numpy()[m][0]
        var = mu + mu**2 / r
        se_mean = np.sqrt(var / m.sum())
        assert np.all(np.abs(X[m].mean(0) - mu) < 5 * se_mean)
        np.testing.assert_allclose(X[m].var(0), var, rtol=0.08)
        np.testing.assert_allclose((X[m] == 0).mean(0), (r / (r + mu)) ** r, atol=0.015)
    again = sim.sample(big, seed=5).X.toarray()
    np.testing.assert_array_equal(X, again)


def test_zinb_sample_zero_fraction(make_nb_regression):
    adata, _ = make_nb_regression(3000, 4, seed=11, zero_inflation=True)
    sim = ZeroInflatedNegBinRegressionSimulator().fit(adata, ZINB_FORMULA, device="cpu")
    obs = pd.concat([adata.obs.iloc[:1]] * 30000)
    obs.index = [f"c{i}" for i in range(len(obs))]
    pred = sim.predict(obs.iloc[:1])
    mu, r, pi = (pred[k].to_numpy()[0] for k in ("mean", "dispersion", "zero_inflation"))
    X = sim.sample(obs, seed=1).X.toarray()
    np.testing.assert_allclose((X == 0).mean(0), pi + (1 - pi) * (r / (r + mu)) ** r, atol=0.012)
    np.testing.assert_allclose(X.mean(0), (1 - pi) * mu, rtol=0.06)


# ----------------------------------------------------------------------------- ZINB fit
def test_zinb_fit_reaches_scipy_mle_and_recovers_truth(make_nb_regression):
    adata, truth = make_nb_regression(8000, 4, seed=7, zero_inflation=True)
    sim = ZeroInflatedNegBinRegressionSimulator().fit(adata, ZINB_FORMULA, device="cpu")
    assert set(sim.params) == {"beta_mean", "beta_dispersion", "beta_zero_inflation"}
    assert sim.convergence["converged"].all()
    ours = np.vstack(
        [sim.params[k].to_numpy() for k in ("beta_mean", "beta_dispersion", "beta_zero_inflation")]
    )
    X = [adata.obs[c].to_numpy() for c in (["m0", "m1"], ["d0", "d1"], ["z0", "z1"])]
    for j in range(2):
        y = adata.X[:, j].astype(float)

        def nll(t, y=y):
            return -_zinb_ref_logpmf(y, np.exp(X[0] @ t[:2]), np.exp(X[1] @ t[2:4]), X[2] @ t[4:]).sum()

        res = scipy.optimize.minimize(nll, ours[:, j] + 0.05, method="BFGS", options={"gtol": 1e-7})
        assert sim.convergence["log_likelihood"].iloc[j] >= -res.fun - 1e-6
        np.testing.assert_allclose(ours[:, j], res.x, atol=1e-3)
    for part, name in (
        ("mean", "beta_mean"),
        ("dispersion", "beta_dispersion"),
        ("zero_inflation", "beta_zero_inflation"),
    ):
        assert np.abs(sim.params[name].to_numpy() - truth[part]).mean() < 0.15


# ----------------------------------------------------------------------------- formulas
def _two_groups(n=600, seed=0):
    rng = np.random.default_rng(seed)
    grp = rng.choice(["lo", "hi", "mid"], size=n)
    means = pd.Series({"lo": 1.5, "mid": 6.0, "hi": 20.0})[grp].to_numpy()
    Y = rng.negative_binomial(3.0, 3.0 / (3.0 + means[:, None]), size=(n, 2))
    obs = pd.DataFrame(
        {"grp": pd.Categorical(grp, categories=["lo", "mid", "hi"]), "x": rng.normal(size=n)},
        index=[f"c{i}" for i in range(n)],
    )
    return ad.AnnData(X=Y, obs=obs)


def test_categorical_without_intercept_gives_group_means():
    # with one free log-mean per group (and one size per group), the NB MLE of each group mean is its sample mean
    adata = _two_groups()
    sim = NegBinRegressionSimulator().fit(
        adata, {"mean": "~ grp - 1", "dispersion": "~ grp - 1"}, device="cpu"
    )
    beta = sim.params["beta"]
    assert list(beta.index) == ["grp[lo]", "grp[mid]", "grp[hi]"]
    for lvl in ("lo", "mid", "hi"):
        m = (adata.obs["grp"] == lvl).to_numpy()
        np.testing.assert_allclose(np.exp(beta.loc[f"grp[{lvl}]"]), adata.X[m].mean(0), rtol=1e-6)


def test_categorical_with_intercept_is_a_log_ratio():
    adata = _two_groups()
    sim = NegBinRegressionSimulator().fit(adata, {"mean": "~ grp", "dispersion": "~ grp"}, device="cpu")
    beta = sim.params["beta"]
    assert list(beta.index) == ["Intercept", "grp[T.mid]", "grp[T.hi]"]
    lo = adata.X[(adata.obs["grp"] == "lo").to_numpy()].mean(0)
    hi = adata.X[(adata.obs["grp"] == "hi").to_numpy()].mean(0)
    np.testing.assert_allclose(beta.loc["Intercept"], np.log(lo), atol=1e-6)
    np.testing.assert_allclose(beta.loc["grp[T.hi]"], np.log(hi / lo), atol=1e-6)


def test_dot_formula_uses_all_obs_columns():
    import formulaic

    adata = _two_groups()
    sim = NegBinRegressionSimulator().fit(adata, {"mean": "~ .", "dispersion": "~ 1"}, device="cpu")
    expected = list(formulaic.model_matrix("~ grp + x", adata.obs).columns)
    assert list(sim.params["beta"].index) == expected
    assert list(sim.params["gamma"].index) == ["Intercept"]


def test_string_formula_means_constant_dispersion():
    adata = _two_groups()
    sim = NegBinRegressionSimulator().fit(adata, "~ x", device="cpu")
    assert sim.formula == {"mean": "~ x", "dispersion": "~ 1"}
    assert list(sim.params["gamma"].index) == ["Intercept"]


def test_rank_deficient_design_warns_and_drops_aliased_column():
    adata = _two_groups()
    adata.obs["grp_copy"] = adata.obs["grp"].copy()
    with pytest.warns(UserWarning, match=r"grp_copy\[T\.mid\].*grp_copy\[T\.hi\]|not identifiable"):
        sim = NegBinRegressionSimulator().fit(
            adata, {"mean": "~ grp + grp_copy", "dispersion": "~ grp"}, device="cpu"
        )
    assert sim.aliased == {"mean": ["grp_copy[T.mid]", "grp_copy[T.hi]"]}
    beta = sim.params["beta"]
    assert np.all(beta.loc[["grp_copy[T.mid]", "grp_copy[T.hi]"]].to_numpy() == 0.0)
    lo = adata.X[(adata.obs["grp"] == "lo").to_numpy()].mean(0)
    np.testing.assert_allclose(beta.loc["Intercept"], np.log(lo), atol=1e-6)
    assert sim.n_params == (3 + 3) * 2


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs():
    adata = _two_groups()
    sim = NegBinRegressionSimulator()
    with pytest.raises(RuntimeError, match="fit"):
        sim.predict(adata.obs)
    bad = adata.copy()
    bad.X = bad.X.astype(float) + 0.5
    with pytest.raises(ValueError, match="integer"):
        sim.fit(bad, "~ grp")
    bad.X = -adata.X
    with pytest.raises(ValueError, match="non-negative"):
        sim.fit(bad, "~ grp")
    with pytest.raises(ValueError, match="not columns of obs"):
        sim.fit(adata, "~ nonexistent")
    nan = adata.copy()
    nan.obs.loc[nan.obs_names[3], "x"] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        sim.fit(nan, "~ x")
    NegBinRegressionSimulator().fit(nan, "~ grp", device="cpu")  # NaN in an unused column is fine
    with pytest.raises(ValueError, match="unknown formula keys"):
        sim.fit(adata, {"mean": "~ x", "zero_inflation": "~ 1"})
    with pytest.raises(ValueError, match="one-sided"):
        sim.fit(adata, "y ~ x")
    with pytest.raises(ValueError, match="layer"):
        sim.fit(adata, "~ x", layer="spliced")
    with pytest.raises(ValueError, match="max_iter"):
        sim.fit(adata, "~ x", max_iter=0)
    sim.fit(adata, {"mean": "~ x", "dispersion": "~ grp"}, device="cpu")
    with pytest.raises(ValueError, match=r"obs lacks \['grp'\]"):
        sim.sample(adata.obs[["x"]], seed=0)


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_cpu_equals_cuda(make_nb_regression):
    adata, _ = make_nb_regression(2000, 6, seed=2, zero_inflation=True)
    for cls, formula in (
        (NegBinRegressionSimulator, NB_FORMULA),
        (ZeroInflatedNegBinRegressionSimulator, ZINB_FORMULA),
    ):
        cpu = cls().fit(adata, formula, device="cpu")
        gpu = cls().fit(adata, formula, device="cuda")
        for key in cpu.params:
            np.testing.assert_allclose(gpu.params[key].to_numpy(), cpu.params[key].to_numpy(), atol=1e-6)
        assert gpu.log_likelihood == pytest.approx(cpu.log_likelihood, rel=1e-9)
    y = torch.arange(0, 3000, 7, dtype=torch.float64)
    mu, r, w = torch.full_like(y, 50.0), torch.full_like(y, 0.5), torch.full_like(y, -1.0)
    np.testing.assert_allclose(
        zinb_logpmf(y.cuda(), mu.cuda(), r.cuda(), w.cuda()).cpu().numpy(),
        zinb_logpmf(y, mu, r, w).numpy(),
        rtol=1e-12,
    )


# ----------------------------------------------------------------------------- plots
def test_plots(nb_fit):
    import matplotlib.figure

    from sccourse import plotting

    adata, truth, sim = nb_fit
    fig = plotting.plot_parameter_recovery({"beta": truth["mean"]}, {"beta": sim.params["beta"]})
    assert isinstance(fig, matplotlib.figure.Figure)
    assert f"{np.abs(truth['mean'] - sim.params['beta'].to_numpy()).mean():.3f}" in fig.axes[0].get_title()
    fig = plotting.plot_mean_curves(adata, sim, ["g0", "g1"], covariate="m0")
    x, y = fig.axes[0].lines[0].get_data()
    np.testing.assert_allclose(np.sort(x), x)
    np.testing.assert_allclose(
        y,
        np.exp(adata.obs[["m0", "m1"]].to_numpy() @ sim.params["beta"]["g0"].to_numpy())[
            np.argsort(adata.obs["m0"].to_numpy())
        ],
    )
    with pytest.raises(ValueError, match="unknown"):
        plotting.plot_mean_curves(adata, sim, ["nope"], covariate="m0")
    fig = plotting.plot_real_vs_synthetic(adata, sim.sample(adata.obs, seed=0))
    assert len(fig.axes) == 4


# ---------------------------------------------------------------- Gaussian copula
_R_TRUE = np.array([[1.0, 0.8, 0.5, 0.0], [0.8, 1.0, 0.4, 0.0], [0.5, 0.4, 1.0, -0.5], [0.0, 0.0, -0.5, 1.0]])


def _copula_counts(n, mu, r, pi=0.0, seed=0):
    """Counts whose genes are coupled by a Gaussian copula with correlation _R_TRUE (scipy quantiles)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 4)) @ np.linalg.cholesky(_R_TRUE).T
    u = st.norm.cdf(z)
    u_nb = np.clip((u - pi) / (1 - pi), 0, 1 - 1e-12)
    Y = np.maximum(st.nbinom.ppf(u_nb, r, r / (r + mu)), 0).astype(np.int64)  # ppf(0) = -1 in scipy
    return ad.AnnData(
        X=Y,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(4)]),
    )


def _normal_scores(Y, mu, r, rng):
    """Randomised PIT under the true NB marginal, computed with scipy only."""
    p = r / (r + mu)
    lo, hi = st.nbinom.cdf(Y - 1, r, p), st.nbinom.cdf(Y, r, p)
    return st.norm.ppf(np.clip(lo + rng.random(Y.shape) * (hi - lo), 1e-12, 1 - 1e-12))


def test_copula_recovers_gene_correlation_and_keeps_marginals():
    mu, r = 40.0, 5.0
    adata = _copula_counts(20000, mu, r)
    sim = NegBinRegressionSimulator().fit(adata, "~ 1", device="cpu")
    R = sim.fit_copula(adata, seed=1)
    assert list(R.index) == list(adata.var_names)
    np.testing.assert_allclose(R.to_numpy(), _R_TRUE, atol=0.04)

    joint = sim.sample(adata.obs, seed=2, copula=True).X.toarray()
    indep = sim.sample(adata.obs, seed=2).X.toarray()
    for Y in (joint, indep):  # same NB marginals either way
        np.testing.assert_allclose(Y.mean(0), mu, rtol=0.03)
        np.testing.assert_allclose(Y.var(0), mu + mu**2 / r, rtol=0.08)
    rng = np.random.default_rng(3)
    np.testing.assert_allclose(
        np.corrcoef(_normal_scores(joint, mu, r, rng), rowvar=False), _R_TRUE, atol=0.05
    )
    off = ~np.eye(4, dtype=bool)
    assert np.abs(np.corrcoef(_normal_scores(indep, mu, r, rng), rowvar=False)[off]).max() < 0.05
    # same seed, same cells
    np.testing.assert_array_equal(sim.sample(adata.obs, seed=2, copula=True).X.toarray(), joint)


def test_zinb_copula_keeps_zero_fraction_and_sign_of_correlation():
    mu, r, pi = 30.0, 4.0, 0.3
    adata = _copula_counts(20000, mu, r, pi=pi, seed=5)
    sim = ZeroInflatedNegBinRegressionSimulator().fit(adata, "~ 1", device="cpu")
    R = sim.fit_copula(adata, seed=0).to_numpy()
    assert np.all(np.sign(R[np.abs(_R_TRUE) > 0.3]) == np.sign(_R_TRUE[np.abs(_R_TRUE) > 0.3]))
    Y = sim.sample(adata.obs, seed=1, copula=True).X.toarray()
    expected_zero = pi + (1 - pi) * st.nbinom.pmf(0, r, r / (r + mu))
    np.testing.assert_allclose((Y == 0).mean(0), expected_zero, atol=0.015)
    np.testing.assert_allclose(Y.mean(0), (1 - pi) * mu, rtol=0.04)


def test_copula_bad_input():
    adata = _copula_counts(200, 10.0, 3.0)
    sim = NegBinRegressionSimulator().fit(adata, "~ 1", device="cpu")
    with pytest.raises(RuntimeError, match="fit_copula"):
        sim.sample(adata.obs, copula=True)
    with pytest.raises(ValueError, match="same order"):
        sim.fit_copula(adata[:, ::-1].copy())
    with pytest.raises(ValueError, match="shrinkage"):
        sim.fit_copula(adata, shrinkage=1.5)
    R = sim.fit_copula(adata, shrinkage=1.0)
    np.testing.assert_allclose(R.to_numpy(), np.eye(4), atol=1e-12)


def test_gene_correlation_plot():
    import matplotlib.figure

    from sccourse import plotting

    adata = _copula_counts(500, 20.0, 5.0)
    shuffled = np.random.default_rng(0).permuted(adata.X, axis=0)  # columns shuffled apart: no correlation
    fig = plotting.plot_gene_correlations({"real": adata, "shuffled": shuffled}, n_genes=4)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 4  # 2 heatmaps, colour bar, scatter
    off = ~np.eye(4, dtype=bool)
    expected = np.abs(np.corrcoef(np.log1p(adata.X.astype(float)), rowvar=False)[off]).mean()
    assert f"{expected:.3f}" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="same genes"):
        plotting.plot_gene_correlations({"a": adata, "b": shuffled[:, :3]})


# ---------------------------------------------------------------- sample_nb, gene_summary, likelihood-ratio test
def test_sample_nb_moments_seed_and_numpy_draw():
    mu = np.array([[2.0, 30.0, 0.5]])
    r = np.array([[0.5, 8.0, 100.0]])
    n = 200_000
    Y = sample_nb(np.repeat(mu, n, 0), np.repeat(r, n, 0), seed=3)
    assert Y.dtype == np.int64 and Y.shape == (n, 3)
    np.testing.assert_allclose(Y.mean(0), mu[0], rtol=0.02)
    np.testing.assert_allclose(Y.var(0), mu[0] + mu[0] ** 2 / r[0], rtol=0.05)
    np.testing.assert_allclose((Y == 0).mean(0), st.nbinom.pmf(0, r[0], r[0] / (r[0] + mu[0])), atol=0.005)
    np.testing.assert_array_equal(sample_nb(mu, r, seed=3), sample_nb(mu, r, seed=3))
    # the documented draw: numpy's negative_binomial(n = r, p = r / (r + mu))
    np.testing.assert_array_equal(
        sample_nb(mu, r, seed=4), np.random.default_rng(4).negative_binomial(r, r / (r + mu))
    )
    assert sample_nb(np.full(5, 3.0), 2.0, seed=0).shape == (5,)  # broadcasts
    with pytest.raises(ValueError, match="r must"):
        sample_nb(mu, -r)
    with pytest.raises(ValueError, match="mu must"):
        sample_nb(-mu, r)
    with pytest.raises(ValueError, match="seed"):
        sample_nb(mu, r, seed=-1)


def test_gene_summary_dense_sparse_and_stored_zeros():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = rng.negative_binomial(1.0, 0.2, size=(300, 7)).astype(float)
    X[:, 3] = 0.0
    S = sp.csr_matrix(X)
    S.data[:5] = 0.0  # explicitly stored zeros
    D = S.toarray()
    expected = np.c_[D.mean(0), D.var(0), (D == 0).mean(0)]
    for M in (D, S, sp.csc_matrix(S), ad.AnnData(S)):
        out = gene_summary(M)
        assert list(out.columns) == ["mean", "variance", "zero_fraction"] and len(out) == 7
        np.testing.assert_allclose(out.to_numpy(), expected, rtol=1e-12, atol=1e-12)
    # a large offset: the two-pass variance keeps its precision where E[x²] − E[x]² would not
    big = sp.csr_matrix(np.array([[1e8 + 1.0], [1e8 - 1.0]]))
    np.testing.assert_allclose(gene_summary(big)["variance"], [1.0], rtol=1e-12)


def test_likelihood_ratio_test_matches_scipy_fits_and_counts_only_estimated_columns():
    """The statistic from per-gene scipy MLEs of both models, df without the aliased column, chi² tail."""
    rng = np.random.default_rng(11)
    n, g = 600, 3
    x, z = rng.normal(size=n), rng.normal(size=n)
    obs = pd.DataFrame({"x": x, "z": z, "x2": 2 * x}, index=[f"c{i}" for i in range(n)])
    mu = np.exp(0.5 + 0.3 * x[:, None] + np.array([0.0, 0.4, -0.7]) * z[:, None])
    Y = rng.negative_binomial(3.0, 3.0 / (3.0 + mu))
    adata = ad.AnnData(X=Y.astype(float), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    null = NegBinRegressionSimulator().fit(adata, {"mean": "~ x", "dispersion": "~ 1"}, device="cpu")
    with pytest.warns(UserWarning, match="rank-deficient"):
        alt = NegBinRegressionSimulator().fit(
            adata, {"mean": "~ x + z + x2", "dispersion": "~ 1"}, device="cpu"
        )
    out = likelihood_ratio_test(null, alt)
    assert list(out.index) == list(adata.var_names) and (out["df"] == 1).all()
    ones = np.ones((n, 1))
    for j in range(g):
        _, ll0 = _scipy_nb_fit(Y[:, j].astype(float), np.c_[ones, x], ones)
        _, ll1 = _scipy_nb_fit(Y[:, j].astype(float), np.c_[ones, x, z], ones)
        assert out["statistic"].iloc[j] == pytest.approx(2 * (ll1 - ll0), abs=1e-4)
    np.testing.assert_allclose(out["p_value"], st.chi2.sf(out["statistic"], 1), rtol=1e-12)
    assert out["p_value"].iloc[0] > 1e-3 and out["p_value"].iloc[1:].max() < 1e-10  # gene 0 has no z effect
    with pytest.raises(ValueError, match="more estimated coefficients"):
        likelihood_ratio_test(alt, null)
    with pytest.raises(ValueError, match="same cells"):
        likelihood_ratio_test(
            null, NegBinRegressionSimulator().fit(adata[:300].copy(), "~ x + z", device="cpu")
        )
    with pytest.raises(TypeError):
        likelihood_ratio_test(null, "alt")


def test_spline_formula_keeps_its_knots_for_new_cells():
    """bs() in a formula: predict and sample on other cells use the knots of the fit (formulaic's stateful
    transform), so a subset of cells gets exactly the rows of the full prediction."""
    rng = np.random.default_rng(2)
    n = 800
    t = rng.uniform(size=n)
    mu = np.exp(1.0 + 2.0 * np.sin(3 * t))[:, None] * np.ones((1, 2))
    Y = rng.negative_binomial(4.0, 4.0 / (4.0 + mu))
    obs = pd.DataFrame({"t": t}, index=[f"c{i}" for i in range(n)])
    adata = ad.AnnData(X=Y.astype(float), obs=obs)
    spline = NegBinRegressionSimulator().fit(adata, {"mean": "~ bs(t, df=4)"}, device="cpu")
    line = NegBinRegressionSimulator().fit(adata, {"mean": "~ t"}, device="cpu")
    assert spline.convergence["converged"].all() and spline.n_coef == 6 and line.n_coef == 3
    full = spline.predict(obs)["mean"]
    sub = obs.iloc[[5, 17, 400]]
    np.testing.assert_allclose(
        spline.predict(sub)["mean"].to_numpy(), full.iloc[[5, 17, 400]].to_numpy(), rtol=1e-12
    )
    # the spline follows the non-monotone mean; the log-linear model cannot
    err = {
        name: np.abs(np.log(s.predict(obs)["mean"].to_numpy()[:, 0]) - np.log(mu[:, 0])).mean()
        for name, s in (("spline", spline), ("line", line))
    }
    assert err["spline"] < 0.1 < err["line"]
    assert likelihood_ratio_test(line, spline)["p_value"].max() < 1e-10
    assert spline.sample(sub, seed=0).shape == (3, 2)


def test_nb_logpmf_domains():
    import scipy.stats

    from sccourse import simulate as S

    out = S.nb_logpmf(np.array([-1.0, 2.5, 0.0, 3.0]), np.array([2.0, 2.0, 0.0, 0.0]), 4.0).numpy()
    assert np.isneginf(out[0]) and np.isneginf(out[1]) and out[2] == 0.0 and np.isneginf(out[3])
    ok = S.nb_logpmf(np.array([0.0, 3.0]), 2.0, 4.0).numpy()
    np.testing.assert_allclose(ok, scipy.stats.nbinom.logpmf([0, 3], 4.0, 4.0 / 6.0))
    with pytest.raises(ValueError, match="mu must hold finite means >= 0"):
        S.nb_logpmf(1.0, -2.0, 4.0)
    with pytest.raises(ValueError, match=r"r \(the NB size"):
        S.nb_logpmf(1.0, 2.0, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        S.nb_logpmf(np.nan, 2.0, 1.0)
    z = S.zinb_logpmf(np.array([0.0, -1.0]), np.array([0.0, 1.0]), 2.0, 0.0).numpy()
    assert z[0] == 0.0 and np.isneginf(z[1])


def test_unseen_factor_levels_raise_naming_the_column():
    import anndata as ad

    from sccourse import simulate as S

    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {"group": rng.choice(["a", "b"], 300), "x": rng.normal(size=300)}, index=[f"c{i}" for i in range(300)]
    )
    Y = rng.poisson(5, size=(300, 3))
    sim = S.NegBinRegressionSimulator().fit(
        ad.AnnData(Y.astype(float), obs=obs), {"mean": "~ group + x", "dispersion": "~ 1"}, device="cpu"
    )
    new = obs.iloc[:4].copy()
    new["group"] = ["a", "b", "c", "typo"]
    with pytest.raises(ValueError, match=r"obs\['group'\] has levels the model never saw: \['c', 'typo'\]"):
        sim.predict(new)
    with pytest.raises(ValueError, match="never saw"):
        sim.sample(new, seed=0)
    assert sim.predict(obs.iloc[:4])["mean"].shape == (4, 3)


# ---------------------------------------------------------------- progress, covariates, package layout
def test_fit_progress_bar_only_when_asked_or_watched(capsys):
    adata = _two_groups(n=200)
    NegBinRegressionSimulator().fit(
        adata, "~ grp", device="cpu"
    )  # default None: pytest's stderr is no terminal
    assert "Newton" not in capsys.readouterr().err
    NegBinRegressionSimulator().fit(adata, "~ grp", device="cpu", progress=True)
    assert "Newton" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress"):
        NegBinRegressionSimulator().fit(adata, "~ grp", device="cpu", progress="yes")


def test_infinite_covariates_and_designs_are_refused_naming_the_column():
    """An inf covariate, or a transform that makes one (log of 0), used to reach the Newton fit or numpy's SVD."""
    adata = _two_groups(n=200)
    adata.obs["x"] = adata.obs["x"].abs()
    bad = adata.copy()
    bad.obs.loc[bad.obs_names[4], "x"] = np.inf
    with pytest.raises(ValueError, match=r"infinite values.*'x': 1"):
        NegBinRegressionSimulator().fit(bad, "~ x", device="cpu")
    zero = adata.copy()
    zero.obs.loc[zero.obs_names[0], "x"] = 0.0
    sim = NegBinRegressionSimulator().fit(adata, "~ np.log(x)", device="cpu")
    with np.errstate(divide="ignore"):  # log(0) = -inf, which the design check must catch
        with pytest.raises(ValueError, match=r"np\.log\(x\)"):
            NegBinRegressionSimulator().fit(zero, "~ np.log(x)", device="cpu")
        with pytest.raises(ValueError, match="NaN or infinite"):
            sim.predict(zero.obs)
    with pytest.raises(ValueError, match="infinite values"):
        sim.sample(bad.obs, seed=0)


def test_forbidding_the_package_blocks_every_function_of_its_modules():
    """Notebooks block "sccourse.simulate" (and "sccourse.simulate.zinb_logpmf"): that must reach every function
    and method defined in the private modules the package is split into, whatever their names."""
    import inspect
    import sys

    import sccourse.simulate
    from sccourse import grading
    from sccourse.grading._blocker import _Block

    modules = [m for n, m in sys.modules.items() if n.startswith("sccourse.simulate.")]
    assert {m.__name__ for m in modules} >= {
        "sccourse.simulate._logpmf",
        "sccourse.simulate._design",
        "sccourse.simulate._regression",
        "sccourse.simulate._summary",
    }
    defined = set()
    for mod in modules:
        for value in vars(mod).values():
            if getattr(value, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(value):
                defined.add(value.__code__)
            elif inspect.isclass(value):
                for attr in vars(value).values():
                    attr = attr.fget if isinstance(attr, property) else getattr(attr, "__func__", attr)
                    if inspect.isfunction(attr):
                        defined.add(attr.__code__)
    assert len(defined) > 30
    blocked = set(_Block(("sccourse.simulate",), (), None).blocked)
    assert defined <= blocked, sorted(c.co_qualname for c in defined - blocked)
    for name in sccourse.simulate.__all__:
        assert getattr(sccourse.simulate, name).__module__.startswith("sccourse.simulate.")
    with pytest.raises(grading.ShortcutError), grading.forbid("sccourse.simulate.zinb_logpmf", task="t"):
        zinb_logpmf(1.0, 2.0, 3.0, 0.0)
    with pytest.raises(grading.ShortcutError), grading.forbid("sccourse.simulate", task="t"):
        gene_summary(np.ones((3, 2)))


def test_a_gene_at_its_poisson_limit_fits_the_same_on_one_and_two_threads():
    """Real pancreas genes whose size runs off to infinity (the Poisson limit) under the spline model: the fit must
    not depend on the number of threads, and every gene must end at a small gradient (stepping along the flat
    dispersion direction used to stall one of them at a gradient of 0.45 on two threads, and not on one)."""
    import warnings

    from sccourse import datasets

    panc = datasets.pancreas_pseudotime()
    formula = {"mean": "~ bs(pseudotime, df=4)", "dispersion": "~ clusters_coarse"}
    before = torch.get_num_threads()
    fits = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "did not converge": the genes at the limit
                fits.append(NegBinRegressionSimulator().fit(panc, formula, device="cpu").convergence)
    finally:
        torch.set_num_threads(before)
    one, two = fits
    assert (~one["converged"]).any()  # the case this test is about
    np.testing.assert_allclose(two["log_likelihood"], one["log_likelihood"], rtol=1e-7)  # was 4.1 nats apart
    assert (one["grad_norm"] < 1e-4).all() and (two["grad_norm"] < 1e-4).all()
