"""The grading helpers used by the notebooks' test cells: shortcut blocking, tamper detection, the static scan,
the fallback to reference results, the grading mode, and the feedback filter."""

from __future__ import annotations

import numpy as np
import numpy.testing
import pytest
import scipy.sparse as sp
import scipy.stats

from sccourse import grading, qc
from sccourse.grading import _guard, _scan
from sccourse.grading._nbgrader import HideHiddenTests, hidden_lines


def _adata():
    import anndata as ad

    a = ad.AnnData(sp.csr_matrix(np.array([[1.0, 2.0], [0.0, 3.0], [4.0, 0.0]])))
    a.var_names = ["A", "MT-B"]
    return a


def _nb_pmf(y, mu, r):
    return scipy.stats.nbinom.logpmf(y, r, r / (r + mu))


def test_forbid_blocks_a_direct_call_with_a_message_naming_the_function():
    with pytest.raises(grading.ShortcutError, match=r"qc_metrics.*qc_table"):
        with grading.forbid("sccourse.qc", task="qc_table"):
            qc.qc_metrics(_adata())


def test_forbid_blocks_aliases_and_third_party_instances():
    alias = qc.qc_metrics

    def answer():
        return alias(_adata())

    with pytest.raises(grading.ShortcutError):
        with grading.forbid("sccourse.qc"):
            answer()
    with pytest.raises(grading.ShortcutError, match="nbinom"):
        with grading.forbid("scipy.stats.nbinom"):
            _nb_pmf(3, 2.0, 5.0)


def test_forbid_records_a_call_that_the_answer_caught():
    def sneaky():
        try:
            return scipy.stats.nbinom.logpmf(3, 5.0, 0.5)
        except AssertionError:
            return 0.0

    with pytest.raises(grading.ShortcutError, match="caught"):
        with grading.forbid("scipy.stats.nbinom"):
            sneaky()


def test_forbid_lets_own_code_and_allowed_functions_run():
    def own(y, mu, r):
        from scipy.special import gammaln

        return (
            gammaln(y + r)
            - gammaln(r)
            - gammaln(y + 1)
            + r * np.log(r / (r + mu))
            + y * np.log(mu / (r + mu))
        )

    with grading.forbid("scipy.stats", "sccourse"):
        value = own(3.0, 2.0, 5.0)
    assert np.isclose(value, _nb_pmf(3, 2.0, 5.0))
    # an allowed function runs, and so does what it calls inside the blocked package
    with grading.forbid("sccourse", allow=["sccourse.qc.qc_metrics"]):
        qc.qc_metrics(_adata())


def test_forbid_detects_a_removed_hook():
    import sys

    with pytest.raises(grading.TamperingError):
        with grading.forbid("sccourse.qc"):
            sys.setprofile(None)


def test_forbid_rejects_unknown_names():
    with pytest.raises(ValueError, match="cannot block"):
        with grading.forbid("sccourse.qc.no_such_function"):
            pass


def test_guard_sees_and_restores_a_replaced_comparison(monkeypatch):
    _guard.snapshot()
    original = numpy.testing.assert_allclose
    numpy.testing.assert_allclose = lambda *a, **k: None
    try:
        assert "numpy.testing.assert_allclose" in _guard.changes()
        # the helpers refuse to run on a tampered library ...
        with pytest.raises(grading.TamperingError, match="assert_allclose"):
            grading.assert_allclose([1.0], [2.0])
    finally:
        restored = _guard.restore()
    assert "numpy.testing.assert_allclose" in restored
    assert numpy.testing.assert_allclose is original and not _guard.changes()
    # ... and, untampered, they compare for real
    with pytest.raises(AssertionError):
        grading.assert_allclose([1.0], [2.0])
    grading.assert_allclose([1.0], [1.0 + 1e-12])


def test_use_answer_falls_back_and_says_so(capsys):
    assert grading.use_answer("f", lambda: 3, lambda: 4) == 3

    def broken():
        raise NotImplementedError()

    assert grading.use_answer("f", broken, lambda: 4) == 4
    assert "`f` could not be used" in capsys.readouterr().out

    def check(v):
        assert v == 4, "far from the reference"

    assert grading.use_answer("f", lambda: 3, lambda: 4, check=check) == 4


