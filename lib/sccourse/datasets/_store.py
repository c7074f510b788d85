"""Where data files come from, and how they are checked.

In order: the local cache (``SCCOURSE_DATA_DIR``, default ``data/cache/`` in the project); the mirror
``SCCOURSE_DATA_MIRROR`` (a folder, or an ``http(s)://`` address serving the same tree; unset: a ``shared/data``
folder beside the project checkout, when present); the original public source (``upstream``), downloaded with
:mod:`pooch` within an overall deadline (``SCCOURSE_DOWNLOAD_TIMEOUT``).

Mirror-format files are checked against their sha256 (``sha256(file) == registry``); upstream files whose bytes
cannot be pinned are checked by a content fingerprint (shape, non-zeros, total counts) after parsing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import anndata as ad
import scipy.sparse as sp

from ._parsers import _PARSERS

# lib/sccourse/datasets/_store.py -> the project checkout, whose data/registry.json lists the datasets
_PROJECT_ROOT = Path(__file__).resolve().parents[3]
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
    """The local cache folder (``SCCOURSE_DATA_DIR``, default ``<project>/data/cache``).

    Returns
    -------
    pathlib.Path
        The folder (it may not exist yet; downloads create it).

    Raises
    ------
    DataUnavailableError
        When the path names a file.
    """
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
    """Seconds a single download may take in all (``SCCOURSE_DOWNLOAD_TIMEOUT``, default 600).

    Returns
    -------
    float
        The deadline in seconds (> 0).

    Raises
    ------
    ValueError
        When ``SCCOURSE_DOWNLOAD_TIMEOUT`` is not a positive number up to ``threading.TIMEOUT_MAX``.
    """
    value = os.environ.get("SCCOURSE_DOWNLOAD_TIMEOUT", "600")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"SCCOURSE_DOWNLOAD_TIMEOUT must be a number of seconds, got {value!r}") from None
    if not 0 < seconds <= threading.TIMEOUT_MAX:  # a longer wait cannot be armed (threading.Timer overflows)
        raise ValueError(
            f"SCCOURSE_DOWNLOAD_TIMEOUT must be a positive number of seconds up to {threading.TIMEOUT_MAX:.0f}, "
            f"got {value!r}"
        )
    return seconds


def mirror() -> str | None:
    """The mirror location: ``SCCOURSE_DATA_MIRROR`` (a folder path or an http(s) URL); when that is unset,
    a ``shared/data`` folder beside the project checkout if there is one; else None.

    Returns
    -------
    str or None
        The folder or address, as given.
    """
    value = os.environ.get("SCCOURSE_DATA_MIRROR", "").strip()
    if value:
        return value
    beside = _PROJECT_ROOT.parent / "shared" / "data"
    return str(beside) if beside.is_dir() else None


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


def _atomic_copy(src: Path, dest: Path) -> None:  # used by tests and instructors preparing a mirror
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
