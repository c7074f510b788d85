"""Run a student's function with chosen library functions blocked.

A profile hook (``sys.setprofile``) sees every Python and C call made while the block is active. A call into a
blocked function raises :class:`ShortcutError` at once and is remembered, so an answer that catches the error and
tries again still fails when the block ends. Functions named in ``allow`` run freely, including whatever they call
internally. The hook identifies functions by their code objects, so aliases (``lap = manifold.laplacian``) are
blocked as well.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from collections.abc import Iterable
from contextlib import contextmanager

# always allowed: device and seed helpers are plumbing, not the graded work
DEFAULT_ALLOW = ("sccourse._device", "sccourse.grading")


class ShortcutError(AssertionError):
    """A graded answer called a function that does the job the question asks the student to write."""


class TamperingError(AssertionError):
    """Grading machinery or a reference library was altered by notebook code."""


def _resolve(target: str | object):
    """Object for a dotted name (``"scipy.stats.nbinom.logpmf"``) or the object itself."""
    if not isinstance(target, str):
        return target
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError as err:
            raise ValueError(f"cannot block {target!r}: {err}") from None
        return obj
    raise ValueError(f"cannot block {target!r}: no such module")


def _functions_of_class(cls) -> Iterable[object]:
    """The functions a class defines itself (not those it carries from elsewhere, such as an Enum's
    ``enum.Enum.__new__``, which would block every enum in the process).
    """
    home = getattr(cls, "__module__", None)
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            yield from (
                f
                for f in (value.fget, value.fset, value.fdel)
                if f is not None and getattr(f, "__module__", home) == home
            )
        elif inspect.isfunction(value) and getattr(value, "__module__", home) == home:
            yield value


def _module_functions(prefix: str) -> Iterable[object]:
    for name, mod in list(sys.modules.items()):
        if not isinstance(mod, types.ModuleType) or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for value in list(vars(mod).values()):
            owner = getattr(value, "__module__", None) or ""
            if not (owner == prefix or owner.startswith(prefix + ".")):
                continue
            if inspect.isclass(value):
                yield from _functions_of_class(value)
            elif inspect.isfunction(value) or isinstance(value, types.BuiltinFunctionType):
                yield value


def _targets(obj) -> tuple[set, set]:
    """(code objects, builtin callables) that make up ``obj``."""
    codes, builtins = set(), set()

    def add(f):
        f = inspect.unwrap(f) if inspect.isfunction(f) else f
        if inspect.ismethod(f):
            f = f.__func__
        code = getattr(f, "__code__", None)
        if code is not None:
            codes.add(code)
        elif callable(f):
            try:
                builtins.add(f)
            except (
                TypeError
            ):  # an unhashable callable (e.g. a Cython instancemethod): the profile hook cannot see it
                pass

    if isinstance(obj, types.ModuleType):
        for f in _module_functions(obj.__name__):
            add(f)
        for name, value in vars(
            obj
        ).items():  # public names re-exported from elsewhere (not private C helpers
            # such as torch._C._has_torch_function, which every tensor operation calls)
            if name.startswith("_"):
                continue
            if inspect.isfunction(value) or isinstance(value, types.BuiltinFunctionType):
                add(value)
    elif inspect.isclass(obj):
        for f in _functions_of_class(obj):
            add(f)
    elif inspect.isfunction(obj) or inspect.ismethod(obj) or isinstance(obj, types.BuiltinFunctionType):
        add(obj)
    elif callable(obj) or hasattr(
        obj, "__dict__"
    ):  # an instance such as scipy.stats.nbinom: its class's methods
        for f in _functions_of_class(type(obj)):
            add(f)
    else:
        raise ValueError(f"cannot block {obj!r}: not a module, class or function")
    return codes, builtins


def _label(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))


class _Block:
    def __init__(self, targets, allow, task):
        self.blocked: dict[object, str] = {}
        self.blocked_builtins: dict[object, str] = {}
        for target in targets:
            codes, builtins = _targets(_resolve(target))
            for c in codes:
                self.blocked.setdefault(c, _label(target))
            for b in builtins:
                self.blocked_builtins.setdefault(b, _label(target))
        self.allowed: set = set()
        self.allowed_builtins: set = set()
        for target in (*DEFAULT_ALLOW, *allow):
            codes, builtins = _targets(_resolve(target))
            self.allowed |= codes
            self.allowed_builtins |= builtins
        for c in self.allowed:
            self.blocked.pop(c, None)
        for b in self.allowed_builtins:
            self.blocked_builtins.pop(b, None)
        self.task = task
        self.hits: list[tuple[str, str]] = []
        self._suspended = None  # frame of an allowed function being run

    def message(self, where: str, name: str) -> str:
        task = f" `{self.task}`" if self.task else " this answer"
        return (
            f"{where} (from {name}) does the work that{task} asks you to write yourself; graded answers may not "
            f"call it. Write the computation in your own code (see the question's rules)."
        )

    def hook(self, frame, event, arg):
        if self._suspended is not None:
            if event == "return" and frame is self._suspended:
                self._suspended = None
            return
        if event == "call":
            code = frame.f_code
            if code in self.allowed:
                self._suspended = frame
                return
            name = self.blocked.get(code)
            if name is not None:
                where = f"{frame.f_globals.get('__name__', '?')}.{code.co_qualname}"
                self.hits.append((where, name))
                raise ShortcutError(self.message(where, name))
        elif event == "c_call":
            try:
                name = self.blocked_builtins.get(arg)
            except TypeError:  # unhashable callable
                return
            if name is not None:
                where = getattr(arg, "__qualname__", repr(arg))
                self.hits.append((where, name))
                raise ShortcutError(self.message(where, name))


@contextmanager
def forbid(*targets, allow: Iterable = (), task: str | None = None):
    """Block calls to ``targets`` inside the ``with`` body.

    Parameters
    ----------
    *targets
        Dotted names or objects: a module or package (every function and method defined in it or below it), a
        class (its methods), a function, or an instance (its class's methods, e.g. ``"scipy.stats.nbinom"``).
    allow
        Dotted names or objects that stay callable (with everything they call), e.g. ``"sccourse.metrics"``.
    task
        Name of the graded function, for the message.

    Raises
    ------
    ShortcutError
        On a blocked call, and at the end of the block if a blocked call was made and caught.
    TamperingError
        If code inside the block removed the profile hook.
    """
    block = _Block(targets, allow, task)
    previous = sys.getprofile()
    hook = block.hook  # one bound-method object, compared by identity below
    sys.setprofile(hook)
    error = None
    try:
        yield block
    except ShortcutError as err:
        error = err
    finally:
        current = sys.getprofile()
        sys.setprofile(previous)
    if block.hits:
        if error is not None:
            raise error
        where, name = block.hits[0]
        raise ShortcutError(
            block.message(where, name)
            + " (the error was caught inside the answer, but the call was recorded)"
        )
    if error is not None:  # pragma: no cover  (a ShortcutError not from this block)
        raise error
    if current is not hook:
        raise TamperingError(
            "the grading hook was removed while the answer ran (sys.setprofile); "
            "graded answers must not change the interpreter's profiling or tracing"
        )


def call(func, *args, forbid_: Iterable = (), allow: Iterable = (), task: str | None = None, **kwargs):
    """``func(*args, **kwargs)`` with ``forbid_`` blocked (see :func:`forbid`)."""
    with forbid(*forbid_, allow=allow, task=task or getattr(func, "__name__", None)):
        return func(*args, **kwargs)
