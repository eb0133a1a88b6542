"""Tests of ntkcore.early_stopping (optimal stopping time and its distance to equilibrium)."""
import math
import warnings

import numpy as np
import pytest
import torch

from ntkcore import early_stopping as es


def overshoot_curve(t, gamma=0.5, amplitude=0.2, eq=0.3):
    """ℓ(t) = ℓ_eq − A γt e^{1 − γt}: minimum ℓ_eq − A at t = 1/γ, then exponential return to ℓ_eq."""
    s = gamma * t
    return eq - amplitude * s * np.exp(1.0 - s)


def test_loss_curve_is_mse_over_test_points():
    f = torch.tensor([[0.0, 0.0], [0.5, -0.5], [1.0, -1.5]], dtype=torch.float64)
    y = np.array([1.0, -1.0])
    assert np.allclose(es.loss_curve(f, y), [1.0, 0.25, 0.125])


def test_overshoot_gives_analytic_optimum_and_equilibration_time():
    t = np.linspace(0.0, 60.0, 60001)
    ell = overshoot_curve(t)
    tol = 1e-3
    r = es.early_stopping(t, ell, tol=tol, loss_eq=0.3)
    assert r.early and r.t_opt == pytest.approx(2.0, abs=2e-3)
    assert r.gain == pytest.approx(0.2, rel=1e-6)
    # t_eq solves A s e^{1-s} = tol for s > 1 (s = γt); find it by bisection on the closed form
    lo, hi = 1.0, 60.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 0.2 * mid * math.exp(1 - mid) > tol else (lo, mid)
    assert r.t_eq == pytest.approx(lo / 0.5, abs=2e-3)
    assert r.delta_t == pytest.approx(r.t_eq - r.t_opt)


def test_monotone_approach_has_no_early_stopping_point():
    t = np.linspace(0.0, 30.0, 301)
    ell = 0.3 + 0.5 * np.exp(-0.4 * t)  # loss decreases to equilibrium: best at the end
    r = es.early_stopping(t, ell, tol=1e-4)
    assert not r.early and r.delta_t == 0.0
    assert r.t_opt == 30.0 and r.loss_eq == ell[-1]
    inside = np.abs(ell - ell[-1]) <= 1e-4
    k = np.argmax(inside)
    assert inside[k:].all() and r.t_eq == t[k] and not inside[k - 1]  # tolerance measured from loss[-1]


def test_tolerance_hides_small_overshoots():
    t = np.linspace(0.0, 60.0, 6001)
    ell = overshoot_curve(t, amplitude=5e-4)
    assert not es.early_stopping(t, ell, tol=1e-3, loss_eq=0.3).early
    assert es.early_stopping(t, ell, tol=1e-4, loss_eq=0.3).early


def test_trajectory_not_at_equilibrium_gives_infinite_t_eq():
    t = np.linspace(0.0, 1.0, 11)
    r = es.early_stopping(t, 1.0 - t, tol=1e-3, loss_eq=-1.0)
    assert math.isinf(r.t_eq) and not r.early


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(times=[0.0, 1.0], loss=[1.0], tol=0.1), "same length"),
        (dict(times=[0.0, 0.0], loss=[1.0, 0.5], tol=0.1), "increasing"),
        (dict(times=[0.0, 1.0], loss=[1.0, float("nan")], tol=0.1), "loss"),
        (dict(times=[0.0, 1.0], loss=[1.0, 0.5], tol=-1.0), "tol"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        es.early_stopping(kwargs.pop("times"), kwargs.pop("loss"), **kwargs)


def test_loss_curve_bad_shapes():
    with pytest.raises(ValueError, match="predictions"):
        es.loss_curve(np.zeros((3, 2)), np.zeros(3))


def test_numeric_strings_are_not_parsed():
    with pytest.raises(ValueError, match="times must be an array of real numbers"):
        es.early_stopping(["0", "1"], [1.0, 0.5], tol=0.1)
    with pytest.raises(ValueError, match="loss contains NaN"):
        es.early_stopping([0.0, 1.0], [1.0, float("nan")], tol=0.1)


def test_loss_curve_beyond_the_float_range_is_a_clear_error():
    # Predictions of 1e200 used to give inf with an overflow RuntimeWarning; tiny ones underflowed to 0.
    f = np.random.default_rng(0).standard_normal((4, 3))
    y = np.ones(3)
    ref = es.loss_curve(f, y)
    assert np.allclose(es.loss_curve(f * 1e-150, y * 1e-150) / 1e-300, ref, rtol=1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="predictions and targets"):
            es.loss_curve(f * 1e200, y)
