"""sccourse.pp against scanpy, scikit-learn and numpy references; key_added; the old import paths."""

from __future__ import annotations

import random

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from sccourse import datasets, pp


def _counts(n=40, g=15, seed=0, sparse=True, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(2.0, 1.0, size=g), size=(n, g)).astype(dtype)
    a = ad.AnnData(sp.csr_matrix(X) if sparse else X)
    a.var_names = [f"g{i}" for i in range(g)]
    a.obs_names = [f"c{i}" for i in range(n)]
    return a


@pytest.fixture(scope="module")
def planted():
    """300 cells of 3 planted types, 200 genes (raw counts)."""
    return datasets.synthetic(300, 200, 3, seed=1)


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


# --------------------------------------------------------------------------------------
# old homes: the same objects
# --------------------------------------------------------------------------------------
def test_old_import_paths_are_the_same_functions():
    import sccourse._ee_data
    from sccourse import ee, manifold, nmf, qc

    assert qc.normalize_log1p is pp.normalize_log1p
    assert nmf.select_variable_genes is pp.select_variable_genes
    assert manifold.preprocess_and_cluster is pp.preprocess_and_cluster
    assert manifold.embed_cells is pp.embed_cells
    assert manifold.top_variable_genes is pp.top_variable_genes
    assert sccourse._ee_data.prepare_pcs is pp.prepare_pcs
    assert ee.prepare_pcs is pp.prepare_pcs
    assert sccourse.pp is pp  # lazy submodule of the package
    assert "pp" in dir(sccourse)
    for name in pp.__all__:
        assert hasattr(pp, name), name


# --------------------------------------------------------------------------------------
# normalize_log1p
# --------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Some cells have zero counts")
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_normalize_log1p_matches_scanpy_and_the_formula(sparse, dtype):
    a = _counts(sparse=False, dtype=dtype)
    a.X[0] = 0  # a cell without counts stays zero
    if sparse:
        a.X = sp.csr_matrix(a.X)
    raw = _dense(a.X).astype(np.float64)
    ref = a.copy()
    ref.X = ref.X.astype(np.float64)
    sc.pp.normalize_total(ref, target_sum=50.0)
    sc.pp.log1p(ref)
    out = pp.normalize_log1p(a, target_sum=50.0)
    assert out is a
    totals = raw.sum(axis=1, keepdims=True)
    formula = np.log1p(np.divide(50.0 * raw, totals, out=np.zeros_like(raw), where=totals > 0))
    np.testing.assert_allclose(_dense(a.X), formula, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_dense(a.X), _dense(ref.X), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_dense(a.layers["counts"]), raw)
    assert not np.any(_dense(a.X)[0])


def test_normalize_log1p_key_added_names_the_counts_layer_and_is_validated():
    a = _counts()
    raw = a.X.toarray()
    pp.normalize_log1p(a, key_added="raw")
    assert list(a.layers) == ["raw"]
    np.testing.assert_array_equal(a.layers["raw"].toarray(), raw)
    with pytest.raises(ValueError, match=r"layers\['raw'\] already exists"):
        pp.normalize_log1p(a, key_added="raw")
    for bad, err in (("", ValueError), ("a/b", ValueError), (3, TypeError), (None, TypeError)):
        b = _counts()
        before = b.X.toarray()
        with pytest.raises(err, match="key_added"):
            pp.normalize_log1p(b, key_added=bad)
        assert not b.layers and np.array_equal(b.X.toarray(), before)  # validated before writing


def test_normalize_log1p_one_cell():
    a = _counts(n=1)
    x = a.X.toarray().ravel().astype(np.float64)
    pp.normalize_log1p(a, target_sum=10)
    np.testing.assert_allclose(a.X.toarray().ravel(), np.log1p(10 * x / x.sum()), rtol=1e-6)


# --------------------------------------------------------------------------------------
# variable genes
# --------------------------------------------------------------------------------------
def test_select_variable_genes_against_scanpy(planted):
    a = planted
    out = pp.select_variable_genes(a, 50)
    b = a.copy()
    b.X = b.X.astype(np.float64)
    sc.pp.normalize_total(b, target_sum=1e6)
    sc.pp.log1p(b)
    v = np.var(b.X.toarray(), axis=0, ddof=1)
    expected = np.sort(np.argsort(-v, kind="stable")[:50])
    assert list(out.var_names) == list(a.var_names[expected])
    np.testing.assert_allclose(out.var["log1p_cpm_var"], v[expected], rtol=1e-10)
    assert sp.issparse(out.X) and out.X.dtype.kind == "i"  # raw counts kept
    assert pp.select_variable_genes(a, 1000).n_vars == 200
    assert "log1p_cpm_var" not in a.var  # the input is left alone


