"""Tamper detection for graded notebooks: a snapshot of the public functions of the libraries hidden tests rely on.

``snapshot()`` records, for every watched module, the module object (as found in ``sys.modules``) and its public
callables, classes and submodules (and the methods of the classes ``sccourse`` defines). ``changes()`` lists what was
replaced or removed since; ``restore()`` puts the originals back. Attributes that appear later (lazily loaded
submodules) are not changes.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types

# modules whose public functions hidden tests use as references or comparisons
WATCHED = (
    "builtins",
    "numpy",
    "numpy.testing",
    "numpy.linalg",
    "numpy.random",
    "scipy",
    "scipy.sparse",
    "scipy.sparse.linalg",
    "scipy.sparse.csgraph",
    "scipy.special",
    "scipy.stats",
    "scipy.linalg",
    "pandas",
    "pandas.testing",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.sparse",
    "torch.linalg",
    "torch.autograd",
    "sklearn.metrics",
    "sklearn.neighbors",
    "sklearn.decomposition",
    "sklearn.manifold",
    "anndata",
    "scanpy",
    "scanpy.pp",
    "scanpy.tl",
    "sccourse",
)
# sccourse submodules are watched as they are loaded (they are what a shortcut or a tamper would target)
_PREFIX = "sccourse"

_KERNEL_SWAPPED = {"input", "exit", "quit", "get_ipython", "display", "breakpoint"}
_MISSING = object()
_SNAPSHOT: dict[str, tuple[types.ModuleType, dict[str, object], dict[tuple[str, str], object]]] = {}


def _public(mod: types.ModuleType) -> tuple[dict[str, object], dict[tuple[str, str], object]]:
    attrs, methods = {}, {}
    is_builtins = mod.__name__ == "builtins"
    for name, value in list(vars(mod).items()):
        if is_builtins:
            # only the interpreter's own functions and types: IPython and ipykernel swap `exit`, `quit` and
            # `input` in and out around every cell
            if name not in _KERNEL_SWAPPED and isinstance(value, (types.BuiltinFunctionType, type)):
                attrs[name] = value
            continue
        if name.startswith("_"):
            continue
        if callable(value) or isinstance(value, types.ModuleType):
            attrs[name] = value
        if inspect.isclass(value) and getattr(value, "__module__", "").startswith(_PREFIX):
            for mname, mvalue in vars(value).items():
                if callable(mvalue) or isinstance(mvalue, (staticmethod, classmethod, property)):
                    methods[(name, mname)] = mvalue
    return attrs, methods


def _watched_names() -> list[str]:
    names = list(WATCHED)
    names += sorted(n for n in sys.modules if n.startswith(_PREFIX + ".") and n not in names)
    return names


# modules whose import rewraps functions of the watched ones (torch._dynamo wraps torch.manual_seed when the first
# optimiser step runs): imported before the snapshot, so that their rewrapping is not taken for tampering
_REWRAPPERS = ("torch._dynamo",)


def snapshot(*, import_missing: bool = True) -> None:
    """Record the watched modules (importing those that are installed but not loaded yet when asked)."""
    for name in _REWRAPPERS:
        if name.split(".")[0] in sys.modules or import_missing:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  (not installed: nothing will rewrap)
                pass
    for name in _watched_names():
        if name in _SNAPSHOT:
            continue
        mod = sys.modules.get(name)
        if mod is None and import_missing:
            try:
                mod = importlib.import_module(name)
            except Exception:  # noqa: BLE001  (a library that is not installed is not watched)
                continue
        if isinstance(mod, types.ModuleType):
            _SNAPSHOT[name] = (mod, *_public(mod))


def changes() -> list[str]:
    """Dotted names of the watched attributes that were replaced or removed since the snapshot."""
    snapshot(import_missing=False)  # sccourse modules loaded since
    found = []
    for name, (mod, attrs, methods) in _SNAPSHOT.items():
        if sys.modules.get(name, mod) is not mod:
            found.append(f"sys.modules[{name!r}]")
        namespace = vars(mod)
        for attr, value in attrs.items():
            if namespace.get(attr, _MISSING) is not value:
                found.append(f"{name}.{attr}")
        for (cls, meth), value in methods.items():
            owner = namespace.get(cls)
            if owner is None or vars(owner).get(meth, _MISSING) is not value:
                found.append(f"{name}.{cls}.{meth}")
    return found


def restore() -> list[str]:
    """Put every replaced watched attribute back; returns what was restored."""
    restored = changes()
    for name, (mod, attrs, methods) in _SNAPSHOT.items():
        if sys.modules.get(name, mod) is not mod:
            sys.modules[name] = mod
        namespace = vars(mod)
        for attr, value in attrs.items():
            if namespace.get(attr, _MISSING) is not value:
                setattr(mod, attr, value)
        for (cls, meth), value in methods.items():
            owner = namespace.get(cls)
            if owner is not None and vars(owner).get(meth, _MISSING) is not value:
                setattr(owner, meth, value)
    return restored
