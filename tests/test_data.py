"""Offline datasets, splits, preprocessing, label coding, synthetic sets and label noise (ntkcore.data)."""
import socket
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, load_iris

from ntkcore import data
from ntkcore.data import bundled
from ntkcore.device import available_devices

DIGITS = load_digits()


def _rows(x):
    return [np.asarray(r, dtype=np.float64).tobytes() for r in x]


def _pool(classes):
    """Multiset of digit rows (scaled to [0, 1]) per original class."""
    return {c: Counter(_rows(DIGITS.data[DIGITS.target == c] / 16.0)) for c in classes}


# --- the one-liner of the chapters, splits and labels ------------------------------------------------------

def test_digits_binary_one_liner():
    x_train, y_train, x_test, y_test = data.digits(classes=(0, 1), n_train=100, n_test=60, seed=0)
    assert x_train.shape == (100, 64) and x_test.shape == (60, 64)
    assert x_train.dtype == np.float64 and y_train.dtype == np.float64
    assert Counter(y_train.tolist()) == {-1.0: 50, 1.0: 50}
    assert Counter(y_test.tolist()) == {-1.0: 30, 1.0: 30}
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0


def test_rows_come_from_the_right_class_and_train_test_are_disjoint():
    ds = data.digits(classes=(4, 9), n_train=150, n_test=150, seed=3)
    pools = _pool((4, 9))
    used = {4: Counter(), 9: Counter()}
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        for row, label in zip(_rows(x), y):
            used[4 if label == -1 else 9][row] += 1          # classes[0] = 4 is -1
    for c in (4, 9):
        # every drawn row exists in its class, and no row is used more often than the pool holds it
        assert all(pools[c][row] >= k for row, k in used[c].items()), c
        assert sum(used[c].values()) == 150


def test_seed_determines_the_draw():
    a = data.digits(classes=(0, 1), n_train=20, n_test=20, seed=5)
    b = data.digits(classes=(0, 1), n_train=20, n_test=20, seed=5)
    c = data.digits(classes=(0, 1), n_train=20, n_test=20, seed=6)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_multiclass_labels_follow_the_order_of_classes():
    ds = data.digits(classes=(3, 1, 7), n_train=101, n_test=30, seed=0)
    assert ds.y_train.dtype == np.int64 and ds.classes == (3, 1, 7) and ds.n_classes == 3
    assert Counter(ds.y_train.tolist()) == {0: 34, 1: 34, 2: 33}       # the remainder goes to the first classes
    pools = _pool((3, 1, 7))
    for row, label in zip(_rows(ds.x_train), ds.y_train):
        assert row in pools[ds.classes[label]]


def test_label_codings():
    assert data.digits(classes=(0, 1), n_train=4, n_test=2, labels="index").y_train.dtype == np.int64
    ds = data.iris(classes=("setosa", "virginica"), n_train=10, n_test=10)
    assert ds.classes == (0, 2) and ds.class_names == ("setosa", "virginica") and ds.signed
    assert set(data.iris(labels="signed", classes=(1, 2)).y_test.tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="labels='signed'"):
        data.iris(labels="signed")
    with pytest.raises(ValueError, match="labels"):
        data.iris(labels="onehot")


def test_default_split_halves_each_class():
    ds = data.iris()
    assert Counter(ds.y_train.tolist()) == {0: 25, 1: 25, 2: 25}
    assert Counter(ds.y_test.tolist()) == {0: 25, 1: 25, 2: 25}
    ds = data.iris(n_test=30)                               # the rest goes to training
    assert len(ds.y_test) == 30 and len(ds.y_train) == 120
    ds = data.iris(n_train=30)
    assert len(ds.y_train) == 30 and len(ds.y_test) == 120
    raw = load_iris()
    together = np.concatenate([ds.x_train, ds.x_test])
    assert sorted(_rows(together)) == sorted(_rows(raw.data))   # the whole set, each row once


@pytest.mark.parametrize("loader, n, d", [(data.iris, 150, 4), (data.wine, 178, 13), (data.breast_cancer, 569, 30)])
def test_uci_sets(loader, n, d):
    ds = loader(preprocess="standardize", seed=1)
    assert ds.x_train.shape[1] == d and len(ds.x_train) + len(ds.x_test) == n
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(ds.x_train.std(0), 1, atol=1e-12)


def test_bundled_sets_need_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a bundled dataset tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    bundled._raw.cache_clear()
    for name in ("digits", "iris", "wine", "breast_cancer"):
        assert len(data.load(name).y_train) > 0


# --- preprocessing --------------------------------------------------------------------------------------------

