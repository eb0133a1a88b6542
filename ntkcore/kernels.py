"""Analytic NNGP and NTK kernels of fully connected networks, and the lecture's two-layer kernels.

Conventions are those of formulas.md section 1 (NTK parameterization, the same as neural-tangents'
``stax.serial(Dense(1, W_std=σw, b_std=σb), φ, ..., Dense(1, W_std=σw, b_std=σb))``)::

    K¹(x,x′) = σw² x·x′/d + σb²,   Θ¹ = K¹
    K^{l+1}  = σw² E[φ(u)φ(v)] + σb²,   K̇^{l+1} = σw² E[φ′(u)φ′(v)],   Θ^{l+1} = K^{l+1} + K̇^{l+1} Θ^l

with ``(u, v) ~ N(0, [[K^l(x,x), K^l(x,x′)], [K^l(x,x′), K^l(x′,x′)]])``; NNGP = K^{L+1} and NTK = Θ^{L+1} for
``L = depth`` hidden layers. ReLU, erf and the identity use the closed forms of formulas.md section 1; any other
elementwise torch function φ is integrated numerically (polar Gauss quadrature, see :func:`gaussian_expectations`),
with φ′ from autograd.

The two-layer kernels of the lecture (formulas.md section 2, Du et al. 2019) are :func:`two_layer_limit` (H*) and
:func:`two_layer_empirical` (H(0) of one draw of the first layer).

>>> import torch
>>> from ntkcore import kernels
>>> x = torch.eye(3, dtype=torch.float64)
>>> k = kernels.fc(x, depth=1)
>>> k.nngp.shape, k.ntk.shape
(torch.Size([3, 3]), torch.Size([3, 3]))
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
from typing import Callable, NamedTuple

import numpy as np
import torch

from ._checks import as_tensor, check_choice, check_int, check_real

__all__ = [
    "Kernels", "ACTIVATIONS", "fc", "gaussian_expectations", "two_layer_limit", "two_layer_empirical",
]

ACTIVATIONS = ("relu", "erf", "identity")
"""Activation names with closed-form Gaussian expectations (formulas.md section 1, table)."""

_DEFAULT_MAX_MEMORY = 2**28  # bytes of tile intermediates (256 MiB), outputs not included
_TILE_ROWS, _TILE_COLS = 256, 512  # CPU tiles (panel rows × tile columns): measured fastest at n = 4000
_N_BUFFERS = 5  # tile-sized buffers: K, Θ and three intermediates (ReLU)


class Kernels(NamedTuple):
    """NNGP and NTK matrices, each ``(n1, n2)``; a field not asked for (``get=``) is None."""

    nngp: torch.Tensor | None
    ntk: torch.Tensor | None


# ---------------------------------------------------------------------------------------------------------------
# One layer of the recursion. Every step takes the current covariances as broadcastable tensors
#   k  = K^l(x, x′)   (shape S),   v1 = _Var of K^l(x, x)  and  v2 = _Var of K^l(x′, x′)   (broadcastable to S),
# `diag`, which says where x = x′ (the angle is then exactly 0): None (nowhere), "tile" (the diagonal of the
# leading square block of a panel of a symmetric call) or "all" (every entry: the variance recursion itself),
# and `free`, None or a list of preallocated tensors of shape S the step may write into (k is not among them).
# It returns (σw² E[φ(u)φ(v)] + σb², d, scale) with K̇ = σw² · scale · d; `k` is left unchanged.
# ---------------------------------------------------------------------------------------------------------------

def _set_diagonal(t: torch.Tensor, value: float, diag) -> None:
    if diag == "all":
        t.fill_(value)
    elif diag == "tile":
        t.diagonal().fill_(value)


def _inv_sqrt(q: torch.Tensor) -> torch.Tensor:
    # A zero variance (zero input, no bias) has zero covariances: any finite factor keeps them exactly zero.
    return q.clamp_min(torch.finfo(q.dtype).tiny).rsqrt()


class _Var(NamedTuple):
    """Variances K^l(x, x) with their square roots, computed once per layer and sliced per tile."""

    q: torch.Tensor
    sqrt: torch.Tensor
    inv_sqrt: torch.Tensor

    @classmethod
    def of(cls, q: torch.Tensor) -> "_Var":
        return cls(q, q.sqrt(), _inv_sqrt(q))

    def take(self, index) -> "_Var":
        """The same entries of all three (e.g. ``[rows, None]`` for a tile's rows)."""
        return _Var(self.q[index], self.sqrt[index], self.inv_sqrt[index])


def _buffers(free, like: torch.Tensor, count: int):
    return free[:count] if free is not None else [torch.empty_like(like) for _ in range(count)]


def _relu_step(k, v1, v2, diag, wv, bv, free=None):
    # With c = cos θ:  E[relu relu] = √(q1 q2)/(2π) (sin θ + (π − θ) c),  E[relu′ relu′] = (π − θ)/(2π).
    # Work with nc = −c, so that π − θ = arccos(nc): seven in-place passes over the panel (plus the bias).
    nc, pi_minus_theta, out = _buffers(free, k, 3)
    torch.mul(k, v1.inv_sqrt, out=nc).mul_(-v2.inv_sqrt).clamp_(-1.0, 1.0)
    _set_diagonal(nc, -1.0, diag)
    torch.arccos(nc, out=pi_minus_theta)
    one = torch.ones((), dtype=k.dtype, device=k.device)
    torch.addcmul(one, nc, nc, value=-1.0, out=out).sqrt_()  # sin θ
    out.addcmul_(pi_minus_theta, nc, value=-1.0)
    out.mul_(v1.sqrt * (wv / (2 * math.pi))).mul_(v2.sqrt)
    if bv:
        out.add_(bv)
    return out, pi_minus_theta, 1.0 / (2 * math.pi)


def _erf_step(k, v1, v2, diag, wv, bv, free=None):
    # E[erf erf] = (2/π) arcsin(2 q12 / √((1+2q11)(1+2q22))),
    # E[erf′ erf′] = (4/π) ((1+2q11)(1+2q22) − 4 q12²)^(−1/2) = (4/π) r / √(1 − z²) with r, z below.
    z, d = _buffers(free, k, 2)
    r1, r2 = _inv_sqrt(1 + 2 * v1.q), _inv_sqrt(1 + 2 * v2.q)
    torch.mul(k, 2 * r1, out=z).mul_(r2).clamp_(-1.0, 1.0)
    one = torch.ones((), dtype=k.dtype, device=k.device)
    torch.addcmul(one, z, z, value=-1.0, out=d).rsqrt_().mul_(r1).mul_(r2)
    out = torch.arcsin_(z).mul_(wv * 2 / math.pi)
    if bv:
        out.add_(bv)
    return out, d, 4 / math.pi


def _identity_step(k, v1, v2, diag, wv, bv, free=None):
    (out,) = _buffers(free, k, 1)
    return torch.mul(k, wv, out=out).add_(bv), 1.0, 1.0


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


def gaussian_expectations(fn: Callable, q11, q22, q12, *, degree: int = 32, max_memory: int = _DEFAULT_MAX_MEMORY):
    """``E[φ(u)φ(v)]`` and ``E[φ′(u)φ′(v)]`` for ``(u, v) ~ N(0, [[q11, q12], [q12, q22]])`` by quadrature.

    The numerical fallback of formulas.md section 1 for activations without a closed form. Write
    ``u = √q11 r cos α`` and ``v = √q22 r cos(α − θ)`` with ``cos θ = q12/√(q11 q22)`` (polar coordinates of the
    Cholesky factorization of the covariance). The angle integral runs over ``[0, π)`` with both signs of ``r``,
    split at the angles where ``u = 0`` or ``v = 0``, and uses Gauss–Legendre nodes on each piece; the radial
    integral uses the Gauss rule of the weight ``r e^(−r²/2)`` on ``[0, ∞)``. Kinks of φ at 0 (ReLU, leaky ReLU, |x|, steps of φ′) therefore
    fall on piece boundaries and the rule stays spectrally accurate for them. At the default ``degree`` (``degree``
    Legendre nodes per piece, ``degree`` radial nodes; ``6 degree²`` evaluations of φ and φ′ per entry) ReLU and the
    identity agree with their closed forms to rounding, erf to better than 1e-8 for variances up to 10 (steeper
    functions need more nodes). Kinks away from 0 converge more slowly.

    ``fn`` is an elementwise torch callable; φ′ comes from autograd. ``q11, q22, q12`` are broadcastable tensors
    (``q11, q22 > 0``); the two results have their broadcast shape. Entries are processed in chunks of at most
    ``max_memory`` bytes of intermediates.
    """
    q11, q22, q12 = torch.broadcast_tensors(q11, q22, q12)
    shape = q12.shape
    r1, r2 = _inv_sqrt(q11), _inv_sqrt(q22)
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


def _quadrature_step(fn, degree, max_memory):
    def step(k, v1, v2, diag, wv, bv, free=None):
        k, s1, s2, r1, r2 = torch.broadcast_tensors(k, v1.sqrt, v2.sqrt, v1.inv_sqrt, v2.inv_sqrt)
        cos = (k * r1 * r2).clamp_(-1.0, 1.0)
        _set_diagonal(cos, 1.0, diag)
        e_phi, e_dphi = _polar_quadrature(fn, s1.reshape(-1), s2.reshape(-1), torch.arccos(cos).reshape(-1),
                                          degree, max_memory, k.shape)
        return e_phi.mul_(wv).add_(bv), e_dphi, 1.0
    return step


_CLOSED_FORMS = {"relu": _relu_step, "erf": _erf_step, "identity": _identity_step}


def _check_activation(activation):
    if isinstance(activation, str):
        return check_choice(activation, "activation", ACTIVATIONS)
    if not callable(activation):
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))} or an elementwise torch "
                         f"callable, got {type(activation).__name__}")
    return activation


