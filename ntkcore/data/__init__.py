"""Datasets for every chapter: offline by default, the papers' datasets on request, and label noise.

Offline (no network, ever): :func:`digits` (8×8 handwritten digits, the stand-in for MNIST), the small UCI
sets :func:`iris`, :func:`wine`, :func:`breast_cancer`, and synthetic sets: :func:`orthogonal_synthetic`
(the NDK paper's Figure 1 task), :func:`two_gaussians`, :func:`sphere`.
The 45 small UCI data sets of Arora et al. (ICLR 2020), in the preprocessing and splits of Fernández-Delgado et
al. (JMLR 2014), shipped in the package: :func:`uci`, :func:`uci_names`, and their table of 179 classifiers,
:func:`uci_reference`.
Graph classification (MUTAG, PTC, PROTEINS in the GIN/GNTK format), shipped in the package: :func:`graphs`,
:func:`graph_names`.
Opt-in downloads with a verified cache: :func:`mnist`, :func:`fashion_mnist`, :func:`cifar10`.
Label noise: :func:`symmetric_noise`, :func:`transition_noise`. :func:`available` lists everything.

Every loader returns a :class:`Dataset` that unpacks as ``(x_train, y_train, x_test, y_test)``:

>>> from ntkcore import data
>>> x_train, y_train, x_test, y_test = data.digits(classes=(0, 1), n_train=100, n_test=100, seed=0)
>>> x_train.shape, sorted(set(y_train.tolist()))
((100, 64), [-1.0, 1.0])
"""
from .bundled import breast_cancer, digits, iris, wine
from .catalog import DatasetInfo, available, load
from .dataset import Dataset, one_hot
from .graphs import GraphDataset, graph_names, graphs
from .download import DownloadError, cache_dir
from .noise import symmetric_noise, symmetric_transition, transition_noise
from .preprocess import preprocess
from .remote import cifar10, fashion_mnist, mnist
from .synthetic import orthogonal_synthetic, sphere, two_gaussians
from .uci import UCIDataset, UCIReference, uci, uci_names, uci_reference

__all__ = [
    "Dataset", "DatasetInfo", "DownloadError", "available", "breast_cancer", "cache_dir", "cifar10", "digits",
    "fashion_mnist", "iris", "load", "mnist", "one_hot", "orthogonal_synthetic", "preprocess", "sphere",
    "symmetric_noise", "symmetric_transition", "transition_noise", "two_gaussians", "wine",
    "UCIDataset", "UCIReference", "uci", "uci_names", "uci_reference",
    "GraphDataset", "graph_names", "graphs",
]
