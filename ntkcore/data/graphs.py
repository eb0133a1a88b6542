"""Three graph classification data sets of the TU Dortmund collection, in the text format and with the 10-fold
indices that the GIN and GNTK papers use: offline, shipped inside the package.

- :func:`graphs`: one data set by name (``"MUTAG"``, ``"PTC"``, ``"PROTEINS"``), as a :class:`GraphDataset`:
  per graph its adjacency matrix and one-hot node features, the labels, and the ten test folds of the source;
- :func:`graph_names`: the three names.

>>> from ntkcore import data
>>> ds = data.graphs("MUTAG")
>>> len(ds), ds.n_classes, ds.n_tags, ds.adjacency[0].shape, ds.features[0].shape
(188, 2, 7, (23, 23), (23, 7))

Sources
-------
The files are those of M. Zhang, Z. Cui, M. Neumann and Y. Chen, "An end-to-end deep learning architecture for
graph classification", AAAI 2018 (repository ``muhanzhang/pytorch_DGCNN``, commit ``50f50413``, MIT licence), the
format that the GIN code (K. Xu, W. Hu, J. Leskovec and S. Jegelka, "How powerful are graph neural networks?",
ICLR 2019) and the GNTK code (S. S. Du, K. Hou, B. Póczos, R. Salakhutdinov, R. Wang and K. Xu, "Graph neural
tangent kernel: fusing graph neural networks with graph kernels", NeurIPS 2019) read. The collection:
C. Morris, N. M. Kriege, F. Bause, K. Kersting, P. Mutzel and M. Neumann, "TUDataset: a collection of benchmark
datasets for learning with graphs", ICML 2020 GRL+ workshop. Cite each data set's source:

- MUTAG: A. K. Debnath, R. L. Lopez de Compadre, G. Debnath, A. J. Shusterman and C. Hansch, J. Med. Chem.
  34(2):786–797, 1991. 188 nitroaromatic compounds, 7 atom types as node tags; class 1 (the file's label 2, 125
  graphs) is mutagenic on *Salmonella typhimurium*, class 0 (63 graphs) is not.
- PTC (PTC_MR): C. Helma, R. D. King, S. Kramer and A. Srinivasan, Bioinformatics 17(1):107–108, 2001. 344
  compounds, 19 atom types, carcinogenicity in male rats.
- PROTEINS: K. M. Borgwardt, C. S. Ong, S. Schönauer, S. V. N. Vishwanathan, A. J. Smola and H.-P. Kriegel,
  Bioinformatics 21(Suppl. 1):i47–i56, 2005; P. D. Dobson and A. J. Doig, J. Mol. Biol. 330(4):771–783, 2003.
  1113 proteins, secondary-structure elements as nodes (3 tags), enzyme or not.

What is loaded
--------------
Nodes keep the file's order; the adjacency has no self-loops (add the identity for the GNTK's ``A + I``); labels
and tags are indices into the sorted distinct values of the file (``label_values``, ``tag_values``). ``folds`` are
the source's ten (train, test) pairs; each test part has ⌊G/10⌋ graphs and the parts are disjoint, so G mod 10
graphs (8 of MUTAG) are in no test part. For an unbiased 10-fold protocol draw a stratified split instead (e.g.
scikit-learn's ``StratifiedKFold`` with a seed).

Integrity
---------
Each data set is one compressed ``.npz`` in ``ntkcore/data/graphs_data/`` (about 0.3 MB for the three), whose
SHA-256 is checked against :data:`_SHA256` before it is read; a mismatch or a missing file raises a RuntimeError
naming the file. ``benchmarks/pack_graphs.py`` (in the project's repository, run by hand) made the files from the
sources above; its docstring states every step, and ``--check`` confirms that the shipped bytes are what it makes.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

from .._checks import check_choice
from .packed import read_packed

_ROOT = resources.files(__package__) / "graphs_data"
"""Where the packed files live: ``ntkcore/data/graphs_data/`` of the installed package."""

_SHA256 = {
    "MUTAG": "7eca0ec68d4c0373e85be4a3be0ccc74efdc3cd2c780390307261ce8f7285006",
    "PTC": "c459d9c89b197197dac426f21e194c3dd284d9532928d290bad3820fdf9d7541",
    "PROTEINS": "f217d02713d63e7309be7846063d740f2ab434cbe73c8a77047bfc52cd56286c",
}
"""SHA-256 of each packed file, by data set name."""

GRAPH_NAMES = ("MUTAG", "PTC", "PROTEINS")
"""The data sets of :func:`graphs`, smallest first."""


@dataclass(frozen=True, eq=False)
class GraphDataset:
    """One data set of :func:`graphs` (numpy arrays, fresh copies on every call).

    Attributes
    ----------
    name : str
        ``"MUTAG"``, ``"PTC"`` or ``"PROTEINS"``.
    adjacency : list of numpy.ndarray of float64, shapes (N_i, N_i)
        Per graph, the symmetric 0/1 adjacency matrix, zero diagonal.
    tags : list of numpy.ndarray of int64, shapes (N_i,)
        Per graph, each node's tag, 0 … ``n_tags`` − 1.
    features : list of numpy.ndarray of float64, shapes (N_i, n_tags)
        Per graph, the one-hot encoding of ``tags``.
    y : numpy.ndarray of int64, shape (G,)
        The classes, 0 … ``n_classes`` − 1.
    n_classes, n_tags : int
    label_values, tag_values : numpy.ndarray of int64
        The labels and tags as the source file writes them (class c is ``label_values[c]``).
    folds : tuple of 10 (train, test) pairs of numpy.ndarray of int64
        The source's 10-fold indices (module docstring: G mod 10 graphs are in no test part).
    """

    name: str
    adjacency: list
    tags: list
    features: list
    y: np.ndarray
    n_classes: int
    n_tags: int
    label_values: np.ndarray
    tag_values: np.ndarray
    folds: tuple

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_nodes(self) -> np.ndarray:
        """The node count of each graph, int64 (G,)."""
        return np.array([len(t) for t in self.tags], dtype=np.int64)

    def padded(self, self_loops: bool = False):
        """The graphs as equal-sized arrays, padded with isolated nodes: ``(x, a, mask)`` with node features
        ``(G, N, n_tags)``, adjacency ``(G, N, N)`` (plus the identity on the real nodes if ``self_loops``) and the
        boolean mask ``(G, N)`` of real nodes, N the largest node count; padded nodes have zero features."""
        n = int(self.n_nodes.max())
        x = np.zeros((len(self), n, self.n_tags))
        a = np.zeros((len(self), n, n))
        mask = np.zeros((len(self), n), dtype=bool)
        for g, (f, adj) in enumerate(zip(self.features, self.adjacency)):
            k = len(f)
            x[g, :k], a[g, :k, :k], mask[g, :k] = f, adj + (np.eye(k) if self_loops else 0.0), True
        return x, a, mask

    def __repr__(self) -> str:
        return (f"GraphDataset({self.name!r}, graphs={len(self)}, nodes={int(self.n_nodes.sum())}, "
                f"n_classes={self.n_classes}, n_tags={self.n_tags})")


def graph_names() -> list[str]:
    """The names of the data sets that :func:`graphs` loads: ``["MUTAG", "PTC", "PROTEINS"]``."""
    return list(GRAPH_NAMES)


def _read(key: str) -> dict:
    """The arrays of packed file ``key``, after checking its SHA-256 (:func:`ntkcore.data.packed.read_packed`)."""
    return read_packed(_ROOT, key, _SHA256)


def graphs(name: str) -> GraphDataset:
    """Load a graph classification data set: MUTAG, PTC (PTC_MR) or PROTEINS.

    Parameters
    ----------
    name : str
        One of :func:`graph_names`.

    Returns
    -------
    GraphDataset
        Per graph its adjacency (float64 0/1, no self-loops), node tags and one-hot node features; the labels
        (int64, 0..C−1); the source's ten folds.

    Raises
    ------
    ValueError
        If ``name`` is not one of the three names (the message lists them).
    RuntimeError
        If the packed file is missing or its SHA-256 is not the recorded one.
    """
    name = check_choice(name, "name", GRAPH_NAMES)
    a = _read(name)
    n_nodes = a["n_nodes"].astype(np.int64)
    n_tags = len(a["tag_values"])
    node_starts = np.r_[0, np.cumsum(n_nodes)]
    edge_starts = np.r_[0, np.cumsum(a["edge_counts"].astype(np.int64))]
    adjacency, tags, features = [], [], []
    for g, n in enumerate(n_nodes):
        adj = np.zeros((n, n))
        e = a["edges"][edge_starts[g]:edge_starts[g + 1]]
        adj[e[:, 0], e[:, 1]] = 1.0
        t = a["tags"][node_starts[g]:node_starts[g + 1]].astype(np.int64)
        adjacency.append(adj)
        tags.append(t)
        features.append(np.eye(n_tags)[t])
    everything = np.arange(len(n_nodes))
    folds = tuple((np.setdiff1d(everything, test), test.astype(np.int64)) for test in a["fold_test"])
    return GraphDataset(name=name, adjacency=adjacency, tags=tags, features=features,
                        y=a["labels"].astype(np.int64), n_classes=len(a["label_values"]), n_tags=n_tags,
                        label_values=a["label_values"].astype(np.int64), tag_values=a["tag_values"].astype(np.int64),
                        folds=folds)
