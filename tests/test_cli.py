"""`sccourse check`: the student self-check reports graded cells with the visible tests only."""

from __future__ import annotations

import re
import shutil

import nbformat
import pytest

from coursetools.course import ROOT
from sccourse import cli


@pytest.fixture
def orientation(tmp_path):
    release = ROOT / "assignments" / "00_orientation" / "00_orientation.ipynb"
    source = ROOT / "solutions" / "00_orientation" / "00_orientation.ipynb"
    return release, source, tmp_path


def test_check_on_blank_release_reports_every_cell_unanswered(orientation):
    release, _, tmp = orientation
    nb_path = tmp / "student.ipynb"
    shutil.copy(release, nb_path)
    report = cli.check(nb_path, quick=True, timeout=300)
    assert len(report) >= 3
    assert all(r["status"] == "error" for r in report), report
    assert all("NotImplementedError" in r["message"] or "not defined" in r["message"] for r in report)


def test_check_runs_visible_tests_only_and_flags_wrong_answers(orientation):
    _, source, tmp = orientation
    nb = nbformat.read(str(source), as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "top_genes":
            # a wrong answer: alphabetical order instead of the largest mean fraction
            cell.source = "def top_genes(X, var_names, n=10):\n    return sorted(map(str, var_names))[:n]\n"
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "normalize_tests":
            # the hidden part of this cell would fail; the self-check must not run it
            cell.source = re.sub(
                r"### BEGIN HIDDEN TESTS\n", "### BEGIN HIDDEN TESTS\nassert False\n", cell.source
            )
    path = tmp / "student.ipynb"
    nbformat.write(nb, str(path))
    report = {r["grade_id"]: r for r in cli.check(path, quick=True, timeout=300)}
    assert report["qc_table_tests"]["status"] == "passed"
    assert report["normalize_tests"]["status"] == "passed"
    assert report["top_genes_tests"]["status"] == "failed"
    assert "mean FRACTION" in report["top_genes_tests"]["message"]
    assert cli.main(["check", str(path), "--quick"]) == 1


def test_check_rejects_what_is_not_a_notebook(tmp_path):
    with pytest.raises(ValueError, match="ipynb"):
        cli.check(tmp_path / "missing.ipynb")
    plain = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), str(plain))
    with pytest.raises(ValueError, match="no autograded test cells"):
        cli.check(plain)
    assert cli.main(["check", str(tmp_path / "nope.txt")]) == 2


def test_data_says_when_the_mirror_folder_does_not_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCCOURSE_DATA_MIRROR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("SCCOURSE_DATA_DIR", str(tmp_path / "cache"))
    assert cli.main(["data"]) == 1
    assert "does not exist" in capsys.readouterr().err
