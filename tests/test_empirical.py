"""Tests for ntkcore.empirical: the three exact NTK methods agree with each other and with the definition, the
lecture's H(0), the empirical NNGP, and input checks."""
import math
import os
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from ntkcore import empirical, kernels, models
from ntkcore import layers as L
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



# ------------------------------------------------------------------------------------- memory bound and block reuse
def _count_forwards(model):
    """A list whose length is the number of forward calls of ``model`` (vmap'd calls count once)."""
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    return calls


def _track_jacobians(monkeypatch):
    """Record the size of every block whose Jacobian ``"jacobian"`` prepares, and the peak bytes of prepared
    Jacobians and panel buffers alive at once (the tensors themselves, counted until the method drops them)."""
    stats = dict(blocks=[], live=0, peak=0)
    tracked = set()

    def track(data):
        if id(data[0]) in tracked:  # a panel of one block is that block
            return data
        nbytes = sum(j.numel() * j.element_size() for j in data)
        stats.update(live=stats["live"] + nbytes, peak=max(stats["peak"], stats["live"] + nbytes))
        tracked.add(id(data[0]))
        weakref.finalize(data[0], lambda key=id(data[0]): (stats.update(live=stats["live"] - nbytes),
                                                           tracked.discard(key)))
        return data

    make, panel = empirical._jacobian_method, empirical._panel

    def method(*args):
        m = make(*args)

        def prepare(xs):
            stats["blocks"].append(xs[0].shape[0])
            return track(m.col(xs))

        return m._replace(row=prepare, col=prepare)

    monkeypatch.setattr(empirical, "_jacobian_method", method)
    monkeypatch.setattr(empirical, "_panel", lambda *args: track(panel(*args)))
    return stats


@pytest.mark.parametrize("with_x2", [False, True])
def test_automatic_blocks_respect_max_memory(monkeypatch, with_x2):
    """A small max_memory gives small blocks whose prepared Jacobians alive at once fit in it, and the same kernel
    as one unbounded block; the default bound keeps this small problem in one block."""
    net = _reinit(SkipNet(4, 30, 2).to(F64), seed=5)  # P = 1142, O = 2: 18 kB of Jacobian per example
    x1, x2 = _x(40, 4, seed=1), (_x(25, 4, seed=2) if with_x2 else None)
    stats = _track_jacobians(monkeypatch)
    full = empirical.ntk(net, x1, x2, method="jacobian")
    assert sorted(stats["blocks"]) == ([25] if with_x2 else []) + [40]
    stats.update(blocks=[], peak=0)
    max_memory = 200_000  # a third of one side's Jacobian
    bounded = empirical.ntk(net, x1, x2, method="jacobian", max_memory=max_memory)
    torch.testing.assert_close(bounded, full, rtol=0, atol=1e-12)
    assert max(stats["blocks"]) < 10 and 0 < stats["peak"] <= max_memory, stats


_MODELS = {  # (model, inputs of 24 examples): a chain of dense layers, and three models that are not
    "mlp": lambda: (models.MLP(4, 30, 2, 2, seed=0), _x(24, 4, seed=1)),
    "skip": lambda: (_reinit(SkipNet(4, 30, 2).to(F64), seed=5), _x(24, 4, seed=1)),
    "conv": lambda: (_reinit(_conv_net().to(F64), seed=2), torch.randn(24, 1, 5, 5, generator=torch.Generator()
                                                                       .manual_seed(3), dtype=F64)),
    "graph": lambda: (_graph_net().to(F64), _graphs(24, 5, 0)),
}


@pytest.mark.parametrize("name, method", [("mlp", "auto"), ("mlp", "jacobian"), ("skip", "auto"),
                                          ("skip", "vjp-jvp"), ("conv", "auto"), ("conv", "vjp-jvp"),
                                          ("graph", "auto"), ("graph", "vjp-jvp")])
def test_memory_is_bounded_by_default_for_every_method_and_model(monkeypatch, name, method):
    """Without max_memory, every method on every kind of model plans its blocks within DEFAULT_MAX_MEMORY (shrunk
    here below what the 24 examples need at once, above what one needs): several blocks, the same kernel."""
    net, x = _MODELS[name]()
    unbounded = empirical.ntk(net, x, method=method, max_memory=2**40)
    plans, plan = [], empirical._plan
    monkeypatch.setattr(empirical, "DEFAULT_MAX_MEMORY", 100_000)
    monkeypatch.setattr(empirical, "_plan", lambda *args: plans.append((args[3], plan(*args))) or plans[-1][1])
    bounded = empirical.ntk(net, x, method=method)
    assert len(plans) == 1 and plans[0][0] == 100_000 and plans[0][1].block < 24, plans
    torch.testing.assert_close(bounded, unbounded, rtol=0, atol=1e-12)


