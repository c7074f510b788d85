"""sccourse.nmf.nmf vs scikit-learn NMF(solver="mu") on the Baron mouse pancreas matrix.

Workload: Baron mouse pancreas (what the loader returns; mouse 1 = 822 cells on the mirror), the 4,000 genes
with the largest variance of log1p CPM (:func:`sccourse.nmf.select_variable_genes`), K = 13, 200 iterations,
both losses, the same random initialisation for both, no early stopping (scikit-learn ``tol=0``; ours
records the objective only at the end, as scikit-learn computes none with ``tol=0``).

The reference is scikit-learn on the dense float64 cells x genes matrix (the configuration of the measured
reference figures). Ours runs on the sparse matrix, in float32 (the default) and float64. Quality: the
final objective of both fits computed by one numpy formula in float64 (mean squared error, or mean
generalised KL divergence), their relative difference, and the ARI of each (Leiden, resolution 0.15, on the
cells x K factors). On a GPU (when present) ours is also timed on CUDA, without a reference.

Run: ``python -m benchmarks nmf`` (``--quick``: 20 iterations, one repeat, nothing written).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ._harness import Case

K = 13
N_ITER = 200
SEED = 0


def _data():
    import sccourse.datasets as ds
    from sccourse.nmf import select_variable_genes

    # a checkout beside shared/ gets the course's offline mirror by default (as tests/conftest.py does)
    os.environ.setdefault("SCCOURSE_DATA_MIRROR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mirror holds mouse 1 only
        adata = select_variable_genes(ds.baron_mouse_pancreas(), 4000)
    return adata


def _objective(Xc: np.ndarray, W_genes: np.ndarray, H_cells: np.ndarray, loss: str) -> float:
    """Objective of X (cells x genes) ≈ H_cellsᵀ W_genesᵀ in float64 numpy."""
    WH = (np.asarray(W_genes, dtype=np.float64) @ np.asarray(H_cells, dtype=np.float64)).T
    if loss == "sse":
        return float(np.mean((Xc - WH) ** 2))
    pos = Xc > 0
    WHs = np.maximum(WH, np.finfo(np.float32).eps)
    return float((np.sum(Xc[pos] * np.log(Xc[pos] / WHs[pos])) - Xc.sum() + WH.sum()) / Xc.size)


def cases(quick: bool):
    import torch
    from sklearn.decomposition import NMF

    from sccourse.metrics import evaluate_ari
    from sccourse.nmf import initialize, nmf

    adata = _data()
    labels = adata.obs["cell_type"].to_numpy()
    X_sparse = adata.X.T.tocsr().astype(np.float64)  # genes x cells
    Xc = adata.X.toarray().astype(np.float64)  # cells x genes, scikit-learn layout
    n_iter = 20 if quick else N_ITER
    repeats = 1 if quick else 3
    W0, H0 = initialize(X_sparse, K, seed=SEED)
    beta = {"sse": "frobenius", "poisson": "kullback-leibler"}
    shape = f"{adata.n_obs} cells x {adata.n_vars} genes, K={K}, {n_iter} it"

    def reference(loss):
        def run():
            m = NMF(K, solver="mu", beta_loss=beta[loss], init="custom", max_iter=n_iter, tol=0)
            Wc = m.fit_transform(Xc, W=H0.T.copy(), H=W0.T.copy())
            return m.components_.T, Wc.T  # genes x K, K x cells
        return run

    def ours(loss, dtype, device="cpu"):
        def run():
            r = nmf(X_sparse, K, loss=loss, init=(W0, H0), max_iter=n_iter, eval_every=n_iter, dtype=dtype,
                    device=device)
            return r.W, r.H
        return run

    def quality(loss):
        def q(out, ref):
            o = _objective(Xc, out[0], out[1], loss)
            row = {"objective_ours": o, "ari_ours": evaluate_ari(out[1].T, labels)}
            if ref is not None:
                r = _objective(Xc, ref[0], ref[1], loss)
                row.update(objective_ref=r, rel_objective_diff=(o - r) / abs(r),
                           ari_ref=evaluate_ari(ref[1].T, labels))
            return row
        return q

    for loss in ("sse", "poisson"):
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            yield Case(
                name=f"nmf-{loss} sparse {tag} vs sklearn mu dense f64 ({shape})",
                ours=ours(loss, dtype), reference=reference(loss),
                reference_name=f"sklearn {__import__('sklearn').__version__} NMF(solver='mu', "
                               f"beta_loss='{beta[loss]}')",
                quality=quality(loss), repeats=repeats, device="cpu",
                notes=f"ours: sccourse.nmf.nmf on CSR genes x cells, {tag}; same init (seed {SEED})",
            )
    if torch.cuda.is_available():
        for loss in ("sse", "poisson"):
            yield Case(
                name=f"nmf-{loss} sparse f32 on CUDA ({shape})",
                ours=ours(loss, torch.float32, "cuda"), reference=None,
                reference_name="none (absolute GPU time)", quality=quality(loss), repeats=repeats,
                device="cuda", notes="transfer of X and of the factors included",
            )
