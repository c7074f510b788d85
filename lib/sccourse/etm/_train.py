"""Training an :class:`~sccourse.etm.ETM`: the KL warm-up, one gradient step, the optimiser, the training loop,
and the AnnData wrapper :func:`fit_etm` with its restarts.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import _progress
from .._device import get_device, seeded
from .._etm_kernels import ETMData
from .._validation import check_anndata, check_float, check_int, check_key, check_seed
from ._model import (
    ETM,
    Device,
    Mixing,
    _align_batches,
    _check_model,
    _data_for,
    _kmeans_topics,
    _model_device_dtype,
    _theta,
    prepare,
)

__all__ = ["adam", "fit_etm", "kl_schedule", "restart_seeds", "train_etm", "train_step"]


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def kl_schedule(epoch: float, *, warmup: float, max_weight: float = 1.0) -> float:
    """KL weight at ``epoch`` (1-based): ``max_weight · min(1, epoch / warmup)``; ``warmup=0`` → constant.

    Raises
    ------
    ValueError
        ``epoch``, ``warmup`` or ``max_weight`` negative or not a finite number.
    """
    epoch = check_float(epoch, "epoch", minimum=0.0)
    warmup = check_float(warmup, "warmup", minimum=0.0)
    max_weight = check_float(max_weight, "max_weight", minimum=0.0)
    if warmup == 0:
        return max_weight
    return max_weight * min(1.0, epoch / warmup)


def _kl_weight(value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return check_float(value, "kl_weight", minimum=0.0)


def train_step(
    model: ETM, optimizer: torch.optim.Optimizer, data: ETMData, *, kl_weight: float = 1.0
) -> dict[str, float]:
    """One gradient step on ``data`` (all of it: one full-batch epoch) minimising ``nll + kl_weight · kl``.

    Parameters
    ----------
    model
        The :class:`ETM` (put in training mode).
    optimizer
        A torch optimiser over the model's parameters (e.g. :func:`adam`).
    data
        :class:`ETMData` from :func:`prepare`, on the model's device and in its dtype, at least 2 cells (batch norm).
    kl_weight
        Weight ``w >= 0`` of the KL term in the objective.

    Returns
    -------
    dict
        Floats ``neg_elbo`` (``nll + kl``, per cell), ``nll``, ``kl``, ``loss`` (the weighted objective).
    """
    _check_model(model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer (e.g. etm.adam(model)), got {optimizer!r}"
        )
    if not isinstance(data, ETMData):
        raise TypeError(f"data must be an ETMData (from sccourse.etm.prepare), got {type(data).__name__}")
    kl_weight = _kl_weight(kl_weight)
    if data.n_genes != model.n_genes:
        raise ValueError(f"data has {data.n_genes} genes but the model was built for {model.n_genes}")
    if data.n_cells < 2:
        raise ValueError(
            f"data must hold at least 2 cells for a training step (batch norm), got {data.n_cells}"
        )
    dev, dtype = _model_device_dtype(model)
    if data.counts.device != dev or data.counts.dtype != dtype:
        raise ValueError(
            f"data is on {data.counts.device} in {data.counts.dtype} but the model on {dev} in {dtype}; "
            "use prepare(..., device=, dtype=) to match"
        )
    data = _align_batches(model, data, adopt=True)
    if not all(m.training for m in model.modules()):
        model.train()
    optimizer.zero_grad(set_to_none=True)
    nll, kl = model.elbo_terms(data)
    loss = nll + kl_weight * kl
    loss.backward()
    optimizer.step()
    nll_v, kl_v = float(nll.detach()), float(kl.detach())
    return {"neg_elbo": nll_v + kl_v, "nll": nll_v, "kl": kl_v, "loss": float(loss.detach())}


def adam(model: nn.Module, *, lr: float = 5e-3, weight_decay: float = 1.2e-6) -> torch.optim.Optimizer:
    """The optimiser :func:`train_etm` uses: Adam (fused single-kernel update where the build offers it).

    Create it after moving the model to its device.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an sccourse.etm.ETM (a torch module), got {type(model).__name__}")
    lr = check_float(lr, "lr", minimum=0.0, strict=True)
    weight_decay = check_float(weight_decay, "weight_decay", minimum=0.0)
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older builds / unsupported device
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def train_etm(
    model: ETM,
    adata_or_counts,
    *,
    epochs: int = 1000,
    batch_size: int | None = None,
    lr: float = 5e-3,
    weight_decay: float = 1.2e-6,
    kl_weight: float = 1.0,
    kl_warmup: int = 300,
    batch=None,
    layer: str | None = None,
    batch_key: str | None = None,
    eval_every: int = 50,
    eval_fn: Callable[[np.ndarray], float] | None = None,
    device: Device = "auto",
    seed: int = 0,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Fit an :class:`ETM` with Adam, full batch by default.

    Each epoch minimises ``nll + w_e · kl`` (per-cell means) with ``w_e = kl_weight · min(1, e / kl_warmup)``.

    Parameters
    ----------
    model
        The model; moved to ``device`` and trained in place. A model with several batches learns the batch labels
        of ``adata_or_counts`` (``model.batch_categories_``) unless it knows them already.
    adata_or_counts
        Raw counts (AnnData, numpy, scipy.sparse, torch or :class:`ETMData`), cells x genes, at least 2 cells.
    epochs
        Passes over the data (with ``batch_size=None`` one gradient step each).
    batch_size
        Cells per mini-batch (shuffled every epoch with ``seed``); None = full batch.
    lr, weight_decay
        Adam learning rate and L2 weight decay.
    kl_weight, kl_warmup
        Final KL weight and the number of epochs of its linear warm-up (0: no warm-up).
    batch, layer, batch_key
        See :func:`prepare`.
    eval_every, eval_fn
        Every ``eval_every`` epochs (and at the last), ``eval_fn(theta)`` is called with the cells x topics
        ``θ = softmax(μ)`` (numpy) and its value stored in the ``ari`` column (NaN between evaluations).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed
        Seeds the reparameterisation noise, dropout and mini-batch order (CPU: same seed, same numbers). The
        caller's random state is left as it was.
    progress
        Show a progress bar; None: only on a terminal or in Jupyter.

    Returns
    -------
    pandas.DataFrame
        One row per epoch: ``epoch``, ``neg_elbo`` (``nll + kl``), ``nll``, ``kl``, ``kl_weight``, ``loss``,
        ``time_s`` (cumulative training time, evaluations excluded) and ``ari`` when ``eval_fn`` is given.
    """
    _check_model(model)
    epochs = check_int(epochs, "epochs", minimum=1)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=2)
    lr = check_float(lr, "lr", minimum=0.0, strict=True)
    weight_decay = check_float(weight_decay, "weight_decay", minimum=0.0)
    kl_weight = check_float(kl_weight, "kl_weight", minimum=0.0)
    kl_warmup = check_int(kl_warmup, "kl_warmup", minimum=0)
    eval_every = check_int(eval_every, "eval_every", minimum=1)
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError("eval_fn must be callable (theta -> float) or None")
    seed = check_seed(seed)
    _progress.enabled(progress)  # a bad value fails here, before any work
    dev = get_device(device)
    data = _data_for(
        model,
        adata_or_counts,
        batch=batch,
        layer=layer,
        batch_key=batch_key,
        name="adata_or_counts",
        min_cells=2,
        device=dev,
        adopt=True,
    )
    model.to(dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = adam(model, lr=lr, weight_decay=weight_decay)
    n = data.n_cells
    rows, elapsed = [], 0.0
    bar = _progress.bar(range(epochs), progress=progress, desc="ETM", leave=False)
    with seeded(seed, device=dev):
        for e in bar:
            epoch = e + 1
            w = kl_schedule(epoch, warmup=kl_warmup, max_weight=kl_weight)
            t0 = time.perf_counter()
            if batch_size is None or batch_size >= n:
                stats = train_step(model, optimizer, data, kl_weight=w)
            else:
                stats = _minibatch_epoch(model, optimizer, data, batch_size, w, gen)
            elapsed += time.perf_counter() - t0
            row = {"epoch": epoch, **stats, "kl_weight": w, "time_s": elapsed}
            if not all(math.isfinite(row[k]) for k in ("nll", "kl")):
                raise FloatingPointError(
                    f"ETM training diverged at epoch {epoch} (nll={row['nll']}, kl={row['kl']}); lower lr"
                )
            if eval_fn is not None:
                row["ari"] = np.nan
                if epoch % eval_every == 0 or epoch == epochs:
                    row["ari"] = _evaluate(eval_fn, _theta(model, data)[0])
            rows.append(row)
            if not bar.disable and (epoch % 10 == 0 or epoch == epochs):
                post = {"-ELBO": f"{row['neg_elbo']:.1f}"}
                if eval_fn is not None and not np.isnan(row["ari"]):
                    post["ari"] = f"{row['ari']:.3f}"
                bar.set_postfix(post, refresh=False)
    bar.close()
    model.eval()
    cols = ["epoch", "neg_elbo", "nll", "kl", "kl_weight", "loss", "time_s"] + (["ari"] if eval_fn else [])
    return pd.DataFrame(rows, columns=cols)


def _minibatch_epoch(model, optimizer, data: ETMData, batch_size: int, w: float, gen) -> dict[str, float]:
    """One epoch of shuffled mini-batches (a last batch of one cell is skipped: batch norm needs two)."""
    perm = torch.randperm(data.n_cells, generator=gen).to(data.counts.device)
    acc = {"neg_elbo": 0.0, "nll": 0.0, "kl": 0.0, "loss": 0.0}
    seen = 0
    for start in range(0, data.n_cells, batch_size):
        idx = perm[start : start + batch_size]
        if idx.numel() < 2:
            continue
        s = train_step(model, optimizer, data.subset(idx), kl_weight=w)
        for k in acc:
            acc[k] += s[k] * idx.numel()
        seen += idx.numel()
    return {k: v / seen for k, v in acc.items()}


def _evaluate(eval_fn, theta: np.ndarray) -> float:
    value = eval_fn(theta)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"eval_fn must return a number (e.g. an ARI), got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------
# the AnnData wrapper and restarts
# --------------------------------------------------------------------------------------
def fit_etm(
    adata,
    n_topics: int = 16,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    emb_dim: int = 400,
    hidden: int = 128,
    dropout: float = 0.1,
    mixing: Mixing = "probability",
    epochs: int = 1000,
    batch_size: int | None = None,
    lr: float = 5e-3,
    weight_decay: float = 1.2e-6,
    kl_weight: float = 1.0,
    kl_warmup: int = 300,
    eval_every: int = 50,
    eval_fn: Callable[[np.ndarray], float] | None = None,
    key_added: str = "X_etm",
    beta_key_added: str = "etm_beta",
    uns_key_added: str = "etm",
    device: Device = "auto",
    seed: int = 0,
    n_init: int = 1,
    progress: bool | None = None,
) -> tuple[ETM, pd.DataFrame]:
    """Build and train an :class:`ETM` on an AnnData of raw counts and store the results in it.

    Writes ``obsm[key_added]`` (θ, cells x topics), ``obsm[key_added + "_delta"]`` (μ),
    ``varm[beta_key_added]`` (β, genes x topics) and ``uns[uns_key_added]`` (settings). Options as in :class:`ETM`
    and :func:`train_etm`; with ``batch_key`` naming > 1 batches the model gets a per-batch gene bias. Nothing is
    written when an argument is invalid.

    ``n_init`` > 1 trains that many models from different initialisations and keeps the one with the best ELBO,
    evaluated deterministically (``δ = μ``, no dropout) at the end, like scikit-learn's ``n_init``: a VAE can end in
    a poor local optimum from one start. The first start is the plain one (``ETM(seed=seed)``, so ``n_init=1`` is
    one ordinary fit); the others use seeds spawned from ``seed`` (:func:`restart_seeds`) and begin their topics at
    k-means++ centroids of the cells (``_restart_init``), a start that rarely ends with two copies of one topic.

    Returns
    -------
    (ETM, pandas.DataFrame)
        The trained model and its training history.
    """
    from ._evaluate import final_neg_elbo, topic_gene_weights  # _evaluate imports this module

    check_anndata(adata)
    key_added = check_key(key_added, "key_added")
    beta_key_added = check_key(beta_key_added, "beta_key_added")
    uns_key_added = check_key(uns_key_added, "uns_key_added")
    n_init = check_int(n_init, "n_init", minimum=1)
    seeds = restart_seeds(seed, n_init)
    dev = get_device(device)
    data = prepare(adata, layer=layer, batch_key=batch_key, device=dev)
    best = None
    restarts = []
    for i, s in enumerate(seeds):
        model = ETM(
            data.n_genes,
            n_topics,
            emb_dim=emb_dim,
            hidden=hidden,
            n_batches=data.n_batches,
            dropout=dropout,
            mixing=mixing,
            gene_names=list(adata.var_names),
            batch_categories=data.batch_categories if data.n_batches > 1 else None,
            seed=s,
        )
        _restart_init(model, data, i, s)
        history = train_etm(
            model,
            data,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            kl_weight=kl_weight,
            kl_warmup=kl_warmup,
            eval_every=eval_every,
            eval_fn=eval_fn,
            device=dev,
            seed=s,
            progress=progress,
        )
        score = final_neg_elbo(model, data)
        restarts.append({"seed": int(s), "neg_elbo": score})
        if best is None or score < best[0]:
            best = (score, model, history, s)
    _, model, history, chosen = best
    theta, mu = _theta(model, data)
    beta = topic_gene_weights(model).to_numpy()
    settings = {
        "n_topics": int(n_topics),
        "emb_dim": int(emb_dim),
        "hidden": int(hidden),
        "mixing": mixing,
        "n_batches": int(data.n_batches),
        "batch_key": batch_key,
        "batch_categories": None if model.batch_categories_ is None else np.asarray(model.batch_categories_),
        "layer": layer,
        "epochs": int(epochs),
        "lr": float(lr),
        "kl_weight": float(kl_weight),
        "kl_warmup": int(kl_warmup),
        "seed": int(seed),
        "final_neg_elbo": float(history["neg_elbo"].iloc[-1]),
        "n_init": int(n_init),
        "chosen_seed": int(chosen),
        "restart_neg_elbo": np.array([r["neg_elbo"] for r in restarts]),
    }
    adata.obsm[key_added] = theta
    adata.obsm[key_added + "_delta"] = mu
    adata.varm[beta_key_added] = beta
    adata.uns[uns_key_added] = {k: v for k, v in settings.items() if v is not None}  # h5ad cannot store None
    return model, history


def _restart_init(model: ETM, data: ETMData, index: int, seed: int) -> None:
    """Initialise restart ``index`` (0-based) of :func:`fit_etm` / :func:`ari_over_seeds` before its training.

    Restart 0 keeps the model's own random initialisation (``n_init=1`` is a plain fit). Every further restart
    starts its topics at k-means centroids of the cells (k-means++ seeding with the restart's own ``seed``, a few
    Lloyd steps on Hellinger coordinates; ``α`` fitted so that ``β_k`` is cluster ``k``'s gene profile): distinct,
    data-driven topics. With random topics alone about a quarter of the starts on the planted topics of
    ``tests/test_etm.py`` end with one topic duplicated and two merged, and five independent random starts of one
    seed can all do so (``benchmarks/RESULTS.md``).
    """
    if index > 0:
        _kmeans_topics(model, data, seed)


def restart_seeds(seed: int, n_init: int) -> list[int]:
    """Seeds of ``n_init`` restarts: ``seed`` itself, then seeds spawned from it (independent streams, so that the
    restarts of seed 0 and of seed 1 do not overlap).
    """
    seed = check_seed(seed)
    n_init = check_int(n_init, "n_init", minimum=1)
    spawned = np.random.SeedSequence(seed).spawn(n_init - 1)
    return [seed] + [int(ss.generate_state(1)[0]) for ss in spawned]
