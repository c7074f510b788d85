"""Class-scale grading on Dask: every collected submission in its own sandbox, in parallel, resumable.

``sccourse grade NAME [NAME ...]`` (or ``python3 tasks.py grade NAME ...``):

- finds the submissions nbgrader collected (``submitted/<student>/<NAME>/``);
- skips those already graded whose files have not changed since (the state lives in ``grading/<NAME>/state.json``),
  so a run that crashed or was interrupted resumes where it stopped;
- sends each remaining submission to a Dask worker: the worker builds a private copy of the course (configuration,
  the assignment's source, a scratch copy of the gradebook, the submission), runs nbgrader's autograde there, in the
  worker's own process (the sandboxed kernel of :mod:`sccourse.grading._sandbox`) and returns the autograded notebook, its scores and flags;
- only this process (the coordinator) writes the course: the autograded notebook, the JSON report and the grades in
  the course gradebook, in one transaction per submission, so no worker can corrupt it;
- a task whose worker dies is retried once; a submission that still fails is reported with the reason and the
  others finish;
- several assignments share one cluster and one queue; a worker takes one submission at a time, and submissions
  graded before go first, longest first, so the run does not end with one worker busy and the others idle.

By default the work runs on a :class:`distributed.LocalCluster` with one single-threaded worker process per core;
``--scheduler tcp://host:8786`` uses an existing Dask cluster instead (Slurm through dask-jobqueue, Kubernetes or
JupyterHub through dask-kubernetes or dask-gateway): its workers need the same Python environment (this package,
nbgrader, bubblewrap) and the course data, nothing else — the course files travel with each task.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple


@dataclass
class Course:
    """The parts of an nbgrader course folder the engine needs."""

    root: Path
    source: str = "source"
    submitted: str = "submitted"
    autograded: str = "autograded"
    db_path: Path | None = None
    course_id: str = "course"

    @classmethod
    def load(cls, root: str | Path) -> Course:
        """Read ``nbgrader_config.py`` of the course at ``root``."""
        from traitlets.config.loader import PyFileConfigLoader

        root = Path(root).resolve()
        cfg_file = root / "nbgrader_config.py"
        if not cfg_file.exists():
            raise FileNotFoundError(
                f"{root} has no nbgrader_config.py: run `sccourse grade` from the course folder "
                "or pass --course PATH"
            )
        cfg = PyFileConfigLoader(str(cfg_file), path=str(root)).load_config()
        cd = cfg.get("CourseDirectory", {})
        db_url = cd.get("db_url", f"sqlite:///{root / 'gradebook.db'}")
        if not str(db_url).startswith("sqlite:///"):
            raise ValueError(f"the grading engine needs a SQLite gradebook, found db_url={db_url!r}")
        db = Path(str(db_url)[len("sqlite:///") :])
        return cls(
            root=root,
            source=cd.get("source_directory", "source"),
            submitted=cd.get("submitted_directory", "submitted"),
            autograded=cd.get("autograded_directory", "autograded"),
            db_path=db if db.is_absolute() else root / db,
            course_id=cd.get("course_id", "course"),
        )

    def submissions(self, name: str) -> dict[str, Path]:
        base = self.root / self.submitted
        if not base.is_dir():
            return {}
        return {p.name: p / name for p in sorted(base.iterdir()) if (p / name).is_dir()}


def _files(folder: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and ".ipynb_checkpoints" not in path.parts:
            out[path.relative_to(folder).as_posix()] = path.read_bytes()
    return out


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for rel, data in sorted(files.items()):
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


@dataclass
class Task:
    """Everything one worker needs to grade one submission (sent over the network to remote workers)."""

    name: str
    student: str
    config: bytes
    source: dict[str, bytes]
    gradebook: bytes
    submission: dict[str, bytes]
    mode: str
    sandbox: bool
    course_id: str = "course"
    timeout: int | None = None
    env: dict[str, str] = field(default_factory=dict)


_KERNEL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SCCOURSE_GRADING_MODE")


def _autograde_here(root: Path, db: str, task: Task) -> dict:
    """``nbgrader autograde NAME --student S --create --force`` on the private course at ``root``, run in this
    process (a worker imports nbgrader, nbformat and the grading preprocessors once, not once per submission).

    Returns nbgrader's ``capture_log`` result: ``success``, ``log`` and, on failure, ``error``.
    """
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    over = Config()
    over.CourseDirectory.root = str(root)
    over.CourseDirectory.db_url = db
    over.CourseDirectory.source_directory = "solutions"
    over.CourseDirectory.submitted_directory = "submitted"
    over.CourseDirectory.autograded_directory = "autograded"
    over.CourseDirectory.course_id = task.course_id
    over.CourseDirectory.assignment_id = task.name
    over.CourseDirectory.student_id = task.student
    over.SandboxedExecute.grading_mode = task.mode
    over.SandboxedExecute.sandbox = bool(task.sandbox)
    if task.timeout:
        over.Execute.timeout = int(task.timeout)
    config.merge(over)
    # each kernel computes on one thread (one worker per core); the kernel takes these from this environment
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.update(SCCOURSE_GRADING_MODE=task.mode, **task.env)
    saved = {k: os.environ.get(k) for k in set(env) | set(_KERNEL_ENV)}
    os.environ.update(env)
    try:
        app = Autograde(coursedir=CourseDirectory(config=config), config=config)
        app.force = True
        app.create_student = True
        return capture_log(app)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _failure_reason(result: dict) -> str:
    """The cause of a failed autograde, from nbgrader's log: the last exception it logged (e.g. ``NotJSONError:
    Notebook does not appear to be JSON``), else the log's last lines.
    """
    import re

    lines = [ln.strip() for ln in result.get("log", "").splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b.*:", ln)]
    if causes:
        return causes[-1][:300]
    return " | ".join((lines or (result.get("error") or "").strip().splitlines())[-6:])[:300]


def grade_one(task: Task) -> dict:
    """Worker side: grade one submission in a private copy of the course; returns notebooks, scores and flags."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"sccourse-grade-{task.student}-") as tmp:
        root = Path(tmp)
        (root / "nbgrader_config.py").write_bytes(task.config)
        for rel, data in task.source.items():
            p = root / "solutions" / task.name / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        for rel, data in task.submission.items():
            p = root / "submitted" / task.student / task.name / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        (root / "gradebook.db").write_bytes(task.gradebook)
        db = f"sqlite:///{root / 'gradebook.db'}"
        setup_s = time.perf_counter() - t0
        result = _autograde_here(root, db, task)
        run_s = time.perf_counter() - t0 - setup_s
        if not result.get("success"):
            raise RuntimeError(f"nbgrader autograde failed for {task.student}: {_failure_reason(result)}")
        from nbgrader.api import Gradebook

        grades, comments = {}, {}
        with Gradebook(db, course_id=task.course_id) as gb:
            for nb in gb.find_assignment(task.name).notebooks:
                sub = gb.find_submission_notebook(nb.name, task.name, task.student)
                grades[nb.name] = [
                    dict(
                        name=g.name,
                        auto_score=g.auto_score,
                        max_score=g.max_score,
                        needs_manual_grade=g.needs_manual_grade,
                    )
                    for g in sub.grades
                ]
                comments[nb.name] = {c.name: c.auto_comment for c in sub.comments}
        out_dir = root / "autograded" / task.student / task.name
        reports = {p.stem: json.loads(p.read_text()) for p in (root / "reports" / task.name).glob("*.json")}
        flags = [f for r in reports.values() for f in r.get("flags", [])]
        return dict(
            student=task.student,
            name=task.name,
            autograded=_files(out_dir),
            grades=grades,
            comments=comments,
            flags=flags,
            reports=reports,
            seconds=time.perf_counter() - t0,
            setup_seconds=setup_s,
            run_seconds=run_s,
            worker=os.uname().nodename,
        )


