"""Fault injection for the download cache (ntkcore.data.download), all on 127.0.0.1, a few seconds in total.

Permissions: root reads and writes everything, so as root (as in many CI containers) the checks that need
permission bits to bite run in a forked child that drops to the user 'nobody' (:func:`as_another_user`).
"""
import hashlib
import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ntkcore import data
from ntkcore.data import download
from ntkcore.data.download import DownloadError, fetch

BODY = bytes(range(256)) * 40          # 10,240 bytes
SHA = hashlib.sha256(BODY).hexdigest()
NOBODY = 65534
ROOT = Path(__file__).resolve().parents[1]


# --- servers that misbehave ------------------------------------------------------------------------------------

class FaultServer:
    """Serves ``BODY`` at ``/<mode>``: 'fast' at once; 'pause' half, a pause of ``pause`` s, the rest (so that
    concurrent downloads overlap); 'trickle' one byte every ``interval`` s, hanging up after ``cap`` s;
    'stall' the headers and ten bytes, then nothing until the test ends."""

    def __init__(self, interval=0.02, pause=0.3, cap=4.0):
        self.stop, self.requests = threading.Event(), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                mode = self.path.strip("/")
                outer.requests.append(mode)
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                try:
                    outer.serve(mode, self.wfile)
                except (BrokenPipeError, ConnectionResetError):   # the client gave up
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.interval, self.pause, self.cap = interval, pause, cap
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def serve(self, mode, out):
        if mode == "fast":
            out.write(BODY)
        elif mode == "pause":
            out.write(BODY[:len(BODY) // 2])
            out.flush()
            time.sleep(self.pause)
            out.write(BODY[len(BODY) // 2:])
        elif mode == "trickle":
            end = time.monotonic() + self.cap
            for i in range(len(BODY)):
                out.write(BODY[i:i + 1])
                out.flush()
                if self.stop.wait(self.interval) or time.monotonic() > end:
                    return
        elif mode == "stall":
            out.write(BODY[:10])
            out.flush()
            self.stop.wait(30)

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture
def silent_server():
    """Accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield f"http://127.0.0.1:{s.getsockname()[1]}/"


def parts(folder: Path) -> list:
    return sorted(p.name for p in folder.rglob("*.part"))


def assert_cache_error(err, path: Path):
    msg = str(err.value)
    assert str(path) in msg and download.ENV_VAR in msg and "cache_dir=" in msg, msg


# --- permissions ---------------------------------------------------------------------------------------------

@pytest.fixture
def shared_dir():
    """A folder another user can enter (pytest's tmp_path is private to its owner); removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="ntkcore-cache-test-"))
    d.chmod(0o755)
    yield d
    for p in (d, *d.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(d)


def as_another_user(check, *args):
    """Run ``check(*args)`` where permission bits apply: in this process unless it is root, else in a forked
    child that drops to uid/gid 65534 ('nobody'); a failure in the child fails the test here."""
    if os.geteuid() != 0:
        return check(*args)
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)      # fork in a threaded process (Python ≥ 3.12)
        pid = os.fork()
    if pid == 0:
        try:
            report = ("ok", "")
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            except OSError as err:
                report = ("skip", f"running as root and cannot drop to uid {NOBODY} to test permissions: {err}")
            else:
                try:
                    check(*args)
                except BaseException as err:     # noqa: BLE001 - reported to the parent
                    report = ("fail", "".join(traceback.format_exception(err)))
            os.write(write, pickle.dumps(report))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        raw = f.read()
    os.waitpid(pid, 0)
    kind, text = pickle.loads(raw) if raw else ("fail", "the child process died without a report")
    if kind == "skip":
        pytest.skip(text)
    if kind == "fail":
        pytest.fail(f"as uid {NOBODY}:\n{text}", pytrace=False)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
                         ids=["umask 022", "umask 027"])
def test_cached_files_are_readable_by_others(server, shared_dir, umask, mask, file_mode, dir_mode):
    """Created with mode 0666/0777 less the umask (not mkstemp's 0600): a cache filled by root serves all."""
    umask(mask)
    dest = shared_dir / "cache" / "set" / "file.bin"
    assert fetch(server.url + "fast", dest, SHA, progress=False, timeout=5) == dest
    assert stat.S_IMODE(dest.stat().st_mode) == file_mode
    assert stat.S_IMODE(dest.parent.stat().st_mode) == dir_mode == stat.S_IMODE(dest.parent.parent.stat().st_mode)
    if mask == 0o022:       # what another user (as root: 'nobody') sees: the cached file, usable offline
        as_another_user(_offline_fetch, dest)


def _offline_fetch(dest: Path):
    assert fetch("http://127.0.0.1:9/unused", dest, SHA, download=False) == dest


def _read_only_checks(folder: Path, stale: Path):
    cached, missing = folder / "cached.bin", folder / "missing.bin"
    assert fetch("http://127.0.0.1:9/unused", cached, SHA, download=False) == cached    # usable as it is
    assert stale.exists()                                                # could not be removed: left, silently
    with pytest.raises(DownloadError) as err:
        fetch("http://127.0.0.1:9/unused", missing, SHA, progress=False, timeout=5)
    assert_cache_error(err, missing)
    assert "create" in str(err.value) and not missing.exists()


def test_read_only_cache_serves_what_it_has_and_refuses_cleanly(shared_dir):
    folder = shared_dir / "cifar10"
    folder.mkdir()
    (folder / "cached.bin").write_bytes(BODY)
    stale = folder / ".cached.bin.1-dead.part"        # a killed download's leftover
    stale.write_bytes(BODY[:5])
    for p in (folder / "cached.bin", stale):
        p.chmod(0o644)
    folder.chmod(0o555)
    as_another_user(_read_only_checks, folder, stale)


def _unreadable_checks(path: Path, private: Path):
    with pytest.raises(DownloadError) as err:
        fetch("http://127.0.0.1:9/unused", path, SHA, download=False)
    assert_cache_error(err, path)
    assert "chmod a+rX" in str(err.value)
    with pytest.raises(DownloadError) as err:
        data.mnist(cache_dir=private, download=False)
    assert_cache_error(err, private / "mnist" / "train-images-idx3-ubyte.gz")
    assert not {r.name: r.cached for r in data.available(cache_dir=private)}["mnist"]


def test_unreadable_cache_names_the_path(shared_dir):
    """A file another user downloaded with mode 0600 (what the old cache did), and a folder one cannot enter."""
    path, private = shared_dir / "file.bin", shared_dir / "private"
    path.write_bytes(BODY)
    path.chmod(0)
    (private / "mnist").mkdir(parents=True)
    private.chmod(0)
    as_another_user(_unreadable_checks, path, private)


# --- a cache path that cannot be a folder ------------------------------------------------------------------------

@pytest.mark.parametrize("blocker", ["cache root", "dataset folder"])
def test_cache_path_that_is_a_file(tmp_path, blocker):
    """Works as root too: no permission bit is involved."""
    root = tmp_path / "cache"
    if blocker == "cache root":
        root.write_text("a file, not a folder")
    else:
        root.mkdir()
        (root / "mnist").write_text("a file, not a folder")
    with pytest.raises(DownloadError) as err:
        data.mnist(cache_dir=root, base_url="http://127.0.0.1:9/", progress=False, timeout=5)
    assert_cache_error(err, root / "mnist" / "train-images-idx3-ubyte.gz")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cache"] + (["mnist"] if blocker != "cache root" else [])


def test_destination_that_is_a_folder(tmp_path):
    dest = tmp_path / "file.bin"
    dest.mkdir()
    with pytest.raises(DownloadError) as err:
        fetch("http://127.0.0.1:9/unused", dest, SHA, progress=False)
    assert_cache_error(err, dest)


def test_disk_full_while_writing(server, tmp_path):
    """A write that fails (here the file-size limit, EFBIG; the same path as ENOSPC) is a cache error."""
    resource = pytest.importorskip("resource")
    dest = tmp_path / "set" / "file.bin"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))      # Python ignores SIGXFSZ: writes fail instead
    try:
        with pytest.raises(DownloadError) as err:
            fetch(server.url + "fast", dest, SHA, progress=False, timeout=5)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert_cache_error(err, dest)
    assert list(tmp_path.iterdir()) == []           # neither the partial file nor the folder is left


# --- slow servers ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["before the headers", "mid-body"])
def test_stalled_server_ends_at_the_deadline(server, silent_server, tmp_path, where):
    """A per-read timeout of 60 s, but the deadline of 0.3 s ends the call."""
    url = silent_server if where == "before the headers" else server.url + "stall"
    dest = tmp_path / "set" / "file.bin"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="deadline of 0.3 s") as err:
        fetch(url, dest, SHA, progress=False, timeout=60, deadline=0.3)
    assert time.monotonic() - start < 3            # bound: deadline + min(timeout, deadline) = 0.6 s
    assert url in str(err.value) and str(dest) in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_loaders_pass_the_deadline_on(silent_server, tmp_path, name):
    start = time.monotonic()
    with pytest.raises(DownloadError, match="deadline of 0.3 s"):
        data.load(name, cache_dir=tmp_path, base_url=silent_server, progress=False, timeout=60, deadline=0.3)
    assert time.monotonic() - start < 3 and list(tmp_path.iterdir()) == []


def test_trickling_server_ends_at_the_deadline(server, tmp_path):
    """One byte every 20 ms never trips a 5 s per-read timeout; the 0.5 s deadline still ends the call."""
    dest = tmp_path / "file.bin"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="deadline of 0.5 s") as err:
        fetch(server.url + "trickle", dest, SHA, progress=False, timeout=5, deadline=0.5)
    elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 2.5, elapsed           # the server would go on for 4 s (then hang up)
    received = int(str(err.value).split("received ")[1].split(" ")[0])
    assert 0 < received < len(BODY)                 # bytes were flowing: not a plain timeout
    assert list(tmp_path.iterdir()) == []


