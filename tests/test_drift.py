"""Tests of ntkcore.drift: the representational-drift kernels and predictors of the NDK paper (section 5,
Eqs. 19-21; book Chapter 7, "Representational drift"), against Monte Carlo over wide random networks and
against Langevin ensembles with the readout frozen at equilibrium."""
import math

import pytest
import torch

from ntkcore import data, drift, langevin, ndk
from ntkcore.device import available_devices


def inputs(n=6, n0=5, seed=0, device="cpu"):
    """Random inputs with different norms (so that the mean kernel is not constant)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n0, generator=g, dtype=torch.float64)
    return (x * torch.linspace(0.5, 1.5, n, dtype=torch.float64)[:, None]).to(device)


def relu_net_activations(x, W):
    """Last hidden layer of the paper's network for a list of weight matrices, ``(n, N)``."""
    h = x
    for w in W:
        h = torch.relu(h @ w.T / math.sqrt(h.shape[1]))
    return h


@pytest.mark.parametrize("activation", ["erf", "identity"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_mean_kernel_vanishes_for_odd_activations(activation, L):
    x = inputs()
    hyper = dict(L=L, activation=activation, sigma_sq=1.7)
    assert torch.equal(drift.mean_kernel(x, **hyper), torch.zeros(6, 6, dtype=torch.float64))
    y = torch.tensor([1.0, -1, 1, -1, 1, 1], dtype=torch.float64)
    assert torch.equal(drift.drift_limit(x, y, x, T=0.1, **hyper), torch.zeros(6, dtype=torch.float64))
    # and the two-time kernel does decay to it
    k = drift.drift_kernel(x, tau=[0.0, 1000.0], T=0.1, **hyper)
    assert k[0].abs().max() > 0.1 and k[1].abs().max() < 1e-12


@pytest.mark.parametrize("L", [1, 2, 3])
def test_relu_mean_kernel_closed_form(L):
    """μ(x) = √(σ² q^{L−1}(x,x)/(2π)), hence K_mean = √(K_GP(x,x) K_GP(x′,x′))/π; ReLU is homogeneous so
    μ ∝ ‖x‖ at every depth."""
    x = inputs()
    s = 1.7
    hyper = dict(L=L, activation="relu", sigma_sq=s)
    kgp = torch.diagonal(ndk.k_gp(x, **hyper))
    km = drift.mean_kernel(x, **hyper)
    torch.testing.assert_close(km, torch.sqrt(kgp[:, None] * kgp[None, :]) / math.pi, rtol=1e-12, atol=0)
    mu = drift.mean_activation(x, **hyper)
    expect = math.sqrt(s / (2 * math.pi)) * (s / 2) ** ((L - 1) / 2) * x.norm(dim=1) / math.sqrt(x.shape[1])
    torch.testing.assert_close(mu, expect, rtol=1e-12, atol=0)


@pytest.mark.parametrize("L", [1, 2])
def test_relu_mean_activation_matches_monte_carlo(L):
    """μ(x) against the average hidden activation of wide random networks, θ ~ N(0, σ²), within 5 standard errors
    (the SE over 200 independent networks; the finite-width bias of a width-512 network, O(1/N), is far below it)."""
    x = inputs(n=4)
    s, N, nets = 1.7, 512, 200
    g = torch.Generator().manual_seed(1)
    per_net = []
    for _ in range(nets):
        W = [math.sqrt(s) * torch.randn(N, x.shape[1], generator=g, dtype=torch.float64)]
        W += [math.sqrt(s) * torch.randn(N, N, generator=g, dtype=torch.float64) for _ in range(L - 1)]
        per_net.append(relu_net_activations(x, W).mean(1))
    per_net = torch.stack(per_net)
    mean, se = per_net.mean(0), per_net.std(0) / math.sqrt(nets)
    mu = drift.mean_activation(x, L=L, activation="relu", sigma_sq=s)
    assert ((mean - mu).abs() < 5 * se).all(), ((mean - mu) / se)


def test_drift_kernel_matches_monte_carlo_of_ou_weights():
    """k^L(τ) against N⁻¹ x^L(x, t)·x^L(x′, t0) of wide ReLU networks whose weights at the two times are jointly
    Gaussian with variance σ² and covariance σ² e^{−γτ} (the stationary Ornstein-Uhlenbeck prior), L = 2."""
    x = inputs(n=3)
    s, T, tau, N, nets = 1.3, 0.2, 3.0, 512, 40
    rho = math.exp(-T / s * tau)
    g = torch.Generator().manual_seed(2)
    est = []
    for _ in range(nets):
        W0 = [math.sqrt(s) * torch.randn(N, n, generator=g, dtype=torch.float64) for n in (x.shape[1], N)]
        Wt = [rho * w + math.sqrt(1 - rho**2) * math.sqrt(s) * torch.randn(w.shape, generator=g, dtype=w.dtype)
              for w in W0]
        est.append(relu_net_activations(x, Wt) @ relu_net_activations(x, W0).T / N)
    est = torch.stack(est)
    mean, se = est.mean(0), est.std(0) / math.sqrt(nets)
    k = drift.drift_kernel(x, tau=tau, L=2, activation="relu", sigma_sq=s, T=T)[0]
    assert ((mean - k).abs() < 5 * se).all(), ((mean - k) / se)
    # the test has power: the lag-0 kernel and the mean kernel are both rejected
    assert ((mean - ndk.k_gp(x, L=2, activation="relu", sigma_sq=s)).abs() / se).max() > 10
    assert ((mean - drift.mean_kernel(x, L=2, activation="relu", sigma_sq=s)).abs() / se).max() > 10


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("activation", ["relu", "erf", "identity"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_drift_kernel_limits(activation, L, device):
    """k^L(0) = K_GP and k^L(τ) → K_mean. At large τ the difference decays like e^{−γτ} for ReLU (whose lower
    layers keep a nonzero mean kernel, so every layer's cross-covariance is linear in e^{−γτ}) and like e^{−Lγτ}
    for the odd activations (each layer multiplies a vanishing cross-covariance by σ² e^{−γτ})."""
    x1, x2 = inputs(4, device=device), inputs(3, seed=1, device=device)
    s, T = 1.3, 0.2
    hyper = dict(L=L, activation=activation, sigma_sq=s)
    g = T / s
    taus = torch.tensor([0.0, 40.0, 40.0 + 1 / g, 3000.0], dtype=torch.float64)
    k = drift.drift_kernel(x1, x2, taus, T=T, **hyper)
    assert k.shape == (4, 4, 3) and k.device.type == torch.device(device).type
    torch.testing.assert_close(k[0], ndk.k_gp(x1, x2, **hyper), rtol=1e-13, atol=1e-15)
    km = drift.mean_kernel(x1, x2, **hyper)
    torch.testing.assert_close(k[-1], km, rtol=1e-10, atol=1e-12)
    d1, d2 = (k[1] - km).abs().max(), (k[2] - km).abs().max()
    assert d1 > 1e-10
    rate = 1 if activation == "relu" else L
    assert abs(float(d2 / d1) / math.exp(-rate) - 1) < 0.03


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("L", [1, 2])
def test_drift_predictor_limits(activation, L):
    x, xt = inputs(6), inputs(4, seed=3)
    y = torch.tensor([1.0, -1, 1, -1, -1, 1], dtype=torch.float64)
    hyper = dict(L=L, activation=activation, sigma_sq=1.3, T=0.1)
    f = drift.drift_predictor(x, y, xt, [0.0, 5.0, 5000.0], **hyper)
    assert f.shape == (3, 4)
    torch.testing.assert_close(f[0], ndk.nngp_limit(x, y, xt, **hyper), rtol=1e-12, atol=1e-12)
    lim = drift.drift_limit(x, y, xt, **hyper)
    torch.testing.assert_close(f[-1], lim, rtol=1e-9, atol=1e-12)
    alpha = drift.posterior_coefficients(x, y, **hyper)
    km = drift.mean_kernel(xt, x, L=L, activation=activation, sigma_sq=1.3)
    torch.testing.assert_close(lim, km @ alpha, rtol=1e-12, atol=0)
    # the drift predictor on the training inputs at τ = 0 fits the labels up to the ridge γ(γI + K)⁻¹y
    ftr = drift.drift_predictor(x, y, x, 0.0, **hyper)[0]
    torch.testing.assert_close(y - ftr, (0.1 / 1.3) * alpha, rtol=1e-10, atol=1e-12)


def frozen_readout_problem():
    """Four orthogonal training inputs with norms² 0.64..4 N0 and four test inputs (NDK paper Figure 1 task)."""
    x, y, xt, _ = data.orthogonal_synthetic(n_train=4, n_test=4, overlap=0.6, seed=1, torch=True,
                                            dtype=torch.float64)
    scale = torch.tensor([0.8, 1.2, 1.6, 2.0], dtype=torch.float64)
    return x * scale[:, None], y, xt * scale[:, None]


def test_drift_predictor_matches_frozen_readout_ensemble():
    """Theory vs simulation: a Langevin ensemble (L = 1, ReLU, width 128, 128 networks) reaches equilibrium
    (γ t0 = 3, where the mean predictor of paper Eqs. 14-15 is within 2e-3 of its NNGP limit), the readout is frozen
    and the hidden weights diffuse without the loss gradient. The ensemble mean follows paper Eq. 19 within 4.5
    standard errors at every lag and input (40 comparisons; SE ≈ 0.07, finite-width and Euler-Maruyama biases
    ≈ 0.01), and the hidden weights decorrelate like e^{−γτ}."""
    x, y, xt = frozen_readout_problem()
    T, s, t0 = 0.25, 1.0, 12.0
    hyper = dict(L=1, activation="relu", sigma_sq=s, T=T)
    taus = torch.tensor([0.0, 2.0, 4.0, 8.0, 12.0], dtype=torch.float64)
    eq = ndk.mean_predictor(x, y, xt, t0, sigma0_sq=s, **hyper)
    assert (eq.test[-1] - ndk.nngp_limit(x, y, xt, **hyper)).abs().max() < 2e-3
    sim = langevin.simulate(x, y, xt, t0 + taus, width=128, sigma0_sq=s, dt=0.04, n_networks=128, seed=11,
                            freeze_readout_at=t0, record_weights=True, **hyper)
    theory = torch.cat([drift.drift_predictor(x, y, x, taus, **hyper), drift.drift_predictor(x, y, xt, taus, **hyper)],
                       1)
    mean = torch.cat([sim.mean("train"), sim.mean("test")], 1)
    se = torch.cat([sim.standard_error("train"), sim.standard_error("test")], 1)
    z = (mean - theory) / se
    assert z.abs().max() < 4.5, z
    # power: the simulation rejects "nothing changes after the freeze" (the τ = 0 prediction) at the last lag
    assert ((mean[-1] - theory[0]).abs() / se[-1]).max() > 4.5
    # the readout stayed put, the hidden weights decorrelated like e^{−γτ}
    assert torch.equal(sim.weights[-1][:, 0], sim.weights[-1][:, -1])
    rho = drift.weight_correlation(sim.weights[0], ref=0)
    r_mean, r_se = rho.mean(0), rho.std(0) / math.sqrt(rho.shape[0])
    expect = torch.exp(-T / s * taus)
    assert ((r_mean - expect).abs() < 5 * r_se + 1e-12).all(), (r_mean, expect)


def test_weight_correlation_definition():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, 5, 2, generator=g, dtype=torch.float64)
    rho = drift.weight_correlation(w, ref=1)
    assert rho.shape == (3, 4)
    torch.testing.assert_close(rho[:, 1], torch.ones(3, dtype=torch.float64))
    e, k = 2, 3
    expect = (w[e, 1] * w[e, k]).sum() / (w[e, 1] ** 2).sum()
    torch.testing.assert_close(rho[e, k], expect)
    torch.testing.assert_close(drift.weight_correlation(w, ref=-1)[:, -1], torch.ones(3, dtype=torch.float64))


def brute_force_accuracy(s, y, e, ye):
    best, rule = -1.0, None
    for thr in sorted(set(s.tolist())) + [math.inf]:
        for o in (1.0, -1.0):
            acc = float(((o * (2.0 * (s >= thr) - 1)) == y).double().mean())
            if acc > best:
                best, rule = acc, (thr, o)
    thr, o = rule
    return float(((o * (2.0 * (e >= thr) - 1)) == ye).double().mean()), best


def test_threshold_accuracy():
    s = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.7])
    y = torch.tensor([-1.0, -1, 1, 1, 1])
    assert float(drift.threshold_accuracy(s, y)) == pytest.approx(0.8)
    assert float(drift.threshold_accuracy(torch.zeros(5), y)) == pytest.approx(0.6)  # ties: the majority class
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = torch.randn(3, 15, generator=g).round(decimals=1)  # with ties
        y = torch.where(torch.rand(15, generator=g) < 0.5, -1.0, 1.0)
        e = torch.randn(3, 9, generator=g)
        ye = torch.where(torch.rand(9, generator=g) < 0.5, -1.0, 1.0)
        acc_train = drift.threshold_accuracy(s, y)
        acc_eval = drift.threshold_accuracy(s, y, e, ye)
        for r in range(3):
            bf_eval, bf_train = brute_force_accuracy(s[r].double(), y.double(), e[r].double(), ye.double())
            assert float(acc_train[r]) == pytest.approx(bf_train)
            # several rules may tie on the training data; the chosen one must be one of them
            assert float(acc_eval[r]) in [pytest.approx(v) for v in _tied_rule_accuracies(s[r], y, e[r], ye)]
        # invariant under strictly increasing maps (the classifier is a threshold rule at a training score)
        torch.testing.assert_close(drift.threshold_accuracy(torch.exp(s), y, torch.exp(e), ye), acc_eval)


def _tied_rule_accuracies(s, y, e, ye):
    s, y, e, ye = s.double(), y.double(), e.double(), ye.double()
    rules = [(thr, o) for thr in sorted(set(s.tolist())) + [math.inf] for o in (1.0, -1.0)]
    train = [float(((o * (2.0 * (s >= t) - 1)) == y).double().mean()) for t, o in rules]
    best = max(train)
    return [float(((o * (2.0 * (e >= t) - 1)) == ye).double().mean()) for (t, o), a in zip(rules, train) if a == best]


@pytest.mark.parametrize("call, match", [
    (lambda x: drift.drift_kernel(x, tau=-1.0, L=1, activation="relu", sigma_sq=1.0, T=0.1), "tau"),
    (lambda x: drift.drift_kernel(x, tau=[], L=1, activation="relu", sigma_sq=1.0, T=0.1), "tau"),
    (lambda x: drift.drift_kernel(x, x[:, :2], L=1, activation="relu", sigma_sq=1.0, T=0.1), "N0"),
    (lambda x: drift.drift_kernel(x, L=0, activation="relu", sigma_sq=1.0, T=0.1), "L"),
    (lambda x: drift.drift_kernel(x, L=1, activation="tanh", sigma_sq=1.0, T=0.1), "activation"),
    (lambda x: drift.drift_kernel(x, L=1, activation="relu", sigma_sq=0.0, T=0.1), "sigma_sq"),
    (lambda x: drift.drift_kernel(x, L=1, activation="relu", sigma_sq=1.0, T=-0.1), "T"),
    (lambda x: drift.mean_kernel(x[0], L=1, activation="relu", sigma_sq=1.0), "x"),
    (lambda x: drift.mean_kernel(x * float("nan"), L=1, activation="relu", sigma_sq=1.0), "x"),
    (lambda x: drift.mean_activation(x[:0], L=2, activation="relu", sigma_sq=1.0), "x"),
    (lambda x: drift.drift_predictor(x, torch.ones(5), x, 1.0, L=1, activation="relu", sigma_sq=1.0, T=0.1), "y"),
    (lambda x: drift.drift_limit(x, torch.ones(6), x[:, :3], L=1, activation="relu", sigma_sq=1.0, T=0.1),
     "x_test"),
    (lambda x: drift.drift_limit(torch.cat([x, x]), torch.ones(12), x, L=1, activation="identity", sigma_sq=1.0,
                                 T=0.0), "positive definite"),
    (lambda x: drift.weight_correlation(torch.zeros(2, 3, 4)), "zero"),
    (lambda x: drift.weight_correlation(torch.ones(2, 3, 4), ref=3), "ref"),
    (lambda x: drift.weight_correlation(torch.ones(4)), "w"),
    (lambda x: drift.threshold_accuracy(torch.ones(3), torch.tensor([1.0, 0.0, 1.0])), "labels"),
    (lambda x: drift.threshold_accuracy(torch.ones(3), torch.ones(4)), "labels"),
    (lambda x: drift.threshold_accuracy(torch.ones(3), torch.ones(3), torch.ones(2)), "eval"),
    (lambda x: drift.threshold_accuracy(torch.ones(2, 3), torch.ones(3), torch.ones(3, 2), torch.ones(2)),
     "eval_scores"),
    # None is not "not given" where it is not a value (it used to skip the check of T and fail inside ndk)
    (lambda x: drift.drift_kernel(x, tau=1.0, L=1, activation="relu", sigma_sq=1.0, T=None),
     "T must be a finite real number, got None"),
    (lambda x: drift.drift_predictor(x, torch.ones(6), x, 1.0, L=1, activation="relu", sigma_sq=1.0, T=None),
     "T must be a finite real number, got None"),
    (lambda x: drift.drift_kernel(x, tau=None, L=1, activation="relu", sigma_sq=1.0, T=0.1),
     "tau must be an array of real numbers"),
    (lambda x: drift.threshold_accuracy(torch.ones(0), torch.ones(0)), "scores must hold at least one score"),
    (lambda x: drift.threshold_accuracy(torch.ones(3), torch.ones(3), torch.ones(0), torch.ones(0)),
     "eval_scores must have 1 rows like scores and at least one column"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call(inputs())


@pytest.mark.parametrize("scale", [1e155, 1e300, 1e-200, 1e-300])
def test_weight_correlation_is_scale_invariant_over_the_float64_range(scale):
    """ρ is invariant under w → c w: no NaN from an overflowing (or zero from an underflowing) dot product."""
    w = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(drift.weight_correlation(w * scale), drift.weight_correlation(w))


def test_weight_correlation_beyond_the_float64_range_is_an_error():
    w = torch.ones(1, 2, 3, dtype=torch.float64)
    w[0, 1] = 1e300
    with pytest.raises(ValueError, match=r"\bw\b"):
        drift.weight_correlation(w * torch.tensor([1e-300, 1.0], dtype=torch.float64)[None, :, None])