def merge(course: Course, result: dict, *, timestamp=None) -> float:
    """Coordinator side: write one graded submission into the course (files, report, gradebook in one transaction).

    Returns the seconds spent.
    """
    from nbgrader.api import Gradebook

    t0 = time.perf_counter()
    name, student = result["name"], result["student"]
    dest = course.root / course.autograded / student / name
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in result["autograded"].items():
        p = tmp / _safe_rel(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    reports = course.root / "reports" / name
    reports.mkdir(parents=True, exist_ok=True)
    for report in result["reports"].values():
        (reports / f"{student}.json").write_text(json.dumps(report, indent=1))
    gb = Gradebook(f"sqlite:///{course.db_path}", course_id=course.course_id)
    try:
        gb.db.autoflush = False
        gb.update_or_create_student(student)
        gb.update_or_create_submission(name, student, **({"timestamp": timestamp} if timestamp else {}))
        for nb_name, grades in result["grades"].items():
            for g in grades:
                grade = gb.find_grade(g["name"], nb_name, name, student)
                grade.auto_score = g["auto_score"]
                grade.needs_manual_grade = bool(g["needs_manual_grade"]) or grade.manual_score is not None
            for cname, text in result["comments"].get(nb_name, {}).items():
                comment = gb.find_comment(cname, nb_name, name, student)
                comment.auto_comment = text
        gb.db.commit()
    except Exception:
        gb.db.rollback()
        raise
    finally:
        gb.close()
    return time.perf_counter() - t0


def _safe_rel(rel: str) -> str:
    """Relative paths from a worker, refusing anything that would leave the destination folder."""
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts:
        raise ValueError(f"refusing path {rel!r} from a worker")
    return rel


class State:
    """Per-assignment record of what was graded from which submission files (``grading/<NAME>/state.json``)."""

    def __init__(self, course: Course, name: str):
        self.path = course.root / "grading" / name / "state.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def done(self, student: str, fingerprint: str) -> bool:
        entry = self.data.get(student)
        return bool(entry) and entry.get("digest") == fingerprint and entry.get("status") == "graded"

    def record(self, student: str, **entry) -> None:
        self.data[student] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".part")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def _client(scheduler: str | None, workers: int | None):
    import dask
    from distributed import Client, LocalCluster

    dask.config.set(
        {
            # a task whose worker dies is tried on one more worker, then reported (not retried forever)
            "distributed.scheduler.allowed-failures": 1,
            # a worker holds exactly the submission it grades: the next one goes to whichever worker frees up
            # first (with Dask's default 1.1 a worker also queues a second one, which can wait behind a long
            # submission while another worker idles)
            "distributed.scheduler.worker-saturation": 1.0,
        }
    )
    if scheduler:
        return Client(scheduler), None
    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    return Client(cluster), cluster


