"""Figures used across the course: each topic keeps its figures in its own file, re-exported here by name."""

from __future__ import annotations

from ._curves import compare_curves, monitor_perf
from ._ee import bandwidths, embedding_grid, held_out_map, objective_vs_time
from ._etm import topic_clustermap, topic_gene_heatmap, tsne_side_by_side
from ._manifold import denoised_marker_grid, embedding_panels, energy_bars, loss_histories, marker_matrixplot
from ._nmf import factor_celltype_heatmap, factor_order, top_genes_heatmap
from ._qc import normalisation_effect, qc_overview
from ._simulate import (
    plot_gene_correlations,
    plot_mean_curves,
    plot_nb_pmfs,
    plot_parameter_recovery,
    plot_real_vs_synthetic,
)

__all__ = [
    "bandwidths",
    "compare_curves",
    "denoised_marker_grid",
    "embedding_grid",
    "embedding_panels",
    "energy_bars",
    "factor_celltype_heatmap",
    "factor_order",
    "held_out_map",
    "loss_histories",
    "marker_matrixplot",
    "monitor_perf",
    "normalisation_effect",
    "objective_vs_time",
    "plot_gene_correlations",
    "plot_mean_curves",
    "plot_nb_pmfs",
    "plot_parameter_recovery",
    "plot_real_vs_synthetic",
    "qc_overview",
    "top_genes_heatmap",
    "topic_clustermap",
    "topic_gene_heatmap",
    "tsne_side_by_side",
]
