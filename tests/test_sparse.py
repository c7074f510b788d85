"""Tests for sccourse._sparse: the CSR / transposed-CSR pattern pair and the bag products, against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sccourse._sparse as S

CPU = torch.device("cpu")


def messy_matrix():
    """A CSR matrix with duplicate entries, an explicit zero, unsorted columns and an empty row."""
    data = np.array([1.0, 2.0, 5.0, 0.0, 4.0, 3.0, 6.0])
    indices = np.array([4, 1, 1, 2, 2, 0, 3])  # row 0 holds column 1 twice (7 in all); rows 2 is empty
    indptr = np.array([0, 3, 4, 4, 6, 7])
    return sp.csr_matrix((data, indices, indptr), shape=(5, 6))


def test_canonical_copy_leaves_the_input_alone_and_sums_duplicates():
    X = messy_matrix()
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    C = S.CSRPair.canonical(X)
    for a, b in zip(before, (X.data, X.indices, X.indptr)):
        np.testing.assert_array_equal(a, b)
    assert C.has_sorted_indices and (C.data != 0).all()
    np.testing.assert_array_equal(C.toarray(), X.toarray())
    assert C.nnz == 5 and C[0, 1] == 7.0


def test_pattern_pair_matches_scipy_transpose():
    X = S.CSRPair.canonical(sp.random(30, 20, density=0.2, random_state=1, format="csr"))
    p = S.CSRPair.from_scipy(X, device=CPU)
    v = torch.tensor(X.data)
    XT = sp.csr_matrix(X.T)
    XT.sort_indices()
    np.testing.assert_array_equal(p.crow_t.numpy(), XT.indptr)
    np.testing.assert_array_equal(p.col_t.numpy(), XT.indices)
    np.testing.assert_array_equal(p.transposed_values(v).numpy(), XT.data)
    np.testing.assert_array_equal(p.csr(v).to_dense().numpy(), X.toarray())
    np.testing.assert_array_equal(p.csr_t(p.transposed_values(v)).to_dense().numpy(), X.T.toarray())
    assert p.crow.dtype == torch.int32 and p.nnz == X.nnz and p.shape == (30, 20)


@pytest.mark.parametrize("block_bytes", [1 << 30, 64])
def test_bag_products_match_scipy(monkeypatch, block_bytes):
    """One block and many blocks (tiny block sizes) give scipy's products, empty rows included."""
    monkeypatch.setattr(S, "BAG_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(S, "TAKE_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(0)
    X = sp.random(41, 29, density=0.15, random_state=2, format="csr")
    X = S.CSRPair.canonical(sp.diags((np.arange(41) % 7 != 3).astype(float)) @ X)  # some empty rows
    p = S.CSRPair.from_scipy(X, device=CPU)
    v = torch.tensor(rng.normal(size=X.nnz))
    A = sp.csr_matrix((v.numpy(), X.indices, X.indptr), shape=X.shape)
    D, E = rng.normal(size=(29, 5)), rng.normal(size=(41, 5))
    Dt, Et = torch.tensor(D), torch.tensor(E)
    np.testing.assert_allclose(p.mm(v, Dt).numpy(), A @ D, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p.mm_t(v, Et).numpy(), A.T @ E, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p.fixed_mm("v", v, Dt).numpy(), A @ D, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p.fixed_mm_t("v", v, Et).numpy(), A.T @ E, rtol=1e-12, atol=1e-14)
    n_parts = [len(b.blocks) for b in p._blocks.values()]
    assert all(n > 1 for n in n_parts) if block_bytes == 64 else all(n == 1 for n in n_parts)


def test_n_blocks():
    assert S.n_blocks(1000, 300, CPU) == 4
    assert S.n_blocks(10, 300, CPU) == 1
    assert S.n_blocks(10**9, 300, torch.device("meta")) == 1  # not the CPU: one block