class _Job(NamedTuple):
    """One submission to grade: its task, where its result is recorded, and what the last grading took."""

    task: Task
    state: State
    fingerprint: str
    max_score: float
    last_seconds: float


def _plan(
    course: Course, name: str, *, mode, students, force, sandbox, timeout, config, gradebook
) -> tuple[list[dict], list[_Job]]:
    """One assignment's rows of unchanged submissions and its jobs."""
    from nbgrader.api import Gradebook

    source_dir = course.root / course.source / name
    if not source_dir.is_dir():
        raise FileNotFoundError(f"no source folder {source_dir} for assignment {name!r}")
    with Gradebook(f"sqlite:///{course.db_path}", course_id=course.course_id) as gb:
        max_score = gb.find_assignment(name).max_score  # raises MissingEntry with nbgrader's message
    found = course.submissions(name)
    if students:
        missing = sorted(set(students) - set(found))
        if missing:
            raise ValueError(f"no collected submission of {name} for {missing}")
        found = {s: found[s] for s in students}
    state = State(course, name)
    source = _files(source_dir)
    rows, todo = [], []
    for student, folder in found.items():
        files = _files(folder)
        fp = digest(files)
        prev = state.data.get(student, {})
        if not force and state.done(student, fp):
            rows.append(
                dict(
                    assignment=name,
                    student=student,
                    status="unchanged",
                    score=prev.get("score"),
                    max_score=max_score,
                    seconds=0.0,
                    flags=prev.get("flags", 0),
                    reason="",
                )
            )
            continue
        task = Task(
            name=name,
            student=student,
            config=config,
            source=source,
            gradebook=gradebook,
            submission=files,
            mode=mode,
            sandbox=sandbox,
            timeout=timeout,
            course_id=course.course_id,
        )
        todo.append(_Job(task, state, fp, max_score, float(prev.get("seconds") or 0.0)))
    return rows, todo


