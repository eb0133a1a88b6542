"""The graph classification data sets shipped in ntkcore (ntkcore.data.graphs): MUTAG, PTC, PROTEINS."""
import hashlib
import importlib
import pathlib
import shutil

import numpy as np
import pytest

from ntkcore import data
graphs_module = importlib.import_module("ntkcore.data.graphs")  # the module: ``ntkcore.data.graphs`` is the loader

# (graphs, classes, tags, nodes, undirected edges, graphs per class, largest graph), counted in the source text
# files (the GIN format of Xu et al. 2019) when they were packed (benchmarks/pack_graphs.py).
COUNTS = {
    "MUTAG": (188, 2, 7, 3371, 3721, (63, 125), 28),
    "PTC": (344, 2, 19, 8792, None, (192, 152), 109),
    "PROTEINS": (1113, 2, 3, 43471, None, (663, 450), 620),
}
ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def every():
    return {name: data.graphs(name) for name in data.graph_names()}


def test_names():
    assert data.graph_names() == ["MUTAG", "PTC", "PROTEINS"] == list(COUNTS)
    assert data.graph_names() is not data.graph_names()


@pytest.mark.parametrize("bad", ["mutag", "MUTAG.npz", "NCI1", "", None, 3])
def test_unknown_name_is_a_value_error_listing_the_names(bad):
    with pytest.raises(ValueError, match=r"name=.*accepted: 'MUTAG', 'PTC', 'PROTEINS'"):
        data.graphs(bad)


@pytest.mark.parametrize("name", list(COUNTS))
def test_counts_shapes_and_dtypes(name, every):
    ds = every[name]
    n_graphs, n_classes, n_tags, n_nodes, n_edges, per_class, largest = COUNTS[name]
    assert len(ds) == n_graphs == len(ds.adjacency) == len(ds.features) == len(ds.tags)
    assert (ds.n_classes, ds.n_tags) == (n_classes, n_tags)
    assert int(ds.n_nodes.sum()) == n_nodes and int(ds.n_nodes.max()) == largest
    assert tuple(np.bincount(ds.y, minlength=n_classes)) == per_class
    assert ds.y.dtype == np.int64 and ds.y.shape == (n_graphs,)
    edges = sum(a.sum() for a in ds.adjacency) / 2
    if n_edges is not None:
        assert edges == n_edges
    for a, f, t in zip(ds.adjacency, ds.features, ds.tags):
        k = len(t)
        assert a.shape == (k, k) and a.dtype == np.float64 and f.shape == (k, n_tags) and t.dtype == np.int64
        assert np.array_equal(a, a.T) and not np.diag(a).any() and set(np.unique(a)) <= {0.0, 1.0}
        assert np.array_equal(f.argmax(axis=1), t) and np.array_equal(f.sum(axis=1), np.ones(k))
    assert len(np.unique(np.concatenate(ds.tags))) == n_tags  # every tag occurs


@pytest.mark.parametrize("name", list(COUNTS))
def test_folds_partition_and_leave_some_graphs_out(name, every):
    ds = every[name]
    n = len(ds)
    assert len(ds.folds) == 10
    for train, test in ds.folds:
        assert len(test) == n // 10 and np.array_equal(np.sort(np.r_[train, test]), np.arange(n))
    tested = np.concatenate([te for _, te in ds.folds])
    assert len(np.unique(tested)) == len(tested) == n - n % 10  # disjoint; n mod 10 graphs never tested


def test_known_values_from_the_source(every):
    ds = every["MUTAG"]
    # MUTAG.txt, graph 0: "23 2", first node "2 2 1 13", second "2 2 0 2"; label 2 is the mutagenic class 1
    assert list(ds.label_values) == [0, 2] and list(ds.tag_values) == list(range(7))
    assert len(ds.tags[0]) == 23 and ds.y[0] == 1
    assert ds.tags[0][0] == 2 and np.flatnonzero(ds.adjacency[0][0]).tolist() == [1, 13]
    assert np.flatnonzero(ds.adjacency[0][1]).tolist() == [0, 2]
    assert ds.folds[0][1][:3].tolist() == [109, 126, 182]  # MUTAG_10fold_idx/test_idx-1.txt


def test_padded_arrays(every):
    ds = every["MUTAG"]
    x, a, mask = ds.padded()
    xl, al, _ = ds.padded(self_loops=True)
    assert x.shape == (188, 28, 7) and a.shape == (188, 28, 28) and mask.shape == (188, 28) and mask.dtype == bool
    assert mask.sum() == 3371 and not x[~mask].any() and np.array_equal(mask, x.sum(-1) == 1)
    k = len(ds.tags[5])
    assert np.array_equal(a[5, :k, :k], ds.adjacency[5]) and np.array_equal(al[5, :k, :k], ds.adjacency[5] + np.eye(k))
    assert not al[5, k:].any() and np.array_equal(xl, x)


def test_arrays_are_fresh_copies():
    ds = data.graphs("MUTAG")
    ds.adjacency[0][:] = 7.0
    ds.y[:] = 0
    again = data.graphs("MUTAG")
    assert again.adjacency[0].max() == 1.0 and again.y.sum() == 125


# --- checksums ---------------------------------------------------------------------------------------------

def test_packed_files_match_their_recorded_checksums():
    assert set(graphs_module._SHA256) == set(COUNTS)
    for key, sha in graphs_module._SHA256.items():
        assert hashlib.sha256((graphs_module._ROOT / f"{key}.npz").read_bytes()).hexdigest() == sha


def test_a_corrupted_copy_is_refused(tmp_path, monkeypatch):
    for key in graphs_module._SHA256:
        shutil.copyfile(str(graphs_module._ROOT / f"{key}.npz"), tmp_path / f"{key}.npz")
    blob = bytearray((tmp_path / "MUTAG.npz").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (tmp_path / "MUTAG.npz").write_bytes(bytes(blob))
    monkeypatch.setattr(graphs_module, "_ROOT", tmp_path)
    with pytest.raises(RuntimeError, match=r"MUTAG\.npz is corrupted: its SHA-256 is [0-9a-f]{64}, expected"):
        data.graphs("MUTAG")
    assert len(data.graphs("PTC")) == 344  # the intact copies still load


def test_a_missing_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(graphs_module, "_ROOT", tmp_path)
    with pytest.raises(RuntimeError, match=r"PTC\.npz is missing; reinstall ntkcore"):
        data.graphs("PTC")


def test_module_doctest():
    import doctest
    result = doctest.testmod(graphs_module)
    assert result.attempted >= 2 and result.failed == 0
