"""What the two elastic-embedding estimators (:class:`ElasticEmbedding`, :class:`NeuralEE`) share: the graph and
run options, their checks, and the start of ``fit`` (the AnnData slots, the data matrix and the affinities W⁺).
"""

from __future__ import annotations

from .. import _progress
from .._device import get_device
from .._validation import check_choice, check_int, check_seed
from ._affinities import prepare_affinities
from ._checks import check_key_added, check_lam, data_matrix


class _EmbeddingEstimator:
    """Stores and checks ``n_components, lam, perplexity, n_neighbors, affinity, repulsion, device, seed,
    progress``; the subclass adds its own options and its ``_checked()``.
    """

    def __init__(
        self, n_components, *, lam, perplexity, n_neighbors, affinity, repulsion, device, seed, progress
    ):
        self.n_components, self.lam, self.perplexity = n_components, lam, perplexity
        self.n_neighbors, self.affinity, self.repulsion = n_neighbors, affinity, repulsion
        self.device, self.seed, self.progress = device, seed, progress

    def _common_checked(self) -> dict:
        """The shared options, validated (the estimators' ``__init__`` only stores them)."""
        _progress.enabled(self.progress)  # True, False or None
        return {
            "n_components": check_int(self.n_components, "n_components", minimum=1),
            "lam": check_lam(self.lam, positive=True),
            "affinity": check_choice(self.affinity, "affinity", ("ea", "x2p")),
            "repulsion": check_choice(self.repulsion, "repulsion", ("uniform", "distance")),
            "seed": check_seed(self.seed),
            "device": get_device(self.device),
        }

    def _start_fit(self, Y, use_rep, key_added, *, optional: bool = False):
        """(checked options, the data as a numpy matrix or ``None`` when ``optional`` and not given)."""
        p = self._checked()
        check_key_added(key_added, Y)
        return p, (None if optional and Y is None else data_matrix(Y, use_rep=use_rep))

    def _attraction(self, p, Yn, Wpos):
        """W⁺: ``Wpos`` checked against the data, or the entropic affinities of the data."""
        return prepare_affinities(
            Yn,
            Wpos,
            perplexity=self.perplexity,
            n_neighbors=self.n_neighbors,
            affinity=p.affinity,
            device=p.device,
            seed=p.seed,
        )
