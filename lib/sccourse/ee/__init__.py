"""Entropic affinities, elastic embedding (EE) and NeuralEE: nonlinear embeddings that scale to 10⁶ cells.

The elastic embedding of data ``Y`` (N × D) is the ``X`` (N × d) minimising

.. math:: E(X) = \\sum_{nm} w^+_{nm} \\|x_n - x_m\\|^2 + \\lambda \\sum_{nm} w^-_{nm} e^{-\\|x_n - x_m\\|^2}

where ``W⁺`` are entropic affinities of ``Y`` (sparse, over k nearest neighbours) and ``W⁻`` repulsive
weights (uniform by default). :class:`ElasticEmbedding` optimises the coordinates directly with the
spectral direction; :class:`NeuralEE` trains a network ``X = f(Y)`` on mini-batches of the same loss,
so it scales to millions of cells and maps new cells with :meth:`NeuralEE.transform`.

Modules: ``_affinities`` (W⁺, W⁻), ``_objective`` (E and ∇E), ``_spectral`` (:class:`ElasticEmbedding`),
``_training`` and ``_neural`` (:class:`NeuralEE` and its parts), ``_checks`` (argument checks); the kernels
live in :mod:`sccourse._ee_kernels`.
"""

from __future__ import annotations

from .._ee_data import prepare_pcs
from ._affinities import entropic_affinities, repulsive_weights
from ._neural import NeuralEE, fit_held_out
from ._objective import ee_gradient, ee_objective
from ._spectral import ElasticEmbedding
from ._training import batch_ee_loss, dense_ee_loss, epoch_batches, mlp, train_ee_network

__all__ = [
    "ElasticEmbedding",
    "NeuralEE",
    "batch_ee_loss",
    "dense_ee_loss",
    "ee_gradient",
    "ee_objective",
    "entropic_affinities",
    "epoch_batches",
    "fit_held_out",
    "mlp",
    "prepare_pcs",
    "repulsive_weights",
    "train_ee_network",
]
