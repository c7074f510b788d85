"""Shared pytest configuration: GPU marker, real-data mirror, matplotlib backend, and the shared data generators
(``make_blobs``/``blobs`` for embeddings and clustering, ``make_nb_regression`` for the NB simulators)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks._synthetic import nb_regression as _nb_regression

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


def _assert_clear_error(call, errors, pattern: str) -> None:
    """``call()`` raises one of ``errors`` and the message contains ``pattern`` (case-insensitive)."""
    with pytest.raises(errors) as err:
        call()
    assert pattern.lower() in str(err.value).lower(), (
        f"unhelpful message: {type(err.value).__name__}: {err.value}"
    )


@pytest.fixture(scope="session")
def assert_clear_error():
    """The probes' check: the right exception type and a message naming the argument (tests/test_probes*.py)."""
    return _assert_clear_error


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
