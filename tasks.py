#!/usr/bin/env python3
"""sccourse task runner (standard library only, so it works on a fresh machine with just Python).

    python3 tasks.py course          # venv, regenerate assignments/, execute every solution on real data
    python3 tasks.py test [ARGS...]  # venv, run the test suite (extra ARGS go to pytest)
    python3 tasks.py release [NAME]  # regenerate assignments/ from solutions/ (all, or one)
    python3 tasks.py setup           # only create/update the virtual environment
    python3 tasks.py bench TOPIC...  # benchmarks in .venv-bench/ (with the reference packages), see benchmarks/

Every command creates `.venv/` when it is missing (torch==2.13.0 first, then `pip install -e .[dev]`) and
is safe to re-run: the environment is reinstalled only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _run(cmd, **kw) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


def _stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH.encode()).hexdigest()


def setup() -> None:
    """Create or update .venv; idempotent."""
    if sys.version_info < (3, 11):
        sys.exit(f"sccourse needs Python >= 3.11 (this is {sys.version.split()[0]})")
    stamp_file = VENV / ".sccourse-stamp"
    if PY.exists() and stamp_file.exists() and stamp_file.read_text() == _stamp():
        return
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check"]
    steps = [
        pip + ["--upgrade", "pip", "setuptools", "wheel"],
        pip + [TORCH],  # before anything else: a bare `torch` requirement would pull a multi-GB CUDA build
        pip + ["-e", ".[dev]"],
    ]
    for cmd in steps:
        if _run(cmd) != 0:
            sys.exit(f"environment setup failed at: {' '.join(map(str, cmd))}")
    # a Jupyter kernel named python3 that points at this environment (nbgrader and papermill use it)
    _run([PY, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3", "--display-name",
          "Python 3 (sccourse)"])
    stamp_file.write_text(_stamp())


BENCH_VENV = ROOT / ".venv-bench"
BENCH_PY = BENCH_VENV / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")
# the published packages the benchmarks compare against; never dependencies of the course itself.
# torch is repeated on the same pip line so that none of them can replace the course's torch.
BENCH_REFERENCES = ["scetm==0.5.0", "tensorboard", "neuralee==0.1.6", "scdesigner==0.0.25"]


def bench_setup() -> None:
    """Create or update .venv-bench: torch first, this package, then the reference packages."""
    stamp_file = BENCH_VENV / ".sccourse-stamp"
    stamp = _stamp() + " ".join(BENCH_REFERENCES)
    if BENCH_PY.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    if not BENCH_PY.exists():
        print(f"creating benchmark environment in {BENCH_VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=BENCH_VENV.exists()).create(BENCH_VENV)
    pip = [BENCH_PY, "-m", "pip", "install", "--disable-pip-version-check"]
    for cmd in (pip + [TORCH], pip + ["-e", "."], pip + [*BENCH_REFERENCES, TORCH]):
        if _run(cmd) != 0:
            sys.exit(f"benchmark environment setup failed at: {' '.join(map(str, cmd))}")
    stamp_file.write_text(stamp)


def bench(args) -> int:
    bench_setup()
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    return _run([BENCH_PY, "-m", "benchmarks", *args], env=env)


def _in_venv(args) -> int:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    env.setdefault("MPLBACKEND", "Agg")
    return _run([PY, *args], env=env)


def release(names=()) -> int:
    return _in_venv(["-m", "sccourse._course", "release", *names])


def course() -> int:
    rc = release()
    if rc != 0:
        return rc
    return _in_venv(["-m", "sccourse._course", "execute", "--out", "build/executed"])


def test(args) -> int:
    return _in_venv(["-m", "pytest", *args])


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in ("setup", "course", "test", "release", "bench"):
        print(f"unknown command {cmd!r}; expected one of: course, test, release, setup, bench", file=sys.stderr)
        return 2
    t0 = time.time()
    if cmd == "bench":
        rc = bench(rest)
        print(f"tasks.py bench: exit {rc} after {time.time() - t0:.0f} s", flush=True)
        return rc
    setup()
    if cmd == "setup":
        rc = 0
    elif cmd == "course":
        rc = course()
    elif cmd == "release":
        rc = release(rest)
    else:
        rc = test(rest)
    print(f"tasks.py {cmd}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
