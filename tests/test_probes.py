"""Bad input to every public function gives a clear error: the right exception type and a message that names the
argument (or what was wrong), never a silent wrong result or a crash deep inside numpy, torch or scikit-learn.

Each probe is (function call, expected exception types, a pattern the message must contain).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sccourse import datasets, manifold, metrics, nmf, qc, simulate


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


def _graph(n=12):
    W = sp.random(n, n, density=0.4, random_state=0)
    return sp.csr_matrix(W + W.T)


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
    # manifold
    ("degree negative W", lambda: manifold.degree(-_graph()), V, "negative"),
    (
        "markov_operator non-square",
        lambda: manifold.markov_operator(sp.csr_matrix(np.ones((3, 4)))),
        V,
        "square",
    ),
    ("laplacian NaN", lambda: manifold.laplacian(sp.csr_matrix(np.full((3, 3), np.nan))), V, "NaN"),
    (
        "laplacian_energy shape",
        lambda: manifold.laplacian_energy(manifold.laplacian(_graph()), np.ones((5, 2))),
        V,
        "rows",
    ),
    (
        "ManifoldHeat steps -1",
        lambda: manifold.ManifoldHeat(manifold.symmetrized_operator(_graph()), steps=-1),
        V,
        "steps",
    ),
    ("GaussianNoise sigma -1", lambda: manifold.GaussianNoise(-1.0), V, "sigma"),
    (
        "match_sigma bad method",
        lambda: manifold.match_sigma(torch.ones(4, 3), 1.0, method="magic"),
        V,
        "method",
    ),
    ("preprocess negative counts", lambda: manifold.preprocess_and_cluster(_neg()), V, "non-negative"),
    ("preprocess log data", lambda: manifold.preprocess_and_cluster(_log_data()), V, "integer counts"),
    (
        "preprocess resolution NaN",
        lambda: manifold.preprocess_and_cluster(_counts(), resolution=float("nan")),
        V,
        "resolution",
    ),
    ("top_variable_genes n=0", lambda: manifold.top_variable_genes(np.ones((4, 3)), 0), V, "n"),
    ("split_cells fraction 1", lambda: manifold.split_cells(10, 1.0), V, "val_fraction"),
    (
        "train_denoiser epochs 0",
        lambda: manifold.train_denoiser(torch.ones(20, 3), manifold.GaussianNoise(0.1), epochs=0),
        V,
        "epochs",
    ),
    ("to_torch strings", lambda: manifold.to_torch(np.array([["a"]])), T, ""),
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
]


@pytest.mark.parametrize(("call", "errors", "pattern"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_input_gives_a_clear_error(call, errors, pattern):
    with pytest.raises(errors) as err:
        call()
    assert pattern.lower() in str(err.value).lower(), (
        f"unhelpful message: {type(err.value).__name__}: {err.value}"
    )
