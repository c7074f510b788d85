"""Numerical kernels behind :mod:`sccourse.etm`: input preparation, the encoder's input layer over the
non-zeros, and the fused mixture likelihood.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import scipy.sparse as sp
import torch

from ._sparse import CSRPair
from ._validation import check_counts

__all__ = [
    "ETMData",
    "GeneLinear",
    "MaskDropout",
    "SparseCounts",
    "as_count_matrix",
    "gaussian_kl",
    "logit_loglik",
    "mixture_loglik",
]


@dataclasses.dataclass
class ETMData:
    """Counts prepared once for training / inference, on one device and in one dtype.

    Attributes
    ----------
    counts
        Dense ``cells x genes`` tensor of raw counts ``x_ng`` (the likelihood uses them unnormalised).
    normalized
        ``x_ng / Σ_g x_ng`` (rows of zero-count cells stay zero): the encoder input.
    batch
        ``cells`` long tensor of batch codes (all zero when there is one batch).
    n_batches
        Number of batch codes.
    obs_names
        Cell names when the data came from an AnnData, else None.
    sparse
        The counts' non-zeros (:class:`SparseCounts`) when at most half the entries are non-zero, else None;
        training then runs the encoder's first layer and the likelihood over the non-zeros only.
    batch_categories
        The batch labels (as strings) that the codes ``0, 1, ...`` stand for, when labels were given, else None;
        a model maps them onto the batches it was trained on.
    """

    counts: torch.Tensor
    normalized: torch.Tensor
    batch: torch.Tensor
    n_batches: int
    obs_names: list | None = None
    sparse: SparseCounts | None = None
    batch_categories: tuple[str, ...] | None = None

    @property
    def n_cells(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.counts.shape[1])

    def subset(self, idx: torch.Tensor) -> ETMData:
        """The cells ``idx`` (a long tensor on the same device)."""
        return ETMData(
            self.counts[idx],
            self.normalized[idx],
            self.batch[idx],
            self.n_batches,
            None,
            None,
            self.batch_categories,
        )

    def to(self, device: torch.device, dtype: torch.dtype) -> ETMData:
        """The same data on ``device`` in ``dtype``."""
        return ETMData(
            self.counts.to(device, dtype),
            self.normalized.to(device, dtype),
            self.batch.to(device),
            self.n_batches,
            self.obs_names,
            None if self.sparse is None else self.sparse.to(device, dtype),
            self.batch_categories,
        )


class GeneLinear(torch.nn.Module):
    """``y = x W + b`` with the weight stored genes-major (``in_features x out_features``).

    The same map as :class:`torch.nn.Linear` (same initialisation law, ``U(±1/√in)``), stored transposed:
    each gene's row of ``W`` is contiguous, which is what the sparse product over a cell's non-zeros gathers.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = torch.nn.Parameter(
            torch.empty(self.in_features, self.out_features).uniform_(-bound, bound)
        )
        self.bias = torch.nn.Parameter(torch.empty(self.out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features} (weight stored in x out)"


class _SparseInputLinear(torch.autograd.Function):
    """``X̃ W + b`` for a fixed sparse input ``X̃`` (no gradient): both the product and the weight gradient
    ``X̃ᵀ g`` run over the non-zeros only (:class:`SparseCounts` holds ``X̃`` in both orientations).
    """

    @staticmethod
    def forward(ctx, sc, weight, bias):
        ctx.sc = sc
        return sc.input_mm(weight).add_(bias)

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous()
        grad_w = ctx.sc.input_t_mm(g) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0) if ctx.needs_input_grad[2] else None
        return None, grad_w, grad_b


def sparse_input_linear(sc: SparseCounts, layer: GeneLinear) -> torch.Tensor:
    """``layer(X̃)`` for the normalised counts ``X̃`` held by ``sc`` (which need no gradient)."""
    return _SparseInputLinear.apply(sc, layer.weight, layer.bias)