def test_bad_timeout_and_deadline(tmp_path):
    for kwargs in ({"timeout": 0}, {"timeout": -1.0}, {"deadline": float("inf")}, {"deadline": "10"}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            fetch("http://127.0.0.1:9/", tmp_path / "f", SHA, **kwargs)


@pytest.mark.parametrize("url, sha256, match", [
    (None, SHA, "url must be a non-empty string"),
    ("", SHA, "url must be a non-empty string"),
    ("http://127.0.0.1:9/", None, "sha256 must be"),
    ("http://127.0.0.1:9/", SHA[:-1], "sha256 must be"),
    ("http://127.0.0.1:9/", "z" * 64, "sha256 must be"),
])
def test_bad_url_and_checksum(tmp_path, url, sha256, match):
    with pytest.raises(ValueError, match=match):
        fetch(url, tmp_path / "f", sha256)


# --- killed and concurrent downloads -----------------------------------------------------------------------------

CHILD = """
import sys
from ntkcore.data.download import fetch
fetch(sys.argv[1], sys.argv[2], sys.argv[3], progress=False, timeout=60, deadline=60)
"""


def test_killed_download_part_is_removed_by_the_next_call(server, tmp_path):
    server.cap = 60                                  # the child trickles until it is killed
    dest = tmp_path / "set" / "file.bin"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", CHILD, server.url + "trickle", str(dest), SHA], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 30
        while not (server.requests and parts(tmp_path)):     # the part is created before the request
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < end, "the child never started downloading"
            time.sleep(0.02)
        live = parts(tmp_path)
        with pytest.raises(DownloadError, match="download=False"):    # this call cleans up, too...
            fetch(server.url + "fast", dest, SHA, download=False)
        assert parts(tmp_path) == live                               # ...but spares a live download's part
    finally:
        child.kill()                                                 # SIGKILL: no handler, no cleanup
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL and parts(tmp_path) == live       # the leftover
    assert fetch(server.url + "fast", dest, SHA, progress=False, timeout=5) == dest
    assert parts(tmp_path) == [] and dest.read_bytes() == BODY


def test_concurrent_downloads_of_the_same_file(server, tmp_path):
    """Four overlapping downloads (each also cleaning up stale parts) and offline readers meanwhile: every
    download succeeds, and readers see the complete file or none, never a partial one."""
    dest = tmp_path / "set" / "file.bin"
    results, seen, done = [], [], threading.Event()

    def download():
        try:
            results.append(fetch(server.url + "pause", dest, SHA, progress=False, timeout=5))
        except Exception as err:   # noqa: BLE001 - collected and asserted on below
            results.append(err)

    def read():
        while not done.is_set():
            try:
                seen.append("file" if fetch(server.url, dest, SHA, download=False) == dest else "?")
            except DownloadError as err:
                seen.append("missing" if "download=False" in str(err) else str(err))

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=download) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)                             # each starts while the others' parts exist
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert results == [dest] * 4 and server.requests == ["pause"] * 4
    assert set(seen) <= {"missing", "file"} and "file" in seen, [s for s in seen if s not in ("missing", "file")][:3]
    assert dest.read_bytes() == BODY and parts(tmp_path) == []
