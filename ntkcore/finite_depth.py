"""The NTK of deep ReLU networks at finite width and depth: its exact mean, Monte Carlo ensembles, the first-order
change after one gradient step, and the block structure of a kernel matrix over classes.

Book chapter "Depth and initialization: ordered and chaotic phases, and the structure of the NTK"; Seleznova and
Kutyniok (ICML 2022), "Neural tangent kernel beyond the infinite-width limit: effects of depth and initialization";
Hanin and Nica (ICLR 2020), "Finite depth and width corrections to the neural tangent kernel".

The networks are those of the papers: fully connected, ReLU, widths ``n_0 = d, n_1, ..., n_L`` and one output, in the
*standard* parameterization (the variance sits in the weights, as :class:`ntkcore.models.MLP` with
``parameterization="standard"``)::

    h^1 = W^1 x + b^1,   h^l = W^l φ(h^{l-1}) + b^l,   f = h^{L+1} = W^{L+1} φ(h^L) + b^{L+1},
    W^l_ij ~ N(0, σw² / n_{l-1}),   b^l = 0 at initialization, trained (``biases=True``) or absent.

With ``a^0 = x``, ``a^l = φ(h^l)`` and the sensitivities ``δ^l = ∂f/∂h^l``, the NTK diagonal is the sum of a weight
part and a bias part (the chapter's section "The networks and their phases")::

    Θ(x, x) = Σ_{l=1}^{L+1} ‖a^{l-1}‖² ‖δ^l‖²  +  Σ_{l=1}^{L+1} ‖δ^l‖².

* :func:`mean_ntk_diagonal`: both parts' means in closed form, exact at every width and depth (the chapter's theorem
  "The mean of the NTK diagonal").
* :func:`sample_ntk_diagonal`: exact draws of both parts for many networks from ``O(L)`` random numbers each (a
  chain of chi-squares, the lemma behind the theorem; no weight matrix is formed).
* :class:`ReluEnsemble`: many networks with their weight matrices, batched over a leading ensemble axis: their NTK
  on several inputs, and the first-order change of ``Θ(x, x)`` after one gradient step on ``(x, y)``.
* :func:`relu_network`: one such network as an :class:`ntkcore.models.MLP` (for :func:`ntkcore.train.fit` and
  :func:`ntkcore.empirical.ntk`).
* :func:`block_structure`: the means ``Θ̄_d``, ``Θ̄_c``, ``Θ̄_n`` of a kernel matrix's diagonal, same-class and
  other-class entries (Seleznova and Kutyniok 2022).

PyTorch's ReLU has ``φ'(0) = 0``; the closed forms count this (a layer whose units are all inactive stops every
gradient below it), so they are exact even at widths of a few units.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ._checks import (as_numpy, as_tensor, check_bool, check_choice, check_depth, check_int, check_memory,
                      check_real, class_labels, finite_result, generator, square)
from .device import resolve
from .layers import ScaledLinear
from .models import MLP

__all__ = ["NTKParts", "OneStep", "BlockStructure", "mean_ntk_diagonal", "sample_ntk_diagonal", "ReluEnsemble",
           "relu_network", "block_structure"]

PARAMETERIZATIONS = ("standard", "ntk")


class NTKParts(NamedTuple):
    """The weight part and the bias part of an NTK (numbers, or tensors of the same shape); ``total`` is their sum."""
    weights: object
    biases: object

    @property
    def total(self):
        return self.weights + self.biases


class OneStep(NamedTuple):
    """``theta``: ``Θ(x, x)`` per network ``(N,)``; ``change``: its first-order change after one gradient step,
    ``−η (f(x) − y) ⟨∇_θ Θ(x, x), ∇_θ f(x)⟩`` ``(N,)`` (:meth:`ReluEnsemble.one_step_change`)."""
    theta: torch.Tensor
    change: torch.Tensor


class BlockStructure(NamedTuple):
    """Means of a kernel matrix over a class-sorted probe set (:func:`block_structure`): ``diagonal`` ``Θ̄_d``,
    ``same_class`` ``Θ̄_c`` (same-class blocks, diagonal included), ``other_class`` ``Θ̄_n``."""
    diagonal: float
    same_class: float
    other_class: float

    @property
    def same_ratio(self) -> float:
        """``Θ̄_c / Θ̄_d``."""
        return self.same_class / self.diagonal

    @property
    def other_ratio(self) -> float:
        """``Θ̄_n / Θ̄_d``."""
        return self.other_class / self.diagonal

    @property
    def gap(self) -> float:
        """``(Θ̄_c − Θ̄_n) / Θ̄_d``: how much more alike the kernel finds two points of one class than of two."""
        return (self.same_class - self.other_class) / self.diagonal


# ------------------------------------------------------------------------------------------------------- checks
def _widths(widths) -> tuple[int, ...]:
    """``(n_0, n_1, ..., n_L)``: the input dimension, then the widths of the ``L ≥ 0`` hidden layers."""
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or len(widths) == 0:
        raise ValueError(f"widths must be a sequence (n_0, n_1, ..., n_L) of the input dimension and the hidden "
                         f"widths, got {widths!r}")
    check_depth(len(widths) - 1, "the number of hidden layers, len(widths) - 1")
    return tuple(check_int(n, f"widths[{i}]", low=1) for i, n in enumerate(widths))


# ------------------------------------------------------------------------------------------------- closed forms
def mean_ntk_diagonal(widths, *, weight_var: float, sq_norm: float = 1.0, biases: bool = True) -> NTKParts:
    """``E[Θ(x, x)]`` in closed form, split into its weight and bias parts (module docstring).

    With ``χ = σw²/2`` and ``‖x‖² = sq_norm`` (the chapter's theorem "The mean of the NTK diagonal")::

        E[weight part] = ‖x‖² χ^L (1 + Σ_{j=1}^L n_j / n_0),
        E[bias part]   = 1 + Σ_{l=1}^{L} χ^{L+1-l} Π_{j=1}^{l-1} (1 − 2^{−n_j}).

    Exact for every width (the products are the probabilities that no layer below ``l`` is entirely inactive).

    Parameters
    ----------
    widths : ``(n_0, n_1, ..., n_L)``, the input dimension and the ``L ≥ 0`` hidden widths.
    weight_var : σw² > 0.
    sq_norm : ``‖x‖² ≥ 0``.
    biases : whether the network has trainable biases (initialized at zero); False makes the bias part 0.

    Returns
    -------
    :class:`NTKParts` of two floats.
    """
    widths = _widths(widths)
    r = check_real(weight_var, "weight_var", low=0.0, low_open=True) / 2.0
    sq_norm = check_real(sq_norm, "sq_norm", low=0.0)
    biases = check_bool(biases, "biases")
    depth = len(widths) - 1
    try:
        weights = sq_norm * r ** depth * (1.0 + sum(widths[1:]) / widths[0])
        bias, alive = (1.0, 1.0) if biases else (0.0, 0.0)  # the readout's bias: ∂f/∂b^{L+1} = 1
        for layer in range(1, depth + 1 if biases else 1):
            bias += r ** (depth + 1 - layer) * alive
            alive *= 1.0 - 2.0 ** -widths[layer]
    except OverflowError:
        weights = bias = math.inf
    if not (math.isfinite(weights) and math.isfinite(bias)):
        raise ValueError(f"the mean NTK is not representable in float64 for weight_var={2 * r!r}, "
                         f"sq_norm={sq_norm!r} and depth {depth}; rescale weight_var or sq_norm")
    return NTKParts(weights, bias)


# ------------------------------------------------------------------------------------------- the exact sampler
def sample_ntk_diagonal(n_networks: int, widths, *, weight_var, sq_norm: float = 1.0, seed) -> NTKParts:
    """Exact draws of the weight and bias parts of ``Θ(x, x)`` for ``n_networks`` independent random networks, from
    ``O(L)`` random numbers per network: no weight matrix is formed.

    The chapter's lemma "One layer, forward and backward" shows that the squared norms ``s_l = ‖a^l‖²`` and
    ``d_l = ‖δ^l‖²`` follow a chain of independent chi-squares. With ``k_l ~ Binomial(n_l, ½)`` active units
    (``k_l = 0`` once a layer's input is 0, as PyTorch's ``φ'(0) = 0`` makes it), ``Y_l ~ χ²(k_l)``,
    ``X_l ~ χ²(k_l − 1)`` and ``z ~ N(0, 1)``, all independent given the ``k_l``::

        s_0 = ‖x‖²,   s_l = σw² s_{l−1} Y_l / n_{l−1},   f = (σw² s_L / n_L)^{1/2} z,
        d_{L+1} = 1,  d_l = f² / s_l + σw² d_{l+1} X_l / n_l   (d_l = 0 when k_l = 0),

    and then ``Θ_w = Σ_{l=1}^{L+1} s_{l−1} d_l`` and ``Θ_b = Σ_{l=1}^{L+1} d_l``. The law of ``(Θ_w, Θ_b)`` is that of
    :class:`ReluEnsemble` (with ``biases=True``) at an input of squared norm ``sq_norm``; the cost is ``O(N L)``
    whatever the widths.

    The chain is drawn once, at ``σw² = 2``; by the formulas above ``s_l`` scales as ``χ^l`` and ``d_l`` as
    ``χ^{L+1−l}`` with ``χ = σw²/2``, so every value of ``weight_var`` uses the same random numbers (common random
    numbers), and the weight parts at two values differ exactly by the factor ``(σw'²/σw²)^L`` (the chapter's lemma
    on the scale of the phases).

    Parameters
    ----------
    n_networks : number N ≥ 1 of networks.
    widths : ``(n_0, n_1, ..., n_L)``.
    weight_var : σw² > 0, or a 1-d sequence of S such values.
    sq_norm : ``‖x‖² > 0``.
    seed : int or CPU ``torch.Generator`` (it seeds the numpy generator that draws the chi-squares).

    Returns
    -------
    :class:`NTKParts` of two float64 CPU tensors, ``(N,)`` for one ``weight_var``, ``(S, N)`` for a sequence.
    """
    n_networks = check_int(n_networks, "n_networks", low=1)
    widths = _widths(widths)
    many = isinstance(weight_var, (list, tuple, np.ndarray, torch.Tensor))
    values = as_numpy(weight_var, "weight_var").ravel() if many else np.array([weight_var])
    chis = [np.float64(check_real(v, "weight_var", low=0.0, low_open=True) / 2.0) for v in values.tolist()]
    if many and not chis:
        raise ValueError("weight_var must hold at least one value")
    sq_norm = check_real(sq_norm, "sq_norm", low=0.0, low_open=True)
    depth = len(widths) - 1
    check_memory(8 * 4 * n_networks * (depth + 2) + 16 * len(chis) * n_networks,
                 f"sample_ntk_diagonal with n_networks={n_networks}", "cpu")
    gen = generator(seed)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # an overflow is reported below
        sq, d = _chi_square_chain(n_networks, widths, sq_norm, gen)
        weights = np.stack([chi ** depth * sum(s * e for s, e in zip(sq, d)) for chi in chis])
        biases = np.stack([sum(chi ** (depth + 1 - l) * e for l, e in enumerate(d, start=1)) for chi in chis])
    weights, biases = (finite_result(torch.from_numpy(part), f"{name} part of the NTK", "weight_var or sq_norm")
                       for part, name in ((weights, "weight"), (biases, "bias")))
    return NTKParts(weights if many else weights[0], biases if many else biases[0])


def _chi_square_chain(n: int, widths, sq_norm: float, gen) -> tuple[list, list]:
    """The chain of :func:`sample_ntk_diagonal` at σw² = 2: ``[s_0, ..., s_{L}]`` and ``[d_1, ..., d_{L+1}]``."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
    depth = len(widths) - 1
    sq, active, backward = [np.full(n, sq_norm)], [], []
    for layer in range(1, depth + 1):  # X_l is drawn with the forward pass, so that the stream is fixed
        k = np.where(sq[-1] > 0, rng.binomial(widths[layer], 0.5, size=n), 0)
        sq.append(2.0 * sq[-1] / widths[layer - 1] * 2.0 * rng.standard_gamma(k / 2.0))
        active.append(k)
        backward.append(2.0 * rng.standard_gamma(np.maximum(k - 1, 0) / 2.0))
    f2 = 2.0 * sq[-1] / widths[-1] * rng.standard_normal(n) ** 2
    d = [np.ones(n)]  # d_{L+1}, then downwards
    for layer in range(depth, 0, -1):
        alive = active[layer - 1] > 0
        d.append(np.where(alive, f2 / np.where(alive, sq[layer], 1.0)
                          + 2.0 * d[-1] * backward[layer - 1] / widths[layer], 0.0))
    return sq, d[::-1]


# ------------------------------------------------------------------------------------------------- ensembles
class ReluEnsemble:
    """``N`` independent ReLU networks with one output (module docstring), their weights batched over a leading axis.

    ``weights[l]`` has shape ``(N, n_{l+1}, n_l)`` (the readout ``(N, 1, n_L)``), drawn in that order from the seed
    in float64 on the CPU, as ``N(0, σw²/n_l)``; ``biases[l]`` ``(N, n_{l+1})`` are zeros (trainable biases at
    initialization) or None.

    Parameters
    ----------
    n_networks : N ≥ 1. widths : ``(n_0, n_1, ..., n_L)``. weight_var : σw² > 0.
    biases : True for trainable biases initialized at zero (the papers' networks), False for none.
    seed : int or CPU ``torch.Generator``. device, dtype : where the weights live (default
        :func:`ntkcore.device.resolve`: CPU float64).
    """

    def __init__(self, n_networks: int, widths, *, weight_var: float, biases: bool = True, seed, device=None,
                 dtype=None):
        self.n_networks = check_int(n_networks, "n_networks", low=1)
        self.widths = _widths(widths)
        self.weight_var = check_real(weight_var, "weight_var", low=0.0, low_open=True)
        self.has_biases = check_bool(biases, "biases")
        self.device, self.dtype = resolve(device, dtype)
        shapes = list(zip(list(self.widths[1:]) + [1], self.widths))
        n_params = self.n_networks * sum(o * i + o for o, i in shapes)
        check_memory(8 * n_params, f"ReluEnsemble with n_networks={self.n_networks} ({n_params:.3g} parameters)",
                     "cpu")
        gen = generator(seed)
        self.weights = [(torch.randn(self.n_networks, o, i, generator=gen, dtype=torch.float64)
                         * math.sqrt(self.weight_var / i)).to(self.device, self.dtype) for o, i in shapes]
        self.biases = ([torch.zeros(self.n_networks, o, device=self.device, dtype=self.dtype) for o, _ in shapes]
                       if self.has_biases else None)

    @property
    def depth(self) -> int:
        """The number L of hidden layers."""
        return len(self.widths) - 1

    def _inputs(self, x, name: str) -> torch.Tensor:
        x = as_tensor(x, name, ndim=(1, 2), device=self.device, dtype=self.dtype)
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if x.shape[1] != self.widths[0] or x.shape[0] == 0:
            raise ValueError(f"{name} must have shape (n, {self.widths[0]}) with n >= 1 (or ({self.widths[0]},)), "
                             f"got {tuple(x.shape)}")
        return x

    def _passes(self, x: torch.Tensor):
        """Forward and backward passes of every network on the inputs ``x`` ``(n, d)``: the layers' inputs
        ``a^{l−1}`` ``(N, n_{l−1}, n)`` for l = 1..L+1, the masks ``φ'(h^l)`` ``(N, n_l, n)`` for l = 1..L, the
        sensitivities ``δ^l`` ``(N, n_l, n)`` for l = 1..L+1 and the outputs ``(N, n)``."""
        a = x.T.expand(self.n_networks, -1, -1)
        inputs, masks = [], []
        for layer, w in enumerate(self.weights):
            inputs.append(a)
            h = w @ a if self.biases is None else w @ a + self.biases[layer].unsqueeze(-1)
            if layer < self.depth:
                masks.append((h > 0).to(h.dtype))
                a = h * masks[-1]
        delta = torch.ones_like(h)
        deltas = [delta]
        for layer in range(self.depth, 0, -1):
            delta = (self.weights[layer].transpose(1, 2) @ delta) * masks[layer - 1]
            deltas.append(delta)
        return inputs, masks, deltas[::-1], h[:, 0, :]

    def ntk(self, x, *, parameterization: str = "standard") -> torch.Tensor:
        """The NTK of every network on the inputs ``x`` ``(n, d)``: ``(N, n, n)``.

        ``"standard"``: ``Σ_l (a^{l−1}·a^{l−1}′)(δ^l·δ^l′)`` plus, with biases, ``Σ_l δ^l·δ^l′`` (module docstring).
        ``"ntk"``: the same functions in the NTK parameterization with ``σb = 0`` (each weight term times
        ``σw²/n_{l−1}``; a bias of variance 0 has the multiplier ``σb = 0`` there and adds nothing), whose NTK
        converges to ``ntkcore.kernels.fc(x, depth=L, weight_var=σw²).ntk`` as the widths grow.
        """
        parameterization = check_choice(parameterization, "parameterization", PARAMETERIZATIONS)
        x = self._inputs(x, "x")
        with torch.no_grad():
            inputs, _, deltas, _ = self._passes(x)
        out = 0.0
        for layer, (a, d) in enumerate(zip(inputs, deltas)):
            grad_gram = d.transpose(1, 2) @ d
            factor = self.weight_var / self.widths[layer] if parameterization == "ntk" else 1.0
            out = out + factor * (a.transpose(1, 2) @ a) * grad_gram
            if self.has_biases and parameterization == "standard":
                out = out + grad_gram
        return finite_result(out, "NTK", "x or weight_var")

    def one_step_change(self, x, *, target: float = 0.0, lr: float = 1.0) -> OneStep:
        """``Θ(x, x)`` and its first-order change after one gradient step on ``½(f(x) − y)²`` with step ``η``.

        The step moves the parameters by ``−η (f − y) ∇_θ f``, so to first order in ``η``
        ``ΔΘ(x, x) = −η (f(x) − y) ⟨∇_θ Θ(x, x), ∇_θ f(x)⟩`` (Hanin and Nica 2020; the chapter's section "One gradient
        step"). ``⟨∇Θ, ∇f⟩`` is the derivative of ``Θ = Σ_l (‖a^{l−1}‖² + β)‖δ^l‖²`` (β = 1 with
        biases) along ``v = ∇f``, whose parts are ``δ^l a^{l−1ᵀ}`` and ``δ^l``; with the ReLU masks fixed
        (``φ'' = 0``), forward-mode differentiation of the two passes gives
        ``ḣ^l = (‖a^{l−1}‖² + β) δ^l + W^l ȧ^{l−1}``, ``ȧ^l = φ'(h^l) ḣ^l``,
        ``δ̇^l = φ'(h^l)(‖δ^{l+1}‖² a^l + W^{l+1ᵀ} δ̇^{l+1})`` and
        ``⟨∇Θ, ∇f⟩ = Σ_l 2(a^{l−1}·ȧ^{l−1})‖δ^l‖² + 2(‖a^{l−1}‖² + β)(δ^l·δ̇^l)``: two matrix-vector products per
        layer. Every network steps on the same sample ``(x, target)``.

        Parameters
        ----------
        x : one input ``(d,)`` or ``(1, d)``. target : the label y. lr : η > 0.

        Returns
        -------
        :class:`OneStep` of two tensors ``(N,)``, detached.
        """
        x = self._inputs(x, "x")
        if x.shape[0] != 1:
            raise ValueError(f"x must be one input of shape ({self.widths[0]},) or (1, {self.widths[0]}), "
                             f"got {tuple(x.shape)}")
        target = check_real(target, "target")
        lr = check_real(lr, "lr", low=0.0, low_open=True)
        inputs, masks, deltas, out = self._passes(x)
        beta = 1.0 if self.has_biases else 0.0
        sq_in = [(a ** 2).sum(1, keepdim=True) for a in inputs]  # ‖a^{l−1}‖², (N, 1, 1)
        sq_delta = [(d ** 2).sum(1, keepdim=True) for d in deltas]  # ‖δ^l‖²
        # Tangents along v = ∇f, whose weight and bias parts are δ^l a^{l−1ᵀ} and δ^l (masks fixed: φ'' = 0).
        dot_a = [torch.zeros_like(inputs[0])]
        for layer in range(self.depth):
            dot_h = (sq_in[layer] + beta) * deltas[layer] + self.weights[layer] @ dot_a[-1]
            dot_a.append(dot_h * masks[layer])
        dot_delta = [torch.zeros_like(deltas[-1])]
        for layer in range(self.depth, 0, -1):
            back = sq_delta[layer] * inputs[layer] + self.weights[layer].transpose(1, 2) @ dot_delta[-1]
            dot_delta.append(back * masks[layer - 1])
        dot_delta = dot_delta[::-1]
        inner = sum(2 * (a * da).sum(1, keepdim=True) * d2 + 2 * (s2 + beta) * (d * dd).sum(1, keepdim=True)
                    for a, da, d2, s2, d, dd in zip(inputs, dot_a, sq_delta, sq_in, deltas, dot_delta))
        theta = sum((s2 + beta) * d2 for s2, d2 in zip(sq_in, sq_delta))
        f = out[:, 0]
        theta = finite_result(theta[:, 0, 0], "NTK", "x or weight_var")
        return OneStep(theta, finite_result(-lr * (f - target) * inner[:, 0, 0], "one-step change",
                                            "x, weight_var, target or lr"))

    def with_weight_var(self, weight_var: float) -> ReluEnsemble:
        """The same draws at another σw²: every weight times ``√(σw'²/σw²)`` (common random numbers across σw²)."""
        weight_var = check_real(weight_var, "weight_var", low=0.0, low_open=True)
        other = object.__new__(ReluEnsemble)
        other.__dict__.update(self.__dict__)
        factor = math.sqrt(weight_var / self.weight_var)
        other.weight_var = weight_var
        other.weights = [w * factor for w in self.weights]
        other.biases = None if self.biases is None else [b.clone() for b in self.biases]
        return other

    def member(self, k: int) -> MLP:
        """Network ``k`` as an :class:`ntkcore.models.MLP` in the standard parameterization (with its zero biases
        when the ensemble has them), on the ensemble's device and dtype."""
        k = check_int(k, "k", low=0, high=self.n_networks - 1)
        if len(set(self.widths[1:])) > 1:
            raise ValueError(f"member() needs hidden layers of one width (an MLP), got widths {self.widths}")
        net = relu_network(self.widths[0], self.widths[1] if self.depth else 1, self.depth,
                           weight_var=self.weight_var, biases=self.has_biases, seed=0, device=self.device,
                           dtype=self.dtype)
        layers = [m for m in net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for layer, w in zip(layers, self.weights):
                layer.weight.copy_(w[k])
        return net


# ------------------------------------------------------------------------------------------------ one network
def relu_network(in_features: int, width: int, depth: int, out_features: int = 1, *, weight_var: float,
                 biases: bool = True, seed, device=None, dtype=None) -> MLP:
    """One network of the module docstring as an :class:`ntkcore.models.MLP` in the standard parameterization
    (``W ~ N(0, σw²/fan_in)``, drawn from ``seed`` as the MLP draws them) with, for ``biases=True``, a trainable
    bias initialized at zero in every dense layer (bias scale 1; in the NTK parameterization a bias of variance 0
    would be multiplied by σb = 0 and never move). Arguments as :class:`ntkcore.models.MLP`."""
    biases = check_bool(biases, "biases")
    net = MLP(in_features, width, depth, out_features, activation="relu", weight_var=weight_var, bias_var=0.0,
              parameterization="standard", seed=seed, device=device, dtype=dtype)
    if biases:
        for layer in net:
            if isinstance(layer, ScaledLinear):
                layer.bias = nn.Parameter(torch.zeros(layer.out_features, device=layer.weight.device,
                                                      dtype=layer.weight.dtype))
    return net


# --------------------------------------------------------------------------------------------- block structure
def block_structure(kernel, labels) -> BlockStructure:
    """``Θ̄_d``, ``Θ̄_c`` and ``Θ̄_n`` of a kernel matrix on a probe set with the same number of points per class.

    ``Θ̄_d`` is the mean of the diagonal, ``Θ̄_c`` the mean of the entries ``Θ(x_i, x_j)`` with ``y_i = y_j``
    (the same-class blocks of the class-sorted matrix, diagonal included), ``Θ̄_n`` the mean of those with
    ``y_i ≠ y_j`` (Seleznova and Kutyniok 2022). Equal class sizes make the mean of the same-class
    entries equal to the mean of the block means, so that no class weighs more than another.

    Parameters
    ----------
    kernel : symmetric ``(n, n)`` matrix, numpy or torch, with a positive mean diagonal.
    labels : ``(n,)`` integer classes ``0..C−1``, at least two classes, each with the same number of points.

    Returns
    -------
    :class:`BlockStructure` of floats.
    """
    k = square(kernel, "kernel", symmetric=True, nonempty=True)
    y = class_labels(labels, "labels", k.shape[0], of="kernel row").cpu().numpy()
    counts = np.bincount(y)
    present = counts[counts > 0]
    if present.size < 2:
        raise ValueError(f"labels must hold at least two classes, got {present.size}")
    if np.any(present != present[0]):
        raise ValueError(f"labels must give every class the same number of points (the block means are then "
                         f"entry means), got counts {dict(enumerate(counts.tolist()))}")
    k = k.detach().to("cpu", torch.float64).numpy()
    same = y[:, None] == y[None, :]
    diagonal = float(np.mean(np.diag(k)))
    if not diagonal > 0:
        raise ValueError(f"kernel must have a positive mean diagonal (the ratios divide by it), got {diagonal!r}")
    return BlockStructure(diagonal, float(k[same].mean()), float(k[~same].mean()))
