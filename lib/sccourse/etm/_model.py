"""The embedded topic model itself: the :class:`ETM` network, :func:`prepare` (counts to :class:`ETMData`) and
the inference helpers shared by training and evaluation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._device import get_device, seeded
from .._etm_kernels import (
    ETMData,
    GeneLinear,
    MaskDropout,
    SparseCounts,
    as_count_matrix,
    gaussian_kl,
    logit_loglik,
    mixture_loglik,
    sparse_input_linear,
    to_tensors,
)
from .._validation import check_choice, check_float, check_int, check_seed, is_anndata

__all__ = ["ETM", "MIXINGS", "ETMData", "prepare"]

#: the decoder's ways of mixing topics (``ETM(mixing=...)``)
Mixing = Literal["probability", "logit"]
#: a device request, resolved by :func:`sccourse.get_device`
Device = str | torch.device

# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------
#: how the decoder mixes topics: in probability space (θ β) or in logit space (softmax(θ α ρᵀ))
MIXINGS = ("probability", "logit")


class ETM(nn.Module):
    r"""scETM-style embedded topic model.

    Encoder: ``x_n / Σ_g x_ng → Linear(G, hidden) → ReLU → BatchNorm → Dropout → (μ_n, log σ_n²)``;
    ``θ_n = softmax(δ_n)`` with ``δ_n = μ_n + σ_n ε``. Decoder: ``β = softmax_genes(α ρᵀ)``, cell ``n``'s gene
    distribution ``θ_n β`` (times ``exp(b_s)``, renormalised, when ``n_batches > 1``); with
    ``mixing="logit"`` it is ``softmax_genes(θ_n α ρᵀ + b_s)`` instead (a cell of one pure topic ``k`` still
    has distribution ``β_k``).

    Parameters
    ----------
    n_genes
        Number of genes ``G`` (columns of the count matrix).
    n_topics
        Number of topics ``K``.
    emb_dim
        Embedding dimension ``L`` of genes (``ρ``, G x L) and topics (``α``, K x L).
    hidden
        Width of the encoder's hidden layer.
    n_batches
        Number of experimental batches; > 1 adds a trainable per-batch gene bias ``b`` (n_batches x G).
    dropout
        Dropout probability after the hidden layer (training only).
    mixing
        ``"probability"`` (``θ β``, the course's model) or ``"logit"`` (``softmax(θ α ρᵀ)``, the scETM
        package's decoder; ``benchmarks/README-etm.md`` compares the two).
    gene_names
        Optional gene names (length ``n_genes``), used by :func:`topic_gene_weights`.
    batch_categories
        Optional batch labels (``n_batches`` distinct values) that batch codes ``0, 1, ...`` stand for; otherwise
        they are taken from the data the model is first trained on (:func:`train_etm`, :func:`train_step`).
    seed
        Seed of the parameter initialisation (the global random state is left as it was).

    Attributes
    ----------
    batch_categories_
        The batch labels the model knows (a tuple of strings, in code order), or None: with ``n_batches > 1``,
        :func:`get_theta` maps the labels of new cells onto them and refuses labels the model never saw. They are
        part of :meth:`state_dict` (``get_extra_state``), so a saved and reloaded model keeps them.
    """

    def __init__(
        self,
        n_genes: int,
        n_topics: int = 16,
        *,
        emb_dim: int = 400,
        hidden: int = 128,
        n_batches: int = 1,
        dropout: float = 0.1,
        mixing: Mixing = "probability",
        gene_names: Sequence | None = None,
        batch_categories: Sequence | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.n_genes = check_int(n_genes, "n_genes", minimum=2)
        self.n_topics = check_int(n_topics, "n_topics", minimum=1)
        self.emb_dim = check_int(emb_dim, "emb_dim", minimum=1)
        self.hidden = check_int(hidden, "hidden", minimum=1)
        self.n_batches = check_int(n_batches, "n_batches", minimum=1)
        dropout = check_float(dropout, "dropout", minimum=0.0)
        if dropout >= 1.0:
            raise ValueError(f"dropout must be < 1 (a probability of dropping a unit), got {dropout}")
        self.mixing = check_choice(mixing, "mixing", MIXINGS)
        seed = check_seed(seed)
        self.gene_names = _names(gene_names, self.n_genes)
        self.batch_categories_ = None
        if batch_categories is not None:
            cats = _names(batch_categories, self.n_batches, name="batch_categories", length="n_batches")
            if len(set(cats)) != len(cats):
                raise ValueError(f"batch_categories must be distinct labels, got {cats}")
            self.batch_categories_ = tuple(cats)
        with seeded(seed):
            self.encoder = nn.Sequential(
                GeneLinear(self.n_genes, self.hidden),
                nn.ReLU(),
                nn.BatchNorm1d(self.hidden),
                MaskDropout(dropout),
            )
            self.mu = nn.Linear(self.hidden, self.n_topics)
            self.logvar = nn.Linear(self.hidden, self.n_topics)
            # α ρᵀ starts with unit-variance logits: ρ ~ N(0, 1), α ~ N(0, 1/L)
            self.rho = nn.Parameter(torch.randn(self.n_genes, self.emb_dim))
            self.alpha = nn.Parameter(torch.randn(self.n_topics, self.emb_dim) / math.sqrt(self.emb_dim))
        if self.n_batches > 1:
            self.batch_bias = nn.Parameter(torch.zeros(self.n_batches, self.n_genes))
        else:
            self.register_parameter("batch_bias", None)
        self._register_load_state_dict_pre_hook(_keep_labels_of_older_states)

    # -- the batch labels travel with the state_dict --------------------------------------
    def get_extra_state(self) -> dict:
        """What :meth:`state_dict` stores besides tensors: the batch labels (``batch_categories_``).

        Plain strings in a dict, so ``torch.load(..., weights_only=True)`` reads it back.
        """
        cats = self.batch_categories_
        return {"version": 1, "batch_categories": None if cats is None else list(cats)}

    def set_extra_state(self, state) -> None:
        """Restore the batch labels saved by :meth:`get_extra_state` (``load_state_dict``).

        Saved labels replace the model's; a state saved without labels (a model trained on batch codes) leaves
        the model's own labels (e.g. from ``ETM(batch_categories=...)``) as they are.
        """
        if not isinstance(state, dict) or "batch_categories" not in state:
            raise ValueError(
                f"not an ETM extra state (expected a dict with 'batch_categories'), got {state!r}"
            )
        cats = state["batch_categories"]
        if cats is None:
            return
        cats = _names(cats, self.n_batches, name="the saved batch_categories", length="n_batches")
        if len(set(cats)) != len(cats):
            raise ValueError(f"the saved batch_categories must be distinct labels, got {cats}")
        self.batch_categories_ = tuple(cats)

    # -- pieces -------------------------------------------------------------------------
    def encode(self, normalized: torch.Tensor, *, sparse=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)`` of ``q(δ | x)`` from library-size-normalised counts (cells x genes).

        ``sparse``: the same cells' non-zeros (``ETMData.sparse``), so that the first layer's product and
        its weight gradient run over the non-zeros only (used while training).
        """
        if sparse is not None and torch.is_grad_enabled():
            h = sparse_input_linear(sparse, self.encoder[0])
            for layer in self.encoder[1:]:
                h = layer(h)
        else:
            h = self.encoder(normalized)
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)

    def beta(self) -> torch.Tensor:
        """Topic-gene distributions ``β = softmax_genes(α ρᵀ)`` (K x G, rows sum to 1)."""
        return torch.softmax(self.rho @ self.alpha.t(), dim=0).t()  # the faster GEMM layout; same numbers

    def log_likelihood(
        self, theta: torch.Tensor, counts: torch.Tensor, batch: torch.Tensor | None = None, *, sparse=None
    ) -> torch.Tensor:
        r"""Summed ``Σ_n Σ_g x_ng log p_ng`` with ``p_n = θ_n β`` (times ``exp(b_{s_n})``, renormalised), or
        ``p_n = softmax(θ_n α ρᵀ + b_{s_n})`` with ``mixing="logit"``.

        ``sparse``: the non-zeros of ``counts`` (``ETMData.sparse``), for the terms that need only those.
        """
        if self.batch_bias is not None and batch is None:
            raise ValueError(f"this model has {self.n_batches} batches: pass the batch of every cell")
        if self.mixing == "logit":
            logits = (self.rho @ self.alpha.t()).t()  # α ρᵀ in the faster GEMM layout (a transposed view)
            library = sparse.library if sparse is not None else None
            return logit_loglik(theta, logits, counts, bias=self.batch_bias, batch=batch, library=library)
        beta = self.beta()
        if sparse is not None and sparse.density > SparseCounts.LIKELIHOOD_MAX_DENSITY:
            sparse = None  # the dense chunked kernel is the faster one here
        ll = mixture_loglik(theta, beta, counts, sparse)
        if self.batch_bias is not None:
            b = self.batch_bias
            # Σ_n x_n · b_{s_n}  −  Σ_n lib_n log Σ_g (θ_n β)_g exp(b_{s_n g})
            per_batch = torch.zeros_like(b).index_add_(0, batch, counts)  # S x G count totals
            ll = ll + (per_batch * b).sum()
            z = theta @ (beta @ b.exp().t())  # N x S
            ll = ll - (counts.sum(dim=1) * torch.log(z.gather(1, batch[:, None]).squeeze(1))).sum()
        return ll

    def elbo_terms(
        self, data: ETMData, *, sample: bool = True, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell means of the negative log-likelihood and of the KL term.

        ``sample=True`` draws ``δ = μ + σ ε`` (``ε`` from ``noise`` when given, else ``randn``);
        ``sample=False`` uses ``δ = μ``.
        """
        mu, logvar = self.encode(data.normalized, sparse=data.sparse)
        if sample:
            eps = torch.randn_like(mu) if noise is None else noise
            delta = mu + torch.exp(0.5 * logvar) * eps
        else:
            delta = mu
        theta = torch.softmax(delta, dim=1)
        batch = data.batch if self.batch_bias is not None else None
        n = data.n_cells
        nll = -self.log_likelihood(theta, data.counts, batch, sparse=data.sparse) / n
        kl = gaussian_kl(mu, logvar).mean()
        return nll, kl

    def forward(self, data: ETMData) -> dict:
        """Training-mode pass: ``{"nll", "kl"}`` (per-cell means, tensors)."""
        nll, kl = self.elbo_terms(data)
        return {"nll": nll, "kl": kl}

    def extra_repr(self) -> str:
        return (
            f"n_genes={self.n_genes}, n_topics={self.n_topics}, emb_dim={self.emb_dim}, "
            f"hidden={self.hidden}, n_batches={self.n_batches}, mixing={self.mixing!r}"
        )


def _keep_labels_of_older_states(
    state_dict, prefix, local_metadata, strict, missing, unexpected, errors
) -> None:
    """A state_dict saved before the batch labels were part of it loads (strictly) and keeps the model's labels."""
    key = prefix + "_extra_state"  # where nn.Module keeps get_extra_state()'s value
    if key not in state_dict:
        state_dict[key] = {"version": 1, "batch_categories": None}


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def _names(values, n: int, *, name: str = "gene_names", length: str = "n_genes") -> list[str] | None:
    """``values`` as ``n`` strings (None stays None)."""
    if values is None:
        return None
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of {n} names, got {type(values).__name__}")
    out = [str(v) for v in values]
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries but {length} is {n}")
    return out


def _model_device_dtype(model: ETM) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def _check_model(model, name: str = "model") -> ETM:
    if not isinstance(model, ETM):
        raise TypeError(f"{name} must be an sccourse.etm.ETM, got {type(model).__name__}")
    return model


def prepare(
    X,
    *,
    batch: Sequence | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
    device: Device = "auto",
    dtype: torch.dtype = torch.float32,
) -> ETMData:
    """Validate counts once and hold them as dense tensors for :func:`train_step` and :func:`get_theta`.

    Parameters
    ----------
    X
        Raw counts, cells x genes: AnnData (``.X`` or ``layers[layer]``), numpy, scipy.sparse or torch.
        An :class:`ETMData` is returned moved to ``device``/``dtype``.
    batch
        Optional per-cell batch labels (any hashable values, compared as strings); ignored when ``batch_key`` is
        given.
    layer, batch_key
        AnnData only: the layer holding counts, and the ``obs`` column holding batch labels.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
    dtype
        Floating dtype of the tensors (float32 is the fast default; float64 for gradient checks).

    Returns
    -------
    ETMData
        ``counts`` and ``normalized = x_ng / Σ_g x_ng`` (zero-count cells give an all-zero input row and
        contribute nothing to the likelihood), ``batch`` codes and the labels they stand for
        (``batch_categories``, sorted).

    Raises
    ------
    ValueError
        Not 2-D, fewer than 2 cells/genes, NaN/inf, negative or non-integer values (normalised or log data),
        a batch vector of the wrong length or with missing labels.
    TypeError
        Not a numeric matrix, or ``dtype`` not a torch dtype.
    """
    return _prepare(X, batch=batch, layer=layer, batch_key=batch_key, device=device, dtype=dtype)


def _prepare(X, *, batch, layer, batch_key, device, dtype, name: str = "X", min_cells: int = 2) -> ETMData:
    """:func:`prepare`, with the argument's name for the messages and the smallest number of cells allowed."""
    dev = get_device(device)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a floating torch dtype (e.g. torch.float32), got {dtype!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype (e.g. torch.float32), got {dtype!r}")
    if isinstance(X, ETMData):
        if batch is not None or layer is not None or batch_key is not None:
            raise ValueError(
                f"{name} is an ETMData, which already holds its batches; batch, layer and batch_key apply to "
                "raw counts only"
            )
        if X.n_cells < min_cells:
            raise ValueError(f"{name} must hold at least {min_cells} cells, got {X.n_cells}")
        return X.to(dev, dtype)
    obs_names = None
    if is_anndata(X):
        adata = X
        if layer is not None and layer not in adata.layers:
            raise ValueError(f"layer {layer!r} not in adata.layers (present: {list(adata.layers)})")
        if batch_key is not None:
            if batch_key not in adata.obs:
                raise ValueError(
                    f"batch_key {batch_key!r} not in adata.obs (columns: {list(adata.obs.columns)})"
                )
            batch = adata.obs[batch_key].to_numpy()
        X = adata.layers[layer] if layer is not None else adata.X
        name = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
        obs_names = list(adata.obs_names)
    elif layer is not None or batch_key is not None:
        raise ValueError("layer and batch_key apply to AnnData input only; pass batch= for arrays")
    Xv = as_count_matrix(X, name, min_cells=min_cells)
    n = Xv.shape[0]
    codes, n_batches, categories = _batch_codes(batch, n)
    return to_tensors(
        Xv, codes, n_batches, device=dev, dtype=dtype, obs_names=obs_names, batch_categories=categories
    )


def _batch_codes(batch, n: int) -> tuple[np.ndarray, int, tuple[str, ...] | None]:
    """(codes, number of batches, labels in code order) of per-cell batch labels (None: one batch)."""
    if batch is None:
        return np.zeros(n, dtype=np.int64), 1, None
    if isinstance(batch, str | bytes) or not isinstance(batch, Iterable):
        raise TypeError(f"batch must hold one label per cell, got {type(batch).__name__}")
    arr = np.asarray(batch.detach().cpu() if isinstance(batch, torch.Tensor) else batch, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"batch must be one-dimensional (one label per cell), got shape {arr.shape}")
    labels = pd.Series(arr)
    if len(labels) != n:
        raise ValueError(f"batch has {len(labels)} entries but the count matrix has {n} cells")
    if labels.isna().any():
        raise ValueError("batch labels contain missing values; give every cell a batch")
    cat = pd.Categorical(labels.astype(str))
    return cat.codes.astype(np.int64), len(cat.categories), tuple(str(c) for c in cat.categories)


def _align_batches(model: ETM, data: ETMData, *, adopt: bool = False) -> ETMData:
    """``data`` with its batch codes in the model's numbering (the labels matched by name).

    A model with one batch ignores batches. A model that knows its batch labels (``batch_categories_``) takes
    cells of any subset of them and refuses labels it never saw. Otherwise the codes must number the model's
    batches; ``adopt`` (training) then makes the data's labels the model's.
    """
    if model.n_batches == 1:
        return data
    known, cats = model.batch_categories_, data.batch_categories
    if known is None or cats is None:
        if data.n_batches != model.n_batches:
            what = f" {list(known)}" if known is not None else ""
            raise ValueError(
                f"the model has {model.n_batches} batches{what} but the data has {data.n_batches}; pass batch= "
                "(or batch_key=) with the batch label of every cell"
            )
        if adopt and known is None and cats is not None:
            model.batch_categories_ = cats
        return data
    if cats == known:
        return data
    unknown = [c for c in cats if c not in known]
    if unknown:
        raise ValueError(
            f"batch labels {unknown} were not seen in training; the model knows the batches {list(known)}"
        )
    lookup = torch.as_tensor([known.index(c) for c in cats], dtype=torch.long, device=data.batch.device)
    return dataclasses.replace(
        data, batch=lookup[data.batch], n_batches=model.n_batches, batch_categories=known
    )


def _data_for(
    model: ETM,
    X,
    *,
    batch=None,
    layer=None,
    batch_key=None,
    name: str = "X",
    min_cells: int = 1,
    device: torch.device | None = None,
    adopt: bool = False,
) -> ETMData:
    """``X`` prepared for ``model``: on its device (or ``device``) and in its dtype, its genes checked, its batches
    in the model's numbering.
    """
    dev, dtype = _model_device_dtype(model)
    data = _prepare(
        X,
        batch=batch,
        layer=layer,
        batch_key=batch_key,
        device=dev if device is None else device,
        dtype=dtype,
        name=name,
        min_cells=min_cells,
    )
    if data.n_genes != model.n_genes:
        raise ValueError(
            f"the count matrix has {data.n_genes} genes but the model was built for {model.n_genes}"
        )
    return _align_batches(model, data, adopt=adopt)


@torch.no_grad()
def _kmeans_topics(model: ETM, data: ETMData, seed: int, *, iters: int = 10, max_cells: int = 4096) -> None:
    """Start the topics at k-means centroids of the cells: ``α`` such that ``β_k = softmax(α_k ρᵀ)`` is (the
    least-squares fit in the span of ``ρ`` of) the gene profile of cluster ``k``.

    k-means++ seeding (Arthur & Vassilvitskii 2007) and ``iters`` Lloyd steps on the Hellinger coordinates
    ``sqrt(x_n / Σ_g x_ng)`` of at most ``max_cells`` cells drawn with ``seed``; cluster ``k``'s profile is its
    summed counts plus ``G`` pseudo-counts spread like the pooled profile (no zero probabilities), and ``α`` solves
    ``ρ α_kᵀ ≈ log profile_k`` (centred over genes) by least squares. Only ``α`` changes; ``ρ`` and the encoder keep
    their initialisation. Distinct, data-driven starting topics: random ones end with two copies of one topic and
    two topics merged in about a quarter of the starts on the planted topics of ``tests/test_etm.py``.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    library = data.counts.sum(dim=1)
    cells = torch.nonzero(library > 0).flatten().cpu()
    if cells.numel() < model.n_topics:
        return  # fewer non-empty cells than topics: keep the random start
    if cells.numel() > max_cells:
        cells = cells[torch.randperm(cells.numel(), generator=gen)[:max_cells]]
    cells = cells.to(data.counts.device)
    counts = data.counts[cells].double()
    H = data.normalized[cells].double().sqrt()
    n, K = H.shape[0], model.n_topics
    centres = [int(torch.randint(n, (1,), generator=gen))]
    d2 = ((H - H[centres[0]]) ** 2).sum(dim=1)
    for _ in range(1, K):
        weights = d2.cpu() if float(d2.sum()) > 0 else torch.ones(n, dtype=torch.float64)
        centres.append(int(torch.multinomial(weights, 1, generator=gen)))
        d2 = torch.minimum(d2, ((H - H[centres[-1]]) ** 2).sum(dim=1))
    C = H[centres].clone()
    for _ in range(iters):
        label = torch.cdist(H, C).argmin(dim=1)
        for k in range(K):
            members = label == k
            if members.any():
                C[k] = H[members].mean(dim=0)
    label = torch.cdist(H, C).argmin(dim=1)
    pooled = counts.sum(dim=0) / counts.sum()
    sums = torch.zeros(K, counts.shape[1], dtype=torch.float64, device=counts.device).index_add_(
        0, label, counts
    )
    profile = sums + pooled * counts.shape[1]
    logp = torch.log(profile / profile.sum(dim=1, keepdim=True)).t().cpu()  # G x K
    logp = logp - logp.mean(dim=0, keepdim=True)
    rho = model.rho.detach().double().cpu()
    alpha = torch.linalg.lstsq(rho, logp, driver="gelsd").solution.t()  # K x L, minimum norm if L > G
    model.alpha.copy_(alpha.to(model.alpha.device, model.alpha.dtype))


@torch.no_grad()
def _theta(model: ETM, data: ETMData, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """``(θ, μ)`` as numpy arrays: the encoder's mean in evaluation mode, in chunks of cells."""
    was_training = model.training
    model.eval()
    try:
        mus = [model.encode(data.normalized[s : s + chunk])[0] for s in range(0, data.n_cells, chunk)]
    finally:
        model.train(was_training)
    mu = torch.cat(mus)
    return torch.softmax(mu, dim=1).cpu().numpy(), mu.cpu().numpy()
