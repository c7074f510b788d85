"""Tests of sccourse.ee against independent references (numpy/sklearn, torch autograd, finite differences)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.neighbors import NearestNeighbors

from sccourse import ee
from sccourse.metrics import knn_preservation, knn_preservation_at_size


@pytest.fixture(scope="module")
def synthetic_pcs():
    """Well-separated cell types from the project's NB generator: log-CPM → 10 PCs."""
    from sklearn.decomposition import PCA

    from sccourse.datasets import synthetic

    a = synthetic(n_cells=400, n_genes=200, n_types=4, n_markers=20, fold_change=10.0, seed=3)
    X = a.X.toarray().astype(float)
    logcpm = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    pcs = PCA(10, random_state=0).fit_transform(logcpm - logcpm.mean(0))
    return pcs, a.obs["cell_type"].to_numpy()


def _entropy_rows(Y, idx, beta):
    d2 = ((Y[:, None, :] - Y[idx]) ** 2).sum(-1)
    logits = -beta[:, None] * d2
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(1), p


def _reference_W(Y, perplexity, k):
    """Independent construction: sklearn neighbours, per-row bisection with scipy's brentq."""
    from scipy.optimize import brentq

    n = Y.shape[0]
    nbrs = NearestNeighbors(n_neighbors=k + 1).fit(Y)
    dist, idx = nbrs.kneighbors(Y)
    d2, idx = dist[:, 1:] ** 2, idx[:, 1:]
    P = np.zeros((n, n))
    for i in range(n):
        d = d2[i] - d2[i].min()

        def gap(logb, d=d):
            lg = -np.exp(logb) * d
            p = np.exp(lg - lg.max())
            p /= p.sum()
            return -(p * np.log(np.where(p > 0, p, 1.0))).sum() - np.log(perplexity)

        logb = brentq(gap, -30, 30, xtol=1e-14)
        p = np.exp(-np.exp(logb) * d)
        P[i, idx[i]] = p / p.sum()
    return (P + P.T) / (2 * n)


# ----------------------------------------------------------------------------- affinities
@pytest.mark.parametrize("method", ["ea", "x2p"])
def test_entropy_equals_log_perplexity_per_point(blobs, method):
    Y, _ = blobs
    W, info = ee.entropic_affinities(Y, 25.0, method=method, return_info=True, device="cpu")
    H, _ = _entropy_rows(Y, info["neighbors"], info["beta"])
    assert info["neighbors"].shape == (Y.shape[0], 75)  # k = 3 · perplexity
    np.testing.assert_allclose(H, np.log(25.0), atol=1e-6, rtol=0)
    assert sp.issparse(W)
    assert abs(W.sum() - 1.0) < 1e-12
    assert abs(W - W.T).max() < 1e-15


def test_affinities_match_independent_reference(blobs):
    Y, _ = blobs
    Y = Y[::3]
    W = ee.entropic_affinities(Y, 10.0, n_neighbors=30, device="cpu").toarray()
    ref = _reference_W(Y, 10.0, 30)
    np.testing.assert_allclose(W, ref, atol=1e-9 / Y.shape[0], rtol=0)


def test_sparse_and_dense_affinities_agree_on_small_n(blobs):
    Y, _ = blobs
    Y = Y[::4]
    n = Y.shape[0]
    dense = ee.entropic_affinities(Y, 15.0, n_neighbors="all", device="cpu").toarray()
    sparse_all = ee.entropic_affinities(Y, 15.0, n_neighbors=n - 1, knn="exact", device="cpu").toarray()
    np.testing.assert_allclose(sparse_all, dense, atol=1e-14)
    # the dense affinities equal the brentq reference computed over all other points
    np.testing.assert_allclose(dense, _reference_W(Y, 15.0, n - 1), atol=1e-9 / n, rtol=0)


def test_duplicated_cells_get_the_limit_and_are_reported(blobs):
    """More than `perplexity` neighbours tied at distance 0 cannot reach entropy log(perplexity): the row is
    uniform over the copies (the β → ∞ limit) and reported as not converged; the other rows converge."""
    Y = blobs[0][::4].copy()
    Y[:8] = Y[0]  # eight copies of one cell
    _W, info = ee.entropic_affinities(Y, 3.0, return_info=True, device="cpu")
    _H, p = _entropy_rows(Y, info["neighbors"], info["beta"])
    for n in range(8):
        copies = np.isin(info["neighbors"][n], np.arange(8))
        np.testing.assert_allclose(p[n][copies], 1 / 7, rtol=1e-12)
    assert not info["converged"][:8].any()
    assert info["converged"][8:].all()


# the default block (one here), many blocks, blocks of one row
@pytest.mark.parametrize("max_block_mb", [None, 0.05, 0.0])
def test_exact_knn_matches_sklearn(blobs, max_block_mb):
    from sccourse import _ee_kernels as K

    Y, _ = blobs
    idx, d2 = K.knn_exact(torch.as_tensor(Y), 12, max_block_mb=max_block_mb)
    dist, ref = NearestNeighbors(n_neighbors=13).fit(Y).kneighbors(Y)
    np.testing.assert_array_equal(np.sort(idx.numpy(), 1), np.sort(ref[:, 1:], 1))
    np.testing.assert_allclose(d2.numpy(), dist[:, 1:] ** 2, rtol=1e-10)


# ----------------------------------------------------------------------------- objective
def _autograd_objective(X, Wp, Wn, lam):
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return (Wp * d2).sum() + lam * (Wn * torch.exp(-d2)).sum()


