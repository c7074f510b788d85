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
    os.environ.setdefault(
        "SCCOURSE_DATA_MIRROR", str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
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


def _against_reference(Xc: np.ndarray, out, ref, loss: str) -> dict:
    """Both factorisations' objectives on ``Xc`` and their relative difference."""
    o, rr = _objective(Xc, out[0], out[1], loss), _objective(Xc, ref[0], ref[1], loss)
    return {"objective_ours": o, "objective_ref": rr, "rel_objective_diff": (o - rr) / abs(rr)}


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
            r = nmf(
                X_sparse,
                K,
                loss=loss,
                init=(W0, H0),
                max_iter=n_iter,
                eval_every=n_iter,
                dtype=dtype,
                device=device,
            )
            return r.W, r.H

        return run

    def quality(loss):
        def q(out, ref):
            o = _objective(Xc, out[0], out[1], loss)
            row = {"objective_ours": o, "ari_ours": evaluate_ari(out[1].T, labels)}
            if ref is not None:
                r = _objective(Xc, ref[0], ref[1], loss)
                row.update(
                    objective_ref=r,
                    rel_objective_diff=(o - r) / abs(r),
                    ari_ref=evaluate_ari(ref[1].T, labels),
                )
            return row

        return q

    for loss in ("sse", "poisson"):
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            yield Case(
                name=f"nmf-{loss} sparse {tag} vs sklearn mu dense f64 ({shape})",
                ours=ours(loss, dtype),
                reference=reference(loss),
                reference_name=f"sklearn {__import__('sklearn').__version__} NMF(solver='mu', "
                f"beta_loss='{beta[loss]}')",
                quality=quality(loss),
                repeats=repeats,
                device="cpu",
                notes=f"ours: sccourse.nmf.nmf on CSR genes x cells, {tag}; same init (seed {SEED})",
            )
    if torch.cuda.is_available():
        for loss in ("sse", "poisson"):
            yield Case(
                name=f"nmf-{loss} sparse f32 on CUDA ({shape})",
                ours=ours(loss, torch.float32, "cuda"),
                reference=None,
                reference_name="none (absolute GPU time)",
                quality=quality(loss),
                repeats=repeats,
                device="cuda",
                notes="transfer of X and of the factors included",
            )


# ---- fair comparisons (issue: what a user would pick, on the same input, at equal quality) ------------------
def _time_to(target: float, run_with_iters, max_iter: int = 1000) -> tuple[float, int, float]:
    """Fewest iterations whose run reaches ``objective <= target`` (binary search: the objective of both solvers
    never increases with the iteration count), then (seconds, iterations, objective) of that run, timed alone
    after a warm-up of the same size."""
    import time

    out = run_with_iters(max_iter)
    if out[1] > target:
        return float("nan"), max_iter, out[1]
    lo, hi = 0, max_iter  # lo fails (or is 0), hi reaches
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run_with_iters(mid)[1] <= target:
            hi = mid
        else:
            lo = mid
    run_with_iters(hi)
    t0 = time.perf_counter()
    out = run_with_iters(hi)
    return time.perf_counter() - t0, hi, out[1]


def _products_floor(Xc: np.ndarray, k: int, n_iter: int) -> float:
    """Seconds that ``n_iter`` squared-error MU iterations spend in the two products with the dense X alone.

    Every MU iteration for ``‖X − WH‖²`` needs ``Wᵀ X`` and ``X Hᵀ`` (two passes over X with inner or outer
    dimension K) on either side; timed here with torch on the same float32 matrix, after a warm-up, they bound the
    speedup any MU implementation can reach over the reference: its time divided by this floor.
    """
    import time

    import torch

    X = torch.as_tensor(np.ascontiguousarray(Xc.T))  # genes x cells, as ours holds it
    gen = torch.Generator().manual_seed(SEED)
    W = torch.rand(X.shape[0], k, generator=gen, dtype=X.dtype)
    H = torch.rand(k, X.shape[1], generator=gen, dtype=X.dtype)
    for _ in range(5):
        W.T @ X, X @ H.T
    t0 = time.perf_counter()
    for _ in range(n_iter):
        W.T @ X, X @ H.T
    return time.perf_counter() - t0


def _poisson_floor(Xc: np.ndarray, k: int, n_iter: int) -> float:
    """Seconds that ``n_iter`` Poisson MU iterations spend in the passes over the dense X they cannot avoid.

    Each half-step must form ``WH`` (M x N), divide ``X`` by it and multiply the ratio by the other factor: two
    products with K and one element-wise pass over two M x N arrays. Timed here as bare torch calls into one reused
    buffer, in place, with the factor updates (no eps guard, no objective, no subnormal flush): what any MU
    implementation pays on this machine, so the reference's time divided by this bounds the speedup.
    """
    import time

    import torch

    X = torch.as_tensor(np.ascontiguousarray(Xc.T))  # genes x cells, as ours holds it
    gen = torch.Generator().manual_seed(SEED)
    W = torch.rand(X.shape[0], k, generator=gen, dtype=X.dtype) + 0.1
    H = torch.rand(k, X.shape[1], generator=gen, dtype=X.dtype) + 0.1
    buf = torch.empty_like(X)

    def iterate(n):
        for _ in range(n):
            torch.mm(W, H, out=buf)
            torch.div(X, buf, out=buf)
            H.mul_((W.T @ buf) / W.sum(0)[:, None])
            torch.mm(W, H, out=buf)
            torch.div(X, buf, out=buf)
            W.mul_((buf @ H.T) / H.sum(1)[None, :])

    iterate(5)
    t0 = time.perf_counter()
    iterate(n_iter)
    return time.perf_counter() - t0


def fair_cases(quick: bool):
    import scipy.sparse as sp
    import sklearn
    import torch
    from sklearn.decomposition import NMF

    from sccourse.nmf import initialize, nmf

    adata = _data()
    Xc_sparse32 = sp.csr_matrix(adata.X, dtype=np.float32)  # cells x genes, exactly what we get
    Xc = adata.X.toarray().astype(np.float64)
    X_genes32 = Xc_sparse32.T.tocsr()
    n_iter = 20 if quick else N_ITER
    repeats = 1 if quick else 3
    W0, H0 = initialize(X_genes32, K, seed=SEED)
    beta = {"sse": "frobenius", "poisson": "kullback-leibler"}
    shape = f"{adata.n_obs} cells x {adata.n_vars} genes, K={K}"

    # 1. multiplicative updates, both losses, scikit-learn given the very same sparse float32 input
    for loss in ("sse", "poisson"):

        def ref(loss=loss):
            m = NMF(K, solver="mu", beta_loss=beta[loss], init="custom", max_iter=n_iter, tol=0)
            Wc = m.fit_transform(Xc_sparse32, W=H0.T.astype(np.float32), H=W0.T.astype(np.float32))
            return m.components_.T, Wc.T

        def ours(loss=loss):
            r = nmf(X_genes32, K, loss=loss, init=(W0, H0), max_iter=n_iter, eval_every=n_iter, device="cpu")
            return r.W, r.H

        def q(out, r, loss=loss):
            return _against_reference(Xc, out, r, loss)

        yield Case(
            name=f"nmf-{loss} mu, sklearn on the same sparse f32 input ({shape}, {n_iter} it)",
            ours=ours,
            reference=ref,
            reference_name=f"sklearn {sklearn.__version__} NMF(solver='mu') on CSR float32",
            quality=q,
            repeats=1 if loss == "poisson" else repeats,
            device="cpu",
            notes="same init, same number of iterations",
        )

    # 2. to the same squared-error objective: our HALS and MU against scikit-learn's default solver (cd)
    mu_ref = nmf(
        X_genes32, K, init=(W0, H0), max_iter=n_iter, eval_every=n_iter, dtype=torch.float64, device="cpu"
    )
    target_mu = _objective(Xc, mu_ref.W, mu_ref.H, "sse")
    sk_default = NMF(K, init="custom")  # solver="cd", max_iter=200, tol=1e-4: what a user gets
    Wc = sk_default.fit_transform(Xc_sparse32, W=H0.T.astype(np.float32), H=W0.T.astype(np.float32))
    target_cd = _objective(Xc, sk_default.components_.T, Wc.T, "sse")

    def sk_cd(it):
        m = NMF(K, solver="cd", init="custom", max_iter=it, tol=0)
        Wc = m.fit_transform(Xc_sparse32, W=H0.T.astype(np.float32), H=W0.T.astype(np.float32))
        return (m.components_.T, Wc.T), _objective(Xc, m.components_.T, Wc.T, "sse")

    def hals(it):
        r = nmf(X_genes32, K, solver="hals", init=(W0, H0), max_iter=it, eval_every=it, device="cpu")
        return (r.W, r.H), _objective(Xc, r.W, r.H, "sse")

    for label, target in (
        ("MU's 200-iteration objective", target_mu),
        ("scikit-learn cd's default-run objective", target_cd),
    ):
        state = {}

        def ours_run(target=target, state=state):
            state["ours"] = _time_to(target, hals)
            return state["ours"]

        def ref_run(target=target, state=state):
            state["ref"] = _time_to(target, sk_cd)
            return state["ref"]

        def q(o, r, target=target):
            return {
                "target": target,
                "ours_iterations": o[1],
                "ours_objective": o[2],
                "ours_time_s": o[0],
                "ref_iterations": r[1],
                "ref_objective": r[2],
                "ref_time_s": r[0],
                "time_ratio": r[0] / o[0],
            }

        yield Case(
            name=f"nmf-sse to {label} ({shape}): HALS vs sklearn cd, same sparse f32 input",
            ours=ours_run,
            reference=ref_run,
            reference_name=f"sklearn {sklearn.__version__} NMF(solver='cd') on CSR float32",
            quality=q,
            repeats=1,
            warmup=False,
            device="cpu",
            notes="time to reach the target objective (fewest iterations that reach it, found by binary "
            "search, then timed alone after a warm-up); the speedup column times the whole searches: "
            "read time_ratio",
        )

    # 3. dense count matrices (> 80 % non-zeros), float32 in, both losses
    import sccourse.datasets as ds

    dense = (
        ds.synthetic(2000 if not quick else 400, 1500 if not quick else 300, 8, seed=SEED, mean_scale=40.0)
        if "mean_scale" in ds.synthetic.__code__.co_varnames
        else None
    )
    if dense is None:
        rng = np.random.default_rng(SEED)
        n, m = (2000, 1500) if not quick else (400, 300)
        means = rng.gamma(2.0, 6.0, size=(8, m))
        types = rng.integers(0, 8, size=n)
        counts = rng.poisson(means[types]).astype(np.float32)
    else:
        counts = dense.X.toarray().astype(np.float32)
    Xd = counts  # cells x genes, dense
    W0d, H0d = initialize(Xd.T, K, seed=SEED)
    for loss in ("sse", "poisson"):

        def ref(loss=loss):
            mdl = NMF(K, solver="mu", beta_loss=beta[loss], init="custom", max_iter=n_iter, tol=0)
            Wc = mdl.fit_transform(Xd, W=H0d.T.astype(np.float32), H=W0d.T.astype(np.float32))
            return mdl.components_.T, Wc.T

        def ours(loss=loss):
            r = nmf(
                Xd,
                K,
                loss=loss,
                orientation="cells_x_genes",
                init=(W0d, H0d),
                max_iter=n_iter,
                eval_every=n_iter,
                device="cpu",
            )
            return r.W, r.H

        def q(out, r, loss=loss):
            X64 = Xd.astype(np.float64)
            floor = _products_floor if loss == "sse" else _poisson_floor
            extra = {"products_floor_s" if loss == "sse" else "passes_floor_s": floor(Xd, K, n_iter)}
            return {
                "nonzero_fraction": float((Xd > 0).mean()),
                **_against_reference(X64, out, r, loss),
                **extra,
            }

        yield Case(
            name=f"nmf-{loss} mu on a dense count matrix ({Xd.shape[0]} x {Xd.shape[1]}, f32, {n_iter} it)",
            ours=ours,
            reference=ref,
            reference_name=f"sklearn {sklearn.__version__} NMF(solver='mu') dense f32",
            quality=q,
            repeats=repeats,  # the median of 3 (a single Poisson run moved by ±10 %)
            device="cpu",
            notes="same dense input",
        )


_cases_before_fair = cases


def cases(quick: bool):  # noqa: F811  (the historical rows first, then the fair ones)
    yield from _cases_before_fair(quick)
    yield from fair_cases(quick)