def _activation_step(activation, quadrature_degree, max_memory):
    activation = _check_activation(activation)
    if isinstance(activation, str):
        return _CLOSED_FORMS[activation]
    return _quadrature_step(activation, quadrature_degree, max_memory)


# ---------------------------------------------------------------------------------------------------------------
# Fully connected kernels
# ---------------------------------------------------------------------------------------------------------------

def _finite_input(x, name, **kwargs) -> torch.Tensor:
    """``as_tensor`` with the NaN/inf check done by one sum (a finite sum means finite entries), the full check
    (and its error message) only when the sum is not finite."""
    t = as_tensor(x, name, finite=False, **kwargs)
    return t if bool(torch.isfinite(t.sum())) else as_tensor(t, name, **kwargs)


def _inputs(x1, x2):
    x1 = _finite_input(x1, "x1", ndim=2)
    if x2 is not None:
        x2 = _finite_input(x2, "x2", ndim=2, device=x1.device, dtype=x1.dtype)
        if x2.shape[1] != x1.shape[1]:
            raise ValueError(f"x2 must have the feature dimension of x1 ({x1.shape[1]}), got shape {tuple(x2.shape)}")
    return x1, x2


def _parse_get(get):
    names = (get,) if isinstance(get, str) else tuple(get)
    if not names or any(n not in ("nngp", "ntk") for n in names):
        raise ValueError(f"get={get!r} is not accepted; accepted: 'nngp', 'ntk' or ('nngp', 'ntk')")
    return "nngp" in names, "ntk" in names


