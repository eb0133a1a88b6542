"""What is available: every dataset by name, with a one-line description and where it comes from."""
from __future__ import annotations

from typing import NamedTuple

from . import bundled, remote, synthetic


class DatasetInfo(NamedTuple):
    """One row of :func:`available`: ``source`` is 'bundled' (ships with scikit-learn), 'synthetic'
    (generated) or 'download' (opt-in); ``cached`` says whether a download is already in the cache
    (always True for the offline sets)."""

    name: str
    description: str
    source: str
    cached: bool


CATALOG = {
    "digits": (bundled.digits, "handwritten digits, 1,797 images of 8×8, classes 0..9 (offline MNIST)", "bundled"),
    "iris": (bundled.iris, "UCI iris, 150 × 4 features, 3 classes", "bundled"),
    "wine": (bundled.wine, "UCI wine, 178 × 13 features, 3 classes", "bundled"),
    "breast_cancer": (bundled.breast_cancer, "UCI breast cancer (diagnostic), 569 × 30 features, 2 classes",
                      "bundled"),
    "orthogonal_synthetic": (synthetic.orthogonal_synthetic,
                             "NDK paper Fig. 1: orthogonal inputs, random ±1 labels, overlapping test points",
                             "synthetic"),
    "two_gaussians": (synthetic.two_gaussians, "two Gaussian classes with labels ±1", "synthetic"),
    "sphere": (synthetic.sphere, "uniform points on the unit sphere, linear-teacher ±1 labels", "synthetic"),
    "mnist": (remote.mnist, "MNIST, 60,000 + 10,000 digits of 28×28 (download, 11 MiB)", "download"),
    "fashion_mnist": (remote.fashion_mnist, "Fashion-MNIST, 60,000 + 10,000 clothes of 28×28 (download, 30 MiB)",
                      "download"),
    "cifar10": (remote.cifar10, "CIFAR-10, 50,000 + 10,000 colour images of 32×32 (download, 163 MiB)",
                "download"),
}


def available(cache_dir=None) -> list[DatasetInfo]:
    """Every dataset :func:`load` knows, in the order above (offline sets first)."""
    return [DatasetInfo(name, desc, source, source != "download" or remote.is_cached(name, cache_dir))
            for name, (_, desc, source) in CATALOG.items()]


def load(name: str, **kwargs):
    """Load dataset ``name`` (see :func:`available`) with the keyword arguments of its own function,
    e.g. ``load("digits", classes=(4, 9), n_train=200, n_test=200, seed=0)``."""
    if name not in CATALOG:
        raise ValueError(f"name={name!r} is not a known dataset; known: {', '.join(CATALOG)}")
    return CATALOG[name][0](**kwargs)
