"""Grading round trips with nbgrader and the sandboxed grading kernel, for every assignment in solutions/.

For each assignment, in a scratch course directory, graded in quick mode (``SCCOURSE_GRADING_MODE=quick``):
- the release regenerated from the source equals the committed `assignments/<name>/`, and leaks no solution or
  hidden-test text;
- the source (whose parameters cell says quick = False) scores full marks, in the instructor's mode;
- the blank release scores zero on every autograded cell;
- a submission made only of library shortcuts scores zero on every cell that asks for an implementation;
- a submission whose first answer is missing and whose last answer loops forever loses those two questions only
  (the loop is interrupted after a short time-out, every other cell keeps its points).
For `00_orientation` also: tampering submissions gain nothing, read nothing, change no other grade and are flagged; a
kernel that dies keeps the earlier points and is flagged; `quick = True` in a submission does not change the mode;
feedback holds no hidden-test source.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from coursetools import mutations as _mutations
from coursetools.course import ROOT, assignment_names, generate, tool_env
from sccourse.grading._sandbox import missing_tools

NAMES = [
    n for n in assignment_names() if n in os.environ.get("SCCOURSE_TEST_NOTEBOOKS", n).split(",")
]  # a developer's subset
HANG_MARK = "# sccourse-hang-test"
HANG_TIMEOUT = 20

pytestmark = pytest.mark.skipif(
    bool(missing_tools()),
    reason=f"the grading sandbox needs {missing_tools()} (apt-get install bubblewrap); .ci/run installs it",
)


def _cells(path: Path):
    return nbformat.read(str(path), as_version=4).cells


def _blocks(text: str, begin: str, end: str) -> list[str]:
    return re.findall(rf"{re.escape(begin)}\n(.*?){re.escape(end)}", text, flags=re.S)


def _grade_ids(nb) -> list[str]:
    return [
        c.metadata["nbgrader"]["grade_id"]
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"
    ]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A scratch course directory holding copies of the sources, fresh releases and a filled gradebook."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    with open(root / "nbgrader_config.py", "a") as fh:
        fh.write(
            f"\nc.Execute.timeout_func = lambda cell: {HANG_TIMEOUT} if {HANG_MARK!r} in cell.source else 600\n"
        )
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
            f"cell {i} of assignments/{name} differs from the generated release: run `python3 tasks.py release {name}`"
        )
        assert a.metadata == b.metadata, f"cell {i} metadata of assignments/{name} is stale"
    files = sorted(p.name for p in (ROOT / "assignments" / name).iterdir() if p.name != ".ipynb_checkpoints")
    expected = sorted(p.name for p in (course / "assignments" / name).iterdir())
    assert files == expected


def test_config_gives_a_loaded_machines_kernel_time_to_start():
    """The grading kernel imports the watched libraries before it reports ready; on a loaded machine that takes
    longer than nbclient's 60 s default, which would fail a correct submission as a whole."""
    from nbclient import NotebookClient
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    assert config.Execute.startup_timeout >= 5 * NotebookClient.startup_timeout.default_value
    assert config.Execute.interrupt_on_timeout is True


