"""Batched maximum-likelihood kernels for the NB / ZINB regression simulators.

Genes are independent given the design matrices, so every gene's coefficients are fitted at once:
a damped Newton (Levenberg–Marquardt) iteration on the exact observed Hessian, batched over genes.
The per-observation log-likelihood is written in its natural parameters (η = log μ, ζ = log r,
ω = logit π); first and second derivatives in those come from torch autograd (the function is
elementwise, so each second derivative is itself an ``n × g`` array) and are pushed through the
design matrices with ``einsum``.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import _progress


# --------------------------------------------------------------------------------------
# log-likelihoods in natural parameters
# --------------------------------------------------------------------------------------
def _softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + eˣ); linear only above x = 40, where the remainder e⁻⁴⁰ is below float64 rounding."""
    return F.softplus(x, beta=1.0, threshold=40.0)


def _at_positive(y: torch.Tensor, fn, *args: torch.Tensor) -> torch.Tensor:
    """``fn(y, *args)`` where ``y > 0`` and 0 where ``y = 0`` (``fn`` must vanish at y = 0).

    The special functions of the NB pmf cost tens of nanoseconds per entry, and count matrices are
    mostly zeros: evaluating them only at the positive counts is what keeps the fits fast. Twice
    differentiable (``masked_select`` / ``masked_scatter``).
    """
    shape = torch.broadcast_shapes(y.shape, *(a.shape for a in args))
    y = y.expand(shape)
    pos = y > 0
    if bool(pos.all()):
        return fn(y, *args)
    vals = fn(y[pos], *(a.expand(shape)[pos] for a in args))
    return torch.zeros(shape, dtype=vals.dtype, device=vals.device).masked_scatter(pos, vals)


def _lgamma_ratio(y, r):
    """``log Γ(y + r) − log Γ(r)``: zero at y = 0."""
    return torch.lgamma(y + r) - torch.lgamma(r)


def _lgamma_y1(y):
    return torch.lgamma(y + 1.0)


def log_factorial(y: torch.Tensor) -> torch.Tensor:
    """``log y!`` elementwise (zero at y = 0 and 1)."""
    return _at_positive(y, _lgamma_y1)


def nb_loglik_natural(
    y: torch.Tensor, log_mu: torch.Tensor, log_r: torch.Tensor, *, constant: bool = True
) -> torch.Tensor:
    """Log NB(y | μ = e^{log_mu}, r = e^{log_r}), elementwise and stable (without ``−log y!`` when not
    ``constant``: the fits leave that parameter-free term out of their iterations).

    ``log Γ(y+r) − log Γ(r) − log Γ(y+1) − r·softplus(log μ − log r) − y·softplus(log r − log μ)``,
    using ``log(r/(r+μ)) = −softplus(log μ − log r)`` and ``log(μ/(r+μ)) = −softplus(log r − log μ)``.
    """
    r = torch.exp(log_r)
    diff = log_mu - log_r
    # softplus(x) for large positive x is x; torch's softplus switches to x above its threshold.
    term_r = -r * _softplus(diff)
    term_y = -y * _softplus(-diff)
    term_y = torch.where(y == 0, torch.zeros_like(term_y), term_y)
    out = _at_positive(y, _lgamma_ratio, r) + term_r + term_y
    return out - log_factorial(y) if constant else out


def _digamma_diff(y, r):
    return torch.digamma(y + r) - torch.digamma(r)


def _trigamma_diff(y, r):
    return torch.polygamma(1, y + r) - torch.polygamma(1, r)


def nb_derivatives(y: torch.Tensor, log_mu: torch.Tensor, log_r: torch.Tensor, *, constant: bool = True):
    """NB log-likelihood with its first and second derivatives in (η = log μ, ζ = log r), in closed form.

    With ``s = μ/(μ+r)``: ``∂η = (1−s)y − rs``, ``∂ζ = r[ψ(y+r) − ψ(r) − softplus(η−ζ) + s] − (1−s)y``,
    ``∂ηη = −(y+r)s(1−s)``, ``∂ηζ = s·∂η``, ``∂ζζ = ∂ζ + r²[ψ′(y+r) − ψ′(r)] + rs² + (1−s)²y``.
    Returns ``(loglik, [∂η, ∂ζ], [[∂ηη, ∂ηζ], [∂ηζ, ∂ζζ]])``, each ``n × genes``.
    """
    r = torch.exp(log_r)
    diff = log_mu - log_r
    s = torch.sigmoid(diff)
    sp_diff = _softplus(diff)
    ll = nb_loglik_natural(y, log_mu, log_r, constant=constant)
    d_eta = (1.0 - s) * y - r * s
    d_zeta = r * (_at_positive(y, _digamma_diff, r) - sp_diff + s) - (1.0 - s) * y
    h_ee = -(y + r) * s * (1.0 - s)
    h_ez = s * d_eta
    h_zz = d_zeta + r * r * _at_positive(y, _trigamma_diff, r) + r * s * s + (1.0 - s) ** 2 * y
    return ll, [d_eta, d_zeta], [[h_ee, h_ez], [h_ez, h_zz]]


