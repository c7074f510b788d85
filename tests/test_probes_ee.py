"""Probes of every public function of sccourse.ee: bad input gives a clear error (the right exception type and a
message naming the argument), never a silent wrong result or a crash deep inside numpy, torch or scikit-learn;
and every accepted input form (dense, sparse, torch, AnnData, float32, integers, a single cell) gives the same
numbers as the plain numpy form.

Each probe is (id, call, expected exception types, a pattern the message must contain).
"""

from __future__ import annotations

import functools

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sccourse import ee

V = ValueError
T = TypeError
TV = (TypeError, ValueError)
N = 45


@functools.cache
def _Y():
    """Three well-separated clusters, 45 cells × 5 features."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 6
    return np.concatenate([c + rng.normal(size=(15, 5)) for c in centres])


@functools.cache
def _W():
    return ee.entropic_affinities(_Y(), 5.0, device="cpu")


def _X():
    return np.random.default_rng(1).normal(size=(N, 2))


def _with(value, where=(3, 2)):
    Y = _Y().copy()
    Y[where] = value
    return Y


@functools.cache
def _fitted():
    return ee.NeuralEE(lam=5.0, perplexity=5, epochs=1, hidden=(8,), progress=False, device="cpu").fit(_Y())


def _ee(**kw):
    opts = {"lam": 5.0, "perplexity": 5, "max_iter": 3, "device": "cpu", "progress": False}
    return ee.ElasticEmbedding(**{**opts, **kw})


def _nee(**kw):
    opts = {"lam": 5.0, "perplexity": 5, "epochs": 2, "hidden": (8,), "device": "cpu", "progress": False}
    return ee.NeuralEE(**{**opts, **kw})


def _rng():
    return np.random.default_rng(0)


def _batch_args(**kw):
    b = 6
    X = torch.tensor(np.random.default_rng(2).normal(size=(b, 2)))
    args = {
        "Xb": X,
        "rows": torch.tensor([0, 1, 2]),
        "cols": torch.tensor([1, 2, 3]),
        "w": torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),
        "wneg": torch.full((b, b), 1.0 / b**2, dtype=torch.float64).fill_diagonal_(0.0),
        "lam": 2.0,
    }
    args.update(kw)
    return args


def _asym(n=N):
    A = np.zeros((n, n))
    A[0, 1] = 1.0
    return A


def _no_pca():
    return ad.AnnData(_Y())


def _negative_counts():
    X = np.random.default_rng(0).poisson(3.0, size=(40, 30)).astype(np.float32)
    X[0, 0] = -1
    return ad.AnnData(X)


def _single_cell_batches(n, batch_size, rng):
    return [np.arange(n - 1), np.array([n - 1])]


def _outside_batches(n, batch_size, rng):
    return [np.arange(n + 1)]


PROBES = [
    # entropic_affinities: data
    ("EA NaN", lambda: ee.entropic_affinities(_with(np.nan), 5), V, "NaN"),
    ("EA inf", lambda: ee.entropic_affinities(_with(np.inf), 5), V, "infinite"),
    ("EA 1-D", lambda: ee.entropic_affinities(_Y()[:, 0], 5), V, "2-D"),
    ("EA 3-D", lambda: ee.entropic_affinities(_Y()[None], 5), V, "2-D"),
    ("EA no cells", lambda: ee.entropic_affinities(np.zeros((0, 5)), 5), V, "at least 3 cells"),
    ("EA one cell", lambda: ee.entropic_affinities(_Y()[:1], 5), V, "at least 3 cells"),
    ("EA no features", lambda: ee.entropic_affinities(np.zeros((N, 0)), 5), V, "feature"),
    ("EA complex", lambda: ee.entropic_affinities(_Y() + 1j, 5), TV, "Y"),
    ("EA strings", lambda: ee.entropic_affinities(_Y().astype(str), 5), TV, "Y"),
    ("EA identical cells", lambda: ee.entropic_affinities(np.ones((N, 5)), 5), V, "same values"),
    ("EA torch NaN", lambda: ee.entropic_affinities(torch.tensor(_with(np.nan)), 5), V, "NaN"),
    ("EA sparse NaN", lambda: ee.entropic_affinities(sp.csr_matrix(_with(np.nan)), 5), V, "NaN"),
    ("EA AnnData without obsm", lambda: ee.entropic_affinities(_no_pca(), 5, use_rep="X_pca"), V, "obsm"),
    ("prepare_pcs negative counts", lambda: ee.prepare_pcs(_negative_counts(), n_pcs=5), V, "non-negative"),
    # entropic_affinities: options
    ("EA perplexity >= N", lambda: ee.entropic_affinities(_Y(), N), V, "perplexity"),
    ("EA perplexity 1", lambda: ee.entropic_affinities(_Y(), 1.0), V, "perplexity"),
    ("EA perplexity NaN", lambda: ee.entropic_affinities(_Y(), float("nan")), V, "perplexity"),
    ("EA perplexity string", lambda: ee.entropic_affinities(_Y(), "5"), TV, "perplexity"),
    (
        "EA perplexity >= n_neighbors",
        lambda: ee.entropic_affinities(_Y(), 10, n_neighbors=8),
        V,
        "perplexity",
    ),
    ("EA n_neighbors 0", lambda: ee.entropic_affinities(_Y(), 5, n_neighbors=0), V, "n_neighbors"),
    ("EA n_neighbors > N-1", lambda: ee.entropic_affinities(_Y(), 5, n_neighbors=N), V, "n_neighbors"),
    ("EA n_neighbors float", lambda: ee.entropic_affinities(_Y(), 5, n_neighbors=20.5), V, "n_neighbors"),
    ("EA n_neighbors word", lambda: ee.entropic_affinities(_Y(), 5, n_neighbors="most"), V, "n_neighbors"),
    ("EA method", lambda: ee.entropic_affinities(_Y(), 5, method="tsne"), V, "method"),
    ("EA knn", lambda: ee.entropic_affinities(_Y(), 5, knn="annoy"), V, "knn"),
    ("EA tol 0", lambda: ee.entropic_affinities(_Y(), 5, tol=0), V, "tol"),
    ("EA tol NaN", lambda: ee.entropic_affinities(_Y(), 5, tol=float("nan")), V, "tol"),
    ("EA tol inf", lambda: ee.entropic_affinities(_Y(), 5, tol=float("inf")), V, "tol"),
    ("EA max_iter 0", lambda: ee.entropic_affinities(_Y(), 5, max_iter=0), V, "max_iter"),
    ("EA seed -1", lambda: ee.entropic_affinities(_Y(), 5, seed=-1), V, "seed"),
    ("EA device", lambda: ee.entropic_affinities(_Y(), 5, device="tpu"), V, "device"),
    # repulsive_weights
    ("RW kind", lambda: ee.repulsive_weights(_Y(), kind="gaussian"), V, "kind"),
    ("RW nothing", lambda: ee.repulsive_weights(), V, "needs the data"),
    ("RW distance without Y", lambda: ee.repulsive_weights(kind="distance", n=10), V, "needs the data"),
    ("RW n 1", lambda: ee.repulsive_weights(n=1), V, "n must"),
    ("RW n float", lambda: ee.repulsive_weights(n=10.5), V, "n must"),
    ("RW n and Y disagree", lambda: ee.repulsive_weights(_Y(), n=10), V, "n (10)"),
    (
        "RW distance identical cells",
        lambda: ee.repulsive_weights(np.ones((N, 3)), kind="distance"),
        V,
        "same",
    ),
    ("RW distance NaN", lambda: ee.repulsive_weights(_with(np.nan), kind="distance"), V, "NaN"),
    # ee_objective / ee_gradient: the embedding
    ("obj 1-D torch X", lambda: ee.ee_objective(torch.zeros(N), _W(), 1.0), V, "2-D"),
    ("grad 1-D torch X", lambda: ee.ee_gradient(torch.zeros(N), _W(), 1.0), V, "2-D"),
    ("obj 3-D X", lambda: ee.ee_objective(np.zeros((N, 2, 1)), _W(), 1.0), V, "2-D"),
    ("obj NaN X", lambda: ee.ee_objective(np.full((N, 2), np.nan), _W(), 1.0), V, "NaN"),
    ("obj inf torch X", lambda: ee.ee_objective(torch.full((N, 2), np.inf), _W(), 1.0), V, "NaN"),
    ("obj no cells", lambda: ee.ee_objective(np.zeros((0, 2)), np.zeros((0, 0)), 1.0), V, "at least 1"),
    ("obj complex torch X", lambda: ee.ee_objective(torch.zeros(N, 2, dtype=torch.complex64), _W()), T, "X"),
    ("obj bool X", lambda: ee.ee_objective(np.zeros((N, 2), dtype=bool), _W(), 1.0), TV, "X"),
    ("obj sparse torch X", lambda: ee.ee_objective(torch.zeros(N, 2).to_sparse(), _W()), T, "dense"),
    ("obj transposed X", lambda: ee.ee_objective(_X().T, _W(), 1.0), V, "Wpos"),
    # ee_objective: the weights and options
    ("obj Wpos 1-D", lambda: ee.ee_objective(_X(), np.ones(N), 1.0), V, "Wpos"),
    ("obj Wpos not square", lambda: ee.ee_objective(_X(), np.ones((N, N + 1)), 1.0), V, "square"),
    ("obj Wpos negative", lambda: ee.ee_objective(_X(), -np.ones((N, N)), 1.0), V, "non-negative"),
    ("obj Wpos NaN", lambda: ee.ee_objective(_X(), np.full((N, N), np.nan), 1.0), V, "finite"),
    ("obj Wpos asymmetric", lambda: ee.ee_objective(_X(), _asym(), 1.0), V, "symmetric"),
    ("obj Wpos complex", lambda: ee.ee_objective(_X(), np.ones((N, N)) * 1j, 1.0), T, "Wpos"),
    ("obj Wpos strings", lambda: ee.ee_objective(_X(), np.full((N, N), "a"), 1.0), T, "Wpos"),
    ("obj lam -1", lambda: ee.ee_objective(_X(), _W(), -1.0), V, "lam"),
    ("obj lam NaN", lambda: ee.ee_objective(_X(), _W(), float("nan")), V, "lam"),
    ("obj lam string", lambda: ee.ee_objective(_X(), _W(), "1"), V, "lam"),
    ("obj Wneg shape", lambda: ee.ee_objective(_X(), _W(), 1.0, Wneg=np.ones((3, 3))), V, "Wneg"),
    ("obj Wneg negative", lambda: ee.ee_objective(_X(), _W(), 1.0, Wneg=-np.ones((N, N))), V, "Wneg"),
    ("obj Wneg asymmetric", lambda: ee.ee_objective(_X(), _W(), 1.0, Wneg=_asym()), V, "Wneg"),
    ("obj Wneg complex", lambda: ee.ee_objective(_X(), _W(), 1.0, Wneg=np.ones((N, N)) * 1j), T, "Wneg"),
    ("obj Wneg word", lambda: ee.ee_objective(_X(), _W(), 1.0, Wneg="distance"), T, "Wneg"),
    ("obj Wneg other n", lambda: ee.ee_objective(_X(), _W(), Wneg=ee.repulsive_weights(n=10)), V, "Wneg"),
    ("obj max_block_mb 0", lambda: ee.ee_objective(_X(), _W(), 1.0, max_block_mb=0), V, "max_block_mb"),
    (
        "obj max_block_mb inf",
        lambda: ee.ee_objective(_X(), _W(), max_block_mb=float("inf")),
        V,
        "max_block_mb",
    ),
    # ElasticEmbedding: data and graph
    ("EE all-zero Wpos", lambda: _ee().fit(Wpos=np.zeros((N, N))), V, "Wpos"),
    ("EE all-zero sparse Wpos", lambda: _ee().fit(Wpos=sp.csr_matrix((N, N))), V, "Wpos"),
    ("EE no data", lambda: _ee().fit(), V, "Wpos"),
    ("EE two cells", lambda: _ee().fit(_Y()[:2]), V, "at least 3 cells"),
    ("EE Y and Wpos disagree", lambda: _ee().fit(_Y()[:20], Wpos=_W()), V, "Wpos"),
    ("EE NaN Y", lambda: _ee().fit(_with(np.nan)), V, "NaN"),
    ("EE identical cells", lambda: _ee().fit(np.ones((N, 5))), V, "same values"),
    ("EE perplexity >= N", lambda: _ee(perplexity=50).fit(_Y()), V, "perplexity"),
    ("EE all-zero Wneg", lambda: _ee().fit(Wpos=_W(), Wneg=np.zeros((N, N))), V, "Wneg"),
    ("EE distance repulsion without Y", lambda: _ee(repulsion="distance").fit(Wpos=_W()), V, "repulsion"),
    ("EE use_rep missing", lambda: _ee().fit(_no_pca(), use_rep="X_pca"), V, "obsm"),
    ("EE key_added int", lambda: _ee().fit(ad.AnnData(_Y()), use_rep="X", key_added=3), T, "key_added"),
    # ElasticEmbedding: init
    ("EE init NaN", lambda: _ee().fit(Wpos=_W(), init=np.full((N, 2), np.nan)), V, "init"),
    ("EE init inf", lambda: _ee().fit(Wpos=_W(), init=np.full((N, 2), np.inf)), V, "init"),
    ("EE init all zero", lambda: _ee().fit(Wpos=_W(), init=np.zeros((N, 2))), V, "init"),
    ("EE init all equal", lambda: _ee().fit(Wpos=_W(), init=np.ones((N, 2))), V, "init"),
    ("EE init shape", lambda: _ee().fit(Wpos=_W(), init=np.ones((N, 3))), V, "init"),
    ("EE init transposed", lambda: _ee().fit(Wpos=_W(), init=_X().T), V, "init"),
    ("EE init 1-D", lambda: _ee().fit(Wpos=_W(), init=np.ones(N)), V, "init"),
    ("EE init word", lambda: _ee(init="pca").fit(Wpos=_W()), V, "init"),
    ("EE init huge", lambda: _ee().fit(Wpos=_W(), init=1e200 * _X()), V, "init"),
    # ElasticEmbedding: options
    ("EE seed -1", lambda: _ee(seed=-1).fit(Wpos=_W()), V, "seed"),
    ("EE seed float", lambda: _ee(seed=1.5).fit(Wpos=_W()), V, "seed"),
    ("EE n_components 0", lambda: _ee(n_components=0).fit(Wpos=_W()), V, "n_components"),
    ("EE lam 0", lambda: _ee(lam=0).fit(Wpos=_W()), V, "lam"),
    ("EE lam -1", lambda: _ee(lam=-1).fit(Wpos=_W()), V, "lam"),
    ("EE optimizer", lambda: _ee(optimizer="adam").fit(Wpos=_W()), V, "optimizer"),
    ("EE affinity", lambda: _ee(affinity="tsne").fit(_Y()), V, "affinity"),
    ("EE repulsion", lambda: _ee(repulsion="none").fit(Wpos=_W()), V, "repulsion"),
    ("EE max_iter 0", lambda: _ee(max_iter=0).fit(Wpos=_W()), V, "max_iter"),
    ("EE tol NaN", lambda: _ee(tol=float("nan")).fit(Wpos=_W()), V, "tol"),
    ("EE c 0", lambda: _ee(c=0).fit(Wpos=_W()), V, "c must"),
    ("EE rho 1", lambda: _ee(rho=1).fit(Wpos=_W()), V, "rho"),
    ("EE target word", lambda: _ee(target="low").fit(Wpos=_W()), V, "target"),
    ("EE max_block_mb 0", lambda: _ee(max_block_mb=0).fit(Wpos=_W()), V, "max_block_mb"),
    ("EE dtype float16", lambda: _ee(dtype=torch.float16).fit(Wpos=_W()), V, "dtype"),
    ("EE progress word", lambda: _ee(progress="yes").fit(Wpos=_W()), T, "progress"),
    ("EE device", lambda: _ee(device="tpu").fit(Wpos=_W()), V, "device"),
    # NeuralEE
    ("NEE seed -1", lambda: _nee(seed=-1).fit(_Y()), V, "seed"),
    ("NEE seed string", lambda: _nee(seed="0").fit(_Y()), V, "seed"),
    ("NEE hidden int", lambda: _nee(hidden=64).fit(_Y()), T, "hidden"),
    ("NEE hidden 0", lambda: _nee(hidden=(0,)).fit(_Y()), V, "hidden"),
    ("NEE batch_size 1", lambda: _nee(batch_size=1).fit(_Y()), V, "batch_size"),
    ("NEE batch_size 0.0", lambda: _nee(batch_size=0.0).fit(_Y()), V, "batch_size"),
    ("NEE batch_size 1.5", lambda: _nee(batch_size=1.5).fit(_Y()), V, "batch_size"),
    ("NEE batch_size NaN", lambda: _nee(batch_size=float("nan")).fit(_Y()), V, "batch_size"),
    ("NEE batch_size bool", lambda: _nee(batch_size=True).fit(_Y()), T, "batch_size"),
    ("NEE epochs 0", lambda: _nee(epochs=0).fit(_Y()), V, "epochs"),
    ("NEE lr 0", lambda: _nee(lr=0).fit(_Y()), V, "lr"),
    ("NEE lr inf", lambda: _nee(lr=float("inf")).fit(_Y()), V, "lr"),
    ("NEE lr diverges", lambda: _nee(lr=1e30, epochs=3).fit(_Y()), V, "lr"),
    ("NEE weight_decay -1", lambda: _nee(weight_decay=-1).fit(_Y()), V, "weight_decay"),
    ("NEE lam 0", lambda: _nee(lam=0).fit(_Y()), V, "lam"),
    ("NEE attraction", lambda: _nee(attraction="local").fit(_Y()), V, "attraction"),
    ("NEE repulsion", lambda: _nee(repulsion="none").fit(_Y()), V, "repulsion"),
    ("NEE affinity", lambda: _nee(affinity="tsne").fit(_Y()), V, "affinity"),
    ("NEE NaN Y", lambda: _nee().fit(_with(np.nan)), V, "NaN"),
    ("NEE identical cells", lambda: _nee().fit(np.ones((N, 5)), Wpos=_W()), V, "same values"),
    ("NEE two cells", lambda: _nee().fit(_Y()[:2]), V, "at least 3 cells"),
    ("NEE all-zero Wpos", lambda: _nee().fit(_Y(), Wpos=np.zeros((N, N))), V, "Wpos"),
    ("NEE Wpos with batch attraction", lambda: _nee(attraction="batch").fit(_Y(), Wpos=_W()), V, "Wpos"),
    ("NEE batch perplexity", lambda: _nee(attraction="batch", batch_size=5).fit(_Y()), V, "perplexity"),
    (
        "NEE neighbour_samples 0",
        lambda: _nee(attraction="sampled", neighbour_samples=0).fit(_Y()),
        V,
        "neighbour",
    ),
    (
        "NEE neighbour_samples float",
        lambda: _nee(attraction="sampled", neighbour_samples=2.5).fit(_Y()),
        V,
        "neighbour",
    ),
    ("NEE progress word", lambda: _nee(progress="yes").fit(_Y()), T, "progress"),
    ("NEE not fitted", lambda: ee.NeuralEE().transform(_Y()), V, "not fitted"),
    ("NEE transform features", lambda: _fitted().transform(_Y()[:, :3]), V, "features"),
    ("NEE transform 1-D", lambda: _fitted().transform(_Y()[0]), V, "2-D"),
    ("NEE transform NaN", lambda: _fitted().transform(_with(np.nan)), V, "NaN"),
    ("NEE transform chunk 0", lambda: _fitted().transform(_Y(), chunk=0), V, "chunk"),
    # fit_held_out
    ("held-out fraction 1", lambda: ee.fit_held_out(_Y(), train_fraction=1.0), V, "train_fraction"),
    ("held-out fraction 0", lambda: ee.fit_held_out(_Y(), train_fraction=0), V, "train_fraction"),
    (
        "held-out fraction NaN",
        lambda: ee.fit_held_out(_Y(), train_fraction=float("nan")),
        V,
        "train_fraction",
    ),
    ("held-out fraction word", lambda: ee.fit_held_out(_Y(), train_fraction="0.5"), V, "train_fraction"),
    ("held-out too few cells", lambda: ee.fit_held_out(_Y()[:4], train_fraction=0.5), V, "train_fraction"),
    ("held-out seed -1", lambda: ee.fit_held_out(_Y(), seed=-1), V, "seed"),
    ("held-out AnnData without obsm", lambda: ee.fit_held_out(_no_pca()), V, "obsm"),
    # epoch_batches
    ("batches batch_size 0", lambda: ee.epoch_batches(10, 0, _rng()), V, "batch_size"),
    ("batches batch_size float", lambda: ee.epoch_batches(10, 2.5, _rng()), V, "batch_size"),
    ("batches n 0", lambda: ee.epoch_batches(0, 5, _rng()), V, "n must"),
    ("batches n -3", lambda: ee.epoch_batches(-3, 2, _rng()), V, "n must"),
    ("batches rng int", lambda: ee.epoch_batches(10, 2, 0), T, "rng"),
    # mlp
    ("mlp d_in 0", lambda: ee.mlp(0), V, "d_in"),
    ("mlp d_out 0", lambda: ee.mlp(5, d_out=0), V, "d_out"),
    ("mlp hidden int", lambda: ee.mlp(5, 8), T, "hidden"),
    ("mlp hidden 0", lambda: ee.mlp(5, (8, 0)), V, "hidden"),
    ("mlp seed -1", lambda: ee.mlp(5, seed=-1), V, "seed"),
    ("mlp dtype int", lambda: ee.mlp(5, dtype=torch.int64), T, "dtype"),
    ("mlp dtype word", lambda: ee.mlp(5, dtype="float64"), T, "dtype"),
    # dense_ee_loss
    ("dense numpy X", lambda: ee.dense_ee_loss(np.zeros((3, 2)), torch.eye(3), torch.eye(3), 1.0), T, "X"),
    (
        "dense Wp shape",
        lambda: ee.dense_ee_loss(torch.zeros(3, 2), torch.eye(2), torch.eye(3), 1.0),
        V,
        "N × N",
    ),
    ("dense 1-D X", lambda: ee.dense_ee_loss(torch.zeros(3), torch.eye(3), torch.eye(3), 1.0), V, "N × d"),
    ("dense lam -1", lambda: ee.dense_ee_loss(torch.zeros(3, 2), torch.eye(3), torch.eye(3), -1.0), V, "lam"),
    # batch_ee_loss
    ("batch 1-D Xb", lambda: ee.batch_ee_loss(**_batch_args(Xb=torch.zeros(6))), V, "Xb"),
    ("batch rows outside", lambda: ee.batch_ee_loss(**_batch_args(rows=torch.tensor([0, 1, 9]))), V, "rows"),
    (
        "batch rows negative",
        lambda: ee.batch_ee_loss(**_batch_args(cols=torch.tensor([0, -1, 2]))),
        V,
        "cols",
    ),
    ("batch rows float", lambda: ee.batch_ee_loss(**_batch_args(rows=torch.tensor([0.0, 1, 2]))), T, "rows"),
    ("batch lengths", lambda: ee.batch_ee_loss(**_batch_args(w=torch.ones(2))), V, "w"),
    ("batch wneg larger", lambda: ee.batch_ee_loss(**_batch_args(wneg=torch.ones(8, 8))), V, "wneg"),
    (
        "batch wneg asymmetric",
        lambda: ee.batch_ee_loss(**_batch_args(wneg=torch.ones(6, 6).triu())),
        V,
        "wneg",
    ),
    ("batch numpy w", lambda: ee.batch_ee_loss(**_batch_args(w=np.ones(3))), T, "w"),
    ("batch lam NaN", lambda: ee.batch_ee_loss(**_batch_args(lam=float("nan"))), V, "lam"),
    # train_ee_network
    ("train net not a module", lambda: ee.train_ee_network(lambda x: x, _Y(), _W(), 5.0), T, "net"),
    (
        "train batch_size 1",
        lambda: ee.train_ee_network(ee.mlp(5), _Y(), _W(), 5.0, batch_size=1),
        V,
        "batch_size",
    ),
    ("train epochs 0", lambda: ee.train_ee_network(ee.mlp(5), _Y(), _W(), 5.0, epochs=0), V, "epochs"),
    ("train lr inf", lambda: ee.train_ee_network(ee.mlp(5), _Y(), _W(), 5.0, lr=float("inf")), V, "lr"),
    ("train seed -1", lambda: ee.train_ee_network(ee.mlp(5), _Y(), _W(), 5.0, seed=-1), V, "seed"),
    ("train lam 0", lambda: ee.train_ee_network(ee.mlp(5), _Y(), _W(), 0.0), V, "lam"),
    ("train all-zero Wpos", lambda: ee.train_ee_network(ee.mlp(5), _Y(), np.zeros((N, N)), 5.0), V, "Wpos"),
    ("train identical cells", lambda: ee.train_ee_network(ee.mlp(5), np.ones((N, 5)), _W(), 5.0), V, "Y"),
    ("train NaN Y", lambda: ee.train_ee_network(ee.mlp(5), _with(np.nan), _W(), 5.0), V, "NaN"),
    (
        "train net input width",
        lambda: ee.train_ee_network(ee.mlp(7), _Y(), _W(), 5.0, epochs=1),
        V,
        "features",
    ),
    (
        "train one-cell batch",
        lambda: ee.train_ee_network(ee.mlp(5), _Y(), _W(), 5.0, epochs=1, batches=_single_cell_batches),
        V,
        "batch",
    ),
    (
        "train batch outside",
        lambda: ee.train_ee_network(ee.mlp(5), _Y(), _W(), 5.0, epochs=1, batches=_outside_batches),
        V,
        "batches",
    ),
    (
        "train lr diverges",
        lambda: ee.train_ee_network(ee.mlp(5), _Y(), _W(), 5.0, epochs=3, lr=1e100),
        V,
        "lr",
    ),
]


@pytest.mark.parametrize(("call", "errors", "pattern"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_input_gives_a_clear_error(call, errors, pattern, assert_clear_error):
    assert_clear_error(call, errors, pattern)


# ----------------------------------------------------------------------------- accepted input forms
def _anndata():
    a = ad.AnnData(np.zeros((N, 1), dtype=np.float32))
    a.obsm["X_pca"] = _Y()
    return a


FORMS = {
    "float32": lambda Y: Y.astype(np.float32),
    "scipy sparse": sp.csr_matrix,
    "torch": torch.tensor,
    "torch float32": lambda Y: torch.tensor(Y, dtype=torch.float32),
    "nested lists": lambda Y: Y.tolist(),
    "AnnData obsm": lambda Y: _anndata(),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_affinities_are_the_same_for_every_input_form(form):
    Y = _Y()
    Yf = FORMS[form](Y)
    if form.endswith("float32"):
        Y = Y.astype(np.float32).astype(np.float64)  # the reference sees the same rounded numbers
    ref = ee.entropic_affinities(Y, 5.0, device="cpu").toarray()
    got = ee.entropic_affinities(Yf, 5.0, device="cpu").toarray()
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-15)


GRAPH_FORMS = {
    "dense numpy": lambda W: W.toarray(),
    "dense float32": lambda W: W.toarray().astype(np.float32),
    "scipy coo": sp.coo_matrix,
    "torch dense": lambda W: torch.tensor(W.toarray()),
    "torch sparse COO": lambda W: torch.tensor(W.toarray()).to_sparse(),
    "torch sparse CSR": lambda W: torch.tensor(W.toarray()).to_sparse_csr(),
}


@pytest.mark.parametrize("form", list(GRAPH_FORMS))
def test_objective_is_the_same_for_every_graph_form(form):
    """Against the pair sum written out in numpy (uniform w⁻ = 1/N² off the diagonal)."""
    W, X, lam = _W(), _X(), 3.0
    Wd = W.toarray()
    if form == "dense float32":
        Wd = Wd.astype(np.float32).astype(np.float64)  # the reference sees the same rounded weights
    D2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    off = 1.0 - np.eye(N)
    ref = (Wd * D2).sum() + lam * (off * np.exp(-D2)).sum() / N**2
    assert ee.ee_objective(X, GRAPH_FORMS[form](W), lam, device="cpu") == pytest.approx(ref, rel=1e-12)


def test_objective_of_one_cell_is_zero_and_integer_embeddings_are_accepted():
    # one cell: no pair, so both sums are empty
    assert ee.ee_objective(np.array([[0.3, -1.0]]), np.zeros((1, 1)), 2.0, device="cpu") == 0.0
    # an integer embedding is the float embedding with the same values
    Xi = np.round(3 * _X()).astype(np.int64)
    assert ee.ee_objective(Xi, _W(), 2.0, device="cpu") == pytest.approx(
        ee.ee_objective(Xi.astype(float), _W(), 2.0, device="cpu"), rel=1e-15
    )


def test_transform_maps_a_single_new_cell_like_a_batch():
    m = _fitted()
    one = m.transform(_Y()[:1])
    assert one.shape == (1, 2)
    np.testing.assert_allclose(one, m.transform(_Y())[:1], rtol=1e-6, atol=1e-7)
