"""Course plumbing behind ``tasks.py``: release assignments with nbgrader, execute solutions with papermill.

    python -m sccourse._course release [NAME ...]
    python -m sccourse._course execute [--quick] [--out build/executed] [NAME ...]
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

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "solutions"
RELEASE = "assignments"


def assignment_names(root: Path = ROOT) -> list[str]:
    """Names of the assignments present in ``solutions/`` (folders holding ``<name>.ipynb``)."""
    return sorted(p.name for p in (root / SOURCE).iterdir() if p.is_dir() and (p / f"{p.name}.ipynb").exists())


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
    (nbgrader runs ``alembic`` from PATH)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def generate(root: Path, names: list[str], *, db: Path | None = None) -> None:
    """Run ``nbgrader generate_assignment`` for ``names`` in the course directory ``root``."""
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{db or Path(tmp) / 'release.db'}"
        for name in names:
            cmd = [sys.executable, "-m", "nbgrader", "generate_assignment", name, "--force", "--create",
                   f"--CourseDirectory.root={root}", f"--CourseDirectory.db_url={db_url}", "--log-level=WARN"]
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=tool_env())
            if proc.returncode != 0:
                raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{proc.stdout}\n{proc.stderr}")
            for nb in (root / RELEASE / name).glob("*.ipynb"):
                strip_outputs(nb)


def release(names: list[str] | None = None) -> int:
    names = list(names or assignment_names())
    unknown = [n for n in names if n not in assignment_names()]
    if unknown:
        print(f"unknown assignment(s) {unknown}; present: {assignment_names()}", file=sys.stderr)
        return 2
    for name in names:
        shutil.rmtree(ROOT / RELEASE / name, ignore_errors=True)
    generate(ROOT, names)
    for name in names:
        print(f"released {RELEASE}/{name}/")
    return 0


def execute(names: list[str] | None = None, *, quick: bool = False, out: str = "build/executed",
            timeout: int = 1800) -> int:
    import papermill as pm

    names = list(names or assignment_names())
    out_dir = ROOT / out
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        src = ROOT / SOURCE / name / f"{name}.ipynb"
        dest = out_dir / f"{name}.ipynb"
        t0 = time.time()
        status = "ok"
        try:
            pm.execute_notebook(str(src), str(dest), parameters={"quick": quick}, cwd=str(src.parent),
                                kernel_name="python3", progress_bar=False, execution_timeout=timeout)
        except Exception as err:  # noqa: BLE001  (report and go on with the next notebook)
            detail = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', str(err))}"
            status = "FAILED: " + " ".join(detail.split())[:160]
        rows.append((name, time.time() - t0, status))
        print(f"{name:28s} {rows[-1][1]:8.1f} s  {status}", flush=True)
    width = max(len(r[0]) for r in rows) if rows else 10
    print("\n" + f"{'notebook':{width}s}  {'seconds':>8s}  status")
    print("-" * (width + 30))
    for name, secs, status in rows:
        print(f"{name:{width}s}  {secs:8.1f}  {status}")
    failed = [r for r in rows if r[2] != "ok"]
    print(f"\n{len(rows) - len(failed)} ok, {len(failed)} failed; executed notebooks in {out_dir}")
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sccourse._course")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("release")
    r.add_argument("names", nargs="*")
    e = sub.add_parser("execute")
    e.add_argument("names", nargs="*")
    e.add_argument("--quick", action="store_true")
    e.add_argument("--out", default="build/executed")
    args = p.parse_args(argv)
    if args.cmd == "release":
        return release(args.names)
    return execute(args.names, quick=args.quick, out=args.out)


if __name__ == "__main__":
    sys.exit(main())
