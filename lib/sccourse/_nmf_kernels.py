"""Torch kernels behind :mod:`sccourse.nmf`: data holders and the multiplicative updates.

Everything here works on the genes x cells matrix ``X`` (M x N) with ``X ≈ W H``, ``W`` (M x K),
``H`` (K x N). Two data holders expose the few products the updates need, so the update code
is the same for dense and sparse input:

* :class:`DenseData` keeps ``X`` as a dense tensor;
* :class:`SparseData` keeps ``X`` in CSR form (and its transpose) and never forms a dense ``X``;
  for the Poisson update it evaluates ``(WH)_ij`` only at the non-zeros of ``X``.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ._progress import bar as _bar
from ._sparse import CSRPair

#: Division guard, as in scikit-learn's multiplicative updates (float32 machine epsilon).
EPS = float(np.finfo(np.float32).eps)

# a dense block of W H is at most this many entries when the sparse Poisson update goes blockwise
_BLOCK_ENTRIES = 1 << 22


def _fsum(t: torch.Tensor) -> float:
    """Sum in float64 (accurate objective values from float32 tensors)."""
    if (
        t.dim() >= 2 and t.shape[-1] > 1
    ):  # row sums first: torch's float64 reduction of a whole matrix is ~3x slower
        return float(torch.sum(t.reshape(-1, t.shape[-1]), 1, dtype=torch.float64).sum())
    return float(torch.sum(t, dtype=torch.float64))


class DenseData:
    """Dense ``X`` (M x N) on a device."""

    sparse = False

    def __init__(self, X: torch.Tensor):
        self.X = X
        self.shape = tuple(X.shape)
        self.max_x = float(X.max())
        self.sum_x = _fsum(X)
        self._buf = None  # the M x N buffer of ratio()

    # each loss needs one of these constants: computed on first use (a pass over X and an M x N temporary each)
    @functools.cached_property
    def sum_x2(self) -> float:
        X = self.X
        return float(torch.sum(X.double() ** 2)) if X.dtype != torch.float64 else float(torch.sum(X * X))

    @functools.cached_property
    def sum_xlogx(self) -> float:
        return _fsum(torch.special.xlogy(self.X, self.X))  # 0 log 0 = 0

    def x_ht(self, H: torch.Tensor) -> torch.Tensor:
        """``X Hᵀ`` (M x K)."""
        return self.X @ H.T

    def wt_x(self, W: torch.Tensor) -> torch.Tensor:
        """``Wᵀ X`` (K x N)."""
        return W.T @ self.X

    def ratio(self, W: torch.Tensor, H: torch.Tensor, want_loglik: bool, transposed: bool = False):
        """``R = X / max(WH, eps)`` (zero where X is zero) and, if asked, ``Σ X log max(WH, eps)``.

        ``transposed`` is accepted for symmetry with :class:`SparseData` (a dense ``R`` serves both updates).
        ``R`` is written into one M x N buffer kept between calls (valid until the next call): a fresh
        M x N temporary per half-step costs the allocator and first-touch page faults about as much as one
        of the products.
        """
        buf = self._buf
        if buf is None or buf.dtype != W.dtype or buf.device != W.device:
            buf = self._buf = torch.empty(self.shape, dtype=W.dtype, device=W.device)
        torch.mm(W, H, out=buf)
        # (WH)_ij >= max(Σ_k W_ik min_j H_kj, Σ_k min_i W_ik H_kj): on the CPU, when either bound clears EPS
        # everywhere, the clamp is a no-op and its pass over the buffer is skipped (same numbers either way);
        # on a GPU the pass is cheaper than the host synchronisation the check needs
        if buf.device.type != "cpu" or not (
            float((W @ H.amin(1)).min()) >= EPS or float((W.amin(0) @ H).min()) >= EPS
        ):
            buf.clamp_min_(EPS)
        xlog = _fsum(torch.special.xlogy(self.X, buf)) if want_loglik else None
        return torch.div(self.X, buf, out=buf), xlog

    @staticmethod
    def r_ht(R, H):
        return R @ H.T

    @staticmethod
    def wt_r(W, R):
        return W.T @ R


class SparseData:
    """Sparse ``X`` (M x N) held as CSR (rows = genes) plus its transpose; never densified."""

    sparse = True

    def __init__(self, X: sp.csr_matrix, dtype: torch.dtype, device: torch.device):
        X = CSRPair.canonical(X)
        M, N = X.shape
        self.shape = (M, N)
        self.device = device
        self.dtype = dtype
        self.pattern = CSRPair.from_scipy(X, device=device)
        self.data = torch.as_tensor(X.data, dtype=dtype, device=device)
        self.data_t = self.pattern.transposed_values(self.data)  # X's values in the transpose's CSR order
        self.Xc = self.pattern.csr(self.data)
        self.Xtc = self.pattern.csr_t(self.data_t)
        self.sum_x = _fsum(self.data)
        self.max_x = float(self.data.max()) if self.data.numel() else 0.0
        self.sum_x2 = float(torch.sum(self.data.double() ** 2))
        self.sum_xlogx = _fsum(self.data * torch.log(self.data))
        # (WH) at the non-zeros, in either CSR order: dense row blocks + a gather when X is not very sparse,
        # per-non-zero row/column gathers otherwise
        self.blockwise = X.nnz / max(M * N, 1) > 0.02
        p = self.pattern
        self._csr_arrays = {
            False: (X.indptr, X.indices, N),
            True: (p.crow_t.cpu().numpy(), p.col_t.cpu().numpy(), M),
        }
        self._layouts: dict = {}  # built on first use (only the Poisson updates need them)

    def _layout(self, indptr: np.ndarray, indices: np.ndarray, n_cols: int) -> dict:
        """Index arrays for evaluating a dense product at the stored entries of one CSR layout."""
        n_rows = len(indptr) - 1
        row = torch.repeat_interleave(
            torch.arange(n_rows, device=self.device), torch.as_tensor(np.diff(indptr), device=self.device)
        )
        col = torch.as_tensor(indices, dtype=torch.int64, device=self.device)
        if not self.blockwise:
            return {"row": row, "col": col}
        rows_per_block = max(1, _BLOCK_ENTRIES // max(n_cols, 1))
        blocks = []
        for r0 in range(0, n_rows, rows_per_block):
            r1 = min(n_rows, r0 + rows_per_block)
            a, b = int(indptr[r0]), int(indptr[r1])
            blocks.append((r0, r1, a, b, (row[a:b] - r0) * n_cols + col[a:b]))
        return {"blocks": blocks}

    @staticmethod
    def _mm(A, B: torch.Tensor) -> torch.Tensor:
        """Sparse A (torch CSR) @ dense B."""
        return A @ B.contiguous()

    def x_ht(self, H):
        return self._mm(self.Xc, H.T)

    def wt_x(self, W):
        return self._mm(self.Xtc, W).T

    def wh_at_nonzeros(self, W, H, transposed: bool = False):
        """``(WH)_ij`` at every stored ``(i, j)``: in X's CSR order, or (``transposed``) in its transpose's."""
        A, B = (H.T, W.T) if transposed else (W, H)  # (WH)ᵀ = Hᵀ Wᵀ
        if transposed not in self._layouts:
            self._layouts[transposed] = self._layout(*self._csr_arrays[transposed])
        lay = self._layouts[transposed]
        out = torch.empty(
            lay["blocks"][-1][3] if self.blockwise else lay["row"].numel(),
            dtype=self.dtype,
            device=self.device,
        )
        if self.blockwise:
            for r0, r1, a, b, flat in lay["blocks"]:
                out[a:b] = torch.take(A[r0:r1] @ B, flat)
            return out
        Bt = B.T.contiguous()
        step = max(1, _BLOCK_ENTRIES // max(A.shape[1], 1))
        row, col = lay["row"], lay["col"]
        for a in range(0, out.numel(), step):
            b = min(out.numel(), a + step)
            out[a:b] = (A.index_select(0, row[a:b]) * Bt.index_select(0, col[a:b])).sum(1)
        return out

    def ratio(self, W, H, want_loglik: bool, transposed: bool = False):
        """``X / max(WH, eps)`` at the non-zeros (in the order of :meth:`wh_at_nonzeros`) and, if asked,
        ``Σ X log max(WH, eps)``. :meth:`wt_r` takes the transposed order, :meth:`r_ht` the plain one.
        """
        wh = self.wh_at_nonzeros(W, H, transposed).clamp_min_(EPS)
        x = self.data_t if transposed else self.data
        vals = x / wh
        xlog = _fsum(x * torch.log(wh)) if want_loglik else None
        return vals, xlog

    def r_ht(self, vals, H):
        return self._mm(self.pattern.csr(vals), H.T)

    def wt_r(self, W, vals):
        return self._mm(self.pattern.csr_t(vals), W).T


def _flush_subnormal_(T: torch.Tensor) -> torch.Tensor:
    """Set entries at or below the smallest normal number of the dtype (1.2e-38 in float32) to 0, in place.

    Multiplicative updates drive unused entries of W and H geometrically towards 0; once subnormal they make
    every later product several times slower on CPUs (the BLAS/sparse threads do not flush them), while
    holding nothing a float could still represent relative to the other entries.
    """
    # one pass: x if x > tiny else 0 (NaN stays NaN, so divergence is still detected)
    return torch.nn.functional.threshold_(T, torch.finfo(T.dtype).tiny, 0.0)


def _guard(den: torch.Tensor) -> torch.Tensor:
    """Denominator guard: exact zeros become ``EPS`` (an all-zero factor then stays zero)."""
    return den.masked_fill_(den == 0, EPS)


def sse_objective(data, W, H, XHt) -> float:
    """``‖X − WH‖²_F = ‖X‖² − 2⟨W, XHᵀ⟩ + ⟨WᵀW, HHᵀ⟩`` from the already computed ``X Hᵀ``."""
    cross = float(torch.sum(W.double() * XHt.double()))
    quad = float(torch.sum((W.T @ W).double() * (H @ H.T).double()))
    return max(data.sum_x2 - 2.0 * cross + quad, 0.0)


def sse_step(data, W, H, want_objective: bool = True):
    """One Lee–Seung step for ``‖X − WH‖²``: H first, then W. Returns ``‖X − WH‖²`` after the step
    (None when not ``want_objective``).
    """
    # H <- H * (Wᵀ X) / (Wᵀ W H)
    num = data.wt_x(W)
    den = _guard((W.T @ W) @ H)
    _flush_subnormal_(H.mul_(num.div_(den)))
    # W <- W * (X Hᵀ) / (W H Hᵀ)
    XHt = data.x_ht(H)
    den = _guard(W @ (H @ H.T))
    _flush_subnormal_(W.mul_(XHt / den))
    return sse_objective(data, W, H, XHt) if want_objective else None


def _hals_sweep(F: torch.Tensor, A: torch.Tensor, G: torch.Tensor) -> None:
    """One HALS sweep over the K rows of ``F`` (K x n), in place: for each k,
    ``F_k ← max(0, F_k + (A_k − G_k F) / G_kk)`` with ``A = (data-side product)``, ``G`` the K x K Gram matrix.

    This is exact block coordinate descent on ``‖X − WH‖²`` for one row of H (or one column of W) at a time,
    so each row update is the minimiser given the others and the objective never increases.
    """
    K = F.shape[0]
    for k in range(K):
        g = G[k, k]
        if g <= 0:  # a factor whose other half is all zero: nothing to fit
            continue
        row = F[k] + (A[k] - G[k] @ F) / g
        F[k] = row.clamp_min_(0.0)


def hals_step(data, W, H, want_objective: bool = True):
    """One HALS iteration (Cichocki & Phan 2009) for ``‖X − WH‖²``: all rows of H, then all columns of W.
    Same products as a multiplicative step (Wᵀ X, X Hᵀ and two K x K Grams) plus 2K rank-one sweeps, but each
    sweep solves its block exactly, so far fewer iterations reach a given objective. Returns ``‖X − WH‖²``
    after the step (None when not ``want_objective``).
    """
    WtX = data.wt_x(W)
    _hals_sweep(H, WtX, W.T @ W)
    _flush_subnormal_(H)
    XHt = data.x_ht(H)
    Wt = W.T.contiguous()
    _hals_sweep(Wt, XHt.T.contiguous(), H @ H.T)
    W.copy_(Wt.T)
    _flush_subnormal_(W)
    return sse_objective(data, W, H, XHt) if want_objective else None


def poisson_h_step(data, W, H, want_loglik: bool):
    """KL/Poisson update of H: ``H ← H ∘ Wᵀ(X / WH) / (Wᵀ 1)``.

    Returns ``Σ X log max(WH, eps)`` of the (W, H) *before* the update when ``want_loglik``.
    """
    R, xlog = data.ratio(W, H, want_loglik, transposed=True)
    num = data.wt_r(W, R)
    wsum = W.sum(0)
    wsum = wsum.masked_fill(wsum == 0, 1.0)
    _flush_subnormal_(H.mul_(num / wsum[:, None]))
    return xlog


def poisson_w_step(data, W, H):
    """KL/Poisson update of W: ``W ← W ∘ (X / WH) Hᵀ / (1 Hᵀ)``."""
    R, _ = data.ratio(W, H, False)
    num = data.r_ht(R, H)
    _flush_subnormal_(W.mul_(num / _guard(H.sum(1))[None, :]))


def poisson_terms(data, W, H, xlog: float) -> dict:
    """Mean generalised KL divergence and mean Poisson log-likelihood (without ``log X!``)."""
    M, N = data.shape
    sum_wh = float(W.double().sum(0) @ H.double().sum(1))
    kl = data.sum_xlogx - xlog - data.sum_x + sum_wh
    return {"objective": kl / (M * N), "loglik": (xlog - sum_wh) / (M * N)}


def nndsvd(A, n_components: int, *, variant: str = "nndsvda", seed: int = 0):
    """NNDSVD initialisation (Boutsidis & Gallopoulos 2008) of ``A ≈ U V`` (A: n x f, numpy/scipy).

    Each singular pair ``(u_j, s_j, v_j)`` is split into its positive and negative parts and the
    part with the larger ``‖u±‖‖v±‖`` is kept, scaled by ``sqrt(s_j ‖u±‖‖v±‖)``. ``"nndsvda"`` fills
    the zeros with the mean of ``A``; ``"nndsvd"`` leaves them at zero.
    Returns ``(U0, V0)`` with shapes (n x K) and (K x f).
    """
    from sklearn.utils.extmath import randomized_svd

    U, S, Vt = randomized_svd(A, n_components, random_state=seed)
    n, f = A.shape
    U0 = np.zeros((n, n_components))
    V0 = np.zeros((n_components, f))
    U0[:, 0] = math.sqrt(S[0]) * np.abs(U[:, 0])
    V0[0, :] = math.sqrt(S[0]) * np.abs(Vt[0, :])
    for j in range(1, n_components):
        x, y = U[:, j], Vt[j, :]
        xp, yp = np.maximum(x, 0), np.maximum(y, 0)
        xn, yn = np.abs(np.minimum(x, 0)), np.abs(np.minimum(y, 0))
        xpn, ypn = np.linalg.norm(xp), np.linalg.norm(yp)
        xnn, ynn = np.linalg.norm(xn), np.linalg.norm(yn)
        mp, mn = xpn * ypn, xnn * ynn
        if mp > mn:
            u, v, sigma = xp / xpn, yp / ypn, mp
        else:
            u, v, sigma = xn / xnn, yn / ynn, mn
        lam = math.sqrt(S[j] * sigma)
        U0[:, j] = lam * u
        V0[j, :] = lam * v
    U0[U0 < 1e-6] = 0
    V0[V0 < 1e-6] = 0
    if variant == "nndsvda":
        avg = float(A.mean())
        U0[U0 == 0] = avg
        V0[V0 == 0] = avg
    return U0, V0


def run(data, W, H, *, loss, solver="mu", max_iter, tol, eval_every, labels, callback, progress):
    """The iterations of :func:`sccourse.nmf.nmf` on a data holder: ``W``, ``H`` (torch) are updated in place.

    Returns ``(W, H, history, n_iter)`` with ``W``, ``H`` as numpy arrays and the history as a DataFrame.
    """
    M, N = data.shape
    rows: list[dict] = []
    state = {"first": None, "prev": None, "stop": False, "eval_s": 0.0}
    t0 = time.perf_counter()

    def is_eval(t: int) -> bool:
        return t % eval_every == 0 or t == max_iter

    def finish(rec: dict, H_now: torch.Tensor, W_now: torch.Tensor) -> None:
        """Complete a history row (ARI, callback, convergence); sets state['stop']."""
        te = time.perf_counter()
        rec["ari"] = np.nan
        if labels is not None:
            from .metrics import evaluate_ari

            rec["ari"] = evaluate_ari(H_now.T.detach().cpu().double().numpy(), labels)
        state["eval_s"] += time.perf_counter() - te
        rows.append(rec)
        obj = rec["objective"]
        if state["first"] is None:
            state["first"] = obj
        elif tol is not None and (state["prev"] - obj) / max(abs(state["first"]), 1e-300) < tol:
            state["stop"] = True
        state["prev"] = obj
        if callback is not None and callback(rec["iteration"], W_now, H_now, dict(rec)):
            state["stop"] = True

    pending = None  # Poisson: row waiting for Σ X log WH, which the next H update computes anyway
    bar = _bar(range(1, max_iter + 1), progress=progress, desc=f"NMF-{loss}", leave=False)
    n_iter = 0

    def check_finite(t: int) -> None:
        if not (torch.isfinite(W).all() and torch.isfinite(H).all()):
            raise FloatingPointError(
                f"NMF diverged at iteration {t}: W or H holds inf/NaN ({W.dtype} overflowed on values this large: "
                f"the largest entry of X is {data.max_x:g}). Scale X down (e.g. counts per 10^4) or pass "
                "dtype=torch.float64"
            )

    for t in bar:
        if t % 10 == 0 or is_eval(t):
            check_finite(t)
        if loss == "sse":
            step = hals_step if solver == "hals" else sse_step
            sq = step(data, W, H, want_objective=is_eval(t))
            n_iter = t
            if sq is not None:
                rec = {
                    "iteration": t,
                    "objective": sq / (M * N),
                    "mse": sq / (M * N),
                    "time_s": time.perf_counter() - t0 - state["eval_s"],
                }
                finish(rec, H, W)
                if state["stop"]:
                    break
        else:
            if pending is not None:
                # W, H are still those of iteration t-1 here: read their log-likelihood off this update
                R, xlog = data.ratio(W, H, True, transposed=True)
                pending.update(poisson_terms(data, W, H, xlog))
                finish(pending, H, W)
                pending = None
                if state["stop"]:
                    break
                num = data.wt_r(W, R)
                wsum = W.sum(0)
                H.mul_(num / wsum.masked_fill(wsum == 0, 1.0)[:, None])
            else:
                poisson_h_step(data, W, H, False)
            poisson_w_step(data, W, H)
            n_iter = t
            if is_eval(t):
                pending = {"iteration": t, "time_s": time.perf_counter() - t0 - state["eval_s"]}
    if pending is not None:
        _, xlog = data.ratio(W, H, True)
        pending.update(poisson_terms(data, W, H, xlog))
        finish(pending, H, W)
    bar.close()
    check_finite(n_iter)
    cols = ["iteration", "objective", "mse" if loss == "sse" else "loglik", "ari", "time_s"]
    history = pd.DataFrame(rows, columns=cols)
    history["iteration"] = history["iteration"].astype(int)
    return W.detach().cpu().numpy(), H.detach().cpu().numpy(), history, n_iter