@pytest.fixture(scope="module")
def small_problem(make_blobs):
    Y, _ = make_blobs(n_per=30, n_types=3, dim=6, seed=1)
    W = ee.entropic_affinities(Y, 8.0, device="cpu")
    X = np.random.default_rng(2).normal(size=(Y.shape[0], 2))
    return Y, W, X


@pytest.mark.parametrize("repulsion", ["uniform", "distance"])
def test_objective_and_gradient_match_autograd(small_problem, repulsion):
    Y, W, X = small_problem
    n, lam = Y.shape[0], 3.0
    if repulsion == "uniform":
        Wn_dense = (np.ones((n, n)) - np.eye(n)) / n**2
        Wneg = None
    else:
        D2 = ((Y[:, None] - Y[None]) ** 2).sum(-1)
        Wn_dense = D2 / D2.sum()
        Wneg = ee.repulsive_weights(Y, kind="distance", device="cpu")
    Xt = torch.tensor(X, requires_grad=True)
    ref = _autograd_objective(Xt, torch.tensor(W.toarray()), torch.tensor(Wn_dense), lam)
    ref.backward()
    val, grad = ee.ee_objective(X, W, lam, Wneg=Wneg, return_grad=True, device="cpu")
    assert val == pytest.approx(float(ref.detach()), rel=1e-12)
    np.testing.assert_allclose(grad, Xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_gradient_matches_finite_differences(small_problem):
    _Y, W, X = small_problem
    lam = 5.0
    g = ee.ee_gradient(X, W, lam, device="cpu")
    rng = np.random.default_rng(0)
    h = 1e-6
    for _ in range(6):
        i, j = rng.integers(X.shape[0]), rng.integers(2)
        Xp, Xm = X.copy(), X.copy()
        Xp[i, j] += h
        Xm[i, j] -= h
        fd = (ee.ee_objective(Xp, W, lam, device="cpu") - ee.ee_objective(Xm, W, lam, device="cpu")) / (2 * h)
        assert fd == pytest.approx(g[i, j], rel=1e-5, abs=1e-10)


def test_blocked_sparse_and_dense_objectives_agree(small_problem):
    _Y, W, X = small_problem
    exact = ee.ee_objective(X, W.toarray(), 2.0, return_grad=True, device="cpu")
    blocked = ee.ee_objective(X, W, 2.0, return_grad=True, max_block_mb=0.001, device="cpu")  # 1-row blocks
    assert blocked[0] == pytest.approx(exact[0], rel=1e-12)
    np.testing.assert_allclose(blocked[1], exact[1], rtol=1e-10, atol=1e-15)
    # a user-supplied dense Wneg (uniform) gives the default's numbers
    n = X.shape[0]
    dense_neg = ee.ee_objective(X, W, 2.0, Wneg=(np.ones((n, n)) - np.eye(n)) / n**2, device="cpu")
    assert dense_neg == pytest.approx(exact[0], rel=1e-12)
    # torch in → torch gradient out
    _, gt = ee.ee_objective(torch.tensor(X), W, 2.0, return_grad=True, device="cpu")
    assert isinstance(gt, torch.Tensor)


# ----------------------------------------------------------------------------- EE
@pytest.mark.parametrize(
    ("optimizer", "dtype", "rel"),
    [("spectral", torch.float32, 1e-4), ("gd", torch.float32, 1e-4), ("spectral", torch.float64, 1e-10)],
)
def test_objective_decreases_monotonically(blobs, optimizer, dtype, rel):
    Y, _ = blobs
    m = ee.ElasticEmbedding(
        lam=10.0, perplexity=20, optimizer=optimizer, max_iter=25, tol=0, dtype=dtype, device="cpu"
    )
    m.fit(Y)
    obj = m.history_["objective"].to_numpy()
    assert len(obj) > 5
    assert np.all(np.diff(obj) <= 1e-15 * np.abs(obj[:-1]))
    assert obj[-1] < obj[0]
    # the reported objective is the objective of the returned embedding (float64 evaluation, independent
    # of the working precision), to that precision: float32 evaluations carry up to a few 1e-5 of rounding
    # here (the embedding is ~100 wide), while one iteration earlier the objective differs by ~4e-4
    assert ee.ee_objective(m.embedding_, m.Wpos_, 10.0, device="cpu") == pytest.approx(obj[-1], rel=rel)
    assert m.objective_ == obj[-1]


def test_calibration_converges_for_near_duplicate_cells():
    """Rows whose distances differ only in the last digits need many halvings; the other rows are unaffected."""
    from sccourse import _ee_kernels as K

    rng = np.random.default_rng(4)
    D2 = torch.as_tensor(rng.uniform(0.5, 3.0, size=(50, 30)))
    D2[:3] = 1.0 + 1e-13 * torch.as_tensor(rng.uniform(size=(3, 30)))  # near-duplicate neighbourhoods
    P, beta, conv = K.calibrate(D2, 10.0, tol=1e-10, max_iter=400)
    assert bool(conv.all())
    H = -(P * torch.log(P.clamp_min(1e-300))).sum(1)
    np.testing.assert_allclose(H.numpy(), np.log(10.0), atol=1e-9)
    # each row's result does not depend on the other rows
    _, beta_alone, _ = K.calibrate(D2[10:11], 10.0, tol=1e-10, max_iter=400)
    assert float(beta_alone[0]) == pytest.approx(float(beta[10]), rel=1e-12)


def _row_entropy(P):
    """Entropy of each row of a row-stochastic numpy array (0 log 0 = 0)."""
    return -(P * np.log(np.where(P > 0, P, 1.0))).sum(1)


def _knn_sqdist(Y, k):
    """Squared distances to the k nearest neighbours by scikit-learn (self excluded)."""
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y)
    return dist[:, 1:] ** 2


