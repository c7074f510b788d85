"""The class-scale grading engine (``sccourse grade``) on a small course, graded in quick mode in the sandbox.

One run on a 2-worker LocalCluster grades a correct submission (every autograded point), one whose first answer is missing (loses
that question only) and one whose notebook file is corrupt (reported as failed with nbgrader's reason while the
others finish); the course gradebook holds the two scores. A second run grades nothing that has not changed; a
third grades two assignments on one cluster (only the new submission); after a student's files change, a fourth
run regrades that submission only.
"""

from __future__ import annotations

import nbformat
import pytest

from benchmarks.grading import make_course
from sccourse.grading import _engine
from sccourse.grading._sandbox import missing_tools

NAME = "00_orientation"
OTHER = "05_nb_simulation"
TIMEOUT = 600  # per cell: the course builder sets 20 s for its hanging submissions, none here
pytestmark = [
    pytest.mark.skipif(bool(missing_tools()), reason="needs bubblewrap (apt-get install bubblewrap)"),
    pytest.mark.slow,
]


def _auto_points(course, name=NAME) -> float:
    """Points of the autograded (code) cells of the source; written answers are graded by hand."""
    nb = nbformat.read(str(course / "solutions" / name / f"{name}.ipynb"), as_version=4)
    return float(
        sum(
            c.metadata["nbgrader"].get("points", 0)
            for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
        )
    )


def _course_scores(course, name=NAME) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="sccourse") as gb:
        return {
            sub.student.id: float(sum((g.auto_score or 0) for nb in sub.notebooks for g in nb.grades))
            for sub in gb.find_assignment(name).submissions
        }


def test_engine_grades_in_parallel_reports_failures_and_resumes(tmp_path):
    course = tmp_path / "course"
    make_course(course, ("correct", "first-missing"))
    broken = course / "submitted" / "s02-broken" / NAME
    broken.mkdir(parents=True)
    (broken / f"{NAME}.ipynb").write_text('{"cells": [')  # a truncated upload

    rows = {
        r["student"]: r
        for r in _engine.grade(
            NAME, course_root=course, workers=2, mode="quick", timeout=TIMEOUT, progress=False
        )
    }
    correct, partial = rows["s00-correct"], rows["s01-first-missing"]
    assert correct["status"] == partial["status"] == "graded", rows
    assert (
        correct["score"] == _auto_points(course) > 0
    )  # every autograded point; written answers wait for a person
    assert correct["max_score"] > correct["score"]
    assert 0 < partial["score"] < correct["score"]
    assert rows["s02-broken"]["status"] == "failed"
    assert "nbgrader autograde failed for s02-broken" in rows["s02-broken"]["reason"]
    assert "NotJSONError" in rows["s02-broken"]["reason"]  # the cause, not nbgrader's generic summary
    assert _course_scores(course) == {"s00-correct": correct["score"], "s01-first-missing": partial["score"]}
    assert (course / "autograded" / "s00-correct" / NAME / f"{NAME}.ipynb").is_file()

    again = {
        r["student"]: r
        for r in _engine.grade(
            NAME, course_root=course, workers=1, mode="quick", timeout=TIMEOUT, progress=False
        )
    }
    assert again["s00-correct"]["status"] == again["s01-first-missing"]["status"] == "unchanged"
    assert again["s01-first-missing"]["score"] == partial["score"]
    assert again["s02-broken"]["status"] == "failed"  # a failed submission is tried again on the next run

    fixed = course / "submitted" / "s00-correct" / NAME / f"{NAME}.ipynb"
    (course / "submitted" / "s01-first-missing" / NAME / f"{NAME}.ipynb").write_bytes(fixed.read_bytes())
    # two assignments on one cluster: the changed submission of NAME and the first one of the other assignment
    third = _engine.grade(
        [NAME, OTHER],
        course_root=course,
        workers=2,
        mode="quick",
        students=["s00-correct"],
        timeout=TIMEOUT,
        progress=False,
    )
    assert [(r["assignment"], r["student"], r["status"]) for r in third] == [
        (NAME, "s00-correct", "unchanged"),
        (OTHER, "s00-correct", "graded"),
    ]
    assert third[1]["score"] == _auto_points(course, OTHER) > 0
    assert _course_scores(course, OTHER) == {"s00-correct": third[1]["score"]}
    fourth = {
        r["student"]: r
        for r in _engine.grade(
            NAME,
            course_root=course,
            workers=1,
            mode="quick",
            students=["s00-correct", "s01-first-missing"],
            timeout=TIMEOUT,
            progress=False,
        )
    }
    assert fourth["s00-correct"]["status"] == "unchanged"
    assert fourth["s01-first-missing"]["status"] == "graded"
    assert fourth["s01-first-missing"]["score"] == correct["score"]
    assert _course_scores(course)["s01-first-missing"] == correct["score"]


@pytest.mark.parametrize("names", [[], ["00_orientation", "00_orientation"], [""]])
def test_engine_refuses_an_empty_or_repeated_list_of_assignments(names, tmp_path):
    with pytest.raises(ValueError, match="assignment"):
        _engine.grade(names, course_root=tmp_path, progress=False)


def test_the_final_table_names_the_assignment_when_there_are_several(capsys):
    rows = [
        dict(
            assignment=NAME, student="s1", score=10.0, max_score=12.0, seconds=3.2, flags=0, status="graded"
        ),
        dict(
            assignment=OTHER,
            student="s1",
            score=None,
            max_score=9.0,
            seconds=0.0,
            flags=0,
            status="failed",
            reason="RuntimeError: boom",
        ),
    ]
    _engine.print_table(rows)
    out = capsys.readouterr().out
    assert f"{NAME}/s1" in out and f"{OTHER}/s1" in out and "failed (RuntimeError: boom)" in out
    assert "1 graded, 0 unchanged, 1 failed" in out
    _engine.print_table(rows[:1])
    out = capsys.readouterr().out
    assert f"{NAME}/s1" not in out and "s1" in out  # one assignment: the student alone
