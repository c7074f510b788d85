"""The README's nbgrader cycle, verbatim, in a fresh copy of the course.

release → two students fetch, answer (one correct, one with a wrong first answer) and submit → collect → grade (the
parallel engine) → generate and release feedback → students fetch their feedback → export. The instructor's commands
and the students' commands are read from the README (the blocks after ``<!-- instructor-cycle -->`` and
``<!-- student-cycle -->``). Students are separate users: each command runs with its own user id (bubblewrap user
namespace), as on a shared JupyterHub.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coursetools.course import ROOT
from sccourse.grading._sandbox import missing_tools

NAME = "00_orientation"
pytestmark = pytest.mark.skipif(bool(missing_tools()), reason="needs bubblewrap (apt-get install bubblewrap)")


def _block(marker: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```", readme, flags=re.S)
    assert m, f"README lacks the {marker} block"
    return [
        ln.split("  #")[0].strip() for ln in m.group(1).splitlines() if ln.strip() and not ln.startswith("#")
    ]


def _copy_course(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if rel.startswith(("solutions/", "assignments/", "lib/", "data/")) or "/" not in rel:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    # the course copy shares this checkout's environment (tasks.py sees it up to date and installs nothing)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


def _env(course: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SCCOURSE_COURSE_ROOT", "VIRTUAL_ENV")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["SCCOURSE_GRADING_MODE"] = "quick"
    return env


def _run(cmd: str, *, cwd: Path, env: dict, user: tuple[str, int] | None = None, passwd: Path | None = None):
    argv = shlex.split(cmd)
    if (
        user is not None
    ):  # run as another user (own uid, own name in /etc/passwd), like a student on a shared hub
        argv = [
            "bwrap",
            "--bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-user",
            "--uid",
            str(user[1]),
            "--gid",
            str(user[1]),
            "--ro-bind",
            str(passwd),
            "/etc/passwd",
            "--setenv",
            "HOME",
            str(cwd),
            "--setenv",
            "USER",
            user[0],
            "--chdir",
            str(cwd),
            "--",
            *argv,
        ]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"`{cmd}` failed ({user}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_readme_cycle_release_submit_collect_grade_feedback_export(tmp_path):
    # bring the shared environment up to date from this checkout first, so that tasks.py in the copy finds it current
    # (a reinstall from the copy would point the editable install at the temporary folder)
    subprocess.run([sys.executable, "tasks.py", "setup"], cwd=ROOT, check=True, capture_output=True)
    course = _copy_course(tmp_path / "course")
    env = _env(course)
    instructor = _block("instructor-cycle")
    students_cmds = _block("student-cycle")
    exchange = course / "exchange"
    passwd = tmp_path / "passwd"
    passwd.write_text(
        Path("/etc/passwd").read_text() + "alice:x:2001:2001::/home/alice:/bin/sh\n"
        "bob:x:2002:2002::/home/bob:/bin/sh\n"
    )
    homes = {}
    for user, uid in (("alice", 2001), ("bob", 2002)):
        home = tmp_path / user
        home.mkdir()
        # a student's own configuration: the course's exchange (on a hub: a shared folder)
        (home / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.Exchange.root = {str(exchange)!r}\nc.CourseDirectory.course_id = 'sccourse'\n"
        )
        homes[user] = (home, uid)

    def instructor_until(keyword):
        while instructor and keyword not in instructor[0]:
            _run(instructor.pop(0).replace("NAME", NAME), cwd=course, env=env)
        if instructor:
            _run(instructor.pop(0).replace("NAME", NAME), cwd=course, env=env)

    def student(user, keyword):
        cmd = next(c for c in students_cmds if keyword in c).replace("NAME", NAME)
        home, uid = homes[user]
        return _run(cmd, cwd=home, env=env, user=(user, uid), passwd=passwd)

    instructor_until("release_assignment")
    source = nbformat.read(str(course / "solutions" / NAME / f"{NAME}.ipynb"), as_version=4)
    for user in ("alice", "bob"):
        student(user, "fetch_assignment")
        path = homes[user][0] / NAME / f"{NAME}.ipynb"
        nb = nbformat.read(str(path), as_version=4)
        answers = {
            c.metadata["nbgrader"]["grade_id"]: c.source
            for c in source.cells
            if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"
        }
        first = True
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in answers:
                if user == "bob" and first:  # bob's first answer is wrong (percent as a fraction)
                    cell.source = answers[gid].replace("100.0 * mt", "mt")
                else:
                    cell.source = answers[gid]
                first = False
        nbformat.write(nb, str(path))
        student(user, "submit")
    instructor_until("sccourse grade")
    reports = {u: json.loads((course / "reports" / NAME / f"{u}.json").read_text()) for u in ("alice", "bob")}
    alice = {k: v["score"] for k, v in reports["alice"]["scores"].items() if v["score"] is not None}
    bob = {k: v["score"] for k, v in reports["bob"]["scores"].items() if v["score"] is not None}
    assert alice["qc_table_tests"] == 3 and bob["qc_table_tests"] == 0
    assert all(bob[k] == alice[k] for k in alice if k not in ("qc_table_tests", "why_normalise"))
    instructor_until("release_feedback")
    for user in ("alice", "bob"):
        student(user, "fetch_feedback")
        html = next((homes[user][0] / NAME / "feedback").rglob(f"{NAME}.html")).read_text()
        assert "BEGIN HIDDEN TESTS" not in html and "_ref_ad" not in html
    assert (
        "Not equal to tolerance"
        in next((homes["bob"][0] / NAME / "feedback").rglob(f"{NAME}.html")).read_text()
    )
    instructor_until("sccourse export")
    rows = list(csv.reader((course / "exports" / "grades-canvas.csv").open()))
    assert rows[0][:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"] and NAME in rows[0]
    col = rows[0].index(NAME)
    by_student = {r[3]: r[col] for r in rows[2:]}
    assert float(by_student["alice"]) == sum(alice.values()) and float(by_student["bob"]) == sum(bob.values())
    while instructor:  # the remaining exports
        _run(instructor.pop(0).replace("NAME", NAME), cwd=course, env=env)
    results = json.loads((course / "exports" / "gradescope" / NAME / "bob" / "results.json").read_text())
    failed = [t for t in results["tests"] if t["name"].endswith("qc_table_tests")][0]
    assert failed["score"] == 0 and "tolerance" in failed["output"] and "_ref_ad" not in failed["output"]
    assert (course / "exports" / "grades-nbgrader.csv").exists()
