"""`python3 tasks.py student-bundle`: what students get holds the releases and the library, never solutions."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from coursetools.course import ROOT, assignment_names


def test_student_bundle_has_releases_and_library_but_no_solutions(tmp_path):
    proc = subprocess.run(
        [sys.executable, "tasks.py", "student-bundle"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    out = ROOT / "build" / "sccourse-student"
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for name in assignment_names():
        assert f"assignments/{name}/{name}.ipynb" in names
    assert "lib/sccourse/__init__.py" in names and "data/registry.json" in names and "tasks.py" in names
    assert "requirements.lock" in names  # the same pinned versions as the course's own environment
    assert not any(
        n.startswith(("solutions/", "tests/", "benchmarks/", "submitted/", "autograded/", "feedback/"))
        for n in names
    )
    assert not any(n.endswith((".db", "nbgrader_config.py")) for n in names)
    assert not any(n.startswith("lib/coursetools/") for n in names)  # the instructor tooling stays here
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".ipynb", ".md"):  # the library itself names the markers
            text = path.read_text()
            for secret in ("BEGIN HIDDEN TESTS", "BEGIN SOLUTION", "Model answer", "**Rubric"):
                assert secret not in text, f"{path.relative_to(out)} holds {secret!r}"
    readme = (out / "README.md").read_text()
    assert "python3 tasks.py setup" in readme and "jupyter lab assignments/" in readme
    with zipfile.ZipFile(ROOT / "build" / "sccourse-student.zip") as zf:
        assert {n.split("/", 1)[1] for n in zf.namelist()} == names
    # the instructor commands refuse to run in the bundle
    proc = subprocess.run([sys.executable, "tasks.py", "course"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 2 and "instructor command" in proc.stderr
