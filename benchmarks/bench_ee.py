"""Elastic embedding and NeuralEE vs neuralee 0.1.6, and NeuralEE scaling (time, peak RSS).

    python -m benchmarks ee            # full: PBMC 3k EE, 6k-cell NeuralEE, scaling 10k / 100k,
                                       # and NeuralEE against UMAP and openTSNE (PBMC 3k, 20k, 100k cells)
    python -m benchmarks ee --quick    # small inputs, checks the benchmark runs (RESULTS.md untouched)
    python -m benchmarks ee --case "vs UMAP"          # only the UMAP comparisons ("vs openTSNE" likewise)
    SCCOURSE_BENCH_EE_1M=1 python -m benchmarks ee   # also the 1M-cell scaling case

neuralee and openTSNE are not project dependencies: run from ``.venv-bench`` (see benchmarks/README-ee.md).
Without them the reference columns are empty and only our side is timed.
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
    """10-NN label accuracy by 5-fold cross-validation (scikit-learn's stratified folds, in order), the figure quoted
    for neuralee in measured-references.md."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(k), X, labels, cv=5).mean())


def _objective_and_accuracy(X_ours, X_ref, Wp, Wn, labels) -> dict:
    """EE objective (λ = LAM) and 10-NN label accuracy of our map and, when there is one, the reference's."""
    from sccourse import ee

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
        sq = (Y * Y).sum(1)
        D2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (Y @ Y.T), 0.0)  # no N x N x D temporary
        np.fill_diagonal(D2, 0.0)
        Wn = D2 / D2.sum()
        state["target"], state["init"] = None, None

    def ours():
        m = ee.ElasticEmbedding(
            lam=LAM, max_iter=5 * maxit, tol=0, target=state["target"], device="cpu", seed=0
        ).fit(Wpos=Wp, Wneg=Wn, init=state["init"])
        return m.embedding_

    def quality(X_ours, X_ref):
        return _objective_and_accuracy(X_ours, X_ref, Wp, Wn, labels)

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
        Wp_dense = None  # formed only when the case runs (not when another case is picked with --case)

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
        nonlocal Wp_dense
        if Wp_dense is None:
            Wp_dense = ee.entropic_affinities(Y, PERPLEXITY, n_neighbors="all", device="cpu").toarray()
        wneg = Wn if Wn is not None else ee.repulsive_weights(Y, kind="distance", device="cpu")
        return _objective_and_accuracy(X_ours, X_ref, Wp_dense, wneg, labels)

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


# --------------------------------------------------------------------------------------
# against what users would pick: UMAP and openTSNE on the same PCs
# --------------------------------------------------------------------------------------
QUALITY_CELLS = 5_000  # every quality figure of the three maps is computed on the same cells
# NeuralEE's settings in the comparison cases, through the public API only (see README-ee.md): perplexity 10
# (a 31-NN graph; UMAP's has 15 neighbours) and a (128, 64) network, which keep the quality of perplexity 30 and
# (256, 128) at a fraction of the time
COMPARE_PERPLEXITY = 10.0
# attraction="sampled": every batch cell is pulled towards 3 neighbours drawn from the graph each step (a random
# batch of 2,000 of 100,000 cells holds 2 % of a cell's edges; see README-ee.md)
OURS = dict(lam=LAM, batch_size=2000, lr=1e-2, hidden=(128, 64), attraction="sampled", neighbour_samples=3)


def _ours_epochs(n: int) -> int:
    """About 800 optimiser steps of 2,000 cells (800,000 cells seen), and at least 30 epochs."""
    return max(30, round(800_000 / n))


_warmed = []


def _quality_sample(n: int) -> np.ndarray:
    """The cells scored for every map: all of them up to 5,000, else ``default_rng(0).choice(n, 5000)``."""
    if n <= QUALITY_CELLS:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, QUALITY_CELLS, replace=False))


def _map_quality(Y, labels, X, idx) -> dict:
    """On the cells ``idx``: k-NN preservation (k = 10, PCs vs map), 15-NN label accuracy (5-fold stratified
    cross-validation, shuffled with seed 0: a cell's label is predicted from the 15 nearest cells of the other four
    folds) and trustworthiness (k = 10, scikit-learn).
    """
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    from sccourse.metrics import knn_preservation

    Ys, Xs, ls = Y[idx], np.asarray(X, dtype=np.float64)[idx], labels[idx]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return {
        "knn10": knn_preservation(Ys, Xs, k=10),
        "acc15": float(cross_val_score(KNeighborsClassifier(15), Xs, ls, cv=cv).mean()),
        "trust10": float(trustworthiness(Ys, Xs, n_neighbors=10)),
    }


def _umap_fit(Y):
    import umap

    # unseeded on purpose: with random_state set, umap-learn runs on one thread whatever n_jobs says; numpy's
    # global generator (which it then draws from) is seeded here instead
    np.random.seed(0)  # noqa: NPY002
    return umap.UMAP(n_jobs=2).fit_transform(Y)


