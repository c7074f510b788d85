"""Private kernels behind :mod:`sccourse.ee`: nearest neighbours, perplexity calibration, blocked EE terms.

Everything here works on torch tensors already on the target device; validation lives in :mod:`sccourse.ee`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse as sp
import torch

# Rows of a (rows x N) temporary are chosen so that one such block stays under this many MiB.
DEFAULT_BLOCK_MB = 256.0


def rows_per_block(n_cols: int, *, max_block_mb: float, n_temporaries: int = 3, itemsize: int = 8) -> int:
    """How many rows of a ``rows x n_cols`` computation fit ``n_temporaries`` arrays in ``max_block_mb``."""
    budget = max_block_mb * 2**20 / (n_temporaries * itemsize * max(n_cols, 1))
    return max(1, int(budget))


# --------------------------------------------------------------------------------------
# nearest neighbours
# --------------------------------------------------------------------------------------
def knn_exact(
    Y: torch.Tensor, k: int, *, max_block_mb: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``k`` nearest neighbours (self excluded) by blocked brute force on ``Y``'s device.

    Ranks ``‖y_m‖² − 2 y_n·y_m`` (``‖y_n − y_m‖²`` less the row's constant ``‖y_n‖²``) for one block of rows at a
    time, formed by one fused product (``addmm``) in a buffer reused for every block, then a top-k per row. On the
    CPU the buffer is 32 MiB by default: at 20,000 cells × 20 PCs this takes 1.0 s against 5.2 s for three 130 MiB
    temporaries per block.
    Returns ``(idx, d2)``: (N, k) int64 indices and float64 squared distances, nearest first;
    the distances are recomputed exactly as ``‖y_n − y_m‖²`` for the selected pairs.
    """
    n = Y.shape[0]
    if max_block_mb is None:
        max_block_mb = 32.0 if Y.device.type == "cpu" else DEFAULT_BLOCK_MB
    sq = (Y * Y).sum(1)
    rows = min(n, rows_per_block(n, max_block_mb=max_block_mb, n_temporaries=1, itemsize=Y.element_size()))
    Yt = Y.T.contiguous()
    buf = torch.empty((rows, n), dtype=Y.dtype, device=Y.device)
    idx = torch.empty((n, k), dtype=torch.long, device=Y.device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        d2 = buf[: i1 - i0]
        # ‖y_m‖² − 2 y_n·y_m: the row's own ‖y_n‖² does not change its ranking (its distances come exactly below)
        torch.addmm(sq[None, :], Y[i0:i1], Yt, beta=1.0, alpha=-2.0, out=d2)
        ar = torch.arange(i1 - i0, device=Y.device)
        d2[ar, ar + i0] = float("inf")  # a point is not its own neighbour
        idx[i0:i1] = torch.topk(d2, k, dim=1, largest=False, sorted=True).indices
    return idx, exact_sqdist(Y, idx)


def exact_sqdist(Y: torch.Tensor, idx: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """``‖y_n − y_idx[n, j]‖²`` in float64 for every (n, j), from the differences (no cancellation).

    Rows go by chunks whose gathered neighbours (``chunk × k × d`` numbers) fill one buffer, reused for every
    chunk, in which the differences are squared in place: no temporary of N × k × d numbers. On the CPU the
    buffer is 8 cache tiles (24 MiB): at 100,000 cells × 90 neighbours × 20 PCs, 2.1 s on one thread against
    3.7 s for whole 65,536-row blocks; one-tile chunks are as fast on one thread but up to 4x slower on two
    on a busy machine (each small parallel step waits for both threads).
    """
    n, k = idx.shape
    Y64 = Y.to(torch.float64)
    d = Y64.shape[1]
    out = torch.empty((n, k), dtype=torch.float64, device=Y.device)
    if chunk is None:
        budget = 8 * _CPU_TILE_BYTES if Y.device.type == "cpu" else 2**28
        chunk = max(1, budget // (8 * max(k * d, 1)))
    buf = torch.empty((min(chunk, n) * k, d), dtype=torch.float64, device=Y.device)
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        b = buf[: (i1 - i0) * k]
        torch.index_select(Y64, 0, idx[i0:i1].reshape(-1), out=b)
        b3 = b.view(i1 - i0, k, d)
        b3.sub_(Y64[i0:i1, None, :]).square_()
        torch.sum(b3, dim=2, out=out[i0:i1])
    return out


def knn_nndescent(Y: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """Approximate ``k`` nearest neighbours (self excluded) with pynndescent; returns (N, k) indices."""
    from pynndescent import NNDescent

    n = Y.shape[0]
    index = NNDescent(
        np.ascontiguousarray(Y, dtype=np.float32),
        n_neighbors=k + 1,
        random_state=seed,
        low_memory=True,
        verbose=False,
    )
    nbrs, _ = index.neighbor_graph
    out = np.empty((n, k), dtype=np.int64)
    rows = np.arange(n)
    is_self = nbrs == rows[:, None]
    has_self = is_self.any(1)
    # drop the point itself where it was found, otherwise the farthest candidate
    keep = ~is_self
    keep[~has_self, -1] = False
    out[:] = nbrs[keep].reshape(n, k)
    return out


# --------------------------------------------------------------------------------------
# perplexity calibration
# --------------------------------------------------------------------------------------
def _entropy_stats(D: torch.Tensor, beta: torch.Tensor):
    """Entropy H, E[D] and Var[D] of p_j ∝ exp(−β D_j) row-wise (D shifted so that min_j D_j = 0)."""
    logits = -beta[:, None] * D
    logZ = torch.logsumexp(logits, dim=1)
    p = torch.exp(logits - logZ[:, None])
    m1 = (p * D).sum(1)
    m2 = (p * D * D).sum(1)
    H = logZ + beta * m1
    return H, p, m1, (m2 - m1 * m1).clamp_min(0.0)


def calibrate(
    D2: torch.Tensor, perplexity: float, *, method: str = "ea", tol: float = 1e-10, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row precision β with entropy of ``p(j|n) ∝ exp(−β_n D2[n, j])`` equal to ``log(perplexity)``.

    ``method="ea"``: Newton steps in log β with a bracketing bisection safeguard;
    ``method="x2p"``: bisection on β (doubling/halving until the root is bracketed).
    Returns ``(P, beta, converged)`` with P row-stochastic (same shape as D2).
    """
    P, beta, converged, _ = _calibrate(D2, perplexity, method=method, tol=tol, max_iter=max_iter)
    return P, beta, converged


# log β stays within ±this: exp(700) ≈ 1e304 is finite, so β · 0 = 0 and no NaN appears in the limit β → ∞
_LOG_BETA_MAX = 700.0
# first β = this / (squared distance to the ⌈perplexity⌉-th neighbour)
_BETA0_SCALE = 3.0
# rows are iterated in place (no gathering) while at least this fraction of them is still active
_GATHER_BELOW = 0.5


def _calibrate(D2: torch.Tensor, perplexity: float, *, method: str, tol: float, max_iter: int):
    """:func:`calibrate` and the number of iterations it took (for tests and benchmarks).

    The first β is ``3 / d_j``, with ``d_j`` a row's (shifted) squared distance to its ⌈perplexity⌉-th
    neighbour: ``p`` then falls by e³ at the neighbour that the perplexity counts to, close to the root
    (6 iterations on 100,000 cells at perplexity 30, where ``1 / mean`` and Newton without the rule below took 54).
    A Newton step is taken only inside the bracket and only while it at least halves the previous step
    (rtsafe's rule; without it Newton can cycle in the bracket), otherwise the bracket is bisected, or
    widened by a factor 2 until it holds the root. A row whose distribution already sits on its tied
    nearest neighbours (zero variance) with too high an entropy cannot go lower: it stops there, at the
    limit β → ∞ (more tied neighbours than the perplexity, e.g. duplicated cells), not converged.
    """
    target = math.log(perplexity)
    D = D2 - D2.min(dim=1, keepdim=True).values  # p is unchanged by a per-row shift; avoids overflow
    n, k = D.shape
    j = min(k, max(1, math.ceil(perplexity)))
    dj = torch.kthvalue(D, j, dim=1).values if n else D.new_zeros(0)
    logb = torch.where(dj > 0, math.log(_BETA0_SCALE) - torch.log(dj.clamp_min(1e-300)), torch.zeros_like(dj))
    lo = torch.full((n,), -math.inf, dtype=D.dtype, device=D.device)  # bracket on log β
    hi = torch.full((n,), math.inf, dtype=D.dtype, device=D.device)
    step = torch.full((n,), math.inf, dtype=D.dtype, device=D.device)  # |previous step| in log β
    active = None  # None: every row, iterated in place; else the indices of the rows still iterated
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        if active is None:
            Da, lb, lo_a, hi_a, st_a = D, logb, lo, hi, step
        else:
            Da, lb, lo_a, hi_a, st_a = D[active], logb[active], lo[active], hi[active], step[active]
        beta = torch.exp(lb)
        H, _, _, var = _entropy_stats(Da, beta)
        diff = H - target
        too_flat = diff > 0  # entropy too high -> β must grow
        done = (diff.abs() < tol) | (too_flat & (var <= 0))
        lo_a = torch.where(too_flat, lb, lo_a)
        hi_a = torch.where(too_flat, hi_a, lb)
        both = torch.isfinite(lo_a) & torch.isfinite(hi_a)
        if method == "ea":
            slope = -(beta * beta) * var  # dH / d log β
            cand = lb - diff / slope
            ok = torch.isfinite(cand) & (slope < 0) & (cand > lo_a) & (cand < hi_a)
            ok &= (cand - lb).abs() <= 0.5 * st_a
            mid = (lo_a + hi_a) / 2  # geometric bisection (in log β)
        else:
            cand = lb
            ok = torch.zeros_like(done)
            mid = torch.log((torch.exp(lo_a) + torch.exp(hi_a)) / 2)  # x2p: arithmetic bisection in β
        expand = torch.where(too_flat, lb + math.log(2.0), lb - math.log(2.0))
        new = torch.where(ok, cand, torch.where(both, mid, expand)).clamp_(-_LOG_BETA_MAX, _LOG_BETA_MAX)
        new = torch.where(done, lb, new)
        st_a = (new - lb).abs()
        if active is None:
            logb, lo, hi, step = new, lo_a, hi_a, st_a
            left = (~done).nonzero().squeeze(1)
            if left.numel() == 0 or left.numel() < _GATHER_BELOW * n:
                active = left
        else:
            keep = ~done
            rows = active[keep]
            logb[rows], lo[rows], hi[rows], step[rows] = new[keep], lo_a[keep], hi_a[keep], st_a[keep]
            active = rows
        if active is not None and active.numel() == 0:
            break
    beta = torch.exp(logb)
    H, p, _, _ = _entropy_stats(D, beta)
    return p, beta, (H - target).abs() < max(tol, 1e-9) * 10, n_iter


def symmetrise(idx: np.ndarray, P: np.ndarray, n: int) -> sp.csr_matrix:
    """W⁺ = (P + Pᵀ) / (2N) from row-wise conditional probabilities on a neighbour list."""
    k = idx.shape[1]
    rows = np.repeat(np.arange(n), k)
    C = sp.csr_matrix((P.ravel(), (rows, idx.ravel())), shape=(n, n))
    W = (C + C.T).tocsr()
    W.data /= 2.0 * n
    W.sum_duplicates()
    W.sort_indices()
    return W


# --------------------------------------------------------------------------------------
# repulsive weights
# --------------------------------------------------------------------------------------
class RepulsiveWeights:
    """Repulsive weights w⁻ produced block by block, never stored as an N × N matrix.

    ``kind="uniform"``: w⁻_nm = 1/N² for n ≠ m (0 on the diagonal).
    ``kind="distance"``: w⁻_nm = ‖y_n − y_m‖² / S with S = Σ_nm ‖y_n − y_m‖² = 2N Σ‖y_n‖² − 2‖Σ y_n‖²
    (NeuralEE's choice), computed from the high-dimensional data ``Y`` on the fly.
    A dense (N × N) matrix given by the user is wrapped with ``kind="dense"``.
    """

    def __init__(
        self,
        n: int,
        kind: str = "uniform",
        *,
        Y: torch.Tensor | None = None,
        dense: torch.Tensor | None = None,
    ):
        self.n, self.kind = int(n), kind
        self.Y, self.dense = Y, dense
        if kind == "distance":
            Yd = Y.to(torch.float64)
            self._sq = (Yd * Yd).sum(1)
            total = 2.0 * n * self._sq.sum() - 2.0 * (Yd.sum(0) ** 2).sum()
            self.scale = float(total)
            self._Y64 = Yd

    def to(self, device: torch.device, dtype: torch.dtype) -> RepulsiveWeights:
        out = RepulsiveWeights.__new__(RepulsiveWeights)
        out.__dict__.update(self.__dict__)
        if self.kind == "distance":
            out._Y64 = self._Y64.to(device)
            out._sq = self._sq.to(device)
        if self.kind == "dense":
            out.dense = self.dense.to(device=device, dtype=dtype)
        return out

    def tile(self, i0: int, i1: int, j0: int, j1: int, dtype: torch.dtype, device: torch.device):
        """Block ``[i0:i1, j0:j1]`` of w⁻ as a dense tensor; for uniform weights the number 1/N² (the caller
        leaves the diagonal out).
        """
        n = self.n
        if self.kind == "dense":
            return self.dense[i0:i1, j0:j1].to(device=device, dtype=dtype)
        if self.kind == "uniform":
            return 1.0 / (n * n)
        Yi, Yj = self._Y64[i0:i1], self._Y64[j0:j1]
        d2 = (self._sq[i0:i1, None] + self._sq[None, j0:j1] - 2.0 * (Yi @ Yj.T)).clamp_min(0.0)
        w = (d2 / self.scale).to(dtype)
        if i0 == j0:
            w.fill_diagonal_(0.0)
        return w

    def sub(self, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | float:
        """w⁻ restricted to the cells ``index`` (b × b), for mini-batches; for uniform weights the number
        1/N² (every pair of distinct cells; :class:`Repulsion` takes it as is).
        """
        if self.kind == "uniform":
            return 1.0 / (self.n * self.n)
        if self.kind == "dense":
            return self.dense[index][:, index].to(dtype)
        Yb = self._Y64[index]
        sq = self._sq[index]
        w = ((sq[:, None] + sq[None, :] - 2.0 * (Yb @ Yb.T)).clamp_min(0.0) / self.scale).to(dtype)
        w.fill_diagonal_(0.0)
        return w


# --------------------------------------------------------------------------------------
# the EE objective and gradient
# --------------------------------------------------------------------------------------
class EEProblem:
    """Holds W⁺ (torch sparse CSR or dense), its degrees and w⁻ on the device, for repeated evaluations.

    E(X) = Σ_nm w⁺_nm ‖x_n − x_m‖² + λ Σ_nm w⁻_nm exp(−‖x_n − x_m‖²);
    ∇E = 4 (L⁺ − λ L̃⁻) X with L = D − W and w̃⁻ = w⁻ exp(−‖x_n − x_m‖²).
    The repulsive term is summed over square tiles (:func:`repulsion`) so no N × N array beyond ``max_block_mb``
    is formed, in ``dtype`` with float64 sums. The attractive term is always taken in float64: written as
    ``2 (Σ d_n |x_n|² − Σ x_n·(W⁺X)_n)`` it cancels, and float32 would lose digits to it.
    """

    def __init__(
        self,
        Wpos,
        Wneg: RepulsiveWeights,
        lam: float,
        *,
        device: torch.device,
        dtype: torch.dtype = torch.float64,
        max_block_mb: float = DEFAULT_BLOCK_MB,
    ):
        self.n = Wpos.shape[0]
        self.lam, self.device, self.dtype, self.max_block_mb = float(lam), device, dtype, float(max_block_mb)
        if sp.issparse(Wpos):
            W = sp.csr_matrix(Wpos, dtype=np.float64)
            self.deg = torch.as_tensor(np.asarray(W.sum(1)).ravel(), dtype=torch.float64, device=device)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self.Wpos = torch.sparse_csr_tensor(
                    torch.as_tensor(W.indptr, dtype=torch.int64),
                    torch.as_tensor(W.indices, dtype=torch.int64),
                    torch.as_tensor(W.data, dtype=torch.float64),
                    size=W.shape,
                    check_invariants=False,
                ).to(device)
            self.sparse = True
        else:
            Wd = torch.as_tensor(np.asarray(Wpos) if not isinstance(Wpos, torch.Tensor) else Wpos)
            self.Wpos = Wd.to(device=device, dtype=torch.float64)
            self.deg = self.Wpos.sum(1)
            self.sparse = False
        self.Wneg = Wneg.to(device, dtype)

    def laplacian_dense(self) -> torch.Tensor:
        W = self.Wpos.to_dense() if self.sparse else self.Wpos
        return torch.diag(self.deg) - W

    def laplacian_scipy(self) -> sp.csr_matrix:
        if self.sparse:
            crow, col, val = (
                t.cpu().numpy()
                for t in (self.Wpos.crow_indices(), self.Wpos.col_indices(), self.Wpos.values())
            )
            W = sp.csr_matrix((val, col, crow), shape=(self.n, self.n))
        else:
            W = sp.csr_matrix(self.Wpos.cpu().numpy())
        return (sp.diags(self.deg.cpu().numpy()) - W).tocsr()

    def value_and_grad(self, X: torch.Tensor, *, need_grad: bool = True):
        """E(X) (python float) and ∇E (tensor like X, or None)."""
        X64 = X.to(torch.float64)
        X64 = X64 - X64.mean(0)  # translation-invariant; centring keeps the cancellation small
        # W⁺ symmetric: (Xᵀ W⁺)ᵀ = W⁺ X, the faster layout for a thin X
        WX = self.Wpos @ X64 if self.sparse else torch.mm(X64.T.contiguous(), self.Wpos).T
        e_pos = 2.0 * float((self.deg * (X64 * X64).sum(1)).sum() - (X64 * WX).sum())
        tile = repulsion_tile(
            self.n, device=X.device, itemsize=X.element_size(), max_block_mb=self.max_block_mb
        )
        e_neg, grad = repulsion(
            X,
            lambda i0, i1, j0, j1: self.Wneg.tile(i0, i1, j0, j1, X.dtype, X.device),
            tile=tile,
            need_grad=need_grad,
        )
        if need_grad:
            grad = grad.mul_(self.lam).add_((4.0 * (self.deg[:, None] * X64 - WX)).to(grad.dtype))
        return e_pos + self.lam * float(e_neg), grad


def repulsion_tile(
    n: int, *, device: torch.device, itemsize: int, max_block_mb: float = DEFAULT_BLOCK_MB
) -> int:
    """Side of the square tiles of :func:`repulsion`: within ``max_block_mb``, and on the CPU small enough for
    a tile to stay in cache (its elementwise passes are then bound by arithmetic, not memory).
    """
    side = int(math.sqrt(max_block_mb * 2**20 / (3 * itemsize)))
    if device.type == "cpu":
        side = min(side, int(math.sqrt(_CPU_TILE_BYTES / itemsize)))
    return max(16, min(side, max(n, 1)))


# one CPU tile of the repulsive term is kept near this size (cache-sized)
_CPU_TILE_BYTES = 3 * 2**20


def repulsion(X: torch.Tensor, weight_tile, *, tile: int, need_grad: bool = True):
    """``Σ_nm w⁻_nm exp(−‖x_n − x_m‖²)`` and its gradient ``−4 (diag(K1) − K) X`` (``K = w⁻ ∘ exp(−D²)``, ``w⁻``
    symmetric), summed over the tiles on and above the diagonal of the N × N term (an off-diagonal tile stands
    for itself and its mirror image), so no temporary exceeds ``tile × tile``.

    ``weight_tile(i0, i1, j0, j1)`` returns the (i1 − i0) × (j1 − j0) block of w⁻, or a number for uniform
    weights (then the diagonal n = m is left out). Returns a float64 scalar tensor and the gradient (or None).
    """
    X = X - X.mean(0)  # translation-invariant; centring keeps D² = |x_n|² + |x_m|² − 2 x_n·x_m accurate
    XT = X.T.contiguous()
    nsq = -(X * X).sum(1)
    n, d = X.shape
    grad = torch.zeros_like(X) if need_grad else None
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    floor = math.log(torch.finfo(X.dtype).tiny) + 1.0  # exp(floor) = e x the smallest normal number
    for i0 in range(0, n, tile):
        i1 = min(n, i0 + tile)
        Xi = X[i0:i1]
        for j0 in range(i0, n, tile):
            j1 = min(n, j0 + tile)
            Kt = nsq[i0:i1, None] + nsq[None, j0:j1]  # −D², built in place
            if d <= 4:  # a rank-d update by broadcasting beats a GEMM with an inner dimension of 2
                for c in range(d):
                    Kt.addcmul_(Xi[:, c : c + 1], XT[c : c + 1, j0:j1], value=2.0)
            else:
                Kt.addmm_(Xi, XT[:, j0:j1], alpha=2.0)
            # exp is many times slower where its result underflows: far pairs get exp(floor), a normal
            # number below 3e-38 (float32) that leaves every sum unchanged at working precision
            Kt.clamp_min_(floor).exp_()
            w = weight_tile(i0, i1, j0, j1)
            diagonal = i0 == j0
            scalar = not isinstance(w, torch.Tensor)
            if scalar:
                # one weight for the tile: applied to the row sums and gradient rows, not to the tile, whose
                # far pairs (exp(floor) ≈ 3e-38) would become subnormal numbers (w = 1/N² ≈ 1e-10 at 100k
                # cells) and make every later pass over the tile several times slower
                if diagonal:
                    Kt.fill_diagonal_(0.0)
            else:
                Kt.mul_(w)
            c = float(w) if scalar else 1.0
            rs = Kt.sum(1)
            total += rs.sum(dtype=torch.float64) * (c if diagonal else 2.0 * c)
            if need_grad:
                # (Xᵀ Kᵀ)ᵀ and (Xᵀ K)ᵀ: the layouts the BLAS handles fastest for a thin X
                grad[i0:i1] += (torch.mm(XT[:, j0:j1], Kt.T).T - rs[:, None] * Xi).mul_(c)
                if not diagonal:
                    grad[j0:j1] += (torch.mm(XT[:, i0:i1], Kt).T - Kt.sum(0)[:, None] * X[j0:j1]).mul_(c)
    if need_grad:
        grad.mul_(4.0)
    return total, grad


class Repulsion(torch.autograd.Function):
    """``Σ_nm w⁻_nm exp(−‖x_n − x_m‖²)`` for a symmetric b × b ``w⁻``, with its gradient
    ``−4 (diag(K1) − K) X`` (``K = w⁻ ∘ exp(−D²)``) computed in the same blocked pass (:func:`repulsion`), so
    neither the forward nor the backward pass keeps a b × b intermediate alive. ``Repulsion.apply(X, wneg)``;
    ``wneg`` may also be a number: the same weight for every pair n ≠ m (uniform repulsion, no b × b tensor).
    """

    @staticmethod
    def forward(ctx, X, wneg):
        tile = repulsion_tile(X.shape[0], device=X.device, itemsize=X.element_size())
        if isinstance(wneg, torch.Tensor):
            weight = lambda i0, i1, j0, j1: wneg[i0:i1, j0:j1]  # noqa: E731
        else:
            weight = lambda i0, i1, j0, j1: float(wneg)  # noqa: E731
        total, grad = repulsion(X.detach(), weight, tile=tile)
        ctx.save_for_backward(grad)
        return total.to(X.dtype)

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return g * grad, None
