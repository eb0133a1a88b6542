"""Networks in the parameterizations the book uses, and their linearization.

* :class:`MLP` -- the fully connected network of formulas.md section 1, in NTK parameterization (the library-wide
  convention; its empirical NTK converges to :func:`ntkcore.kernels.fc` as the width grows) or in standard
  parameterization.
* :class:`TwoLayerNet` -- the lecture's two-layer network ``f(x) = m^(-1/2) Σ_r a_r σ(w_rᵀx)`` with a fixed readout
  (formulas.md section 2; Du et al. 2019).
* :func:`linearize` -- the first-order Taylor expansion of any model around its initial parameters, as a module that
  trains with ordinary optimizers (book chapter 3, lazy training).

How the NTK scaling is implemented: every dense layer is a :class:`ScaledLinear`, an ``nn.Linear`` whose forward pass
multiplies the weight by ``weight_scale`` and the bias by ``bias_scale`` (plain numbers stored on the module). In NTK
parameterization ``weight_scale = σw/√fan_in`` and ``bias_scale = σb`` with all raw parameters ~ N(0, 1); in standard
parameterization both scales are 1 and the variances sit in the raw parameters. Because the networks are
``nn.Sequential`` chains of (scaled) linear layers and elementwise activations, :func:`ntkcore.empirical.ntk` can use
its exact layer-by-layer fast path on them.

Random draws happen on the CPU in float64 from a seeded generator (``seed`` an int or a CPU ``torch.Generator``), in
the order layer 1 weight, layer 1 bias, layer 2 weight, ..., and are then cast and moved; the same seed therefore gives
the same network on every device and in every dtype (up to rounding).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from ._checks import check_choice, check_int, check_real, generator
from .device import resolve

ACTIVATIONS = ("relu", "erf", "identity", "tanh")
PARAMETERIZATIONS = ("ntk", "standard")
A_DISTRIBUTIONS = ("uniform", "sign")


class ScaledLinear(nn.Linear):
    """``y = (weight_scale · W) x + bias_scale · b``: an ``nn.Linear`` with fixed multipliers on its parameters.

    With ``W, b ~ N(0, 1)``, ``weight_scale = σw/√fan_in`` and ``bias_scale = σb`` this is one layer of the NTK
    parameterization, ``h^{l+1} = σw/√n · W^{l+1} φ(h^l) + σb b^{l+1}`` (formulas.md section 1). Shapes as
    ``nn.Linear``: input ``(..., in_features)``, output ``(..., out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, weight_scale: float = 1.0,
                 bias_scale: float = 1.0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight_scale = check_real(weight_scale, "weight_scale")
        self.bias_scale = check_real(bias_scale, "bias_scale")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Scaling the output rather than the weight avoids a copy of W in every call (cheaper when batch < fan_in).
        y = F.linear(x, self.weight)
        if self.weight_scale != 1.0:
            y = y * self.weight_scale
        if self.bias is not None:
            y = y + self.bias * self.bias_scale
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_scale={self.weight_scale:.6g}, bias_scale={self.bias_scale:.6g}"


class Erf(nn.Module):
    """The error function ``φ(h) = erf(h)`` (elementwise), whose kernels have closed forms (formulas.md section 1)."""

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


def activation_module(activation) -> nn.Module:
    """The activation ``φ`` as a module: a name in :data:`ACTIVATIONS`, an ``nn.Module`` (used as is) or a plain
    elementwise function (wrapped in :class:`Elementwise`)."""
    if isinstance(activation, str):
        name = check_choice(activation, "activation", ACTIVATIONS)
        return {"relu": nn.ReLU, "erf": Erf, "identity": nn.Identity, "tanh": nn.Tanh}[name]()
    if isinstance(activation, nn.Module):
        return activation
    if callable(activation):
        return Elementwise(activation)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, an nn.Module or a callable, got {activation!r}")


def _normal(shape, std: float, gen: torch.Generator, device, dtype) -> torch.Tensor:
    """``std · N(0, 1)`` of ``shape``, drawn in float64 on the generator's device, then cast and moved."""
    z = torch.randn(shape, generator=gen, dtype=torch.float64, device=gen.device)
    if std != 1.0:
        z = z * std
    return z.to(device=device, dtype=dtype)


def _dense(fan_in: int, fan_out: int, *, w_std: float, b_std: float | None, weight_scale: float = 1.0,
           bias_scale: float = 1.0, gen: torch.Generator, device, dtype) -> ScaledLinear:
    """A :class:`ScaledLinear` with raw weights ``w_std · N(0, 1)`` and bias ``b_std · N(0, 1)`` (drawn from ``gen`` in
    that order; no bias when ``b_std is None``)."""
    layer = torch.nn.utils.skip_init(ScaledLinear, fan_in, fan_out, bias=b_std is not None, weight_scale=weight_scale,
                                     bias_scale=bias_scale, device=device, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(_normal((fan_out, fan_in), w_std, gen, device, dtype))
        if b_std is not None:
            layer.bias.copy_(_normal((fan_out,), b_std, gen, device, dtype))
    return layer


def _mlp_layer(fan_in: int, fan_out: int, *, weight_var: float, bias_var: float, parameterization: str,
               gen: torch.Generator, device, dtype) -> ScaledLinear:
    """One dense layer of :class:`MLP` in the given parameterization (formulas.md section 1); no bias when
    ``bias_var == 0``."""
    has_bias = bias_var > 0
    if parameterization == "ntk":
        return _dense(fan_in, fan_out, w_std=1.0, b_std=1.0 if has_bias else None,
                      weight_scale=math.sqrt(weight_var / fan_in), bias_scale=math.sqrt(bias_var),
                      gen=gen, device=device, dtype=dtype)
    return _dense(fan_in, fan_out, w_std=math.sqrt(weight_var / fan_in),
                  b_std=math.sqrt(bias_var) if has_bias else None, gen=gen, device=device, dtype=dtype)


class MLP(nn.Sequential):
    """Fully connected network with ``depth`` hidden layers of ``width`` units (formulas.md section 1).

    NTK parameterization (default), all raw ``W, b ~ N(0, 1)``::

        h¹ = σw/√d · W¹x + σb b¹,   h^{l+1} = σw/√n · W^{l+1} φ(h^l) + σb b^{l+1},   f = h^{L+1}

    Standard parameterization: ``W ~ N(0, σw²/fan_in)``, ``b ~ N(0, σb²)`` and no multipliers in the forward pass;
    same function distribution at initialization, different NTK (its gradients are not rescaled).

    With ``σw² = weight_var``, ``σb² = bias_var``, the empirical NNGP and NTK of the NTK-parameterized network
    converge to ``ntkcore.kernels.fc(x1, x2, depth=depth, activation=..., weight_var=..., bias_var=...)`` (times the
    identity over the ``out_features`` outputs) as ``width → ∞``. Layers have no bias when ``bias_var == 0``.

    Parameters
    ----------
    in_features, width, depth, out_features : input dimension d, hidden width n, number L ≥ 0 of hidden layers,
        number of outputs.
    activation : "relu", "erf", "identity", "tanh", an ``nn.Module`` (deep-copied per layer) or an elementwise
        function.
    weight_var, bias_var : σw² > 0 and σb² ≥ 0.
    parameterization : "ntk" or "standard".
    seed : int or CPU ``torch.Generator``; the only source of randomness.
    device, dtype : where the parameters live (default: :func:`ntkcore.device.resolve`, i.e. CPU float64).

    Input ``(n, d)``, output ``(n, out_features)``; :meth:`features` gives the last hidden layer ``φ(h^L)``.
    """

    def __init__(self, in_features: int, width: int, depth: int, out_features: int = 1, *, activation="relu",
                 weight_var: float = 2.0, bias_var: float = 0.0, parameterization: str = "ntk", seed,
                 device=None, dtype=None):
        in_features = check_int(in_features, "in_features", low=1)
        width = check_int(width, "width", low=1)
        depth = check_int(depth, "depth", low=0)
        out_features = check_int(out_features, "out_features", low=1)
        weight_var = check_real(weight_var, "weight_var", low=0.0, low_open=True)
        bias_var = check_real(bias_var, "bias_var", low=0.0)
        parameterization = check_choice(parameterization, "parameterization", PARAMETERIZATIONS)
        act = activation_module(activation)
        device, dtype = resolve(device, dtype)
        gen = generator(seed)
        sizes = [in_features] + [width] * depth + [out_features]
        layers: list[nn.Module] = []
        for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(_mlp_layer(fan_in, fan_out, weight_var=weight_var, bias_var=bias_var,
                                     parameterization=parameterization, gen=gen, device=device, dtype=dtype))
            if l < depth:
                layers.append(copy.deepcopy(act))
        super().__init__(*layers)
        self.in_features, self.width, self.depth, self.out_features = in_features, width, depth, out_features
        self.weight_var, self.bias_var = weight_var, bias_var
        self.parameterization = parameterization
        # Variance of the readout's effective weights times fan-in, and of its bias: the empirical NNGP
        # (ntkcore.empirical.nngp) is readout_weight_var / n · Φ Φᵀ + readout_bias_var.
        self.readout_weight_var, self.readout_bias_var = weight_var, bias_var

    @property
    def readout(self) -> ScaledLinear:
        """The last dense layer, ``f = readout(features(x))``."""
        return self[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last-layer features ``φ(h^L(x))``, shape ``(n, width)`` (the input itself, ``(n, d)``, when depth = 0)."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x


class TwoLayerNet(nn.Sequential):
    """The lecture's network ``f(x) = m^(-1/2) Σ_r a_r σ(w_rᵀx)`` (formulas.md section 2; Du et al. 2019).

    ``w_r(0) ~ N(0, I_d)`` are the rows of the trainable first layer :attr:`W` ``(m, d)``; the readout ``a`` ``(m,)``
    is drawn once (``a_dist="uniform"``: ``a_r ~ Unif[-1, 1]``, ``E[a²] = 1/3``; ``"sign"``: ``a_r = ±1``) and stored
    as a buffer, so it is neither trained nor counted in the empirical NTK, which is then
    ``H(0)_ij = x_iᵀx_j (1/m) Σ_r a_r² σ'(w_rᵀx_i) σ'(w_rᵀx_j)``.

    Input ``(n, d)``, output ``(n, 1)``. Draw order: W, then a. ``seed`` is an int or a CPU ``torch.Generator``.

    ``antisymmetric=True`` (even ``width``) makes unit ``r + m/2`` a copy of unit ``r`` with the readout sign flipped
    (``w_{r+m/2} = w_r``, ``a_{r+m/2} = -a_r``), so that ``f(x; W(0)) = 0`` for every x while each pair still
    contributes its two identical terms to ``H(0)``: the kernel regime then starts from ``u(0) = 0`` exactly
    (book chapters 3 and 4).
    """

    def __init__(self, in_features: int, width: int, *, activation="relu", a_dist: str = "uniform",
                 antisymmetric: bool = False, seed, device=None, dtype=None):
        in_features = check_int(in_features, "in_features", low=1)
        width = check_int(width, "width", low=1)
        if antisymmetric and width % 2:
            raise ValueError(f"width must be even when antisymmetric=True, got {width}")
        a_dist = check_choice(a_dist, "a_dist", A_DISTRIBUTIONS)
        act = activation_module(activation)
        device, dtype = resolve(device, dtype)
        gen = generator(seed)
        hidden = _dense(in_features, width, w_std=1.0, b_std=None, gen=gen, device=device, dtype=dtype)
        readout = torch.nn.utils.skip_init(ScaledLinear, width, 1, bias=False, weight_scale=1.0 / math.sqrt(width),
                                           device=device, dtype=dtype)
        if a_dist == "uniform":
            a = 2.0 * torch.rand((1, width), generator=gen, dtype=torch.float64, device=gen.device) - 1.0
        else:
            a = torch.where(torch.rand((1, width), generator=gen, dtype=torch.float64, device=gen.device) < 0.5,
                            -1.0, 1.0)
        if antisymmetric:
            half = width // 2
            with torch.no_grad():
                hidden.weight[half:] = hidden.weight[:half]
            a[:, half:] = -a[:, :half]
        del readout.weight  # the readout weight is a fixed buffer, not a parameter
        readout.register_buffer("weight", a.to(device=device, dtype=dtype))
        super().__init__(hidden, act, readout)
        self.in_features, self.width, self.a_dist, self.antisymmetric = in_features, width, a_dist, antisymmetric
        # NNGP normalization (see MLP): E[a²] / m · Φ Φᵀ.
        self.readout_weight_var, self.readout_bias_var = (1.0 / 3.0 if a_dist == "uniform" else 1.0), 0.0

    @property
    def W(self) -> nn.Parameter:
        """The trainable first-layer weights ``(m, d)``, row r is ``w_r``."""
        return self[0].weight

    @property
    def a(self) -> torch.Tensor:
        """The fixed readout ``(m,)``."""
        return self[2].weight[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden features ``σ(W x)``, shape ``(n, m)``."""
        return self[1](self[0](x))


class Linearized(nn.Module):
    """``f_lin(x; θ) = f(x; θ0) + J(x)(θ − θ0)``: the first-order Taylor expansion of a model around θ0.

    Book chapter 3 (lazy training: gradient descent on the linearized network is kernel regression with the NTK at
    initialization). ``J(x)(θ − θ0)`` is a Jacobian-vector product (``torch.func.jvp`` over ``functional_call``), so
    ``J`` is never formed. The trainable parameters θ (:attr:`params`, in the order of the model's trainable
    ``named_parameters``) start as a copy of θ0; gradients flow to them, so any ``torch.optim`` optimizer trains
    ``f_lin``. The frozen copy of the model (:attr:`base`, all its parameters with ``requires_grad=False``) holds θ0.
    Build it with :func:`linearize`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        names = [name for name, p in model.named_parameters() if p.requires_grad]
        if not names:
            raise ValueError("model has no trainable parameters (requires_grad=True) to linearize around")
        self.base = copy.deepcopy(model).requires_grad_(False)
        self.names = tuple(names)
        self.params = nn.ParameterList([nn.Parameter(self.base.get_parameter(n).detach().clone()) for n in names])

    def theta0(self) -> dict[str, torch.Tensor]:
        """The expansion point θ0, by parameter name of the original model."""
        return {n: self.base.get_parameter(n) for n in self.names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta0 = self.theta0()
        delta = {n: p - theta0[n] for n, p in zip(self.names, self.params)}
        f0, jdelta = jvp(lambda p: functional_call(self.base, p, (x,)), (theta0,), (delta,))
        return f0 + jdelta


def linearize(model: nn.Module) -> Linearized:
    """The linearization ``f_lin(x; θ) = f(x; θ0) + J(x)(θ − θ0)`` of ``model`` around its current parameters
    (see :class:`Linearized`); the model itself is copied, not changed."""
    return Linearized(model)
