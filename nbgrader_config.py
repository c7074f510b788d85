"""nbgrader configuration for the sccourse course directory (run nbgrader from the project root)."""

import os

c = get_config()  # noqa: F821  (provided by nbgrader)

# an absolute root: relative ones make the server log a warning on every request
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "sccourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")
# The exchange: where `nbgrader release_assignment` puts assignments for students to fetch, and where their
# submissions and feedback travel. Created on first use, writable by everyone as nbgrader needs (students submit
# into it). On a shared server point students' own nbgrader_config.py at the same folder (see the README).
c.Exchange.root = os.environ.get("SCCOURSE_EXCHANGE") or os.path.join(c.CourseDirectory.root, "exchange")
if not os.path.isdir(c.Exchange.root):
    os.makedirs(c.Exchange.root, exist_ok=True)
    os.chmod(c.Exchange.root, 0o777)
# Each assignment folder holds the notebook only; the released copy is regenerated from it.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.part"]

# ---- grading ------------------------------------------------------------------------------------------------
# The grading mode: the one place that decides whether submissions are graded in "full" mode (the real data, as
# the assignment is written) or "quick" mode (smaller data, for test runs). A submission's own `quick = ...` is
# never used: the parameters cell is read-only and restored before grading, and the grading kernel reports this
# mode to the notebook. SCCOURSE_GRADING_MODE overrides it for one run (the test suite grades in quick mode).
c.SandboxedExecute.grading_mode = os.environ.get("SCCOURSE_GRADING_MODE", "full")

# Every submission runs in the grading sandbox (bubblewrap: no network, no access to solutions/, the gradebook or
# other submissions; limits on memory, processes and CPU time). Grading refuses to start without bubblewrap,
# unless you pass --SandboxedExecute.sandbox=False on the command line.
c.SandboxedExecute.sandbox = True
c.SandboxedExecute.memory_limit = 16 * 2**30  # bytes of address space per grading kernel
c.SandboxedExecute.cpu_limit = 4 * 3600  # CPU seconds per notebook (all threads together)
c.SandboxedExecute.max_processes = 512  # processes + threads per grading kernel

c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]
c.Autograde.autograde_preprocessors = [
    "sccourse.grading._nbgrader.ScanSubmission",  # static scan: flags, never scores
    "sccourse.grading._nbgrader.SandboxedExecute",  # the sandboxed kernel, in the grading mode above
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
    "sccourse.grading._nbgrader.SaveFlags",  # flags -> formgrader comments, needs-manual-grade, reports/
]
# Feedback shows each failed check's message, never the hidden tests' source.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "sccourse.grading._nbgrader.HideHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]

# Real cells are slow the first time (numba JIT in scanpy neighbors/UMAP takes ~30 s on 2 cores):
# nbgrader's 30 s default would fail correct work. A hanging cell is interrupted after this many
# seconds, scored 0, and grading goes on with the next cell.
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True
# A grading kernel imports the libraries the hidden tests rely on before it reports ready (so that it can watch
# them for tampering): a few seconds on an idle machine, but past nbclient's 60 s start-up default on a heavily
# loaded one, which would fail the whole submission ("Kernel didn't respond in 60 seconds").
c.Execute.startup_timeout = 600
c.Execute.kernel_name = "python3"

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.enforce_metadata = True

# Keep committed notebooks free of outputs.
c.ClearOutput.enabled = True
