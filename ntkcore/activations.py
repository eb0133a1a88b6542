"""The one registry of activation functions: φ, φ′, the finite-width module and the Gaussian layer step.

Every part of ``ntkcore`` that needs an activation takes it from :func:`get`: the analytic kernels
(:mod:`ntkcore.layers`, :mod:`ntkcore.kernels`, :mod:`ntkcore.ndk`), the finite networks (:mod:`ntkcore.models`),
the empirical NTK (:mod:`ntkcore.empirical`) and the Langevin ensembles (:mod:`ntkcore.langevin`). An activation is
given as

* a registered name: ``"relu"``, ``"erf"``, ``"identity"`` (closed-form Gaussian expectations) or ``"tanh"``
  (expectations by quadrature);
* an :class:`Activation` (used as it is);
* any elementwise torch callable, ``torch.sin`` or an ``nn.Module`` such as ``nn.GELU()`` (expectations by
  quadrature, φ′ by autograd).

The Gaussian step
-----------------
The infinite-width kernel of a network passes through an activation by one *step* (book appendix "Closed-form
kernels and conventions", section "Activations"). For a pair of pre-activations
``(u, v) ~ N(0, [[q11, q12], [q12, q22]])`` it computes::

    E[φ(u) φ(v)]      and      E[φ′(u) φ′(v)]

ReLU, erf and the identity have closed forms (Cho & Saul 2009; Williams 1997), with ``cos θ = q12/√(q11 q22)``
clamped to ``[−1, 1]`` before ``arccos``/``arcsin``:

========  ========================================================  ==============================================
φ         E[φ(u)φ(v)]                                                E[φ′(u)φ′(v)]
========  ========================================================  ==============================================
ReLU      √(q11 q22)/(2π) · (sin θ + (π − θ) cos θ)                   (π − θ)/(2π)
erf       (2/π) arcsin(2 q12 / √((1 + 2 q11)(1 + 2 q22)))             (4/π) ((1 + 2q11)(1 + 2q22) − 4 q12²)^(−1/2)
identity  q12                                                        1
========  ========================================================  ==============================================

Any other φ is integrated by a polar Gauss quadrature (:func:`gaussian_expectations`).

A step has the signature ``step(k, v1, v2, diag, wv, bv, free=None, near=None)``: ``k`` is the covariance ``q12``
(any shape), ``v1`` and ``v2`` are :class:`Variances` of the two sides, broadcastable against ``k``; ``diag`` marks
the entries of ``k`` whose two sides are the same input (the angle is then set to exactly 0, so that they equal the
kernel of an input with itself): None, a function that returns a view of those entries, or a boolean mask shaped
like ``k``; ``free`` is None or a list of preallocated tensors shaped like ``k`` that the step may write into;
``near`` is None or a function of the correlation tensor that returns None or a :class:`Near` (entries whose
``1 − c²`` the caller knows more accurately than ``c`` does). It returns ``(wv · E[φφ] + bv, d, scale)`` with
``E[φ′φ′] = scale · d``, and leaves ``k`` unchanged. Fusing the affine map ``wv · (·) + bv`` of the next dense
layer into the step saves passes over memory in the tiled kernels.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from ._checks import as_tensor, check_choice, check_int

__all__ = ["Activation", "NAMES", "CLOSED_FORM_NAMES", "get", "gaussian_expectations", "Erf", "Elementwise",
           "derivative_of_module"]

DEFAULT_MAX_MEMORY = 2**28
"""Bytes of intermediates a quadrature step may hold at once (256 MiB)."""

MAX_QUADRATURE_DEGREE = 352
"""Largest quadrature degree accepted. The radial Gauss rule (Stieltjes recurrence on a fixed grid,
:func:`gaussian_expectations`) is accurate to rounding up to this degree (the test suite checks ``sin(a x)`` against
its closed form there) and overflows from degree 353 on, giving NaN kernels; a degree of 352 already costs
``6 · 352² ≈ 7.4e5`` evaluations of φ per entry and layer, far beyond what any smooth activation needs."""


def check_quadrature(degree, max_memory, name: str = "quadrature_degree") -> tuple[int, int]:
    """``(degree, max_memory)`` of a quadrature: ``2 ≤ degree ≤`` :data:`MAX_QUADRATURE_DEGREE`, ``max_memory ≥ 1``."""
    return (check_int(degree, name, low=2, high=MAX_QUADRATURE_DEGREE),
            check_int(max_memory, "max_memory", low=1))


# ---------------------------------------------------------------------------------------------------------------
# Variances and buffers shared by the steps
# ---------------------------------------------------------------------------------------------------------------

def inv_sqrt(q: torch.Tensor) -> torch.Tensor:
    """``q^(−1/2)`` with zero variances mapped to a finite value: a zero variance (a zero input without bias, a
    padded node) has zero covariances, which any finite factor keeps exactly zero. Under autograd those entries get
    no gradient (the derivative of the floor's ``rsqrt`` overflows, and ``0 · ∞`` would be NaN)."""
    tiny = torch.finfo(q.dtype).tiny
    if not needs_grad(q):
        return q.clamp_min(tiny).rsqrt()
    small = q < tiny
    return torch.where(small, tiny ** -0.5, torch.where(small, 1.0, q).rsqrt())


def safe_sqrt(q: torch.Tensor) -> torch.Tensor:
    """``√q`` for ``q ≥ 0`` whose derivative is 0 instead of ``∞`` (then NaN) where ``q = 0``: a zero variance
    stays constant under any change of the inputs or variances that keeps it zero."""
    if not needs_grad(q):
        return q.sqrt()
    zero = q <= 0
    return torch.where(zero, 0.0, torch.where(zero, 1.0, q).sqrt())


class Variances(NamedTuple):
    """Variances ``q`` of one side of a pair of pre-activations, with ``√q``, ``q^(−1/2)`` and the erf step's
    ``√(2/(1 + 2q))`` computed once (a kernel slices them per tile instead of recomputing them in every tile)."""

    q: torch.Tensor
    sqrt: torch.Tensor
    inv_sqrt: torch.Tensor
    erf_scale: torch.Tensor

    @classmethod
    def of(cls, q: torch.Tensor) -> "Variances":
        return cls(q, safe_sqrt(q), inv_sqrt(q), (2 / (1 + 2 * q)).sqrt())

    def map(self, fn) -> "Variances":
        """The same function (an index, a reshape) applied to every tensor."""
        return Variances(*(fn(t) for t in self))


class Near(NamedTuple):
    """Entries of a step's ``k`` whose correlation ``c`` lies within :data:`NEAR` of ±1, with ``1 − c²`` computed
    accurately by the caller (from the inputs themselves: :func:`ntkcore.layers._entrywise.input_sine_squared`).

    Formed from ``c`` itself, ``1 − c²`` keeps only the absolute accuracy ε of ``c``: a relative error
    ε/(1 − c²), which arccos turns into an angle error ε/θ and the erf step multiplies by the variance (erf kernels
    of nearly parallel inputs of variance 10⁸ lost 5 digits, of variance 10¹⁰⁰ all of them).

    ``where`` is a tuple of index tensors into ``k``; ``sin_sq`` holds ``1 − c² = sin²θ`` (> 0) there.
    """

    where: tuple
    sin_sq: torch.Tensor


NEAR = 1e-4
"""Entries with ``|c| > 1 − NEAR`` get ``1 − c²`` from the inputs (:class:`Near`); elsewhere forming it from ``c``
loses at most a factor ``1/NEAR`` of relative precision (about 1e-12 in float64)."""


def _put(t: torch.Tensor, where: tuple, values: torch.Tensor) -> torch.Tensor:
    """``t`` with ``t[where] = values``: in place, or on a copy when autograd follows either."""
    if needs_grad(t, values):
        return t.index_put(where, values)
    t[where] = values
    return t


def _snap(k: torch.Tensor) -> float:
    """``1 + 4ε``, a factor on the correlation before it is clamped to [−1, 1]. Two sides with equal variances and
    covariance (identical inputs, or nodes of a graph with identical neighbourhoods) give ``c`` within two
    roundings of ±1, and arccos turns a rounding ε into an angle √(2ε) (1.5e-8 in float64). The factor sends them
    to exactly ±1; it moves any other correlation by at most 4ε, within its own rounding error."""
    return 1.0 + 4.0 * torch.finfo(k.dtype).eps


def _set_diagonal(t: torch.Tensor, value: float, diag) -> torch.Tensor:
    """``t`` with the entries ``diag`` marks set to ``value`` (in place, or on a copy when autograd follows ``t``).
    The value is a constant, so no gradient flows through those entries; none should, as the correlation of two
    equal inputs is stationary (its derivative with respect to either input vanishes there)."""
    if diag is None:
        return t
    if t.requires_grad:
        t = t.clone()
    if isinstance(diag, torch.Tensor):
        t.masked_fill_(diag, value)
    else:
        diag(t).fill_(value)
    return t


def _set_diagonal_to(t: torch.Tensor, values: torch.Tensor, diag) -> torch.Tensor:
    """``t`` with the entries ``diag`` marks set to the matching entries of ``values`` (broadcastable to ``t``; in
    place, or on a copy when autograd follows either; then the gradient flows through ``values``)."""
    values = values.expand_as(t)
    if isinstance(diag, torch.Tensor):
        return torch.where(diag, values, t) if needs_grad(t, values) else t.masked_scatter_(diag, values[diag])
    if needs_grad(t, values):
        t = t.clone()
    diag(t).copy_(diag(values))
    return t


class Ops:
    """Runs each operation of a kernel step into a buffer (in place) or, with ``free`` None, into a new tensor.

    The steps are written once with it: ``o(torch.mul, a, b, into=buf)``. The tiled kernels pass preallocated
    buffers and everything runs in place; with inputs that require gradients they pass none, every operation
    allocates, and autograd follows the computation.
    """

    def __init__(self, free):
        self.free = list(free) if free is not None else None

    def buffer(self, index: int):
        return None if self.free is None else self.free[index]

    def __call__(self, fn, *args, into=None, **kwargs) -> torch.Tensor:
        if self.free is None or into is None:
            return fn(*args, **kwargs)
        return fn(*args, out=into, **kwargs)


def needs_grad(*tensors) -> bool:
    """Whether autograd is recording and one of ``tensors`` (or of the tensors of :class:`Variances`) needs a
    gradient: the steps then allocate their results instead of writing into buffers."""
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        parts = t if isinstance(t, Variances) else (t,)
        if any(isinstance(p, torch.Tensor) and p.requires_grad for p in parts):
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# Closed-form steps
# ---------------------------------------------------------------------------------------------------------------

def is_zero(value) -> bool:
    """Whether ``value`` is the number 0 (a tensor never counts as zero: its value may change, or carry a gradient).
    Terms known to be zero are skipped."""
    return not isinstance(value, torch.Tensor) and value == 0


def _affine(o: Ops, e, wv, bv):
    """``wv · e + bv``, over ``e``."""
    e = o(torch.mul, e, wv, into=e)
    return o(torch.add, e, bv, into=e) if not is_zero(bv) else e


def _relu_step(k, v1, v2, diag, wv, bv, free=None, near=None):
    # With c = cos θ:  E[relu relu] = √(q1 q2)/(2π) (sin θ + (π − θ) c),  E[relu′ relu′] = (π − θ)/(2π).
    # Work with nc = −c, so that π − θ = arccos(nc): seven passes over the tile (plus the bias). Where the caller
    # knows sin θ better (near ±1), π − θ = atan2(sin θ, −c) there.
    o = Ops(free)
    nc = o(torch.mul, k, v1.inv_sqrt * _snap(k), into=o.buffer(0))
    nc = o(torch.mul, nc, -v2.inv_sqrt, into=nc)
    nc = _set_diagonal(o(torch.clamp, nc, -1.0, 1.0, into=nc), -1.0, diag)
    one = torch.ones((), dtype=k.dtype, device=k.device)
    sin = o(torch.addcmul, one, nc, nc, value=-1.0, into=o.buffer(2))
    differentiable = needs_grad(nc)
    if differentiable:  # √′ and arccos′ are infinite where |c| = 1; with a floor and atan2 the derivatives exist
        sin = sin.clamp(min=torch.finfo(k.dtype).tiny)
    sin = o(torch.sqrt, sin, into=sin)
    fix = near(nc) if near is not None else None
    if fix is not None:
        sin = _put(sin, fix.where, fix.sin_sq.sqrt())
    if differentiable:
        pi_minus_theta = torch.atan2(sin, nc)
    else:
        pi_minus_theta = torch.arccos(nc, out=o.buffer(1))
        if fix is not None:
            pi_minus_theta[fix.where] = torch.atan2(sin[fix.where], nc[fix.where])
    out = o(torch.addcmul, sin, pi_minus_theta, nc, value=-1.0, into=sin)
    out = o(torch.mul, o(torch.mul, out, v1.sqrt * (wv / (2 * math.pi)), into=out), v2.sqrt, into=out)
    return (o(torch.add, out, bv, into=out) if not is_zero(bv) else out), pi_minus_theta, 1.0 / (2 * math.pi)


_ERF_SHORT_FORM_MAX_VARIANCE = 64.0
"""Up to this variance the erf step forms ``1 − z²`` directly: it is at least ``1/(1 + 2q)``, so its relative
rounding error stays below ``(1 + 2q) ε``, 129 ε. Above, the step uses the sum of non-negative terms."""


def _erf_step(k, v1, v2, diag, wv, bv, free=None, near=None):
    # With s = (1 + 2q)^(−1), ρ² = 2q s and the correlation c:  z = 2 q12 √(s1 s2) = c ρ1 ρ2,
    #   E[erf erf] = (2/π) arcsin z = (2/π) arctan(z / √(1 − z²)),
    #   E[erf′ erf′] = (4/π) ((1+2q11)(1+2q22) − 4 q12²)^(−1/2) = (2/π) √(2s1) √(2s2) / √(1 − z²).
    # Forming 1 − z² from a rounded z loses (1 + 2q) ε of its relative precision: nothing for moderate variances,
    # everything at q ~ 1/ε. Large variances therefore use 1 − z² = (s1 + s2 − s1 s2) + ρ1² ρ2² (1 − c²), a sum of
    # non-negative terms (with 1 − c² from the inputs where c is near ±1, see Near), and arctan for arcsin.
    o = Ops(free)
    largest = max(float(v.q.detach().max()) if isinstance(v.q, torch.Tensor) else float(v.q) for v in (v1, v2))
    if largest <= _ERF_SHORT_FORM_MAX_VARIANCE:
        out, inv_d = _erf_short_form(o, k, v1, v2, diag)
    else:
        out, inv_d = _erf_long_form(o, k, v1, v2, diag, near)
    out = _affine(o, out, wv * 2 / math.pi, bv)
    inv_d = o(torch.mul, o(torch.mul, inv_d, v1.erf_scale, into=inv_d), v2.erf_scale, into=inv_d)
    return out, inv_d, 2 / math.pi


def _erf_short_form(o: Ops, k, v1, v2, diag):
    """``(arcsin z, 1/√(1 − z²))`` for variances up to :data:`_ERF_SHORT_FORM_MAX_VARIANCE`, with
    ``z = k √(2s1) √(2s2)`` formed in two passes. There ``|z| ≤ ρ1 ρ2 ≤ 128/129`` and arcsin is well conditioned,
    so a correlation a few roundings above 1 needs no clamp of its own (the clamp to [−1, 1] only guards arcsin);
    the entries of an input with itself get ``z = ρ²`` exactly."""
    z = o(torch.mul, o(torch.mul, k, v1.erf_scale, into=o.buffer(0)), v2.erf_scale, into=o.buffer(0))
    z = o(torch.clamp, z, -1.0, 1.0, into=z)
    if diag is not None:  # ρ = √(2q s) = √q √(2s)
        z = _set_diagonal_to(z, (v1.sqrt * v1.erf_scale) * (v2.sqrt * v2.erf_scale), diag)
    one = torch.ones((), dtype=k.dtype, device=k.device)
    inv_d = o(torch.rsqrt, o(torch.addcmul, one, z, z, value=-1.0, into=o.buffer(1)), into=o.buffer(1))
    return o(torch.asin, z, into=z), inv_d


def _erf_long_form(o: Ops, k, v1, v2, diag, near):
    """``(arctan(z/√(1 − z²)), 1/√(1 − z²))`` with ``1 − z²`` as a sum of non-negative terms (large variances)."""
    s1, s2 = 1 / (1 + 2 * v1.q), 1 / (1 + 2 * v2.q)
    rho1, rho2 = safe_sqrt(2 * v1.q * s1), safe_sqrt(2 * v2.q * s2)
    c = o(torch.mul, o(torch.mul, k, v1.inv_sqrt * _snap(k), into=o.buffer(0)), v2.inv_sqrt, into=o.buffer(0))
    c = _set_diagonal(o(torch.clamp, c, -1.0, 1.0, into=c), 1.0, diag)
    one = torch.ones((), dtype=k.dtype, device=k.device)
    t = o(torch.addcmul, one, c, c, value=-1.0, into=o.buffer(1))  # 1 − c²
    fix = near(c) if near is not None else None
    if fix is not None:
        t = _put(t, fix.where, fix.sin_sq)
    t = o(torch.mul, t, rho1 * rho1, into=t)
    d_sq = o(torch.addcmul, s2, s1, 1 - s2, into=o.buffer(2))  # s1 + s2 − s1 s2
    inv_d = o(torch.rsqrt, o(torch.addcmul, d_sq, t, rho2 * rho2, into=d_sq), into=d_sq)
    w = o(torch.mul, o(torch.mul, o(torch.mul, c, rho1, into=c), rho2, into=c), inv_d, into=c)  # z/√(1 − z²)
    return o(torch.atan, w, into=w), inv_d


def _identity_step(k, v1, v2, diag, wv, bv, free=None, near=None):
    o = Ops(free)
    out = o(torch.mul, k, wv, into=o.buffer(0))
    return (o(torch.add, out, bv, into=out) if not is_zero(bv) else out), 1.0, 1.0


# ---------------------------------------------------------------------------------------------------------------
# Quadrature for activations without a closed form
# ---------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _radial_rule(degree: int):
    """Gauss nodes and weights for ``∫₀^∞ g(r) r e^(−r²/2) dr`` (the radial part of a 2-D standard Gaussian).

    Recurrence coefficients by the discretized Stieltjes procedure (Gautschi, *Orthogonal Polynomials*, 2004,
    section 2.2.3) on a fine composite Gauss–Legendre grid, then Golub–Welsch. Exact for polynomials in r up to degree
    ``2 degree − 1``.
    """
    big = math.sqrt(4 * degree + 10) * 1.5 + 8  # far beyond the largest node; e^(−big²/2) underflows the weights
    x, w = np.polynomial.legendre.leggauss(64)
    panels = 40  # composite rule: 40 panels of 64 nodes integrate r^(2 degree + 1) e^(−r²/2) to rounding
    r = ((x[None, :] + 1) / 2 + np.arange(panels)[:, None]).ravel() * (big / panels)
    weight = np.tile(w, panels) * (big / (2 * panels)) * r * np.exp(-r * r / 2)
    mu0 = weight.sum()
    alpha, sqrt_beta = np.zeros(degree), np.zeros(degree)
    p_prev, p = np.zeros_like(r), np.full_like(r, 1 / math.sqrt(mu0))  # orthonormal polynomials on the grid
    for k in range(degree):
        alpha[k] = (weight * r * p * p).sum()
        p_next = (r - alpha[k]) * p - sqrt_beta[k] * p_prev
        if k + 1 < degree:
            sqrt_beta[k + 1] = math.sqrt((weight * p_next * p_next).sum())
            p_prev, p = p, p_next / sqrt_beta[k + 1]
    nodes, vectors = np.linalg.eigh(np.diag(alpha) + np.diag(sqrt_beta[1:], 1) + np.diag(sqrt_beta[1:], -1))
    return nodes, mu0 * vectors[0] ** 2


def _polar_rule(degree: int, dtype, device):
    r, w_r = _radial_rule(degree)
    a, w_a = np.polynomial.legendre.leggauss(degree)
    as_t = lambda v: torch.as_tensor(v, dtype=dtype, device=device)  # noqa: E731
    return as_t(r), as_t(w_r), as_t(a), as_t(w_a)


def _value_and_derivative(fn: Callable, x: torch.Tensor):
    """``(φ(x), φ′(x))`` with φ′ from autograd. When ``x`` itself carries a gradient (a kernel differentiated with
    respect to its inputs), both keep their graph, so that φ′ can be differentiated again."""
    keep = needs_grad(x)
    with torch.enable_grad():
        xg = x if keep else x.detach().requires_grad_(True)
        y = fn(xg)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            raise ValueError("activation must be an elementwise torch function (same shape out as in)")
        (dy,) = torch.autograd.grad(y.sum(), xg, allow_unused=True, create_graph=keep)
    dy = torch.zeros_like(x) if dy is None else dy
    return (y, dy) if keep else (y.detach(), dy)


def gaussian_expectations(fn: Callable, q11, q22, q12, *, degree: int = 32, max_memory: int = DEFAULT_MAX_MEMORY):
    """``E[φ(u)φ(v)]`` and ``E[φ′(u)φ′(v)]`` for ``(u, v) ~ N(0, [[q11, q12], [q12, q22]])`` by quadrature.

    The fallback for activations without a closed form (book appendix "Closed-form kernels and conventions",
    section "Activations"). Write
    ``u = √q11 r cos α`` and ``v = √q22 r cos(α − θ)`` with ``cos θ = q12/√(q11 q22)`` (polar coordinates of the
    Cholesky factorization of the covariance). The angle integral runs over ``[0, π)`` with both signs of ``r``,
    split at the angles where ``u = 0`` or ``v = 0``, and uses Gauss–Legendre nodes on each piece; the radial
    integral uses the Gauss rule of the weight ``r e^(−r²/2)`` on ``[0, ∞)``. Kinks of φ at 0 (ReLU, leaky ReLU,
    |x|, steps of φ′) therefore fall on piece boundaries and the rule stays spectrally accurate for them. At the default ``degree`` (``degree``
    Legendre nodes per piece, ``degree`` radial nodes; ``6 degree²`` evaluations of φ and φ′ per entry) ReLU and the
    identity agree with their closed forms to rounding, erf to better than 1e-8 for variances up to 10 (steeper
    functions need more nodes). Kinks away from 0 converge more slowly.

    Parameters
    ----------
    fn : φ, an elementwise torch callable or ``nn.Module``, or a registered name (:data:`NAMES`); φ′ comes from
        autograd.
    q11, q22, q12 : broadcastable arrays of real numbers, ``q11, q22 ≥ 0`` and ``q12² ≤ q11 q22`` (a covariance
        matrix, to rounding); ``q11`` is the reference of the mixed-input policy (:mod:`ntkcore._checks`).
    degree : ``2..352`` (:data:`MAX_QUADRATURE_DEGREE`).
    max_memory : bytes of intermediates; entries are processed in chunks within it.

    Returns
    -------
    ``(E[φ(u)φ(v)], E[φ′(u)φ′(v)])``, each of the broadcast shape of ``q11, q22, q12``.
    """
    fn = get(fn, name="fn").fn
    degree, max_memory = check_quadrature(degree, max_memory, "degree")
    q11, q22, q12 = _covariance(q11, q22, q12)
    shape = q12.shape
    cos = (q12 * inv_sqrt(q11) * inv_sqrt(q22) * _snap(q12)).clamp(-1.0, 1.0)
    return _polar_quadrature(fn, safe_sqrt(q11).reshape(-1), safe_sqrt(q22).reshape(-1),
                             torch.arccos(cos).reshape(-1), degree, max_memory, shape)


def _covariance(q11, q22, q12):
    """The three entries of 2 × 2 covariance matrices, checked and broadcast."""
    q11 = as_tensor(q11, "q11")
    q22, q12 = (as_tensor(q, name, like=q11, like_name="q11") for q, name in ((q22, "q22"), (q12, "q12")))
    try:
        q11, q22, q12 = torch.broadcast_tensors(q11, q22, q12)
    except RuntimeError:
        raise ValueError(f"q11, q22 and q12 must have broadcastable shapes, got {tuple(q11.shape)}, "
                         f"{tuple(q22.shape)} and {tuple(q12.shape)}") from None
    for q, name in ((q11, "q11"), (q22, "q22")):
        if bool((q < 0).any()):
            raise ValueError(f"{name} must hold variances >= 0, got {float(q.min()):.3g}")
    excess = q12.abs() - (q11 * q22).sqrt() * (1 + 8 * torch.finfo(q12.dtype).eps)
    if bool((excess > 0).any()):
        raise ValueError("q12 must satisfy q12² <= q11 q22 (the entries of a covariance matrix), got |q12| exceeding "
                         f"sqrt(q11 q22) by {float(excess.max()):.3g}")
    return q11, q22, q12


def _polar_quadrature(fn, s1, s2, theta, degree, max_memory, shape):
    dtype, device = theta.dtype, theta.device
    radius, w_radius, nodes, w_nodes = _polar_rule(degree, dtype, device)
    radius = torch.cat([radius, -radius])  # both signs of r: the angle then only runs over [0, π)
    w_radius = torch.cat([w_radius, w_radius]) / (2 * math.pi)
    per_entry = 3 * degree * 2 * degree * 6 * theta.element_size()  # ~6 live tensors of nodes per entry
    chunk = max(1, max_memory // per_entry)
    e_phi = torch.empty_like(theta)
    e_dphi = torch.empty_like(theta)
    half_pi = math.pi / 2
    for start in range(0, theta.numel(), chunk):
        sl = slice(start, start + chunk)
        th = theta[sl]
        cut = torch.remainder(th + half_pi, math.pi)  # where v = 0; u = 0 at π/2
        lo_cut, hi_cut = torch.minimum(cut, torch.full_like(th, half_pi)), torch.maximum(cut, torch.full_like(th, half_pi))
        edges = torch.stack([torch.zeros_like(th), lo_cut, hi_cut, torch.full_like(th, math.pi)], dim=1)
        half = (edges[:, 1:] - edges[:, :-1]) / 2  # (m, 3)
        alpha = (edges[:, :-1] + half)[:, :, None] + half[:, :, None] * nodes  # (m, 3, degree)
        w_alpha = (half[:, :, None] * w_nodes).reshape(-1, 3 * degree, 1) * w_radius  # (m, 3·degree, 2·degree)
        alpha = alpha.reshape(-1, 3 * degree, 1)
        u = (s1[sl, None, None] * torch.cos(alpha)) * radius
        v = (s2[sl, None, None] * torch.cos(alpha - th[:, None, None])) * radius
        fu, dfu = _value_and_derivative(fn, u)
        fv, dfv = _value_and_derivative(fn, v)
        e_phi[sl] = (fu * fv * w_alpha).sum(dim=(1, 2))
        e_dphi[sl] = (dfu * dfv * w_alpha).sum(dim=(1, 2))
    return e_phi.reshape(shape), e_dphi.reshape(shape)


def _quadrature_step(fn, degree, max_memory, k, v1, v2, diag, wv, bv, free=None, near=None):
    k, s1, s2, r1, r2 = torch.broadcast_tensors(k, v1.sqrt, v2.sqrt, v1.inv_sqrt * _snap(k), v2.inv_sqrt)
    cos = _set_diagonal((k * r1 * r2).clamp(-1.0, 1.0), 1.0, diag)
    fix = near(cos) if near is not None else None
    if needs_grad(cos):  # arccos′ is infinite where |c| = 1; atan2 of a floored sine has finite derivatives
        sin = (1 - cos * cos).clamp(min=torch.finfo(cos.dtype).tiny).sqrt()
        theta = torch.atan2(sin if fix is None else _put(sin, fix.where, fix.sin_sq.sqrt()), cos)
    else:
        theta = torch.arccos(cos)
        if fix is not None:
            theta[fix.where] = torch.atan2(fix.sin_sq.sqrt(), cos[fix.where])
    e_phi, e_dphi = _polar_quadrature(fn, s1.reshape(-1), s2.reshape(-1), theta.reshape(-1), degree, max_memory,
                                      k.shape)
    return _affine(Ops(free if not needs_grad(e_phi) else None), e_phi, wv, bv), e_dphi, 1.0




# ---------------------------------------------------------------------------------------------------------------
# Finite-width modules
# ---------------------------------------------------------------------------------------------------------------

class Erf(nn.Module):
    """The error function ``φ(h) = erf(h)`` (elementwise), whose kernels have closed forms."""

    elementwise = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erf(x)


class Elementwise(nn.Module):
    """Wrap a plain function acting elementwise on a tensor (e.g. ``torch.sin``) as an activation module.

    ``elementwise = True`` tells :func:`ntkcore.empirical.ntk` that the function acts entry by entry, which its
    layer-by-layer fast path needs; wrap only functions for which that is true.
    """

    elementwise = True

    def __init__(self, fn):
        super().__init__()
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


# ---------------------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Activation:
    """One activation function with everything the library needs of it.

    Attributes
    ----------
    name : the registered name, or the callable's name.
    fn : φ, an elementwise torch function (out of place).
    closed_form : whether :meth:`step` uses a closed form (else quadrature of ``quadrature_degree``).
    linear : φ is the identity: its step is exact for any input distribution, Gaussian or not.
    quadrature_degree, max_memory : the quadrature's nodes per dimension and its memory bound in bytes.
    """

    name: str
    fn: Callable
    closed_form: bool
    linear: bool = False
    quadrature_degree: int = 32
    max_memory: int = DEFAULT_MAX_MEMORY
    _step: Callable | None = dataclasses.field(default=None, repr=False)
    _derivative: Callable | None = dataclasses.field(default=None, repr=False)
    _module: Callable | None = dataclasses.field(default=None, repr=False)
    _mul_derivative: Callable | None = dataclasses.field(default=None, repr=False)
    in_place: bool = False

    def step(self, k, v1, v2, diag, wv, bv, free=None, near=None):
        """The Gaussian step ``(wv · E[φ(u)φ(v)] + bv, d, scale)`` with ``E[φ′(u)φ′(v)] = scale · d``; see the
        module docstring for the arguments."""
        if self._step is not None:
            return self._step(k, v1, v2, diag, wv, bv, free, near)
        return _quadrature_step(self.fn, self.quadrature_degree, self.max_memory, k, v1, v2, diag, wv, bv, free,
                                near)

    def moments(self, q11, q22, q12):
        """``(E[φ(u)φ(v)], E[φ′(u)φ′(v)])`` for ``(u, v) ~ N(0, [[q11, q12], [q12, q22]])``, broadcast tensors."""
        q11, q22, q12 = torch.broadcast_tensors(q11, q22, q12)
        e, d, scale = self.step(q12, Variances.of(q11), Variances.of(q22), None, 1.0, 0.0)
        return e, (d * scale if isinstance(d, torch.Tensor) else torch.full_like(e, d * scale))

    def derivative(self, h: torch.Tensor) -> torch.Tensor:
        """φ′(h), elementwise (autograd for callables)."""
        if self._derivative is not None:
            return self._derivative(h)
        return _value_and_derivative(self.fn, h)[1]

    def apply_(self, h: torch.Tensor) -> torch.Tensor:
        """φ(h), in place when ``in_place`` (ReLU), else a new tensor."""
        return torch.relu_(h) if self.in_place else self.fn(h)

    def mul_derivative_(self, g: torch.Tensor, h: torch.Tensor | None, phi_h: torch.Tensor):
        """``g ⊙ φ′(h) / c`` in place on ``g``; returns it and the constant ``c``, which a caller folds into a
        later product. ``h`` may be None when :meth:`apply_` overwrote it (``in_place``): φ′ is then read off
        ``phi_h = φ(h)``."""
        if self._mul_derivative is not None:
            return self._mul_derivative(g, h, phi_h)
        return g.mul_(self.derivative(h)), 1.0

    def module(self) -> nn.Module:
        """A fresh ``nn.Module`` computing φ (for the finite networks)."""
        return self._module() if self._module is not None else Elementwise(self.fn)

    def with_quadrature(self, degree: int, max_memory: int) -> "Activation":
        """The same activation with another quadrature degree and memory bound (checked by
        :func:`check_quadrature`; closed forms ignore both)."""
        degree, max_memory = check_quadrature(degree, max_memory)
        if self.closed_form:
            return self
        return dataclasses.replace(self, quadrature_degree=degree, max_memory=max_memory)

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"

    def __reduce_ex__(self, protocol):
        """A registered activation pickles as its name and quadrature settings, so that networks travel to other
        processes (the workers of :mod:`ntkcore.distributed`) without the registry's functions; any other pickles
        field by field."""
        registered = _REGISTRY.get(self.name)
        if registered is not None and registered.fn is self.fn:
            return _registered, (self.name, self.quadrature_degree, self.max_memory)
        return super().__reduce_ex__(protocol)


def _registered(name: str, degree: int, max_memory: int) -> Activation:
    """The registered activation ``name`` with the quadrature settings of a pickled one."""
    act = _REGISTRY[name]
    if (degree, max_memory) == (act.quadrature_degree, act.max_memory):
        return act
    return dataclasses.replace(act, quadrature_degree=degree, max_memory=max_memory)


_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)

_REGISTRY = {
    "relu": Activation(
        "relu", torch.relu, closed_form=True, in_place=True, _step=_relu_step, _module=nn.ReLU,
        _derivative=lambda h: (h > 0).to(h.dtype),
        _mul_derivative=lambda g, h, phi_h: (
            torch.ops.aten.threshold_backward.grad_input(g, phi_h, 0, grad_input=g), 1.0)),
    "erf": Activation(
        "erf", torch.special.erf, closed_form=True, _step=_erf_step, _module=Erf,
        _derivative=lambda h: torch.exp(-h * h).mul_(_TWO_OVER_SQRT_PI),
        _mul_derivative=lambda g, h, phi_h: (g.mul_(torch.square(h).neg_().exp_()), _TWO_OVER_SQRT_PI)),
    "identity": Activation(
        "identity", lambda h: h, closed_form=True, linear=True, _step=_identity_step, _module=nn.Identity,
        _derivative=torch.ones_like, _mul_derivative=lambda g, h, phi_h: (g, 1.0)),
    "tanh": Activation(
        "tanh", torch.tanh, closed_form=False, _module=nn.Tanh,
        _derivative=lambda h: 1 - torch.tanh(h) ** 2,
        _mul_derivative=lambda g, h, phi_h: (g.mul_(1 - phi_h * phi_h), 1.0)),
}

NAMES = tuple(_REGISTRY)
"""The registered activation names."""

CLOSED_FORM_NAMES = tuple(name for name, act in _REGISTRY.items() if act.closed_form)
"""Names whose Gaussian expectations have closed forms (the two-time kernels of Part II need them)."""

# torch modules that compute a registered activation: the empirical NTK reads φ′ off them without autograd
_MODULE_TYPES = {nn.ReLU: "relu", Erf: "erf", nn.Identity: "identity", nn.Tanh: "tanh"}


def get(activation, *, closed_form: bool = False, name: str = "activation") -> Activation:
    """The :class:`Activation` for ``activation``: a registered name (:data:`NAMES`), an :class:`Activation`, or an
    elementwise torch callable or ``nn.Module`` (quadrature, φ′ by autograd; the module is deep-copied for every
    finite network). With ``closed_form=True`` only :data:`CLOSED_FORM_NAMES` are accepted. A bad value raises a
    ValueError naming ``name`` and the accepted values."""
    if closed_form:
        if isinstance(activation, Activation) and activation.closed_form:
            return activation
        return _REGISTRY[check_choice(activation, name, CLOSED_FORM_NAMES)]
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        return _REGISTRY[check_choice(activation, name, NAMES)]
    if isinstance(activation, nn.Module):
        for module_type, registered in _MODULE_TYPES.items():
            if type(activation) is module_type:
                return _REGISTRY[registered]
        module = activation
        return Activation(type(module).__name__, module, closed_form=False,
                          _module=lambda: copy.deepcopy(module))
    if callable(activation):
        return Activation(getattr(activation, "__name__", repr(activation)), activation, closed_form=False)
    raise ValueError(f"{name} must be one of {', '.join(map(repr, NAMES))}, an elementwise torch callable or an "
                     f"nn.Module, got {type(activation).__name__}")


def derivative_of_module(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """φ′(h) for an elementwise activation module: the registry's closed form for the modules it knows (ReLU, erf,
    identity, tanh), else one forward-mode pass through the module."""
    registered = _MODULE_TYPES.get(type(module))
    if registered is not None:
        return _REGISTRY[registered].derivative(h)
    return torch.func.jvp(module, (h,), (torch.ones_like(h),))[1]