def test_select_variable_genes_key_added_and_layer():
    a = _counts(n=30, g=12)
    a.layers["raw"] = a.X.copy()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))  # .X no longer counts: rank on the layer
    out = pp.select_variable_genes(a, 5, layer="raw", key_added="var_cpm")
    assert "var_cpm" in out.var and "log1p_cpm_var" not in out.var and out.n_vars == 5
    with pytest.raises(TypeError, match="key_added"):
        pp.select_variable_genes(a, 5, layer="raw", key_added=1)
    with pytest.raises(ValueError, match="integer counts"):
        pp.select_variable_genes(a, 5)


@pytest.mark.parametrize("kind", ["numpy", "sparse", "torch"])
def test_top_variable_genes_against_numpy(kind):
    import torch

    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 30)) * rng.uniform(0.1, 3, size=30)
    X[:, 7] = X[:, 3]  # a tie: the lower index first
    ref = np.argsort(-X.var(axis=0), kind="stable")
    M = {"numpy": X, "sparse": sp.csr_matrix(X), "torch": torch.from_numpy(X)}[kind]
    np.testing.assert_array_equal(pp.top_variable_genes(M, 10), ref[:10])
    assert list(pp.top_variable_genes(M, 100)) == list(ref)
    assert pp.top_variable_genes(X[:1], 3).shape == (3,)  # one cell: every variance 0, index order


# --------------------------------------------------------------------------------------
# prepare_pcs
# --------------------------------------------------------------------------------------
def test_prepare_pcs_against_sklearn_pca(planted):
    a = planted.copy()
    before = a.X.copy()
    out = pp.prepare_pcs(a, n_top_genes=100, n_pcs=10, seed=0)
    assert (a.X != before).nnz == 0 and "X_pca" not in a.obsm  # the input is not modified
    # reference: the same preparation by hand, PCA by scikit-learn
    ref = planted.copy()
    ref.X = ref.X.astype(np.float32)
    sc.pp.filter_genes(ref, min_cells=3)
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=100, flavor="seurat")
    ref = ref[:, ref.var["highly_variable"].to_numpy()].copy()
    Z = ref.X.toarray().astype(np.float64)
    Z = (Z - Z.mean(0)) / Z.std(0, ddof=1)
    Z = np.minimum(Z, 10)
    skl = PCA(n_components=10, svd_solver="full").fit(Z)
    scores = skl.transform(Z)
    assert list(out.var_names) == list(ref.var_names)
    np.testing.assert_allclose(out.uns["pca"]["variance_ratio"], skl.explained_variance_ratio_, rtol=1e-3)
    np.testing.assert_allclose(np.abs(out.obsm["X_pca"]), np.abs(scores), atol=2e-3 * np.abs(scores).max())
    assert out.varm["PCs"].shape == (100, 10)


def test_prepare_pcs_key_added_subsample_and_global_state(planted):
    np.random.seed(5)  # noqa: NPY002 (the caller's global state must survive the call)
    random.seed(5)
    expected = (np.random.random(), random.random())  # noqa: NPY002
    np.random.seed(5)  # noqa: NPY002
    random.seed(5)
    out = pp.prepare_pcs(planted, n_top_genes=None, n_pcs=5, n_cells=120, seed=3, key_added="pcs")
    assert (np.random.random(), random.random()) == expected  # noqa: NPY002
    assert out.n_obs == 120 and out.obsm["pcs"].shape == (120, 5)
    assert "X_pca" not in out.obsm and "pcs" in out.varm and "pcs" in out.uns
    picked = np.sort(np.random.default_rng(3).choice(300, size=120, replace=False))
    assert list(out.obs_names) == list(planted.obs_names[picked])
    again = pp.prepare_pcs(planted, n_top_genes=None, n_pcs=5, n_cells=120, seed=3, key_added="pcs")
    np.testing.assert_array_equal(again.obsm["pcs"], out.obsm["pcs"])


