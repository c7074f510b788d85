#!/usr/bin/env python3
"""sccourse task runner (standard library only, so it works on a fresh machine with just Python).

    python3 tasks.py course          # venv, regenerate assignments/, execute every solution on real data
    python3 tasks.py test [ARGS...]  # venv, run the test suite (extra ARGS go to pytest)
    python3 tasks.py release [NAME]  # regenerate assignments/ from solutions/ (all, or one)
    python3 tasks.py setup           # only create/update the virtual environment
    python3 tasks.py bench TOPIC...  # benchmarks in .venv-bench/ (with the reference packages), see benchmarks/
    python3 tasks.py student-bundle  # build/sccourse-student.zip: what students get (no solutions, no hidden tests)
    python3 tasks.py grade NAME ...  # grade every collected submission of NAME in parallel (sccourse grade --help)
    python3 tasks.py lock            # regenerate requirements.lock (pinned, hashed) from the tested environment

Every command creates `.venv/` when it is missing (torch==2.13.0 first, then the pinned, hash-checked
requirements.lock, then this package) and is safe to re-run: the environment is reinstalled only when
pyproject.toml or requirements.lock changes.
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
UV = "uv==0.13.9"  # installs the lock (setup) and writes it (lock); pinned like everything else
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _run(cmd, **kw) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


LOCK = ROOT / "requirements.lock"


def _stamp() -> str:
    lock = LOCK.read_bytes() if LOCK.exists() else b""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + lock + TORCH.encode()).hexdigest()


def setup() -> None:
    """Create or update .venv; idempotent."""
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
    ]
    if not LOCK.exists():
        steps += [pip + ["-e", ".[dev]"]]
    for cmd in steps:
        if _run(cmd) != 0:
            sys.exit(f"environment setup failed at: {' '.join(map(str, cmd))}")
    if LOCK.exists():  # the same versions on every machine: pinned and hash-checked, then the course itself
        # uv installs the pinned set in parallel: 22 s against pip's 100-150 s on 2 cores. Byte-compiled like pip's:
        # the grading sandbox mounts the environment read-only, so a module without its .pyc would be compiled
        # again in every sandboxed kernel. pip does it where uv cannot be had or fails
        uv = [PY, "-m", "uv", "pip", "install", "--python", str(PY), "--compile-bytecode", "--require-hashes"]
        uv += ["-r", str(LOCK)]
        if _run(pip + ["-q", UV]) != 0 or _run(uv) != 0:
            print("uv unavailable or failed: installing the lock with pip", flush=True)
            if _run(pip + ["--require-hashes", "-r", str(LOCK)]) != 0:
                sys.exit("environment setup failed at: pip install --require-hashes -r requirements.lock")
        if _run(pip + ["--no-deps", "-e", "."]) != 0:
            sys.exit("environment setup failed at: pip install --no-deps -e .")
    # a Jupyter kernel named python3 that points at this environment (nbgrader and papermill use it)
    _run(
        [
            PY,
            "-m",
            "ipykernel",
            "install",
            "--sys-prefix",
            "--name",
            "python3",
            "--display-name",
            "Python 3 (sccourse)",
        ]
    )
    stamp_file.write_text(_stamp())


BENCH_VENV = ROOT / ".venv-bench"
BENCH_PY = (
    BENCH_VENV / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")
)
# the published packages the benchmarks compare against; never dependencies of the course itself.
# torch is repeated on the same pip line so that none of them can replace the course's torch.
BENCH_REFERENCES = ["scetm==0.5.0", "tensorboard", "neuralee==0.1.6", "scdesigner==0.0.25", "openTSNE==1.0.4"]


# packages the lock leaves out: torch (installed first, CPU or CUDA build as the machine needs) and what only a
# CUDA build of torch pulls in
_TORCH_ONLY = ("torch", "triton", "nvidia-", "cuda-")


def lock(args) -> int:
    """Regenerate requirements.lock: every dependency of the course and its dev tools, pinned to the versions of
    this checkout's tested environment, with hashes, for every platform (uv's universal resolution)."""
    import re
    import tempfile

    setup()
    # setup() installs the previous lock with the package itself --no-deps: bring the environment up to the current
    # pyproject.toml first (a new dependency, a raised lower bound), upgrading only what no longer satisfies it
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if _run(pip + ["-e", ".[dev]"]) != 0 or _run(pip + [UV]) != 0:
        return 1
    frozen = subprocess.run(
        [PY, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(ln for ln in frozen if not ln.lower().startswith("torch==")) + "\n")
        raw = Path(tmp) / "raw.lock"
        cmd = [
            PY,
            "-m",
            "uv",
            "pip",
            "compile",
            "pyproject.toml",
            "--extra",
            "dev",
            "--universal",
            "--generate-hashes",
            "--python-version",
            "3.11.5",
            "-c",
            str(constraints),
            "--no-header",
            "--no-emit-package",
            "torch",
            "-o",
            str(raw),
        ]
        if _run(cmd) != 0:
            return 1
        blocks = re.split(r"\n(?=[A-Za-z0-9])", raw.read_text().strip())
    names = {b.split("==")[0].lower(): b for b in blocks if "==" in b.split("\n")[0]}

    def via(block: str) -> set[str]:
        return {m.lower() for m in re.findall(r"#\s+(?:via\s+)?([A-Za-z0-9_.-]+)", block)} - {"via"}

    drop = {n for n in names if n.startswith(_TORCH_ONLY)}
    changed = True
    while changed:  # packages needed only by what is dropped go too
        changed = False
        for n, block in names.items():
            parents = via(block)
            if n not in drop and parents and parents <= (drop | {"torch"}):
                drop.add(n)
                changed = True
    kept = [b for n, b in names.items() if n not in drop]
    header = (
        "# The course's pinned, hash-checked environment (everything but torch, which tasks.py installs first).\n"
        "# Regenerate with `python3 tasks.py lock` after changing pyproject.toml (it pins the versions of the\n"
        "# tested .venv); tests/test_packaging.py checks it against pyproject.toml.\n"
    )
    LOCK.write_text(header + "\n".join(kept) + "\n")
    print(f"wrote {LOCK}: {len(kept)} packages (left out: {', '.join(sorted(drop))})")
    return 0


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
    if [a for a in args if not a.startswith("-")] in (
        ["grading"],
        ["gpu"],
    ):  # the course environment (nbgrader,
        # dask, pytest)
        setup()
        return _in_venv(["-m", "benchmarks", *args])
    bench_setup()
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    return _run([BENCH_PY, "-m", "benchmarks", *args], env=env)


def _in_venv(args) -> int:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    env["SCCOURSE_COURSE_ROOT"] = str(ROOT)
    # the course tooling (lib/coursetools) is not installed with the package: it runs from this checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "lib"), str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    return _run([PY, *args], env=env)


def release(names=()) -> int:
    return _in_venv(["-m", "coursetools.course", "release", *names])


def course() -> int:
    rc = release()
    if rc != 0:
        return rc
    return _in_venv(["-m", "coursetools.course", "execute", "--out", "build/executed"])


def test(args) -> int:
    return _in_venv(["-m", "pytest", *args])


def grade(args) -> int:
    return _in_venv(["-m", "sccourse.cli", "grade", *args])


# What students receive: the released notebooks, the library, the data registry and the set-up. Never solutions/,
# tests/ (hidden-test wrong answers live there), a gradebook, submissions or the instructor's tooling.
STUDENT_FILES = [
    "assignments",
    "lib",
    "data/registry.json",
    "pyproject.toml",
    "requirements.lock",  # every student of a semester gets the same versions
    "environment.yml",
    "tasks.py",
]
STUDENT_EXCLUDE = {
    "__pycache__",
    ".ipynb_checkpoints",
    "*.egg-info",
    "*.pyc",
    "coursetools",
}
STUDENT_README = """# sccourse — student bundle

