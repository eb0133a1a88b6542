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


def test_ratio_of_means_and_dispersion_exact_and_covering():
    assert stats.ratio_of_means([1.0, 3.0], [2.0, 2.0]) == (1.0, pytest.approx(0.5))
    assert stats.dispersion([2.0, 2.0, 2.0]) == (1.0, 0.0)
    rng = np.random.default_rng(0)
    hits_r = hits_d = 0
    for _ in range(200):
        x = rng.exponential(size=400)  # E[X²]/E[X]² = 2
        r, se = stats.ratio_of_means(x, x + 1.0)  # E[X]/E[X + 1] = 1/2
        hits_r += abs(r - 0.5) <= 2 * se
        d, se = stats.dispersion(x)
        hits_d += abs(d - 2.0) <= 2 * se
    # a 2-sigma interval covers about 95% of the time (the delta method is a large-sample approximation)
    assert 0.88 <= hits_r / 200 <= 0.99 and 0.85 <= hits_d / 200 <= 0.99
    with pytest.raises(ValueError, match="paired samples of one length"):
        stats.ratio_of_means([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="den must have a mean different from 0"):
        stats.ratio_of_means([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="mean different from 0"):
        stats.dispersion([1.0, -1.0])
    with pytest.raises(ValueError, match="samples contains NaN"):
        stats.dispersion([1.0, np.nan])


def test_correlation_matches_scipy_and_removes_group_means():
    from scipy.stats import pearsonr
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    c = stats.correlation(x, y)
    ref = pearsonr(x, y)
    assert c.r == pytest.approx(ref.statistic) and (c.low, c.high) == pytest.approx(tuple(ref.confidence_interval()))
    g = np.repeat([0, 1, 2], 10)
    shifted = stats.correlation(x + 10 * g, y - 7 * g, groups=g)  # group offsets that alone would correlate
    centred = [v - np.array([v[g == k].mean() for k in g]) for v in (x, y)]
    assert shifted.r == pytest.approx(np.corrcoef(*centred)[0, 1]) and shifted.dof == 25
    assert stats.correlation(x + 10 * g, y + 10 * g).r > 0.99
    with pytest.raises(ValueError, match="degrees of freedom"):
        stats.correlation([1.0, 2, 3, 4], [1.0, 3, 2, 4], groups=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="must vary"):
        stats.correlation([1.0, 1, 1, 1, 1], [1.0, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="one label per pair"):
        stats.correlation([1.0, 2, 3, 4, 5], [1.0, 2, 3, 4, 5], groups=[0, 1])
