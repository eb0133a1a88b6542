"""Choosing a classifier's hyper-parameters on one split and measuring it on others: the protocol of Arora et al.
(ICLR 2020, "Harnessing the power of infinitely wide deep nets on small-data tasks", Section 5) on the UCI data sets
of :func:`ntkcore.data.uci`.

For every candidate (a setting of the hyper-parameters, in a fixed order) a classifier is trained on the data set's
``train`` rows and scored on its ``validation`` rows. The first candidate with the highest validation accuracy is
chosen (a later candidate must be strictly better to replace it, as in Arora et al.'s code), trained on the train
part of each of the four ``folds`` and scored on their test parts; the reported accuracy is the mean of the four.

- :func:`select_and_test`: the protocol for any classifier, given as a function ``score(candidate, train, test)``;
- :func:`svm_accuracy`, :func:`svm_selection`: a support vector machine on a precomputed kernel matrix (the NTK,
  the NNGP, or any other kernel), chosen over a family of kernels and the penalty ``C``;
- :func:`svm_fold_accuracies`: the same SVM on every fold of a k-fold split, for every penalty (the 10-fold
  protocol of the graph kernels, book chapter "The graph NTK");
- :func:`mlp_accuracy`: a fully connected network of :class:`ntkcore.models.MLP` trained by full-batch gradient
  descent with momentum on the cross-entropy.

>>> import numpy as np
>>> from ntkcore import data, selection
>>> ds = data.uci("iris")
>>> K = ds.x @ ds.x.T                                    # the linear kernel
>>> s = selection.svm_selection({"linear": K}, ds.y, ds, C=[0.1, 1.0, 10.0])
>>> s.choice, round(s.test, 3)
(('linear', 0.1), 0.973)
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from ._checks import as_numpy, check_choice, check_int, check_real, square
from .models import PARAMETERIZATIONS, MLP
from .train import fit

__all__ = ["Selection", "select_and_test", "svm_accuracy", "svm_fold_accuracies", "svm_selection", "mlp_accuracy"]


class Selection(NamedTuple):
    """The outcome of :func:`select_and_test`.

    Attributes
    ----------
    choice : the chosen candidate (an element of ``candidates``).
    validation : numpy.ndarray of float64, shape (m,)
        The validation accuracy of each of the ``m`` candidates, in their order.
    folds : numpy.ndarray of float64, shape (4,)
        The chosen candidate's test accuracy on each fold.
    """

    choice: object
    validation: np.ndarray
    folds: np.ndarray

    @property
    def test(self) -> float:
        """The reported accuracy: the mean of :attr:`folds`."""
        return float(np.mean(self.folds))


def _splits(dataset) -> list:
    """The (train, test) index pairs of ``dataset``: the validation split first, then the four folds."""
    try:
        pairs = [(dataset.train, dataset.validation), *dataset.folds]
    except (AttributeError, TypeError):
        raise ValueError("dataset must have train and validation index arrays and folds, four (train, test) pairs "
                         f"(a data.uci(...) data set), got {type(dataset).__name__}") from None
    if len(pairs) != 5 or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs[1:]):
        raise ValueError("dataset.folds must hold four (train, test) pairs of index arrays")
    return [(np.asarray(tr), np.asarray(te)) for tr, te in pairs]


def _accuracy(value, candidate) -> float:
    return check_real(value, f"score({candidate!r}, ...)", low=0.0, high=1.0)


def select_and_test(score: Callable, candidates: Sequence, dataset) -> Selection:
    """Choose among ``candidates`` on the validation split, then measure the choice on the four folds (module
    docstring; Arora et al. 2020, Section 5).

    Parameters
    ----------
    score : callable ``score(candidate, train, test) -> accuracy`` in [0, 1]: train the classifier that
        ``candidate`` describes on the rows ``train`` (int array) and return its accuracy on the rows ``test``.
    candidates : non-empty sequence of hyper-parameter settings, in the order in which ties are broken (the first
        wins).
    dataset : a data set with ``train``, ``validation`` and ``folds`` (:class:`ntkcore.data.UCIDataset`).

    Returns
    -------
    Selection
    """
    if not callable(score):
        raise ValueError(f"score must be a callable score(candidate, train, test) -> accuracy, got {score!r}")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("candidates must hold at least one hyper-parameter setting")
    (train, validation), *folds = _splits(dataset)
    scores = np.array([_accuracy(score(c, train, validation), c) for c in candidates])
    choice = candidates[int(np.argmax(scores))]          # argmax returns the first of equal maxima
    tests = np.array([_accuracy(score(choice, tr, te), choice) for tr, te in folds])
    return Selection(choice, scores, tests)


def _rows(index, name: str, n: int) -> np.ndarray:
    idx = as_numpy(index, name, dtype=None)
    if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{name} must be a non-empty 1-d array of integer row indices in 0..{n - 1}")
    return idx


def _classes(y, n: int) -> np.ndarray:
    labels = as_numpy(y, "y", dtype=None)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"y must be a 1-d array of {n} integer classes, got shape {labels.shape} and dtype "
                         f"{labels.dtype}")
    return labels


def svm_accuracy(kernel, y, train, test, C: float) -> float:
    """Accuracy on the rows ``test`` of a support vector machine trained on the rows ``train`` of a precomputed
    kernel matrix (scikit-learn's ``SVC(kernel="precomputed")``, one-against-one for more than two classes).

    Parameters
    ----------
    kernel : array ``(n, n)``, symmetric positive semi-definite, finite (e.g. an NTK Gram matrix of all rows).
    y : ``(n,)`` integer classes.
    train, test : integer row indices, non-empty; the training rows must hold at least two classes.
    C : penalty of the soft margin, > 0 (the kernel's scale matters: scaling the kernel by ``a`` is the same as
        scaling ``C`` by ``a``).

    Returns
    -------
    float, the fraction of ``test`` rows classified correctly.
    """
    K = square(kernel, "kernel", symmetric=True).double().cpu().numpy()
    n = K.shape[0]
    labels = _classes(y, n)
    train, test = _rows(train, "train", n), _rows(test, "test", n)
    C = check_real(C, "C", low=0.0, low_open=True)
    return _svm_score(K, labels, train, test, C)


def _svm_score(K: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, C: float) -> float:
    """The fit and score of :func:`svm_accuracy` on checked inputs (numpy ``K``, classes, row indices, ``C``)."""
    from sklearn.svm import SVC

    if np.unique(labels[train]).size < 2:
        raise ValueError("the training rows hold a single class; a classifier needs at least two")
    clf = SVC(kernel="precomputed", C=C).fit(K[np.ix_(train, train)], labels[train])
    return float(np.mean(clf.predict(K[np.ix_(test, train)]) == labels[test]))


def _penalties(C) -> list[float]:
    """The SVM penalties ``C``: a non-empty list or 1-d array of numbers > 0."""
    if isinstance(C, (str, bytes)) or np.ndim(C) != 1 or len(C) == 0:
        raise ValueError(f"C must be a sequence of penalties > 0, e.g. [0.1, 1.0, 10.0], got {C!r}")
    return [check_real(c, "C", low=0.0, low_open=True) for c in C]


def svm_fold_accuracies(kernel, y, folds: Sequence, C: Sequence[float]) -> np.ndarray:
    """The accuracies of :func:`svm_accuracy` for every penalty of ``C`` on every ``(train, test)`` pair of
    ``folds``, with the inputs checked once (k-fold cross-validation, e.g. over scikit-learn's
    ``StratifiedKFold(...).split``, which yields such pairs).

    Parameters
    ----------
    kernel : array ``(n, n)``, as in :func:`svm_accuracy`. y : ``(n,)`` integer classes.
    folds : a non-empty sequence (or iterable) of ``(train, test)`` pairs of integer row indices.
    C : penalties > 0, a non-empty list or 1-d array.

    Returns
    -------
    numpy.ndarray of float64, shape ``(len(C), len(folds))``: entry ``[i, j]`` is ``svm_accuracy(kernel, y,
    *folds[j], C[i])``.
    """
    K = square(kernel, "kernel", symmetric=True).double().cpu().numpy()
    n = K.shape[0]
    labels = _classes(y, n)
    penalties = _penalties(C)
    pairs = [(_rows(tr, "train", n), _rows(te, "test", n)) for tr, te in folds]
    if not pairs:
        raise ValueError("folds must hold at least one (train, test) pair")
    return np.array([[_svm_score(K, labels, tr, te, c) for tr, te in pairs] for c in penalties])


def svm_selection(kernels: Mapping, y, dataset, C: Sequence[float]) -> Selection:
    """:func:`select_and_test` of a precomputed-kernel SVM (:func:`svm_accuracy`) over every kernel of ``kernels``
    and every penalty of ``C``: the candidates are the pairs ``(key, C)``, kernels in the mapping's order, and for
    each kernel the penalties in the order given (Arora et al.'s loops).

    Parameters
    ----------
    kernels : mapping key -> ``(n, n)`` kernel matrix over all rows of ``dataset`` (non-empty).
    y : ``(n,)`` integer classes. dataset : as in :func:`select_and_test`. C : penalties > 0, a non-empty list or 1-d array.

    Returns
    -------
    Selection, whose ``choice`` is ``(key, C)``.
    """
    if not isinstance(kernels, Mapping) or not kernels:
        raise ValueError("kernels must be a non-empty mapping key -> kernel matrix")
    penalties = _penalties(C)
    candidates = [(key, c) for key in kernels for c in penalties]
    return select_and_test(lambda cand, tr, te: svm_accuracy(kernels[cand[0]], y, tr, te, cand[1]),
                           candidates, dataset)


def mlp_accuracy(x, y, train, test, *, depth: int, width: int, eta: float, steps: int,
                 parameterization: str = "ntk", seed=0, dtype=torch.float32) -> float:
    """Accuracy on the rows ``test`` of a ReLU network (:class:`ntkcore.models.MLP`, σw² = 2, no bias) trained on
    the rows ``train`` by full-batch gradient descent with momentum 0.9 on the summed cross-entropy
    (:func:`ntkcore.train.fit`), for a fixed number of steps.

    The step size is ``eta / n_train`` for the NTK parameterization and ``eta / (n_train · width)`` for the
    standard one ("He initialization"): the loss is a sum over the ``n_train`` examples, and the standard
    parameterization's tangent kernel is about ``width`` times that of the NTK parameterization (its hidden
    layers' gradients are not scaled by ``1/√width``), so the same ``eta`` moves the outputs by about as much.

    Parameters
    ----------
    x : ``(n, d)`` features. y : ``(n,)`` integer classes 0..C−1 (C = ``y.max() + 1`` outputs).
    train, test : integer row indices.
    depth, width : hidden layers (≥ 0) and their width (≥ 1).
    eta : step size > 0 in the units above. steps : number of updates ≥ 1.
    parameterization : ``"ntk"`` or ``"standard"``. seed : seed of the initialization.
    dtype : training precision.

    Returns
    -------
    float, the fraction of ``test`` rows classified correctly.
    """
    feats = as_numpy(x, "x")
    if feats.ndim != 2:
        raise ValueError(f"x must be a 2-d array (n, d), got shape {feats.shape}")
    n = feats.shape[0]
    labels = _classes(y, n)
    train, test = _rows(train, "train", n), _rows(test, "test", n)
    width = check_int(width, "width", low=1)
    eta = check_real(eta, "eta", low=0.0, low_open=True)
    steps = check_int(steps, "steps", low=1)
    parameterization = check_choice(parameterization, "parameterization", PARAMETERIZATIONS)
    net = MLP(feats.shape[1], width, depth, int(labels.max()) + 1, parameterization=parameterization, seed=seed,
              dtype=dtype)
    lr = eta / len(train) / (width if parameterization == "standard" else 1)
    fit(net, feats[train], labels[train], loss="cross_entropy", lr=lr, steps=steps, optimizer="sgd_momentum",
        record_steps=[steps])
    ref = next(net.parameters())
    with torch.no_grad():
        predicted = net(torch.as_tensor(feats[test], dtype=ref.dtype, device=ref.device)).argmax(dim=1)
    return float(np.mean(predicted.cpu().numpy() == labels[test]))
