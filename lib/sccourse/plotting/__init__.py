"""Figures used across the course.

Every public name listed in ``__all__`` of a ``sccourse/plotting/_*.py`` module is re-exported here,
so each topic keeps its figures in its own file (``_curves.py``, ``_qc.py``, ``_nmf.py``, ...).
"""

from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("_"):
        _mod = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in getattr(_mod, "__all__", []):
            globals()[_name] = getattr(_mod, _name)
            __all__.append(_name)

del importlib, pkgutil
