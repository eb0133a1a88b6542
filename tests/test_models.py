"""Tests for ntkcore.models: the parameterizations of the book (appendix "Closed-form kernels and conventions",
section "Fully connected networks"; Chapter 2), seeding, and linearize."""
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from ntkcore import empirical, models
from ntkcore.device import available_devices

DEVICES = available_devices()
F64 = torch.float64


def _x(n, d, seed=0, device="cpu"):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64).to(device)


# ------------------------------------------------------------------------------------------------------------- MLP
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation, phi", [("relu", torch.relu), ("erf", torch.special.erf),
                                             ("tanh", torch.tanh), ("identity", lambda h: h)])
def test_mlp_ntk_parameterization_is_formula(device, activation, phi):
    """h¹ = σw/√d W¹x + σb b¹, h^{l+1} = σw/√n W^{l+1} φ(h^l) + σb b^{l+1} with the raw parameters (section 1)."""
    wv, bv, d, n = 1.7, 0.3, 4, 9
    net = models.MLP(d, n, 2, 3, activation=activation, weight_var=wv, bias_var=bv, seed=5, device=device)
    x = _x(7, d, device=device)
    lin = [m for m in net if isinstance(m, nn.Linear)]
    h = math.sqrt(wv / d) * x @ lin[0].weight.T + math.sqrt(bv) * lin[0].bias
    for layer in lin[1:]:
        h = math.sqrt(wv / n) * phi(h) @ layer.weight.T + math.sqrt(bv) * layer.bias
    torch.testing.assert_close(net(x), h, rtol=1e-12, atol=1e-12)
    assert net(x).shape == (7, 3) and net.features(x).shape == (7, n)
    torch.testing.assert_close(net.readout(net.features(x)), net(x), rtol=0, atol=0)


def test_mlp_raw_parameters_are_standard_normal_in_ntk_and_scaled_in_standard():
    """NTK parameterization: raw W, b ~ N(0, 1); standard: W ~ N(0, σw²/fan_in), b ~ N(0, σb²) (5 SE checks)."""
    wv, bv, width = 2.0, 0.5, 256
    for param, w_var, b_var in (("ntk", 1.0, 1.0), ("standard", wv / width, bv)):
        net = models.MLP(8, width, 2, 1, weight_var=wv, bias_var=bv, parameterization=param, seed=11)
        w = net[2].weight.detach().flatten()  # hidden-to-hidden, fan_in = width
        b = torch.cat([m.bias.detach() for m in net if isinstance(m, nn.Linear)])
        for sample, var in ((w, w_var), (b, b_var)):
            n = sample.numel()
            # sample mean has SE sqrt(var/n); sample variance of a Gaussian has SE var·sqrt(2/(n-1))
            assert abs(sample.mean().item()) <= 5 * math.sqrt(var / n)
            assert abs(sample.var().item() - var) <= 5 * var * math.sqrt(2 / (n - 1))


def test_ntk_and_standard_parameterizations_give_the_same_function_but_not_the_same_ntk():
    """Same seed, same draws: the two parameterizations compute the same f(x) at initialization, while their NTKs
    differ (standard parameterization does not rescale gradients by σw/√fan_in)."""
    x = _x(5, 6)
    kw = dict(activation="erf", weight_var=1.3, bias_var=0.2, seed=3)
    ntk_net, std_net = models.MLP(6, 20, 2, 2, **kw), models.MLP(6, 20, 2, 2, parameterization="standard", **kw)
    torch.testing.assert_close(ntk_net(x), std_net(x), rtol=1e-12, atol=1e-13)
    assert not torch.allclose(empirical.ntk(ntk_net, x), empirical.ntk(std_net, x), rtol=1e-2)


def test_mlp_bias_only_when_bias_var_positive_and_depth_zero_is_linear():
    no_bias = models.MLP(3, 5, 2, seed=0)
    assert all(m.bias is None for m in no_bias if isinstance(m, nn.Linear))
    with_bias = models.MLP(3, 5, 2, bias_var=0.1, seed=0)
    assert all(m.bias is not None for m in with_bias if isinstance(m, nn.Linear))
    linear = models.MLP(3, 5, 0, 2, seed=0)
    assert len(linear) == 1
    x = _x(4, 3)
    torch.testing.assert_close(linear(x), math.sqrt(2.0 / 3) * x @ linear[0].weight.T)
    torch.testing.assert_close(linear.features(x), x)


