"""Sparse layouts shared by the factor-model kernels (:mod:`sccourse._nmf_kernels`, :mod:`sccourse._etm_kernels`).

A fixed sparsity pattern is held in CSR and as the CSR of its transpose, with the permutation between the
two value orders (:class:`CSRPair`). Products with a dense matrix run as weighted bag sums
(:func:`bag_mm`); :class:`BagBlocks` splits a pattern by columns so that each block's rows of the dense
operand stay in cache.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["BagBlocks", "CSRPair", "bag_mm", "n_blocks"]

#: bytes of the dense operand one bag block reads (its rows are gathered at random: keep them in L2)
BAG_BLOCK_BYTES = 384 * 1024
#: bytes of the value array one block of a transposed product gathers from (at random)
TAKE_BLOCK_BYTES = 1 << 20


def bag_mm(
    offsets: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, dense: torch.Tensor
) -> torch.Tensor:
    """``A @ dense`` for a CSR matrix ``A`` (``offsets``, ``indices``, ``values``), as a weighted bag sum.

    Row ``i`` of the result is ``Σ_j values_j · dense[indices_j]`` over ``j`` in ``offsets[i]:offsets[i+1]``:
    exactly :func:`torch.nn.functional.embedding_bag` in ``sum`` mode with per-entry weights, whose
    vectorised CPU kernel gathers whole rows of ``dense`` (several times faster than torch's CSR product).
    The result carries no gradient: the callers are autograd Functions that form their own.
    """
    # detached: no autograd bookkeeping (callers are autograd Functions that form their own gradients)
    return torch.nn.functional.embedding_bag(
        indices,
        dense.detach(),
        offsets,
        mode="sum",
        per_sample_weights=values.detach(),
        include_last_offset=True,
    )


def n_blocks(nbytes: int, block_bytes: int, device: torch.device) -> int:
    """Blocks of at most ``block_bytes`` for ``nbytes`` of data on the CPU; one block on other devices."""
    if device.type != "cpu":
        return 1
    return max(1, -(-int(nbytes) // int(block_bytes)))


class BagBlocks:
    """A sparse pattern ``A`` split by columns into blocks, for :func:`bag_mm` products ``A @ D``.

    Entry ``e`` of ``A`` (in its CSR order) holds ``v[source[e]]`` of a value array ``v`` given in another
    order (``source=None``: the same order). ``v`` is either fixed (``values``, gathered into each block
    once) or passed to every :meth:`mm`. Each block only gathers rows of ``D`` (and values of ``v``) from
    its own slice, so they stay in cache; the partial products are summed.
    """

    def __init__(self, crow, col, n_cols: int, n_blocks: int, *, values=None, source=None):
        self.blocks = []
        dev, itype = col.device, crow.dtype
        if n_blocks <= 1:
            fixed = None if values is None else (values if source is None else torch.take(values, source))
            self.blocks.append((crow, col, fixed, source, 0, n_cols))
            return
        src = np.arange(col.numel()) if source is None else source.cpu().numpy()
        # positions + 1 as the stored values: slicing keeps them exactly (float64 holds integers < 2**53)
        A = sp.csr_matrix(
            ((src + 1).astype(np.float64), col.cpu().numpy(), crow.cpu().numpy()),
            shape=(crow.numel() - 1, n_cols),
        )
        edges = np.linspace(0, n_cols, n_blocks + 1).round().astype(int)
        for c0, c1 in zip(edges[:-1], edges[1:]):
            B = sp.csr_matrix(A[:, c0:c1])
            B.sort_indices()
            src_b = torch.as_tensor(B.data.astype(np.int64) - 1, device=dev)
            fixed = None if values is None else torch.take(values, src_b)
            self.blocks.append(
                (
                    torch.as_tensor(B.indptr, dtype=itype, device=dev),
                    torch.as_tensor(B.indices, dtype=itype, device=dev),
                    fixed,
                    None if fixed is not None else src_b,
                    int(c0),
                    int(c1),
                )
            )

    def mm(self, dense: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        out = None
        for crow, col, fixed, src, c0, c1 in self.blocks:
            v = fixed if fixed is not None else (values if src is None else torch.take(values, src))
            part = bag_mm(crow, col, v, dense[c0:c1])
            out = part if out is None else out.add_(part)
        return out


class CSRPair:
    """The pattern of a sparse ``rows x cols`` matrix: CSR (``crow``, ``col``), the CSR of its transpose
    (``crow_t``, ``col_t``), and ``perm``, which maps the CSR value order onto the transpose's.

    Index arrays are 32-bit when they fit (torch's sparse and bag kernels run faster on them). Values live
    with the callers; the products take them in the CSR order and, like :func:`bag_mm`, carry no gradient.
    """

    def __init__(self, crow, col, crow_t, col_t, perm, shape):
        self.crow, self.col, self.crow_t, self.col_t, self.perm = crow, col, crow_t, col_t, perm
        self.shape = tuple(int(s) for s in shape)
        self._blocks: dict = {}

    @staticmethod
    def canonical(X) -> sp.csr_matrix:
        """A copy of ``X`` as CSR with sorted, unique column indices and no stored zeros."""
        X = sp.csr_matrix(X, copy=True)
        X.sum_duplicates()
        X.eliminate_zeros()
        X.sort_indices()
        return X

    @classmethod
    def from_scipy(cls, X: sp.csr_matrix, *, device: torch.device) -> CSRPair:
        """The pattern of ``X``, which must be canonical (see :meth:`canonical`): its ``data`` order is the
        CSR order the products take.
        """
        order = sp.csr_matrix((np.arange(X.nnz, dtype=np.float64), X.indices, X.indptr), shape=X.shape)
        XT = sp.csr_matrix(order.T)
        XT.sort_indices()
        itype = torch.int32 if max(X.nnz, *X.shape) < 2**31 - 1 else torch.int64

        def t(a, dt=itype):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)

        return cls(t(X.indptr), t(X.indices), t(XT.indptr), t(XT.indices), t(XT.data, torch.int64), X.shape)

    def to(self, device: torch.device) -> CSRPair:
        return CSRPair(
            *(a.to(device) for a in (self.crow, self.col, self.crow_t, self.col_t, self.perm)), self.shape
        )

    @property
    def nnz(self) -> int:
        return int(self.col.numel())

    def transposed_values(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (CSR order) in the CSR order of the transpose."""
        return torch.take(values, self.perm)

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """The pattern holding ``values`` (CSR order) as a torch CSR tensor."""
        with warnings.catch_warnings():  # torch calls its CSR support "beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)

    def csr_t(self, values_t: torch.Tensor) -> torch.Tensor:
        """The transpose's pattern holding ``values_t`` (in the transpose's CSR order) as a torch CSR tensor."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.crow_t, self.col_t, values_t, self.shape[::-1], check_invariants=False
            )

    def mm(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``A @ dense`` (rows x width) for ``A`` the pattern holding ``values`` (CSR order)."""
        return bag_mm(self.crow, self.col, values, dense)

    def mm_t(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``Aᵀ @ dense`` (cols x width) for ``A`` the pattern holding ``values`` (CSR order); the values
        are gathered into the transpose's order block by block of rows of ``A``.
        """
        nb = n_blocks(values.numel() * values.element_size(), TAKE_BLOCK_BYTES, values.device)
        return self.blocks(transposed=True, n_blocks=nb).mm(dense, values)

    def fixed_mm(self, key, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``A @ dense`` for fixed ``values`` (CSR order), blocked by columns of ``A``. ``key`` names the values:
        the blocks made on the first call are reused for every later call with the same key.
        """
        nb = n_blocks(self.shape[1] * dense.shape[1] * dense.element_size(), BAG_BLOCK_BYTES, dense.device)
        return self.blocks(transposed=False, n_blocks=nb, key=key, values=values).mm(dense)

    def fixed_mm_t(self, key, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``Aᵀ @ dense`` for fixed ``values`` (CSR order, named by ``key`` as in :meth:`fixed_mm`), blocked
        by rows of ``A``.
        """
        nb = n_blocks(self.shape[0] * dense.shape[1] * dense.element_size(), BAG_BLOCK_BYTES, dense.device)
        return self.blocks(transposed=True, n_blocks=nb, key=key, values=values).mm(dense)

    def blocks(self, *, transposed: bool, n_blocks: int, key=None, values=None) -> BagBlocks:
        """The cached :class:`BagBlocks` of ``A`` (``transposed=False``) or ``Aᵀ``, holding the fixed
        ``values`` named ``key`` (values in the CSR order of ``A``), or none (``key=None``: the values come
        with every product).
        """
        cache_key = (transposed, key, n_blocks)
        if cache_key not in self._blocks:
            if transposed:
                b = BagBlocks(
                    self.crow_t, self.col_t, self.shape[0], n_blocks, values=values, source=self.perm
                )
            else:
                b = BagBlocks(self.crow, self.col, self.shape[1], n_blocks, values=values)
            self._blocks[cache_key] = b
        return self._blocks[cache_key]
