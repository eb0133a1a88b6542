"""Small statistics the chapters use to assert their claims: power-law fits and standard errors.

A chapter that says "the error decays like m^(-1/2)" fits :func:`power_law` to its measurements and asserts the
slope within a few standard errors; a chapter that says "theory matches simulation" compares with
:func:`mean_sem` over independent runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_numpy


@dataclass(frozen=True)
class PowerLaw:
    """``y ≈ exp(intercept) · x**slope``, fitted by least squares on log-log axes.

    ``stderr`` is the standard error of the slope from the residuals (``nan`` with two points).
    """

    slope: float
    intercept: float
    stderr: float

    def __call__(self, x):
        return np.exp(self.intercept) * as_numpy(x, "x", finite=False) ** self.slope


def power_law(x, y) -> PowerLaw:
    """Fit ``log y = slope · log x + intercept``; x and y positive 1-D arrays of the same length (≥ 2), with at
    least two different x (else the slope is undefined)."""
    x = as_numpy(x, "x", finite=False).ravel()
    y = as_numpy(y, "y", finite=False).ravel()
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"x and y must be 1-D of the same length >= 2, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ValueError("x and y must be finite and positive for a power-law fit")
    if np.all(np.log(x) == np.log(x[0])):
        raise ValueError(f"x must hold at least two different values for a power-law fit, got only {x[0]!r}")
    lx, ly = np.log(x), np.log(y)
    A = np.stack([lx, np.ones_like(lx)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(A, ly, rcond=None)
    dof = x.size - 2
    if dof > 0:
        resid = ly - A @ np.array([slope, intercept])
        s2 = resid @ resid / dof
        stderr = float(np.sqrt(s2 / np.sum((lx - lx.mean()) ** 2)))
    else:
        stderr = float("nan")
    return PowerLaw(float(slope), float(intercept), stderr)


def mean_sem(samples, axis: int = 0):
    """Mean and standard error of the mean along ``axis`` (ddof = 1); accepts numpy arrays or tensors of finite
    numbers (NaN or inf: a ValueError naming ``samples``).

    Both are computed on the samples divided by their largest magnitude along ``axis`` and scaled back, so that
    neither the squares of the standard deviation overflow (samples beyond ~1e154) nor underflow (below ~1e-154):
    the result is accurate over the whole floating-point range."""
    a = as_numpy(samples, "samples")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -a.ndim <= axis < a.ndim:
        raise ValueError(f"axis must be an axis of samples (shape {a.shape}), got {axis!r}")
    n = a.shape[axis]
    if n < 2:
        raise ValueError(f"need at least 2 samples along axis {axis} for a standard error, got {n}")
    scale = np.max(np.abs(a), axis=axis, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    u = a / scale  # |u| <= 1: no overflow in the mean or the squares
    mean = u.mean(axis=axis, keepdims=True)
    sem = np.sqrt(np.sum((u - mean) ** 2, axis=axis, keepdims=True) / (n - 1) / n)
    return np.squeeze(mean * scale, axis=axis), np.squeeze(sem * scale, axis=axis)
