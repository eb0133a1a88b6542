"""Dense layers and activations: the entrywise layers (book appendix "Closed-form kernels and conventions",
sections "Dense layers" and "Activations")."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import activations
from .._checks import check_int, check_real, check_variance
from ._base import Layer, _require
from ._entrywise import IDENTITY, Affine, Unit, number
from ._state import GRAPH, VECTOR, Shape


class ScaledLinear(nn.Linear):
    """``y = (weight_scale · W) x + bias_scale · b``: an ``nn.Linear`` with fixed multipliers on its parameters.

    With ``W, b ~ N(0, 1)``, ``weight_scale = σw/√fan_in`` and ``bias_scale = σb`` this is one dense layer of the NTK
    parameterization, ``h^{l+1} = σw/√n · W^{l+1} φ(h^l) + σb b^{l+1}``. Shapes as ``nn.Linear``: input
    ``(..., in_features)``, output ``(..., out_features)``.
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


def normal(shape, std: float, gen: torch.Generator, device, dtype) -> torch.Tensor:
    """``std · N(0, 1)`` of ``shape``, drawn in float64 on the generator's device, then cast and moved."""
    z = torch.randn(shape, generator=gen, dtype=torch.float64, device=gen.device)
    if std != 1.0:
        z = z * std
    return z.to(device=device, dtype=dtype)


def init_parameters(module: nn.Module, *, w_std: float, b_std: float | None, gen, trainable: bool = True):
    """Draw ``weight ~ w_std·N(0,1)``, then ``bias ~ b_std·N(0,1)`` (if the module has one) from ``gen``, in
    float64, in place; freeze both when not ``trainable``."""
    with torch.no_grad():
        module.weight.copy_(normal(module.weight.shape, w_std, gen, module.weight.device, module.weight.dtype))
        if module.bias is not None:
            module.bias.copy_(normal(module.bias.shape, b_std, gen, module.bias.device, module.bias.dtype))
    return module.requires_grad_(trainable)


def scales(weight_var: float, bias_var: float, fan_in: int, parameterization: str):
    """``(w_std, b_std, weight_scale, bias_scale)`` of a layer with fan-in ``fan_in``: NTK parameterization puts
    ``σw/√fan_in`` and ``σb`` in the forward pass and draws N(0, 1); standard draws the variances. (Variances given as
    tensors enter the finite network as numbers: only the kernels follow them with autograd.)"""
    weight_var, bias_var = number(weight_var), number(bias_var)
    if parameterization == "ntk":
        return 1.0, 1.0, math.sqrt(weight_var / fan_in), math.sqrt(bias_var)
    return math.sqrt(weight_var / fan_in), math.sqrt(bias_var), 1.0, 1.0


def dense_module(fan_in: int, fan_out: int, *, weight_var: float, bias_var: float, parameterization: str, gen,
                 device, dtype, trainable: bool = True) -> ScaledLinear:
    """One dense layer (no bias when ``bias_var == 0``), parameters drawn from ``gen`` (weight, then bias)."""
    w_std, b_std, w_scale, b_scale = scales(weight_var, bias_var, fan_in, parameterization)
    layer = torch.nn.utils.skip_init(ScaledLinear, fan_in, fan_out, bias=number(bias_var) > 0, weight_scale=w_scale,
                                     bias_scale=b_scale, device=device, dtype=dtype)
    return init_parameters(layer, w_std=w_std, b_std=b_std, gen=gen, trainable=trainable)


