"""Command-line interface: ``sccourse check NOTEBOOK`` (a student's self-check) and ``sccourse data``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n.*?### END HIDDEN TESTS\n?", flags=re.S)


def _status(cell) -> tuple[str, str]:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            ename, evalue = out.get("ename", ""), out.get("evalue", "")
            if ename == "AssertionError":
                return "failed", evalue or "an assertion failed"
            if ename in ("CellTimeoutError", "KeyboardInterrupt", "TimeoutError"):
                return "timeout", "the cell ran past the time limit and was interrupted"
            if ename == "NotImplementedError":
                return "error", "not answered yet (NotImplementedError)"
            return "error", f"{ename}: {evalue}"
    return "passed", ""


def check(path: str | Path, *, timeout: int = 600, quick: bool | None = None) -> list[dict]:
    """Run a notebook top to bottom with only the visible tests and report each graded cell.

    Returns one dict per autograded test cell: ``grade_id``, ``points``, ``status``
    (passed / failed / error / timeout) and ``message``. The notebook file is not modified.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    if not path.exists() or path.suffix != ".ipynb":
        raise ValueError(f"expected the path of an existing .ipynb notebook, got {str(path)!r}")
    nb = nbformat.read(str(path), as_version=4)
    graded = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade"):
            cell.source = HIDDEN.sub("", cell.source)
            graded.append(cell)
        if quick is not None and "parameters" in cell.metadata.get("tags", []):
            cell.source = re.sub(r"(?m)^quick\s*=.*$", f"quick = {bool(quick)}", cell.source)
    if not graded:
        raise ValueError(f"{path} has no autograded test cells (is it an sccourse assignment notebook?)")
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    client.execute()
    report = []
    for cell in graded:
        status, message = _status(cell)
        meta = cell.metadata["nbgrader"]
        report.append(
            dict(
                grade_id=meta["grade_id"],
                points=meta.get("points", 0),
                status=status,
                message=message.splitlines()[0][:200] if message else "",
            )
        )
    return report


def _print_report(path, report) -> int:
    width = max(len(r["grade_id"]) for r in report)
    print(f"\nself-check of {path} (visible tests only; hidden tests run at grading time)\n")
    for r in report:
        mark = {"passed": "✔", "failed": "✘", "error": "!", "timeout": "⏱"}[r["status"]]
        print(f"  {mark} {r['grade_id']:{width}s}  {r['points']:>4} pt  {r['status']:8s} {r['message']}")
    passed = sum(r["status"] == "passed" for r in report)
    print(f"\n{passed} of {len(report)} graded cells pass their visible tests")
    return 0 if passed == len(report) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sccourse", description="sccourse command-line tools")
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="run a notebook and report each graded cell (visible tests only)")
    c.add_argument("notebook")
    c.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    c.add_argument("--quick", action="store_true", help="set quick = True in the parameters cell")
    d = sub.add_parser("data", help="list the datasets and where they are found")
    d.add_argument("--verbose", action="store_true")
    g = sub.add_parser(
        "grade",
        help="grade every collected submission of one or more assignments in parallel (Dask)",
        description="Grade every submission in submitted/<student>/NAME/ in its own sandbox, on a "
        "local Dask cluster (one worker per core) or an existing one (--scheduler). Several assignments "
        "share one cluster. Re-running grades only new or changed submissions.",
    )
    g.add_argument("name", nargs="+", help="assignment name(s), e.g. 00_orientation 05_nb_simulation")
    g.add_argument("--course", default=".", help="course folder holding nbgrader_config.py (default: .)")
    g.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    g.add_argument("--workers", type=int, help="workers of the local cluster (default: one per core)")
    g.add_argument("--mode", choices=["quick", "full"], help="grading mode (default: nbgrader_config.py's)")
    g.add_argument("--student", action="append", help="grade only this student (repeatable)")
    g.add_argument(
        "--force", action="store_true", help="grade again even when the submission has not changed"
    )
    g.add_argument(
        "--timeout", type=int, help="seconds per cell (default: nbgrader_config.py's Execute.timeout)"
    )
    g.add_argument(
        "--unsandboxed",
        action="store_true",
        help="run student code without the sandbox (with your rights): only for trusted notebooks",
    )
    e = sub.add_parser("export", help="export grades: nbgrader CSV, Canvas CSV, Gradescope results.json")
    e.add_argument("--course", default=".", help="course folder holding nbgrader_config.py (default: .)")
    e.add_argument("--format", choices=["nbgrader", "canvas", "gradescope"], default="canvas")
    e.add_argument("--out", help="output file (CSV) or folder (gradescope); default under exports/")
    args = parser.parse_args(argv)
    if args.cmd == "grade":
        from .grading import _engine

        try:
            rows = _engine.grade(
                args.name,
                course_root=args.course,
                scheduler=args.scheduler,
                workers=args.workers,
                mode=args.mode,
                students=args.student,
                force=args.force,
                sandbox=not args.unsandboxed,
                timeout=args.timeout,
            )
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            print(f"sccourse grade: {err}", file=sys.stderr)
            return 2
        _engine.print_table(rows)
        return 1 if any(r["status"] == "failed" for r in rows) else 0
    if args.cmd == "export":
        from .grading import _export

        try:
            path = _export.export(args.format, course_root=args.course, out=args.out)
        except (FileNotFoundError, ValueError) as err:
            print(f"sccourse export: {err}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        return 0
    if args.cmd == "check":
        try:
            report = check(args.notebook, timeout=args.timeout, quick=True if args.quick else None)
        except ValueError as err:
            print(f"sccourse check: {err}", file=sys.stderr)
            return 2
        return _print_report(args.notebook, report)
    from . import datasets

    mir = datasets.mirror()
    print(f"cache:  {datasets.cache_dir()}\nmirror: {mir}\n")
    print(datasets.available().to_string())
    if (
        mir is not None
        and not mir.startswith(("http://", "https://", "file://"))
        and not Path(mir).expanduser().is_dir()
    ):
        print(
            f"\nsccourse data: the mirror folder {mir} does not exist (SCCOURSE_DATA_MIRROR); point it at the folder "
            "that holds the data files",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
