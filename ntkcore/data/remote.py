"""Opt-in loaders of the papers' datasets: MNIST, Fashion-MNIST, CIFAR-10.

Each downloads its original archive on first use into the cache (:mod:`ntkcore.data.download`), verifies its
SHA-256, parses the original format (gzipped IDX for the MNISTs, the python pickle archive for CIFAR-10) and
returns the same :class:`~ntkcore.data.Dataset` as the offline sets: class subsets, seeded class-balanced
draws from the official train and test splits, pixels rescaled to [0, 1], optional preprocessing. Nothing is
downloaded unless one of these functions is called; ``download=False`` only uses the cache.

Checksums (SHA-256 of the files the URLs below serve):
- MNIST and Fashion-MNIST: the url_checksums/mnist.txt and fashion_mnist.txt registries of
  tensorflow-datasets 4.9.10 (recorded from the same URLs).
- CIFAR-10 python archive: ``file_hash`` in keras 3 (keras/src/datasets/cifar10.py).
"""
from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from dataclasses import dataclass

import numpy as np

from .dataset import finish
from .download import DEADLINE, TIMEOUT, fetch
from .download import cache_dir as resolve_cache
from .subset import make_dataset


@dataclass(frozen=True)
class Remote:
    """Where a dataset lives: ``base_url`` + file name for each of ``files`` (file name -> SHA-256)."""

    name: str
    base_url: str
    files: dict
    class_names: tuple


_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"

