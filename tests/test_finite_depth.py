"""Tests for ntkcore.finite_depth: the exact mean of the NTK diagonal of deep ReLU networks, the chi-square sampler,
the batched ensembles (against ntkcore.empirical.ntk and autograd), and the block structure of a kernel (book chapter
"Depth and initialization")."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from torch import nn

from ntkcore import empirical, finite_depth as fd, kernels, models, stats, train

F64 = torch.float64


def _unit(d, norm=1.0):
    x = torch.zeros(d, dtype=F64)
    x[0] = norm
    return x


# ------------------------------------------------------------------------------------------------- closed form
def test_mean_by_hand():
    """L = 0: Θ = ‖x‖² + 1. L = 1, widths (d, n): weights ‖x‖² r (1 + n/d), biases 1 + r."""
    assert fd.mean_ntk_diagonal([5], weight_var=1.3, sq_norm=2.0) == (2.0, 1.0)
    w, b = fd.mean_ntk_diagonal([4, 6], weight_var=3.0, sq_norm=2.0)
    assert w == pytest.approx(2.0 * 1.5 * (1 + 6 / 4)) and b == pytest.approx(1 + 1.5)
    assert fd.mean_ntk_diagonal([4, 6], weight_var=3.0, biases=False).biases == 0.0
    # layer 2's bias term needs layer 1 alive: r² (1 - 2^-n1)
    _, b2 = fd.mean_ntk_diagonal([3, 2, 5], weight_var=2.0)
    assert b2 == pytest.approx(1 + 1 + 0.75)


@pytest.mark.parametrize("widths, weight_var", [([5, 3, 3, 3], 1.0), ([4, 2, 2, 2], 2.5), ([3, 8, 2, 5], 1.3),
                                                ([10, 20, 20, 20, 20], 2.0)])
def test_mean_matches_the_sampler_and_the_ensemble(widths, weight_var):
    """Both parts within 4 standard errors of the chi-square sampler (200k networks), the total within 4 standard
    errors of full networks (4k); at widths 2 and 3 the probabilities 1 − 2^{−n} of a live layer matter."""
    mean = fd.mean_ntk_diagonal(widths, weight_var=weight_var, sq_norm=2.0)
    draws = fd.sample_ntk_diagonal(200_000, widths, weight_var=weight_var, sq_norm=2.0, seed=3)
    for part, exact in ((draws.weights, mean.weights), (draws.biases, mean.biases)):
        m, se = stats.mean_sem(part)
        assert abs(m - exact) <= 4 * se
    ens = fd.ReluEnsemble(4000, widths, weight_var=weight_var, seed=4)
    m, se = stats.mean_sem(ens.ntk(_unit(widths[0], math.sqrt(2.0)))[:, 0, 0])
    assert abs(m - mean.total) <= 4 * se


def test_without_the_dead_layer_factors_the_bias_mean_is_wrong_at_width_two():
    """The factors matter: at widths 2 the bias part's naive mean 1 + r + r² + r³ is 10 standard errors off."""
    draws = fd.sample_ntk_diagonal(200_000, [4, 2, 2, 2], weight_var=2.0, seed=1)
    m, se = stats.mean_sem(draws.biases)
    assert abs(m - fd.mean_ntk_diagonal([4, 2, 2, 2], weight_var=2.0).biases) <= 4 * se
    assert abs(m - 4.0) > 10 * se


def test_ntk_parameterization_mean_is_the_infinite_width_kernel():
    """Each weight term times σw²/n_{l−1}: the mean of the diagonal is kernels.fc's NTK at every width."""
    widths, wv = [6, 5, 5, 5], 2.2
    ens = fd.ReluEnsemble(20_000, widths, weight_var=wv, biases=False, seed=2)
    x = _unit(6, 1.3)
    m, se = stats.mean_sem(ens.ntk(x, parameterization="ntk")[:, 0, 0])
    limit = float(kernels.fc(x[None], depth=3, weight_var=wv).ntk[0, 0])
    assert abs(m - limit) <= 4 * se


