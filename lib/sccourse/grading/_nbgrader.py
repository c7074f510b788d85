"""nbgrader preprocessors of the course (configured in ``nbgrader_config.py``).

Autograde: :class:`ScanSubmission` (static scan, flags only) → :class:`SandboxedExecute` (each submission's kernel in
the sandbox, in the instructor's grading mode; a kernel that dies keeps the grades of the cells before it) → nbgrader's
own preprocessors → :class:`SaveFlags` (flags into the gradebook's comments, "needs manual grade", and a JSON report).

Feedback: :class:`HideHiddenTests` removes hidden-test source (and any echo of it in outputs or tracebacks) from what
students get back.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Enum, Integer, Unicode

from ._kernel import FLAG_PREFIX, MARK_BEGIN, MARK_END, _scrub
from ._scan import scan_notebook

FLAGS = "sccourse_flags"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _flag(resources, *, cell, grade_id, rule, message, line=0, code=""):
    resources.setdefault(FLAGS, []).append(
        dict(cell=cell, grade_id=grade_id, line=line, rule=rule, message=message, code=code)
    )


def _answer_ids(nb) -> list[tuple[int, str]]:
    return [
        (i, c.metadata["nbgrader"]["grade_id"])
        for i, c in enumerate(nb.cells)
        if c.metadata.get("nbgrader", {}).get("solution")
    ]


def _owner(nb, index: int) -> str | None:
    """grade_id of the answer cell a finding in cell ``index`` is attributed to."""
    answers = _answer_ids(nb)
    before = [gid for i, gid in answers if i <= index]
    return before[-1] if before else (answers[0][1] if answers else None)


class ScanSubmission(NbGraderPreprocessor):
    """Flag tampering patterns in the cells a student can edit (see :mod:`sccourse.grading._scan`)."""

    def preprocess(self, nb, resources):
        for f in scan_notebook(nb):
            _flag(resources, **{k: v for k, v in f.as_dict().items()})
        for f in resources.get(FLAGS, []):
            self.log.warning("flag: cell %s (%s): %s", f["cell"], f["grade_id"], f["message"])
        return nb, resources


class SandboxedExecute(Execute):
    """nbgrader's Execute, with each kernel in the grading sandbox and the instructor's grading mode.

    A kernel that dies (``os._exit``, a crash, the memory limit) no longer aborts the submission: the cells already
    run keep their outputs (and their points), every later cell gets an error output (0 points), and the submission
    is flagged for review.
    """

    sandbox = Bool(
        True,
        help="Run every kernel in the bubblewrap sandbox (refuses to grade when it is missing). "
        "False runs student code with the grader's rights: only for trusted notebooks.",
    ).tag(config=True)
    grading_mode = Enum(
        ["quick", "full"],
        "full",
        help="The mode every submission is graded in, whatever its parameters cell says.",
    ).tag(config=True)
    memory_limit = Integer(16 * 2**30, help="Address-space limit of a grading kernel, in bytes.").tag(
        config=True
    )
    cpu_limit = Integer(
        4 * 3600,
        help="CPU seconds (all threads) a grading kernel may use for the whole notebook.",
    ).tag(config=True)
    max_processes = Integer(512, help="Processes and threads a grading kernel may have.").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        from ._sandbox import SandboxUnavailableError, missing_tools

        if self.sandbox and missing_tools():
            raise SandboxUnavailableError(
                f"refusing to grade without the sandbox: {', '.join(missing_tools())} not found. Install it "
                "(Debian/Ubuntu: `apt-get install bubblewrap util-linux`), or pass --SandboxedExecute.sandbox=False "
                "to grade unsandboxed (student code then runs with your rights)."
            )
        self._dead_at = None
        self._resources = resources
        self._workdir = Path((resources or {}).get("metadata", {}).get("path") or ".").resolve()
        self._sandbox_obj = None
        saved = {k: os.environ.get(k) for k in ("SCCOURSE_GRADING", "SCCOURSE_GRADING_MODE")}
        if not self.sandbox:  # the kernel inherits this process's environment
            os.environ.update(SCCOURSE_GRADING="1", SCCOURSE_GRADING_MODE=self.grading_mode)
            if "--IPKernelApp.extensions=sccourse.grading._kernel" not in self.extra_arguments:
                self.extra_arguments = [
                    *self.extra_arguments,
                    "--IPKernelApp.extensions=sccourse.grading._kernel",
                ]
        try:
            nb, resources = super().preprocess(nb, resources, km=km)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            if self._sandbox_obj is not None:
                self._sandbox_obj.reclaim()
        self._runtime_flags(nb, resources)
        return nb, resources

    def create_kernel_manager(self):
        if not self.sandbox:
            return super().create_kernel_manager()
        from ._sandbox import Sandbox, SandboxKernelManager

        if not self.kernel_name:
            self.kernel_name = self.nb.metadata.get("kernelspec", {}).get("name") or "python3"
        self._sandbox_obj = Sandbox(
            self._workdir,
            memory_bytes=self.memory_limit,
            cpu_seconds=self.cpu_limit,
            max_processes=self.max_processes,
            env={"SCCOURSE_GRADING_MODE": self.grading_mode},
        )
        self.km = SandboxKernelManager(
            kernel_name=self.kernel_name, config=self.config, sandbox=self._sandbox_obj
        )
        # signals cannot cross into the sandbox's own session: interrupts go over the control channel
        self.km.kernel_spec.interrupt_mode = "message"
        return self.km

    def preprocess_cell(self, cell, resources, index):
        if self._dead_at is not None:
            if cell.cell_type == "code":
                self._error(cell, "KernelDied", f"not run: the kernel died in cell {self._dead_at}")
            return cell, resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError as err:
            self._dead_at = index
            self._error(
                cell,
                "KernelDied",
                f"the kernel died while running this cell ({err}); the cells after it were not run",
            )
            _flag(
                resources if resources is not None else self._resources,
                cell=index,
                grade_id=_owner(self.nb, index),
                rule="kernel-died",
                message="the kernel died (process exit, crash or resource limit); later cells score 0",
                code=cell.source.splitlines()[0] if cell.source else "",
            )
            return cell, resources

    @staticmethod
    def _error(cell, ename, evalue):
        cell.outputs = list(cell.get("outputs", [])) + [
            NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])
        ]

    def _runtime_flags(self, nb, resources):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            for out in cell.get("outputs", []):
                text = out.get("text", "") if out.get("output_type") == "stream" else ""
                if FLAG_PREFIX in text:
                    line = next(ln for ln in text.splitlines() if FLAG_PREFIX in ln)
                    _flag(
                        resources,
                        cell=index,
                        grade_id=_owner(nb, index),
                        rule="tampering",
                        message=line.replace(FLAG_PREFIX, "").strip(),
                    )
                if out.get("output_type") == "error" and out.get("ename") in ("TamperingError",):
                    _flag(
                        resources,
                        cell=index,
                        grade_id=_owner(nb, index),
                        rule="tampering",
                        message=f"{out.get('ename')}: {out.get('evalue', '')[:200]}",
                    )
                if out.get("output_type") == "error" and out.get("ename") == "CellTimeoutError":
                    _flag(
                        resources,
                        cell=index,
                        grade_id=_owner(nb, index),
                        rule="timeout",
                        message="a cell ran past the time limit and was interrupted",
                    )


class SaveFlags(NbGraderPreprocessor):
    """Write the flags of a submission where the instructor sees them.

    - the formgrader: a comment on the answer cell each flag belongs to, and every graded cell of the notebook
      marked "needs manual grade";
    - a JSON report ``reports/<assignment>/<student>.json`` next to the gradebook (scores and flags).
    """

    report_dir = Unicode(
        "", help="Folder for the JSON grading reports (default: reports/ beside the gradebook)."
    ).tag(config=True)

    def preprocess(self, nb, resources):
        from nbgrader.api import Gradebook

        info = resources["nbgrader"]
        flags = resources.get(FLAGS, [])
        with Gradebook(info["db_url"]) as gb:
            notebook = gb.find_submission_notebook(info["notebook"], info["assignment"], info["student"])
            if flags:
                by_answer: dict[str, list[str]] = {}
                for f in flags:
                    text = (
                        f"cell {f['cell']}"
                        + (f", line {f['line']}" if f.get("line") else "")
                        + f": {f['message']}"
                    )
                    by_answer.setdefault(f.get("grade_id") or "", []).append(text)
                for gid, texts in by_answer.items():
                    comment = next((c for c in notebook.comments if c.name == gid), None)
                    if comment is None and notebook.comments:
                        comment = notebook.comments[0]
                    if comment is not None:
                        comment.auto_comment = (
                            ((comment.auto_comment + "\n") if comment.auto_comment else "")
                            + "⚑ Flagged for review by the grading scan:\n"
                            + "\n".join(f"- {t}" for t in texts)
                        )
                for grade in notebook.grades:
                    grade.needs_manual_grade = True
                gb.db.commit()
            scores = {g.name: {"score": g.score, "max_score": g.max_score} for g in notebook.grades}
        root = Path(self.report_dir) if self.report_dir else self._default_report_dir(info["db_url"])
        out = root / info["assignment"] / f"{info['student']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.part")
        tmp.write_text(
            json.dumps(
                {
                    "assignment": info["assignment"],
                    "student": info["student"],
                    "notebook": info["notebook"],
                    "scores": scores,
                    "flags": flags,
                },
                indent=1,
            )
        )
        os.replace(tmp, out)
        return nb, resources

    @staticmethod
    def _default_report_dir(db_url: str) -> Path:
        if db_url.startswith("sqlite:///"):
            return Path(db_url[len("sqlite:///") :]).resolve().parent / "reports"
        return Path("reports").resolve()


def hidden_lines(nb) -> set[str]:
    """The stripped lines of every hidden-test block of ``nb`` (long enough to be recognisable)."""
    lines = set()
    for cell in nb.cells:
        src = cell.get("source", "")
        for block in re.findall(rf"{re.escape(MARK_BEGIN)}\n(.*?){re.escape(MARK_END)}", src, flags=re.S):
            lines |= {ln.strip() for ln in block.splitlines() if len(ln.strip()) >= 8}
    return lines


def _clean(text: str, secret: set[str]) -> str:
    return "\n".join(
        ln
        for ln in text.split("\n")
        if _ANSI.sub("", ln).strip() not in secret
        and not any(s in _ANSI.sub("", ln) for s in secret if len(s) >= 20)
    )


class HideHiddenTests(NbGraderPreprocessor):
    """For feedback: hidden-test source out of every cell, tracebacks reduced to their message, echoes removed."""

    def preprocess(self, nb, resources):
        secret = hidden_lines(nb)
        for cell in nb.cells:
            if MARK_BEGIN in cell.get("source", ""):
                cell.source = _scrub(cell.source)
            for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
                if out.get("output_type") == "error":
                    out["traceback"] = [
                        _clean(f"{out.get('ename', 'Error')}: {out.get('evalue', '')}", secret)
                    ]
                    out["evalue"] = _clean(out.get("evalue", ""), secret)
                elif out.get("output_type") == "stream":
                    out["text"] = _clean(out.get("text", ""), secret)
                for key in ("text/plain", "text/html", "text/markdown"):
                    data = out.get("data", {})
                    if key in data:
                        value = data[key] if isinstance(data[key], str) else "".join(data[key])
                        data[key] = _clean(value, secret)
        return nb, resources
