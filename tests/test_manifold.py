"""Tests for sccourse.manifold: graph operators, heat noise, σ matching, Dirichlet energy, denoisers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.stats
import torch
from scipy.sparse.csgraph import laplacian as csgraph_laplacian
from scipy.sparse.linalg import eigsh

from sccourse import manifold as m

T_TYPES = ["Naive CD4 T", "Memory CD4 T", "CD8 T"]


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
def random_knn_affinity(n=120, k=6, seed=0, return_points=False):
    """Symmetric, non-negative, zero-diagonal affinities of a random kNN graph (Gaussian kernel)."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 3))
    D = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    rows, cols, vals = [], [], []
    for i in range(n):
        nb = np.argsort(D[i])[1 : k + 1]
        rows += [i] * k
        cols += list(nb)
        vals += list(np.exp(-D[i, nb]))
    W = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    W = sp.csr_matrix(W.maximum(W.T))
    return (W, pts) if return_points else W


def cycle(n) -> sp.csr_matrix:
    i = np.arange(n)
    W = sp.csr_matrix((np.ones(n), (i, (i + 1) % n)), shape=(n, n))
    return sp.csr_matrix(W + W.T)


def star(n_leaves) -> sp.csr_matrix:
    n = n_leaves + 1
    W = sp.lil_matrix((n, n))
    W[0, 1:] = 1.0
    W[1:, 0] = 1.0
    return sp.csr_matrix(W)


@pytest.fixture(scope="module")
def W():
    return random_knn_affinity()


# --------------------------------------------------------------------------------------
# graph operators
# --------------------------------------------------------------------------------------
def test_degree_and_markov_match_dense_numpy(W):
    Wd = W.toarray()
    np.testing.assert_allclose(m.degree(W), Wd.sum(1))
    P = m.markov_operator(W)
    assert sp.issparse(P)
    np.testing.assert_allclose(P.toarray(), Wd / Wd.sum(1, keepdims=True), atol=1e-14)
    np.testing.assert_allclose(np.asarray(P.sum(1)).ravel(), 1.0)
    S = m.symmetrized_operator(W)
    Pd = Wd / Wd.sum(1, keepdims=True)
    np.testing.assert_allclose(S.toarray(), 0.5 * (Pd + Pd.T), atol=1e-14)


@pytest.mark.parametrize("normalized", [True, False])
def test_laplacian_matches_scipy_csgraph(W, normalized):
    L = m.laplacian(W, normalized=normalized)
    assert sp.issparse(L)
    ref = csgraph_laplacian(W.toarray(), normed=normalized)
    np.testing.assert_allclose(L.toarray(), ref, atol=1e-12)


def test_normalized_laplacian_symmetric_psd_and_null_vector(W):
    L = m.laplacian(W)
    np.testing.assert_allclose(L.toarray(), L.toarray().T, atol=0)
    lam_min = eigsh(L, k=1, which="SA")[0][0]
    assert lam_min >= -1e-8
    lam_max = eigsh(L, k=1, which="LA")[0][0]
    assert lam_max <= 2 + 1e-8
    d = np.asarray(W.sum(1)).ravel()
    np.testing.assert_allclose(L @ np.sqrt(d), 0.0, atol=1e-10)


def test_cycle_graph_spectrum_known():
    n = 12
    L = m.laplacian(cycle(n)).toarray()
    expected = np.sort(1 - np.cos(2 * np.pi * np.arange(n) / n))
    np.testing.assert_allclose(np.linalg.eigvalsh(L), expected, atol=1e-12)


def test_identity_minus_symmetrized_operator_is_indefinite_on_a_star():
    # star with 4 leaves: S has eigenvalue a*sqrt(4) with a = (1 + 1/4)/2, i.e. 1.25 > 1
    S = m.symmetrized_operator(star(4)).toarray()
    eig = np.linalg.eigvalsh(np.eye(5) - S)
    assert eig.min() == pytest.approx(1 - 1.25, abs=1e-12)
    # the normalized Laplacian of the same graph is PSD
    assert np.linalg.eigvalsh(m.laplacian(star(4)).toarray()).min() >= -1e-12


def test_operators_accept_dense_input(W):
    np.testing.assert_allclose(m.markov_operator(W.toarray()).toarray(), m.markov_operator(W).toarray())


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.ones((3, 4)), "square"),
        (np.array([[0.0, -1.0], [-1.0, 0.0]]), "non-negative"),
        (np.array([[0.0, np.nan], [np.nan, 0.0]]), "NaN"),
        (np.ones(4), "2-D"),
    ],
)
def test_operators_reject_bad_affinities(bad, match):
    for fn in (m.markov_operator, m.symmetrized_operator, m.laplacian, m.degree):
        with pytest.raises(ValueError, match=match):
            fn(bad)


