"""The container every loader returns, and the label codings the chapters use.

A :class:`Dataset` holds a train/test split. It unpacks like a tuple, so a chapter writes

>>> from ntkcore import data
>>> x_train, y_train, x_test, y_test = data.digits(classes=(0, 1), n_train=100, n_test=50, seed=0)

Label coding (``labels=`` of every loader): with ``"auto"``, a two-class problem gets float labels ±1
(the first entry of ``classes`` is −1, the second +1; the kernel chapters regress on ±1, book Chapters 3
and 6), and more classes get integer labels 0..C−1 in the order of ``classes``. ``"index"`` forces 0..C−1,
``"signed"`` forces ±1 (two classes only). :func:`one_hot` turns integer labels into the (centred) one-hot
targets of MSE training (book Chapter 5; Hu, Li, Yu 2020).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .._checks import MAX_INT, as_numpy, check_choice, check_int, check_memory, whole_numbers
from ..device import resolve

LABEL_CODINGS = ("auto", "index", "signed")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split: inputs ``x_*`` of shape (n, d) (or (n, C, H, W) for unflattened images) and labels
    ``y_*`` of shape (n,), as numpy arrays or, after :meth:`to_torch`, tensors.

    ``classes`` are the original class values in label order (label i, or −1/+1 for signed labels, is
    ``classes[i]``), ``class_names`` their readable names, ``name`` the dataset, ``meta`` anything specific
    to it (e.g. which training input each test point of :func:`ntkcore.data.orthogonal_synthetic` overlaps).
    Iterating yields ``(x_train, y_train, x_test, y_test)``.
    """

    x_train: object
    y_train: object
    x_test: object
    y_test: object
    classes: tuple
    class_names: tuple
    name: str
    meta: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.x_train, self.y_train, self.x_test, self.y_test))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def signed(self) -> bool:
        """True when the labels are ±1 (a binary problem coded for regression)."""
        return self.n_classes == 2 and _is_signed(self.y_train)

    def __repr__(self) -> str:
        kind = "tensor" if isinstance(self.x_train, torch.Tensor) else "numpy"
        return (f"Dataset({self.name!r}, classes={self.classes}, x_train{tuple(self.x_train.shape)}, "
                f"x_test{tuple(self.x_test.shape)}, labels={'±1' if self.signed else '0..C-1'}, {kind})")

    def to_torch(self, device=None, dtype=None) -> Dataset:
        """The same split as tensors on ``device`` (see :func:`ntkcore.device.resolve`; float64 by default).

        Inputs and ±1 labels take ``dtype``; integer labels become ``torch.long``.
        """
        dev, dt = resolve(device, dtype)

        def convert(a, labels):
            t = torch.as_tensor(np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a))
            if labels and not t.is_floating_point():
                return t.to(device=dev, dtype=torch.long)
            return t.to(device=dev, dtype=dt)

        return replace(self, x_train=convert(self.x_train, False), y_train=convert(self.y_train, True),
                       x_test=convert(self.x_test, False), y_test=convert(self.y_test, True))

    def one_hot(self, centred: bool = False) -> tuple:
        """``(Y_train, Y_test)``: one-hot targets of shape (n, C) for integer labels, see :func:`one_hot`."""
        return (one_hot(self.y_train, self.n_classes, centred=centred),
                one_hot(self.y_test, self.n_classes, centred=centred))


def _is_signed(y) -> bool:
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return y.dtype.kind == "f" and bool(np.all(np.abs(y) == 1))


def encode_labels(index: np.ndarray, n_classes: int, labels: str) -> np.ndarray:
    """Code class positions ``index`` (ints 0..C−1, shape (n,)) as the loaders' labels (module docstring)."""
    check_choice(labels, "labels", LABEL_CODINGS)
    if labels == "signed" and n_classes != 2:
        raise ValueError(f"labels='signed' needs exactly two classes, got {n_classes}; use labels='index'")
    if labels == "signed" or (labels == "auto" and n_classes == 2):
        return 2.0 * index.astype(np.float64) - 1.0
    return index.astype(np.int64)


def one_hot(y, n_classes: int | None = None, *, centred: bool = False):
    """One-hot targets of shape (n, C) from integer labels ``y`` of shape (n,) in 0..C−1.

    ``centred=True`` subtracts 1/C from every entry, so each row sums to 0 (the zero-mean targets of MSE
    training on many classes, e.g. the noisy-label chapter, book Chapter 5). Numpy in, float64
    numpy out; a tensor in, a tensor of the default float dtype out, on the same device.
    """
    is_tensor = isinstance(y, torch.Tensor)
    arr = as_numpy(y, "y", dtype=None)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind == "b":
        raise ValueError(f"y must be a non-empty 1-d array of class indices, got shape {arr.shape} and dtype "
                         f"{arr.dtype}")
    if not whole_numbers(arr) or arr.min() < 0:
        raise ValueError(f"y must hold integer class indices 0..C-1 with C <= {MAX_INT} (for ±1 labels use "
                         f"(y + 1) / 2)")
    idx = arr.astype(np.int64)
    c = int(idx.max()) + 1 if n_classes is None else check_int(n_classes, "n_classes", low=1)
    if idx.max() >= c:
        raise ValueError(f"y holds class {int(idx.max())}, but n_classes={c}")
    check_memory(8 * len(idx) * c, f"one_hot targets of shape ({len(idx)}, {c}) (n_classes={c})", "cpu")
    out = np.zeros((len(idx), c))
    out[np.arange(len(idx)), idx] = 1.0
    if centred:
        out = out - 1.0 / c
    if is_tensor:
        return torch.as_tensor(out, dtype=resolve(None, None)[1], device=y.device)
    return out


def finish(ds: Dataset, torch_out: bool, device, dtype) -> Dataset:
    """Return numpy (the default) or, when ``torch_out`` or a device/dtype is given, tensors."""
    if torch_out or device is not None or dtype is not None:
        return ds.to_torch(device, dtype)
    return ds
