"""Tests for what every sccourse.plotting figure shares: its title and the optional file it is written to."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sccourse import plotting  # noqa: E402
from sccourse.plotting._common import _finish  # noqa: E402


def test_finish_titles_saves_and_returns_the_figure(tmp_path):
    fig, _ = plt.subplots()
    out = tmp_path / "fig.png"
    assert _finish(fig, title="A title", save=out) is fig
    assert fig._suptitle is not None and fig._suptitle.get_text() == "A title"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a PNG file was written
    fig2, _ = plt.subplots()
    assert _finish(fig2) is fig2 and fig2._suptitle is None  # no title asked, none set
    plt.close("all")


def test_a_figure_function_writes_the_file_it_is_given(tmp_path):
    rng = np.random.default_rng(0)
    history = pd.DataFrame({"iteration": np.arange(1, 21), "objective": np.linspace(5, 1, 20),
                            "ari": np.where(np.arange(20) % 5 == 4, rng.uniform(size=20), np.nan)})
    out = tmp_path / "curves.svg"
    fig = plotting.monitor_perf(history, title="run", save=out)
    assert fig._suptitle.get_text() == "run"
    assert out.read_text().lstrip().startswith("<?xml")
    plt.close("all")
