"""ntkcore.selection: the hyper-parameter protocol of Arora et al. (ICLR 2020, Section 5) and its classifiers.

What is checked, and why:

- :func:`select_and_test` on a hand-made data set and a score function whose values are a table, so every number
  of the result is known: the first of tied validation maxima wins (Arora et al.'s strict ``>``), ``validation``
  holds every candidate's score in order, ``folds``/``test`` are the chosen candidate's, and ``score`` is called
  exactly once per candidate on the validation split and on the folds for the chosen candidate only (the protocol
  never peeks at the folds to choose);
- bad input is a ValueError naming the argument, at the boundary (the policy of :mod:`ntkcore._checks`);
- :func:`svm_accuracy` is scikit-learn's SVM: a separable problem is classified perfectly, each test row's
  prediction equals that of ``SVC(kernel="linear")`` on the raw features, and scaling the kernel by ``a`` and ``C``
  by ``1/a`` changes nothing (the documented scale equivalence; powers of two, so libsvm's arithmetic is exact);
- :func:`svm_selection` enumerates the pairs (key, C) in the documented order, and reproduces the module's doctest
  on iris;
- :func:`mlp_accuracy` is deterministic given its seed and learns a well-separated problem in both
  parameterizations.
"""
from __future__ import annotations

import doctest
import math
from typing import NamedTuple

import numpy as np
import pytest

import ntkcore.selection
from ntkcore import data
from ntkcore.selection import (Selection, mlp_accuracy, select_and_test, svm_accuracy, svm_fold_accuracies,
                               svm_selection)


class FakeData(NamedTuple):
    train: np.ndarray
    validation: np.ndarray
    folds: tuple


# Ten rows; the validation split and four folds, each fold's test part distinct so that it keys the score table.
TRAIN, VALIDATION = np.arange(0, 5), np.arange(5, 10)
FOLDS = tuple((np.setdiff1d(np.arange(10), te), te) for te in (np.array([0, 1]), np.array([2, 3]),
                                                                 np.array([4, 5]), np.array([6, 7])))
FAKE = FakeData(TRAIN, VALIDATION, FOLDS)
V, F1, F2, F3, F4 = (tuple(VALIDATION),) + tuple(tuple(te) for _, te in FOLDS)

# score(candidate, train, test), keyed by (candidate, tuple(test)). Validation: "a" 0.5, "b" 0.75, "c" 0.75 (tied
# with "b": the first, "b", wins), "d" 0.25. Folds of "b": 0.25, 0.5, 0.5, 1.0, mean 0.5625 (median 0.5). The folds
# of the other candidates are 1.0 everywhere: choosing by them, or scoring them, would show.
TABLE = {("a", V): 0.5, ("b", V): 0.75, ("c", V): 0.75, ("d", V): 0.25,
         ("b", F1): 0.25, ("b", F2): 0.5, ("b", F3): 0.5, ("b", F4): 1.0}
for _c in "acd":
    for _f in (F1, F2, F3, F4):
        TABLE[_c, _f] = 1.0