def grade(
    name: str | list[str] | tuple[str, ...],
    *,
    course_root: str | Path = ".",
    scheduler: str | None = None,
    workers: int | None = None,
    mode: str | None = None,
    students: list[str] | None = None,
    force: bool = False,
    sandbox: bool = True,
    timeout: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Grade every collected submission of assignment ``name`` (or of several assignments, on one cluster);
    returns one row per submission.

    Rows: ``assignment``, ``student``, ``status`` (graded / unchanged / failed), ``score``, ``max_score``,
    ``seconds``, ``flags``, ``reason`` (for failures). Submissions graded before go first, longest first, so
    that no long one starts last while the other workers idle.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    names = [name] if isinstance(name, str) else list(name)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"name must be an assignment name or a list of them, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"an assignment is named twice in {names}")
    course = Course.load(course_root)
    if mode is None:
        from traitlets.config.loader import PyFileConfigLoader

        cfg = PyFileConfigLoader(str(course.root / "nbgrader_config.py"), path=str(course.root)).load_config()
        mode = cfg.get("SandboxedExecute", {}).get("grading_mode", "full")
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
    if sandbox:
        from ._sandbox import missing_tools

        if missing_tools():
            raise RuntimeError(
                f"refusing to grade without the sandbox: {', '.join(missing_tools())} not found "
                "(apt-get install bubblewrap), or pass --unsandboxed"
            )
    if not course.db_path.exists():
        raise FileNotFoundError(f"no gradebook at {course.db_path}: run `python3 tasks.py release` first")
    config = (course.root / "nbgrader_config.py").read_bytes()
    gradebook = course.db_path.read_bytes()
    rows, todo = [], []
    for n in names:
        r, t = _plan(
            course,
            n,
            mode=mode,
            students=students,
            force=force,
            sandbox=sandbox,
            timeout=timeout,
            config=config,
            gradebook=gradebook,
        )
        rows += r
        todo += t
    # longest known first (Python's sort is stable: unknown durations keep their assignment/student order)
    todo.sort(key=lambda job: -job.last_seconds)
    if todo:
        client, cluster = _client(scheduler, workers)
        try:
            futures = {}
            for job in todo:
                key = f"grade-{job.task.name}-{job.task.student}-{job.fingerprint[:12]}"
                futures[client.submit(grade_one, job.task, key=key, retries=1, pure=False)] = job
            desc = f"grading {names[0]}" if len(names) == 1 else f"grading {len(names)} assignments"
            bar = tqdm(total=len(futures), desc=desc, unit="submission", disable=not progress)
            for future in as_completed(futures):
                job = futures[future]
                task, state, fp, max_score = job.task, job.state, job.fingerprint, job.max_score
                student = task.student
                try:
                    result = future.result()
                    merge_s = merge(course, result)
                    score = sum((g["auto_score"] or 0.0) for gs in result["grades"].values() for g in gs)
                    row = dict(
                        assignment=task.name,
                        student=student,
                        status="graded",
                        score=score,
                        max_score=max_score,
                        seconds=result["seconds"],
                        flags=len(result["flags"]),
                        reason="",
                        overhead=result["setup_seconds"] + merge_s,
                        worker=result["worker"],
                    )
                    state.record(
                        student,
                        digest=fp,
                        status="graded",
                        score=score,
                        flags=len(result["flags"]),
                        seconds=round(result["seconds"], 1),
                        graded_at=time.strftime("%Y-%m-%d %H:%M:%S"),
                    )
                except Exception as err:  # noqa: BLE001  (report this submission, finish the others)
                    reason = f"{type(err).__name__}: {err}"[:400]
                    row = dict(
                        assignment=task.name,
                        student=student,
                        status="failed",
                        score=None,
                        max_score=max_score,
                        seconds=0.0,
                        flags=0,
                        reason=reason,
                    )
                    state.record(student, digest=fp, status="failed", reason=reason)
                rows.append(row)
                bar.update(1)
            bar.close()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    order = {n: i for i, n in enumerate(names)}
    return sorted(rows, key=lambda r: (order[r["assignment"]], r["student"]))


def print_table(rows: list[dict], file=None) -> None:
    # the stream of the moment (redirected or captured), not the one of import time
    file = sys.stdout if file is None else file
    several = len({r.get("assignment") for r in rows}) > 1
    label = (lambda r: f"{r['assignment']}/{r['student']}") if several else (lambda r: r["student"])
    head = "assignment/student" if several else "student"
    width = max([len(head)] + [len(label(r)) for r in rows])
    print(
        f"\n{head:{width}s}  {'score':>7s}  {'max':>5s}  {'seconds':>7s}  {'flags':>5s}  status",
        file=file,
    )
    print("-" * (width + 48), file=file)
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.1f}"
        status = r["status"] + (f" ({r['reason']})" if r.get("reason") else "")
        print(
            f"{label(r):{width}s}  {score:>7s}  {r['max_score']:5.1f}  {r['seconds']:7.1f}  {r['flags']:5d}  "
            f"{status}",
            file=file,
        )
    done = sum(r["status"] == "graded" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    print(
        f"\n{done} graded, {sum(r['status'] == 'unchanged' for r in rows)} unchanged, {failed} failed",
        file=file,
    )
