"""Preprocessing: the one home of normalisation, variable genes, principal components and the clustering pipeline.

* :func:`normalize_log1p` — ``x̃_cg = log(1 + s · x_cg / Σ_g x_cg)``, raw counts kept in a layer;
* :func:`select_variable_genes` (AnnData, variance of log1p CPM) and :func:`top_variable_genes` (any matrix);
* :func:`prepare_pcs` — counts → normalise → log1p → Seurat variable genes → scale → PCA;
* :func:`preprocess_and_cluster` — filter, normalise, log1p, PCA, kNN graph, Leiden, UMAP (scanpy);
  :func:`embed_cells` — re-embed a subset (PCA, kNN graph, UMAP, diffusion map).

Every function that writes into an AnnData takes ``key_added=`` (keyword-only) for the slots it writes; the
defaults are the keys the course has always used. The older homes (``sccourse.qc.normalize_log1p``,
``sccourse.nmf.select_variable_genes``, ``sccourse.manifold.preprocess_and_cluster``, ``embed_cells``,
``top_variable_genes`` and ``sccourse.ee.prepare_pcs``) re-export these same functions.
"""

from __future__ import annotations

from ._cluster import Metric, embed_cells, preprocess_and_cluster
from ._genes import select_variable_genes, top_variable_genes
from ._normalize import normalize_log1p
from ._pcs import prepare_pcs

__all__ = [
    "Metric",
    "embed_cells",
    "normalize_log1p",
    "prepare_pcs",
    "preprocess_and_cluster",
    "select_variable_genes",
    "top_variable_genes",
]
