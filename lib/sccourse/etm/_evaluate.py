"""Reading a trained :class:`~sccourse.etm.ETM`: cell topic proportions, topic-gene weights and their top genes,
topic enrichment per cell type, and the evaluation protocols (fixed-resolution ARI over seeds, the resolution scan).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._device import get_device
from .._validation import check_finite, check_float, check_int, check_labels, check_seed
from ._model import ETM, Device, _check_model, _data_for, _names, _theta, prepare
from ._train import _restart_init, restart_seeds, train_etm

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
    batch: Sequence | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
    return_delta: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Cell topic proportions ``θ_n = softmax(μ_n)`` (encoder mean, eval mode, no gradient).

    Parameters
    ----------
    model
        A (trained) :class:`ETM`.
    X
        Raw counts, cells x genes (AnnData, numpy, scipy.sparse, torch or :class:`ETMData`); one cell is enough.
    batch, layer, batch_key
        See :func:`prepare`. With a model of several batches every cell needs a batch label the model was trained
        on (``model.batch_categories_``); cells of some of those batches only are fine.
    return_delta
        Also return ``μ`` (the unnormalised topic logits, cells x topics).

    Returns
    -------
    numpy.ndarray
        ``θ`` (cells x topics, rows sum to 1), or ``(θ, μ)``.

    Raises
    ------
    ValueError
        Counts that are not raw counts, a gene number other than the model's, a batch label the model never saw.
    """
    _check_model(model)
    if not isinstance(return_delta, bool):
        raise TypeError(f"return_delta must be True or False, got {return_delta!r}")
    data = _data_for(model, X, batch=batch, layer=layer, batch_key=batch_key)
    theta, mu = _theta(model, data)
    return (theta, mu) if return_delta else theta


@torch.no_grad()
def topic_gene_weights(model: ETM, gene_names: Sequence | None = None) -> pd.DataFrame:
    """Topic-gene distributions ``β = softmax_genes(α ρᵀ)`` as a genes x topics DataFrame.

    Each column (topic ``k``, an integer label) sums to 1 over genes. Genes are named by ``gene_names``,
    else by the model's ``gene_names``, else ``gene_0, gene_1, ...``.
    """
    _check_model(model)
    names = _names(gene_names, model.n_genes, length="the model's n_genes")
    if names is None:
        names = model.gene_names or [f"gene_{g}" for g in range(model.n_genes)]
    beta = model.beta().double().cpu().numpy().T
    return pd.DataFrame(
        beta, index=pd.Index(names, name="gene"), columns=pd.RangeIndex(model.n_topics, name="topic")
    )


