"""The offline datasets that ship inside scikit-learn: nothing is downloaded, so every chapter can use them.

- :func:`digits`: handwritten digits, 1,797 grey images of 8×8 pixels (values 0..16, rescaled here to [0, 1]),
  classes 0..9; the offline stand-in for MNIST.
- :func:`iris`, :func:`wine`, :func:`breast_cancer`: three of the UCI sets of Arora et al. 2020 ("Harnessing the
  power of infinitely wide deep nets on small-data tasks"), raw features (use ``preprocess=("standardize",)`` as
  their protocol does).

These sets have no official test split: train and test are disjoint, seeded, class-balanced draws from the
same pool (:func:`ntkcore.data.subset.draw`).
"""
from __future__ import annotations

import functools

from .dataset import finish
from .subset import make_dataset


@functools.cache
def _raw(name: str):
    """The scikit-learn bunch (read once per process; targets are 0..C−1) and its class names."""
    from sklearn import datasets  # imported on first use: it is slow to import and most chapters need one set

    bunch = getattr(datasets, f"load_{name}")()
    return bunch, tuple(str(n) for n in bunch.target_names)


def _bundled(name, x, classes, n_train, n_test, seed, preprocess, labels, torch, device, dtype,
             pixel_scale=1.0):
    bunch, names = _raw(name)
    ds = make_dataset(name, x, bunch.target, names, classes=classes, n_train=n_train, n_test=n_test,
                      seed=seed, preprocess=preprocess, labels=labels, pixel_scale=pixel_scale)
    return finish(ds, torch, device, dtype)


def digits(classes=None, n_train=None, n_test=None, *, seed=0, preprocess=(), labels="auto", flatten=True,
           torch=False, device=None, dtype=None):
    """Handwritten digits (scikit-learn, 8×8 pixels in [0, 1]) as a :class:`~ntkcore.data.Dataset`.

    ``classes``: digits to keep, e.g. ``(0, 1)`` or ``(4, 9)`` (None: all ten). Two classes give labels ±1
    (``classes[0]`` is −1), more give 0..C−1 (``labels=`` overrides, see :mod:`ntkcore.data.dataset`).
    ``n_train``/``n_test``: sizes of the seeded class-balanced draws (None: the rest of the pool; both None:
    half of each class each). ``preprocess``: steps of :mod:`ntkcore.data.preprocess`. ``flatten``: x of
    shape (n, 64), else (n, 1, 8, 8). ``torch=True`` or a ``device``/``dtype`` returns tensors.
    """
    bunch = _raw("digits")[0]
    x = bunch.images.reshape(len(bunch.images), 64) if flatten else bunch.images[:, None, :, :]
    return _bundled("digits", x, classes, n_train, n_test, seed, preprocess, labels, torch, device, dtype,
                    pixel_scale=16.0)


def iris(classes=None, n_train=None, n_test=None, *, seed=0, preprocess=(), labels="auto", torch=False,
         device=None, dtype=None):
    """Iris (UCI, via scikit-learn): 150 flowers, 4 features, classes 0..2 ('setosa', 'versicolor',
    'virginica'). Arguments as :func:`digits`."""
    return _bundled("iris", _raw("iris")[0].data, classes, n_train, n_test, seed, preprocess, labels, torch,
                    device, dtype)


def wine(classes=None, n_train=None, n_test=None, *, seed=0, preprocess=(), labels="auto", torch=False,
         device=None, dtype=None):
    """Wine (UCI, via scikit-learn): 178 wines, 13 features, classes 0..2. Arguments as :func:`digits`."""
    return _bundled("wine", _raw("wine")[0].data, classes, n_train, n_test, seed, preprocess, labels, torch,
                    device, dtype)


def breast_cancer(classes=None, n_train=None, n_test=None, *, seed=0, preprocess=(), labels="auto",
                  torch=False, device=None, dtype=None):
    """Breast cancer Wisconsin diagnostic (UCI, via scikit-learn): 569 tumours, 30 features, classes
    0 ('malignant', −1 as signed label) and 1 ('benign', +1). Arguments as :func:`digits`."""
    return _bundled("breast_cancer", _raw("breast_cancer")[0].data, classes, n_train, n_test, seed, preprocess,
                    labels, torch, device, dtype)
