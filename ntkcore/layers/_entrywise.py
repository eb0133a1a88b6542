"""The entrywise layer recursion: dense layers and activations, one covariance entry at a time.

A dense layer and an activation change every entry of a kernel independently of the others, given the variances of
the two inputs of the entry. This module holds the one implementation of that recursion (book appendix "Closed-form
kernels and conventions", sections "Dense layers" and "Activations"). Everything that needs it calls it: the
composable layers (:mod:`ntkcore.layers`, where runs of consecutive entrywise layers are fused into one call), the
tiled fully connected fast path, and the two-time kernels of :mod:`ntkcore.ndk`.

A chain is a list of :class:`Unit` s, each an optional activation followed by an :class:`Affine` map. With ``k`` the
covariance of the pre-activations of a pair of inputs and ``Θ`` their tangent kernel, a unit computes::

    e = E[φ(u)φ(v)],   ė = E[φ′(u)φ′(v)]          (u, v) ~ N(0, [[v1, k], [k, v2]])     (no activation: e = k, ė = 1)
    k′ = wv · e + bv
    Θ′ = wv · ė · Θ + gw · e + gb

In the NTK parameterization a trainable dense layer has ``gw = wv`` and ``gb = bv`` (so ``Θ′ = wv ė Θ + k′``, the
NTK recursion of Jacot et al. 2018), a frozen one ``gw = gb = 0``, and an activation alone is the unit with
``wv = 1`` and nothing else. The two-time kernels of Part II put the weight covariance ``m(t, t′)`` in ``wv`` and the
propagator ``e^{−γ|t−t′|}`` in ``gw`` (:mod:`ntkcore.ndk`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from .._checks import all_finite
from ..activations import Activation, Ops, Variances, is_zero, needs_grad

CHUNK_ENTRIES = 2**15  # entries of the chunks of rows that squared_norms and same_inputs go through (cache-sized)


def number(value) -> float:
    """A variance (a number, or a 0-d tensor that autograd may follow) as a Python float, for the operations that
    take numbers only and for the finite networks."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


class Affine(NamedTuple):
    """``k′ = wv·k + bv``, ``Θ′ = wv·Θ + gw·k + gb`` (numbers, or tensors that broadcast against the kernel).

    ``wv1``, ``wv2`` replace ``wv`` on the variances of side 1 and side 2 when they differ from the cross
    covariance's factor (two-time kernels); None means ``wv``. ``fused`` says that the gradient term is the new
    covariance itself (``gw = wv``, ``gb = bv``): the recursion then saves one pass.
    """

    wv: float | torch.Tensor
    bv: float | torch.Tensor = 0.0
    gw: float | torch.Tensor = 0.0
    gb: float | torch.Tensor = 0.0
    wv1: float | torch.Tensor | None = None
    wv2: float | torch.Tensor | None = None
    fused: bool = False

    @classmethod
    def dense(cls, weight_var: float, bias_var: float, trainable: bool = True) -> "Affine":
        """A dense layer in the NTK parameterization (frozen: its own gradient term dropped)."""
        if trainable:
            return cls(weight_var, bias_var, weight_var, bias_var, fused=True)
        return cls(weight_var, bias_var)

    def side(self, index: int):
        """The factor on the variances of side ``index`` (1 or 2)."""
        w = self.wv1 if index == 1 else self.wv2
        return self.wv if w is None else w

    @property
    def trains(self) -> bool:
        return self.fused or not (is_zero(self.gw) and is_zero(self.gb))


IDENTITY = Affine(1.0)
"""The affine map of an activation that no dense layer follows."""


class Unit(NamedTuple):
    """An optional activation followed by an affine map (a fused activation + dense layer)."""

    activation: Activation | None
    affine: Affine


def fuse(units: list[Unit]) -> list[Unit]:
    """Merge every activation unit with identity affine map into the dense unit right after it."""
    out: list[Unit] = []
    for unit in units:
        if out and unit.activation is None and out[-1].activation is not None and out[-1].affine is IDENTITY:
            out[-1] = Unit(out[-1].activation, unit.affine)
        else:
            out.append(unit)
    return out


def marginal_variances(q: torch.Tensor, units: list[Unit], side: int = 1):
    """Variances entering each activation of the chain for one input, from its variance ``q`` before the first unit.

    Returns ``(variances, q_out)``: a list of :class:`~ntkcore.activations.Variances`, one per activation unit, and
    the variance after the last unit. ``side`` picks the affine maps' factor for that side (:meth:`Affine.side`).
    """
    out = []
    for act, a in units:
        wv = a.side(side)
        if act is None:
            q = wv * q + a.bv
            continue
        var = Variances.of(q)
        out.append(var)
        q = act.step(q, var, var, _ALL, wv, a.bv)[0]
    return out, q


