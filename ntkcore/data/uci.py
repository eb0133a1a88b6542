"""The 45 small UCI data sets of Arora et al. (ICLR 2020), with their fixed splits, and the accuracy table of the
179 classifiers of Fernández-Delgado et al. (JMLR 2014): offline, shipped inside the package.

- :func:`uci`: one data set by name, as a :class:`UCIDataset` (features, labels 0..C−1, the train/validation
  split for hyper-parameter selection, the four train/test splits for testing);
- :func:`uci_names`: the 45 names, sorted;
- :func:`uci_reference`: the reference table as a :class:`UCIReference` (121 data sets × 179 classifiers,
  accuracy in percent, NaN where the table has no result).

>>> from ntkcore import data
>>> ds = data.uci("iris")
>>> ds.x.shape, ds.n_classes, len(ds.train), len(ds.validation), len(ds.folds)
((150, 4), 3, 75, 75, 4)

Sources
-------
The data sets are the preprocessing of M. Fernández-Delgado, E. Cernadas, S. Barro and D. Amorim, "Do we need
hundreds of classifiers to solve real world classification problems?", JMLR 15:3133–3181, 2014 (the archive of
preprocessed UCI data sets that Arora et al., "Harnessing the power of infinitely wide deep nets on small-data
tasks", ICLR 2020, use): the 45 smallest (10 to 452 examples) of Arora et al.'s 90 data sets. The data sets
themselves are from the UCI Machine Learning Repository (D. Dua and C. Graff, University of California, Irvine);
cite it and each data set's donors. The reference table is Fernández-Delgado et al.'s table of results (the
accuracy of each of their 179 classifiers on each of their 121 data sets).

What the splits are
-------------------
- Features are as Fernández-Delgado et al. distribute them: already standardized (each column to mean 0 and
  sample variance 1 over all rows of the data set, categorical inputs coded as numbers), so nothing here rescales
  them. Some data sets repeat rows (e.g. congressional-voting: 76 distinct rows of 435).
- ``train``/``validation`` (their ``conxuntos.dat``): two halves that partition the rows; Arora et al. choose
  hyper-parameters by training on ``train`` and scoring on ``validation``.
- ``folds`` (their ``conxuntos_kfold.dat``): four (train, test) pairs; each pair partitions the rows, with a test
  part of about n/4. They are *not* the four blocks of one partition: the test parts of different folds overlap,
  and roughly a third of the rows are in no test part (e.g. iris: 4 × 37 test rows, 105 distinct). The reported
  accuracy is the mean of the four test accuracies.

Integrity
---------
Each data set is one compressed ``.npz`` in ``ntkcore/data/uci_data/`` (about 1 MB for all 46 files), whose SHA-256
is checked against :data:`_SHA256` before it is read; a mismatch or a missing file raises a RuntimeError naming the
file. ``benchmarks/pack_uci.py`` (in the project's repository, run by hand) made the files from the sources above;
its docstring states every step, and ``--check`` confirms that the shipped bytes are what it makes.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

from .._checks import check_choice
from .packed import read_packed

_ROOT = resources.files(__package__) / "uci_data"
"""Where the packed files live: ``ntkcore/data/uci_data/`` of the installed package."""

_REFERENCE = "fd_results"

_SHA256 = {
    "acute-inflammation": "c82e6b37cf9eba91e6e1ec6a2a19098a89e114075ec81afa6e5c179b39989d9b",
    "acute-nephritis": "1ea6084a5c120a27cda0eb4443af3f95163662ca52d29aeea638120af7dbcda1",
    "arrhythmia": "936bc4d348d6355092b3f575de492379935b7c9fb8f65655ee77f3145a3d81c4",
    "balloons": "fb3b05ba1a1b133d19007754f0c217b07a85e0a1a85e2c89ecb681d7b6e38c52",
    "breast-cancer": "6cdfeff33ac55fcbdc2f042e66a0bcdac58ad00c48e286b6f675c322253700d7",
    "breast-cancer-wisc-prog": "cb6295fd060e946628d636ec09bc6147e97984326b2f1c84f23dec481a20ead8",
    "breast-tissue": "4e8d32a6c87447ca84ebc5dae610cf964f1c80795838a28a022fbec84dfeb890",
    "congressional-voting": "da4a246547af14031c6e007ecc91ea19305267666607ee9a8bd2ff470e00d5e5",
    "conn-bench-sonar-mines-rocks": "d8c4ec08c8aff3a0c5969cc1266bdc6a0905cc93f89aca5d29caca6d46859f73",
    "dermatology": "6918932d77a17ade161d275f56ea6cbb965622ea98f7ccb5e1c6fc2b3596cf34",
    "echocardiogram": "e37f797c8dfbe78b4dcfe585cc019f90ed39b56171ef8dd8036a66255e719751",
    "ecoli": "03646b6b41e657c12cc9ca88fe1b04a9a9e1bb2013aeff1e78214e045dcb71dc",
    "fertility": "dc03022b6cbb9846c80b778f693370e3826444a34fea6c1b546fef79e7f1f72d",
    "flags": "6978ed2f443e56877cee3cfbcc9155a3259bcb31b4c0ba1d107426d6857bb7ed",
    "glass": "90af893ccc55da49674d2927de800994884661a350df23c3185a5d71e6b05d5f",
    "haberman-survival": "9e08d198ee11c9d940da9e3ef65251282b4b33a000e3cf8bb1ae9a546e42188c",
    "heart-cleveland": "d6e534e6c7ccc250986098c1819e0bcdc27e4ad5723b50d573325952e96989f2",
    "heart-hungarian": "0e2d6a8a029c82e3b209b69dc00268aba275d2a54896f5115cbe396ef99b85c2",
    "heart-switzerland": "261c9812b780abd0bf82b5d4bf9ad034732db2ec032a656e6938da9337c0c4a6",
    "heart-va": "d926fef6389586bbb2624bc3d1396be662426f3dcaa0698e388c747c57ce93d4",
    "hepatitis": "61dc4b6a787d73216091241c49457e76b12f1db25ce7632774c30bf91ee1e743",
    "ionosphere": "9a73dcac61c12ca063fa7613db7f6e458fd5a4196d28dcecc76d27e71817bfae",
    "iris": "f5552e623981e9eb367fb9691e5078a29a9db0f1062f3e1429ea3d1a91676855",
    "lenses": "321b2aa7328145fa27baa3f7c5e8fd2b130fefb0c9080463f7997e536c91e861",
    "libras": "7a402c22d17044704ed05995db33cc6d923b6205c5f74e93efac92d0b3c4ea49",
    "lung-cancer": "266cc2d47094e0f889d9c06f494762584edf6136329543aaee4a5ea8337cc88c",
    "lymphography": "dd90d22644c81147b770f69e96a51c52328ebed82327f475a2cb257107b5a2fb",
    "molec-biol-promoter": "aa89ebc15c18818f121320190420d654d56166b510dce16d4fc5d13bf21f293a",
    "parkinsons": "e48eae5aa104a81b3d9c01c843cd62d6e2edaf84902fcd5cccd74b16225140ee",
    "pittsburg-bridges-MATERIAL": "d9138d6e0dde8e02b9e685c5943e8a20056204c6ef9d79fdbd071cdf0465e950",
    "pittsburg-bridges-REL-L": "530375c30de2a77fc0af8fd4c561f31034fdcc707f72cd6458050bc20ece610d",
    "pittsburg-bridges-SPAN": "00bae1d403f317dac6db3c8d3abb5d0a308603851d40e4e37abc913bbe212089",
    "pittsburg-bridges-T-OR-D": "3a2a920e243bbff04b767f8011d4b6cbbcb78fa96ee717496f38bee6e550c69e",
    "pittsburg-bridges-TYPE": "653bfd998fbcfd92c6da94c95ea563d5d7a3d4a3f8b832bf4e8b2a20178b828b",
    "planning": "31706b847079d451b531fd816482007a7cb26bdc920a4c2224d806fc872cca8d",
    "post-operative": "89a179c3d6196b39728af028f2bb73cd7b53872a4af7b54541801c1747323946",
    "primary-tumor": "ca9fe537f89c8106663f9fecefa4c03fb05feba818b129a9c92c53889aabc05d",
    "seeds": "938fad282d7af16952476d8f74748ad202959bffc4fac0ca9a173d3ae63c7275",
    "statlog-heart": "700c5b1e9ed012f1e183c25dd75678abd41122654a207e4603199c9a208338c6",
    "teaching": "20a2c572473db37f3e8722712c3b892c474dd7d60765d3c086879b3234860dd1",
    "trains": "1ec74918ded25e418850ac8d5c1e0e56d8c893eebb15a0b9eb8222eb59e66c0d",
    "vertebral-column-2clases": "e0a527e510ce6e2a4d542776ddce90ab6c54c81a3a4df577e8ec37b04da7f88e",
    "vertebral-column-3clases": "7f31b4314587a56d533479220855c3d0ebcd47d3918d8b9ee2c6b6f5b113f78f",
    "wine": "9cce4b57720856b7a82a97c0eed9b16d69f3ec67ad2bab3b62a462d955272d86",
    "zoo": "8948426d1db3b0ba7b2a56f3909cec3287e24f1f67a2e590ac1d1a725d9a6981",
    "fd_results": "35d57fb4f5fb4ac1d0c921a90c8617faa6706b4a6c2b350f0d06b42093b19578",
}
"""SHA-256 of each packed file: the data sets by name, and ``"fd_results"`` for the reference table."""

UCI_NAMES = tuple(sorted(name for name in _SHA256 if name != _REFERENCE))
"""The 45 data sets, sorted (the order of :func:`uci_names`)."""


@dataclass(frozen=True, eq=False)
class UCIDataset:
    """One data set of :func:`uci`, with its fixed splits (numpy arrays, fresh copies on every call).

    Attributes
    ----------
    name : str
        The data set's name (Fernández-Delgado et al.'s, e.g. ``"pittsburg-bridges-TYPE"``).
    x : numpy.ndarray of float64, shape (n, d)
        The features, standardized by Fernández-Delgado et al.
    y : numpy.ndarray of int64, shape (n,)
        The classes, 0 … ``n_classes`` − 1 (each present at least once).
    n_classes : int
        The number of classes C.
    train, validation : numpy.ndarray of int64, shapes (n_train,) and (n − n_train,)
        0-based row indices of the hyper-parameter selection split; together they partition the rows.
    folds : tuple of 4 (train, test) pairs of numpy.ndarray of int64, shapes (n − t,) and (t,)
        0-based row indices of the four test splits; each pair partitions the rows, and all four test parts have
        the same size t ≈ n/4. The test parts of different folds may overlap (module docstring).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    n_classes: int
    train: np.ndarray
    validation: np.ndarray
    folds: tuple

    def __repr__(self) -> str:
        n, d = self.x.shape
        return (f"UCIDataset({self.name!r}, n={n}, d={d}, n_classes={self.n_classes}, "
                f"train/validation={len(self.train)}/{len(self.validation)}, "
                f"folds={len(self.folds)}×{len(self.folds[0][0])}/{len(self.folds[0][1])})")


