"""Bad input to every public function of sccourse.etm gives a clear error: the right exception type and a message
that names the argument (or what was wrong), never a silent wrong result or a crash deep inside torch or pandas.
Good input of every kind (dense, sparse, torch, integer or float dtypes, one cell) gives the same numbers.

Each probe is (name, call, expected exception types, a pattern the message must contain).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sccourse import etm

N_CELLS, N_GENES = 30, 12


def _counts(n=N_CELLS, g=N_GENES, seed=0):
    return np.random.default_rng(seed).poisson(2.0, size=(n, g)).astype(np.float64)


def _with(value, where=(0, 0), X=None):
    X = _counts() if X is None else X.copy()
    X[where] = value
    return X


def _adata(X=None):
    a = ad.AnnData(sp.csr_matrix(_counts() if X is None else X))
    a.var_names = [f"g{i}" for i in range(N_GENES)]
    a.obs["lane"] = np.where(np.arange(N_CELLS) % 2 == 0, "a", "b")
    return a


def _model(**kw):
    kw.setdefault("emb_dim", 4)
    kw.setdefault("hidden", 6)
    return etm.ETM(N_GENES, 3, **kw)


def _data(**kw):
    return etm.prepare(_counts(), device="cpu", **kw)


def _two_batch_model():
    return _model(n_batches=2, batch_categories=["a", "b"])


def _weights():
    return pd.DataFrame(np.random.default_rng(1).dirichlet(np.ones(N_GENES), size=3).T)


LOG = np.log1p(_counts())
THETA = np.random.default_rng(2).dirichlet(np.ones(3), size=N_CELLS)
LAB = np.repeat(["x", "y", "z"], N_CELLS // 3)
V = ValueError
T = TypeError
TV = (TypeError, ValueError)
TRAIN = dict(epochs=1, device="cpu", progress=False)

PROBES = [
    # prepare: what counts are
    ("prepare NaN", lambda: etm.prepare(_with(np.nan), device="cpu"), V, "NaN"),
    ("prepare inf", lambda: etm.prepare(_with(np.inf), device="cpu"), V, "inf"),
    ("prepare negative", lambda: etm.prepare(_with(-1.0), device="cpu"), V, "non-negative"),
    ("prepare log data", lambda: etm.prepare(LOG, device="cpu"), V, "integer counts"),
    ("prepare fractional", lambda: etm.prepare(_with(0.5), device="cpu"), V, "integer counts"),
    ("prepare sparse log", lambda: etm.prepare(sp.csr_matrix(LOG), device="cpu"), V, "integer counts"),
    ("prepare sparse NaN", lambda: etm.prepare(sp.csr_matrix(_with(np.nan)), device="cpu"), V, "NaN"),
    ("prepare torch NaN", lambda: etm.prepare(torch.tensor(_with(np.nan)), device="cpu"), V, "NaN"),
    (
        "prepare torch sparse negative",
        lambda: etm.prepare(torch.tensor(_with(-2.0)).to_sparse(), device="cpu"),
        V,
        "non-negative",
    ),
    ("prepare AnnData log", lambda: etm.prepare(_adata(LOG), device="cpu"), V, r"adata\.X"),
    # prepare: shapes and types
    ("prepare 1-D", lambda: etm.prepare(np.ones(5), device="cpu"), V, "2-D"),
    ("prepare 3-D", lambda: etm.prepare(np.ones((3, 4, 5)), device="cpu"), V, "2-D"),
    ("prepare no cells", lambda: etm.prepare(np.ones((0, N_GENES)), device="cpu"), V, "at least 2 cells"),
    ("prepare one cell", lambda: etm.prepare(np.ones((1, N_GENES)), device="cpu"), V, "at least 2 cells"),
    ("prepare one gene", lambda: etm.prepare(np.ones((5, 1)), device="cpu"), V, "2 genes"),
    ("prepare strings", lambda: etm.prepare(np.array([["1", "2"], ["3", "4"]]), device="cpu"), T, "numeric"),
    ("prepare complex", lambda: etm.prepare(np.ones((3, 3), dtype=complex), device="cpu"), T, "numeric"),
    ("prepare None entries", lambda: etm.prepare([[1, None], [2, 3]], device="cpu"), T, "numeric"),
    ("prepare ragged", lambda: etm.prepare([[1, 2], [3]], device="cpu"), T, "numeric"),
    ("prepare a string", lambda: etm.prepare("counts.h5ad", device="cpu"), TV, "X"),
    ("prepare integer dtype", lambda: etm.prepare(_counts(), dtype=torch.int64, device="cpu"), V, "dtype"),
    ("prepare numpy dtype", lambda: etm.prepare(_counts(), dtype=np.float32, device="cpu"), T, "dtype"),
    ("prepare bad device", lambda: etm.prepare(_counts(), device="tpu"), V, "device"),
    # prepare: batches, layers
    (
        "prepare batch too short",
        lambda: etm.prepare(_counts(), batch=["a"] * 5, device="cpu"),
        V,
        "batch has 5",
    ),
    (
        "prepare batch 2-D",
        lambda: etm.prepare(_counts(), batch=np.zeros((N_CELLS, 2)), device="cpu"),
        V,
        "batch must be one-dimensional",
    ),
    (
        "prepare batch missing label",
        lambda: etm.prepare(_counts(), batch=["a"] * (N_CELLS - 1) + [None], device="cpu"),
        V,
        "missing",
    ),
    ("prepare batch a string", lambda: etm.prepare(_counts(), batch="a", device="cpu"), T, "batch"),
    ("prepare layer absent", lambda: etm.prepare(_adata(), layer="counts", device="cpu"), V, "layer"),
    (
        "prepare batch_key absent",
        lambda: etm.prepare(_adata(), batch_key="run", device="cpu"),
        V,
        "batch_key",
    ),
    ("prepare layer on array", lambda: etm.prepare(_counts(), layer="counts", device="cpu"), V, "AnnData"),
    ("prepare ETMData with batch", lambda: etm.prepare(_data(), batch=["a"] * N_CELLS), V, "ETMData"),
    # ETM
    ("ETM one gene", lambda: etm.ETM(1, 2), V, "n_genes"),
    ("ETM float genes", lambda: etm.ETM(2.5, 2), V, "n_genes"),
    ("ETM bool genes", lambda: etm.ETM(True, 2), V, "n_genes"),
    ("ETM no topics", lambda: etm.ETM(N_GENES, 0), V, "n_topics"),
    ("ETM emb_dim 0", lambda: etm.ETM(N_GENES, 2, emb_dim=0), V, "emb_dim"),
    ("ETM hidden negative", lambda: etm.ETM(N_GENES, 2, hidden=-1), V, "hidden"),
    ("ETM no batches", lambda: etm.ETM(N_GENES, 2, n_batches=0), V, "n_batches"),
    ("ETM dropout 1", lambda: etm.ETM(N_GENES, 2, dropout=1.0), V, "dropout"),
    ("ETM dropout negative", lambda: etm.ETM(N_GENES, 2, dropout=-0.1), V, "dropout"),
    ("ETM dropout NaN", lambda: etm.ETM(N_GENES, 2, dropout=float("nan")), V, "dropout"),
    ("ETM dropout string", lambda: etm.ETM(N_GENES, 2, dropout="0.1"), V, "dropout"),
    ("ETM mixing", lambda: etm.ETM(N_GENES, 2, mixing="log"), V, "mixing"),
    ("ETM gene_names length", lambda: etm.ETM(N_GENES, 2, gene_names=["a", "b"]), V, "gene_names"),
    ("ETM gene_names string", lambda: etm.ETM(3, 2, gene_names="abc"), T, "gene_names"),
    ("ETM seed negative", lambda: etm.ETM(N_GENES, 2, seed=-1), V, "seed"),
    ("ETM seed float", lambda: etm.ETM(N_GENES, 2, seed=1.5), V, "seed"),
    ("ETM seed too large", lambda: etm.ETM(N_GENES, 2, seed=2**40), V, "seed"),
    (
        "ETM batch_categories length",
        lambda: etm.ETM(N_GENES, 2, n_batches=2, batch_categories=["a"]),
        V,
        "batch_categories",
    ),
    (
        "ETM batch_categories repeated",
        lambda: etm.ETM(N_GENES, 2, n_batches=2, batch_categories=["a", "a"]),
        V,
        "distinct",
    ),
    # kl_schedule
    ("kl_schedule epoch negative", lambda: etm.kl_schedule(-1, warmup=5), V, "epoch"),
    ("kl_schedule epoch string", lambda: etm.kl_schedule("1", warmup=5), V, "epoch"),
    ("kl_schedule warmup negative", lambda: etm.kl_schedule(1, warmup=-5), V, "warmup"),
    ("kl_schedule warmup NaN", lambda: etm.kl_schedule(1, warmup=float("nan")), V, "warmup"),
    ("kl_schedule max_weight negative", lambda: etm.kl_schedule(1, warmup=5, max_weight=-1), V, "max_weight"),
    # adam
    ("adam not a model", lambda: etm.adam(None), T, "model"),
    ("adam lr 0", lambda: etm.adam(_model(), lr=0), V, "lr"),
    ("adam weight_decay negative", lambda: etm.adam(_model(), weight_decay=-1), V, "weight_decay"),
    # train_step
    ("train_step not a model", lambda: etm.train_step(None, etm.adam(_model()), _data()), T, "model"),
    ("train_step no optimizer", lambda: etm.train_step(_model(), None, _data()), T, "optimizer"),
    (
        "train_step array data",
        lambda: (m := _model(), etm.train_step(m, etm.adam(m), _counts())),
        T,
        "ETMData",
    ),
    (
        "train_step kl_weight negative",
        lambda: (m := _model(), etm.train_step(m, etm.adam(m), _data(), kl_weight=-1)),
        V,
        "kl_weight",
    ),
    (
        "train_step kl_weight NaN",
        lambda: (m := _model(), etm.train_step(m, etm.adam(m), _data(), kl_weight=float("nan"))),
        V,
        "kl_weight",
    ),
    (
        "train_step wrong genes",
        lambda: (m := etm.ETM(5, 2), etm.train_step(m, etm.adam(m), _data())),
        V,
        "genes",
    ),
    (
        "train_step one cell",
        lambda: (m := _model(), etm.train_step(m, etm.adam(m), _data().subset(torch.tensor([0])))),
        V,
        "at least 2 cells",
    ),
    (
        "train_step dtype mismatch",
        lambda: (m := _model(), etm.train_step(m, etm.adam(m), _data(dtype=torch.float64))),
        V,
        "float64",
    ),
    (
        "train_step unknown batch",
        lambda: (
            m := _two_batch_model(),
            etm.train_step(m, etm.adam(m), _data(batch=["a", "c"] * (N_CELLS // 2))),
        ),
        V,
        "'c'",
    ),
    # train_etm
    ("train_etm not a model", lambda: etm.train_etm("model", _counts(), **TRAIN), T, "model"),
    ("train_etm epochs 0", lambda: etm.train_etm(_model(), _counts(), epochs=0, device="cpu"), V, "epochs"),
    (
        "train_etm epochs float",
        lambda: etm.train_etm(_model(), _counts(), epochs=1.5, device="cpu"),
        V,
        "epochs",
    ),
    (
        "train_etm batch_size 1",
        lambda: etm.train_etm(_model(), _counts(), batch_size=1, **TRAIN),
        V,
        "batch_size",
    ),
    ("train_etm lr NaN", lambda: etm.train_etm(_model(), _counts(), lr=float("nan"), **TRAIN), V, "lr"),
    ("train_etm lr 0", lambda: etm.train_etm(_model(), _counts(), lr=0.0, **TRAIN), V, "lr"),
    (
        "train_etm weight_decay",
        lambda: etm.train_etm(_model(), _counts(), weight_decay=-1, **TRAIN),
        V,
        "weight_decay",
    ),
    (
        "train_etm kl_weight inf",
        lambda: etm.train_etm(_model(), _counts(), kl_weight=np.inf, **TRAIN),
        V,
        "kl_weight",
    ),
    (
        "train_etm kl_warmup",
        lambda: etm.train_etm(_model(), _counts(), kl_warmup=-1, **TRAIN),
        V,
        "kl_warmup",
    ),
    (
        "train_etm eval_every",
        lambda: etm.train_etm(_model(), _counts(), eval_every=0, **TRAIN),
        V,
        "eval_every",
    ),
    ("train_etm eval_fn", lambda: etm.train_etm(_model(), _counts(), eval_fn=3, **TRAIN), T, "eval_fn"),
    (
        "train_etm eval_fn result",
        lambda: etm.train_etm(_model(), _counts(), eval_fn=lambda th: "good", **TRAIN),
        T,
        "eval_fn",
    ),
    ("train_etm seed", lambda: etm.train_etm(_model(), _counts(), seed=-3, **TRAIN), V, "seed"),
    (
        "train_etm progress",
        lambda: etm.train_etm(_model(), _counts(), epochs=1, device="cpu", progress="yes"),
        T,
        "progress",
    ),
    ("train_etm NaN", lambda: etm.train_etm(_model(), _with(np.nan), **TRAIN), V, "NaN"),
    ("train_etm log data", lambda: etm.train_etm(_model(), LOG, **TRAIN), V, "adata_or_counts"),
    ("train_etm wrong genes", lambda: etm.train_etm(_model(), _counts(g=7), **TRAIN), V, "genes"),
    ("train_etm one cell", lambda: etm.train_etm(_model(), _counts(n=1), **TRAIN), V, "at least 2 cells"),
    ("train_etm device", lambda: etm.train_etm(_model(), _counts(), epochs=1, device="tpu"), V, "device"),
    (
        "train_etm batches of another model",
        lambda: etm.train_etm(_two_batch_model(), _counts(), batch=["a", "z"] * (N_CELLS // 2), **TRAIN),
        V,
        "'z'",
    ),
    # fit_etm
    ("fit_etm array", lambda: etm.fit_etm(_counts(), 2, **TRAIN), T, "AnnData"),
    ("fit_etm no topics", lambda: etm.fit_etm(_adata(), 0, **TRAIN), V, "n_topics"),
    ("fit_etm key_added", lambda: etm.fit_etm(_adata(), 2, key_added="", **TRAIN), V, "key_added"),
    ("fit_etm beta key", lambda: etm.fit_etm(_adata(), 2, beta_key_added=1, **TRAIN), TV, "beta_key_added"),
    ("fit_etm uns key", lambda: etm.fit_etm(_adata(), 2, uns_key_added=None, **TRAIN), TV, "uns_key_added"),
    ("fit_etm n_init 0", lambda: etm.fit_etm(_adata(), 2, n_init=0, **TRAIN), V, "n_init"),
    ("fit_etm log data", lambda: etm.fit_etm(_adata(LOG), 2, **TRAIN), V, "integer counts"),
    ("fit_etm layer", lambda: etm.fit_etm(_adata(), 2, layer="raw", **TRAIN), V, "layer"),
    ("fit_etm batch_key", lambda: etm.fit_etm(_adata(), 2, batch_key="run", **TRAIN), V, "batch_key"),
    ("fit_etm mixing", lambda: etm.fit_etm(_adata(), 2, mixing="sum", **TRAIN), V, "mixing"),
    ("fit_etm epochs", lambda: etm.fit_etm(_adata(), 2, epochs=0, device="cpu"), V, "epochs"),
    ("fit_etm seed", lambda: etm.fit_etm(_adata(), 2, seed=-1, **TRAIN), V, "seed"),
    # get_theta
    ("get_theta not a model", lambda: etm.get_theta(None, _counts()), T, "model"),
    ("get_theta wrong genes", lambda: etm.get_theta(_model(), _counts(g=5)), V, "genes"),
    ("get_theta NaN", lambda: etm.get_theta(_model(), _with(np.nan)), V, "NaN"),
    ("get_theta negative", lambda: etm.get_theta(_model(), _with(-1.0)), V, "non-negative"),
    ("get_theta log data", lambda: etm.get_theta(_model(), LOG), V, "integer counts"),
    ("get_theta no cells", lambda: etm.get_theta(_model(), np.ones((0, N_GENES))), V, "at least 1 cell"),
    ("get_theta 1-D", lambda: etm.get_theta(_model(), np.ones(N_GENES)), V, "2-D"),
    (
        "get_theta return_delta",
        lambda: etm.get_theta(_model(), _counts(), return_delta="yes"),
        T,
        "return_delta",
    ),
    (
        "get_theta unknown batch",
        lambda: etm.get_theta(_two_batch_model(), _counts(), batch=["b", "q"] * (N_CELLS // 2)),
        V,
        r"\['q'\].*\['a', 'b'\]",
    ),
    ("get_theta no batch", lambda: etm.get_theta(_two_batch_model(), _counts()), V, "batch"),
    # topic_gene_weights
    ("topic_gene_weights not a model", lambda: etm.topic_gene_weights(_weights()), T, "model"),
    (
        "topic_gene_weights gene_names length",
        lambda: etm.topic_gene_weights(_model(), gene_names=["a"]),
        V,
        "gene_names",
    ),
    (
        "topic_gene_weights gene_names string",
        lambda: etm.topic_gene_weights(_model(), gene_names="g"),
        T,
        "gene_names",
    ),
    # top_genes
    ("top_genes array", lambda: etm.top_genes(np.ones((3, 2))), T, "weights"),
    ("top_genes n 0", lambda: etm.top_genes(_weights(), n=0), V, "n must"),
    ("top_genes n float", lambda: etm.top_genes(_weights(), n=1.5), V, "n must"),
    ("top_genes n too large", lambda: etm.top_genes(_weights(), n=N_GENES + 1), V, "larger than"),
    ("top_genes NaN", lambda: etm.top_genes(_weights().where(lambda w: w > 0.05)), V, "NaN"),
    ("top_genes strings", lambda: etm.top_genes(_weights().astype(str)), T, "numbers"),
    # topic_enrichment
    ("topic_enrichment NaN", lambda: etm.topic_enrichment(_with(np.nan, X=THETA), LAB), V, "theta"),
    ("topic_enrichment 1-D", lambda: etm.topic_enrichment(THETA[0], LAB[:1]), V, "2-D"),
    (
        "topic_enrichment strings",
        lambda: etm.topic_enrichment(THETA.astype(str).astype(object) + "x", LAB),
        T,
        "theta",
    ),
    ("topic_enrichment labels length", lambda: etm.topic_enrichment(THETA, LAB[:4]), V, "labels has 4"),
    (
        "topic_enrichment labels 2-D",
        lambda: etm.topic_enrichment(THETA, LAB.reshape(-1, 1)),
        V,
        "one-dimensional",
    ),
    ("topic_enrichment no labels", lambda: etm.topic_enrichment(THETA, [None] * N_CELLS), V, "no cell"),
    # resolution_scan
    ("resolution_scan scalar", lambda: etm.resolution_scan(THETA, LAB, 0.1), T, "resolutions"),
    ("resolution_scan string", lambda: etm.resolution_scan(THETA, LAB, "0.1"), T, "resolutions"),
    ("resolution_scan empty", lambda: etm.resolution_scan(THETA, LAB, []), V, "at least one"),
    ("resolution_scan negative", lambda: etm.resolution_scan(THETA, LAB, [0.1, -1]), V, "positive"),
    ("resolution_scan NaN", lambda: etm.resolution_scan(THETA, LAB, [float("nan")]), V, "positive"),
    ("resolution_scan words", lambda: etm.resolution_scan(THETA, LAB, ["fine"]), T, "resolutions"),
    # ari_over_seeds
    ("ari_over_seeds seeds int", lambda: etm.ari_over_seeds(_counts(), LAB, seeds=0, **TRAIN), T, "seeds"),
    ("ari_over_seeds seeds empty", lambda: etm.ari_over_seeds(_counts(), LAB, seeds=[], **TRAIN), V, "seeds"),
    (
        "ari_over_seeds seed negative",
        lambda: etm.ari_over_seeds(_counts(), LAB, seeds=[-1], **TRAIN),
        V,
        "seeds",
    ),
    ("ari_over_seeds labels", lambda: etm.ari_over_seeds(_counts(), LAB[:5], **TRAIN), V, "labels"),
    ("ari_over_seeds option", lambda: etm.ari_over_seeds(_counts(), LAB, n_topic=3, **TRAIN), T, "n_topic"),
    (
        "ari_over_seeds resolution",
        lambda: etm.ari_over_seeds(_counts(), LAB, resolution=0, **TRAIN),
        V,
        "resolution",
    ),
    ("ari_over_seeds n_init", lambda: etm.ari_over_seeds(_counts(), LAB, n_init=0, **TRAIN), V, "n_init"),
    ("ari_over_seeds log data", lambda: etm.ari_over_seeds(LOG, LAB, **TRAIN), V, "integer counts"),
    # restart_seeds, final_neg_elbo
    ("restart_seeds n_init 0", lambda: etm.restart_seeds(3, 0), V, "n_init"),
    ("restart_seeds seed", lambda: etm.restart_seeds(-3, 2), V, "seed"),
    ("final_neg_elbo not a model", lambda: etm.final_neg_elbo(None, _data()), T, "model"),
    ("final_neg_elbo NaN", lambda: etm.final_neg_elbo(_model(), _with(np.nan)), V, "data contains NaN|NaN"),
    ("final_neg_elbo wrong genes", lambda: etm.final_neg_elbo(_model(), _counts(g=4)), V, "genes"),
]


@pytest.mark.parametrize(("call", "errors", "pattern"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_input_raises_a_clear_error(call, errors, pattern):
    with pytest.raises(errors, match=pattern):
        call()


def test_probes_cover_every_public_function():
    called = " ".join(p[0].split()[0] for p in PROBES)
    public = {n for n in etm.__all__ if callable(getattr(etm, n)) and n != "ETMData"}
    assert public <= set(called.split()), public - set(called.split())


def test_nothing_written_to_adata_on_bad_input():
    a = _adata(LOG)
    with pytest.raises(ValueError):
        etm.fit_etm(a, 2, **TRAIN)
    assert not a.obsm and not a.varm and not a.uns


def test_validation_happens_before_the_model_is_touched():
    """A failed train_etm leaves the model where it was and untrained (no parameter changed, no labels adopted)."""
    m = _two_batch_model()
    m.batch_categories_ = None
    before = {k: v.clone() for k, v in m.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ValueError):
        etm.train_etm(m, LOG, batch=["a", "b"] * (N_CELLS // 2), **TRAIN)
    assert m.batch_categories_ is None
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())


# --------------------------------------------------------------------------------------
# good input of every kind: the same numbers
# --------------------------------------------------------------------------------------
def _kinds(X):
    return {
        "numpy float64": X,
        "numpy int64": X.astype(np.int64),
        "numpy float32": X.astype(np.float32),
        "list": X.tolist(),
        "DataFrame": pd.DataFrame(X),
        "csr": sp.csr_matrix(X),
        "csc": sp.csc_matrix(X),
        "coo array": sp.coo_array(X),
        "torch float32": torch.tensor(X, dtype=torch.float32),
        "torch int64": torch.tensor(X, dtype=torch.int64),
        "torch sparse": torch.tensor(X).to_sparse(),
        "AnnData": ad.AnnData(sp.csr_matrix(X)),
    }


@pytest.mark.parametrize("kind", list(_kinds(np.zeros((2, 2)))))
def test_every_input_kind_gives_the_same_data_and_theta(kind):
    X = _counts()
    X[3] = 0  # a cell without counts
    ref = etm.prepare(X, device="cpu", dtype=torch.float64)
    np.testing.assert_array_equal(ref.counts.numpy(), X)  # the reference itself: the counts as given
    data = etm.prepare(_kinds(X)[kind], device="cpu", dtype=torch.float64)
    np.testing.assert_array_equal(data.counts.numpy(), X)
    np.testing.assert_allclose(
        data.normalized.numpy(), X / np.maximum(X.sum(axis=1, keepdims=True), 1), rtol=1e-12
    )
    model = _model().double()
    np.testing.assert_allclose(etm.get_theta(model, _kinds(X)[kind]), etm.get_theta(model, X), rtol=1e-12)


def test_one_cell_and_boolean_counts():
    model = _model()
    X = _counts()
    np.testing.assert_allclose(etm.get_theta(model, X[:1]), etm.get_theta(model, X)[:1], rtol=1e-5, atol=1e-7)
    assert etm.prepare(X > 2, device="cpu").counts.sum().item() == (X > 2).sum()


def test_kl_schedule_accepts_floats_and_numpy_integers():
    assert etm.kl_schedule(np.int64(3), warmup=6) == 0.5
    assert etm.kl_schedule(0, warmup=4) == 0.0
    assert etm.kl_schedule(3.0, warmup=6.0, max_weight=0.5) == 0.25