def _ALL(t: torch.Tensor) -> torch.Tensor:  # every entry is a variance (the marginal recursion)
    return t


def run(k: torch.Tensor, theta: torch.Tensor | None, units: list[Unit], variances: Callable, *, diag=None,
        want_ntk: bool = True, buffers=None, keep_moments: bool = False, pool=None, near=None):
    """Run the chain on the covariance ``k`` and tangent kernel ``theta`` of a block of pairs.

    ``theta`` None means zero (no trainable layer before). ``variances(k)`` returns ``(v1, v2)``, the
    :class:`~ntkcore.activations.Variances` of the two sides entering the next activation, broadcastable to ``k``;
    ``diag`` marks the entries whose two sides are the same input, and ``near`` (for the first unit only, when it
    has an activation) gives the entries whose ``1 − c²`` is known better from the inputs (see
    :mod:`ntkcore.activations`). Intermediates
    go into ``buffers`` (a list of preallocated tensors shaped like ``k``; ``theta`` may alias ``k``), or come from
    ``pool`` (a :class:`~ntkcore.layers._state.Pool`, which gets back every tensor the chain no longer needs; then
    ``k`` and ``theta`` are owned by the caller and distinct), or are allocated. ``k`` and ``theta`` may be
    overwritten, except when autograd follows them (inputs or variances that require gradients): then every
    operation allocates its result, so that the kernels can be differentiated. With ``keep_moments`` the last unit's
    ``(e, ė)`` are returned too.

    Returns ``(k, theta)`` or ``(k, theta, (e, ė))``.
    """
    moments = None
    for index, (act, a) in enumerate(units):
        last = index == len(units) - 1
        if act is None:
            grad = needs_grad(k, theta, a.wv, a.bv, a.gw, a.gb)
            k, theta = _affine(k, theta, a, want_ntk, None if grad else pool)
            continue
        v1, v2 = variances(k)
        grad = needs_grad(k, theta, v1, v2, a.wv, a.bv, a.gw, a.gb)
        unit_pool = None if grad else pool
        if grad:
            free = None
        elif pool is not None:
            free = [pool.take(k.shape, k) for _ in range(3)]
        else:
            free = None if buffers is None else [b for b in buffers if b is not k and b is not theta]
        o = Ops(None if grad else ())
        unit_near = near if index == 0 else None
        if a.fused and not (keep_moments and last):
            k_new, d, scale = act.step(k, v1, v2, diag, a.wv, a.bv, free, unit_near)
            if theta is not None:  # Θ′ = k′ + wv ė Θ, written over Θ
                if isinstance(a.wv, torch.Tensor):  # a variance tensor (value= takes numbers only)
                    theta = k_new + theta * d * (a.wv * scale)
                elif isinstance(d, torch.Tensor):
                    theta = o(torch.addcmul, k_new, d, theta, value=a.wv * scale, into=theta)
                else:
                    theta = o(torch.add, o(torch.mul, theta, a.wv * scale * d, into=theta), k_new, into=theta)
            elif want_ntk:  # the first trained layer: a tensor of its own (k_new may be one of the buffers)
                theta = _copy(k_new, unit_pool)
        else:
            e, d, scale = act.step(k, v1, v2, diag, 1.0, 0.0, free, unit_near)
            if theta is not None:  # Θ′ = wv ė Θ + gw e + gb
                factor = a.wv * scale * (1.0 if isinstance(d, torch.Tensor) else d)
                if isinstance(d, torch.Tensor):
                    theta = o(torch.mul, theta, d, into=theta)
                theta = o(torch.mul, theta, factor, into=theta)
            theta = _add_gradient_term(theta, e, a, want_ntk, o)
            if keep_moments and last:
                moments = (e, d * scale if isinstance(d, torch.Tensor) else torch.full_like(e, d * scale))
                k_new = a.wv * e + a.bv if not is_zero(a.bv) else a.wv * e
            elif a is IDENTITY:  # an activation alone: k′ = e
                k_new = e
            else:
                k_new = o(torch.mul, e, a.wv, into=e)
                k_new = k_new if is_zero(a.bv) else o(torch.add, k_new, a.bv, into=k_new)
        if unit_pool is not None:  # back to the pool: the old covariance, ė, and the unused scratch tensors
            unit_pool.give(k, *[b for b in free if b is not k_new and b is not theta])
        k = k_new
    return (k, theta, moments) if keep_moments else (k, theta)


