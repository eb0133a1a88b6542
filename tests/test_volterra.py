"""Tests of ntkcore._volterra, the product-integration rows behind ndk.mean_predictor, on scalar kernels with known
integrals (independent of the NDK): each row must integrate (kernel) × (piecewise-linear residual) to the accuracy of
its kernel interpolation, also across a √(t − t′) cusp and on grids that span two time scales."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from ntkcore import _volterra, ndk

GAMMA = 0.01


def graded_grid(t_max=1000.0):
    """A fine grid like mean_predictor's: steps from 2e-3 growing by 7% up to 5, then uniform (odd length)."""
    t = ndk.time_grid(t_max, h_first=4e-3, h_max=10.0, growth=1.15).numpy()
    fine = np.empty(2 * t.size - 1)
    fine[0::2], fine[1::2] = t, 0.5 * (t[1:] + t[:-1])
    return fine


def kernel(t, s):
    """A scalar kernel with the structure of the NDK: slow (scale 1/γ) and a √ cusp at s = t."""
    tau = t - s
    return 1.0 + 0.5 * np.exp(-GAMMA * tau) - 0.3 * np.sqrt(-np.expm1(-GAMMA * tau)) + 0.2 * np.exp(-2 * GAMMA * s)


def residual(s):
    """Fast early change (scale 0.05), then slow."""
    return np.exp(-s / 0.05) + 0.5 * np.cos(GAMMA * s)


def row_integral(row, t, values):
    """The row's fine and coarse integrals of ``kernel`` times the piecewise-linear interpolant of ``values``
    (from the row's cut on)."""
    k = kernel(t[row.i], t[row.i] - row.taus)
    fine = float(k @ (row.fine.dense() @ values[row.cut: row.i + 1]))
    if row.coarse is None:
        return fine, None
    return fine, float(k @ (row.coarse.dense() @ values[row.cut: row.i + 1: 2]))


def reference(t, i, grid):
    """∫₀^{t_i} K(t_i, s) r̃(s) ds with r̃ the piecewise-linear interpolant of ``residual`` on ``grid``, by adaptive
    quadrature on each step (the cusp step split once more towards the diagonal)."""
    r = residual(grid)
    total = 0.0
    for a, b, ra, rb in zip(grid[:-1], grid[1:], r[:-1], r[1:]):
        if a >= t[i]:
            break

        def f(s):
            return kernel(t[i], s) * (ra + (rb - ra) * (s - a) / (b - a))

        pts = [a + (b - a) * (1 - 10.0 ** -k) for k in range(1, 8)] if b == t[i] else None
        total += integrate.quad(f, a, b, points=pts, epsabs=0, epsrel=1e-13, limit=200)[0]
    return total


@pytest.mark.parametrize("i_frac", [0.0, 0.1, 0.3, 0.6, 1.0])
def test_rows_integrate_interpolated_kernel_times_linear_residual(i_frac):
    t = graded_grid()
    i = max(1, min(t.size - 1, int(i_frac * (t.size - 1))))
    i += i % 2  # an even row: it carries the coarse solution too
    i = min(i, t.size - 1)
    row = _volterra._Row(t, i, GAMMA)
    fine, coarse = row_integral(row, t, residual(t))
    # Tolerance: the first far panel [δ, 4δ] sees the cusp at distance δ, so degree-6 Chebyshev interpolation
    # converges like 3^-7 ≈ 5e-4 times the cusp's size there (≲ 0.3·√(4γδ) ≈ 0.2): ~1e-4 of the kernel over a
    # few steps, ~1e-6 of the integral. Linear interpolation between solution nodes is ~100 times worse.
    scale = integrate.quad(lambda s: abs(kernel(t[i], s) * residual(s)), 0, t[i], limit=400)[0]
    ref_f = reference(t, i, t)
    assert abs(fine - ref_f) <= 1e-5 * scale
    ref_c = reference(t, i, t[0::2])
    assert abs(coarse - ref_c) <= 1e-5 * scale
    # the same row with the kernel at every solution node would need i + 1 evaluations
    if t[i] > 100:
        assert row.taus.size < (i + 1) / 4


def test_rows_are_exact_for_constant_kernel_and_linear_residual():
    """K ≡ 1: the row integral of the piecewise-linear residual is the trapezoidal sum, exactly."""
    t = graded_grid(50.0)
    r = residual(t)
    for i in (1, 2, 7, t.size - 1):
        row = _volterra._Row(t, i, GAMMA)
        got = row.fine.dense().sum(0) @ r[: i + 1]
        trap = np.sum(0.5 * (r[1:i + 1] + r[:i]) * np.diff(t[: i + 1]))
        assert got == pytest.approx(trap, rel=1e-12)


