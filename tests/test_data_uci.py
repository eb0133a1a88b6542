"""The 45 small UCI data sets and the reference table shipped in ntkcore (ntkcore.data.uci)."""
import hashlib
import importlib
import shutil

import numpy as np
import pytest

from ntkcore import data
uci_module = importlib.import_module("ntkcore.data.uci")  # the module: ``ntkcore.data.uci`` is the loader function

# (n, d, C, n_train, n_validation, fold test size) of every data set, read by hand from the sources' files
# (<name>.txt, <name>_R.dat, conxuntos.dat, conxuntos_kfold.dat).
SHAPES = {
    "acute-inflammation": (120, 6, 2, 60, 60, 30), "acute-nephritis": (120, 6, 2, 60, 60, 30),
    "arrhythmia": (452, 262, 13, 226, 226, 113), "balloons": (16, 4, 2, 8, 8, 4),
    "breast-cancer": (286, 9, 2, 143, 143, 71), "breast-cancer-wisc-prog": (198, 33, 2, 99, 99, 49),
    "breast-tissue": (106, 9, 6, 53, 53, 26), "congressional-voting": (435, 16, 2, 218, 217, 109),
    "conn-bench-sonar-mines-rocks": (208, 60, 2, 104, 104, 52), "dermatology": (366, 34, 6, 183, 183, 91),
    "echocardiogram": (131, 10, 2, 66, 65, 33), "ecoli": (336, 7, 8, 168, 168, 84),
    "fertility": (100, 9, 2, 50, 50, 25), "flags": (194, 28, 8, 97, 97, 48), "glass": (214, 9, 6, 107, 107, 53),
    "haberman-survival": (306, 3, 2, 153, 153, 76), "heart-cleveland": (303, 13, 5, 152, 151, 76),
    "heart-hungarian": (294, 12, 2, 147, 147, 73), "heart-switzerland": (123, 12, 5, 62, 61, 31),
    "heart-va": (200, 12, 5, 100, 100, 50), "hepatitis": (155, 19, 2, 78, 77, 39),
    "ionosphere": (351, 33, 2, 176, 175, 88), "iris": (150, 4, 3, 75, 75, 37), "lenses": (24, 4, 3, 12, 12, 6),
    "libras": (360, 90, 15, 180, 180, 90), "lung-cancer": (32, 56, 3, 16, 16, 8),
    "lymphography": (148, 18, 4, 74, 74, 37), "molec-biol-promoter": (106, 57, 2, 53, 53, 26),
    "parkinsons": (195, 22, 2, 98, 97, 49), "pittsburg-bridges-MATERIAL": (106, 7, 3, 53, 53, 26),
    "pittsburg-bridges-REL-L": (103, 7, 3, 52, 51, 26), "pittsburg-bridges-SPAN": (92, 7, 3, 46, 46, 23),
    "pittsburg-bridges-T-OR-D": (102, 7, 2, 51, 51, 25), "pittsburg-bridges-TYPE": (105, 7, 6, 53, 52, 26),
    "planning": (182, 12, 2, 91, 91, 45), "post-operative": (90, 8, 3, 45, 45, 22),
    "primary-tumor": (330, 17, 15, 165, 165, 82), "seeds": (210, 7, 3, 105, 105, 52),
    "statlog-heart": (270, 13, 2, 135, 135, 67), "teaching": (151, 5, 3, 76, 75, 38),
    "trains": (10, 29, 2, 5, 5, 2), "vertebral-column-2clases": (310, 6, 2, 155, 155, 77),
    "vertebral-column-3clases": (310, 6, 3, 155, 155, 77), "wine": (178, 13, 3, 89, 89, 44),
    "zoo": (101, 16, 7, 51, 50, 25),
}


@pytest.fixture(scope="module")
def every():
    return {name: data.uci(name) for name in data.uci_names()}


@pytest.fixture(scope="module")
def reference():
    return data.uci_reference()


# --- names and loading --------------------------------------------------------------------------------------

def test_names_are_the_45_sorted():
    names = data.uci_names()
    assert names == sorted(SHAPES) and len(names) == 45
    assert names is not data.uci_names()  # a fresh list: changing it changes nothing