def test_laplacian_rejects_asymmetric_and_isolated():
    with pytest.raises(ValueError, match="symmetric"):
        m.laplacian(np.array([[0.0, 1.0], [0.5, 0.0]]))
    with pytest.raises(ValueError, match="zero degree"):
        m.markov_operator(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_to_torch_sparse_roundtrip_and_product(W, layout):
    T = m.to_torch_sparse(W, device="cpu", dtype=torch.float64, layout=layout)
    assert T.layout == (torch.sparse_coo if layout == "coo" else torch.sparse_csr)
    np.testing.assert_allclose(T.to_dense().numpy(), W.toarray())
    X = np.random.default_rng(1).normal(size=(W.shape[0], 5))
    np.testing.assert_allclose((T @ torch.from_numpy(X)).numpy(), W @ X, atol=1e-12)
    with pytest.raises(ValueError, match="layout"):
        m.to_torch_sparse(W, layout="bsr")


def test_to_torch_dense_from_sparse_and_anndata():
    import anndata as ad

    X = sp.random(10, 7, density=0.3, random_state=0, format="csr")
    T = m.to_torch(ad.AnnData(X), device="cpu")
    assert T.dtype == torch.float32 and T.layout == torch.strided
    np.testing.assert_allclose(T.numpy(), X.toarray(), rtol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        m.to_torch(np.array([[1.0, np.nan]]), device="cpu")


# --------------------------------------------------------------------------------------
# noise processes
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_manifold_heat_equals_dense_matrix_power(W, k):
    S = m.symmetrized_operator(W)
    X = np.random.default_rng(2).normal(size=(W.shape[0], 9))
    ref = np.linalg.matrix_power(S.toarray(), k) @ X
    heat = m.ManifoldHeat(S, steps=k)
    np.testing.assert_allclose(heat.sample(X), ref, atol=1e-12)  # numpy in, float64
    out = heat.sample(torch.from_numpy(X).float())
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-4)
    # a torch sparse operator gives the same numbers; steps= overrides the default
    heat_t = m.ManifoldHeat(m.to_torch_sparse(S, device="cpu", dtype=torch.float64), steps=1)
    np.testing.assert_allclose(heat_t.sample(torch.from_numpy(X), steps=k).numpy(), ref, atol=1e-12)


def test_manifold_heat_rejects_mismatch(W):
    heat = m.ManifoldHeat(m.symmetrized_operator(W), steps=2)
    with pytest.raises(ValueError, match="rows"):
        heat.sample(np.zeros((W.shape[0] + 1, 3)))
    with pytest.raises(ValueError, match="square"):
        m.ManifoldHeat(np.ones((3, 4)))
    with pytest.raises(ValueError, match="steps"):
        m.ManifoldHeat(m.symmetrized_operator(W), steps=-1)


def test_heat_powers_stack_matches_matrix_powers(W):
    S = m.symmetrized_operator(W)
    X = torch.from_numpy(np.random.default_rng(3).normal(size=(W.shape[0], 4)))
    H = m.ManifoldHeat(S).powers(X, 4)
    assert H.shape == (5, W.shape[0], 4)
    for k in range(5):
        np.testing.assert_allclose(
            H[k].numpy(), np.linalg.matrix_power(S.toarray(), k) @ X.numpy(), atol=1e-12
        )


def test_gaussian_noise_seeded_and_right_scale():
    X = np.zeros((400, 300))
    a = m.GaussianNoise(0.7, seed=5).sample(X)
    b = m.GaussianNoise(0.7, seed=5).sample(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, m.GaussianNoise(0.7, seed=6).sample(X))
    # 120,000 N(0, 0.49) draws: sample sd within 1 % of 0.7, mean within 5 standard errors of 0
    assert a.std() == pytest.approx(0.7, rel=0.01)
    assert abs(a.mean()) < 5 * 0.7 / np.sqrt(a.size)
    assert scipy.stats.kstest(a.ravel()[:5000] / 0.7, "norm").pvalue > 1e-4
    with pytest.raises(ValueError, match="sigma"):
        m.GaussianNoise(-1.0)


# --------------------------------------------------------------------------------------
# sigma matching
# --------------------------------------------------------------------------------------
def test_match_sigma_empirical_reproduces_target(W):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(W.shape[0], 50)).astype(np.float32)
    noisy = m.ManifoldHeat(m.symmetrized_operator(W), steps=3).sample(X.astype(np.float64))
    target = np.linalg.norm(noisy - X, axis=1).mean()
    sigma = m.match_sigma(X, noisy, seed=11)
    assert sigma == m.match_sigma(X, noisy, seed=11)  # deterministic
    Xg = m.GaussianNoise(sigma, seed=11).sample(X.astype(np.float64))
    dev = np.linalg.norm(Xg - X, axis=1).mean()
    assert dev == pytest.approx(target, rel=1e-3)
    assert m.match_sigma(X, float(target), seed=11) == pytest.approx(sigma, rel=1e-9)


