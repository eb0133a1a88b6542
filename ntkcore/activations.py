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

A step has the signature ``step(k, v1, v2, diag, wv, bv, free=None)``: ``k`` is the covariance ``q12`` (any shape),
``v1`` and ``v2`` are :class:`Variances` of the two sides, broadcastable against ``k``; ``diag`` is None or a function
that returns a view of the entries of ``k`` where the two sides are the same input (the angle is then set to exactly
0); ``free`` is None or a list of preallocated tensors shaped like ``k`` that the step may write into. It returns
``(wv · E[φφ] + bv, d, scale)`` with ``E[φ′φ′] = scale · d``, and leaves ``k`` unchanged. Fusing the affine map
``wv · (·) + bv`` of the next dense layer into the step saves passes over memory in the tiled kernels.
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

from ._checks import check_choice, check_int

__all__ = ["Activation", "NAMES", "CLOSED_FORM_NAMES", "get", "gaussian_expectations", "Erf", "Elementwise",
           "derivative_of_module"]

DEFAULT_MAX_MEMORY = 2**28
"""Bytes of intermediates a quadrature step may hold at once (256 MiB)."""


# ---------------------------------------------------------------------------------------------------------------
# Variances and buffers shared by the steps
# ---------------------------------------------------------------------------------------------------------------

def inv_sqrt(q: torch.Tensor) -> torch.Tensor:
    """``q^(−1/2)`` with zero variances mapped to a finite value: a zero variance (a zero input without bias) has
    zero covariances, which any finite factor keeps exactly zero."""
    return q.clamp_min(torch.finfo(q.dtype).tiny).rsqrt()


class Variances(NamedTuple):
    """Variances ``q`` of one side of a pair of pre-activations, with ``√q`` and ``q^(−1/2)`` computed once (a
    kernel slices them per tile instead of taking square roots in every tile)."""

    q: torch.Tensor
    sqrt: torch.Tensor
    inv_sqrt: torch.Tensor

    @classmethod
    def of(cls, q: torch.Tensor) -> "Variances":
        return cls(q, q.sqrt(), inv_sqrt(q))

    def map(self, fn) -> "Variances":
        """The same function (an index, a reshape) applied to all three tensors."""
        return Variances(fn(self.q), fn(self.sqrt), fn(self.inv_sqrt))


def _set_diagonal(t: torch.Tensor, value: float, diag) -> None:
    if diag is not None:
        diag(t).fill_(value)


def _buffers(free, like: torch.Tensor, count: int):
    return free[:count] if free is not None else [torch.empty_like(like) for _ in range(count)]


# ---------------------------------------------------------------------------------------------------------------
# Closed-form steps
# ---------------------------------------------------------------------------------------------------------------

def _nonzero(b) -> bool:
    return isinstance(b, torch.Tensor) or b != 0


def _relu_step(k, v1, v2, diag, wv, bv, free=None):
    # With c = cos θ:  E[relu relu] = √(q1 q2)/(2π) (sin θ + (π − θ) c),  E[relu′ relu′] = (π − θ)/(2π).
    # Work with nc = −c, so that π − θ = arccos(nc): seven in-place passes over the tile (plus the bias).
    nc, pi_minus_theta, out = _buffers(free, k, 3)
    torch.mul(k, v1.inv_sqrt, out=nc).mul_(-v2.inv_sqrt).clamp_(-1.0, 1.0)
    _set_diagonal(nc, -1.0, diag)
    torch.arccos(nc, out=pi_minus_theta)
    one = torch.ones((), dtype=k.dtype, device=k.device)
    torch.addcmul(one, nc, nc, value=-1.0, out=out).sqrt_()  # sin θ
    out.addcmul_(pi_minus_theta, nc, value=-1.0)
    out.mul_(v1.sqrt * (wv / (2 * math.pi))).mul_(v2.sqrt)
    if _nonzero(bv):
        out.add_(bv)
    return out, pi_minus_theta, 1.0 / (2 * math.pi)


