"""Networks in the parameterizations the book uses, and their linearization.

* :class:`MLP` -- the fully connected network of book appendix "Closed-form kernels and conventions", section
  "Fully connected networks", in NTK parameterization (the library-wide convention; its empirical NTK converges to
  :func:`ntkcore.kernels.fc` as the width grows) or in standard parameterization.
* :class:`TwoLayerNet` -- the lecture's two-layer network ``f(x) = m^(-1/2) Σ_r a_r σ(w_rᵀx)`` with a fixed readout
  (book Chapter 2; Du et al. 2019).
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

Sizes: ``depth`` is at most 1000 (:data:`ntkcore._checks.MAX_DEPTH`), and a network whose parameters would not fit
in memory (float64 on the CPU for the draws, then on the device) is refused before anything is allocated. Calling a
network checks its input's shape, device and dtype (attribute comparisons only, no pass over the data): a wrong
feature dimension is a ValueError naming the expected shape, not an error deep inside torch.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call, jvp

from . import activations, kernels
from ._checks import check_bool, check_choice, check_depth, check_int, check_memory, check_real, generator, model_input
from .activations import Elementwise, Erf
from .device import resolve
from .layers import ScaledLinear
from .layers.dense import dense_module

__all__ = ["MLP", "TwoLayerNet", "Linearized", "linearize", "ScaledLinear", "Erf", "Elementwise",
           "activation_module", "ACTIVATIONS"]

ACTIVATIONS = activations.NAMES
PARAMETERIZATIONS = ("ntk", "standard")
A_DISTRIBUTIONS = ("uniform", "sign")


def _check_input(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook of :class:`MLP` and :class:`TwoLayerNet` (a hook, not an overridden ``forward``, so that
    they stay plain ``nn.Sequential`` chains for the fast path of :func:`ntkcore.empirical.ntk`)."""
    if len(args) != 1:
        raise ValueError(f"{type(module).__name__} takes one input x of shape (n, {module.in_features}), got "
                         f"{len(args)} positional arguments")
    model_input(args[0], module.in_features, module[0].weight)


def _check_size(n_params: int, what: str, device, dtype) -> None:
    """The parameters are drawn in float64 on the CPU, then cast and moved: both must fit."""
    check_memory(8 * n_params, f"{what} ({n_params:.3g} parameters drawn in float64)", "cpu")
    check_memory(n_params * torch.finfo(dtype).bits // 8, f"{what} ({n_params:.3g} parameters)", device)


def activation_module(activation) -> nn.Module:
    """The activation ``φ`` as a module (:func:`ntkcore.activations.get`): a registered name, an ``nn.Module``
    (deep-copied) or a plain elementwise function (wrapped in :class:`Elementwise`)."""
    return activations.get(activation).module()


class MLP(nn.Sequential):
    """Fully connected network with ``depth`` hidden layers of ``width`` units: the finite network of
    :func:`ntkcore.kernels.fc_network` (its specification is :attr:`spec`).

    NTK parameterization (default), all raw ``W, b ~ N(0, 1)``::

        h¹ = σw/√d · W¹x + σb b¹,   h^{l+1} = σw/√n · W^{l+1} φ(h^l) + σb b^{l+1},   f = h^{L+1}

    Standard parameterization: ``W ~ N(0, σw²/fan_in)``, ``b ~ N(0, σb²)`` and no multipliers in the forward pass;
    same function distribution at initialization, different NTK (its gradients are not rescaled).

    With ``σw² = weight_var``, ``σb² = bias_var``, the empirical NNGP and NTK of the NTK-parameterized network
    converge to ``ntkcore.kernels.fc(x1, x2, depth=depth, activation=..., weight_var=..., bias_var=...)`` (times the
    identity over the ``out_features`` outputs) as ``width → ∞``. Layers have no bias when ``bias_var == 0``.

    Parameters
    ----------
    in_features, width, depth, out_features : input dimension d, hidden width n, number ``0 ≤ L ≤ 1000`` of hidden
        layers, number of outputs (the parameters must fit in memory).
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
        depth = check_depth(depth, "depth", low=0)
        out_features = check_int(out_features, "out_features", low=1)
        weight_var = check_real(weight_var, "weight_var", low=0.0, low_open=True)
        bias_var = check_real(bias_var, "bias_var", low=0.0)
        parameterization = check_choice(parameterization, "parameterization", PARAMETERIZATIONS)
        spec = kernels.fc_network(depth, activation=activation, weight_var=weight_var, bias_var=bias_var,
                                  width=width, out_features=out_features)
        device, dtype = resolve(device, dtype)
        fans = [in_features] + [width] * depth
        outs = [width] * depth + [out_features]
        n_params = sum(i * o + (o if bias_var > 0 else 0) for i, o in zip(fans, outs))
        _check_size(n_params, f"MLP(in_features={in_features}, width={width}, depth={depth})", device, dtype)
        super().__init__(*spec.modules_for((in_features,), generator(seed), device, dtype, parameterization))
        self.register_forward_pre_hook(_check_input)
        self.spec = spec
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
    """The lecture's network ``f(x) = m^(-1/2) Σ_r a_r σ(w_rᵀx)`` (book Chapter 2; Du et al. 2019).

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
        antisymmetric = check_bool(antisymmetric, "antisymmetric")
        if antisymmetric and width % 2:
            raise ValueError(f"width must be even when antisymmetric=True, got {width}")
        a_dist = check_choice(a_dist, "a_dist", A_DISTRIBUTIONS)
        act = activation_module(activation)
        device, dtype = resolve(device, dtype)
        _check_size((in_features + 1) * width, f"TwoLayerNet(in_features={in_features}, width={width})", device, dtype)
        gen = generator(seed)
        hidden = dense_module(in_features, width, weight_var=float(in_features), bias_var=0.0,
                              parameterization="ntk", gen=gen, device=device, dtype=dtype)
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
        self.register_forward_pre_hook(_check_input)
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
        """``f_lin(x)``; ``x`` must be a tensor on the parameters' device (and in their dtype when floating), of
        shape ``(n, in_features)`` when the model has ``in_features`` (as :class:`MLP` and :class:`TwoLayerNet`)."""
        model_input(x, getattr(self.base, "in_features", None), self.params[0])
        theta0 = self.theta0()
        delta = {n: p - theta0[n] for n, p in zip(self.names, self.params)}
        f0, jdelta = jvp(lambda p: functional_call(self.base, p, (x,)), (theta0,), (delta,))
        return f0 + jdelta


def linearize(model: nn.Module, state: dict | None = None) -> Linearized:
    """The linearization ``f_lin(x; θ) = f(x; θ0) + J(x)(θ − θ0)`` of ``model`` around its current parameters, or
    around ``state``, a ``state_dict`` of the same model (a snapshot taken during training: book Chapter 11 trains
    in the tangent space of a later time t̃). See :class:`Linearized`; the model itself is copied, not changed."""
    if state is not None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        snapshot = copy.deepcopy(model)
        try:
            snapshot.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ValueError(f"state must be a state_dict of model (same names and shapes): {err}") from None
        model = snapshot
    return Linearized(model)