def fc(x1, x2=None, *, depth: int, activation="relu", weight_var: float = 2.0, bias_var: float = 0.0,
       get=("nngp", "ntk"), block_size: int | None = None, max_memory: int = _DEFAULT_MAX_MEMORY,
       quadrature_degree: int = 32) -> Kernels:
    """NNGP and NTK of a fully connected network with ``depth`` hidden layers (formulas.md section 1).

    Parameters
    ----------
    x1, x2 : arrays ``(n1, d)`` and ``(n2, d)``, numpy or torch. ``x2=None`` means ``x2 = x1``; the symmetry is
        then used (only entries on and above the diagonal are computed) and the angle on the diagonal is exactly
        0. Outputs follow ``x1``'s device and dtype (numpy input gives float64 on the default device).
    depth : number ``L ≥ 0`` of hidden layers; ``depth=0`` is the linear model, NNGP = NTK = K¹.
    activation : ``"relu"``, ``"erf"`` (φ = erf), ``"identity"`` (closed forms), or any elementwise torch
        callable (Gaussian expectations by :func:`gaussian_expectations`, φ′ by autograd; slower: about
        ``6 quadrature_degree²`` evaluations of φ per entry and layer).
    weight_var, bias_var : σw² and σb² (≥ 0), the same in every layer.
    get : ``"nngp"``, ``"ntk"`` or both (default); fields not asked for are None (saves one n1 × n2 output).
    block_size : rows of x1 per panel. A panel's ``K¹`` is one matrix product; the layers then run on tiles of
        ``block_size × 512`` entries (on CUDA, on the whole panel). By default 256 rows on the CPU (tiles stay in
        cache), the whole input on CUDA, fewer rows where a panel and its tile buffers would exceed
        ``max_memory``. On the CPU, panels are shared among ``torch.get_num_threads()`` Python threads while
        torch's own intra-op threads are set to 1 for the duration of the call (one synchronization per call
        instead of one per elementwise operation; other threads using torch meanwhile run single-threaded).
    max_memory : bound in bytes on intermediates (panel buffers, quadrature chunks). The outputs themselves
        (``n1 n2`` entries each) come on top of it.
    quadrature_degree : nodes per dimension of the quadrature for callables.

    Returns
    -------
    Kernels(nngp, ntk), each ``(n1, n2)``.
    """
    x1, x2 = _inputs(x1, x2)
    depth = check_int(depth, "depth", low=0)
    wv = check_real(weight_var, "weight_var", low=0.0)
    bv = check_real(bias_var, "bias_var", low=0.0)
    want_nngp, want_ntk = _parse_get(get)
    max_memory = check_int(max_memory, "max_memory", low=1)
    degree = check_int(quadrature_degree, "quadrature_degree", low=2)
    step = _activation_step(activation, degree, max_memory)

    symmetric = x2 is None
    xb = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    workers = torch.get_num_threads() if x1.device.type == "cpu" else 1
    tile_cols = _TILE_COLS if x1.device.type == "cpu" else max(n2, 1)
    if block_size is None:  # a panel of rows and its tile buffers, per worker, within max_memory
        per_row = (max(n2, 1) + (_N_BUFFERS - 1) * min(tile_cols, max(n2, 1))) * x1.element_size() * workers
        block_size = max(1, min(_TILE_ROWS if x1.device.type == "cpu" else n1, max_memory // per_row))
    block = check_int(block_size, "block_size", low=1)

    d = x1.shape[1]
    q1 = _variances(x1, depth, step, wv, bv, d)
    q2 = q1 if symmetric else _variances(xb, depth, step, wv, bv, d)
    outputs = [x1.new_empty(n1, n2) if want else None for want in (want_nngp, want_ntk)]
    starts = list(range(0, n1, block))
    workers = max(1, min(workers, len(starts)))

    def work(worker: int) -> None:  # panels worker, worker + workers, ...: balanced when widths shrink
        gram = x1.new_empty(min(block, n1) * n2)
        tiles = [x1.new_empty(min(block, n1) * min(max(tile_cols, block), n2))
                 for _ in range(_N_BUFFERS - 1 if depth else 0)]
        for i in starts[worker::workers]:
            rows = slice(i, min(i + block, n1))
            first = i if symmetric else 0  # a symmetric call needs the entries right of the diagonal only
            xr, vr = x1[rows], [v.take((rows, None)) for v in q1]
            panel = gram[: (rows.stop - rows.start) * (n2 - first)].view(rows.stop - rows.start, n2 - first)
            # K¹ = σw² x·x′/d + σb² for the whole panel: one matrix product
            torch.addmm(torch.full((), bv, dtype=x1.dtype, device=x1.device), xr, xb[first:].T,
                        beta=1.0 if bv else 0.0, alpha=wv / d, out=panel)
            # column tiles; in a symmetric call the first one is the square block on the diagonal
            edges = ([i] if symmetric else []) + list(range(rows.stop if symmetric else 0, n2, tile_cols)) + [n2]
            for j, stop in zip(edges[:-1], edges[1:]):
                cols = slice(j, stop)
                k = panel[:, j - first: stop - first]
                buffers = [t[: k.numel()].view(k.shape) for t in tiles]
                on_diagonal = symmetric and j == i
                results = _layers(k, vr, [v.take((None, cols)) for v in q2], "tile" if on_diagonal else None,
                                  depth, step, wv, bv, want_ntk, buffers)
                for out, res in zip(outputs, results):
                    if out is None:
                        continue
                    if on_diagonal:  # mirror the upper triangle, so that the output is exactly symmetric
                        out[rows, cols] = res.triu() + res.triu(1).T
                    else:
                        out[rows, cols] = res
                        if symmetric:
                            out[cols, rows] = res.T

    if workers == 1:
        work(0)
    else:  # tiles are computed single-threaded, one panel per thread: no synchronization inside the loops
        with _single_threaded_ops(), concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(work, w) for w in range(workers)]:
                f.result()
    return Kernels(*outputs)


@contextlib.contextmanager
def _single_threaded_ops():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _variances(x, depth, step, wv, bv, d):
    """[K^l(x, x) for l = 1..depth] (as ``_Var``, each ``(n,)``): the diagonal recursion."""
    out = [_Var.of((x * x).sum(dim=1).mul_(wv / d).add_(bv))]
    for _ in range(depth - 1):
        out.append(_Var.of(step(out[-1].q, out[-1], out[-1], "all", wv, bv)[0]))
    return out


def _layers(k, qa, qb, diag, depth, step, wv, bv, want_ntk, buffers):
    """(K^{L+1}, Θ^{L+1}) on one tile from K¹ = ``k`` (overwritten), using the preallocated ``buffers``.

    ``qa[l]``, ``qb[l]`` (``_Var``) are the variances entering hidden layer l+1, shaped to broadcast over the tile.
    """
    theta = k if want_ntk else None
    for layer in range(depth):
        free = [b for b in buffers if b is not k and b is not theta]
        k_new, d, scale = step(k, qa[layer], qb[layer], diag, wv, bv, free)
        if theta is not None:  # Θ^{l+1} = K^{l+1} + σw² scale d Θ^l, written over Θ^l (K^l is no longer needed)
            if isinstance(d, torch.Tensor):
                torch.addcmul(k_new, d, theta, value=wv * scale, out=theta)
            else:
                theta.mul_(wv * scale * d).add_(k_new)
        k = k_new
    return k, theta


# ---------------------------------------------------------------------------------------------------------------
# The lecture's two-layer network (formulas.md section 2)
# ---------------------------------------------------------------------------------------------------------------

def _derivative(activation, z):
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "erf":
        return torch.exp(-z * z).mul_(2 / math.sqrt(math.pi))
    if activation == "identity":
        return torch.ones_like(z)
    return _value_and_derivative(activation, z)[1]


def two_layer_limit(x1, x2=None, *, activation="relu", a_second_moment: float = 1 / 3,
                    quadrature_degree: int = 32) -> torch.Tensor:
    """The lecture's limiting Gram matrix ``H*`` (formulas.md section 2; Du et al. 2019, their H^∞).

    ``H*_ij = x_iᵀx_j · E_w[σ′(wᵀx_i) σ′(wᵀx_j)] · E[a²]`` with ``w ~ N(0, I_d)``: the NTK of
    ``f(x) = m^(−1/2) Σ_r a_r σ(w_rᵀx)`` with only W trained, as m → ∞. Inputs need not have unit norm; for ReLU the
    expectation depends only on the angle, ``E[σ′σ′] = (π − θ_ij)/(2π)`` (``= (π − arccos(x_iᵀx_j))/(2π)`` for unit
    vectors). The slides take ``a_r ∈ {±1}`` in H(0) (so ``a_r² = 1``) but ``a_r ~ Unif[−1, 1]`` elsewhere, for
    which ``E[a²] = 1/3`` (the default); pass ``a_second_moment=1`` for ``a_r = ±1``.

    x1 ``(n1, d)``; ``x2`` ``(n2, d)`` or None (= x1, the Gram matrix H*). With ``x2`` given this is the kernel
    row block ``k(x, X)`` used for kernel regression (formulas.md section 3). Returns ``(n1, n2)``, on x1's
    device and dtype. ``activation``: as in :func:`fc`.
    """
    x1, x2 = _inputs(x1, x2)
    a2 = check_real(a_second_moment, "a_second_moment", low=0.0)
    step = _activation_step(activation, check_int(quadrature_degree, "quadrature_degree", low=2),
                            _DEFAULT_MAX_MEMORY)
    xb = x1 if x2 is None else x2
    gram = x1 @ xb.T
    v1 = _Var.of((x1 * x1).sum(dim=1)[:, None])
    v2 = _Var.of((xb * xb).sum(dim=1)[None, :])
    _, d, scale = step(gram, v1, v2, "tile" if x2 is None else None, 1.0, 0.0)
    return gram.mul_(d).mul_(scale * a2)


def two_layer_empirical(x1, x2=None, *, w, a, activation="relu") -> torch.Tensor:
    """The lecture's Gram matrix ``H(0)`` of one width-m draw (formulas.md section 2; Du et al. 2019).

    ``H_ij = x_iᵀx_j · (1/m) Σ_r a_r² σ′(w_rᵀx_i) σ′(w_rᵀx_j)`` for ``f(x) = m^(−1/2) Σ_r a_r σ(w_rᵀx)``, the NTK
    with respect to W alone. The factor ``a_r²`` is explicit here; the slides drop it, which is exact for
    ``a_r = ±1`` (with ``a_r ~ Unif[−1, 1]`` its mean is 1/3, see :func:`two_layer_limit`).

    x1 ``(n1, d)``, x2 ``(n2, d)`` or None (= x1); w ``(m, d)`` (rows w_r), a ``(m,)``. Returns ``(n1, n2)`` on x1's
    device and dtype. Its expectation over ``w_r ~ N(0, I)`` is :func:`two_layer_limit` with ``E[a²]``.
    """
    x1, x2 = _inputs(x1, x2)
    xb = x1 if x2 is None else x2
    w = as_tensor(w, "w", ndim=2, device=x1.device, dtype=x1.dtype)
    if w.shape[1] != x1.shape[1]:
        raise ValueError(f"w must be (m, d) with d = {x1.shape[1]} (the inputs' dimension), got {tuple(w.shape)}")
    a = as_tensor(a, "a", ndim=1, device=x1.device, dtype=x1.dtype)
    if a.shape[0] != w.shape[0]:
        raise ValueError(f"a must have one entry per row of w ({w.shape[0]}), got shape {tuple(a.shape)}")
    activation = _check_activation(activation)
    d1 = _derivative(activation, x1 @ w.T)  # (n1, m)
    d2 = d1 if x2 is None else _derivative(activation, xb @ w.T)
    return (x1 @ xb.T).mul_((d1 * (a * a)) @ d2.T).div_(w.shape[0])
