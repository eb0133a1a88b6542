"""Tests of ntkcore.langevin: batched Langevin ensembles in the NDK paper's parameterization, against the
mean-predictor theory of ntkcore.ndk (NDK paper; book Chapter 6) and the drift predictor of ntkcore.drift (book
Chapter 7)."""
import math

import pytest
import torch

from ntkcore import drift, langevin, ndk
from ntkcore.device import available_devices
from ntkcore.langevin import MLPEnsemble

from test_drift import frozen_readout_problem
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


# Theory against simulation for every (depth, activation) that the book computes with the NDK theory: the NDK
# chapter uses ReLU and erf networks with L = 1 to 4 hidden layers (mean predictor, NTK and NNGP limits, kernels),
# the drift chapter ReLU and erf with L = 1 (drift predictor; its ReLU case is tested in test_drift.py), and the
# numerical-methods appendix uses linear networks (identity) with L = 1, 2, whose NDK has a closed form. Each
# setting takes a few seconds: P = 4, one test input, 256 networks of moderate width, and T/σ² = 0.3-0.5, so that a
# horizon of 5-12 spans at least 1.3 relaxation times 1/λ of the gradient-driven phase (λ: the NTK eigenvalue of the
# labels) and 2.5 to 4 time scales σ²/T of the diffusive one.
#
# The comparison: |ensemble mean − theory| ≤ 4 SE + b at every recorded time and input (16 × 5 comparisons; a
# standard normal exceeds 4 with probability 6e-5). b bounds the finite-width (O(1/N)) and Euler-Maruyama (O(dt))
# biases together: it is the largest |mean − theory| of an ensemble of 4096 networks (16 × 256, other seeds) at the
# same width and step, rounded up; that ensemble's own standard error is SE/4. It resolves a bias for ReLU with
# L ≥ 2 and for erf and identity with L = 2: about 0.4 SE in root mean square at most, and 1.2 SE in the worst entry
# (ReLU and identity with L = 2). For ReLU, L = 2 the root-mean-square bias is 0.40 SE at width 64, 0.15 SE at
# width 128 (a finite-width effect) and 0.41 SE at width 64 with dt halved. The solver's error estimate is below a
# tenth of the smallest SE.
#
# (L, activation, T, sigma0_sq, width, n_networks, horizon, dt, b), sigma_sq = 1. σ0² ≠ σ², so the transient of
# m(t, t′) matters: σ0² < σ² for L = 1, erf and identity; σ0² = 1.5 for the deeper ReLU networks, whose NTK scales like
# (σ0²)^L, so that their gradient phase ends within the horizon.
SETTINGS = [
    (1, "relu", 0.3, 0.25, 256, 256, 12.0, 0.02, 0.02),
    (1, "erf", 0.3, 0.25, 256, 256, 12.0, 0.02, 0.02),
    (2, "relu", 0.5, 1.5, 64, 256, 8.0, 0.02, 0.03),
    (2, "erf", 0.5, 0.5, 64, 256, 8.0, 0.02, 0.02),
    (3, "relu", 0.5, 1.5, 64, 256, 6.0, 0.025, 0.025),
    (3, "erf", 0.5, 0.5, 64, 256, 6.0, 0.025, 0.02),
    (4, "relu", 0.5, 1.5, 48, 256, 5.0, 0.025, 0.025),
    (4, "erf", 0.5, 0.5, 48, 256, 5.0, 0.025, 0.02),
    (1, "identity", 0.5, 0.5, 256, 256, 8.0, 0.02, 0.025),
    (2, "identity", 0.5, 0.5, 64, 256, 8.0, 0.02, 0.045),
]


def theory_grid(x, horizon, record_times, **hyper):
    """The solver's default grid at twice its density, merged with the recorded times. A default node within 1e-9 of
    a recorded time is dropped: two nodes a few ulps apart leave a step with no midpoint for the refined grid."""
    grid = ndk.default_time_grid(x, horizon, resolution=2, **hyper)
    grid = grid[(grid[:, None] - record_times[None, :]).abs().amin(1) > 1e-9]
    return torch.unique(torch.cat([grid, record_times]))


