"""Grading round trips with nbgrader, for every assignment in solutions/.

For each assignment, in a scratch course directory:
- the release regenerated from the source equals the committed `assignments/<name>/` (cells and metadata);
- no solution text and no hidden-test text appears in the release;
- autograding the source scores full marks on every autograded cell;
- autograding the blank release scores zero on every autograded cell;
- a submission whose last answer cell loops forever is interrupted after a short time-out, that question
  scores zero, and every other cell is still graded (the questions before it with full marks).
Submissions run with `quick = True` in their parameters cell.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from sccourse._course import ROOT, assignment_names, generate, tool_env

NAMES = assignment_names()
HANG_MARK = "# sccourse-hang-test"
HANG_TIMEOUT = 15


def _cells(path: Path):
    return nbformat.read(str(path), as_version=4).cells


def _set_quick(nb) -> None:
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source, n = re.subn(r"(?m)^quick\s*=.*$", "quick = True", cell.source)
            assert n == 1, "parameters cell must set `quick`"
            return
    raise AssertionError("no parameters cell")


def _blocks(text: str, begin: str, end: str) -> list[str]:
    return re.findall(rf"{re.escape(begin)}\n(.*?){re.escape(end)}", text, flags=re.S)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A scratch course directory holding copies of the sources and freshly generated releases."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    with open(root / "nbgrader_config.py", "a") as fh:
        fh.write(f"\nc.Execute.timeout_func = lambda cell: {HANG_TIMEOUT} if {HANG_MARK!r} in cell.source else 600\n")
    for name in NAMES:
        shutil.copytree(ROOT / "solutions" / name, root / "solutions" / name)
    generate(root, NAMES, db=root / "gradebook.db")
    return root


@pytest.mark.parametrize("name", NAMES)
def test_release_is_regenerated_from_source(course, name):
    fresh = _cells(course / "assignments" / name / f"{name}.ipynb")
    committed_path = ROOT / "assignments" / name / f"{name}.ipynb"
    assert committed_path.exists(), f"assignments/{name} is missing: run `python3 tasks.py release {name}`"
    committed = _cells(committed_path)
    assert len(fresh) == len(committed), f"assignments/{name} is stale: run `python3 tasks.py release {name}`"
    for i, (a, b) in enumerate(zip(fresh, committed)):
        assert a.cell_type == b.cell_type and a.source == b.source, (
            f"cell {i} of assignments/{name} differs from the generated release: run `python3 tasks.py release {name}`")
        assert a.metadata == b.metadata, f"cell {i} metadata of assignments/{name} is stale"
    files = sorted(p.name for p in (ROOT / "assignments" / name).iterdir() if p.name != ".ipynb_checkpoints")
    expected = sorted(p.name for p in (course / "assignments" / name).iterdir())
    assert files == expected


@pytest.mark.parametrize("name", NAMES)
def test_release_holds_no_solution_or_hidden_test(name):
    source = _cells(ROOT / "solutions" / name / f"{name}.ipynb")
    release_text = (ROOT / "assignments" / name / f"{name}.ipynb").read_text()
    release_src = "\n".join(c.source for c in _cells(ROOT / "assignments" / name / f"{name}.ipynb"))
    assert "BEGIN HIDDEN TESTS" not in release_text and "BEGIN SOLUTION" not in release_text
    n_graded = 0
    for cell in source:
        meta = cell.metadata.get("nbgrader", {})
        secret = []
        if meta.get("solution") and cell.cell_type == "code":
            secret += _blocks(cell.source, "### BEGIN SOLUTION", "### END SOLUTION")
        if meta.get("grade") and cell.cell_type == "code":
            n_graded += 1
            secret += _blocks(cell.source, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
        public = re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n.*?### END (SOLUTION|HIDDEN TESTS)", "", cell.source,
                        flags=re.S)
        for block in secret:
            for line in block.splitlines():
                line = line.strip()
                # a line that is also public elsewhere (imports, shared set-up) is no secret
                if len(line) < 12 or line.startswith("#") or line in public:
                    continue
                assert line not in release_src, f"{name}: release leaks the line {line!r}"
    assert n_graded >= 3, f"{name}: expected at least 3 autograded test cells, found {n_graded}"


STUDENTS = ("reference", "blank", "hang")


def _autograde_one(course: Path, name: str, student: str, nb) -> dict:
    """Autograde one submission in its own copy of the course (own gradebook), so that runs can go in parallel."""
    from nbgrader.api import Gradebook

    root = course.parent / f"{course.name}-{student}-{name}"
    shutil.copytree(course, root, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback"))
    dest = root / "submitted" / student / name
    dest.mkdir(parents=True)
    nbformat.write(nb, str(dest / f"{name}.ipynb"))
    db = f"sqlite:///{root / 'gradebook.db'}"
    cmd = [sys.executable, "-m", "nbgrader", "autograde", name, "--student", student, "--create", "--force",
           f"--CourseDirectory.root={root}", f"--CourseDirectory.db_url={db}"]
    # one compute thread per kernel: two kernels share the machine's cores instead of oversubscribing them
    env = {**tool_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, (f"nbgrader autograde {name} ({student}) failed:\n{proc.stdout[-3000:]}\n"
                                  f"{proc.stderr[-3000:]}")
    with Gradebook(db, course_id="sccourse") as gb:
        sub = gb.find_submission_notebook(name, name, student)
        return {g.name: (g.score, g.max_score) for g in sub.grades if g.auto_score is not None}


@pytest.fixture(scope="module")
def autograded(course):
    """Autograde three submissions per assignment; returns {name: ({student: {grade_id: (score, max)}}, ...)}.

    The 3 x len(NAMES) runs are independent and go two at a time (CI machines have two cores)."""
    jobs, meta = {}, {}
    for name in NAMES:
        source = nbformat.read(str(course / "solutions" / name / f"{name}.ipynb"), as_version=4)
        release = nbformat.read(str(course / "assignments" / name / f"{name}.ipynb"), as_version=4)
        hang = nbformat.read(str(course / "solutions" / name / f"{name}.ipynb"), as_version=4)
        answer_cells = [c for c in hang.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]
        answer_cells[-1].source = f"{HANG_MARK}\nwhile True:\n    pass\n" + answer_cells[-1].source
        for student, nb in zip(STUDENTS, (source, release, hang)):
            _set_quick(nb)
            jobs[name, student] = nb
        meta[name] = ([c.metadata["nbgrader"]["grade_id"] for c in source.cells
                       if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"],
                      answer_cells[-1].metadata["nbgrader"]["grade_id"], source)
    workers = int(os.environ.get("SCCOURSE_GRADING_WORKERS", "2"))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {key: pool.submit(_autograde_one, course, *key, nb) for key, nb in jobs.items()}
        scores = {key: f.result() for key, f in futures.items()}
    return {name: ({s: scores[name, s] for s in STUDENTS}, *meta[name]) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_scores_full_marks(autograded, name):
    scores, test_ids, _, _ = autograded[name]
    ref = scores["reference"]
    assert set(test_ids) <= set(ref), f"{name}: not every test cell was graded: {sorted(set(test_ids) - set(ref))}"
    lost = {k: v for k, v in ref.items() if v[0] != v[1]}
    assert not lost, f"{name}: the reference solution loses points on {lost}"


@pytest.mark.parametrize("name", NAMES)
def test_blank_release_scores_zero(autograded, name):
    scores, test_ids, _, _ = autograded[name]
    blank = scores["blank"]
    assert set(test_ids) <= set(blank)
    earned = {k: v for k, v in blank.items() if v[0] != 0}
    assert not earned, f"{name}: the blank release earns points on {earned}"


@pytest.mark.parametrize("name", NAMES)
def test_hanging_cell_times_out_and_the_rest_is_graded(autograded, name):
    scores, test_ids, hung_id, source = autograded[name]
    hang = scores["hang"]
    assert set(test_ids) <= set(hang), "grading stopped at the hanging cell"
    order = [c.metadata.get("nbgrader", {}).get("grade_id") for c in source.cells]
    hung_pos = order.index(hung_id)
    after = [gid for gid in test_ids if order.index(gid) > hung_pos]
    before = [gid for gid in test_ids if order.index(gid) < hung_pos]
    assert after, f"{name}: the last answer cell should be followed by a test cell"
    assert hang[after[0]][0] == 0, "the question whose answer hung must score zero"
    for gid in before:
        assert hang[gid][0] == hang[gid][1], f"{name}: {gid} should keep full marks, got {hang[gid]}"
