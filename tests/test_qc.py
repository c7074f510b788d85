"""sccourse.qc against scanpy's own functions."""

from __future__ import annotations

import anndata as ad
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


def test_explicitly_stored_zeros_are_not_detected_genes():
    # 60 cells, 20 genes with counts, plus 10 explicitly stored zeros per cell
    rng = np.random.default_rng(0)
    rows, cols, vals = [], [], []
    for c in range(60):
        genes = rng.choice(40, size=30, replace=False)
        rows += [c] * 30
        cols += list(genes)
        vals += [int(v) for v in rng.integers(1, 5, size=20)] + [0] * 10
    X = sp.csr_matrix((np.asarray(vals, dtype=float), (rows, cols)), shape=(60, 40))
    assert X.nnz == 60 * 30  # the zeros are stored
    adata = ad.AnnData(X)
    adata.var_names = [f"g{i}" for i in range(40)]
    table = qc.qc_metrics(adata)
    np.testing.assert_array_equal(table["n_genes_by_counts"], np.full(60, 20))
    np.testing.assert_array_equal(adata.var["n_cells_by_counts"], (X.toarray() > 0).sum(axis=0))
    # two cells reduced to 19 real genes fail min_genes=20, whatever their stored zeros
    vals2 = list(vals)
    vals2[0] = vals2[30] = 0  # the first (positive) entry of cells 0 and 1 becomes a stored zero
    X2 = sp.csr_matrix((np.asarray(vals2, dtype=float), (rows, cols)), shape=(60, 40))
    assert X2.nnz == X.nnz
    kept = qc.filter_cells_genes(
        ad.AnnData(X2, var=adata.var[[]].copy()), min_genes=20, max_genes=None, max_pct_mt=None, min_cells=0
    )
    assert kept.n_obs == 58


def test_cell_gene_masks_boundaries():
    counts = np.zeros((4, 6))
    counts[0, :2] = 1  # 2 genes
    counts[1, :3] = 1  # 3 genes
    counts[2, :4] = 1  # 4 genes
    counts[3, :3] = 5
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.var_names = [f"g{i}" for i in range(6)]
    keep, gkeep = qc.cell_gene_masks(adata, min_genes=3, max_genes=4, max_pct_mt=None, min_cells=2)
    np.testing.assert_array_equal(keep, [False, True, False, True])  # 3 <= genes < 4
    np.testing.assert_array_equal(gkeep, [True, True, True, False, False, False])


def test_top_genes_by_fraction_ranks_by_share_not_by_count():
    X = sp.csr_matrix(np.array([[1.0, 0.0, 1.0], [3.0, 1.0, 0.0], [10.0, 990.0, 0.0], [0.0, 0.0, 0.0]]))
    adata = ad.AnnData(X)
    adata.var_names = ["a", "b", "c"]
    assert qc.top_genes_by_fraction(adata, n=3) == ["a", "b", "c"]
    assert list(np.asarray(X.mean(axis=0)).ravel().argsort()[::-1][:1]) == [1]  # by mean count "b" would lead
    with pytest.raises(ValueError, match="positive integer"):
        qc.top_genes_by_fraction(adata, n=0)


def test_normalising_twice_is_refused_and_log_data_is_not_counts():
    X = sp.csr_matrix(np.array([[1.0, 3.0, 0.0], [2.0, 0.0, 5.0]]))
    adata = ad.AnnData(X.copy())
    adata.var_names = ["a", "b", "MT-c"]
    qc.normalize_log1p(adata)
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), X.toarray())
    with pytest.raises(ValueError, match=r"layers\['counts'\] already exists"):
        qc.normalize_log1p(adata)  # a re-run cell would overwrite the counts with log data
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), X.toarray())
    with pytest.raises(ValueError, match=r"adata.X must hold raw integer counts.*log-transformed"):
        qc.qc_metrics(adata)  # log data is not accepted as counts
    neg = ad.AnnData(sp.csr_matrix(np.array([[1.0, -2.0]])))
    with pytest.raises(ValueError, match="non-negative"):
        qc.qc_metrics(neg)
    with pytest.raises(TypeError, match="AnnData"):
        qc.qc_metrics(X)


def test_normalize_log1p_is_the_pp_function_and_keeps_blocking_under_sccourse_qc():
    from sccourse import grading, pp

    assert qc.normalize_log1p is pp.normalize_log1p and "normalize_log1p" in qc.__all__
    # the notebooks forbid "sccourse.qc" to stop a graded answer from calling it
    with pytest.raises(grading.ShortcutError):
        with grading.forbid("scanpy.pp", "sccourse.qc", "sklearn.preprocessing", task="normalize_log1p"):
            pp.normalize_log1p(ad.AnnData(sp.csr_matrix(np.ones((3, 2)))))


def test_qc_metrics_key_added_prefixes_every_column_written():
    X = sp.csr_matrix(np.array([[1.0, 3.0, 0.0], [2.0, 0.0, 5.0]]))
    a = ad.AnnData(X)
    a.var_names = ["a", "b", "MT-c"]
    ref = qc.qc_metrics(a.copy())
    table = qc.qc_metrics(a, key_added="raw")
    assert set(a.obs.columns) == {"raw_total_counts", "raw_n_genes_by_counts", "raw_pct_counts_mt"}
    assert set(a.var.columns) == {"raw_n_cells_by_counts", "raw_mt"}
    np.testing.assert_allclose(a.obs["raw_total_counts"], [4.0, 7.0])
    np.testing.assert_allclose(a.obs["raw_pct_counts_mt"], [0.0, 100 * 5 / 7])
    np.testing.assert_array_equal(a.var["raw_mt"], [False, False, True])
    np.testing.assert_array_equal(a.var["raw_n_cells_by_counts"], [2, 1, 1])
    assert list(table.columns) == list(ref.columns)  # the returned table keeps the standard names
    b = ad.AnnData(X.copy())
    for bad, err in (("", ValueError), (5, TypeError)):
        with pytest.raises(err, match="key_added"):
            qc.qc_metrics(b, key_added=bad)
    assert list(b.obs.columns) == [] and list(b.var.columns) == []
    kept = qc.filter_cells_genes(a, min_genes=1, max_genes=None, max_pct_mt=None, min_cells=1, key_added="f")
    assert "f_total_counts" in kept.obs and "f_mt" in kept.var
    with pytest.raises(ValueError, match="key_added"):
        qc.filter_cells_genes(a, key_added="")
