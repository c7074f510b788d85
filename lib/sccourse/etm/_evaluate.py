"""Reading a trained :class:`~sccourse.etm.ETM`: cell topic proportions, topic-gene weights and their top genes,
topic enrichment per cell type, and the evaluation protocols (fixed-resolution ARI over seeds, the resolution scan).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .._device import get_device
from .._etm_kernels import ETMData
from .._validation import check_int, check_seed
from ._model import ETM, _data_for, _theta, prepare
from ._train import restart_seeds, train_etm

__all__ = [
    "ari_over_seeds",
    "final_neg_elbo",
    "get_theta",
    "resolution_scan",
    "top_genes",
    "topic_enrichment",
    "topic_gene_weights",
]


def get_theta(
    model: ETM,
    X,
    *,
    batch=None,
    layer: str | None = None,
    batch_key: str | None = None,
    return_delta: bool = False,
):
    """Cell topic proportions ``θ_n = softmax(μ_n)`` (encoder mean, eval mode, no gradient).

    Parameters
    ----------
    model
        A (trained) :class:`ETM`.
    X
        Raw counts, cells x genes (AnnData, numpy, scipy.sparse, torch or :class:`ETMData`).
    return_delta
        Also return ``μ`` (the unnormalised topic logits, cells x topics).

    Returns
    -------
    numpy.ndarray
        ``θ`` (cells x topics, rows sum to 1), or ``(θ, μ)``.
    """
    if not isinstance(model, ETM):
        raise TypeError(f"model must be an sccourse.etm.ETM, got {type(model).__name__}")
    data = _data_for(model, X, batch=batch, layer=layer, batch_key=batch_key)
    theta, mu = _theta(model, data)
    return (theta, mu) if return_delta else theta


@torch.no_grad()
def topic_gene_weights(model: ETM, gene_names=None) -> pd.DataFrame:
    """Topic-gene distributions ``β = softmax_genes(α ρᵀ)`` as a genes x topics DataFrame.

    Each column (topic ``k``, an integer label) sums to 1 over genes. Genes are named by ``gene_names``,
    else by the model's ``gene_names``, else ``gene_0, gene_1, ...``.
    """
    if not isinstance(model, ETM):
        raise TypeError(f"model must be an sccourse.etm.ETM, got {type(model).__name__}")
    names = gene_names if gene_names is not None else model.gene_names
    if names is None:
        names = [f"gene_{g}" for g in range(model.n_genes)]
    names = [str(g) for g in names]
    if len(names) != model.n_genes:
        raise ValueError(f"gene_names has {len(names)} entries but the model has {model.n_genes} genes")
    beta = model.beta().double().cpu().numpy().T
    return pd.DataFrame(
        beta, index=pd.Index(names, name="gene"), columns=pd.RangeIndex(model.n_topics, name="topic")
    )


def top_genes(weights: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` highest-weight genes of every topic.

    Parameters
    ----------
    weights
        genes x topics DataFrame (e.g. :func:`topic_gene_weights`).
    n
        Genes per topic.

    Returns
    -------
    pandas.DataFrame
        ``n`` rows (rank 0 = highest weight) x topics, holding gene names; ties keep the gene order.
    """
    if not isinstance(weights, pd.DataFrame):
        raise TypeError(f"weights must be a genes x topics pandas DataFrame, got {type(weights).__name__}")
    n = check_int(n, "n", minimum=1)
    if n > weights.shape[0]:
        raise ValueError(f"n ({n}) is larger than the number of genes ({weights.shape[0]})")
    out = {}
    for topic in weights.columns:
        col = weights[topic].to_numpy()
        order = np.argsort(-col, kind="stable")[:n]
        out[topic] = weights.index[order].to_numpy()
    return pd.DataFrame(out, index=pd.RangeIndex(n, name="rank"))


def topic_enrichment(theta, labels) -> pd.DataFrame:
    """How much more of each topic the cells of each type hold than all other cells.

    Parameters
    ----------
    theta
        cells x topics proportions (numpy, torch or DataFrame).
    labels
        Cell labels (length = cells); missing labels form no group (those cells count as "other cells").

    Returns
    -------
    pandas.DataFrame
        cell types (sorted) x topics: ``mean θ_k over the cells of the type − mean θ_k over all other cells``.
        A type's marker topic is the column of its row's maximum.
    """
    if hasattr(theta, "detach"):
        theta = theta.detach().cpu().numpy()
    T = np.asarray(theta, dtype=np.float64)
    if T.ndim != 2:
        raise ValueError(f"theta must be a 2-D cells x topics array, got shape {T.shape}")
    lab = pd.Series(np.asarray(labels, dtype=object))
    if len(lab) != T.shape[0]:
        raise ValueError(f"labels has {len(lab)} entries but theta has {T.shape[0]} cells")
    types = sorted(lab.dropna().astype(str).unique())
    if not types:
        raise ValueError("no cell has a label")
    lab = lab.where(lab.isna(), lab.astype(str)).to_numpy()
    total, n = T.sum(axis=0), T.shape[0]
    rows = {}
    for t in types:
        inside = lab == t
        k = int(inside.sum())
        mean_in = T[inside].sum(axis=0) / k
        mean_out = (total - T[inside].sum(axis=0)) / (n - k) if n > k else np.full(T.shape[1], np.nan)
        rows[t] = mean_in - mean_out
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(index="cell_type", columns="topic")


