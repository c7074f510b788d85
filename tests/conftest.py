"""Shared pytest configuration: GPU marker, real-data mirror, matplotlib backend."""

from __future__ import annotations

import os
from pathlib import Path

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