def test_solve_matches_exponential_kernel_ode():
    """K(t, t′) = c e^{−a(t − t′)} (scalar, P = 1): f′ = c(y − f) − a f, f(0) = 0, so
    f(t) = c y (1 − e^{−(a+c)t})/(a + c). The solver's error estimate bounds the true error, which converges at
    second order."""
    a, c, y = 0.05, 20.0, 1.0

    def kern(ta, tb):
        return (c * torch.exp(-a * (ta - tb)))[:, None, None]

    errors, estimates = [], []
    for h in (0.2, 0.1):
        base = ndk.time_grid(60.0, h_first=0.002, h_max=h * 20, growth=1 + h)
        fine = torch.empty(2 * base.numel() - 1, dtype=torch.float64)
        fine[0::2], fine[1::2] = base, 0.5 * (base[1:] + base[:-1])
        out_f, out_c, pairs, _, _ = _volterra.solve(kern, torch.tensor([y], dtype=torch.float64), fine, 1,
                                                    gamma=a, batch_elements=10_000)
        exact = c * y * -torch.expm1(-(a + c) * base) / (a + c)
        errors.append((out_f[0::2, 0] - exact).abs().max().item())
        estimates.append((out_f[0::2, 0] - out_c[:, 0]).abs().max().item())
        assert pairs > 0
    assert errors[0] <= estimates[0] and errors[1] <= estimates[1]
    assert 2.5 < errors[0] / errors[1] < 6  # second order: ~4
    assert math.isfinite(estimates[1]) and estimates[1] < 1e-3


def test_solve_with_several_outputs_is_column_wise():
    """y (P, M): K(t, t′) = e^{−a(t − t′)} Q with a 2×2 matrix Q (P = 2) and one extra output row. The columns
    decouple: the M = 3 solve equals three single-column solves stacked (to 1e-12 relative), with the same number
    of kernel evaluations, and matches the exact solution f_train(t) = (aI + Q)⁻¹ Q (I − e^{−(aI + Q)t}) y within
    the error estimate."""
    a = 0.05
    Q = torch.tensor([[4.0, 1.0], [1.0, 2.0], [0.5, 3.0]], dtype=torch.float64)  # rows: 2 training outputs, 1 test

    def kern(ta, tb):
        return torch.exp(-a * (ta - tb))[:, None, None] * Q

    Y = torch.tensor([[1.0, -1.0, 0.3], [-1.0, 2.0, 0.0]], dtype=torch.float64)
    base = ndk.time_grid(30.0, h_first=0.005, h_max=0.25, growth=1.05)
    fine = torch.empty(2 * base.numel() - 1, dtype=torch.float64)
    fine[0::2], fine[1::2] = base, 0.5 * (base[1:] + base[:-1])
    out_f, out_c, pairs, _, _ = _volterra.solve(kern, Y, fine, 3, gamma=a, batch_elements=10_000)
    assert out_f.shape == (fine.numel(), 3, 3) and out_c.shape == (base.numel(), 3, 3)
    for j in range(3):
        col_f, col_c, col_pairs, _, _ = _volterra.solve(kern, Y[:, j], fine, 3, gamma=a, batch_elements=10_000)
        assert col_pairs == pairs
        for got, want in ((out_f[..., j], col_f), (out_c[..., j], col_c)):
            assert (got - want).abs().max() <= 1e-12 * want.abs().max()
    # exact: f' = Q_all (y − f_train) − a f  (the kernel's derivative in t is −a times the kernel)
    A = a * torch.eye(2, dtype=torch.float64) + Q[:2]
    exact_train = torch.stack([torch.linalg.solve(A, Q[:2] @ (torch.eye(2, dtype=torch.float64)
                                                             - torch.linalg.matrix_exp(-A * t)) @ Y) for t in base])
    err_true = (out_f[0::2, :2] - exact_train).abs().max()
    estimate = (out_f[0::2] - out_c).abs().max()
    assert err_true <= estimate < 1e-3


def exponential_problem(horizon, a=2.0):
    """K(t, t′) = e^{−a(t − t′)} C with C = G[:, :2] for a 3×3 Gram matrix G: two training outputs and one test
    output. C satisfies the bound (B) of _volterra with γ = a and the diagonal of G. Returns (kernel, diagonal, y,
    fine grid, exact equilibrium (3,))."""
    A = torch.tensor([[1.0, 0.4, -0.3], [0.2, 1.2, 0.5], [0.7, -0.6, 0.9]], dtype=torch.float64)
    G = A @ A.T
    C = G[:, :2]
    y = torch.tensor([1.0, -0.5], dtype=torch.float64)

    def kern(ta, tb):
        return torch.exp(-a * (ta - tb))[:, None, None] * C

    def diagonal(ts):
        return G.diagonal().expand(ts.shape[0], 3)

    base = ndk.time_grid(horizon, h_first=0.01, h_max=0.1, growth=1.1)
    fine = torch.empty(2 * base.numel() - 1, dtype=torch.float64)
    fine[0::2], fine[1::2] = base, 0.5 * (base[1:] + base[:-1])
    # equilibrium of f' = C (y − f_train) − a f: f_train = (aI + C_train)⁻¹ C_train y, f = C (y − f_train) / a
    f_train = torch.linalg.solve(a * torch.eye(2, dtype=torch.float64) + C[:2], C[:2] @ y)
    return kern, diagonal, y, fine, C @ (y - f_train) / a


