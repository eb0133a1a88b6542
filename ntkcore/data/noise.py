"""Label noise for the noisy-label chapter (book Chapter 5; Hu, Li, Yu 2020).

A transition matrix ``P`` (C×C) has ``P[i, j] = Pr[class j becomes class i]``: each column is a probability
vector (non-negative, sums to 1). Symmetric noise with flip probability ``p`` is the matrix
``(1 − p) I + p/(C − 1) (1 − I)``: with probability p a label is replaced by a uniformly random *different*
class; for two classes this is a sign flip of ±1 labels.

Labels are either integer classes 0..C−1 or ±1 (two classes; −1 is class 0, +1 is class 1, the coding of
:mod:`ntkcore.data.dataset`); the output has the input's coding and type (numpy, or a tensor on the same
device). Every function returns ``(noisy_labels, changed)`` with ``changed`` a boolean mask of shape (n,).
"""
from __future__ import annotations

import numpy as np
import torch

from .._checks import MAX_INT, as_numpy, check_int, check_memory, check_real, whole_numbers
from .subset import rng


def symmetric_transition(p: float, n_classes: int) -> np.ndarray:
    """The C×C matrix of symmetric noise: ``1 − p`` on the diagonal, ``p/(C − 1)`` elsewhere; p in [0, 1)."""
    p = check_real(p, "p", low=0.0, high=1.0, high_open=True)
    c = check_int(n_classes, "n_classes", low=2)
    check_memory(8 * c * c, f"a {c}×{c} transition matrix (n_classes={c})", "cpu")
    return np.full((c, c), p / (c - 1)) + (1.0 - p - p / (c - 1)) * np.eye(c)


def _split(y, n_classes):
    """Labels -> (class indices, C, restore) where ``restore`` gives new indices the input's coding and type.

    ±1 labels (all entries ±1, and float or containing −1) are two classes; otherwise integer classes 0..C−1
    with C = ``n_classes`` or max(y) + 1.
    """
    is_tensor = isinstance(y, torch.Tensor)
    arr = as_numpy(y, "y", dtype=None, finite=False)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"y must be a non-empty 1-d array of labels, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf" or not whole_numbers(arr):
        raise ValueError(f"y must hold integer classes 0..C-1 (C <= {MAX_INT}) or ±1 labels")
    signed = bool(np.all(np.abs(arr) == 1)) and (arr.dtype.kind == "f" or bool(np.any(arr == -1)))
    if signed:
        idx, c = ((arr + 1) // 2).astype(np.int64), 2
        if n_classes is not None and check_int(n_classes, "n_classes", low=2) != 2:
            raise ValueError(f"y holds ±1 labels (two classes), but n_classes (or the transition matrix) "
                             f"asks for {n_classes}")
    else:
        idx = arr.astype(np.int64)
        if idx.min() < 0:
            raise ValueError("y must hold integer classes 0..C-1 or ±1 labels, got negative labels")
        c = max(int(idx.max()) + 1, 2) if n_classes is None else check_int(n_classes, "n_classes", low=2)
        if idx.max() >= c:
            raise ValueError(f"y holds class {int(idx.max())}, but n_classes (or the transition matrix) "
                             f"allows only 0..{c - 1}")

    def restore(new_idx):
        out = (2 * new_idx - 1).astype(arr.dtype) if signed else new_idx.astype(arr.dtype)
        return torch.as_tensor(out, device=y.device) if is_tensor else out

    return idx, c, restore


def transition_noise(y, transition, *, seed=0):
    """Replace each label of class j by class i with probability ``transition[i, j]`` (module docstring).

    ``y`` (n,): integer classes 0..C−1 or ±1 labels, with C the size of ``transition`` (C×C, non-negative,
    columns summing to 1; ValueError naming ``transition`` otherwise). Seeded. Returns ``(noisy, changed)``.
    """
    t = as_numpy(transition, "transition", finite=False)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 2:
        raise ValueError(f"transition must be a square C×C matrix with C >= 2, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("transition has negative (or non-finite) entries; entries are probabilities")
    sums = t.sum(axis=0)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-8):
        raise ValueError(f"transition: column j must sum to 1 (P[i, j] = Pr[j becomes i]); column sums are "
                         f"{np.array2string(sums, precision=6)}")
    idx, c, restore = _split(y, t.shape[0])
    cdf = np.cumsum(t, axis=0)[:, idx]                    # (C, n): cumulative probabilities per label
    u = rng(seed).random(len(idx))
    new = np.minimum((u[None, :] >= cdf).sum(axis=0), c - 1)
    changed = new != idx
    return restore(new), (torch.as_tensor(changed, device=y.device) if isinstance(y, torch.Tensor) else changed)


def symmetric_noise(y, p, *, n_classes=None, seed=0):
    """Symmetric label noise: with probability ``p`` in [0, 1) each label becomes a uniformly random different
    class (a sign flip for ±1 labels). ``n_classes`` defaults to 2 for ±1 labels and to max(y) + 1 otherwise.
    Seeded. Returns ``(noisy, changed)``; the expected fraction changed is exactly p."""
    p = check_real(p, "p", low=0.0, high=1.0, high_open=True)
    _, c, _ = _split(y, n_classes)
    return transition_noise(y, symmetric_transition(p, c), seed=seed)
