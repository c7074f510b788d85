"""The parts of NeuralEE: epoch batches, the network, the dense and batch EE losses, the plain training loop."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .. import _ee_kernels as K
from .._device import seeded
from .._validation import check_float, check_int, check_seed
from ._checks import Data, Graph, check_lam, check_wpos, data_matrix, max_asymmetry


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A fresh random partition of ``range(n)`` into ``ceil(n / batch_size)`` near-equal batches.

    ``rng.permutation(n)`` split by ``numpy.array_split``: every cell is in exactly one batch, so one epoch
    trains on every cell once; batch sizes differ by at most one.

    Parameters
    ----------
    n
        Number of cells, ≥ 1.
    batch_size
        Target cells per batch, ≥ 1.
    rng
        A :class:`numpy.random.Generator` (advanced by the call).

    Returns
    -------
    list of ndarray
        Integer index arrays.
    """
    n = check_int(n, "n", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if not isinstance(rng, np.random.Generator | np.random.RandomState):
        raise TypeError(f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), got {rng!r}")
    perm = rng.permutation(n)
    return np.array_split(perm, max(1, math.ceil(n / batch_size)))


def _check_hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Iterable):
        raise TypeError(f"hidden must be a sequence of layer widths such as (256, 128), got {hidden!r}")
    return tuple(check_int(h, "every hidden width", minimum=1) for h in hidden)


def _mlp(d_in: int, hidden: tuple[int, ...], d_out: int) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    prev = d_in
    for h in hidden:
        layers += [torch.nn.Linear(prev, h), torch.nn.ELU()]
        prev = h
    layers.append(torch.nn.Linear(prev, d_out))
    return torch.nn.Sequential(*layers)


def mlp(
    d_in: int,
    hidden: Sequence[int] = (64, 32),
    d_out: int = 2,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.nn.Module:
    """The network of :class:`NeuralEE`: ``Linear → ELU`` per hidden width, then ``Linear`` to ``d_out``.

    Weights are PyTorch's default initialisation drawn inside ``sccourse._device.seeded(seed)`` (the global
    torch generator is left as it was), then cast to ``dtype``; the same arguments give the same network.

    Parameters
    ----------
    d_in, d_out
        Input and output widths, ≥ 1.
    hidden
        Widths of the hidden layers (each ≥ 1; empty: one linear map).
    seed
        Seed of the initial weights.
    dtype
        A floating torch dtype.

    Returns
    -------
    torch.nn.Sequential
    """
    d_in, d_out = check_int(d_in, "d_in", minimum=1), check_int(d_out, "d_out", minimum=1)
    hidden = _check_hidden(hidden)
    seed = check_seed(seed)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype such as torch.float64, got {dtype!r}")
    with seeded(seed):
        net = _mlp(d_in, hidden, d_out)
    return net.to(dtype)


def _require_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def dense_ee_loss(X: torch.Tensor, Wp: torch.Tensor, Wn: torch.Tensor, lam: float) -> torch.Tensor:
    """``Σ_nm Wp_nm ‖x_n − x_m‖² + λ Σ_nm Wn_nm exp(−‖x_n − x_m‖²)`` for dense N × N weights (every ordered
    pair, the diagonal included as given), a 0-d tensor that autograd can differentiate.

    Forms N × N temporaries: for small N and mini-batches (:func:`ee_objective` is the blocked version).

    Parameters
    ----------
    X
        N × d embedding (torch).
    Wp, Wn
        N × N attractive and repulsive weights (torch).
    lam
        λ ≥ 0.

    Returns
    -------
    torch.Tensor
        0-d, in the promoted dtype of the inputs.
    """
    for value, name in ((X, "X"), (Wp, "Wp"), (Wn, "Wn")):
        _require_tensor(value, name)
    if X.ndim != 2 or Wp.shape != (X.shape[0], X.shape[0]) or Wn.shape != Wp.shape:
        raise ValueError(
            f"X must be N × d and Wp, Wn N × N; got {tuple(X.shape)}, {tuple(Wp.shape)}, {tuple(Wn.shape)}"
        )
    check_lam(lam)
    sq = (X * X).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)).clamp_min(0.0)
    return (Wp * d2).sum() + lam * (Wn * torch.exp(-d2)).sum()


def _check_batch(B, n: int) -> np.ndarray:
    B = np.asarray(B)
    if B.ndim != 1 or B.dtype.kind not in "iu":
        raise ValueError(
            f"batches must return 1-D integer index arrays, got one of dtype {B.dtype}, shape {B.shape}"
        )
    if B.size < 2:
        raise ValueError(f"batches returned a batch of {B.size} cell(s); every batch needs at least 2 cells")
    if B.min() < 0 or B.max() >= n:
        raise ValueError(f"batches returned indices outside 0 … {n - 1}")
    return B