@pytest.mark.parametrize("bad", ["Iris", "iris.npz", "fd_results", "", None, 3])
def test_unknown_name_is_a_value_error_listing_the_names(bad):
    with pytest.raises(ValueError, match=r"name=.*accepted: 'acute-inflammation', .*'zoo'"):
        data.uci(bad)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shapes_dtypes_and_labels(name, every):
    n, d, c, n_train, n_val, t = SHAPES[name]
    ds = every[name]
    assert ds.name == name and ds.n_classes == c and isinstance(ds.n_classes, int)
    assert ds.x.shape == (n, d) and ds.x.dtype == np.float64 and np.isfinite(ds.x).all()
    assert ds.y.shape == (n,) and ds.y.dtype == np.int64
    assert sorted(set(ds.y.tolist())) == list(range(c))  # labels 0..C-1, every class present
    assert ds.train.shape == (n_train,) and ds.validation.shape == (n_val,)
    assert len(ds.folds) == 4
    for tr, te in ds.folds:
        assert tr.shape == (n - t,) and te.shape == (t,)
    for idx in (ds.train, ds.validation, *(i for fold in ds.folds for i in fold)):
        assert idx.dtype == np.int64
    # standardized by Fernández-Delgado et al.: column means 0, sample standard deviations 1 (to the text's digits)
    np.testing.assert_allclose(ds.x.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.x.std(axis=0, ddof=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_splits_are_in_range_disjoint_and_cover_the_rows(name, every):
    ds = every[name]
    n = len(ds.y)
    pairs = [(ds.train, ds.validation)] + list(ds.folds)
    for a, b in pairs:
        for idx in (a, b):
            assert idx.min() >= 0 and idx.max() < n
            assert len(np.unique(idx)) == len(idx)
        assert not np.intersect1d(a, b).size
        assert np.array_equal(np.union1d(a, b), np.arange(n))


def test_the_folds_test_parts_overlap_as_in_the_source(every):
    """The four test parts are four separate draws, not one partition (documented in the module)."""
    tested = np.unique(np.concatenate([te for _, te in every["iris"].folds]))
    assert len(tested) == 105  # of 150 rows, 4 × 37 test rows


def test_known_values_from_the_source():
    ds = data.uci("iris")
    # iris_R.dat rows 1 and 150, conxuntos.dat and conxuntos_kfold.dat line starts
    np.testing.assert_array_equal(ds.x[0], [-0.897674, 1.02861, -1.33679, -1.30859])
    assert ds.y[0] == 0 and ds.y[-1] == 2
    assert ds.train[:5].tolist() == [46, 21, 13, 38, 32]
    assert ds.validation[:3].tolist() == [42, 28, 4]
    trains = data.uci("trains")
    assert trains.folds[0][0].tolist() == [4, 0, 3, 1, 5, 8, 6, 7] and trains.folds[0][1].tolist() == [2, 9]
    assert trains.folds[1][1].tolist() == [4, 9]


def test_arrays_are_fresh_copies():
    a = data.uci("balloons")
    a.x[:] = 0.0
    a.train[:] = 0
    b = data.uci("balloons")
    assert b.x.any() and len(set(b.train.tolist())) == len(b.train)


# --- checksums ---------------------------------------------------------------------------------------------

def test_packed_files_match_their_recorded_checksums():
    root = uci_module._ROOT
    assert set(uci_module._SHA256) == set(SHAPES) | {"fd_results"}
    for key, sha in uci_module._SHA256.items():
        assert hashlib.sha256((root / f"{key}.npz").read_bytes()).hexdigest() == sha


def _copy(tmp_path):
    for key in uci_module._SHA256:
        shutil.copyfile(str(uci_module._ROOT / f"{key}.npz"), tmp_path / f"{key}.npz")
    return tmp_path


def test_a_corrupted_copy_is_refused(tmp_path, monkeypatch):
    root = _copy(tmp_path)
    blob = bytearray((root / "iris.npz").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (root / "iris.npz").write_bytes(bytes(blob))
    ref = bytearray((root / "fd_results.npz").read_bytes())
    (root / "fd_results.npz").write_bytes(bytes(ref[:-10]))  # truncated
    monkeypatch.setattr(uci_module, "_ROOT", root)
    with pytest.raises(RuntimeError, match=r"iris\.npz is corrupted: its SHA-256 is [0-9a-f]{64}, expected"):
        data.uci("iris")
    with pytest.raises(RuntimeError, match=r"fd_results\.npz is corrupted"):
        data.uci_reference()
    assert data.uci("wine").x.shape == (178, 13)  # the intact copies still load


def test_a_missing_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(uci_module, "_ROOT", tmp_path)
    with pytest.raises(RuntimeError, match=r"zoo\.npz is missing; reinstall ntkcore"):
        data.uci("zoo")


# --- the reference table -----------------------------------------------------------------------------------

def test_reference_shape_and_order(reference):
    datasets, classifiers, accuracy = reference
    assert len(datasets) == 121 and len(classifiers) == 179
    assert accuracy.shape == (121, 179) and accuracy.dtype == np.float64
    assert list(datasets) == sorted(datasets) and len(set(classifiers)) == 179
    assert classifiers[:2] == ("elm_kernel_matlab", "AdaBoostM1_J48_weka")
    assert classifiers[-2:] == ("svmlight_C", "dpp_C")
    finite = accuracy[np.isfinite(accuracy)]
    assert finite.min() >= 0.0 and finite.max() <= 100.0
    assert np.isnan(accuracy).sum() == 449  # the '--' of the table


def test_reference_known_values(reference):
    """Values read by hand from the table (the row's first three entries, its last, and a '--')."""
    def at(dataset, classifier):
        return reference.accuracy[reference.datasets.index(dataset), reference.classifiers.index(classifier)]

    np.testing.assert_array_equal(reference.row("iris")[:3], [98.6, 94.6, 72.6])
    assert reference.row("iris")[-1] == 83.1
    np.testing.assert_array_equal(reference.row("trains")[:3], [87.5, 80.0, 50.0])
    np.testing.assert_array_equal(reference.row("abalone")[:3], [66.1, 60.7, 56.7])
    assert at("zoo", "elm_kernel_matlab") == 96.0
    assert np.isnan(at("abalone", "Bagging_RandomForest_weka"))
    # the table's own min and max columns (not kept) for iris: 0.7 and 99.3
    assert np.nanmin(reference.row("iris")) == 0.7 and np.nanmax(reference.row("iris")) == 99.3
    with pytest.raises(ValueError, match="name='Iris' is not known"):
        reference.row("Iris")


def test_every_data_set_is_in_the_reference(reference):
    missing = [name for name in data.uci_names() if name not in reference.datasets]
    assert missing == []
    rows = np.array([reference.datasets.index(n) for n in data.uci_names()])
    assert np.isfinite(reference.accuracy[rows]).sum(axis=1).min() >= 170  # nearly all 179 classifiers ran