@pytest.mark.parametrize("method", ["ea", "x2p"])
def test_calibrated_rows_have_entropy_log_perplexity(blobs, method):
    """On real neighbour distances and on random ones, each row of P sums to 1 and has entropy log(perplexity)
    (computed here in numpy from P), in few iterations for "ea"."""
    from sccourse import _ee_kernels as K

    rng = np.random.default_rng(11)
    for D2 in (_knn_sqdist(blobs[0], 60), rng.exponential(size=(200, 45)) * rng.uniform(0.01, 100, (200, 1))):
        for perplexity in (5.0, 20.0):
            P, beta, conv, n_iter = K._calibrate(
                torch.as_tensor(D2), perplexity, method=method, tol=1e-10, max_iter=200
            )
            P = P.numpy()
            assert bool(conv.all()) and np.isfinite(beta.numpy()).all()
            np.testing.assert_allclose(P.sum(1), 1.0, rtol=0, atol=1e-13)
            np.testing.assert_allclose(_row_entropy(P), np.log(perplexity), rtol=0, atol=1e-9)
            assert n_iter <= (10 if method == "ea" else 60)


def test_calibrated_beta_matches_brentq_per_row():
    """β of single rows against a plain root-find of H(β) = log(perplexity) with scipy's brentq."""
    from scipy.optimize import brentq

    from sccourse import _ee_kernels as K

    rng = np.random.default_rng(12)
    D2 = rng.gamma(2.0, size=(6, 40)) * np.array([1e-4, 0.1, 1.0, 3.0, 50.0, 1e4])[:, None]
    _, beta, conv = K.calibrate(torch.as_tensor(D2), 12.0)
    assert bool(conv.all())
    for i in range(D2.shape[0]):
        d = D2[i] - D2[i].min()

        def gap(logb, d=d):
            lg = -np.exp(logb) * d
            p = np.exp(lg - lg.max())
            p /= p.sum()
            return _row_entropy(p[None])[0] - np.log(12.0)

        ref = np.exp(brentq(gap, -40, 40, xtol=1e-14))
        assert float(beta[i]) == pytest.approx(ref, rel=1e-8)


def test_many_duplicated_cells_give_finite_affinities():
    """60 copies of one cell among 300 at perplexity 30 (more tied neighbours than the perplexity): the copies'
    rows stop at the β → ∞ limit, uniform over their copies, instead of β = inf and NaN in W."""
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(300, 5))
    Y[:60] = Y[0]
    W, info = ee.entropic_affinities(Y, 30.0, return_info=True, device="cpu")
    assert np.isfinite(W.data).all() and np.isfinite(info["beta"]).all()
    assert abs(W.sum() - 1.0) < 1e-12
    assert abs(W - W.T).max() == 0.0
    _H, p = _entropy_rows(Y, info["neighbors"], info["beta"])
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=0, atol=1e-13)
    for n in range(60):
        copies = np.isin(info["neighbors"][n], np.arange(60))
        assert copies.sum() == 59
        np.testing.assert_allclose(p[n][copies], 1 / 59, rtol=1e-12)
    # exactly the cells whose nearest distance is shared by more than 30 neighbours (the copies, and cells
    # next to the copies) cannot reach the perplexity
    d2 = ((Y[:, None, :] - Y[info["neighbors"]]) ** 2).sum(-1)
    ties = (d2 == d2.min(1, keepdims=True)).sum(1)
    np.testing.assert_array_equal(info["converged"], ties <= 30)
    assert info["converged"].sum() >= 230


def test_calibration_of_degenerate_rows():
    """A row whose distances are all equal cannot have any entropy but log(k): it is uniform, finite and reported
    as not converged, at once; the other rows are unaffected."""
    from sccourse import _ee_kernels as K

    rng = np.random.default_rng(13)
    D2 = torch.as_tensor(rng.uniform(0.5, 3.0, size=(20, 30)))
    D2[3] = 2.0
    D2[7] = 0.0
    P, beta, conv, n_iter = K._calibrate(D2, 10.0, method="ea", tol=1e-10, max_iter=200)
    assert torch.isfinite(P).all() and torch.isfinite(beta).all()
    np.testing.assert_array_equal(P[[3, 7]].numpy(), 1 / 30)
    assert conv.tolist() == [i not in (3, 7) for i in range(20)]
    assert n_iter <= 10
    np.testing.assert_allclose(_row_entropy(P.numpy()[conv.numpy()]), np.log(10.0), rtol=0, atol=1e-9)


def test_gradient_descent_leaves_the_collapsed_start(make_blobs):
    """Plain gradient descent (float64 by default, first step 1/(8 max degree)) makes real progress; in float32
    the repulsion's change near the collapsed start is below rounding and the line search stalls."""
    Y, _ = make_blobs(n_per=60, n_types=4, dim=10, seed=2)
    W = ee.entropic_affinities(Y, 20, device="cpu")
    gd = ee.ElasticEmbedding(lam=10.0, optimizer="gd", max_iter=30, tol=0, device="cpu").fit(Wpos=W)
    obj = gd.history_["objective"].to_numpy()
    assert obj[-1] < 0.5 * obj[0]
    deg = np.asarray(W.sum(1)).ravel()
    assert gd.history_["step"].iloc[1] == pytest.approx(1.0 / (8 * deg.max()), rel=1e-12)
    sd = ee.ElasticEmbedding(
        lam=10.0, optimizer="spectral", max_iter=30, tol=0, dtype=torch.float64, device="cpu"
    ).fit(Wpos=W)
    reached = sd.history_.loc[sd.history_["objective"] <= obj[-1], "iteration"]
    assert len(reached) and int(reached.iloc[0]) < 15


