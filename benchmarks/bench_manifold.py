"""Heat diffusion on a cell graph, S^k X: torch sparse (sccourse.manifold.ManifoldHeat) vs scipy.sparse.

Workload: a synthetic 50,000-cell kNN graph (15 neighbours, Gaussian-kernel affinities on 10-D points,
symmetrised, S = (P + Pᵀ)/2) and a dense 50,000 x 2,000 float32 expression matrix; k = 1 … 10 steps.
Quick mode: 2,000 cells x 200 genes, k = 1 and 3. On a machine with CUDA an extra row per k runs the
torch kernel on the GPU (the scipy reference stays on the CPU).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from benchmarks._harness import Case
from sccourse import manifold


def knn_graph(n_cells: int, *, n_neighbors: int = 15, dim: int = 10, seed: int = 0) -> sp.csr_matrix:
    """Symmetric kNN affinities exp(-‖x_i − x_j‖² / median²) on random points in R^dim."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n_cells, dim)).astype(np.float32)
    dist, idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(pts).kneighbors(pts)
    dist, idx = dist[:, 1:], idx[:, 1:]
    scale = np.median(dist) ** 2
    rows = np.repeat(np.arange(n_cells), n_neighbors)
    W = sp.csr_matrix((np.exp(-(dist.ravel() ** 2) / scale), (rows, idx.ravel())), shape=(n_cells, n_cells))
    return sp.csr_matrix(W.maximum(W.T))


def _scipy_heat(S: sp.csr_matrix, X: np.ndarray, k: int) -> np.ndarray:
    out = X
    for _ in range(k):
        out = S @ out
    return out


def cases(quick: bool):
    n_cells, n_genes = (2_000, 200) if quick else (50_000, 2_000)
    steps = (1, 3) if quick else tuple(range(1, 11))
    S = manifold.symmetrized_operator(knn_graph(n_cells)).astype(np.float32)
    X = np.random.default_rng(1).random((n_cells, n_genes), dtype=np.float32)
    heat_cpu = manifold.ManifoldHeat(manifold.to_torch_sparse(S, device="cpu", layout="csr"))
    X_cpu = torch.from_numpy(X)
    devices = [("cpu", heat_cpu, X_cpu)]
    if torch.cuda.is_available():
        heat_gpu = manifold.ManifoldHeat(manifold.to_torch_sparse(S, device="cuda", layout="csr"))
        devices.append(("cuda", heat_gpu, X_cpu.cuda()))

    def quality(ours, ref):
        ours = ours.cpu().numpy() if isinstance(ours, torch.Tensor) else ours
        return {"max_rel_err": float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))}

    for k in steps:
        for dev_name, heat, Xd in devices:

            def ours(heat=heat, Xd=Xd, k=k, dev_name=dev_name):
                out = heat.sample(Xd, steps=k)
                if dev_name == "cuda":
                    torch.cuda.synchronize()
                return out

            yield Case(
                name=f"heat S^{k} X, {n_cells} cells x {n_genes} genes (nnz {S.nnz})",
                ours=ours,
                reference=lambda k=k: _scipy_heat(S, X, k),
                reference_name="scipy.sparse csr @ dense (float32)",
                quality=quality,
                repeats=3,
                device=dev_name,
                notes=f"torch threads {torch.get_num_threads()}; scipy SpMM is single-threaded",
            )
