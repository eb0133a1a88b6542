"""Small statistics the chapters use to assert their claims: power-law fits and standard errors.

A chapter that says "the error decays like m^(-1/2)" fits :func:`power_law` to its measurements and asserts the
slope within a few standard errors; a chapter that says "theory matches simulation" compares with
:func:`mean_sem` over independent runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLaw:
    """``y ≈ exp(intercept) · x**slope``, fitted by least squares on log-log axes.

    ``stderr`` is the standard error of the slope from the residuals (``nan`` with two points).
    """

    slope: float
    intercept: float
    stderr: float

    def __call__(self, x):
        return np.exp(self.intercept) * np.asarray(x, dtype=float) ** self.slope


def power_law(x, y) -> PowerLaw:
    """Fit ``log y = slope · log x + intercept``; x and y positive 1-D arrays of the same length (≥ 2)."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"x and y must be 1-D of the same length >= 2, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ValueError("x and y must be finite and positive for a power-law fit")
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
    """Mean and standard error of the mean along ``axis`` (ddof = 1); accepts numpy arrays or tensors."""
    a = np.asarray(samples.detach().cpu() if hasattr(samples, "detach") else samples, dtype=float)
    n = a.shape[axis]
    if n < 2:
        raise ValueError(f"need at least 2 samples along axis {axis} for a standard error, got {n}")
    return a.mean(axis=axis), a.std(axis=axis, ddof=1) / np.sqrt(n)
