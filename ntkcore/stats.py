"""Small statistics the chapters use to assert their claims: power-law fits and standard errors.

A chapter that says "the error decays like m^(-1/2)" fits :func:`power_law` to its measurements and asserts the
slope within a few standard errors; a chapter that says "theory matches simulation" compares with
:func:`mean_sem` over independent runs. :func:`ratio_of_means` and :func:`dispersion` estimate ratios of means
(``E[A]/E[B]``, ``E[X²]/E[X]²``) with their standard errors by the delta method; :func:`correlation` gives a
Pearson correlation with its confidence interval, overall or within groups.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_numpy, check_real


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


def _paired(a, b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Two 1-d arrays of finite numbers, of one length >= 2, each divided by its largest magnitude (so that squares
    neither overflow nor underflow), and the two scales."""
    a = as_numpy(a, names[0]).ravel()
    b = as_numpy(b, names[1]).ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"{names[0]} and {names[1]} must be paired samples of one length >= 2, got {a.size} and "
                         f"{b.size}")
    scales = [float(np.max(np.abs(v))) for v in (a, b)]
    scales = [v if v > 0 else 1.0 for v in scales]
    return a / scales[0], b / scales[1], scales[0], scales[1]


def _delta_method(values: np.ndarray, grad: np.ndarray) -> float:
    """Standard error of ``g(means)`` from samples ``values`` (k, N) and the gradient of g at the means (k,)."""
    cov = np.atleast_2d(np.cov(values, ddof=1))
    return float(np.sqrt(max(grad @ cov @ grad, 0.0) / values.shape[1]))


def ratio_of_means(num, den) -> tuple[float, float]:
    """``E[A]/E[B]`` from paired samples ``(A_i, B_i)`` and its standard error by the delta method,
    ``SE² = Var(A − R B) / (N · mean(B)²)`` with ``R = mean(A)/mean(B)`` (a large-sample approximation: it needs
    ``mean(B)`` many standard errors away from 0).

    num, den : 1-d arrays (numpy or tensors) of finite numbers, of one length N >= 2; ``mean(den) != 0``.
    """
    a, b, scale_a, scale_b = _paired(num, den, ("num", "den"))
    if b.mean() == 0:
        raise ValueError("den must have a mean different from 0 (the ratio divides by it)")
    with np.errstate(over="ignore", invalid="ignore"):
        r = a.mean() / b.mean()
        se = _delta_method(np.stack([a, b]), np.array([1.0, -r]) / b.mean())
        r, se = r * (scale_a / scale_b), se * (scale_a / scale_b)
    if not (np.isfinite(r) and np.isfinite(se)):
        raise ValueError("the ratio of means of num and den, or its standard error, is not representable in float64; "
                         "rescale num or den")
    return float(r), float(se)


def dispersion(samples) -> tuple[float, float]:
    """``E[X²]/E[X]²`` (1 for a constant, larger the more ``X`` fluctuates relative to its mean) and its standard
    error by the delta method on ``(mean(X), mean(X²))``.

    For heavy-tailed ``X`` the standard error itself needs many samples: it uses ``E[X⁴]``, and is trustworthy only
    when ``N`` is large against ``E[X⁴]/E[X²]²``.

    samples : 1-d array (numpy or tensor) of N >= 2 finite numbers with a mean different from 0.
    """
    x, _, _, _ = _paired(samples, samples, ("samples", "samples"))
    m1, m2 = x.mean(), (x ** 2).mean()
    if m1 == 0:
        raise ValueError("samples must have a mean different from 0 (the dispersion divides by its square)")
    return float(m2 / m1 ** 2), _delta_method(np.stack([x, x ** 2]), np.array([-2 * m2 / m1 ** 3, 1 / m1 ** 2]))


@dataclass(frozen=True)
class Correlation:
    """A Pearson correlation ``r`` with its confidence interval ``[low, high]`` at ``level``, from ``n`` pairs;
    ``dof`` is the number of degrees of freedom of Fisher's z (``n − 3``, less one per group beyond the first)."""

    r: float
    low: float
    high: float
    n: int
    dof: int
    level: float


def correlation(x, y, *, groups=None, level: float = 0.95) -> Correlation:
    """Pearson correlation of paired samples, with a confidence interval from Fisher's z-transform,
    ``tanh(atanh(r) ± q / √dof)`` with ``q`` the normal quantile of ``level`` and ``dof = n − 3``.

    With ``groups`` (one label per pair), x and y are first centred within each group: the result is the partial
    correlation given the group, which ignores every difference between the groups' means, and each group beyond the
    first costs one degree of freedom (``dof = n − 3 − (G − 1)``). The interval assumes roughly normal pairs.

    x, y : 1-d arrays of finite numbers of one length n, each not constant (within groups). groups : None or n
    labels (numbers). level : in (0, 1).
    """
    from scipy.stats import norm

    a, b, _, _ = _paired(x, y, ("x", "y"))
    level = check_real(level, "level", low=0.0, high=1.0, low_open=True, high_open=True)
    n, extra = a.size, 0
    if groups is not None:
        g = as_numpy(groups, "groups").ravel()
        if g.size != n:
            raise ValueError(f"groups must hold one label per pair ({n}), got {g.size}")
        labels, index = np.unique(g, return_inverse=True)
        for arr in (a, b):
            arr -= (np.bincount(index, arr) / np.bincount(index))[index]
        extra = labels.size - 1
    dof = n - 3 - extra
    if dof < 1:
        raise ValueError(f"need more pairs for a confidence interval: n = {n} with {extra + 1} group(s) leaves "
                         f"{dof} degrees of freedom (at least 1)")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError("x and y must vary (within groups) for a correlation")
    r = float(np.clip(np.corrcoef(a, b)[0, 1], -1.0, 1.0))
    z, half = np.arctanh(np.clip(r, -1 + 1e-15, 1 - 1e-15)), norm.ppf(0.5 + level / 2) / np.sqrt(dof)
    return Correlation(r, float(np.tanh(z - half)), float(np.tanh(z + half)), n, dof, level)
