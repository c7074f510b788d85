"""Bad input to every public function of sccourse.pp gives a clear error: the right exception type and a message
naming the argument (or the slot) and what was wrong, dense and sparse alike, before anything is written.

Each probe is (function call, expected exception types, a pattern the message must contain).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sccourse import pp

V, T = ValueError, TypeError


def _counts(n=30, g=12, *, sparse=True, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(3.0, size=(n, g)).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(X) if sparse else X)
    a.var_names = [f"g{i}" for i in range(g)]
    a.obs_names = [f"c{i}" for i in range(n)]
    return a


def _with(value, *, sparse, where=(0, 0), n=30, g=12):
    a = _counts(n, g, sparse=False)
    X = np.asarray(a.X, dtype=np.float32)
    X[where] = value
    a.X = sp.csr_matrix(X) if sparse else X
    return a


def _log(sparse=True):
    a = _counts(sparse=False)
    X = np.log1p(a.X)
    a.X = sp.csr_matrix(X) if sparse else X
    return a


def _strings():
    a = ad.AnnData(np.array([["1", "2"], ["3", "4"], ["5", "6"]], dtype=object))
    return a


def _complex():
    return ad.AnnData(np.ones((20, 5), dtype=np.complex64))


def _empty_cells(sparse=True):
    X = sp.csr_matrix((0, 12), dtype=np.float32) if sparse else np.zeros((0, 12), np.float32)
    return ad.AnnData(X)


def _empty_genes(sparse=True):
    X = sp.csr_matrix((30, 0), dtype=np.float32) if sparse else np.zeros((30, 0), np.float32)
    return ad.AnnData(X)


# every AnnData function on raw counts, called with its minimal arguments
COUNT_FUNCTIONS = {
    "normalize_log1p": lambda a: pp.normalize_log1p(a),
    "select_variable_genes": lambda a: pp.select_variable_genes(a, 5),
    "prepare_pcs": lambda a: pp.prepare_pcs(a, n_top_genes=None, n_pcs=3),
    "preprocess_and_cluster": lambda a: pp.preprocess_and_cluster(a, n_neighbors=5, umap=False),
}

PROBES = []
for _fn_name, _call in COUNT_FUNCTIONS.items():
    for _sparse in (True, False):
        _k = "sparse" if _sparse else "dense"
        PROBES += [
            (
                f"{_fn_name} NaN ({_k})",
                lambda c=_call, s=_sparse: c(_with(np.nan, sparse=s)),
                V,
                "NaN",
            ),
            (
                f"{_fn_name} inf ({_k})",
                lambda c=_call, s=_sparse: c(_with(np.inf, sparse=s)),
                V,
                "inf",
            ),
            (
                f"{_fn_name} negative ({_k})",
                lambda c=_call, s=_sparse: c(_with(-2.0, sparse=s)),
                V,
                "non-negative",
            ),
            (
                f"{_fn_name} non-integer ({_k})",
                lambda c=_call, s=_sparse: c(_with(1.5, sparse=s)),
                V,
                "integer counts",
            ),
            (f"{_fn_name} log data ({_k})", lambda c=_call, s=_sparse: c(_log(s)), V, "adata.X"),
            (
                f"{_fn_name} no cells ({_k})",
                lambda c=_call, s=_sparse: c(_empty_cells(s)),
                V,
                "cells",
            ),
        ]
    PROBES += [
        (f"{_fn_name} not AnnData", lambda c=_call: c(np.ones((5, 5))), T, "AnnData"),
        (f"{_fn_name} torch", lambda c=_call: c(torch.ones(5, 5)), T, "AnnData"),
        (f"{_fn_name} string dtype", lambda c=_call: c(_strings()), V, "dtype"),
        (f"{_fn_name} complex dtype", lambda c=_call: c(_complex()), V, "dtype"),
    ]

PROBES += [
    # empty genes and single cells where the step cannot work
    ("normalize_log1p no genes", lambda: pp.normalize_log1p(_empty_genes()), V, "gene"),
    ("select_variable_genes no genes", lambda: pp.select_variable_genes(_empty_genes(), 2), V, "genes"),
    ("select_variable_genes one cell", lambda: pp.select_variable_genes(_counts(n=1), 2), V, "two cells"),
    ("prepare_pcs no genes", lambda: pp.prepare_pcs(_empty_genes()), V, "gene"),
    ("prepare_pcs one cell", lambda: pp.prepare_pcs(_counts(n=1)), V, "3 cells"),
    (
        "preprocess_and_cluster one cell",
        lambda: pp.preprocess_and_cluster(_counts(n=1), umap=False),
        V,
        "n_neighbors",
    ),
    (
        "preprocess_and_cluster no genes",
        lambda: pp.preprocess_and_cluster(_empty_genes(), n_neighbors=5, umap=False),
        V,
        "min_cells",
    ),
    ("embed_cells one cell", lambda: pp.embed_cells(_log()[:1].copy(), umap=False), V, "n_neighbors"),
    ("embed_cells one gene", lambda: pp.embed_cells(_log()[:, :1].copy(), umap=False), V, "gene"),
    ("embed_cells not AnnData", lambda: pp.embed_cells(np.ones((30, 4))), T, "AnnData"),
    ("embed_cells string dtype", lambda: pp.embed_cells(_strings()), V, "dtype"),
    ("embed_cells NaN (sparse)", lambda: pp.embed_cells(_with(np.nan, sparse=True)), V, "NaN"),
    ("embed_cells NaN (dense)", lambda: pp.embed_cells(_with(np.nan, sparse=False)), V, "NaN"),
    # options
    ("normalize target_sum 0", lambda: pp.normalize_log1p(_counts(), target_sum=0), V, "target_sum"),
    ("normalize target_sum inf", lambda: pp.normalize_log1p(_counts(), target_sum=np.inf), V, "target_sum"),
    ("normalize target_sum str", lambda: pp.normalize_log1p(_counts(), target_sum="1e4"), V, "target_sum"),
    ("normalize key_added ''", lambda: pp.normalize_log1p(_counts(), key_added=""), V, "key_added"),
    ("normalize key_added int", lambda: pp.normalize_log1p(_counts(), key_added=1), T, "key_added"),
    ("select n_top_genes 0", lambda: pp.select_variable_genes(_counts(), 0), V, "n_top_genes"),
    ("select n_top_genes float", lambda: pp.select_variable_genes(_counts(), 2.5), V, "n_top_genes"),
    ("select n_top_genes bool", lambda: pp.select_variable_genes(_counts(), True), V, "n_top_genes"),
    ("select target_sum -1", lambda: pp.select_variable_genes(_counts(), 3, target_sum=-1), V, "target_sum"),
    ("select layer missing", lambda: pp.select_variable_genes(_counts(), 3, layer="raw"), V, "layer"),
    ("select key_added ''", lambda: pp.select_variable_genes(_counts(), 3, key_added=""), V, "key_added"),
    ("prepare_pcs n_pcs 1", lambda: pp.prepare_pcs(_counts(), n_pcs=1), V, "n_pcs"),
    ("prepare_pcs n_pcs float", lambda: pp.prepare_pcs(_counts(), n_pcs=3.0), V, "n_pcs"),
    ("prepare_pcs n_top_genes 0", lambda: pp.prepare_pcs(_counts(), n_top_genes=0), V, "n_top_genes"),
    ("prepare_pcs n_cells 1", lambda: pp.prepare_pcs(_counts(), n_cells=1), V, "n_cells"),
    ("prepare_pcs seed -1", lambda: pp.prepare_pcs(_counts(), seed=-1), V, "seed"),
    ("prepare_pcs label_key missing", lambda: pp.prepare_pcs(_counts(), label_key="type"), V, "type"),
    ("prepare_pcs key_added ''", lambda: pp.prepare_pcs(_counts(), key_added=""), V, "key_added"),
    ("cluster n_neighbors 0", lambda: pp.preprocess_and_cluster(_counts(), n_neighbors=0), V, "n_neighbors"),
    ("cluster n_pcs > n_comps", lambda: pp.preprocess_and_cluster(_counts(), n_pcs=60), V, "n_pcs"),
    (
        "cluster resolution NaN",
        lambda: pp.preprocess_and_cluster(_counts(), resolution=float("nan")),
        V,
        "resolution",
    ),
    ("cluster min_cells 0", lambda: pp.preprocess_and_cluster(_counts(), min_cells=0), V, "min_cells"),
    ("cluster seed float", lambda: pp.preprocess_and_cluster(_counts(), seed=1.0), V, "seed"),
    ("cluster umap str", lambda: pp.preprocess_and_cluster(_counts(), umap="no"), V, "umap"),
    ("cluster key_added int", lambda: pp.preprocess_and_cluster(_counts(), key_added=0), T, "key_added"),
    (
        "cluster keep_genes str",
        lambda: pp.preprocess_and_cluster(_counts(), keep_genes="g1"),
        V,
        "keep_genes",
    ),
    ("embed metric", lambda: pp.embed_cells(_log(), metric="l3"), V, "metric"),
    ("embed n_diffmap 1", lambda: pp.embed_cells(_log(), n_diffmap=1), V, "n_diffmap"),
    ("embed key_added '/'", lambda: pp.embed_cells(_log(), key_added="a/b"), V, "key_added"),
    # top_variable_genes: shapes, dtypes, values, n
    ("top_variable_genes 1-D", lambda: pp.top_variable_genes(np.ones(5), 2), V, "2-D"),
    ("top_variable_genes 3-D", lambda: pp.top_variable_genes(np.ones((2, 3, 4)), 2), V, "2-D"),
    ("top_variable_genes torch 1-D", lambda: pp.top_variable_genes(torch.ones(5), 2), V, "2-D"),
    ("top_variable_genes strings", lambda: pp.top_variable_genes(np.array([["a", "b"]]), 1), V, "dtype"),
    ("top_variable_genes NaN dense", lambda: pp.top_variable_genes(np.array([[np.nan, 1.0]]), 1), V, "NaN"),
    (
        "top_variable_genes inf sparse",
        lambda: pp.top_variable_genes(sp.csr_matrix(np.array([[np.inf, 1.0]])), 1),
        V,
        "NaN or inf",
    ),
    ("top_variable_genes empty", lambda: pp.top_variable_genes(np.ones((0, 3)), 1), V, "empty"),
    (
        "top_variable_genes no genes sparse",
        lambda: pp.top_variable_genes(sp.csr_matrix((4, 0)), 1),
        V,
        "empty",
    ),
    ("top_variable_genes n 0", lambda: pp.top_variable_genes(np.ones((4, 3)), 0), V, "n must"),
    ("top_variable_genes n float", lambda: pp.top_variable_genes(np.ones((4, 3)), 1.0), V, "n must"),
]


@pytest.mark.parametrize(("call", "errors", "pattern"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_input_gives_a_clear_error(call, errors, pattern, assert_clear_error):
    assert_clear_error(call, errors, pattern)


@pytest.mark.parametrize("sparse", [True, False])
def test_nothing_is_written_when_the_input_is_refused(sparse):
    a = _with(np.nan, sparse=sparse)
    before = a.copy()
    for call in (
        lambda: pp.normalize_log1p(a),
        lambda: pp.preprocess_and_cluster(a, copy=False, n_neighbors=5, umap=False),
    ):
        with pytest.raises(ValueError, match="NaN"):
            call()
    assert not a.layers and not a.obsm and not a.obsp and list(a.obs.columns) == []
    assert a.shape == before.shape
    np.testing.assert_array_equal(
        a.X.toarray() if sparse else a.X, before.X.toarray() if sparse else before.X
    )
