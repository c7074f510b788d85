"""Every solution notebook runs top to bottom with papermill in quick mode, and is committed clean."""

from __future__ import annotations

import nbformat
import pytest

from sccourse._course import ROOT, assignment_names

NAMES = assignment_names()


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs_and_has_parameters(name):
    for folder in ("solutions", "assignments"):
        nb = nbformat.read(str(ROOT / folder / name / f"{name}.ipynb"), as_version=4)
        nbformat.validate(nb)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{folder}/{name} has outputs"
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, f"{folder}/{name}: expected one papermill parameters cell"
        for p in ("seed", "device", "quick"):
            assert f"\n{p} =" in "\n" + params[0].source, f"{folder}/{name}: parameters cell lacks `{p}`"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("name", NAMES)
def test_solution_notebook_runs_in_quick_mode(name, tmp_path):
    import papermill as pm

    out = tmp_path / f"{name}.ipynb"
    pm.execute_notebook(str(ROOT / "solutions" / name / f"{name}.ipynb"), str(out), parameters={"quick": True},
                        cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    nb = nbformat.read(str(out), as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
