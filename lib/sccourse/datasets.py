"""Real single-cell datasets (raw counts) and a synthetic negative-binomial generator.

Every real loader returns an :class:`anndata.AnnData` with raw integer counts in ``.X``
(``scipy.sparse.csr_matrix``), gene names in ``var_names`` and labels in ``.obs``.

Where files come from, in order:

1. the local cache, ``SCCOURSE_DATA_DIR`` (default ``data/cache/`` in the project);
2. the mirror ``SCCOURSE_DATA_MIRROR``: a folder, or an ``http(s)://`` address serving the same tree
   (unset: a ``shared/data`` folder beside the project checkout, when present);
3. the original public source (``upstream``), downloaded with :mod:`pooch`.

Mirror-format files are checked against their sha256; upstream files whose bytes we cannot
pin are checked by a content fingerprint (shape, non-zeros, total counts) after parsing.
A file that fails its check raises :class:`DataIntegrityError` naming the file, the expected
and the found value; nothing half-written is left in the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "DataIntegrityError",
    "DataUnavailableError",
    "available",
    "baron_mouse_pancreas",
    "cache_dir",
    "mirror",
    "pancreas_endocrinogenesis",
    "pancreas_pseudotime",
    "paul15_myeloid",
    "pbmc3k",
    "pollen",
    "synthetic",
    "zeisel_cortex",
]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_REGISTRY_PATH = _PROJECT_ROOT / "data" / "registry.json"


class DataIntegrityError(ValueError):
    """A data file did not match its checksum or content fingerprint."""


class DataUnavailableError(FileNotFoundError):
    """A dataset is in neither the cache nor the mirror, and could not be downloaded."""


# --------------------------------------------------------------------------------------
# registry and locations
# --------------------------------------------------------------------------------------
def _registry() -> dict:
    with open(_REGISTRY_PATH) as fh:
        reg = json.load(fh)
    reg.pop("_about", None)
    return reg


def cache_dir() -> Path:
    """The local cache folder (``SCCOURSE_DATA_DIR``, default ``<project>/data/cache``)."""
    path = Path(os.environ.get("SCCOURSE_DATA_DIR") or _PROJECT_ROOT / "data" / "cache").expanduser()
    if path.exists() and not path.is_dir():
        raise DataUnavailableError(
            f"the data cache {path} is a file, not a folder: point SCCOURSE_DATA_DIR at a folder (or unset it to use "
            f"{_PROJECT_ROOT / 'data' / 'cache'})"
        )
    return path


def _writable_dir(path: Path) -> Path:
    """Create ``path`` (a cache folder) or say clearly why it cannot be used."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (PermissionError, FileExistsError, NotADirectoryError, OSError) as err:
        raise DataUnavailableError(
            f"cannot create the data cache folder {path} ({type(err).__name__}: {err}); set SCCOURSE_DATA_DIR to a "
            "folder you can write to"
        ) from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataUnavailableError(
            f"the data cache folder {path} is not writable; set SCCOURSE_DATA_DIR to a folder you can write to "
            "(or put the files in a local mirror folder: SCCOURSE_DATA_MIRROR)"
        )
    return path


def download_deadline() -> float:
    """Seconds a single download may take in all (``SCCOURSE_DOWNLOAD_TIMEOUT``, default 600)."""
    value = os.environ.get("SCCOURSE_DOWNLOAD_TIMEOUT", "600")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"SCCOURSE_DOWNLOAD_TIMEOUT must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise ValueError(f"SCCOURSE_DOWNLOAD_TIMEOUT must be positive, got {value!r}")
    return seconds


def mirror() -> str | None:
    """The mirror location: ``SCCOURSE_DATA_MIRROR`` (a folder path or an http(s) URL); when that is unset,
    a ``shared/data`` folder beside the project checkout if there is one; else None.
    """
    value = os.environ.get("SCCOURSE_DATA_MIRROR", "").strip()
    if value:
        return value
    beside = _PROJECT_ROOT.parent / "shared" / "data"
    return str(beside) if beside.is_dir() else None


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
            and all((Path(mir) / p).exists() for p in paths)
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


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://", "file://"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    found = _sha256(path)
    if found != expected:
        raise DataIntegrityError(
            f"{path}: sha256 mismatch (expected {expected}, found {found}). The file is corrupt or "
            "truncated; delete it (or replace it with a good copy) and load again."
        )


def _how_to_get(name: str, relpath: str) -> str:
    return (
        f"Dataset {name!r} ({relpath}) is not in the cache ({cache_dir()}) or the mirror, and could not be "
        f"downloaded. Offline classrooms: set SCCOURSE_DATA_MIRROR to a folder (or http(s) address) that holds "
        f"'{relpath}', e.g. `export SCCOURSE_DATA_MIRROR=/path/to/shared/data`."
    )