def train_ee_network(
    net: torch.nn.Module,
    Y: Data,
    Wpos: Graph,
    lam: float,
    *,
    batch_size: int = 250,
    epochs: int = 30,
    lr: float = 3e-3,
    seed: int = 0,
    batches: Callable[[int, int, np.random.Generator], list] | None = None,
) -> tuple[list[float], np.ndarray]:
    """Train ``net`` in place on the mini-batch EE loss: the plain NeuralEE loop, in the network's dtype.

    Inputs are standardised as ``(Y − mean over cells) / (one standard deviation over all entries)``. Every
    epoch draws a new partition ``batches(n, batch_size, rng)`` (default :func:`epoch_batches`, with
    ``rng = numpy.random.default_rng(seed)`` created once); for each batch B (``b`` cells) the loss
    ``N(N−1) / (b(b−1)) · dense_ee_loss(net(Y_B), W⁺_BB, W⁻_BB, λ)`` with ``W⁻_BB = 1/N²`` off the diagonal
    and 0 on it, then ``zero_grad``, ``backward`` and one Adam step (learning rate ``lr``).

    Parameters
    ----------
    net
        A torch module with floating parameters mapping ``D`` features to the embedding.
    Y
        cells × D data (not all cells equal); AnnData → ``.X``.
    Wpos
        N × N attractive weights (symmetric, non-negative, not all zero).
    lam
        λ > 0.
    batch_size, epochs, lr, seed
        Cells per batch (≥ 2), passes over the data (≥ 1), Adam's learning rate (> 0), seed of the batches.
    batches
        Optional replacement of :func:`epoch_batches` (every batch ≥ 2 cells).

    Returns
    -------
    losses : list of float
        Per epoch, the batch losses averaged with weights ``b`` (``Σ_B b·loss_B / Σ_B b``).
    coverage : ndarray (N,)
        How many times each cell was in a batch.

    Raises
    ------
    ValueError
        Also when an epoch's loss is not finite (training diverged: lower ``lr``).
    """
    if not isinstance(net, torch.nn.Module):
        raise TypeError(
            f"net must be a torch.nn.Module (e.g. sccourse.ee.mlp(...)), got {type(net).__name__}"
        )
    params = list(net.parameters())
    if not params or not params[0].is_floating_point():
        raise TypeError("net must have floating-point parameters to train")
    batches = epoch_batches if batches is None else batches
    if not callable(batches):
        raise TypeError(
            f"batches must be a function (n, batch_size, rng) -> list of index arrays, got {batches!r}"
        )
    Yn = data_matrix(Y, use_rep=None)
    n, D = Yn.shape
    W = sp.csr_matrix(check_wpos(Wpos, n, attraction=True))
    lam = check_lam(lam, positive=True)
    batch_size = check_int(batch_size, "batch_size", minimum=2)
    epochs = check_int(epochs, "epochs", minimum=1)
    lr = check_float(lr, "lr", minimum=0.0, strict=True)
    seed = check_seed(seed)
    scale = Yn.std()
    if not scale > 0:
        raise ValueError("Y: every entry is the same, so Y cannot be standardised; expected varying data")
    dtype = params[0].dtype
    Yt = torch.as_tensor((Yn - Yn.mean(0)) / scale, dtype=dtype)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    coverage = np.zeros(n, dtype=np.int64)
    losses = []
    first = True
    for epoch in range(1, epochs + 1):
        total, seen = 0.0, 0
        for B in batches(n, batch_size, rng):
            B = _check_batch(B, n)
            b = B.size
            coverage[B] += 1
            Wpb = torch.as_tensor(W[B][:, B].toarray(), dtype=dtype)
            Wnb = torch.full((b, b), 1.0 / n**2, dtype=dtype)
            Wnb.fill_diagonal_(0.0)
            Xb = _forward(net, Yt[torch.as_tensor(B)], D) if first else net(Yt[torch.as_tensor(B)])
            first = False
            loss = n * (n - 1.0) / (b * (b - 1.0)) * dense_ee_loss(Xb, Wpb, Wnb, lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * b
            seen += b
        losses.append(_finite_epoch_loss(total / seen, epoch, lr))
    return losses, coverage


def _forward(net: torch.nn.Module, Yb: torch.Tensor, D: int) -> torch.Tensor:
    """The first forward pass, with a clear message when the network does not take D inputs."""
    try:
        out = net(Yb)
    except RuntimeError as err:
        raise ValueError(f"net cannot be applied to the {D} features of Y: {err}") from err
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError(f"net must return a (cells × n_components) tensor, got {getattr(out, 'shape', out)}")
    return out


def _finite_epoch_loss(loss: float, epoch: int, lr: float) -> float:
    if not math.isfinite(loss):
        raise ValueError(f"training diverged: the loss of epoch {epoch} is {loss}; lower lr (now {lr:g})")
    return loss


def _batch_loss(Xb, rows, cols, w, wneg, lam) -> torch.Tensor:
    att = (w * ((Xb[rows] - Xb[cols]) ** 2).sum(1)).sum()
    return att + lam * K.Repulsion.apply(Xb, wneg)


def batch_ee_loss(
    Xb: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, w: torch.Tensor, wneg: torch.Tensor, lam: float
) -> torch.Tensor:
    """EE loss of a batch embedding ``Xb`` (b × d), differentiable by autograd.

    Attractive term over the listed edges ``Σ_e w_e ‖x_rows[e] − x_cols[e]‖²`` plus
    ``λ Σ_nm wneg_nm exp(−‖x_n − x_m‖²)`` over all pairs of the batch, its value and gradient taken in one
    blocked pass (no b × b intermediate is kept for the backward pass).

    Parameters
    ----------
    Xb
        b × d embedding of the batch (torch).
    rows, cols, w
        Edges of the attractive graph within the batch: 1-D integer indices in ``[0, b)`` and their weights.
    wneg
        b × b symmetric repulsive weights (torch).
    lam
        λ ≥ 0.

    Returns
    -------
    torch.Tensor
        0-d.
    """
    for value, name in ((Xb, "Xb"), (rows, "rows"), (cols, "cols"), (w, "w"), (wneg, "wneg")):
        _require_tensor(value, name)
    if Xb.ndim != 2:
        raise ValueError(f"Xb must be a 2-D tensor (cells × n_components), got shape {tuple(Xb.shape)}")
    b = Xb.shape[0]
    if rows.ndim != 1 or cols.shape != rows.shape or w.shape != rows.shape:
        raise ValueError(
            f"rows, cols and w must be 1-D of one length, got {tuple(rows.shape)}, {tuple(cols.shape)}, "
            f"{tuple(w.shape)}"
        )
    for idx, name in ((rows, "rows"), (cols, "cols")):
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer indices, got dtype {idx.dtype}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= b):
            raise ValueError(f"{name} must hold indices in 0 … {b - 1} (rows of Xb)")
    if wneg.shape != (b, b):
        raise ValueError(f"wneg must be {b} × {b} (the batch's cells), got shape {tuple(wneg.shape)}")
    if b and max_asymmetry(wneg.detach()) > 1e-6 * float(wneg.detach().abs().max()):
        raise ValueError("wneg must be symmetric (the fused gradient assumes it)")
    check_lam(lam)
    return _batch_loss(Xb, rows, cols, w, wneg, lam)