def ensemble_vs_mean_predictor(L, activation, T, sigma0_sq, width, n_networks, horizon, dt, seed=7):
    """Langevin ensemble on the orthogonal task, recorded at 16 times in (0, horizon]; returns the ensemble mean, its
    standard error and the mean predictor there, each (16, 5) (4 training inputs, then the test input), the solver's
    error estimate and the 16 recorded times."""
    x, y, xt = orthogonal_dataset()
    hyper = dict(L=L, activation=activation, sigma0_sq=sigma0_sq, sigma_sq=1.0, T=T)
    sim = langevin.simulate(x, y, xt, torch.linspace(0.0, horizon, 17), width=width, dt=dt, n_networks=n_networks,
                            seed=seed, **hyper)
    grid = theory_grid(x, horizon, sim.times, **hyper)
    theory = ndk.mean_predictor(x, y, xt, times=grid, **hyper)
    idx = torch.searchsorted(grid, sim.times)
    mean = torch.cat([sim.mean("train"), sim.mean("test")], 1)[1:]
    se = torch.cat([sim.standard_error("train"), sim.standard_error("test")], 1)[1:]
    pred = torch.cat([theory.train[idx], theory.test[idx]], 1)[1:]
    return mean, se, pred, theory.error_estimate, sim.times[1:]


@pytest.mark.parametrize("L, activation, T, sigma0_sq, width, n_networks, horizon, dt, b",
                         [pytest.param(*s, id=f"{s[1]}-L{s[0]}") for s in SETTINGS])
def test_ensemble_mean_matches_mean_predictor(L, activation, T, sigma0_sq, width, n_networks, horizon, dt, b):
    """Theory vs simulation (paper Fig. 1e): the ensemble mean of Langevin-trained networks follows the solution of
    paper Eqs. 14-15 through the gradient-driven and the diffusive phase, within 4 standard errors plus the bias
    bound b (see SETTINGS) at every recorded time, on every training input and on the test input; and the same
    criterion rejects the NTK gradient-flow prediction (paper Eq. 16), so the diffusive phase is resolved."""
    mean, se, pred, solver_error, times = ensemble_vs_mean_predictor(L, activation, T, sigma0_sq, width, n_networks,
                                                                     horizon, dt)
    assert solver_error < 0.1 * se.min()
    excess = (mean - pred).abs() - (4 * se + b)
    assert excess.max() < 0, ((mean - pred) / se)
    x, y, xt = orthogonal_dataset()
    ntk = ndk.ntk_limit(x, y, torch.cat([x, xt]), times, L=L, activation=activation, sigma0_sq=sigma0_sq)
    assert ((mean - ntk).abs() - (4 * se + b)).max() > 0


def test_frozen_readout_ensemble_matches_erf_drift_predictor():
    """Theory vs simulation for the drift predictor (paper Eq. 19; book Chapter 7) of an erf network, L = 1, the
    odd activation whose prediction decays to 0: the ensemble (256 networks of width 128) reaches equilibrium
    (γ t0 = 3; the mean predictor is then within 1e-4 of its NNGP limit), the readout is frozen and the hidden
    weights diffuse without the loss gradient. At lags γτ = 0, 0.5, 1, 2, 3 the ensemble mean follows paper Eq. 19
    within 4 SE + b on every training and test input (40 comparisons; SE ≈ 0.04). b = 0.035 bounds the biases: an
    ensemble of 4096 networks at the same width and step differs from the theory by at most 0.031, 2.4 of its own
    standard errors (root mean square 0.9: no bias resolved). Power: the "nothing changes" prediction (τ = 0) and
    the theory of the wrong depth (L = 2) are rejected by the same criterion."""
    x, y, xt = frozen_readout_problem()
    T, b = 0.25, 0.035
    hyper = dict(L=1, activation="erf", sigma_sq=1.0, T=T)
    t0, taus = 3 / T, torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0], dtype=torch.float64) / T
    eq = ndk.mean_predictor(x, y, xt, t0, sigma0_sq=1.0, **hyper)
    assert (eq.test[-1] - ndk.nngp_limit(x, y, xt, **hyper)).abs().max() < 1e-4
    sim = langevin.simulate(x, y, xt, t0 + taus, width=128, sigma0_sq=1.0, dt=0.04, n_networks=256, seed=11,
                            freeze_readout_at=t0, **hyper)
    mean = torch.cat([sim.mean("train"), sim.mean("test")], 1)
    se = torch.cat([sim.standard_error("train"), sim.standard_error("test")], 1)

    def excess(**h):
        theory = torch.cat([drift.drift_predictor(x, y, z, taus, **{**hyper, **h}) for z in (x, xt)], 1)
        return (mean - theory).abs() - (4 * se + b), theory

    ok, theory = excess()
    assert ok.max() < 0, ((mean - theory) / se)
    assert ((mean[-1] - theory[0]).abs() - (4 * se[-1] + b)).max() > 0
    assert excess(L=2)[0].max() > 0


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


