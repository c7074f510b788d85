"""Training an :class:`~sccourse.etm.ETM`: the KL warm-up, one gradient step, the optimiser, the training loop,
and the AnnData wrapper :func:`fit_etm` with its restarts.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from .._device import get_device, set_seed
from .._etm_kernels import ETMData
from .._validation import check_float, check_int, check_seed
from ._model import ETM, _data_for, _theta, prepare

__all__ = ["adam", "fit_etm", "kl_schedule", "restart_seeds", "train_etm", "train_step"]


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def kl_schedule(epoch: int, *, warmup: int, max_weight: float = 1.0) -> float:
    """KL weight at ``epoch`` (1-based): ``max_weight · min(1, epoch / warmup)``; ``warmup=0`` → constant."""
    if warmup <= 0:
        return float(max_weight)
    return float(max_weight) * min(1.0, epoch / warmup)


def train_step(
    model: ETM, optimizer: torch.optim.Optimizer, data: ETMData, *, kl_weight: float = 1.0
) -> dict:
    """One gradient step on ``data`` (all of it: one full-batch epoch) minimising ``nll + kl_weight · kl``.

    Returns
    -------
    dict
        Floats ``neg_elbo`` (``nll + kl``, per cell), ``nll``, ``kl``, ``loss`` (the weighted objective).
    """
    if not all(m.training for m in model.modules()):
        model.train()
    optimizer.zero_grad(set_to_none=True)
    nll, kl = model.elbo_terms(data)
    loss = nll + kl_weight * kl
    loss.backward()
    optimizer.step()
    nll_v, kl_v = float(nll.detach()), float(kl.detach())
    return {"neg_elbo": nll_v + kl_v, "nll": nll_v, "kl": kl_v, "loss": float(loss.detach())}


def adam(model: ETM, *, lr: float = 5e-3, weight_decay: float = 1.2e-6) -> torch.optim.Optimizer:
    """The optimiser :func:`train_etm` uses: Adam (fused single-kernel update where the build offers it).

    Create it after moving the model to its device.
    """
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
    eval_fn=None,
    device="auto",
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Fit an :class:`ETM` with Adam, full batch by default.

    Each epoch minimises ``nll + w_e · kl`` (per-cell means) with ``w_e = kl_weight · min(1, e / kl_warmup)``.

    Parameters
    ----------
    model
        The model; moved to ``device`` and trained in place.
    adata_or_counts
        Raw counts (AnnData, numpy, scipy.sparse, torch or :class:`ETMData`), cells x genes.
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
        Seeds the reparameterisation noise, dropout and mini-batch order (CPU: same seed, same numbers).
    progress
        Show a tqdm progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per epoch: ``epoch``, ``neg_elbo`` (``nll + kl``), ``nll``, ``kl``, ``kl_weight``, ``loss``,
        ``time_s`` (cumulative training time, evaluations excluded) and ``ari`` when ``eval_fn`` is given.
    """
    from tqdm.auto import trange

    if not isinstance(model, ETM):
        raise TypeError(f"model must be an sccourse.etm.ETM, got {type(model).__name__}")
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
    dev = get_device(device)
    model.to(dev)
    data = _data_for(model, adata_or_counts, batch=batch, layer=layer, batch_key=batch_key)
    set_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = adam(model, lr=lr, weight_decay=weight_decay)
    n = data.n_cells
    rows, elapsed = [], 0.0
    bar = trange(epochs, disable=not progress, desc="ETM", leave=False)
    for e in bar:
        epoch = e + 1
        w = kl_schedule(epoch, warmup=kl_warmup, max_weight=kl_weight)
        t0 = time.perf_counter()
        if batch_size is None or batch_size >= n:
            stats = train_step(model, optimizer, data, kl_weight=w)
        else:
            perm = torch.randperm(n, generator=gen).to(dev)
            acc = {"neg_elbo": 0.0, "nll": 0.0, "kl": 0.0, "loss": 0.0}
            seen = 0
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                if idx.numel() < 2:  # batch norm needs two cells
                    continue
                s = train_step(model, optimizer, data.subset(idx), kl_weight=w)
                for k in acc:
                    acc[k] += s[k] * idx.numel()
                seen += idx.numel()
            stats = {k: v / seen for k, v in acc.items()}
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch, **stats, "kl_weight": w, "time_s": elapsed}
        if not all(math.isfinite(row[k]) for k in ("nll", "kl")):
            raise FloatingPointError(
                f"ETM training diverged at epoch {epoch} (nll={row['nll']}, kl={row['kl']}); lower lr"
            )
        if eval_fn is not None:
            row["ari"] = np.nan
            if epoch % eval_every == 0 or epoch == epochs:
                row["ari"] = float(eval_fn(_theta(model, data)[0]))
        rows.append(row)
        if progress and (epoch % 10 == 0 or epoch == epochs):
            post = {"-ELBO": f"{row['neg_elbo']:.1f}"}
            if eval_fn is not None and not np.isnan(row["ari"]):
                post["ari"] = f"{row['ari']:.3f}"
            bar.set_postfix(post, refresh=False)
    bar.close()
    model.eval()
    cols = ["epoch", "neg_elbo", "nll", "kl", "kl_weight", "loss", "time_s"] + (["ari"] if eval_fn else [])
    return pd.DataFrame(rows, columns=cols)


