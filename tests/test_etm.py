"""Tests for sccourse.etm: likelihood and KL against independent formulas, gradients against finite
differences, recovery of planted topics, the AnnData wrapper and input validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import log_softmax, softmax

from sccourse import datasets, etm
from sccourse._etm_kernels import gaussian_kl, logit_loglik, mixture_loglik


def planted_topics(n_cells=500, n_genes=150, n_topics=4, *, seed=0, concentration=0.2):
    """Counts drawn from a known topic model: x_n ~ Multinomial(lib_n, θ_n β), θ_n ~ Dirichlet."""
    rng = np.random.default_rng(seed)
    block = n_genes // n_topics
    beta = np.full((n_topics, n_genes), 0.2)
    for k in range(n_topics):
        beta[k, k * block : (k + 1) * block] += rng.gamma(2.0, 2.0, size=block)
    beta /= beta.sum(axis=1, keepdims=True)
    theta = rng.dirichlet(np.full(n_topics, concentration), size=n_cells)
    lib = rng.integers(800, 2500, size=n_cells)
    p = theta @ beta
    counts = rng.multinomial(lib, p / p.sum(axis=1, keepdims=True))
    return counts, theta, beta


def matched_correlations(est, true):
    """Hungarian matching of columns by Pearson correlation; the matched correlations."""
    k = true.shape[1]
    c = np.corrcoef(est.T, true.T)[:k, k:]
    r, col = linear_sum_assignment(-c)
    return c[r, col]


def tiny_model(n_genes=12, n_topics=3, **kw):
    kw.setdefault("emb_dim", 4)
    kw.setdefault("hidden", 6)
    return etm.ETM(n_genes, n_topics, **kw)


# --------------------------------------------------------------------------------------
# the loss against independent formulas
# --------------------------------------------------------------------------------------
def test_mixture_loglik_matches_numpy():
    rng = np.random.default_rng(1)
    theta = rng.dirichlet(np.ones(3), size=7)
    beta = rng.dirichlet(np.ones(11), size=3)
    X = rng.poisson(3.0, size=(7, 11)).astype(float)
    expected = np.sum(X * np.log(theta @ beta))
    got = mixture_loglik(torch.tensor(theta), torch.tensor(beta), torch.tensor(X))
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)


def test_mixture_loglik_chunks_agree(monkeypatch):
    """Many small row chunks and one chunk give the same value and gradients (scipy reference value)."""
    import sccourse._etm_kernels as K

    rng = np.random.default_rng(2)
    theta = torch.tensor(rng.dirichlet(np.ones(4), size=50), requires_grad=True)
    beta = torch.tensor(rng.dirichlet(np.ones(30), size=4), requires_grad=True)
    X = torch.tensor(rng.poisson(2.0, size=(50, 30)).astype(float))
    monkeypatch.setattr(K, "_CHUNK_ELEMENTS", 30 * 3)  # 3 rows per chunk
    a = mixture_loglik(theta, beta, X)
    ga = torch.autograd.grad(a, (theta, beta))
    monkeypatch.setattr(K, "_CHUNK_ELEMENTS", 1 << 20)
    b = mixture_loglik(theta, beta, X)
    gb = torch.autograd.grad(b, (theta, beta))
    from scipy.stats import multinomial

    # the multinomial pmf without its count-only coefficient is exactly Σ x log p
    coef = np.array(
        [
            multinomial.logpmf(x, n=x.sum(), p=np.full(30, 1 / 30)) - x.sum() * np.log(1 / 30)
            for x in X.numpy()
        ]
    )
    ref = sum(
        multinomial.logpmf(x, n=x.sum(), p=p) for x, p in zip(X.numpy(), (theta @ beta).detach().numpy())
    )
    np.testing.assert_allclose(a.item(), ref - coef.sum(), rtol=1e-10)
    np.testing.assert_allclose(a.item(), b.item(), rtol=1e-12)
    for x, y in zip(ga, gb):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-10)


def test_sparse_loglik_and_encoder_gradient_match_the_dense_formulas():
    """The non-zero-only likelihood and the sparse first-layer weight gradient give the numbers of plain
    autograd on the dense formulas (float64)."""
    import scipy.sparse as sp

    from sccourse._etm_kernels import GeneLinear, SparseCounts, sparse_input_linear

    rng = np.random.default_rng(4)
    X = rng.poisson(0.4, size=(40, 25)).astype(float)  # ~67 % zeros
    X[3] = 0.0  # a zero-count cell
    sc = SparseCounts.from_scipy(sp.csr_matrix(X), device=torch.device("cpu"), dtype=torch.float64)
    theta = torch.tensor(rng.dirichlet(np.ones(4), size=40), requires_grad=True)
    beta = torch.tensor(rng.dirichlet(np.ones(25), size=4), requires_grad=True)
    got = mixture_loglik(theta, beta, torch.tensor(X), sc)
    g_got = torch.autograd.grad(got, (theta, beta))
    ref = (torch.tensor(X) * torch.log(theta @ beta)).sum()
    g_ref = torch.autograd.grad(ref, (theta, beta))
    np.testing.assert_allclose(got.item(), ref.item(), rtol=1e-12)
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    # the encoder's first layer
    data = etm.prepare(X, device="cpu", dtype=torch.float64)
    assert data.sparse is not None
    layer = GeneLinear(25, 6).double()
    w = torch.randn(40, 6, dtype=torch.float64)
    out = sparse_input_linear(data.sparse, layer)
    ref = data.normalized @ layer.weight + layer.bias  # the dense formula
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-14)
    gs = torch.autograd.grad((out * w).sum(), (layer.weight, layer.bias))
    gd = torch.autograd.grad((ref * w).sum(), (layer.weight, layer.bias))
    for a, b in zip(gs, gd):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    # a dense matrix (more than half non-zero) keeps the dense path
    assert etm.prepare(X + 1.0, device="cpu").sparse is None


def test_blocked_sparse_products_match_scipy(monkeypatch):
    """The bag products over several column blocks (forced by tiny block sizes) equal scipy's products."""
    import sccourse._etm_kernels as K
    import sccourse._sparse as S

    monkeypatch.setattr(S, "BAG_BLOCK_BYTES", 64)
    monkeypatch.setattr(S, "TAKE_BLOCK_BYTES", 64)
    rng = np.random.default_rng(8)
    X = sp.random(37, 53, density=0.2, random_state=9, format="csr", data_rvs=lambda n: rng.integers(1, 9, n))
    X = sp.csr_matrix(sp.diags((np.arange(37) != 5).astype(float)) @ X)  # cell 5 has no counts: an empty bag
    X.eliminate_zeros()
    X.sort_indices()  # the CSR order the products take values in
    sc = K.SparseCounts.from_scipy(X, device=torch.device("cpu"), dtype=torch.float64)
    Xn = sp.diags(1.0 / np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1)) @ X
    D = rng.normal(size=(53, 6))
    E = rng.normal(size=(37, 6))
    np.testing.assert_allclose(sc.input_mm(torch.tensor(D)).numpy(), Xn @ D, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sc.input_t_mm(torch.tensor(E)).numpy(), Xn.T @ E, rtol=1e-12, atol=1e-14)
    v = rng.normal(size=X.nnz)  # new values on the same pattern (CSR order)
    A = sp.csr_matrix((v, X.indices, X.indptr), shape=X.shape)
    np.testing.assert_allclose(sc.mm(torch.tensor(v), torch.tensor(D)).numpy(), A @ D, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        sc.mm_t(torch.tensor(v), torch.tensor(E)).numpy(), A.T @ E, rtol=1e-12, atol=1e-14
    )
    assert len(sc.pattern._blocks) == 3 and all(len(b.blocks) > 1 for b in sc.pattern._blocks.values())


