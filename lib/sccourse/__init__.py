"""sccourse: the shared, tested library behind the single-cell unsupervised-learning course.

Submodules load on first use, as in scanpy: ``import sccourse`` then ``sccourse.nmf.nmf(...)`` works without
importing every topic (and torch-heavy kernels) up front.
"""

from __future__ import annotations

import importlib

from ._device import get_device, set_seed

__version__ = "0.1.0"

_SUBMODULES = (
    "datasets",
    "qc",
    "pp",
    "metrics",
    "plotting",
    "manifold",
    "nmf",
    "etm",
    "ee",
    "simulate",
    "grading",
)

__all__ = ["get_device", "set_seed", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'sccourse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