class _DeadlineDownloader:
    """pooch downloader: streams with requests, with a connect/read timeout and an overall deadline."""

    def __init__(self, deadline: float):
        self.deadline = deadline

    def __call__(self, url: str, output_file, pooch_obj, check_only: bool = False):
        import socket
        import threading

        import requests

        expired = threading.Event()
        with requests.get(
            url, stream=True, timeout=(min(15.0, self.deadline), min(60.0, self.deadline))
        ) as response:
            response.raise_for_status()

            def stop():  # a server that trickles bytes never trips the read timeout: cut the connection
                expired.set()
                sock = getattr(getattr(response.raw, "connection", None), "sock", None)
                if sock is None:  # urllib3 2: the socket under http.client's buffered reader
                    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
                    sock = getattr(getattr(fp, "raw", None), "_sock", None)
                try:
                    if sock is not None:
                        sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            timer = threading.Timer(self.deadline, stop)
            timer.daemon = True
            timer.start()
            expected = response.headers.get("Content-Length")
            written = 0
            out = open(output_file, "w+b") if isinstance(output_file, (str, Path)) else output_file
            try:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    written += len(chunk)
            except Exception:
                if expired.is_set():
                    raise TimeoutError(
                        f"the download took longer than {self.deadline:g} s (SCCOURSE_DOWNLOAD_TIMEOUT)"
                    ) from None
                raise
            finally:
                timer.cancel()
                if out is not output_file:
                    out.close()
            if expired.is_set():
                raise TimeoutError(
                    f"the download took longer than {self.deadline:g} s (SCCOURSE_DOWNLOAD_TIMEOUT)"
                )
            if expected is not None and written != int(expected):
                raise OSError(f"the connection closed after {written} of {expected} bytes")


_STALE_SECONDS = 3600


def _remove_stale_temporaries(folder: Path) -> None:
    """Pooch downloads into ``tmp*`` files beside the target; a process killed mid-download leaves one behind."""
    if not folder.is_dir():
        return
    now = time.time()
    for p in folder.glob("tmp*"):
        try:
            if p.is_file() and now - p.stat().st_mtime > _STALE_SECONDS:
                p.unlink()
        except OSError:
            pass


def _download(url: str, *, sha256: str | None, dest_dir: Path, fname: str, what: str) -> Path:
    """Download ``url`` into ``dest_dir/fname`` with pooch; atomic, hash-checked when a hash is known, within the
    overall deadline of :func:`download_deadline`. Network and HTTP failures become :class:`DataUnavailableError`
    naming the URL.
    """
    import pooch

    _writable_dir(dest_dir)
    _remove_stale_temporaries(dest_dir)
    known = f"sha256:{sha256}" if sha256 else None
    try:
        path = pooch.retrieve(
            url,
            known_hash=known,
            fname=fname,
            path=dest_dir,
            progressbar=False,
            downloader=_DeadlineDownloader(download_deadline()),
        )
    except ValueError as err:  # pooch's hash mismatch: the temporary file is already removed
        raise DataIntegrityError(
            f"{what}: downloaded file from {url} failed its check ({err}). Nothing was written to {dest_dir}."
        ) from err
    except (PermissionError, DataUnavailableError):
        raise
    except Exception as err:  # requests' HTTP, connection and chunked-encoding errors, our deadline, OSError
        raise DataUnavailableError(
            f"{what}: downloading {url} failed ({type(err).__name__}: {' '.join(str(err).split())[:300]}). Nothing "
            f"was written to {dest_dir}. Check the address (SCCOURSE_DATA_MIRROR) or the network."
        ) from err
    return Path(path)


def _fetch_file(name: str, key: str) -> Path:
    """Path of mirror-format file ``key`` of dataset ``name``: cache, then mirror folder/URL."""
    spec = _registry()[name]["files"][key]
    rel, sha = spec["path"], spec.get("sha256")
    cached = cache_dir() / rel
    if cached.exists():
        try:
            _check_sha(cached, sha)
            return cached
        except DataIntegrityError as err:
            # a corrupt cached copy must not block every load: drop it and get a verified one below
            try:
                cached.unlink()
            except OSError:
                raise err from None
            warnings.warn(
                f"{name}: the cached {cached} was corrupt and has been removed; getting a verified copy",
                stacklevel=3,
            )
    mir = mirror()
    if mir is not None and not _is_url(mir):
        candidate = Path(mir).expanduser() / rel
        if candidate.exists():
            _check_sha(candidate, sha)
            return candidate
    if mir is not None and _is_url(mir):
        url = mir.rstrip("/") + "/" + rel
        return _download(url, sha256=sha, dest_dir=cached.parent, fname=cached.name, what=f"{name}:{rel}")
    raise DataUnavailableError(_how_to_get(name, rel))