def test_gene_linear_is_a_transposed_linear_layer():
    from sccourse._etm_kernels import GeneLinear

    torch.manual_seed(0)
    layer = GeneLinear(50, 7)
    assert layer.weight.shape == (50, 7) and layer.weight.abs().max() <= 1 / np.sqrt(50)
    x = torch.randn(4, 50)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight.t(), layer.bias))


def test_mask_dropout_keeps_each_entry_with_probability_one_minus_p():
    from sccourse._etm_kernels import MaskDropout

    drop = MaskDropout(0.3)
    x = torch.ones(400, 500)
    torch.manual_seed(1)
    y = drop(x)
    kept = (y != 0).double().mean().item()
    assert abs(kept - 0.7) < 5 * np.sqrt(0.7 * 0.3 / x.numel())  # binomial: 5 standard deviations
    np.testing.assert_allclose(y[y != 0].numpy(), 1 / 0.7, rtol=1e-6)  # inverted dropout keeps the mean
    torch.manual_seed(1)
    assert torch.equal(drop(x), y)  # same seed, same mask
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(MaskDropout(1.0)(x), torch.zeros_like(x))  # everything dropped, no division by zero


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 3, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(dim=1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_batch_bias_likelihood_matches_numpy():
    rng = np.random.default_rng(3)
    model = tiny_model(n_genes=10, n_topics=3, n_batches=2).double()
    with torch.no_grad():
        model.batch_bias.copy_(torch.tensor(rng.normal(size=(2, 10))))
    theta = rng.dirichlet(np.ones(3), size=6)
    X = rng.poisson(4.0, size=(6, 10)).astype(float)
    batch = np.array([0, 1, 1, 0, 1, 0])
    got = model.log_likelihood(torch.tensor(theta), torch.tensor(X), torch.tensor(batch)).item()
    beta = softmax(model.alpha.detach().numpy() @ model.rho.detach().numpy().T, axis=1)
    p = (theta @ beta) * np.exp(model.batch_bias.detach().numpy()[batch])
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.sum(X * np.log(p)), rtol=1e-12)


@pytest.mark.parametrize(("n_batches", "rate"), [(1, 3.0), (2, 3.0), (2, 0.4)])
def test_logit_mixing_likelihood_matches_scipy(n_batches, rate):
    """mixing="logit": log p(x_n) = Σ_g x_ng log softmax_g(θ_n α ρᵀ + b_{s_n}) (rate 0.4: the sparse path)."""
    rng = np.random.default_rng(8)
    model = tiny_model(n_genes=10, n_topics=3, n_batches=n_batches, mixing="logit").double()
    if n_batches > 1:
        with torch.no_grad():
            model.batch_bias.copy_(torch.tensor(rng.normal(size=(n_batches, 10))))
    theta = rng.dirichlet(np.ones(3), size=9)
    X = rng.poisson(rate, size=(9, 10)).astype(float)
    X[4] = 0
    batch = np.arange(9) % n_batches
    data = etm.prepare(X, batch=batch, device="cpu", dtype=torch.float64)
    assert (data.sparse is not None) == (rate < 1.0)
    got = model.log_likelihood(torch.tensor(theta), data.counts, data.batch, sparse=data.sparse).item()
    logits = theta @ model.alpha.detach().numpy() @ model.rho.detach().numpy().T
    if n_batches > 1:
        logits = logits + model.batch_bias.detach().numpy()[batch]
    np.testing.assert_allclose(got, np.sum(X * log_softmax(logits, axis=1)), rtol=1e-12)


def test_gradcheck_logit_loglik():
    g = torch.Generator().manual_seed(9)
    theta = torch.rand(6, 3, generator=g, dtype=torch.float64).requires_grad_()
    logits = torch.randn(3, 8, generator=g, dtype=torch.float64).requires_grad_()
    bias = torch.randn(2, 8, generator=g, dtype=torch.float64).requires_grad_()
    batch = torch.tensor([0, 1, 1, 0, 1, 0])
    X = torch.poisson(torch.full((6, 8), 2.0, dtype=torch.float64), generator=g)
    assert torch.autograd.gradcheck(
        lambda t, b, c: logit_loglik(t, b, X, bias=c, batch=batch), (theta, logits, bias), eps=1e-6, atol=1e-5
    )
    with pytest.raises(ValueError, match="batch code"):
        logit_loglik(theta, logits, X, bias=bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (2000.0, 0.0), (1.0, -1000.0)])
