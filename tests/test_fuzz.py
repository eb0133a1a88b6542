"""Property-based tests (hypothesis) of every public function of ntkcore over hostile input.

Every call has exactly one of two outcomes:

* a ValueError whose message names the argument at fault (as a word), or
* a finite result that passes the call's invariant: symmetry and positive semi-definiteness of kernels, the
  cross-kernel equal to the block of the joint kernel, homogeneity under a change of scale (ReLU kernels without
  bias scale as ``c²``, kernel regression is invariant under ``K → cK``, ...), and agreement with the arccos closed
  form for the Gaussian expectations of ReLU.

Anything else fails: another exception type (TypeError, RuntimeError, IndexError, KeyError, ZeroDivisionError,
OverflowError, torch errors), a warning, a call that runs longer than :data:`LIMIT_S` seconds, or NaN/inf returned
without an error.

The tests are organised by class of input, each a hypothesis strategy applied to the table :data:`SITES` of public
call sites (valid arguments, small arrays):

* :func:`test_bad_arrays` -- one array argument replaced by a bad one: NaN, inf, empty, a wrong number of axes or
  features, complex, strings, None, object arrays (all must be rejected), int/bool arrays, lists, float32 tensors,
  tensors that require grad, huge entries (accepted or rejected);
* :func:`test_magnitudes` -- the scale arguments multiplied by ``10^e``, ``-300 ≤ e ≤ 300``;
* :func:`test_hyper_parameters` -- one hyper-parameter replaced by an extreme or bad value (0, ±1e±300, NaN, inf,
  huge integers such as 10**7 layers, bools, strings, None, numpy scalars, 0-d arrays);
The closed forms against a 60-digit mpmath reference are in ``test_numerics.py``, and the policy for mixed inputs
of :mod:`ntkcore._checks` case by case in ``test_checks.py``.

Runs are deterministic (``derandomize=True``). A case that still fails is marked ``xfail(strict=True)`` in the
``*_XFAILS`` tables with its reason (none today); ``FUZZ_ALL=1`` in the environment drops those marks to show every
failure at once.
"""
from __future__ import annotations

import math
import os
import re
import signal
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from ntkcore import bounds, data, device, drift, early_stopping as es, empirical, finite_depth, kernels, langevin, \
    layers, models, ndk, predict, stats, train
from ntkcore.activations import gaussian_expectations

F64, F32 = torch.float64, torch.float32
EPS = float(np.finfo(np.float64).eps)
TINY = float(np.finfo(np.float64).tiny)
"""The smallest normal float64 (2.2e-308): below it (subnormal numbers) the relative precision degrades, a loss
inherent to float64 (book appendix on numerics), so homogeneity is not checked there."""
LIMIT_S = 60
"""A call that runs longer than this is a hang. Calls take milliseconds; the stiffest mean-predictor solve drawn
(``sigma0_sq = 1e30``: time scales from 1e-31 to 2) takes about a second, ten on a loaded machine."""
REJECTED = object()


def _settings(n):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
                    phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------------------------------------------
# The rule: a ValueError naming the argument, or a finite result


@contextmanager
def _time_limit(seconds):
    def hang(*_):
        raise AssertionError(f"no result within {seconds} s (a hang)")
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _names(message, names):
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names)


