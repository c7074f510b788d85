"""Cell graphs, heat diffusion on the cell manifold, and denoisers trained against manifold noise.

The pipeline of assignment ``01_tcell_manifold``:

1. :func:`preprocess_and_cluster` — filter, normalise, log1p, PCA, kNN graph, Leiden, UMAP (scanpy; it lives in
   :mod:`sccourse.pp`); :func:`marker_table`, :func:`select_clusters_by_markers` and :func:`select_t_cells` pick
   the T-cell clusters from marker expression.
2. :func:`embed_cells` — re-embed a subset (PCA, cosine kNN graph, UMAP, diffusion map; :mod:`sccourse.pp`).
3. Graph operators from the kNN affinities ``W`` (all ``scipy.sparse``): :func:`degree`,
   :func:`markov_operator` ``P = D⁻¹W``, :func:`symmetrized_operator` ``S = (P + Pᵀ)/2``,
   :func:`laplacian` ``L = I − D^{-1/2} W D^{-1/2}`` (or ``D − W``); :func:`to_torch_sparse`, :func:`to_torch`.
4. Noise processes :class:`GaussianNoise` (``X + σε``) and :class:`ManifoldHeat` (``S^k X``).
5. :func:`train_denoiser` (MLP d→hidden→d, GELU, AdamW, MSE, noise re-drawn each epoch, validation cells from
   :func:`split_cells`) and :func:`denoise`; :func:`match_sigma`; :func:`laplacian_energy` ``tr(XᵀLX)``.
6. Stretch: :func:`train_conditional_denoiser` (conditioned on the number of heat steps) and
   :func:`iterative_denoise` (from the strongest level down, cold-diffusion update).

Submodules: ``_pipeline`` (marker tables, cluster selection), ``_graph`` (operators), ``_noise`` (corruptions,
σ matching), ``_denoise`` (models and training). Blocking ``"sccourse.manifold"`` in a graded cell blocks every
name listed here, the ones re-exported from :mod:`sccourse.pp` included.
"""

from __future__ import annotations

from ..pp import embed_cells, preprocess_and_cluster, top_variable_genes
from ._denoise import (
    Denoiser,
    LevelDenoiser,
    denoise,
    iterative_denoise,
    split_cells,
    train_conditional_denoiser,
    train_denoiser,
)
from ._graph import (
    degree,
    laplacian,
    laplacian_energy,
    markov_operator,
    symmetrized_operator,
    to_torch,
    to_torch_sparse,
)
from ._noise import GaussianNoise, ManifoldHeat, NoiseProcess, match_sigma
from ._pipeline import (
    PBMC_MARKERS,
    T_CELL_MARKERS,
    marker_table,
    select_clusters_by_markers,
    select_t_cells,
    t_cell_clusters,
)

__all__ = [
    "PBMC_MARKERS",
    "T_CELL_MARKERS",
    "Denoiser",
    "GaussianNoise",
    "LevelDenoiser",
    "ManifoldHeat",
    "NoiseProcess",
    "degree",
    "denoise",
    "embed_cells",
    "iterative_denoise",
    "laplacian",
    "laplacian_energy",
    "marker_table",
    "markov_operator",
    "match_sigma",
    "preprocess_and_cluster",
    "select_clusters_by_markers",
    "select_t_cells",
    "split_cells",
    "symmetrized_operator",
    "t_cell_clusters",
    "to_torch",
    "to_torch_sparse",
    "top_variable_genes",
    "train_conditional_denoiser",
    "train_denoiser",
]
