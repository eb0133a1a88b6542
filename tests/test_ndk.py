"""Tests of ntkcore.ndk: two-time kernels, the NDK, the mean-predictor solver and its limits (NDK paper; book
Chapter 6)."""
import math

import pytest
import torch

from ntkcore import ndk
from ntkcore.device import available_devices
from ntkcore.langevin import MLPEnsemble

HYPER = dict(sigma0_sq=2.0, sigma_sq=1.0, T=0.1)
HYPER_GRID = dict(L=1, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.1)


def orthogonal_dataset(P=4, N0=8, overlap=0.6, seed=0):
    """NDK paper Fig. 1: P orthogonal training inputs (norm √N0), random ±1 labels; one test input with overlap
    ``overlap`` (cosine) with the first training input and orthogonal to the others; its label is y[0]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(P + 1, N0, dtype=torch.float64)
    x[:P, :P] = math.sqrt(N0) * torch.eye(P, dtype=torch.float64)
    x[P, 0], x[P, P] = math.sqrt(N0) * overlap, math.sqrt(N0) * math.sqrt(1 - overlap**2)
    y = torch.where(torch.rand(P, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    y[0] = 1.0
    return x[:P], y, x[P:]


def random_inputs(n, N0=6, seed=0):
    x = torch.randn(n, N0, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True) * math.sqrt(N0)


def test_m_formula_and_limits():
    t = torch.tensor([0.0, 0.5, 3.0])
    mm = ndk.m(t[:, None], t[None, :], **HYPER)
    assert mm[0, 0].item() == pytest.approx(2.0)
    assert torch.allclose(mm, mm.T)
    g = HYPER["T"] / HYPER["sigma_sq"]
    expect = 1.0 * math.exp(-g * 2.5) + (2.0 - 1.0) * math.exp(-g * 3.5)
    assert mm[1, 2].item() == pytest.approx(expect, rel=1e-14)
    far = ndk.m(1000.0, 1001.0, **HYPER)
    assert far.item() == pytest.approx(math.exp(-g), rel=1e-12)


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("activation", ndk.ACTIVATIONS)
def test_two_time_kernels_shapes_symmetry_and_special_times(activation, device):
    x1, x2 = random_inputs(3, seed=1).to(device), random_inputs(2, seed=2).to(device)
    t1, t2 = torch.tensor([0.0, 0.7, 4.0]), torch.tensor([0.0, 2.0])
    kw = dict(L=2, activation=activation, **HYPER)
    k = ndk.two_time_kernels(x1, x2, t1, t2, **kw)
    assert k.ndk.shape == (3, 2, 3, 2) and k.ndk.device.type == torch.device(device).type
    kt = ndk.two_time_kernels(x2, x1, t2, t1, **kw)
    for a, b in zip(k, kt):  # K(t,t',x,x') = K(t',t,x',x)
        assert torch.allclose(a, b.permute(1, 0, 3, 2), atol=1e-13)
    # t = t' = 0 is the NTK with weight variance sigma0^2 (paper Eq. 10)
    assert torch.allclose(k.ndk[0, 0], ndk.ntk0(x1, x2, L=2, activation=activation, sigma0_sq=2.0), atol=1e-13)
    # long times: stationary kernels of the lag only; tau = 0 gives K_GP
    big = ndk.two_time_kernels(x1, x2, [500.0], [498.5], **kw)
    stat = ndk.stationary_kernels(x1, x2, [1.5], L=2, activation=activation, sigma_sq=1.0, T=0.1)
    for a, b in zip(big, stat):
        assert torch.allclose(a[0], b, atol=1e-12)
    gp = ndk.stationary_kernels(x1, x2, 0.0, L=2, activation=activation, sigma_sq=1.0, T=0.1).nngp[0]
    assert torch.allclose(gp, ndk.k_gp(x1, x2, L=2, activation=activation, sigma_sq=1.0), atol=1e-14)


def test_identity_activation_closed_form():
    """Linear network: K^L = m^L q0, K^{d,L} = (L+1) e m^L q0 (each layer contributes one equal term)."""
    x = random_inputs(3, seed=3)
    t1, t2 = torch.tensor([0.3]), torch.tensor([2.0])
    k = ndk.two_time_kernels(x, x, t1, t2, L=3, activation="identity", **HYPER)
    q0 = x @ x.T / x.shape[1]
    mm = ndk.m(0.3, 2.0, **HYPER).item()
    e = math.exp(-0.1 * 1.7)
    assert torch.allclose(k.nngp[0, 0], mm**3 * q0, atol=1e-13)
    assert torch.allclose(k.ndk[0, 0], 4 * e * mm**3 * q0, atol=1e-13)


def _empirical_ndk(x, xp, w_t, w_tp, activation, decay):
    """Paper Eq. 7 at finite width: e^{-γ|t-t'|} ∇θ(t) f(x,t) · ∇θ(t') f(x',t'), per network: (E, n, n')."""
    def jac(weights, inputs):
        ws = [w.clone().requires_grad_() for w in weights]
        f = MLPEnsemble(ws, activation).forward(inputs)
        rows = []
        for i in range(inputs.shape[0]):
            gs = torch.autograd.grad(f[:, i].sum(), ws, retain_graph=True)
            rows.append(torch.cat([g.reshape(g.shape[0], -1) for g in gs], 1))
        return torch.stack(rows, 1)  # (E, n, #params)
    return decay * jac(w_t, x) @ jac(w_tp, xp).transpose(1, 2)


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("times", [(0.0, 0.0), (0.5, 1.5)])
def test_ndk_matches_wide_network_gradients(activation, L, times):
    """NDK (paper Eq. 12) = e^{-γ|t-t'|} E[∇θ(t) f · ∇θ(t') f] over weights with covariance m(t,t') (Eqs. 7-8);
    at t = t' = 0 this is the empirical NTK of wide networks averaged over initializations (Eq. 10)."""
    hyper = dict(sigma0_sq=2.0, sigma_sq=1.0, T=0.3)
    t, tp = times
    x = random_inputs(3, seed=4)
    width, E = (2048, 64) if L == 1 else (512, 48)
    m = ndk.m(torch.tensor([t, t, tp]), torch.tensor([t, tp, tp]), **hyper)
    m_tt, m_ttp, m_tptp = m.tolist()
    a0 = MLPEnsemble.init(E, x.shape[1], width, L, activation, 1.0, seed=11, dtype=torch.float64).weights
    a1 = MLPEnsemble.init(E, x.shape[1], width, L, activation, 1.0, seed=12, dtype=torch.float64).weights
    # jointly Gaussian weights at the two times with variances m(t,t), m(t',t') and covariance m(t,t')
    rho = m_ttp / math.sqrt(m_tt * m_tptp)
    w_t = [math.sqrt(m_tt) * w for w in a0]
    w_tp = [math.sqrt(m_tptp) * (rho * w + math.sqrt(max(1 - rho**2, 0.0)) * v) for w, v in zip(a0, a1)]
    decay = math.exp(-hyper["T"] / hyper["sigma_sq"] * abs(t - tp))
    emp = _empirical_ndk(x, x, w_t, w_tp, activation, decay)
    mean, se = emp.mean(0), emp.std(0) / math.sqrt(E)
    theory = ndk.two_time_kernels(x, x, [t], [tp], L=L, activation=activation, **hyper).ndk[0, 0]
    z = (mean - theory) / se
    assert z.abs().max() < 4.5, (mean, theory, se)
    # the check has power: it resolves every entry to 2.5% of the kernel's scale or better
    assert se.max() < 0.025 * theory.abs().max()


@pytest.mark.parametrize("activation", ndk.ACTIVATIONS)
@pytest.mark.parametrize("L", [1, 2, 3])
def test_equilibrium_identity_integral_of_ndk_is_scaled_nngp(activation, L):
    """Paper Eq. 17: lim ∫₀ᵗ K^d(t − t′) dt′ = (σ²/T) K_GP, numerically (quadrature over the stationary NDK)."""
    x = random_inputs(4, seed=5)
    for sigma_sq, T in [(1.0, 0.1), (2.0, 0.05)]:
        integral = ndk.ndk_time_integral(x, L=L, activation=activation, sigma_sq=sigma_sq, T=T)
        gp = ndk.k_gp(x, L=L, activation=activation, sigma_sq=sigma_sq)
        assert torch.allclose(integral, sigma_sq / T * gp, rtol=1e-9, atol=1e-9)


def test_equilibrium_identity_with_two_time_kernel():
    """Same identity with the two-time kernel K^d(t, t′) at large t, by a trapezoid sum on a fine grid."""
    x = random_inputs(3, seed=6)
    hyper = dict(sigma0_sq=0.5, sigma_sq=1.0, T=0.5)
    t = 40.0  # e^{-γ t} = e^{-20}
    s = torch.linspace(0.0, math.sqrt(t), 4001, dtype=torch.float64)  # t' = t - s², smooth in s
    kd = ndk.two_time_kernels(x, x, [t], (t - s**2).clamp_min(0.0), L=2, activation="relu", **hyper).ndk[0]
    integral = torch.trapezoid(kd * (2 * s)[:, None, None], s, dim=0)
    gp = ndk.k_gp(x, L=2, activation="relu", sigma_sq=1.0)
    assert torch.allclose(integral, 2.0 * gp, rtol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_solver_approaches_ntk_limit_at_low_temperature(activation):
    """Low T, t = O(1): the mean predictor is the NTK gradient-flow prediction (paper Eq. 16); the distance shrinks
    with T (like √T for ReLU, whose derivative kernel has a √|t−t′| cusp, like T for erf)."""
    x, y, xt = orthogonal_dataset()
    kw = dict(L=2, activation=activation, sigma0_sq=2.0, sigma_sq=1.0)
    grid = ndk.time_grid(6.0, h_first=0.01, h_max=0.05)
    ntk = ndk.ntk_limit(x, y, torch.cat([x, xt]), grid, L=2, activation=activation, sigma0_sq=2.0)
    dist = []
    for T in (1e-3, 1e-5):
        sol = ndk.mean_predictor(x, y, xt, times=grid, T=T, **kw)
        assert sol.error_estimate < 1e-3
        d = torch.cat([sol.train, sol.test], 1) - ntk
        dist.append(d.abs().max().item())
    assert dist[1] < 0.02 * (1.0 if activation == "relu" else 0.1)
    assert dist[1] < dist[0] / 5


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("L", [1, 2])
def test_solver_approaches_nngp_limit_at_long_times(activation, L):
    """t → ∞: E f(x, t) → k_GPᵀ(γI + K_GP)⁻¹y (paper Eq. 18), for σ0² ≠ σ² so the transient matters."""
    x, y, xt = orthogonal_dataset()
    hyper = dict(sigma0_sq=0.5, sigma_sq=1.0, T=0.5)
    sol = ndk.mean_predictor(x, y, xt, 40.0, L=L, activation=activation, **hyper)  # γ t = 20
    lim = ndk.nngp_limit(x, y, torch.cat([x, xt]), L=L, activation=activation, sigma_sq=1.0, T=0.5)
    end = torch.cat([sol.train[-1], sol.test[-1]])
    assert (end - lim).abs().max() < max(5 * sol.error_estimate, 1e-4)
    # the NNGP limit differs from the NTK plateau: the test is not trivially satisfied
    ntk = ndk.ntk_limit(x, y, xt, [40.0], L=L, activation=activation, sigma0_sq=0.5)[0]
    assert (ntk - lim[-1:]).abs().max() > 0.1


def test_solver_error_estimate_reflects_true_error():
    """The refined-grid estimate bounds the true error of the returned solution, and is not far above it."""
    x, y, xt = orthogonal_dataset()
    kw = dict(L=1, activation="relu", sigma0_sq=2.0, sigma_sq=1.0, T=0.1)
    base = ndk.default_time_grid(x, 30.0, **kw)
    sol = ndk.mean_predictor(x, y, xt, times=base, **kw)
    fine = base
    for _ in range(3):  # reference on the grid refined 16 times (coarse nodes are nodes of the reference)
        f = torch.empty(2 * fine.shape[0] - 1, dtype=fine.dtype)
        f[0::2], f[1::2] = fine, 0.5 * (fine[1:] + fine[:-1])
        fine = f
    ref = ndk.mean_predictor(x, y, xt, times=fine, **kw)
    true = torch.maximum((sol.train - ref.train[0::8]).abs().amax(1), (sol.test - ref.test[0::8]).abs().amax(1))
    true_max = true.max().item()
    assert ref.error_estimate < 0.1 * true_max
    assert true_max <= sol.error_estimate <= 10 * true_max


def test_solver_cost_grows_slower_than_direct_quadrature():
    """Two time scales 10³ apart (T = 0.01, horizon 10σ²/T): the kernel is evaluated at far fewer time pairs than
    the G²/2 of a quadrature with the kernel at every node, and the answer still converges (estimate < 1e-3)."""
    x, y, xt = orthogonal_dataset()
    kw = dict(L=2, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.01)
    sol = ndk.mean_predictor(x, y, xt, 1000.0, **kw)
    g_fine = 2 * sol.times.numel() - 1
    assert sol.kernel_pairs < g_fine**2 / 2 / 4
    assert sol.error_estimate < 1e-3
    lim = ndk.nngp_limit(x, y, xt, L=2, activation="relu", sigma_sq=1.0, T=0.01)
    assert (sol.test[-1] - lim).abs().max() < 1e-3  # γ t = 10: equilibrium up to e^{-10}


@pytest.mark.parametrize("activation", ndk.ACTIVATIONS)
def test_ndk_is_bounded_by_its_equal_time_diagonal(activation):
    """The bound behind the solver's far-field cut (ntkcore._volterra, "Far-field truncation"): the NDK is
    e^{−γ|t−t′|} times a positive semi-definite kernel on (input, time) pairs (paper Eq. 7), so
    |K^d(x,t; x′,t′)| ≤ e^{−γ|t−t′|} √(K^d(x,t; x,t) K^d(x′,t′; x′,t′)) (Cauchy-Schwarz), with equality for x = x′,
    t = t′. Checked on inputs of norms 0.1 to 10, σ0² above and below σ², at random times over 6/γ; the diagonal
    (ndk._equal_time_diagonal) is that of the two-time kernels, and moves monotonically from its σ0² value to its σ²
    value (so its largest value over a step is at an end of it)."""
    g = torch.Generator().manual_seed(7)
    x = random_inputs(5, seed=8) * torch.tensor([0.1, 0.5, 1.0, 3.0, 10.0], dtype=torch.float64)[:, None]
    for L in (1, 3):
        for s0, s, T in [(2.0, 1.0, 0.5), (0.3, 1.5, 0.2)]:
            gamma = T / s
            t = torch.rand(10, generator=g, dtype=torch.float64) * 6 / gamma
            kd = ndk.two_time_kernels(x, x, t, t, L=L, activation=activation, sigma0_sq=s0, sigma_sq=s, T=T).ndk
            diag = ndk._equal_time_diagonal(x, t, L, activation, s0, s, T, chunk=2)  # in blocks of 2, 2 and 1
            assert torch.allclose(diag, kd.diagonal(dim1=0, dim2=1).diagonal(dim1=0, dim2=1), rtol=1e-13, atol=0)
            d = diag.sqrt()
            bound = (torch.exp(-gamma * (t[:, None] - t[None, :]).abs())[:, :, None, None]
                     * d[:, None, :, None] * d[None, :, None, :])
            assert (kd.abs() <= bound * (1 + 1e-12)).all()
            assert (kd.abs() / bound).max() > 1 - 1e-12  # attained (on the diagonal): the check has no slack
            steps = torch.linspace(0.0, 8 / gamma, 200, dtype=torch.float64)
            moves = ndk._equal_time_diagonal(x, steps, L, activation, s0, s, T).diff(dim=0) * (1 if s0 < s else -1)
            assert (moves >= -1e-13 * diag.max()).all()


def long_horizon_problem():
    """The orthogonal task (P = 4, one test input), ReLU, σ0² = σ² = 1 and σ²/T = 1 (the regime of long horizons,
    benchmarks/ndk.py --part horizon), on a coarse grid (resolution 0.5) to keep the test fast."""
    x, y, xt = orthogonal_dataset()
    kw = dict(L=1, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=1.0, resolution=0.5)
    lim = ndk.nngp_limit(x, y, xt, L=1, activation="relu", sigma_sq=1.0, T=1.0)
    return x, y, xt, kw, lim


def test_long_horizon_cost_grows_linearly_and_history_is_bounded():
    """Horizons 30, 60, 120 σ²/T: each step of the solver reads the same bounded history at 60 and 120 (a window of
    the grid, not all of it), and the kernel time pairs grow linearly (the increments from 30 to 60 to 120 are in
    ratio 2; without the far-field cut, 2/γ-wide panels tile all of [0, t] and the ratio is about 3). The answer at
    every horizon is the equilibrium (NNGP limit, paper Eq. 18) within the error estimate."""
    x, y, xt, kw, lim = long_horizon_problem()
    sols = {h: ndk.mean_predictor(x, y, xt, h, **kw) for h in (30.0, 60.0, 120.0)}
    assert sols[60.0].history == sols[120.0].history < (2 * sols[60.0].times.numel() - 1) / 3
    pairs = [sols[h].kernel_pairs for h in (30.0, 60.0, 120.0)]
    assert 1.9 < (pairs[2] - pairs[1]) / (pairs[1] - pairs[0]) < 2.1
    for sol in sols.values():
        assert (sol.test[-1] - lim).abs().max() <= sol.error_estimate < 1e-2


def test_far_field_cut_matches_the_uncut_solver_within_the_estimate():
    """Horizon 40 σ²/T: the solution with the far field cut equals the uncut one to well within the error estimate
    (the cut is kept below a thousandth of it, and the error estimate includes its bound), with fewer kernel pairs
    and a shorter history."""
    x, y, xt, kw, lim = long_horizon_problem()
    cut = ndk.mean_predictor(x, y, xt, 40.0, **kw)
    full = ndk.mean_predictor(x, y, xt, 40.0, truncate=False, **kw)
    assert full.history == 2 * full.times.numel() - 1 and cut.history < full.history / 2
    assert cut.kernel_pairs < full.kernel_pairs
    diff = max((cut.train - full.train).abs().max().item(), (cut.test - full.test).abs().max().item())
    assert diff <= 1e-2 * full.error_estimate
    assert 0 <= (cut.error - full.error).min() and (cut.error - full.error).max() <= 1e-3 * full.error_estimate


@pytest.mark.parametrize("T, t_max", [(0.0, 5.0), (0.01, 50.0)])
def test_nothing_is_cut_where_the_kernel_does_not_decay(T, t_max):
    """T = 0 (the NDK does not decay in the lag) and γ t_max = 0.5: every step reads the whole history."""
    x, y, xt = orthogonal_dataset()
    sol = ndk.mean_predictor(x, y, xt, t_max, L=1, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=T)
    assert sol.history == 2 * sol.times.numel() - 1


@pytest.mark.parametrize("activation", ndk.ACTIVATIONS)
def test_all_zero_training_inputs_give_the_exact_zero_predictor(activation):
    """Training inputs that are all zero: the closed-form activations vanish at 0, so every hidden activation and
    every gradient at those inputs is zero, K_NTK = 0 and the NDK is zero: there is no gradient-driven phase and the
    mean predictor (paper Eqs. 14-15) is exactly 0 at all times, as are its NTK and NNGP limits (Eqs. 16, 18). The
    default grid is uniform with the diffusive step (it used to divide by λ_max(K_NTK) = 0)."""
    x, y, xt = orthogonal_dataset()
    zero = torch.zeros_like(x)
    kw = dict(L=2, activation=activation, sigma0_sq=1.0, sigma_sq=1.0, T=0.5)
    grid = ndk.default_time_grid(zero, 10.0, **kw)
    steps = grid.diff()
    assert torch.allclose(steps, torch.full_like(steps, 0.2), rtol=1e-12)  # h_max = 0.1 σ²/T
    sol = ndk.mean_predictor(zero, y, xt, 10.0, **kw)
    assert torch.equal(sol.times, grid) and sol.error_estimate == 0.0
    assert not sol.train.any() and not sol.test.any()
    assert not ndk.ntk_limit(zero, y, xt, grid, L=2, activation=activation, sigma0_sq=1.0).any()
    assert not ndk.nngp_limit(zero, y, xt, L=2, activation=activation, sigma_sq=1.0, T=0.5).any()


@pytest.mark.parametrize("call, match", [
    (lambda x: ndk.default_time_grid(x, None, **HYPER_GRID), "t_max"),
    (lambda x: ndk.default_time_grid(x, "10", **HYPER_GRID), "t_max"),
    (lambda x: ndk.default_time_grid(x, -1.0, **HYPER_GRID), "t_max"),
    (lambda x: ndk.default_time_grid(x, 10.0, **{**HYPER_GRID, "sigma_sq": 0.0}), "sigma_sq"),
    (lambda x: ndk.default_time_grid(x, 10.0, **{**HYPER_GRID, "T": -1.0}), "T"),
    (lambda x: ndk.default_time_grid(x, 10.0, **{**HYPER_GRID, "T": None}), "T"),
    (lambda x: ndk.default_time_grid(x, 1e12, **HYPER_GRID), "grid points"),
    (lambda x: ndk.time_grid(1.0, h_first=1e-300, h_max=1e-300, growth=1.0), "grid points"),
    (lambda x: ndk.mean_predictor(x, torch.ones(4), x[:1], 1.0, truncate="yes", **HYPER_GRID), "truncate"),
])
def test_bad_time_grid_arguments(call, match):
    """A ValueError naming the argument, never a TypeError or ZeroDivisionError from inside, and no grid that would
    not end (10¹² points, or 10³⁰⁰ with growth 1)."""
    x, _, _ = orthogonal_dataset()
    with pytest.raises(ValueError, match=match):
        call(x)


def test_solver_linear_network_matches_ode():
    """Identity activation with σ0 = σ: K^d(t,t′) = (L+1) σ^{2L} e^{-(L+1)γ|t-t′|} Q (Q = input overlaps): the Volterra
    equation becomes a linear ODE system, solved exactly by a matrix exponential."""
    x, y, xt = orthogonal_dataset()
    hyper = dict(sigma0_sq=1.5, sigma_sq=1.5, T=0.2)
    L = 1
    sol = ndk.mean_predictor(x, y, xt, 10.0, L=L, activation="identity", **hyper, resolution=2)
    g = (L + 1) * hyper["T"] / hyper["sigma_sq"]
    c = (L + 1) * hyper["sigma_sq"] ** L
    xa = torch.cat([x, xt])
    Q, Qt = x @ x.T / x.shape[1], xa @ x.T / x.shape[1]
    # f_train = u with u' = c Q (y − f) − g u ; test: v' = c Qt (y − f) − g v
    P = x.shape[0]
    A = torch.zeros(P + xa.shape[0] + 1, P + xa.shape[0] + 1, dtype=torch.float64)
    A[:P, :P] = -c * Q - g * torch.eye(P, dtype=torch.float64)
    A[:P, -1] = c * Q @ y
    A[P:-1, :P] = -c * Qt
    A[P:-1, P:-1] = -g * torch.eye(xa.shape[0], dtype=torch.float64)
    A[P:-1, -1] = c * Qt @ y
    z0 = torch.zeros(A.shape[0], dtype=torch.float64)
    z0[-1] = 1.0
    exact = torch.stack([torch.linalg.matrix_exp(A * t) @ z0 for t in sol.times])[:, P:-1]
    got = torch.cat([sol.train, sol.test], 1)
    assert (got - exact).abs().max() < sol.error_estimate
    assert sol.error_estimate < 2e-3


def test_ntk_limit_is_gradient_flow():
    x, y, xt = orthogonal_dataset()
    f = ndk.ntk_limit(x, y, x, [0.0, 1.0, 1e6], L=1, activation="relu", sigma0_sq=2.0)
    assert torch.allclose(f[0], torch.zeros_like(y))
    assert torch.allclose(f[-1], y, atol=1e-10)
    K = ndk.ntk0(x, L=1, activation="relu", sigma0_sq=2.0)
    assert torch.allclose(f[1], y - torch.linalg.matrix_exp(-K) @ y, atol=1e-12)


def multi_output_problem(M=3):
    """The orthogonal task with three test inputs and M label columns: ±y, a non-binary column, then random ones."""
    x, y, xt = orthogonal_dataset()
    xt = torch.cat([xt, random_inputs(2, N0=8, seed=3)])
    cols = [y, -y, torch.tensor([0.5, -2.0, 1.0, 0.0], dtype=torch.float64)]
    g = torch.Generator().manual_seed(4)
    cols += [torch.randn(4, generator=g, dtype=torch.float64) for _ in range(M - 3)]
    return x, torch.stack(cols[:M], 1), xt


def assert_stacked(got, columns, rtol=1e-12):
    """``got (..., M)`` equals the single-output results stacked on a trailing axis, to ``rtol`` of their scale."""
    want = torch.stack(columns, -1)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= rtol * want.abs().max(), (got - want).abs().max()


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_multi_output_solver_and_limits_equal_stacked_single_outputs(activation):
    """Labels (P, M): the mean-predictor equations (paper Eqs. 14-15) decouple across outputs, which share the
    kernel, so the solver and the NTK / NNGP limits (Eqs. 16, 18) equal the M single-output results stacked on a
    trailing axis; the error estimate is the largest over the outputs, and the kernel is evaluated at the same
    number of time pairs as for one output."""
    x, Y, xt = multi_output_problem(3)
    kw = dict(L=2, activation=activation, sigma0_sq=0.5, sigma_sq=1.0, T=0.3)
    sol = ndk.mean_predictor(x, Y, xt, 8.0, **kw)
    single = [ndk.mean_predictor(x, Y[:, j], xt, 8.0, **kw) for j in range(3)]
    assert sol.train.shape == (sol.times.numel(), 4, 3) and sol.test.shape == (sol.times.numel(), 3, 3)
    assert_stacked(sol.train, [s.train for s in single])
    assert_stacked(sol.test, [s.test for s in single])
    # the error estimate is a difference of two solutions: equal to rounding of the solutions' scale
    scale = sol.train.abs().max()
    assert (sol.error - torch.stack([s.error for s in single], 1).amax(1)).abs().max() <= 1e-12 * scale
    assert abs(sol.error_estimate - max(s.error_estimate for s in single)) <= 1e-12 * scale
    assert sol.kernel_pairs == single[0].kernel_pairs
    assert sol.train.abs().max() > 0.5 and sol.error_estimate < 1e-3  # a nontrivial, converged solution
    # one column given as (P, 1) is the single-output solution with a trailing axis
    one = ndk.mean_predictor(x, Y[:, :1], xt, 8.0, **kw)
    assert torch.equal(one.test[..., 0], single[0].test) and one.error_estimate == single[0].error_estimate
    # the limits
    ntk = ndk.ntk_limit(x, Y, xt, sol.times, L=2, activation=activation, sigma0_sq=0.5)
    assert ntk.shape == (sol.times.numel(), 3, 3)
    assert_stacked(ntk, [ndk.ntk_limit(x, Y[:, j], xt, sol.times, L=2, activation=activation, sigma0_sq=0.5)
                         for j in range(3)])
    gp_kw = dict(L=2, activation=activation, sigma_sq=1.0, T=0.3)
    gp = ndk.nngp_limit(x, Y, xt, **gp_kw)
    assert gp.shape == (3, 3)
    assert_stacked(gp, [ndk.nngp_limit(x, Y[:, j], xt, **gp_kw) for j in range(3)])
    alpha = ndk.posterior_coefficients(x, Y, **gp_kw)
    assert alpha.shape == (4, 3)
    assert_stacked(alpha, [ndk.posterior_coefficients(x, Y[:, j], **gp_kw) for j in range(3)])


def test_multi_output_kernel_evaluations_do_not_grow_with_outputs(monkeypatch):
    """The kernel (the expensive part) is evaluated once for all M outputs: the same calls, at the same time pairs,
    for M = 1 and M = 8, counted both by the solver (kernel_pairs) and at the kernel function itself."""
    x, Y, xt = multi_output_problem(8)
    kw = dict(L=1, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.2)
    calls = []
    pair_kernels = ndk._pair_kernels

    def counting(x1, x2, ta, tb, *args, **kwargs):
        calls.append(ta.numel())
        return pair_kernels(x1, x2, ta, tb, *args, **kwargs)

    monkeypatch.setattr(ndk, "_pair_kernels", counting)
    counts = {}
    for M in (1, 8):
        calls.clear()
        sol = ndk.mean_predictor(x, Y[:, :M], xt, 10.0, **kw)
        counts[M] = (list(calls), sol.kernel_pairs)
    assert counts[1] == counts[8]
    assert sum(counts[8][0]) == counts[8][1] > 0


@pytest.mark.parametrize("bad, what", [
    (lambda Y: Y[:3], "one per training input"),
    (lambda Y: Y[:, :0], "at least one column"),
    (lambda Y: Y[:, :, None], "dimension"),
    (lambda Y: Y.T, "4 rows"),  # (M, P) instead of (P, M)
])
def test_multi_output_bad_label_shapes(bad, what):
    """y with the wrong number of rows (also transposed, (M, P)), with an empty output axis or with three axes: a
    ValueError naming y, from the solver and from each limit."""
    x, Y, xt = multi_output_problem(3)
    y = bad(Y)
    calls = [lambda: ndk.mean_predictor(x, y, xt, 1.0, L=1, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.1),
             lambda: ndk.ntk_limit(x, y, xt, [1.0], L=1, activation="relu", sigma0_sq=1.0),
             lambda: ndk.nngp_limit(x, y, xt, L=1, activation="relu", sigma_sq=1.0, T=0.1),
             lambda: ndk.posterior_coefficients(x, y, L=1, activation="relu", sigma_sq=1.0, T=0.1)]
    for call in calls:
        with pytest.raises(ValueError, match="^y ") as info:
            call()
        assert what in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(activation="tanh"), "activation"),
        (dict(L=0), "L"),
        (dict(sigma0_sq=-1.0), "sigma0_sq"),
        (dict(T=float("nan")), "T"),
    ],
)
def test_bad_hyper_parameters(kwargs, match):
    x = random_inputs(2)
    kw = dict(L=1, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.1)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ndk.two_time_kernels(x, x, [0.0], **kw)


