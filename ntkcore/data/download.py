"""Downloads into a local cache, verified by SHA-256, all or nothing, and safe against faults.

The cache folder is ``cache_dir=`` when given, else ``$NTKCORE_DATA``, else ``~/.cache/ntkcore``; each
dataset has a subfolder. :func:`fetch` streams a file into a partial file next to its destination (with a
tqdm progress bar), checks its length and SHA-256, and only then renames it into place (atomic, so concurrent
downloads of the same file are safe). Any failure removes the partial file (and the folders it created) and
raises :class:`DownloadError` with the URL and the exact path where the file can be put by hand. Nothing here
runs at import time.

Faults it survives:

- permissions: files and folders are created readable by everyone (mode 0644/0755 under the usual umask 022),
  so a cache filled by one user (root in a container build) serves every user; a cache that is readable but
  not writable still serves the files already in it;
- a cache that cannot be used (read-only, a path that is a file, a full disk): every ``OSError`` on the cache
  becomes a :class:`DownloadError` that names the path and how to choose another folder;
- a killed download (SIGKILL, SIGTERM, a crash): its partial file is removed by the next call
  (:func:`remove_stale_parts`);
- a stalled or trickling server: ``timeout`` bounds every wait and ``deadline`` the whole transfer.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm  # the text bar: tqdm.auto warns in Jupyter without ipywidgets

from .._checks import check_real

try:
    import fcntl
except ImportError:  # Windows: there a file that a live process holds open cannot be deleted
    fcntl = None

ENV_VAR = "NTKCORE_DATA"
DEFAULT_CACHE = Path("~/.cache/ntkcore")
CHUNK = 1 << 20
TIMEOUT = 30.0     # seconds: the longest wait for any single network operation
DEADLINE = 3600.0  # seconds: the longest download of one file (CIFAR-10's 163 MiB at 46 kB/s)


class DownloadError(RuntimeError):
    """A dataset file could not be downloaded, stored or verified; the message says what to do about it."""


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


@contextlib.contextmanager
def _cache_errors(path: Path, doing: str):
    """Turn any ``OSError`` on the cache into a :class:`DownloadError` naming the path and the way out."""
    try:
        yield
    except OSError as err:
        raise DownloadError(
            f"cannot {doing} {path} in the cache ({err}). The cache folder {path.parent} must be readable, and "
            f"writable to download into it. Choose another folder with the environment variable {ENV_VAR} or "
            "the cache_dir= argument of the loaders, or fix the permissions of this one "
            "(e.g. chmod a+rX for files another user downloaded).") from err


def _part_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_parts(path) -> list[Path]:
    """Delete the partial files that dead downloads of ``path`` left behind; return those deleted.

    A download writes ``.<name>.<pid>-<random>.part`` next to ``path`` and holds an exclusive ``flock`` on it
    until it has renamed it into place. A part is stale when a shared lock on it can be taken: the kernel drops
    a process's locks when it dies, however it dies (SIGKILL and SIGTERM included), and never while it lives.
    This is exact where the alternatives guess: an age threshold would delete a slow but live download (or keep
    a dead one for hours), and a pid in the name is reused, means nothing in another container's pid namespace
    sharing the cache volume, or on another host sharing it over NFS (where Linux maps ``flock`` to NFS locks).
    The part is deleted while the lock is held, and a new download checks that its freshly created part still
    exists once it holds its own lock, so a part is never deleted under a live writer. On Windows (no
    ``fcntl``) the deletion itself is the test: Windows refuses to delete a file a live process has open. Best
    effort: a part that cannot be locked (a filesystem without locks) or deleted (a read-only cache) is left,
    silently.
    """
    path = Path(path)
    prefix, removed = _part_prefix(path), []
    try:
        names = [e.name for e in os.scandir(path.parent)
                 if e.name.startswith(prefix) and e.name.endswith(".part")]
    except OSError:              # no folder yet, or not readable: nothing to clean
        return removed
    for name in names:
        part = path.parent / name
        with contextlib.suppress(OSError):   # gone already, locked by a live download, or not ours to delete
            if fcntl is None:
                part.unlink()
            else:
                with open(part, "rb") as f:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)   # BlockingIOError while a writer lives
                    part.unlink()
            removed.append(part)
    return removed


def _new_part(path: Path):
    """Create and lock a fresh partial file for ``path``, readable by everyone (mode 0666 less the umask).

    Returns ``(binary file object, its Path)``. Retries when a concurrent :func:`remove_stale_parts` took the
    new file for a dead one in the instant between its creation and its lock.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(8):
        part = path.parent / f"{_part_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}.part"
        out = os.fdopen(os.open(part, flags, 0o666), "wb")
        if fcntl is None:
            return out, part
        try:
            fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a cleaner holds it and is deleting it
            out.close()
            continue
        except OSError:          # a filesystem without locks (ENOLCK): no cleaner can lock it either
            return out, part
        if os.fstat(out.fileno()).st_nlink:
            return out, part
        out.close()
    raise OSError(f"could not create a partial file next to {path}")