def _fingerprint(X: sp.spmatrix) -> dict:
    X = sp.csr_matrix(X)
    return {"shape": list(X.shape), "nnz": int(X.nnz), "total": int(round(float(X.sum())))}


def _check_fingerprint(adata: ad.AnnData, expected: dict, what: str) -> None:
    found = _fingerprint(adata.X)
    for k, v in expected.items():
        if found[k] != v:
            raise DataIntegrityError(
                f"{what}: content fingerprint mismatch on {k} (expected {v}, found {found[k]}); "
                f"full fingerprint found: {found}. The file is corrupt, truncated or a different release."
            )


_UNREACHABLE: dict[str, str] = {}  # upstream URLs whose download failed in this process -> message


def _load_upstream(name: str, key: str = "counts") -> ad.AnnData:
    """Download (or reuse the cached download of) the original public file and parse it."""
    spec = _registry()[name]["upstream"].get(key)
    if spec is None:
        rel = _registry()[name]["files"].get(key, {}).get("path", name)
        raise DataUnavailableError(
            _how_to_get(name, rel)
            + " This dataset has no open-format public source that sccourse can parse, "
            "so the mirror is the only way to get it."
        )
    url = spec["url"]
    dest = cache_dir() / "upstream"
    fname = f"{name}__{Path(url).name}"
    if url in _UNREACHABLE and not (dest / fname).exists():
        # one failed attempt per process is enough: offline classrooms should not wait on every call
        raise DataUnavailableError(_UNREACHABLE[url])
    try:
        path = _download(url, sha256=spec.get("sha256"), dest_dir=dest, fname=fname, what=name)
    except DataIntegrityError:
        raise
    except Exception as err:  # network errors: no route, DNS, HTTP 404, ...
        rel = _registry()[name]["files"].get(key, {}).get("path", fname)
        _UNREACHABLE[url] = _how_to_get(name, rel) + f" (download from {url} failed: {err})"
        raise DataUnavailableError(_UNREACHABLE[url]) from err
    try:
        adata = _PARSERS[spec["format"]](path)
        _check_fingerprint(adata, spec["fingerprint"], f"{name} upstream file {path}")
    except Exception as err:
        path.unlink(missing_ok=True)  # never keep a file that did not parse or check
        if isinstance(err, DataIntegrityError):
            raise
        raise DataIntegrityError(
            f"{name}: could not parse the upstream file {path} ({err}); it was removed."
        ) from err
    return adata


def _load(name: str, key: str = "counts") -> ad.AnnData:
    """Mirror-format file when available, otherwise the upstream source."""
    entry = _registry()[name]
    mirror_error = None
    if key in entry["files"]:
        try:
            path = _fetch_file(name, key)
        except DataUnavailableError as err:
            if key not in entry["upstream"]:
                raise
            mirror_error = err
        else:
            adata = ad.read_h5ad(path)
            _check_fingerprint(adata, entry["fingerprint"], f"{name} file {path}")
            return adata
    try:
        return _load_upstream(name, key)
    except DataUnavailableError as err:
        if mirror_error is None:
            raise
        raise DataUnavailableError(f"{mirror_error} Then the original source: {err}") from err


# --------------------------------------------------------------------------------------
# upstream parsers
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _as_counts(adata: ad.AnnData) -> ad.AnnData:
    X = sp.csr_matrix(adata.X)
    if X.dtype.kind == "f":
        if not np.all(np.equal(np.mod(X.data, 1), 0)):
            raise DataIntegrityError("expected integer counts in .X, found non-integer values")
        X = X.astype(np.int32)
    X.sort_indices()
    adata.X = X
    return adata


def _demangle_r_names(names: pd.Index) -> pd.Index:
    """Undo R's ``make.names`` prefix: ``X0610007P14Rik`` -> ``0610007P14Rik``."""
    out = [n[1:] if len(n) > 1 and n[0] == "X" and n[1].isdigit() else n for n in names]
    return pd.Index(out)


# --------------------------------------------------------------------------------------
# public loaders
# --------------------------------------------------------------------------------------
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


def _is_local(name: str) -> bool:
    """Whether dataset ``name`` can be loaded without the network (cache, a local mirror folder, a cached download)."""
    entry = _registry()[name]
    mir = mirror()
    for spec in entry["files"].values():
        rel = spec["path"]
        if (cache_dir() / rel).exists():
            return True
        if mir is not None and not _is_url(mir) and (Path(mir).expanduser() / rel).exists():
            return True
        if mir is not None and _is_url(mir):
            return True  # a classroom server: asking it is what it is for
    for spec in entry["upstream"].values():
        if (cache_dir() / "upstream" / f"{name}__{Path(spec['url']).name}").exists():
            return True
    return False


_SAID: set[str] = set()


def _say_once(key: str, text: str) -> None:
    if key not in _SAID:
        _SAID.add(key)
        print(text)


