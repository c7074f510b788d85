"""Parsers of the original public file formats (10x Cell Ranger archive, Baron et al.'s GEO csv, h5ad), and
the undoing of R's name mangling.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def _parse_10x_tar(path: Path) -> ad.AnnData:
    with tarfile.open(path, "r:*") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

        def read(stem: str) -> bytes:
            for cand in (stem, stem + ".gz"):
                if cand in members:
                    raw = tar.extractfile(members[cand]).read()
                    return gzip.decompress(raw) if cand.endswith(".gz") else raw
            raise KeyError(f"{stem} not found in {path}")

        import scipy.io

        mat = scipy.io.mmread(io.BytesIO(read("matrix.mtx")))
        genes = pd.read_csv(io.BytesIO(read("genes.tsv")), sep="\t", header=None)
        barcodes = pd.read_csv(io.BytesIO(read("barcodes.tsv")), sep="\t", header=None)[0].astype(str)
    X = sp.csr_matrix(mat.T.astype(np.int32))
    var = pd.DataFrame({"gene_ids": genes[0].astype(str).values}, index=genes[1].astype(str).values)
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes.values), var=var)
    adata.var_names_make_unique()
    return adata


def _parse_baron_csv(path: Path) -> ad.AnnData:
    df = pd.read_csv(path, index_col=0)
    meta_cols = [c for c in ("barcode", "assigned_cluster") if c in df.columns]
    obs = df[meta_cols].copy()
    counts = df.drop(columns=meta_cols)
    X = sp.csr_matrix(counts.to_numpy(dtype=np.int32))
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=counts.columns.astype(str)))
    adata.obs_names = adata.obs_names.astype(str)
    return adata


def _parse_h5ad(path: Path) -> ad.AnnData:
    return ad.read_h5ad(path)


_PARSERS = {"10x_mtx_tar": _parse_10x_tar, "baron_csv": _parse_baron_csv, "h5ad": _parse_h5ad}


def _demangle_r_names(names: pd.Index) -> pd.Index:
    """Undo R's ``make.names`` prefix: ``X0610007P14Rik`` -> ``0610007P14Rik``."""
    out = [n[1:] if len(n) > 1 and n[0] == "X" and n[1].isdigit() else n for n in names]
    return pd.Index(out)
