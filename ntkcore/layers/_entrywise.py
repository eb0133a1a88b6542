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

from ..activations import Activation, Variances


def _is_zero(value) -> bool:
    return not isinstance(value, torch.Tensor) and value == 0


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
        return self.fused or not (_is_zero(self.gw) and _is_zero(self.gb))


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
        want_ntk: bool = True, buffers=None, keep_moments: bool = False, pool=None):
    """Run the chain on the covariance ``k`` and tangent kernel ``theta`` of a block of pairs.

    ``theta`` None means zero (no trainable layer before). ``variances(k)`` returns ``(v1, v2)``, the
    :class:`~ntkcore.activations.Variances` of the two sides entering the next activation, broadcastable to ``k``;
    ``diag`` marks the entries whose two sides are the same input (see :mod:`ntkcore.activations`). Intermediates
    go into ``buffers`` (a list of preallocated tensors shaped like ``k``; ``theta`` may alias ``k``), or come from
    ``pool`` (a :class:`~ntkcore.layers._state.Pool`, which gets back every tensor the chain no longer needs; then
    ``k`` and ``theta`` are owned by the caller and distinct), or are allocated. ``k`` and ``theta`` may be
    overwritten. With ``keep_moments`` the last unit's ``(e, ė)`` are returned too.

    Returns ``(k, theta)`` or ``(k, theta, (e, ė))``.
    """
    moments = None
    for index, (act, a) in enumerate(units):
        last = index == len(units) - 1
        if act is None:
            k, theta = _affine(k, theta, a, want_ntk, pool)
            continue
        v1, v2 = variances(k)
        if pool is not None:
            free = [pool.take(k.shape, k) for _ in range(3)]
        else:
            free = None if buffers is None else [b for b in buffers if b is not k and b is not theta]
        if a.fused and not (keep_moments and last):
            k_new, d, scale = act.step(k, v1, v2, diag, a.wv, a.bv, free)
            if theta is not None:  # Θ′ = k′ + wv ė Θ, written over Θ
                if isinstance(d, torch.Tensor):
                    torch.addcmul(k_new, d, theta, value=a.wv * scale, out=theta)
                else:
                    theta.mul_(a.wv * scale * d).add_(k_new)
            elif want_ntk:  # the first trained layer: a tensor of its own (k_new may be one of the buffers)
                theta = _copy(k_new, pool)
        else:
            e, d, scale = act.step(k, v1, v2, diag, 1.0, 0.0, free)
            if theta is not None:  # Θ′ = wv ė Θ + gw e + gb
                if isinstance(d, torch.Tensor):
                    theta.mul_(d).mul_(a.wv * scale)
                else:
                    theta.mul_(a.wv * (scale * d))
            theta = _add_gradient_term(theta, e, a, want_ntk)
            if keep_moments and last:
                moments = (e, d * scale if isinstance(d, torch.Tensor) else torch.full_like(e, d * scale))
                k_new = a.wv * e + a.bv if not _is_zero(a.bv) else a.wv * e
            elif a is IDENTITY:  # an activation alone: k′ = e
                k_new = e
            else:
                k_new = e.mul_(a.wv) if _is_zero(a.bv) else e.mul_(a.wv).add_(a.bv)
        if pool is not None:  # back to the pool: the old covariance, ė, and the unused scratch tensors
            pool.give(k, *[b for b in free if b is not k_new and b is not theta])
        k = k_new
    return (k, theta, moments) if keep_moments else (k, theta)


def _copy(t: torch.Tensor, pool) -> torch.Tensor:
    return t.clone() if pool is None else pool.take(t.shape, t).copy_(t)


def _affine(k, theta, a: Affine, want_ntk: bool, pool):
    """A unit without activation: ``(wv·k + bv, wv·Θ + gw·k + gb)``. Without a pool into new tensors (``theta`` may
    alias ``k``), with one in place."""
    if pool is None:
        theta = _add_gradient_term(None if theta is None else a.wv * theta, k, a, want_ntk)
        return (a.wv * k + a.bv if not _is_zero(a.bv) else a.wv * k), theta
    if theta is not None:
        theta.mul_(a.wv)
    theta = _add_gradient_term(theta, k, a, want_ntk)
    k.mul_(a.wv)
    if not _is_zero(a.bv):
        k.add_(a.bv)
    return k, theta


def _add_gradient_term(theta, e, a: Affine, want_ntk: bool):
    """``theta + gw·e + gb`` (theta None means zero); None while no layer so far is trainable."""
    if not want_ntk:
        return None
    if a.fused:
        grad_w, grad_b = a.wv, a.bv
    else:
        grad_w, grad_b = a.gw, a.gb
    if _is_zero(grad_w) and _is_zero(grad_b):
        return theta
    term = grad_w * e
    if not _is_zero(grad_b):
        term = term + grad_b
    return term if theta is None else theta.add_(term)