def outcome(call, names, finite=lambda out: out, diverges=False):
    """Run ``call()`` with warnings as errors: REJECTED for a ValueError that names one of ``names``, else the
    result, whose part ``finite(result)`` must be finite. Any other exception propagates (and fails the test),
    except, where ``diverges``, the FloatingPointError that :func:`ntkcore.train.fit` and
    :func:`ntkcore.langevin.simulate` document for a run that diverges (it must name the argument too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with _time_limit(LIMIT_S):
            try:
                out = call()
            except (ValueError, FloatingPointError) as err:
                if isinstance(err, FloatingPointError) and not diverges:
                    raise
                assert _names(str(err), names), f"the {type(err).__name__} names none of {sorted(names)}: {err}"
                return REJECTED
    assert_finite(finite(out))
    return out


def assert_finite(out, where="result"):
    if isinstance(out, torch.nn.Module):
        for name, p in out.named_parameters():
            assert_finite(p.detach(), f"{where}.{name}")
    elif isinstance(out, torch.Tensor):
        assert bool(torch.isfinite(out).all()), f"{where} is not finite: {out}"
    elif isinstance(out, np.ndarray):
        if out.dtype.kind in "fc":
            assert np.all(np.isfinite(out)), f"{where} is not finite: {out}"
    elif isinstance(out, float):
        assert math.isfinite(out), f"{where} = {out}"
    elif isinstance(out, tuple) and hasattr(out, "_fields"):
        for name, v in zip(out._fields, out):
            assert_finite(v, f"{where}.{name}")
    elif is_dataclass(out):
        for f in fields(out):
            assert_finite(getattr(out, f.name), f"{where}.{f.name}")
    elif isinstance(out, (tuple, list)):
        for i, v in enumerate(out):
            assert_finite(v, f"{where}[{i}]")
    elif isinstance(out, dict):
        for k, v in out.items():
            assert_finite(v, f"{where}[{k!r}]")


# ---------------------------------------------------------------------------------------------------------------
# Invariants of a finite result


def _t(a):
    """An argument as a float64 tensor (for the invariants; the call itself got the raw argument)."""
    if isinstance(a, torch.Tensor):
        return a.detach().to(F64)
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _amax(t):
    return float(t.abs().max()) if t.numel() else 0.0


def _tol(k):
    return 1e3 * torch.finfo(k.dtype).eps


def assert_kernel(k, tol=None):
    """Symmetric and positive semidefinite up to rounding (relative to the largest eigenvalue)."""
    k = k.detach()
    tol = _tol(k) if tol is None else tol
    scale = k.abs().max()
    assert bool(((k - k.T).abs() <= tol * scale).all()), "kernel matrix is not symmetric"
    if k.shape[0] and float(scale) > 0:
        kk = (k / scale).to(F64)
        eig = torch.linalg.eigvalsh((kk + kk.T) / 2)
        assert float(eig[0]) >= -k.shape[0] * tol * float(eig[-1].clamp_min(1)), f"not PSD: eigenvalues {eig}"


def assert_block(k12, joint, n1, tol=None):
    """The cross kernel ``k(x1, x2)`` is the off-diagonal block of the kernel of ``[x1; x2]``."""
    tol = _tol(k12) if tol is None else tol
    k12, block = k12.detach().to(F64), joint.detach().to(F64)[:n1, n1:]
    scale = max(_amax(joint.detach()), 1e-300)
    assert _amax(k12 - block) <= tol * scale, "k(x1, x2) is not the block of k([x1; x2])"


def kernel_check(fn, *fields_):
    """Invariant of a kernel call ``fn(x1, x2, **rest)`` (fields ``fields_`` of its result, or the result)."""
    def parts(out):
        return [getattr(out, f) for f in fields_] if fields_ else [out]

    def check(out, kw):
        if kw.get("x2") is None:
            for k in parts(out):
                assert_kernel(k)
            return
        rest = {k: v for k, v in kw.items() if k not in ("x1", "x2")}
        x1, x2 = _t(kw["x1"]), _t(kw["x2"])
        if x1.ndim != x2.ndim or x1.ndim < 2:
            return  # a call may read an input with fewer axes its own way (e.g. one example): no joint input
        assert x1.shape[1:] == x2.shape[1:], f"accepted x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} of different " \
                                             f"per-example shapes"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                joint = fn(torch.cat([x1, x2]), None, **rest)
            except ValueError:
                return  # the joint kernel is out of range where the cross one was not
        for k, j in zip(parts(out), parts(joint)):
            assert tuple(k.shape) == (x1.shape[0], x2.shape[0]), f"k(x1, x2) has shape {tuple(k.shape)}"
            assert_block(k, j, x1.shape[0])
    return check


def close_scaled(ref, out, factor, rtol=1e-11):
    """``out ≈ factor · ref`` relative to the largest entry, where that is representable."""
    ref, out = _t(ref), _t(out)
    expect = ref * factor
    top = _amax(expect)
    if not math.isfinite(top) or top > 1e300 or top < TINY:
        return  # not representable, or subnormal (see TINY)
    assert _amax(out - expect) <= rtol * top + 1e-290, \
        f"not homogeneous: expected {factor:g} x reference, max error {_amax(out - expect):.3g} of {top:.3g}"


# ---------------------------------------------------------------------------------------------------------------
# The table of public call sites


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _psd(n, seed=0):
    x = _rand(n, 3, seed=seed)
    return kernels.fc(x, depth=1).ntk.numpy() + 0.1 * np.eye(n)


def _mlp(seed=0, **kw):
    return models.MLP(3, 5, 2, seed=seed, dtype=F64, **kw)


@dataclass
class Site:
    """A public call ``call(**arrays, **hyper)``.

    arrays: valid array arguments, the reference (first array argument) first; optional: those for which None is a
    value; hyper: valid hyper-parameters (their type gives the kind of bad values tried; ``none_ok`` those for which
    None is a value); check(out, kwargs): invariant of a finite result; scale: array arguments multiplied together
    by the magnitude test, and degree: the power of the scale by which the result (or each field) then scales
    (None: only finiteness is checked); finite(out): the part of the result that must be finite; slow: integer
    hyper-parameters for which 10**7 is a valid but long request (steps, ensemble sizes); diverges: the call may
    raise the FloatingPointError it documents for a run that diverges; scans_values: False where the call documents
    that it does not scan its input's values (a model's forward, :func:`ntkcore._checks.model_input`: NaN and inf
    then propagate to the output instead of being rejected); variances: the hyper-parameters that may also be a 0-d
    floating tensor (a layer's ``weight_var`` and ``bias_var``, :func:`ntkcore._checks.check_variance`: the kernels
    are differentiable in them), which must then give the result of the same float.
    """

    call: Callable
    arrays: dict
    hyper: dict = field(default_factory=dict)
    check: Callable | None = None
    optional: tuple = ()
    none_ok: tuple = ()
    scale: tuple = ()
    degree: Any = None
    finite: Callable = staticmethod(lambda out: out)
    slow: tuple = ()
    diverges: bool = False
    scans_values: bool = True
    variances: tuple = ()


def _kernel_site(fn, arrays, hyper, *fields_, degree=None, **kw):
    return Site(fn, arrays, hyper, kernel_check(fn, *fields_), optional=("x2",), scale=("x1", "x2"),
                degree=degree, variances=VARIANCES, **kw)


VARIANCES = ("weight_var", "bias_var")
NDK_VARIANCES = ("sigma0_sq", "sigma_sq")
X5, X4 = _rand(5, 3), _rand(4, 3, seed=1)
IMG, IMG2 = _rand(3, 1, 4, 4, seed=2), _rand(2, 1, 4, 4, seed=3)
NODES = _rand(2, 3, 2, seed=4)
ADJ = np.array([[[0, 1, 0], [1, 0, 1], [0, 1, 0]], [[0, 1, 1], [1, 0, 0], [1, 0, 0]]], dtype=np.float64)
K6, Y6, KX = _psd(6), _rand(6, seed=5), _psd(8)[6:, :6]
FC = dict(depth=2, activation="relu", weight_var=2.0, bias_var=0.0, quadrature_degree=32, max_memory=2**28)
NDK = dict(L=2, activation="relu", sigma_sq=1.0, T=0.1)
NET = layers.serial(layers.Dense(4, weight_var=2.0), layers.Relu(), layers.Dense(4, weight_var=2.0), layers.Erf(),
                    layers.Dense(1))
CONV = layers.serial(layers.Conv(2, 3, weight_var=2.0), layers.Relu(), layers.GlobalAvgPool(), layers.Dense(1))
TIMES = np.array([0.0, 0.5, 2.0, 10.0])
STEPS = np.array([0.0, 1.0, 3.0, 10.0])


def _fc(x1, x2=None, **kw):
    return kernels.fc(x1, x2, **kw)


def _two_time(x1, x2=None, t1=None, **kw):
    return ndk.two_time_kernels(x1, x2, np.array([0.0, 1.5]) if t1 is None else t1, **kw)


def _gauss_check(out, kw):
    """ReLU: the closed forms ``√(q11 q22)(sin θ + (π − θ) cos θ)/2π`` and ``(π − θ)/2π``."""
    if kw["degree"] < 16:
        return  # accurate to rounding from about 16 nodes on
    q11, q22, q12 = (_t(kw[k]) for k in ("q11", "q22", "q12"))
    s = q11.sqrt() * q22.sqrt()  # not sqrt(q11 q22), which overflows from q ~ 1e154 on
    th = torch.arccos((q12 / s).clamp(-1, 1))
    ee = s * (torch.sin(th) + (math.pi - th) * torch.cos(th)) / (2 * math.pi)
    assert torch.allclose(out[0], ee, rtol=1e-8, atol=1e-12 * float(s.max()))
    assert torch.allclose(out[1], (math.pi - th) / (2 * math.pi), rtol=1e-8, atol=1e-12)


def _regression_check(out, kw):
    """Kernel regression on the training inputs interpolates (``k_test_train = K`` below)."""
    if kw["k_test_train"] is kw["k_train_train"] and kw.get("jitter", 0.0) == 0.0 and kw.get("ridge", 0.0) == 0.0:
        assert torch.allclose(_t(out), _t(kw["y"]), rtol=1e-6, atol=1e-6 * float(_t(kw["y"]).abs().max()))


def _flow_check(out, kw):
    """The training loss along gradient flow does not increase (times sorted)."""
    y, u = _t(kw["y"]), out.train.to(F64)
    scale = max(_amax(y), _amax(u), 1e-300)
    loss = (((u - y) / scale) ** 2).reshape(u.shape[0], -1).sum(1)
    order = torch.argsort(_t(kw["times"]).reshape(-1))
    assert bool((loss[order].diff() <= 1e-8 * loss.max() + 1e-300).all()), f"loss increases: {loss}"


def _monotone(out, kw):
    out = _t(out)
    assert bool((out.diff() >= -1e-12 * out.abs().max()).all()), f"not non-decreasing: {out}"


def _power_check(out, kw):
    x, y = _t(kw["x"]).reshape(-1), _t(kw["y"]).reshape(-1)
    ref = np.polyfit(np.log(x.numpy()), np.log(y.numpy()), 1)
    assert out.slope == pytest.approx(ref[0], rel=1e-8, abs=1e-8)


def _loader_check(out, kw):
    n_train = kw.get("n_train")
    assert len(out.x_train) == len(out.y_train) and len(out.x_test) == len(out.y_test)
    assert n_train is None or len(out.x_train) == n_train


def _fit(x, y, steps=3, **kw):
    return train.fit(_mlp(), x, y, steps=steps, **kw)


def _forward(x, **kw):
    return models.MLP(3, seed=0, dtype=F64, **kw)(x)


def _two_layer_net(x, **kw):
    return models.TwoLayerNet(3, seed=0, dtype=F64, **kw)(x)


def _two_time_check(out, kw):
    """``K(t, t′, x, x′) = K(t′, t, x′, x)``, and the NNGP kernel at equal times is a kernel matrix."""
    if kw.get("x2") is None:
        for k in out:
            assert torch.allclose(k, k.permute(1, 0, 3, 2), rtol=1e-12, atol=1e-12 * _amax(k))
        for g in range(out.nngp.shape[0]):
            assert_kernel(out.nngp[g, g])


def _simulate(x_train, y, x_test, record_times, **kw):
    return langevin.simulate(x_train, y, x_test, record_times, **kw)


SITES = {
    # kernels
    "fc relu": _kernel_site(_fc, dict(x1=X5, x2=X4), dict(FC), "nngp", "ntk", degree=2),
    "fc erf": _kernel_site(_fc, dict(x1=X5, x2=X4), {**FC, "activation": "erf", "bias_var": 0.1}, "nngp", "ntk"),
    "fc tanh": _kernel_site(_fc, dict(x1=X5[:3], x2=X4[:2]), {**FC, "activation": "tanh", "quadrature_degree": 8},
                            "nngp", "ntk"),
    "cntk": _kernel_site(lambda x1, x2=None, **kw: kernels.cntk(x1, x2, **kw), dict(x1=IMG, x2=IMG2),
                         dict(depth=1, kernel_size=3, weight_var=2.0, bias_var=0.0, gap=True), "nngp", "ntk",
                         degree=2),
    "gntk": Site(kernels.gntk, dict(x1=NODES, adjacency=ADJ), dict(n_blocks=1, n_mlp_layers=1, weight_var=2.0,
                                                                   bias_var=0.0),
                 lambda out, kw: [assert_kernel(k) for k in out], scale=("x1",), degree=2, variances=VARIANCES),
    "two_layer_limit": _kernel_site(kernels.two_layer_limit, dict(x1=X5, x2=X4),
                                    dict(activation="relu", a_second_moment=1 / 3), degree=2),
    "two_layer_empirical": _kernel_site(kernels.two_layer_empirical, dict(x1=X5, x2=X4, w=_rand(7, 3, seed=6),
                                                                          a=_rand(7, seed=7)),
                                        dict(activation="relu"), degree=2),
    "gaussian_expectations": Site(lambda q11, q22, q12, **kw: gaussian_expectations(torch.relu, q11, q22, q12, **kw),
                                  dict(q11=torch.tensor([1.0, 2.0, 0.5], dtype=F64), q22=torch.tensor([1.0, 3.0, 0.5],
                                       dtype=F64), q12=torch.tensor([0.3, -1.0, 0.5], dtype=F64)),
                                  dict(degree=32), _gauss_check, scale=("q11", "q22", "q12"), degree=(1, 0)),
    "layers serial": _kernel_site(lambda x1, x2=None, **kw: NET.kernel(x1, x2, **kw), dict(x1=X5, x2=X4),
                                  dict(get=("nngp", "ntk")), "nngp", "ntk"),
    "layers conv": _kernel_site(lambda x1, x2=None, **kw: CONV.kernel(x1, x2, **kw), dict(x1=IMG, x2=IMG2), {},
                                "nngp", "ntk", degree=2),
    # ndk and drift
    "ndk.two_time_kernels": Site(_two_time, dict(x1=X5, x2=X4), dict(NDK, sigma0_sq=2.0), _two_time_check,
                                 optional=("x2",), scale=("x1", "x2"), degree=(2, 0, 2)),
    "ndk.stationary_kernels": Site(lambda x1, x2=None, tau=0.0, **kw: ndk.stationary_kernels(x1, x2, tau, **kw),
                                   dict(x1=X5, x2=X4, tau=np.array([0.0, 1.0, 50.0])), dict(NDK),
                                   optional=("x2",), scale=("x1", "x2"), degree=(2, 0, 2)),
    "ndk.k_gp": _kernel_site(ndk.k_gp, dict(x1=X5, x2=X4), dict(L=2, activation="erf", sigma_sq=1.0)),
    "ndk.ntk0": _kernel_site(ndk.ntk0, dict(x1=X5, x2=X4), dict(L=2, activation="relu", sigma0_sq=1.5), degree=2),
    "ndk.mean_predictor": Site(ndk.mean_predictor, dict(x_train=X5[:3], y=Y6[:3], x_test=X4[:2]),
                               dict(t_max=2.0, L=1, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.5,
                                    resolution=1.0), optional=("x_test",)),
    "ndk.nngp_limit": Site(ndk.nngp_limit, dict(x_train=X5, y=Y6[:5], x_test=X4), dict(NDK), optional=("x_test",),
                           scale=("y",), degree=1),
    "drift.drift_kernel": Site(drift.drift_kernel, dict(x1=X5, x2=X4, tau=np.array([0.0, 3.0])), dict(NDK),
                               optional=("x2",)),
    "drift.mean_kernel": _kernel_site(drift.mean_kernel, dict(x1=X5, x2=X4), dict(L=2, activation="erf",
                                                                                  sigma_sq=1.0)),
    "drift.drift_predictor": Site(drift.drift_predictor, dict(x_train=X5, y=Y6[:5], x_test=X4,
                                                              tau=np.array([0.0, 1.0])), dict(NDK),
                                  optional=("x_test",), scale=("y",), degree=1),
    "drift.threshold_accuracy": Site(drift.threshold_accuracy, dict(scores=Y6, labels=np.sign(Y6 + 0.1))),
    "drift.weight_correlation": Site(drift.weight_correlation, dict(w=_rand(2, 3, 4, seed=8)), dict(ref=0),
                                     scale=("w",), degree=0),
    # predict and bounds
    "predict.kernel_regression": Site(predict.kernel_regression, dict(k_test_train=K6, k_train_train=K6, y=Y6),
                                      dict(jitter=0.0), _regression_check, scale=("k_test_train", "k_train_train"),
                                      degree=0),
    "predict.kernel_ridge": Site(predict.kernel_ridge, dict(k_test_train=KX, k_train_train=K6, y=Y6),
                                 dict(ridge=0.1, jitter=0.0), scale=("y",), degree=1),
    "predict.gradient_flow": Site(predict.gradient_flow, dict(k_train_train=K6, y=Y6, times=TIMES, k_test_train=KX,
                                                              u0=np.zeros(6), f0_test=np.zeros(2)),
                                  dict(learning_rate=None), _flow_check, optional=("k_test_train", "u0", "f0_test"),
                                  none_ok=("learning_rate",), scale=("y",), degree=1),
    "predict.training_loss_curve": Site(predict.training_loss_curve, dict(k_train_train=K6, y=Y6, times=STEPS),
                                        dict(learning_rate=0.1), none_ok=("learning_rate",), scale=("y",), degree=2),
    "predict.nngp_posterior": Site(predict.nngp_posterior, dict(k_test_train=_psd(8)[6:, :6], k_train_train=K6, y=Y6,
                                                                k_test_test=_psd(8)[6:, 6:]),
                                   dict(noise_var=0.1, jitter=0.0), scale=("y",), degree=(1, 0)),
    "bounds.interpolant_norm": Site(bounds.interpolant_norm, dict(h=K6, y=Y6), scale=("y",), degree=1),
    "bounds.rademacher_bound": Site(bounds.rademacher_bound, dict(h=K6), dict(radius=2.0), scale=("h",),
                                    degree=0.5),
    "bounds.generalization_bound": Site(bounds.generalization_bound, dict(h=K6, y=np.sign(Y6)), dict(delta=0.1),
                                        none_ok=("delta",)),
    "bounds.kernel_deviation_bound": Site(bounds.kernel_deviation_bound,
                                          dict(h_star=K6, times=np.array([0.0, 1.0, 2.0]),
                                               kernels=np.stack([K6, 1.1 * K6, 1.2 * K6]), residuals=_rand(3, 6)),
                                          check=_monotone),
    "bounds.descent_deviation_bound": Site(bounds.descent_deviation_bound, dict(h_star=K6, residuals=_rand(4, 6)),
                                           dict(learning_rate=0.01), _monotone, scale=("residuals",), degree=1),
    # stats and early stopping
    "stats.power_law": Site(stats.power_law, dict(x=np.array([1.0, 2.0, 4.0, 8.0]), y=np.array([3.0, 1.6, 0.7, 0.4])),
                            check=_power_check, finite=lambda out: (out.slope, out.intercept)),
    "stats.mean_sem": Site(stats.mean_sem, dict(samples=_rand(5, 3)), dict(axis=0), scale=("samples",),
                           degree=(1, 1)),
    "stats.ratio_of_means": Site(stats.ratio_of_means, dict(num=_rand(6), den=_rand(6, seed=1) + 3.0),
                                 scale=("num", "den"), degree=(0, 0)),
    "stats.dispersion": Site(stats.dispersion, dict(samples=np.abs(_rand(6)) + 0.5), scale=("samples",),
                             degree=(0, 0)),
    "stats.correlation": Site(stats.correlation, dict(x=_rand(8), y=_rand(8, seed=2), groups=np.repeat([0, 1], 4)),
                              dict(level=0.95), optional=("groups",), scale=("x", "y"),
                              finite=lambda out: (out.r, out.low, out.high)),
    "early_stopping": Site(es.early_stopping, dict(times=TIMES, loss=np.array([1.0, 0.5, 0.7, 0.8])),
                           dict(tol=1e-3), none_ok=("loss_eq",), finite=lambda out: out[:5]),
    "early_stopping.loss_curve": Site(es.loss_curve, dict(predictions=_rand(4, 3), targets=_rand(3, seed=1)),
                                      scale=("predictions", "targets"), degree=2),
    # finite networks
    "empirical.ntk": Site(lambda x1, x2=None, **kw: empirical.ntk(_mlp(), x1, x2, **kw), dict(x1=X5, x2=X4),
                          dict(method="auto"), kernel_check(lambda x1, x2=None, **kw: empirical.ntk(_mlp(), x1, x2,
                                                                                                    **kw)),
                          optional=("x2",)),
    "empirical.nngp": Site(lambda x1, x2=None, **kw: empirical.nngp(_mlp(), x1, x2, **kw), dict(x1=X5, x2=X4),
                           dict(normalize=True), kernel_check(lambda x1, x2=None, **kw: empirical.nngp(_mlp(), x1, x2,
                                                                                                       **kw)),
                           optional=("x2",)),
    "finite_depth.mean_ntk_diagonal": Site(lambda **kw: finite_depth.mean_ntk_diagonal(**kw), {},
                                           dict(widths=(3, 4, 4), weight_var=2.0, sq_norm=1.0, biases=True)),
    "finite_depth.sample_ntk_diagonal": Site(lambda **kw: finite_depth.sample_ntk_diagonal(**kw), {},
                                             dict(n_networks=50, widths=(3, 4, 4), weight_var=2.0, sq_norm=1.0,
                                                  seed=0), slow=("n_networks",)),
    "finite_depth.ReluEnsemble.ntk": Site(lambda x, **kw: finite_depth.ReluEnsemble(**kw).ntk(x), dict(x=X5),
                                          dict(n_networks=3, widths=(3, 4), weight_var=2.0, biases=False, seed=0),
                                          scale=("x",), degree=2, slow=("n_networks",)),
    "finite_depth.ReluEnsemble.one_step_change": Site(
        lambda x, **kw: finite_depth.ReluEnsemble(kw.pop("n_networks"), kw.pop("widths"), weight_var=2.0,
                                                  seed=0).one_step_change(x, **kw),
        dict(x=X5[0]), dict(n_networks=3, widths=(3, 4), target=0.5, lr=0.1), slow=("n_networks",)),
    "finite_depth.block_structure": Site(finite_depth.block_structure,
                                         dict(kernel=_psd(6), labels=np.array([0, 0, 1, 1, 2, 2])),
                                         scale=("kernel",), degree=1),
    "models.MLP": Site(_forward, dict(x=torch.tensor(X5)),
                       dict(width=4, depth=2, out_features=1, activation="relu", weight_var=2.0, bias_var=0.1,
                            parameterization="ntk"), finite=lambda out: (), scans_values=False),
    "models.TwoLayerNet": Site(_two_layer_net, dict(x=torch.tensor(X5)),
                               dict(width=4, activation="relu", a_dist="uniform", antisymmetric=True),
                               finite=lambda out: (), scans_values=False),
    "train.fit": Site(_fit, dict(x=torch.tensor(X5), y=torch.tensor(Y6[:5])),
                      dict(loss="mse", method="plain", lr=0.1, steps=3, optimizer="gd", momentum=0.9, ridge=0.0,
                           seed=0), finite=lambda out: (out.train_loss, out.data_loss), slow=("steps",),
                      diverges=True),
    "langevin.simulate": Site(_simulate, dict(x_train=X5[:4], y=Y6[:4], x_test=X4[:2], record_times=TIMES[:2]),
                              dict(L=1, activation="relu", width=4, sigma0_sq=1.0, sigma_sq=1.0, T=0.1, dt=0.05,
                                   n_networks=2, seed=0), optional=("x_test",), slow=("n_networks",),
                              diverges=True),
    # data
    "data.preprocess": Site(data.preprocess, dict(x_train=X5, x_test=X4), dict(steps=("standardize",)), none_ok=("steps",),
                            scale=("x_train", "x_test"), degree=(0, 0)),
    "data.symmetric_noise": Site(data.symmetric_noise, dict(y=np.array([0, 1, 2, 1, 0])), dict(p=0.3, seed=0),
                                 none_ok=("n_classes",)),
    "data.transition_noise": Site(data.transition_noise, dict(y=np.array([0, 1, 1, 0]),
                                                              transition=np.array([[0.9, 0.2], [0.1, 0.8]])),
                                  dict(seed=0)),
    "data.symmetric_transition": Site(data.symmetric_transition, {}, dict(p=0.2, n_classes=3)),
    "data.one_hot": Site(data.one_hot, dict(y=np.array([0, 2, 1])), dict(n_classes=3), none_ok=("n_classes",)),
    "data.iris": Site(data.iris, {}, dict(classes=(0, 1), n_train=10, n_test=6, seed=0, preprocess=("standardize",),
                                          labels="signed"), _loader_check, none_ok=("n_train", "n_test", "classes", "preprocess")),
    "data.digits": Site(data.digits, {}, dict(classes=(3, 5, 7), n_train=12, n_test=6, seed=1, labels="index",
                                              preprocess=("unit_norm",)), _loader_check,
                        none_ok=("n_train", "n_test", "classes", "preprocess")),
    "data.sphere": Site(data.sphere, {}, dict(n_train=5, n_test=3, dim=3, seed=0), _loader_check,
                        slow=("n_train", "n_test", "dim")),
    "data.two_gaussians": Site(data.two_gaussians, {}, dict(n_train=5, n_test=3, dim=2, separation=2.0, std=1.0,
                                                            seed=0), _loader_check,
                              slow=("n_train", "n_test", "dim")),
    "data.orthogonal_synthetic": Site(data.orthogonal_synthetic, {}, dict(n_train=4, n_test=2, overlap=0.5, seed=0),
                                      _loader_check, none_ok=("n_test", "dim")),
    "data.load": Site(lambda **kw: data.load(kw.pop("name"), **kw), {}, dict(name="wine", n_train=6, n_test=4),
                      _loader_check, none_ok=("n_train", "n_test")),
    "device.resolve": Site(device.resolve, {}, dict(device="cpu", dtype="float64"), none_ok=("device", "dtype")),
}


def _param(name, xfail=None):
    if xfail and xfail.startswith("SKIP"):  # a hang that the alarm cannot interrupt: would stall the whole run
        return pytest.param(name, id=name, marks=[pytest.mark.skip(reason=xfail)])
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail and not os.environ.get("FUZZ_ALL") else []
    return pytest.param(name, id=name, marks=marks)


def _sites(pred, xfails):
    return [_param(n, xfails.get(n)) for n, s in SITES.items() if pred(s)]


def _call(site, kw):
    return site.call(**kw)


# ---------------------------------------------------------------------------------------------------------------
# Class 1: bad arrays


MUST_REJECT = ("nan", "inf", "-inf", "complex", "strings", "object", "none")


def _like(valid, arr):
    """``arr`` as a tensor if the valid argument was one."""
    return torch.as_tensor(arr) if isinstance(valid, torch.Tensor) else arr


def bad_arrays(valid, optional):
    """(kind, value) pairs derived from the valid array ``valid``."""
    a = valid.detach().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)

    def poke(v):
        def f(i):
            b = a.astype(np.float64).copy()
            b.reshape(-1)[i % max(b.size, 1)] = v
            return _like(valid, b)
        return f

    idx = st.integers(0, 10**6)
    kinds = [
        st.tuples(st.just("nan"), idx.map(poke(np.nan))),
        st.tuples(st.just("inf"), idx.map(poke(np.inf))),
        st.tuples(st.just("-inf"), idx.map(poke(-np.inf))),
        st.tuples(st.just("huge entry"), idx.map(poke(1e308))),
        st.tuples(st.just("tiny entry"), idx.map(poke(5e-324))),
        st.just(("empty", _like(valid, a[:0]))),
        st.just(("one row", _like(valid, a[:1]))),
        st.just(("an axis fewer", _like(valid, a[..., 0] if a.ndim else a))),
        st.just(("an axis more", _like(valid, a[None]))),
        st.just(("one feature more", _like(valid, np.concatenate([a, a[..., :1]], axis=-1)) if a.ndim else a)),
        st.just(("0-d", _like(valid, np.float64(0.5)))),
        st.just(("zeros", _like(valid, np.zeros_like(a)))),
        st.just(("complex", _like(valid, a.astype(np.complex128)))),
        st.just(("strings", a.astype(str))),
        st.just(("object", a.astype(object))),
        st.just(("none" if "none" not in optional else "None (optional)", None)),
        st.just(("int", _like(valid, np.rint(a).astype(np.int64)))),
        st.just(("bool", _like(valid, a > 0))),
        st.just(("list", a.tolist())),
        st.just(("float32 tensor", torch.as_tensor(a, dtype=F32))),
        st.just(("float64 tensor", torch.as_tensor(a, dtype=F64))),
        st.just(("requires_grad", torch.as_tensor(a, dtype=F64).requires_grad_(True))),
        st.just(("non-contiguous", torch.as_tensor(np.ascontiguousarray(a.T)).T if a.ndim == 2 else valid)),
    ]
    return st.one_of(kinds)


ARRAY_XFAILS = {}


@pytest.mark.parametrize("name", _sites(lambda s: s.arrays, ARRAY_XFAILS))
@_settings(20)
@given(data=st.data())
def test_bad_arrays(name, data):
    site = SITES[name]
    arg = data.draw(st.sampled_from(list(site.arrays)), label="argument")
    optional = ("none",) if arg in site.optional else ()
    kind, value = data.draw(bad_arrays(site.arrays[arg], optional), label="kind")
    kw = {**site.arrays, **site.hyper, arg: value}
    must = kind in MUST_REJECT and (site.scans_values or kind not in ("nan", "inf", "-inf"))
    out = outcome(lambda: _call(site, kw), [arg] if must else [*site.arrays, *site.hyper], site.finite,
                  site.diverges)
    if must:
        assert out is REJECTED, f"{arg} = {kind} was accepted"
    elif out is not REJECTED and site.check is not None:
        site.check(out, kw)


# ---------------------------------------------------------------------------------------------------------------
# Class 2: huge and tiny magnitudes


def _scaled(out, c, degree):
    if not isinstance(degree, tuple):
        return [(out, c ** degree)]
    return [(part, c ** d) for part, d in zip(out, degree)]


MAGNITUDE_XFAILS = {}


def _subnormal(t):
    """Whether a nonzero entry of ``t`` is below :data:`TINY`."""
    a = t.abs()
    return bool(((a > 0) & (a < TINY)).any())


@pytest.mark.parametrize("name", _sites(lambda s: s.scale, MAGNITUDE_XFAILS))
@_settings(12)
@given(exponent=st.integers(-300, 300), mantissa=st.sampled_from([1.0, 3.7, 9.99]))
def test_magnitudes(name, exponent, mantissa):
    site = SITES[name]
    c = mantissa * 10.0 ** exponent
    kw = {**site.arrays, **site.hyper}
    scaled = {**kw, **{k: _t(kw[k]) * c for k in site.scale if kw[k] is not None}}
    out = outcome(lambda: _call(site, scaled), list(site.scale), site.finite, site.diverges)
    if out is REJECTED:
        return
    if site.check is not None:
        site.check(out, scaled)
    if site.degree is not None and not any(_subnormal(scaled[k]) for k in site.scale if scaled[k] is not None):
        ref = site.call(**kw)
        for (r, expect), (o, _) in zip(_scaled(ref, c, site.degree), _scaled(out, c, site.degree)):
            for rr, oo in (zip(r, o) if isinstance(r, tuple) else [(r, o)]):
                close_scaled(rr, oo, expect)


# ---------------------------------------------------------------------------------------------------------------
# Class 3: extreme and bad hyper-parameters


REAL_BAD = [math.nan, math.inf, -math.inf, "1", True, 10**400, 1j, np.array(1.0), torch.tensor(1.0), [1.0]]
REAL_EDGE = [0.0, -0.0, -1.0, 5e-324, 1e-300, 1e-30, 1e30, 1e300, 1.7976931348623157e308, -1e300, 3,
             np.float32(0.5), np.float64(2.0), np.int64(1), 2**64]
INT_BAD = ["2", True, 2.5, 1j, np.array(2), math.nan]
INT_EDGE = [0, -1, 1, 2, 3, 7, 10**7, 10**30, 2**63, 10**400, np.int64(2), np.int32(1), np.uint8(3), 2.0]
CHOICE_EDGE = ["", "RELU", "relu ", "tanh", "erf", "identity", "softplus", 1, torch.sin, b"relu", ("relu",)]
SEQ_EDGE = [(), (0,), (0, 0), (0, 99), (-1, 0), "ab", 0, (True, False), (0.0, 1.0), ("no such class", 0), [1, 0],
            np.array([0, 1]), ("centre", "nope"), "standardize", ("unit_norm", "dim_norm")]
BOOL_EDGE = [1, 0, "True", np.bool_(True), 2]


def bad_hyper(valid):
    """(must_reject, value) for a hyper-parameter whose valid value is ``valid``."""
    if isinstance(valid, bool):
        return st.sampled_from([(False, v) for v in BOOL_EDGE] + [(True, "yes")])
    if isinstance(valid, int):
        return st.sampled_from([(True, v) for v in INT_BAD] + [(False, v) for v in INT_EDGE])
    if isinstance(valid, float):
        return st.sampled_from([(True, v) for v in REAL_BAD] + [(False, v) for v in REAL_EDGE])
    if isinstance(valid, str):
        return st.sampled_from([(False, v) for v in CHOICE_EDGE])
    return st.sampled_from([(False, v) for v in SEQ_EDGE])


HYPER_XFAILS = {}


@pytest.mark.parametrize("name", _sites(lambda s: s.hyper, HYPER_XFAILS))
@_settings(25)
@given(data=st.data())
def test_hyper_parameters(name, data):
    site = SITES[name]
    if name.startswith(("ndk.", "drift.")):  # the NDK's sigma0_sq and sigma_sq are variances too
        site = replace(site, variances=site.variances + NDK_VARIANCES)
    arg = data.draw(st.sampled_from(list(site.hyper)), label="hyper-parameter")
    must, value = data.draw(st.one_of(bad_hyper(site.hyper[arg]), st.just((arg not in site.none_ok, None))),
                            label="value")
    if arg in site.slow and type(value) is int and 10**7 <= value <= 2**63:
        value = 10**4  # valid, and long enough
    if arg in site.variances and isinstance(value, torch.Tensor):
        must = False  # a 0-d floating tensor is a variance too
    kw = {**site.arrays, **site.hyper, arg: value}
    out = outcome(lambda: _call(site, kw), [arg], site.finite, site.diverges)
    if arg in site.variances and isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point():
        assert out is not REJECTED, f"{arg}={value!r} (a 0-d floating tensor) was rejected"
        ref = _call(site, {**kw, arg: float(value)})
        for r, o in (zip(ref, out) if isinstance(ref, tuple) else [(ref, out)]):
            close_scaled(r, o, 1.0)
    if must:
        assert out is REJECTED, f"{arg}={value!r} was accepted"
    elif out is not REJECTED and site.check is not None:
        site.check(out, kw)
