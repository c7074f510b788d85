"""Course plumbing behind ``tasks.py``: release assignments with nbgrader, execute solutions with papermill.

python -m coursetools.course release [NAME ...]
python -m coursetools.course execute [--quick] [--out build/executed] [NAME ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

# the course folder: tasks.py says which (the package may be installed from another checkout)
ROOT = Path(os.environ.get("SCCOURSE_COURSE_ROOT") or Path(__file__).resolve().parents[2]).resolve()
SOURCE = "solutions"
RELEASE = "assignments"


def assignment_names(root: Path = ROOT) -> list[str]:
    """Names of the assignments present in ``solutions/`` (folders holding ``<name>.ipynb``)."""
    return sorted(
        p.name for p in (root / SOURCE).iterdir() if p.is_dir() and (p / f"{p.name}.ipynb").exists()
    )


def strip_outputs(path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
    if changed:
        nbformat.write(nb, str(path))


def tool_env() -> dict:
    """Environment for nbgrader/jupyter subprocesses: this interpreter's scripts first on PATH
    (nbgrader runs ``alembic`` from PATH).
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def generate(root: Path, names: list[str], *, db: Path | None = None) -> None:
    """Run ``nbgrader generate_assignment`` for ``names`` in the course directory ``root``."""
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{db or Path(tmp) / 'release.db'}"
        for name in names:
            cmd = [
                sys.executable,
                "-m",
                "nbgrader",
                "generate_assignment",
                name,
                "--force",
                "--create",
                f"--CourseDirectory.root={root}",
                f"--CourseDirectory.db_url={db_url}",
                "--log-level=WARN",
            ]
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=tool_env())
            if proc.returncode != 0:
                raise RuntimeError(
                    f"nbgrader generate_assignment {name} failed:\n{proc.stdout}\n{proc.stderr}"
                )
            for nb in (root / RELEASE / name).glob("*.ipynb"):
                strip_outputs(nb)


def release(names: list[str] | None = None) -> int:
    """Regenerate ``assignments/`` and record the assignments (cells, points) in the course gradebook."""
    names = list(names or assignment_names())
    unknown = [n for n in names if n not in assignment_names()]
    if unknown:
        print(f"unknown assignment(s) {unknown}; present: {assignment_names()}", file=sys.stderr)
        return 2
    for name in names:
        shutil.rmtree(ROOT / RELEASE / name, ignore_errors=True)
    generate(ROOT, names, db=ROOT / "gradebook.db")
    for name in names:
        print(f"released {RELEASE}/{name}/ (gradebook: {ROOT / 'gradebook.db'})")
    return 0


def _figures(nb) -> int:
    return sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


def _write_html(nb, dest: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    dest.write_text(body)


def _write_index(rows, html_dir: Path, quick: bool) -> Path:
    import html

    lines = [
        "<!doctype html><meta charset='utf-8'><title>sccourse: executed solutions</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 12px;text-align:left}"
        ".ok{color:#186a3b}.bad{color:#b03a2e}</style>",
        f"<h1>sccourse — solution notebooks ({'quick' if quick else 'full'} mode)</h1>",
        f"<p>Built {time.strftime('%Y-%m-%d %H:%M')}.</p>",
        "<table><tr><th>notebook</th><th>seconds</th><th>status</th><th>figures</th>"
        "<th>graded cells</th><th>wrong answers rejected</th></tr>",
    ]
    for r in rows:
        cls = "ok" if r["status"] == "ok" else "bad"
        lines.append(
            f"<tr><td><a href='{r['name']}.html'>{r['name']}</a></td><td>{r['seconds']:.0f}</td>"
            f"<td class='{cls}'>{html.escape(r['status'])}</td><td>{r['figures']}</td>"
            f"<td>{r['graded']}</td><td>{r['rejected']}</td></tr>"
        )
    lines.append("</table>")
    path = html_dir / "index.html"
    path.write_text("\n".join(lines))
    return path


def execute(
    names: list[str] | None = None,
    *,
    quick: bool = False,
    out: str = "build/executed",
    timeout: int = 1800,
    mutations: bool = True,
) -> int:
    """Execute every solution notebook (inline figures), prove at each graded cell that its tests reject the wrong
    answers of ``tests/mutations/<name>.yaml``, and write ``build/executed/*.ipynb``, ``build/html/*.html`` and
    ``build/html/index.html``.
    """
    from . import mutations as _mutations

    names = list(names or assignment_names())
    out_dir = ROOT / out
    html_dir = out_dir.parent / "html"
    work = out_dir.parent / "work"
    for d in (out_dir, html_dir):
        d.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        src = ROOT / SOURCE / name / f"{name}.ipynb"
        cwd = work / name
        cwd.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        row = dict(name=name, figures=0, graded=0, rejected="-")
        try:
            report = _mutations.run(
                src, quick=quick, spec=None if mutations else {}, timeout=timeout, cwd=cwd
            )
            problems = report.problems()
            status = "ok" if not problems else "FAILED: " + "; ".join(problems)[:300]
            nbformat.write(report.nb, str(out_dir / f"{name}.ipynb"))
            _write_html(report.nb, html_dir / f"{name}.html")
            wrong = [w for c in report.cells for w in c.wrong]
            row.update(
                figures=_figures(report.nb),
                graded=len(report.cells),
                rejected=f"{sum(w[1] for w in wrong)}/{len(wrong)}",
            )
        except Exception as err:  # noqa: BLE001  (report and go on with the next notebook)
            detail = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', str(err))}"
            status = "FAILED: " + " ".join(detail.split())[:300]
        row.update(seconds=time.time() - t0, status=status)
        rows.append(row)
        print(f"{name:28s} {row['seconds']:8.1f} s  {status}", flush=True)
    width = max(len(r["name"]) for r in rows) if rows else 10
    print(
        "\n"
        + f"{'notebook':{width}s}  {'seconds':>8s}  {'figures':>7s}  {'graded':>6s}  {'rejected':>8s}  status"
    )
    print("-" * (width + 60))
    for r in rows:
        print(
            f"{r['name']:{width}s}  {r['seconds']:8.1f}  {r['figures']:7d}  {r['graded']:6d}  {r['rejected']:>8s}  "
            f"{r['status']}"
        )
    index = _write_index(rows, html_dir, quick)
    failed = [r for r in rows if r["status"] != "ok"]
    total = sum(r["seconds"] for r in rows)
    print(
        f"\n{len(rows) - len(failed)} ok, {len(failed)} failed in {total:.0f} s; executed notebooks in {out_dir}, "
        f"HTML in {index}"
    )
    (out_dir.parent / "course-report.json").write_text(
        __import__("json").dumps(
            {"quick": quick, "total_seconds": round(total, 1), "notebooks": rows}, indent=1
        )
    )
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m coursetools.course")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("release")
    r.add_argument("names", nargs="*")
    e = sub.add_parser("execute")
    e.add_argument("names", nargs="*")
    e.add_argument("--quick", action="store_true")
    e.add_argument("--out", default="build/executed")
    e.add_argument(
        "--no-mutations", action="store_true", help="execute only, without the wrong-answer checks"
    )
    args = p.parse_args(argv)
    if args.cmd == "release":
        return release(args.names)
    return execute(args.names, quick=args.quick, out=args.out, mutations=not args.no_mutations)


if __name__ == "__main__":
    sys.exit(main())
