"""Execute a solution notebook once and prove, at every graded cell, that its tests reject wrong answers.

The wrong answers of each notebook live in ``tests/mutations/<name>.yaml``::

    qc_table:                    # grade_id of an answer cell
      shortcut: |                # an answer that calls the library (must score 0)
        def qc_table(X, var_names):
            ...
      mutants:                   # realistic mistakes (each must score 0)
        - name: detected genes counted with >= 0
          replace:
            - ["(X > 0)", "(X >= 0)"]      # [old, new] substitutions in the reference answer

The notebook runs top to bottom in one kernel. At each answer cell that has wrong answers, after the reference
answer and its test cell have run (and passed), every wrong answer is run followed by the test cell (which must then
fail: an error or anything on stderr, as nbgrader scores it), and finally the reference answer and its test cell run
again (and must pass), so the rest of the notebook continues from the reference.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

ROOT = Path(__file__).resolve().parents[2]
MUTATIONS = ROOT / "tests" / "mutations"


@dataclass
class CellReport:
    """What happened at one answer cell."""

    grade_id: str
    test_id: str | None
    reference_passed: bool = True
    reference_message: str = ""
    wrong: list[tuple[str, bool, str]] = field(default_factory=list)  # (name, rejected, message)

    @property
    def ok(self) -> bool:
        return self.reference_passed and all(rejected for _, rejected, _ in self.wrong)


@dataclass
class Report:
    """Outcome of one notebook: per answer cell, plus errors in ordinary cells and the run time."""

    name: str
    quick: bool
    cells: list[CellReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # errors outside graded cells
    seconds: float = 0.0
    nb: object = None

    @property
    def ok(self) -> bool:
        return not self.errors and all(c.ok for c in self.cells)

    def problems(self) -> list[str]:
        out = list(self.errors)
        for c in self.cells:
            if not c.reference_passed:
                out.append(f"{c.grade_id}: the reference answer fails {c.test_id}: {c.reference_message}")
            for name, rejected, _message in c.wrong:
                if not rejected:
                    out.append(f"{c.grade_id}: wrong answer '{name}' passes {c.test_id}")
        return out


def load_spec(name: str) -> dict:
    import yaml

    path = MUTATIONS / f"{name}.yaml"
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def apply_mutant(source: str, mutant: dict) -> str:
    """The reference answer with the mutant's substitutions (each must match), or its full replacement."""
    if "source" in mutant:
        return mutant["source"]
    out = source
    for old, new in mutant["replace"]:
        if old not in out:
            raise ValueError(f"mutant {mutant.get('name')!r}: {old!r} not found in the answer")
        out = out.replace(old, new)
    return out


def wrong_answers(cell_spec: dict) -> list[tuple[str, dict]]:
    out = []
    if cell_spec.get("shortcut"):
        out.append(("shortcut: calls the library", {"source": cell_spec["shortcut"]}))
    for m in cell_spec.get("mutants", []):
        out.append((m["name"], m))
    return out


def _failed(cell) -> tuple[bool, str]:
    """Nbgrader's rule: an error output or anything written to stderr scores 0."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return True, f"{out.get('ename')}: {out.get('evalue', '')}".strip()[:300]
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            return True, "stderr: " + out.get("text", "")[:300]
    return False, ""


def answer_and_test_cells(nb) -> list[tuple[int, int | None]]:
    """(answer cell index, index of the first grade cell after it) for every code answer cell."""
    pairs = []
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            test = next(
                (
                    j
                    for j in range(i + 1, len(nb.cells))
                    if nb.cells[j].metadata.get("nbgrader", {}).get("grade")
                    and nb.cells[j].cell_type == "code"
                ),
                None,
            )
            pairs.append((i, test))
    return pairs


def _load_parameterized(path: Path, quick: bool):
    """The notebook with papermill's injected-parameters cell (``quick``) after its ``parameters`` cell."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    return parameterize_notebook(load_notebook_node(str(path)), {"quick": bool(quick)})


class _IPCKernelManager(AsyncKernelManager):
    """A kernel reached over ``ipc`` sockets in a private temporary folder: local only, nothing to encrypt (over TCP
    every kernel start logs a warning about unencrypted traffic into the build's output).
    """

    def __init__(self, **kwargs):
        folder = tempfile.mkdtemp(prefix="sccourse-kernel-")
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("ip", str(Path(folder) / "kernel"))
        super().__init__(**kwargs)
        self._ipc_folder = folder

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._ipc_folder, ignore_errors=True)


def run(
    path: str | Path,
    *,
    quick: bool,
    spec: dict | None = None,
    timeout: int = 1800,
    cwd: str | Path | None = None,
    figures: bool = True,
) -> Report:
    """Execute the notebook at ``path`` with the wrong answers of ``spec`` (default: its YAML file).

    ``figures=True`` runs the kernel with the inline backend (images embedded in the outputs); False uses Agg.
    """
    from nbclient import NotebookClient

    path = Path(path)
    name = path.stem
    spec = load_spec(name) if spec is None else spec
    nb = _load_parameterized(path, quick)
    pairs = dict(answer_and_test_cells(nb))
    unknown = set(spec) - {nb.cells[i].metadata["nbgrader"]["grade_id"] for i in pairs}
    if unknown:
        raise ValueError(f"{name}: wrong answers given for unknown answer cells {sorted(unknown)}")
    report = Report(name=name, quick=quick)
    env = dict(os.environ)
    if figures:
        env.pop("MPLBACKEND", None)
    else:
        env["MPLBACKEND"] = "Agg"
    env.pop("SCCOURSE_GRADING", None)
    env.pop("SCCOURSE_QUICK", None)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        kernel_manager_class=_IPCKernelManager,
        allow_errors=True,
        resources={"metadata": {"path": str(cwd or path.parent)}},
    )
    t0 = time.perf_counter()
    pending: dict[int, int] = {}  # test cell index -> answer cell index
    for a, t in pairs.items():
        if t is not None:
            pending[t] = a
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            client.execute_cell(cell, index)
            meta = cell.metadata.get("nbgrader", {})
            if index in pending:
                a = pending[index]
                answer = nb.cells[a]
                gid = answer.metadata["nbgrader"]["grade_id"]
                rep = CellReport(gid, meta.get("grade_id"))
                failed, message = _failed(cell)
                rep.reference_passed, rep.reference_message = not failed, message
                wrong = wrong_answers(spec.get(gid, {}))
                for label, mutant in wrong:
                    trial = copy.deepcopy(answer)
                    trial.source = apply_mutant(answer.source, mutant)
                    trial.outputs = []
                    client.execute_cell(trial, a)
                    test = copy.deepcopy(cell)
                    test.outputs = []
                    client.execute_cell(test, index)
                    rejected, why = _failed(test)
                    rep.wrong.append((label, rejected, why))
                if wrong:  # back to the reference, so that the notebook continues from it
                    answer.outputs = []
                    client.execute_cell(answer, a)
                    cell.outputs = []
                    client.execute_cell(cell, index)
                    failed, message = _failed(cell)
                    if failed:
                        rep.reference_passed, rep.reference_message = (
                            False,
                            "after the wrong answers: " + message,
                        )
                report.cells.append(rep)
            elif not meta.get("grade"):
                failed, message = _failed(cell)
                if failed:  # an error, or noise on stderr (warnings), outside the test cells
                    report.errors.append(f"cell {index}: {message}")
    report.seconds = time.perf_counter() - t0
    report.nb = nb
    return report
