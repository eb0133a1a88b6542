"""Predictions from kernels: kernel (ridge) regression, gradient flow over time, the NNGP posterior.

Formulas of book Chapter 3, "Lazy training" (gradient flow in the kernel regime), and Chapter 5, "Noisy labels: RDI and
AUX as kernel ridge regression" (kernel ridge regression as the limit of RDI/AUX training; Hu, Li, Yu 2020). Every
function takes numpy arrays or torch tensors and returns torch tensors on the device and in the dtype of its
reference, the training kernel ``k_train_train`` (numpy input: float64); the other tensor arguments must be on its
device and in its floating dtype (the policy for mixed inputs of :mod:`ntkcore._checks`). Targets ``y`` may be a vector ``(n,)`` or a matrix ``(n, O)`` of O outputs;
predictions keep that trailing shape.

Linear solves use a Cholesky factorization. A kernel matrix that is not positive definite raises a ValueError
that names its smallest eigenvalue; ``jitter`` (added to the diagonal) is the usual remedy.

Targets are scaled by their largest magnitude before they enter a product, so that a result within the floating-point
range is computed without overflow even for targets near its ends; a result beyond it is a ValueError naming the
arguments to rescale (:func:`ntkcore._checks.finite_result`), never inf or NaN.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ._checks import as_tensor, check_real, finite_result, labels, square, times as check_times

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

_REF = "k_train_train"


def _square(k, name) -> torch.Tensor:
    return square(k, name, symmetric=True)


def _targets(y, n, like, name="y") -> torch.Tensor:
    return labels(y, n, like=like, like_name=_REF, name=name, ndim=(1, 2))


def _cross(k, n, like, name="k_test_train") -> torch.Tensor:
    k = as_tensor(k, name, ndim=2, like=like, like_name=_REF)
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


def _magnitude(*arrays) -> float:
    """The largest magnitude over ``arrays`` (1 when all are zero): the scale that keeps products of targets from
    overflowing."""
    top = max((float(a.detach().abs().max()) for a in arrays if a is not None and a.numel()), default=0.0)
    return top if top > 0 else 1.0


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
    s = _magnitude(y)
    out = s * (kx @ _solve(k, y / s, "k_train_train", ridge + jitter))
    return finite_result(out, "prediction", "y, k_test_train or k_train_train")


def kernel_regression(k_test_train, k_train_train, y, *, jitter: float = 0.0) -> torch.Tensor:
    """Kernel regression ``f_∞(x) = k(x, X) K⁻¹ y``: the end point of gradient flow from zero outputs
    (book Chapter 3). Shapes and errors as :func:`kernel_ridge` with ``ridge=0``."""
    return kernel_ridge(k_test_train, k_train_train, y, 0.0, jitter=jitter)


# ---------------------------------------------------------------------------------------------------------------
# Gradient flow and gradient descent in the kernel regime
# ---------------------------------------------------------------------------------------------------------------

def _eigh_psd(k: torch.Tensor, name: str):
    """Eigenvalues and eigenvectors of a positive semidefinite kernel, eigenvalues below ``n ε λ_max`` set to 0.

    ``eigh`` resolves eigenvalues only to about ``n ε λ_max``: below that, a computed eigenvalue of a singular
    kernel is rounding noise of either sign. Kept positive, it would enter as a factor ``1/λ`` (test outputs) or
    decay at long times (training outputs), and gradient flow would drift from its pseudo-inverse limit; set to 0,
    its direction neither moves nor contributes (:func:`gradient_flow`).
    """
    lam, vec = torch.linalg.eigh(k)
    values = lam.detach()  # the thresholds are constants, also when autograd follows the kernel
    top = float(values.abs().max()) if lam.numel() else 1.0
    top = max(top, torch.finfo(k.dtype).tiny)
    if lam.numel() and float(values[0]) < -torch.finfo(k.dtype).eps ** 0.5 * top:
        raise ValueError(f"{name} is not positive semidefinite (smallest eigenvalue {float(values[0]):.3g}, largest "
                         f"{float(values[-1]):.3g}); gradient flow on it diverges")
    noise = max(k.shape[0], 1) * torch.finfo(k.dtype).eps * top
    return torch.where(lam <= noise, torch.zeros_like(lam), lam), vec


def _times(times, like, learning_rate):
    t = check_times(times, "times", like=like, like_name=_REF)
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
    """``(T, n)`` factors ``(1 − decay)/λ``, and 0 for the eigenvalues that :func:`_eigh_psd` set to 0: for a kernel
    positive semidefinite on training and test inputs together, ``k(x, X) v = 0`` when ``K v = 0``, so such a
    direction contributes nothing to the test outputs (its exact factor ``t`` would only multiply rounding noise)."""
    zero = lam == 0
    out = _moved(lam, t, eta) / torch.where(zero, torch.ones_like(lam), lam)
    return torch.where(zero[None, :], torch.zeros_like(out), out)


def _flow_setup(k_train_train, y, times, u0, learning_rate):
    k = _square(k_train_train, "k_train_train")
    y = _targets(y, k.shape[0], k)
    t, eta = _times(times, k, learning_rate)
    u0 = torch.zeros_like(y) if u0 is None else _targets(u0, k.shape[0], k, "u0")
    if u0.shape != y.shape:
        raise ValueError(f"u0 must have the shape of y {tuple(y.shape)}, got {tuple(u0.shape)}")
    lam, vec = _eigh_psd(k, "k_train_train")
    s = _magnitude(y, u0)
    coef = vec.T @ (y / s - u0 / s)  # (n[, O]): the residual y − u(0) in the eigenbasis, in units of s
    return k, u0, t, eta, lam, vec, coef, s


_FLOW_ARGS = "y, u0, times or learning_rate"


def _scaled(factor, coef):
    """``factor`` (T, n) times ``coef`` (n[, O]) entrywise along n: (T, n[, O])."""
    return factor[:, :, None] * coef if coef.ndim == 2 else factor * coef


def gradient_flow(k_train_train, y, times, *, k_test_train=None, u0=None, f0_test=None,
                  learning_rate: float | None = None) -> Flow:
    """Outputs of a model trained by gradient flow (or descent) on ``½‖u − y‖²`` in the kernel regime.

    Book Chapter 3: ``du/dt = −H(u − y)`` with ``H = k_train_train = Σ λ_i v_i v_iᵀ``, so that
    ``u(t) = u0 + V (I − e^(−Λt)) Vᵀ (y − u0)`` and, on test inputs,
    ``f_t(x) = f0(x) + k(x, X) V Λ⁻¹ (I − e^(−Λt)) Vᵀ (y − u0)``. One eigendecomposition; exact at any t.
    Eigenvalues below ``n ε λ_max`` (rounding noise of a singular kernel) are taken as 0: their directions neither
    move the training outputs nor enter the test outputs (``k(x, X) v = 0`` for ``K v = 0`` when the kernel is
    positive semidefinite on training and test inputs together), so that as ``t → ∞`` the outputs tend to the
    pseudo-inverse solution ``u0 + K K⁺ (y − u0)`` and ``f0(x) + k(x, X) K⁺ (y − u0)`` at every time scale. With ``learning_rate=η`` the model is discrete gradient
    descent instead, ``u_{k+1} = u_k − η H (u_k − y)``: ``e^(−λt)`` becomes ``(1 − ηλ)^k`` and ``times`` are step
    counts k (whole numbers).

    Parameters: k_train_train ``(n, n)`` positive semidefinite (ValueError naming the smallest eigenvalue
    otherwise); y ``(n,)`` or ``(n, O)``; times ``(T,)`` ≥ 0 (or a scalar); k_test_train ``(n_test, n)``;
    u0 the training outputs at t = 0 (shape of y, default 0); f0_test the test outputs at t = 0
    (``(n_test[, O])``, default 0).

    Returns Flow(train ``(T, n[, O])``, test ``(T, n_test[, O])`` or None). Outputs beyond the floating-point range
    (gradient descent with a learning rate above ``2/λ_max`` diverges) are a ValueError.
    """
    k, u0, t, eta, lam, vec, coef, s = _flow_setup(k_train_train, y, times, u0, learning_rate)
    moved = _scaled(_moved(lam, t, eta), coef)  # (T, n[, O])
    train = u0 + s * (moved @ vec.T if coef.ndim == 1 else torch.einsum("ij,tjo->tio", vec, moved))
    train = finite_result(train, "training output", _FLOW_ARGS)
    test = None
    if k_test_train is not None:
        kx = _cross(k_test_train, k.shape[0], k)
        shape = (kx.shape[0], *u0.shape[1:])
        f0 = torch.zeros(shape, dtype=k.dtype, device=k.device) if f0_test is None else \
            as_tensor(f0_test, "f0_test", like=k, like_name=_REF)
        if f0.shape != shape:
            raise ValueError(f"f0_test must have shape {shape}, got {tuple(f0.shape)}")
        proj = kx @ vec  # (n_test, n)
        integral = _scaled(_integral(lam, t, eta), coef)  # (T, n[, O])
        test = f0 + s * (integral @ proj.T if coef.ndim == 1 else torch.einsum("mj,tjo->tmo", proj, integral))
        test = finite_result(test, "test output", f"k_test_train, f0_test, {_FLOW_ARGS}")
    elif f0_test is not None:
        raise ValueError("f0_test needs k_test_train")
    return Flow(train, test)


def training_loss_curve(k_train_train, y, times, *, u0=None, learning_rate: float | None = None) -> torch.Tensor:
    """Training loss ``½‖u(t) − y‖² = ½ Σ_i e^(−2λ_i t) (v_iᵀ(y − u0))²`` along gradient flow, ``(T,)``.

    Book Chapter 4 (training loss along eigenvectors) states the sum without the ½ (that is ``‖u − y‖²``); this function
    returns the loss itself, ``½‖u − y‖²``, the quantity gradient flow decreases. Summed over output columns for ``y``
    ``(n, O)``. With ``learning_rate=η``: gradient descent, ``(1 − ηλ)^(2k)`` and ``times`` are step counts. Arguments
    as :func:`gradient_flow`; a loss beyond the floating-point range (large targets, or gradient descent diverging
    with a learning rate above ``2/λ_max``) is a ValueError.
    """
    _, _, t, eta, lam, _, coef, s = _flow_setup(k_train_train, y, times, u0, learning_rate)
    weight = coef * coef if coef.ndim == 1 else (coef * coef).sum(dim=1)
    loss = s * (s * (0.5 * (_decay(lam, t, eta) ** 2) @ weight))
    return finite_result(loss, "training loss", _FLOW_ARGS)


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
    full symmetric ``(n_test, n_test)`` matrix (returns the covariance) or its diagonal ``(n_test,)`` (returns the
    variances). Returns Posterior(mean ``(n_test[, O])``, cov).

    The prior variances ``k(x, x)`` must be ≥ 0, and each posterior variance ``k(x, x) − k(x, X)(K + σ²I)⁻¹k(X, x)``
    must come out ≥ 0 up to rounding (``√ε`` relative to the two terms): otherwise the kernels are not one positive
    semidefinite kernel on training and test inputs together, and a ValueError names the test input. Posterior
    variances within rounding of 0 are returned as 0.
    """
    k = _square(k_train_train, "k_train_train")
    kx = _cross(k_test_train, k.shape[0], k)
    y = _targets(y, k.shape[0], k)
    kss = _test_test(k_test_test, kx.shape[0], k)
    noise = check_real(noise_var, "noise_var", low=0.0)
    jitter = check_real(jitter, "jitter", low=0.0)
    factor = _cholesky(k, "k_train_train", noise + jitter)
    s = _magnitude(y)
    mean = s * (kx @ torch.cholesky_solve((y / s)[:, None] if y.ndim == 1 else y / s, factor))
    mean = finite_result(mean, "posterior mean", "y, k_test_train or k_train_train")
    a = torch.linalg.solve_triangular(factor, kx.T, upper=False)  # (n, n_test): L⁻¹ k(X, x)
    explained = (a * a).sum(dim=0)  # k(x, X)(K + σ²I)⁻¹k(X, x) ≥ 0
    cov = finite_result(kss - a.T @ a if kss.ndim == 2 else kss - explained, "posterior covariance",
                        "k_test_test, k_test_train or k_train_train")
    _check_variances(torch.diagonal(cov) if cov.ndim == 2 else cov, _prior_variances(kss), explained)
    return Posterior(mean[:, 0] if y.ndim == 1 else mean, cov)