def zinb_loglik_natural(
    y: torch.Tensor,
    log_mu: torch.Tensor,
    log_r: torch.Tensor,
    logit_pi: torch.Tensor,
    *,
    constant: bool = True,
) -> torch.Tensor:
    """Log ZINB(y | μ, r, π = sigmoid(logit_pi)), elementwise and stable.

    y > 0: ``log(1−π) + log NB(y)``; y = 0: ``logaddexp(log π, log(1−π) + log NB(0))``, with
    ``log π = −softplus(−ω)`` and ``log(1−π) = −softplus(ω)``.
    """
    log_nb = nb_loglik_natural(y, log_mu, log_r, constant=constant)
    log_1m_pi = -_softplus(logit_pi)
    log_pi = -_softplus(-logit_pi)
    positive = log_1m_pi + log_nb
    # the zero branch uses log NB(0) = −r·softplus(log μ − log r) everywhere, so that its (discarded)
    # value at y > 0 stays finite and the unused branch cannot feed NaN into the derivatives
    log_nb0 = -torch.exp(log_r) * _softplus(log_mu - log_r)
    b = log_1m_pi + log_nb0
    # logaddexp(a, b) written as b + softplus(a − b): torch's own logaddexp has second derivatives that turn into
    # inf/inf = NaN when the two terms are hundreds of nats apart, and the double backward of abs() (as in
    # max + softplus(−|a − b|)) imports torch._dynamo, which rewraps torch.manual_seed in the middle of a session
    zero = b + _softplus(log_pi - b)
    return torch.where(y == 0, zero, positive)


@contextlib.contextmanager
def cpu_threads(device: torch.device, n_elements: int, *, small: int = 100_000):
    """Run small CPU problems on one intra-op thread (thread start-up dominates there); restore after."""
    if device.type != "cpu" or n_elements > small:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------
# batched damped Newton
# --------------------------------------------------------------------------------------
@dataclass
class NewtonResult:
    theta: torch.Tensor  # genes × P
    loglik: torch.Tensor  # genes
    converged: torch.Tensor  # genes (bool)
    n_iter: torch.Tensor  # genes (int)
    grad_norm: torch.Tensor  # genes (max |∂ℓ/∂θ|)


def _natural(theta: torch.Tensor, designs: list[torch.Tensor], slices: list[slice]) -> list[torch.Tensor]:
    return [X @ theta[:, sl].T for X, sl in zip(designs, slices)]


def _objective(loglik_fn, Y, theta, designs, slices) -> torch.Tensor:
    with torch.no_grad():
        return -loglik_fn(Y, *_natural(theta, designs, slices), constant=False).sum(0)


def _derivatives(loglik_fn, Y, theta, designs, slices, derivs_fn=None):
    """Negative log-likelihood per gene, its gradient (genes × P) and Hessian (genes × P × P).

    The derivatives in the natural parameters come from ``derivs_fn`` (closed form) when given,
    otherwise from autograd on ``loglik_fn``.
    """
    etas = _natural(theta, designs, slices)
    K = len(etas)
    if derivs_fn is not None:
        ll, first, second = derivs_fn(Y, *etas, constant=False)
    else:
        etas = [e.detach().requires_grad_(True) for e in etas]
        with torch.enable_grad():
            ll = loglik_fn(Y, *etas, constant=False)
            first = torch.autograd.grad(ll.sum(), etas, create_graph=True)
            second = [[None] * K for _ in range(K)]
            for k in range(K):
                row = torch.autograd.grad(first[k].sum(), etas[k:], retain_graph=True, allow_unused=True)
                for j, h in enumerate(row, start=k):
                    h = torch.zeros_like(etas[j]) if h is None else h.detach()
                    second[k][j] = second[j][k] = h
        first = [f.detach() for f in first]
    G, P = theta.shape
    grad = torch.empty(G, P, dtype=theta.dtype, device=theta.device)
    hess = torch.empty(G, P, P, dtype=theta.dtype, device=theta.device)
    for k in range(K):
        grad[:, slices[k]] = -(designs[k].T @ first[k]).T
        for j in range(k, K):
            # Σ_n X_k[n, a] h[n, g] X_j[n, b]  ->  genes × a × b, as a broadcast batched matmul
            weighted = second[k][j].T[:, :, None] * designs[k][None]  # genes × n × a
            block = -(weighted.transpose(1, 2) @ designs[j])
            hess[:, slices[k], slices[j]] = block
            if j != k:
                hess[:, slices[j], slices[k]] = block.transpose(1, 2)
    return -ll.detach().sum(0), grad, hess


