"""Elastic embedding and NeuralEE vs neuralee 0.1.6, and NeuralEE scaling (time, peak RSS).

    python -m benchmarks ee            # full: PBMC 3k EE, 6k-cell NeuralEE, scaling 10k / 100k
    python -m benchmarks ee --quick    # small inputs, checks the benchmark runs (RESULTS.md untouched)
    SCCOURSE_BENCH_EE_1M=1 python -m benchmarks ee   # also the 1M-cell scaling case

neuralee is not a project dependency: run from ``.venv-bench`` (see benchmarks/README-ee.md). Without it the
reference columns are empty and only our side is timed.
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np

from ._harness import Case

LAM = 10.0  # NeuralEE's HEMATO demo
PERPLEXITY = 30.0


def _neuralee():
    try:
        import neuralee  # noqa: F401
        from neuralee.dataset import GeneExpressionDataset
        from neuralee.embedding import NeuralEE as RefNeuralEE
    except ImportError:
        return None
    import torch
    from neuralee._aux import embeddingsLoss

    # neuralee 0.1.6's custom autograd function returns an integer zero, which current PyTorch refuses to
    # differentiate; the benchmark (only) makes it a float zero so that fine_tune runs.
    def _forward(ctx, X, Lp, Wn, lam):
        ctx.X, ctx.Lp, ctx.Wn, ctx.lam = X, Lp, Wn, lam
        return X.new_zeros(())

    embeddingsLoss.ELoss.forward = staticmethod(_forward)
    if not hasattr(torch, "cholesky"):  # removed from recent torch; neuralee's EE calls it
        torch.cholesky = lambda A, upper=False: torch.linalg.cholesky(A, upper=upper)
    return GeneExpressionDataset, RefNeuralEE


def _pbmc_pcs(n_cells=None):
    from sccourse import datasets, ee

    a = ee.prepare_pcs(datasets.pbmc3k(), n_top_genes=2000, n_pcs=50, n_cells=n_cells, label_key="cell_type")
    return a.obsm["X_pca"].astype(np.float64), a.obs["cell_type"].astype(str).to_numpy()


def _synthetic_pcs(n_cells, n_pcs=20, seed=0):
    from sccourse import datasets, ee

    a = datasets.synthetic(n_cells=n_cells, n_genes=200, n_types=10, seed=seed)
    a = ee.prepare_pcs(a, n_top_genes=None, n_pcs=n_pcs, seed=seed)
    return a.obsm["X_pca"].astype(np.float64), a.obs["cell_type"].astype(str).to_numpy()


def _label_accuracy(X, labels, k=10):
    """10-NN label accuracy (leave-one-out), the figure quoted for neuralee in measured-references.md."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(k), X, labels, cv=5).mean())


def _ee_case(quick: bool) -> Case:
    import torch

    from sccourse import ee

    Y, labels = _pbmc_pcs(400 if quick else None)
    maxit = 20 if quick else 200
    ref = _neuralee()
    state = {}
    if ref is not None:
        Dataset, RefNeuralEE = ref
        ds = Dataset(Y.astype(np.float32))
        ds.affinity(perplexity=PERPLEXITY)  # dense N x N attractive and (distance-based) repulsive weights
        Wp, Wn = np.asarray(ds.Wp, dtype=np.float64), np.asarray(ds.Wn, dtype=np.float64)

        def reference():
            torch.manual_seed(0)
            out = RefNeuralEE(ds, d=2, lam=LAM, device=torch.device("cpu")).EE(maxit=maxit)
            return out["X"].double().numpy()

        X_ref = reference()
        state["target"] = ee.ee_objective(X_ref, Wp, LAM, Wneg=Wn, device="cpu")
        # the same start as neuralee's EE (its first draw after the seed: 1e-5 · randn(N, 2)); EE is not
        # convex, and from different starts the two runs settle in different local minima
        torch.manual_seed(0)
        state["init"] = (1e-5 * torch.randn(Y.shape[0], 2)).double().numpy()
    else:
        reference = None
        Wp = ee.entropic_affinities(Y, PERPLEXITY, n_neighbors="all", device="cpu").toarray()
        D2 = ((Y[:, None] - Y[None]) ** 2).sum(-1)
        Wn = D2 / D2.sum()
        state["target"], state["init"] = None, None

    def ours():
        m = ee.ElasticEmbedding(
            lam=LAM, max_iter=5 * maxit, tol=0, target=state["target"], device="cpu", seed=0
        ).fit(Wpos=Wp, Wneg=Wn, init=state["init"])
        return m.embedding_

    def quality(X_ours, X_ref):
        q = {
            "objective_ours": ee.ee_objective(X_ours, Wp, LAM, Wneg=Wn, device="cpu"),
            "acc10_ours": _label_accuracy(X_ours, labels),
        }
        if X_ref is not None:
            q.update(
                objective_ref=ee.ee_objective(X_ref, Wp, LAM, Wneg=Wn, device="cpu"),
                acc10_ref=_label_accuracy(X_ref, labels),
            )
        return q

    return Case(
        name=f"EE to neuralee's {maxit}-iteration objective, PBMC 3k ({Y.shape[0]} cells, 50 PCs, "
        f"perplexity 30, λ={LAM:g}, same dense affinities)",
        ours=ours,
        reference=reference,
        reference_name=f"neuralee 0.1.6 EE(maxit={maxit})",
        quality=quality,
        repeats=1 if quick else 3,
        notes="ours stops once E <= neuralee's final E",
    )


