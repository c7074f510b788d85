"""sccourse.nmf against scikit-learn's multiplicative-update NMF, scipy and simulated ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy import stats
from scipy.special import gammaln
from sklearn.decomposition import NMF

import sccourse.datasets as ds
from sccourse import nmf as N

BETA = {"sse": "frobenius", "poisson": "kullback-leibler"}


def _sk_objective(Xc, W_cells, H_genes, loss):
    """Objective as a plain numpy formula (cells x genes layout)."""
    WH = W_cells @ H_genes
    if loss == "sse":
        return np.mean((Xc - WH) ** 2)
    WHs = np.maximum(WH, np.finfo(np.float32).eps)
    pos = Xc > 0
    kl = np.sum(Xc[pos] * np.log(Xc[pos] / WHs[pos])) - Xc.sum() + WH.sum()
    return kl / Xc.size


@pytest.fixture(scope="module")
def counts():
    a = ds.synthetic(240, 90, 4, seed=7)
    return a.X.toarray().astype(np.float64), a.obs["cell_type"].to_numpy()  # cells x genes


def _sklearn_fit(Xc, W0, H0, loss, max_iter):
    m = NMF(W0.shape[1], solver="mu", beta_loss=BETA[loss], init="custom", max_iter=max_iter, tol=0)
    # sklearn factorises cells x genes: its W is our Hᵀ, its H our Wᵀ
    Wc = m.fit_transform(Xc, W=H0.T.copy(), H=W0.T.copy())
    return Wc, m.components_


@pytest.mark.parametrize("loss", ["sse", "poisson"])
@pytest.mark.parametrize("sparse", [False, True])
def test_matches_sklearn_mu_float64(counts, loss, sparse):
    Xc, _ = counts
    W0, H0 = N.initialize(Xc, 5, orientation="cells_x_genes", seed=1)
    Wc, Hg = _sklearn_fit(Xc, W0, H0, loss, 40)
    X_in = sp.csr_matrix(Xc) if sparse else Xc
    res = N.nmf(
        X_in,
        5,
        loss=loss,
        orientation="cells_x_genes",
        init=(W0, H0),
        max_iter=40,
        dtype=torch.float64,
        device="cpu",
    )
    ref = _sk_objective(Xc, Wc, Hg, loss)
    assert res.history["objective"].iloc[-1] == pytest.approx(ref, rel=1e-9)
    assert _sk_objective(Xc, res.H.T, res.W.T, loss) == pytest.approx(ref, rel=1e-9)
    np.testing.assert_allclose(res.H.T, Wc, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.W.T, Hg, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss", ["sse", "poisson"])
def test_float32_objective_close_to_sklearn(counts, loss):
    Xc, _ = counts
    W0, H0 = N.initialize(Xc, 4, orientation="cells_x_genes", seed=2)
    Wc, Hg = _sklearn_fit(Xc, W0, H0, loss, 60)
    res = N.nmf(Xc.T.copy(), 4, loss=loss, init=(W0, H0), max_iter=60, device="cpu")  # genes x cells, float32
    assert res.W.dtype == np.float32
    assert res.history["objective"].iloc[-1] == pytest.approx(_sk_objective(Xc, Wc, Hg, loss), rel=1e-4)


def test_history_columns_against_scipy(counts):
    Xc, _ = counts
    Xg = Xc.T
    res = N.nmf(Xg, 3, loss="poisson", max_iter=15, dtype=torch.float64, device="cpu", seed=4)
    WH = res.W @ res.H
    # mean Poisson log-likelihood without the log X! term
    ll = np.mean(stats.poisson.logpmf(Xg, WH) + gammaln(Xg + 1))
    assert res.history["loglik"].iloc[-1] == pytest.approx(ll, rel=1e-10)
    assert res.perf().shape == (15, 3)
    assert list(res.history["iteration"]) == list(range(1, 16))
    r2 = N.nmf(Xg, 3, loss="sse", max_iter=7, dtype=torch.float64, device="cpu", seed=4, eval_every=3)
    assert list(r2.history["iteration"]) == [3, 6, 7]
    assert r2.history["mse"].iloc[-1] == pytest.approx(np.mean((Xg - r2.W @ r2.H) ** 2), rel=1e-10)


@pytest.mark.parametrize("loss", ["sse", "poisson"])
def test_objective_monotone(loss):
    a = ds.synthetic(200, 80, 3, seed=11)
    X = a.X.toarray().astype(float).T
    X[5] = 0.0  # an all-zero gene and an all-zero cell exercise the division guards
    X[:, 7] = 0.0
    res = N.nmf(X, 6, loss=loss, max_iter=80, dtype=torch.float64, device="cpu", init="random", seed=0)
    obj = res.history["objective"].to_numpy()
    assert np.all(np.isfinite(obj))
    assert np.all(np.diff(obj) <= 1e-12 * obj[0])
    assert obj[-1] < obj[0]
    assert (res.W >= 0).all() and (res.H >= 0).all()


@pytest.mark.parametrize("loss", ["sse", "poisson"])
def test_factors_hold_no_subnormal_numbers(loss):
    # an all-zero gene drives its row of W geometrically to 0; in float32 it would pass through the
    # subnormal range (slow on CPUs) — the updates flush such entries to exact zeros instead
    a = ds.synthetic(200, 80, 3, seed=11)
    X = a.X.toarray().astype(float).T
    X[5] = 0.0
    res = N.nmf(sp.csr_matrix(X), 6, loss=loss, max_iter=300, device="cpu", init="random", seed=0)
    tiny = np.finfo(np.float32).tiny
    for F in (res.W, res.H):
        F = np.asarray(F)
        assert not ((F > 0) & (F < tiny)).any()
    assert (np.asarray(res.W)[5] == 0).all()


@pytest.mark.parametrize("loss", ["sse", "poisson"])
@pytest.mark.parametrize("density", [0.3, 0.01])
def test_sparse_equals_dense(loss, density):
    rng = np.random.default_rng(3)
    mask = rng.random((150, 400)) < density  # 0.01: exercises the row-gather path, 0.3 the blockwise one
    X = np.where(mask, rng.poisson(4.0, size=mask.shape) + 1, 0).astype(float)
    X[0, 0] = 3.0
    dense = N.nmf(X, 4, loss=loss, max_iter=30, dtype=torch.float64, device="cpu", seed=5)
    spar = N.nmf(sp.csr_matrix(X), 4, loss=loss, max_iter=30, dtype=torch.float64, device="cpu", seed=5)
    np.testing.assert_allclose(spar.W, dense.W, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(spar.H, dense.H, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(spar.history["objective"], dense.history["objective"], rtol=1e-9)
    tsp = N.nmf(torch.tensor(X).to_sparse_csr(), 4, loss=loss, max_iter=5, dtype=torch.float64, device="cpu")
    tdn = N.nmf(torch.tensor(X), 4, loss=loss, max_iter=5, dtype=torch.float64, device="cpu")
    np.testing.assert_allclose(tsp.W, tdn.W, rtol=1e-8, atol=1e-12)


def test_orientation_gives_same_factors(counts):
    Xc, _ = counts
    a = N.nmf(Xc, 3, orientation="cells_x_genes", max_iter=10, dtype=torch.float64, device="cpu")
    b = N.nmf(Xc.T, 3, orientation="genes_x_cells", max_iter=10, dtype=torch.float64, device="cpu")
    assert a.W.shape == (Xc.shape[1], 3) and a.H.shape == (3, Xc.shape[0])
    np.testing.assert_allclose(a.W, b.W)
    assert a.embedding.shape == (Xc.shape[0], 3)


def test_nndsvda_init_matches_sklearn(counts):
    Xc, _ = counts
    m = NMF(4, solver="mu", init="nndsvda", max_iter=25, tol=0, random_state=3)
    Wc = m.fit_transform(Xc)
    res = N.nmf(
        Xc,
        4,
        orientation="cells_x_genes",
        init="nndsvda",
        seed=3,
        max_iter=25,
        dtype=torch.float64,
        device="cpu",
    )
    np.testing.assert_allclose(res.H.T, Wc, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.W.T, m.components_, rtol=1e-6, atol=1e-9)


def test_recovers_exact_low_rank_product():
    rng = np.random.default_rng(0)
    W = rng.gamma(1.0, 1.0, size=(60, 3)) * (rng.random((60, 3)) < 0.5)
    H = rng.gamma(1.0, 1.0, size=(3, 90)) * (rng.random((3, 90)) < 0.5)
    W[:3, :] += np.eye(3)  # identifiable: separable anchors
    H[:, :3] += np.eye(3)
    X = W @ H
    for loss in ("sse", "poisson"):
        res = N.nmf(X, 3, loss=loss, max_iter=2000, dtype=torch.float64, device="cpu", eval_every=500, seed=1)
        rel = np.linalg.norm(X - res.W @ res.H) / np.linalg.norm(X)
        assert rel < 1e-2, (loss, rel)


def test_seed_reproducible_and_distinct(counts):
    Xc, _ = counts
    a = N.nmf(Xc.T, 3, max_iter=5, seed=9, device="cpu")
    b = N.nmf(Xc.T, 3, max_iter=5, seed=9, device="cpu")
    c = N.nmf(Xc.T, 3, max_iter=5, seed=10, device="cpu")
    np.testing.assert_array_equal(a.W, b.W)
    assert not np.allclose(a.W, c.W)


def test_tol_and_callback_stop_early(counts):
    Xc, _ = counts
    res = N.nmf(Xc.T, 3, loss="poisson", max_iter=500, tol=1e-3, device="cpu")
    assert res.n_iter < 500 and len(res.history) == res.n_iter
    seen = []

    def cb(it, W, H, rec):
        seen.append((it, rec["objective"]))
        assert isinstance(W, torch.Tensor) and W.shape[1] == 3
        return it >= 4

    res = N.nmf(Xc.T, 3, loss="sse", max_iter=50, callback=cb, eval_every=2, device="cpu")
    assert [s[0] for s in seen] == [2, 4] and res.n_iter == 4


@pytest.mark.slow
def test_ari_in_history(counts):
    Xc, labels = counts
    res = N.nmf(Xc.T, 4, loss="poisson", max_iter=30, labels=labels, eval_every=15, device="cpu")
    from sccourse.metrics import evaluate_ari

    assert res.history["ari"].notna().all()
    assert res.history["ari"].iloc[-1] == pytest.approx(evaluate_ari(res.embedding, labels))
    assert res.history["ari"].iloc[-1] > 0.5  # four well separated simulated types


@pytest.mark.parametrize(
    ("kwargs", "X", "match"),
    [
        ({}, -np.ones((4, 5)), "negative"),
        ({}, np.full((4, 5), np.nan), "NaN"),
        ({"n_components": 6}, np.ones((4, 5)), "larger than min"),
        ({"n_components": 0}, np.ones((4, 5)), "n_components"),
        ({"loss": "gauss"}, np.ones((4, 5)), "loss"),
        ({"orientation": "rows"}, np.ones((4, 5)), "orientation"),
        ({"init": "svd"}, np.ones((4, 5)), "init"),
        ({"init": (np.ones((5, 2)), np.ones((2, 5)))}, np.ones((4, 5)), "shapes"),
        ({"init": (-np.ones((4, 2)), np.ones((2, 5)))}, np.ones((4, 5)), "non-negative"),
        ({"max_iter": 0}, np.ones((4, 5)), "max_iter"),
        ({"dtype": torch.int32}, np.ones((4, 5)), "dtype"),
        ({"labels": ["a", "b"]}, np.ones((4, 5)), "labels"),
        ({}, np.zeros((4, 5)), "all zero"),
        ({}, np.ones(5), "2-D"),
        ({"loss": "poisson"}, sp.csr_matrix(-np.eye(4)), "negative"),
    ],
)
def test_bad_input(kwargs, X, match):
    kw = {"n_components": 2, **kwargs}
    k = kw.pop("n_components")
    with pytest.raises(ValueError, match=match):
        N.nmf(X, k, max_iter=kw.pop("max_iter", 2), device="cpu", **kw)


def test_poisson_accepts_non_integer_values():
    X = np.random.default_rng(0).gamma(2.0, 1.5, size=(30, 20))
    res = N.nmf(X, 2, loss="poisson", max_iter=20, dtype=torch.float64, device="cpu")
    assert np.all(np.diff(res.history["objective"]) <= 1e-12)


def test_anndata_wrapper():
    a = ds.synthetic(150, 60, 3, seed=2)
    N.nmf_adata(a, 3, loss="poisson", max_iter=10, device="cpu", labels_key="cell_type", eval_every=5)
    assert a.obsm["X_nmf"].shape == (150, 3) and a.varm["NMF_loadings"].shape == (60, 3)
    Xc = a.X.toarray().astype(float)
    direct = N.nmf(Xc, 3, loss="poisson", max_iter=10, device="cpu", orientation="cells_x_genes")
    np.testing.assert_allclose(a.obsm["X_nmf"], direct.H.T, rtol=1e-5)
    assert np.isfinite(a.uns["nmf"]["history"]["ari"]).all()
    b = ds.synthetic(150, 60, 3, seed=2)
    N.nmf(b, 3, max_iter=3, device="cpu")  # AnnData passed to nmf goes through the wrapper
    assert "X_nmf" in b.obsm
    c = ds.synthetic(50, 20, 2, seed=2)
    with pytest.raises(ValueError, match="larger than min"):
        N.nmf_adata(c, 60, device="cpu")
    assert "X_nmf" not in c.obsm and "NMF_loadings" not in c.varm
    with pytest.raises(ValueError, match="labels_key"):
        N.nmf_adata(c, 2, labels_key="nope")
    with pytest.raises(TypeError):
        N.nmf_adata(np.ones((3, 3)), 2)


def test_select_variable_genes_is_the_pp_function():
    from sccourse import pp

    assert N.select_variable_genes is pp.select_variable_genes  # tested against scanpy in test_pp.py
    assert "select_variable_genes" in N.__all__


def test_nmf_adata_key_added_names_every_slot():
    a = ds.synthetic(60, 30, 2, seed=2)
    direct = N.nmf(a.X.toarray().astype(float), 2, max_iter=5, device="cpu", orientation="cells_x_genes")
    obsm0, varm0, uns0 = set(a.obsm), set(a.varm), set(a.uns)
    N.nmf_adata(a, 2, max_iter=5, device="cpu", key_added="nmf2")
    assert set(a.obsm) - obsm0 == {"X_nmf2"} and set(a.varm) - varm0 == {"NMF2_loadings"}
    assert set(a.uns) - uns0 == {"nmf2"}
    np.testing.assert_allclose(a.obsm["X_nmf2"], direct.H.T, rtol=1e-5)
    np.testing.assert_allclose(a.varm["NMF2_loadings"], direct.W, rtol=1e-5)
    for bad, err in (("", ValueError), (None, TypeError), ("a/b", ValueError)):
        with pytest.raises(err, match="key_added"):
            N.nmf_adata(b := ds.synthetic(60, 30, 2, seed=2), 2, max_iter=2, device="cpu", key_added=bad)
        assert (set(b.obsm), set(b.varm), set(b.uns)) == (obsm0, varm0, uns0)


def test_progress_bar_only_when_asked(capfd):
    X = np.random.default_rng(0).random((20, 10))
    N.nmf(X, 2, max_iter=3, device="cpu")  # default None: no terminal under pytest, no bar
    assert "NMF-sse" not in capfd.readouterr().err
    N.nmf(X, 2, max_iter=3, device="cpu", progress=True)
    assert "NMF-sse" in capfd.readouterr().err
    with pytest.raises(TypeError, match="progress"):
        N.nmf(X, 2, max_iter=3, device="cpu", progress="yes")


def test_baron_selection(mirror):
    a = ds.baron_mouse_pancreas(mice=("mouse1",))
    out = N.select_variable_genes(a, 4000)
    assert out.shape == (a.n_obs, 4000)
    # markers of minority types vary most (insulin is high in every cell, from ambient RNA, so it is not)
    for marker in ("Gcg", "Sst", "Ppy", "Pecam1", "Krt19"):
        assert marker in out.var_names


@pytest.mark.gpu
@pytest.mark.parametrize("loss", ["sse", "poisson"])
@pytest.mark.parametrize("sparse", [False, True])
def test_cpu_equals_cuda(counts, loss, sparse):
    Xc, _ = counts
    X = sp.csr_matrix(Xc) if sparse else Xc
    kw = {"loss": loss, "orientation": "cells_x_genes", "max_iter": 30, "dtype": torch.float64, "seed": 0}
    cpu = N.nmf(X, 4, device="cpu", **kw)
    gpu = N.nmf(X, 4, device="cuda", **kw)
    np.testing.assert_allclose(gpu.W, cpu.W, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(gpu.history["objective"], cpu.history["objective"], rtol=1e-9)
    assert isinstance(gpu.history, pd.DataFrame)


def test_factor_shares_against_a_loop_and_invariant_to_factor_scaling():
    rng = np.random.default_rng(4)
    W = rng.gamma(1.0, 1.0, size=(7, 3))
    H = rng.gamma(1.0, 1.0, size=(3, 5))
    H[:, 2] = 0.0  # a cell without expected counts
    expected = np.zeros((5, 3))
    for n in range(5):
        contrib = [W[:, k].sum() * H[k, n] for k in range(3)]
        if sum(contrib) > 0:
            expected[n] = np.array(contrib) / sum(contrib)
    S = N.factor_shares(W, H)
    np.testing.assert_allclose(S, expected, rtol=1e-12)
    np.testing.assert_allclose(S.sum(axis=1), [1, 1, 0, 1, 1])
    # WH is unchanged by W[:, k] * c, H[k] / c, and so are the shares
    c = np.array([10.0, 0.1, 3.0])
    np.testing.assert_allclose(N.factor_shares(W * c, H / c[:, None]), S, rtol=1e-12)
    np.testing.assert_allclose(N.factor_shares(torch.tensor(W), torch.tensor(H)), S, rtol=1e-12)
    with pytest.raises(ValueError, match="genes x K"):
        N.factor_shares(W, H.T)
    with pytest.raises(ValueError, match="non-negative"):
        N.factor_shares(-W, H)


def test_top_genes_by_sorting_each_column():
    W = np.array([[0.1, 3.0], [2.0, 0.0], [1.0, 1.0], [5.0, 2.5], [2.0, 1.0]])
    t = N.top_genes(W, list("abcde"), n=3)
    assert list(t.columns) == [0, 1] and t.shape == (3, 2)
    assert t[0].tolist() == ["d", "b", "e"]  # ties (b, e) in the order of the names
    assert t[1].tolist() == ["a", "d", "c"]
    rng = np.random.default_rng(2)
    W = rng.integers(0, 4, size=(50, 4)).astype(float)  # many ties
    names = [f"g{i}" for i in range(50)]
    t = N.top_genes(W, names, n=7)
    for k in range(4):
        assert t[k].tolist() == [names[i] for i in sorted(range(50), key=lambda i: (-W[i, k], i))[:7]]
    with pytest.raises(ValueError, match="n="):
        N.top_genes(W, names, n=51)
    with pytest.raises(ValueError, match="one name per gene"):
        N.top_genes(W, names[:3])


def test_factor_plots(tmp_path):
    import matplotlib.figure
    import matplotlib.pyplot as plt

    from sccourse import plotting

    rng = np.random.default_rng(0)
    E = rng.random((40, 3))
    lab = np.array(["a"] * 30 + ["b"] * 10)
    raw = np.vstack([E[:30].mean(0), E[30:].mean(0)])
    fig = plotting.factor_celltype_heatmap(E, lab, normalize=None, order=None, save=tmp_path / "f.png")
    assert isinstance(fig, matplotlib.figure.Figure) and (tmp_path / "f.png").stat().st_size > 0
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), raw)
    # default: each cell type's row scaled to sum 1, factors in the order of factor_order
    order = plotting.factor_order(E, lab)
    assert sorted(order.tolist()) == [0, 1, 2]
    fig = plotting.factor_celltype_heatmap(E, lab)
    shares = raw / raw.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), shares[:, order])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(k) for k in order]
    assert fig.axes[1].get_ylabel()  # a labelled colour bar
    fig = plotting.factor_celltype_heatmap(E, lab, colorbar_label="share")
    assert fig.axes[1].get_ylabel() == "share"
    fig = plotting.factor_celltype_heatmap(E, lab, normalize="factor", order=[2, 0, 1], vmax=0.5, small=20)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), (raw / raw.max(axis=0))[:, [2, 0, 1]])
    assert fig.axes[0].images[0].get_clim() == (0, 0.5)
    ticks = fig.axes[0].get_yticklabels()
    assert [t.get_text() for t in ticks] == ["a (30)", "b (10)"]
    assert matplotlib.colors.same_color(ticks[1].get_color(), "0.45")  # fewer cells than `small`: grey
    with pytest.raises(ValueError, match="permutation"):
        plotting.factor_celltype_heatmap(E, lab, order=[0, 0, 1])
    with pytest.raises(ValueError, match="normalize"):
        plotting.factor_celltype_heatmap(E, lab, normalize="cells")
    # factor_order puts each factor under the type that uses it most (most abundant type first)
    F = np.zeros((40, 3))
    F[:30, 2] = 1.0
    F[30:, 0] = 1.0
    F[30:, 1] = 0.5
    assert plotting.factor_order(F, lab).tolist() == [2, 0, 1]

    W = np.zeros((6, 2))
    W[[4, 1], 0] = [3.0, 2.0]
    W[[0, 5], 1] = [5.0, 1.0]
    fig = plotting.top_genes_heatmap(W, list("abcdef"), n_top=2, normalize=None)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["e", "b", "a", "f"]
    fig = plotting.top_genes_heatmap(W, list("abcdef"), n_top=2, order=[1, 0])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "f", "e", "b"]
    np.testing.assert_allclose(
        fig.axes[0].images[0].get_array(), [[1, 0], [0.2, 0], [0, 1], [0, 2 / 3]]
    )  # columns: factor 1, factor 0; each scaled to max 1
    fig = plotting.top_genes_heatmap(W, list("abcdef"), n_top=1, normalize="sum", vmax=0.5)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), [[0.6, 0], [0, 5 / 6]])
    assert fig.axes[0].images[0].get_clim()[1] == 0.5
    with pytest.raises(ValueError, match="gene_names"):
        plotting.top_genes_heatmap(W, list("abc"))
    with pytest.raises(ValueError, match="normalize"):
        plotting.top_genes_heatmap(W, list("abcdef"), normalize="type")
    plt.close("all")


# ---- HALS (coordinate descent for the squared error) --------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_hals_decreases_monotonically_and_matches_sklearn_cd(counts, sparse):
    Xc, _ = counts
    Xg = Xc.T.copy()  # genes x cells
    W0, H0 = N.initialize(Xg, 5, seed=3)
    data = sp.csr_matrix(Xg) if sparse else Xg
    res = N.nmf(data, 5, solver="hals", init=(W0, H0), max_iter=300, dtype=torch.float64, device="cpu")
    obj = res.history["objective"].to_numpy()
    assert np.all(np.diff(obj) <= 1e-12 * obj[0]), "each HALS step solves its block exactly: never up"
    np.testing.assert_allclose(obj[-1], np.mean((Xg - res.W @ res.H) ** 2), rtol=1e-10)
    sk = NMF(5, solver="cd", init="custom", max_iter=2000, tol=1e-10)
    Wc = sk.fit_transform(Xc, W=H0.T.copy(), H=W0.T.copy())
    ref = np.mean((Xc - Wc @ sk.components_) ** 2)
    assert obj[-1] <= ref * (1 + 2e-3), (obj[-1], ref)  # the same local optimum, or a better one
    # KKT: W, H >= 0, gradient >= 0 where the factor is 0, ~0 where it is positive
    gH = res.W.T @ (res.W @ res.H - Xg)
    gW = (res.W @ res.H - Xg) @ res.H.T
    scale = np.abs(Xg).max() * Xg.shape[1]
    for F, g in ((res.H, gH), (res.W, gW)):
        assert (F >= 0).all()
        assert np.abs(g[F > 1e-8]).max() < 1e-3 * scale
        assert g[F == 0].min() > -1e-3 * scale


def test_hals_reaches_a_lower_objective_than_mu_in_fewer_iterations(counts):
    Xg = counts[0].T.copy()
    W0, H0 = N.initialize(Xg, 5, seed=1)
    mu = N.nmf(Xg, 5, init=(W0, H0), max_iter=200, dtype=torch.float64, device="cpu")
    hals = N.nmf(Xg, 5, solver="hals", init=(W0, H0), max_iter=50, dtype=torch.float64, device="cpu")
    assert hals.history["objective"].iloc[-1] < mu.history["objective"].iloc[-1]


def test_hals_one_sweep_is_the_exact_block_minimiser():
    # with W fixed, one H row update equals the non-negative least-squares optimum of that row (closed form)
    from sccourse._nmf_kernels import _hals_sweep

    rng = np.random.default_rng(0)
    W = rng.random((30, 1))
    X = rng.random((30, 8))
    H = torch.as_tensor(rng.random((1, 8)))
    _hals_sweep(H, torch.as_tensor(W.T @ X), torch.as_tensor(W.T @ W))
    expected = np.maximum(0, (W.T @ X) / (W.T @ W))
    np.testing.assert_allclose(H.numpy(), expected, rtol=1e-12)


def test_hals_is_for_the_squared_error_only(counts):
    with pytest.raises(ValueError, match="squared error only"):
        N.nmf(counts[0].T, 3, loss="poisson", solver="hals")
    with pytest.raises(ValueError, match="solver must be one of"):
        N.nmf(counts[0].T, 3, solver="cd")


def test_float32_overflow_raises_instead_of_returning_nan():
    rng = np.random.default_rng(0)
    X = rng.random((30, 20)) * 1e30  # ‖X‖² overflows float32
    with pytest.raises(FloatingPointError, match="float64"):
        N.nmf(X, 3, max_iter=20, device="cpu")
    res = N.nmf(X, 3, max_iter=20, device="cpu", dtype=torch.float64)
    assert np.isfinite(res.W).all() and np.isfinite(res.history["objective"]).all()


def test_select_variable_genes_rejects_nan_and_non_integer_counts():
    import anndata as ad

    a = ad.AnnData(np.array([[1.0, np.nan, 2.0], [0.0, 1.0, 3.0]]))
    with pytest.raises(ValueError, match="NaN"):
        N.select_variable_genes(a, 2)
    with pytest.raises(ValueError, match="integer counts"):
        N.select_variable_genes(ad.AnnData(np.array([[1.0, 0.5, 2.0], [0.0, 1.0, 3.0]])), 2)


@pytest.mark.parametrize("case", ["positive", "zero_row", "tiny_block", "tiny_everywhere"])
def test_dense_ratio_against_numpy_where_the_clamp_matters(case):
    # R = X / max(WH, eps) and Σ X log max(WH, eps): the clamp pass is skipped only when a lower bound on WH
    # proves it a no-op, so every case must equal the plain formula; the buffer reused between calls must
    # hold the latest call's R
    from sccourse._nmf_kernels import EPS, DenseData

    rng = np.random.default_rng(3)
    X = rng.poisson(3.0, size=(40, 30)).astype(np.float64)
    W = rng.random((40, 4)) + 0.05
    H = rng.random((4, 30)) + 0.05
    if case == "zero_row":
        W[5] = 0.0  # (WH)_5j = 0: every entry of that row is clamped
    elif case == "tiny_block":
        W[:10] *= 1e-8
        H[:, :7] *= 1e-3  # (WH) below eps only in a 10 x 7 block
    elif case == "tiny_everywhere":
        W *= 1e-9
    data = DenseData(torch.as_tensor(X))
    other, _ = data.ratio(torch.as_tensor(W + 1.0), torch.as_tensor(H), False)  # fills the buffer first
    R, xlog = data.ratio(torch.as_tensor(W), torch.as_tensor(H), True)
    WH = np.maximum(W @ H, EPS)
    np.testing.assert_allclose(R.numpy(), X / WH, rtol=1e-12)
    assert xlog == pytest.approx(float(np.sum(X * np.log(WH))), rel=1e-12)
    if case != "positive":
        assert (W @ H < EPS).any()  # the case does exercise the clamp


def test_poisson_with_a_zero_factor_row_matches_sklearn(counts):
    # a gene whose W row starts at zero: WH is zero on that row, the eps guard decides R there
    Xc, _ = counts
    W0, H0 = N.initialize(Xc, 5, orientation="cells_x_genes", seed=1)
    W0 = W0.copy()
    W0[3] = 0.0
    Wc, Hg = _sklearn_fit(Xc, W0, H0, "poisson", 30)
    res = N.nmf(
        Xc,
        5,
        loss="poisson",
        orientation="cells_x_genes",
        init=(W0, H0),
        max_iter=30,
        dtype=torch.float64,
        device="cpu",
    )
    np.testing.assert_allclose(res.H.T, Wc, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.W.T, Hg, rtol=1e-6, atol=1e-9)