@dataclass(frozen=True, eq=False)
class UCIReference:
    """The reference table of :func:`uci_reference`: Fernández-Delgado et al.'s accuracies.

    Attributes
    ----------
    datasets : tuple of str, length 121
        Their data sets, in the table's (alphabetical) order; the names of :func:`uci_names` are among them.
    classifiers : tuple of str, length 179
        Their classifiers, in the table's order (e.g. ``"rf_caret"``, ``"svmRadial_caret"``).
    accuracy : numpy.ndarray of float64, shape (121, 179)
        ``accuracy[i, j]``: the test accuracy in percent (one decimal) of ``classifiers[j]`` on ``datasets[i]``;
        NaN where the table has no result (``--``).
    """

    datasets: tuple
    classifiers: tuple
    accuracy: np.ndarray

    def __iter__(self):
        return iter((self.datasets, self.classifiers, self.accuracy))

    def row(self, name: str) -> np.ndarray:
        """The 179 accuracies (percent, NaN where missing) on data set ``name``, one of :attr:`datasets`."""
        return self.accuracy[self.datasets.index(check_choice(name, "name", self.datasets))].copy()


def uci_names() -> list[str]:
    """The names of the 45 data sets that :func:`uci` loads, sorted.

    Returns
    -------
    list of str
        From ``"acute-inflammation"`` to ``"zoo"`` (10 to 452 examples each).
    """
    return list(UCI_NAMES)