def test_far_field_truncation_bounds_history_and_makes_cost_linear():
    """K = e^{−2(t−t′)} C (γ = 2) over horizons 12, 24, 48 ≫ 1/γ: with the equal-time diagonal the far field is cut,
    so every row reads the same bounded history and the kernel pairs grow linearly with the horizon (without the
    cut the far panels, at most 2/γ wide, tile all of [0, t] and the pairs grow quadratically: the same increments
    are in ratio about 3). The cut solution equals the uncut one to a small fraction of the error estimate (the cut
    is kept below 1e-3 of it) and reaches the exact equilibrium within the estimate."""
    runs = {}
    for horizon in (12.0, 24.0, 48.0):
        kern, diagonal, y, fine, exact = exponential_problem(horizon)
        runs[horizon] = _volterra.solve(kern, y, fine, 3, gamma=2.0, batch_elements=10_000, diagonal=diagonal)
    sol = runs[24.0]
    assert sol.history == runs[48.0].history < fine.numel() / 3  # the same bounded window at both horizons
    ratio = (runs[48.0].pairs - runs[24.0].pairs) / (runs[24.0].pairs - runs[12.0].pairs)
    assert 1.9 < ratio < 2.1
    kern, diagonal, y, fine, exact = exponential_problem(24.0)
    full = _volterra.solve(kern, y, fine, 3, gamma=2.0, batch_elements=10_000)
    assert full.history == fine.numel() and float(full.neglected.max()) == 0.0
    estimate = (full.fine[0::2] - full.coarse).abs().max().item()
    assert (sol.fine - full.fine).abs().max() <= 10 * _volterra.TRUNCATION * estimate
    assert 0 < sol.neglected.max() <= _volterra.TRUNCATION * estimate
    final = runs[48.0]
    assert (final.fine[-1] - exact).abs().max() <= (final.fine[0::2] - final.coarse).abs().max()


def test_far_field_is_cut_only_where_the_bound_proves_it_small():
    """The cut of a row (_volterra._Tail) for the scalar kernel K = c e^{−γ(t−t′)} (the bound (B) is then an
    equality of the kernel's size) and a residual history that does not decay: the integral over what is cut is at
    most the returned bound, which is at most the tolerance. Nothing is cut when the bound cannot prove it small: no
    error observed yet (tolerance 0), or a kernel that does not decay (γ = 0). A zero kernel row or a zero residual
    history is cut whole (what is cut is exactly zero)."""
    t = ndk.time_grid(60.0, h_first=0.01, h_max=0.1, growth=1.1).numpy()
    G = t.size if t.size % 2 else t.size - 1
    t = t[:G]
    c = 2.0
    r = 1.0 + 0.5 * np.sin(t)  # the fine residuals; the coarse ones are their even nodes
    res_f = torch.tensor(r, dtype=torch.float64)[:, None, None]
    res_c = res_f[0::2].clone()

    def tail(gamma, res_f, res_c, d=math.sqrt(c)):
        state = _volterra._Tail(t, gamma, torch.full((G, 1), d, dtype=torch.float64), (1, 1))
        for k in range(1, (G + 1) // 2):
            state.update(k, res_f, res_c)
        return state

    i = G - 1
    state = tail(1.0, res_f, res_c)
    for eps in (1e-3, 1e-8):
        cut, bound = state.cut(i, eps)
        assert 0 < cut < i - 2 and t[i] - t[cut] < 30  # something is cut, and not everything
        neglected = sum(integrate.quad(lambda s: c * math.exp(-(t[i] - s)) * np.interp(s, t, r), t[j], t[j + 1])[0]
                        for j in range(cut))
        assert neglected <= bound <= eps
        assert state.cut(i, eps / 1e3)[0] < cut  # a smaller tolerance cuts less
    assert state.cut(i, 0.0) == (0, 0.0)  # no error observed yet: nothing is cut
    assert tail(0.0, res_f, res_c).cut(i, 1e-3) == (0, 0.0)  # no decay: the whole history counts
    zero = tail(1.0, torch.zeros_like(res_f), torch.zeros_like(res_c))
    assert zero.cut(i, 0.0) == (i - 2 - (i - 2) % 2, 0.0)
    assert tail(1.0, res_f, res_c, d=0.0).cut(i, 0.0) == (i - 2 - (i - 2) % 2, 0.0)