def test_preprocess_uses_training_statistics():
    raw = data.digits(classes=(0, 1, 2), n_train=90, n_test=30, seed=2)
    cen = data.digits(classes=(0, 1, 2), n_train=90, n_test=30, seed=2, preprocess="centre")
    mean = raw.x_train.mean(0)
    np.testing.assert_allclose(cen.x_train, raw.x_train - mean, atol=1e-14)
    np.testing.assert_allclose(cen.x_test, raw.x_test - mean, atol=1e-14)
    std = data.digits(classes=(0, 1, 2), n_train=90, n_test=30, seed=2, preprocess="standardize").x_train
    s = raw.x_train.std(0)
    np.testing.assert_allclose(std.std(0)[s > 0], 1, atol=1e-12)
    assert np.all(std[:, s == 0] == 0)


def test_preprocess_norms_and_order():
    unit = data.digits(classes=(0, 1), n_train=20, n_test=10, preprocess="unit_norm")
    np.testing.assert_allclose(np.linalg.norm(unit.x_test, axis=1), 1, atol=1e-14)
    dim = data.digits(classes=(0, 1), n_train=20, n_test=10, preprocess="dim_norm")
    np.testing.assert_allclose((dim.x_train**2).sum(1) / 64, 1, atol=1e-13)
    both = data.digits(classes=(0, 1), n_train=20, n_test=10, preprocess=("centre", "unit_norm"))
    raw = data.digits(classes=(0, 1), n_train=20, n_test=10)
    expected = raw.x_train - raw.x_train.mean(0)
    np.testing.assert_allclose(both.x_train, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-14)
    with pytest.raises(ValueError, match="preprocess"):
        data.digits(preprocess="whiten")


def test_unflattened_images():
    flat = data.digits(classes=(0, 1), n_train=6, n_test=4, seed=1)
    img = data.digits(classes=(0, 1), n_train=6, n_test=4, seed=1, flatten=False, preprocess="unit_norm")
    assert img.x_train.shape == (6, 1, 8, 8)
    norms = np.linalg.norm(flat.x_train, axis=1, keepdims=True)
    np.testing.assert_allclose(img.x_train.reshape(6, 64), flat.x_train / norms, atol=1e-14)


# --- tensors --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dev", available_devices())
def test_torch_output(dev):
    ds = data.digits(classes=(0, 1), n_train=10, n_test=4, device=dev)
    assert isinstance(ds.x_train, torch.Tensor) and ds.x_train.device.type == dev
    assert ds.x_train.dtype == torch.float64 and ds.y_train.dtype == torch.float64
    multi = data.digits(classes=(0, 1, 2), n_train=9, n_test=3, torch=True, dtype=torch.float32, device=dev)
    assert multi.x_test.dtype == torch.float32 and multi.y_test.dtype == torch.long
    ref = data.digits(classes=(0, 1, 2), n_train=9, n_test=3)
    np.testing.assert_array_equal(multi.y_train.cpu().numpy(), ref.y_train)
    np.testing.assert_allclose(multi.x_train.cpu().numpy(), ref.x_train, rtol=1e-6)
    y1, _ = multi.one_hot()
    assert y1.shape == (9, 3) and y1.device.type == dev


def test_one_hot():
    y = np.array([0, 2, 1, 2])
    np.testing.assert_array_equal(data.one_hot(y), np.eye(3)[y])
    c = data.one_hot(y, 4, centred=True)
    np.testing.assert_allclose(c.sum(1), 0, atol=1e-15)
    np.testing.assert_allclose(c[0], [0.75, -0.25, -0.25, -0.25])
    with pytest.raises(ValueError, match="y"):
        data.one_hot(np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="n_classes"):
        data.one_hot(y, 2)


# --- bad input ------------------------------------------------------------------------------------------------

def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="name='mnsit'.*digits.*cifar10"):
        data.load("mnsit")


@pytest.mark.parametrize("classes", [(0, 10), (0, "cat"), (1, 1), (3,), 3])
def test_bad_classes(classes):
    with pytest.raises(ValueError, match="classes"):
        data.digits(classes=classes)


def test_subset_larger_than_the_data():
    with pytest.raises(ValueError, match="n_train=400"):
        data.digits(classes=(0, 1), n_train=400, n_test=10)
    with pytest.raises(ValueError, match="n_test=1000"):
        data.digits(classes=(0, 1), n_test=1000)
    with pytest.raises(ValueError, match="n_train=300.*already go to the test set"):
        data.digits(classes=(0, 1), n_train=300, n_test=100)
    with pytest.raises(ValueError, match="n_train"):
        data.digits(n_train=0)
    with pytest.raises(ValueError, match="seed"):
        data.digits(seed=-1)


