"""Tests of ntkcore.langevin: batched Langevin ensembles in the NDK paper's parameterization, against the
mean-predictor theory of ntkcore.ndk (NDK paper; book Chapter 6)."""
import math

import pytest
import torch

from ntkcore import langevin, ndk
from ntkcore.device import available_devices
from ntkcore.langevin import MLPEnsemble

from test_ndk import orthogonal_dataset


@pytest.mark.parametrize("activation", langevin.ACTIVATIONS)
@pytest.mark.parametrize("L", [1, 2, 3])
def test_analytic_gradient_matches_autograd(activation, L):
    net = MLPEnsemble.init(3, 5, 7, L, activation, 1.5, seed=1, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    grads, f = net.gradient(x, y)
    ws = [w.clone().requires_grad_() for w in net.weights]
    f2 = MLPEnsemble(ws, activation).forward(x)
    (0.5 * ((f2 - y) ** 2).sum()).backward()
    assert torch.allclose(f, f2.detach(), atol=1e-14)
    for a, b in zip(grads, ws):
        assert torch.allclose(a, b.grad, atol=1e-12)


@pytest.mark.parametrize("activation", langevin.ACTIVATIONS)
@pytest.mark.parametrize("L", [1, 2, 3])
def test_fused_step_is_one_euler_maruyama_step(activation, L):
    """simulate's fused update (decay on the product's beta, gradient on its alpha, then the noise) is
    θ ← (1 − dt T/σ²) θ − dt ∇½‖f − y‖² + √(2T dt) ξ with the gradient of MLPEnsemble.gradient and, for a small
    ensemble, ξ drawn from the seed's generator right after the initial weights, one weight after another."""
    x, y, xt = orthogonal_dataset()
    T, s2, dt = 0.3, 1.5, 0.01
    r = langevin.simulate(x, y, xt, [0.0, dt], L=L, activation=activation, width=6, sigma0_sq=1.0, sigma_sq=s2,
                          T=T, dt=dt, n_networks=3, seed=9, record_weights=True, dtype=torch.float64)
    gen = torch.Generator().manual_seed(9)
    net = MLPEnsemble.init(3, x.shape[1], 6, L, activation, 1.0, seed=gen, dtype=torch.float64)
    xi = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in net.weights]
    grads, _ = net.gradient(x, y)
    for w, g, n, rec in zip(net.weights, grads, xi, r.weights):
        assert torch.equal(rec[:, 0], w)
        expect = (1 - dt * T / s2) * w - dt * g + math.sqrt(2 * T * dt) * n
        assert torch.allclose(rec[:, 1], expect, atol=1e-13)


def test_chunked_noise_is_standard_normal_and_thread_independent(monkeypatch):
    """Large CPU draws are split into chunks with their own generators, filled by worker threads: the noise depends
    on the seed only, not on the number of threads."""
    monkeypatch.setattr(langevin, "_NOISE_CHUNK", 1000)
    ws = [torch.zeros(4, 50, 30), torch.zeros(4, 50)]
    draws = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            noise = langevin._Noise(ws, torch.Generator().manual_seed(1), torch.device("cpu"), torch.float32)
            assert noise.parallel and (noise.pool is not None) == (n > 1)
            draws.append([v.clone() for v in noise.draw(2)] + [noise.draw(1)[0].clone()])
            noise.close()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*draws))
    z = draws[0][0].flatten()
    assert abs(z.mean()) < 5 / math.sqrt(z.numel()) and abs(z.var() - 1) < 5 * math.sqrt(2 / z.numel())
    assert not torch.equal(draws[0][0], draws[0][2])  # a fresh draw each step


@pytest.mark.parametrize("device", available_devices())
def test_simulate_shapes_seeding_and_recording(device):
    x, y, xt = orthogonal_dataset()
    kw = dict(L=2, activation="relu", width=16, sigma0_sq=1.0, sigma_sq=1.0, T=0.1, dt=0.01, n_networks=5,
              device=device)
    r1 = langevin.simulate(x, y, xt, [0.0, 0.104, 0.5], seed=3, record_weights=True, **kw)
    r2 = langevin.simulate(x, y, xt, [0.0, 0.104, 0.5], seed=3, **kw)
    assert torch.allclose(r1.times, torch.tensor([0.0, 0.1, 0.5], dtype=torch.float64))  # nearest steps
    assert r1.outputs_train.shape == (5, 3, 4) and r1.outputs_test.shape == (5, 3, 1)
    assert r1.outputs_train.dtype == torch.float32 and r1.outputs_train.device.type == torch.device(device).type
    assert torch.equal(r1.outputs_test, r2.outputs_test)
    assert [w.shape for w in r1.weights] == [(5, 3, 16, 8), (5, 3, 16, 16), (5, 3, 16)]
    # recorded weights reproduce recorded outputs
    w_end = [w[:, -1].double() for w in r1.weights]
    f_end = MLPEnsemble(w_end, "relu").forward(xt.to(device))
    assert torch.allclose(f_end, r1.outputs_test[:, -1].double(), atol=1e-4)
    assert r1.mean("train").shape == (3, 4) and r1.standard_error("test").shape == (3, 1)
    r3 = langevin.simulate(x, y, xt, [0.0, 0.5], seed=4, **kw)
    assert not torch.equal(r3.outputs_test[:, -1], r2.outputs_test[:, -1])


