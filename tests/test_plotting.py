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
    history = pd.DataFrame(
        {
            "iteration": np.arange(1, 21),
            "objective": np.linspace(5, 1, 20),
            "ari": np.where(np.arange(20) % 5 == 4, rng.uniform(size=20), np.nan),
        }
    )
    out = tmp_path / "curves.svg"
    fig = plotting.monitor_perf(history, title="run", save=out)
    assert fig._suptitle.get_text() == "run"
    assert out.read_text().lstrip().startswith("<?xml")
    plt.close("all")


def test_simulation_figures_name_terms_share_bins_and_compare_models():
    import anndata as ad
    from matplotlib.legend import Legend

    from sccourse import simulate

    rng = np.random.default_rng(0)
    n = 400
    obs = pd.DataFrame(
        {"age": rng.normal(size=n), "dose": rng.normal(size=n)}, index=[f"c{i}" for i in range(n)]
    )
    B = np.array([[1.0, 0.5, -0.3], [0.2, -0.4, 0.6]])
    counts = simulate.sample_nb(np.exp(1 + obs.to_numpy() @ B), 2.0, seed=1)
    adata = ad.AnnData(X=counts.astype(float), obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))
    sim = simulate.NegBinRegressionSimulator().fit(adata, "~ age + dose", device="cpu")
    truth = pd.DataFrame(np.vstack([np.ones(3), B]), index=sim.params["beta"].index)
    # legends name the design's columns, not "term 0"; a last panel puts the errors side by side
    fig = plotting.plot_parameter_recovery({"beta": truth.to_numpy()}, {"beta": sim.params["beta"]})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["estimate = truth", "Intercept", "age", "dose"] and len(fig.axes) == 2
    # several models in one mean-curve figure, one labelled line each
    line = simulate.NegBinRegressionSimulator().fit(adata, "~ age", device="cpu")
    fig = plotting.plot_mean_curves(adata, {"both": sim, "age only": line}, ["g0", "g2"], covariate="age")
    assert [ln.get_label() for ln in fig.axes[0].lines] == ["both", "age only"]
    assert any(isinstance(c, Legend) for c in fig.legends)
    # real vs two synthetic sets: the library-size histograms share their bins, legends name the sets
    synth = {"both": sim.sample(obs, seed=0), "age only": line.sample(obs, seed=0)}
    fig = plotting.plot_real_vs_synthetic(adata, synth)
    hist = fig.axes[2]
    edges = [p.get_path().vertices[:, 0] for p in hist.patches]
    assert len(edges) == 3 and all(np.allclose(np.unique(e), np.unique(edges[0])) for e in edges)
    assert hist.get_xscale() == "log" and hist.get_xlim()[1] < 10 * counts.sum(1).max()
    assert {t.get_text().split(" (")[0] for t in hist.get_legend().get_texts()} == {
        "real",
        "both",
        "age only",
    }
    ratio_labels = [t.get_text() for t in fig.axes[3].get_legend().get_texts()]
    assert any(t.startswith("both:") for t in ratio_labels) and any(
        t.startswith("age only:") for t in ratio_labels
    )
    # the NB pmf figure: one curve per size plus the Poisson, probabilities summing to ~1 over the range shown
    fig = plotting.plot_nb_pmfs(
        lambda y, mu, r: simulate.nb_logpmf(y, mu, r).numpy(), mean=5.0, sizes=(1.0, 5.0)
    )
    ys = [ln.get_ydata() for ln in fig.axes[0].lines]
    assert len(ys) == 3 and all(0.98 < y.sum() <= 1.0 + 1e-12 for y in ys)
    plt.close("all")


def test_every_topic_figure_is_exported_by_name():
    import importlib
    import pkgutil

    import sccourse.plotting as plotting

    topic_names = set()
    for info in pkgutil.iter_modules(plotting.__path__):
        if info.name.startswith("_"):
            module = importlib.import_module(f"sccourse.plotting.{info.name}")
            topic_names |= set(getattr(module, "__all__", []))
    assert topic_names, "no topic module declares __all__"
    assert set(plotting.__all__) == topic_names
    for name in topic_names:
        assert callable(getattr(plotting, name)), name