class MaskDropout(torch.nn.Dropout):
    """:class:`torch.nn.Dropout` with its mask drawn as ``U(0, 1) ≥ p`` (one uniform draw per entry: on the
    CPU several times cheaper than torch's Bernoulli sampler; the same distribution).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return torch.zeros_like(x)
        keep = torch.rand_like(x) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))


class SparseCounts:
    """The non-zeros of a cells x genes count matrix: their pattern (:class:`~sccourse._sparse.CSRPair`), the
    raw counts ``values`` and the normalised ``x_ng / Σ_g x_ng`` (both in the pattern's CSR order).
    """

    #: the non-zeros are kept (and the encoder's first layer runs on them) when at most this fraction of
    #: the entries are non-zero
    MAX_DENSITY = 0.5
    #: the probability-space likelihood runs on the non-zeros at most at this density; above it the chunked
    #: dense kernel is faster (crossover measured on the benchmark matrix: benchmarks/README-etm.md)
    LIKELIHOOD_MAX_DENSITY = 0.15

    def __init__(
        self, pattern: CSRPair, values: torch.Tensor, normalized: torch.Tensor, library: torch.Tensor
    ):
        self.pattern, self.values, self.normalized = pattern, values, normalized
        self.library = library  # per-cell totals Σ_g x_ng
        self.shape = pattern.shape

    @property
    def density(self) -> float:
        """Fraction of the entries that are non-zero."""
        n, g = self.shape
        return self.values.numel() / max(n * g, 1)

    @classmethod
    def from_scipy(cls, X, *, device: torch.device, dtype: torch.dtype) -> SparseCounts:
        X = CSRPair.canonical(X)
        totals = np.asarray(X.sum(axis=1)).ravel()
        lib = np.repeat(totals, np.diff(X.indptr))  # > 0 wherever a value is stored
        return cls(
            CSRPair.from_scipy(X, device=device),
            torch.as_tensor(X.data, dtype=dtype, device=device),
            torch.as_tensor(X.data / lib, dtype=dtype, device=device),
            torch.as_tensor(totals, dtype=dtype, device=device),
        )

    def to(self, device: torch.device, dtype: torch.dtype) -> SparseCounts:
        return SparseCounts(
            self.pattern.to(device),
            self.values.to(device, dtype),
            self.normalized.to(device, dtype),
            self.library.to(device, dtype),
        )

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """The cells x genes pattern holding ``values`` (CSR order), as a torch CSR tensor."""
        return self.pattern.csr(values)

    def mm(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``A @ dense`` (cells x width) for the cells x genes pattern holding ``values`` (CSR order)."""
        return self.pattern.mm(values, dense)

    def mm_t(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``Aᵀ @ dense`` (genes x width) for ``A`` the pattern holding ``values`` (CSR order)."""
        return self.pattern.mm_t(values, dense)

    def input_mm(self, dense: torch.Tensor) -> torch.Tensor:
        """``X̃ @ dense`` for the normalised counts ``X̃`` (``dense``: genes x width)."""
        return self.pattern.fixed_mm("normalized", self.normalized, dense)

    def input_t_mm(self, dense: torch.Tensor) -> torch.Tensor:
        """``X̃ᵀ @ dense`` (``dense``: cells x width)."""
        return self.pattern.fixed_mm_t("normalized", self.normalized, dense)


def as_count_matrix(X, name: str = "X", *, min_cells: int = 2) -> np.ndarray | sp.csr_matrix:
    """Validate a cells x genes matrix of raw counts: 2-D, numeric, finite, non-negative whole numbers, with at
    least ``min_cells`` cells and 2 genes (``name`` names it in the messages). Returns numpy or CSR (float64).
    """
    expected = f"{name} must be a numeric cells x genes count matrix (numpy, scipy.sparse or torch)"
    if isinstance(X, torch.Tensor):
        if X.layout != torch.strided:  # a sparse tensor
            X = X.to_dense()
        if X.is_complex():
            raise TypeError(f"{expected}, got a {X.dtype} tensor")
        X = X.detach().cpu()
        X = (X.double() if X.is_floating_point() else X).numpy()
    if sp.issparse(X):
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{expected}, got a sparse matrix of dtype {X.dtype}")
        X = sp.csr_matrix(X, dtype=np.float64)
        values = X.data
    else:
        try:
            arr = np.asarray(X)
        except (TypeError, ValueError) as err:  # ragged nested lists
            raise TypeError(f"{expected}, got {type(X).__name__}: {err}") from err
        if arr.dtype.kind == "O":
            if not all(isinstance(v, numbers.Real) for v in arr.flat):
                raise TypeError(f"{expected}, got {type(X).__name__} holding non-numbers")
        elif arr.dtype.kind not in "biuf":
            raise TypeError(f"{expected}, got {type(X).__name__} of dtype {arr.dtype}")
        X = values = np.asarray(arr, dtype=np.float64)
    shape = X.shape
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D cells x genes count matrix, got shape {shape}")
    if shape[0] < min_cells or shape[1] < 2:
        cells = f"{min_cells} cell" + ("s" if min_cells != 1 else "")
        raise ValueError(f"{name} must hold at least {cells} and 2 genes, got shape {shape}")
    check_counts(values, where=name)
    return X


def to_tensors(
    X,
    batch_codes: np.ndarray,
    n_batches: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
    obs_names=None,
    batch_categories: tuple[str, ...] | None = None,
) -> ETMData:
    """Dense counts and library-size-normalised input on ``device`` (X already validated)."""
    dense = X.toarray() if sp.issparse(X) else X
    counts = torch.as_tensor(dense, dtype=dtype, device=device)
    lib = counts.sum(dim=1, keepdim=True)
    normalized = counts / lib.clamp_min(torch.finfo(dtype).tiny)  # zero-count cells stay all-zero
    batch = torch.as_tensor(np.asarray(batch_codes, dtype=np.int64), device=device)
    nnz = X.nnz if sp.issparse(X) else int(np.count_nonzero(X))
    sparse = None
    if nnz <= SparseCounts.MAX_DENSITY * X.shape[0] * X.shape[1]:
        sparse = SparseCounts.from_scipy(sp.csr_matrix(X), device=device, dtype=dtype)
    return ETMData(counts, normalized, batch, int(n_batches), obs_names, sparse, batch_categories)


_CHUNK_ELEMENTS = 1 << 20  # rows per chunk x genes: 4 MB of float32, within a core's L2 + L3 share


class _MixtureLogLik(torch.autograd.Function):
    """``Σ_n Σ_g x_ng log (θ β)_ng``, computed in row chunks with its gradients formed on the way.

    With ``R = X / (θβ)``: ``∂/∂θ = R βᵀ`` and ``∂/∂β = θᵀ R``. Each chunk of cells makes its ``θβ``, log,
    ratio and gradient contributions while they are in cache, so the N x G intermediates never exist in
    full; the backward pass only scales the stored gradients by the incoming one.
    """

    @staticmethod
    def forward(ctx, theta, beta, counts):
        need_theta, need_beta = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n, g = counts.shape
        step = max(1, _CHUNK_ELEMENTS // max(g, 1))
        tiny = torch.finfo(theta.dtype).tiny
        total = theta.new_zeros(())
        grad_theta = torch.empty_like(theta) if need_theta else None
        grad_beta = torch.zeros_like(beta) if need_beta else None
        buf = theta.new_empty((min(step, n), g))
        buf2 = theta.new_empty((min(step, n), g))
        for s in range(0, n, step):
            e = min(s + step, n)
            th, x = theta[s:e], counts[s:e]
            p = torch.mm(th, beta, out=buf[: e - s])
            p.clamp_min_(tiny)
            logp = torch.log(p, out=buf2[: e - s])
            total += torch.dot(logp.view(-1), x.reshape(-1))
            if need_theta or need_beta:
                ratio = torch.div(x, p, out=p)
                if need_theta:
                    torch.mm(ratio, beta.t(), out=grad_theta[s:e])
                if need_beta:
                    grad_beta.addmm_(th.t(), ratio)
        ctx.save_for_backward(grad_theta, grad_beta)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_theta, grad_beta = ctx.saved_tensors
        gt = grad_theta * grad_out if grad_theta is not None else None
        gb = grad_beta * grad_out if grad_beta is not None else None
        return gt, gb, None


class _SparseMixtureLogLik(_MixtureLogLik):
    """``Σ x_ng log (θβ)_ng`` over the non-zeros only: ``(θβ)`` sampled at the non-zeros, and the gradients
    ``R βᵀ`` and ``θᵀ R`` as sparse products with ``R = X / (θβ)`` (zero wherever ``x_ng = 0``); the backward
    pass is the dense version's (it scales the stored gradients).
    """

    @staticmethod
    def forward(ctx, theta, beta, sc):
        tiny = torch.finfo(theta.dtype).tiny
        p = torch.sparse.sampled_addmm(sc.csr(sc.values), theta, beta, beta=0.0).values().clamp_min_(tiny)
        total = torch.dot(torch.log(p), sc.values)
        ratio = sc.values / p
        grad_theta = sc.mm(ratio, beta.t().contiguous()) if ctx.needs_input_grad[0] else None
        grad_beta = sc.mm_t(ratio, theta.contiguous()).t() if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(grad_theta, grad_beta)
        return total


def mixture_loglik(
    theta: torch.Tensor, beta: torch.Tensor, counts: torch.Tensor, sparse: SparseCounts | None = None
) -> torch.Tensor:
    """Summed categorical log-likelihood ``Σ_n Σ_g x_ng log(θ_n · β_g)`` (θ rows and β rows sum to 1).

    ``θβ`` is clamped at the dtype's smallest normal number before the log. With ``sparse`` (the
    non-zeros of ``counts``), only the non-zero terms are evaluated — the others are zero.
    """
    if sparse is not None:
        return _SparseMixtureLogLik.apply(theta, beta, sparse)
    return _MixtureLogLik.apply(theta, beta, counts)


def _logit_pass(theta, logits, bias, counts, batch, library, need, *, shift: bool):
    """One chunked pass of :class:`_LogitLogLik`: ``(total, (∂θ, ∂B, ∂b), z)`` with ``z`` the per-cell sums
    of ``exp(η)`` (of ``exp(η − max η)`` with ``shift``).
    """
    n, g = counts.shape
    need_theta, need_logits, need_bias = need
    total = theta.new_zeros(())
    grad_theta = torch.empty_like(theta) if need_theta else None
    grad_logits = torch.zeros_like(logits) if need_logits else None
    grad_bias = torch.zeros_like(bias) if need_bias else None
    z_all = theta.new_empty(n)
    n_chunks = max(1, -(-n * g // _CHUNK_ELEMENTS))
    step = max(1, -(-n // n_chunks))  # equal chunks
    buf = theta.new_empty((min(step, n), g))
    for s in range(0, n, step):
        e = min(s + step, n)
        th, x, lib = theta[s:e], counts[s:e], library[s:e]
        eta = torch.mm(th, logits, out=buf[: e - s])
        if bias is not None:
            eta += bias[batch[s:e]]
        total += torch.dot(eta.view(-1), x.reshape(-1))
        if shift:
            top = eta.amax(dim=1, keepdim=True)
            eta.sub_(top)
            total -= torch.dot(lib, top.view(-1))
        expd = eta.exp_()
        z = torch.sum(expd, dim=1, out=z_all[s:e])
        total -= torch.dot(lib, torch.log(z))
        if need_theta or need_logits or need_bias:
            r = torch.addcmul(x, expd, (lib / z)[:, None], value=-1.0, out=expd)  # X − N softmax(η)
            if need_theta:
                torch.mm(r, logits.t(), out=grad_theta[s:e])
            if need_logits:
                grad_logits.addmm_(th.t(), r)
            if need_bias:
                grad_bias.index_add_(0, batch[s:e], r)
    return total, (grad_theta, grad_logits, grad_bias), z_all


class _LogitLogLik(torch.autograd.Function):
    """``Σ_n Σ_g x_ng log softmax_g(η_n)`` with ``η_n = θ_n B + b_{s_n}``, in row chunks.

    ``Σ_g x_ng log softmax_g(η_n) = Σ_g x_ng η_ng − N_n log z_n`` with ``N_n = Σ_g x_ng`` and
    ``z_n = Σ_g exp(η_ng)``. Per chunk of cells: ``η`` (one GEMM), ``Σ x η``, then ``exp(η)`` in place, and
    ``R = X − N_n softmax(η_n)`` gives the gradients ``∂/∂θ = R Bᵀ``, ``∂/∂B = θᵀ R`` and
    ``∂/∂b_s = Σ_{n∈s} R_n``, formed while the chunk is in cache (the backward pass scales them).

    No max is subtracted first: when every ``z_n`` comes out finite and above ``exp(−½ log(dtype max))``,
    no ``exp`` overflowed and each row's largest terms are normal numbers, so the result is as accurate as
    the shifted one. Otherwise (huge logits) the pass is redone with each row's max subtracted.
    """

    @staticmethod
    def forward(ctx, theta, logits, bias, counts, batch, library):
        need = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            bias is not None and ctx.needs_input_grad[2],
        )
        if library is None:
            library = counts.sum(dim=1)
        floor = math.exp(-0.5 * math.log(torch.finfo(theta.dtype).max))
        total, grads, z = _logit_pass(theta, logits, bias, counts, batch, library, need, shift=False)
        if z.numel() and not bool(torch.isfinite(z).all() & (z.amin() >= floor)):
            total, grads, z = _logit_pass(theta, logits, bias, counts, batch, library, need, shift=True)
        ctx.save_for_backward(*grads)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grads = [None if t is None else t * grad_out for t in ctx.saved_tensors]
        return grads[0], grads[1], grads[2], None, None, None


def logit_loglik(
    theta: torch.Tensor,
    logits: torch.Tensor,
    counts: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    batch: torch.Tensor | None = None,
    library: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed categorical log-likelihood ``Σ_n Σ_g x_ng log softmax_g(θ_n B + b_{s_n})`` (topics mixed in
    logit space, as scETM's decoder does).

    ``theta``: cells x topics, rows on the simplex; ``logits``: ``B = α ρᵀ`` (topics x genes); ``bias``:
    optional batches x genes ``b`` with ``batch`` the cells' batch codes; ``library``: the cells' totals
    ``Σ_g x_ng`` when already known.
    """
    if bias is not None and batch is None:
        raise ValueError("bias needs the batch code of every cell")
    return _LogitLogLik.apply(theta, logits, bias, counts, batch, library)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-cell ``KL(N(μ, σ²) || N(0, I)) = ½ Σ_k (μ_k² + σ_k² − 1 − log σ_k²)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