def _read(key: str) -> dict:
    """The arrays of packed file ``key``, after checking its SHA-256 (:func:`ntkcore.data.packed.read_packed`)."""
    return read_packed(_ROOT, key, _SHA256)


def uci(name: str) -> UCIDataset:
    """Load one of the 45 small UCI data sets of Arora et al. (ICLR 2020), with its fixed splits.

    Parameters
    ----------
    name : str
        One of :func:`uci_names`, e.g. ``"iris"``, ``"conn-bench-sonar-mines-rocks"``.

    Returns
    -------
    UCIDataset
        Features (float64, n × d), labels (int64, 0..C−1), the train/validation indices and the four train/test
        folds (int64 indices); every array is a fresh copy.

    Raises
    ------
    ValueError
        If ``name`` is not one of the 45 names (the message lists them).
    RuntimeError
        If the packed file is missing or its SHA-256 is not the recorded one.
    """
    name = check_choice(name, "name", UCI_NAMES)
    a = _read(name)
    index = lambda v: np.array(v, dtype=np.int64)  # noqa: E731
    return UCIDataset(name=name, x=np.array(a["x"], dtype=np.float64), y=index(a["y"]),
                      n_classes=int(a["n_classes"]), train=index(a["train"]), validation=index(a["validation"]),
                      folds=tuple((index(tr), index(te)) for tr, te in zip(a["fold_train"], a["fold_test"])))


def uci_reference() -> UCIReference:
    """The accuracy table of the 179 classifiers of Fernández-Delgado et al. (JMLR 2014) on their 121 data sets.

    Returns
    -------
    UCIReference
        ``datasets`` (121 names), ``classifiers`` (179 names) and ``accuracy`` (float64, 121 × 179, percent, NaN
        where missing); it unpacks as ``datasets, classifiers, accuracy = uci_reference()``. The table's own
        min/max/mean/std columns and per-classifier mean/std rows are not kept: they follow from ``accuracy``.

    Raises
    ------
    RuntimeError
        If the packed file is missing or its SHA-256 is not the recorded one.
    """
    a = _read(_REFERENCE)
    return UCIReference(datasets=tuple(str(s) for s in a["datasets"]),
                        classifiers=tuple(str(s) for s in a["classifiers"]),
                        accuracy=np.array(a["accuracy"], dtype=np.float64))