# --- the NDK paper's synthetic task ---------------------------------------------------------------------------

def test_orthogonal_synthetic_geometry():
    p, m, n0, rho = 5, 8, 20, 0.6
    ds = data.orthogonal_synthetic(p, m, overlap=rho, dim=n0, seed=1)
    assert ds.x_train.shape == (p, n0) and ds.x_test.shape == (m, n0)
    np.testing.assert_allclose(ds.x_train @ ds.x_train.T / n0, np.eye(p), atol=1e-12)   # q0 = I
    k = ds.meta["overlaps"]
    np.testing.assert_array_equal(k, np.arange(m) % p)
    np.testing.assert_allclose(ds.x_test @ ds.x_train.T / n0, rho * np.eye(p)[k], atol=1e-12)
    np.testing.assert_allclose((ds.x_test**2).sum(1) / n0, 1, atol=1e-12)
    np.testing.assert_array_equal(ds.y_test, ds.y_train[k])
    assert set(ds.y_train.tolist()) <= {-1.0, 1.0}
    same = data.orthogonal_synthetic(p, m, overlap=rho, dim=n0, seed=1)
    assert np.array_equal(same.x_test, ds.x_test)


def test_orthogonal_synthetic_labels_are_fair_coins():
    p = 200
    y = data.orthogonal_synthetic(p, 1, dim=p + 1, seed=0).y_train
    assert abs(y.mean()) < 5 / np.sqrt(p)        # mean of p fair ±1 coins: standard error 1/sqrt(p)
    assert data.orthogonal_synthetic(3).x_train.shape == (3, 6)   # default: n_test = P, dim = P + n_test


def test_orthogonal_synthetic_bad_input():
    with pytest.raises(ValueError, match="dim"):
        data.orthogonal_synthetic(4, 4, dim=7)
    with pytest.raises(ValueError, match="overlap"):
        data.orthogonal_synthetic(4, overlap=1.5)
    with pytest.raises(ValueError, match="n_train"):
        data.orthogonal_synthetic(0)