class Recorder:
    """A score function reading TABLE, recording each call as (candidate, train, test) tuples."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, candidate, train, test):
        self.calls.append((candidate, tuple(train), tuple(test)))
        return self.table[candidate, tuple(test)]


# ---------------------------------------------------------------------------------------------------------------
# select_and_test
# ---------------------------------------------------------------------------------------------------------------

def test_first_of_tied_maxima_and_the_chosen_folds():
    score = Recorder(TABLE)
    s = select_and_test(score, ["a", "b", "c", "d"], FAKE)
    assert isinstance(s, Selection)
    assert s.choice == "b"
    assert s.validation.dtype == np.float64 and s.folds.dtype == np.float64
    np.testing.assert_array_equal(s.validation, [0.5, 0.75, 0.75, 0.25])
    np.testing.assert_array_equal(s.folds, [0.25, 0.5, 0.5, 1.0])
    assert s.test == 0.5625 and isinstance(s.test, float)


def test_tie_order_follows_the_candidates():
    """With "c" before "b" the tie goes to "c"; a strictly better later candidate replaces an earlier one."""
    assert select_and_test(Recorder(TABLE), ["c", "b", "a"], FAKE).choice == "c"
    assert select_and_test(Recorder(TABLE), ["d", "a", "c"], FAKE).choice == "c"
    only = select_and_test(Recorder(TABLE), ["d"], FAKE)
    assert only.choice == "d" and only.test == 1.0
    np.testing.assert_array_equal(only.validation, [0.25])


def test_calls_validation_once_per_candidate_and_folds_for_the_choice_only():
    score = Recorder(TABLE)
    select_and_test(score, ("a", "b", "c", "d"), FAKE)
    t = tuple(TRAIN)
    expected = [("a", t, V), ("b", t, V), ("c", t, V), ("d", t, V)] + [("b", tuple(tr), tuple(te)) for tr, te in FOLDS]
    assert score.calls == expected


def test_select_and_test_bad_input():
    with pytest.raises(ValueError, match="^candidates must"):
        select_and_test(Recorder(TABLE), [], FAKE)
    with pytest.raises(ValueError, match="^score must"):
        select_and_test("not a function", ["a"], FAKE)
    with pytest.raises(ValueError, match="^dataset must"):
        select_and_test(Recorder(TABLE), ["a"], object())
    with pytest.raises(ValueError, match="^dataset must"):
        select_and_test(Recorder(TABLE), ["a"], np.arange(10))
    two_folds = FAKE._replace(folds=FAKE.folds[:2])
    with pytest.raises(ValueError, match="^dataset.folds must hold four"):
        select_and_test(Recorder(TABLE), ["a"], two_folds)
    not_pairs = FAKE._replace(folds=[np.arange(3)] * 4)
    with pytest.raises(ValueError, match="^dataset.folds must hold four"):
        select_and_test(Recorder(TABLE), ["a"], not_pairs)
    for bad in (1.5, -0.25, math.nan, math.inf, "0.5", None):
        with pytest.raises(ValueError, match=r"^score\('a', \.\.\.\) must"):
            select_and_test(lambda c, tr, te, v=bad: v, ["a"], FAKE)
    # a bad score on a fold (after the choice) is caught too
    with pytest.raises(ValueError, match=r"score\('b', \.\.\.\).*<= 1"):
        select_and_test(Recorder({**TABLE, ("b", F3): 1.5}), ["a", "b"], FAKE)


# ---------------------------------------------------------------------------------------------------------------
# svm_accuracy
# ---------------------------------------------------------------------------------------------------------------

def _clusters():
    """Two clusters of six points in 2-d, at (±3, ±3) ± 0.5: linearly separable with a wide margin."""
    offsets = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [0.0, -0.5], [0.3, 0.3]])
    x = np.concatenate([offsets + 3.0, offsets - 3.0])
    y = np.repeat([0, 1], 6).astype(np.int64)
    return x, y


def _noisy(seed=0, n=80):
    """A non-separable 2-class problem in 3-d: the class is the sign of x₀ plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = (x[:, 0] + 0.8 * rng.standard_normal(n) > 0).astype(np.int64)
    return x, y


def test_svm_separable_is_perfect():
    x, y = _clusters()
    train, test = np.array([0, 1, 2, 6, 7, 8]), np.array([3, 4, 5, 9, 10, 11])
    for C in (0.01, 1.0, 100.0):
        assert svm_accuracy(x @ x.T, y, train, test, C) == 1.0
    # swapping the labels of the test rows makes every prediction wrong
    wrong = y.copy()
    wrong[test] = 1 - wrong[test]
    assert svm_accuracy(x @ x.T, wrong, train, test, 1.0) == 0.0


def test_svm_matches_sklearn_linear_svc():
    """Row by row: a one-row test set scores 1 when that row is predicted right, so each prediction is compared."""
    from sklearn.svm import SVC

    x, y = _noisy()
    train, test = np.arange(50), np.arange(50, 80)
    K = x @ x.T
    for C in (0.1, 1.0, 3.0):
        predicted = SVC(kernel="linear", C=C).fit(x[train], y[train]).predict(x[test])
        right = predicted == y[test]
        assert 0 < right.mean() < 1                       # the problem is not separable: both outcomes occur
        assert svm_accuracy(K, y, train, test, C) == right.mean()
        per_row = [svm_accuracy(K, y, train, np.array([i]), C) for i in test]
        np.testing.assert_array_equal(per_row, right.astype(float))


def test_svm_scale_equivalence():
    x, y = _noisy(seed=1)
    train, test = np.arange(50), np.arange(50, 80)
    K = x @ x.T
    for C in (0.1, 1.0, 3.0):
        ref = svm_accuracy(K, y, train, test, C)
        for a in (8.0, 0.25):
            assert svm_accuracy(a * K, y, train, test, C / a) == ref