def test_bad_inputs():
    x, y, xt = orthogonal_dataset()
    kw = dict(L=1, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.1)
    with pytest.raises(ValueError, match="x2"):
        ndk.two_time_kernels(x, torch.ones(2, 3), [0.0], **kw)
    with pytest.raises(ValueError, match="t1"):
        ndk.two_time_kernels(x, x, [-1.0], **kw)
    with pytest.raises(ValueError, match="y"):
        ndk.mean_predictor(x, y[:2], xt, 1.0, **kw)
    with pytest.raises(ValueError, match="times"):
        ndk.mean_predictor(x, y, xt, times=[0.5, 1.0], **kw)
    with pytest.raises(ValueError, match="t_max"):
        ndk.mean_predictor(x, y, xt, **kw)
    with pytest.raises(ValueError, match="times has a step too short"):  # 1.5 and the next float: no midpoint
        ndk.mean_predictor(x, y, xt, times=[0.0, 1.5, math.nextafter(1.5, 2.0), 2.0], **kw)
    with pytest.raises(ValueError, match="x1"):
        ndk.k_gp(torch.tensor([[float("nan")]]), L=1, activation="relu", sigma_sq=1.0)
    with pytest.raises(ValueError, match="smallest eigenvalue"):
        ndk.nngp_limit(torch.cat([x, x]), torch.cat([y, y]), xt, L=1, activation="relu", sigma_sq=1.0, T=0.0)


