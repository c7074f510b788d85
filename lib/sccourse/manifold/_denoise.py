"""Denoisers trained against a corruption: an MLP ``d → hidden → d`` fitted to ``‖f(noise(X)) − X‖²``, and the
stretch goal's level-conditioned model sampled from the strongest heat level down (cold diffusion).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._device import get_device, seeded
from .._progress import bar as _bar
from .._validation import check_float as _check_float
from .._validation import check_int as _check_int
from .._validation import check_seed as _check_seed
from ._graph import _as_tensor, _unwrap_anndata
from ._noise import ManifoldHeat, NoiseProcess

__all__ = [
    "Denoiser",
    "LevelDenoiser",
    "denoise",
    "iterative_denoise",
    "split_cells",
    "train_conditional_denoiser",
    "train_denoiser",
]


def _genes_buffer(d: int, genes) -> torch.Tensor:
    """The model's ``genes`` buffer: ``d`` column indices of the full matrix (default ``0 … d-1``)."""
    if genes is None:
        return torch.arange(d)
    g = genes.detach().cpu().numpy() if isinstance(genes, torch.Tensor) else np.asarray(genes)
    if g.ndim != 1 or g.shape[0] != d or (g.size and g.dtype.kind not in "iu") or (g.size and g.min() < 0):
        raise ValueError(
            f"genes must hold one non-negative integer column index per input ({d}), got {g.dtype} of shape {g.shape}"
        )
    return torch.as_tensor(g.astype(np.int64), dtype=torch.long)