def _erf_step(k, v1, v2, diag, wv, bv, free=None):
    # E[erf erf] = (2/π) arcsin(2 q12 / √((1+2q11)(1+2q22))),
    # E[erf′ erf′] = (4/π) ((1+2q11)(1+2q22) − 4 q12²)^(−1/2) = (4/π) r1 r2 / √(1 − z²) with r, z below.
    z, d = _buffers(free, k, 2)
    r1, r2 = inv_sqrt(1 + 2 * v1.q), inv_sqrt(1 + 2 * v2.q)
    torch.mul(k, 2 * r1, out=z).mul_(r2).clamp_(-1.0, 1.0)
    one = torch.ones((), dtype=k.dtype, device=k.device)
    torch.addcmul(one, z, z, value=-1.0, out=d).rsqrt_().mul_(r1).mul_(r2)
    out = torch.arcsin_(z).mul_(wv * 2 / math.pi)
    if _nonzero(bv):
        out.add_(bv)
    return out, d, 4 / math.pi


def _identity_step(k, v1, v2, diag, wv, bv, free=None):
    (out,) = _buffers(free, k, 1)
    torch.mul(k, wv, out=out)
    if _nonzero(bv):
        out.add_(bv)
    return out, 1.0, 1.0


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
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        y = fn(xg)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            raise ValueError("activation must be an elementwise torch function (same shape out as in)")
        (dy,) = torch.autograd.grad(y.sum(), xg, allow_unused=True)
    return y.detach(), (torch.zeros_like(x) if dy is None else dy)


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

    ``fn`` is an elementwise torch callable; φ′ comes from autograd. ``q11, q22, q12`` are broadcastable tensors
    (``q11, q22 > 0``); the two results have their broadcast shape. Entries are processed in chunks of at most
    ``max_memory`` bytes of intermediates.
    """
    q11, q22, q12 = torch.broadcast_tensors(q11, q22, q12)
    shape = q12.shape
    r1, r2 = inv_sqrt(q11), inv_sqrt(q22)
    cos = (q12 * r1 * r2).clamp_(-1.0, 1.0)
    return _polar_quadrature(fn, q11.sqrt().reshape(-1), q22.sqrt().reshape(-1), torch.arccos(cos).reshape(-1),
                             degree, max_memory, shape)


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


def _quadrature_step(fn, degree, max_memory, k, v1, v2, diag, wv, bv, free=None):
    k, s1, s2, r1, r2 = torch.broadcast_tensors(k, v1.sqrt, v2.sqrt, v1.inv_sqrt, v2.inv_sqrt)
    cos = (k * r1 * r2).clamp_(-1.0, 1.0)
    _set_diagonal(cos, 1.0, diag)
    e_phi, e_dphi = _polar_quadrature(fn, s1.reshape(-1), s2.reshape(-1), torch.arccos(cos).reshape(-1),
                                      degree, max_memory, k.shape)
    e_phi.mul_(wv)
    if _nonzero(bv):
        e_phi.add_(bv)
    return e_phi, e_dphi, 1.0




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

    def step(self, k, v1, v2, diag, wv, bv, free=None):
        """The Gaussian step ``(wv · E[φ(u)φ(v)] + bv, d, scale)`` with ``E[φ′(u)φ′(v)] = scale · d``; see the
        module docstring for the arguments."""
        if self._step is not None:
            return self._step(k, v1, v2, diag, wv, bv, free)
        return _quadrature_step(self.fn, self.quadrature_degree, self.max_memory, k, v1, v2, diag, wv, bv, free)

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
        """The same activation with another quadrature degree and memory bound (closed forms ignore both)."""
        if self.closed_form:
            return self
        return dataclasses.replace(self, quadrature_degree=check_int(degree, "quadrature_degree", low=2),
                                   max_memory=check_int(max_memory, "max_memory", low=1))

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


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
