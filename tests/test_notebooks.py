"""Every solution notebook: its structure, and one quick-mode run that also proves its tests reject wrong answers.

The run (``coursetools.mutations``) executes the solution top to bottom; at each answer cell it runs the wrong answers of
``tests/mutations/<name>.yaml`` (a library shortcut and realistic mistakes) followed by the cell's test, which must
fail for each, then the reference again, which must pass. No cell may raise or write to stderr, and every cell that
draws a figure must embed it. ``tasks.py course`` does the same in full mode.
"""

from __future__ import annotations

import os
import re

import nbformat
import pytest

from coursetools import mutations as _mutations
from coursetools.course import ROOT, assignment_names

NAMES = [
    n for n in assignment_names() if n in os.environ.get("SCCOURSE_TEST_NOTEBOOKS", n).split(",")
]  # a developer's subset
INTRO = "How this notebook is graded."


def _nb(folder: str, name: str):
    return nbformat.read(str(ROOT / folder / name / f"{name}.ipynb"), as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs_and_has_parameters(name):
    for folder in ("solutions", "assignments"):
        nb = _nb(folder, name)
        nbformat.validate(nb)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
            f"{folder}/{name} has outputs"
        )
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, f"{folder}/{name}: expected one papermill parameters cell"
        for p in ("seed", "device", "quick"):
            assert f"\n{p} =" in "\n" + params[0].source, f"{folder}/{name}: parameters cell lacks `{p}`"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("name", NAMES)
def test_grading_mode_and_narrative_are_read_only(name):
    nb = _nb("solutions", name)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert params.metadata.get("nbgrader", {}).get("locked"), "the parameters cell must be read-only"
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = code[code.index(params) + 1]
    assert setup.metadata.get("nbgrader", {}).get("locked"), "the set-up cell must be read-only"
    assert "quick = grading.mode(quick)" in setup.source, (
        "the set-up cell must apply the instructor's grading mode"
    )
    for cell in code:
        meta = cell.metadata.get("nbgrader", {})
        assert meta.get("locked") or meta.get("solution"), (
            f"{name}: code cell {cell.source[:60]!r} is neither read-only nor an answer cell"
        )
    assert INTRO in nb.cells[0].source, f"{name}: the first cell lacks the common paragraph on grading"


@pytest.mark.parametrize("name", NAMES)
def test_every_answer_cell_has_wrong_answers_to_reject(name):
    nb = _nb("solutions", name)
    spec = _mutations.load_spec(name)
    for index, test in _mutations.answer_and_test_cells(nb):
        gid = nb.cells[index].metadata["nbgrader"]["grade_id"]
        assert test is not None, f"{name}: answer cell {gid} has no test cell after it"
        entry = spec.get(gid, {})
        assert entry.get("shortcut"), (
            f"{name}: {gid} needs a library-shortcut answer in tests/mutations/{name}.yaml"
        )
        assert len(entry.get("mutants", [])) >= 2, f"{name}: {gid} needs at least two realistic wrong answers"
        assert "grading.forbid(" in nb.cells[test].source.split("### BEGIN HIDDEN TESTS")[0], (
            f"{name}: the visible part of {gid}'s test must run the answer with the library blocked"
        )


@pytest.mark.parametrize("name", NAMES)
def test_written_questions_are_visible_in_the_release(name):
    nb = _nb("assignments", name)
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown" and meta.get("grade") and meta.get("solution"):
            above = nb.cells[i - 1]
            text = re.sub(r"\s+", " ", above.source).strip()
            assert above.cell_type == "markdown" and above.metadata.get("nbgrader", {}).get("locked"), (
                f"{name}: written answer {meta['grade_id']} has no read-only question cell above it"
            )
            assert len(text) > 80 and "YOUR ANSWER HERE" not in text, (
                f"{name}: {meta['grade_id']}'s question is empty"
            )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cache = {}

    def run(name):
        if name not in cache:
            cache[name] = _mutations.run(
                ROOT / "solutions" / name / f"{name}.ipynb", quick=True, cwd=tmp_path_factory.mktemp(name)
            )
        return cache[name]

    return run


@pytest.mark.parametrize("name", NAMES)
def test_solution_runs_and_its_tests_reject_every_wrong_answer(runs, name):
    report = runs(name)
    assert report.ok, f"{name} (quick mode):\n" + "\n".join(report.problems())


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_is_embedded(runs, name):
    nb = runs(name).nb
    drawing = re.compile(r"\bplotting\.\w+\(|\bpl\.\w+\(|plt\.subplots|\.plot\(|sns\.")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not drawing.search(cell.source) or "if not quick" in cell.source:
            continue
        if cell.metadata.get("nbgrader", {}).get("solution"):  # defines a function, draws nothing yet
            continue
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{name}: cell {i} draws a figure but its output has no image:\n{cell.source[:200]}"