def test_frozen_readout_and_pure_diffusion_of_hidden_weights():
    """After the freeze the readout stays fixed; without the loss gradient the hidden weights are an
    Ornstein-Uhlenbeck process whose variance relaxes as σ² + (σ0² − σ²) e^{−2γt} (NDK paper Eq. 9; book Chapter 6)."""
    x, y, xt = orthogonal_dataset()
    T, s0, s = 0.5, 2.0, 1.0
    times = [0.0, 0.5, 2.0]
    r = langevin.simulate(x, y, xt, times, L=1, activation="relu", width=64, sigma0_sq=s0, sigma_sq=s, T=T,
                          dt=0.005, n_networks=64, seed=5, record_weights=True, freeze_readout_at=0.0,
                          dtype=torch.float64)
    a = r.weights[-1]
    assert torch.equal(a[:, 0], a[:, -1])
    w = r.weights[0]  # (E, G, N, N0): 64*64*8 independent OU coordinates
    var = (w**2).mean((0, 2, 3))
    expect = torch.tensor([s + (s0 - s) * math.exp(-2 * T / s * t) for t in times], dtype=torch.float64)
    n = w[:, 0].numel()
    se = expect * math.sqrt(2.0 / n)  # Gaussian: Var(w²) = 2 var²
    assert ((var - expect).abs() < 5 * se).all()
    assert (expect[0] - expect[-1]) > 20 * se[-1]  # the relaxation is resolved
    # with the loss gradient on the hidden weights the outputs keep fitting the labels
    r2 = langevin.simulate(x, y, xt, times, L=1, activation="relu", width=64, sigma0_sq=s0, sigma_sq=s, T=T,
                           dt=0.005, n_networks=64, seed=5, freeze_readout_at=0.5, loss_gradient_after_freeze=True)
    r3 = langevin.simulate(x, y, xt, times, L=1, activation="relu", width=64, sigma0_sq=s0, sigma_sq=s, T=T,
                           dt=0.005, n_networks=64, seed=5, freeze_readout_at=0.5)
    err2 = (r2.mean("train")[-1] - y).abs().max()
    err3 = (r3.mean("train")[-1] - y).abs().max()
    assert err2 < err3


# (L, activation, T, sigma0_sq, sigma_sq, width, n_networks, horizon): two hyper-parameter settings with σ0² < σ²,
# L = 1 and L = 2 (the other two combinations, and larger ensembles, are run by the book's NDK chapter)
SETTINGS = [
    (1, "relu", 0.3, 0.25, 1.0, 256, 256, 12.0),
    (2, "erf", 0.5, 0.5, 1.0, 128, 192, 8.0),
]


@pytest.mark.parametrize("L, activation, T, sigma0_sq, sigma_sq, width, n_networks, horizon", SETTINGS)
def test_ensemble_mean_matches_mean_predictor(L, activation, T, sigma0_sq, sigma_sq, width, n_networks, horizon):
    """Theory vs simulation (paper Fig. 1e): the ensemble mean of Langevin-trained networks follows the solution of
    paper Eqs. 14-15 through the gradient-driven and the diffusive phase, within 4 standard errors at every recorded
    time, on every training input and on the test input. Finite-width bias O(1/N) ≈ 0.01 and Euler-Maruyama bias
    O(dt) stay well below the standard error (≈ 0.03)."""
    x, y, xt = orthogonal_dataset()
    hyper = dict(L=L, activation=activation, sigma0_sq=sigma0_sq, sigma_sq=sigma_sq, T=T)
    record = torch.linspace(0.0, horizon, 17)
    sim = langevin.simulate(x, y, xt, record, width=width, dt=0.02, n_networks=n_networks, seed=7, **hyper)
    grid = torch.unique(torch.cat([ndk.default_time_grid(x, horizon, resolution=2, **hyper), sim.times]))
    theory = ndk.mean_predictor(x, y, xt, times=grid, **hyper)
    idx = torch.searchsorted(grid, sim.times)
    assert theory.error_estimate < 2e-3
    mean = torch.cat([sim.mean("train"), sim.mean("test")], 1)[1:]
    se = torch.cat([sim.standard_error("train"), sim.standard_error("test")], 1)[1:]
    pred = torch.cat([theory.train[idx], theory.test[idx]], 1)[1:]
    z = (mean - pred) / se
    assert z.abs().max() < 4.0, z
    # power: the ensemble would have rejected the NTK gradient-flow prediction (paper Eq. 16) at some time
    ntk = ndk.ntk_limit(x, y, torch.cat([x, xt]), sim.times[1:], L=L, activation=activation, sigma0_sq=sigma0_sq)
    assert ((pred - ntk).abs() / se).max() > 4


def test_bad_inputs():
    x, y, xt = orthogonal_dataset()
    kw = dict(L=1, activation="relu", width=8, sigma0_sq=1.0, sigma_sq=1.0, T=0.1, dt=0.01, n_networks=2)
    with pytest.raises(ValueError, match="activation"):
        langevin.simulate(x, y, xt, [0.0, 1.0], **{**kw, "activation": "tanh"})
    with pytest.raises(ValueError, match="y"):
        langevin.simulate(x, y[:3], xt, [0.0, 1.0], **kw)
    with pytest.raises(ValueError, match="record_times"):
        langevin.simulate(x, y, xt, [1.0, 0.5], **kw)
    with pytest.raises(ValueError, match="dt"):
        langevin.simulate(x, y, xt, [0.0, 1.0], **{**kw, "dt": 0.0})
    with pytest.raises(ValueError, match="x_test"):
        langevin.simulate(x, y, xt[:, :3], [0.0, 1.0], **kw)
    r = langevin.simulate(x, y, xt, [0.0], **{**kw, "n_networks": 1})
    with pytest.raises(ValueError, match="at least 2"):
        r.standard_error()
    with pytest.raises(ValueError, match="part"):
        r.mean("validation")