def test_svm_accuracy_bad_input():
    x, y = _clusters()
    K = x @ x.T
    train, test = np.array([0, 1, 6, 7]), np.array([2, 8])
    with pytest.raises(ValueError, match=r"^kernel must be a square \(n, n\)"):
        svm_accuracy(K[:, :5], y, train, test, 1.0)
    asym = K.copy()
    asym[0, 1] += 1.0
    with pytest.raises(ValueError, match="^kernel must be symmetric"):
        svm_accuracy(asym, y, train, test, 1.0)
    with pytest.raises(ValueError, match="^y must"):
        svm_accuracy(K, y[:-1], train, test, 1.0)
    with pytest.raises(ValueError, match="^y must"):
        svm_accuracy(K, y.astype(float), train, test, 1.0)
    for name, bad in (("train", np.array([0, 12])), ("train", np.array([-1, 0])), ("train", np.array([], int)),
                      ("train", np.array([0.0, 6.0])), ("test", np.array([12])), ("test", np.array([], int))):
        rows = {"train": train, "test": test, name: bad}
        with pytest.raises(ValueError, match=f"^{name} must"):
            svm_accuracy(K, y, rows["train"], rows["test"], 1.0)
    for C in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="^C must"):
            svm_accuracy(K, y, train, test, C)
    with pytest.raises(ValueError, match="single class"):
        svm_accuracy(K, y, np.array([0, 1, 2]), test, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# svm_selection
# ---------------------------------------------------------------------------------------------------------------

def test_svm_selection_candidates_in_order():
    """Iris, a linear and a Gaussian kernel, three penalties. Validation scores (of 75 rows), kernels outer and C
    inner: linear 68, 74, 72; rbf 72, 72, 70 (C outer would read 68, 72, 74, 72, 72, 70)."""
    ds = data.uci("iris")
    sq = ((ds.x[:, None] - ds.x[None]) ** 2).sum(-1)
    kernels = {"linear": ds.x @ ds.x.T, "rbf": np.exp(-sq / 2)}
    Cs = [0.01, 0.1, 10.0]
    s = svm_selection(kernels, ds.y, ds, C=Cs)
    pairs = [(k, c) for k in kernels for c in Cs]
    assert len(s.validation) == 6 and s.choice in pairs
    np.testing.assert_array_equal(s.validation, np.array([68, 74, 72, 72, 72, 70]) / 75)
    np.testing.assert_array_equal(s.validation, [svm_accuracy(kernels[k], ds.y, ds.train, ds.validation, c)
                                                 for k, c in pairs])
    assert s.choice == ("linear", 0.1)
    np.testing.assert_array_equal(s.folds, [svm_accuracy(kernels["linear"], ds.y, tr, te, 0.1) for tr, te in ds.folds])


def test_svm_selection_iris():
    ds = data.uci("iris")
    s = svm_selection({"linear": ds.x @ ds.x.T}, ds.y, ds, C=[0.1, 1.0, 10.0])
    assert s.choice == ("linear", 0.1)
    assert round(s.test, 3) == 0.973
    assert len(s.validation) == 3
    np.testing.assert_array_equal(s.folds, np.array([37, 35, 37, 35]) / 37)   # mean 144/148 = 0.97297...


def test_module_doctest():
    result = doctest.testmod(ntkcore.selection)
    assert result.attempted > 0 and result.failed == 0


def test_svm_selection_bad_input():
    x, y = _clusters()
    with pytest.raises(ValueError, match="^kernels must"):
        svm_selection({}, y, FAKE, C=[1.0])
    with pytest.raises(ValueError, match="^kernels must"):
        svm_selection(x @ x.T, y, FAKE, C=[1.0])
    with pytest.raises(ValueError, match="^C must"):
        svm_selection({"linear": x @ x.T}, y, FAKE, C=[])
    with pytest.raises(ValueError, match="^C must"):
        svm_selection({"linear": x @ x.T}, y, FAKE, C=[1.0, 0.0])
    for scalar in (1.0, "1.0", np.float64(1.0)):
        with pytest.raises(ValueError, match="^C must be a sequence"):
            svm_selection({"linear": x @ x.T}, y, FAKE, C=scalar)
    iris = data.uci("iris")
    linear = {"linear": iris.x @ iris.x.T}
    as_list = svm_selection(linear, iris.y, iris, C=[0.1, 1.0])
    as_array = svm_selection(linear, iris.y, iris, C=np.array([0.1, 1.0]))
    assert as_list.choice == as_array.choice and np.array_equal(as_list.folds, as_array.folds)


# ---------------------------------------------------------------------------------------------------------------
# mlp_accuracy
# ---------------------------------------------------------------------------------------------------------------

def _separable(seed=1, n=60, d=5, gap=1.5):
    """n points in d dimensions, class = side of a random hyperplane, each pushed ``gap`` away from it."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    w /= np.linalg.norm(w)
    x = rng.standard_normal((n, d))
    y = (x @ w > 0).astype(np.int64)
    x += np.outer(np.where(y == 1, gap, -gap), w)
    return x, y


def test_mlp_learns_a_separable_problem():
    x, y = _separable()
    train, test = np.arange(40), np.arange(40, 60)
    assert 0 < y[test].mean() < 1 and 0 < y[train].mean() < 1
    for p in ("ntk", "standard"):
        acc = mlp_accuracy(x, y, train, test, depth=1, width=64, eta=1.0, steps=100, parameterization=p)
        assert isinstance(acc, float) and acc == 1.0


def test_mlp_deterministic_given_the_seed():
    x, y = _noisy(seed=3, n=60)
    train, test = np.arange(40), np.arange(40, 60)
    kw = dict(depth=2, width=16, eta=0.5, steps=20)
    first = mlp_accuracy(x, y, train, test, seed=5, **kw)
    assert isinstance(first, float) and 0.0 <= first <= 1.0
    assert mlp_accuracy(x, y, train, test, seed=5, **kw) == first
    # the accuracy is a fraction of the 20 test rows
    assert first * 20 == round(first * 20)


def test_mlp_accuracy_bad_input():
    x, y = _separable()
    train, test = np.arange(40), np.arange(40, 60)
    kw = dict(depth=1, width=8, eta=1.0, steps=5)
    for name, value in (("width", 0), ("eta", 0.0), ("eta", -1.0), ("steps", 0)):
        with pytest.raises(ValueError, match=f"^{name} must"):
            mlp_accuracy(x, y, train, test, **{**kw, name: value})
    with pytest.raises(ValueError, match="parameterization='mup' is not known"):
        mlp_accuracy(x, y, train, test, parameterization="mup", **kw)
    with pytest.raises(ValueError, match="^x must"):
        mlp_accuracy(x[0], y, train, test, **kw)
    with pytest.raises(ValueError, match="^y must"):
        mlp_accuracy(x, y.astype(float), train, test, **kw)
    with pytest.raises(ValueError, match="^test must"):
        mlp_accuracy(x, y, train, np.array([60]), **kw)


# ---------------------------------------------------------------------------------------------------------------
# svm_fold_accuracies
# ---------------------------------------------------------------------------------------------------------------

def test_svm_fold_accuracies_is_svm_accuracy_on_every_fold_and_penalty():
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 3))
    y = (x[:, 0] + 0.5 * rng.standard_normal(40) > 0).astype(int)
    K = x @ x.T + 1.0
    folds = list(StratifiedKFold(4, shuffle=True, random_state=0).split(x, y))
    C = [0.01, 1.0, 100.0]
    got = svm_fold_accuracies(K, y, folds, C)
    assert got.shape == (3, 4) and got.dtype == np.float64
    for i, c in enumerate(C):
        for j, (tr, te) in enumerate(folds):
            assert got[i, j] == svm_accuracy(K, y, tr, te, c)
    assert np.array_equal(svm_fold_accuracies(K, y, iter(folds), np.array(C)), got)  # any iterable, any 1-d array


def test_svm_fold_accuracies_bad_input():
    K, y = np.eye(4), np.array([0, 1, 0, 1])
    folds = [(np.array([0, 1]), np.array([2, 3]))]
    with pytest.raises(ValueError, match="^C must be a sequence"):
        svm_fold_accuracies(K, y, folds, [])
    with pytest.raises(ValueError, match="^C must be a sequence"):
        svm_fold_accuracies(K, y, folds, 1.0)
    with pytest.raises(ValueError, match="C"):
        svm_fold_accuracies(K, y, folds, [0.0])
    with pytest.raises(ValueError, match="folds must hold at least one"):
        svm_fold_accuracies(K, y, [], [1.0])
    with pytest.raises(ValueError, match="test must be a non-empty"):
        svm_fold_accuracies(K, y, [(np.array([0, 1]), np.array([4]))], [1.0])
    with pytest.raises(ValueError, match="single class"):
        svm_fold_accuracies(K, y, [(np.array([0, 2]), np.array([1]))], [1.0])
