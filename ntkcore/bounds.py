"""Computable bounds of the kernel regime: the yᵀH⁻¹y generalization bound and the network-versus-kernel gap.

Book chapter 4 (*Eigen-convergence and generalization*); Arora et al. 2019 (fine-grained analysis), Bartlett &
Mendelson 2002.

* :func:`interpolant_norm` -- ``‖f_ker‖_H = √(yᵀH⁻¹y)``, the RKHS norm of the kernel interpolant
  ``f_ker(x) = k(x, X) H⁻¹ y``.
* :func:`rademacher_bound` -- ``B √tr(H) / n``, the bound on the empirical Rademacher complexity of the RKHS ball
  ``{f : ‖f‖_H ≤ B}`` on the training inputs.
* :func:`generalization_bound` -- ``2 √(yᵀH⁻¹y) √tr(H) / n``, the leading term of the bound on the classification
  error of ``sign f_ker``; it equals the lecture's ``√(2 yᵀH⁻¹y / n)`` when ``tr H = n/2`` (the two-layer ReLU kernel
  ``H*`` with ``a_r = ±1`` and unit-norm inputs: book Chapter 2 and book appendix "Closed-form kernels and
  conventions", section "The lecture's two-layer network").
* :func:`kernel_deviation_bound` -- ``‖u(0)‖ + ∫₀ᵗ ‖(H(s) − H*)(u(s) − y)‖ ds``, an a-posteriori bound on how far the
  training residual of a network (tangent kernel ``H(s)``) can be from that of the kernel dynamics with ``H*``
  started at ``u = 0`` (gradient flow, the integral by the trapezoidal rule on recorded times).
* :func:`descent_deviation_bound` -- its exact discrete form for gradient descent, from the residuals at every step.

Matrices are float tensors or numpy arrays; kernel matrices must be symmetric (up to rounding). The kernel matrix
(``h`` or ``h_star``) is each function's reference: results follow its device and dtype (numpy input: float64), and
the other tensor arguments must be on its device and in its floating dtype (the policy for mixed inputs of
:mod:`ntkcore._checks`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._checks import as_tensor, check_real, labels, square, times as check_times
from .predict import _cholesky

__all__ = ["interpolant_norm", "rademacher_bound", "generalization_bound", "kernel_deviation_bound",
           "descent_deviation_bound"]


def _gram(h, name: str = "h") -> torch.Tensor:
    return square(h, name, nonempty=True, symmetric=True)


def _norm(v: torch.Tensor, dim=None) -> torch.Tensor:
    """Euclidean norm over ``dim`` computed on ``v`` divided by its largest magnitude: the squares neither overflow
    (entries beyond ~1e154) nor underflow (below ~1e-154)."""
    scale = v.abs().amax() if dim is None else v.abs().amax(dim=dim)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale * torch.linalg.vector_norm(v / (scale if dim is None else scale.unsqueeze(dim)), dim=dim)


def _finite(value, what: str):
    """``value`` (a float or an array), or a ValueError naming ``what`` if it left the floating-point range."""
    if not np.all(np.isfinite(value)):
        raise ValueError(f"the bound is not representable in float64: {what} too large; rescale them")
    return value


def _labels(y, h: torch.Tensor, name: str = "y", like_name: str = "h") -> torch.Tensor:
    return labels(y, h.shape[0], like=h, like_name=like_name, name=name, of="row of the kernel matrix")


def interpolant_norm(h, y) -> float:
    """RKHS norm ``‖f_ker‖_H = √(yᵀ H⁻¹ y)`` of the kernel interpolant ``f_ker = Σ_i α_i k(·, x_i)``, ``α = H⁻¹y``.

    For ``f = Σ_i α_i k(·, x_i)`` the reproducing property gives ``‖f‖²_H = αᵀHα``; with ``α = H⁻¹y`` this is
    ``yᵀH⁻¹y`` (book chapter 4; Arora et al. 2019, section 5). ``h`` is the ``(n, n)`` Gram matrix on the training
    inputs (symmetric positive definite, a ValueError otherwise; computed with the Cholesky factorization of :mod:`ntkcore.predict`, which raises a
    ValueError naming the smallest eigenvalue otherwise), ``y`` the ``(n,)`` labels. Returns a float.
    """
    h = _gram(h)
    y = _labels(y, h)
    z = torch.linalg.solve_triangular(_cholesky(h, "h", 0.0), y[:, None], upper=False)  # z = L⁻¹y, ‖z‖² = yᵀH⁻¹y
    return _finite(float(_norm(z.detach())), "y (or 1/h)")


def rademacher_bound(h, radius: float) -> float:
    """Upper bound ``B √tr(H) / n`` on the empirical Rademacher complexity of the RKHS ball of radius ``B``.

    ``R̂_S = E_ε sup_{‖f‖_H ≤ B} (1/n) Σ_i ε_i f(x_i) = (B/n) E_ε √(εᵀHε) ≤ (B/n) √tr(H)`` by Cauchy–Schwarz in the
    RKHS and Jensen's inequality (Bartlett & Mendelson 2002, Lemma 22; book chapter 4). ``h`` is the ``(n, n)``
    Gram matrix on the sample (only its trace is used), ``radius`` = B ≥ 0. Returns a float.
    """
    h = _gram(h)
    radius = check_real(radius, "radius", low=0.0)
    diag = torch.diagonal(h).detach()
    if bool((diag < 0).any()):
        raise ValueError(f"h must be positive semi-definite, but its diagonal holds {float(diag.detach().min()):.3e} < 0")
    return _finite(radius * float(_norm(diag.detach().sqrt())) / h.shape[0], "radius or h")  # √tr(H) = ‖√diag‖


def generalization_bound(h, y, delta: float | None = None) -> float:
    """The bound on ``P[sign f_ker(x) ≠ y]`` for ±1 labels: its leading term ``2 √(yᵀH⁻¹y) √tr(H) / n``, or with
    ``delta`` the whole right-hand side.

    The leading term is twice the Rademacher complexity (:func:`rademacher_bound`) of the RKHS ball whose radius is the
    interpolant's norm ``B = √(yᵀH⁻¹y)`` (:func:`interpolant_norm`): by Bartlett & Mendelson (2002, Theorem 8) with the
    ramp loss ``min(|f − y|, 1)``, which is 1-Lipschitz, vanishes on the training set and dominates the 0-1 loss. With
    a union bound over the radii ``B ∈ {1, 2, …}`` the error is at most

        2 √(yᵀH⁻¹y) √tr(H) / n  +  √(2/n)  +  3 √(log(2 (B + 1)(B + 2) / δ) / (2n))

    with probability ``1 − δ`` over the training set (book Chapter 4, "Eigen-convergence and generalization", its
    generalization theorem). The leading term is invariant under ``H → cH``; when ``tr H = n/2`` (the two-layer kernel
    ``H*`` with ``a_r = ±1``, unit-norm inputs, book Chapters 2 and 4) it equals ``√(2 yᵀH⁻¹y / n)``, the form of
    Arora et al. (2019, Theorem 5.1). ``h`` ``(n, n)`` positive definite, ``y`` ``(n,)``, ``delta`` in (0, 1) or
    None. Returns a float (above 1 the bound says nothing).
    """
    h = _gram(h)
    norm = interpolant_norm(h, y)
    leading = 2.0 * rademacher_bound(h, norm)
    if delta is None:
        return leading
    delta = check_real(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
    n = h.shape[0]
    log_term = math.log(2.0) + math.log1p(norm) + math.log(norm + 2) - math.log(delta)  # no overflow for tiny delta
    return _finite(leading + math.sqrt(2 / n) + 3 * math.sqrt(log_term / (2 * n)), "y or h")


def kernel_deviation_bound(h_star, times, kernels, residuals, u0=None) -> np.ndarray:
    """A-posteriori bound ``‖u(0)‖ + ∫₀ᵗ ‖(H(s) − H*)(u(s) − y)‖ ds`` on ``‖(u(t) − y) − (ũ(t) − y)‖`` at each time.

    ``u(t)`` are the training outputs of a network trained by gradient flow on ``½‖u − y‖²``, so that
    ``du/dt = −H(t)(u − y)`` with its tangent kernel ``H(t)``; ``ũ`` solves the kernel dynamics
    ``dũ/dt = −H*(ũ − y)`` from ``ũ(0) = 0``. Duhamel's formula and ``‖e^{−H*τ}‖ ≤ 1`` give the bound (book chapter
    4, proposition on the finite network). The integral is evaluated by the trapezoidal rule on the recorded grid: an
    approximation, accurate when the recording grid resolves the integrand (a smooth function of time). For gradient
    descent use :func:`descent_deviation_bound`, which is exact.

    Parameters
    ----------
    h_star : ``(n, n)`` the limit kernel H*.
    times : ``(R,)`` increasing recording times, ``times[0] = 0``.
    kernels : ``(R, n, n)`` the network's tangent kernels ``H(t_r)``.
    residuals : ``(R, n)`` the network's residuals ``u(t_r) − y``.
    u0 : ``(n,)`` initial outputs ``u(0)`` (None: zero, e.g. an antisymmetric initialization).

    Returns
    -------
    numpy array ``(R,)``, the bound at each recorded time.
    """
    h_star = _gram(h_star, "h_star")
    n = h_star.shape[0]
    t = check_times(times, "times", like=h_star, like_name="h_star", increasing=True, from_zero=True)
    r = t.shape[0]
    k = as_tensor(kernels, "kernels", ndim=3, like=h_star, like_name="h_star")
    if k.shape != (r, n, n):
        raise ValueError(f"kernels must have shape (R, n, n) = {(r, n, n)}, got {tuple(k.shape)}")
    e = as_tensor(residuals, "residuals", ndim=2, like=h_star, like_name="h_star")
    if e.shape != (r, n):
        raise ValueError(f"residuals must have shape (R, n) = {(r, n)}, got {tuple(e.shape)}")
    start = 0.0 if u0 is None else float(_norm(_labels(u0, h_star, "u0", "h_star").detach()))
    integrand = _norm(torch.einsum("rij,rj->ri", k - h_star, e), dim=1)
    pieces = (integrand[1:] + integrand[:-1]) / 2 * (t[1:] - t[:-1])
    integral = torch.cat([pieces.new_zeros(1), torch.cumsum(pieces, dim=0)])
    return _finite((start + integral).detach().cpu().numpy(), "kernels, residuals or times")


def descent_deviation_bound(h_star, residuals, learning_rate, u0=None) -> np.ndarray:
    """The discrete form of :func:`kernel_deviation_bound` for gradient descent, exact: after k steps

        ‖u(0)‖ + η Σ_{j<k} ‖(H̄_j − H*) e(j)‖  =  ‖u(0)‖ + Σ_{j<k} ‖e(j) − e(j+1) − η H* e(j)‖

    bounds ``‖e(k) − ẽ(k)‖``, where ``e(j) = u(j) − y`` are the network's residuals, ``ẽ`` those of the discrete kernel
    dynamics ``ẽ(j+1) = (I − ηH*) ẽ(j)`` from ``ũ(0) = 0``, and ``H̄_j`` the tangent kernel averaged along step j
    (the network's step is exactly ``e(j) − e(j+1) = η H̄_j e(j)``, so no kernel needs to be recorded). It holds for
    ``η λ_max(H*) ≤ 2`` (then ``‖I − ηH*‖ ≤ 1``; book Chapter 4, the proposition on the finite network and its
    remark on gradient descent).

    Parameters
    ----------
    h_star : ``(n, n)`` the limit kernel H* (symmetric).
    residuals : ``(K + 1, n)`` the residuals ``u(j) − y`` at every step ``j = 0..K``.
    learning_rate : the step η, with ``η λ_max(H*) ≤ 2``.
    u0 : ``(n,)`` initial outputs ``u(0)`` (None: zero, e.g. an antisymmetric initialization).

    Returns
    -------
    numpy array ``(K + 1,)``, the bound after every step.
    """
    h_star = _gram(h_star, "h_star")
    eta = check_real(learning_rate, "learning_rate", low=0.0, low_open=True)
    top = float(torch.linalg.eigvalsh(h_star.detach())[-1])
    if eta * top > 2 * (1 + 1e-12):
        raise ValueError(f"learning_rate must be at most 2/λ_max(h_star) = {2 / top:.6g} for the bound to hold, "
                         f"got {eta:g}")
    e = as_tensor(residuals, "residuals", ndim=2, like=h_star, like_name="h_star")
    if e.shape[1] != h_star.shape[0] or e.shape[0] == 0:
        raise ValueError(f"residuals must have shape (K + 1, n) with n = {h_star.shape[0]}, got {tuple(e.shape)}")
    start = 0.0 if u0 is None else float(_norm(_labels(u0, h_star, "u0", "h_star").detach()))
    terms = _norm(e[:-1] - e[1:] - eta * e[:-1] @ h_star, dim=1)  # H* symmetric
    return _finite((start + torch.cat([terms.new_zeros(1), torch.cumsum(terms, 0)])).detach().cpu().numpy(),
                   "residuals")
