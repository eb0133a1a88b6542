"""Tests for ntkcore.empirical: the three exact NTK methods agree with each other and with the definition, the
lecture's H(0), the empirical NNGP, and input checks."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from ntkcore import empirical, kernels, models
from ntkcore.device import available_devices

DEVICES = available_devices()
F64 = torch.float64
METHODS = ("layerwise", "jacobian", "vjp-jvp")


def _x(n, d, seed=0, device="cpu"):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64).to(device)


def _reinit(module, seed):
    """Deterministic N(0, 0.5²) parameters for hand-built test networks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))
    return module


def _ntk_by_definition(model, x1, x2):
    """Θ_ijab = Σ_p ∂f_a(x_i)/∂θ_p ∂f_b(x_j)/∂θ_p from one autograd.grad call per (example, output)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def jac(x):
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i:i + 1]).reshape(-1)
            rows.append(torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[a], params,
                                                                                            retain_graph=True)])
                                     for a in range(out.numel())]))
        return torch.stack(rows)  # (n, O, P)

    return torch.einsum("iap,jbp->ijab", jac(x1), jac(x2))


class SkipNet(nn.Module):
    """Not a chain: a residual connection, so only the generic methods apply."""

    def __init__(self, d, h, o):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, o)

    def forward(self, x):
        z = torch.tanh(self.inp(x))
        return self.out(z + torch.tanh(self.mid(z)))


def _conv_net():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 2))


# ------------------------------------------------------------------------------------------------ method agreement
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("activation", ["relu", "erf", "identity"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("with_x2", [False, True])
def test_methods_agree_on_mlps(parameterization, activation, depth, with_x2):
    net = models.MLP(5, 8, depth, 3, activation=activation, weight_var=1.8, bias_var=0.2,
                     parameterization=parameterization, seed=depth)
    x1, x2 = _x(4, 5, seed=1), (_x(3, 5, seed=2) if with_x2 else None)
    assert empirical.layerwise_layers(net) is not None
    results = {m: empirical.ntk(net, x1, x2, method=m) for m in METHODS}
    shape = (4, 3 if with_x2 else 4, 3, 3)
    for m, r in results.items():
        assert r.shape == shape and r.dtype == F64, m
        torch.testing.assert_close(r, results["jacobian"], rtol=0, atol=1e-6 * max(1.0, r.abs().max().item()))
    torch.testing.assert_close(empirical.ntk(net, x1, x2), results["layerwise"], rtol=0, atol=0)  # auto


def test_methods_agree_with_the_definition():
    """Against a naive autograd loop that shares no code with the torch.func methods."""
    net = models.MLP(3, 6, 2, 2, activation="tanh", bias_var=0.3, seed=9)
    x1, x2 = _x(3, 3, seed=4), _x(2, 3, seed=5)
    expected = _ntk_by_definition(net, x1, x2)
    for m in METHODS:
        torch.testing.assert_close(empirical.ntk(net, x1, x2, method=m), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make, shape", [
    (lambda: SkipNet(4, 6, 2), (4,)),
    (_conv_net, (1, 5, 5)),
])
def test_generic_methods_agree_on_non_mlp_models(device, make, shape):
    net = _reinit(make().to(F64), seed=3).to(device)
    x1 = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0), dtype=F64).to(device)
    x2 = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1), dtype=F64).to(device)
    assert empirical.layerwise_layers(net) is None
    for a, b in ((x1, None), (x1, x2)):
        jac = empirical.ntk(net, a, b, method="jacobian")
        torch.testing.assert_close(empirical.ntk(net, a, b, method="vjp-jvp"), jac, rtol=0, atol=1e-10)
        torch.testing.assert_close(empirical.ntk(net, a, b), jac, rtol=0, atol=0)  # auto = jacobian
    torch.testing.assert_close(jac, _ntk_by_definition(net.cpu(), x1.cpu(), x2.cpu()).to(device),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="layerwise"):
        empirical.ntk(net, x1, method="layerwise")


@pytest.mark.parametrize("device", DEVICES)
def test_layerwise_on_plain_sequential_with_frozen_layer(device):
    """A plain nn.Sequential qualifies; a frozen layer is left out by every method."""
    net = _reinit(nn.Sequential(nn.Linear(3, 7), nn.Tanh(), nn.Sequential(nn.Linear(7, 5), nn.GELU()),
                                nn.Linear(5, 2)).to(F64), seed=1).to(device)
    x = _x(4, 3, device=device)
    full = empirical.ntk(net, x, method="layerwise")
    torch.testing.assert_close(full, empirical.ntk(net, x, method="jacobian"), rtol=0, atol=1e-10)
    net[0].weight.requires_grad_(False)
    net[2][0].bias.requires_grad_(False)
    part = empirical.ntk(net, x, method="layerwise")
    torch.testing.assert_close(part, empirical.ntk(net, x, method="vjp-jvp"), rtol=0, atol=1e-10)
    assert (full - part).abs().max() > 1e-3


def test_layerwise_refuses_what_it_cannot_handle():
    shared = nn.Linear(4, 4)
    assert empirical.layerwise_layers(nn.Sequential(shared, nn.ReLU(), shared)) is None  # weight sharing
    assert empirical.layerwise_layers(nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 1))) is None
    assert empirical.layerwise_layers(nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=1))) is None  # not elementwise
    assert empirical.layerwise_layers(SkipNet(4, 4, 1)) is None
    assert empirical.layerwise_layers(models.MLP(4, 4, 1, activation=torch.sin, seed=0)) is not None


# --------------------------------------------------------------------------------------- shapes, blocks and traces
@pytest.mark.parametrize("method", METHODS)
def test_batching_symmetry_and_psd(method):
    net = models.MLP(4, 9, 2, 2, activation="erf", bias_var=0.1, seed=2)
    x1, x2 = _x(7, 4, seed=1), _x(5, 4, seed=2)
    full = empirical.ntk(net, x1, method=method)
    cross = empirical.ntk(net, x1, x2, method=method)
    for b in (1, 3, 100):
        torch.testing.assert_close(empirical.ntk(net, x1, method=method, batch_size=b), full, rtol=0, atol=1e-12)
        torch.testing.assert_close(empirical.ntk(net, x1, x2, method=method, batch_size=b), cross,
                                   rtol=0, atol=1e-12)
    torch.testing.assert_close(full, full.permute(1, 0, 3, 2), rtol=0, atol=1e-12)
    gram = full.permute(0, 2, 1, 3).reshape(14, 14)
    assert torch.linalg.eigvalsh(gram).min() > -1e-10


def test_trace_outputs_is_the_mean_over_outputs_and_one_output_is_two_dimensional():
    net = models.MLP(3, 6, 1, 4, seed=0)
    x = _x(5, 3)
    full = empirical.ntk(net, x, method="jacobian")
    expected = sum(full[:, :, a, a] for a in range(4)) / 4
    for m in METHODS:
        torch.testing.assert_close(empirical.ntk(net, x, method=m, trace_outputs=True), expected,
                                   rtol=0, atol=1e-12)
    single = models.MLP(3, 6, 1, 1, seed=0)
    assert empirical.ntk(single, x).shape == (5, 5)
    assert empirical.ntk(single, x, _x(2, 3)).shape == (5, 2)


def test_inputs_are_cast_to_the_model_dtype():
    net = models.MLP(3, 6, 1, 2, seed=0, dtype=torch.float32)
    x = _x(4, 3)
    k32 = empirical.ntk(net, x)
    assert k32.dtype == torch.float32
    torch.testing.assert_close(empirical.ntk(net, x.numpy()), k32)
    torch.testing.assert_close(empirical.ntk(net, x.float(), method="jacobian"), k32, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------- the lecture's H(0)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("a_dist", ["uniform", "sign"])
def test_two_layer_ntk_is_the_explicit_formula(device, a_dist):
    """H(0)_ij = x_iᵀx_j (1/m) Σ_r a_r² σ'(w_rᵀx_i) σ'(w_rᵀx_j) (book Chapter 2); a is fixed."""
    m = 300
    net = models.TwoLayerNet(5, m, a_dist=a_dist, seed=6, device=device)
    x = _x(6, 5, device=device)
    x = x / x.norm(dim=1, keepdim=True)
    w, a = net.W.detach(), net.a
    s = (x @ w.T > 0).to(F64)  # σ' for ReLU, (n, m)
    expected = (x @ x.T) * ((s * a**2) @ s.T) / m
    for method in METHODS:
        torch.testing.assert_close(empirical.ntk(net, x, method=method), expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(empirical.ntk(net, x), kernels.two_layer_empirical(x, w=w, a=a), rtol=1e-12,
                               atol=1e-14)


# --------------------------------------------------------------------------------------------------- empirical NNGP
@pytest.mark.parametrize("device", DEVICES)
def test_nngp_is_normalized_feature_gram(device):
    """σw²/n Φ Φᵀ + σb², with Φ the last hidden layer computed by hand from the raw weights."""
    wv, bv, n = 1.5, 0.4, 11
    net = models.MLP(4, n, 1, 2, activation="erf", weight_var=wv, bias_var=bv, seed=2, device=device)
    x1, x2 = _x(3, 4, seed=1, device=device), _x(5, 4, seed=2, device=device)
    phi = [torch.special.erf(math.sqrt(wv / 4) * x @ net[0].weight.T + math.sqrt(bv) * net[0].bias)
           for x in (x1, x2)]
    torch.testing.assert_close(empirical.nngp(net, x1, x2), wv / n * phi[0] @ phi[1].T + bv)
    torch.testing.assert_close(empirical.nngp(net, x1), wv / n * phi[0] @ phi[0].T + bv)
    torch.testing.assert_close(empirical.nngp(net, x1, x2, normalize=False), phi[0] @ phi[1].T)
    torch.testing.assert_close(empirical.nngp(net, x1, x2, weight_var=1.0, bias_var=0.0), phi[0] @ phi[1].T / n)


def test_nngp_of_two_layer_net_and_generic_features():
    net = models.TwoLayerNet(3, 50, seed=0)
    x = _x(4, 3)
    phi = torch.relu(x @ net.W.T)
    torch.testing.assert_close(empirical.nngp(net, x), phi @ phi.T / 3 / 50)
    skip = _reinit(SkipNet(3, 5, 1).to(F64), seed=0)

    def feats(z):
        return torch.tanh(skip.inp(z))

    torch.testing.assert_close(empirical.nngp(skip, x, features=feats, weight_var=2.0, bias_var=0.1),
                               2.0 / 5 * feats(x) @ feats(x).T + 0.1)
    with pytest.raises(ValueError, match="features"):
        empirical.nngp(skip, x)
    with pytest.raises(ValueError, match="weight_var"):
        empirical.nngp(skip, x, features=feats)


# ------------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(x1=np.ones((3, 4))), "x1 must have shape"),                          # layerwise model, wrong features
    (dict(x1=np.full((3, 5), np.nan)), "x1 contains NaN"),
    (dict(x2=np.array([[1.0, np.inf, 0, 0, 0]])), "x2 contains NaN or inf"),
    (dict(x2=np.ones((2, 4))), "x2 must have the same per-example shape"),
    (dict(x1=np.ones(5)), "x1 must be a batch"),
    (dict(method="fast"), "method='fast' is not known"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(batch_size=2.5), "batch_size must be an integer"),
])
def test_ntk_bad_input(kwargs, match):
    net = models.MLP(5, 4, 1, seed=0)
    args = dict(x1=np.ones((3, 5)), x2=None) | kwargs
    x1, x2 = args.pop("x1"), args.pop("x2")
    with pytest.raises(ValueError, match=match):
        empirical.ntk(net, x1, x2, **args)


def test_ntk_bad_model_and_devices():
    with pytest.raises(ValueError, match="x1 of shape .* does not fit the model"):
        empirical.ntk(_reinit(SkipNet(4, 3, 1).to(F64), 0), np.ones((2, 6)))
    with pytest.raises(ValueError, match="trainable"):
        empirical.ntk(models.MLP(3, 4, 1, seed=0).requires_grad_(False), np.ones((2, 3)))
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        empirical.ntk(lambda x: x, np.ones((2, 3)))
    # parameters and inputs on different devices (the meta device exists everywhere)
    meta = nn.Sequential(nn.Linear(3, 2)).to("meta")
    with pytest.raises(ValueError, match="x1 is on cpu but the model's parameters are on meta"):
        empirical.ntk(meta, torch.ones(2, 3))
    net = models.MLP(3, 4, 1, seed=0)
    with pytest.raises(ValueError, match="x2 is on meta"):
        empirical.ntk(net, torch.ones(2, 3, dtype=F64), torch.ones(2, 3, device="meta"))
    with pytest.raises(ValueError, match="x1 is on meta"):
        empirical.nngp(net, torch.ones(2, 3, device="meta"))
    with pytest.raises(ValueError, match="x1 contains NaN"):
        empirical.nngp(net, np.array([[np.nan, 0.0, 0.0]]))