class Denoiser(nn.Module):
    """MLP ``d → hidden → d`` with a GELU: ``x̂ = W₂ GELU(W₁ x̃ + b₁) + b₂``.

    ``genes`` (buffer) holds the columns of the full matrix the model was trained on.
    """

    def __init__(self, d: int, hidden: int = 512, genes=None):
        super().__init__()
        self.d, self.hidden = _check_int(d, "d", minimum=1), _check_int(hidden, "hidden", minimum=1)
        self.net = nn.Sequential(nn.Linear(self.d, self.hidden), nn.GELU(), nn.Linear(self.hidden, self.d))
        self.register_buffer("genes", _genes_buffer(self.d, genes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _level_embedding(level: torch.Tensor, max_level: int, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of a noise level in [0, max_level] (dim/2 frequencies)."""
    t = level.to(torch.float32)[:, None] / max(max_level, 1)
    freqs = torch.exp(torch.linspace(0.0, math.log(100.0), dim // 2, device=level.device))
    ang = t * freqs[None, :] * math.pi
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


class LevelDenoiser(nn.Module):
    """Noise-level-conditioned MLP: ``x̂₀ = f([x̃, emb(k)])`` with a sinusoidal embedding of ``k``."""

    def __init__(self, d: int, max_level: int, hidden: int = 512, emb_dim: int = 32, genes=None):
        super().__init__()
        self.d, self.max_level = _check_int(d, "d", minimum=1), _check_int(max_level, "max_level", minimum=1)
        self.emb_dim = _check_int(emb_dim, "emb_dim", minimum=2)
        if self.emb_dim % 2:
            raise ValueError(f"emb_dim must be even (sine and cosine pairs), got {emb_dim}")
        hidden = _check_int(hidden, "hidden", minimum=1)
        self.net = nn.Sequential(
            nn.Linear(self.d + self.emb_dim, hidden), nn.GELU(), nn.Linear(hidden, self.d)
        )
        self.register_buffer("genes", _genes_buffer(self.d, genes))

    def forward(self, x: torch.Tensor, level) -> torch.Tensor:
        if not isinstance(level, torch.Tensor) or level.ndim == 0:
            level = torch.full((x.shape[0],), float(level), device=x.device)
        return self.net(torch.cat([x, _level_embedding(level.to(x.device), self.max_level, self.emb_dim)], 1))


def _resolve_genes(X: torch.Tensor, genes) -> np.ndarray:
    from ..pp import top_variable_genes

    n_genes = X.shape[1]
    if genes is None:
        return np.arange(n_genes)
    if isinstance(genes, (int, np.integer)) and not isinstance(genes, bool):
        if genes < 1:
            raise ValueError(f"genes as a count must be >= 1, got {genes}")
        return np.sort(top_variable_genes(X.cpu().numpy(), int(genes)))
    g = np.asarray(genes)
    if g.dtype == bool:
        if g.shape != (n_genes,):
            raise ValueError(f"a boolean genes mask must have length {n_genes}, got shape {g.shape}")
        g = np.flatnonzero(g)
    if g.ndim != 1 or g.size == 0 or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(
            "genes must be None, a count, a boolean mask or a non-empty 1-D array of column indices"
        )
    if g.min() < 0 or g.max() >= n_genes:
        raise ValueError(f"gene indices must lie in [0, {n_genes}), got range [{g.min()}, {g.max()}]")
    return g


def _check_val_fraction(val_fraction) -> float:
    val_fraction = _check_float(val_fraction, "val_fraction", minimum=0.0)
    if val_fraction >= 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    return val_fraction


def _split(n: int, val_fraction: float, gen: torch.Generator):
    val_fraction = _check_val_fraction(val_fraction)
    perm = torch.randperm(n, generator=gen)
    n_val = round(val_fraction * n)
    if n - n_val < 1:
        raise ValueError("val_fraction leaves no training cells")
    return perm[n_val:], perm[:n_val]


def split_cells(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation cells :func:`train_denoiser` uses (a fixed split for every epoch).

    ``perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))``; the first
    ``n_val = round(val_fraction * n)`` cells of ``perm`` are held out for validation, the rest train.

    Parameters
    ----------
    n
        Number of cells (>= 1).
    val_fraction
        In [0, 1).
    seed
        Seed of the permutation.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Training and validation cell indices (int64, CPU), in the order of ``perm``.
    """
    n = _check_int(n, "n", minimum=1)
    return _split(n, val_fraction, torch.Generator().manual_seed(_check_seed(seed)))


def _check_training(epochs, batch_size, lr, weight_decay, val_fraction, seed, hidden) -> int:
    _check_int(epochs, "epochs", minimum=1)
    _check_int(batch_size, "batch_size", minimum=1)
    _check_int(hidden, "hidden", minimum=1)
    _check_float(lr, "lr", minimum=0.0, strict=True)
    _check_float(weight_decay, "weight_decay", minimum=0.0)
    _check_val_fraction(val_fraction)
    return _check_seed(seed)


def _epoch(model, opt, inputs, targets, idx_tr, idx_va, batch_size, gen, extra=None):
    loss_fn = nn.MSELoss()
    model.train()
    order = idx_tr[torch.randperm(idx_tr.numel(), generator=gen)].to(inputs.device)
    total = 0.0
    for start in range(0, order.numel(), batch_size):
        b = order[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        pred = model(inputs[b]) if extra is None else model(inputs[b], extra[b])
        loss = loss_fn(pred, targets[b])
        loss.backward()
        opt.step()
        total += loss.item() * b.numel()
    train = total / order.numel()
    val = float("nan")
    if idx_va.numel():
        model.eval()
        with torch.no_grad():
            v = idx_va.to(inputs.device)
            pred = model(inputs[v]) if extra is None else model(inputs[v], extra[v])
            val = loss_fn(pred, targets[v]).item()
    return train, val


def _training_data(X, genes, device, heat=None):
    """(device, gene columns, clean matrix restricted to them on the device) for the two trainers."""
    dev = get_device(device)
    Xt = _as_tensor(_unwrap_anndata(X))
    if heat is not None and Xt.shape[0] != heat.n:
        raise ValueError(f"X has {Xt.shape[0]} cells but the heat operator has {heat.n}")
    cols = _resolve_genes(Xt, genes)
    return dev, cols, Xt[:, torch.from_numpy(cols)].contiguous().to(dev)


def _fit(
    make_model, draw, X0, dev, *, epochs, batch_size, lr, weight_decay, val_fraction, seed, progress, desc
):
    """AdamW on the MSE to ``X0``; ``draw(gen)`` gives each epoch's (inputs, extra model argument or None)."""
    with seeded(seed, dev):  # local randomness: the notebook's global state is left as it was
        gen = torch.Generator().manual_seed(seed)
        idx_tr, idx_va = _split(X0.shape[0], val_fraction, gen)
        model = make_model().to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        rows = []
        bar = _bar(range(1, epochs + 1), progress=progress, desc=desc, leave=False)
        for epoch in bar:
            inputs, extra = draw(gen)
            tr, va = _epoch(model, opt, inputs, X0, idx_tr, idx_va, batch_size, gen, extra=extra)
            rows.append({"epoch": epoch, "train_loss": tr, "val_loss": va})
            bar.set_postfix(train=f"{tr:.4f}", val=f"{va:.4f}")
    model.eval()
    return model, pd.DataFrame(rows)


def train_denoiser(
    X,
    noise: NoiseProcess,
    *,
    genes=None,
    hidden: int = 512,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.1,
    device: str | torch.device | None = "auto",
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[Denoiser, pd.DataFrame]:
    """Train an MLP to undo a corruption: minimise ``‖f(noise(X)) − X‖²`` (MSE) with AdamW.

    The corruption is re-drawn for every cell at the start of each epoch (over all cells, so a
    graph operator sees the whole graph); the cells :func:`split_cells` picks (``val_fraction``, ``seed``) are
    held out for validation.

    Parameters
    ----------
    X
        Clean (cells x genes) matrix: numpy, scipy.sparse, torch or AnnData (``.X``).
    noise
        A :class:`NoiseProcess` (:class:`GaussianNoise`, :class:`ManifoldHeat`), or any object with a
        ``sample(X)`` method returning a corrupted copy of ``X``; it acts on the selected gene columns (both
        library processes act column-wise, so this equals noising all genes).
    genes
        None (all), an int ``k`` (the ``k`` most variable columns), a boolean mask or column indices.
    hidden, epochs, batch_size, lr, weight_decay
        Model width and optimiser settings.
    val_fraction
        Fraction of the cells held out for validation, in [0, 1).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed
        Seeds weights, split, shuffling and Gaussian draws (under :func:`sccourse._device.seeded`, leaving the
        global generators alone): same seed, same model on CPU.
    progress
        Progress bar over epochs (``None``: on a terminal or in Jupyter only).

    Returns
    -------
    (Denoiser, pandas.DataFrame)
        The trained model (eval mode, ``model.genes`` = columns used) and the history with columns
        ``epoch``, ``train_loss``, ``val_loss`` (MSE).
    """
    if (
        not callable(getattr(noise, "sample", None))
        or getattr(type(noise), "sample", None) is NoiseProcess.sample
    ):
        raise TypeError(
            "noise must be a NoiseProcess (GaussianNoise, ManifoldHeat) or another object with a "
            f"sample(X) method (NoiseProcess itself is only the interface), got {type(noise).__name__}"
        )
    seed = _check_training(epochs, batch_size, lr, weight_decay, val_fraction, seed, hidden)
    heat = noise if isinstance(noise, ManifoldHeat) else None
    dev, cols, X0 = _training_data(X, genes, device, heat)

    def draw(gen):
        # the library's processes draw from the run's generator; any other object is called as noise.sample(X)
        return (
            noise.sample(X0, generator=gen) if isinstance(noise, NoiseProcess) else noise.sample(X0)
        ), None

    label = getattr(noise, "name", type(noise).__name__)
    return _fit(
        lambda: Denoiser(X0.shape[1], hidden, genes=cols),
        draw,
        X0,
        dev,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        val_fraction=val_fraction,
        seed=seed,
        progress=progress,
        desc=f"denoiser [{label}]",
    )


def denoise(
    model: nn.Module, X, *, level: int | None = None, device: str | torch.device | None = None
) -> np.ndarray:
    """Apply a trained denoiser ``x̂ = f(x̃)`` (or ``f(x̃, level)``) to noisy inputs.

    Parameters
    ----------
    model
        A :class:`Denoiser`, a :class:`LevelDenoiser` (with ``level``) or any MLP.
    X
        Noisy (cells x genes) matrix, already restricted to ``model.genes``.
    level
        Noise level for a :class:`LevelDenoiser`.
    device
        Where to run (default: the model's device).

    Returns
    -------
    numpy.ndarray
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dev = next(model.parameters()).device if device is None else get_device(device)
    Xt = _as_tensor(X, device=dev)
    d = getattr(model, "d", None)
    if d is None:  # any MLP: the input width of its first linear layer
        d = next((mod.in_features for mod in model.modules() if isinstance(mod, nn.Linear)), Xt.shape[1])
    if Xt.shape[1] != d:
        raise ValueError(f"X has {Xt.shape[1]} columns but the model expects {d} (its genes)")
    if isinstance(model, LevelDenoiser):
        if level is None:
            raise ValueError(f"level is required for a LevelDenoiser (an integer in [0, {model.max_level}])")
        level = _check_int(level, "level", minimum=0, maximum=model.max_level)
    elif isinstance(model, Denoiser) and level is not None:
        raise ValueError(
            f"level is only for a LevelDenoiser; this Denoiser takes no level, got level={level!r}"
        )
    model.eval()
    with torch.no_grad():
        out = model(Xt) if level is None else model(Xt, level)
    return out.cpu().numpy()


def train_conditional_denoiser(
    X,
    heat: ManifoldHeat,
    *,
    max_steps: int = 10,
    genes=None,
    hidden: int = 512,
    emb_dim: int = 32,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.1,
    device: str | torch.device | None = "auto",
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[LevelDenoiser, pd.DataFrame]:
    """Train ``f(x̃, k) ≈ x₀`` where ``x̃ = (S^k X)_i`` and the level ``k ~ U{1..max_steps}`` is drawn per cell
    and per epoch (a heat "diffusion model": deterministic blurring instead of Gaussian noise).

    Parameters
    ----------
    X
        Clean (cells x genes) matrix: numpy, scipy.sparse, torch or AnnData (``.X``).
    heat
        The :class:`ManifoldHeat` of the cells' graph.
    max_steps
        Largest heat level ``K``.
    genes, hidden, epochs, batch_size, lr, weight_decay, val_fraction, device, seed
        As in :func:`train_denoiser`; ``emb_dim`` is the width of the level embedding.
    emb_dim
        Width of the sinusoidal level embedding.
    progress
        Progress bar over epochs (``None``: on a terminal or in Jupyter only).

    Returns
    -------
    (LevelDenoiser, pandas.DataFrame)
        Model and history (``epoch``, ``train_loss``, ``val_loss``).
    """
    if not isinstance(heat, ManifoldHeat):
        raise TypeError(f"heat must be a ManifoldHeat, got {type(heat).__name__}")
    K = _check_int(max_steps, "max_steps", minimum=1)
    seed = _check_training(epochs, batch_size, lr, weight_decay, val_fraction, seed, hidden)
    if _check_int(emb_dim, "emb_dim", minimum=2) % 2:
        raise ValueError(f"emb_dim must be even (sine and cosine pairs), got {emb_dim}")
    dev, cols, X0 = _training_data(X, genes, device, heat)
    H = heat.powers(X0, K)  # (K+1, n, d)
    cells = torch.arange(X0.shape[0], device=dev)

    def draw(gen):
        levels = torch.randint(1, K + 1, (X0.shape[0],), generator=gen).to(dev)
        return H[levels, cells], levels

    return _fit(
        lambda: LevelDenoiser(X0.shape[1], K, hidden, emb_dim, genes=cols),
        draw,
        X0,
        dev,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        val_fraction=val_fraction,
        seed=seed,
        progress=progress,
        desc="level-conditioned denoiser",
    )


def iterative_denoise(model: LevelDenoiser, X_noisy, heat: ManifoldHeat, *, steps: int) -> np.ndarray:
    """Denoise ``X_noisy = S^K X₀`` from level ``K = steps`` down to 0 (cold-diffusion sampling).

    At level ``s``: ``x̂₀ = f(x_s, s)``, then ``x_{s−1} = x_s − S^s x̂₀ + S^{s−1} x̂₀``; the last step returns
    ``x̂₀``. All cells are denoised together (the heat operator couples them).

    Parameters
    ----------
    model
        A trained :class:`LevelDenoiser`.
    X_noisy
        (cells x model.d) blurred matrix.
    heat
        The :class:`ManifoldHeat` the model was trained with.
    steps
        Starting level ``K`` (>= 1).

    Returns
    -------
    numpy.ndarray
    """
    if not isinstance(model, LevelDenoiser):
        raise TypeError(
            f"model must be a LevelDenoiser (train_conditional_denoiser), got {type(model).__name__}"
        )
    if not isinstance(heat, ManifoldHeat):
        raise TypeError(f"heat must be a ManifoldHeat, got {type(heat).__name__}")
    K = _check_int(steps, "steps", minimum=1, maximum=model.max_level)
    dev = next(model.parameters()).device
    x = _as_tensor(X_noisy, "X_noisy", device=dev)
    if x.shape[0] != heat.n or x.shape[1] != model.d:
        raise ValueError(f"X_noisy must be ({heat.n} cells x {model.d} genes), got {tuple(x.shape)}")
    model.eval()
    with torch.no_grad():
        for s in range(K, 0, -1):
            x0 = model(x, s)
            if s == 1:
                x = x0
                break
            blur_prev = heat.sample(x0, steps=s - 1)
            x = x - heat.sample(blur_prev, steps=1) + blur_prev
    return x.cpu().numpy()
