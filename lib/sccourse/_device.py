"""Device resolution and seeding: the one place every kernel goes through."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

_VALID = ("auto", "cpu", "cuda")


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device request to a :class:`torch.device`.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        a :class:`torch.device`, or ``None`` (same as ``"auto"``).

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For an unknown device string.
    RuntimeError
        When CUDA is asked for but not available.
    """
    if device is None:
        device = "auto"
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if name != "cpu" and not name.startswith("cuda"):
            raise ValueError(f"device must be one of {_VALID} (or 'cuda:N'), got {device!r}")
        try:
            dev = torch.device(name)
        except RuntimeError as err:
            raise ValueError(f"device must be one of {_VALID} (or 'cuda:N'), got {device!r}") from err
    else:
        raise ValueError(f"device must be a string or torch.device, got {type(device).__name__}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use device='auto' or device='cpu'"
        )
    return dev


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch (CPU and all CUDA devices).

    Parameters
    ----------
    seed
        Non-negative integer.

    Returns
    -------
    numpy.random.Generator
        A fresh generator seeded with ``seed``, for callers that prefer local randomness.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (set_seed is for notebooks: it seeds the globals on purpose)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return np.random.default_rng(seed)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None):
    """Local torch randomness for library code: the global generators (CPU, and ``device`` when it is CUDA) are
    forked, seeded with ``seed`` inside the block and restored after it, so a library call never changes the
    random state a notebook relies on (``set_seed`` is for notebooks).
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        # seed only the generators that fork_rng restores (torch.manual_seed would also reseed every other GPU)
        torch.default_generator.manual_seed(int(seed))
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(int(seed))
        yield


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A local :class:`torch.Generator` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g
