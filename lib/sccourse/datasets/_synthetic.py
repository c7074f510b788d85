"""A synthetic negative-binomial count generator with cell-type structure (the fast default of unit tests)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validation import check_float, check_int, check_seed


def synthetic(
    n_cells: int = 600,
    n_genes: int = 200,
    n_types: int = 4,
    *,
    n_markers: int = 10,
    fold_change: float = 4.0,
    dispersion: float = 5.0,
    mean_library_size: float = 2000.0,
    seed: int = 0,
    chunk_size: int = 20_000,
) -> ad.AnnData:
    """Negative-binomial counts with cell-type structure, made in code (the fast test default).

    Gene ``g`` in a cell of type ``t`` with size factor ``s`` has mean ``μ = s · q_tg`` where
    ``q_t`` is a base profile (log-normal) with ``n_markers`` genes per type raised ``fold_change``-fold,
    renormalised to ``mean_library_size``; counts are NB(μ, r) with size ``r = dispersion``
    (variance ``μ + μ²/r``), drawn as a gamma-Poisson mixture.

    Parameters
    ----------
    n_cells, n_genes, n_types
        Matrix size and number of cell types (integers ≥ 1).
    n_markers
        Marker genes per type (≥ 0; ``n_markers · n_types ≤ n_genes``).
    fold_change, dispersion, mean_library_size
        Marker fold change, NB size ``r`` and mean counts per cell (finite, > 0).
    seed
        Seed of the local NumPy generator (an integer in [0, 2**32 − 1]); the same seed gives the same data.
    chunk_size
        Cells drawn at a time (memory only: the counts do not depend on it).

    Returns
    -------
    anndata.AnnData
        CSR int32 counts; ``obs["cell_type"]`` (``"type_0"`` …), ``obs["size_factor"]``;
        ``varm["true_mean_profile"]`` (genes × types, the q_t, sums to ``mean_library_size``);
        ``var["marker_of"]`` (type index a gene marks, -1 otherwise).

    Raises
    ------
    ValueError
        For a bad argument, or counts too large for int32 (lower ``mean_library_size``).
    """
    for name, v in dict(n_cells=n_cells, n_genes=n_genes, n_types=n_types, chunk_size=chunk_size).items():
        check_int(v, name, minimum=1)
    check_int(n_markers, "n_markers", minimum=0)
    if n_markers * n_types > n_genes:
        raise ValueError(f"n_markers * n_types ({n_markers} * {n_types}) must not exceed n_genes ({n_genes})")
    for name, v in dict(
        fold_change=fold_change, dispersion=dispersion, mean_library_size=mean_library_size
    ).items():
        check_float(v, name, minimum=0.0, strict=True)
    seed = check_seed(seed)
    rng = np.random.default_rng(seed)
    base = rng.lognormal(mean=0.0, sigma=1.0, size=n_genes)
    profiles = np.tile(base, (n_types, 1))
    marker_of = np.full(n_genes, -1)
    perm = rng.permutation(n_genes)
    for t in range(n_types):
        idx = perm[t * n_markers : (t + 1) * n_markers]
        profiles[t, idx] *= fold_change
        marker_of[idx] = t
    profiles *= mean_library_size / profiles.sum(axis=1, keepdims=True)
    types = rng.integers(0, n_types, size=n_cells)
    size_factor = rng.lognormal(mean=0.0, sigma=0.3, size=n_cells)
    size_factor /= size_factor.mean()
    blocks = []
    for start in range(0, n_cells, chunk_size):
        stop = min(start + chunk_size, n_cells)
        mu = size_factor[start:stop, None] * profiles[types[start:stop]]
        lam = rng.gamma(shape=dispersion, scale=mu / dispersion)
        try:
            counts = rng.poisson(lam)
        except ValueError:  # numpy: "lam value too large"
            counts = None
        if counts is None or (counts.size and counts.max() > np.iinfo(np.int32).max):
            raise ValueError(
                f"mean_library_size={mean_library_size:g} (with fold_change={fold_change:g}) gives counts above "
                f"{np.iinfo(np.int32).max}, which do not fit the int32 count matrix; use a smaller "
                "mean_library_size"
            )
        blocks.append(sp.csr_matrix(counts.astype(np.int32)))
    X = sp.vstack(blocks, format="csr")
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(
                [f"type_{t}" for t in types], categories=[f"type_{t}" for t in range(n_types)]
            ),
            "size_factor": size_factor,
        },
        index=[f"cell_{i:06d}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"marker_of": marker_of}, index=[f"gene_{j:05d}" for j in range(n_genes)])
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.varm["true_mean_profile"] = profiles.T.copy()
    adata.uns["synthetic"] = dict(
        n_types=n_types,
        n_markers=n_markers,
        fold_change=fold_change,
        dispersion=dispersion,
        mean_library_size=mean_library_size,
        seed=seed,
    )
    return adata
