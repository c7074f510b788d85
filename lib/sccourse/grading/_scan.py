"""Static scan of a submission's editable cells for code that tampers with grading.

Nothing here changes a score: every finding becomes a flag that the grading report and the formgrader show to the
instructor, who decides. The sandbox and the grading kernel's guards are what keep tampering from working; the
scan makes sure that an attempt is never silent.
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass

# packages whose objects a submission must not reassign
WATCHED_ROOTS = {
    "numpy",
    "scipy",
    "pandas",
    "torch",
    "sklearn",
    "scanpy",
    "anndata",
    "sccourse",
    "builtins",
    "sys",
    "matplotlib",
    "IPython",
    "ipykernel",
    "nbgrader",
    "importlib",
    "os",
    "pytest",
    "unittest",
    "math",
    "seaborn",
    "igraph",
    "leidenalg",
    "formulaic",
}
FORBIDDEN_IMPORTS = {
    "sqlite3": "opens databases (the gradebook is one)",
    "ctypes": "calls native code directly (can crash or bypass the interpreter)",
    "cffi": "calls native code directly",
    "subprocess": "runs other programs",
    "pty": "runs other programs",
    "socket": "opens network connections",
    "requests": "opens network connections",
    "urllib": "opens network connections",
    "http": "opens network connections",
    "nbgrader": "reaches into the grading tool",
    "nbformat": "reads or writes notebooks",
    "nbclient": "executes notebooks",
    "jupyter_client": "talks to kernels",
    "linecache": "reads cached cell sources (hidden tests)",
    "gc": "walks the interpreter's objects",
    "inspect": "inspects the caller's frames (hidden tests)",
    "sccourse.grading._guard": "reaches into the grading machinery",
    "sccourse.grading._blocker": "reaches into the grading machinery",
    "sccourse.grading._kernel": "reaches into the grading machinery",
}
FORBIDDEN_CALLS = {
    "os._exit": "kills the kernel (the submission would lose its remaining grades)",
    "os.abort": "kills the kernel",
    "os.kill": "sends signals to processes",
    "os.killpg": "sends signals to processes",
    "os.fork": "starts processes",
    "os.system": "runs other programs",
    "os.popen": "runs other programs",
    "os.execv": "replaces the kernel process",
    "os.execvp": "replaces the kernel process",
    "os.chdir": "leaves the submission folder",
    "os.putenv": "changes the environment (grading mode, data locations)",
    "sys.setprofile": "removes the grading hooks",
    "sys.settrace": "removes the grading hooks",
    "threading.setprofile": "removes the grading hooks",
    "threading.settrace": "removes the grading hooks",
    "sys._getframe": "inspects the caller's frames (hidden tests)",
    "get_ipython": "reaches into the kernel (history, hooks, namespace)",
    "setattr": None,  # only flagged on watched modules, see _setattr_target
    "delattr": None,
    "exec": "runs code built at run time (the scan cannot read it)",
    "eval": "runs code built at run time (the scan cannot read it)",
    "compile": "builds code at run time (the scan cannot read it)",
    "__import__": "imports modules by computed name",
    "importlib.import_module": "imports modules by computed name",
    "importlib.reload": "reloads libraries",
}
HISTORY_NAMES = {"In", "Out", "_ih", "_oh", "_dh", "_i", "_ii", "_iii", "__builtins__", "__builtin__"}
PARAMETERS = {"quick", "seed", "device"}
COURSE_WORDS = re.compile(r"solutions|gradebook|submitted|autograded|exchange|\.db\b|/etc/|/root|/home|\.\./")
FILE_FUNCS = {
    "open",
    "io.open",
    "os.open",
    "os.listdir",
    "os.scandir",
    "os.walk",
    "os.remove",
    "os.unlink",
    "os.rename",
    "shutil.copy",
    "shutil.copyfile",
    "shutil.copytree",
    "shutil.rmtree",
    "shutil.move",
    "glob.glob",
    "pathlib.Path",
    "Path",
    "numpy.load",
    "numpy.save",
    "numpy.loadtxt",
    "pandas.read_csv",
    "pickle.load",
    "torch.load",
    "torch.save",
}
SAFE_MAGICS = {
    "time",
    "timeit",
    "matplotlib",
    "config",
    "precision",
    "pprint",
    "who",
    "whos",
    "debug",
    "lsmagic",
}


@dataclass
class Flag:
    """One finding: where it is, which rule, why it matters, and the offending line."""

    cell: int
    grade_id: str | None
    line: int
    rule: str
    message: str
    code: str

    def __str__(self) -> str:
        where = f"cell {self.cell}" + (f" ({self.grade_id})" if self.grade_id else "") + f", line {self.line}"
        return f"{where}: {self.message} — `{self.code.strip()[:120]}`"

    def as_dict(self) -> dict:
        return asdict(self)


def _to_python(source: str) -> tuple[str, list[tuple[int, str, str]]]:
    """Cell source with IPython syntax turned into Python, plus findings about magics and shell escapes."""
    found = []
    lines = source.splitlines()
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if s.startswith("!"):
            found.append((i, "shell", "runs a shell command"))
        elif s.startswith("%%"):
            name = s[2:].split()[0] if len(s) > 2 else ""
            if name not in SAFE_MAGICS:
                found.append((i, "magic", f"uses the cell magic %%{name}"))
        elif s.startswith("%"):
            name = s[1:].split()[0] if len(s) > 1 else ""
            if name not in SAFE_MAGICS:
                found.append((i, "magic", f"uses the magic %{name}"))
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        python = TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001
        python = source
    return python, found


class _Visitor(ast.NodeVisitor):
    def __init__(self, aliases: dict[str, str]):
        self.aliases = aliases  # local name -> dotted module or object path
        self.found: list[tuple[int, str, str]] = []

    def dotted(self, node) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            root = self.aliases.get(node.id, node.id)
            return ".".join([root, *reversed(parts)])
        if isinstance(node, ast.Call):  # e.g. get_ipython().user_ns
            inner = self.dotted(node.func)
            return None if inner is None else ".".join([inner + "()", *reversed(parts)])
        return None

    def watched(self, dotted: str | None) -> bool:
        return dotted is not None and dotted.split(".")[0] in WATCHED_ROOTS

    def add(self, node, rule, message):
        self.found.append((getattr(node, "lineno", 0), rule, message))

    # imports ---------------------------------------------------------------------------------------
    def visit_Import(self, node):
        for alias in node.names:
            self.aliases[alias.asname or alias.name.split(".")[0]] = (
                alias.name if alias.asname else alias.name.split(".")[0]
            )
            self.check_import(node, alias.name)

    def visit_ImportFrom(self, node):
        mod = node.module or ""
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{mod}.{alias.name}" if mod else alias.name
            self.check_import(node, f"{mod}.{alias.name}" if mod else alias.name)
        self.check_import(node, mod)

    def check_import(self, node, name):
        for bad, why in FORBIDDEN_IMPORTS.items():
            if name == bad or name.startswith(bad + "."):
                self.add(node, "import", f"imports {bad} ({why})")
                return

    # assignments to library objects -----------------------------------------------------------------
    def check_target(self, target, node):
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self.check_target(t, node)
            return
        if isinstance(target, ast.Attribute):
            dotted = self.dotted(target)
            if self.watched(dotted):
                self.add(node, "monkeypatch", f"reassigns {dotted}")
            elif dotted and dotted.startswith("get_ipython()"):
                self.add(node, "kernel", f"changes kernel internals ({dotted})")
        elif isinstance(target, ast.Subscript):
            dotted = self.dotted(target.value)
            if (
                dotted in ("sys.modules", "os.environ")
                or (dotted or "").endswith("__dict__")
                and self.watched(dotted)
            ):
                self.add(node, "monkeypatch", f"changes {dotted}[...]")
            elif dotted in HISTORY_NAMES:
                self.add(node, "kernel", f"changes the kernel's history ({dotted})")
        elif isinstance(target, ast.Name) and target.id in PARAMETERS:
            self.add(
                node,
                "parameters",
                f"reassigns the notebook parameter `{target.id}` (the grading mode and "
                "seed are set by the instructor)",
            )

    def visit_Assign(self, node):
        for t in node.targets:
            self.check_target(t, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self.check_target(node.target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        self.check_target(node.target, node)
        self.generic_visit(node)

    def visit_Delete(self, node):
        for t in node.targets:
            self.check_target(t, node)
        self.generic_visit(node)

    # calls ------------------------------------------------------------------------------------------
    def visit_Call(self, node):
        dotted = self.dotted(node.func)
        if dotted in ("get_ipython().run_line_magic", "get_ipython().run_cell_magic"):
            # a magic line: judged by its name in _to_python, not as a reach into the kernel
            for arg in node.args[1:]:
                self.visit(arg)
            return
        if dotted in ("setattr", "delattr") and node.args:
            owner = self.dotted(node.args[0])
            if self.watched(owner):
                self.add(node, "monkeypatch", f"{dotted} on {owner}")
        elif dotted in (
            "os.environ.update",
            "os.environ.pop",
            "os.environ.setdefault",
            "sys.modules.update",
            "sys.modules.pop",
            "sys.modules.setdefault",
        ):
            self.add(node, "monkeypatch", f"calls {dotted}")
        elif dotted is not None:
            base = dotted.split("(")[0]
            why = FORBIDDEN_CALLS.get(base) or FORBIDDEN_CALLS.get(dotted)
            if why:
                self.add(node, "call", f"calls {base} ({why})")
            elif base.startswith("inspect.") or base.startswith("gc."):
                self.add(node, "call", f"calls {base} (inspects the interpreter)")
            if base in FILE_FUNCS or base.endswith((".read_text", ".read_bytes", ".open", ".write_text")):
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        path = arg.value
                        if (path.startswith(("/", "~")) and not path.startswith("/tmp")) or ".." in path:
                            self.add(node, "file", f"opens a path outside the submission folder ({path!r})")
        self.generic_visit(node)

    # names and strings ------------------------------------------------------------------------------
    def visit_Name(self, node):
        if node.id in HISTORY_NAMES or re.fullmatch(r"_i\d+|_\d+", node.id):
            self.add(node, "kernel", f"reads the kernel's history or builtins ({node.id})")

    def visit_Constant(self, node):
        if isinstance(node.value, str) and COURSE_WORDS.search(node.value):
            self.add(node, "file", f"mentions a grading location ({node.value[:60]!r})")


def scan_source(source: str, aliases: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    """Findings ``(line, rule, message)`` for one cell; ``aliases`` carries imports from earlier cells."""
    python, found = _to_python(source)
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return found  # the cell cannot run either; nothing to flag
    visitor = _Visitor(aliases if aliases is not None else {})
    visitor.visit(tree)
    return sorted(found + visitor.found)


def scan_notebook(nb) -> list[Flag]:
    """Flags for every code cell a student can edit (answer cells and cells they added).

    Read-only cells (``nbgrader.locked``) and test cells are the instructor's and are restored by nbgrader before
    grading, so they are not scanned.
    """
    flags: list[Flag] = []
    aliases: dict[str, str] = {}
    last_answer = None
    first_answer = next(
        (
            c.metadata["nbgrader"]["grade_id"]
            for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("solution")
        ),
        None,
    )
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            last_answer = meta.get("grade_id")
        if cell.cell_type != "code":
            continue
        if meta.get("locked") or meta.get("grade"):
            # the instructor's code: its imports are what the student's cells see
            try:
                _Visitor(aliases).visit(ast.parse(_to_python(cell.source)[0]))
            except SyntaxError:
                pass
            continue
        lines = cell.source.splitlines()
        for line, rule, message in scan_source(cell.source, aliases):
            code = lines[line - 1] if 0 < line <= len(lines) else ""
            flags.append(
                Flag(index, meta.get("grade_id") or last_answer or first_answer, line, rule, message, code)
            )
    return flags
