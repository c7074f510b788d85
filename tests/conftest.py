"""Shared pytest configuration: GPU marker, real-data mirror, matplotlib backend, and the shared data generators
(``make_blobs``/``blobs`` for embeddings and clustering, ``make_nb_regression`` for the NB simulators)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")

# CI sets SCCOURSE_DATA_MIRROR=../shared/data; a developer checkout beside shared/ gets the same default.
_default_mirror = ROOT.parent / "shared" / "data"
if not os.environ.get("SCCOURSE_DATA_MIRROR") and _default_mirror.is_dir():
    os.environ["SCCOURSE_DATA_MIRROR"] = str(_default_mirror)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The real-data mirror folder; tests that need real data skip (with the reason) when it is absent."""
    value = os.environ.get("SCCOURSE_DATA_MIRROR")
    if not value or not Path(value).is_dir():
        pytest.skip("real data mirror not found: set SCCOURSE_DATA_MIRROR to the shared/data folder")
    return Path(value)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


# ----------------------------------------------------------------------------- shared data generators
def _blobs(n_per: int = 80, n_types: int = 4, dim: int = 10, sep: float = 8.0, seed: int = 0):
    """Gaussian clusters of ``n_per`` points (unit variance) around centres drawn with scale ``sep``; (Y, labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_types, dim)) * sep
    Y = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres])
    return Y, np.repeat(np.arange(n_types), n_per)


def _nb_regression(n: int, g: int, *, seed: int, zero_inflation: bool = False):
    """Counts from a known NB (or ZINB) regression: log mu = X1 B, log r = X2 D (logit pi = X3 Z); (AnnData, truth).

    Covariates ``m0, m1`` (mean), ``d0, d1`` (dispersion) and ``z0, z1`` (zero inflation) are in ``obs``; ``truth``
    holds the coefficient matrices (covariates x genes) under the simulators' part names.
    """
    import anndata as ad
    import pandas as pd
    import scipy.special as sps

    rng = np.random.default_rng(seed)
    X1, X2 = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    B, D = rng.normal(size=(2, g)), rng.normal(size=(2, g))
    mu, r = np.exp(X1 @ B), np.exp(X2 @ D)
    Y = rng.negative_binomial(r, r / (r + mu))
    cols = {"m0": X1[:, 0], "m1": X1[:, 1], "d0": X2[:, 0], "d1": X2[:, 1]}
    truth = {"mean": B, "dispersion": D}
    if zero_inflation:
        X3, Z = rng.normal(size=(n, 2)), rng.normal(size=(2, g))
        pi = sps.expit(X3 @ Z)
        Y = Y * (rng.random((n, g)) >= pi)
        cols.update(z0=X3[:, 0], z1=X3[:, 1])
        truth["zero_inflation"] = Z
    obs = pd.DataFrame(cols, index=[f"cell{i}" for i in range(n)])
    adata = ad.AnnData(X=Y.astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    return adata, truth


@pytest.fixture(scope="session")
def make_blobs():
    """The blobs generator, for tests that need other sizes than ``blobs``."""
    return _blobs


@pytest.fixture(scope="session")
def blobs():
    """Four well-separated Gaussian clusters, 320 points x 10 dimensions: (Y, labels)."""
    return _blobs()


@pytest.fixture(scope="session")
def make_nb_regression():
    """The NB / ZINB regression generator with known coefficients."""
    return _nb_regression
