"""Build nbgrader source notebooks from Python (developer tooling).

A course notebook is written as a short Python script that calls these helpers, so the cell
metadata nbgrader needs is always right::

    from coursetools.authoring import Notebook
    nb = Notebook("00_orientation")
    nb.md("# Title ...")
    nb.parameters(seed=0, device="auto", quick=False)
    nb.code("import sccourse")                      # plain, ungraded cell
    nb.solution('''def f(x):
        ### BEGIN SOLUTION
        return x + 1
        ### END SOLUTION''', grade_id="f")            # student answer cell (autograded via tests)
    nb.tests('''assert f(1) == 2
    ### BEGIN HIDDEN TESTS
    assert f(2) == 3
    ### END HIDDEN TESTS''', grade_id="f_tests", points=2)
    nb.write("solutions/00_orientation/00_orientation.ipynb")
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat

SCHEMA_VERSION = 3
PARAMETERS_TAG = "parameters"


def _src(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


class Notebook:
    """Accumulates cells with nbgrader metadata and writes an output-free ``.ipynb``."""

    def __init__(self, name: str):
        self.name = name
        self.nb = nbformat.v4.new_notebook()
        self.nb.metadata.update(
            {
                "kernelspec": {
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                    "name": "python3",
                },
                "language_info": {"name": "python"},
            }
        )
        self._ids: set[str] = set()

    def _meta(
        self,
        grade_id: str,
        *,
        grade: bool,
        solution: bool,
        locked: bool,
        points: float | None = None,
        task: bool = False,
    ) -> dict:
        if grade_id in self._ids:
            raise ValueError(f"duplicate grade_id {grade_id!r}")
        self._ids.add(grade_id)
        meta = {
            "grade": grade,
            "grade_id": grade_id,
            "locked": locked,
            "schema_version": SCHEMA_VERSION,
            "solution": solution,
            "task": task,
        }
        if grade:
            meta["points"] = points
        return meta

    def md(self, text: str, *, grade_id: str | None = None) -> None:
        """Markdown cell; read-only (locked) when ``grade_id`` is given."""
        cell = nbformat.v4.new_markdown_cell(_src(text))
        if grade_id:
            cell.metadata["nbgrader"] = self._meta(grade_id, grade=False, solution=False, locked=True)
        self.nb.cells.append(cell)

    def _auto_id(self, kind: str) -> str:
        n = sum(1 for i in self._ids if i.startswith(f"{kind}-")) + 1
        return f"{kind}-{n:02d}"

    def code(
        self, text: str, *, grade_id: str | None = None, tags: list[str] | None = None, locked: bool = True
    ) -> None:
        """Plain code cell (ungraded). Read-only by default: nbgrader restores it before grading, so the narrative
        a test cell relies on cannot be changed by a submission. ``locked=False`` leaves it editable (a playground).
        """
        cell = nbformat.v4.new_code_cell(_src(text))
        if locked:
            cell.metadata["nbgrader"] = self._meta(
                grade_id or self._auto_id("code"), grade=False, solution=False, locked=True
            )
        if tags:
            cell.metadata["tags"] = list(tags)
        self.nb.cells.append(cell)

    def parameters(self, **values) -> None:
        """The papermill ``parameters`` cell (needs at least ``seed``, ``device`` and ``quick``), read-only.

        Students switch to the quick version with ``SCCOURSE_QUICK=1`` (or ``sccourse check --quick``); at
        grading time the instructor's mode wins (``sccourse.grading.mode``, called in the set-up cell).
        """
        missing = {"seed", "device", "quick"} - set(values)
        if missing:
            raise ValueError(f"parameters cell needs {sorted(missing)}")
        lines = [
            "# Parameters (read-only). quick = True runs a smaller version in about a minute: start JupyterLab",
            "# with SCCOURSE_QUICK=1 for it. At grading time the instructor's choice is used.",
        ]
        lines += [f"{k} = {v!r}" for k, v in values.items()]
        self.code("\n".join(lines), tags=[PARAMETERS_TAG], grade_id="parameters")

    def solution(self, text: str, *, grade_id: str) -> None:
        """Autograded answer cell: the code between ``### BEGIN/END SOLUTION`` is removed on release."""
        body = _src(text)
        if "### BEGIN SOLUTION" not in body or "### END SOLUTION" not in body:
            raise ValueError(
                f"solution cell {grade_id!r} needs ### BEGIN SOLUTION / ### END SOLUTION markers"
            )
        cell = nbformat.v4.new_code_cell(body)
        cell.metadata["nbgrader"] = self._meta(grade_id, grade=False, solution=True, locked=False)
        self.nb.cells.append(cell)

    def question(self, text: str, *, grade_id: str | None = None) -> None:
        """Read-only markdown cell (a question, or text a test relies on)."""
        self.md(text, grade_id=grade_id or self._auto_id("question"))

    def written(self, question: str, answer: str, rubric: str, *, grade_id: str, points: float) -> None:
        """A manually graded written answer: the question in a read-only cell, then the answer cell.

        The source answer cell holds a model answer and the rubric (points per criterion); the release replaces
        it with "YOUR ANSWER HERE", so students see the question and an empty answer.
        """
        self.question(question, grade_id=f"{grade_id}_question")
        body = f"**Model answer.** {_src(answer)}\n\n**Rubric ({points:g} points).**\n{_src(rubric)}"
        cell = nbformat.v4.new_markdown_cell(body)
        cell.metadata["nbgrader"] = self._meta(
            grade_id, grade=True, solution=True, locked=False, points=points
        )
        self.nb.cells.append(cell)

    def tests(self, text: str, *, grade_id: str, points: float) -> None:
        """Autograder test cell (locked); hidden parts go between ``### BEGIN/END HIDDEN TESTS``."""
        body = _src(text)
        if points <= 0:
            raise ValueError("a test cell must carry positive points")
        cell = nbformat.v4.new_code_cell(body)
        cell.metadata["nbgrader"] = self._meta(
            grade_id, grade=True, solution=False, locked=True, points=points
        )
        self.nb.cells.append(cell)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tags = [c.metadata.get("tags", []) for c in self.nb.cells]
        if not any(PARAMETERS_TAG in t for t in tags):
            raise ValueError("notebook has no parameters cell")
        for i, cell in enumerate(self.nb.cells):
            cell["id"] = f"{self.name[:20].replace('_', '-')}-{i:03d}"
        nbformat.validate(self.nb)
        nbformat.write(self.nb, str(path))
        return path
