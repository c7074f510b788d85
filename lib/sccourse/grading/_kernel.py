"""IPython extension loaded into every grading kernel before the first cell runs.

- snapshots the libraries hidden tests rely on (see :mod:`sccourse.grading._guard`) before any student code runs;
- after every cell, undoes any replacement of those libraries' functions and reports it on the cell's output, so
  the next cells are graded with the real functions and the submission is flagged for review;
- removes hidden-test source from the kernel's input history (``In``, ``_ih``, ``_i<n>``, the history database and
  the line cache used for tracebacks), so later cells cannot read it back.
"""

from __future__ import annotations

import linecache

from . import _guard

MARK_BEGIN = "### BEGIN HIDDEN TESTS"
MARK_END = "### END HIDDEN TESTS"
FLAG_PREFIX = "⚑ sccourse grading:"


def _scrub(text: str) -> str:
    if MARK_BEGIN not in text:
        return text
    out, hidden = [], False
    for line in text.splitlines(keepends=True):
        if MARK_BEGIN in line:
            hidden = True
            out.append("# (hidden tests)\n")
        elif MARK_END in line:
            hidden = False
        elif not hidden:
            out.append(line)
    return "".join(out)


def _scrub_history(ip) -> None:
    ns = ip.user_ns
    hm = ip.history_manager
    for seq in (
        ns.get("In"),
        ns.get("_ih"),
        getattr(hm, "input_hist_raw", None),
        getattr(hm, "input_hist_parsed", None),
    ):
        if isinstance(seq, list):
            for i, text in enumerate(seq):
                if isinstance(text, str) and MARK_BEGIN in text:
                    seq[i] = _scrub(text)
    for key in [k for k in ns if k.startswith("_i")]:
        if isinstance(ns[key], str) and MARK_BEGIN in ns[key]:
            ns[key] = _scrub(ns[key])
    cache = getattr(hm, "db_input_cache", None)
    if isinstance(cache, list):
        for i, item in enumerate(cache):
            if isinstance(item, tuple) and any(isinstance(x, str) and MARK_BEGIN in x for x in item):
                cache[i] = tuple(_scrub(x) if isinstance(x, str) else x for x in item)
    for name, entry in list(linecache.cache.items()):
        lines = entry[2] if len(entry) > 2 else None
        if lines and any(MARK_BEGIN in ln for ln in lines):
            scrubbed = _scrub("".join(lines)).splitlines(keepends=True)
            linecache.cache[name] = (len("".join(scrubbed)), None, scrubbed, name)


def _keep_mode(ip) -> None:
    """Once the set-up cell has applied the instructor's grading mode, `quick` stays at it."""
    import sys

    grading = sys.modules.get("sccourse.grading")
    applied = getattr(grading, "_APPLIED", None)
    if applied and ip.user_ns.get("quick", applied[0]) != applied[0]:
        ip.user_ns["quick"] = applied[0]
        print(
            f"{FLAG_PREFIX} notebook code changed `quick`; it was set back to the instructor's grading mode "
            f"(quick = {applied[0]}) and the submission is flagged for review"
        )


def _after_cell(ip):
    def hook(result=None):
        _keep_mode(ip)
        restored = _guard.restore()
        if restored:
            shown = ", ".join(restored[:8]) + (" ..." if len(restored) > 8 else "")
            print(
                f"{FLAG_PREFIX} notebook code replaced {shown}; the originals were put back and the "
                "submission is flagged for review"
            )
        _scrub_history(ip)

    return hook


def load_ipython_extension(ip) -> None:
    _guard.snapshot(import_missing=True)
    ip.events.register("post_run_cell", _after_cell(ip))
