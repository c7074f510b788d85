"""nbgrader configuration for the sccourse course directory (run nbgrader from the project root)."""

c = get_config()  # noqa: F821  (provided by nbgrader)

c.CourseDirectory.root = "."
c.CourseDirectory.course_id = "sccourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"
# Each assignment folder holds the notebook only; the released copy is regenerated from it.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.part"]

# Real cells are slow the first time (numba JIT in scanpy neighbors/UMAP takes ~30 s on 2 cores):
# nbgrader's 30 s default would fail correct work. A hanging cell is interrupted after this many
# seconds, scored 0, and grading goes on with the next cell.
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True
c.Execute.kernel_name = "python3"

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.enforce_metadata = True

# Keep committed notebooks free of outputs.
c.ClearOutput.enabled = True
