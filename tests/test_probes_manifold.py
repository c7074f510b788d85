"""Bad input to the public functions and classes of sccourse.manifold gives a clear error: the right exception
type and a message naming the argument, never a silent wrong result or a crash deep inside torch or scipy.
(The probes on AnnData counts are in tests/test_probes.py; the completeness check covering both is there too.)

Each probe is (name, call, expected exception types, a pattern the message must contain).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sccourse import manifold

V = ValueError
T = (TypeError, ValueError)


def _graph(n=12):
    W = sp.random(n, n, density=0.4, random_state=0)
    return sp.csr_matrix(W + W.T)


def _markers():
    """40 log-normalised cells in two clusters, with the PBMC marker genes."""
    rng = np.random.default_rng(3)
    a = ad.AnnData(np.log1p(rng.poisson(1.0, size=(40, 8))).astype(np.float32))
    a.var_names = ["CD3D", "CD3E", "MS4A1", "LYZ", "NKG7", "GNLY", "PPBP", "ACTB"]
    a.obs["leiden"] = pd.Categorical(np.repeat(["0", "1"], 20))
    return a


def _heat(n=12):
    return manifold.ManifoldHeat(manifold.symmetrized_operator(_graph(n)), steps=1)


def _level_model(d=3, max_level=2):
    return manifold.LevelDenoiser(d, max_level, hidden=4, emb_dim=2)


PROBES = [
    ("degree negative W", lambda: manifold.degree(-_graph()), V, "negative"),
    (
        "markov_operator non-square",
        lambda: manifold.markov_operator(sp.csr_matrix(np.ones((3, 4)))),
        V,
        "square",
    ),
    ("laplacian NaN", lambda: manifold.laplacian(sp.csr_matrix(np.full((3, 3), np.nan))), V, "NaN"),
    (
        "laplacian_energy shape",
        lambda: manifold.laplacian_energy(manifold.laplacian(_graph()), np.ones((5, 2))),
        V,
        "rows",
    ),
    (
        "ManifoldHeat steps -1",
        lambda: manifold.ManifoldHeat(manifold.symmetrized_operator(_graph()), steps=-1),
        V,
        "steps",
    ),
    ("GaussianNoise sigma -1", lambda: manifold.GaussianNoise(-1.0), V, "sigma"),
    (
        "match_sigma bad method",
        lambda: manifold.match_sigma(torch.ones(4, 3), 1.0, method="magic"),
        V,
        "method",
    ),
    ("top_variable_genes n=0", lambda: manifold.top_variable_genes(np.ones((4, 3)), 0), V, "n"),
    ("split_cells fraction 1", lambda: manifold.split_cells(10, 1.0), V, "val_fraction"),
    (
        "train_denoiser epochs 0",
        lambda: manifold.train_denoiser(torch.ones(20, 3), manifold.GaussianNoise(0.1), epochs=0),
        V,
        "epochs",
    ),
    ("to_torch strings", lambda: manifold.to_torch(np.array([["a"]])), T, "dtype"),
    ("Denoiser d 0", lambda: manifold.Denoiser(0), V, "d must"),
    ("Denoiser hidden float", lambda: manifold.Denoiser(5, hidden=2.5), V, "hidden"),
    ("Denoiser genes length", lambda: manifold.Denoiser(5, genes=[0, 1]), V, "genes"),
    ("Denoiser genes names", lambda: manifold.Denoiser(2, genes=["a", "b"]), V, "genes"),
    ("LevelDenoiser max_level 0", lambda: manifold.LevelDenoiser(5, 0), V, "max_level"),
    ("LevelDenoiser emb_dim odd", lambda: manifold.LevelDenoiser(5, 3, emb_dim=3), V, "emb_dim"),
    ("LevelDenoiser genes negative", lambda: manifold.LevelDenoiser(2, 3, genes=[-1, 0]), V, "genes"),
    (
        "NoiseProcess has no sample",
        lambda: manifold.NoiseProcess().sample(torch.ones(3, 3)),
        NotImplementedError,
        "sample",
    ),
    (
        "train_denoiser with the bare NoiseProcess",
        lambda: manifold.train_denoiser(torch.ones(20, 3), manifold.NoiseProcess(), epochs=1, device="cpu"),
        TypeError,
        "noise must be",
    ),
    ("denoise not a module", lambda: manifold.denoise(lambda x: x, np.ones((3, 5))), T, "model"),
    (
        "denoise width",
        lambda: manifold.denoise(manifold.Denoiser(5, hidden=4), np.ones((3, 4))),
        V,
        "columns",
    ),
    (
        "denoise NaN",
        lambda: manifold.denoise(manifold.Denoiser(5, hidden=4), np.full((3, 5), np.nan)),
        V,
        "NaN",
    ),
    (
        "denoise strings",
        lambda: manifold.denoise(manifold.Denoiser(5, hidden=4), np.full((3, 5), "a")),
        V,
        "dtype",
    ),
    ("denoise level missing", lambda: manifold.denoise(_level_model(), np.ones((4, 3))), V, "level"),
    (
        "denoise level too high",
        lambda: manifold.denoise(_level_model(), np.ones((4, 3)), level=9),
        V,
        "level",
    ),
    ("denoise level float", lambda: manifold.denoise(_level_model(), np.ones((4, 3)), level=0.5), V, "level"),
    (
        "denoise level for a plain Denoiser",
        lambda: manifold.denoise(manifold.Denoiser(3, hidden=4), np.ones((4, 3)), level=1),
        V,
        "level",
    ),
    (
        "iterative_denoise plain Denoiser",
        lambda: manifold.iterative_denoise(
            manifold.Denoiser(3, hidden=4), np.ones((12, 3)), _heat(), steps=1
        ),
        T,
        "LevelDenoiser",
    ),
    (
        "iterative_denoise steps above max_level",
        lambda: manifold.iterative_denoise(_level_model(), np.ones((12, 3)), _heat(), steps=5),
        V,
        "steps",
    ),
    (
        "iterative_denoise wrong cells",
        lambda: manifold.iterative_denoise(_level_model(), np.ones((7, 3)), _heat(), steps=1),
        V,
        "X_noisy",
    ),
    (
        "iterative_denoise heat not ManifoldHeat",
        lambda: manifold.iterative_denoise(
            _level_model(), np.ones((12, 3)), manifold.GaussianNoise(0.1), steps=1
        ),
        T,
        "heat",
    ),
    (
        "train_conditional_denoiser max_steps 0",
        lambda: manifold.train_conditional_denoiser(torch.ones(12, 3), _heat(), max_steps=0),
        V,
        "max_steps",
    ),
    (
        "train_conditional_denoiser cells differ",
        lambda: manifold.train_conditional_denoiser(torch.ones(7, 3), _heat(), epochs=1, device="cpu"),
        V,
        "heat operator",
    ),
    (
        "train_conditional_denoiser emb_dim odd",
        lambda: manifold.train_conditional_denoiser(torch.ones(12, 3), _heat(), emb_dim=3),
        V,
        "emb_dim",
    ),
    (
        "train_conditional_denoiser NaN",
        lambda: manifold.train_conditional_denoiser(
            torch.full((12, 3), np.nan), _heat(), epochs=1, device="cpu"
        ),
        V,
        "NaN",
    ),
    (
        "train_conditional_denoiser heat",
        lambda: manifold.train_conditional_denoiser(torch.ones(12, 3), manifold.GaussianNoise(0.1)),
        T,
        "heat",
    ),
    (
        "to_torch_sparse dtype string",
        lambda: manifold.to_torch_sparse(sp.eye(3), dtype="float32"),
        T,
        "dtype",
    ),
    ("to_torch_sparse layout", lambda: manifold.to_torch_sparse(sp.eye(3), layout="csc"), V, "layout"),
    ("to_torch_sparse 1-D", lambda: manifold.to_torch_sparse(np.ones(3)), V, "2-D"),
    (
        "to_torch_sparse NaN",
        lambda: manifold.to_torch_sparse(sp.csr_matrix(np.full((3, 3), np.nan))),
        V,
        "NaN",
    ),
    ("to_torch_sparse device", lambda: manifold.to_torch_sparse(sp.eye(3), device="tpu"), V, "device"),
    ("marker_table not AnnData", lambda: manifold.marker_table(np.ones((3, 3))), T, "AnnData"),
    ("marker_table groupby missing", lambda: manifold.marker_table(_markers(), groupby="x"), V, "groupby"),
    ("marker_table unknown gene", lambda: manifold.marker_table(_markers(), ["FOO"]), V, "FOO"),
    ("marker_table no markers", lambda: manifold.marker_table(_markers(), []), V, "markers"),
    ("marker_table markers a string", lambda: manifold.marker_table(_markers(), "CD3D"), V, "markers"),
    ("marker_table stat", lambda: manifold.marker_table(_markers(), stat="median"), V, "stat"),
    (
        "select_clusters_by_markers unknown gene",
        lambda: manifold.select_clusters_by_markers(_markers(), ["FOO"]),
        V,
        "FOO",
    ),
    (
        "select_clusters_by_markers min_ratio NaN",
        lambda: manifold.select_clusters_by_markers(_markers(), min_ratio=float("nan")),
        V,
        "min_ratio",
    ),
    (
        "select_clusters_by_markers min_fraction 2",
        lambda: manifold.select_clusters_by_markers(_markers(), min_fraction=2),
        V,
        "min_fraction",
    ),
    ("select_t_cells not AnnData", lambda: manifold.select_t_cells(np.ones((3, 3))), T, "AnnData"),
    (
        "select_t_cells groupby missing",
        lambda: manifold.select_t_cells(_markers(), groupby="x"),
        V,
        "groupby",
    ),
    (
        "select_t_cells min_ratio 0",
        lambda: manifold.select_t_cells(_markers(), min_ratio=0),
        V,
        "min_ratio",
    ),
    ("t_cell_clusters no markers", lambda: manifold.t_cell_clusters(_markers(), markers=[]), V, "markers"),
    (
        "t_cell_clusters min_ratio inf",
        lambda: manifold.t_cell_clusters(_markers(), min_ratio=float("inf")),
        V,
        "min_ratio",
    ),
    ("embed_cells not AnnData", lambda: manifold.embed_cells(np.ones((30, 4))), T, "AnnData"),
    ("to_torch_sparse strings", lambda: manifold.to_torch_sparse(np.array([["a"]])), V, "M must be a real"),
    (
        "to_torch_sparse complex",
        lambda: manifold.to_torch_sparse(np.ones((2, 2)) * 1j),
        V,
        "M must be a real",
    ),
]


@pytest.mark.parametrize(("call", "errors", "pattern"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_input_gives_a_clear_error(call, errors, pattern, assert_clear_error):
    assert_clear_error(call, errors, pattern)
