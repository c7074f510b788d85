"""NB and zero-inflated NB log-probabilities with their domain checks, and NB sampling."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from .._simulate_kernels import nb_loglik_natural, zinb_loglik_natural
from .._validation import check_seed

Values = ArrayLike | torch.Tensor


def _as_tensors(*arrays: tuple[str, Values]) -> list[torch.Tensor]:
    """``(name, value)`` pairs as tensors of one dtype and device, broadcast-compatible.

    Tensors fix the dtype (a floating one) and device; array-likes alone become float64 on the CPU. A value
    that is not numeric, or shapes that do not broadcast, raise a ``ValueError`` naming the arguments.
    """
    ref = next((a for _, a in arrays if isinstance(a, torch.Tensor)), None)
    if ref is not None:
        dtype = ref.dtype if ref.dtype.is_floating_point else torch.float64
        device = ref.device
    else:
        dtype, device = torch.float64, torch.device("cpu")
    out = []
    for name, a in arrays:
        if not isinstance(a, torch.Tensor):
            arr = np.asarray(a)
            if arr.dtype.kind not in "biuf":
                raise ValueError(
                    f"{name} must hold numbers, got {arr.dtype} values such as {arr.ravel()[:1]}"
                )
        try:
            out.append(torch.as_tensor(a, dtype=dtype, device=device))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must hold numbers ({err})") from None
    try:
        torch.broadcast_shapes(*(t.shape for t in out))
    except RuntimeError:
        shapes = ", ".join(f"{name} {tuple(t.shape)}" for (name, _), t in zip(arrays, out))
        raise ValueError(f"the shapes of {shapes} do not broadcast together") from None
    return out


def _check_domain(mu: torch.Tensor, r: torch.Tensor) -> None:
    """Means must be finite and >= 0, sizes finite and > 0: anything else is an error, not a NaN."""
    if torch.isnan(mu).any() or torch.isinf(mu).any() or (mu < 0).any():
        raise ValueError(
            f"mu must hold finite means >= 0; found values down to {float(mu.nan_to_num(-1).min()):g} "
            "(or NaN/inf)"
        )
    if torch.isnan(r).any() or torch.isinf(r).any() or (r <= 0).any():
        raise ValueError(
            f"r (the NB size, 1/dispersion) must hold finite values > 0; found "
            f"{float(r.nan_to_num(0).min()):g} (or NaN/inf)"
        )


def _impossible_counts(logp: torch.Tensor, y: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """-inf for counts that cannot occur: negative or non-integer y, and y > 0 when mu = 0 (then P(0) = 1)."""
    if torch.isnan(y).any():
        raise ValueError("y must hold counts, found NaN")
    impossible = (y < 0) | (y != torch.floor(y)) | ((mu == 0) & (y > 0))
    certain = (mu == 0) & (y == 0)
    if impossible.any() or certain.any():
        logp = torch.where(impossible, torch.full_like(logp, -torch.inf), logp)
        logp = torch.where(certain & ~impossible, torch.zeros_like(logp), logp)
    return logp


def nb_logpmf(y: Values, mu: Values, r: Values) -> torch.Tensor:
    """Log-probability of counts under NB(mean ``mu``, size ``r``), elementwise with broadcasting.

    ``log P(y) = log Γ(y+r) − log Γ(r) − log Γ(y+1) + r log(r/(r+μ)) + y log(μ/(r+μ))``, the two
    logarithms computed as ``−softplus(log μ − log r)`` and ``−softplus(log r − log μ)`` so that
    neither ``r ≫ μ`` nor ``μ ≫ r`` loses precision. Variance is ``μ + μ²/r``.

    Parameters
    ----------
    y, mu, r
        Counts (≥ 0), means (≥ 0) and sizes (> 0): tensors on any device, or array-likes (then
        float64 on the CPU). Tensors keep their dtype and device.

    Returns
    -------
    torch.Tensor
        ``log P(y)``, broadcast shape of the inputs; ``-inf`` for counts that cannot occur (negative or
        non-integer ``y``, ``y > 0`` when ``μ = 0``), ``0`` for ``y = 0`` when ``μ = 0``.

    Raises
    ------
    ValueError
        For negative, NaN or infinite means, sizes ``≤ 0`` (or NaN/inf), NaN counts, values that are not
        numbers, or shapes that do not broadcast.
    """
    y, mu, r = _as_tensors(("y", y), ("mu", mu), ("r", r))
    _check_domain(mu, r)
    out = nb_loglik_natural(y, torch.log(mu), torch.log(r))
    return _impossible_counts(out, y, mu)


def zinb_logpmf(y: Values, mu: Values, r: Values, pi_logit: Values) -> torch.Tensor:
    """Log-probability under the zero-inflated NB, ``π·1[y=0] + (1−π)·NB(y | μ, r)``, ``π = sigmoid(pi_logit)``.

    Stable without exponentiating: ``log(1−π) = −softplus(ω)``, ``log π = −softplus(−ω)``; for ``y = 0``
    the mixture is ``logaddexp(log π, log(1−π) + log NB(0))``, for ``y > 0`` it is ``log(1−π) + log NB(y)``,
    exact at any count (no floor on small probabilities).

    Parameters
    ----------
    y, mu, r
        As in :func:`nb_logpmf`.
    pi_logit
        Logit ``ω`` of the zero-inflation probability ``π`` (not NaN).

    Returns
    -------
    torch.Tensor
        ``log P(y)``, broadcast shape of the inputs, with the conventions of :func:`nb_logpmf`.

    Raises
    ------
    ValueError
        As :func:`nb_logpmf`, and for a NaN ``pi_logit``.
    """
    y, mu, r, w = _as_tensors(("y", y), ("mu", mu), ("r", r), ("pi_logit", pi_logit))
    _check_domain(mu, r)
    if torch.isnan(w).any():
        raise ValueError("pi_logit must not hold NaN")
    if torch.isnan(y).any():
        raise ValueError("y must hold counts, found NaN")
    out = zinb_loglik_natural(y, torch.log(mu), torch.log(r), w)
    # mu = 0: NB(0) = 1, so P(0) = 1 and P(y > 0) = 0; negative or non-integer y cannot occur
    impossible = (y < 0) | (y != torch.floor(y)) | ((mu == 0) & (y > 0))
    if impossible.any() or (mu == 0).any():
        out = torch.where((mu == 0) & (y == 0), torch.zeros_like(out), out)
        out = torch.where(impossible, torch.full_like(out, -torch.inf), out)
    return out


def sample_nb(mu: ArrayLike, r: ArrayLike, *, seed: int = 0) -> np.ndarray:
    """Draw NB(mean ``mu``, size ``r``) counts elementwise with ``np.random.default_rng(seed)``.

    NumPy's ``negative_binomial(n, p)`` counts failures before the ``n``-th success with success probability
    ``p``; with ``n = r`` and ``p = r / (r + μ)`` its mean is ``μ`` and its variance ``μ + μ²/r``.

    Parameters
    ----------
    mu, r
        Means (≥ 0) and sizes (> 0), array-likes that broadcast (e.g. ``exp(X₁ B)`` and ``exp(X₂ D)``, cells ×
        genes).
    seed
        Seed of the generator (an integer in [0, 2**32 − 1]): the same seed gives the same counts.

    Returns
    -------
    numpy.ndarray
        int64 counts of the broadcast shape.
    """
    arrays = {}
    for name, value in (("mu", mu), ("r", r)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold numbers, got {arr.dtype} values")
        arrays[name] = arr.astype(np.float64)
    try:
        mu, r = np.broadcast_arrays(arrays["mu"], arrays["r"])
    except ValueError:
        raise ValueError(
            f"the shapes of mu {arrays['mu'].shape} and r {arrays['r'].shape} do not broadcast together"
        ) from None
    if np.any(~np.isfinite(mu)) or np.any(mu < 0):
        raise ValueError("mu must be finite and non-negative")
    if np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ValueError("r must be finite and positive")
    rng = np.random.default_rng(check_seed(seed))
    return rng.negative_binomial(r, r / (r + mu)).astype(np.int64)
