"""Tests of ntkcore.bounds against independent computations: the minimum-norm linear interpolant, Monte Carlo
Rademacher complexities, the lecture's √(2yᵀH⁻¹y/n), and exact solutions of linear kernel dynamics."""
import math
import warnings

import numpy as np
import pytest
import torch

from ntkcore import bounds, kernels
from ntkcore.device import available_devices

DEVICES = available_devices()


def gaussian(shape, seed, device):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_interpolant_norm_is_the_minimum_norm_of_a_linear_interpolant(device):
    # Linear kernel k(x, x') = x·x' (n < d): f_ker(x) = wᵀx with the minimum-norm solution w = X⁺y, and the RKHS
    # norm of x ↦ wᵀx is ‖w‖.
    x = gaussian((7, 12), 0, device)
    y = gaussian((7,), 1, device)
    w = torch.linalg.pinv(x) @ y
    assert torch.allclose(x @ w, y, atol=1e-10)
    assert bounds.interpolant_norm(x @ x.T, y) == pytest.approx(float(torch.linalg.vector_norm(w)), rel=1e-10)


def test_interpolant_norm_rejects_singular_kernels():
    x = np.ones((3, 2))  # three equal inputs: H has rank 1
    with pytest.raises(ValueError, match="smallest eigenvalue"):
        bounds.interpolant_norm(x @ x.T, [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="y must have .* rows, one per row of the kernel matrix"):
        bounds.interpolant_norm(np.eye(3), [1.0, 1.0])
    with pytest.raises(ValueError, match="square"):
        bounds.interpolant_norm(np.ones((2, 3)), [1.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        bounds.interpolant_norm(np.eye(2), [np.nan, 1.0])


@pytest.mark.parametrize("device", DEVICES)
def test_rademacher_bound_against_monte_carlo(device):
    # RKHS ball of the linear kernel: sup_{‖w‖ ≤ B} (1/n) Σ ε_i wᵀx_i = (B/n) ‖Xᵀε‖ exactly; its mean over ε is
    # at most B √tr(XXᵀ) / n (Jensen), with near equality when the inputs are nearly orthogonal (d ≫ n).
    n, d, radius, draws = 20, 40, 1.7, 4000
    x = gaussian((n, d), 2, device)
    g = torch.Generator().manual_seed(3)
    eps = (torch.randint(0, 2, (draws, n), generator=g) * 2 - 1).to(device=device, dtype=torch.float64)
    sup = radius / n * torch.linalg.vector_norm(eps @ x, dim=1)
    mean, sem = float(sup.mean()), float(sup.std() / math.sqrt(draws))
    bound = bounds.rademacher_bound(x @ x.T, radius)
    assert mean - 4 * sem <= bound
    # Jensen's gap: Var √(εᵀHε) is small relative to tr H for d ≫ n (off-diagonal terms are ~1/√d of the diagonal)
    assert bound <= 1.1 * mean


def test_rademacher_bound_is_exact_for_the_identity_kernel():
    # H = I: εᵀHε = n for every sign vector, so the complexity is exactly B/√n.
    assert bounds.rademacher_bound(np.eye(25), 3.0) == pytest.approx(3.0 / 5.0, rel=1e-14)
    with pytest.raises(ValueError, match="radius"):
        bounds.rademacher_bound(np.eye(2), -1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_generalization_bound_matches_the_lecture_form(device):
    # Unit-norm inputs and a_r = ±1: H*_ii = 1/2, tr H* = n/2, and the bound is √(2 yᵀH*⁻¹y / n).
    x = gaussian((30, 10), 4, device)
    x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
    y = torch.sign(gaussian((30,), 5, device))
    h = kernels.two_layer_limit(x, a_second_moment=1.0)
    assert float(torch.diagonal(h).sum()) == pytest.approx(15.0, rel=1e-12)
    quad = float(y @ torch.linalg.solve(h, y))
    assert bounds.generalization_bound(h, y) == pytest.approx(math.sqrt(2 * quad / 30), rel=1e-10)
    # invariant under rescaling the kernel (e.g. E[a²] = 1/3 instead of 1)
    assert bounds.generalization_bound(h / 3, y) == pytest.approx(bounds.generalization_bound(h, y), rel=1e-10)


def test_generalization_bound_of_a_memorizing_kernel_is_two():
    # H = c I cannot generalize; with ±1 labels yᵀH⁻¹y = n/c and tr H = cn, so the bound is exactly 2.
    y = np.array([1.0, -1.0, -1.0, 1.0, 1.0])
    assert bounds.generalization_bound(0.3 * np.eye(5), y) == pytest.approx(2.0, rel=1e-12)


def exact_residuals(h, y, u0, times):
    """(R, n) residuals e(t) = e^{−Ht}(u0 − y) of the linear dynamics du/dt = −H(u − y)."""
    lam, v = torch.linalg.eigh(h)
    c = v.T @ (u0 - y)
    return torch.stack([v @ (torch.exp(-lam * t) * c) for t in times])


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_deviation_bound_holds_for_a_fixed_wrong_kernel(device):
    # A "network" whose tangent kernel is a fixed H ≠ H*: its residuals are exact, the bound must cover the true gap.
    n = 6
    a = gaussian((n, n), 6, device)
    h_star = a @ a.T / n + 0.1 * torch.eye(n, dtype=torch.float64, device=device)
    h = h_star + 0.05 * (gaussian((n, n), 7, device) @ gaussian((n, n), 8, device).T) / n
    h = (h + h.T) / 2
    y = gaussian((n,), 9, device)
    u0 = 0.1 * gaussian((n,), 10, device)
    times = torch.linspace(0, 5, 401, dtype=torch.float64)
    e = exact_residuals(h, y, u0, times)
    e_star = exact_residuals(h_star, y, torch.zeros_like(y), times)
    gap = torch.linalg.vector_norm(e - e_star, dim=1).cpu().numpy()
    bound = bounds.kernel_deviation_bound(h_star, times, h.expand(len(times), n, n), e, u0=u0)
    assert bound.shape == (len(times),)
    assert np.all(gap <= bound + 1e-12)
    assert bound[0] == pytest.approx(float(torch.linalg.vector_norm(u0)), rel=1e-12)
    # no kernel error and u(0) = 0: the bound vanishes
    zero = bounds.kernel_deviation_bound(h_star, times, h_star.expand(len(times), n, n), e_star)
    assert np.all(zero == 0)


def test_kernel_deviation_bound_integral_in_one_dimension():
    # n = 1: e(s) = −y e^{−hs}, so ∫₀ᵗ |h − h*| |e(s)| ds = |h − h*| |y| (1 − e^{−ht}) / h; the trapezoidal rule on
    # 2001 points is accurate to ~(Δt)² h² / 12 relative.
    h, h_star, y = 1.3, 1.0, 2.0
    times = np.linspace(0, 4, 2001)
    e = -y * np.exp(-h * times)[:, None]
    bound = bounds.kernel_deviation_bound([[h_star]], times, np.full((len(times), 1, 1), h), e)
    exact = abs(h - h_star) * y * (1 - np.exp(-h * times)) / h
    np.testing.assert_allclose(bound, exact, rtol=1e-6, atol=1e-12)


def test_kernel_deviation_bound_checks_its_inputs():
    h = np.eye(2)
    with pytest.raises(ValueError, match="times"):
        bounds.kernel_deviation_bound(h, [0.5, 1.0], np.stack([h, h]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="times"):
        bounds.kernel_deviation_bound(h, [0.0, 0.0], np.stack([h, h]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="kernels"):
        bounds.kernel_deviation_bound(h, [0.0, 1.0], np.stack([h]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="residuals"):
        bounds.kernel_deviation_bound(h, [0.0, 1.0], np.stack([h, h]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="u0"):
        bounds.kernel_deviation_bound(h, [0.0, 1.0], np.stack([h, h]), np.zeros((2, 2)), u0=[1.0])


def test_full_generalization_bound_adds_the_confidence_terms():
    """With delta the bound is the leading term plus sqrt(2/n) + 3 sqrt(log(2(B+1)(B+2)/delta)/(2n)), B the RKHS
    norm of the interpolant; it grows as delta shrinks and rejects delta outside (0, 1)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)
    h = x @ x.T + 0.5 * torch.eye(12, dtype=torch.float64)
    y = torch.where(torch.rand(12, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    lead, b = bounds.generalization_bound(h, y), bounds.interpolant_norm(h, y)
    expect = lead + math.sqrt(2 / 12) + 3 * math.sqrt(math.log(2 * (b + 1) * (b + 2) / 0.05) / 24)
    assert bounds.generalization_bound(h, y, delta=0.05) == pytest.approx(expect, rel=1e-12)
    assert bounds.generalization_bound(h, y, delta=0.01) > bounds.generalization_bound(h, y, delta=0.05) > lead
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="delta"):
            bounds.generalization_bound(h, y, delta=bad)


def test_descent_deviation_bound_is_exact_for_known_step_kernels():
    """For residuals produced by e(j+1) = (I − η H_j) e(j) with known kernels H_j, the bound is
    ‖u(0)‖ + η Σ ‖(H_j − H*) e(j)‖; with H_j = H* it is ‖u(0)‖ (the kernel dynamics itself)."""
    g = torch.Generator().manual_seed(4)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    h_star = a @ a.T / 6 + 0.1 * torch.eye(6, dtype=torch.float64)
    eta = 1.0 / float(torch.linalg.eigvalsh(h_star)[-1])
    e, expect = [torch.randn(6, generator=g, dtype=torch.float64)], [0.0]
    for j in range(20):
        h_j = h_star + 0.05 * math.sin(j) * torch.eye(6, dtype=torch.float64)
        expect.append(expect[-1] + eta * float(torch.linalg.vector_norm((h_j - h_star) @ e[-1])))
        e.append(e[-1] - eta * h_j @ e[-1])
    u0 = torch.full((6,), 0.2, dtype=torch.float64)
    got = bounds.descent_deviation_bound(h_star, torch.stack(e), eta, u0=u0)
    np.testing.assert_allclose(got, np.array(expect) + float(u0.norm()), rtol=1e-12, atol=1e-14)
    steps = [torch.randn(6, generator=g, dtype=torch.float64)]
    for _ in range(10):
        steps.append(steps[-1] - eta * h_star @ steps[-1])
    np.testing.assert_allclose(bounds.descent_deviation_bound(h_star, torch.stack(steps), eta), 0.0, atol=1e-13)
    with pytest.raises(ValueError, match="learning_rate must be at most"):
        bounds.descent_deviation_bound(h_star, torch.stack(steps), 2.5 * eta)
    with pytest.raises(ValueError, match="residuals"):
        bounds.descent_deviation_bound(h_star, torch.ones(3, 5), eta)


def test_kernel_matrices_must_be_symmetric():
    h = torch.tensor([[2.0, 1.0], [0.0, 2.0]], dtype=torch.float64)  # Cholesky reads one triangle only
    for call in (lambda: bounds.interpolant_norm(h, torch.ones(2, dtype=torch.float64)),
                 lambda: bounds.generalization_bound(h, torch.ones(2, dtype=torch.float64)),
                 lambda: bounds.rademacher_bound(h, 1.0)):
        with pytest.raises(ValueError, match="h must be symmetric"):
            call()
    with pytest.raises(ValueError, match="h_star must be symmetric"):
        bounds.descent_deviation_bound(h, torch.ones(3, 2, dtype=torch.float64), 0.1)


def test_bounds_over_the_float_range():
    # The norms used to be formed from squares: y of 1e200 gave inf, y of 1e-200 gave 0 (not 1e-200 times the
    # norm); a tiny delta overflowed the log term to inf; a huge radius overflowed with a RuntimeWarning.
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = x @ x.T + 0.1 * torch.eye(6, dtype=torch.float64)
    y = torch.sign(torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    ref = bounds.interpolant_norm(h, y)
    residuals = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    steps = bounds.descent_deviation_bound(h, residuals, 0.01)
    for scale in (1e-200, 1e200):
        assert bounds.interpolant_norm(h, y * scale) == pytest.approx(ref * scale, rel=1e-13)
        assert np.allclose(bounds.descent_deviation_bound(h, residuals * scale, 0.01), steps * scale, rtol=1e-13)
    assert math.isfinite(bounds.generalization_bound(h, y, delta=5e-324))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in (lambda: bounds.rademacher_bound(h * 1e4, 1.7e308), lambda: bounds.interpolant_norm(h, y * 1.7e308),
                     lambda: bounds.descent_deviation_bound(h, residuals * 5e307, 0.01)):
            with pytest.raises(ValueError, match="not representable in float64"):
                call()
    with pytest.raises(ValueError, match="h must be positive semi-definite"):
        bounds.rademacher_bound(torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64)), 1.0)