def damped_newton(
    loglik_fn,
    Y: torch.Tensor,
    designs: list[torch.Tensor],
    theta0: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
    progress: bool | None = None,
    derivs_fn=None,
) -> NewtonResult:
    """Minimise ``−Σ_n loglik_fn(Y, X_1θ_1, X_2θ_2, ...)`` for every gene (column of ``Y``) at once.

    Saddle-free, Levenberg–Marquardt-damped Newton: with ``H = V diag(w) Vᵀ`` the step is
    ``Δ = −V diag(1/(|w| + λ·mean|w|)) Vᵀ ∇``; it is kept for a gene only where it lowers that gene's
    objective (then λ ÷ 10), otherwise λ × 10. A gene has converged when a kept, nearly undamped
    (λ ≤ 0.01) step at a positive-definite Hessian has Newton decrement ``−∇·Δ < tol · (1 + |f|)``.
    Each iteration works on the genes still active only. ``derivs_fn(Y, *etas)`` may supply the
    log-likelihood and its derivatives in the natural parameters in closed form (see
    :func:`nb_derivatives`); otherwise autograd differentiates ``loglik_fn`` twice. ``progress``: a bar of the
    iterations (``None``: only on a terminal or in Jupyter, see :mod:`sccourse._progress`).
    """
    sizes = [X.shape[1] for X in designs]
    offsets = np.cumsum([0] + sizes)
    slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(offsets)]
    theta = theta0.clone()
    G, P = theta.shape
    dev = theta.device
    lam = torch.full((G,), 1e-4, dtype=theta.dtype, device=dev)
    active = torch.ones(G, dtype=torch.bool, device=dev)
    converged = torch.zeros(G, dtype=torch.bool, device=dev)
    n_iter = torch.zeros(G, dtype=torch.long, device=dev)
    eye = torch.eye(P, dtype=theta.dtype, device=dev)
    bar = _progress.bar(total=max_iter, progress=progress, desc="Newton")
    for _ in range(max_iter):
        idx = torch.nonzero(active).squeeze(1)
        Ya, th, lam_a = Y[:, idx], theta[idx], lam[idx]
        fval, grad, hess = _derivatives(loglik_fn, Ya, th, designs, slices, derivs_fn)
        # saddle-free damped Newton: H = V diag(w) Vᵀ, step = −V diag(1 / (|w| + λ·mean|w|)) Vᵀ ∇,
        # which is Newton's step where H is positive definite and still a descent step where it is not
        hess = 0.5 * (hess + hess.transpose(1, 2))
        broken = ~(torch.isfinite(hess).all(2).all(1) & torch.isfinite(grad).all(1))
        if bool(broken.any()):  # derivatives overflowed for these genes: fall back to a scaled gradient step
            hess = torch.where(broken[:, None, None], eye, hess)
            grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))
            hess = torch.where(torch.isfinite(hess), hess, torch.zeros_like(hess))
        w, V = torch.linalg.eigh(hess)
        wabs = w.abs()
        floor = 1e-10 * wabs.amax(1, keepdim=True) + 1e-300
        denom = torch.clamp(wabs, min=floor) + lam_a[:, None] * wabs.mean(1, keepdim=True)
        coef = (V.transpose(1, 2) @ grad.unsqueeze(-1)) / denom.unsqueeze(-1)
        # no step along a direction with no curvature to speak of (|w| below the floor): there the quadratic model
        # says nothing, and a step of ∇/floor runs off along it. This is the dispersion of a gene at its Poisson
        # limit (the size r → ∞, where the likelihood flattens): stepping there made the other coefficients'
        # steps fail, the gene stall with a sizeable gradient, and the result depend on the number of threads
        coef = torch.where((wabs < floor).unsqueeze(-1), torch.zeros_like(coef), coef)
        step = -(V @ coef).squeeze(-1)
        step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        f_new = _objective(loglik_fn, Ya, th + step, designs, slices)
        accept = torch.isfinite(f_new) & (f_new <= fval + 1e-12 * fval.abs())
        th = torch.where(accept[:, None], th + step, th)
        decrement = -(grad * step).sum(1)
        # a tiny decrement means convergence only for a (nearly) undamped Newton step
        done = accept & (lam_a <= 1e-2) & (w[:, 0] > 0) & (decrement < tol * (1.0 + fval.abs()))
        stuck = ~accept & (lam_a > 1e12)
        lam_a = torch.where(accept, torch.clamp(lam_a / 10.0, min=1e-12), lam_a * 10.0)
        # a gene whose objective cannot be lowered any further within rounding, at a tiny gradient, is done
        settled = stuck & (grad.abs().amax(1) < 1e-6 * (1.0 + fval.abs()))
        theta[idx], lam[idx] = th, lam_a
        converged[idx] |= done | settled
        active[idx] = ~done & ~stuck
        n_iter[idx] += 1
        bar.update(1)
        if not bool(active.any()):
            break
    bar.close()
    fval, grad, _ = _derivatives(loglik_fn, Y, theta, designs, slices, derivs_fn)
    # the iterations leave out the parameter-free Σ log y!; the reported log-likelihood includes it
    return NewtonResult(
        theta=theta,
        loglik=-fval - log_factorial(Y).sum(0),
        converged=converged,
        n_iter=n_iter,
        grad_norm=grad.abs().amax(1),
    )