def test_logit_loglik_large_logits(dtype, scale, offset):
    """Logits beyond exp's range (scale 2000: overflow; offset −1000: every exp underflows) take the
    max-shifted path: same value and gradient as scipy's log_softmax and its analytic gradient."""
    rng = np.random.default_rng(12)
    theta = rng.dirichlet(np.full(3, 0.5), size=7)
    logits = scale * rng.normal(size=(3, 9)) + offset
    X = rng.poisson(2.0, size=(7, 9)).astype(float)
    t = torch.tensor(theta, dtype=dtype, requires_grad=True)
    b = torch.tensor(logits, dtype=dtype, requires_grad=True)
    ll = logit_loglik(t, b, torch.tensor(X, dtype=dtype))
    ll.backward()
    eta = theta @ logits
    want = np.sum(X * log_softmax(eta, axis=1))
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(ll.item(), want, rtol=rtol)
    resid = X - X.sum(axis=1, keepdims=True) * softmax(eta, axis=1)  # ∂/∂η
    # η itself is only known to (machine eps x |η|): the softmax inherits that absolute error
    size = scale + abs(offset)
    np.testing.assert_allclose(b.grad.numpy(), theta.T @ resid, rtol=rtol, atol=rtol * size * 10)
    np.testing.assert_allclose(t.grad.numpy(), resid @ logits.T, rtol=rtol, atol=rtol * size * 100)


def test_beta_is_softmax_of_embeddings():
    model = tiny_model()
    w = etm.topic_gene_weights(model)
    expected = softmax(model.alpha.detach().numpy() @ model.rho.detach().numpy().T, axis=1).T
    np.testing.assert_allclose(w.to_numpy(), expected, rtol=1e-5)
    assert list(w.columns) == [0, 1, 2] and w.index[0] == "gene_0"


# --------------------------------------------------------------------------------------
# gradients: autograd (with the hand-written backward) vs finite differences
# --------------------------------------------------------------------------------------
def test_gradcheck_mixture_loglik():
    g = torch.Generator().manual_seed(4)
    theta = torch.rand(5, 3, generator=g, dtype=torch.float64).add_(0.1).requires_grad_()
    beta = torch.rand(3, 7, generator=g, dtype=torch.float64).add_(0.1).requires_grad_()
    X = torch.poisson(torch.full((5, 7), 3.0, dtype=torch.float64), generator=g)
    assert torch.autograd.gradcheck(lambda t, b: mixture_loglik(t, b, X), (theta, beta), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    ("n_batches", "rate", "mixing"),
    [
        (1, 3.0, "probability"),
        (2, 3.0, "probability"),
        (1, 0.5, "probability"),
        (2, 0.1, "probability"),
        (2, 3.0, "logit"),
        (2, 0.5, "logit"),
    ],
)
def test_gradcheck_full_loss(n_batches, rate, mixing):
    """Gradient of nll + 0.7 kl w.r.t. encoder and decoder parameters, fixed reparameterisation noise
    (rate 0.5: most counts are zero, so the sparse encoder is the one checked; rate 0.1: under 15 % non-zero,
    the probability-space likelihood runs on the non-zeros too)."""
    rng = np.random.default_rng(5)
    X = rng.poisson(rate, size=(8, 12))
    X[2] = 0  # a zero-count cell takes part too
    model = tiny_model(dropout=0.0, n_batches=n_batches, mixing=mixing, seed=1).double()
    if n_batches > 1:
        with torch.no_grad():
            model.batch_bias.normal_()
    model.train()
    data = etm.prepare(X, batch=[0, 1] * 4 if n_batches > 1 else None, device="cpu", dtype=torch.float64)
    noise = torch.tensor(rng.normal(size=(8, 3)))
    assert (data.sparse is not None) == (rate < 1.0)
    if rate < 0.2:
        assert data.sparse.density <= data.sparse.LIKELIHOOD_MAX_DENSITY
    names = ["alpha", "rho", "mu.weight", "logvar.bias", "encoder.0.weight", "encoder.0.bias"]
    names += ["batch_bias"] if n_batches > 1 else []
    base = dict(model.named_parameters())
    inputs = tuple(base[n].detach().clone().requires_grad_() for n in names)

    def loss(*params):
        p = dict(base)
        p.update(zip(names, params))
        nll, kl = _call_elbo(model, p, data, noise)
        return nll + 0.7 * kl

    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-4, rtol=1e-4)


def _call_elbo(model, params, data, noise):
    class _Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, d, eps):
            return self.m.elbo_terms(d, noise=eps)

    wrapped = _Wrap(model)
    return torch.func.functional_call(wrapped, {f"m.{k}": v for k, v in params.items()}, (data, noise))


# --------------------------------------------------------------------------------------
# training on planted topics
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted_fit():
    counts, theta, beta = planted_topics()
    model = etm.ETM(counts.shape[1], 4, emb_dim=32, hidden=64, seed=0)
    hist = etm.train_etm(
        model,
        sp.csr_matrix(counts),
        epochs=250,
        lr=1e-2,
        kl_warmup=60,
        eval_every=100,
        eval_fn=lambda th: float(th.shape[1]),
        device="cpu",
        seed=0,
        progress=False,
    )
    return counts, theta, beta, model, hist


def test_elbo_decreases(planted_fit):
    counts, theta, beta, model, hist = planted_fit
    assert list(hist.columns) == ["epoch", "neg_elbo", "nll", "kl", "kl_weight", "loss", "time_s", "ari"]
    assert hist["epoch"].tolist() == list(range(1, 251))
    first, last = hist["neg_elbo"].iloc[:10].mean(), hist["neg_elbo"].iloc[-10:].mean()
    assert last < first
    # the fitted nll closes most of the gap between a one-topic fit and the true parameters
    lib = counts.sum(axis=1)
    nll_true = -np.sum(counts * np.log(theta @ beta)) / len(counts)
    pooled = counts.sum(axis=0) / counts.sum()
    nll_one_topic = -np.sum(counts * np.log(pooled)) / len(counts)
    assert nll_true < nll_one_topic
    data = etm.prepare(counts, device="cpu")
    with torch.no_grad():
        model.eval()
        nll_fit, _ = model.elbo_terms(data, sample=False)
    gap = (nll_one_topic - nll_fit.item()) / (nll_one_topic - nll_true)
    assert gap > 0.9, gap
    # evaluation every 100 epochs and at the last
    assert hist["ari"].notna().sum() == 3 and np.all(hist["ari"].dropna() == 4)
    assert np.all(np.diff(hist["kl_weight"].iloc[:60]) > 0) and hist["kl_weight"].iloc[-1] == 1.0
    assert lib.min() > 0