class Dense(Layer):
    """A fully connected layer, ``h′ = σw/√C · W h + σb b`` with ``W, b ~ N(0, 1)`` (NTK parameterization).

    Acts on vectors ``(n, C)`` and on the node features of graphs ``(n, N, C)`` (the same weights at every node).
    Kernel: ``K′ = σw² K + σb²``, ``Θ′ = σw² Θ + K′`` (book appendix "Closed-form kernels and conventions",
    section "Dense layers"; neural-tangents' ``stax.Dense`` with ``W_std² = weight_var``, ``b_std² = bias_var``).
    The NNGP ``K`` of the input features is their channel mean, ``x·x′/C``.

    Parameters
    ----------
    out_features : width of the finite layer (the kernel does not depend on it).
    weight_var, bias_var : σw² ≥ 0 and σb² ≥ 0, numbers, or 0-d tensors that require gradients to differentiate the
        kernels with respect to them (:func:`ntkcore._checks.check_variance`). The finite layer has no bias when
        ``bias_var == 0``.
    trainable : False freezes the layer: its gradient term ``K′`` is dropped from the NTK (the NNGP is unchanged),
        and the finite layer's parameters have ``requires_grad=False``.
    """

    entrywise = True
    is_readout = True

    def __init__(self, out_features: int, *, weight_var: float = 1.0, bias_var: float = 0.0, trainable: bool = True):
        self.out_features = check_int(out_features, "out_features", low=1)
        self.weight_var = check_variance(weight_var, "weight_var")
        self.bias_var = check_variance(bias_var, "bias_var")
        if not isinstance(trainable, bool):
            raise ValueError(f"trainable must be True or False, got {trainable!r}")
        self.trainable = trainable

    def _units(self):
        return [Unit(None, Affine.dense(self.weight_var, self.bias_var, self.trainable))]

    def _out_shape(self, shape: Shape) -> Shape:
        _require(shape.kind in (VECTOR, GRAPH), self, shape,
                 "vectors (n, C) or node features (n, N, C); for images use Conv(..., kernel_size=1), or Flatten() "
                 "or GlobalAvgPool() before it")
        return shape._replace(channels=self.out_features, gaussian=True, fresh=True)

    def _module(self, shape, gen, device, dtype, parameterization):
        return dense_module(shape.channels, self.out_features, weight_var=self.weight_var, bias_var=self.bias_var,
                            parameterization=parameterization, gen=gen, device=device, dtype=dtype,
                            trainable=self.trainable)

    def __repr__(self):
        extra = "" if self.trainable else ", trainable=False"
        variances = f"weight_var={number(self.weight_var):g}, bias_var={number(self.bias_var):g}"
        return f"Dense({self.out_features}, {variances}{extra})"


class Elementwise(Layer):
    """An activation ``φ`` applied to every feature: a registered name, or any elementwise torch callable or
    ``nn.Module`` (see :mod:`ntkcore.activations`).

    Kernel: ``K′ = E[φ(u)φ(v)]``, ``Θ′ = Θ · E[φ′(u)φ′(v)]`` with ``(u, v)`` Gaussian of covariance ``K`` (closed
    forms for ReLU, erf and the identity; polar Gauss quadrature with ``quadrature_degree`` nodes per dimension
    otherwise, φ′ by autograd). A nonlinear φ needs Gaussian inputs: put a Dense or Conv before it.
    """

    entrywise = True

    def __init__(self, fn, *, quadrature_degree: int = 32):
        self.activation = activations.get(fn, name="fn").with_quadrature(quadrature_degree,
                                                                           activations.DEFAULT_MAX_MEMORY)

    def _units(self):
        return [Unit(self.activation, IDENTITY)]

    def _out_shape(self, shape: Shape) -> Shape:
        if self.activation.linear:
            return shape
        if not shape.gaussian:
            raise ValueError(f"{self!r} acts on features that are not Gaussian in the infinite-width limit (the "
                             "network's inputs, or the output of another activation); its kernel is an expectation "
                             "over Gaussian features: put a Dense or Conv before it")
        return shape._replace(gaussian=False, fresh=False)

    def _module(self, shape, gen, device, dtype, parameterization):
        return self.activation.module()

    def __repr__(self):
        return f"Elementwise({self.activation.name!r})"


class Relu(Elementwise):
    """``φ(h) = max(h, 0)`` (closed-form kernel: the arc-cosine kernel of Cho & Saul 2009)."""

    def __init__(self):
        super().__init__("relu")

    def __repr__(self):
        return "Relu()"


class Erf(Elementwise):
    """``φ(h) = erf(h)`` (closed-form kernel: Williams 1997)."""

    def __init__(self):
        super().__init__("erf")

    def __repr__(self):
        return "Erf()"


class Identity(Elementwise):
    """``φ(h) = h``: passes the features on unchanged (a residual branch, a linear network)."""

    def __init__(self):
        super().__init__("identity")

    def __repr__(self):
        return "Identity()"