def top_genes(weights: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` highest-weight genes of every topic.

    Parameters
    ----------
    weights
        genes x topics DataFrame of numbers (e.g. :func:`topic_gene_weights`).
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
    not_numeric = [c for c in weights.columns if not pd.api.types.is_numeric_dtype(weights[c])]
    if not_numeric:
        raise TypeError(f"weights must hold numbers; topic columns {not_numeric} do not")
    if weights.isna().to_numpy().any():
        raise ValueError("weights contains NaN values; expected a weight for every gene and topic")
    out = {}
    for topic in weights.columns:
        col = weights[topic].to_numpy(dtype=np.float64)
        order = np.argsort(-col, kind="stable")[:n]
        out[topic] = weights.index[order].to_numpy()
    return pd.DataFrame(out, index=pd.RangeIndex(n, name="rank"))


def _matrix(values, name: str) -> np.ndarray:
    """A 2-D float64 numpy copy of a numpy, scipy.sparse, torch or DataFrame matrix."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = (values.to_dense() if values.layout != torch.strided else values).double().numpy()
    elif sp.issparse(values):
        values = values.toarray()
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a numeric cells x topics matrix, got {type(values).__name__}"
        ) from err
    if out.ndim != 2:
        raise ValueError(f"{name} must be a 2-D cells x topics array, got shape {out.shape}")
    check_finite(out, name)
    return out


def topic_enrichment(theta, labels: Sequence) -> pd.DataFrame:
    """How much more of each topic the cells of each type hold than all other cells.

    Parameters
    ----------
    theta
        cells x topics proportions (numpy, scipy.sparse, torch or DataFrame), finite.
    labels
        Cell labels (length = cells); missing labels form no group (those cells count as "other cells").

    Returns
    -------
    pandas.DataFrame
        cell types (sorted) x topics: ``mean θ_k over the cells of the type − mean θ_k over all other cells``.
        A type's marker topic is the column of its row's maximum.
    """
    T = _matrix(theta, "theta")
    lab = np.asarray(labels, dtype=object)
    if lab.ndim != 1:
        raise ValueError(f"labels must be one-dimensional (one label per cell), got shape {lab.shape}")
    if len(lab) != T.shape[0]:
        raise ValueError(f"labels has {len(lab)} entries but theta has {T.shape[0]} cells")
    lab = pd.Series(lab)
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


def resolution_scan(embedding, labels: Sequence, resolutions: Iterable[float], **options) -> pd.Series:
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

    if isinstance(resolutions, str | bytes) or not isinstance(resolutions, Iterable):
        raise TypeError(f"resolutions must be a list of positive numbers, got {resolutions!r}")
    given = list(resolutions)
    if not given:
        raise ValueError("resolutions must hold at least one resolution")
    if any(isinstance(r, bool) or not isinstance(r, numbers.Real) for r in given):
        raise TypeError(f"resolutions must be positive numbers, got {given!r}")
    grid = [float(r) for r in given]
    if any(not math.isfinite(r) or r <= 0 for r in grid):
        raise ValueError(f"resolutions must be positive numbers, got {given!r}")
    scores = [evaluate_ari(embedding, labels, resolution=r, **options) for r in grid]
    return pd.Series(scores, index=pd.Index(grid, name="resolution"), name="ari")


def final_neg_elbo(
    model: ETM,
    data,
    *,
    batch: Sequence | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
) -> float:
    """Negative ELBO (per cell) of a trained model, deterministic: evaluation mode, ``δ = μ`` (no sampling).

    ``data``: :class:`ETMData` or raw counts (``batch``, ``layer``, ``batch_key`` as in :func:`prepare`).
    """
    _check_model(model)
    data = _data_for(model, data, batch=batch, layer=layer, batch_key=batch_key, name="data")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            nll, kl = model.elbo_terms(data, sample=False)
    finally:
        model.train(was_training)
    return float(nll + kl)


_MODEL_OPTIONS = ("emb_dim", "hidden", "dropout", "mixing")
_TRAIN_OPTIONS = ("batch_size", "lr", "weight_decay", "kl_weight", "kl_warmup", "eval_every", "eval_fn")


def ari_over_seeds(
    X,
    labels: Sequence,
    *,
    n_topics: int = 16,
    seeds: Iterable[int] = (0, 1, 2),
    epochs: int = 1000,
    resolution: float = 0.15,
    batch: Sequence | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
    device: Device = "auto",
    n_init: int = 1,
    progress: bool | None = None,
    **options,
) -> pd.DataFrame:
    """Train one model per seed and score it at a fixed Leiden resolution: the honest evaluation protocol.

    For each seed: :class:`ETM` (``seed``) → :func:`train_etm` (``seed``, ``epochs``, ``options``) →
    :func:`sccourse.metrics.evaluate_ari` of ``θ`` and of ``μ`` at ``resolution``. With ``n_init`` > 1 each seed
    trains ``n_init`` models (:func:`restart_seeds`; as in :func:`fit_etm`, restarts after the first start
    their topics at k-means centroids of the cells) and keeps the one with the best final ELBO
    (:func:`final_neg_elbo`), so the spread over seeds shows what restarts buy.

    Parameters
    ----------
    X
        Raw counts (AnnData, arrays or :class:`ETMData`), cells x genes.
    labels
        Reference cell labels (length = cells).
    progress
        Progress bars of the training runs; None: only on a terminal or in Jupyter.
    options
        Passed on: ``emb_dim``, ``hidden``, ``dropout``, ``mixing`` to :class:`ETM`; ``batch_size``, ``lr``,
        ``weight_decay``, ``kl_weight``, ``kl_warmup``, ``eval_every``, ``eval_fn`` to :func:`train_etm`.

    Returns
    -------
    pandas.DataFrame
        One row per seed: ``seed``, ``ari_theta``, ``ari_delta``, ``neg_elbo`` (final), ``time_s`` (training).
    """
    from ..metrics import evaluate_ari

    if isinstance(seeds, str | bytes) or not isinstance(seeds, Iterable):
        raise TypeError(f"seeds must be a list of seeds (non-negative integers), got {seeds!r}")
    seeds = [check_seed(s, "seeds") for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    unknown = sorted(set(options) - set(_MODEL_OPTIONS) - set(_TRAIN_OPTIONS))
    if unknown:
        raise TypeError(
            f"ari_over_seeds got unknown options {unknown}; it passes on {list(_MODEL_OPTIONS)} to ETM and "
            f"{list(_TRAIN_OPTIONS)} to train_etm"
        )
    model_opts = {k: v for k, v in options.items() if k in _MODEL_OPTIONS}
    train_opts = {k: v for k, v in options.items() if k in _TRAIN_OPTIONS}
    check_float(resolution, "resolution", minimum=0.0, strict=True)
    n_init = check_int(n_init, "n_init", minimum=1)
    dev = get_device(device)
    data = prepare(X, batch=batch, layer=layer, batch_key=batch_key, device=dev)
    check_labels(labels, data.n_cells, "labels")
    categories = data.batch_categories if data.n_batches > 1 else None
    rows = []
    for s in seeds:
        best, spent = None, 0.0
        for i, r in enumerate(restart_seeds(s, n_init)):
            model = ETM(
                data.n_genes,
                n_topics,
                n_batches=data.n_batches,
                batch_categories=categories,
                seed=r,
                **model_opts,
            )
            _restart_init(model, data, i, r)
            hist = train_etm(model, data, epochs=epochs, device=dev, seed=r, progress=progress, **train_opts)
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
