import numpy as np
import pytest
import torch

from ntkcore import stats


def test_power_law_recovers_slope_and_stderr_covers_truth():
    rng = np.random.default_rng(0)
    x = np.geomspace(10, 1e4, 12)
    hits = 0
    for _ in range(200):
        y = 3.0 * x**-0.5 * np.exp(0.05 * rng.standard_normal(x.size))
        fit = stats.power_law(x, y)
        hits += abs(fit.slope + 0.5) <= 2 * fit.stderr
    # a 2-sigma interval covers the true slope about 95% of the time (t with 10 dof: ~92.6%)
    assert 0.85 <= hits / 200 <= 0.99


def test_power_law_exact_and_call():
    x = np.array([1.0, 2.0, 4.0])
    fit = stats.power_law(x, 5 * x**2)
    assert fit.slope == pytest.approx(2.0) and fit.stderr == pytest.approx(0.0, abs=1e-12)
    assert fit(3.0) == pytest.approx(45.0)


def test_power_law_bad_input():
    with pytest.raises(ValueError, match="positive"):
        stats.power_law([1, 2], [1, -1])
    with pytest.raises(ValueError, match="same length"):
        stats.power_law([1, 2, 3], [1, 2])


def test_mean_sem_matches_numpy_and_takes_tensors():
    a = np.arange(12.0).reshape(4, 3)
    mean, sem = stats.mean_sem(torch.tensor(a))
    assert np.allclose(mean, a.mean(0)) and np.allclose(sem, a.std(0, ddof=1) / 2)
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_sem(np.ones((1, 3)))


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="x must hold at least two different values"):
        stats.power_law([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])  # a singular fit: no slope
    with pytest.raises(ValueError, match="x must be an array of real numbers"):
        stats.power_law(["1", "2"], [1.0, 2.0])
    with pytest.raises(ValueError, match="axis must be an axis of samples"):
        stats.mean_sem(np.ones((3, 2)), axis=2)


def test_mean_sem_rejects_nan_and_is_accurate_over_the_float_range():
    # NaN samples used to give a NaN mean silently; samples beyond 1e154 overflowed the squares of the standard
    # deviation (inf, with a RuntimeWarning) and below 1e-154 underflowed them (a standard error of 0).
    a = np.random.default_rng(0).standard_normal((5, 3))
    mean, sem = stats.mean_sem(a)
    for scale in (1e-300, 1e-200, 1e200, 1e300):
        m, s = stats.mean_sem(a * scale)
        assert np.allclose(m / scale, mean, rtol=1e-13) and np.allclose(s / scale, sem, rtol=1e-13)
    b = a.copy()
    b[0, 0] = np.nan
    with pytest.raises(ValueError, match="samples contains NaN or inf"):
        stats.mean_sem(b)
