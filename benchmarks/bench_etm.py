"""Embedded topic model: sccourse.etm versus the published scETM package (PyPI ``scetm`` 0.5.0).

Workload: Baron mouse 1 (822 cells x the 4,000 genes with the largest variance of log1p CPM), raw counts,
16 topics, full-batch training on the CPU, the same number of epochs for both, five seeds (0–4).
Quality: ARI of Leiden clusters (resolution 0.15, fixed) of θ and of δ/μ against the authors' labels,
both evaluated with :func:`sccourse.metrics.evaluate_ari`. Two cases: our model as the course specifies it
(topics mixed in probability space, ``θ β``) and our model with scETM's own decoder (``mixing="logit"``,
``softmax(θ α ρᵀ)``): the second is the like-for-like comparison of implementations.

scETM is trained with ``eval=False`` (its built-in evaluation does not run on current scanpy), its default
hyper-parameters (lr 5e-3 with decay, batch size 2,000 ≥ cells: full batch, max KL weight 1e-7) and
``n_batches=1``. Ours: defaults of :func:`sccourse.etm.train_etm` (lr 5e-3, KL weight 1 warmed up over 300
epochs). Run with the interpreter that has scetm installed (see ``benchmarks/README-etm.md``)::

    .venv-bench/bin/python -m benchmarks etm            # 1,000 epochs x 5 seeds, writes RESULTS.md
    .venv-bench/bin/python -m benchmarks etm --quick    # 30 epochs x 1 seed, checks that it runs
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np

from ._harness import Case

N_TOPICS = 16
RESOLUTION = 0.15


def _data():
    from sccourse import datasets
    from sccourse.nmf import select_variable_genes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = select_variable_genes(datasets.baron_mouse_pancreas(mice=("mouse1",)), 4000)
    adata.X = adata.X.astype(np.float32)
    return adata


def _ours(adata, seeds, epochs, mixing="probability"):
    from sccourse import etm

    out = []
    for s in seeds:
        model = etm.ETM(adata.n_vars, N_TOPICS, mixing=mixing, seed=s)
        etm.train_etm(model, adata, epochs=epochs, seed=s, device="cpu", progress=False)
        theta, mu = etm.get_theta(model, adata, return_delta=True)
        out.append((theta, mu))
    return out


def _scetm_available() -> str | None:
    try:
        import scETM  # noqa: F401
    except Exception as err:  # noqa: BLE001 - ImportError, or failures inside its own imports
        return f"scetm not importable here ({type(err).__name__}: {err}); see benchmarks/README-etm.md"
    return None


def _reference(adata, seeds, epochs):
    import torch
    from scETM import UnsupervisedTrainer, scETM

    logging.getLogger("scETM").setLevel(logging.ERROR)
    out = []
    for s in seeds:
        torch.manual_seed(s)
        model = scETM(adata.n_vars, 1, n_topics=N_TOPICS, device=torch.device("cpu"))
        trainer = UnsupervisedTrainer(model, adata, seed=s, ckpt_dir=None)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train(n_epochs=epochs, eval=False, save_model_ckpt=False, eval_every=epochs)
            emb = model.get_cell_embeddings_and_nll(adata, emb_names=["theta", "delta"], inplace=False)[0]
        out.append((np.asarray(emb["theta"]), np.asarray(emb["delta"])))
    return out


def _quality(labels):
    from sccourse.metrics import evaluate_ari

    def score(runs):
        th = [evaluate_ari(t, labels, resolution=RESOLUTION) for t, _ in runs]
        de = [evaluate_ari(d, labels, resolution=RESOLUTION) for _, d in runs]
        return th, de

    def quality(ours, ref):
        q = {}
        for name, runs in (("ours", ours), ("scetm", ref)):
            if runs is None:
                continue
            th, de = score(runs)
            q[f"ari_theta_{name}_mean"] = float(np.mean(th))
            q[f"ari_theta_{name}_min"] = float(np.min(th))
            q[f"ari_theta_{name}_max"] = float(np.max(th))
            q[f"ari_theta_{name}_seeds"] = "/".join(f"{v:.3f}" for v in th)
            q[f"ari_delta_{name}_mean"] = float(np.mean(de))
            q[f"ari_delta_{name}_min"] = float(np.min(de))
            q[f"ari_delta_{name}_max"] = float(np.max(de))
            q[f"ari_delta_{name}_seeds"] = "/".join(f"{v:.3f}" for v in de)
        return q

    return quality


def _planted(n_cells=500, n_genes=150, n_topics=4, seed=0, concentration=0.2):
    """Counts from a known topic model (x_n ~ Multinomial(lib_n, θ_n β), θ_n ~ Dirichlet), as in tests/test_etm.py."""
    rng = np.random.default_rng(seed)
    block = n_genes // n_topics
    beta = np.full((n_topics, n_genes), 0.2)
    for k in range(n_topics):
        beta[k, k * block : (k + 1) * block] += rng.gamma(2.0, 2.0, size=block)
    beta /= beta.sum(axis=1, keepdims=True)
    theta = rng.dirichlet(np.full(n_topics, concentration), size=n_cells)
    p = theta @ beta
    counts = rng.multinomial(rng.integers(800, 2500, size=n_cells), p / p.sum(axis=1, keepdims=True))
    return counts, theta


def _planted_case(quick: bool) -> Case:
    """Seed spread on planted topics with and without restarts (n_init): the worst matched θ correlation per seed."""
    import anndata as ad
    import scipy.sparse as sp
    from scipy.optimize import linear_sum_assignment

    from sccourse import etm

    counts, theta = _planted()
    seeds = list(range(3 if quick else 10))
    opts = dict(emb_dim=32, hidden=64, epochs=60 if quick else 250, lr=1e-2, kl_warmup=60, device="cpu")

    def worst_topic(est):
        k = theta.shape[1]
        c = np.corrcoef(est.T, theta.T)[:k, k:]
        r, col = linear_sum_assignment(-c)
        return float(c[r, col].min())

    def run(n_init):
        out = []
        for s in seeds:
            a = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)))
            etm.fit_etm(a, theta.shape[1], seed=s, n_init=n_init, progress=False, **opts)
            out.append(worst_topic(a.obsm["X_etm"]))
        return np.array(out)

    def quality(with_restarts, plain):
        return {
            "seeds": len(seeds),
            "plain_below_0.9": int((plain < 0.9).sum()),
            "restarts_below_0.9": int((with_restarts < 0.9).sum()),
            "plain_worst_corr": "/".join(f"{v:.3f}" for v in plain),
            "restarts_worst_corr": "/".join(f"{v:.3f}" for v in with_restarts),
        }

    return Case(
        name=f"ETM planted topics (500 cells x 150 genes, K=4): seeds {seeds[0]}-{seeds[-1]}, n_init=5 vs 1",
        ours=lambda: run(5),
        reference=lambda: run(1),
        reference_name="the same ETM without restarts (n_init=1)",
        quality=quality,
        repeats=1,
        warmup=False,
        device="cpu",
        notes="quality: the worst matched θ correlation (Hungarian matching) of each seed; restarts cost n_init x",
    )


def cases(quick: bool):
    yield _planted_case(quick)
    adata = _data()
    labels = adata.obs["cell_type"].to_numpy()
    epochs = 30 if quick else 1000
    seeds = [0] if quick else [0, 1, 2, 3, 4]
    why_not = _scetm_available()
    reference = None if why_not else (lambda: _reference(adata, seeds, epochs))
    # warm up both (first optimiser step, thread pools) with a few epochs instead of a full extra run
    _ours(adata, [0], 3)
    _ours(adata, [0], 3, "logit")
    if reference is not None:
        _reference(adata, [0], 3)
    for mixing, suffix, what in (
        ("probability", "", "the course's model (probability-space mixing)"),
        ("logit", "_logit", "scETM's decoder (mixing='logit')"),
    ):
        yield Case(
            name=f"baron1_4000g_K{N_TOPICS}_{epochs}ep_{len(seeds)}seeds{suffix}",
            ours=lambda mixing=mixing: _ours(adata, seeds, epochs, mixing),
            reference=reference,
            reference_name="scetm 0.5.0 (eval=False)" if reference else f"none: {why_not}",
            quality=_quality(labels),
            repeats=1,
            warmup=False,  # warmed up above
            device="cpu",
            notes=f"ours: {what}; full batch, CPU; times are totals over seeds {seeds}; "
            f"ARI at Leiden resolution {RESOLUTION}",
        )