def _fine_tune_case(quick: bool) -> Case:
    import torch

    from sccourse import ee

    n = 800 if quick else 6000
    epochs = 10 if quick else 200
    Y, labels = _synthetic_pcs(n, n_pcs=50)
    ref = _neuralee()
    Wn = None
    if ref is not None:
        Dataset, RefNeuralEE = ref
        ds = Dataset(Y.astype(np.float32))
        ds.affinity(perplexity=PERPLEXITY)
        Wp_dense, Wn = np.asarray(ds.Wp, dtype=np.float64), np.asarray(ds.Wn, dtype=np.float64)

        def reference():
            torch.manual_seed(0)
            out = RefNeuralEE(ds, d=2, lam=LAM, device=torch.device("cpu")).fine_tune(
                maxit=epochs, verbose=False, frequence=max(1, epochs)
            )
            return out["X"].double().numpy()
    else:
        reference = None
        Wp_dense = ee.entropic_affinities(Y, PERPLEXITY, n_neighbors="all", device="cpu").toarray()

    def ours():
        # end to end: sparse kNN affinities + full-batch training, distance-based repulsion like neuralee
        return ee.NeuralEE(
            lam=LAM,
            perplexity=PERPLEXITY,
            repulsion="distance",
            batch_size=1.0,
            epochs=epochs,
            lr=1e-2,
            device="cpu",
            seed=0,
            progress=False,
        ).fit_transform(Y)

    def quality(X_ours, X_ref):
        wneg = Wn if Wn is not None else ee.repulsive_weights(Y, kind="distance", device="cpu")
        q = {
            "objective_ours": ee.ee_objective(X_ours, Wp_dense, LAM, Wneg=wneg, device="cpu"),
            "acc10_ours": _label_accuracy(X_ours, labels),
        }
        if X_ref is not None:
            q.update(
                objective_ref=ee.ee_objective(X_ref, Wp_dense, LAM, Wneg=wneg, device="cpu"),
                acc10_ref=_label_accuracy(X_ref, labels),
            )
        return q

    return Case(
        name=f"NeuralEE full batch, {epochs} epochs, synthetic {n} cells x 50 PCs (objective on neuralee's "
        "dense weights)",
        ours=ours,
        reference=reference,
        reference_name=f"neuralee 0.1.6 fine_tune(maxit={epochs}), float-zero patch",
        quality=quality,
        repeats=1,
        notes="ours includes kNN + affinities; the reference's are precomputed",
    )


def _scaling_case(n: int, quick: bool) -> Case:
    from sccourse import ee, get_device

    dev = get_device("auto")
    Y, labels = _synthetic_pcs(n, n_pcs=20)
    times = {}

    def ours():
        t0 = time.perf_counter()
        W = ee.entropic_affinities(Y, PERPLEXITY, device=dev, seed=0)
        t1 = time.perf_counter()
        m = ee.NeuralEE(
            lam=LAM, batch_size=2000, epochs=2 if quick else 3, lr=3e-3, device=dev, seed=0, progress=False
        ).fit(Y, Wpos=W)
        times.update(
            affinities_s=t1 - t0,
            training_s=time.perf_counter() - t1,
            peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        )
        return m.embedding_

    def quality(X, _):
        show = np.random.default_rng(0).choice(n, min(n, 5000), replace=False)
        from sccourse.metrics import knn_preservation

        return {**times, "knn_preservation_5k": knn_preservation(Y[show], X[show], k=10)}

    return Case(
        name=f"NeuralEE end to end (kNN + affinities + 3 epochs, batch 2000), {n:,} synthetic cells",
        ours=ours,
        reference=None,
        reference_name="none (neuralee EE is capped at 15,000 cells; dense N x N)",
        quality=quality,
        repeats=1,
        warmup=False,
        device=dev.type,
        notes="peak RSS is the process maximum so far (cases run smallest first)",
    )


def cases(quick: bool):
    sizes = [2_000, 5_000] if quick else [10_000, 100_000]
    if not quick and os.environ.get("SCCOURSE_BENCH_EE_1M"):
        sizes.append(1_000_000)
    for n in sizes:  # first, so that peak RSS is not inflated by the dense reference cases
        yield _scaling_case(n, quick)
    yield _ee_case(quick)
    yield _fine_tune_case(quick)