def baron_mouse_pancreas(
    *, mice: tuple[str, ...] | str | None = None, require_all: bool = False
) -> ad.AnnData:
    """Baron et al. 2016 mouse pancreas (inDrop UMI counts), the mice concatenated.

    Parameters
    ----------
    mice
        Which mice to load (``"mouse1"``: 822 cells, ``"mouse2"``: 1,064 cells). ``None`` (the default) loads the
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
    if mice is None:
        local = tuple(m for m in ("mouse1", "mouse2") if _is_local(f"baron_{m}"))
        if local and len(local) < 2:
            _say_once(
                "baron",
                f"baron_mouse_pancreas: loading {', '.join(local)} (found locally); the other mouse is "
                "not in the cache or the mirror (mice=('mouse1', 'mouse2') downloads it)",
            )
        mice = local or ("mouse1", "mouse2")
    if isinstance(mice, str):
        mice = (mice,)
    unknown = [m for m in mice if m not in ("mouse1", "mouse2")]
    if unknown or not mice:
        raise ValueError(f"mice must be a non-empty subset of ('mouse1', 'mouse2'), got {mice!r}")
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


def synthetic(
    n_cells: int = 600,
    n_genes: int = 200,
    n_types: int = 4,
    *,
    n_markers: int = 10,
    fold_change: float = 4.0,
    dispersion: float = 5.0,
    mean_library_size: float = 2000.0,
    seed: int = 0,
    chunk_size: int = 20_000,
) -> ad.AnnData:
    """Negative-binomial counts with cell-type structure, made in code (the fast test default).

    Gene ``g`` in a cell of type ``t`` with size factor ``s`` has mean ``μ = s · q_tg`` where
    ``q_t`` is a base profile (log-normal) with ``n_markers`` genes per type raised ``fold_change``-fold,
    renormalised to ``mean_library_size``; counts are NB(μ, r) with size ``r = dispersion``
    (variance ``μ + μ²/r``), drawn as a gamma-Poisson mixture.

    Returns
    -------
    AnnData
        CSR int32 counts; ``obs["cell_type"]`` (``"type_0"`` …), ``obs["size_factor"]``;
        ``varm["true_mean_profile"]`` (genes × types, the q_t, sums to ``mean_library_size``);
        ``var["marker_of"]`` (type index a gene marks, -1 otherwise).
    """
    from ._validation import check_float, check_int, check_seed

    for name, v in dict(n_cells=n_cells, n_genes=n_genes, n_types=n_types, chunk_size=chunk_size).items():
        check_int(v, name, minimum=1)
    check_int(n_markers, "n_markers", minimum=0)
    if n_markers * n_types > n_genes:
        raise ValueError(f"n_markers * n_types ({n_markers} * {n_types}) must not exceed n_genes ({n_genes})")
    for name, v in dict(
        fold_change=fold_change, dispersion=dispersion, mean_library_size=mean_library_size
    ).items():
        check_float(v, name, minimum=0.0, strict=True)
    seed = check_seed(seed)
    rng = np.random.default_rng(seed)
    base = rng.lognormal(mean=0.0, sigma=1.0, size=n_genes)
    profiles = np.tile(base, (n_types, 1))
    marker_of = np.full(n_genes, -1)
    perm = rng.permutation(n_genes)
    for t in range(n_types):
        idx = perm[t * n_markers : (t + 1) * n_markers]
        profiles[t, idx] *= fold_change
        marker_of[idx] = t
    profiles *= mean_library_size / profiles.sum(axis=1, keepdims=True)
    types = rng.integers(0, n_types, size=n_cells)
    size_factor = rng.lognormal(mean=0.0, sigma=0.3, size=n_cells)
    size_factor /= size_factor.mean()
    blocks = []
    for start in range(0, n_cells, chunk_size):
        stop = min(start + chunk_size, n_cells)
        mu = size_factor[start:stop, None] * profiles[types[start:stop]]
        lam = rng.gamma(shape=dispersion, scale=mu / dispersion)
        blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.int32)))
    X = sp.vstack(blocks, format="csr")
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(
                [f"type_{t}" for t in types], categories=[f"type_{t}" for t in range(n_types)]
            ),
            "size_factor": size_factor,
        },
        index=[f"cell_{i:06d}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"marker_of": marker_of}, index=[f"gene_{j:05d}" for j in range(n_genes)])
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.varm["true_mean_profile"] = profiles.T.copy()
    adata.uns["synthetic"] = dict(
        n_types=n_types,
        n_markers=n_markers,
        fold_change=fold_change,
        dispersion=dispersion,
        mean_library_size=mean_library_size,
        seed=seed,
    )
    return adata


def _atomic_copy(src: Path, dest: Path) -> None:  # used by tests and instructors preparing a mirror
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