@pytest.mark.parametrize("d", [1, 3, 50, 2000])
def test_match_sigma_expected_matches_chi_mean(d):
    # E||σ ε|| = σ · mean of a chi distribution with d degrees of freedom
    sigma = m.match_sigma(np.zeros((4, d)), 2.5, method="expected")
    assert sigma * scipy.stats.chi(d).mean() == pytest.approx(2.5, rel=1e-10)


def test_match_sigma_methods_agree_for_many_cells():
    # mean of n chi_d draws: relative standard error ~ 1 / sqrt(2 n d) = 3.5e-4 here
    X = np.zeros((20000, 200))
    a = m.match_sigma(X, 10.0, seed=0)
    b = m.match_sigma(X, 10.0, method="expected")
    assert a == pytest.approx(b, rel=2e-3)


def test_match_sigma_bad_input():
    with pytest.raises(ValueError, match="shape"):
        m.match_sigma(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="method"):
        m.match_sigma(np.zeros((3, 4)), 1.0, method="bisect")
    with pytest.raises(ValueError, match="NaN"):
        m.match_sigma(np.full((3, 4), np.nan), 1.0)


# --------------------------------------------------------------------------------------
# Dirichlet energy
# --------------------------------------------------------------------------------------
def test_laplacian_energy_equals_edge_sum_formula(W):
    X = np.random.default_rng(5).normal(size=(W.shape[0], 6))
    Wd = W.toarray()
    d = Wd.sum(1)
    Y = X / np.sqrt(d)[:, None]
    diff2 = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    ref = 0.5 * (Wd * diff2).sum()
    L = m.laplacian(W)
    assert m.laplacian_energy(L, X) == pytest.approx(ref, rel=1e-10)
    per = m.laplacian_energy(L, X, per_cell=True)
    assert per.shape == (W.shape[0],)
    assert per.sum() == pytest.approx(ref, rel=1e-10)
    # trace form, independently: tr(X^T L X) with dense numpy
    assert np.trace(X.T @ L.toarray() @ X) == pytest.approx(ref, rel=1e-10)


def test_laplacian_energy_torch_autograd_gradient(W):
    L = m.laplacian(W)
    X = torch.from_numpy(np.random.default_rng(6).normal(size=(W.shape[0], 4))).requires_grad_(True)
    E = m.laplacian_energy(L, X)
    E.backward()
    np.testing.assert_allclose(X.grad.numpy(), 2 * (L @ X.detach().numpy()), atol=1e-10)
    assert float(E.detach()) == pytest.approx(m.laplacian_energy(L, X.detach().numpy()), rel=1e-12)


def test_laplacian_energy_smooth_signal_is_low(W):
    # the eigenvector of the smallest eigenvalue, D^{1/2} 1, has zero energy
    L = m.laplacian(W)
    d = np.asarray(W.sum(1)).ravel()
    assert abs(m.laplacian_energy(L, np.sqrt(d)[:, None])) < 1e-9
    with pytest.raises(ValueError, match="rows"):
        m.laplacian_energy(L, np.zeros((W.shape[0] - 1, 2)))


# --------------------------------------------------------------------------------------
# denoisers
# --------------------------------------------------------------------------------------
def _low_rank(n=300, d=40, r=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, r)) @ rng.normal(size=(r, d))).astype(np.float32)