def test_recovers_planted_topics(planted_fit):
    counts, theta, beta, model, _hist = planted_fit
    est_beta = etm.topic_gene_weights(model).to_numpy()
    corr = matched_correlations(est_beta, beta.T)
    assert corr.min() >= 0.9, corr
    est_theta = etm.get_theta(model, counts)
    assert est_theta.shape == theta.shape
    np.testing.assert_allclose(est_theta.sum(axis=1), 1.0, rtol=1e-5)
    assert matched_correlations(est_theta, theta).min() >= 0.9


def test_logit_mixing_recovers_planted_topics():
    """Counts drawn from the logit-space model (x_n ~ Multinomial(lib_n, softmax(θ_n B))): a fit with
    mixing="logit" finds each topic's gene distribution softmax(B_k) and the cells' proportions."""
    rng = np.random.default_rng(11)
    n_cells, n_genes, k = 500, 150, 4
    block = n_genes // k
    logits = rng.normal(0.0, 0.3, size=(k, n_genes))
    for t in range(k):
        logits[t, t * block : (t + 1) * block] += rng.gamma(4.0, 0.5, size=block)
    theta = rng.dirichlet(np.full(k, 0.2), size=n_cells)
    counts = rng.multinomial(rng.integers(800, 2500, size=n_cells), softmax(theta @ logits, axis=1))
    model = etm.ETM(n_genes, k, emb_dim=32, hidden=64, mixing="logit", seed=0)
    hist = etm.train_etm(
        model, counts, epochs=250, lr=1e-2, kl_warmup=60, device="cpu", seed=0, progress=False
    )
    assert hist["neg_elbo"].iloc[-10:].mean() < hist["neg_elbo"].iloc[:10].mean()
    corr = matched_correlations(etm.topic_gene_weights(model).to_numpy(), softmax(logits, axis=1).T)
    assert corr.min() >= 0.9, corr
    assert matched_correlations(etm.get_theta(model, counts), theta).min() >= 0.9


def test_minibatch_training_reduces_loss():
    counts, _, _ = planted_topics(n_cells=300, n_genes=60, n_topics=3, seed=1)
    model = etm.ETM(60, 3, emb_dim=16, hidden=32)
    hist = etm.train_etm(
        model, counts, epochs=12, batch_size=100, lr=1e-2, device="cpu", seed=0, progress=False
    )
    assert hist["nll"].iloc[-3:].mean() < hist["nll"].iloc[:3].mean()


@pytest.mark.parametrize("sparse", [False, True])
def test_same_seed_same_numbers_on_cpu(sparse):
    counts, _, _ = planted_topics(n_cells=120, n_genes=40, n_topics=3, seed=2)
    if sparse:  # thin the counts until most are zero: the non-zero-only kernels are the ones run
        counts = counts * (np.random.default_rng(0).random(counts.shape) < 0.3)
    assert (etm.prepare(counts, device="cpu").sparse is not None) == sparse
    runs = []
    for seed in (3, 3, 4):
        model = etm.ETM(40, 3, emb_dim=8, hidden=16, seed=seed)
        hist = etm.train_etm(model, counts, epochs=15, device="cpu", seed=seed, progress=False)
        runs.append((hist["neg_elbo"].to_numpy(), etm.get_theta(model, counts)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][1], runs[2][1])


def test_kl_schedule():
    assert etm.kl_schedule(1, warmup=4) == 0.25
    assert etm.kl_schedule(10, warmup=4, max_weight=0.5) == 0.5
    assert etm.kl_schedule(1, warmup=0, max_weight=0.3) == 0.3


# --------------------------------------------------------------------------------------
# interpretation helpers
# --------------------------------------------------------------------------------------
def test_top_genes_matches_pandas_nlargest():
    rng = np.random.default_rng(6)
    w = pd.DataFrame(rng.random((20, 3)), index=[f"g{i}" for i in range(20)])
    top = etm.top_genes(w, n=5)
    assert top.shape == (5, 3)
    for k in w.columns:
        assert top[k].tolist() == w[k].nlargest(5).index.tolist()


def test_top_genes_rejects_bad_input():
    w = pd.DataFrame(np.ones((3, 2)))
    with pytest.raises(ValueError, match="larger than the number of genes"):
        etm.top_genes(w, n=4)
    with pytest.raises(TypeError):
        etm.top_genes(np.ones((3, 2)))


# --------------------------------------------------------------------------------------
# AnnData wrapper
# --------------------------------------------------------------------------------------
def test_fit_etm_writes_anndata(tmp_path):
    adata = datasets.synthetic(n_cells=200, n_genes=60, n_types=3, seed=0)
    adata.obs["batch"] = np.where(np.arange(200) % 2 == 0, "a", "b")
    model, hist = etm.fit_etm(
        adata, 3, batch_key="batch", emb_dim=8, hidden=16, epochs=20, device="cpu", progress=False
    )
    assert model.n_batches == 2 and model.batch_bias is not None
    theta = adata.obsm["X_etm"]
    assert theta.shape == (200, 3)
    np.testing.assert_allclose(theta.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(softmax(adata.obsm["X_etm_delta"], axis=1), theta, rtol=1e-4, atol=1e-6)
    assert adata.varm["etm_beta"].shape == (60, 3)
    np.testing.assert_allclose(adata.varm["etm_beta"].sum(axis=0), 1.0, rtol=1e-5)
    assert etm.topic_gene_weights(model).index.tolist() == list(adata.var_names)
    assert adata.uns["etm"]["n_batches"] == 2 and len(hist) == 20
    assert adata.uns["etm"]["mixing"] == "probability"
    adata.write_h5ad(tmp_path / "fit.h5ad")  # everything written can be saved


def test_fit_etm_leaves_anndata_untouched_on_bad_input():
    adata = datasets.synthetic(n_cells=50, n_genes=20, n_types=2, seed=0)
    adata.X = adata.X.astype(np.float32)
    adata.X[0, 0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        etm.fit_etm(adata, 2, epochs=2, device="cpu", progress=False)
    assert "X_etm" not in adata.obsm and "etm_beta" not in adata.varm


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.array([[1.0, -2.0], [3.0, 4.0]]), "negative"),
        (np.array([[1.0, np.nan], [3.0, 4.0]]), "NaN"),
        (np.ones(5), "2-D"),
        (np.ones((1, 5)), "at least 2 cells"),
        (np.log1p(np.array([[1.0, 2.0], [3.0, 4.0]])), "integer counts"),
        (np.array([[1.0, np.inf], [3.0, 4.0]]), "inf"),
    ],
)
def test_bad_counts_raise(X, match):
    with pytest.raises(ValueError, match=match):
        etm.prepare(X, device="cpu")