def test_two_gaussians_means():
    n, sep = 4000, 3.0
    ds = data.two_gaussians(n, 10, dim=3, separation=sep, std=0.5, seed=0)
    assert Counter(ds.y_train.tolist()) == {-1.0: n // 2, 1.0: n // 2}
    se = 0.5 / np.sqrt(n // 2)
    for s in (-1, 1):
        mean = ds.x_train[ds.y_train == s].mean(0)
        assert np.all(np.abs(mean - np.array([s * sep / 2, 0, 0])) < 5 * se)


def test_sphere():
    ds = data.sphere(3000, 50, dim=4, seed=0)
    np.testing.assert_allclose(np.linalg.norm(ds.x_train, axis=1), 1, atol=1e-14)
    np.testing.assert_array_equal(ds.y_test, np.where(ds.x_test @ ds.meta["teacher"] >= 0, 1.0, -1.0))
    assert np.all(np.abs(ds.x_train.mean(0)) < 5 / np.sqrt(4 * 3000))   # each coordinate has variance 1/dim
    custom = data.sphere(5, 5, dim=2, target=lambda x: x[:, 0] * x[:, 1])
    np.testing.assert_allclose(custom.y_train, custom.x_train[:, 0] * custom.x_train[:, 1])
    with pytest.raises(ValueError, match="target"):
        data.sphere(5, 5, target=lambda x: x)


# --- label noise ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.0, 0.2, 0.45, 0.8])
def test_symmetric_flip_rate_matches_p(p):
    n, c = 20000, 10
    y = np.arange(n) % c
    noisy, changed = data.symmetric_noise(y, p, seed=1)
    assert noisy.dtype == y.dtype
    np.testing.assert_array_equal(changed, noisy != y)
    se = np.sqrt(p * (1 - p) / n)
    assert abs(changed.mean() - p) <= 5 * se + 1e-12
    if p > 0:   # a flipped label is uniform over the other C - 1 classes
        offset = (noisy[changed] - y[changed]) % c
        counts = np.bincount(offset, minlength=c)[1:]
        k, q = changed.sum(), 1 / (c - 1)
        assert np.all(np.abs(counts - k * q) < 5 * np.sqrt(k * q * (1 - q)))


def test_symmetric_noise_on_signed_labels_flips_signs():
    y = np.where(np.arange(10000) % 2 == 0, 1.0, -1.0)
    noisy, changed = data.symmetric_noise(y, 0.3, seed=0)
    assert noisy.dtype == np.float64 and set(noisy.tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(noisy[changed], -y[changed])
    assert abs(changed.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 10000)
    again, _ = data.symmetric_noise(y, 0.3, seed=0)
    assert np.array_equal(again, noisy)
    t, tc = data.symmetric_noise(torch.as_tensor(y), 0.3, seed=0)
    assert isinstance(t, torch.Tensor) and np.array_equal(t.numpy(), noisy) and np.array_equal(tc.numpy(), changed)


def test_transition_matrix_frequencies():
    P = np.array([[0.7, 0.0, 0.1],
                  [0.2, 1.0, 0.3],
                  [0.1, 0.0, 0.6]])
    n = 30000
    y = np.arange(n) % 3
    noisy, changed = data.transition_noise(y, P, seed=2)
    np.testing.assert_array_equal(changed, noisy != y)
    for j in range(3):
        freq = np.bincount(noisy[y == j], minlength=3) / (n // 3)
        se = np.sqrt(P[:, j] * (1 - P[:, j]) / (n // 3))
        assert np.all(np.abs(freq - P[:, j]) <= 5 * se + 1e-12), (j, freq)
    np.testing.assert_allclose(data.symmetric_transition(0.3, 3).sum(0), 1)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_flip_probability(p):
    with pytest.raises(ValueError, match="p must"):
        data.symmetric_noise(np.array([0, 1, 2]), p)


@pytest.mark.parametrize("P, match", [
    (np.array([[0.5, 0.5], [0.4, 0.5]]), "column"),
    (np.array([[1.2, 0.0], [-0.2, 1.0]]), "negative"),
    (np.ones((2, 3)) / 2, "square"),
])
def test_bad_transition_matrix(P, match):
    with pytest.raises(ValueError, match=f"transition.*{match}|{match}.*transition"):
        data.transition_noise(np.array([0, 1, 1]), P)


def test_noise_label_checks():
    with pytest.raises(ValueError, match="allows only 0..1"):
        data.transition_noise(np.array([0, 2]), np.eye(2))
    with pytest.raises(ValueError, match="±1"):
        data.transition_noise(np.array([-1.0, 1.0]), np.eye(3))


# --- the list of datasets -------------------------------------------------------------------------------------

def test_available_lists_every_dataset(tmp_path):
    rows = {r.name: r for r in data.available(cache_dir=tmp_path)}
    assert set(rows) == {"digits", "iris", "wine", "breast_cancer", "orthogonal_synthetic", "two_gaussians",
                         "sphere", "mnist", "fashion_mnist", "cifar10"}
    assert rows["digits"].source == "bundled" and rows["digits"].cached
    assert rows["mnist"].source == "download" and not rows["mnist"].cached
    assert all(r.description for r in rows.values())
    ds = data.load("orthogonal_synthetic", n_train=3, overlap=0.2)
    assert ds.name == "orthogonal_synthetic"


# --- sizes against the data available ------------------------------------------------------------------------

def test_split_sizes_are_validated_against_the_data():
    """A split that takes a whole class used to leave an empty (or class-less) test set and crash in preprocess."""
    with pytest.raises(ValueError, match="n_train=150 takes all 50 points of class 'setosa', which leaves none "
                                         "for the test set .* or pass n_test=0"):
        data.iris(n_train=150)
    with pytest.raises(ValueError, match="n_train=356 takes all 178 points of class '0'"):
        data.digits(classes=(0, 1), n_train=356)  # would leave a test set of class 1 only
    with pytest.raises(ValueError, match="n_test=356 takes all 178 points of class '0', which leaves none for the "
                                         "training set"):
        data.digits(classes=(0, 1), n_test=356)
    with pytest.raises(ValueError, match="n_test must be >= 0"):
        data.digits(classes=(0, 1), n_train=10, n_test=-1)


def test_an_empty_test_set_when_asked_for():
    ds = data.iris(n_train=150, n_test=0, preprocess=("standardize", "unit_norm"))
    assert ds.x_train.shape == (150, 4) and ds.x_test.shape == (0, 4) and ds.y_test.shape == (0,)
    assert ds.to_torch().x_test.shape == (0, 4)
    assert data.digits(classes=(0, 1), n_train=10, n_test=0, flatten=False).x_test.shape == (0, 1, 8, 8)
    for ds in (data.two_gaussians(n_train=4, n_test=0), data.sphere(n_train=4, n_test=0, target=lambda x: x[:, 0]),
               data.orthogonal_synthetic(n_train=3, n_test=0)):
        assert ds.x_test.shape[0] == 0 and ds.y_test.shape == (0,) and ds.x_train.shape[0] > 0


def test_preprocess_checks_its_arrays():
    with pytest.raises(ValueError, match="x_train must have shape \\(n, ...\\) with n >= 1"):
        data.preprocess(np.ones((0, 3)), np.ones((2, 3)), "centre")
    with pytest.raises(ValueError, match="x_test must have the per-example shape of x_train"):
        data.preprocess(np.ones((2, 3)), np.ones((2, 4)), "centre")
    with pytest.raises(ValueError, match="x_train must be an array of real numbers"):
        data.preprocess([["1", "2"]], np.ones((1, 2)))
    a, b = data.preprocess(np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 1.0]]), np.ones((0, 2)), ("centre", "dim_norm"))
    assert b.shape == (0, 2) and np.allclose((a * a).sum(1), 2)


def test_preprocess_steps_that_are_not_names_fail_clearly():
    # preprocess=0 used to fail with TypeError ("'int' object is not iterable"), and the message for an unknown
    # step named neither steps= nor preprocess=.
    x = np.ones((3, 2))
    for bad in (0, (0,), ("centre", "nope"), np.array([0, 1])):
        with pytest.raises(ValueError, match=r"preprocess steps \(steps=, or preprocess= of a loader\)"):
            data.preprocess(x, x, bad)
    with pytest.raises(ValueError, match="preprocess= of a loader"):
        data.iris(preprocess=0)


@pytest.mark.parametrize("call", [
    lambda y: data.one_hot(y),
    lambda y: data.symmetric_noise(y, 0.2),
    lambda y: data.transition_noise(y, data.symmetric_transition(0.2, 2)),
])
@pytest.mark.parametrize("label", [1e308, 2.0**63, np.uint64(2**64 - 1)])
def test_labels_beyond_int64_are_errors_without_warnings(call, label):
    """A label that is no int64 class (1e308, 2**63) is a ValueError naming y, not a cast that warns and wraps."""
    y = np.array([0, label, 1], dtype=np.uint64 if isinstance(label, np.uint64) else np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"\by\b"):
            call(y)


def test_class_counts_beyond_memory_are_errors():
    """n_classes whose matrices cannot fit in memory is a ValueError naming it, before anything is allocated."""
    with pytest.raises(ValueError, match="n_classes"):
        data.symmetric_transition(0.2, 10**7)
    with pytest.raises(ValueError, match="n_classes"):
        data.one_hot(np.array([0, 2, 1]), n_classes=10**12)
    with pytest.raises(ValueError, match="n_classes"):
        data.symmetric_noise(np.array([0, 2, 1]), 0.2, n_classes=10**8)
    out = data.one_hot(np.array([0, 2, 1]), n_classes=10**5)  # fine: no C×C identity is built any more
    assert out.shape == (3, 10**5) and out.sum() == 3 and out[1, 2] == 1


def test_sizes_beyond_memory_are_errors():
    for call in (lambda: data.sphere(n_train=2**62, dim=3), lambda: data.two_gaussians(n_train=10, dim=2**60),
                 lambda: data.orthogonal_synthetic(n_train=10**7)):
        with pytest.raises(ValueError, match="n_train|dim"):
            call()


def test_two_gaussians_that_overflow_are_errors():
    with pytest.raises(ValueError, match="std"):
        data.two_gaussians(n_train=4, n_test=2, std=1.7e308)


@pytest.mark.parametrize("steps", [("centre",), ("standardize",), ("unit_norm",), ("dim_norm",)])
@pytest.mark.parametrize("c", [1e-250, 1e155, 1e300])
def test_preprocess_is_exact_over_the_float64_range(steps, c):
    """Statistics and norms are computed in units of the data's largest magnitude: x·c gives the result for x
    (times c for centring), where squares used to overflow (c = 1e155) or underflow (c = 1e-250)."""
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((6, 3)), rng.standard_normal((2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, b = data.preprocess(x * c, xt * c, steps)
    ra, rb = data.preprocess(x, xt, steps)
    k = c if steps == ("centre",) else 1.0
    np.testing.assert_allclose(a, ra * k, rtol=1e-13, atol=1e-13 * k)
    np.testing.assert_allclose(b, rb * k, rtol=1e-13, atol=1e-13 * k)


def test_preprocess_results_beyond_float64_are_errors():
    x = np.array([[1e308, 0.0], [-1e308, 1.0]])
    np.testing.assert_array_equal(data.preprocess(x, x[:0], ("centre",))[0], [[1e308, -0.5], [-1e308, 0.5]])
    with pytest.raises(ValueError, match="x_test"):  # x_test far beyond the scale of x_train
        data.preprocess(np.array([[1.0, 0.0], [2.0, 1.0]]), np.array([[1e308, 0.0]]), ("standardize",))
