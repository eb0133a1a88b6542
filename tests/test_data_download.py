"""The opt-in loaders (MNIST, Fashion-MNIST, CIFAR-10) against a local HTTP server on 127.0.0.1.

The tests write small fixture files in the real formats (gzipped IDX, CIFAR's pickled python archive), serve
them, and point the loaders' registry at them. Nothing here touches the real network.
"""
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import struct
import tarfile
import threading

import numpy as np
import pytest

from ntkcore import data
from ntkcore.data import remote
from ntkcore.data.download import fetch

TIMEOUT = 5.0


# --- fixture files in the real formats ------------------------------------------------------------------------

def idx_gz(array: np.ndarray) -> bytes:
    """Gzipped IDX of a uint8 array: magic 00 00 08 ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def mnist_fixture(seed, n_train=40, n_test=20):
    gen = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": gen.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": gen.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) % 10).astype(np.uint8),
    }
    return arrays, {name: idx_gz(a) for name, a in arrays.items()}


def cifar_fixture(per_batch=10):
    gen = np.random.default_rng(7)
    batches, buf = {}, io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        for name in names:
            if name == "batches.meta":
                obj = {b"label_names": [n.encode() for n in remote.REMOTES["cifar10"].class_names]}
            else:
                obj = {b"data": gen.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                       b"labels": [int(v) for v in gen.permutation(np.arange(per_batch) % 10)],
                       b"batch_label": name.encode()}
                batches[name] = obj
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return batches, buf.getvalue()


# --- a local server -------------------------------------------------------------------------------------------

class Server:
    """Serves ``files`` (name -> bytes); ``truncate`` names files sent with a too-large Content-Length."""

    def __init__(self):
        self.files, self.requests, self.truncate = {}, [], set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                outer.requests.append(name)
                if name not in outer.files:
                    self.send_error(404)
                    return
                body = outer.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (1000 if name in outer.truncate else 0)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in outer.truncate else body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _register(monkeypatch, name, files: dict, url: str):
    """Point the registry of ``name`` at ``url`` with the fixtures' checksums."""
    old = remote.REMOTES[name]
    sums = {f: hashlib.sha256(b).hexdigest() for f, b in files.items()}
    monkeypatch.setitem(remote.REMOTES, name, remote.Remote(name, url, sums, old.class_names))


