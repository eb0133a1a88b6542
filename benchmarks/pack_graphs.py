"""Pack the graph classification data sets MUTAG, PTC and PROTEINS into ``ntkcore/data/graphs_data/``.

Run by hand only, from the repository root, with the source files in a folder ``SOURCE``::

    python benchmarks/pack_graphs.py SOURCE            # writes ntkcore/data/graphs_data/*.npz, prints the checksums
    python benchmarks/pack_graphs.py SOURCE --check    # writes nothing; says whether the packed files match

Neither the tests nor the build need this script or ``SOURCE``: the packed files ship in the package, and their
SHA-256 checksums are written into :mod:`ntkcore.data.graphs` (``_SHA256``), which verifies them on every load.

Sources
-------
``SOURCE`` holds, for each ``NAME`` in MUTAG, PTC, PROTEINS, the file ``NAME.txt`` and the folder
``NAME_10fold_idx/`` (``train_idx-k.txt``, ``test_idx-k.txt``, k = 1 … 10), byte-exact copies of
``data/NAME/NAME.txt`` and ``data/NAME/10fold_idx/`` of the repository ``muhanzhang/pytorch_DGCNN`` (commit
``50f504131ca66382f3f078ae98e59aa3ae35b795``; M. Zhang, Z. Cui, M. Neumann and Y. Chen, "An end-to-end deep learning
architecture for graph classification", AAAI 2018), the text format that the GIN code (K. Xu, W. Hu, J. Leskovec and
S. Jegelka, ICLR 2019) and the GNTK code (S. S. Du et al., NeurIPS 2019) read. The graphs are those of the TU
Dortmund collection (C. Morris et al., "TUDataset", ICML 2020 GRL+ workshop): MUTAG (A. K. Debnath et al.,
J. Med. Chem. 34(2):786–797, 1991), PTC_MR (C. Helma et al., Bioinformatics 17(1):107–108, 2001), PROTEINS
(K. M. Borgwardt et al., Bioinformatics 21(Suppl. 1):i47–i56, 2005; P. D. Dobson and A. J. Doig, J. Mol. Biol.
330(4):771–783, 2003).

The text format
---------------
Line 1: the number of graphs G. Then per graph a line ``n l`` (its number of nodes and its label) followed by n
lines ``t m j1 … jm``: the node's tag, its number of neighbours, and the neighbours' 0-based indices within the
graph. (The format allows further numbers after the neighbours, continuous node attributes, which the GIN and GNTK
code would ignore; these three files have none, and any extra number is ignored here too.)

What each packed file holds
---------------------------
``NAME.npz``, all integers, every graph in file order:

- ``n_nodes`` (int32, G): the node counts n.
- ``tags`` (int16, Σn): each node's tag, as an index 0 … T−1 into ``tag_values`` (the sorted distinct tags of the
  file), graphs concatenated in order.
- ``edges`` (int32, E × 2): every neighbour entry ``(u, j)`` of the file as a pair of node indices *within* the
  graph, graphs concatenated in order, with ``edge_counts`` (int32, G) edges per graph. Each undirected edge is
  listed in both directions, as in the file; the script checks this (the adjacency is symmetric), and that there
  are no self-loops and no repeated entries.
- ``labels`` (int8, G): each graph's label as an index 0 … C−1 into ``label_values`` (the sorted distinct labels
  of the file: MUTAG's labels 0 and 2 become 0 and 1, so the mutagenic class 2 is class 1).
- ``label_values`` (int16, C), ``tag_values`` (int16, T): the labels and tags of the file.
- ``fold_test`` (int16, 10 × ⌊G/10⌋): the ten ``test_idx-k.txt`` (0-based graph indices, order kept). The script
  checks that ``train_idx-k.txt`` is exactly the complement of ``test_idx-k.txt``, so the train parts are not
  stored, and that the ten test parts are disjoint (so G mod 10 graphs are in none of them).

Every check listed here fails the script loudly rather than packing a surprise, as do a node count or a graph count
that does not match the lines, a neighbour index out of range, and a neighbour count that disagrees with its list.

Byte-reproducible output: the ``.npz`` archives are written with a fixed time stamp and a fixed member order, and
deflated at level 9, so the same sources and the same zlib give the same bytes and the same SHA-256.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
from _packing import npz_bytes, write_or_check

OUT = pathlib.Path(__file__).resolve().parent.parent / "ntkcore" / "data" / "graphs_data"
NAMES = ("MUTAG", "PTC", "PROTEINS")
N_FOLDS = 10


def _fail(what: str) -> None:
    raise SystemExit(f"pack_graphs: {what}")


def _graphs(path: pathlib.Path):
    """(node counts, raw tags, edges within graphs, edge counts, raw labels) of one text file."""
    lines = path.read_text().split("\n")
    pos = 0

    def take():
        nonlocal pos
        while pos < len(lines) and not lines[pos].strip():
            pos += 1
        if pos == len(lines):
            _fail(f"{path}: the file ends early")
        pos += 1
        return [int(v) for v in lines[pos - 1].split()]

    (n_graphs,) = take()
    n_nodes, tags, edges, edge_counts, labels = [], [], [], [], []
    for g in range(n_graphs):
        n, label = take()
        pairs = []
        for u in range(n):
            fields = take()
            t, m = fields[0], fields[1]
            if len(fields) < 2 + m:
                _fail(f"{path}: graph {g} node {u}: {m} neighbours announced, {len(fields) - 2} listed")
            nbrs = fields[2:2 + m]
            if any(not 0 <= j < n for j in nbrs):
                _fail(f"{path}: graph {g} node {u}: a neighbour index outside 0..{n - 1}")
            if u in nbrs:
                _fail(f"{path}: graph {g} node {u}: a self-loop")
            if len(set(nbrs)) != m:
                _fail(f"{path}: graph {g} node {u}: a repeated neighbour")
            tags.append(t)
            pairs += [(u, j) for j in nbrs]
        if set(pairs) != {(j, u) for u, j in pairs}:
            _fail(f"{path}: graph {g}: an edge listed in one direction only")
        n_nodes.append(n)
        labels.append(label)
        edges += pairs
        edge_counts.append(len(pairs))
    if any(line.strip() for line in lines[pos:]):
        _fail(f"{path}: more lines than the {n_graphs} graphs announced")
    return n_nodes, tags, edges, edge_counts, labels


def _index_file(path: pathlib.Path, n_graphs: int) -> np.ndarray:
    idx = np.array([int(v) for v in path.read_text().split()], dtype=np.int64)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n_graphs or np.unique(idx).size != idx.size:
        _fail(f"{path}: indices empty, out of 0..{n_graphs - 1} or repeated")
    return idx


def pack_dataset(source: pathlib.Path, name: str) -> dict:
    n_nodes, tags, edges, edge_counts, labels = _graphs(source / f"{name}.txt")
    tag_values, tag_index = np.unique(np.array(tags), return_inverse=True)
    label_values, label_index = np.unique(np.array(labels), return_inverse=True)
    n_graphs = len(n_nodes)
    folds = []
    for k in range(1, N_FOLDS + 1):
        test = _index_file(source / f"{name}_10fold_idx" / f"test_idx-{k}.txt", n_graphs)
        train = _index_file(source / f"{name}_10fold_idx" / f"train_idx-{k}.txt", n_graphs)
        if np.intersect1d(train, test).size or train.size + test.size != n_graphs:
            _fail(f"{name} fold {k}: train and test do not partition the graphs")
        folds.append(test)
    if len({f.size for f in folds}) != 1:
        _fail(f"{name}: test folds of different sizes")
    if np.unique(np.concatenate(folds)).size != sum(f.size for f in folds):
        _fail(f"{name}: the test folds overlap")
    return {
        "n_nodes": np.array(n_nodes, dtype=np.int32),
        "tags": tag_index.astype(np.int16),
        "edges": np.array(edges, dtype=np.int32).reshape(-1, 2),
        "edge_counts": np.array(edge_counts, dtype=np.int32),
        "labels": label_index.astype(np.int8),
        "label_values": label_values.astype(np.int16),
        "tag_values": tag_values.astype(np.int16),
        "fold_test": np.stack(folds).astype(np.int16),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=pathlib.Path, help="folder with NAME.txt and NAME_10fold_idx/")
    parser.add_argument("--check", action="store_true", help="compare with the packed files, write nothing")
    args = parser.parse_args(argv)
    packed = {name: npz_bytes(pack_dataset(args.source, name)) for name in NAMES}
    return write_or_check(packed, OUT, args.check, f"{len(packed)} data sets")


if __name__ == "__main__":
    sys.exit(main())