def fit_etm(
    adata,
    n_topics: int = 16,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    emb_dim: int = 400,
    hidden: int = 128,
    dropout: float = 0.1,
    mixing: str = "probability",
    epochs: int = 1000,
    batch_size: int | None = None,
    lr: float = 5e-3,
    weight_decay: float = 1.2e-6,
    kl_weight: float = 1.0,
    kl_warmup: int = 300,
    eval_every: int = 50,
    eval_fn=None,
    key_added: str = "X_etm",
    device="auto",
    seed: int = 0,
    n_init: int = 1,
    progress: bool = True,
):
    """Build and train an :class:`ETM` on an AnnData of raw counts and store the results in it.

    Writes ``obsm[key_added]`` (θ, cells x topics), ``obsm[key_added + "_delta"]`` (μ),
    ``varm["etm_beta"]`` (β, genes x topics) and ``uns["etm"]`` (settings). Options as in :class:`ETM` and
    :func:`train_etm`; with ``batch_key`` naming > 1 batches the model gets a per-batch gene bias.

    ``n_init`` > 1 trains that many models from different initialisations (the first from ``seed``, the others
    from seeds spawned from it) and keeps the one with the best ELBO, evaluated deterministically (``δ = μ``, no
    dropout) at the end, like scikit-learn's ``n_init``: a VAE can end in a poor local optimum from one start.

    Returns
    -------
    (ETM, pandas.DataFrame)
        The trained model and its training history.
    """
    import anndata as ad

    from ._evaluate import final_neg_elbo, topic_gene_weights  # _evaluate imports this module

    if not isinstance(adata, ad.AnnData):
        raise TypeError(
            f"fit_etm expects an AnnData (use ETM + train_etm for arrays), got {type(adata).__name__}"
        )
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}")
    n_init = check_int(n_init, "n_init", minimum=1)
    dev = get_device(device)
    data = prepare(adata, layer=layer, batch_key=batch_key, device=dev)
    best = None
    restarts = []
    for s in restart_seeds(seed, n_init):
        model = ETM(
            data.n_genes,
            n_topics,
            emb_dim=emb_dim,
            hidden=hidden,
            n_batches=data.n_batches,
            dropout=dropout,
            mixing=mixing,
            gene_names=list(adata.var_names),
            seed=s,
        )
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
    adata.obsm[key_added] = theta
    adata.obsm[key_added + "_delta"] = mu
    adata.varm["etm_beta"] = topic_gene_weights(model).to_numpy()
    settings = {
        "n_topics": int(n_topics),
        "emb_dim": int(emb_dim),
        "hidden": int(hidden),
        "mixing": mixing,
        "n_batches": int(data.n_batches),
        "batch_key": batch_key,
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
    adata.uns["etm"] = {k: v for k, v in settings.items() if v is not None}  # h5ad cannot store None
    return model, history


def restart_seeds(seed: int, n_init: int) -> list[int]:
    """Seeds of ``n_init`` restarts: ``seed`` itself, then seeds spawned from it (independent streams, so that the
    restarts of seed 0 and of seed 1 do not overlap).
    """
    seed = check_seed(seed)
    spawned = np.random.SeedSequence(seed).spawn(max(n_init - 1, 0))
    return [seed] + [int(ss.generate_state(1)[0]) for ss in spawned]