@pytest.mark.parametrize("name", NAMES)
def test_release_holds_no_solution_or_hidden_test(name):
    source = _cells(ROOT / "solutions" / name / f"{name}.ipynb")
    release_text = (ROOT / "assignments" / name / f"{name}.ipynb").read_text()
    release_src = "\n".join(c.source for c in _cells(ROOT / "assignments" / name / f"{name}.ipynb"))
    assert "BEGIN HIDDEN TESTS" not in release_text and "BEGIN SOLUTION" not in release_text
    assert "Model answer" not in release_text and "Rubric" not in release_text
    n_graded = 0
    for cell in source:
        meta = cell.metadata.get("nbgrader", {})
        secret = []
        if meta.get("solution") and cell.cell_type == "code":
            secret += _blocks(cell.source, "### BEGIN SOLUTION", "### END SOLUTION")
        if meta.get("solution") and cell.cell_type == "markdown":
            secret.append(cell.source)
        if meta.get("grade") and cell.cell_type == "code":
            n_graded += 1
            secret += _blocks(cell.source, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
        public = re.sub(
            r"### BEGIN (SOLUTION|HIDDEN TESTS)\n.*?### END (SOLUTION|HIDDEN TESTS)",
            "",
            cell.source,
            flags=re.S,
        )
        for block in secret:
            for line in block.splitlines():
                line = line.strip()
                # a line that is also public elsewhere (imports, shared set-up) is no secret
                if len(line) < 12 or line.startswith("#") or line in public:
                    continue
                assert line not in release_src, f"{name}: release leaks the line {line!r}"
    assert n_graded >= 3, f"{name}: expected at least 3 autograded test cells, found {n_graded}"


# ---- submissions --------------------------------------------------------------------------------------------
def _source(course, name):
    return nbformat.read(str(course / "solutions" / name / f"{name}.ipynb"), as_version=4)


def _release(course, name):
    return nbformat.read(str(course / "assignments" / name / f"{name}.ipynb"), as_version=4)


def _answers(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]


def _shortcuts(course, name):
    nb = _source(course, name)
    spec = _mutations.load_spec(name)
    replaced = []
    for cell in _answers(nb):
        entry = spec.get(cell.metadata["nbgrader"]["grade_id"], {})
        if entry.get("shortcut"):
            cell.source = entry["shortcut"]
            replaced.append(cell.metadata["nbgrader"]["grade_id"])
    return nb, replaced


def _first_missing_last_hangs(course, name):
    nb = _source(course, name)
    blank = {c.metadata["nbgrader"]["grade_id"]: c.source for c in _answers(_release(course, name))}
    answers = _answers(nb)
    answers[0].source = blank[answers[0].metadata["nbgrader"]["grade_id"]]
    answers[-1].source = f"{HANG_MARK}\nwhile True:\n    pass\n" + answers[-1].source
    return nb, answers[0].metadata["nbgrader"]["grade_id"], answers[-1].metadata["nbgrader"]["grade_id"]


def _autograde(course: Path, name: str, student: str, nb, *, mode: str = "quick", keep: bool = False) -> dict:
    """Autograde one submission in its own copy of the course (own gradebook), so that runs go in parallel.

    Returns ``{"scores": {grade_id: (score, max)}, "root": Path, "report": dict}``."""
    from nbgrader.api import Gradebook

    root = course.parent / f"{course.name}-{student}-{name}-{mode}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(
        course, root, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback", "reports")
    )
    dest = root / "submitted" / student / name
    dest.mkdir(parents=True)
    nbformat.write(nb, str(dest / f"{name}.ipynb"))
    db = f"sqlite:///{root / 'gradebook.db'}"
    cmd = [
        sys.executable,
        "-m",
        "nbgrader",
        "autograde",
        name,
        "--student",
        student,
        "--create",
        "--force",
        f"--CourseDirectory.root={root}",
        f"--CourseDirectory.db_url={db}",
    ]
    # one compute thread per kernel: two kernels share the machine's cores instead of oversubscribing them
    env = {
        **tool_env(),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "SCCOURSE_GRADING_MODE": mode,
    }
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, (
        f"nbgrader autograde {name} ({student}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    with Gradebook(db, course_id="sccourse") as gb:
        sub = gb.find_submission_notebook(name, name, student)
        scores = {g.name: (g.score, g.max_score) for g in sub.grades if g.auto_score is not None}
        comments = {c.name: c.auto_comment for c in sub.comments if c.auto_comment}
        needs_review = any(g.needs_manual_grade for g in sub.grades if g.auto_score is not None)
    report = json.loads((root / "reports" / name / f"{student}.json").read_text())
    return {
        "scores": scores,
        "root": root,
        "report": report,
        "comments": comments,
        "needs_review": needs_review,
        "log": proc.stdout + proc.stderr,
    }


@pytest.fixture(scope="module")
def autograded(course):
    """Four submissions per assignment, graded two at a time (CI machines have two cores)."""
    jobs, meta = {}, {}
    for name in NAMES:
        short, replaced = _shortcuts(course, name)
        mixed, missing, hung = _first_missing_last_hangs(course, name)
        for student, nb in (
            ("reference", _source(course, name)),
            ("blank", _release(course, name)),
            ("shortcuts", short),
            ("mixed", mixed),
        ):
            jobs[name, student] = nb
        meta[name] = dict(
            test_ids=_grade_ids(_source(course, name)),
            replaced=replaced,
            missing=missing,
            hung=hung,
            source=_source(course, name),
        )
    workers = int(os.environ.get("SCCOURSE_GRADING_WORKERS", "2"))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {key: pool.submit(_autograde, course, *key, nb) for key, nb in jobs.items()}
        results = {key: f.result() for key, f in futures.items()}
    return {name: ({s: r for (n, s), r in results.items() if n == name}, meta[name]) for name in NAMES}


def _test_of(source, answer_id):
    pairs = dict(_mutations.answer_and_test_cells(source))
    index = next(
        i for i, c in enumerate(source.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == answer_id
    )
    return source.cells[pairs[index]].metadata["nbgrader"]["grade_id"]


@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_scores_full_marks_in_the_instructors_mode(autograded, name):
    results, meta = autograded[name]
    ref = results["reference"]["scores"]
    assert set(meta["test_ids"]) <= set(ref), f"{name}: not every test cell was graded"
    lost = {k: v for k, v in ref.items() if v[0] != v[1]}
    assert not lost, f"{name}: the reference solution loses points on {lost}"
    out = nbformat.read(
        str(results["reference"]["root"] / "autograded" / "reference" / name / f"{name}.ipynb"), as_version=4
    )
    text = "".join(
        o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "grading mode: quick" in text, (
        "the source says quick = False; grading must run in the instructor's mode"
    )
    assert not results["reference"]["report"]["flags"], (
        f"{name}: the reference is flagged: {results['reference']['report']['flags']}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_blank_release_scores_zero(autograded, name):
    results, meta = autograded[name]
    blank = results["blank"]["scores"]
    assert set(meta["test_ids"]) <= set(blank)
    earned = {k: v for k, v in blank.items() if v[0] != 0}
    assert not earned, f"{name}: the blank release earns points on {earned}"


@pytest.mark.parametrize("name", NAMES)
def test_library_shortcuts_score_zero(autograded, name):
    results, meta = autograded[name]
    scores = results["shortcuts"]["scores"]
    assert meta["replaced"], f"{name}: no shortcut answers in tests/mutations/{name}.yaml"
    for answer_id in meta["replaced"]:
        test_id = _test_of(meta["source"], answer_id)
        assert scores[test_id][0] == 0, (
            f"{name}: the library shortcut for {answer_id} earns {scores[test_id]}"
        )


@pytest.mark.parametrize("name", NAMES)
def test_one_missing_and_one_hanging_answer_cost_only_their_own_points(autograded, name):
    results, meta = autograded[name]
    scores = results["mixed"]["scores"]
    assert set(meta["test_ids"]) <= set(scores), "grading stopped early"
    lost = {_test_of(meta["source"], meta["missing"]), _test_of(meta["source"], meta["hung"])}
    for gid in meta["test_ids"]:
        if gid in lost:
            assert scores[gid][0] == 0, f"{name}: {gid} should score 0, got {scores[gid]}"
        else:
            assert scores[gid][0] == scores[gid][1], (
                f"{name}: {gid} should keep full marks, got {scores[gid]}"
            )
    assert any(f["rule"] == "timeout" for f in results["mixed"]["report"]["flags"])


# ---- tampering, a dying kernel, the grading mode and feedback (00_orientation) -------------------------------
TAMPER = """
import os, sqlite3, numpy.testing, scanpy as sc
print("marker: tamper cell ran")
for _p in {paths!r}:
    try:
        with open(_p, "rb") as _fh:
            print("READ-OK", _p, _fh.read(40))
    except Exception as _err:
        print("read failed:", type(_err).__name__)
try:
    _db = sqlite3.connect({db!r})
    _db.execute("update grade set manual_score = 0")
    _db.execute("update grade_cells set max_score = 0")
    _db.commit()
    print("WRITE-OK")
except Exception as _err:
    print("db failed:", type(_err).__name__)
numpy.testing.assert_allclose = lambda *a, **k: None
numpy.testing.assert_array_equal = lambda *a, **k: None
sc.pp.calculate_qc_metrics = lambda *a, **k: (qc_table(a[0].X, a[0].var_names), None)
def qc_table(X, var_names):
    import pandas as pd
    n = X.shape[0]
    return pd.DataFrame({{"total_counts": np.asarray(X.sum(axis=1)).ravel() * 1.0,
                         "n_genes_by_counts": np.zeros(n, dtype=int), "pct_counts_mt": np.zeros(n)}})
"""


@pytest.fixture(scope="module")
def integrity(course):
    """Tampering, dying and mode-switching submissions of 00_orientation, plus a reference graded in full mode."""
    name = "00_orientation"
    if name not in NAMES:
        pytest.skip("00_orientation is not among SCCOURSE_TEST_NOTEBOOKS")
    source = _source(course, name)
    paths = [
        str(course / "solutions" / name / f"{name}.ipynb"),
        str(ROOT / "solutions" / name / f"{name}.ipynb"),
        str(course / "gradebook.db"),
        "/etc/shadow",
    ]
    tamper = _source(course, name)
    first = _answers(tamper)[0]
    first.source = TAMPER.format(paths=paths, db=str(course / "gradebook.db"))
    dying = _source(course, name)
    _answers(dying)[2].source = "import os\nos._exit(0)\n" + _answers(dying)[2].source
    switch = _source(course, name)
    for cell in switch.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace("quick = False", "quick = True")
    setup_index = next(i for i, c in enumerate(switch.cells) if "grading.mode(quick)" in c.source)
    switch.cells.insert(setup_index + 1, nbformat.v4.new_code_cell("quick = True"))
    jobs = {
        "tamper": (tamper, "quick"),
        "dying": (dying, "quick"),
        "switch": (switch, "full"),
        "reference": (source, "quick"),
    }
    with ThreadPoolExecutor(max_workers=int(os.environ.get("SCCOURSE_GRADING_WORKERS", "2"))) as pool:
        futures = {
            k: pool.submit(_autograde, course, name, k, nb, mode=mode) for k, (nb, mode) in jobs.items()
        }
        return {k: f.result() for k, f in futures.items()} | {
            "name": name,
            "source": source,
            "course": course,
        }


def _outputs_text(result, name, student):
    nb = nbformat.read(str(result["root"] / "autograded" / student / name / f"{name}.ipynb"), as_version=4)
    return "".join(
        o.get("text", "") + str(o.get("evalue", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


def test_tampering_gains_nothing_reads_nothing_and_is_flagged(integrity):
    name, res = integrity["name"], integrity["tamper"]
    text = _outputs_text(res, name, "tamper")
    assert "marker: tamper cell ran" in text
    assert "READ-OK" not in text and "WRITE-OK" not in text
    assert res["scores"]["qc_table_tests"][0] == 0, "a wrong answer behind replaced comparisons must score 0"
    rules = {f["rule"] for f in res["report"]["flags"]}
    assert {"monkeypatch", "import", "file"} <= rules, rules
    assert res["needs_review"] and any("Flagged for review" in c for c in res["comments"].values())
    # the course's own gradebook (that the cell tried to write) is untouched
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{integrity['course'] / 'gradebook.db'}", course_id="sccourse") as gb:
        assert gb.find_assignment(name).max_score > 0
        assert all(g.max_score > 0 for nb in gb.find_assignment(name).notebooks for g in nb.grade_cells)


def test_dying_kernel_keeps_earlier_points_and_is_flagged(integrity):
    _name, res = integrity["name"], integrity["dying"]
    ids = _grade_ids(integrity["source"])
    scores = res["scores"]
    assert scores[ids[0]][0] == scores[ids[0]][1] and scores[ids[1]][0] == scores[ids[1]][1]
    assert all(scores[g][0] == 0 for g in ids[2:])
    assert any(f["rule"] == "kernel-died" for f in res["report"]["flags"])
    assert res["needs_review"]


def test_quick_in_a_submission_does_not_change_the_grading_mode(integrity):
    name, res = integrity["name"], integrity["switch"]
    text = _outputs_text(res, name, "switch")
    assert "grading mode: full" in text and "2700 cells" in text.replace(",", "")
    assert all(s == m for s, m in res["scores"].values()), res["scores"]
    assert any(f["rule"] == "parameters" for f in res["report"]["flags"])


def test_feedback_shows_no_hidden_test_source(integrity):
    name, course = integrity["name"], integrity["tamper"]["root"]
    env = {**tool_env(), "SCCOURSE_GRADING_MODE": "quick"}
    db = f"sqlite:///{course / 'gradebook.db'}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbgrader",
            "generate_feedback",
            name,
            "--force",
            f"--CourseDirectory.root={course}",
            f"--CourseDirectory.db_url={db}",
        ],
        cwd=course,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (course / "feedback" / "tamper" / name / f"{name}.html").read_text()
    import html as html_lib

    page = html_lib.unescape(re.sub(r"<[^>]+>", "", html))
    secret = set()
    for cell in integrity["source"].cells:
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
        for block in _blocks(cell.source, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"):
            secret |= {
                ln.strip() for ln in block.splitlines() if len(ln.strip()) >= 20 and ln.strip() not in visible
            }
    leaked = [ln for ln in secret if ln in page]
    assert not leaked, f"feedback shows hidden-test lines: {leaked[:3]}"
    assert "qc_table" in page  # the student's own code is there
