"""Helpers for the course notebooks' graded cells, and the instructor's grading machinery.

In a notebook (imported in its first, read-only code cell)::

    from sccourse import grading
    quick = grading.mode(quick)                       # at grading time the instructor's mode wins

    with grading.forbid("sccourse.qc", "scanpy.pp", task="qc_table"):
        table = qc_table(X, var_names)                # a call into the blocked libraries fails the test

    grading.assert_allclose(table["total_counts"], expected)   # immune to a replaced numpy.testing

    mask = grading.use_answer("pick_t_cells", lambda: pick_t_cells(adata), lambda: reference_mask)

The rules students see: a graded answer that asks for an implementation may not call the library function (or a
third-party one) that does the same job; each test cell says which functions are off limits, and its visible
part already runs the answer with them blocked, so a shortcut fails when the student runs the cell, not only at
grading time.

The instructor side (nbgrader preprocessors, the sandbox, the static scan) lives in private modules:
:mod:`sccourse.grading._nbgrader`, :mod:`sccourse.grading._sandbox`, :mod:`sccourse.grading._scan`.
"""

from __future__ import annotations

import os

import numpy as _np
import numpy.testing as _npt

from . import _guard
from ._blocker import ShortcutError, TamperingError, call, forbid

__all__ = [
    "ShortcutError",
    "TamperingError",
    "assert_allclose",
    "assert_array_equal",
    "call",
    "forbid",
    "in_grading",
    "mode",
    "use_answer",
    "verify_untampered",
]

# captured when this module is first imported (before any student code in a graded kernel)
_assert_allclose = _npt.assert_allclose
_assert_array_equal = _npt.assert_array_equal
_asarray = _np.asarray
_GRADING = os.environ.get("SCCOURSE_GRADING") == "1"
_MODE = os.environ.get("SCCOURSE_GRADING_MODE", "").strip().lower()
_guard.snapshot(import_missing=False)
_APPLIED: list[
    bool
] = []  # the mode grading.mode() applied at grading time (the grading kernel keeps `quick` at it)


def in_grading() -> bool:
    """True inside a grading kernel (started by the course's nbgrader set-up)."""
    return _GRADING


def mode(quick: bool) -> bool:
    """The ``quick`` flag the notebook runs with.

    At grading time the instructor's choice (``SCCOURSE_GRADING_MODE``, set by ``nbgrader_config.py``) wins over
    the notebook's parameters cell. Otherwise ``SCCOURSE_QUICK=1`` in the environment (how a student starts
    JupyterLab for the quick version) turns quick mode on; else ``quick`` is returned unchanged.
    """
    if _GRADING and _MODE in ("quick", "full"):
        effective = _MODE == "quick"
        print(
            f"grading mode: {_MODE} (chosen by the instructor; the notebook's quick = {quick!r} is not used)"
        )
        _APPLIED[:] = [effective]
        return effective
    if os.environ.get("SCCOURSE_QUICK", "").strip().lower() in ("1", "true", "yes"):
        return True
    return bool(quick)


def verify_untampered() -> None:
    """Raise :class:`TamperingError` if a function of numpy, scipy, pandas, torch, scanpy, sccourse, ... (or a
    builtin) was replaced since this module was imported.
    """
    changed = _guard.changes()
    if changed:
        shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
        raise TamperingError(
            f"library functions were replaced by notebook code: {shown}; grading checks refuse to "
            "run on altered libraries"
        )


def assert_allclose(actual, desired, *, rtol: float = 1e-7, atol: float = 0.0, err_msg: str = "") -> None:
    """``numpy.testing.assert_allclose`` as it was when this module was imported, after a tamper check."""
    verify_untampered()
    _assert_allclose(_asarray(actual), _asarray(desired), rtol=rtol, atol=atol, err_msg=err_msg)


def assert_array_equal(actual, desired, *, err_msg: str = "") -> None:
    """``numpy.testing.assert_array_equal`` as it was when this module was imported, after a tamper check."""
    verify_untampered()
    _assert_array_equal(_asarray(actual), _asarray(desired), err_msg=err_msg)


def use_answer(name: str, answer, reference, *, check=None):
    """The student's result when it can be used, else the library's, saying so.

    Parameters
    ----------
    name
        The graded function's name, for the message.
    answer, reference
        Callables without arguments: the student's computation and the library's.
    check
        Optional callable that raises when the student's result is not usable (wrong shape, far from the reference).

    Returns
    -------
    The student's result, or the reference result when ``answer`` raised or its result failed ``check``. The rest
    of the notebook then runs on correct inputs, so one wrong answer costs that question's points only.
    """
    try:
        value = answer()
        if check is not None:
            check(value)
    except Exception as err:  # noqa: BLE001  (any failure of the student's code means: use the reference)
        first = (str(err).strip().splitlines() or [""])[0][:160]
        print(
            f"note: your `{name}` could not be used here ({type(err).__name__}{': ' + first if first else ''}); "
            "the rest of the notebook continues with the library's result."
        )
        return reference()
    return value