@pytest.mark.slow
def test_train_denoiser_beats_noisy_input_against_ground_truth():
    X = _low_rank()
    noise = m.GaussianNoise(0.8)
    model, hist = m.train_denoiser(
        X, noise, epochs=25, batch_size=64, lr=3e-3, device="cpu", seed=0, progress=False
    )
    assert list(hist.columns) == ["epoch", "train_loss", "val_loss"] and len(hist) == 25
    assert hist["val_loss"].iloc[-1] < 0.5 * hist["val_loss"].iloc[0]
    # architecture d -> 512 -> d with GELU
    lin = [mod for mod in model.modules() if isinstance(mod, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin] == [(40, 512), (512, 40)]
    assert any(isinstance(mod, torch.nn.GELU) for mod in model.modules())
    noisy = m.GaussianNoise(0.8, seed=123).sample(X.astype(np.float64))
    out = m.denoise(model, noisy)
    assert np.mean((out - X) ** 2) < 0.5 * np.mean((noisy - X) ** 2)  # noisy MSE is 0.64


def test_train_denoiser_seeded_and_gene_selection(W):
    X = np.random.default_rng(7).normal(size=(W.shape[0], 30)).astype(np.float32)
    X[:, :5] *= 4  # the five most variable columns
    heat = m.ManifoldHeat(m.symmetrized_operator(W), steps=2)
    kw = {"genes": 5, "epochs": 3, "hidden": 16, "device": "cpu", "seed": 3, "progress": False}
    m1, h1 = m.train_denoiser(X, heat, **kw)
    m2, h2 = m.train_denoiser(X, heat, **kw)
    pd.testing.assert_frame_equal(h1, h2)
    assert sorted(m1.genes.tolist()) == [0, 1, 2, 3, 4]
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    with pytest.raises(ValueError, match="cells"):
        m.train_denoiser(X[:-1], heat, epochs=1, progress=False)
    with pytest.raises(TypeError, match="NoiseProcess"):
        m.train_denoiser(X, "gaussian", epochs=1, progress=False)
    with pytest.raises(ValueError, match="val_fraction"):
        m.train_denoiser(X, heat, epochs=1, val_fraction=1.5, progress=False)


@pytest.mark.slow
def test_conditional_denoiser_and_iterative_sampling():
    # genes are smooth functions of the positions the graph was built on: blurring is partly invertible
    W, pts = random_knn_affinity(n=300, k=8, seed=2, return_points=True)
    rng = np.random.default_rng(8)
    S = m.symmetrized_operator(W)
    X = np.tanh(pts @ rng.normal(size=(3, 12))).astype(np.float32)
    heat = m.ManifoldHeat(S)
    model, hist = m.train_conditional_denoiser(
        X, heat, max_steps=4, hidden=64, epochs=60, lr=3e-3, device="cpu", seed=0, progress=False
    )
    assert len(hist) == 60 and hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    blurred = heat.sample(torch.from_numpy(X), steps=4).numpy()
    one = m.denoise(model, blurred, level=4)
    it = m.iterative_denoise(model, blurred, heat, steps=4)
    assert it.shape == X.shape
    # both reconstructions are closer to the clean X than the blurred input
    base = np.mean((blurred - X) ** 2)
    assert np.mean((one - X) ** 2) < base and np.mean((it - X) ** 2) < base
    # one iterative step from level 1 is exactly the one-step estimate at level 1
    b1 = heat.sample(torch.from_numpy(X), steps=1).numpy()
    np.testing.assert_allclose(m.iterative_denoise(model, b1, heat, steps=1), m.denoise(model, b1, level=1))


# --------------------------------------------------------------------------------------
# real data: PBMC 3k T cells
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pbmc_clustered(mirror):
    """PBMC 3k through the issue's pipeline (all genes kept; UMAP skipped, it plays no part here)."""
    from sccourse import datasets

    return m.preprocess_and_cluster(datasets.pbmc3k(), umap=False, seed=0)


@pytest.mark.slow
def test_t_cell_selection_against_seurat_annotation(pbmc_clustered):
    a = pbmc_clustered
    assert a.n_obs == 2700 and "leiden" in a.obs and a.n_vars == 13714  # genes seen in >= 3 cells
    table = m.marker_table(a, m.PBMC_MARKERS)
    assert table.shape == (a.obs["leiden"].nunique(), 7)
    mask = m.select_t_cells(a)
    is_t = a.obs["cell_type"].isin(T_TYPES).to_numpy()
    purity = (is_t & mask).sum() / mask.sum()
    recall = (is_t & mask).sum() / is_t.sum()
    assert purity >= 0.90
    assert recall >= 0.80


@pytest.mark.slow
def test_real_t_cell_graph_operators(pbmc_clustered):
    a = pbmc_clustered
    t = m.embed_cells(a[m.select_t_cells(a)].copy(), umap=False, diffmap=False, seed=0)
    W = sp.csr_matrix(t.obsp["connectivities"], dtype=np.float64)
    L = m.laplacian(W)
    np.testing.assert_allclose(L.toarray(), csgraph_laplacian(W.toarray(), normed=True), atol=1e-12)
    assert eigsh(L, k=1, which="SA")[0][0] >= -1e-8
    # the ad-hoc operator I - S is indefinite on this graph (S has an eigenvalue above 1)
    I_minus_S = sp.identity(W.shape[0]) - m.symmetrized_operator(W)
    assert eigsh(I_minus_S, k=1, which="SA")[0][0] < -1e-6
    X = t.X.toarray()[:, m.top_variable_genes(t.X, 200)]
    assert m.laplacian_energy(L, X) >= 0


def test_select_t_cells_on_synthetic_markers():
    import anndata as ad

    rng = np.random.default_rng(0)
    n = 90
    groups = np.repeat(["a", "b", "c"], 30)
    X = np.zeros((n, 3))
    X[groups == "b", 0] = rng.uniform(1.5, 2.5, 30)  # CD3D
    X[groups == "b", 1] = rng.uniform(1.5, 2.5, 30)  # CD3E
    X[groups == "c", 0] = rng.uniform(1.0, 2.0, 30)
    X[groups == "c", 1] = rng.uniform(1.0, 2.0, 30)
    X[groups == "a", 2] = 3.0
    a = ad.AnnData(
        X,
        obs=pd.DataFrame({"leiden": pd.Categorical(groups)}, index=[str(i) for i in range(n)]),
        var=pd.DataFrame(index=["CD3D", "CD3E", "LYZ"]),
    )
    assert m.t_cell_clusters(a) == ["b", "c"]
    np.testing.assert_array_equal(m.select_t_cells(a), groups != "a")
    with pytest.raises(ValueError, match="not in adata.var_names"):
        m.marker_table(a, ["CD3D", "MS4A1"])


def test_select_clusters_by_markers_rule_and_boundaries():
    import anndata as ad

    # group "x" scores 2.0 (cells 0, 2, 3, 3), "y" exactly half of it, "z" 0.6, "w" has MS4A1 only
    cells = {
        "x": [[0, 0, 0], [2, 2, 0], [3, 3, 0], [3, 3, 0]],
        "y": [[1.5, 0.5, 0]] * 3,
        "z": [[0, 1.2, 0]] * 2,
        "w": [[0, 0, 2], [0, 0, 3]],
    }
    rows = [(g, v) for g, vs in cells.items() for v in vs]
    groups = np.array([g for g, _ in rows])
    a = ad.AnnData(
        sp.csr_matrix(np.array([v for _, v in rows], dtype=float)),
        obs=pd.DataFrame({"cl": pd.Categorical(groups)}, index=[str(i) for i in range(len(rows))]),
        var=pd.DataFrame(index=["CD3D", "CD3E", "MS4A1"]),
    )
    # the group exactly at ratio x the best score is kept (>=), the mean of the markers is the score
    np.testing.assert_array_equal(m.select_clusters_by_markers(a, groupby="cl"), np.isin(groups, ["x", "y"]))
    np.testing.assert_array_equal(m.select_clusters_by_markers(a, groupby="cl", min_ratio=0.9), groups == "x")
    np.testing.assert_array_equal(m.select_clusters_by_markers(a, ["MS4A1"], groupby="cl"), groups == "w")
    # min_fraction: only 3 of the 4 cells of x express CD3
    np.testing.assert_array_equal(
        m.select_clusters_by_markers(a, groupby="cl", min_fraction=0.8), groups == "y"
    )
    # the names of the groups do not matter
    b = a.copy()
    b.obs["cl"] = b.obs["cl"].cat.rename_categories({"x": "9", "y": "0", "z": "3", "w": "1"})
    np.testing.assert_array_equal(
        m.select_clusters_by_markers(b, groupby="cl"), m.select_clusters_by_markers(a, groupby="cl")
    )


def test_split_cells_is_the_documented_permutation():
    tr, va = m.split_cells(50, 0.2, seed=7)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(7))
    assert torch.equal(va, perm[:10]) and torch.equal(tr, perm[10:])
    tr, va = m.split_cells(7, 0.25, seed=0)  # round(1.75) = 2 held out
    assert len(va) == 2 and len(tr) == 5 and set(tr.tolist()) | set(va.tolist()) == set(range(7))
    with pytest.raises(ValueError, match="val_fraction"):
        m.split_cells(10, 1.0)