def _files_in(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def mnist_server(server, monkeypatch):
    arrays, files = mnist_fixture(seed=0)
    server.files.update(files)
    _register(monkeypatch, "mnist", files, server.url)
    return server, arrays


# --- the cases of the issue -----------------------------------------------------------------------------------

def test_good_download_parses_idx(mnist_server, tmp_path):
    server, arrays = mnist_server
    ds = data.mnist(classes=(3, 8), n_train=6, n_test=4, seed=0, cache_dir=tmp_path, progress=False,
                    timeout=TIMEOUT)
    assert ds.x_train.shape == (6, 784) and ds.x_test.shape == (4, 784)
    assert sorted(server.requests) == sorted(remote.REMOTES["mnist"].files)
    assert _files_in(tmp_path) == sorted(remote.REMOTES["mnist"].files)          # no temporary files left
    images, labels = arrays["train-images-idx3-ubyte.gz"], arrays["train-labels-idx1-ubyte.gz"]
    for row, y in zip(ds.x_train, ds.y_train):
        digit = 3 if y == -1 else 8
        candidates = images[labels == digit].reshape(-1, 784) / 255.0
        assert np.any(np.all(candidates == row, axis=1))
    test_images = arrays["t10k-images-idx3-ubyte.gz"].reshape(-1, 784) / 255.0
    assert all(np.any(np.all(test_images == row, axis=1)) for row in ds.x_test)   # tests come from t10k


def test_cached_second_call_makes_no_request(mnist_server, tmp_path, monkeypatch):
    server, _ = mnist_server
    monkeypatch.setenv("NTKCORE_DATA", str(tmp_path))
    first = data.mnist(n_train=20, n_test=10, progress=False, timeout=TIMEOUT)
    count = len(server.requests)
    assert count == 4 and (tmp_path / "mnist").is_dir()
    second = data.mnist(n_train=20, n_test=10, progress=False, timeout=TIMEOUT)
    offline = data.mnist(n_train=20, n_test=10, download=False, flatten=False)
    assert len(server.requests) == count
    assert np.array_equal(first.x_train, second.x_train) and first.y_test.dtype == np.int64
    assert offline.x_train.shape == (20, 1, 28, 28)
    assert {r.name: r.cached for r in data.available()}["mnist"]


def test_wrong_checksum_leaves_nothing(mnist_server, tmp_path, monkeypatch):
    server, _ = mnist_server
    sums = dict(remote.REMOTES["mnist"].files)
    sums["train-images-idx3-ubyte.gz"] = "0" * 64
    monkeypatch.setitem(remote.REMOTES, "mnist", remote.Remote("mnist", server.url, sums, ("0",) * 10))
    with pytest.raises(data.DownloadError, match="checksum") as err:
        data.mnist(cache_dir=tmp_path, progress=False, timeout=TIMEOUT)
    url = server.url + "train-images-idx3-ubyte.gz"
    assert url in str(err.value) and str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in str(err.value)
    assert "train-images-idx3-ubyte.gz" not in _files_in(tmp_path)
    assert not [p for p in tmp_path.rglob("*.part")]


def test_truncated_transfer_leaves_nothing(mnist_server, tmp_path):
    server, _ = mnist_server
    server.truncate.add("train-labels-idx1-ubyte.gz")
    with pytest.raises(data.DownloadError, match="truncated") as err:
        data.mnist(cache_dir=tmp_path, progress=False, timeout=TIMEOUT)
    assert server.url + "train-labels-idx1-ubyte.gz" in str(err.value)
    assert "train-labels-idx1-ubyte.gz" not in _files_in(tmp_path)
    assert not [p for p in tmp_path.rglob("*.part")]


def test_no_server_gives_url_and_path(tmp_path):
    with socket.socket() as s:                     # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    dest = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    with pytest.raises(data.DownloadError) as err:
        data.mnist(cache_dir=tmp_path, base_url=url, progress=False, timeout=TIMEOUT)
    msg = str(err.value)
    assert url + "train-images-idx3-ubyte.gz" in msg and str(dest) in msg and "by hand" in msg
    assert list(tmp_path.iterdir()) == []                 # not even the dataset folder is left


def test_http_error_and_download_false(server, tmp_path):
    with pytest.raises(data.DownloadError, match="404"):
        fetch(server.url + "missing.gz", tmp_path / "missing.gz", "0" * 64, progress=False, timeout=TIMEOUT)
    with pytest.raises(data.DownloadError, match="download=False") as err:
        data.cifar10(cache_dir=tmp_path, download=False)
    assert str(tmp_path / "cifar10" / "cifar-10-python.tar.gz") in str(err.value)
    assert _files_in(tmp_path) == [] and server.requests == ["missing.gz"]


def test_file_placed_by_hand_is_verified_and_used(mnist_server, tmp_path):
    server, _ = mnist_server
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, blob in server.files.items():
        (folder / name).write_bytes(blob)
    assert data.mnist(cache_dir=tmp_path, n_train=10, n_test=10, progress=False).x_train.shape == (10, 784)
    assert server.requests == []
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the file")
    with pytest.raises(data.DownloadError, match="Delete it"):
        data.mnist(cache_dir=tmp_path, progress=False)


def test_progress_bar_and_fashion_class_names(server, monkeypatch, tmp_path, capsys):
    _, files = mnist_fixture(seed=1)
    server.files.update(files)
    _register(monkeypatch, "fashion_mnist", files, server.url)
    ds = data.fashion_mnist(classes=("Trouser", "Bag"), n_train=4, n_test=2, cache_dir=tmp_path, timeout=TIMEOUT)
    assert ds.classes == (1, 8) and ds.class_names == ("Trouser", "Bag")
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err          # tqdm writes its bar to stderr


def test_cifar_pickle_archive(server, monkeypatch, tmp_path):
    batches, archive = cifar_fixture()
    server.files["cifar-10-python.tar.gz"] = archive
    _register(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive}, server.url)
    ds = data.cifar10(classes=("cat", "dog"), n_train=8, n_test=1, flatten=False, cache_dir=tmp_path,
                      progress=False, timeout=TIMEOUT, torch=True)
    assert tuple(ds.x_train.shape) == (8, 3, 32, 32) and ds.classes == (3, 5)
    train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    for img, y in zip(ds.x_train.numpy(), ds.y_train.numpy()):
        rows = train[labels == (3 if y == -1 else 5)].reshape(-1, 3, 32, 32) / 255.0   # R, G, B planes
        assert np.any(np.all(rows == img, axis=(1, 2, 3)))
    test = batches["test_batch"]
    assert ds.x_test.numpy().reshape(1, 3072)[0].tolist() in (np.asarray(test[b"data"]) / 255.0).tolist()
    with pytest.raises(ValueError, match="n_train=12"):     # the fixture has 5 cats in training
        data.cifar10(classes=("cat", "dog"), n_train=12, cache_dir=tmp_path, download=False)


def test_not_an_idx_file(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(ValueError, match="not an IDX"):
        remote.read_idx(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc"))
    with pytest.raises(ValueError, match="10"):
        remote.read_idx(short)


def test_real_registry_is_complete():
    """The shipped URLs and SHA-256s (tensorflow-datasets / keras registries) are well formed."""
    for name, r in remote.REMOTES.items():
        assert r.base_url.startswith(("http://", "https://")) and r.files
        assert all(len(s) == 64 and int(s, 16) >= 0 for s in r.files.values()), name
        assert len(r.class_names) == 10