def test_peak_memory_stays_under_max_memory():
    """Measured in a fresh process (peak resident memory of the call): a non-Sequential net whose Jacobian over
    the inputs takes 67 MB runs within a 32 MiB bound (one block used 64 MiB)."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident memory")
    script = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, sys.argv[1])
        from test_empirical import SkipNet, _reinit, _x
        from ntkcore import empirical

        def status(field):
            return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))

        net, x = _reinit(SkipNet(64, 256, 1).to(torch.float64), seed=0), _x(100, 64)  # P = 83,713
        empirical.ntk(net, x[:2], max_memory=2**25)  # warm-up: code pages, thread pools
        open("/proc/self/clear_refs", "w").write("5")
        start = status("VmRSS")
        empirical.ntk(net, x, max_memory=2**25)
        print(status("VmHWM") - start)
    """)
    run = subprocess.run([sys.executable, "-c", script, os.path.dirname(__file__)], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.split()[-1]) <= 2**25


@pytest.mark.parametrize("method, with_x2, forwards, old_forwards", [
    ("jacobian", False, 1 + 4, 1 + 4 + 6),            # probe + each of 4 blocks once (was 4 + 6 later blocks)
    ("jacobian", True, 2 + 3 + 2, 1 + 2 + 2 * 3),     # probes of x1 and x2 + 3 + 2 blocks (was 2 + 2 x 3)
    ("vjp-jvp", False, 1 + 4 + 10, 1 + 2 * 10),       # probe + a pullback per block + a jvp per pair (was 2 per pair)
])
def test_each_block_is_prepared_once(method, with_x2, forwards, old_forwards):
    net = _reinit(SkipNet(4, 6, 2).to(F64), seed=3)
    x1, x2 = (_x(6, 4, seed=1), _x(9, 4, seed=2)) if with_x2 else (_x(12, 4, seed=1), None)
    reference = empirical.ntk(net, x1, x2, method=method)
    calls = _count_forwards(net)
    blocked = empirical.ntk(net, x1, x2, method=method, batch_size=3)
    assert len(calls) == forwards < old_forwards
    torch.testing.assert_close(blocked, reference, rtol=0, atol=1e-12)


def test_passes_carry_a_block_over_when_the_panel_is_bounded(monkeypatch):
    """Panels of 2 blocks of 3 examples over 6 blocks: 3 passes prepare 6 + 3 + 1 blocks (21 with one kept block
    and every later block recomputed per row block), the last block of a pass carried into the next."""
    net = _reinit(SkipNet(4, 6, 2).to(F64), seed=3)
    x = _x(18, 4, seed=1)
    reference = empirical.ntk(net, x, method="jacobian")
    monkeypatch.setattr(empirical, "_plan", lambda *args: empirical._Plan(block=3, panel=2))
    calls = _count_forwards(net)
    torch.testing.assert_close(empirical.ntk(net, x, method="jacobian"), reference, rtol=0, atol=1e-12)
    assert len(calls) == 1 + 10

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


@pytest.mark.parametrize("method", ["layerwise", "jacobian"])
def test_traced_blocks_cross_and_in_small_blocks(method, monkeypatch):
    """The layerwise and Jacobian methods sum the diagonal blocks themselves: cross kernels and block plans (the
    panel plumbing with (b, b, 1, 1) blocks) agree with the trace of the full kernel."""
    net = models.MLP(3, 6, 2, 4, seed=1)
    x1, x2 = _x(7, 3), _x(5, 3) + 1
    full = empirical.ntk(net, x1, x2, method="vjp-jvp")
    expected = full.diagonal(dim1=2, dim2=3).mean(-1)
    monkeypatch.setattr(empirical, "_plan", lambda *args: empirical._Plan(block=2, panel=2))
    torch.testing.assert_close(empirical.ntk(net, x1, x2, method=method, trace_outputs=True), expected,
                               rtol=0, atol=1e-12)
    sym = empirical.ntk(net, x1, method="vjp-jvp").diagonal(dim1=2, dim2=3).mean(-1)
    torch.testing.assert_close(empirical.ntk(net, x1, method=method, trace_outputs=True), sym, rtol=0, atol=1e-12)


def test_inputs_follow_the_model_dtype():
    """Numpy inputs are converted to the model's dtype; a tensor of another floating dtype is refused (the library's
    policy for mixed inputs, ntkcore._checks)."""
    net = models.MLP(3, 6, 1, 2, seed=0, dtype=torch.float32)
    x = _x(4, 3)
    k32 = empirical.ntk(net, x.numpy())
    assert k32.dtype == torch.float32
    torch.testing.assert_close(empirical.ntk(net, x.float(), method="jacobian"), k32, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="x1 has dtype torch.float64"):
        empirical.ntk(net, x)


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



