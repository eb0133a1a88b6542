"""Layers that are not trained (Arora et al. 2020's fixed layers): ``Dense(..., trainable=False)`` and
``kernels.fc(..., fix=k)``, the first ``k`` dense layers frozen.

Exact checks: ``fix = 0`` is the NTK of the fully trained network, ``fix = depth`` (only the readout trained) is the
NNGP, and every ``fix`` of a depth-2 ReLU network against the recursion written out by hand,
``Θ¹ = [fix = 0] K¹``, ``Θ^{l+1} = [l ≥ fix] K^{l+1} + K̇^{l+1} Θ^l`` (ntkcore.kernels' module docstring).
Monte Carlo: the empirical NTK of the finite network built from the same specification, whose frozen weights have
``requires_grad=False``, averaged over draws, agrees with the kernel (same bound as tests/test_layers_montecarlo.py).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkcore import empirical, kernels, layers as L, stats

SW, SB = 2.0, 0.1  # weight and bias variances of every layer


def _points(n=5, d=3, seed=0):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x * torch.linspace(0.6, 1.5, n, dtype=torch.float64)[:, None]  # different norms


def _relu_step(k):
    """(E[relu(u) relu(v)], E[relu′(u) relu′(v)]) for (u, v) of covariance ``k`` (Cho & Saul 2009); the angle on the
    diagonal is set to exactly 0, as the library does."""
    q = np.sqrt(np.outer(np.diag(k), np.diag(k)))
    theta = np.arccos(np.clip(k / q, -1.0, 1.0))
    np.fill_diagonal(theta, 0.0)
    e = q * (np.sin(theta) + (math.pi - theta) * np.cos(theta)) / (2 * math.pi)
    return e, (math.pi - theta) / (2 * math.pi)


def _hand_depth_two(x, fix):
    """NNGP and NTK of Dense, ReLU, Dense, ReLU, Dense with the first ``fix`` dense layers not trained."""
    k = SW * x @ x.T / x.shape[1] + SB            # K¹
    theta = k if fix == 0 else np.zeros_like(k)   # Θ¹
    for layer in (1, 2):                          # K^{l+1}, Θ^{l+1} for l = 1, 2
        e, edot = _relu_step(k)
        k = SW * e + SB
        theta = SW * edot * theta + (k if layer >= fix else 0.0)
    return k, theta


@pytest.mark.parametrize("fix", [0, 1, 2])
def test_depth_two_matches_hand_recursion(fix):
    x = _points()
    ours = kernels.fc(x, depth=2, weight_var=SW, bias_var=SB, fix=fix)
    nngp, ntk = _hand_depth_two(x.numpy(), fix)
    np.testing.assert_allclose(ours.nngp.numpy(), nngp, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours.ntk.numpy(), ntk, rtol=1e-12, atol=0)


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_fix_zero_is_the_ntk_and_fix_depth_the_nngp(activation, depth):
    x = _points(seed=depth)
    full = kernels.fc(x, depth=depth, activation=activation, weight_var=SW, bias_var=SB)
    free = kernels.fc(x, depth=depth, activation=activation, weight_var=SW, bias_var=SB, fix=0)
    frozen = kernels.fc(x, depth=depth, activation=activation, weight_var=SW, bias_var=SB, fix=depth)
    torch.testing.assert_close(free.ntk, full.ntk, rtol=0, atol=0)
    torch.testing.assert_close(frozen.ntk, full.nngp, rtol=1e-14, atol=0)
    torch.testing.assert_close(frozen.nngp, full.nngp, rtol=0, atol=0)  # the NNGP does not depend on fix
    if depth:  # each frozen layer removes a nonzero term: the NTK decreases strictly on the diagonal
        diag = [kernels.fc(x, depth=depth, activation=activation, weight_var=SW, bias_var=SB, fix=f).ntk.diagonal()
                for f in range(depth + 1)]
        assert all(bool((a > b).all()) for a, b in zip(diag, diag[1:]))


def test_fc_is_the_serial_composition_of_frozen_dense_layers():
    """fc(fix=1) is the kernel of the layers written out with Dense(..., trainable=False), and its finite network
    freezes exactly the first dense layer's weight and bias."""
    x = _points()
    spec = L.serial(L.Dense(4, weight_var=SW, bias_var=SB, trainable=False), L.Relu(),
                    L.Dense(4, weight_var=SW, bias_var=SB), L.Relu(), L.Dense(1, weight_var=SW, bias_var=SB))
    torch.testing.assert_close(kernels.fc(x, depth=2, weight_var=SW, bias_var=SB, fix=1).ntk, spec.kernel(x).ntk,
                               rtol=0, atol=0)
    for fix in range(3):
        module = kernels.fc_network(2, width=4, weight_var=SW, bias_var=SB, fix=fix).module((3,), seed=0)
        assert [p.requires_grad for p in module.parameters()] == [False] * 2 * fix + [True] * 2 * (3 - fix)


@pytest.mark.parametrize("fix", [1, 2])
def test_empirical_ntk_of_the_frozen_network_converges(fix):
    """Mean over 30 draws of the empirical NTK of the width-512 network, against the analytic kernel.

    As in tests/test_layers_montecarlo.py: the finite-width bias is O(1/n) and the standard error of the mean over
    N = 30 draws O(1/√(N n)), a ratio of about √N/√n ≈ 0.25; each entry is a t-statistic with 29 degrees of freedom
    and the largest |t| over the 15 distinct entries of a correct kernel stays below about 3.5 (over ten blocks of
    30 seeds it ranged from 0.8 to 2.8, and the largest standard error from 1.7% to 3.0% of the kernel's scale).
    Keeping the dropped terms (the fully trained NTK) puts the mean 20 to 110 standard errors away in those blocks:
    the last line checks that the test would see it."""
    x = _points(n=5, d=3, seed=4)
    net = kernels.fc_network(2, width=512, weight_var=SW, bias_var=SB, fix=fix)
    analytic = net.kernel(x, get="ntk").ntk.numpy()
    samples = torch.stack([empirical.ntk(net.module((3,), seed=seed), x) for seed in range(200, 230)])
    mean, se = stats.mean_sem(samples)
    iu = np.triu_indices(len(x))
    t = np.abs(mean - analytic)[iu] / se[iu]
    assert t.max() <= 5.0, t.max()
    assert se[iu].max() <= 0.04 * np.abs(analytic).max()  # resolves every entry to 4%
    full = kernels.fc(x, depth=2, weight_var=SW, bias_var=SB).ntk.numpy()
    assert (np.abs(mean - full)[iu] / se[iu]).max() > 10.0


@pytest.mark.parametrize("fix", [-1, 3, True, 1.0, "1"])
def test_bad_fix_is_a_value_error_naming_it(fix):
    with pytest.raises(ValueError, match="fix"):
        kernels.fc(_points(), depth=2, fix=fix)


def test_fix_and_trainable_layers_are_exclusive_and_checked():
    with pytest.raises(ValueError, match="fix or trainable_layers"):
        kernels.fc_network(2, fix=1, trainable_layers=[2])
    with pytest.raises(ValueError, match="trainable_layers"):
        kernels.fc_network(2, trainable_layers=[0, 3])
