"""Downloads into a local cache, verified by SHA-256, all or nothing.

The cache folder is ``cache_dir=`` when given, else ``$NTKCORE_DATA``, else ``~/.cache/ntkcore``; each
dataset has a subfolder. :func:`fetch` streams a file into a temporary file next to its destination (with a
tqdm progress bar), checks its length and SHA-256, and only then renames it into place (atomic). Any failure
removes the temporary file (and the folders it created) and raises :class:`DownloadError` with the URL and
the exact path where the file can be put by hand. Nothing here runs at import time.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm  # the text bar: tqdm.auto warns in Jupyter without ipywidgets

ENV_VAR = "NTKCORE_DATA"
DEFAULT_CACHE = Path("~/.cache/ntkcore")
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A dataset file could not be downloaded or failed verification; the message says where to put it."""


def cache_dir(path=None) -> Path:
    """The cache folder: ``path``, else ``$NTKCORE_DATA``, else ``~/.cache/ntkcore`` (not created here)."""
    if path is None:
        path = os.environ.get(ENV_VAR, "").strip() or DEFAULT_CACHE
    return Path(path).expanduser()


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _by_hand(url: str, path: Path, sha256: str) -> str:
    return (f"To install it by hand, download {url} and save it as {path} "
            f"(its SHA-256 must be {sha256}).")


def fetch(url: str, path, sha256: str, *, timeout: float = 30.0, download: bool = True,
          progress: bool = True) -> Path:
    """Return ``path`` holding the verified file from ``url``, downloading it first if it is missing.

    A file already at ``path`` (downloaded before, or put there by hand) is checked against ``sha256`` and
    used without any request. ``download=False`` raises instead of downloading. ``timeout`` (seconds) bounds
    every network wait. Raises :class:`DownloadError` on a failed connection, an HTTP error, a truncated
    transfer or a checksum mismatch; a failed download leaves nothing behind.
    """
    path = Path(path)
    sha256 = sha256.lower()
    if path.exists():
        got = sha256_file(path)
        if got != sha256:
            raise DownloadError(f"{path} is in the cache but its SHA-256 is {got}, not {sha256}: the file is "
                                f"damaged or a different version. Delete it to download it again. "
                                + _by_hand(url, path, sha256))
        return path
    if not download:
        raise DownloadError(f"{path} is not in the cache and download=False. " + _by_hand(url, path, sha256))
    new_dirs = [d for d in (path.parent, *path.parent.parents) if not d.exists()]   # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    received, total, done = 0, None, False
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    received += len(block)
                    bar.update(len(block))
        if total is not None and received != total:
            raise http.client.IncompleteRead(b"", total - received)
        if h.hexdigest() != sha256:
            raise DownloadError(f"checksum mismatch for {url}: SHA-256 {h.hexdigest()}, expected {sha256}; "
                                "the download was discarded. " + _by_hand(url, path, sha256))
        os.replace(tmp, path)
        done = True
    except DownloadError:
        raise
    except http.client.IncompleteRead as err:  # raised by us above, or by http.client on a broken transfer
        raise DownloadError(f"truncated transfer from {url}: received {received} of {total or '?'} bytes. "
                            + _by_hand(url, path, sha256)) from err
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        # no connection, HTTP error, timeout, broken transfer, malformed URL
        reason = getattr(err, "reason", err)
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        raise DownloadError(f"could not download {url} ({reason}). " + _by_hand(url, path, sha256)) from err
    finally:
        tmp.unlink(missing_ok=True)
        for d in new_dirs if not done else ():   # folders this call created, if still empty
            try:
                d.rmdir()
            except OSError:
                break
    return path