def test_prepare_pcs_drops_unlabelled_cells(planted):
    a = planted.copy()
    a.obs["cell_type"] = a.obs["cell_type"].astype(object)
    a.obs.iloc[:10, a.obs.columns.get_loc("cell_type")] = None
    a.obs["cell_type"] = a.obs["cell_type"].astype("category")
    out = pp.prepare_pcs(a, n_top_genes=None, n_pcs=4, label_key="cell_type")
    assert out.n_obs == 290 and out.obs["cell_type"].notna().all()
    with pytest.raises(ValueError, match="nope"):
        pp.prepare_pcs(a, label_key="nope")


# --------------------------------------------------------------------------------------
# the clustering pipeline
# --------------------------------------------------------------------------------------
def _scanpy_pipeline(a, *, n_neighbors=15, n_pcs=30, resolution=0.5, seed=0):
    r = a.copy()
    sc.pp.filter_genes(r, min_cells=3)
    sc.pp.normalize_total(r, target_sum=1e4)
    sc.pp.log1p(r)
    sc.pp.pca(r, n_comps=min(50, min(r.shape) - 1), random_state=seed)
    sc.pp.neighbors(r, n_neighbors=n_neighbors, n_pcs=n_pcs, random_state=seed)
    sc.tl.leiden(r, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
    return r


def test_preprocess_and_cluster_matches_scanpy_and_finds_the_planted_types(planted):
    a = planted.copy()
    out = pp.preprocess_and_cluster(a, umap=False, seed=0, resolution=0.3)
    assert "leiden" not in a.obs and "counts" not in a.layers  # copy=True leaves the input alone
    ref = _scanpy_pipeline(planted, resolution=0.3)
    np.testing.assert_array_equal(out.obs["leiden"].to_numpy(), ref.obs["leiden"].to_numpy())
    np.testing.assert_allclose(out.obsm["X_pca"], ref.obsm["X_pca"], rtol=1e-5, atol=1e-5)
    assert (out.obsp["connectivities"] != ref.obsp["connectivities"]).nnz == 0
    np.testing.assert_array_equal(out.layers["counts"].toarray(), planted[:, out.var_names].X.toarray())
    assert adjusted_rand_score(planted.obs["cell_type"], out.obs["leiden"]) > 0.9


def test_preprocess_and_cluster_key_added_names_every_slot(planted):
    base = pp.preprocess_and_cluster(planted, umap=False, seed=0)
    a = planted.copy()
    a.obsm["X_pca"] = np.zeros((a.n_obs, 2))  # an earlier result that must survive
    out = pp.preprocess_and_cluster(a, umap=False, seed=0, copy=False, key_added="run2")
    assert out is a
    np.testing.assert_array_equal(a.obsm["X_pca"], 0.0)
    assert {"run2_counts"} == set(a.layers)
    assert {"X_pca", "X_run2_pca"} == set(a.obsm)
    assert {"run2_neighbors_distances", "run2_neighbors_connectivities"} == set(a.obsp)
    assert "leiden" not in a.obs and "run2_leiden" in a.obs
    assert {"X_run2_pca", "run2_neighbors", "run2_leiden"} <= set(a.uns)
    assert not {"pca", "neighbors", "leiden"} & set(a.uns)
    np.testing.assert_array_equal(a.obs["run2_leiden"].to_numpy(), base.obs["leiden"].to_numpy())
    np.testing.assert_allclose(a.obsm["X_run2_pca"], base.obsm["X_pca"], rtol=1e-6, atol=1e-6)


def test_preprocess_and_cluster_validates_before_writing(planted):
    a = planted.copy()
    for kwargs, err, match in (
        ({"key_added": ""}, ValueError, "key_added"),
        ({"key_added": 7}, TypeError, "key_added"),
        ({"n_pcs": 60}, ValueError, "n_pcs"),
        ({"umap": "yes"}, ValueError, "umap"),
        ({"keep_genes": "CD3D"}, ValueError, "keep_genes"),
        ({"seed": 2**40}, ValueError, "seed"),
    ):
        with pytest.raises(err, match=match):
            pp.preprocess_and_cluster(a, copy=False, **kwargs)
    assert a.n_vars == planted.n_vars and not a.layers and not a.obsm and "leiden" not in a.obs


def test_preprocess_and_cluster_quick_variant_keeps_the_markers(planted):
    a = planted.copy()
    a.var_names = ["CD3D", *a.var_names[1:]]
    X = a.X.toarray()
    X[:, 0] = 1  # constant: the least variable gene, kept only as a marker
    a.X = sp.csr_matrix(X)
    out = pp.preprocess_and_cluster(a, n_top_genes=30, umap=False)
    assert "CD3D" in out.var_names and out.n_vars == 31
    out2 = pp.preprocess_and_cluster(a, n_top_genes=30, keep_genes=[], umap=False)
    assert "CD3D" not in out2.var_names and out2.n_vars == 30


def test_embed_cells_cosine_graph_and_keyed_diffmap(planted):
    a = pp.preprocess_and_cluster(planted, umap=False)
    t = a[a.obs["leiden"] == a.obs["leiden"].cat.categories[0]].copy()
    out = pp.embed_cells(t, umap=False, seed=0, n_neighbors=10)
    ref = t.copy()
    sc.pp.pca(ref, n_comps=50, random_state=0)
    sc.pp.neighbors(ref, n_neighbors=10, n_pcs=30, metric="cosine", random_state=0)
    sc.tl.diffmap(ref, n_comps=10)
    assert (out.obsp["connectivities"] != ref.obsp["connectivities"]).nnz == 0
    np.testing.assert_allclose(np.abs(out.obsm["X_diffmap"]), np.abs(ref.obsm["X_diffmap"]), atol=1e-6)
    # keyed: nothing stored under scanpy's names is touched
    keyed = out.copy()
    old_dm = keyed.obsm["X_diffmap"].copy()
    pp.embed_cells(keyed, umap=False, seed=0, n_neighbors=10, copy=False, key_added="t")
    np.testing.assert_array_equal(keyed.obsm["X_diffmap"], old_dm)
    np.testing.assert_allclose(np.abs(keyed.obsm["X_t_diffmap"]), np.abs(old_dm), atol=1e-6)
    assert "t_diffmap_evals" in keyed.uns and "t_neighbors_connectivities" in keyed.obsp
    assert (keyed.obsp["t_neighbors_connectivities"] != out.obsp["connectivities"]).nnz == 0
    with pytest.raises(ValueError, match="metric"):
        pp.embed_cells(t, metric="bogus")


@pytest.mark.slow
def test_umap_under_a_key(planted):
    out = pp.preprocess_and_cluster(planted, seed=0, key_added="k")
    assert out.obsm["X_k_umap"].shape == (300, 2) and "X_umap" not in out.obsm and "X_k_umap" in out.uns


# --------------------------------------------------------------------------------------
# grading: the notebooks' forbid lists still block every moved function
# --------------------------------------------------------------------------------------
_NOTEBOOK_RULES = [
    # (notebook's forbid targets, old home, name)
    (("scanpy.pp", "sccourse.qc", "sklearn.preprocessing"), "sccourse.qc", "normalize_log1p"),  # 00
    (("scanpy.pp", "sccourse.qc"), "sccourse.qc", "normalize_log1p"),  # 00
    (
        ("sccourse.nmf", "sccourse._nmf_kernels", "sklearn.decomposition"),
        "sccourse.nmf",
        "select_variable_genes",
    ),
    (("sccourse.manifold",), "sccourse.manifold", "preprocess_and_cluster"),  # 01
    (("sccourse.manifold",), "sccourse.manifold", "embed_cells"),
    (("sccourse.manifold",), "sccourse.manifold", "top_variable_genes"),
    (("sccourse.ee", "sccourse._ee_kernels"), "sccourse.ee", "prepare_pcs"),  # 04
    (("sccourse",), "sccourse.pp", "prepare_pcs"),
]


@pytest.mark.parametrize(("targets", "home", "name"), _NOTEBOOK_RULES)
def test_notebook_forbid_lists_still_block_the_moved_functions(targets, home, name):
    import importlib
    import inspect

    from sccourse import grading

    def n_required(f):
        return sum(
            p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
            for p in inspect.signature(f).parameters.values()
        )

    for module in (home, "sccourse.pp"):  # the old name and the new home: the same function
        fn = getattr(importlib.import_module(module), name)
        with pytest.raises(grading.ShortcutError, match=name):
            with grading.forbid(*targets, task="answer"):
                fn(*[None] * n_required(fn))  # blocked at the call, before it looks at its arguments


def test_forbidding_a_topic_does_not_block_the_shared_checks():
    from sccourse import grading
    from sccourse._validation import check_counts

    for target in ("sccourse.qc", "sccourse.nmf", "sccourse.manifold"):
        with grading.forbid(target):
            check_counts(np.ones((2, 2)))