def tracked(units: list[Unit]) -> bool:
    """Whether autograd follows a variance of one of the units (a layer's variance given as a tensor that requires
    gradients): the recursion then runs out of place from its first unit on."""
    return any(needs_grad(*(a.wv, a.bv, a.gw, a.gb, a.wv1, a.wv2)) for _, a in units)


def _copy(t: torch.Tensor, pool) -> torch.Tensor:
    return t.clone() if pool is None else pool.take(t.shape, t).copy_(t)


def _affine(k, theta, a: Affine, want_ntk: bool, pool):
    """A unit without activation: ``(wv·k + bv, wv·Θ + gw·k + gb)``. Without a pool into new tensors (``theta`` may
    alias ``k``, or autograd may follow them), with one in place."""
    o = Ops(None if pool is None else ())
    if pool is None:
        theta = _add_gradient_term(None if theta is None else a.wv * theta, k, a, want_ntk, o)
        return (a.wv * k + a.bv if not is_zero(a.bv) else a.wv * k), theta
    if theta is not None:
        theta.mul_(a.wv)
    theta = _add_gradient_term(theta, k, a, want_ntk, o)
    k.mul_(a.wv)
    if not is_zero(a.bv):
        k.add_(a.bv)
    return k, theta


def _add_gradient_term(theta, e, a: Affine, want_ntk: bool, o):
    """``theta + gw·e + gb`` (theta None means zero; in place when ``o`` runs in place); None while no layer so
    far is trainable."""
    if not want_ntk:
        return None
    if a.fused:
        grad_w, grad_b = a.wv, a.bv
    else:
        grad_w, grad_b = a.gw, a.gb
    if is_zero(grad_w) and is_zero(grad_b):
        return theta
    term = grad_w * e
    if not is_zero(grad_b):
        term = term + grad_b
    return term if theta is None else o(torch.add, theta, term, into=theta)


def input_sine_squared(xa: torch.Tensor, xb: torch.Tensor, qa: torch.Tensor, qb: torch.Tensor, wv, bv):
    """``1 − c²`` for the covariance ``k = wv xa·xb + bv`` of pairs of inputs ``xa``, ``xb`` (``(m, d)`` each, pair
    by pair, already divided by ``√d``) with variances ``qa = wv |xa|² + bv``, ``qb`` (``(m,)``), accurate where
    ``c`` is near ±1 (:class:`~ntkcore.activations.Near`).

    The determinant of the pair's covariance is a sum of non-negative terms,
    ``qa qb − k² = wv² |xa|² |xb|² sin²θ + wv bv |xa − xb|²`` (θ the angle between the inputs), and
    ``sin²θ = w (1 − w/4)`` with ``w = |ua − ub|²`` for the unit vectors ``ua``, ``ub`` (``ub`` turned to the side of
    ``ua``): differences of nearly equal vectors, with no cancellation left. Each pair costs ``O(d)``.
    """
    na, nb = xa.norm(dim=1, keepdim=True), xb.norm(dim=1, keepdim=True)
    side = torch.where((xa * xb).sum(1, keepdim=True) < 0, -1.0, 1.0).to(xa.dtype)
    ua = torch.where(na > 0, xa / na.clamp(min=torch.finfo(xa.dtype).tiny), 0.0)
    ub = torch.where(nb > 0, side * xb / nb.clamp(min=torch.finfo(xb.dtype).tiny), 0.0)
    w = ((ua - ub) ** 2).sum(1)
    sin_sq = (w * (1 - w / 4)).clamp(min=0.0)
    ra, rb = wv * (na[:, 0] ** 2) / qa, wv * (nb[:, 0] ** 2) / qb
    out = ra * rb * sin_sq
    if not is_zero(bv):
        out = out + (wv * ((xa - xb) ** 2).sum(1) / qa) * (bv / qb)
    return out