def _opentsne_fit(Y):
    from openTSNE import TSNE

    return np.asarray(TSNE(n_jobs=2, random_state=0).fit(Y))


def _ours_fit(Y, times: dict, **settings):
    import torch

    from sccourse import ee

    threads = torch.get_num_threads()
    if os.environ.get("SCCOURSE_BENCH_EE_THREADS"):  # see README-ee.md: torch's threads on a busy machine
        torch.set_num_threads(int(os.environ["SCCOURSE_BENCH_EE_THREADS"]))
    try:
        t0 = time.perf_counter()
        W = ee.entropic_affinities(Y, COMPARE_PERPLEXITY, device="cpu", seed=0)
        t1 = time.perf_counter()
        m = ee.NeuralEE(perplexity=COMPARE_PERPLEXITY, device="cpu", seed=0, progress=False, **settings).fit(
            Y, Wpos=W
        )
        times.update(
            affinities_s=t1 - t0, training_s=time.perf_counter() - t1, torch_threads=torch.get_num_threads()
        )
    finally:
        torch.set_num_threads(threads)
    return m.embedding_


def _references() -> dict:
    refs = {}
    try:
        import umap  # noqa: F401

        refs["UMAP"] = ("umap-learn UMAP(n_jobs=2), defaults", _umap_fit)
    except ImportError:
        pass
    try:
        import openTSNE  # noqa: F401

        refs["openTSNE"] = ("openTSNE TSNE(n_jobs=2, random_state=0), defaults", _opentsne_fit)
    except ImportError:
        pass
    return refs


def _warm_up(quick: bool) -> None:
    """Compile every JIT (numba in umap-learn, pynndescent and openTSNE; torch's first optimiser step) on small
    inputs once per process, so that no timed run pays for it whichever ``--case`` runs first.
    """
    if _warmed:
        return
    Y = np.random.default_rng(0).normal(size=(5000, 20))
    Y[:2500] += 3.0
    for _, fit in _references().values():
        fit(Y[:1500] if quick else Y)
    _ours_fit(Y[:1500], {}, **OURS, epochs=1)
    from pynndescent import NNDescent  # our kNN above 30,000 cells on the CPU

    NNDescent(
        Y.astype(np.float32), n_neighbors=int(3 * COMPARE_PERPLEXITY) + 1, random_state=0, low_memory=True
    )
    _warmed.append(True)


def _compare_cases(quick: bool):
    """NeuralEE end to end against UMAP and openTSNE: one case per (data set, reference), ours rerun in each."""
    datasets = [("synthetic 1,500 cells (20 PCs)", lambda: _synthetic_pcs(1500, n_pcs=20))] if quick else []
    if not quick:
        datasets += [
            ("PBMC 3k (2,638 annotated cells, 50 PCs)", _pbmc_pcs),
            ("20,000 synthetic cells (20 PCs)", lambda: _synthetic_pcs(20_000, n_pcs=20)),
            ("100,000 synthetic cells (20 PCs)", lambda: _synthetic_pcs(100_000, n_pcs=20)),
        ]
    refs = _references() or {"none": ("none (umap-learn / openTSNE not installed)", None)}
    for label, load in datasets:
        Y, labels = load()
        idx = _quality_sample(Y.shape[0])
        settings = {**OURS, "epochs": 2 if quick else _ours_epochs(Y.shape[0])}
        for short, (ref_name, fit) in refs.items():
            times: dict = {}

            def quality(X_ours, X_ref, Y=Y, labels=labels, idx=idx, times=times):
                q = {**times, **{f"{k}_ours": v for k, v in _map_quality(Y, labels, X_ours, idx).items()}}
                if X_ref is not None:
                    q.update({f"{k}_ref": v for k, v in _map_quality(Y, labels, X_ref, idx).items()})
                return q

            _warm_up(quick)
            yield Case(
                name=f"NeuralEE vs {short}, {label}",
                ours=lambda Y=Y, times=times, settings=settings: _ours_fit(Y, times, **settings),
                reference=None if fit is None else (lambda Y=Y, fit=fit: fit(Y)),
                reference_name=ref_name,
                quality=quality,
                repeats=1,
                warmup=False,
                notes=(
                    f"ours: entropic_affinities(perplexity {COMPARE_PERPLEXITY:g}) + NeuralEE({settings}); quality on "
                    f"{idx.size:,} cells (the same for every map); JITs compiled beforehand on small inputs"
                ),
            )


def cases(quick: bool):
    sizes = [2_000, 5_000] if quick else [10_000, 100_000]
    if not quick and os.environ.get("SCCOURSE_BENCH_EE_1M"):
        sizes.append(1_000_000)
    for n in sizes:  # first, so that peak RSS is not inflated by the dense reference cases
        yield _scaling_case(n, quick)
    yield _ee_case(quick)
    yield _fine_tune_case(quick)
    yield from _compare_cases(quick)