def test_mlp_seeding_is_deterministic():
    a, b = models.MLP(4, 16, 2, seed=7), models.MLP(4, 16, 2, seed=7)
    c = models.MLP(4, 16, 2, seed=8)
    d = models.MLP(4, 16, 2, seed=torch.Generator().manual_seed(7))
    x = _x(3, 4)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), d(x))
    assert not torch.allclose(a(x), c(x))
    # float32 is the same draw, rounded
    e = models.MLP(4, 16, 2, seed=7, dtype=torch.float32)
    assert e[0].weight.dtype == torch.float32
    torch.testing.assert_close(e[0].weight.double(), a[0].weight, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_models_follow_device_and_dtype(device):
    net = models.MLP(3, 4, 1, seed=0, device=device, dtype="float32")
    two = models.TwoLayerNet(3, 4, seed=0, device=device, dtype=torch.float32)
    for t in (*net.parameters(), *two.parameters(), *two.buffers()):
        assert t.device.type == torch.device(device).type and t.dtype == torch.float32


def test_activation_choices():
    x = _x(4, 3)
    net = models.MLP(3, 6, 1, activation=nn.Softplus(), seed=0)
    assert isinstance(net[1], nn.Softplus)
    wrapped = models.MLP(3, 6, 1, activation=torch.sin, seed=0)
    assert isinstance(wrapped[1], models.Elementwise)
    h = math.sqrt(2 / 3) * x @ wrapped[0].weight.T
    torch.testing.assert_close(wrapped(x), math.sqrt(2 / 6) * torch.sin(h) @ wrapped[2].weight.T)
    # each hidden layer gets its own copy of a module activation
    deep = models.MLP(3, 6, 2, activation=nn.Softplus(), seed=0)
    assert deep[1] is not deep[3]


@pytest.mark.parametrize("kwargs, name", [
    (dict(activation="sigmoid"), "activation"), (dict(activation=3), "activation"),
    (dict(parameterization="mup"), "parameterization"), (dict(weight_var=0.0), "weight_var"),
    (dict(bias_var=-1.0), "bias_var"), (dict(width=0), "width"), (dict(depth=-1), "depth"),
    (dict(width=2.5), "width"), (dict(out_features=0), "out_features"), (dict(seed=-1), "seed"),
    (dict(dtype="int32"), "dtype"),
])
def test_mlp_bad_arguments(kwargs, name):
    args = dict(in_features=3, width=4, depth=1, seed=0) | kwargs
    with pytest.raises(ValueError, match=name):
        models.MLP(**args)


# ------------------------------------------------------------------------------------------------------ TwoLayerNet
@pytest.mark.parametrize("a_dist", ["uniform", "sign"])
def test_two_layer_net_is_the_lecture_network(a_dist):
    """f(x) = m^(-1/2) Σ_r a_r σ(w_rᵀx), W trainable with N(0, 1) entries, a a fixed buffer (section 2)."""
    m, d = 2000, 3
    net = models.TwoLayerNet(d, m, a_dist=a_dist, seed=4)
    assert [n for n, _ in net.named_parameters()] == ["0.weight"] and net.W.shape == (m, d)
    assert not net.a.requires_grad and net.a.shape == (m,)
    assert any(b is net[2].weight for b in net.buffers())
    x = _x(5, d)
    expected = (net.a * torch.relu(x @ net.W.T)).sum(dim=1, keepdim=True) / math.sqrt(m)
    torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net.features(x), torch.relu(x @ net.W.T))
    a = net.a
    if a_dist == "sign":
        assert set(a.unique().tolist()) == {-1.0, 1.0}
    else:
        assert a.abs().max() <= 1 and abs(a.pow(2).mean().item() - 1 / 3) <= 5 * math.sqrt(4 / 45 / m)
    w = net.W.detach().flatten()
    assert abs(w.var().item() - 1.0) <= 5 * math.sqrt(2 / (w.numel() - 1))
    assert net.readout_weight_var == (1 / 3 if a_dist == "uniform" else 1.0)


@pytest.mark.parametrize("a_dist", ["uniform", "sign"])
def test_two_layer_net_antisymmetric_starts_at_zero(a_dist):
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = models.TwoLayerNet(5, 8, a_dist=a_dist, seed=3)
    anti = models.TwoLayerNet(5, 8, a_dist=a_dist, antisymmetric=True, seed=3)
    with torch.no_grad():
        assert float(plain(x).abs().max()) > 1e-3
        assert float(anti(x).abs().max()) < 1e-14
    # the first half of the units is the plain network's; the second half mirrors it with the readout negated
    assert torch.equal(anti.W[:4], plain.W[:4]) and torch.equal(anti.W[4:], plain.W[:4])
    assert torch.equal(anti.a[4:], -plain.a[:4])
    with pytest.raises(ValueError, match="width must be even"):
        models.TwoLayerNet(5, 7, antisymmetric=True, seed=0)


def test_two_layer_net_bad_arguments():
    with pytest.raises(ValueError, match="a_dist"):
        models.TwoLayerNet(3, 4, a_dist="normal", seed=0)
    with pytest.raises(ValueError, match="width"):
        models.TwoLayerNet(3, 0, seed=0)