def test_gene_count_mismatch_and_bad_options():
    model = tiny_model(n_genes=12)
    with pytest.raises(ValueError, match="12"):
        etm.get_theta(model, np.ones((4, 10)))
    with pytest.raises(ValueError, match="epochs"):
        etm.train_etm(model, np.ones((4, 12)), epochs=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="lr"):
        etm.train_etm(model, np.ones((4, 12)), lr=-1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="n_topics"):
        etm.ETM(10, 0)
    with pytest.raises(ValueError, match="mixing must be one of"):
        etm.ETM(10, 2, mixing="log")
    with pytest.raises(ValueError, match="batch has 3 entries"):
        etm.prepare(np.ones((4, 12)), batch=["a", "b", "c"], device="cpu")
    two = tiny_model(n_genes=12, n_batches=2)
    with pytest.raises(ValueError, match="2 batches"):
        etm.get_theta(two, np.ones((4, 12)))


def test_zero_count_cells_are_handled():
    counts, _, _ = planted_topics(n_cells=100, n_genes=30, n_topics=2, seed=3)
    counts[:5] = 0
    data = etm.prepare(counts, device="cpu")
    assert torch.all(data.normalized[:5] == 0) and torch.isfinite(data.normalized).all()
    np.testing.assert_allclose(data.normalized[5:].sum(dim=1).numpy(), 1.0, rtol=1e-6)
    model = etm.ETM(30, 2, emb_dim=8, hidden=16)
    hist = etm.train_etm(model, counts, epochs=10, device="cpu", progress=False)
    assert np.isfinite(hist[["neg_elbo", "nll", "kl"]].to_numpy()).all()
    theta = etm.get_theta(model, counts)
    assert np.isfinite(theta).all()
    np.testing.assert_allclose(theta.sum(axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------------------
# batches: labels matched by name
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_lane_fit():
    """A model fitted on two lanes (shared by the tests below, which only read it)."""
    adata = datasets.synthetic(n_cells=120, n_genes=30, n_types=2, seed=5)
    adata.obs["lane"] = np.where(np.arange(120) % 3 == 0, "lane2", "lane1")
    model, _ = etm.fit_etm(
        adata, 2, batch_key="lane", emb_dim=6, hidden=12, epochs=15, device="cpu", progress=False
    )
    return adata, model


def test_model_keeps_its_batch_labels_and_takes_cells_of_one_batch(two_lane_fit):
    """A model trained on two lanes scores the cells of one lane: θ as for those rows of the full data, and the
    per-cell ELBO terms (independent per cell in evaluation mode) of the two lanes add up to the full data's."""
    adata, model = two_lane_fit
    assert model.batch_categories_ == ("lane1", "lane2")
    np.testing.assert_array_equal(adata.uns["etm"]["batch_categories"], ["lane1", "lane2"])
    full = etm.get_theta(model, adata, batch_key="lane")
    one = (adata.obs["lane"] == "lane2").to_numpy()
    sub = adata[one].copy()
    np.testing.assert_allclose(etm.get_theta(model, sub, batch_key="lane"), full[one], rtol=1e-5, atol=1e-7)
    X = adata.X.toarray()
    lane = adata.obs["lane"].to_numpy()
    parts = [
        etm.final_neg_elbo(model, X[lane == b], batch=lane[lane == b]) * (lane == b).sum()
        for b in ("lane1", "lane2")
    ]
    total = etm.final_neg_elbo(model, X, batch=lane) * len(lane)
    np.testing.assert_allclose(sum(parts), total, rtol=1e-5)


def test_unknown_batch_label_is_refused(two_lane_fit):
    adata, model = two_lane_fit
    renamed = np.where(adata.obs["lane"] == "lane2", "lane3", "lane1")  # two labels, one never seen
    with pytest.raises(ValueError, match=r"lane3.*lane1.*lane2"):
        etm.get_theta(model, adata.X, batch=renamed)
    with pytest.raises(ValueError, match="2 batches"):
        etm.get_theta(model, adata.X)  # no batch at all


def test_batch_labels_survive_a_saved_and_reloaded_state_dict(two_lane_fit, tmp_path):
    """torch.save(model.state_dict()) then torch.load(weights_only=True) into a fresh ETM: the batch labels come
    back (get_extra_state), so cells of one lane get the trained model's θ and a label never seen is refused
    by name, as before saving (a fresh model alone knows no labels and takes neither)."""
    adata, model = two_lane_fit
    path = tmp_path / "etm.pt"
    torch.save(model.state_dict(), path)
    fresh = etm.ETM(adata.n_vars, 2, emb_dim=6, hidden=12, n_batches=2, seed=99)
    assert fresh.batch_categories_ is None
    lane2 = adata[(adata.obs["lane"] == "lane2").to_numpy()].copy()
    with pytest.raises(
        ValueError, match="2 batches"
    ):  # without the labels, one lane's cells cannot be placed
        etm.get_theta(fresh, lane2, batch_key="lane")
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.batch_categories_ == ("lane1", "lane2")
    expected = etm.get_theta(model, lane2, batch_key="lane")
    np.testing.assert_array_equal(etm.get_theta(fresh, lane2, batch_key="lane"), expected)
    np.testing.assert_array_equal(
        etm.final_neg_elbo(fresh, lane2, batch_key="lane"), etm.final_neg_elbo(model, lane2, batch_key="lane")
    )
    renamed = np.where(adata.obs["lane"] == "lane2", "lane3", "lane1")
    with pytest.raises(ValueError, match=r"lane3.*lane1.*lane2"):
        etm.get_theta(fresh, adata.X, batch=renamed)
    # a state saved before the labels were part of it (no extra state) still loads strictly, keeping the
    # model's own labels; a state with labels of the wrong number is refused
    old = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    named = etm.ETM(adata.n_vars, 2, emb_dim=6, hidden=12, n_batches=2, batch_categories=["lane1", "lane2"])
    named.load_state_dict(old)
    assert named.batch_categories_ == ("lane1", "lane2")
    np.testing.assert_array_equal(etm.get_theta(named, lane2, batch_key="lane"), expected)
    bad = dict(model.state_dict(), _extra_state={"version": 1, "batch_categories": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="n_batches"):
        fresh.load_state_dict(bad)


def test_batch_codes_follow_the_labels_not_their_sort_order():
    """The likelihood of cells labelled "b" uses the bias of the model's batch "b" (numpy reference), whatever
    other labels the new data holds."""
    rng = np.random.default_rng(21)
    model = tiny_model(n_genes=10, n_topics=3, n_batches=2, batch_categories=["b", "a"]).double()
    with torch.no_grad():
        model.batch_bias.copy_(torch.tensor(rng.normal(size=(2, 10))))
    X = rng.poisson(4.0, size=(6, 10))
    theta = etm.get_theta(model, X, batch=["a"] * 6)
    beta = softmax(model.alpha.detach().numpy() @ model.rho.detach().numpy().T, axis=1)

    def nll(bias_row):
        p = (theta @ beta) * np.exp(model.batch_bias.detach().numpy()[bias_row])
        p /= p.sum(axis=1, keepdims=True)
        return -np.sum(X * np.log(p)) / len(X)

    diff = etm.final_neg_elbo(model, X, batch=["a"] * 6) - etm.final_neg_elbo(model, X, batch=["b"] * 6)
    np.testing.assert_allclose(diff, nll(1) - nll(0), rtol=1e-8)
    with pytest.raises(ValueError, match="n_batches"):
        tiny_model(n_batches=2, batch_categories=["a", "b", "c"])


def test_training_adopts_the_batch_labels_of_its_data():
    counts, _, _ = planted_topics(n_cells=60, n_genes=20, n_topics=2, seed=4)
    model = tiny_model(n_genes=20, n_topics=2, n_batches=2)
    assert model.batch_categories_ is None
    etm.train_etm(model, counts, batch=["y", "x"] * 30, epochs=2, device="cpu", progress=False)
    assert model.batch_categories_ == ("x", "y")
    assert etm.get_theta(model, counts[:3], batch=["y"] * 3).shape == (3, 2)


# --------------------------------------------------------------------------------------
# counts only
# --------------------------------------------------------------------------------------
def test_log_normalised_data_is_refused_everywhere_naming_the_slot():
    adata = datasets.synthetic(n_cells=40, n_genes=20, n_types=2, seed=6)
    adata.layers["counts"] = adata.X.copy()
    adata.X = np.log1p(adata.X.toarray())
    model = tiny_model(n_genes=20, n_topics=2)
    with pytest.raises(ValueError, match=r"adata\.X must hold raw integer counts"):
        etm.prepare(adata, device="cpu")
    adata.layers["lognorm"] = adata.X.copy()
    with pytest.raises(ValueError, match=r"adata\.layers\['lognorm'\]"):
        etm.prepare(adata, layer="lognorm", device="cpu")
    with pytest.raises(ValueError, match="integer counts"):
        etm.get_theta(model, adata.X)
    with pytest.raises(ValueError, match="adata_or_counts must hold raw integer counts"):
        etm.train_etm(model, adata.X, epochs=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="integer counts"):
        etm.fit_etm(adata, 2, epochs=1, device="cpu", progress=False)
    assert "X_etm" not in adata.obsm and "etm" not in adata.uns
    assert etm.prepare(adata, layer="counts", device="cpu").n_cells == 40  # the raw counts are fine


def test_single_cell_inference_matches_the_full_data():
    counts, _, _ = planted_topics(n_cells=50, n_genes=20, n_topics=2, seed=7)
    model = tiny_model(n_genes=20, n_topics=2)
    etm.train_etm(model, counts, epochs=3, device="cpu", progress=False)
    full = etm.get_theta(model, counts)
    np.testing.assert_allclose(etm.get_theta(model, counts[4:5]), full[4:5], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="at least 2 cells"):
        etm.train_etm(model, counts[:1], epochs=1, device="cpu", progress=False)


# --------------------------------------------------------------------------------------
# seeds: local randomness only
# --------------------------------------------------------------------------------------
def _global_states():
    import random

    return torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002


def test_library_leaves_the_global_random_state_alone():
    import random

    torch.manual_seed(123)
    np.random.seed(7)  # noqa: NPY002
    random.seed(5)
    before = _global_states()
    counts, _, _ = planted_topics(n_cells=60, n_genes=20, n_topics=2, seed=8)
    model = tiny_model(n_genes=20, n_topics=2, seed=3)
    etm.train_etm(model, counts, epochs=3, batch_size=16, device="cpu", seed=4, progress=False)
    etm.get_theta(model, counts)
    adata = datasets.synthetic(n_cells=40, n_genes=20, n_types=2, seed=0)
    etm.fit_etm(adata, 2, emb_dim=4, hidden=6, epochs=2, n_init=2, device="cpu", progress=False)
    after = _global_states()
    assert torch.equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_same_seed_same_numbers_whatever_the_global_state():
    counts, _, _ = planted_topics(n_cells=60, n_genes=20, n_topics=2, seed=9)
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        model = tiny_model(n_genes=20, n_topics=2, seed=5)
        hist = etm.train_etm(model, counts, epochs=4, batch_size=25, device="cpu", seed=6, progress=False)
        runs.append((hist["neg_elbo"].to_numpy(), etm.get_theta(model, counts)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_restarts_are_independent_runs_from_their_own_seeds():
    """fit_etm's restarts are the runs of ETM(seed=r) + its start (restart 0 random, the others k-means topics) +
    train_etm(seed=r) for r in restart_seeds: distinct seeds, distinct results, the best deterministic ELBO kept."""
    from sccourse.etm._train import _restart_init

    adata = datasets.synthetic(n_cells=60, n_genes=20, n_types=2, seed=3)
    opts = dict(emb_dim=4, hidden=6, dropout=0.1)
    model, _ = etm.fit_etm(adata, 2, epochs=4, seed=11, n_init=3, device="cpu", progress=False, **opts)
    seeds = etm.restart_seeds(11, 3)
    assert seeds[0] == 11 and len(set(seeds)) == 3
    data = etm.prepare(adata, device="cpu")
    alone = []
    for i, r in enumerate(seeds):
        m = etm.ETM(20, 2, seed=r, **opts)
        _restart_init(m, data, i, r)
        etm.train_etm(m, data, epochs=4, seed=r, device="cpu", progress=False)
        alone.append(etm.final_neg_elbo(m, data))
    restarts = adata.uns["etm"]["restart_neg_elbo"]
    np.testing.assert_allclose(restarts, alone, rtol=1e-6)
    assert len(set(np.round(restarts, 6))) == 3
    assert adata.uns["etm"]["chosen_seed"] == seeds[int(np.argmin(alone))]
    np.testing.assert_allclose(etm.final_neg_elbo(model, data), min(alone), rtol=1e-6)


# --------------------------------------------------------------------------------------
# AnnData keys and progress
# --------------------------------------------------------------------------------------
def test_fit_etm_writes_under_the_given_keys():
    adata = datasets.synthetic(n_cells=40, n_genes=20, n_types=2, seed=0)
    etm.fit_etm(
        adata,
        2,
        emb_dim=4,
        hidden=6,
        epochs=2,
        device="cpu",
        progress=False,
        key_added="theta",
        beta_key_added="beta",
        uns_key_added="etm_run",
    )
    assert set(adata.obsm) == {"theta", "theta_delta"} and set(adata.varm) == {"true_mean_profile", "beta"}
    assert "etm_run" in adata.uns and "etm" not in adata.uns
    for bad in ({"key_added": ""}, {"beta_key_added": 3}, {"uns_key_added": None}):
        fresh = datasets.synthetic(n_cells=40, n_genes=20, n_types=2, seed=0)
        with pytest.raises((TypeError, ValueError), match=next(iter(bad))):
            etm.fit_etm(fresh, 2, epochs=1, device="cpu", progress=False, **bad)
        assert (
            not fresh.obsm and list(fresh.varm) == ["true_mean_profile"] and list(fresh.uns) == ["synthetic"]
        )


def test_no_progress_bar_by_default_off_a_terminal(capfd):
    counts, _, _ = planted_topics(n_cells=40, n_genes=20, n_topics=2, seed=10)
    etm.train_etm(tiny_model(n_genes=20, n_topics=2), counts, epochs=2, device="cpu")
    assert capfd.readouterr().err == ""
    etm.train_etm(tiny_model(n_genes=20, n_topics=2), counts, epochs=2, device="cpu", progress=True)
    assert "ETM" in capfd.readouterr().err
    with pytest.raises(TypeError, match="progress"):
        etm.train_etm(tiny_model(n_genes=20, n_topics=2), counts, epochs=2, device="cpu", progress="yes")


def test_public_names_are_reexported_from_the_subpackage():
    import sccourse.etm as package

    for name in package.__all__:
        obj = getattr(package, name)
        assert getattr(obj, "__module__", "sccourse.etm").startswith("sccourse."), name
    assert {"ETM", "prepare", "train_step", "kl_schedule", "get_theta", "fit_etm"} <= set(package.__all__)


# --------------------------------------------------------------------------------------
# GPU: same numbers as the CPU
# --------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("mixing", etm.MIXINGS)
@pytest.mark.parametrize("rate", [3.0, 0.5])
def test_cuda_matches_cpu(rate, mixing):
    rng = np.random.default_rng(7)
    X = rng.poisson(rate, size=(40, 25))  # rate 0.5: mostly zeros, the sparse kernels
    noise = torch.tensor(rng.normal(size=(40, 3)))
    out = {}
    for dev in ("cpu", "cuda"):
        model = tiny_model(n_genes=25, dropout=0.0, mixing=mixing, seed=2).double().to(dev)
        model.train()
        data = etm.prepare(X, device=dev, dtype=torch.float64)
        nll, kl = model.elbo_terms(data, noise=noise.to(dev))
        (nll + kl).backward()
        out[dev] = (
            nll.item(),
            kl.item(),
            model.alpha.grad.cpu().numpy(),
            model.rho.grad.cpu().numpy(),
            model.encoder[0].weight.grad.cpu().numpy(),
            etm.get_theta(model, X),
        )
    for a, b in zip(out["cpu"], out["cuda"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------
def test_topic_gene_heatmap_shows_each_topics_top_genes():
    from sccourse import plotting

    rng = np.random.default_rng(8)
    w = pd.DataFrame(rng.dirichlet(np.ones(30), size=4).T, index=[f"g{i}" for i in range(30)])
    fig = plotting.topic_gene_heatmap(w, n_top=3, vmax=0.2)
    shown = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    expected = []
    for k in w.columns:
        expected += [g for g in w[k].nlargest(3).index if g not in expected]
    assert shown == expected
    mesh = fig.axes[0].collections[0]
    assert mesh.get_clim() == (0.0, 0.2)


def test_topic_clustermap_and_tsne_pair():
    from sccourse import plotting

    rng = np.random.default_rng(9)
    theta = rng.dirichlet(np.ones(4), size=60)
    labels = np.repeat(["a", "b", "c"], 20)
    fig = plotting.topic_clustermap(theta, labels, title="t")
    assert any(ax.get_xlabel() == "topic" for ax in fig.axes)
    heat = next(ax for ax in fig.axes if ax.get_xlabel() == "topic")
    assert heat.collections[0].get_clim() == (0.0, 1.0)  # proportions on a fixed 0-1 scale
    cbar = next(ax for ax in fig.axes if ax.get_xlabel().startswith("θ"))
    # a horizontal colourbar whose label sits above its tick labels, not over them
    assert cbar.xaxis.get_label_position() == "top" and cbar.xaxis.get_ticks_position() == "top"
    fig.canvas.draw()
    label_box = cbar.xaxis.label.get_window_extent()
    assert all(label_box.y0 >= t.get_window_extent().y1 - 1 for t in cbar.get_xticklabels() if t.get_text())
    legend = " ".join(t.get_text() for t in heat.get_legend().get_texts())
    assert all(c in legend for c in ("a (20)", "b (20)", "c (20)"))
    fig2 = plotting.tsne_side_by_side({"one": theta, "two": theta[:, :2]}, labels, perplexity=10)
    assert [ax.get_title() for ax in fig2.axes] == ["one", "two"]
    with pytest.raises(ValueError, match="same number of cells"):
        plotting.tsne_side_by_side({"one": theta, "two": theta[:10]}, labels)


@pytest.mark.slow  # the first Leiden clustering in a process compiles umap's numba kernels (~5-12 s)
def test_ari_over_seeds_finds_planted_cell_types():
    adata = datasets.synthetic(n_cells=240, n_genes=80, n_types=3, n_markers=12, fold_change=8.0, seed=1)
    labels = adata.obs["cell_type"].to_numpy()
    table = etm.ari_over_seeds(
        adata,
        labels,
        n_topics=3,
        seeds=(0, 1),
        epochs=40,
        lr=1e-2,
        kl_warmup=10,
        emb_dim=16,
        hidden=32,
        device="cpu",
    )
    assert table["seed"].tolist() == [0, 1]
    assert list(table.columns) == ["seed", "ari_theta", "ari_delta", "neg_elbo", "time_s"]
    assert (table["ari_theta"] > 0.5).all(), table
    with pytest.raises(ValueError, match="labels"):
        etm.ari_over_seeds(adata, labels[:10], epochs=1, device="cpu")


def test_topic_enrichment_matches_a_pandas_groupby():
    rng = np.random.default_rng(10)
    theta = rng.dirichlet(np.ones(5), size=40)
    labels = np.array(["b", "a", "c", "a"] * 10, dtype=object)
    labels[[3, 7]] = None  # unlabelled cells count as "other cells" for every type
    table = etm.topic_enrichment(theta, labels)
    assert table.index.tolist() == ["a", "b", "c"] and table.shape == (3, 5)
    df = pd.DataFrame(theta)
    for t in ["a", "b", "c"]:
        inside = np.array([lab == t for lab in labels])
        expected = df[inside].mean() - df[~inside].mean()
        np.testing.assert_allclose(table.loc[t].to_numpy(), expected.to_numpy(), rtol=1e-12, atol=1e-15)
    assert int(table.loc["a"].idxmax()) == int(np.argmax(table.loc["a"].to_numpy()))
    with pytest.raises(ValueError, match="labels has"):
        etm.topic_enrichment(theta, labels[:5])
    with pytest.raises(ValueError, match="2-D"):
        etm.topic_enrichment(theta[0], labels[:1])


def test_resolution_scan_scores_every_resolution_in_order():
    from sccourse.metrics import evaluate_ari

    adata = datasets.synthetic(n_cells=150, n_genes=60, n_types=3, fold_change=8.0, seed=2)
    emb = np.log1p(adata.X.toarray())
    labels = adata.obs["cell_type"].to_numpy()
    grid = [1.5, 0.05, 0.4]
    scan = etm.resolution_scan(emb, labels, grid, n_neighbors=10)
    assert scan.index.tolist() == grid and scan.name == "ari"
    expected = [evaluate_ari(emb, labels, resolution=r, n_neighbors=10) for r in grid]
    np.testing.assert_allclose(scan.to_numpy(), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="positive"):
        etm.resolution_scan(emb, labels, [0.1, -1.0])
    with pytest.raises(ValueError, match="at least one"):
        etm.resolution_scan(emb, labels, [])


def test_restart_starts_are_independent_data_driven_and_deterministic():
    """Restart 0 keeps the model's random start; a further restart starts its topics at k-means centroids of the
    cells: β then correlates with every planted topic (independent ground truth, Hungarian matching) where the
    random start does not; the restarts' seeds are independent (no overlap between seeds 3 and 4) and the same seed
    gives the same start."""
    from sccourse.etm._train import _restart_init

    counts, _, beta = planted_topics()
    data = etm.prepare(counts, device="cpu")
    seeds = etm.restart_seeds(3, 3)
    assert seeds[0] == 3 and len(set(seeds)) == 3 and not set(seeds) & set(etm.restart_seeds(4, 3))

    def start(index, seed):
        model = etm.ETM(150, 4, emb_dim=32, hidden=64, seed=seed)
        _restart_init(model, data, index, seed)
        return model

    random_start, same = start(0, seeds[0]), etm.ETM(150, 4, emb_dim=32, hidden=64, seed=seeds[0])
    assert all(torch.equal(a, b) for a, b in zip(random_start.parameters(), same.parameters(), strict=True))
    assert matched_correlations(random_start.beta().detach().numpy().T, beta.T).min() < 0.2
    kmeans, again, other = start(1, seeds[1]), start(1, seeds[1]), start(2, seeds[2])
    assert torch.equal(kmeans.alpha, again.alpha) and not torch.equal(kmeans.alpha, other.alpha)
    assert torch.equal(kmeans.rho, etm.ETM(150, 4, emb_dim=32, hidden=64, seed=seeds[1]).rho)  # only α moves
    assert matched_correlations(kmeans.beta().detach().numpy().T, beta.T).min() > 0.3


@pytest.mark.slow
def test_restarts_escape_a_poor_local_optimum():
    """On the planted topics, training seed 3 ends with a collapsed topic (one topic twice, two merged: matched θ
    correlation < 0.9, a far worse ELBO); with n_init=3 the best-ELBO restart recovers every topic, and the kept
    model is the restart with the lowest final -ELBO. (Before the k-means starts, all five random restarts of seed 3
    collapsed: benchmarks/RESULTS.md.)"""
    import anndata as ad

    counts, theta, _ = planted_topics()
    data = etm.prepare(counts, device="cpu")
    opts = dict(emb_dim=32, hidden=64, epochs=250, lr=1e-2, kl_warmup=60, device="cpu", progress=False)
    plain = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)))
    m1, _ = etm.fit_etm(plain, 4, seed=3, **opts)
    assert matched_correlations(plain.obsm["X_etm"], theta).min() < 0.9, "this seed should be a poor start"
    best = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)))
    m3, _ = etm.fit_etm(best, 4, seed=3, n_init=3, **opts)
    assert matched_correlations(best.obsm["X_etm"], theta).min() >= 0.9
    restarts = best.uns["etm"]["restart_neg_elbo"]
    assert len(restarts) == 3 and np.isclose(etm.final_neg_elbo(m3, data), restarts.min())
    assert best.uns["etm"]["chosen_seed"] == etm.restart_seeds(3, 3)[int(np.argmin(restarts))] != 3
    assert restarts[0] == pytest.approx(etm.final_neg_elbo(m1, data), rel=1e-6)  # restart 0 is the plain seed
    with pytest.raises(ValueError, match="n_init"):
        etm.fit_etm(ad.AnnData(sp.csr_matrix(counts.astype(np.float32))), 4, n_init=0, **opts)