REMOTES = {
    "mnist": Remote("mnist", "https://storage.googleapis.com/cvdf-datasets/mnist/", dict(zip(_MNIST_FILES, (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"))),
        tuple(str(i) for i in range(10))),
    "fashion_mnist": Remote("fashion_mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                            dict(zip(_MNIST_FILES, (
                                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"))),
                            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                             "Sneaker", "Bag", "Ankle boot")),
    "cifar10": Remote("cifar10", "https://www.cs.toronto.edu/~kriz/",
                      {_CIFAR_ARCHIVE: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
                      ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
}


def _files(name: str, cache_dir, base_url, download: bool, progress: bool, timeout: float,
           deadline: float) -> dict:
    """Fetch (or find in the cache) every file of dataset ``name``: ``{file name: Path}``."""
    remote = REMOTES[name]
    base = (base_url or remote.base_url).rstrip("/") + "/"
    folder = resolve_cache(cache_dir) / name
    return {f: fetch(base + f, folder / f, sha, download=download, progress=progress, timeout=timeout,
                     deadline=deadline)
            for f, sha in remote.files.items()}


def is_cached(name: str, cache_dir=None) -> bool:
    """True when every file of remote dataset ``name`` is already in the cache (not re-verified here); False
    when the cache cannot be looked into (e.g. a folder this user may not enter)."""
    folder = resolve_cache(cache_dir) / name
    try:
        return all((folder / f).is_file() for f in REMOTES[name].files)
    except OSError:
        return False


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Parse a (gzipped) IDX file (LeCun's MNIST format): magic ``00 00 type ndim``, ``ndim`` big-endian
    uint32 sizes, then the data. Returns an array of the stored shape and type."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dt = np.dtype(_IDX_TYPES[raw[2]])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)) * dt.itemsize:
        raise ValueError(f"{path}: the header announces shape {shape}, but {len(body)} bytes of data follow")
    return np.frombuffer(body, dtype=dt).reshape(shape)


def read_cifar10(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse CIFAR-10's python archive (``cifar-10-batches-py/data_batch_1..5`` and ``test_batch``, pickled
    dicts with ``data`` (n, 3072) uint8 rows of 1024 red, green, blue pixels, and ``labels``).

    Returns ``(x_train (50000, 3, 32, 32) uint8, y_train, x_test (10000, 3, 32, 32), y_test)``. The pickles are
    loaded only after the archive's SHA-256 has been verified.
    """
    batches = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if base.startswith("data_batch_") or base == "test_batch":
                with tar.extractfile(member) as f:
                    batches[base] = pickle.load(f, encoding="bytes")
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [b for b in (*names, "test_batch") if b not in batches]
    if missing:
        raise ValueError(f"{path} is not the CIFAR-10 python archive: missing {', '.join(missing)}")

    def stack(keys):
        x = np.concatenate([np.asarray(batches[k][b"data"], dtype=np.uint8) for k in keys])
        y = np.concatenate([np.asarray(batches[k][b"labels"], dtype=np.int64) for k in keys])
        return x.reshape(len(x), 3, 32, 32), y

    return (*stack(names), *stack(["test_batch"]))


def _load(name, arrays, classes, n_train, n_test, seed, preprocess, labels, flatten, torch, device, dtype):
    x_tr, y_tr, x_te, y_te = arrays
    if flatten:
        x_tr, x_te = x_tr.reshape(len(x_tr), -1), x_te.reshape(len(x_te), -1)
    names = REMOTES[name].class_names
    ds = make_dataset(name, x_tr, y_tr, names, classes=classes, n_train=n_train,
                      n_test=n_test, seed=seed, preprocess=preprocess, labels=labels, x_test=x_te,
                      test_targets=y_te, pixel_scale=255.0)
    return finish(ds, torch, device, dtype)


def _idx_dataset(name, cache_dir, base_url, download, progress, timeout, deadline):
    paths = _files(name, cache_dir, base_url, download, progress, timeout, deadline)
    x_tr, y_tr, x_te, y_te = (read_idx(paths[f]) for f in _MNIST_FILES)
    return x_tr[:, None], y_tr.astype(np.int64), x_te[:, None], y_te.astype(np.int64)


def mnist(classes=None, n_train=None, n_test=None, *, seed=0, preprocess=(), labels="auto", flatten=True,
          cache_dir=None, base_url=None, download=True, progress=True, timeout=TIMEOUT, deadline=DEADLINE,
          torch=False, device=None, dtype=None):
    """MNIST (LeCun et al.): 60,000 training and 10,000 test digits of 28×28 pixels, rescaled to [0, 1].

    Downloaded on first call into ``cache_dir`` (default ``$NTKCORE_DATA`` or ``~/.cache/ntkcore``) from
    ``base_url`` (default: the tensorflow-datasets mirror); ``download=False`` uses only the cache, which then
    need not be writable. ``timeout`` (seconds, default 30) bounds every network wait, ``deadline`` (seconds,
    default 3600) the download of each file (:func:`ntkcore.data.download.fetch`).
    ``classes``, ``n_train``, ``n_test`` (None: the whole official split), ``seed``, ``preprocess``,
    ``labels``, ``torch``/``device``/``dtype`` as :func:`ntkcore.data.digits`. ``flatten``: x of shape
    (n, 784), else (n, 1, 28, 28). Raises :class:`~ntkcore.data.DownloadError` when the files cannot be had,
    including when the cache folder cannot be used (the message says how to choose another one).
    """
    arrays = _idx_dataset("mnist", cache_dir, base_url, download, progress, timeout, deadline)
    return _load("mnist", arrays, classes, n_train, n_test, seed, preprocess, labels, flatten, torch, device,
                 dtype)


def fashion_mnist(classes=None, n_train=None, n_test=None, *, seed=0, preprocess=(), labels="auto",
                  flatten=True, cache_dir=None, base_url=None, download=True, progress=True, timeout=TIMEOUT,
                  deadline=DEADLINE, torch=False, device=None, dtype=None):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 + 10,000 clothing images of 28×28 pixels in MNIST's format;
    classes 0..9 or their names ('T-shirt/top', ..., 'Ankle boot'). Arguments as :func:`mnist`."""
    arrays = _idx_dataset("fashion_mnist", cache_dir, base_url, download, progress, timeout, deadline)
    return _load("fashion_mnist", arrays, classes, n_train, n_test, seed, preprocess, labels, flatten, torch,
                 device, dtype)


def cifar10(classes=None, n_train=None, n_test=None, *, seed=0, preprocess=(), labels="auto", flatten=True,
            cache_dir=None, base_url=None, download=True, progress=True, timeout=TIMEOUT, deadline=DEADLINE,
            torch=False, device=None, dtype=None):
    """CIFAR-10 (Krizhevsky 2009): 50,000 + 10,000 colour images of 32×32 pixels, rescaled to [0, 1].

    ``classes`` by index or name, e.g. ``("cat", "dog")`` (cat −1, dog +1). ``flatten``: x of shape (n, 3072)
    in channel-major order, else (n, 3, 32, 32). Other arguments as :func:`mnist`; the archive is 163 MiB.
    """
    path = _files("cifar10", cache_dir, base_url, download, progress, timeout, deadline)[_CIFAR_ARCHIVE]
    return _load("cifar10", read_cifar10(path), classes, n_train, n_test, seed, preprocess, labels, flatten,
                 torch, device, dtype)
