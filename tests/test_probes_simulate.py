"""Bad input to the public functions of sccourse.simulate and sccourse.datasets that tests/test_probes.py does not
probe: the right exception type and a message that names the argument (or what was wrong), never a silent wrong
result or a crash deep inside numpy, torch or formulaic.

Each probe is (name, function call, expected exception types, a pattern the message must contain).
"""

from __future__ import annotations

import functools
import os
import tempfile

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sccourse import datasets, simulate

V = ValueError
T = (TypeError, ValueError)
NAN = float("nan")


@functools.cache
def _adata(n: int = 60, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {"grp": pd.Categorical(rng.choice(["a", "b"], size=n)), "x": rng.normal(size=n)},
        index=[f"c{i}" for i in range(n)],
    )
    Y = rng.negative_binomial(3.0, 0.4, size=(n, 3)).astype(np.float64)
    return ad.AnnData(X=Y, obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))


def _data(**obs_changes) -> ad.AnnData:
    a = _adata().copy()
    for column, (row, value) in obs_changes.items():
        a.obs.loc[a.obs_names[row], column] = value
    return a


@functools.cache
def _fitted() -> simulate.NegBinRegressionSimulator:
    return simulate.NegBinRegressionSimulator().fit(_adata(), "~ grp + x", device="cpu")


def _fit(formula="~ grp + x", adata=None, cls=simulate.NegBinRegressionSimulator, **kwargs):
    return cls().fit(_adata() if adata is None else adata, formula, **{"device": "cpu", **kwargs})


def _with_env(name: str, value: str, call):
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        return call()
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _cache_dir_on_a_file():
    with tempfile.NamedTemporaryFile() as fh:
        return _with_env("SCCOURSE_DATA_DIR", fh.name, datasets.cache_dir)


def _unseen_level() -> pd.DataFrame:
    obs = _adata().obs.copy()
    obs["grp"] = obs["grp"].astype(str)
    obs.iloc[0, obs.columns.get_loc("grp")] = "c"
    return obs


def _nan_counts():
    a = _data()
    a.X[0, 0] = np.nan
    return a