class NeighbourSampler:
    """Draws graph neighbours ``j`` of given cells ``i`` with probability ``W_ij / d_i`` (``d_i = Σ_j W_ij``).

    The attractive term ``Σ_ij W_ij ‖x_i − x_j‖²`` (ordered pairs) equals ``N · E_i[d_i E_j ‖x_i − x_j‖²]`` for ``i``
    uniform over the N cells, so for a uniform batch B of b cells with ``m`` neighbours drawn per cell,
    ``(N / (b m)) Σ_{i ∈ B} d_i Σ_draws ‖x_i − x_j‖²`` is an unbiased estimate of it (:meth:`attraction`). Unlike the
    graph restricted to a random batch, which holds about ``b / N`` of each cell's edges, every cell of the
    batch gets ``m`` attractive partners.

    Parameters
    ----------
    W
        N × N non-negative sparse weights (any SciPy sparse format; explicit zeros are ignored).
    """

    def __init__(self, W: sp.spmatrix):
        W = sp.csr_matrix(W, dtype=np.float64, copy=True)
        W.eliminate_zeros()
        W.sort_indices()
        self.n = W.shape[0]
        self.indptr, self.indices = W.indptr, W.indices
        self.cum = np.cumsum(W.data)
        self.start = np.concatenate([[0.0], self.cum])[W.indptr[:-1]]  # Σ of the weights before row i
        self.degree = np.asarray(W.sum(1)).ravel()

    def draw(self, cells: np.ndarray, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``m`` neighbours of each cell (with replacement): ``(row, j)`` with ``row`` the position of the cell
        in ``cells`` (repeated ``m`` times; cells without edges are left out) and ``j`` the neighbour's index.
        """
        row = np.repeat(np.arange(cells.size), m)
        i = cells[row]
        keep = self.degree[i] > 0
        row, i = row[keep], i[keep]
        u = self.start[i] + rng.random(i.size) * self.degree[i]
        k = np.searchsorted(self.cum, u, side="right")
        k = np.clip(k, self.indptr[i], self.indptr[i + 1] - 1)  # u rounded onto the row's upper end
        return row, self.indices[k]

    def attraction(self, Xb: torch.Tensor, Xj: torch.Tensor, cells: np.ndarray, row: np.ndarray, m: int):
        """The unbiased estimate ``(N / (b m)) Σ d_i ‖x_i − x_j‖²`` from the batch's embedding ``Xb`` (b × d) and
        the drawn neighbours' ``Xj`` (one row per draw of :meth:`draw`).
        """
        rt = torch.as_tensor(row, device=Xb.device)
        d = torch.as_tensor(self.degree[cells[row]], dtype=Xb.dtype, device=Xb.device)
        return (self.n / (cells.size * m)) * (d * ((Xb[rt] - Xj) ** 2).sum(1)).sum()
