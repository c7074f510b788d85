"""Bad input to every public function gives a clear error: the right exception type and a message that names the
argument (or what was wrong), never a silent wrong result or a crash deep inside numpy, torch or scikit-learn.

Each probe is (function call, expected exception types, a pattern the message must contain).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sccourse import datasets, ee, manifold, metrics, nmf, pp, qc, simulate


def _counts(n=30, g=12, seed=0):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(2.0, size=(n, g)).astype(np.float32)))
    a.var_names = [f"g{i}" for i in range(g - 2)] + ["MT-A", "MT-B"]
    a.obs_names = [f"c{i}" for i in range(n)]
    return a


def _log_data():
    a = _counts()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    return a


def _neg():
    a = _counts()
    X = a.X.toarray()
    X[0, 0] = -1
    a.X = sp.csr_matrix(X)
    return a


def _nan():
    a = _counts()
    X = a.X.toarray()
    X[0, 0] = np.nan
    a.X = X
    return a


NMF_W = np.random.default_rng(4).random((12, 3))
NMF_H = np.random.default_rng(5).random((3, 30))
GENES = [f"g{i}" for i in range(12)]
EMB = np.random.default_rng(0).normal(size=(40, 3))
LAB = np.repeat(["a", "b"], 20)
V = ValueError
T = (TypeError, ValueError)

PROBES = [
    # qc
    ("qc_metrics not AnnData", lambda: qc.qc_metrics(np.ones((3, 3))), T, "AnnData"),
    ("qc_metrics negative counts", lambda: qc.qc_metrics(_neg()), V, "non-negative"),
    ("qc_metrics NaN counts", lambda: qc.qc_metrics(_nan()), V, "NaN"),
    ("qc_metrics log data", lambda: qc.qc_metrics(_log_data()), V, "integer counts"),
    ("filter min_genes negative", lambda: qc.filter_cells_genes(_counts(), min_genes=-1), V, "min_genes"),
    ("filter log data", lambda: qc.filter_cells_genes(_log_data()), V, "integer counts"),
    ("normalize target_sum 0", lambda: qc.normalize_log1p(_counts(), target_sum=0), V, "target_sum"),
    (
        "normalize target_sum NaN",
        lambda: qc.normalize_log1p(_counts(), target_sum=float("nan")),
        V,
        "target_sum",
    ),
    ("top_genes_by_fraction n=0", lambda: qc.top_genes_by_fraction(_counts(), n=0), V, "n must"),
    # nmf
    ("nmf negative", lambda: nmf.nmf(-np.ones((5, 4)), 2), V, "negative"),
    ("nmf NaN", lambda: nmf.nmf(np.full((5, 4), np.nan), 2), V, "NaN"),
    ("nmf 1-D", lambda: nmf.nmf(np.ones(5), 2), V, "2-D"),
    ("nmf all zero", lambda: nmf.nmf(np.zeros((5, 4)), 2), V, "all zero"),
    ("nmf K too large", lambda: nmf.nmf(np.ones((5, 4)), 9), V, "n_components"),
    ("nmf K=0", lambda: nmf.nmf(np.ones((5, 4)), 0), V, "n_components"),
    ("nmf bad loss", lambda: nmf.nmf(np.ones((5, 4)), 2, loss="kl"), V, "loss"),
    ("nmf bad orientation", lambda: nmf.nmf(np.ones((5, 4)), 2, orientation="rows"), V, "orientation"),
    ("nmf max_iter 0", lambda: nmf.nmf(np.ones((5, 4)), 2, max_iter=0), V, "max_iter"),
    ("nmf seed -1", lambda: nmf.nmf(np.ones((5, 4)), 2, seed=-1), V, "seed"),
    ("nmf labels wrong length", lambda: nmf.nmf(np.ones((5, 4)), 2, labels=[1, 2]), V, "labels"),
    ("nmf strings", lambda: nmf.nmf(np.array([["a", "b"], ["c", "d"]]), 1), V, "dtype"),
    (
        "nmf init shapes",
        lambda: nmf.nmf(np.ones((5, 4)), 2, init=(np.ones((5, 3)), np.ones((3, 4)))),
        V,
        "init",
    ),
    (
        "select_variable_genes not AnnData",
        lambda: nmf.select_variable_genes(np.ones((3, 3)), 2),
        T,
        "AnnData",
    ),
    ("select_variable_genes n=0", lambda: nmf.select_variable_genes(_counts(), 0), V, "n_top_genes"),
    ("select_variable_genes one cell", lambda: nmf.select_variable_genes(_counts(n=1), 2), V, "two cells"),
    # simulate
    ("nb_logpmf mu<0", lambda: simulate.nb_logpmf(1, -1.0, 2.0), V, "mu"),
    ("nb_logpmf r=0", lambda: simulate.nb_logpmf(1, 1.0, 0.0), V, "r "),
    ("zinb_logpmf r NaN", lambda: simulate.zinb_logpmf(1, 1.0, float("nan"), 0.0), V, "r "),
    ("sample_nb negative mean", lambda: simulate.sample_nb(np.array([-1.0]), np.array([1.0])), V, "mu"),
    (
        "fit unknown column",
        lambda: simulate.NegBinRegressionSimulator().fit(
            ad.AnnData(np.ones((5, 2)), obs={"x": np.arange(5.0)}), {"mean": "~ y", "dispersion": "~ 1"}
        ),
        V,
        "'y'",
    ),
    (
        "fit negative counts",
        lambda: simulate.NegBinRegressionSimulator().fit(
            ad.AnnData(-np.ones((5, 2)), obs={"x": np.arange(5.0)}), {"mean": "~ x", "dispersion": "~ 1"}
        ),
        V,
        "non-negative",
    ),
    (
        "fit unknown part",
        lambda: simulate.NegBinRegressionSimulator().fit(
            ad.AnnData(np.ones((5, 2)), obs={"x": np.arange(5.0)}), {"mean": "~ x", "disp": "~ 1"}
        ),
        V,
        "disp",
    ),
    # datasets
    ("synthetic n_markers -1", lambda: datasets.synthetic(n_markers=-1), V, "n_markers"),
    ("synthetic fold_change NaN", lambda: datasets.synthetic(fold_change=float("nan")), V, "fold_change"),
    ("synthetic n_cells 0", lambda: datasets.synthetic(0), V, "n_cells"),
    ("synthetic seed -1", lambda: datasets.synthetic(seed=-1), V, "seed"),
    ("synthetic n_cells float", lambda: datasets.synthetic(10.5), V, "n_cells"),
    ("baron bad mouse", lambda: datasets.baron_mouse_pancreas(mice=("mouse3",)), V, "mice"),
    # manifold, on AnnData counts (the rest: tests/test_probes_manifold.py)
    ("preprocess negative counts", lambda: manifold.preprocess_and_cluster(_neg()), V, "non-negative"),
    ("preprocess log data", lambda: manifold.preprocess_and_cluster(_log_data()), V, "integer counts"),
    (
        "preprocess resolution NaN",
        lambda: manifold.preprocess_and_cluster(_counts(), resolution=float("nan")),
        V,
        "resolution",
    ),
    # qc: gene names, thresholds, empty matrices
    ("mito_genes a single string", lambda: qc.mito_genes("MT-CO1"), V, "var_names"),
    ("mito_genes a number", lambda: qc.mito_genes(5), V, "var_names"),
    ("mito_genes 2-D names", lambda: qc.mito_genes(np.array([["MT-1", "a"]])), V, "var_names"),
    ("mito_genes empty prefix", lambda: qc.mito_genes(["MT-1", "A"], prefix=""), V, "prefix"),
    ("mito_genes prefix int", lambda: qc.mito_genes(["MT-1"], prefix=3), V, "prefix"),
    ("mito_genes prefix empty tuple", lambda: qc.mito_genes(["MT-1"], prefix=()), V, "prefix"),
    ("qc_metrics empty mito_prefix", lambda: qc.qc_metrics(_counts(), mito_prefix=""), V, "mito_prefix"),
    ("cell_gene_masks not AnnData", lambda: qc.cell_gene_masks(np.ones((3, 3))), T, "AnnData"),
    ("cell_gene_masks NaN counts", lambda: qc.cell_gene_masks(_nan()), V, "NaN"),
    ("cell_gene_masks negative counts", lambda: qc.cell_gene_masks(_neg()), V, "non-negative"),
    ("cell_gene_masks log data", lambda: qc.cell_gene_masks(_log_data()), V, "integer counts"),
    ("cell_gene_masks min_genes float", lambda: qc.cell_gene_masks(_counts(), min_genes=1.5), V, "min_genes"),
    ("cell_gene_masks min_cells -1", lambda: qc.cell_gene_masks(_counts(), min_cells=-1), V, "min_cells"),
    (
        "cell_gene_masks max_genes <= min_genes",
        lambda: qc.cell_gene_masks(_counts(), min_genes=5, max_genes=5),
        V,
        "max_genes",
    ),
    (
        "cell_gene_masks max_pct_mt NaN",
        lambda: qc.cell_gene_masks(_counts(), max_pct_mt=float("nan")),
        V,
        "max_pct_mt",
    ),
    (
        "cell_gene_masks max_pct_mt 150",
        lambda: qc.cell_gene_masks(_counts(), max_pct_mt=150),
        V,
        "max_pct_mt",
    ),
    ("cell_gene_masks max_pct_mt -1", lambda: qc.cell_gene_masks(_counts(), max_pct_mt=-1), V, "max_pct_mt"),
    ("filter max_genes -1", lambda: qc.filter_cells_genes(_counts(), max_genes=-1), V, "max_genes"),
    (
        "top_genes_by_fraction no cells",
        lambda: qc.top_genes_by_fraction(ad.AnnData(sp.csr_matrix((0, 12), dtype=np.float32))),
        V,
        "one cell",
    ),
    ("top_genes_by_fraction NaN counts", lambda: qc.top_genes_by_fraction(_nan()), V, "NaN"),
    # nmf: starting factors, result container, loadings
    ("initialize seed -1", lambda: nmf.initialize(np.ones((5, 4)), 2, seed=-1), V, "seed"),
    ("initialize seed float", lambda: nmf.initialize(np.ones((5, 4)), 2, seed=1.5), V, "seed"),
    ("initialize K too large", lambda: nmf.initialize(np.ones((5, 4)), 9), V, "n_components"),
    ("initialize bad init", lambda: nmf.initialize(np.ones((5, 4)), 2, init="svd"), V, "init"),
    ("initialize negative", lambda: nmf.initialize(-np.ones((5, 4)), 2), V, "negative"),
    ("initialize NaN", lambda: nmf.initialize(np.full((5, 4), np.nan), 2), V, "NaN"),
    ("initialize 1-D", lambda: nmf.initialize(np.ones(5), 2), V, "2-D"),
    (
        "initialize orientation",
        lambda: nmf.initialize(np.ones((5, 4)), 2, orientation="rows"),
        V,
        "orientation",
    ),
    ("factor_shares strings", lambda: nmf.factor_shares(NMF_W.astype(str), NMF_H), V, "W must hold"),
    ("factor_shares shapes", lambda: nmf.factor_shares(NMF_W, NMF_H[:2]), V, "K x cells"),
    ("factor_shares NaN", lambda: nmf.factor_shares(NMF_W, np.full_like(NMF_H, np.nan)), V, "finite"),
    ("factor_shares negative", lambda: nmf.factor_shares(-NMF_W, NMF_H), V, "non-negative"),
    (
        "top_genes NaN loadings",
        lambda: nmf.top_genes(np.full_like(NMF_W, np.nan), GENES),
        V,
        "W contains NaN",
    ),
    ("top_genes names length", lambda: nmf.top_genes(NMF_W, GENES[:5]), V, "one name per gene"),
    ("top_genes n too large", lambda: nmf.top_genes(NMF_W, GENES, n=50), V, "n="),
    ("top_genes n float", lambda: nmf.top_genes(NMF_W, GENES, n=2.5), V, "n must"),
    ("top_genes strings", lambda: nmf.top_genes(NMF_W.astype(str), GENES), V, "W must hold"),
    ("nmf_adata not AnnData", lambda: nmf.nmf_adata(np.ones((5, 4)), 2), T, "AnnData"),
    ("nmf_adata layer missing", lambda: nmf.nmf_adata(_counts(), 2, layer="raw"), V, "layer"),
    ("nmf_adata labels_key missing", lambda: nmf.nmf_adata(_counts(), 2, labels_key="type"), V, "labels_key"),
    ("nmf_adata key_added ''", lambda: nmf.nmf_adata(_counts(), 2, key_added=""), V, "key_added"),
    ("nmf_adata NaN", lambda: nmf.nmf_adata(_nan(), 2), V, "NaN"),
    (
        "nmf_adata orientation",
        lambda: nmf.nmf_adata(_counts(), 2, orientation="cells_x_genes"),
        V,
        "orientation",
    ),
    (
        "NMFResult shapes",
        lambda: nmf.NMFResult(NMF_W, NMF_H[:2], pd.DataFrame(), "sse", 1),
        V,
        "K x cells",
    ),
    ("NMFResult loss", lambda: nmf.NMFResult(NMF_W, NMF_H, pd.DataFrame(), "kl", 1), V, "loss"),
    ("NMFResult n_iter", lambda: nmf.NMFResult(NMF_W, NMF_H, pd.DataFrame(), "sse", -1), V, "n_iter"),
    # manifold.embed_cells (pp.embed_cells) on AnnData
    ("embed_cells NaN", lambda: manifold.embed_cells(_nan()), V, "NaN"),
    ("embed_cells n_neighbors 0", lambda: manifold.embed_cells(_log_data(), n_neighbors=0), V, "n_neighbors"),
    # metrics
    ("evaluate_ari 2-D labels", lambda: metrics.evaluate_ari(EMB, np.ones((40, 2))), V, "labels"),
    (
        "evaluate_ari resolution NaN",
        lambda: metrics.evaluate_ari(EMB, LAB, resolution=float("nan")),
        V,
        "resolution",
    ),
    ("evaluate_ari resolution 0", lambda: metrics.evaluate_ari(EMB, LAB, resolution=0), V, "resolution"),
    ("evaluate_ari seed -1", lambda: metrics.evaluate_ari(EMB, LAB, seed=-1), V, "seed"),
    ("evaluate_ari wrong length", lambda: metrics.evaluate_ari(EMB, LAB[:10]), V, "labels"),
    ("evaluate_ari NaN embedding", lambda: metrics.evaluate_ari(np.full((40, 2), np.nan), LAB), V, "NaN"),
    ("knn_preservation k too large", lambda: metrics.knn_preservation(EMB, EMB, k=40), V, "k must"),
    ("knn_preservation rows differ", lambda: metrics.knn_preservation(EMB, EMB[:10]), V, "rows"),
    ("trustworthiness k 0", lambda: metrics.trustworthiness(EMB, EMB, k=0), V, "k"),
    ("trustworthiness k float", lambda: metrics.trustworthiness(EMB, EMB, k=2.5), V, "k must"),
    ("knn_preservation k float", lambda: metrics.knn_preservation(EMB, EMB, k=2.5), V, "k must"),
    ("knn_preservation strings", lambda: metrics.knn_preservation(EMB.astype(str), EMB), V, "X_high"),
    ("evaluate_ari string embedding", lambda: metrics.evaluate_ari(EMB.astype(str), LAB), V, "embedding"),
    ("leiden_labels 1-D", lambda: metrics.leiden_labels(np.ones(5)), V, "2-D"),
    ("leiden_labels NaN", lambda: metrics.leiden_labels(np.full((40, 2), np.nan)), V, "NaN"),
    ("leiden_labels strings", lambda: metrics.leiden_labels(EMB.astype(str)), V, "embedding"),
    ("leiden_labels resolution 0", lambda: metrics.leiden_labels(EMB, resolution=0), V, "resolution"),
    ("leiden_labels n_neighbors 1", lambda: metrics.leiden_labels(EMB, n_neighbors=1), V, "n_neighbors"),
    ("leiden_labels one cell", lambda: metrics.leiden_labels(EMB[:1]), V, "n_neighbors"),
    ("leiden_labels seed float", lambda: metrics.leiden_labels(EMB, seed=0.5), V, "seed"),
    (
        "knn_preservation_at_size size float",
        lambda: metrics.knn_preservation_at_size(EMB, EMB, 20.5),
        V,
        "size",
    ),
    ("knn_preservation_at_size size <= k", lambda: metrics.knn_preservation_at_size(EMB, EMB, 5), V, "size"),
    (
        "knn_preservation_at_size n_draws 0",
        lambda: metrics.knn_preservation_at_size(EMB, EMB, 20, n_draws=0),
        V,
        "n_draws",
    ),
    (
        "knn_preservation_at_size seed -1",
        lambda: metrics.knn_preservation_at_size(EMB, EMB, 20, seed=-1),
        V,
        "seed",
    ),
    (
        "knn_preservation_at_size index out of range",
        lambda: metrics.knn_preservation_at_size(EMB, EMB, 20, index=np.arange(50)),
        V,
        "index",
    ),
    (
        "knn_preservation_at_size index negative",
        lambda: metrics.knn_preservation_at_size(EMB, EMB, 20, index=-np.arange(30)),
        V,
        "index",
    ),
    (
        "knn_preservation_at_size index repeated",
        lambda: metrics.knn_preservation_at_size(EMB, EMB, 20, index=np.zeros(30, dtype=int)),
        V,
        "index",
    ),
    (
        "knn_preservation_at_size index float",
        lambda: metrics.knn_preservation_at_size(EMB, EMB, 20, index=np.arange(30.0)),
        V,
        "index",
    ),
    (
        "knn_preservation_at_size index 2-D",
        lambda: metrics.knn_preservation_at_size(EMB, EMB, 20, index=np.ones((3, 3), dtype=int)),
        V,
        "index",
    ),
    (
        "knn_preservation_at_size mask length",
        lambda: metrics.knn_preservation_at_size(EMB, EMB, 20, index=np.ones(30, dtype=bool)),
        V,
        "index",
    ),
    (
        "knn_preservation_at_size rows differ",
        lambda: metrics.knn_preservation_at_size(EMB, EMB[:30], 20),
        V,
        "rows",
    ),
]


@pytest.mark.parametrize(("call", "errors", "pattern"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_input_gives_a_clear_error(call, errors, pattern, assert_clear_error):
    assert_clear_error(call, errors, pattern)


def _public(module) -> set[str]:
    """The names in ``__all__`` and the functions and classes the module defines (no leading underscore) that are
    functions or classes (constants such as ``PBMC_MARKERS`` and type aliases such as ``pp.Metric`` are not).
    """
    names = set(getattr(module, "__all__", ()))
    names |= {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", "").startswith(module.__name__)
    }
    return {n for n in names if inspect.isfunction(getattr(module, n)) or inspect.isclass(getattr(module, n))}


PROBE_FILES = ("test_probes.py", "test_probes_manifold.py", "test_probes_pp.py", "test_probes_ee.py")


@pytest.mark.parametrize("module", [qc, pp, nmf, manifold, ee, metrics], ids=lambda m: m.__name__)
def test_probes_reach_every_public_function(module):
    """Each public function or class of these modules is called by a probe (a class through its constructor
    or a method) in one of the PROBE_FILES.
    """
    text = "".join((Path(__file__).parent / name).read_text() for name in PROBE_FILES)
    short = module.__name__.rsplit(".", 1)[-1]
    missing = sorted(n for n in _public(module) if f"{short}.{n}(" not in text)
    assert not missing, f"no probe calls {', '.join(f'{short}.{n}' for n in missing)}"
