"""Grading at class scale: sequential ``nbgrader autograde`` against the Dask engine (``sccourse grade``).

    python -m benchmarks grading [--quick]

24 quick-mode submissions (12 each of 00_orientation and 05_nb_simulation: correct, first answer missing, last
answer hanging until the cell timeout, kernel crashing with ``os._exit``), graded three ways from identical course
copies: (1) ``nbgrader autograde NAME`` one submission after the other; (2) the engine on a 2-worker
``LocalCluster``; (3) the engine against a separately started ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1. Every way runs each kernel in the sandbox with one compute thread. Reports wall times, their ratio, that
the scores are identical, the engine's per-submission overhead (private copy + merge, and the sandbox's start-up
measured separately), and a projection for 300 students x 6 assignments on one 16-core machine. Written to
``benchmarks/results/grading.json`` and the "Grading at class scale" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("00_orientation", "05_nb_simulation")
KINDS = ("correct",) * 6 + ("first-missing",) * 3 + ("hanging",) * 2 + ("crashing",)
CELL_TIMEOUT = 20


def _answers(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]


def make_course(dest: Path, n_per_kind: tuple = KINDS) -> dict[tuple[str, str], str]:
    """A course folder with releases, a gradebook and the submissions; returns {(name, student): kind}."""
    from coursetools.course import generate

    dest.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", dest / "nbgrader_config.py")
    with open(dest / "nbgrader_config.py", "a") as fh:
        fh.write(f"\nc.Execute.timeout = {CELL_TIMEOUT}\n")
    for name in NAMES:
        shutil.copytree(ROOT / "solutions" / name, dest / "solutions" / name)
    generate(dest, list(NAMES), db=dest / "gradebook.db")
    kinds = {}
    for name in NAMES:
        source = nbformat.read(str(dest / "solutions" / name / f"{name}.ipynb"), as_version=4)
        release = nbformat.read(str(dest / "assignments" / name / f"{name}.ipynb"), as_version=4)
        blank = {c.metadata["nbgrader"]["grade_id"]: c.source for c in _answers(release)}
        for i, kind in enumerate(n_per_kind):
            nb = nbformat.read(str(dest / "solutions" / name / f"{name}.ipynb"), as_version=4)
            answers = _answers(nb)
            if kind == "first-missing":
                answers[0].source = blank[answers[0].metadata["nbgrader"]["grade_id"]]
            elif kind == "hanging":
                answers[-1].source = "while True:\n    pass\n" + answers[-1].source
            elif kind == "crashing":
                answers[len(answers) // 2].source = (
                    "import os\nos._exit(1)\n" + answers[len(answers) // 2].source
                )
            student = f"s{i:02d}-{kind}"
            folder = dest / "submitted" / student / name
            folder.mkdir(parents=True)
            nbformat.write(nb, str(folder / f"{name}.ipynb"))
            kinds[name, student] = kind
        del source
    return kinds


def _env():
    return {
        **os.environ,
        "SCCOURSE_GRADING_MODE": "quick",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def scores(course: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="sccourse") as gb:
        for name in NAMES:
            for sub in gb.find_assignment(name).submissions:
                out[f"{name}/{sub.student.id}"] = round(
                    float(sum((g.auto_score or 0) for nb in sub.notebooks for g in nb.grades)), 6
                )
    return out


def sequential(course: Path) -> float:
    t0 = time.perf_counter()
    for name in NAMES:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nbgrader",
                "autograde",
                name,
                "--create",
                f"--CourseDirectory.root={course}",
            ],
            cwd=course,
            env=_env(),
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - t0


def engine(course: Path, *, scheduler: str | None = None, workers: int = 2) -> tuple[float, list[dict]]:
    from sccourse.grading import _engine

    env_before = dict(os.environ)
    os.environ.update(_env())
    try:
        t0 = time.perf_counter()
        # both assignments in one call, as `sccourse grade 00_orientation 05_nb_simulation`: one cluster, one queue
        rows = _engine.grade(
            list(NAMES),
            course_root=course,
            scheduler=scheduler,
            workers=workers,
            mode="quick",
            progress=False,
        )
        return time.perf_counter() - t0, rows
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def external_cluster():
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1 (real processes, loopback only)."""
    port = _free_port()
    dask = Path(sys.executable).parent / "dask"
    env = _env()
    sched = subprocess.Popen(
        [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"tcp://127.0.0.1:{port}"
    workers = [
        subprocess.Popen(
            [
                str(dask),
                "worker",
                address,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    from distributed import Client

    for _ in range(120):
        try:
            with Client(address, timeout=5) as c:
                if len(c.scheduler_info()["workers"]) == 2:
                    break
        except OSError:
            pass
        time.sleep(1)
    return address, [sched, *workers]


def _setup_cells(name: str = "00_orientation") -> list[str]:
    """The code a graded notebook runs before its first question: its parameter cell and its set-up cell."""
    import nbformat

    nb = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    return ["quick = True\n" + code[0], code[1]]


def sandbox_startup(repeats: int = 3, *, notebook: str = "00_orientation") -> dict:
    """Seconds to start a kernel and run a notebook's set-up cells (its imports), in the sandbox and without it.

    The grading kernel imports the libraries hidden tests rely on before any student code runs (to watch them for
    tampering); a notebook imports most of them in its set-up cell anyway, so the sandbox's cost is measured up to
    the end of that cell. ``x = 1`` instead of the set-up cells gives the start-up of a bare kernel.
    """
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    from sccourse.grading._sandbox import Sandbox, SandboxKernelManager

    cells = _setup_cells(notebook)

    async def once(sandboxed: bool, code: list[str]) -> float:
        work = Path(tempfile.mkdtemp(prefix="sccourse-bench-"))
        t0 = time.perf_counter()
        km = (
            SandboxKernelManager(kernel_name="python3", sandbox=Sandbox(work))
            if sandboxed
            else AsyncKernelManager(kernel_name="python3")
        )
        if sandboxed:
            km.kernel_spec.interrupt_mode = "message"
        await km.start_kernel(
            cwd=str(work), env={**os.environ, "SCCOURSE_GRADING": "1", "SCCOURSE_GRADING_MODE": "quick"}
        )
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=120)
        for src in code:
            reply = await kc.execute_interactive(src, timeout=120, output_hook=lambda msg: None)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(
                    f"set-up cell failed in the {'sandboxed' if sandboxed else 'plain'} kernel"
                )
        elapsed = time.perf_counter() - t0
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        shutil.rmtree(work, ignore_errors=True)
        return elapsed

    out = {"notebook": notebook}
    for label, code in (("", cells), ("bare_", ["x = 1"])):
        for sandboxed in (False, True):
            times = sorted(asyncio.run(once(sandboxed, code)) for _ in range(repeats))
            out[label + ("sandboxed" if sandboxed else "plain")] = times[len(times) // 2]
        out[label + "sandbox_overhead"] = out[label + "sandboxed"] - out[label + "plain"]
    return out


def projection(per_submission_s: dict[str, float], speedup: float, workers: int = 2) -> dict:
    """300 students x the six assignments on one 16-core machine, from full-mode notebook times."""
    report = ROOT / "build" / "course-report.json"
    full = {}
    if report.exists():
        data = json.loads(report.read_text())
        if not data.get("quick"):
            full = {r["name"]: r["seconds"] for r in data["notebooks"]}
    efficiency = speedup / workers
    serial = 300 * sum(full.values()) if full else None
    return {
        "full_mode_seconds_per_notebook": full,
        "parallel_efficiency": efficiency,
        "hours_serial": serial / 3600 if serial else None,
        "hours_16_cores": serial / (16 * efficiency) / 3600 if serial else None,
    }


def main(argv=None) -> int:
    quick = "--quick" in (argv or sys.argv[1:])
    kinds = KINDS[:4] if quick else KINDS
    results = {}
    with tempfile.TemporaryDirectory(prefix="sccourse-grading-bench-") as tmp:
        base = Path(tmp)
        print("building the course and the submissions ...", flush=True)
        make_course(base / "seq", kinds)
        for copy in ("local", "external"):
            shutil.copytree(base / "seq", base / copy, symlinks=True)
        print("sequential nbgrader autograde ...", flush=True)
        results["sequential_s"] = sequential(base / "seq")
        print(f"  {results['sequential_s']:.1f} s", flush=True)
        print("engine, LocalCluster with 2 workers ...", flush=True)
        results["local_s"], rows_local = engine(base / "local")
        print(f"  {results['local_s']:.1f} s", flush=True)
        address, procs = external_cluster()
        try:
            print(f"engine, external cluster at {address} ...", flush=True)
            results["external_s"], rows_ext = engine(base / "external", scheduler=address)
            print(f"  {results['external_s']:.1f} s", flush=True)
        finally:
            for p in procs:
                p.terminate()
        s_seq, s_loc, s_ext = scores(base / "seq"), scores(base / "local"), scores(base / "external")
        results["submissions"] = len(s_seq)
        results["identical_scores"] = s_seq == s_loc == s_ext
        results["differences"] = {
            k: (s_seq.get(k), s_loc.get(k), s_ext.get(k))
            for k in s_seq
            if not (s_seq.get(k) == s_loc.get(k) == s_ext.get(k))
        }
        results["failed"] = [r for r in rows_local + rows_ext if r["status"] != "graded"]
        overheads = sorted(r["overhead"] for r in rows_local if "overhead" in r)
        results["engine_overhead_median_s"] = overheads[len(overheads) // 2] if overheads else None
    results["sandbox"] = sandbox_startup()
    results["speedup_local"] = results["sequential_s"] / results["local_s"]
    results["speedup_external"] = results["sequential_s"] / results["external_s"]
    results["overhead_per_submission_s"] = (results["engine_overhead_median_s"] or 0) + max(
        results["sandbox"]["sandbox_overhead"], 0.0
    )
    results["projection"] = projection({}, results["speedup_local"])
    results["date"] = time.strftime("%Y-%m-%d %H:%M")
    results["machine"] = f"{os.uname().sysname} {os.uname().machine}, {os.cpu_count()} cores"
    print(json.dumps(results, indent=1, default=str))
    if not quick:
        out = ROOT / "benchmarks" / "results"
        out.mkdir(exist_ok=True)
        (out / "grading.json").write_text(json.dumps(results, indent=1, default=str))
        write_results(results)
    return 0 if results["identical_scores"] else 1


def write_results(r: dict) -> None:
    p = r["projection"]
    proj = (
        f"{p['hours_serial']:.1f} h serially, about {p['hours_16_cores']:.1f} h on one 16-core machine at the "
        f"measured parallel efficiency ({p['parallel_efficiency']:.2f})"
        if p["hours_serial"]
        else "run `python3 tasks.py course` first for the full-mode times the projection uses"
    )
    section = f"""## Grading at class scale

`python -m benchmarks grading` ({r["date"]}, {r["machine"]}): {r["submissions"]} quick-mode submissions of
`00_orientation` and `05_nb_simulation` (correct, first answer missing, last answer hanging until the
{CELL_TIMEOUT} s cell timeout, kernel crashing), every kernel in the sandbox with one compute thread.

| way | wall time | ratio to sequential |
|---|---|---|
| `nbgrader autograde`, one submission after the other | {r["sequential_s"]:.1f} s | 1.00× |
| `sccourse grade`, LocalCluster with 2 workers | {r["local_s"]:.1f} s | {r["speedup_local"]:.2f}× |
| `sccourse grade --scheduler`, `dask scheduler` + 2 `dask worker` processes on 127.0.0.1 | {r["external_s"]:.1f} s | {r["speedup_external"]:.2f}× |

Scores identical in all three: **{"yes" if r["identical_scores"] else "NO: " + str(r["differences"])}**. Overhead
per submission: {r["overhead_per_submission_s"]:.2f} s, the engine's median {r["engine_overhead_median_s"]:.2f} s (private
course copy + merge into the gradebook) plus the sandbox's {r["sandbox"]["sandbox_overhead"]:.2f} s (a kernel's
start up to the end of the notebook's set-up cell: {r["sandbox"]["sandboxed"]:.2f} s against {r["sandbox"]["plain"]:.2f} s;
a bare kernel running `x = 1` starts in {r["sandbox"]["bare_sandboxed"]:.2f} s sandboxed against
{r["sandbox"]["bare_plain"]:.2f} s, the difference being the watched libraries the grading kernel imports first,
which the notebook's set-up cell imports anyway). Targets: identical scores, ≥ 1.8× on 2
cores, overhead under 3 s. Projection for 300 students × 6 assignments in full mode: {proj}.
"""
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text()
    text = re.sub(r"## Grading at class scale\n.*?(?=\n## |\Z)", "", text, flags=re.S)
    marker = "## All rows"
    text = text.replace(marker, section + "\n" + marker) if marker in text else text + "\n" + section
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