class _Summed(nn.Module):
    """Returns one number for the whole batch: not a batch of outputs."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2).to(F64)

    def forward(self, x):
        return self.lin(x).sum()


def _nan_net():
    net = _reinit(SkipNet(4, 3, 2).to(F64), 0)
    with torch.no_grad():
        net.out.weight[0, 0] = float("nan")
    return net


def _graph_net():
    return L.serial(L.Aggregate(), L.Dense(4), L.Relu(), L.GlobalSumPool(), L.Dense(2)).module((5, 3), seed=0)


def _graphs(n, nodes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, nodes, 3, generator=g, dtype=F64)
    a = (torch.rand(n, nodes, nodes, generator=g, dtype=F64) < 0.5).to(F64)
    return x, a


@pytest.mark.parametrize("call, match", [
    (lambda: empirical.ntk(_graph_net(), _graphs(3, 5, 0), (_graphs(2, 5, 1)[0][..., :2], _graphs(2, 5, 1)[1])),
     r"x2 of shapes \(2, 5, 2\), \(2, 5, 5\) does not fit the model"),   # was a RuntimeError inside vmap
    (lambda: empirical.ntk(_graph_net(), _graphs(3, 5, 0) * 2), "x1 of shapes .* does not fit the model: .*argument"),
    (lambda: empirical.ntk(nn.Linear(3, 0).to(F64), np.ones((2, 3)), method="jacobian"), "model has no outputs"),
    (lambda: empirical.ntk(_Summed(), np.ones((2, 3))), r"model must map a batch .* returned \(\)"),
    (lambda: empirical.ntk(_reinit(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).to(F64), 1),
                           np.full((2, 4), 1e200), method="jacobian"),
     "NTK is not representable in torch.float64.*rescale x1"),  # was a kernel of inf
    (lambda: empirical.ntk(_nan_net(), np.ones((2, 4))), "model has parameters that are NaN or inf"),
    (lambda: empirical.ntk(SkipNet(4, 3, 2).to(F64), np.ones((2, 4)), trace_outputs="yes"),
     "trace_outputs must be True or False"),
    (lambda: empirical.ntk(SkipNet(4, 3, 2).to(F64), np.ones((2, 4)), max_memory=0), "max_memory must be >= 1"),
    (lambda: empirical.ntk(SkipNet(4, 3, 2).to(F64), np.ones((2, 4)), max_memory=2.5),
     "max_memory must be an integer"),
    (lambda: empirical.ntk(SkipNet(4, 3, 2).to(F64), np.ones((2, 4)), max_memory=100),
     "max_memory=100 bytes is too small for method='jacobian'"),
])
def test_ntk_bad_input_fails_at_the_boundary(call, match):
    """Inputs that do not fit the model, models that do not return a batch of outputs, overflow: a ValueError
    naming the argument, never an error from inside torch or a kernel of inf/NaN."""
    with pytest.raises(ValueError, match=match):
        call()


def test_graph_inputs_of_different_sizes_and_blocks():
    """Tuple inputs (node features, adjacency), x2 with other graph sizes: blocked, bounded and reference agree."""
    net = _graph_net().to(F64)
    x1, x2 = _graphs(5, 5, 0), _graphs(4, 3, 1)
    full = empirical.ntk(net, x1, x2, method="vjp-jvp")
    assert full.shape == (5, 4, 2, 2)
    for kwargs in (dict(), dict(batch_size=2), dict(max_memory=2**14)):
        torch.testing.assert_close(empirical.ntk(net, x1, x2, **kwargs), full, rtol=0, atol=1e-12)
    torch.testing.assert_close(empirical.ntk(net, x1, batch_size=2), empirical.ntk(net, x1, method="vjp-jvp"),
                               rtol=0, atol=1e-12)


def test_nngp_bad_input_fails_at_the_boundary():
    net = models.MLP(3, 4, 1, seed=0)
    x, readout = np.ones((2, 3)), dict(weight_var=1.0, bias_var=0.0)
    with pytest.raises(ValueError, match="features must give at least one feature"):  # was ZeroDivisionError
        empirical.nngp(net, x, features=lambda z: z[:, :0], **readout)
    with pytest.raises(ValueError, match=r"features must map x1 \(2 examples\) to a tensor of shape \(2, F\)"):
        empirical.nngp(net, x, features=lambda z: z.sum(0))
    with pytest.raises(ValueError, match="normalize must be True or False"):
        empirical.nngp(net, x, normalize="no")
    skip = _reinit(SkipNet(3, 5, 1).to(F64), seed=0)
    with pytest.raises(ValueError, match=r"x2 of shapes \(2, 4\), \(2, 1\) does not fit the model's features"):
        empirical.nngp(skip, (torch.ones(2, 3, dtype=F64), torch.ones(2, 1, dtype=F64)),   # was named "x1"
                       (torch.ones(2, 4, dtype=F64), torch.ones(2, 1, dtype=F64)),
                       features=lambda z, scale: torch.tanh(skip.inp(z)) * scale, **readout)
    relu = models.MLP(3, 4, 1, activation="relu", seed=0)
    with pytest.raises(ValueError, match="NNGP is not representable in torch.float64.*rescale x1"):
        empirical.nngp(relu, np.full((2, 3), 1e200))