# ------------------------------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("widths, weight_var", [([5, 3, 3, 3], 1.0), ([6, 8, 8, 8, 8], 2.2), ([4, 2, 2], 2.0)])
def test_sampler_has_the_law_of_full_networks(widths, weight_var):
    """Two-sample Kolmogorov-Smirnov tests (20k each) between the sampler and full networks: both parts."""
    ens = fd.ReluEnsemble(20_000, widths, weight_var=weight_var, seed=7)
    x = _unit(widths[0], 1.5)
    total = ens.ntk(x)[:, 0, 0].numpy()
    draws = fd.sample_ntk_diagonal(20_000, widths, weight_var=weight_var, sq_norm=2.25, seed=8)
    assert ks_2samp(total, draws.total.numpy()).pvalue > 1e-3
    assert ks_2samp(fd.ReluEnsemble(20_000, widths, weight_var=weight_var, biases=False, seed=7).ntk(x)[:, 0, 0]
                    .numpy(), draws.weights.numpy()).pvalue > 1e-3


def test_sampler_scale_lemma_and_seeding():
    """Same seed: the weight parts at two σw² differ by exactly (σw'²/σw²)^L; the bias parts do not."""
    a = fd.sample_ntk_diagonal(1000, [7, 5, 5, 5, 5], weight_var=1.0, seed=0)
    b = fd.sample_ntk_diagonal(1000, [7, 5, 5, 5, 5], weight_var=2.2, seed=0)
    torch.testing.assert_close(b.weights, a.weights * 2.2 ** 4, rtol=1e-12, atol=0)
    assert not torch.allclose(b.biases, a.biases * 2.2 ** 4)
    c = fd.sample_ntk_diagonal(1000, [7, 5, 5, 5, 5], weight_var=1.0, seed=torch.Generator().manual_seed(0))
    assert torch.equal(c.weights, fd.sample_ntk_diagonal(1000, [7, 5, 5, 5, 5], weight_var=1.0,
                                                         seed=torch.Generator().manual_seed(0)).weights)


