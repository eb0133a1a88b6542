"""How far the tangent kernel moves during training, and the loss landscape around the trained network.

Book Chapter 11 ("The NTK moves"), after Fort et al. (2020):

* :func:`kernel_distance` -- ``S(K₁, K₂) = 1 − ⟨K₁, K₂⟩_F / (‖K₁‖_F ‖K₂‖_F)``, one minus the cosine between two
  kernel matrices seen as vectors (Fort et al. 2020, Eq. 4). It ignores the kernel's scale: ``S(K, cK) = 0`` for
  ``c > 0``, and ``0 ≤ S ≤ 1`` for positive semi-definite matrices (their Frobenius inner product is ``≥ 0``).
* :func:`kernel_velocity` -- ``v = S(K_t, K_{t+dt}) / dt`` between consecutive kernels of a recorded sequence.
* :func:`interpolate` and :func:`barrier` -- the network on the straight line ``(1 − α) θ_a + α θ_b`` between two
  networks of the same architecture, and the largest excess of its loss and error over the straight line between
  the endpoint values: the *barrier* of linear mode connectivity (Frankle et al. 2020; Fort et al. 2020, Section 4).
* :func:`spawn` -- the parent–child experiment: copies of a network trained onward from the same state, each with its
  own minibatch order (and nothing else different).

The empirical kernel itself is :func:`ntkcore.empirical.ntk` (with ``trace_outputs=True`` for several logits), and
training in the tangent space of a later snapshot is :func:`ntkcore.models.linearize` applied to that snapshot.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ._checks import as_numpy, as_tensor, check_choice, check_real, trainable_parameters
from .train import LOSSES, _evaluating, _inputs, _outputs, _targets, accuracy, fit, per_example_loss

__all__ = ["kernel_distance", "kernel_velocity", "interpolate", "barrier", "Barrier", "spawn"]


def _unit_kernel(k, name: str) -> torch.Tensor:
    """``k`` in float64 on the CPU, divided by its Frobenius norm."""
    t = as_tensor(k, name).detach().to(dtype=torch.float64, device="cpu")
    if t.ndim < 2:
        raise ValueError(f"{name} must be a kernel matrix, at least 2-dimensional, got shape {tuple(t.shape)}")
    norm = torch.linalg.vector_norm(t)
    if not bool(norm > 0) or not bool(torch.isfinite(norm)):
        raise ValueError(f"{name} must have a finite, nonzero Frobenius norm, got {float(norm)}")
    return t / norm


def kernel_distance(k1, k2) -> float:
    """Kernel distance ``S(K₁, K₂) = 1 − ⟨K₁, K₂⟩_F / (‖K₁‖_F ‖K₂‖_F)`` (Fort et al. 2020, Eq. 4).

    Parameters
    ----------
    k1, k2 : kernel matrices of the same shape, ``(n, n)`` (or ``(n, n, O, O)``; any shape with at least two axes),
        as tensors on any device or numpy arrays. Computed in float64 on the CPU. Each needs a nonzero norm.

    Returns
    -------
    float in ``[0, 2]``; in ``[0, 1]`` for positive semi-definite matrices, 0 when one is a positive multiple of the
    other.
    """
    a, b = _unit_kernel(k1, "k1"), _unit_kernel(k2, "k2")
    if a.shape != b.shape:
        raise ValueError(f"k1 and k2 must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float(1.0 - (a * b).sum().clamp(-1.0, 1.0))


def kernel_velocity(kernels, times) -> np.ndarray:
    """Kernel velocity ``v_i = S(K_i, K_{i+1}) / (t_{i+1} − t_i)`` between consecutive recorded kernels.

    ``S`` is quadratic in a small change of the kernel, so ``v`` depends on the spacing: a velocity curve compares
    like with like only when the gaps ``t_{i+1} − t_i`` are equal (the book records pairs ``(t, t + dt)`` with a
    fixed ``dt``; Chapter 11).

    Parameters
    ----------
    kernels : ``(T, n, n)`` array or a sequence of T kernel matrices of one shape, ``T ≥ 2``.
    times : ``(T,)`` strictly increasing times (steps, epochs or ``lr · steps``).

    Returns
    -------
    ``(T − 1,)`` float64 array.
    """
    ks = [as_tensor(k, f"kernels[{i}]") for i, k in enumerate(kernels)]
    t = as_numpy(times, "times")
    if t.ndim != 1 or len(ks) != t.shape[0] or len(ks) < 2:
        raise ValueError(f"kernels and times must give T ≥ 2 kernels and T times, got {len(ks)} kernels and times "
                         f"of shape {t.shape}")
    gaps = np.diff(t)
    if not np.all(gaps > 0):
        raise ValueError(f"times must be strictly increasing, got {t.tolist()}")
    return np.array([kernel_distance(a, b) for a, b in zip(ks[:-1], ks[1:])]) / gaps


def _same_architecture(model_a: nn.Module, model_b: nn.Module) -> list[str]:
    if not isinstance(model_a, nn.Module) or not isinstance(model_b, nn.Module):
        raise ValueError(f"model_a and model_b must be torch.nn.Module, got {type(model_a).__name__} and "
                         f"{type(model_b).__name__}")
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if list(sa) != list(sb) or any(sa[k].shape != sb[k].shape for k in sa):
        raise ValueError("model_a and model_b must have the same architecture (the same state_dict names and shapes)")
    trainable_parameters(model_a)
    return [k for k, v in sa.items() if v.is_floating_point()]


def interpolate(model_a: nn.Module, model_b: nn.Module, alpha: float) -> nn.Module:
    """A copy of ``model_a`` whose floating parameters and buffers are ``(1 − α) θ_a + α θ_b``.

    ``alpha`` is any real number (``0`` gives ``model_a``, ``1`` gives ``model_b``, outside ``[0, 1]`` extrapolates).
    The two models must share their architecture; neither is changed.
    """
    names = _same_architecture(model_a, model_b)
    alpha = check_real(alpha, "alpha")
    sa, sb = model_a.state_dict(), model_b.state_dict()
    mixed = {k: (torch.lerp(sa[k], sb[k], alpha) if k in names else sa[k]) for k in sa}
    out = copy.deepcopy(model_a)
    out.load_state_dict(mixed)
    return out


class Barrier(NamedTuple):
    """The straight path between two networks (:func:`barrier`): the mixing weights ``alphas`` (A,), the mean loss
    and the error rate (fraction misclassified) of the mixed network at each, and the barriers: the largest excess
    ``max_α [L(α) − ((1 − α) L(0) + α L(1))]`` of each over the chord between the endpoints (≥ 0 when the alphas
    contain 0 and 1)."""

    alphas: np.ndarray
    loss: np.ndarray
    error: np.ndarray
    loss_barrier: float
    error_barrier: float


def _chord_excess(alphas: np.ndarray, values: np.ndarray) -> float:
    chord = (1.0 - alphas) * values[0] + alphas * values[-1]
    return float(np.max(values - chord))


def barrier(model_a: nn.Module, model_b: nn.Module, x, y, *, loss: str = "cross_entropy", alphas=None) -> Barrier:
    """Loss and error along the straight line between two networks, and their barriers (Frankle et al. 2020).

    Parameters
    ----------
    model_a, model_b : networks of the same architecture (see :func:`interpolate`).
    x : ``(n, ...)`` inputs; y : their targets in the format of :func:`ntkcore.train.fit` for ``loss``.
    loss : ``"cross_entropy"`` (integer classes) or ``"mse"`` (one-hot or ±1 targets, for the error).
    alphas : increasing mixing weights from 0 to 1 inclusive; default 21 equally spaced.

    Returns
    -------
    :class:`Barrier`; the error is 1 − :func:`ntkcore.train.accuracy`, the loss the mean of
    :func:`ntkcore.train.per_example_loss`.
    """
    loss = check_choice(loss, "loss", LOSSES)
    alphas = np.linspace(0.0, 1.0, 21) if alphas is None else as_numpy(alphas, "alphas")
    if alphas.ndim != 1 or alphas.size < 2 or alphas[0] != 0.0 or alphas[-1] != 1.0 or np.any(np.diff(alphas) <= 0):
        raise ValueError(f"alphas must increase strictly from 0 to 1 inclusive, got {alphas.tolist()}")
    _same_architecture(model_a, model_b)
    ref = next(iter(trainable_parameters(model_a).values()))
    x = _inputs(x, "x", ref)
    y = _targets(y, "y", loss, x.shape[0], ref)
    losses, errors = [], []
    for alpha in alphas:
        net = interpolate(model_a, model_b, float(alpha))
        with _evaluating(net):
            out = _outputs(net(x), y, loss, "y")
            losses.append(float(per_example_loss(out, y, loss).mean()))
            acc = accuracy(out, y, loss)
        if acc is None:
            raise ValueError("y must be classes (integer labels, one-hot or ±1 targets) to measure an error")
        errors.append(1.0 - acc)
    losses, errors = np.array(losses), np.array(errors)
    return Barrier(alphas, losses, errors, _chord_excess(alphas, losses), _chord_excess(alphas, errors))


def spawn(parent: nn.Module, x, y, *, seeds=(1, 2), **fit_kwargs) -> list[nn.Module]:
    """Children of ``parent``: copies trained onward with :func:`ntkcore.train.fit`, one per seed.

    The children start from the parent's parameters and differ only in ``seed``, which orders their minibatches
    (``batch_size`` in ``fit_kwargs``; full-batch training would make them identical). The parent is not changed.
    ``fit_kwargs`` are those of :func:`ntkcore.train.fit` (``loss``, ``lr``, ``steps``, ``batch_size``, ...).
    Fort et al. 2020, Section 4: children spawned before the chaotic transient end in different basins, separated by
    a loss barrier; children spawned after it stay linearly connected.
    """
    if "seed" in fit_kwargs:
        raise ValueError("give the children's seeds as seeds=(...), not seed=")
    seeds = list(seeds) if isinstance(seeds, (list, tuple)) else None
    if not seeds or len(set(map(repr, seeds))) != len(seeds):
        raise ValueError(f"seeds must be a list or tuple of distinct seeds (ints or generators), got {seeds!r}")
    if fit_kwargs.get("batch_size") is None:
        raise ValueError("spawn needs minibatches (batch_size=...): full-batch children would be identical")
    children = []
    for s in seeds:
        child = copy.deepcopy(parent)
        fit(child, x, y, seed=s, **fit_kwargs)
        children.append(child)
    return children