def fetch(url: str, path, sha256: str, *, timeout: float = TIMEOUT, deadline: float = DEADLINE,
          download: bool = True, progress: bool = True) -> Path:
    """Return ``path`` holding the verified file from ``url``, downloading it first if it is missing.

    A file already at ``path`` (downloaded before, or put there by hand) is checked against ``sha256`` and
    used without any request, even in a cache that is not writable. ``download=False`` raises instead of
    downloading. ``timeout`` (seconds, default 30) bounds every network wait; ``deadline`` (seconds, default
    3600) bounds the whole transfer, so a server that trickles bytes cannot hold the call forever: the call
    ends within ``deadline`` plus one wait of ``min(timeout, deadline)``. Partial files of killed downloads
    are removed first (:func:`remove_stale_parts`).

    Raises :class:`DownloadError` on a failed connection, an HTTP error, a passed deadline, a truncated
    transfer, a checksum mismatch or a cache that cannot be read or written; a failed download leaves nothing
    behind. Raises ``ValueError`` for a ``timeout`` or ``deadline`` that is not a positive number.
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"url must be a non-empty string, got {url!r}")
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256 must be the file's SHA-256 as 64 hexadecimal digits, got {sha256!r}")
    path, sha256 = Path(path), sha256.lower()
    timeout = check_real(timeout, "timeout", low=0, low_open=True)
    deadline = check_real(deadline, "deadline", low=0, low_open=True)
    with _cache_errors(path, "read"):
        remove_stale_parts(path)
        if path.exists():
            got = sha256_file(path)
            if got != sha256:
                raise DownloadError(f"{path} is in the cache but its SHA-256 is {got}, not {sha256}: the file "
                                    "is damaged or a different version. Delete it to download it again. "
                                    + _by_hand(url, path, sha256))
            return path
    if not download:
        raise DownloadError(f"{path} is not in the cache and download=False. " + _by_hand(url, path, sha256))
    return _download(url, path, sha256, timeout, deadline, progress)


def _download(url: str, path: Path, sha256: str, timeout: float, deadline: float, progress: bool) -> Path:
    """Stream ``url`` into a fresh partial file, verify it, rename it to ``path``; clean up on any failure."""
    with _cache_errors(path, "create"):
        new_dirs = [d for d in (path.parent, *path.parent.parents) if not d.exists()]   # deepest first
        path.parent.mkdir(parents=True, exist_ok=True)
    done, part = False, None
    try:
        with _cache_errors(path, "create a partial file for"):
            out, part = _new_part(path)
        with out:
            _stream(url, out, path, sha256, timeout, deadline, progress)
            with _cache_errors(path, "save"):
                out.flush()
                if fcntl is None:
                    out.close()          # Windows cannot rename an open file
                os.replace(part, path)   # still locked on POSIX, so no cleaner can take it before the rename
        done = True
    finally:
        if part is not None and not done:
            with contextlib.suppress(OSError):
                part.unlink()
        for d in new_dirs if not done else ():   # folders this call created, if still empty
            try:
                d.rmdir()
            except OSError:
                break
    return path


def _stream(url, out, path: Path, sha256: str, timeout: float, deadline: float, progress: bool) -> None:
    """Copy ``url`` into the open file ``out`` and check its length and SHA-256, within ``deadline`` seconds.

    ``read1`` returns after a single socket read, so the deadline is checked at least every
    ``min(timeout, deadline)`` seconds (the socket timeout), however slowly the bytes arrive.
    """
    stop = time.monotonic() + deadline
    received, total = 0, None
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=min(timeout, deadline)) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            read = getattr(response, "read1", response.read)
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name, disable=not progress) as bar:
                while block := read(CHUNK):
                    with _cache_errors(path, "write"):
                        out.write(block)
                    h.update(block)
                    received += len(block)
                    bar.update(len(block))
                    if time.monotonic() > stop:
                        raise TimeoutError("deadline")
        if total is not None and received != total:
            raise http.client.IncompleteRead(b"", total - received)
    except DownloadError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        raise _network_error(err, url, path, sha256, received, total, deadline, time.monotonic() > stop) from err
    if h.hexdigest() != sha256:
        raise DownloadError(f"checksum mismatch for {url}: SHA-256 {h.hexdigest()}, expected {sha256}; "
                            "the download was discarded. " + _by_hand(url, path, sha256))


def _network_error(err, url, path, sha256, received, total, deadline, late: bool) -> DownloadError:
    """The :class:`DownloadError` for a failure of the transfer itself (not of the cache)."""
    got = f"received {received} of {total or '?'} bytes"
    if late:
        return DownloadError(f"gave up on {url} at the deadline of {deadline:g} s ({got}): the server is stalled "
                             "or too slow. Pass a larger deadline= (seconds) for a slow connection. "
                             + _by_hand(url, path, sha256))
    if isinstance(err, http.client.IncompleteRead):  # raised by us, or by http.client on a broken transfer
        return DownloadError(f"truncated transfer from {url}: {got}. " + _by_hand(url, path, sha256))
    # no connection, HTTP error, timeout, broken transfer, malformed URL
    reason = getattr(err, "reason", err)
    if isinstance(err, urllib.error.HTTPError):
        reason = f"HTTP {err.code} {err.reason}"
    return DownloadError(f"could not download {url} ({reason}). " + _by_hand(url, path, sha256))
