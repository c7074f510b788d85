"""sccourse.qc against scanpy's own functions."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from sccourse import datasets, qc


@pytest.fixture(scope="module")
def pbmc(mirror):
    return datasets.pbmc3k()


def test_qc_metrics_match_scanpy(pbmc):
    a = pbmc.copy()
    ours = qc.qc_metrics(a)
    a.var["mt"] = a.var_names.str.startswith("MT-")
    ref = sc.pp.calculate_qc_metrics(a, qc_vars=["mt"], inplace=False, percent_top=None, log1p=False)[0]
    np.testing.assert_allclose(ours["total_counts"], ref["total_counts"])
    np.testing.assert_array_equal(ours["n_genes_by_counts"], ref["n_genes_by_counts"])
    np.testing.assert_allclose(ours["pct_counts_mt"], ref["pct_counts_mt"], atol=1e-10)
    assert "pct_counts_mt" in a.obs


def test_filter_matches_scanpy_and_leaves_input_alone(pbmc):
    a = pbmc.copy()
    out = qc.filter_cells_genes(a, min_genes=200, max_genes=2500, max_pct_mt=5, min_cells=3)
    assert a.shape == pbmc.shape
    ref = pbmc.copy()
    ref.var["mt"] = ref.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(ref, qc_vars=["mt"], inplace=True, percent_top=None, log1p=False)
    sc.pp.filter_cells(ref, min_genes=200)
    ref = ref[(ref.obs["n_genes_by_counts"] < 2500) & (ref.obs["pct_counts_mt"] < 5)].copy()
    sc.pp.filter_genes(ref, min_cells=3)
    assert list(out.obs_names) == list(ref.obs_names)
    assert list(out.var_names) == list(ref.var_names)
    # the Seurat tutorial kept 2,638 cells with these thresholds
    assert out.n_obs == 2638


def test_normalize_log1p_matches_formula():
    X = sp.csr_matrix(np.array([[1, 0, 3], [0, 5, 5], [2, 2, 0]], dtype=np.int32))
    import anndata as ad

    a = ad.AnnData(X)
    qc.normalize_log1p(a, target_sum=100)
    dense = X.toarray().astype(float)
    expected = np.log1p(100 * dense / dense.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(a.X.toarray(), expected, rtol=1e-6)
    np.testing.assert_array_equal(a.layers["counts"].toarray(), X.toarray())


def test_bad_input_is_rejected():
    import anndata as ad

    with pytest.raises(TypeError, match="AnnData"):
        qc.qc_metrics(np.zeros((2, 2)))
    neg = ad.AnnData(sp.csr_matrix(np.array([[1.0, -1.0]])))
    with pytest.raises(ValueError, match="non-negative"):
        qc.qc_metrics(neg)
    with pytest.raises(ValueError, match="target_sum"):
        qc.normalize_log1p(ad.AnnData(sp.csr_matrix(np.ones((2, 2)))), target_sum=0)