def _prior_variances(kss: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(kss) if kss.ndim == 2 else kss


def _test_test(k_test_test, n_test: int, like: torch.Tensor) -> torch.Tensor:
    """``k(x, x′)`` on the test inputs: the symmetric ``(n_test, n_test)`` matrix or its diagonal, variances ≥ 0."""
    kss = as_tensor(k_test_test, "k_test_test", ndim=(1, 2), like=like, like_name=_REF)
    if kss.shape[0] != n_test or (kss.ndim == 2 and kss.shape[1] != n_test):
        raise ValueError(f"k_test_test must be ({n_test},) or ({n_test}, {n_test}), got shape {tuple(kss.shape)}")
    if kss.ndim == 2:
        kss = square(kss, "k_test_test", symmetric=True)
    prior = _prior_variances(kss)
    if prior.numel() and float(prior.detach().min()) < 0:
        i = int(prior.argmin())
        raise ValueError(f"k_test_test must hold variances k(x, x) >= 0 (on its diagonal), got "
                         f"{float(prior.detach()[i]):.3g} for test input {i}")
    return kss


def _check_variances(var: torch.Tensor, prior: torch.Tensor, explained: torch.Tensor) -> None:
    """Posterior variances ``prior − explained`` must be ≥ −√ε (prior + explained); tiny negatives become 0 (in
    place, on the diagonal of the covariance)."""
    if not var.numel():
        return
    v, p, e = var.detach(), prior.detach(), explained.detach()
    bad = v < -torch.finfo(var.dtype).eps ** 0.5 * (p + e)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"the posterior variance of test input {i} is {float(v[i]):.3g} < 0: k_test_test "
                         f"({float(p[i]):.3g} there) is smaller than what the training data explain "
                         f"({float(e[i]):.3g}); k_test_test, k_test_train and k_train_train must come from one "
                         f"positive semidefinite kernel")
    var.clamp_(min=0.0)
