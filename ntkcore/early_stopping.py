"""Early stopping along a learning trajectory: the loss-minimizing time and how long before equilibrium it comes.

The NDK paper (Avidan et al., Sec. 4.2 and Fig. 3) measures, along the mean-predictor trajectory of Langevin
training, the time ``t*`` at which the test loss is smallest and compares it with the time ``t_eq`` at which the
trajectory has reached its long-time (NNGP) equilibrium; it plots ``Δt·T = (t_eq − t*)·T``. The paper does not
define ``t_eq`` precisely; this module makes it explicit with a tolerance (book chapter "The Neural Dynamical
Kernel and the two phases of learning", section on early stopping):

* ``t*``: the first time at which the loss attains its minimum over the recorded trajectory;
* the trajectory has an *early-stopping point* when that minimum is below the equilibrium loss by more than
  ``tol`` (the gain ``ℓ_eq − ℓ(t*) > tol``);
* ``t_eq``: the first recorded time after which the loss stays within ``tol`` of ``ℓ_eq`` for good;
* ``Δt = t_eq − t*`` when there is an early-stopping point, and 0 otherwise (the best loss is the equilibrium's).

Works on any trajectory (numpy arrays or tensors): the mean predictor of :func:`ntkcore.ndk.mean_predictor`, an
ensemble mean of :func:`ntkcore.langevin.simulate`, or a gradient-flow curve.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import as_numpy, check_real


class EarlyStopping(NamedTuple):
    """Result of :func:`early_stopping` (times in the units of ``times``; losses in the units of ``loss``).

    t_opt, loss_opt : time and value of the smallest loss (the first one, if several are equal).
    loss_eq : the equilibrium loss the trajectory is compared with.
    gain : ``loss_eq − loss_opt`` (≥ 0 up to the tolerance; the improvement early stopping buys).
    early : whether ``gain > tol`` (an early-stopping point before equilibrium exists).
    t_eq : first time after which ``|loss − loss_eq| ≤ tol`` at every later recorded time.
    delta_t : ``t_eq − t_opt`` if ``early`` (and ``t_eq > t_opt``), else 0.
    """

    t_opt: float
    loss_opt: float
    loss_eq: float
    gain: float
    early: bool
    t_eq: float
    delta_t: float


def _vector(a, name):
    return as_numpy(a, name)


def loss_curve(predictions, targets):
    """Mean squared error over test points at every time: ``ℓ(t) = mean_j (f_j(t) − y_j)²``.

    ``predictions`` ``(G, n_test)`` (e.g. ``MeanPredictor.test``), ``targets`` ``(n_test,)``; returns a float
    numpy array ``(G,)``. The loss of the mean predictor, as in the NDK paper's Fig. 3 (its generalization error).
    """
    f = _vector(predictions, "predictions")
    y = _vector(targets, "targets")
    if f.ndim != 2 or y.ndim != 1 or f.shape[1] != y.shape[0] or y.shape[0] == 0:
        raise ValueError(f"predictions must be (G, n_test) and targets (n_test,) with n_test >= 1, got "
                         f"{f.shape} and {y.shape}")
    # on the data divided by its largest magnitude: the squares neither overflow nor underflow on the way
    scale = max(float(np.max(np.abs(f), initial=0.0)), float(np.max(np.abs(y))), np.finfo(np.float64).tiny)
    with np.errstate(over="ignore"):
        loss = (((f - y[None, :]) / scale) ** 2).mean(axis=1) * scale * scale
    if not np.all(np.isfinite(loss)):
        raise ValueError(f"the loss of predictions against targets exceeds the float64 range (entries up to "
                         f"{scale:.3g}); rescale predictions and targets")
    return loss


def early_stopping(times, loss, *, tol, loss_eq=None) -> EarlyStopping:
    """Optimal stopping time of a loss trajectory and its distance ``Δt`` to equilibrium (module docstring).

    Parameters
    ----------
    times : ``(G,)`` strictly increasing times (G ≥ 2).
    loss : ``(G,)`` loss at those times (e.g. :func:`loss_curve`).
    tol : ``≥ 0``, absolute loss tolerance: gains up to ``tol`` do not count as early stopping, and the loss is at
        equilibrium once it stays within ``tol`` of ``loss_eq``. Choose it above the numerical (or statistical)
        error of ``loss``.
    loss_eq : the equilibrium loss (e.g. of the NNGP posterior mean, NDK paper Eq. 18); default ``loss[-1]``,
        which assumes the trajectory ends at equilibrium.

    Returns :class:`EarlyStopping`.
    """
    t = _vector(times, "times")
    ell = _vector(loss, "loss")
    if t.ndim != 1 or ell.shape != t.shape or t.size < 2:
        raise ValueError(f"times and loss must be 1-D of the same length >= 2, got {t.shape} and {ell.shape}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    tol = check_real(tol, "tol", low=0.0)
    eq = float(ell[-1]) if loss_eq is None else check_real(loss_eq, "loss_eq")
    i = int(np.argmin(ell))
    gain = eq - float(ell[i])
    early = gain > tol
    outside = np.nonzero(np.abs(ell - eq) > tol)[0]
    if outside.size == 0:
        t_eq = float(t[0])
    elif outside[-1] == t.size - 1:
        t_eq = float("inf")  # not at equilibrium by the end of the trajectory
    else:
        t_eq = float(t[outside[-1] + 1])
    delta = t_eq - float(t[i]) if early and t_eq > t[i] else 0.0
    return EarlyStopping(float(t[i]), float(ell[i]), eq, gain, bool(early), t_eq, float(delta))