# --------------------------------------------------------------------------------------
# the training-loop spy of the notebook's graded cell (sccourse._manifold_checks)
# --------------------------------------------------------------------------------------
def _reference_loop(X, noise, *, hidden, epochs, batch_size, lr, weight_decay, val_fraction, seed, flaw=None):
    """The loop the notebook asks for; ``flaw`` switches on one typical mistake."""
    from torch import nn

    if flaw != "unseeded":
        torch.manual_seed(seed)
    n, d = X.shape
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * n)
    val_idx, train_idx = perm[:n_val], (perm if flaw == "val in train" else perm[n_val:])
    model = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
    opt_cls = torch.optim.Adam if flaw == "adam" else torch.optim.AdamW
    opt = opt_cls(model.parameters(), lr=1e-3 if flaw == "lr ignored" else lr, weight_decay=weight_decay)
    loss_fn = nn.MSELoss()
    rows = []
    X_noisy = noise.sample(X) if flaw == "noise once" else None
    for epoch in range(1, epochs + 1):
        if flaw != "noise once":
            X_noisy = noise.sample(X)
        if flaw != "no train" or epoch == 1:
            model.train()
        order = train_idx if flaw == "no shuffle" else train_idx[torch.randperm(len(train_idx))]
        total = 0.0
        for start in range(0, len(order), batch_size):
            b = order[start : start + batch_size]
            if flaw != "no zero_grad":
                opt.zero_grad()
            loss = loss_fn(model(X_noisy[b]), X[b])
            loss.backward()
            opt.step()
            total += loss.item() * (batch_size if flaw == "unweighted" else len(b))
        model.eval()
        with torch.set_grad_enabled(flaw == "no no_grad"):
            inputs = X[val_idx] if flaw == "clean validation" else X_noisy[val_idx]
            val = loss_fn(model(inputs), X[val_idx]).item()
        rows.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": val})
    model.eval()
    return model, pd.DataFrame(rows)


_SPY_KW = {
    "hidden": 16,
    "epochs": 4,
    "batch_size": 32,
    "lr": 5e-3,
    "weight_decay": 1e-3,
    "val_fraction": 0.25,
    "seed": 2,
}