def test_sizes_names_and_overflow_are_value_errors():
    """Depths are bounded, errors name the public argument, and results that overflow are refused."""
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.ones(4, dtype=torch.float64)
    hyper = dict(L=2, activation="relu", sigma_sq=1.0, T=0.1)
    with pytest.raises(ValueError, match="L must be <= 1000"):
        ndk.k_gp(x, L=10**7, activation="erf", sigma_sq=1.0)
    with pytest.raises(ValueError, match="x_test must"):
        ndk.nngp_limit(x, y, [["a"] * 3], **hyper)
    with pytest.raises(ValueError, match="rescale T, sigma_sq"):  # γ = T/σ² overflows (was: eigh failed)
        ndk.nngp_limit(x, y, x, L=2, activation="relu", sigma_sq=5e-324, T=0.1)
    with pytest.raises(ValueError, match="rescale y"):
        ndk.nngp_limit(x, torch.full((4,), 1e308, dtype=torch.float64), x, **hyper)
    with pytest.raises(ValueError, match="underflows to 0 .t_max=5e-324"):
        ndk.mean_predictor(x, y, x, 5e-324, sigma0_sq=1.0, **hyper)
    with pytest.raises(ValueError, match="not differentiable"):
        ndk.mean_predictor(x.clone().requires_grad_(True), y, x, 1.0, sigma0_sq=1.0, **hyper)


def test_ntk_limit_on_a_singular_kernel_tends_to_the_pseudo_inverse_solution():
    """Duplicated training inputs make K_NTK singular; at t → ∞ the predictor is k(x, X) K⁺ y at every time scale
    (rounding-noise eigenvalues, kept, would have entered as 1/λ)."""
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x_train, y = torch.cat([x, x]), torch.tensor([1.0, -1.0, 0.5, 1.0, -1.0, 0.5], dtype=torch.float64)
    kk = ndk.ntk0(x_train, L=2, activation="erf", sigma0_sq=1.0)
    kt = ndk.ntk0(x, x_train, L=2, activation="erf", sigma0_sq=1.0)
    limit = kt @ torch.linalg.pinv(kk, hermitian=True) @ y
    out = ndk.ntk_limit(x_train, y, x, [1e6, 1e14, 1e24], L=2, activation="erf", sigma0_sq=1.0)
    torch.testing.assert_close(out, limit.expand(3, -1), rtol=0, atol=1e-12)  # 1e-6 before, at t = 1e24
