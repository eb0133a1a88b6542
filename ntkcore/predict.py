"""Predictions from kernels: kernel (ridge) regression, gradient flow over time, the NNGP posterior.

Formulas of book Chapter 3, "Lazy training" (gradient flow in the kernel regime), and Chapter 5, "Noisy labels: RDI and
AUX as kernel ridge regression" (kernel ridge regression as the limit of RDI/AUX training; Hu, Li, Yu 2020). Every
function takes numpy arrays or torch tensors and returns torch tensors on the device and in the dtype of its first
kernel argument (numpy input: float64). Targets ``y`` may be a vector ``(n,)`` or a matrix ``(n, O)`` of O outputs;
predictions keep that trailing shape.

Linear solves use a Cholesky factorization. A kernel matrix that is not positive definite raises a ValueError
that names its smallest eigenvalue; ``jitter`` (added to the diagonal) is the usual remedy.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ._checks import as_tensor, check_real, labels, square, times as check_times

__all__ = [
    "Flow", "Posterior", "kernel_regression", "kernel_ridge", "gradient_flow", "training_loss_curve",
    "nngp_posterior",
]


class Flow(NamedTuple):
    """Outputs along gradient flow: ``train`` ``(T, n[, O])``, ``test`` ``(T, n_test[, O])`` or None."""

    train: torch.Tensor
    test: torch.Tensor | None


class Posterior(NamedTuple):
    """NNGP posterior of the noiseless function values at test inputs.

    ``mean`` ``(n_test[, O])``; ``cov``: the covariance ``(n_test, n_test)`` when ``k_test_test`` was a matrix,
    the variances ``(n_test,)`` when it was a vector (the same for every output column).
    """

    mean: torch.Tensor
    cov: torch.Tensor


# ---------------------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------------------

def _square(k, name, like=None) -> torch.Tensor:
    return square(k, name, like=like, symmetric=True)


def _targets(y, n, like, name="y") -> torch.Tensor:
    return labels(y, n, like=like, name=name, ndim=(1, 2))


def _cross(k, n, like, name="k_test_train") -> torch.Tensor:
    k = as_tensor(k, name, ndim=2, device=like.device, dtype=like.dtype)
    if k.shape[1] != n:
        raise ValueError(f"{name} must be (n_test, n) with n = {n} training inputs, got shape {tuple(k.shape)}")
    return k


def _cholesky(k: torch.Tensor, name: str, jitter: float) -> torch.Tensor:
    """Lower Cholesky factor of ``k + jitter I``; ValueError naming the smallest eigenvalue if that fails."""
    a = k + jitter * torch.eye(k.shape[0], dtype=k.dtype, device=k.device) if jitter else k
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        smallest = float(torch.linalg.eigvalsh(a)[0])
        raise ValueError(f"{name} is not positive definite (smallest eigenvalue {smallest:.3g}"
                         f"{f' after jitter {jitter:g}' if jitter else ''}); pass a larger jitter= "
                         f"(or ridge=) to add to its diagonal")
    return factor


def _solve(k_train_train, rhs, name, jitter):
    factor = _cholesky(k_train_train, name, jitter)
    vec = rhs.ndim == 1
    sol = torch.cholesky_solve(rhs[:, None] if vec else rhs, factor)
    return sol[:, 0] if vec else sol


# ---------------------------------------------------------------------------------------------------------------
# Kernel (ridge) regression
# ---------------------------------------------------------------------------------------------------------------

def kernel_ridge(k_test_train, k_train_train, y, ridge: float, *, jitter: float = 0.0) -> torch.Tensor:
    """Kernel ridge regression ``f(x) = k(x, X) (K + ridge I)⁻¹ y`` (book Chapter 5; Hu, Li, Yu 2020).

    k_test_train ``(n_test, n)``, k_train_train ``(n, n)`` symmetric positive (semi)definite, y ``(n,)`` or
    ``(n, O)``, ridge ≥ 0 (the λ of RDI/AUX). ``jitter`` ≥ 0 is added to the diagonal as well, for numerical
    reasons only. Returns ``(n_test,)`` or ``(n_test, O)``. Cholesky solve; ValueError naming the smallest
    eigenvalue when ``K + (ridge + jitter) I`` is not positive definite.
    """
    k = _square(k_train_train, "k_train_train")
    kx = _cross(k_test_train, k.shape[0], k)
    y = _targets(y, k.shape[0], k)
    ridge = check_real(ridge, "ridge", low=0.0)
    jitter = check_real(jitter, "jitter", low=0.0)
    return kx @ _solve(k, y, "k_train_train", ridge + jitter)


def kernel_regression(k_test_train, k_train_train, y, *, jitter: float = 0.0) -> torch.Tensor:
    """Kernel regression ``f_∞(x) = k(x, X) K⁻¹ y``: the end point of gradient flow from zero outputs
    (book Chapter 3). Shapes and errors as :func:`kernel_ridge` with ``ridge=0``."""
    return kernel_ridge(k_test_train, k_train_train, y, 0.0, jitter=jitter)


# ---------------------------------------------------------------------------------------------------------------
# Gradient flow and gradient descent in the kernel regime
# ---------------------------------------------------------------------------------------------------------------

def _eigh_psd(k: torch.Tensor, name: str):
    """Eigenvalues (negative rounding errors set to 0) and eigenvectors of a positive semidefinite kernel."""
    lam, vec = torch.linalg.eigh(k)
    tol = torch.finfo(k.dtype).eps ** 0.5 * lam.abs().max().clamp_min(torch.finfo(k.dtype).tiny)
    if float(lam[0]) < -tol:
        raise ValueError(f"{name} is not positive semidefinite (smallest eigenvalue {float(lam[0]):.3g}, largest "
                         f"{float(lam[-1]):.3g}); gradient flow on it diverges")
    return lam.clamp_min(0.0), vec


def _times(times, like, learning_rate):
    t = check_times(times, "times", like=like)
    if learning_rate is not None:
        eta = check_real(learning_rate, "learning_rate", low=0.0, low_open=True)
        if not bool((t == t.round()).all()):
            raise ValueError("times must be whole numbers of steps when learning_rate is given (discrete GD)")
        return t, eta
    return t, None


def _decay(lam, t, eta):
    """``(T, n)`` factors ``e^(−λt)`` (gradient flow) or ``(1 − ηλ)^k`` (gradient descent, k = t steps)."""
    if eta is None:
        return torch.exp(-t[:, None] * lam[None, :])
    return torch.pow(1 - eta * lam[None, :], t[:, None])


def _moved(lam, t, eta):
    """``(T, n)`` factors ``1 − decay`` (``expm1``, accurate for small λt)."""
    if eta is None:
        return -torch.expm1(-t[:, None] * lam[None, :])
    return 1 - torch.pow(1 - eta * lam[None, :], t[:, None])


def _integral(lam, t, eta):
    """``(T, n)`` factors ``(1 − decay)/λ`` with their λ → 0 limits (``t``, resp. ``ηk``)."""
    small = lam <= torch.finfo(lam.dtype).tiny
    out = _moved(lam, t, eta) / torch.where(small, torch.ones_like(lam), lam)
    limit = (t if eta is None else eta * t)[:, None].expand_as(out)
    return torch.where(small[None, :], limit, out)


def _flow_setup(k_train_train, y, times, u0, learning_rate):
    k = _square(k_train_train, "k_train_train")
    y = _targets(y, k.shape[0], k)
    t, eta = _times(times, k, learning_rate)
    u0 = torch.zeros_like(y) if u0 is None else _targets(u0, k.shape[0], k, "u0")
    if u0.shape != y.shape:
        raise ValueError(f"u0 must have the shape of y {tuple(y.shape)}, got {tuple(u0.shape)}")
    lam, vec = _eigh_psd(k, "k_train_train")
    coef = vec.T @ (y - u0)  # (n[, O]): the residual y − u(0) in the eigenbasis
    return k, u0, t, eta, lam, vec, coef


def _scaled(factor, coef):
    """``factor`` (T, n) times ``coef`` (n[, O]) entrywise along n: (T, n[, O])."""
    return factor[:, :, None] * coef if coef.ndim == 2 else factor * coef


def gradient_flow(k_train_train, y, times, *, k_test_train=None, u0=None, f0_test=None,
                  learning_rate: float | None = None) -> Flow:
    """Outputs of a model trained by gradient flow (or descent) on ``½‖u − y‖²`` in the kernel regime.

    Book Chapter 3: ``du/dt = −H(u − y)`` with ``H = k_train_train = Σ λ_i v_i v_iᵀ``, so that
    ``u(t) = u0 + V (I − e^(−Λt)) Vᵀ (y − u0)`` and, on test inputs,
    ``f_t(x) = f0(x) + k(x, X) V Λ⁻¹ (I − e^(−Λt)) Vᵀ (y − u0)`` (``Λ⁻¹(I − e^(−Λt))`` taken as ``t`` where
    λ = 0). One eigendecomposition; exact at any t. With ``learning_rate=η`` the model is discrete gradient
    descent instead, ``u_{k+1} = u_k − η H (u_k − y)``: ``e^(−λt)`` becomes ``(1 − ηλ)^k`` and ``times`` are step
    counts k (whole numbers).

    Parameters: k_train_train ``(n, n)`` positive semidefinite (ValueError naming the smallest eigenvalue
    otherwise); y ``(n,)`` or ``(n, O)``; times ``(T,)`` ≥ 0 (or a scalar); k_test_train ``(n_test, n)``;
    u0 the training outputs at t = 0 (shape of y, default 0); f0_test the test outputs at t = 0
    (``(n_test[, O])``, default 0).

    Returns Flow(train ``(T, n[, O])``, test ``(T, n_test[, O])`` or None).
    """
    k, u0, t, eta, lam, vec, coef = _flow_setup(k_train_train, y, times, u0, learning_rate)
    moved = _scaled(_moved(lam, t, eta), coef)  # (T, n[, O])
    train = u0 + (moved @ vec.T if coef.ndim == 1 else torch.einsum("ij,tjo->tio", vec, moved))
    test = None
    if k_test_train is not None:
        kx = _cross(k_test_train, k.shape[0], k)
        shape = (kx.shape[0], *u0.shape[1:])
        f0 = torch.zeros(shape, dtype=k.dtype, device=k.device) if f0_test is None else \
            as_tensor(f0_test, "f0_test", device=k.device, dtype=k.dtype)
        if f0.shape != shape:
            raise ValueError(f"f0_test must have shape {shape}, got {tuple(f0.shape)}")
        proj = kx @ vec  # (n_test, n)
        integral = _scaled(_integral(lam, t, eta), coef)  # (T, n[, O])
        test = f0 + (integral @ proj.T if coef.ndim == 1 else torch.einsum("mj,tjo->tmo", proj, integral))
    elif f0_test is not None:
        raise ValueError("f0_test needs k_test_train")
    return Flow(train, test)


def training_loss_curve(k_train_train, y, times, *, u0=None, learning_rate: float | None = None) -> torch.Tensor:
    """Training loss ``½‖u(t) − y‖² = ½ Σ_i e^(−2λ_i t) (v_iᵀ(y − u0))²`` along gradient flow, ``(T,)``.

    Book Chapter 4 (training loss along eigenvectors) states the sum without the ½ (that is ``‖u − y‖²``); this function
    returns the loss itself, ``½‖u − y‖²``, the quantity gradient flow decreases. Summed over output columns for ``y``
    ``(n, O)``. With ``learning_rate=η``: gradient descent, ``(1 − ηλ)^(2k)`` and ``times`` are step counts. Arguments
    as :func:`gradient_flow`.
    """
    _, _, t, eta, lam, _, coef = _flow_setup(k_train_train, y, times, u0, learning_rate)
    weight = coef * coef if coef.ndim == 1 else (coef * coef).sum(dim=1)
    return 0.5 * (_decay(lam, t, eta) ** 2) @ weight


# ---------------------------------------------------------------------------------------------------------------
# NNGP posterior
# ---------------------------------------------------------------------------------------------------------------

def nngp_posterior(k_test_train, k_train_train, y, k_test_test, noise_var: float = 0.0, *,
                   jitter: float = 0.0) -> Posterior:
    """Gaussian-process posterior with the NNGP prior of an infinitely wide network (Lee et al. 2018; the GP
    regression equations of Rasmussen & Williams 2006, section 2.2).

    ``mean = k(x, X)(K + σ²I)⁻¹ y`` and ``cov = k(x, x′) − k(x, X)(K + σ²I)⁻¹ k(X, x′)`` for observations with
    Gaussian noise of variance ``noise_var`` = σ² ≥ 0; ``jitter`` ≥ 0 is added to the diagonal as well, for
    numerical reasons only. The result is the posterior of the noiseless function (add σ² for new observations).

    k_test_train ``(n_test, n)``, k_train_train ``(n, n)``, y ``(n,)`` or ``(n, O)``; k_test_test either the
    full ``(n_test, n_test)`` matrix (returns the covariance) or its diagonal ``(n_test,)`` (returns the
    variances). Returns Posterior(mean ``(n_test[, O])``, cov).
    """
    k = _square(k_train_train, "k_train_train")
    kx = _cross(k_test_train, k.shape[0], k)
    y = _targets(y, k.shape[0], k)
    kss = as_tensor(k_test_test, "k_test_test", ndim=(1, 2), device=k.device, dtype=k.dtype)
    if kss.shape[0] != kx.shape[0] or (kss.ndim == 2 and kss.shape[1] != kx.shape[0]):
        raise ValueError(f"k_test_test must be ({kx.shape[0]},) or ({kx.shape[0]}, {kx.shape[0]}), "
                         f"got shape {tuple(kss.shape)}")
    noise = check_real(noise_var, "noise_var", low=0.0)
    jitter = check_real(jitter, "jitter", low=0.0)
    factor = _cholesky(k, "k_train_train", noise + jitter)
    mean = kx @ torch.cholesky_solve(y[:, None] if y.ndim == 1 else y, factor)
    a = torch.linalg.solve_triangular(factor, kx.T, upper=False)  # (n, n_test): L⁻¹ k(X, x)
    cov = kss - a.T @ a if kss.ndim == 2 else kss - (a * a).sum(dim=0)
    return Posterior(mean[:, 0] if y.ndim == 1 else mean, cov)
