"""Entropic affinities W⁺ and repulsive weights W⁻ of the elastic embedding."""

from __future__ import annotations

import math
from typing import Literal

import scipy.sparse as sp
import torch

from .. import _ee_kernels as K
from .._device import get_device
from .._validation import check_choice, check_float, check_int, check_seed
from ._checks import Data, Device, check_not_constant, check_perplexity, check_wpos, data_matrix

_EXACT_KNN_MAX_CPU = 30_000  # above this (on CPU) knn="auto" uses pynndescent


def entropic_affinities(
    Y: Data,
    perplexity: float = 30.0,
    *,
    n_neighbors: int | Literal["all"] | None = None,
    method: Literal["ea", "x2p"] = "ea",
    knn: Literal["auto", "exact", "pynndescent"] = "auto",
    tol: float = 1e-10,
    max_iter: int = 200,
    use_rep: str | None = "X_pca",
    return_info: bool = False,
    device: Device = "auto",
    seed: int = 0,
) -> sp.csr_matrix | tuple[sp.csr_matrix, dict]:
    """Symmetric entropic affinities W⁺ of the rows of ``Y`` (a sparse N × N matrix summing to 1).

    For each cell ``n`` the precision β_n of ``p(m|n) ∝ exp(−β_n ‖y_n − y_m‖²)`` (over its neighbours m)
    is set so that the entropy ``H_n = −Σ_m p(m|n) log p(m|n)`` equals ``log(perplexity)``;
    then ``W⁺ = (P + Pᵀ) / (2N)``. A cell whose nearest distance is shared by more than ``perplexity``
    neighbours (duplicated cells) cannot reach that entropy: it gets the limit β_n → ∞ (``p`` uniform over
    the tied neighbours; β_n is the finite value where the other neighbours' weights underflow to 0) and
    ``converged`` False in the info.

    Parameters
    ----------
    Y
        cells × features (numpy, torch, scipy.sparse) or AnnData (``obsm[use_rep]``, else ``.X``); at least 3
        cells, not all identical.
    perplexity
        Effective number of neighbours, > 1 and < N − 1.
    n_neighbors
        Neighbours per cell over which ``p(·|n)`` is defined: ``None`` → ``min(N − 1, ⌈3 · perplexity⌉)``;
        ``"all"`` (or ``N − 1``) → every other cell (dense, for small N).
    method
        ``"ea"``: Newton iterations in log β with a bisection safeguard (entropic affinities);
        ``"x2p"``: plain bisection on β (the t-SNE recipe; slower, same answer).
    knn
        ``"exact"`` (blocked brute force on ``device``), ``"pynndescent"`` (approximate) or ``"auto"``
        (exact on GPU or up to 30,000 cells on CPU, pynndescent beyond).
    tol, max_iter
        Stop when ``|H_n − log perplexity| < tol`` for every cell, or after ``max_iter`` iterations.
    use_rep
        AnnData input: the ``obsm`` key to embed (``"X"`` or ``None``: ``.X``).
    return_info
        Also return a dict with ``beta`` (N,), ``neighbors`` (N × k), ``converged`` (N,) arrays and ``k``.
    device, seed
        Where the distances and the calibration run; seed of pynndescent.

    Returns
    -------
    scipy.sparse.csr_matrix
        W⁺, symmetric, non-negative, entries summing to 1 (and the info dict when ``return_info``).
    """
    dev = get_device(device)
    Yn = data_matrix(Y, use_rep=use_rep)
    n = Yn.shape[0]
    perplexity = check_perplexity(perplexity, n)
    check_choice(method, "method", ("ea", "x2p"))
    check_choice(knn, "knn", ("auto", "exact", "pynndescent"))
    if n_neighbors is None:
        k = min(n - 1, math.ceil(3 * perplexity))
    elif isinstance(n_neighbors, str):
        if n_neighbors != "all":
            raise ValueError(f"n_neighbors must be None, 'all' or an integer, got {n_neighbors!r}")
        k = n - 1
    else:
        k = check_int(n_neighbors, "n_neighbors", minimum=1)
        if k > n - 1:
            raise ValueError(f"n_neighbors ({k}) must be at most N - 1 = {n - 1}")
    if perplexity >= k:
        raise ValueError(
            f"perplexity ({perplexity:g}) must be smaller than n_neighbors ({k}): the entropy of "
            f"{k} neighbours is at most log({k})"
        )
    tol = check_float(tol, "tol", minimum=0.0, strict=True)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    seed = check_seed(seed)
    check_not_constant(Yn)

    Yt = torch.as_tensor(Yn, device=dev)
    if k == n - 1:
        idx = torch.arange(n, device=dev).repeat(n, 1)
        idx = idx[~torch.eye(n, dtype=torch.bool, device=dev)].reshape(n, n - 1)
        d2 = K.exact_sqdist(Yt, idx)
    else:
        use_exact = knn == "exact" or (knn == "auto" and (dev.type == "cuda" or n <= _EXACT_KNN_MAX_CPU))
        if use_exact:
            Yk = Yt.to(torch.float32) if dev.type == "cuda" else Yt
            idx, d2 = K.knn_exact(Yk, k)
            if Yk is not Yt:  # the neighbours were found in float32: their distances again from the data
                d2 = K.exact_sqdist(Yt, idx)
        else:
            idx = torch.as_tensor(K.knn_nndescent(Yn, k, seed=seed), device=dev)
            d2 = K.exact_sqdist(Yt, idx)
    # calibrate in chunks of rows whose temporaries stay cache-sized on the CPU (3x faster than 64 MiB chunks)
    chunk = max(1, (K._CPU_TILE_BYTES if dev.type == "cpu" else 2**26) // (8 * k))
    P = torch.empty_like(d2)
    beta = torch.empty(n, dtype=torch.float64, device=dev)
    conv = torch.empty(n, dtype=torch.bool, device=dev)
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        P[i0:i1], beta[i0:i1], conv[i0:i1] = K.calibrate(
            d2[i0:i1], perplexity, method=method, tol=tol, max_iter=max_iter
        )
    idx_np = idx.cpu().numpy()
    W = K.symmetrise(idx_np, P.cpu().numpy(), n)
    if return_info:
        # β on the unshifted distances is the same (a per-row shift does not change p)
        return W, {"beta": beta.cpu().numpy(), "neighbors": idx_np, "converged": conv.cpu().numpy(), "k": k}
    return W


def repulsive_weights(
    Y: Data | None = None,
    *,
    kind: Literal["uniform", "distance"] = "uniform",
    n: int | None = None,
    use_rep: str | None = "X_pca",
    device: Device = "auto",
) -> K.RepulsiveWeights:
    """Repulsive weights w⁻ as a lazy, block-wise object (no N × N matrix is stored).

    ``kind="uniform"``: ``w⁻_nm = 1/N²`` (n ≠ m); give ``n`` or ``Y``.
    ``kind="distance"``: ``w⁻_nm = ‖y_n − y_m‖² / Σ_ab ‖y_a − y_b‖²`` (NeuralEE's choice); needs ``Y``, whose
    cells must not all coincide.
    Pass the result as ``Wneg`` to :func:`ee_objective` or :class:`ElasticEmbedding`.

    Parameters
    ----------
    Y
        cells × features (numpy, torch, scipy.sparse) or AnnData (``obsm[use_rep]``, else ``.X``).
    kind
        ``"uniform"`` or ``"distance"``.
    n
        Number of cells (uniform weights without ``Y``); when ``Y`` is given too, it must match.
    use_rep, device
        AnnData slot of ``Y``; where the distance weights are computed.

    Returns
    -------
    sccourse._ee_kernels.RepulsiveWeights
    """
    check_choice(kind, "kind", ("uniform", "distance"))
    dev = get_device(device)
    if n is not None:
        n = check_int(n, "n", minimum=2)
    if Y is None:
        if kind == "distance" or n is None:
            raise ValueError(
                f"repulsive_weights(kind={kind!r}) needs the data Y"
                + ("" if kind == "distance" else " or the number of cells n")
            )
        return K.RepulsiveWeights(n, "uniform")
    Yn = data_matrix(Y, use_rep=use_rep, min_cells=2)
    if n is not None and n != Yn.shape[0]:
        raise ValueError(f"n ({n}) must equal the number of cells in Y ({Yn.shape[0]}); give one of them")
    if kind == "uniform":
        return K.RepulsiveWeights(Yn.shape[0], "uniform")
    check_not_constant(Yn)
    return K.RepulsiveWeights(Yn.shape[0], "distance", Y=torch.as_tensor(Yn, device=dev))


def prepare_affinities(Y, Wpos, *, perplexity, n_neighbors, affinity, device, seed):
    """The estimators' W⁺: ``Wpos`` checked against ``Y`` (with a positive weight), or entropic affinities of Y."""
    if Wpos is not None:
        return check_wpos(Wpos, None if Y is None else Y.shape[0], attraction=True)
    if Y is None:
        raise ValueError("give the data Y (cells × features) or precomputed affinities Wpos")
    return entropic_affinities(
        Y, perplexity, n_neighbors=n_neighbors, method=affinity, use_rep=None, device=device, seed=seed
    )
