import io
import sys

import pytest

from sccourse import _progress


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


@pytest.mark.parametrize(("tty", "expected"), [(True, True), (False, False)])
def test_default_follows_the_terminal(monkeypatch, tty, expected):
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    assert _progress.enabled(None) is expected


def test_a_log_gets_no_updates(monkeypatch):
    log = _Stream(False)
    monkeypatch.setattr(sys, "stderr", log)
    for _ in _progress.bar(range(500), progress=None, file=log):
        pass
    assert log.getvalue() == ""
    shown = _Stream(False)
    for _ in _progress.bar(range(5), progress=True, file=shown):
        pass
    assert "5/5" in shown.getvalue()


def test_bad_value_is_named():
    with pytest.raises(TypeError, match="progress must be"):
        _progress.enabled("yes")