```bash
python3 tasks.py setup
.venv/bin/jupyter lab assignments/
```

**`python3 tasks.py setup`** creates `.venv/` with everything the notebooks need (PyTorch CPU first, then the course
library and JupyterLab, at the versions pinned in `requirements.lock`); it needs only Python >= 3.11 and is safe
to re-run. **The second command** opens JupyterLab on
the assignments (use `SCCOURSE_QUICK=1` instead for the quick version: smaller data, about a minute per notebook).

Open `assignments/<name>/<name>.ipynb`, answer the cells marked `# YOUR CODE HERE` (delete the
`raise NotImplementedError()` line) and run the test cell below each. The visible tests tell you whether you are on
track and enforce each question's rules (which library functions your answer may not call); hidden tests run when your
instructor grades. Check a whole notebook from a terminal with
`.venv/bin/sccourse check assignments/00_orientation/00_orientation.ipynb` (add `--quick` for the quick version).

Data: the notebooks download public data sets on first use, or read them from the folder your instructor gives you:
`export SCCOURSE_DATA_MIRROR=/path/to/data` before starting JupyterLab. `.venv/bin/sccourse data` lists what is found.
"""


def student_bundle(args) -> int:
    """Write build/sccourse-student/ and build/sccourse-student.zip (what students get)."""
    import fnmatch
    import shutil
    import zipfile

    out = ROOT / "build" / "sccourse-student"
    if not (ROOT / "assignments").is_dir():
        print("no assignments/ folder: run `python3 tasks.py release` first", file=sys.stderr)
        return 2
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def ignored(_dir, names):
        return [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in STUDENT_EXCLUDE)]

    for rel in STUDENT_FILES:
        src = ROOT / rel
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=ignored)
        else:
            shutil.copy2(src, dest)
    (out / "README.md").write_text(STUDENT_README)
    archive = ROOT / "build" / "sccourse-student.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(out.rglob("*")):
            if path.is_file():
                zf.write(path, Path("sccourse-student") / path.relative_to(out))
    n = sum(1 for p in out.rglob("*") if p.is_file())
    print(f"student bundle: {out} ({n} files) and {archive}")
    return 0


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    commands = ("setup", "course", "test", "release", "bench", "student-bundle", "grade", "lock")
    if cmd not in commands:
        print(f"unknown command {cmd!r}; expected one of: {', '.join(commands)}", file=sys.stderr)
        return 2
    if cmd in ("course", "test", "release", "grade") and not (ROOT / "solutions").is_dir():
        print(
            f"`{cmd}` is an instructor command; this copy has no solutions/ (a student bundle?). "
            "Students: `python3 tasks.py setup`, then `.venv/bin/jupyter lab assignments/`.",
            file=sys.stderr,
        )
        return 2
    t0 = time.time()
    if cmd == "bench":
        rc = bench(rest)
        print(f"tasks.py bench: exit {rc} after {time.time() - t0:.0f} s", flush=True)
        return rc
    if cmd == "student-bundle":
        return student_bundle(rest)
    if cmd == "lock":
        return lock(rest)
    setup()
    if cmd == "setup":
        rc = 0
    elif cmd == "course":
        rc = course()
    elif cmd == "release":
        rc = release(rest)
    elif cmd == "grade":
        rc = grade(rest)
    else:
        rc = test(rest)
    print(f"tasks.py {cmd}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
