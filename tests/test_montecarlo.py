"""Analytic kernels against independent Monte Carlo over random finite networks.

The empirical NNGP and NTK of ``models.MLP`` (NTK parameterization), averaged over independent initializations,
must agree with ``kernels.fc`` (book appendix "Closed-form kernels and conventions", section "Fully connected
networks") within a tolerance taken from the ensemble's standard error; the deviation of a single network shrinks
like ``width^(-1/2)``. The lecture's two-layer network must average to ``kernels.two_layer_limit`` (book Chapter 2).
Everything is float64 on the CPU with the layerwise NTK.

Why 5 standard errors is a fair bound: for one hidden layer the ensemble mean is an unbiased estimate of the analytic
kernel at any width (h¹ is exactly Gaussian and the readout weights are independent of it); for two hidden layers the
finite-width bias is O(1/n) while the standard error of 50 networks is O(1/√(50 n)), a ratio of about √50/√n ≈ 0.2 at
n = 1024. Each comparison is then a t-statistic with 49 degrees of freedom; over the ~200 entries compared here the
largest |t| of a correct implementation is about 3.5, while any error in a layer's scale (a factor σw, √n or 2)
moves the mean by tens of standard errors.
"""
import numpy as np
import pytest
import torch

from ntkcore import empirical, kernels, models, stats

WEIGHT_VAR, BIAS_VAR = 2.0, 0.1
N_INPUTS, DIM = 6, 5
WIDTH, N_NETS = 1024, 50


def _inputs():
    g = torch.Generator().manual_seed(2024)
    x = torch.randn(N_INPUTS, DIM, generator=g, dtype=torch.float64)
    return x * torch.linspace(0.5, 1.5, N_INPUTS, dtype=torch.float64)[:, None]  # different norms


def _ensemble(x, activation, depth, width, seeds):
    """Empirical (NNGP, NTK) of independent networks, each ``(len(seeds), n, n)``."""
    nngps, ntks = [], []
    for seed in seeds:
        net = models.MLP(DIM, width, depth, activation=activation, weight_var=WEIGHT_VAR, bias_var=BIAS_VAR,
                         seed=seed)
        nngps.append(empirical.nngp(net, x))
        ntks.append(empirical.ntk(net, x, method="layerwise"))
    return torch.stack(nngps), torch.stack(ntks)


def _max_t(samples, analytic):
    """Largest |mean − analytic| / SE over the upper triangle (the kernels are symmetric)."""
    mean, se = stats.mean_sem(samples)
    iu = np.triu_indices(analytic.shape[0])
    return float(np.max(np.abs(mean - analytic.numpy())[iu] / se[iu]))


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("depth", [1, 2])
def test_ensemble_mean_matches_analytic_kernels(activation, depth):
    x = _inputs()
    analytic = kernels.fc(x, depth=depth, activation=activation, weight_var=WEIGHT_VAR, bias_var=BIAS_VAR)
    nngp, ntk = _ensemble(x, activation, depth, WIDTH, range(1000 * depth, 1000 * depth + N_NETS))
    assert _max_t(nngp, analytic.nngp) <= 5.0
    assert _max_t(ntk, analytic.ntk) <= 5.0


def test_single_network_deviation_shrinks_like_inverse_sqrt_width():
    """RMS over entries of (empirical − analytic) NTK of one network, averaged over networks, ∝ width^(-1/2).

    Fluctuations of a width-n network are O(n^(-1/2)) and its bias O(1/n). The RMS of a single network scatters by
    about 40% from network to network, so the log of a 16-network average has an SE of about 0.1 and the fitted
    slope over widths 64..2048 an SE of about 0.04: the window [−0.65, −0.35] is ±3.5 SE around −0.5, while a wrong
    power (e.g. no decay, or 1/n) lies far outside it.
    """
    x = _inputs()
    analytic = kernels.fc(x, depth=2, activation="relu", weight_var=WEIGHT_VAR, bias_var=BIAS_VAR).ntk
    widths, n_nets = [64, 128, 256, 512, 1024, 2048], [16, 16, 16, 16, 16, 8]
    deviation = []
    for width, count in zip(widths, n_nets):
        _, ntk = _ensemble(x, "relu", 2, width, range(50_000 + width, 50_000 + width + count))
        deviation.append((ntk - analytic).pow(2).mean(dim=(1, 2)).sqrt().mean().item())
    fit = stats.power_law(widths, deviation)
    assert -0.65 <= fit.slope <= -0.35, fit


def test_two_layer_ensemble_matches_lecture_limit():
    """Mean of H(0) over 50 TwoLayerNets of width 1024 ≈ H* = x_iᵀx_j E[σ'σ'] E[a²] (book Chapter 2)."""
    x = _inputs()
    x = x / x.norm(dim=1, keepdim=True)
    samples = torch.stack([empirical.ntk(models.TwoLayerNet(DIM, WIDTH, seed=s), x) for s in range(N_NETS)])
    assert _max_t(samples, kernels.two_layer_limit(x, a_second_moment=1 / 3)) <= 5.0