# ------------------------------------------------------------------------------------------------------- linearize
def _jacobian_times(model, x, delta):
    """J(x) δ from the explicit Jacobian (jacrev), an independent route from linearize's jvp."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    out_dims = model(x).ndim
    return sum((jac[k].flatten(out_dims) * delta[k].flatten()).sum(-1) for k in params)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", [
    lambda dev: models.MLP(4, 12, 2, 2, activation="erf", bias_var=0.2, seed=1, device=dev),
    lambda dev: models.TwoLayerNet(4, 12, activation="erf", seed=1, device=dev),
])
def test_linearize_is_first_order_taylor(device, make):
    model = make(device)
    x = _x(6, 4, seed=2, device=device)
    lin = models.linearize(model)
    f0 = model(x).detach()
    torch.testing.assert_close(lin(x), f0, rtol=0, atol=0)
    assert {n for n, p in lin.named_parameters() if p.requires_grad} == {f"params.{i}" for i in range(len(lin.names))}

    opt = torch.optim.SGD(lin.parameters(), lr=0.05)
    target = torch.randn(f0.shape, generator=torch.Generator().manual_seed(3), dtype=F64).to(device)
    opt.zero_grad()
    (lin(x) - target).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lin.params)
    opt.step()

    theta0 = lin.theta0()
    delta = {n: (p - theta0[n]).detach() for n, p in zip(lin.names, lin.params)}
    assert sum(v.abs().sum() for v in delta.values()) > 0
    # f_lin(θ0 + δ) − f(θ0) = J δ, with J from an explicit Jacobian
    torch.testing.assert_close(lin(x) - f0, _jacobian_times(model, x, delta), rtol=1e-10, atol=1e-12)
    # linear in θ: doubling δ doubles the change
    with torch.no_grad():
        for n, p in zip(lin.names, lin.params):
            p.copy_(theta0[n] + 2 * delta[n])
    torch.testing.assert_close(lin(x) - f0, 2 * _jacobian_times(model, x, delta), rtol=1e-10, atol=1e-12)
    # the real network differs at second order: the gap scales like t² for θ0 + tδ
    gaps = []
    for t in (0.2, 0.1):
        moved = {n: theta0[n] + t * delta[n] for n in lin.names}
        real = functional_call(model, moved, (x,))
        gaps.append((real - f0 - t * _jacobian_times(model, x, delta)).abs().max().item())
    assert gaps[1] > 0 and 3.5 <= gaps[0] / gaps[1] <= 4.5
    # the original model is untouched
    torch.testing.assert_close(model(x), f0, rtol=0, atol=0)


def test_linearized_network_has_the_constant_ntk_of_its_base():
    model = models.MLP(3, 10, 1, 2, activation="relu", bias_var=0.1, seed=0)
    lin = models.linearize(model)
    x = _x(4, 3)
    with torch.no_grad():
        for p in lin.params:
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=F64))
    expected = empirical.ntk(model, x)
    torch.testing.assert_close(empirical.ntk(lin, x, method="jacobian"), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(empirical.ntk(lin, x, method="vjp-jvp"), expected, rtol=1e-10, atol=1e-12)


def test_linearize_bad_input():
    frozen = models.MLP(3, 4, 1, seed=0).requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        models.linearize(frozen)
    with pytest.raises(ValueError, match="model"):
        models.linearize(lambda x: x)


# ------------------------------------------------------------------------------------------------- input checks
def test_forward_checks_the_input_shape_device_and_dtype():
    mlp = models.MLP(3, 8, 2, seed=0)
    for model in (mlp, models.TwoLayerNet(3, 8, seed=0), models.linearize(mlp)):
        with pytest.raises(ValueError, match=r"x must have shape \(n, 3\) \(3 input features\), got shape \(2, 4\)"):
            model(torch.ones(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="x has dtype torch.float32 but the model's parameters have dtype torch.float64"):
        mlp(torch.ones(2, 3, dtype=torch.float32))
    with pytest.raises(ValueError, match="x must be a floating tensor of dtype torch.float64"):
        mlp(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="x is on meta but the model's parameters are on cpu"):
        models.linearize(mlp)(torch.ones(2, 3, dtype=F64, device="meta"))
    assert mlp(torch.ones(3, dtype=F64)).shape == (1,)  # a single input, as nn.Linear takes it
    # a hook, not an overridden forward: the networks keep the exact fast path of empirical.ntk
    assert empirical.layerwise_layers(mlp) is not None
    assert empirical.layerwise_layers(models.TwoLayerNet(3, 8, seed=0)) is not None


def test_sizes_are_bounded():
    with pytest.raises(ValueError, match="depth must be <= 1000"):
        models.MLP(3, 4, 10**6, seed=0)
    with pytest.raises(ValueError, match=r"MLP\(in_features=3, width=10000000, depth=3\) .* would need .* GiB, "
                                         "more than the .* GiB of memory"):
        models.MLP(3, 10**7, 3, seed=0)
    with pytest.raises(ValueError, match=r"TwoLayerNet\(in_features=3, width=1000000000000\) .* would need"):
        models.TwoLayerNet(3, 10**12, seed=0)
    with pytest.raises(ValueError, match="antisymmetric must be True or False"):
        models.TwoLayerNet(3, 4, antisymmetric="yes", seed=0)
