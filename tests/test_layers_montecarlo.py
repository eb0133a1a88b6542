"""Analytic kernels of ntkcore.layers against Monte Carlo over the finite networks built from the same specification.

For convolutional networks (global average pooling, flatten, average pooling) and a two-block graph network, the
empirical NTK and NNGP of ``net.module(...)`` (NTK parameterization), averaged over 30 independent draws, must agree
with ``net.kernel`` within 5 standard errors of the ensemble, and one network's deviation from the kernel must shrink
like ``width^(-1/2)``. Everything is float64 on the CPU.

Why 5 standard errors is a fair bound: the mean over draws of a width-n network's empirical kernel differs from the
infinite-width kernel by a finite-width bias O(1/n), while its standard error over N draws is O(1/√(N n)); their
ratio is O(√N/√n) ≈ 0.3 at N = 30 and n = 256 (convolutions) or 1024 (the graph network). Each comparison is then a
t-statistic with 29 degrees of freedom; over the ≲ 15 distinct entries compared per kernel the largest |t| of a
correct implementation stays below about 3.5, while an error in a layer's scale (a factor σw², the patch size, the
number of positions or nodes) moves the mean by tens of standard errors. The last assertion of each test shows the
check has that power: the standard errors are a few per cent of the kernel's scale or less.
"""
import numpy as np
import pytest
import torch

from ntkcore import empirical, layers as L, stats

N_DRAWS = 30


def _images(seed, n=3, channels=2, size=5):
    x = torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x * torch.linspace(0.7, 1.3, n, dtype=torch.float64)[:, None, None, None]  # different norms


def _graphs(seed, n=3, nodes=6, channels=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, nodes, channels, generator=g, dtype=torch.float64)
    a = (torch.rand(n, nodes, nodes, generator=g) < 0.4).double()
    return x, ((a + a.transpose(1, 2)) > 0).double() + torch.eye(nodes, dtype=torch.float64)


NETS = {
    "conv_gap": lambda w: L.serial(L.Conv(w, 3, weight_var=2.0, bias_var=0.1), L.Relu(),
                                   L.Conv(w, 3, weight_var=2.0), L.Relu(), L.GlobalAvgPool(),
                                   L.Dense(1, weight_var=2.0)),
    "conv_flatten": lambda w: L.serial(L.Conv(w, 3, weight_var=2.0), L.Erf(),
                                       L.Conv(w, 2, padding="valid", weight_var=1.5, bias_var=0.2), L.Relu(),
                                       L.Flatten(), L.Dense(1, weight_var=2.0)),
    "conv_pool": lambda w: L.serial(L.Conv(w, 3, weight_var=2.0, bias_var=0.1), L.Relu(), L.AvgPool(2, stride=1),
                                    L.Conv(w, 2, stride=2, weight_var=2.0), L.Relu(), L.GlobalAvgPool(),
                                    L.Dense(1, weight_var=2.0)),
    "graph": lambda w: L.serial(L.Aggregate(), L.Dense(w, weight_var=2.0, bias_var=0.1), L.Relu(),
                                L.Aggregate(normalize="degree"), L.Dense(w, weight_var=2.0), L.Relu(),
                                L.GlobalSumPool(), L.Dense(1, weight_var=2.0)),
}


def _setup(name):
    if name == "graph":
        x, a = _graphs(1)
        return (x, a), (6, 3), {"adjacency": a}
    x = _images(2)
    return x, tuple(x.shape[1:]), {}


def _ensemble(net, inputs, in_shape, seeds):
    """Empirical (NNGP, NTK) of independent draws of ``net.module``, each ``(len(seeds), n, n)``."""
    nngps, ntks = [], []
    for seed in seeds:
        module = net.module(in_shape, seed=seed)
        nngps.append(empirical.nngp(module, inputs))
        ntks.append(empirical.ntk(module, inputs))
    return torch.stack(nngps), torch.stack(ntks)


def _max_t(samples, analytic):
    mean, se = stats.mean_sem(samples)
    iu = np.triu_indices(analytic.shape[0])
    return float(np.max(np.abs(mean - analytic.numpy())[iu] / se[iu])), float(np.max(se[iu]))


@pytest.mark.parametrize("name", sorted(NETS))
def test_ensemble_mean_matches_analytic_kernels(name):
    width = 1024 if name == "graph" else 256
    net = NETS[name](width)
    inputs, in_shape, kw = _setup(name)
    analytic = net.kernel(inputs if name != "graph" else inputs[0], **kw)
    nngp, ntk = _ensemble(net, inputs, in_shape, range(100, 100 + N_DRAWS))
    for samples, kernel in ((nngp, analytic.nngp), (ntk, analytic.ntk)):
        t, se = _max_t(samples, kernel)
        assert t <= 5.0, (name, t)
        assert se <= 0.03 * float(kernel.abs().max()), (name, se)  # the check resolves every entry to 3%


@pytest.mark.parametrize("name", ["conv_gap", "graph"])
def test_single_network_deviation_shrinks_like_inverse_sqrt_width(name):
    """RMS over entries of (empirical − analytic) NTK of one network, averaged over 12 networks, ∝ width^(-1/2).

    Fluctuations are O(n^(-1/2)) and the bias O(1/n). One network's RMS scatters by about 40% from network to
    network, so the log of a 12-network average has an SE of about 0.12 and the slope fitted over a 16-fold range
    of widths an SE of about 0.05: [−0.65, −0.35] is ±3 SE around −0.5, while no decay or 1/n lies far outside.
    """
    inputs, in_shape, kw = _setup(name)
    widths = [32, 64, 128, 256, 512]
    deviation = []
    for width in widths:
        net = NETS[name](width)
        analytic = net.kernel(inputs if name != "graph" else inputs[0], get="ntk", **kw).ntk
        _, ntk = _ensemble(net, inputs, in_shape, range(7_000 + width, 7_000 + width + 12))
        deviation.append((ntk - analytic).pow(2).mean(dim=(1, 2)).sqrt().mean().item())
    fit = stats.power_law(widths, deviation)
    assert -0.65 <= fit.slope <= -0.35, (name, fit, deviation)
