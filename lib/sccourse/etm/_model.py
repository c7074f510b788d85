r"""Embedded topic model (scETM-style variational autoencoder) for single-cell counts.

The model (Dieng et al. 2020; Zhao et al. 2021 for single cells). Cell ``n`` with counts ``x_n`` (over genes
``g``) has topic proportions ``θ_n = softmax(δ_n)``, ``δ_n ~ N(0, I)``; topic ``k`` is a distribution over
genes ``β_k = softmax_g(α_k · ρ_g)`` built from a topic embedding ``α`` (K x L) and a gene embedding ``ρ``
(G x L), and

.. math::  \log p(x_n \mid θ_n) = \sum_g x_{ng} \log (θ_n β)_g

(categorical over genes, raw counts): topics mixed in probability space, the default. ``mixing="logit"``
mixes them in logit space instead, as the scETM package does: ``log p(x_n | θ_n) = Σ_g x_ng log softmax_g(θ_n α ρᵀ)``.
An encoder MLP on the library-size-normalised counts
``x_n / Σ_g x_ng`` (one hidden layer, batch norm, dropout) gives ``q(δ_n) = N(μ_n, σ_n²)``; training
maximises the ELBO ``E_q[log p(x_n | θ_n)] − w · KL(q(δ_n) || N(0, I))`` with a KL weight ``w`` warmed up
linearly from 0. With several batches a per-batch gene bias ``b_s`` multiplies the mixture:
``p_ng ∝ (θ_n β)_g · exp(b_{s_n g})`` (logit mixing: ``p_n = softmax(θ_n α ρᵀ + b_{s_n})``).

Public API: :class:`ETM`, :func:`prepare`, :func:`train_step`, :func:`kl_schedule`, :func:`train_etm`,
:func:`get_theta`, :func:`topic_gene_weights`, :func:`top_genes`, :func:`topic_enrichment`, :func:`fit_etm`,
:func:`ari_over_seeds`, :func:`resolution_scan`.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from ._device import get_device, set_seed
from ._etm_kernels import (
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

__all__ = [
    "ETM",
    "ETMData",
    "MIXINGS",
    "adam",
    "ari_over_seeds",
    "fit_etm",
    "get_theta",
    "kl_schedule",
    "prepare",
    "resolution_scan",
    "top_genes",
    "topic_enrichment",
    "topic_gene_weights",
    "train_etm",
    "train_step",
]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name: str, value, *, minimum: float = 0.0, strict: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number, got {value!r}") from err
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {op} {minimum}, got {value!r}")
    return v


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
    seed
        Seed of the parameter initialisation (the global random state is left as it was).
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
        mixing: str = "probability",
        gene_names=None,
        seed: int = 0,
    ):
        super().__init__()
        self.n_genes = _check_int("n_genes", n_genes, 2)
        self.n_topics = _check_int("n_topics", n_topics, 1)
        self.emb_dim = _check_int("emb_dim", emb_dim, 1)
        self.hidden = _check_int("hidden", hidden, 1)
        self.n_batches = _check_int("n_batches", n_batches, 1)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
        self.mixing = mixing
        seed = _check_int("seed", seed, 0)
        if gene_names is not None:
            gene_names = [str(g) for g in gene_names]
            if len(gene_names) != self.n_genes:
                raise ValueError(f"gene_names has {len(gene_names)} entries but n_genes is {self.n_genes}")
        self.gene_names = gene_names
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.Sequential(
                GeneLinear(self.n_genes, self.hidden),
                nn.ReLU(),
                nn.BatchNorm1d(self.hidden),
                MaskDropout(float(dropout)),
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


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def _model_device_dtype(model: ETM) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def prepare(
    X,
    *,
    batch=None,
    layer: str | None = None,
    batch_key: str | None = None,
    device="auto",
    dtype: torch.dtype = torch.float32,
) -> ETMData:
    """Validate counts once and hold them as dense tensors for :func:`train_step` and :func:`get_theta`.

    Parameters
    ----------
    X
        Raw counts, cells x genes: AnnData (``.X`` or ``layers[layer]``), numpy, scipy.sparse or torch.
        An :class:`ETMData` is returned moved to ``device``/``dtype``.
    batch
        Optional per-cell batch labels (any hashable values); ignored when ``batch_key`` is given.
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
        contribute nothing to the likelihood), ``batch`` codes.

    Raises
    ------
    ValueError
        Not 2-D, fewer than 2 cells/genes, NaN/inf or negative values, a batch vector of the wrong length.
    """
    dev = get_device(device)
    if isinstance(X, ETMData):
        return X.to(dev, dtype)
    obs_names = None
    try:
        import anndata as ad
    except ImportError:  # pragma: no cover
        ad = None
    if ad is not None and isinstance(X, ad.AnnData):
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
        obs_names = list(adata.obs_names)
    elif layer is not None or batch_key is not None:
        raise ValueError("layer and batch_key apply to AnnData input only; pass batch= for arrays")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
    Xv = as_count_matrix(X)
    n = Xv.shape[0]
    if batch is None:
        codes, n_batches = np.zeros(n, dtype=np.int64), 1
    else:
        labels = pd.Series(np.asarray(batch, dtype=object))
        if len(labels) != n:
            raise ValueError(f"batch has {len(labels)} entries but the count matrix has {n} cells")
        if labels.isna().any():
            raise ValueError("batch labels contain missing values; give every cell a batch")
        cat = pd.Categorical(labels.astype(str))
        codes, n_batches = cat.codes.astype(np.int64), len(cat.categories)
    return to_tensors(Xv, codes, n_batches, device=dev, dtype=dtype, obs_names=obs_names)


def _data_for(model: ETM, X, *, batch=None, layer=None, batch_key=None) -> ETMData:
    dev, dtype = _model_device_dtype(model)
    data = prepare(X, batch=batch, layer=layer, batch_key=batch_key, device=dev, dtype=dtype)
    if data.n_genes != model.n_genes:
        raise ValueError(
            f"the count matrix has {data.n_genes} genes but the model was built for {model.n_genes}"
        )
    if model.n_batches > 1 and data.n_batches != model.n_batches:
        raise ValueError(
            f"the model has {model.n_batches} batches but the data has {data.n_batches}; "
            "pass batch= (or batch_key=) with the same batches the model was built for"
        )
    return data


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
    epochs = _check_int("epochs", epochs, 1)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, 2)
    lr = _check_float("lr", lr, strict=True)
    weight_decay = _check_float("weight_decay", weight_decay)
    kl_weight = _check_float("kl_weight", kl_weight)
    kl_warmup = _check_int("kl_warmup", kl_warmup, 0)
    eval_every = _check_int("eval_every", eval_every, 1)
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError("eval_fn must be callable (theta -> float) or None")
    seed = _check_int("seed", seed, 0)
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


# --------------------------------------------------------------------------------------
# inference and interpretation
# --------------------------------------------------------------------------------------
@torch.no_grad()
def _theta(model: ETM, data: ETMData, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    was_training = model.training
    model.eval()
    try:
        mus = [model.encode(data.normalized[s : s + chunk])[0] for s in range(0, data.n_cells, chunk)]
    finally:
        model.train(was_training)
    mu = torch.cat(mus)
    return torch.softmax(mu, dim=1).cpu().numpy(), mu.cpu().numpy()


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
    n = _check_int("n", n, 1)
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
    from .metrics import evaluate_ari

    grid = [float(r) for r in resolutions]
    if not grid:
        raise ValueError("resolutions must hold at least one resolution")
    if any(not math.isfinite(r) or r <= 0 for r in grid):
        raise ValueError(f"resolutions must be positive numbers, got {list(resolutions)!r}")
    scores = [evaluate_ari(embedding, labels, resolution=r, **options) for r in grid]
    return pd.Series(scores, index=pd.Index(grid, name="resolution"), name="ari")


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

    if not isinstance(adata, ad.AnnData):
        raise TypeError(
            f"fit_etm expects an AnnData (use ETM + train_etm for arrays), got {type(adata).__name__}"
        )
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}")
    n_init = _check_int("n_init", n_init, 1)
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
    seed = _check_int("seed", seed, 0)
    spawned = np.random.SeedSequence(seed).spawn(max(n_init - 1, 0))
    return [seed] + [int(ss.generate_state(1)[0]) for ss in spawned]


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
    from .metrics import evaluate_ari

    seeds = [_check_int("seed", s, 0) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    model_opts = {k: options.pop(k) for k in ("emb_dim", "hidden", "dropout", "mixing") if k in options}
    dev = get_device(device)
    data = prepare(X, batch=batch, layer=layer, batch_key=batch_key, device=dev)
    if len(labels) != data.n_cells:
        raise ValueError(f"labels has {len(labels)} entries but the data has {data.n_cells} cells")
    n_init = _check_int("n_init", n_init, 1)
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
