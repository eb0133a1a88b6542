"""Tests of ntkcore.predict: gradient flow against explicit gradient descent of a linearized (random-feature)
model, kernel (ridge) regression, the loss curve, the NNGP posterior, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkcore import kernels, predict
from ntkcore.device import available_devices

DEVICES = available_devices()


def _features(n, n_test, p, seed, device="cpu", outputs=None):
    """A linear model f(x) = φ(x)·θ in p random features: its NTK is H = ΦΦᵀ, constant in training."""
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n + n_test, p, generator=g, dtype=torch.float64) / p**0.5
    theta0 = torch.randn(p, *(() if outputs is None else (outputs,)), generator=g, dtype=torch.float64)
    y = torch.randn(n, *(() if outputs is None else (outputs,)), generator=g, dtype=torch.float64)
    to = dict(device=device)
    return phi[:n].to(**to), phi[n:].to(**to), theta0.to(**to), y.to(**to)


def _gradient_descent(phi, phi_test, theta, y, eta, steps):
    """Explicit gradient descent on ½‖Φθ − y‖²; returns train and test outputs after each number of steps."""
    train, test, done = [], [], 0
    for k in steps:
        for _ in range(k - done):
            theta = theta - eta * phi.T @ (phi @ theta - y)
        done = k
        train.append(phi @ theta)
        test.append(phi_test @ theta)
    return torch.stack(train), torch.stack(test)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("outputs", [None, 3])
def test_discrete_steps_match_explicit_gradient_descent(device, outputs):
    phi, phi_test, theta0, y = _features(12, 5, 40, 0, device, outputs)
    h, k_test = phi @ phi.T, phi_test @ phi.T
    eta, steps = 0.3, [0, 1, 7, 40, 200]
    train, test = _gradient_descent(phi, phi_test, theta0, y, eta, steps)
    flow = predict.gradient_flow(h, y, steps, k_test_train=k_test, u0=phi @ theta0, f0_test=phi_test @ theta0,
                                 learning_rate=eta)
    torch.testing.assert_close(flow.train, train, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(flow.test, test, rtol=1e-9, atol=1e-11)
    assert flow.train.device.type == torch.device(device).type


def test_gradient_flow_is_the_small_step_limit():
    """Gradient descent with step η approaches the flow at t = ηk with error O(η): halving η halves the error."""
    phi, phi_test, theta0, y = _features(10, 4, 30, 1)
    h, k_test = phi @ phi.T, phi_test @ phi.T
    t = torch.tensor([0.0, 0.5, 2.0, 8.0], dtype=torch.float64)
    flow = predict.gradient_flow(h, y, t, k_test_train=k_test, u0=phi @ theta0, f0_test=phi_test @ theta0)
    errors = []
    for eta in (1e-2, 5e-3):
        train, test = _gradient_descent(phi, phi_test, theta0, y, eta, [int(round(float(s) / eta)) for s in t])
        errors.append(max(float((train - flow.train).abs().max()), float((test - flow.test).abs().max())))
    assert errors[0] < 1e-2 and 1.8 < errors[0] / errors[1] < 2.2


def test_flow_from_zero_matches_kernel_regression_and_loss():
    x = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(8, 3)
    xt = torch.linspace(-0.7, 0.9, 9, dtype=torch.float64).reshape(3, 3)
    y = torch.sin(3 * x[:, 0])
    k, kx = kernels.fc(x, depth=2, bias_var=0.1).ntk, kernels.fc(xt, x, depth=2, bias_var=0.1).ntk
    times = torch.tensor([0.0, 0.1, 1.0, 1e9], dtype=torch.float64)
    flow = predict.gradient_flow(k, y, times, k_test_train=kx)
    assert float(flow.train[0].abs().max()) == 0.0 and float(flow.test[0].abs().max()) == 0.0
    torch.testing.assert_close(flow.train[-1], y, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(flow.test[-1], predict.kernel_regression(kx, k, y), rtol=1e-6, atol=1e-8)
    loss = predict.training_loss_curve(k, y, times)
    torch.testing.assert_close(loss, 0.5 * ((flow.train - y) ** 2).sum(dim=1), rtol=1e-10, atol=1e-12)
    assert bool((loss[1:] <= loss[:-1]).all())
    # f_t(x) = k(x, X) H⁻¹ (I − e^(−Ht)) y, book Chapter 3, with a dense matrix exponential
    t = 1.0
    expected = kx @ torch.linalg.solve(k, (torch.eye(8, dtype=torch.float64) - torch.matrix_exp(-t * k)) @ y)
    torch.testing.assert_close(flow.test[2], expected, rtol=1e-9, atol=1e-10)


def test_loss_curve_with_steps_and_outputs():
    phi, _, theta0, y = _features(9, 1, 20, 2, outputs=2)
    h = phi @ phi.T
    steps = [0, 3, 10]
    flow = predict.gradient_flow(h, y, steps, u0=phi @ theta0, learning_rate=0.2)
    loss = predict.training_loss_curve(h, y, steps, u0=phi @ theta0, learning_rate=0.2)
    torch.testing.assert_close(loss, 0.5 * ((flow.train - y) ** 2).sum(dim=(1, 2)), rtol=1e-10, atol=1e-12)


def test_semidefinite_kernel_and_zero_eigenvalues():
    """A rank-deficient H (more points than features, so λ = 0 exactly up to rounding): the flow stays finite
    and still equals explicit gradient descent (the λ → 0 limits of the integral factor)."""
    phi, phi_test, theta0, y = _features(10, 3, 4, 3)
    h, k_test = phi @ phi.T, phi_test @ phi.T
    flow = predict.gradient_flow(h, y, [5, 200], k_test_train=k_test, learning_rate=0.5)
    train, test = _gradient_descent(phi, phi_test, torch.zeros_like(theta0), y, 0.5, [5, 200])
    torch.testing.assert_close(flow.train, train, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(flow.test, test, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_ridge(device):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64).to(device)
    xt = torch.randn(4, 3, generator=g, dtype=torch.float64).to(device)
    y = torch.randn(7, 2, generator=g, dtype=torch.float64).to(device)
    k, kx = kernels.fc(x, depth=1).ntk, kernels.fc(xt, x, depth=1).ntk
    for ridge in (0.0, 0.5):
        got = predict.kernel_ridge(kx, k, y, ridge)
        expected = np.asarray(kx.cpu()) @ np.linalg.solve(np.asarray(k.cpu()) + ridge * np.eye(7), np.asarray(y.cpu()))
        torch.testing.assert_close(got.cpu(), torch.as_tensor(expected), rtol=1e-9, atol=1e-11)
        assert got.device.type == torch.device(device).type
    torch.testing.assert_close(predict.kernel_regression(k, k, y), y, rtol=1e-8, atol=1e-9)  # interpolates


def test_numpy_in_float64_torch_out():
    k = np.array([[2.0, 0.5], [0.5, 1.0]])
    out = predict.kernel_ridge(np.array([[1.0, 0.0]]), k, np.array([1.0, -1.0]), 0.1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (1,)


def test_not_positive_definite_names_smallest_eigenvalue():
    k = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and −1
    with pytest.raises(ValueError, match=r"smallest eigenvalue -1"):
        predict.kernel_regression(np.eye(2), k, np.ones(2))
    with pytest.raises(ValueError, match=r"not positive semidefinite.*smallest eigenvalue -1"):
        predict.gradient_flow(k, np.ones(2), [1.0])
    singular = np.ones((2, 2))
    with pytest.raises(ValueError, match="smallest eigenvalue"):
        predict.kernel_regression(np.eye(2), singular, np.ones(2))
    predict.kernel_regression(np.eye(2), singular, np.ones(2), jitter=1e-6)  # the remedy works


def test_nngp_posterior():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    xt = torch.randn(3, 2, generator=g, dtype=torch.float64)
    y = torch.randn(6, generator=g, dtype=torch.float64)
    k = kernels.fc(x, depth=2, bias_var=0.1, get="nngp").nngp
    kx = kernels.fc(xt, x, depth=2, bias_var=0.1, get="nngp").nngp
    kss = kernels.fc(xt, depth=2, bias_var=0.1, get="nngp").nngp
    noise = 0.05
    full = predict.nngp_posterior(kx, k, y, kss, noise)
    inv = torch.linalg.inv(k + noise * torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(full.mean, kx @ inv @ y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(full.cov, kss - kx @ inv @ kx.T, rtol=1e-9, atol=1e-12)
    diag = predict.nngp_posterior(kx, k, y, kss.diagonal(), noise)
    torch.testing.assert_close(diag.cov, full.cov.diagonal(), rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.eigvalsh(full.cov)[0]) >= -1e-12
    # noiseless at the training inputs: the posterior is the data, with zero variance
    at_train = predict.nngp_posterior(k, k, y, k.diagonal(), 0.0, jitter=1e-12)
    torch.testing.assert_close(at_train.mean, y, rtol=1e-5, atol=1e-6)
    assert float(at_train.cov.abs().max()) < 1e-6


@pytest.mark.parametrize("call, match", [
    (lambda: predict.kernel_ridge(np.eye(2), np.ones((2, 3)), np.ones(2), 0.1), "k_train_train.*square"),
    (lambda: predict.kernel_ridge(np.eye(2), np.array([[1.0, 0.0], [1.0, 1.0]]), np.ones(2), 0.1), "symmetric"),
    (lambda: predict.kernel_ridge(np.eye(2), np.eye(2), np.ones(3), 0.1), "y must have 2 rows"),
    (lambda: predict.kernel_ridge(np.ones((1, 3)), np.eye(2), np.ones(2), 0.1), "k_test_train"),
    (lambda: predict.kernel_ridge(np.eye(2), np.eye(2), np.ones(2), -1.0), "ridge"),
    (lambda: predict.kernel_ridge(np.eye(2), np.eye(2), np.array([1.0, np.nan]), 0.1), "y contains NaN"),
    (lambda: predict.kernel_regression(np.eye(2), np.eye(2), np.ones(2), jitter=-1), "jitter"),
    (lambda: predict.gradient_flow(np.eye(2), np.ones(2), [-1.0]), "times"),
    (lambda: predict.gradient_flow(np.eye(2), np.ones(2), [0.5], learning_rate=0.1), "whole numbers"),
    (lambda: predict.gradient_flow(np.eye(2), np.ones(2), [1], learning_rate=0.0), "learning_rate"),
    (lambda: predict.gradient_flow(np.eye(2), np.ones(2), [1], u0=np.ones(3)), "u0"),
    (lambda: predict.gradient_flow(np.eye(2), np.ones(2), [1], f0_test=np.ones(1)), "f0_test needs"),
    (lambda: predict.gradient_flow(np.eye(2), np.ones(2), [1], k_test_train=np.ones((1, 2)), f0_test=np.ones(2)),
     "f0_test must have shape"),
    (lambda: predict.nngp_posterior(np.ones((1, 2)), np.eye(2), np.ones(2), np.ones(2)), "k_test_test"),
    (lambda: predict.nngp_posterior(np.ones((1, 2)), np.eye(2), np.ones(2), np.ones(1), -0.1), "noise_var"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _singular_problem(n=20, p=5, n_test=7, seed=0):
    """K = ΦΦᵀ of rank p < n and the consistent test kernel ΦtΦᵀ; the pseudo-inverse solution of gradient flow."""
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n, p, generator=g, dtype=torch.float64)
    phi_test = torch.randn(n_test, p, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    k, kx = phi @ phi.T, phi_test @ phi.T
    pinv = torch.linalg.pinv(k, hermitian=True)
    return k, kx, y, k @ pinv @ y, kx @ pinv @ y


def test_long_time_limit_on_singular_kernels_is_the_pseudo_inverse_solution():
    """Rounding-noise eigenvalues of a singular kernel are zeros, not 1/λ factors: before, the test outputs drifted
    from the limit by 0.65 at t = 1e14 and 4.6e5 at t = 1e20, and the training loss fell below its floor."""
    k, kx, y, train_limit, test_limit = _singular_problem()
    t = torch.tensor([1e2, 1e6, 1e10, 1e14, 1e20], dtype=torch.float64)
    flow = predict.gradient_flow(k, y, t, k_test_train=kx)
    scale = float(test_limit.abs().max())
    assert float((flow.test - test_limit).abs().max()) <= 1e-12 * scale
    assert float((flow.train - train_limit).abs().max()) <= 1e-12 * scale
    floor = 0.5 * float(((y - train_limit) ** 2).sum())
    torch.testing.assert_close(predict.training_loss_curve(k, y, t), torch.full_like(t, floor), rtol=1e-12, atol=0)
    eta = 1.0 / float(torch.linalg.eigvalsh(k)[-1])
    steps = torch.tensor([1e6, 1e12, 1e18], dtype=torch.float64)
    descent = predict.gradient_flow(k, y, steps, k_test_train=kx, learning_rate=eta)
    assert float((descent.test - test_limit).abs().max()) <= 1e-12 * scale


def test_nngp_posterior_rejects_test_kernels_that_are_not_psd():
    k, kx, y, _, _ = _singular_problem(n=6, p=8, n_test=3)
    kss = kx @ torch.linalg.pinv(k) @ kx.T + torch.eye(3, dtype=torch.float64)  # a valid joint kernel
    post = predict.nngp_posterior(kx, k, y, kss)
    assert bool((torch.diagonal(post.cov) >= 0).all())
    with pytest.raises(ValueError, match="k_test_test must hold variances k\\(x, x\\) >= 0.*test input 1"):
        predict.nngp_posterior(kx, k, y, torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="posterior variance of test input 0 is .* < 0: k_test_test"):
        predict.nngp_posterior(kx, k, y, 0.5 * torch.diagonal(kss - torch.eye(3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="k_test_test must be symmetric"):
        predict.nngp_posterior(kx, k, y, kss + torch.triu(torch.ones(3, 3, dtype=torch.float64), 1))
    # test inputs equal to training inputs, noiseless: posterior variances are 0 up to rounding, returned as ≥ 0
    exact = predict.nngp_posterior(k, k, y, torch.diagonal(k))
    assert bool((exact.cov >= 0).all()) and float(exact.cov.max()) <= 1e-10 * float(k.diagonal().max())


def _scale_problem():
    x = np.random.default_rng(3).standard_normal((5, 3))
    k = kernels.fc(x, depth=1).ntk + 0.1 * torch.eye(5, dtype=torch.float64)
    return k, torch.as_tensor(np.random.default_rng(4).standard_normal(5))


@pytest.mark.parametrize("c", [1e155, 1e300, 1e-300])
def test_targets_anywhere_in_the_float64_range_scale_the_result(c):
    """Predictions are linear in y and the loss quadratic: targets near the ends of the float64 range give the scaled
    result (products of targets used to overflow to inf and NaN, e.g. kernel_regression with y ~ 1e308)."""
    k, y = _scale_problem()
    t = torch.tensor([0.0, 1.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(predict.kernel_regression(k, k, y * c), predict.kernel_regression(k, k, y) * c)
    torch.testing.assert_close(predict.kernel_ridge(k[:2], k, y * c, 0.1), predict.kernel_ridge(k[:2], k, y, 0.1) * c)
    torch.testing.assert_close(predict.gradient_flow(k, y * c, t).train, predict.gradient_flow(k, y, t).train * c)
    torch.testing.assert_close(predict.nngp_posterior(k[:2], k, y * c, k[:2, :2]).mean,
                               predict.nngp_posterior(k[:2], k, y, k[:2, :2]).mean * c)
    if c < 1e150:  # c² times the loss representable
        torch.testing.assert_close(predict.training_loss_curve(k, y * c, t), predict.training_loss_curve(k, y, t) * c**2)


def test_results_beyond_the_float64_range_are_errors():
    k, y = _scale_problem()
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"training loss .* rescale y"):
        predict.training_loss_curve(k, y * 1e300, t)
    with pytest.raises(ValueError, match="learning_rate"):  # gradient descent diverging past the float64 range
        predict.training_loss_curve(k, y, t, learning_rate=1e300)
    with pytest.raises(ValueError, match="learning_rate"):
        predict.gradient_flow(k, y, t, learning_rate=1e300)
    y[0] = 1e308
    with pytest.raises(ValueError, match=r"prediction .* rescale y"):
        predict.kernel_regression(k, k * 1e-10, y)
