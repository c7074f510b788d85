"""NeuralEE: a network ``X = f(Y)`` trained on mini-batches of the elastic-embedding loss."""

from __future__ import annotations

import math
import numbers
import time
from types import SimpleNamespace
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .. import _progress
from .._device import seeded
from .._validation import check_choice, check_float, check_int, check_seed
from ._affinities import entropic_affinities, repulsive_weights
from ._checks import (
    Data,
    Device,
    Graph,
    as_wneg,
    check_not_constant,
    check_perplexity,
    data_matrix,
    write_back,
)
from ._estimator import _EmbeddingEstimator
from ._training import NeighbourSampler, _batch_loss, _check_hidden, _finite_epoch_loss, _mlp, epoch_batches


def _no_edges(dev) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An empty edge list (rows, cols, weights) for :func:`_batch_loss`: its repulsive term alone."""
    empty = torch.zeros(0, dtype=torch.int64, device=dev)
    return empty, empty, torch.zeros(0, dtype=torch.float32, device=dev)


def _check_batch_size(batch_size) -> int | float:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Real):
        raise TypeError(f"batch_size must be an integer or a fraction in (0, 1], got {batch_size!r}")
    if isinstance(batch_size, numbers.Integral):
        if batch_size < 2:
            raise ValueError(f"an integer batch_size must be >= 2, got {batch_size}")
        return int(batch_size)
    if not 0 < batch_size <= 1:
        raise ValueError(f"a fractional batch_size must be in (0, 1], got {batch_size}")
    return float(batch_size)


class NeuralEE(_EmbeddingEstimator):
    """A neural network ``X = f(Y)`` trained on the elastic-embedding loss, with mini-batches.

    Every epoch draws a new random partition of the cells into batches (so every cell is trained on
    once per epoch); each batch's loss is the EE objective restricted to the batch, rescaled by
    ``N(N−1) / (b(b−1))`` so that it estimates the full objective. Attractive weights come from the
    sparse global graph W⁺ restricted to the batch (``attraction="global"``), from entropic affinities
    recomputed on the batch (``attraction="batch"``, NeuralEE's scheme at ``1/b`` normalisation), or from
    ``neighbour_samples`` neighbours of every batch cell drawn from W⁺ with probability ``W⁺_ij / d_i``
    (``attraction="sampled"``: the attractive term estimated as ``(N / (b m)) Σ_{i∈B} d_i Σ_draws ‖x_i − x_j‖²``,
    unbiased like the others; at ``b ≪ N`` a random batch holds only about ``b / N`` of a cell's edges, while
    here every cell is pulled towards ``m`` of its neighbours each step, at the cost of ``b m`` extra forward
    rows).

    Parameters
    ----------
    n_components, lam, perplexity, n_neighbors, affinity, repulsion
        As in :class:`ElasticEmbedding` (λ > 0).
    hidden
        Widths of the hidden layers (ELU activations).
    batch_size
        Cells per batch: an integer ≥ 2, or a fraction of N in (0, 1] (1.0 = full batch, the exact objective).
    epochs, lr, weight_decay
        Adam training schedule (``epochs`` ≥ 1, ``lr`` > 0, ``weight_decay`` ≥ 0).
    attraction
        ``"global"``, ``"batch"`` or ``"sampled"`` (see above).
    neighbour_samples
        Neighbours drawn per batch cell and step with ``attraction="sampled"`` (≥ 1; ignored otherwise).
    device, seed, progress
        As everywhere in sccourse (``progress=None``: a bar on a terminal or in Jupyter only).

    Attributes
    ----------
    history_ : DataFrame with ``epoch``, ``loss`` (mean batch estimate of E), ``n_batches``, ``cells_seen``,
        ``time_s``
    coverage_ : ndarray (N,), how many times each cell was in a batch (= ``epochs`` for every cell; a cell
        drawn as a sampled neighbour is not counted)
    embedding_ : ndarray (N × d), ``transform`` of the training cells after training
    net_ : torch.nn.Module
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        lam: float = 1.0,
        perplexity: float = 30.0,
        n_neighbors: int | Literal["all"] | None = None,
        affinity: Literal["ea", "x2p"] = "ea",
        repulsion: Literal["uniform", "distance"] = "uniform",
        hidden: tuple[int, ...] = (256, 128),
        batch_size: float = 1.0,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        attraction: Literal["global", "batch", "sampled"] = "global",
        neighbour_samples: int = 3,
        device: Device = "auto",
        seed: int = 0,
        progress: bool | None = None,
    ):
        super().__init__(
            n_components,
            lam=lam,
            perplexity=perplexity,
            n_neighbors=n_neighbors,
            affinity=affinity,
            repulsion=repulsion,
            device=device,
            seed=seed,
            progress=progress,
        )
        self.hidden, self.batch_size = hidden, batch_size
        self.epochs, self.lr, self.weight_decay, self.attraction = epochs, lr, weight_decay, attraction
        self.neighbour_samples = neighbour_samples

    def _checked(self) -> SimpleNamespace:
        """The options, validated (the estimator's ``__init__`` only stores them)."""
        return SimpleNamespace(
            **self._common_checked(),
            attraction=check_choice(self.attraction, "attraction", ("global", "batch", "sampled")),
            neighbour_samples=check_int(self.neighbour_samples, "neighbour_samples", minimum=1),
            hidden=_check_hidden(self.hidden),
            batch_size=_check_batch_size(self.batch_size),
            epochs=check_int(self.epochs, "epochs", minimum=1),
            lr=check_float(self.lr, "lr", minimum=0.0, strict=True),
            weight_decay=check_float(self.weight_decay, "weight_decay", minimum=0.0),
        )

    @staticmethod
    def _batch_size(batch_size: int | float, n: int) -> int:
        b = math.ceil(batch_size * n) if isinstance(batch_size, float) else int(batch_size)
        return max(2, min(n, b))

    def _standardise(self, Y: np.ndarray) -> np.ndarray:
        return (Y - self.mean_) / self.scale_

    def fit(
        self,
        Y: Data,
        *,
        Wpos: Graph | None = None,
        use_rep: str | None = "X_pca",
        key_added: str = "X_neuralee",
    ) -> NeuralEE:
        """Train the network on ``Y`` (cells × features, or AnnData ``obsm[use_rep]``; not all cells equal).

        Parameters
        ----------
        Y
            Training cells.
        Wpos
            Precomputed attractive weights for ``attraction="global"`` or ``"sampled"`` (N × N, symmetric,
            non-negative, not all zero); default: entropic affinities of ``Y``.
        use_rep, key_added
            AnnData slots read and written.

        Returns
        -------
        NeuralEE
            ``self``, fitted.
        """
        p, Yn = self._start_fit(Y, use_rep, key_added)
        check_not_constant(Yn)
        n, D = Yn.shape
        dev = p.device
        b = self._batch_size(p.batch_size, n)
        W = None
        if p.attraction in ("global", "sampled"):
            W = sp.csr_matrix(self._attraction(p, Yn, Wpos))
        else:
            if Wpos is not None:
                raise ValueError(
                    "Wpos is used only with attraction='global' or 'sampled'; attraction='batch' computes its own"
                )
            perplexity = check_perplexity(self.perplexity, n)
            if perplexity >= b - 1:
                raise ValueError(
                    f"attraction='batch' needs batch_size ({b}) > perplexity + 1 ({perplexity + 1:g})"
                )
        wneg = as_wneg(
            "uniform" if p.repulsion == "uniform" else repulsive_weights(Yn, kind="distance", device=dev),
            n,
            dev,
        ).to(dev, torch.float32)
        mean, scale = Yn.mean(0), float(Yn.std()) or 1.0
        Yt = torch.as_tensor((Yn - mean) / scale, dtype=torch.float32, device=dev)
        with seeded(p.seed, dev):
            net = _mlp(D, p.hidden, p.n_components).to(dev)
        coverage, rows_out = self._train(p, net, Yn, Yt, W, wneg, b)
        self.mean_, self.scale_ = mean, scale
        self.net_ = net.eval()
        self.history_ = pd.DataFrame(rows_out)
        self.coverage_ = coverage
        self.Wpos_ = W
        self.batch_size_ = b
        self.n_features_in_ = D
        self.embedding_ = self.transform(Yn)
        write_back(Y, key_added, self.embedding_)
        return self

    def _train(self, p, net, Yn, Yt, W, wneg, b):
        """The epochs: returns (coverage, history rows)."""
        n, dev = Yn.shape[0], Yt.device
        opt = torch.optim.Adam(net.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        rng = np.random.default_rng(p.seed)
        coverage = np.zeros(n, dtype=np.int64)
        pos = np.full(n, -1, dtype=np.int64)
        rows_out = []
        t0 = time.perf_counter()
        full_wneg = None  # the full-batch w⁻ (b = N), formed once
        sampler = NeighbourSampler(W) if p.attraction == "sampled" else None
        m = p.neighbour_samples
        bar = _progress.bar(range(1, p.epochs + 1), progress=self.progress, desc="NeuralEE")
        for epoch in bar:
            batches = epoch_batches(n, b, rng)
            total, seen = 0.0, 0
            for B in batches:
                nb = B.size
                if nb == n:  # full batch: the loss does not depend on the order, keep the cached w⁻
                    B = np.arange(n)
                coverage[B] += 1
                Bt = torch.as_tensor(B, device=dev)
                if p.attraction in ("global", "sampled"):
                    scale = (n * (n - 1.0)) / (nb * (nb - 1.0))
                    if nb < n:
                        wneg_b = wneg.sub(Bt, torch.float32)
                    else:
                        if full_wneg is None:
                            full_wneg = wneg.sub(Bt, torch.float32)
                        wneg_b = full_wneg
                if p.attraction == "sampled":
                    row, j = sampler.draw(B, m, rng)
                    X_all = net(Yt[torch.as_tensor(np.concatenate([B, j]), device=dev)])
                    Xb = X_all[:nb]
                    loss = sampler.attraction(Xb, X_all[nb:], B, row, m) + scale * _batch_loss(
                        Xb, *_no_edges(dev), wneg_b, p.lam
                    )
                else:
                    if p.attraction == "global":
                        pos[B] = np.arange(nb)
                        sub = W[B]
                        cols = pos[sub.indices]
                        keep = cols >= 0
                        r = np.repeat(np.arange(nb), np.diff(sub.indptr))[keep]
                        c, w = cols[keep], sub.data[keep]
                        pos[B] = -1
                    else:
                        Wb = entropic_affinities(
                            Yn[B],
                            self.perplexity,
                            n_neighbors=None,
                            method=p.affinity,
                            use_rep=None,
                            device=dev,
                            seed=p.seed,
                        ).tocoo()
                        r, c, w = Wb.row, Wb.col, Wb.data
                        scale = 1.0
                        wneg_b = 1.0 / (nb * nb)  # every pair of distinct cells of the batch
                    rt = torch.as_tensor(r, device=dev)
                    ct = torch.as_tensor(c, device=dev)
                    wt = torch.as_tensor(w, dtype=torch.float32, device=dev)
                    Xb = net(Yt[Bt])
                    loss = scale * _batch_loss(Xb, rt, ct, wt, wneg_b, p.lam)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * nb
                seen += nb
            if not math.isfinite(total / seen):
                bar.close()
                _finite_epoch_loss(total / seen, epoch, p.lr)  # raises: training diverged
            rows_out.append(
                {
                    "epoch": epoch,
                    "loss": total / seen,
                    "n_batches": len(batches),
                    "cells_seen": seen,
                    "time_s": time.perf_counter() - t0,
                }
            )
            bar.set_postfix(loss=f"{total / seen:.5g}")
        bar.close()
        return coverage, rows_out

    @torch.no_grad()
    def transform(self, Y: Data, *, use_rep: str | None = "X_pca", chunk: int = 65536) -> np.ndarray:
        """Map cells (the training ones or new ones, same features) through the trained network.

        Parameters
        ----------
        Y
            cells × features (at least one cell), the features the network was trained on.
        use_rep
            AnnData slot.
        chunk
            Cells per forward pass (≥ 1).

        Returns
        -------
        ndarray
            cells × n_components, float64.
        """
        if not hasattr(self, "net_"):
            raise ValueError("this NeuralEE is not fitted yet; call fit(Y) first")
        chunk = check_int(chunk, "chunk", minimum=1)
        Yn = data_matrix(Y, use_rep=use_rep, min_cells=1)
        if Yn.shape[1] != self.n_features_in_:
            raise ValueError(
                f"Y has {Yn.shape[1]} features but the network was trained on {self.n_features_in_}"
            )
        dev = next(self.net_.parameters()).device
        out = []
        for i0 in range(0, Yn.shape[0], chunk):
            Yt = torch.as_tensor(self._standardise(Yn[i0 : i0 + chunk]), dtype=torch.float32, device=dev)
            out.append(self.net_(Yt).double().cpu().numpy())
        return np.concatenate(out, 0)

    def fit_transform(self, Y: Data, **kwargs) -> np.ndarray:
        """:meth:`fit` and return the embedding of the training cells (N × d)."""
        return self.fit(Y, **kwargs).embedding_


def fit_held_out(
    Y: Data, *, train_fraction: float = 0.8, seed: int = 0, use_rep: str | None = "X_pca", **kwargs
) -> tuple[np.ndarray, np.ndarray, NeuralEE]:
    """Split the cells at random and train :class:`NeuralEE` on the training part only.

    ``rng = numpy.random.default_rng(seed)``; the first ``round(train_fraction · N)`` cells of
    ``rng.permutation(N)`` train, the rest are held out (both returned sorted). The model (``NeuralEE(seed=seed,
    **kwargs)``, its affinities computed from the training cells) never sees a held-out cell, so
    ``model.transform(Y[test_idx])`` is an honest out-of-sample map.

    Parameters
    ----------
    Y
        cells × features, or AnnData (``obsm[use_rep]``).
    train_fraction
        In (0, 1); at least 3 training cells and 1 held-out cell.
    seed
        Seed of the split and of the model.
    **kwargs
        Options of :class:`NeuralEE`.

    Returns
    -------
    (train_idx, test_idx, model)
    """
    Yn = data_matrix(Y, use_rep=use_rep)
    n = Yn.shape[0]
    train_fraction = check_float(train_fraction, "train_fraction", minimum=0.0, maximum=1.0, strict=True)
    if train_fraction == 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    seed = check_seed(seed)
    n_train = int(round(train_fraction * n))
    if not 3 <= n_train <= n - 1:
        raise ValueError(
            f"train_fraction {train_fraction} of {n} cells leaves {n_train} training and "
            f"{n - n_train} held-out cells; need at least 3 and 1"
        )
    perm = np.random.default_rng(seed).permutation(n)
    train_idx, test_idx = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    model = NeuralEE(seed=seed, **kwargs).fit(Yn[train_idx])
    return train_idx, test_idx, model