def resolution_scan(embedding, labels, resolutions, **options) -> pd.Series:
    """ARI of the Leiden clusters of ``embedding`` at every resolution in ``resolutions``.

    Each value is :func:`sccourse.metrics.evaluate_ari` ``(embedding, labels, resolution=r, **options)``. Its
    maximum is an *oracle* (the resolution was chosen by looking at the labels), an upper bound rather than an
    estimate of how well the embedding finds cell types without labels.

    Returns
    -------
    pandas.Series
        Indexed by resolution (in the given order), named ``"ari"``.
    """
    from ..metrics import evaluate_ari

    grid = [float(r) for r in resolutions]
    if not grid:
        raise ValueError("resolutions must hold at least one resolution")
    if any(not math.isfinite(r) or r <= 0 for r in grid):
        raise ValueError(f"resolutions must be positive numbers, got {list(resolutions)!r}")
    scores = [evaluate_ari(embedding, labels, resolution=r, **options) for r in grid]
    return pd.Series(scores, index=pd.Index(grid, name="resolution"), name="ari")


def final_neg_elbo(model: ETM, data: ETMData) -> float:
    """Negative ELBO (per cell) of a trained model, deterministic: evaluation mode, ``δ = μ`` (no sampling)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            nll, kl = model.elbo_terms(data, sample=False)
    finally:
        model.train(was_training)
    return float(nll + kl)


def ari_over_seeds(
    X,
    labels,
    *,
    n_topics: int = 16,
    seeds=(0, 1, 2),
    epochs: int = 1000,
    resolution: float = 0.15,
    batch=None,
    layer: str | None = None,
    batch_key: str | None = None,
    device="auto",
    n_init: int = 1,
    progress: bool = False,
    **options,
) -> pd.DataFrame:
    """Train one model per seed and score it at a fixed Leiden resolution: the honest evaluation protocol.

    For each seed: :class:`ETM` (``seed``) → :func:`train_etm` (``seed``, ``epochs``, ``options``) →
    :func:`sccourse.metrics.evaluate_ari` of ``θ`` and of ``μ`` at ``resolution``. With ``n_init`` > 1 each seed
    trains ``n_init`` models (:func:`restart_seeds`) and keeps the one with the best final ELBO
    (:func:`final_neg_elbo`), so the spread over seeds shows what restarts buy.

    Parameters
    ----------
    X
        Raw counts (AnnData, arrays or :class:`ETMData`), cells x genes.
    labels
        Reference cell labels (length = cells).
    options
        Passed on: ``emb_dim``, ``hidden``, ``dropout``, ``mixing`` to :class:`ETM`; the rest (``lr``, ``kl_warmup``, ...)
        to :func:`train_etm`.

    Returns
    -------
    pandas.DataFrame
        One row per seed: ``seed``, ``ari_theta``, ``ari_delta``, ``neg_elbo`` (final), ``time_s`` (training).
    """
    from ..metrics import evaluate_ari

    seeds = [check_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    model_opts = {k: options.pop(k) for k in ("emb_dim", "hidden", "dropout", "mixing") if k in options}
    dev = get_device(device)
    data = prepare(X, batch=batch, layer=layer, batch_key=batch_key, device=dev)
    if len(labels) != data.n_cells:
        raise ValueError(f"labels has {len(labels)} entries but the data has {data.n_cells} cells")
    n_init = check_int(n_init, "n_init", minimum=1)
    rows = []
    for s in seeds:
        best, spent = None, 0.0
        for r in restart_seeds(s, n_init):
            model = ETM(data.n_genes, n_topics, n_batches=data.n_batches, seed=r, **model_opts)
            hist = train_etm(model, data, epochs=epochs, device=dev, seed=r, progress=progress, **options)
            spent += float(hist["time_s"].iloc[-1])
            score = final_neg_elbo(model, data)
            if best is None or score < best[0]:
                best = (score, model)
        theta, mu = _theta(best[1], data)
        rows.append(
            {
                "seed": s,
                "ari_theta": evaluate_ari(theta, labels, resolution=resolution),
                "ari_delta": evaluate_ari(mu, labels, resolution=resolution),
                "neg_elbo": best[0],
                "time_s": spent,
            }
        )
    return pd.DataFrame(rows)
