"""The Neural Dynamical Kernel (NDK): two-time kernels, the mean-predictor solver and its NTK / NNGP limits.

Setting (NDK paper, Eqs. 1-4; book Chapter 6): a fully connected network with ``L`` hidden layers in the
paper's parameterization, ``f(x) = N^(-1/2) a·x^L``, ``x^l = φ(N_{l-1}^(-1/2) W^l x^{l-1})``, trained by Langevin
dynamics at temperature ``T`` on ``E = ½‖f_train − y‖² + (T/2σ²)‖θ‖²`` from ``θ(0) ~ N(0, σ0² I)``.
Write ``γ = T/σ²``. Every kernel here is the infinite-width limit.

Conventions of this module
--------------------------
* Inputs are rows: ``x1`` is ``(n1, N0)``, ``x2`` is ``(n2, N0)``; the input overlap is ``q⁰ = x·x′/N0``. The paper's
  kernels are built for inputs with ``q⁰(x, x) = O(1)``: scale inputs to norm ``√N0`` for ``q⁰(x, x) = 1``.
* There are no ``σw, σb``: the weight variance sits in ``m(t, t′)`` (:func:`m`), which is ``σ0²`` at ``t = t′ = 0``
  and ``σ²`` at equilibrium.
* Two-time kernels of time arrays ``t1`` (length G1) and ``t2`` (length G2) have shape ``(G1, G2, n1, n2)``; stationary
  kernels of lags ``tau`` (length G) have shape ``(G, n1, n2)``; one-time kernels are ``(n1, n2)``.
* ``K^L`` is the two-time NNGP kernel of the last hidden layer (without the readout variance), ``K̇^L`` the
  two-time kernel of ``φ′`` in the last hidden layer, ``K^{d,L}`` the NDK.
* Theory runs in float64 on the device of ``x1`` (or ``device=``); clamping comes before ``arccos``/``arcsin``.
* The kernels are differentiable with respect to the inputs and to ``sigma0_sq``, ``sigma_sq`` (given as 0-d
  tensors); :func:`mean_predictor` is not (its Volterra solver runs in numpy) and says so.
* Labels ``y`` are ``(P,)`` for one output or ``(P, M)`` for M outputs (one readout per output, NDK paper Eqs.
  14-15 for each): the kernels do not depend on the labels, so the predictors of M outputs are the column-wise
  predictors, computed from one set of kernel evaluations; their outputs carry a trailing axis M.

Drift (book Chapter 7, "Representational drift") builds on :func:`stationary_kernels`: ``k^L(τ)`` is its
``nngp`` field with the test inputs as ``x1`` and the training inputs as ``x2``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import _volterra, activations, predict
from ._checks import (as_tensor, check_bool, check_depth, check_int, check_real, check_variance, finite_result, inputs,
                      labels, times as check_times)
from .activations import needs_grad
from .layers._entrywise import Affine, Unit, marginal_variances, number, representable, run, same_inputs

ACTIVATIONS = activations.CLOSED_FORM_NAMES

#: Elements (time pairs × n1 × n2) per kernel batch in the solver: bounds memory, keeps batches vectorized.
_BATCH_ELEMENTS = 2_000_000
#: Most points of a time grid (:func:`time_grid`).
MAX_GRID_POINTS = 10**7


class TwoTimeKernels(NamedTuple):
    """The three kernels of one recursion (NDK paper Eqs. 11-13; book Chapter 6).

    nngp : ``K^L``, the NNGP kernel of the last hidden layer.
    nngp_dot : ``K̇^L``, the same kernel of ``φ′`` (the derivative kernel, paper Eq. 13).
    ndk : ``K^{d,L}``, the Neural Dynamical Kernel (paper Eq. 12).
    """

    nngp: torch.Tensor
    nngp_dot: torch.Tensor
    ndk: torch.Tensor


class MeanPredictor(NamedTuple):
    """Solution of the mean-predictor equations (paper Eqs. 14-15) returned by :func:`mean_predictor`.

    times : ``(G,)`` the time grid (the coarse grid; the solution comes from the grid refined twice).
    train : ``(G, P)`` ``E f_train(t)`` on the refined grid, at ``times``; ``(G, P, M)`` for labels ``(P, M)``.
    test : ``(G, n_test)`` ``E f(x, t)`` on the refined grid, at ``times``; ``(G, n_test, M)`` for labels ``(P, M)``.
    error : ``(G,)`` ``max |f_refined − f_coarse|`` over train and test inputs (and all M outputs) at each time: the
        error of the coarse solution, a conservative estimate of the error of ``train``/``test`` (which, for a
        second-order rule, is about four times smaller); plus the bound on the far field cut so far (at most a
        thousandth of the estimate observed before it; :func:`mean_predictor`, "Long horizons").
    error_estimate : ``max(error)``, a float.
    kernel_pairs : the number of time pairs ``(t, t′)`` at which the kernel matrices were evaluated (the cost).
    history : the largest number of refined-grid nodes whose residuals one step of the solver reads (its retained
        history): bounded in the horizon when the far field is cut, the whole grid when it is not.
    """

    times: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor
    error: torch.Tensor
    error_estimate: float
    kernel_pairs: int = 0
    history: int = 0


# ----------------------------------------------------------------------------------------------------------------
# argument checks


_HYPER_CHECKS = {
    "L": lambda v: check_depth(v, "L", low=1),
    "activation": lambda v: activations.get(v, closed_form=True),
    "sigma0_sq": lambda v: check_variance(v, "sigma0_sq", positive=True),
    "sigma_sq": lambda v: check_variance(v, "sigma_sq", positive=True),
    "T": lambda v: check_real(v, "T", low=0.0),
}


def check_hyper(**given) -> tuple:
    """Check every hyper-parameter passed (``L ≥ 1``, a closed-form ``activation``, ``sigma0_sq > 0``,
    ``sigma_sq > 0``, ``T ≥ 0``); None is not a value. Returns the checked values in the order given (Python
    numbers: an ``int`` or ``numpy`` scalar variance becomes a ``float``; ``activation`` is returned as passed).
    Shared by :mod:`ntkcore.drift`."""
    out = []
    for name, value in given.items():
        checked = _HYPER_CHECKS[name](value)
        out.append(value if name == "activation" else checked)
    return tuple(out)


def _labels(y, x_train):
    """Checked labels ``(P,)`` or ``(P, M)`` with ``M ≥ 1``, one row per training input, float64 on its device."""
    return labels(y, x_train.shape[0], like=x_train, ndim=(1, 2))


def _inputs(x1, x2, device, names=("x1", "x2")):
    """Checked non-empty float64 input matrices ``(n, N0)`` on one device (``device``, else ``x1``'s); ``x2=None``
    means ``x2 = x1``."""
    dev = device if device is not None else (x1.device if isinstance(x1, torch.Tensor) else None)
    x1, x2 = inputs(x1, x2, device=dev, dtype=torch.float64, nonempty=True, names=names,
                    feature="input dimension N0")
    return x1, x1 if x2 is None else x2


# ----------------------------------------------------------------------------------------------------------------
# the weight covariance and Gaussian moments


def m(t, t2, *, sigma0_sq, sigma_sq, T):
    """Prior weight covariance between two times, ``m(t, t′) = σ² e^{−γ|t−t′|} + (σ0² − σ²) e^{−γ(t+t′)}``.

    NDK paper Eq. 9; book Chapter 6 (``γ = T/σ²``; ``m(0, 0) = σ0²``, ``m → σ² e^{−γ|t−t′|}`` at long times).
    ``t`` and ``t2`` broadcast against each other (numbers, numpy arrays or tensors); returns a float64 tensor.
    """
    sigma0_sq, sigma_sq, T = check_hyper(sigma0_sq=sigma0_sq, sigma_sq=sigma_sq, T=T)
    t = as_tensor(t, "t", dtype=torch.float64)
    t2 = as_tensor(t2, "t2", device=t.device, dtype=torch.float64)
    return _m(t, t2, sigma0_sq, sigma_sq, T)


def _m(t, t2, sigma0_sq, sigma_sq, T):
    g = T / sigma_sq
    return sigma_sq * torch.exp(-g * (t - t2).abs()) + (sigma0_sq - sigma_sq) * torch.exp(-g * (t + t2))


def _recursion(q0, q01, q02, m11, m22, m12, e12, L, activation, diag=None):
    """Two-time recursion of paper Eqs. 11-13 on a batch of time pairs: the entrywise layer recursion of
    :mod:`ntkcore.layers._entrywise` for the network ``[Dense, φ] × L, Dense`` in the paper's parameterization.

    Every dense layer has weight covariance ``m(t,t′)`` between the two times (``m(t,t)``, ``m(t′,t′)`` on the
    variances of each side) and gradient term ``e^{−γ|t−t′|}`` (the variance sits in the weights, so the gradient
    of a layer is its input without a variance factor): ``K^{d,l} = m(t,t′) K̇^l K^{d,l−1} + e^{−γ|t−t′|} K^l`` is
    the tangent kernel after layer l + 1, and the NDK the one after the readout.

    q0 ``(n1, n2)`` input overlaps, q01 ``(n1,)``, q02 ``(n2,)`` their diagonals; m11, m22, m12, e12 ``(B,)`` the
    covariances ``m(t,t)``, ``m(t′,t′)``, ``m(t,t′)`` and ``e^{−γ|t−t′|}`` of B time pairs; ``diag`` marks the
    entries whose two sides are the same input at the same time (their angle is set to exactly 0): None, a view or
    a mask (:func:`_same_input_and_time`).
    Returns :class:`TwoTimeKernels` with tensors of shape ``(B, n1, n2)``.
    """
    act = activations.get(activation, closed_form=True)
    dense = Affine(m12[:, None, None], 0.0, e12[:, None, None], 0.0, wv1=m11[:, None], wv2=m22[:, None])
    units = [Unit(None, dense)] + [Unit(act, dense)] * L
    var1, _ = marginal_variances(q01, units, side=1)
    var2, _ = marginal_variances(q02, units, side=2)
    sides = iter([(v1.map(lambda t: t[:, :, None]), v2.map(lambda t: t[:, None, :])) for v1, v2 in zip(var1, var2)])
    _, ndk_, (nngp, nngp_dot) = run(q0, None, units, lambda _: next(sides), diag=diag, keep_moments=True)
    return TwoTimeKernels(*representable(
        (nngp, nngp_dot, ndk_), q0.dtype,
        lambda: f"the inputs' largest mean square x·x/N0 is {max(float(q01.max()), float(q02.max())):.3g}",
        ("the inputs (x1, x2, x_train, x_test)", "sigma0_sq or sigma_sq")))


def _same_input_and_time(x1, x2, equal_times: torch.Tensor, symmetric: bool):
    """``diag`` of :func:`_recursion`: the entries ``(b, i, j)`` that pair an input at a time with itself (``x_i``
    and ``x_j`` identical, the two times of pair ``b`` equal), whose angle is exactly 0. None where there are none.

    ``equal_times (B,)`` is a boolean tensor. In a symmetric call (``x2 = x1``) without repeated inputs whose time
    pairs ``b = 0, s, 2s, …`` are the equal ones (a square grid of ``s − 1`` times), a view of the diagonals;
    otherwise a boolean mask ``(B, n1, n2)``.
    """
    same = same_inputs(x1, None if symmetric else x2)
    return _same_at_equal_times(same, equal_times, symmetric, x1.shape[0])


def _same_at_equal_times(same, equal_times: torch.Tensor, symmetric: bool, n1: int):
    """:func:`_same_input_and_time` from the labels ``same`` of :func:`~ntkcore.layers._entrywise.same_inputs`
    (computed once by a caller that needs many batches of time pairs)."""
    if same is None and not symmetric:
        return None
    b = equal_times.shape[0]
    grid = math.isqrt(b)
    device = equal_times.device
    if same is None and grid * grid == b and torch.equal(equal_times, torch.eye(grid, dtype=torch.bool,
                                                                                 device=device).reshape(-1)):
        return lambda t: t[::grid + 1].diagonal(dim1=-2, dim2=-1)
    if same is None:
        same = (torch.arange(n1, device=device),) * 2
    pairs = same[0][:, None] == same[1][None, :]
    return equal_times[:, None, None] & pairs if equal_times.any() else None


def _overlaps(x1, x2):
    """``(x1·x2ᵀ/N0, |x1|²/N0, |x2|²/N0)``, from the inputs divided by ``√N0`` (no intermediate overflows where
    the overlaps themselves do not)."""
    scale = 1.0 / math.sqrt(x1.shape[1])
    s1 = x1 * scale
    s2 = s1 if x2 is x1 else x2 * scale
    q1, q2 = (s1 * s1).sum(1), (s2 * s2).sum(1)
    for s, q in ((s1, q1), (s2, q2)):
        if bool(((q < torch.finfo(q.dtype).tiny) & (s != 0).any(1)).any()):
            raise ValueError("the inputs (x1, x2, x_train, x_test) have a nonzero input whose mean square x·x/N0 "
                             f"underflows {q.dtype} (below {torch.finfo(q.dtype).tiny:.3g}): its angles to the other "
                             "inputs are lost. Rescale the inputs")
    return s1 @ s2.T, q1, q2


# ----------------------------------------------------------------------------------------------------------------
# public kernels


def two_time_kernels(x1, x2=None, t1=0.0, t2=None, *, L, activation, sigma0_sq, sigma_sq, T, device=None):
    """Two-time NNGP ``K^L(t,t′)``, derivative kernel ``K̇^L(t,t′)`` and NDK ``K^{d,L}(t,t′)``.

    NDK paper Eqs. 8-13 (book Chapter 6): recursion over ``l = 1..L`` with
    ``(u, v) ~ N(0, [[m(t,t) q^{l−1}(x,t;x,t), m(t,t′) q^{l−1}(x,t;x′,t′)], [·, m(t′,t′) q^{l−1}(x′,t′;x′,t′)]])``,
    ``K^l = E[φ(u)φ(v)]``, ``K̇^l = E[φ′(u)φ′(v)]``, ``K^{d,0} = e^{−γ|t−t′|} x·x′/N0``,
    ``K^{d,l} = m(t,t′) K̇^l K^{d,l−1} + e^{−γ|t−t′|} K^l``.

    Parameters: ``x1 (n1, N0)``, ``x2 (n2, N0)`` (None: ``x1``); ``t1 (G1,)``, ``t2 (G2,)`` times ≥ 0 (None: ``t1``);
    ``L ≥ 1`` hidden layers; ``activation`` in ``'relu', 'erf', 'identity'``; ``sigma0_sq`` the initial weight
    variance σ0², ``sigma_sq`` the prior (equilibrium) variance σ² (numbers > 0, or 0-d tensors: the kernels are
    differentiable with respect to them, as to the inputs), ``T ≥ 0`` the temperature.
    Returns :class:`TwoTimeKernels` of float64 tensors, each ``(G1, G2, n1, n2)``.
    """
    L, activation, sigma0_sq, sigma_sq, T = check_hyper(L=L, activation=activation, sigma0_sq=sigma0_sq,
                                                        sigma_sq=sigma_sq, T=T)
    symmetric = x2 is None and t2 is None
    x1, x2 = _inputs(x1, x2, device)
    t1 = check_times(t1, "t1", like=x1)
    t2 = t1 if t2 is None else check_times(t2, "t2", like=x1)
    ta, tb = (s.reshape(-1) for s in torch.meshgrid(t1, t2, indexing="ij"))
    diag = _same_input_and_time(x1, x2, ta == tb, symmetric)
    out = _pair_kernels(x1, x2, ta, tb, L, activation, sigma0_sq, sigma_sq, T, diag)
    shape = (t1.shape[0], t2.shape[0], x1.shape[0], x2.shape[0])
    return TwoTimeKernels(*(k.reshape(shape) for k in out))


def _pair_kernels(x1, x2, ta, tb, L, activation, sigma0_sq, sigma_sq, T, diag=None):
    """Kernels on paired times ``(ta[b], tb[b])``: :class:`TwoTimeKernels` of ``(B, n1, n2)`` tensors."""
    q0, q01, q02 = _overlaps(x1, x2)
    g = T / sigma_sq
    return _recursion(q0, q01, q02, _m(ta, ta, sigma0_sq, sigma_sq, T), _m(tb, tb, sigma0_sq, sigma_sq, T),
                      _m(ta, tb, sigma0_sq, sigma_sq, T), torch.exp(-g * (ta - tb).abs()), L, activation, diag)


def _one_time(x1, x2, variance, L, activation, device):
    symmetric = x2 is None
    x1, x2 = _inputs(x1, x2, device)
    q0, q01, q02 = _overlaps(x1, x2)
    v = variance * torch.ones(1, dtype=x1.dtype, device=x1.device)
    diag = _same_input_and_time(x1, x2, torch.ones(1, dtype=torch.bool, device=x1.device), symmetric)
    kernels = _recursion(q0, q01, q02, v, v, v, torch.ones_like(v), L, activation, diag)
    return TwoTimeKernels(*(k[0] for k in kernels))


def k_gp(x1, x2=None, *, L, activation, sigma_sq, device=None):
    """Equilibrium NNGP kernel ``K_GP = K^L`` with weights ``~ N(0, σ²)`` (``m ≡ σ²``), shape ``(n1, n2)``.

    NDK paper Eq. 17-18; book Chapter 6, section "The two limits" (``K_GP`` of the last hidden layer, without the
    readout variance: the output prior covariance is ``σ² K_GP``).
    """
    L, activation, sigma_sq = check_hyper(L=L, activation=activation, sigma_sq=sigma_sq)
    return _one_time(x1, x2, sigma_sq, L, activation, device).nngp


def ntk0(x1, x2=None, *, L, activation, sigma0_sq, device=None):
    """The NDK at ``t = t′ = 0``: the NTK of the paper's parameterization with weights ``~ N(0, σ0²)``, ``(n1, n2)``.

    NDK paper Eq. 10 (``m(0,0) = σ0²``, ``e^0 = 1``): ``Θ^l = σ0² K̇^l Θ^{l−1} + K^l``, ``Θ^0 = x·x′/N0``.
    All weights (the ``W^l`` and the readout ``a``) count as trainable.
    """
    L, activation, sigma0_sq = check_hyper(L=L, activation=activation, sigma0_sq=sigma0_sq)
    return _one_time(x1, x2, sigma0_sq, L, activation, device).ndk


def stationary_kernels(x1, x2=None, tau=0.0, *, L, activation, sigma_sq, T, device=None):
    """Equilibrium two-time kernels as functions of the lag ``τ = |t − t′|``, each ``(len(tau), n1, n2)``.

    NDK paper Eq. 9 (book Chapter 6) at ``t, t′ ≫ σ²/T``: ``m(t,t) = σ²``, ``m(t,t′) = σ² e^{−γτ}``. The ``nngp``
    field is the drift kernel ``k^L(τ)`` of book Chapter 7 ("Representational drift"; paper Eq. 19), with
    ``k^L(0) = K_GP``; the ``ndk`` field is ``K^{d,L}(τ)`` of paper Eq. 17.
    """
    L, activation, sigma_sq, T = check_hyper(L=L, activation=activation, sigma_sq=sigma_sq, T=T)
    symmetric = x2 is None
    x1, x2 = _inputs(x1, x2, device)
    tau = check_times(tau, "tau", like=x1)
    q0, q01, q02 = _overlaps(x1, x2)
    e = torch.exp(-(T / sigma_sq) * tau)
    s = sigma_sq * torch.ones_like(tau)
    diag = _same_input_and_time(x1, x2, tau == 0, symmetric)
    return _recursion(q0, q01, q02, s, s, sigma_sq * e, e, L, activation, diag)


def ndk_time_integral(x1, x2=None, *, L, activation, sigma_sq, T, n_nodes=64, device=None):
    """``∫₀^∞ K^{d,L}(τ) dτ`` of the stationary NDK, computed by quadrature; shape ``(n1, n2)``.

    NDK paper Eq. 17 states that this equals ``(σ²/T) K_GP`` (compare with :func:`k_gp`). Quadrature: with
    ``u = e^{−γτ} = 1 − s²`` the integral is ``∫₀¹ K^d(τ(s)) 2s / (γ (1 − s²)) ds``, whose integrand is smooth in ``s``
    (the ``√τ`` cusp of ReLU kernels at ``τ = 0`` becomes linear in ``s``; ``K^d/u`` stays bounded as ``u → 0``);
    Gauss-Legendre with ``n_nodes`` nodes. Requires ``T > 0``.
    """
    L, activation, sigma_sq, T = check_hyper(L=L, activation=activation, sigma_sq=sigma_sq, T=T)
    check_real(T, "T", low=0.0, low_open=True)
    n_nodes = check_int(n_nodes, "n_nodes", low=2)
    x1, x2 = _inputs(x1, x2, device)
    nodes, weights = _gauss_legendre(n_nodes, x1)
    s = 0.5 * (nodes + 1.0)
    g = T / sigma_sq
    u = 1.0 - s * s
    tau = -torch.log(u) / g
    kd = stationary_kernels(x1, x2, tau, L=L, activation=activation, sigma_sq=sigma_sq, T=T).ndk
    w = 0.5 * weights * 2.0 * s / (g * u)
    return torch.einsum("g,gij->ij", w, kd)


def _gauss_legendre(n, like):
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)
    return (torch.as_tensor(x, dtype=like.dtype, device=like.device),
            torch.as_tensor(w, dtype=like.dtype, device=like.device))


# ----------------------------------------------------------------------------------------------------------------
# limits


def ntk_limit(x_train, y, x_test, times, *, L, activation, sigma0_sq, device=None):
    """Low-``T`` (gradient-driven phase) mean predictor ``k_NTKᵀ K_NTK⁻¹ (I − e^{−K_NTK t}) y``, shape ``(G, n_test)``.

    NDK paper Eq. 16 (book Chapter 6, section "The two limits"), with ``K_NTK = K^d(0,0)`` from :func:`ntk0`; valid
    for ``t = O(1)`` and ``T → 0``. It is gradient flow on the NTK from ``f_0 = 0``
    (:func:`ntkcore.predict.gradient_flow`, which also treats a singular ``K_NTK``).
    ``x_train (P, N0)``, ``y (P,)`` or ``(P, M)`` (M outputs: returns ``(G, n_test, M)``), ``x_test (n_test, N0)``,
    ``times (G,)``.
    """
    x_train, x_test = _inputs(x_train, x_test, device, names=("x_train", "x_test"))
    y = _labels(y, x_train)
    times = check_times(times, "times", like=x_train)
    kk = ntk0(x_train, L=L, activation=activation, sigma0_sq=sigma0_sq)
    kt = ntk0(x_test, x_train, L=L, activation=activation, sigma0_sq=sigma0_sq)
    out = predict.gradient_flow(kk, y, times, k_test_train=kt).test  # (G, n_test[, M])
    return finite_result(out, "NTK-limit predictor", "y")


def nngp_limit(x_train, y, x_test, *, L, activation, sigma_sq, T, device=None):
    """Long-time (equilibrium) mean predictor ``k_GPᵀ (γ I + K_GP)⁻¹ y`` with ``γ = T/σ²``, shape ``(n_test,)``.

    NDK paper Eq. 18 (book Chapter 6, section "The two limits"): the NNGP posterior mean with noise variance ``T`` and
    prior ``σ² K_GP``. Cholesky; a matrix that is not positive definite raises a ValueError naming its smallest
    eigenvalue. ``x_train (P, N0)``, ``y (P,)`` or ``(P, M)`` (M outputs: returns ``(n_test, M)``),
    ``x_test (n_test, N0)``.
    """
    x_train, x_test = _inputs(x_train, x_test, device, names=("x_train", "x_test"))
    alpha = posterior_coefficients(x_train, y, L=L, activation=activation, sigma_sq=sigma_sq, T=T)
    return finite_result(k_gp(x_test, x_train, L=L, activation=activation, sigma_sq=sigma_sq) @ alpha,
                         "NNGP-limit predictor", "y")


def posterior_coefficients(x_train, y, *, L, activation, sigma_sq, T, device=None):
    """Coefficients ``α = (γ I + K_GP)⁻¹ y`` of the equilibrium (NNGP) mean predictor, shape ``(P,)``.

    NDK paper Eqs. 18-21 (book Chapters 6 and 7): every equilibrium-time predictor (:func:`nngp_limit`, the drift
    predictor of :mod:`ntkcore.drift`) is ``κ(x)ᵀ α`` for some kernel row ``κ``; ``γ = T/σ²``. Cholesky; a matrix
    that is not positive definite raises a ValueError naming its smallest eigenvalue. ``x_train (P, N0)``, ``y (P,)``
    or ``(P, M)`` (M outputs: ``α`` is ``(P, M)``, one Cholesky factorization for all of them).
    """
    x_train, _ = _inputs(x_train, None, device, names=("x_train", "x_test"))
    y = _labels(y, x_train)
    T, = check_hyper(T=T)
    kk = k_gp(x_train, L=L, activation=activation, sigma_sq=sigma_sq)
    a = finite_result(kk + (T / sigma_sq) * torch.eye(kk.shape[0], dtype=kk.dtype, device=kk.device),
                      "matrix γI + K_GP (γ = T/sigma_sq)", "T, sigma_sq or x_train")
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ValueError("gamma*I + K_GP is not positive definite (smallest eigenvalue "
                         f"{float(torch.linalg.eigvalsh(a).min()):.3e}); use T > 0 or distinct training inputs")
    alpha = torch.cholesky_solve(y.reshape(y.shape[0], -1), chol)
    alpha = finite_result(alpha, "posterior coefficients", "y, T or sigma_sq")
    return alpha[:, 0] if y.ndim == 1 else alpha


# ----------------------------------------------------------------------------------------------------------------
# the mean-predictor solver


def time_grid(t_max, *, h_first, h_max, growth=1.15):
    """Graded time grid for the mean-predictor equations: ``0, h_first, …`` with steps growing by ``growth`` up to
    ``h_max``, then uniform up to ``t_max`` (the last step is shortened to end exactly at ``t_max``).

    Two time scales (book Chapter 6, section "Time scales: temperature, initialization and regularization"): the
    gradient-driven phase needs steps ``≪ 1/λ_max(K_NTK)`` at ``t ≈ 0``; the diffusive phase only steps ``≪ σ²/T``.
    Returns a float64 tensor ``(G,)``; a grid of more than :data:`MAX_GRID_POINTS` points is a ValueError (it would
    take hours to solve on, and without a bound a tiny ``h_first`` with ``growth = 1`` never ends).
    """
    t_max = check_real(t_max, "t_max", low=0.0, low_open=True)
    h = check_real(h_first, "h_first", low=0.0, low_open=True)
    h_max = check_real(h_max, "h_max", low=h)
    growth = check_real(growth, "growth", low=1.0)
    points = _grid_points(t_max, h, h_max, growth)
    if points > MAX_GRID_POINTS:
        raise ValueError(f"t_max = {t_max:g} with steps from h_first = {h:g} to h_max = {h_max:g} needs about "
                         f"{points:.2g} grid points, more than {MAX_GRID_POINTS:.0e}: shorten t_max or lengthen "
                         "the steps (default_time_grid: a lower resolution)")
    times = [0.0]
    while times[-1] < t_max:
        times.append(min(times[-1] + h, t_max))
        h = min(h * growth, h_max)
    if len(times) > 2 and times[-1] - times[-2] < 0.25 * (times[-2] - times[-3]):
        del times[-2]  # no sliver step at the end
    return torch.tensor(times, dtype=torch.float64)


def _grid_points(t_max, h, h_max, growth):
    """About how many steps :func:`time_grid` takes (steps ``h·growth^k`` up to ``h_max``, then ``h_max``)."""
    if growth > 1.0:
        ramp = (h_max - h) / (growth - 1.0) + h_max  # the length covered until the steps reach h_max
        if ramp >= t_max:
            return math.log1p(t_max * (growth - 1.0) / h) / math.log(growth) + 1.0
        return math.log(h_max / h) / math.log(growth) + (t_max - ramp) / h_max + 2.0
    return t_max / h + 1.0


def default_time_grid(x_train, t_max, *, L, activation, sigma0_sq, sigma_sq, T, resolution=1.0, device=None):
    """:func:`time_grid` scaled to the problem: ``h_first = 0.1/λ_max(K_NTK)``, ``h_max = 0.1 σ²/T`` (capped at
    ``t_max/20``), ``growth = 1.15``, all steps divided by ``resolution`` (``growth − 1`` too).

    Book Chapter 6, "Time scales": the gradient-driven phase has the time scale ``1/λ_max(K_NTK)``. When
    ``K_NTK = 0`` (training inputs that are all zero: the closed-form activations vanish at 0, so every gradient
    does) there is no gradient-driven phase, the NDK is zero and the mean predictor is exactly 0; the grid is then
    uniform with steps ``h_max``.
    """
    L, activation, sigma0_sq, sigma_sq, T = check_hyper(L=L, activation=activation, sigma0_sq=sigma0_sq,
                                                        sigma_sq=sigma_sq, T=T)
    sigma0_sq, sigma_sq = number(sigma0_sq), number(sigma_sq)  # a grid of numbers (no gradient through it)
    t_max = check_real(t_max, "t_max", low=0.0, low_open=True)
    resolution = check_real(resolution, "resolution", low=0.0, low_open=True)
    lam = float(torch.linalg.eigvalsh(ntk0(x_train, L=L, activation=activation, sigma0_sq=sigma0_sq,
                                           device=device)).max())
    h_max = min(0.1 * sigma_sq / T if T > 0 else math.inf, t_max / 20) / resolution
    h_first = min(0.1 / lam / resolution, h_max) if lam > 0 else h_max
    if not h_first > 0:  # t_max/20 or 1/λ_max below the smallest float
        raise ValueError(f"the first time step min(0.1/λ_max(K_NTK), 0.1 sigma_sq/T, t_max/20)/resolution "
                         f"underflows to 0 (t_max={t_max!r}, sigma_sq={sigma_sq!r}, T={T!r}, sigma0_sq={sigma0_sq!r}, "
                         f"resolution={resolution!r}): the time scales are beyond float64")
    try:
        return time_grid(t_max, h_first=h_first, h_max=h_max, growth=1 + 0.15 / resolution)
    except ValueError as err:  # name the arguments the steps come from
        raise ValueError(f"{err}. Here h_first = min(0.1/λ_max(K_NTK), h_max) and h_max = min(0.1 sigma_sq/T, "
                         f"t_max/20)/resolution, with sigma0_sq={sigma0_sq!r}, sigma_sq={sigma_sq!r}, T={T!r}, "
                         f"resolution={resolution!r}") from None


def mean_predictor(x_train, y, x_test, t_max=None, *, L, activation, sigma0_sq, sigma_sq, T, times=None,
                   resolution=1.0, truncate=True, device=None):
    """Solve the mean-predictor equations (NDK paper Eqs. 14-15; book Chapter 6):

        E f_train(t) = ∫₀ᵗ K^d(t,t′) (y − E f_train(t′)) dt′          (P×P kernel on the training inputs)
        E f(x, t)    = ∫₀ᵗ k^d(t,t′)ᵀ (y − E f_train(t′)) dt′         (test rows against the training inputs)

    Method (:mod:`ntkcore._volterra`): product integration on a graded grid (:func:`default_time_grid`, or
    ``times``). The residual ``y − E f_train`` is piecewise linear on the grid and implicit at the current node
    (a P×P solve per node, stable in the stiff gradient-driven phase). The kernel, which changes only on the slow
    scale ``σ²/T`` apart from a ``√|t−t′|`` cusp at ``t′ = t``, is interpolated in ``t′`` on nodes of its own per
    row: a polynomial in ``√(t−t′)`` over the last two steps, then panels growing geometrically away from the
    diagonal (Chebyshev-Lobatto, degree 6, at most ``2σ²/T`` wide). A row costs the kernel at a few tens of time
    pairs instead of at every earlier node; the interpolation is accurate to about 1e-6 of the row's integral.
    The equations are solved on the grid and on the grid with every step halved, in one pass that evaluates the
    kernels once (the coarse nodes are every second refined node); the refined solution is returned at the coarse
    nodes, and their difference is the error estimate.

    Long horizons: the NDK is ``e^{−γ|t−t′|}`` times a positive semi-definite kernel (paper Eq. 7), so by
    Cauchy-Schwarz ``|K^d_ab(t,t′)| ≤ e^{−γ|t−t′|} √(K^d_aa(t,t) K^d_bb(t′,t′))``, and the part of ``∫₀ᵗ`` over the
    distant past has a bound that the solver carries along (it also uses the size of the residual's history). With
    ``truncate`` (the default) a row's integral is cut where that bound is below a thousandth of the error estimate
    observed so far; the bound is added to ``error``. The cut lag does not grow with t, so the cost grows linearly
    in the horizon and the solver's memory (kernel blocks, weights: ``history``) stays bounded (without it: cost
    ``∝ G²`` once ``t_max ≫ σ²/T``). At ``T = 0`` the kernel does not decay and the bound does not allow a cut.
    (:mod:`ntkcore._volterra`, "Far-field truncation".)

    M outputs (labels ``y (P, M)``, one readout per output) share the kernel and decouple: the solution is the
    column-wise one, and each kernel block and each P×P implicit solve serves all M columns at once, so the kernel
    evaluations (the cost, ``kernel_pairs``) do not grow with M.

    Parameters: ``x_train (P, N0)``, ``y (P,)`` or ``(P, M)``, ``x_test (n_test, N0)``; ``t_max`` the horizon (or
    give ``times``, an increasing grid starting at 0); hyper-parameters as in :func:`two_time_kernels`;
    ``resolution`` scales the density of the default grid; ``truncate`` (True or False) cuts the far field where
    it is provably negligible.
    Returns :class:`MeanPredictor` (``train (G, P)``, ``test (G, n_test)``, float64; ``(G, P, M)`` and
    ``(G, n_test, M)`` for ``y (P, M)``).
    """
    L, activation, sigma0_sq, sigma_sq, T = check_hyper(L=L, activation=activation, sigma0_sq=sigma0_sq,
                                                        sigma_sq=sigma_sq, T=T)
    truncate = check_bool(truncate, "truncate")
    x_train, x_test = _inputs(x_train, x_test, device, names=("x_train", "x_test"))
    y = _labels(y, x_train)
    if needs_grad(x_train, x_test, y, sigma0_sq, sigma_sq):
        raise ValueError("mean_predictor is not differentiable (its Volterra solver runs in numpy): pass x_train, "
                         "x_test, y, sigma0_sq and sigma_sq without gradients (.detach())")
    sigma0_sq, sigma_sq = number(sigma0_sq), number(sigma_sq)
    if times is None:
        if t_max is None:
            raise ValueError("give t_max (the horizon) or times (a grid starting at 0)")
        times = default_time_grid(x_train, t_max, L=L, activation=activation, sigma0_sq=sigma0_sq,
                                  sigma_sq=sigma_sq, T=T, resolution=resolution, device=x_train.device)
    times = check_times(times, "times", like=x_train, increasing=True, from_zero=True)
    if times.shape[0] < 2:
        raise ValueError("times must have at least 2 points")
    fine = torch.empty(2 * times.shape[0] - 1, dtype=times.dtype, device=times.device)
    fine[0::2] = times
    fine[1::2] = 0.5 * (times[1:] + times[:-1])
    if not bool((fine[1:] > fine[:-1]).all()):  # a step of a few ulps has no midpoint: the solve would give NaN
        short = float((times[1:] - times[:-1]).min())
        raise ValueError(f"times has a step too short to be halved ({short:.1e}); drop one of two nearly equal times")
    x_all = torch.cat([x_train, x_test])
    P = x_train.shape[0]
    same = same_inputs(x_all, x_train)  # once: every batch of time pairs marks the same input pairs

    def kernel(ta, tb):
        diag = _same_at_equal_times(same, ta == tb, False, x_all.shape[0])
        return _pair_kernels(x_all, x_train, ta, tb, L, activation, sigma0_sq, sigma_sq, T, diag).ndk

    def diagonal(ts):
        return _equal_time_diagonal(x_all, ts, L, activation, sigma0_sq, sigma_sq, T)

    sol = _volterra.solve(kernel, y, fine, x_all.shape[0], gamma=T / sigma_sq, batch_elements=_BATCH_ELEMENTS,
                          diagonal=diagonal if truncate else None)
    train_f, test_f, train_c, test_c = sol.fine[:, :P], sol.fine[:, P:], sol.coarse[:, :P], sol.coarse[:, P:]
    err = torch.maximum((train_f[0::2] - train_c).abs().flatten(1).amax(1),
                        (test_f[0::2] - test_c).abs().flatten(1).amax(1)) + sol.neglected
    finite_result(sol.fine, "mean predictor", "y")
    return MeanPredictor(times, train_f[0::2], test_f[0::2], err, float(err.max()), sol.pairs, sol.history)


def _diagonals(t):
    """``diag`` of :func:`_recursion` for a symmetric block at equal times: every ``(b, i, i)`` pairs an input at a
    time with itself."""
    return t.diagonal(dim1=-2, dim2=-1)


def _equal_time_diagonal(x, ts, L, activation, sigma0_sq, sigma_sq, T, chunk=64):
    """``K^d(x,t; x,t)`` of every input of ``x (n, N0)`` at every time ``ts (G,)``: ``(G, n)``, the factors of the
    bound (B) of :mod:`ntkcore._volterra`. At equal times ``m(t,t′) = m(t,t)`` and ``e^{−γ|t−t′|} = 1``; the
    symmetric kernel (the recursion of paper Eqs. 11-13, exact on its diagonal) is computed on square blocks of at
    most ``chunk`` inputs (cost ``G·n·chunk``, not ``G·n²``), a few times at a time (``_BATCH_ELEMENTS``), and its
    diagonal kept."""
    out = []
    for xc in x.split(chunk):
        q0, q, _ = _overlaps(xc, xc)
        parts = []
        for tt in ts.split(max(1, _BATCH_ELEMENTS // xc.shape[0] ** 2)):
            mt = _m(tt, tt, sigma0_sq, sigma_sq, T)
            kd = _recursion(q0, q, q, mt, mt, mt, torch.ones_like(mt), L, activation, _diagonals).ndk
            parts.append(kd.diagonal(dim1=1, dim2=2))
        out.append(torch.cat(parts))
    return torch.cat(out, 1)