def same_inputs(x1: torch.Tensor, x2: torch.Tensor | None = None):
    """Labels of the examples (rows of ``x1`` and ``x2``, any trailing shape) that are equal as labels exactly when
    the examples are identical, or None when no entry of the kernel pairs two identical examples.

    Such an entry is the kernel of an input with itself, but the covariance the recursion starts from comes out of
    a matrix product, and arccos amplifies its rounding: a correlation of 1 − ε is an angle of √(2ε) (the NTK of a
    ReLU network then loses 8 digits, and the error grows with depth). The tiled kernels set the angle of these
    entries to exactly 0, as on the diagonal of a symmetric call.

    Returns None, or ``(labels1, labels2)``: int64 tensors ``(n1,)`` and ``(n2,)`` (``labels2 is labels1`` when
    ``x2`` is None). Cost: one pass of integer arithmetic over the inputs (an exact hash of each row's bits), and an
    exact comparison of the rows whose hashes collide.
    """
    n1 = x1.shape[0]
    parts = [x.detach().reshape(x.shape[0], -1) for x in (x1, x2) if x is not None]
    n = sum(p.shape[0] for p in parts)
    if n < 2 or parts[0].shape[1] == 0:
        return None
    _, key_ids, counts = torch.unique(torch.cat([_row_hashes(p) for p in parts]), return_inverse=True,
                                      return_counts=True)
    candidates = counts[key_ids] > 1
    if not candidates.any():
        return None
    labels = torch.arange(n, device=x1.device)
    _, exact = torch.unique(torch.cat(parts)[candidates], dim=0, return_inverse=True)
    labels[candidates] = n + exact
    if x2 is None:
        return (labels, labels) if torch.unique(labels).numel() < n1 else None
    labels1, labels2 = labels[:n1], labels[n1:]
    return (labels1, labels2) if torch.isin(labels2, labels1).any() else None


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """``Σ_j x_ij²`` for each row of ``x (n, d)``, ``(n,)``: rows go in cache-sized chunks through one buffer (no
    ``(n, d)`` temporary); an input that autograd follows takes the plain, differentiable expression."""
    if needs_grad(x):
        return (x * x).sum(dim=1)
    n, step = x.shape[0], max(1, CHUNK_ENTRIES // max(x.shape[1], 1))
    buffer, out = x.new_empty((min(step, n), x.shape[1])), x.new_empty(n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        torch.sum(torch.mul(x[start:stop], x[start:stop], out=buffer[: stop - start]), 1, out=out[start:stop])
    return out


def _row_hashes(flat: torch.Tensor) -> torch.Tensor:
    """An exact hash of each row's bits (``−0`` counted as ``+0``): equal rows get equal hashes. Integer arithmetic
    wraps around, so it is exact and independent of the order of the sum; rows go in cache-sized chunks, through two
    buffers allocated once (a fresh allocation per chunk is a fresh mapping of memory where the allocator returns
    freed memory to the system at once, as Dask's workers have it)."""
    gen = torch.Generator(device="cpu").manual_seed(0x5EED)
    weights = torch.randint(-2**62, 2**62, (flat.shape[1],), generator=gen, dtype=torch.int64).to(flat.device) | 1
    n, step = flat.shape[0], max(1, CHUNK_ENTRIES // flat.shape[1])
    wide = flat.dtype == torch.float64
    rows_buffer = flat.new_empty((min(step, n), flat.shape[1]), dtype=torch.float64 if wide else torch.float32)
    bits_buffer = rows_buffer.view(torch.int64) if wide else torch.empty_like(rows_buffer, dtype=torch.int64)
    keys = torch.empty(n, dtype=torch.int64, device=flat.device)
    for start in range(0, n, step):
        stop = min(start + step, n)
        rows = torch.add(flat[start:stop], 0.0, out=rows_buffer[: stop - start])
        bits = bits_buffer[: stop - start]
        if not wide:
            bits.copy_(rows.view(torch.int32))
        torch.sum(bits.mul_(weights), 1, out=keys[start:stop])
    return keys


def representable(kernels, dtype: torch.dtype, inputs: Callable[[], str],
                  arguments: tuple[str, str] = ("x1 (and x2)", "weight_var or bias_var")):
    """``kernels`` (tensors or None), after checking that every entry is finite; else a ValueError.

    Finite inputs give a non-finite kernel only where its values, or the variances they are computed from, exceed
    the largest float of the dtype (the variances grow with the squared norm of the inputs and with ``weight_var``
    at each layer); inf·0 then spreads NaN. Below that, the kernels are computed over the whole floating-point
    range (values below the smallest normal float lose relative precision, as any float that small does).
    ``inputs()`` describes the size of the inputs, and ``arguments`` names the inputs and the weight variance, for
    the message.
    """
    if all(k is None or all_finite(k) for k in kernels):
        return kernels
    raise ValueError(f"the kernel is not representable in {dtype}: its entries, or the variances they are "
                     f"computed from, exceed the largest {dtype} ({torch.finfo(dtype).max:.3g}); {inputs()}. "
                     f"Rescale {arguments[0]} (the variances grow as their squared norm) or lower {arguments[1]} "
                     f"(the variances grow with them at each layer)")