def _spied(loop, **extra):
    from sccourse._manifold_checks import CountingNoise, TrainingSpy

    X = torch.from_numpy(_low_rank(n=100, d=10))
    noise = CountingNoise(0.5, seed=1)
    with TrainingSpy(X, noise, hidden=_SPY_KW["hidden"]) as spy:
        model, hist = loop(X, noise, **_SPY_KW, **extra)
    check = {k: _SPY_KW[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "val_fraction", "seed")}
    return spy.problems(model, hist, **check)


def test_training_spy_passes_the_reference_loop_and_the_library():
    assert _spied(_reference_loop) == []
    assert _spied(lambda X, noise, **kw: m.train_denoiser(X, noise, device="cpu", progress=False, **kw)) == []


@pytest.mark.parametrize(
    ("flaw", "message"),
    [
        ("noise once", "noise.sample was called 1 times"),
        ("no zero_grad", "zero_grad"),
        ("val in train", "validation cells were used for training"),
        ("no train", "model.train()"),
        ("no no_grad", "torch.no_grad()"),
        ("unweighted", "weighted by batch size"),
        ("lr ignored", "learning rate"),
        ("adam", "AdamW"),
        ("no shuffle", "shuffle"),
        ("clean validation", "not this epoch's corrupted cells"),
    ],
)
def test_training_spy_names_each_broken_loop(flaw, message):
    found = _spied(_reference_loop, flaw=flaw)
    assert found and any(message in f for f in found), found


def test_training_spy_leaves_torch_untouched_and_removes_its_hooks():
    from torch import nn
    from torch.nn.modules import module as nn_module

    import sccourse._manifold_checks  # noqa: F401  (imports torch._dynamo, which rebinds torch.manual_seed)

    seed_function = torch.manual_seed
    torch.optim.AdamW(nn.Linear(2, 2).parameters())  # the first optimiser would import torch._dynamo
    assert torch.manual_seed is seed_function
    before = len(nn_module._global_forward_pre_hooks)
    _spied(_reference_loop)
    assert len(nn_module._global_forward_pre_hooks) == before


def test_train_denoiser_takes_any_noise_object_and_denoise_any_mlp():
    from torch import nn

    class Shift:  # not a NoiseProcess: only a sample(X) method
        calls = 0

        def sample(self, X):
            Shift.calls += 1
            return X + 1.0

    X = _low_rank(n=60, d=6)
    model, hist = m.train_denoiser(X, Shift(), hidden=8, epochs=3, device="cpu", progress=False)
    assert Shift.calls == 3 and len(hist) == 3
    mlp = nn.Sequential(nn.Linear(6, 4), nn.GELU(), nn.Linear(4, 6))
    assert m.denoise(mlp, X).shape == X.shape
    with pytest.raises(ValueError, match="columns"):
        m.denoise(mlp, X[:, :5])


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------
def test_plots_return_figures(W):
    import anndata as ad
    import matplotlib

    from sccourse import plotting

    rng = np.random.default_rng(0)
    n = W.shape[0]
    a = ad.AnnData(
        rng.random((n, 3)),
        var=pd.DataFrame(index=["CD3D", "CD3E", "LYZ"]),
        obs=pd.DataFrame(
            {"leiden": pd.Categorical(rng.integers(0, 3, n).astype(str))}, index=[str(i) for i in range(n)]
        ),
    )
    a.obsm["X_umap"] = rng.normal(size=(n, 2))
    a.obsm["X_diffmap"] = rng.normal(size=(n, 4))
    figs = [
        plotting.embedding_panels(a, ["leiden", "CD3D"]),
        plotting.embedding_panels(a, "leiden", basis="diffmap", components=(1, 2)),
        plotting.marker_matrixplot(m.marker_table(a, ["CD3D", "LYZ"]), highlight=["1"]),
        plotting.loss_histories(
            {"g": pd.DataFrame({"epoch": [1, 2], "train_loss": [2, 1], "val_loss": [2, 1.5]})}
        ),
        plotting.energy_bars({"real": 3.0, "denoised": 1.0}),
        plotting.denoised_marker_grid(a, {"raw": a.X, "x2": 2 * a.X}, ["CD3D", "LYZ"]),
    ]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs)
    with pytest.raises(ValueError, match="neither"):
        plotting.embedding_panels(a, ["nope"])
    with pytest.raises(ValueError, match="shape"):
        plotting.denoised_marker_grid(a, {"raw": a.X[:, :2]}, ["CD3D"])


def test_loss_histories_integer_epoch_ticks_and_named_curves():
    import matplotlib.pyplot as plt

    from sccourse import plotting

    h = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [2.0, 1.5, 1.2], "val_loss": [2.1, 1.7, 1.6]})
    fig = plotting.loss_histories({"heat": h, "Gaussian": h * [1, 0.9, 0.9]})
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "heat (training cells)",
        "heat (validation cells)",
        "Gaussian (training cells)",
        "Gaussian (validation cells)",
    ]
    plt.close("all")