def test_sampler_takes_several_weight_variances_at_once():
    """A sequence of σw² gives (S, N) draws from one chain, the same as separate calls with the same seed."""
    both = fd.sample_ntk_diagonal(500, [6, 4, 4, 4], weight_var=[1.0, 2.5], seed=9)
    assert both.weights.shape == both.biases.shape == (2, 500)
    for i, wv in enumerate((1.0, 2.5)):
        one = fd.sample_ntk_diagonal(500, [6, 4, 4, 4], weight_var=wv, seed=9)
        torch.testing.assert_close(both.weights[i], one.weights, rtol=1e-14, atol=0)
        torch.testing.assert_close(both.biases[i], one.biases, rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------------- ensembles
@pytest.mark.parametrize("biases", [True, False])
def test_ensemble_kernel_is_the_empirical_ntk_of_its_members(biases):
    ens = fd.ReluEnsemble(4, [7, 6, 6, 6], weight_var=1.7, biases=biases, seed=1)
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    kernel = ens.ntk(x)
    for k in range(4):
        member = ens.member(k)
        assert sum(p.numel() for p in member.parameters()) == 7 * 6 + 6 * 6 * 2 + 6 + (19 if biases else 0)
        torch.testing.assert_close(empirical.ntk(member, x), kernel[k], rtol=1e-12, atol=1e-12)


def test_ensemble_in_ntk_parameterization_is_the_mlp_in_ntk_parameterization():
    ens = fd.ReluEnsemble(2, [7, 6, 6], weight_var=1.7, seed=1)
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    net = models.MLP(7, 6, 2, weight_var=1.7, seed=0)
    with torch.no_grad():
        for layer, w, fan_in in zip([m for m in net if isinstance(m, nn.Linear)], ens.weights, [7, 6, 6]):
            layer.weight.copy_(w[1] / math.sqrt(1.7 / fan_in))
    torch.testing.assert_close(ens.ntk(x, parameterization="ntk")[1], empirical.ntk(net, x), rtol=1e-12, atol=1e-12)


def _autograd_change(ens, x, target, lr):
    """⟨∇Θ, ∇f⟩ by two backward passes (the definition), for comparison."""
    params = [w.detach().clone().requires_grad_(True) for w in ens.weights]
    biases = [b.detach().clone().requires_grad_(True) for b in ens.biases] if ens.has_biases else []
    a = x.reshape(-1, 1).expand(ens.n_networks, -1, -1)
    for layer, w in enumerate(params):
        h = w @ a + (biases[layer].unsqueeze(-1) if biases else 0)
        a = torch.relu(h)
    f = h[:, 0, 0]
    grads = torch.autograd.grad(f.sum(), params + biases, create_graph=True)
    theta = sum((g ** 2).flatten(1).sum(1) for g in grads)
    dtheta = torch.autograd.grad(theta.sum(), params + biases, allow_unused=True)
    inner = sum((u * g).flatten(1).sum(1) for u, g in zip(dtheta, grads) if u is not None)
    return theta.detach(), (-lr * (f - target) * inner).detach()


@pytest.mark.parametrize("biases", [True, False])
def test_one_step_change_is_the_derivative_along_the_gradient(biases):
    ens = fd.ReluEnsemble(6, [5, 4, 6, 3], weight_var=1.8, biases=biases, seed=2)
    x = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=F64)
    step = ens.one_step_change(x, target=0.7, lr=0.3)
    theta, change = _autograd_change(ens, x, 0.7, 0.3)
    torch.testing.assert_close(step.theta, theta, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(step.change, change, rtol=1e-10, atol=1e-12)


def test_one_step_change_predicts_a_small_gradient_step_of_the_network():
    """One plain gradient step of ntkcore.train.fit on ½(f(x) − y)²: the NTK changes by the first-order prediction,
    with an error of order η² (halving η quarters it)."""
    ens = fd.ReluEnsemble(1, [6, 8, 8, 8], weight_var=2.0, seed=5)
    x = _unit(6)[None]
    predicted = ens.one_step_change(x, target=1.0, lr=1.0).change[0]
    errors = []
    for lr in (1e-3, 5e-4):
        net = ens.member(0)
        before = empirical.ntk(net, x)[0, 0]
        train.fit(net, x, torch.tensor([1.0], dtype=F64), lr=lr, steps=1, record_steps=[0, 1])
        errors.append(abs(float(empirical.ntk(net, x)[0, 0] - before) - lr * float(predicted)))
    assert errors[0] < 1e-2 * abs(1e-3 * float(predicted))  # measured: 0.3%
    assert 3.5 < errors[0] / errors[1] < 4.5


def test_with_weight_var_rescales_the_same_draws():
    ens = fd.ReluEnsemble(50, [4, 5, 5], weight_var=1.0, seed=3)
    other = ens.with_weight_var(2.5)
    x = _unit(4)
    # NTK parameterization, no biases: every term scales as σw² · (σw²)^L
    torch.testing.assert_close(other.ntk(x, parameterization="ntk"), ens.ntk(x, parameterization="ntk") * 2.5 ** 3,
                               rtol=1e-12, atol=0)
    assert ens.weight_var == 1.0 and other.weight_var == 2.5


def test_relu_network_has_zero_trainable_biases_in_standard_parameterization():
    net = fd.relu_network(5, 7, 3, 2, weight_var=2.0, seed=0)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert net.parameterization == "standard" and all(m.bias.requires_grad for m in linears)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in linears)
    bare = fd.relu_network(5, 7, 3, 2, weight_var=2.0, seed=0, biases=False)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(net(x), bare(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- block structure
def test_block_structure_of_a_hand_made_kernel():
    k = np.array([[4.0, 2, 1, 0], [2, 4, 0, 1], [1, 0, 4, 3], [0, 1, 3, 4]])
    s = fd.block_structure(k, [0, 0, 1, 1])
    assert (s.diagonal, s.same_class, s.other_class) == (4.0, 26 / 8, 4 / 8)
    assert s.same_ratio == 26 / 32 and s.other_ratio == 1 / 8 and s.gap == pytest.approx(22 / 32)
    perm = [2, 0, 3, 1]  # the order of the points does not matter
    assert fd.block_structure(torch.tensor(k[np.ix_(perm, perm)]), np.array([1, 0, 1, 0])) == s


@pytest.mark.parametrize("kernel, labels, match", [
    (np.ones((3, 4)), [0, 1, 0], "square"),
    (np.array([[1.0, 2.0], [0.0, 1.0]]), [0, 1], "symmetric"),
    (np.eye(4), [0, 1, 0], "labels has 3 examples"),
    (np.eye(3), [0, 0, 1], "same number of points"),
    (np.eye(2), [1, 1], "at least two classes"),
    (-np.eye(2), [0, 1], "positive mean diagonal"),
    (np.eye(2), [0.5, 1], "integer classes"),
])
def test_block_structure_bad_input(kernel, labels, match):
    with pytest.raises(ValueError, match=match):
        fd.block_structure(kernel, labels)


# ------------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, match", [
    (lambda: fd.mean_ntk_diagonal([], weight_var=1.0), "widths must be a sequence"),
    (lambda: fd.mean_ntk_diagonal([3, 0], weight_var=1.0), r"widths\[1\] must be >= 1"),
    (lambda: fd.mean_ntk_diagonal([3, 2], weight_var=0.0), "weight_var must be > 0"),
    (lambda: fd.mean_ntk_diagonal([3, 2], weight_var=1.0, sq_norm=-1.0), "sq_norm must be >= 0"),
    (lambda: fd.mean_ntk_diagonal([3, 2], weight_var=1.0, biases=1), "biases must be True or False"),
    (lambda: fd.sample_ntk_diagonal(0, [3, 2], weight_var=1.0, seed=0), "n_networks must be >= 1"),
    (lambda: fd.sample_ntk_diagonal(5, "abc", weight_var=1.0, seed=0), "widths must be a sequence"),
    (lambda: fd.sample_ntk_diagonal(5, [3, 2], weight_var=[], seed=0), "at least one value"),
    (lambda: fd.sample_ntk_diagonal(5, [3, 2], weight_var=[1.0, -1.0], seed=0), "weight_var must be > 0"),
    (lambda: fd.sample_ntk_diagonal(5, [3, 2], weight_var=1e10, sq_norm=1e300, seed=0), "not representable"),
    (lambda: fd.ReluEnsemble(2, [3, 2], weight_var=1.0, seed=0).ntk(torch.ones(2, 4, dtype=F64)),
     r"x must have shape \(n, 3\)"),
    (lambda: fd.ReluEnsemble(2, [3, 2], weight_var=1.0, seed=0).ntk(torch.ones(1, 3, dtype=F64), parameterization="x"),
     "parameterization='x' is not known"),
    (lambda: fd.ReluEnsemble(2, [3, 2], weight_var=1.0, seed=0).one_step_change(torch.ones(2, 3, dtype=F64)),
     "x must be one input"),
    (lambda: fd.ReluEnsemble(2, [3, 2], weight_var=1.0, seed=0).one_step_change(torch.ones(3, dtype=F64), lr=0),
     "lr must be > 0"),
    (lambda: fd.ReluEnsemble(2, [3, 2, 4], weight_var=1.0, seed=0).member(0), "one width"),
    (lambda: fd.ReluEnsemble(2, [3, 2], weight_var=1.0, seed=0).member(2), "k must be <= 1"),
])
def test_bad_input_is_a_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
