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

Rows are flattened for the statistics; the output keeps the input's shape.
"""
from __future__ import annotations

import numpy as np

STEPS = ("centre", "center", "standardize", "unit_norm", "dim_norm")


def _check_steps(steps) -> tuple:
    if steps is None:
        return ()
    if isinstance(steps, str):
        steps = (steps,)
    steps = tuple(steps)
    for s in steps:
        if s not in STEPS:
            raise ValueError(f"preprocess: {s!r} is not a step; accepted: {', '.join(map(repr, STEPS))}")
    return steps


def _row_scale(x: np.ndarray, target: float, which: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"preprocess={which!r}: the {int(np.sum(norms == 0))} all-zero row(s) cannot be normalized")
    return x * (target / norms)


def preprocess(x_train, x_test, steps=()) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``steps`` (module docstring) to ``x_train`` (n, ...) and ``x_test`` (m, ...), float64.

    Returns ``(x_train, x_test)`` with the input shapes. Means and standard deviations come from ``x_train``.
    """
    steps = _check_steps(steps)
    a = np.asarray(x_train, dtype=np.float64)
    b = np.asarray(x_test, dtype=np.float64)
    shape_a, shape_b = a.shape, b.shape
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    for step in steps:
        if step in ("centre", "center", "standardize"):
            mean = a.mean(axis=0)
            a, b = a - mean, b - mean
            if step == "standardize":
                std = a.std(axis=0)
                scale = np.where(std > 0, std, 1.0)
                a, b = a / scale, b / scale
        else:
            target = 1.0 if step == "unit_norm" else np.sqrt(a.shape[1])
            a, b = _row_scale(a, target, step), (_row_scale(b, target, step) if len(b) else b)
    return a.reshape(shape_a), b.reshape(shape_b)