def test_mode_is_the_instructors_at_grading_time(monkeypatch, capsys):
    monkeypatch.setattr(grading, "_GRADING", False)
    assert grading.mode(True) is True and grading.mode(False) is False
    monkeypatch.setattr(grading, "_GRADING", True)
    monkeypatch.setattr(grading, "_MODE", "full")
    assert grading.mode(True) is False
    assert "chosen by the instructor" in capsys.readouterr().out
    monkeypatch.setattr(grading, "_MODE", "quick")
    assert grading.mode(False) is True


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("import numpy.testing\nnumpy.testing.assert_allclose = lambda *a, **k: None", "monkeypatch"),
        ("import numpy as np\nnp.testing.assert_allclose = print", "monkeypatch"),
        ("import scanpy as sc\nsetattr(sc.pp, 'calculate_qc_metrics', len)", "monkeypatch"),
        ("import sys\nsys.modules['numpy.testing'] = None", "monkeypatch"),
        ("import builtins\nbuiltins.sum = lambda x: 0", "monkeypatch"),
        ("from sccourse import manifold\nmanifold.ManifoldHeat.sample = lambda self, X: X", "monkeypatch"),
        ("import sqlite3", "import"),
        ("from ctypes import CDLL", "import"),
        ("import subprocess as sp_\nsp_.run(['ls'])", "import"),
        ("import os\nos._exit(0)", "call"),
        ("x = get_ipython().user_ns", "call"),
        ("print(In[-2])", "kernel"),
        ("print(_ih)", "kernel"),
        ("text = open('/work/course/solutions/00/00.ipynb').read()", "file"),
        ("p = '../../gradebook.db'", "file"),
        ("quick = True", "parameters"),
        ("import os\nos.environ['SCCOURSE_GRADING_MODE'] = 'quick'", "monkeypatch"),
        ("!cat /etc/passwd", "shell"),
        ("%run other.py", "magic"),
        ("import sys\nsys.setprofile(None)", "call"),
        ("exec('im' + 'port os')", "call"),
    ],
)
def test_scan_flags_tampering(source, rule):
    rules = {r for _, r, _ in _scan.scan_source(source)}
    assert rule in rules, (source, rules)


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np\nimport scipy.sparse as sp\ndef f(X):\n    X = sp.csr_matrix(X)\n    return np.log1p(X.data)",
        "import torch\nnet = torch.nn.Linear(3, 2)\nnet.weight.data[:] = 0\nmodel = net.eval()",
        "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\ndf.loc[0, 'a'] = 2\ndf.columns = ['b']",
        "%time x = sum(range(10))",
        "import re\npat = re.compile('a+')\nresult = {}\nresult['x'] = 1",
        "from pathlib import Path\nout = Path('figure.png')\nopen('figure.png', 'wb')",
    ],
)
def test_scan_leaves_ordinary_answers_alone(source):
    assert _scan.scan_source(source) == []


def test_scan_notebook_skips_locked_cells_and_attributes_findings_to_answers():
    import nbformat

    nb = nbformat.v4.new_notebook()
    locked = {"nbgrader": {"locked": True, "grade_id": "setup", "grade": False, "solution": False}}
    answer = {"nbgrader": {"locked": False, "grade_id": "f", "grade": False, "solution": True}}
    nb.cells = [
        nbformat.v4.new_code_cell("import numpy as np\nquick = False", metadata=locked),
        nbformat.v4.new_code_cell("def f():\n    np.testing.assert_allclose = None", metadata=answer),
        nbformat.v4.new_code_cell("import sqlite3"),
    ]
    flags = _scan.scan_notebook(nb)
    assert [(f.cell, f.grade_id, f.rule) for f in flags] == [(1, "f", "monkeypatch"), (2, "f", "import")]
    assert "numpy.testing.assert_allclose" in str(flags[0])


def test_feedback_filter_removes_hidden_tests_and_their_echoes():
    import nbformat

    hidden = (
        "### BEGIN HIDDEN TESTS\nassert secret_value(answer) == 42, 'answer mismatch'\n### END HIDDEN TESTS\n"
    )
    cell = nbformat.v4.new_code_cell("assert answer > 0\n" + hidden)
    cell.outputs = [
        nbformat.v4.new_output(
            "error",
            ename="AssertionError",
            evalue="answer mismatch",
            traceback=["Traceback", "assert secret_value(answer) == 42, 'answer mismatch'"],
        ),
        nbformat.v4.new_output(
            "stream", name="stdout", text="assert secret_value(answer) == 42, 'answer mismatch'\nok\n"
        ),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert hidden_lines(nb) == {"assert secret_value(answer) == 42, 'answer mismatch'"}
    nb, _ = HideHiddenTests().preprocess(nb, {})
    text = nbformat.writes(nb)
    assert "secret_value" not in text
    assert "answer mismatch" in text  # the failed check's message stays
    assert "ok" in nb.cells[0].outputs[1]["text"]


def test_an_optimiser_step_is_not_tampering():
    import torch

    _guard.snapshot()
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert _guard.changes() == []
    grading.assert_allclose([1.0], [1.0])


def test_forbid_accepts_packages_with_unhashable_callables():
    from scipy.optimize import brentq

    with pytest.raises(grading.ShortcutError):
        with grading.forbid("scipy.optimize"):
            brentq(lambda x: x - 1.0, 0.0, 3.0)


def test_forbid_blocks_what_a_package_defines_not_what_every_caller_uses():
    import enum

    import torch

    class Colour(enum.Enum):
        RED = 1

    # blocking torch.autograd leaves ordinary tensor arithmetic and enums alone ...
    with grading.forbid("torch.autograd", "torch.utils.data"):
        x = torch.ones(3) * 2 + 1
        assert Colour(1) is Colour.RED
    assert float(x.sum()) == 9.0
    # ... and still blocks its own functions
    t = torch.ones(2, requires_grad=True)
    loss = (t * t).sum()
    with pytest.raises(grading.ShortcutError), grading.forbid("torch.autograd"):
        torch.autograd.grad(loss, t)