PROBES = [
    # log-pmfs and sampling
    ("nb_logpmf shapes", lambda: simulate.nb_logpmf(np.ones(3), np.ones(4), 1.0), V, "broadcast"),
    ("nb_logpmf strings", lambda: simulate.nb_logpmf(["a"], 1.0, 1.0), V, "y must hold numbers"),
    ("nb_logpmf mu inf", lambda: simulate.nb_logpmf(1.0, np.inf, 1.0), V, "mu"),
    ("zinb_logpmf y NaN", lambda: simulate.zinb_logpmf(NAN, 1.0, 1.0, 0.0), V, "y must"),
    ("zinb_logpmf pi_logit NaN", lambda: simulate.zinb_logpmf(1.0, 1.0, 1.0, NAN), V, "pi_logit"),
    ("zinb_logpmf shapes", lambda: simulate.zinb_logpmf(1.0, np.ones(2), 1.0, np.zeros(3)), V, "pi_logit"),
    ("sample_nb shapes", lambda: simulate.sample_nb(np.ones(3), np.ones(4)), V, "broadcast"),
    ("sample_nb r NaN", lambda: simulate.sample_nb(np.ones(3), NAN), V, "r must"),
    ("sample_nb mu strings", lambda: simulate.sample_nb(["a"], 1.0), V, "mu must"),
    ("sample_nb seed float", lambda: simulate.sample_nb(np.ones(3), 1.0, seed=1.5), V, "seed"),
    # gene_summary
    ("gene_summary 1-D", lambda: simulate.gene_summary(np.ones(5)), V, "X must"),
    ("gene_summary no cells", lambda: simulate.gene_summary(np.ones((0, 3))), V, "at least one cell"),
    ("gene_summary NaN", lambda: simulate.gene_summary(np.array([[1.0, NAN]])), V, "NaN"),
    ("gene_summary strings", lambda: simulate.gene_summary(np.array([["a", "b"]])), V, "dtype"),
    # fit
    ("fit not AnnData", lambda: _fit(adata=np.ones((5, 2))), T, "AnnData"),
    ("fit max_iter 0", lambda: _fit(max_iter=0), V, "max_iter"),
    ("fit tol 0", lambda: _fit(tol=0.0), V, "tol"),
    ("fit tol NaN", lambda: _fit(tol=NAN), V, "tol"),
    ("fit tol bool", lambda: _fit(tol=True), V, "tol"),
    ("fit seed -1", lambda: _fit(seed=-1), V, "seed"),
    ("fit device gpu", lambda: _fit(device="gpu"), V, "device"),
    ("fit progress string", lambda: _fit(progress="yes"), T, "progress"),
    ("fit formula int", lambda: _fit(formula=3), T, "formula"),
    ("fit formula two-sided", lambda: _fit(formula="y ~ x"), V, "one-sided"),
    ("fit formula dict without mean", lambda: _fit(formula={"dispersion": "~ 1"}), V, "'mean'"),
    ("fit formula part not a string", lambda: _fit(formula={"mean": 1}), T, "'mean' formula"),
    ("fit layer missing", lambda: _fit(layer="counts"), V, "layer"),
    ("fit NaN counts", lambda: _fit(adata=_nan_counts()), V, "NaN"),
    ("fit inf covariate", lambda: _fit(formula="~ x", adata=_data(x=(3, np.inf))), V, "infinite"),
    ("fit too few cells", lambda: _fit(adata=_adata()[:3].copy()), V, "cells"),
    (
        "zinb fit unknown part",
        lambda: _fit(
            formula={"mean": "~ 1", "zero": "~ 1"}, cls=simulate.ZeroInflatedNegBinRegressionSimulator
        ),
        V,
        "zero",
    ),
    # a fitted simulator
    (
        "predict before fit",
        lambda: simulate.NegBinRegressionSimulator().predict(_adata().obs),
        RuntimeError,
        "fit",
    ),
    ("aic before fit", lambda: simulate.NegBinRegressionSimulator().aic, RuntimeError, "fit"),
    ("predict obs array", lambda: _fitted().predict(np.ones((3, 2))), T, "obs"),
    ("predict obs lacks a column", lambda: _fitted().predict(_adata().obs[["x"]]), V, "obs lacks"),
    ("predict unseen level", lambda: _fitted().predict(_unseen_level()), V, "obs['grp'] has levels"),
    ("predict inf covariate", lambda: _fitted().predict(_data(x=(0, -np.inf)).obs), V, "infinite"),
    ("sample seed -1", lambda: _fitted().sample(_adata().obs, seed=-1), V, "seed"),
    (
        "sample copula unfitted",
        lambda: _fitted().sample(_adata().obs, copula=True),
        RuntimeError,
        "fit_copula",
    ),
    ("fit_copula shrinkage string", lambda: _fitted().fit_copula(_adata(), shrinkage="a"), V, "shrinkage"),
    ("fit_copula shrinkage NaN", lambda: _fitted().fit_copula(_adata(), shrinkage=NAN), V, "shrinkage"),
    ("fit_copula shrinkage 2", lambda: _fitted().fit_copula(_adata(), shrinkage=2.0), V, "shrinkage"),
    ("fit_copula genes reordered", lambda: _fitted().fit_copula(_adata()[:, ::-1].copy()), V, "same order"),
    ("fit_copula not AnnData", lambda: _fitted().fit_copula(np.ones((60, 3))), T, "AnnData"),
    ("fit_copula seed -1", lambda: _fitted().fit_copula(_adata(), seed=-1), V, "seed"),
    # likelihood-ratio test
    (
        "lrt null not fitted",
        lambda: simulate.likelihood_ratio_test(simulate.NegBinRegressionSimulator(), _fitted()),
        RuntimeError,
        "null",
    ),
    (
        "lrt alternative a string",
        lambda: simulate.likelihood_ratio_test(_fitted(), "alt"),
        TypeError,
        "alternative",
    ),
    ("lrt not nested", lambda: simulate.likelihood_ratio_test(_fitted(), _fitted()), V, "more estimated"),
    # synthetic
    ("synthetic dispersion 0", lambda: datasets.synthetic(dispersion=0.0), V, "dispersion"),
    (
        "synthetic mean_library_size inf",
        lambda: datasets.synthetic(mean_library_size=np.inf),
        V,
        "mean_library_size",
    ),
    ("synthetic chunk_size 0", lambda: datasets.synthetic(chunk_size=0), V, "chunk_size"),
    ("synthetic n_types 0", lambda: datasets.synthetic(n_types=0), V, "n_types"),
    ("synthetic fold_change string", lambda: datasets.synthetic(fold_change="2"), V, "fold_change"),
    (
        "synthetic too many markers",
        lambda: datasets.synthetic(n_genes=10, n_types=4, n_markers=3),
        V,
        "n_markers",
    ),
    (
        "synthetic int32 overflow",
        lambda: datasets.synthetic(20, 10, 1, n_markers=0, mean_library_size=1e11),
        V,
        "mean_library_size",
    ),
    # real loaders and the store (checked before anything is read or downloaded)
    ("baron mice int", lambda: datasets.baron_mouse_pancreas(mice=1), T, "mice"),
    ("baron mice twice", lambda: datasets.baron_mouse_pancreas(mice=["mouse1", "mouse1"]), V, "mice"),
    ("baron mice empty", lambda: datasets.baron_mouse_pancreas(mice=()), V, "mice"),
    (
        "baron require_all string",
        lambda: datasets.baron_mouse_pancreas(mice="mouse1", require_all="yes"),
        T,
        "require_all",
    ),
    (
        "download_deadline inf",
        lambda: _with_env("SCCOURSE_DOWNLOAD_TIMEOUT", "inf", datasets.download_deadline),
        V,
        "SCCOURSE_DOWNLOAD_TIMEOUT",
    ),
    (
        "download_deadline 0",
        lambda: _with_env("SCCOURSE_DOWNLOAD_TIMEOUT", "0", datasets.download_deadline),
        V,
        "SCCOURSE_DOWNLOAD_TIMEOUT",
    ),
    ("cache_dir on a file", _cache_dir_on_a_file, datasets.DataUnavailableError, "SCCOURSE_DATA_DIR"),
]


@pytest.mark.parametrize(("call", "errors", "pattern"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_input_gives_a_clear_error(call, errors, pattern, assert_clear_error):
    assert_clear_error(call, errors, pattern)


def test_probes_reach_every_public_function():
    """Each public function of simulate and datasets is probed here or in tests/test_probes.py."""
    from pathlib import Path

    text = Path(__file__).read_text() + (Path(__file__).parent / "test_probes.py").read_text()
    loaders = {
        "pbmc3k",
        "pancreas_endocrinogenesis",
        "pancreas_pseudotime",
        "paul15_myeloid",
        "zeisel_cortex",
    }
    loaders |= {"pollen", "available", "mirror", "DataIntegrityError", "DataUnavailableError"}  # no arguments
    for module in (simulate, datasets):
        for name in set(module.__all__) - loaders:
            assert f"{module.__name__.split('.')[-1]}.{name}" in text, (
                f"no probe calls {module.__name__}.{name}"
            )