def test_spectral_beats_gradient_descent(blobs):
    Y, _ = blobs
    W = ee.entropic_affinities(Y, 20, device="cpu")
    sd = ee.ElasticEmbedding(lam=10.0, optimizer="spectral", max_iter=20, tol=0, device="cpu").fit(Wpos=W)
    gd = ee.ElasticEmbedding(lam=10.0, optimizer="gd", max_iter=20, tol=0, device="cpu").fit(Wpos=W)
    assert sd.objective_ < gd.objective_
    # target= stops as soon as the objective reaches the given value
    early = ee.ElasticEmbedding(lam=10.0, max_iter=20, tol=0, target=gd.objective_, device="cpu").fit(Wpos=W)
    assert early.objective_ <= gd.objective_
    assert early.n_iter_ < 20
    assert early.history_["objective"].iloc[-2] > gd.objective_


def test_ee_separates_synthetic_clusters(synthetic_pcs):
    """The four cell types come out as four separate groups: single-linkage clustering into four (scikit-learn)
    finds exactly the types (ARI 1; on the first two PCs it is 0.73), and every cell's 15 nearest neighbours in
    the map are of its type. (Leiden's ARI, also 1 here, costs scanpy's import and numba's compilation, ~10 s.)"""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score

    pcs, labels = synthetic_pcs
    X = ee.ElasticEmbedding(lam=10.0, perplexity=30, max_iter=60, device="cpu").fit_transform(pcs)
    assert X.shape == (pcs.shape[0], 2)
    clusters = AgglomerativeClustering(4, linkage="single").fit_predict(X)
    assert adjusted_rand_score(labels, clusters) == 1.0
    _, nbrs = NearestNeighbors(n_neighbors=16).fit(X).kneighbors(X)
    assert (labels[nbrs[:, 1:]] == labels[:, None]).all()


def test_anndata_in_and_out(synthetic_pcs):
    import anndata as ad

    pcs, _ = synthetic_pcs
    a = ad.AnnData(np.zeros((pcs.shape[0], 1), dtype=np.float32))
    a.obsm["X_pca"] = pcs
    m = ee.ElasticEmbedding(lam=10.0, max_iter=5, device="cpu").fit(a)
    np.testing.assert_array_equal(a.obsm["X_ee"], m.embedding_)
    with pytest.raises(ValueError, match="obsm"):
        ee.ElasticEmbedding(max_iter=2, device="cpu").fit(a, use_rep="X_missing")


# ----------------------------------------------------------------------------- NeuralEE
def test_dense_ee_loss_matches_pair_sums_and_the_blocked_objective(small_problem):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(7, 3))
    A = rng.uniform(size=(7, 7))
    B = rng.uniform(size=(7, 7)) / 49  # not symmetric, diagonal included: every ordered pair counts
    ref = sum(
        A[i, j] * ((X[i] - X[j]) ** 2).sum() + 2.5 * B[i, j] * np.exp(-((X[i] - X[j]) ** 2).sum())
        for i in range(7)
        for j in range(7)
    )
    Xt = torch.tensor(X, requires_grad=True)
    val = ee.dense_ee_loss(Xt, torch.tensor(A), torch.tensor(B), 2.5)
    assert float(val.detach()) == pytest.approx(ref, rel=1e-12)
    val.backward()
    assert Xt.grad.shape == (7, 3)
    _Y, W, X2 = small_problem
    n = X2.shape[0]
    Wn = torch.full((n, n), 1.0 / n**2, dtype=torch.float64)
    Wn.fill_diagonal_(0)
    dense = ee.dense_ee_loss(torch.tensor(X2), torch.tensor(W.toarray()), Wn, 4.0)
    assert float(dense) == pytest.approx(ee.ee_objective(X2, W, 4.0, device="cpu"), rel=1e-12)
    with pytest.raises(ValueError, match="N × N"):
        ee.dense_ee_loss(torch.tensor(X2), Wn[:3, :3], Wn, 1.0)


