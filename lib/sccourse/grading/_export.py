"""Grade exports: nbgrader's CSV, a Canvas gradebook CSV, Gradescope ``results.json`` files.

- ``nbgrader``: nbgrader's own CSV (one row per student and assignment), written by ``nbgrader export``.
- ``canvas``: the layout Canvas imports (Gradebook → Import): ``Student, ID, SIS User ID, SIS Login ID, Section``, one
  column per assignment, and a ``Points Possible`` row first. The student id goes into ``SIS Login ID``.
- ``gradescope``: one ``<assignment>/<student>/results.json`` per submission in Gradescope's autograder format
  (``score``, and per test cell ``name``, ``score``, ``max_score``, ``visibility``, ``output``), where the output of a
  failed check is its message, never the hidden test's source.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from ._engine import Course


def _gradebook(course: Course):
    from nbgrader.api import Gradebook

    if not course.db_path.exists():
        raise FileNotFoundError(f"no gradebook at {course.db_path}")
    return Gradebook(f"sqlite:///{course.db_path}", course_id=course.course_id)


def export(fmt: str, *, course_root: str | Path = ".", out: str | Path | None = None) -> Path:
    """Write the export ``fmt`` and return its path (a file, or a folder for ``gradescope``)."""
    course = Course.load(course_root)
    default = {
        "nbgrader": "exports/grades-nbgrader.csv",
        "canvas": "exports/grades-canvas.csv",
        "gradescope": "exports/gradescope",
    }
    if fmt not in default:
        raise ValueError(f"format must be one of {sorted(default)}, got {fmt!r}")
    path = Path(out) if out else course.root / default[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "nbgrader":
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nbgrader",
                "export",
                f"--CsvExportPlugin.to={path}",
                f"--CourseDirectory.root={course.root}",
                f"--CourseDirectory.db_url=sqlite:///{course.db_path}",
            ],
            cwd=course.root,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ValueError(f"nbgrader export failed: {proc.stderr.strip()[-500:]}")
        return path
    if fmt == "canvas":
        return _canvas(course, path)
    return _gradescope(course, path)


def _canvas(course: Course, path: Path) -> Path:
    with _gradebook(course) as gb:
        assignments = sorted(gb.assignments, key=lambda a: a.name)
        header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"] + [a.name for a in assignments]
        rows = [["Points Possible", "", "", "", ""] + [f"{a.max_score:g}" for a in assignments]]
        for student in sorted(gb.students, key=lambda s: s.id):
            name = ", ".join(x for x in (student.last_name, student.first_name) if x) or student.id
            scores = []
            for a in assignments:
                try:
                    scores.append(f"{gb.find_submission(a.name, student.id).score:g}")
                except Exception:  # noqa: BLE001  (nbgrader's MissingEntry: no submission)
                    scores.append("")
            rows.append([name, "", "", student.id, ""] + scores)
    tmp = path.with_suffix(".part")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)
    return path


def _messages(course: Course, assignment: str, student: str, notebook: str) -> dict[str, str]:
    """Per test cell of an autograded notebook: its failure message without hidden-test source ("" if it passed)."""
    import nbformat

    from ._nbgrader import HideHiddenTests

    nb_path = course.root / course.autograded / student / assignment / f"{notebook}.ipynb"
    if not nb_path.exists():
        return {}
    nb, _ = HideHiddenTests().preprocess(nbformat.read(str(nb_path), as_version=4), {})
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade"):
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            stderr = [
                o
                for o in cell.get("outputs", [])
                if o.get("output_type") == "stream" and o.get("name") == "stderr"
            ]
            if errors:
                out[meta["grade_id"]] = "\n".join(errors[0].get("traceback", [])) or errors[0].get(
                    "ename", "error"
                )
            elif stderr:
                out[meta["grade_id"]] = (
                    "the cell wrote to stderr (nbgrader scores that 0):\n" + stderr[0]["text"][:500]
                )
            else:
                out[meta["grade_id"]] = ""
    return out


def _gradescope(course: Course, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with _gradebook(course) as gb:
        for assignment in gb.assignments:
            for submission in assignment.submissions:
                tests, total = [], 0.0
                for nb in submission.notebooks:
                    messages = _messages(course, assignment.name, submission.student.id, nb.name)
                    for grade in sorted(nb.grades, key=lambda g: g.name):
                        score = float(grade.score or 0.0)
                        total += score
                        tests.append(
                            {
                                "name": f"{nb.name}: {grade.name}",
                                "score": score,
                                "max_score": float(grade.max_score),
                                "visibility": "visible",
                                "output": messages.get(grade.name, "")
                                if grade.auto_score is not None
                                else "graded by hand",
                            }
                        )
                result = {
                    "score": total,
                    "tests": tests,
                    "output": f"{assignment.name}: {total:g} of {assignment.max_score:g} points",
                }
                dest = folder / assignment.name / submission.student.id / "results.json"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(json.dumps(result, indent=1))
    return folder
