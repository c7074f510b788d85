"""Progress bars that speak only where someone is watching.

``progress=None`` (the library's default) shows a bar in a terminal or in a Jupyter front end and stays quiet when
output goes to a log or a pipe (CI, ``nbgrader autograde``, batch jobs); ``True`` and ``False`` force it.
"""

from __future__ import annotations

import sys


def _in_kernel() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:  # pragma: no cover - IPython without a shell
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def enabled(progress: bool | None) -> bool:
    """Resolve ``progress``: ``None`` means on a terminal or in a Jupyter kernel only."""
    if progress is None:
        stream = sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)()) or _in_kernel()
    if not isinstance(progress, bool | int):
        raise TypeError(f"progress must be True, False or None (show on a terminal only), got {progress!r}")
    return bool(progress)


def bar(iterable=None, *, progress: bool | None, **options):
    """A ``tqdm.auto`` bar over ``iterable`` (or ``total=``), disabled unless :func:`enabled` says otherwise."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled(progress), **options)