def test_record_times_sizes_and_flags_are_validated():
    """A record time of 1e30 used to overflow the step count and return the uninitialized output buffer."""
    x, y, xt = orthogonal_dataset()
    kw = dict(L=1, activation="relu", width=8, sigma0_sq=1.0, sigma_sq=1.0, T=0.1, dt=0.01, n_networks=2)
    with pytest.raises(ValueError, match="record_times up to 1e\\+30 .* at most 1e\\+08 are allowed"):
        langevin.simulate(x, y, xt, [0.0, 1e30], **kw)
    with pytest.raises(ValueError, match="record_times contains NaN or inf"):
        langevin.simulate(x, y, xt, [0.0, math.inf], **kw)
    with pytest.raises(ValueError, match="record_times must be an array of real numbers"):
        langevin.simulate(x, y, xt, None, **kw)
    with pytest.raises(ValueError, match="L must be <= 1000"):
        langevin.simulate(x, y, xt, [0.0], **{**kw, "L": 10**6})
    with pytest.raises(ValueError, match="would need .* GiB"):
        langevin.simulate(x, y, xt, [0.0], **{**kw, "L": 3, "width": 10**7})
    with pytest.raises(ValueError, match="record_weights must be True or False"):
        langevin.simulate(x, y, xt, [0.0], **{**kw, "record_weights": "yes"})
    with pytest.raises(ValueError, match="T must be a finite real number, got None"):
        langevin.simulate(x, y, xt, [0.0], **{**kw, "T": None})
    far = langevin.simulate(x, y, xt, [0.0, 0.1], **{**kw, "freeze_readout_at": 1e300})  # never reached
    torch.testing.assert_close(far.outputs_test, langevin.simulate(x, y, xt, [0.0, 0.1], **kw).outputs_test)


def test_divergence_raises_and_empty_test_sets():
    x, y, xt = orthogonal_dataset()
    kw = dict(L=1, activation="relu", width=8, sigma0_sq=1.0, sigma_sq=1.0, T=0.1, n_networks=2)
    with pytest.raises(FloatingPointError, match="diverged .* lower dt"):  # dt·T/σ² = 0.5, but dt·λ_max ≫ 2
        langevin.simulate(x, y, xt, [0.0, 500.0], dt=5.0, **kw)
    with pytest.raises(ValueError, match="must be <= 2"):  # dt·T/σ² = 5: refused before it runs
        langevin.simulate(x, y, xt, [0.0, 500.0], dt=5.0, **{**kw, "T": 1.0})
    res = langevin.simulate(x, y, None, [0.0, 0.1], dt=0.01, **kw)
    assert res.outputs_test.shape == (2, 2, 0) and bool(torch.isfinite(res.outputs_train).all())


@pytest.mark.parametrize("change, name", [(dict(T=1e300), "T"), (dict(sigma_sq=1e-300), "sigma_sq"),
                                          (dict(dt=1e30), "dt"), (dict(T=1e300, sigma_sq=1e300), "T")])
def test_steps_that_cannot_be_stable_or_represented_are_errors(change, name):
    """dt·T/σ² > 2 (every step amplifies the weights) or a noise scale beyond float32 is a ValueError naming the
    argument, before anything runs (it used to fail inside torch: 'value cannot be converted ... without overflow')."""
    x, y, xt = orthogonal_dataset()
    kw = dict(L=1, activation="relu", width=4, sigma0_sq=1.0, sigma_sq=1.0, T=0.1, dt=0.05, n_networks=2)
    kw.update(change)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        langevin.simulate(x, y, xt, [0.0, 0.1], **kw)


@pytest.mark.parametrize("arg", ["x_train", "y", "x_test"])
def test_inputs_that_require_grad_are_errors(arg):
    """simulate is a sampler with in-place updates, not differentiable: say so instead of failing inside torch."""
    x, y, xt = orthogonal_dataset()
    args = dict(x_train=x, y=y, x_test=xt)
    args[arg] = torch.as_tensor(args[arg], dtype=torch.float64).clone().requires_grad_(True)
    kw = dict(L=1, activation="relu", width=4, sigma0_sq=1.0, sigma_sq=1.0, T=0.1, dt=0.05, n_networks=2)
    with pytest.raises(ValueError, match=rf"{arg} requires grad.*not differentiable"):
        langevin.simulate(args["x_train"], args["y"], args["x_test"], [0.0, 0.1], **kw)
