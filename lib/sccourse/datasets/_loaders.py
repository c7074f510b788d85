"""Loaders of the real datasets: raw integer counts in ``.X`` (CSR), gene names in ``var_names``, labels in
``.obs``, checked against the registry's checksums or fingerprints (see :mod:`sccourse.datasets._store`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._parsers import _demangle_r_names
from ._store import (
    DataIntegrityError,
    DataUnavailableError,
    _fetch_file,
    _is_local,
    _is_url,
    _load,
    _registry,
    cache_dir,
    mirror,
)

Mouse = Literal["mouse1", "mouse2"]
_MICE: tuple[Mouse, ...] = ("mouse1", "mouse2")


def available() -> pd.DataFrame:
    """Which datasets are present in the cache or the mirror folder, without loading them.

    Returns
    -------
    pandas.DataFrame
        One row per registry entry: ``title``, ``in_cache``, ``in_mirror``, ``has_upstream``.
    """
    rows = []
    mir = mirror()
    for name, entry in _registry().items():
        paths = [f["path"] for f in entry["files"].values()]
        in_cache = bool(paths) and all((cache_dir() / p).exists() for p in paths)
        in_mirror = (
            bool(paths)
            and mir is not None
            and not _is_url(mir)
            and all((Path(mir).expanduser() / p).exists() for p in paths)
        )
        rows.append(
            dict(
                name=name,
                title=entry["title"],
                in_cache=in_cache,
                in_mirror=in_mirror,
                has_upstream=bool(entry["upstream"]),
            )
        )
    return pd.DataFrame(rows).set_index("name")


def _as_counts(adata: ad.AnnData) -> ad.AnnData:
    X = sp.csr_matrix(adata.X)
    if X.dtype.kind == "f":
        if not np.all(np.equal(np.mod(X.data, 1), 0)):
            raise DataIntegrityError("expected integer counts in .X, found non-integer values")
        X = X.astype(np.int32)
    X.sort_indices()
    adata.X = X
    return adata


def pbmc3k() -> ad.AnnData:
    """10x Genomics PBMC 3k: 2,700 cells x 32,738 genes of raw UMI counts.

    ``obs["cell_type"]`` holds the Seurat tutorial annotation (NaN for the 62 cells that failed its
    QC), ``obs["seurat_cluster"]`` its cluster, ``var["gene_ids"]`` the Ensembl ids and
    ``obsm["X_umap_seurat"]`` the tutorial's UMAP where the mirror file provides it.
    """
    adata = _load("pbmc3k")
    if "seurat_cell_type" in adata.obs:
        adata.obs = adata.obs.rename(columns={"seurat_cell_type": "cell_type"})
    else:  # upstream counts: join the annotation table by barcode
        try:
            ann = pd.read_csv(_fetch_file("pbmc3k", "annotations"), index_col=0)
            adata.obs["cell_type"] = ann["cell_type"].reindex(adata.obs_names)
            adata.obs["seurat_cluster"] = ann["seurat_cluster"].reindex(adata.obs_names)
        except DataUnavailableError:
            warnings.warn("pbmc3k: annotation table not found; obs['cell_type'] is all NaN", stacklevel=2)
            adata.obs["cell_type"] = np.nan
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    adata.uns.pop("annotation_note", None)
    adata.uns["dataset"] = "pbmc3k"
    return _as_counts(adata)


_SAID: set[str] = set()


def _say_once(key: str, text: str) -> None:
    if key not in _SAID:
        _SAID.add(key)
        print(text)


def _check_mice(mice) -> tuple[Mouse, ...]:
    """``mice`` as a tuple of distinct known mouse names (a single name is one mouse)."""
    if isinstance(mice, str):
        mice = (mice,)
    if isinstance(mice, Iterable) and not isinstance(mice, Mapping | bytes):
        mice = tuple(mice)
    if not isinstance(mice, tuple) or not all(isinstance(m, str) for m in mice):
        raise TypeError(f"mice must be a mouse name or a sequence of mouse names among {_MICE}, got {mice!r}")
    unknown = [m for m in mice if m not in _MICE]
    if unknown or not mice:
        raise ValueError(f"mice must be a non-empty subset of {_MICE}, got {mice!r}")
    if len(set(mice)) < len(mice):
        raise ValueError(f"mice must name each mouse once (its cells would be loaded twice), got {mice!r}")
    return mice


def baron_mouse_pancreas(
    *, mice: Sequence[Mouse] | Mouse | None = None, require_all: bool = False
) -> ad.AnnData:
    """Baron et al. 2016 mouse pancreas (inDrop UMI counts), the mice concatenated.

    Parameters
    ----------
    mice
        Which mice to load, each once (``"mouse1"``: 822 cells, ``"mouse2"``: 1,064 cells). ``None`` (the default) loads the
        mice that are in the cache or the mirror, without any network access, and says once which were loaded;
        when neither is there, both are downloaded. Naming the mice downloads the ones that are not local.
    require_all
        If True, a mouse that cannot be had raises; otherwise it is skipped with a warning
        (the offline mirror holds mouse 1 only).

    Returns
    -------
    AnnData
        ``obs["cell_type"]`` (the authors' ``assigned_cluster``), ``obs["batch"]`` (mouse).
        Gene names are the original symbols (R's ``X`` prefix removed).
    """
    if not isinstance(require_all, bool):
        raise TypeError(f"require_all must be True or False, got {require_all!r}")
    if mice is not None:
        mice = _check_mice(mice)
    else:
        local = tuple(m for m in _MICE if _is_local(f"baron_{m}"))
        if local and len(local) < 2:
            _say_once(
                "baron",
                f"baron_mouse_pancreas: loading {', '.join(local)} (found locally); the other mouse is "
                "not in the cache or the mirror (mice=('mouse1', 'mouse2') downloads it)",
            )
        mice = local or _MICE
    parts, missing = {}, []
    for m in mice:
        try:
            a = _load(f"baron_{m}")
        except DataUnavailableError as err:
            if require_all:
                raise
            missing.append((m, err))
            continue
        a.var_names = _demangle_r_names(a.var_names)
        a.obs = pd.DataFrame({"cell_type": a.obs["assigned_cluster"].astype(str).values}, index=a.obs_names)
        a.obs["batch"] = m
        parts[m] = _as_counts(a)
    if not parts:
        raise DataUnavailableError("; ".join(str(e) for _, e in missing))
    for m, err in missing:
        warnings.warn(f"baron_mouse_pancreas: {m} skipped ({err})", stacklevel=2)
    adata = (
        ad.concat(parts.values(), join="inner", merge="same")
        if len(parts) > 1
        else next(iter(parts.values()))
    )
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    adata.obs["batch"] = adata.obs["batch"].astype("category")
    adata.uns["dataset"] = "baron_mouse_pancreas"
    return _as_counts(adata)


def pancreas_endocrinogenesis() -> ad.AnnData:
    """ScVelo's E15.5 pancreas: 3,696 cells, spliced counts in ``.X`` and layers spliced/unspliced.

    The mirror holds 2,000 genes; the upstream file all 27,998. ``obs``: ``clusters``, ``clusters_coarse``.
    """
    adata = _load("pancreas_endocrinogenesis")
    keep = [c for c in ("clusters", "clusters_coarse", "S_score", "G2M_score") if c in adata.obs]
    adata.obs = adata.obs[keep].copy()
    for layer in ("spliced", "unspliced"):
        adata.layers[layer] = sp.csr_matrix(adata.layers[layer]).astype(np.int32)
    adata.X = adata.layers["spliced"].copy()
    for key in list(adata.obsm):
        if key != "X_umap":
            del adata.obsm[key]
    adata.uns = {"dataset": "pancreas_endocrinogenesis"}
    return _as_counts(adata)


def pancreas_pseudotime() -> ad.AnnData:
    """The single-trajectory pancreas example (2,087 cells x 100 genes) with ``obs["pseudotime"]``.

    ``obs`` also holds ``clusters`` (4 types) and ``clusters_coarse``; ``.X`` are spliced counts.
    """
    adata = _load("pancreas_pseudotime")
    adata.layers.clear()
    adata.uns["dataset"] = "pancreas_pseudotime"
    return _as_counts(adata)


def paul15_myeloid() -> ad.AnnData:
    """Paul et al. 2015 myeloid progenitors (2,660 cells x 240 genes, UMI counts).

    ``obs``: ``celltype`` (7 types), slingshot ``pseudotime_lineage1/2`` and ``weight_lineage1/2``
    (a lineage-1 pseudotime is meaningful only where its weight is > 0).
    """
    adata = _load("paul15_myeloid")
    adata.obs["celltype"] = adata.obs["celltype"].astype("category")
    adata.uns["dataset"] = "paul15_myeloid"
    return _as_counts(adata)


def zeisel_cortex() -> ad.AnnData:
    """Zeisel et al. 2015 mouse cortex/hippocampus: 3,005 cells x the first 200 genes, ``level1class`` labels."""
    adata = _load("zeisel_cortex")
    adata.obs["cell_type"] = adata.obs["level1class"].astype("category")
    adata.uns = {"dataset": "zeisel_cortex"}
    return _as_counts(adata)


def pollen() -> ad.AnnData:
    """Pollen et al. 2014: 299 cells x 23,794 genes of read counts, ``obs["cell_type"]`` (11 groups)."""
    adata = _load("pollen")
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    adata.uns = {"dataset": "pollen"}
    return _as_counts(adata)