def test_energy_bars_log_axis_shows_every_bar_with_plain_labels():
    import matplotlib.pyplot as plt

    from sccourse import plotting

    energies = {"clean": 1060.4, "heat": 1.78, "gauss": 896.1, "den-m": 18.0, "den-g": 185.2}
    fig = plotting.energy_bars(energies)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_yscale() == "log"
    lo, hi = ax.get_ylim()
    for bar, v in zip(ax.patches, energies.values()):
        assert bar.get_y() == pytest.approx(lo) and bar.get_y() + bar.get_height() == pytest.approx(v)
        assert lo < v < hi and v / lo > 2  # every bar stands clearly above the bottom of the axis
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["1,060", "1.78", "896", "18.0", "185"]
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and not any("e+" in t or "e-" in t for t in ticks)
    assert "log" in ax.get_ylabel()
    # a narrow range stays linear
    assert plotting.energy_bars({"a": 2.0, "b": 3.0}).axes[0].get_yscale() == "linear"
    plt.close("all")


def test_denoised_marker_grid_colour_scale_from_zero_and_labelled_colourbars():
    import anndata as ad
    import matplotlib.pyplot as plt

    from sccourse import plotting

    rng = np.random.default_rng(0)
    n = 80
    a = ad.AnnData(
        rng.random((n, 2)),
        var=pd.DataFrame(index=["CD3D", "CCR7"]),
        obs=pd.DataFrame(index=[str(i) for i in range(n)]),
    )
    a.obsm["X_umap"] = rng.normal(size=(n, 2))
    denoised = a.X - 0.3  # a denoiser can return negative values
    fig = plotting.denoised_marker_grid(
        a, {"raw": a.X, "denoised": denoised}, ["CD3D", "CCR7"], cbar_label="log1p expression"
    )
    from matplotlib.collections import PathCollection

    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    panels = [ax for ax in fig.axes if ax not in bars]
    scatters = [c for ax in panels for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 4 and all(c.norm.vmin == 0 for c in scatters)
    assert len(bars) == 2
    assert sorted(cb.get_xlabel() for cb in bars) == ["CCR7: log1p expression", "CD3D: log1p expression"]
    assert all(c.colorbar.extend in ("min", "both") for c in scatters if c.colorbar is not None)
    plt.close("all")


# --------------------------------------------------------------------------------------
# GPU: same numbers as on the CPU
# --------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_heat_noise_energy_match_cpu(W):
    S = m.symmetrized_operator(W)
    X = torch.from_numpy(np.random.default_rng(9).normal(size=(W.shape[0], 8)))
    heat = m.ManifoldHeat(S, steps=4)
    np.testing.assert_allclose(heat.sample(X.cuda()).cpu().numpy(), heat.sample(X).numpy(), atol=1e-10)
    g_cpu = m.GaussianNoise(0.3, seed=1).sample(X)
    g_gpu = m.GaussianNoise(0.3, seed=1).sample(X.cuda())
    np.testing.assert_allclose(g_gpu.cpu().numpy(), g_cpu.numpy(), atol=1e-12)
    L = m.laplacian(W)
    assert float(m.laplacian_energy(L, X.cuda())) == pytest.approx(float(m.laplacian_energy(L, X)), rel=1e-10)
    Ts = m.to_torch_sparse(S, device="cuda")
    assert Ts.device.type == "cuda"


@pytest.mark.gpu
def test_gpu_train_denoiser_close_to_cpu():
    X = _low_rank(n=200, d=20)
    kw = {"epochs": 5, "hidden": 32, "seed": 0, "progress": False}
    _, h_cpu = m.train_denoiser(X, m.GaussianNoise(0.5), device="cpu", **kw)
    _, h_gpu = m.train_denoiser(X, m.GaussianNoise(0.5), device="cuda", **kw)
    np.testing.assert_allclose(h_gpu["train_loss"], h_cpu["train_loss"], rtol=1e-3)


def test_training_leaves_the_global_random_state_alone():
    import torch

    from sccourse import manifold as M

    X = torch.rand(40, 6)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    M.train_denoiser(
        X, M.GaussianNoise(0.1, seed=0), epochs=2, hidden=8, device="cpu", seed=5, progress=False
    )
    assert torch.equal(torch.rand(3), expected), "a library call must not reseed the global generator"
    h1 = M.train_denoiser(
        X, M.GaussianNoise(0.1, seed=0), epochs=2, hidden=8, device="cpu", seed=5, progress=False
    )[1]
    h2 = M.train_denoiser(
        X, M.GaussianNoise(0.1, seed=0), epochs=2, hidden=8, device="cpu", seed=5, progress=False
    )[1]
    pd.testing.assert_frame_equal(h1, h2)


# --------------------------------------------------------------------------------------
# the subpackage: names, homes, sizes, shared checks, progress bars
# --------------------------------------------------------------------------------------
def test_public_names_resolve_to_their_homes_and_modules_stay_small():
    from pathlib import Path

    from sccourse import pp

    homes = {
        "_pipeline": {"marker_table", "t_cell_clusters", "select_clusters_by_markers", "select_t_cells"},
        "_graph": {"degree", "markov_operator", "symmetrized_operator", "laplacian", "laplacian_energy"}
        | {"to_torch_sparse", "to_torch"},
        "_noise": {"NoiseProcess", "GaussianNoise", "ManifoldHeat", "match_sigma"},
        "_denoise": {"Denoiser", "LevelDenoiser", "split_cells", "train_denoiser", "denoise"}
        | {"train_conditional_denoiser", "iterative_denoise"},
    }
    for sub, names in homes.items():
        for name in names:
            assert getattr(m, name).__module__ == f"sccourse.manifold.{sub}", name
    for name in ("preprocess_and_cluster", "embed_cells", "top_variable_genes"):
        assert getattr(m, name) is getattr(pp, name)
    assert m.PBMC_MARKERS == ("CD3D", "CD3E", "MS4A1", "LYZ", "NKG7", "GNLY", "PPBP")
    assert m.T_CELL_MARKERS == ("CD3D", "CD3E")
    assert sorted(m.__all__) == sorted(
        {n for ns in homes.values() for n in ns}
        | {"PBMC_MARKERS"}
        | {"T_CELL_MARKERS", "preprocess_and_cluster", "embed_cells", "top_variable_genes"}
    )
    for path in Path(m.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 500, path.name


@pytest.mark.parametrize("seed", [-1, 1.5, True, 2**40])
def test_seeds_are_checked_by_the_shared_validator(seed):
    with pytest.raises(ValueError, match="seed"):
        m.split_cells(10, seed=seed)
    with pytest.raises(ValueError, match="seed"):
        m.GaussianNoise(0.1, seed=seed)
    with pytest.raises(ValueError, match="seed"):
        m.train_denoiser(np.ones((10, 3)), m.GaussianNoise(0.1), epochs=1, seed=seed)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 1.0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"hidden": True}, "hidden"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"genes": 0}, "genes"),
        ({"genes": np.array([0, 9])}, "gene indices"),
        ({"progress": "yes"}, "progress"),
    ],
)
def test_train_denoiser_options_are_checked(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        m.train_denoiser(np.ones((10, 3)), m.GaussianNoise(0.1), **{"epochs": 1, **kwargs})


def test_other_bad_options_name_the_argument(W):
    heat = m.ManifoldHeat(m.symmetrized_operator(W))
    X = np.ones((W.shape[0], 4))
    with pytest.raises(ValueError, match="emb_dim"):
        m.train_conditional_denoiser(X, heat, emb_dim=7, epochs=1)
    with pytest.raises(ValueError, match="max_steps"):
        m.train_conditional_denoiser(X, heat, max_steps=0, epochs=1)
    with pytest.raises(TypeError, match="heat"):
        m.train_conditional_denoiser(X, m.GaussianNoise(0.1), epochs=1)
    with pytest.raises(ValueError, match="steps"):
        m.ManifoldHeat(m.symmetrized_operator(W), steps=1.5)
    with pytest.raises(ValueError, match="sigma"):
        m.GaussianNoise("0.1")
    with pytest.raises(ValueError, match="stat"):
        m.marker_table(_toy_groups(), ["CD3D"], stat="median")
    with pytest.raises(ValueError, match="groupby"):
        m.marker_table(_toy_groups(), ["CD3D"], groupby="clusters")
    with pytest.raises(ValueError, match="min_ratio"):
        m.select_t_cells(_toy_groups(), min_ratio=0)
    with pytest.raises(ValueError, match="min_fraction"):
        m.select_t_cells(_toy_groups(), min_fraction=1.5)
    with pytest.raises(TypeError, match="AnnData"):
        m.select_t_cells(np.ones((3, 3)))
    with pytest.raises(ValueError, match="markers"):
        m.marker_table(_toy_groups(), "CD3D")
    with pytest.raises(ValueError, match="at least one cell and one gene"):
        m.match_sigma(np.zeros((3, 0)), 1.0)
    with pytest.raises(ValueError, match="layout"):
        m.to_torch_sparse(W, layout="dense")


def _toy_groups():
    import anndata as ad

    a = ad.AnnData(np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]]))
    a.var_names = ["CD3D", "LYZ"]
    a.obs["leiden"] = pd.Categorical(["a", "a", "b"])
    return a


def test_progress_bars_follow_the_progress_option(capfd):
    X = _low_rank(n=40, d=5)
    m.train_denoiser(X, m.GaussianNoise(0.1), epochs=2, hidden=4, device="cpu")  # None: no terminal here
    assert "denoiser" not in capfd.readouterr().err
    m.train_denoiser(X, m.GaussianNoise(0.1), epochs=2, hidden=4, device="cpu", progress=True)
    assert "denoiser [GaussianNoise]" in capfd.readouterr().err
    m.train_denoiser(X, m.GaussianNoise(0.1), epochs=2, hidden=4, device="cpu", progress=False)
    assert "denoiser" not in capfd.readouterr().err