def _reference_layers(d_in, hidden, d_out, seed):
    """PyTorch's default initialisation of the same Linear layers, drawn right after torch.manual_seed(seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        widths = [d_in, *hidden, d_out]
        return [torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]


def test_mlp_is_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = ee.mlp(10, (8, 4), 2, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    after = torch.rand(1)
    b = ee.mlp(10, (8, 4), 2, seed=5)
    c = ee.mlp(10, (8, 4), 2, seed=6)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    assert next(a.parameters()).dtype == torch.float64
    assert [m.__class__.__name__ for m in a] == ["Linear", "ELU", "Linear", "ELU", "Linear"]
    # the same numbers as PyTorch's initialisation under torch.manual_seed(5) (the library's former recipe)
    ref = [p for layer in _reference_layers(10, (8, 4), 2, 5) for p in layer.parameters()]
    for p, q in zip(a.parameters(), ref):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().double().numpy())


def test_estimators_leave_the_global_generators_alone_and_repeat_with_the_same_seed(blobs):
    Y = blobs[0][::4]
    torch.manual_seed(7)
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002 (the global state must stay untouched)
    state = torch.random.get_rng_state()
    kw = {"lam": 10.0, "perplexity": 15, "batch_size": 0.5, "epochs": 2, "hidden": (16,), "device": "cpu"}
    a = ee.NeuralEE(seed=3, progress=False, **kw).fit(Y)
    assert torch.equal(torch.random.get_rng_state(), state)
    e1 = ee.ElasticEmbedding(lam=10.0, perplexity=15, max_iter=3, seed=3, device="cpu").fit_transform(Y)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    # the network starts from PyTorch's initialisation under torch.manual_seed(seed)
    b = ee.NeuralEE(seed=3, progress=False, **{**kw, "epochs": 1, "lr": 1e-12})
    b.fit(Y)
    ref = [p for layer in _reference_layers(Y.shape[1], (16,), 2, 3) for p in layer.parameters()]
    for p, q in zip(b.net_.parameters(), ref):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(a.embedding_, ee.NeuralEE(seed=3, progress=False, **kw).fit(Y).embedding_)
    e2 = ee.ElasticEmbedding(lam=10.0, perplexity=15, max_iter=3, seed=3, device="cpu").fit_transform(Y)
    np.testing.assert_array_equal(e1, e2)


def test_progress_bars_only_when_asked_or_watched(blobs, capsys):
    Y, _ = blobs
    W = ee.entropic_affinities(Y, 15, device="cpu")
    ee.ElasticEmbedding(lam=10.0, max_iter=2, device="cpu").fit(Wpos=W)  # progress=None: stderr is captured
    ee.NeuralEE(lam=10.0, epochs=1, hidden=(8,), device="cpu").fit(Y, Wpos=W)
    assert capsys.readouterr().err == ""
    ee.ElasticEmbedding(lam=10.0, max_iter=2, device="cpu", progress=True).fit(Wpos=W)
    ee.NeuralEE(lam=10.0, epochs=1, hidden=(8,), device="cpu", progress=True).fit(Y, Wpos=W)
    err = capsys.readouterr().err
    assert "EE (spectral)" in err and "NeuralEE" in err


def test_train_ee_network_is_the_plain_loop(small_problem):
    Y, W, _ = small_problem
    n = Y.shape[0]
    # full batch: the first epoch's loss is the exact objective of the untrained network (computed before)
    net = ee.mlp(Y.shape[1], (16,), 2, seed=0)
    with torch.no_grad():
        X0 = net(torch.as_tensor((Y - Y.mean(0)) / Y.std())).numpy()
    E0 = ee.ee_objective(X0, W, 10.0, device="cpu")
    losses, cov = ee.train_ee_network(net, Y, W, 10.0, batch_size=n, epochs=25, lr=1e-2, seed=0)
    assert losses[0] == pytest.approx(E0, rel=1e-10)
    assert losses[-1] < 0.9 * losses[0]
    np.testing.assert_array_equal(cov, np.full(n, 25))
    # mini-batches: every cell once per epoch; a custom partition is used as given
    calls = []

    def halves(m, bs, rng):
        calls.append(bs)
        return [np.arange(0, m // 2), np.arange(m // 2, m - 1)]  # the last cell is left out

    _, cov2 = ee.train_ee_network(
        ee.mlp(Y.shape[1], (16,), 2, seed=0), Y, W, 10.0, batch_size=45, epochs=3, seed=1, batches=halves
    )
    assert calls == [45, 45, 45]
    assert cov2[-1] == 0 and np.all(cov2[:-1] == 3)


def test_fit_held_out_never_shows_the_model_a_held_out_cell(synthetic_pcs):
    pcs, _ = synthetic_pcs
    tr, te, model = ee.fit_held_out(
        pcs, train_fraction=0.7, seed=3, perplexity=20, epochs=2, hidden=(16,), device="cpu", progress=False
    )
    assert len(tr) == round(0.7 * pcs.shape[0]) and len(np.intersect1d(tr, te)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(pcs.shape[0]))
    np.testing.assert_array_equal(tr, np.sort(np.random.default_rng(3).permutation(pcs.shape[0])[: len(tr)]))
    np.testing.assert_allclose(model.mean_, pcs[tr].mean(0))
    assert model.embedding_.shape == (len(tr), 2) and model.seed == 3
    with pytest.raises(ValueError, match="train_fraction"):
        ee.fit_held_out(pcs, train_fraction=1.0)


def test_epoch_batches_cover_every_cell():
    rng = np.random.default_rng(0)
    for n, b in [(10, 3), (1001, 100), (7, 7)]:
        batches = ee.epoch_batches(n, b, rng)
        allc = np.concatenate(batches)
        assert np.array_equal(np.sort(allc), np.arange(n))
        assert max(x.size for x in batches) - min(x.size for x in batches) <= 1


def test_batch_loss_matches_full_objective_on_full_batch(small_problem):
    _Y, W, X = small_problem
    n = X.shape[0]
    coo = W.tocoo()
    wneg = torch.full((n, n), 1.0 / n**2, dtype=torch.float64)
    wneg.fill_diagonal_(0)
    loss = ee.batch_ee_loss(
        torch.tensor(X), torch.tensor(coo.row), torch.tensor(coo.col), torch.tensor(coo.data), wneg, 4.0
    )
    assert float(loss) == pytest.approx(ee.ee_objective(X, W, 4.0, device="cpu"), rel=1e-12)


def test_batch_loss_gradient_matches_autograd_of_the_plain_formula():
    """The fused repulsion (value and gradient in one blocked pass) against autograd on the textbook
    expression, with a symmetric distance-type w⁻ and a random sparse attractive graph."""
    rng = np.random.default_rng(5)
    b = 120
    Xb = torch.tensor(rng.normal(size=(b, 2)), dtype=torch.float64)
    Yb = rng.normal(size=(b, 6))
    D2 = ((Yb[:, None] - Yb[None]) ** 2).sum(-1)
    wneg = torch.tensor(D2 / D2.sum())
    rows, cols = rng.integers(0, b, 300), rng.integers(0, b, 300)
    w = torch.tensor(rng.random(300))
    r_t, c_t = torch.tensor(rows), torch.tensor(cols)

    X1 = Xb.clone().requires_grad_(True)
    ours = ee.batch_ee_loss(X1, r_t, c_t, w, wneg, 3.0)
    ours.backward()
    X2 = Xb.clone().requires_grad_(True)
    d2 = ((X2[:, None, :] - X2[None, :, :]) ** 2).sum(-1)
    ref = (w * ((X2[r_t] - X2[c_t]) ** 2).sum(1)).sum() + 3.0 * (wneg * torch.exp(-d2)).sum()
    ref.backward()
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    np.testing.assert_allclose(X1.grad.numpy(), X2.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_uniform_repulsion_as_a_number_matches_autograd_of_the_plain_formula():
    """NeuralEE's mini-batches pass uniform w⁻ as the number 1/N² (no b × b tensor): value and gradient against
    autograd on the textbook expression with that weight on every pair n ≠ m (and 0 on the diagonal)."""
    from sccourse._ee_kernels import Repulsion

    rng = np.random.default_rng(6)
    b, weight = 700, 1.0 / 5000**2  # more cells than one tile: off-diagonal tiles and their mirror images
    Xb = torch.tensor(rng.normal(size=(b, 2)), dtype=torch.float64)
    X1 = Xb.clone().requires_grad_(True)
    ours = Repulsion.apply(X1, weight)
    ours.backward()
    X2 = Xb.clone().requires_grad_(True)
    d2 = ((X2[:, None, :] - X2[None, :, :]) ** 2).sum(-1)
    off = 1.0 - torch.eye(b, dtype=torch.float64)
    ref = (weight * off * torch.exp(-d2)).sum()
    ref.backward()
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    np.testing.assert_allclose(X1.grad.numpy(), X2.grad.numpy(), rtol=1e-9, atol=1e-18)


def test_neuralee_trains_every_cell_and_maps_held_out_cells(synthetic_pcs):
    pcs, _labels = synthetic_pcs
    rng = np.random.default_rng(0)
    perm = rng.permutation(pcs.shape[0])
    train, test = perm[:300], perm[300:]
    m = ee.NeuralEE(
        lam=10.0,
        perplexity=20,
        batch_size=140,
        epochs=40,
        lr=3e-3,
        hidden=(64, 32),
        progress=False,
        device="cpu",
        seed=0,
    ).fit(pcs[train])
    assert np.all(m.coverage_ == 40)  # 140 does not divide 300: still every cell, every epoch
    assert (m.history_["cells_seen"] == 300).all()
    loss = m.history_["loss"].to_numpy()
    assert loss[-5:].mean() < loss[:5].mean()
    # k-NN preservation depends on the set size: compare the held-out cells with training subsets of their size
    kp_train, _ = knn_preservation_at_size(pcs[train], m.embedding_, len(test), k=10, seed=0)
    kp_test = knn_preservation(pcs[test], m.transform(pcs[test]), k=10)
    assert kp_test >= 0.8 * kp_train


def test_neuralee_same_seed_same_numbers(blobs):
    Y, _ = blobs
    kw = {
        "lam": 10.0,
        "perplexity": 15,
        "batch_size": 0.5,
        "epochs": 3,
        "hidden": (16,),
        "progress": False,
        "device": "cpu",
    }
    a = ee.NeuralEE(seed=7, **kw).fit_transform(Y)
    b = ee.NeuralEE(seed=7, **kw).fit_transform(Y)
    c = ee.NeuralEE(seed=8, **kw).fit_transform(Y)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_neuralee_batch_affinities_option(blobs):
    Y, _ = blobs
    m = ee.NeuralEE(
        lam=10.0,
        perplexity=10,
        attraction="batch",
        batch_size=0.5,
        epochs=15,
        hidden=(32,),
        lr=3e-3,
        progress=False,
        device="cpu",
    ).fit(Y)
    loss = m.history_["loss"].to_numpy()
    assert loss[-3:].mean() < loss[:3].mean()
    with pytest.raises(ValueError, match="not fitted"):
        ee.NeuralEE().transform(Y)
    with pytest.raises(ValueError, match="features"):
        m.transform(Y[:, :3])


def _random_graph(n: int, seed: int) -> sp.csr_matrix:
    """A symmetric sparse graph with unequal weights, an isolated cell (0) and explicit zeros stored."""
    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=0.2, random_state=seed, data_rvs=lambda k: rng.gamma(0.5, 1.0, k)).tocsr()
    A = (A + A.T).tolil()
    A.setdiag(0)
    A[0, :] = 0
    A[:, 0] = 0
    A = A.tocsr()
    A.data[:3] = 0.0  # stored zeros: never drawn
    return A


def test_neighbour_sampler_draws_each_neighbour_in_proportion_to_its_weight():
    from scipy import stats

    from sccourse.ee._training import NeighbourSampler

    W = _random_graph(40, seed=1)
    s = NeighbourSampler(W)
    rng = np.random.default_rng(0)
    cells = np.array([0, 5, 5, 17])  # the isolated cell 0 gets no draw; a cell may appear twice
    row, j = s.draw(cells, 20_000, rng)
    assert not np.any(row == 0)
    assert np.array_equal(np.bincount(row, minlength=4), [0, 20_000, 20_000, 20_000])
    for pos in (1, 3):
        i = cells[pos]
        w = W[i].toarray().ravel()
        counts = np.bincount(j[row == pos], minlength=W.shape[0])
        assert np.all(counts[w == 0] == 0)  # only neighbours, never a stored zero
        nz = w > 0
        expected = w[nz] / w.sum() * counts.sum()
        assert stats.chisquare(counts[nz], expected).pvalue > 1e-3


@pytest.mark.parametrize("m", [1, 3])
def test_sampled_attraction_is_an_unbiased_estimate_of_the_attractive_term(m):
    # Σ_ij W_ij ‖x_i − x_j‖² over ordered pairs, exactly, against the mean of the estimate over random batches
    from sccourse.ee._training import NeighbourSampler

    n, b = 40, 8
    W = _random_graph(n, seed=2)
    X = np.random.default_rng(3).normal(size=(n, 2))
    Wd = W.toarray()
    exact = float((Wd * ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)).sum())
    s = NeighbourSampler(W)
    rng = np.random.default_rng(4)
    Xt = torch.as_tensor(X)
    est = []
    for _ in range(4000):
        B = rng.choice(n, b, replace=False)
        row, j = s.draw(B, m, rng)
        est.append(float(s.attraction(Xt[torch.as_tensor(B)], Xt[torch.as_tensor(j)], B, row, m)))
    est = np.asarray(est)
    se = est.std() / np.sqrt(est.size)
    assert abs(est.mean() - exact) < 4 * se
    assert abs(est.mean() - exact) < 0.03 * exact


def test_neuralee_sampled_attraction_trains_a_seeded_map_that_keeps_the_types(synthetic_pcs):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    pcs, labels = synthetic_pcs
    kw = dict(
        lam=10.0,
        perplexity=20,
        batch_size=40,
        epochs=30,
        lr=3e-3,
        hidden=(64, 32),
        attraction="sampled",
        neighbour_samples=2,
        progress=False,
        device="cpu",
    )
    m = ee.NeuralEE(seed=0, **kw).fit(pcs)
    assert np.all(m.coverage_ == 30)
    loss = m.history_["loss"].to_numpy()
    assert loss[-5:].mean() < loss[:5].mean()
    acc = cross_val_score(KNeighborsClassifier(15), m.embedding_, labels, cv=5).mean()
    assert acc > 0.97
    np.testing.assert_array_equal(m.embedding_, ee.NeuralEE(seed=0, **kw).fit_transform(pcs))
    assert not np.allclose(m.embedding_, ee.NeuralEE(seed=1, **kw).fit_transform(pcs))
    W = ee.entropic_affinities(pcs, 20, device="cpu")
    np.testing.assert_array_equal(m.embedding_, ee.NeuralEE(seed=0, **kw).fit(pcs, Wpos=W).embedding_)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors(blobs):
    Y, _ = blobs
    bad = Y.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ee.entropic_affinities(bad, 10)
    with pytest.raises(ValueError, match="2-D"):
        ee.entropic_affinities(Y[:, 0], 10)
    with pytest.raises(ValueError, match="perplexity"):
        ee.entropic_affinities(Y[:20], 30)
    with pytest.raises(ValueError, match="perplexity"):
        ee.entropic_affinities(Y, 30, n_neighbors=20)
    with pytest.raises(ValueError, match="method"):
        ee.entropic_affinities(Y, 10, method="tsne")
    with pytest.raises(ValueError, match="symmetric"):
        ee.ee_objective(np.zeros((3, 2)), np.triu(np.ones((3, 3))), 1.0)
    with pytest.raises(ValueError, match="rows"):
        ee.ee_objective(np.zeros((4, 2)), np.ones((3, 3)), 1.0)
    # options are stored by __init__ and checked by fit (scikit-learn's convention), before anything is computed
    with pytest.raises(ValueError, match="lam"):
        ee.ElasticEmbedding(lam=-1).fit(Y)
    with pytest.raises(ValueError, match="optimizer"):
        ee.ElasticEmbedding(optimizer="adam").fit(Y)
    with pytest.raises(ValueError, match="batch_size"):
        ee.NeuralEE(batch_size=1.5).fit(Y)
    with pytest.raises(ValueError, match="NaN"):
        ee.NeuralEE(progress=False).fit(bad)
    # the cases of the issue "no silent wrong answers" (each failed, or crashed inside numpy/torch, before)
    W = ee.entropic_affinities(Y, 10, device="cpu")
    n = Y.shape[0]
    with pytest.raises(ValueError, match="Wpos has no positive weight"):  # was: torch's Cholesky error
        ee.ElasticEmbedding(device="cpu").fit(Wpos=np.zeros((n, n)))
    with pytest.raises(ValueError, match="X must be a 2-D"):  # was: a bare IndexError
        ee.ee_objective(torch.zeros(n), W, 1.0)
    for init in (np.full((n, 2), np.nan), np.full((n, 2), np.inf), np.zeros((n, 2))):
        with pytest.raises(ValueError, match="init"):  # was: a NaN or all-zero embedding after 0 iterations
            ee.ElasticEmbedding(device="cpu").fit(Wpos=W, init=init)
    for seed in (-1, 1.5):
        with pytest.raises(ValueError, match="seed must be an integer"):  # was: numpy's "Seed must be ..."
            ee.ElasticEmbedding(seed=seed, device="cpu").fit(Y)
        with pytest.raises(ValueError, match="seed must be an integer"):
            ee.NeuralEE(seed=seed, device="cpu", progress=False).fit(Y)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):  # was: ZeroDivisionError
        ee.epoch_batches(10, 0, np.random.default_rng(0))


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_cpu_and_cuda_agree(small_problem):
    Y, W, X = small_problem
    Wc = ee.entropic_affinities(Y, 8.0, device="cpu")
    Wg = ee.entropic_affinities(Y, 8.0, device="cuda")
    assert abs(Wc - Wg).max() < 1e-10 * Wc.max()
    vc, gc = ee.ee_objective(X, W, 3.0, return_grad=True, device="cpu")
    vg, gg = ee.ee_objective(X, W, 3.0, return_grad=True, device="cuda")
    assert vg == pytest.approx(vc, rel=1e-10)
    np.testing.assert_allclose(gg, gc, rtol=1e-8, atol=1e-14)
    ec = ee.ElasticEmbedding(lam=5.0, max_iter=20, device="cpu").fit(Wpos=W).embedding_
    eg = ee.ElasticEmbedding(lam=5.0, max_iter=20, device="cuda").fit(Wpos=W).embedding_
    np.testing.assert_allclose(eg, ec, rtol=1e-5, atol=1e-7)


@pytest.mark.gpu
def test_neuralee_runs_on_cuda(blobs):
    Y, _ = blobs
    m = ee.NeuralEE(lam=10.0, perplexity=15, batch_size=0.5, epochs=5, progress=False, device="cuda").fit(Y)
    assert next(m.net_.parameters()).is_cuda
    assert np.isfinite(m.embedding_).all()


# ----------------------------------------------------------------------------- plots
def test_plots_return_figures(blobs):
    import matplotlib.pyplot as plt

    import sccourse.plotting as pl

    Y, labels = blobs
    m = ee.ElasticEmbedding(lam=10.0, max_iter=5, device="cpu").fit(Y)
    fig = pl.embedding_grid({"EE": m.embedding_, "PCA": Y[:, :2]}, labels.astype(str), X_high=Y)
    assert "T=" in fig.axes[0].get_title()
    fig2 = pl.embedding_grid({"EE": m.embedding_}, np.linspace(0, 1, Y.shape[0]), label_name="pseudotime")
    assert len(fig2.axes) == 2  # panel + colour bar
    fig3 = pl.objective_vs_time({"spectral": m.history_})
    assert fig3.axes[0].get_xlabel() == "wall-clock time (s)"
    with pytest.raises(ValueError, match="same number"):
        pl.embedding_grid({"a": Y[:, :2], "b": Y[:10, :2]})
    plt.close("all")


def test_figures_have_readable_labels(blobs):
    import matplotlib.pyplot as plt

    import sccourse.plotting as pl

    Y, labels = blobs
    m = ee.ElasticEmbedding(lam=10.0, max_iter=5, device="cpu").fit(Y)
    # long panel names stay in the titles; the axes get short labels (no "perplexity 30, λ = 1 2")
    fig = pl.embedding_grid({"perplexity 30, λ = 1": m.embedding_}, labels.astype(str), axis_name="EE")
    assert fig.axes[0].get_xlabel() == "EE 1" and fig.axes[0].get_ylabel() == "EE 2"
    assert fig.axes[0].get_title() == "perplexity 30, λ = 1"
    # a continuous colouring with missing values: the missing cells are drawn (grey), not dropped
    values = np.where(np.arange(Y.shape[0]) % 3 == 0, np.nan, np.linspace(0, 1, Y.shape[0]))
    fig2 = pl.embedding_grid({"EE": m.embedding_}, values, label_name="pseudotime")
    drawn = sum(len(c.get_offsets()) for c in fig2.axes[0].collections)
    assert drawn == Y.shape[0]
    assert fig2.axes[-1].get_ylabel() == "pseudotime"  # the colour bar is labelled
    # two panels (iterations and time) sharing one legend
    fig3 = pl.objective_vs_time({"gd": m.history_, "spectral": m.history_}, x=("iteration", "time_s"))
    assert [a.get_xlabel() for a in fig3.axes] == ["iteration", "wall-clock time (s)"]
    assert fig3.axes[0].get_ylabel().startswith("objective")
    assert [t.get_text() for t in fig3.legends[0].get_texts()] == ["gd", "spectral"]
    # held-out cells over the training cells
    fig4 = pl.held_out_map(m.embedding_[:200], m.embedding_[200:], labels[200:].astype(str))
    assert fig4.axes[0].get_xlabel() == "dim 1"
    assert "training cells (200)" in [t.get_text() for t in fig4.legends[0].get_texts()]
    # bandwidths on log axes with plain tick labels and units
    beta = np.linspace(0.01, 1.0, 50)
    fig5 = pl.bandwidths(beta, 1 / np.sqrt(beta), k=30)
    ax = fig5.axes[0]
    assert "30th nearest neighbour" in ax.get_xlabel() and "PC units" in ax.get_ylabel()
    fig5.canvas.draw()
    assert not any("times" in t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels())
    with pytest.raises(ValueError, match="positive"):
        pl.bandwidths(-beta, beta)
    plt.close("all")
