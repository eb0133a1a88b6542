"""Input preprocessing with statistics from the training split only (the test split reuses them).

Steps, applied in the order given (``preprocess=("centre", "unit_norm")`` centres, then normalizes):

- ``"centre"`` (or ``"center"``): subtract the training mean of each feature.
- ``"standardize"``: subtract the training mean and divide by the training standard deviation of each
  feature; features constant on the training set (e.g. the always-blank border pixels of digits) are only
  centred.
- ``"unit_norm"``: scale every row to Euclidean norm 1 (the ``‖x‖ = 1`` of Du et al., book Chapter 2).
- ``"dim_norm"``: scale every row to norm √d, so that ``x·x/d = 1`` (the input overlap ``x·x′/d`` of the first
  layer, book appendix "Closed-form kernels and conventions", section "Fully connected networks", and the
  ``q⁰ = x·x′/N0`` of book Chapter 6 are then 1 on the diagonal).

Rows are flattened for the statistics; the output keeps the input's shape. Every step is computed on data divided
by its largest magnitude (per feature for the statistics, per row for the norms) and so gives the same result for
inputs anywhere in the float64 range, without overflow or underflow in the squares; a result that is not representable
(a centred value beyond the float64 range, test data far beyond the training scale) is a ValueError.
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import as_numpy

STEPS = ("centre", "center", "standardize", "unit_norm", "dim_norm")


def _check_steps(steps) -> tuple:
    if steps is None:
        return ()
    if isinstance(steps, str):
        steps = (steps,)
    if not isinstance(steps, (tuple, list)):
        raise ValueError(f"preprocess steps (steps=, or preprocess= of a loader) must be a step name or a sequence of "
                         f"them, got {steps!r}; accepted: {', '.join(map(repr, STEPS))}")
    steps = tuple(steps)
    for s in steps:
        if not isinstance(s, str) or s not in STEPS:
            raise ValueError(f"preprocess steps (steps=, or preprocess= of a loader): {s!r} is not a step; "
                             f"accepted: {', '.join(map(repr, STEPS))}")
    return steps


def _magnitude(x: np.ndarray, axis: int) -> np.ndarray:
    """The largest magnitude along ``axis`` (kept), 1 where it is 0: dividing by it keeps squares in range."""
    top = np.max(np.abs(x), axis=axis, keepdims=True) if x.shape[axis] else np.ones((1, x.shape[1]))
    return np.where(top > 0, top, 1.0)


def _row_scale(x: np.ndarray, target: float, which: str) -> np.ndarray:
    unit = x / _magnitude(x, 1)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"preprocess={which!r}: the {int(np.sum(norms == 0))} all-zero row(s) cannot be normalized")
    return unit * (target / norms)


def _centre(a: np.ndarray, b: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the training mean of each feature (and divide by its standard deviation), in units of the feature's
    largest training magnitude."""
    unit = _magnitude(a, 0)
    with np.errstate(over="ignore"):
        a, b = a / unit, b / unit
    mean = a.mean(axis=0)
    a, b = a - mean, b - mean
    back = unit[0]  # centred features back in their own units; standardized ones have none
    if standardize:
        std = a.std(axis=0)
        back = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), back)  # constant features are only centred
    with np.errstate(over="ignore"):
        return a * back, b * back


def preprocess(x_train, x_test, steps=()) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``steps`` (module docstring) to ``x_train`` (n, ...) and ``x_test`` (m, ...), float64.

    ``x_train`` needs at least one row (the statistics come from it); ``x_test`` may be empty, ``(0, ...)``, with
    the per-example shape of ``x_train``. Returns ``(x_train, x_test)`` with the input shapes. Means and standard
    deviations come from ``x_train``.
    """
    steps = _check_steps(steps)
    a = as_numpy(x_train, "x_train")
    b = as_numpy(x_test, "x_test")
    if a.ndim < 2 or len(a) == 0 or math.prod(a.shape[1:]) == 0:
        raise ValueError(f"x_train must have shape (n, ...) with n >= 1 and at least one feature, got {a.shape}")
    if b.shape[1:] != a.shape[1:]:
        raise ValueError(f"x_test must have the per-example shape of x_train {a.shape[1:]}, got {b.shape}")
    shape_a, shape_b = a.shape, b.shape
    width = math.prod(a.shape[1:])
    a, b = a.reshape(len(a), width), b.reshape(len(b), width)
    for step in steps:
        if step in ("centre", "center", "standardize"):
            a, b = _centre(a, b, step == "standardize")
        else:
            target = 1.0 if step == "unit_norm" else np.sqrt(a.shape[1])
            a, b = _row_scale(a, target, step), (_row_scale(b, target, step) if len(b) else b)
    for name, out in (("x_train", a), ("x_test", b)):
        if not np.all(np.isfinite(out)):
            raise ValueError(f"preprocess={steps!r}: the preprocessed {name} is not representable in float64 (beyond "
                             f"{np.finfo(np.float64).max:.3g}); x_test far beyond the scale of x_train, or x_train "
                             f"spanning the whole float64 range; rescale x_train and x_test")
    return a.reshape(shape_a), b.reshape(shape_b)
