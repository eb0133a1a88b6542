"""Langevin dynamics of ensembles of finite-width networks in the NDK paper's parameterization.

The network (formulas.md section 5; NDK paper Eqs. 1-2): ``f(x) = N^(-1/2) a·x^L``,
``x^l = φ(N_{l-1}^(-1/2) W^l x^{l-1})``, ``x^0 = x ∈ R^{N0}``, every hidden layer of width ``N``, no biases.
Training (paper Eqs. 3-4): cost ``E = ½‖f_train − y‖² + (T/2σ²)‖θ‖²`` from ``θ(0) ~ N(0, σ0² I)``, integrated by
Euler-Maruyama, ``θ ← θ − dt ∇E + √(2T dt) ξ``, ``ξ ~ N(0, I)``.

An ensemble of ``n_networks`` independent networks advances together: every weight tensor has a leading ensemble
axis and each step is a few batched matrix products (``torch.matmul``/``bmm``); gradients come from an analytic
backward pass through the batched MLP. Its ensemble mean estimates the mean predictor of :mod:`ntkcore.ndk`
(paper Eqs. 14-15), with an ``O(1/N)`` finite-width bias and an ``O(dt)`` discretization bias.

Simulations default to float32 (the statistical error of an ensemble is far above float32 rounding); pass
``dtype=torch.float64`` for exact gradient checks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import as_tensor, check_choice, check_int, check_real, generator
from .device import resolve

ACTIVATIONS = ("relu", "erf", "identity")
PARTS = ("train", "test")


def _phi(activation, h):
    """``(φ(h), φ′(h))`` elementwise."""
    if activation == "relu":
        return torch.relu(h), (h > 0).to(h.dtype)
    if activation == "erf":
        return torch.erf(h), (2 / math.sqrt(math.pi)) * torch.exp(-h * h)
    return h, torch.ones_like(h)


class MLPEnsemble:
    """``n_networks`` fully connected networks of the NDK paper (Eqs. 1-2) held as batched weight tensors.

    Attributes: ``weights``, the list ``[W^1 (E, N, N0), W^2 (E, N, N), …, W^L (E, N, N), a (E, N)]`` (the readout
    last). Construct with :meth:`init` (``θ ~ N(0, σ0²)``) or from a list of tensors.
    """

    def __init__(self, weights, activation):
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        if len(weights) < 2:
            raise ValueError("weights must hold at least W^1 and the readout a")
        self.weights = list(weights)

    @classmethod
    def init(cls, n_networks, n_in, width, L, activation, sigma0_sq, *, seed=0, device=None, dtype=torch.float32):
        """Draw ``θ ~ N(0, σ0² I)`` for ``n_networks`` networks with ``L`` hidden layers of ``width`` units."""
        E = check_int(n_networks, "n_networks", low=1)
        n_in = check_int(n_in, "n_in", low=1)
        N = check_int(width, "width", low=1)
        L = check_int(L, "L", low=1)
        s0 = math.sqrt(check_real(sigma0_sq, "sigma0_sq", low=0.0, low_open=True))
        dev, dt = resolve(device, dtype)
        gen = generator(seed, dev)
        shapes = [(E, N, n_in)] + [(E, N, N)] * (L - 1) + [(E, N)]
        return cls([s0 * torch.randn(s, generator=gen, device=dev, dtype=dt) for s in shapes], activation)

    @property
    def depth(self):
        return len(self.weights) - 1

    def forward(self, x, keep=False):
        """Outputs ``f (E, n)`` on inputs ``x (n, N0)`` (paper Eqs. 1-2). With ``keep``, also the list of
        pre-activations and activations ``[(h^l, x^l)]`` (each ``(E, n, N)``) for :meth:`gradient`."""
        h = torch.matmul(x, self.weights[0].transpose(1, 2)) / math.sqrt(x.shape[1])
        cache = []
        for layer in range(self.depth):
            if layer:
                h = torch.bmm(act, self.weights[layer].transpose(1, 2)) / math.sqrt(act.shape[2])
            act, dact = _phi(self.activation, h)
            if keep:
                cache.append((act, dact))
        a = self.weights[-1]
        f = torch.bmm(act, a[:, :, None])[:, :, 0] / math.sqrt(a.shape[1])
        return (f, cache) if keep else f

    def gradient(self, x, y):
        """Gradients of ``½‖f(x) − y‖²`` for every network: list shaped like ``weights``; also ``f (E, n)``.

        Analytic backward pass: ``∂/∂a = N^{-1/2} Σ_μ δ_μ x^L_μ`` with ``δ = f − y``;
        ``g^L = N^{-1/2} δ a ⊙ φ′(h^L)``, ``∂/∂W^l = N_{l-1}^{-1/2} (g^l)ᵀ x^{l-1}``,
        ``g^{l-1} = N_{l-1}^{-1/2} (g^l W^l) ⊙ φ′(h^{l-1})``.
        """
        f, cache = self.forward(x, keep=True)
        delta = f - y
        a = self.weights[-1]
        s = 1 / math.sqrt(a.shape[1])
        grads = [None] * len(self.weights)
        grads[-1] = torch.bmm(delta[:, None, :], cache[-1][0])[:, 0, :] * s
        g = delta[:, :, None] * a[:, None, :] * s  # dloss/dx^L, (E, n, N)
        for layer in range(self.depth - 1, -1, -1):
            g = g * cache[layer][1]  # dloss/dh^l
            prev = cache[layer - 1][0] if layer else x
            s = 1 / math.sqrt(prev.shape[-1])
            if layer:
                grads[layer] = torch.bmm(g.transpose(1, 2), prev) * s
                g = torch.bmm(g, self.weights[layer]) * s
            else:
                grads[layer] = torch.matmul(g.transpose(1, 2), prev) * s
        return grads, f


@dataclass
class LangevinResult:
    """Outputs of a Langevin ensemble at the recorded times.

    times : ``(G,)`` recorded times (multiples of ``dt``: each requested time rounded to the nearest step).
    outputs_train : ``(E, G, P)``; outputs_test : ``(E, G, n_test)``.
    weights : None, or the list ``[W^1 (E, G, N, N0), …, a (E, G, N)]`` at the recorded times.
    """

    times: torch.Tensor
    outputs_train: torch.Tensor
    outputs_test: torch.Tensor
    weights: list | None = None

    def _part(self, part):
        return self.outputs_train if check_choice(part, "part", PARTS) == "train" else self.outputs_test

    def mean(self, part="test"):
        """Ensemble mean ``(G, n)`` of the ``'train'`` or ``'test'`` outputs (float64)."""
        return self._part(part).double().mean(0)

    def standard_error(self, part="test"):
        """Standard error of :meth:`mean`, ``std / √E`` with the unbiased std, ``(G, n)`` (needs E ≥ 2)."""
        out = self._part(part).double()
        if out.shape[0] < 2:
            raise ValueError("the standard error needs an ensemble of at least 2 networks")
        return out.std(0) / math.sqrt(out.shape[0])


def simulate(x_train, y, x_test, record_times, *, L, activation, width, sigma0_sq, sigma_sq, T, dt,
             n_networks, seed=0, record_weights=False, freeze_readout_at=None, loss_gradient_after_freeze=False,
             device=None, dtype=torch.float32):
    """Run Langevin dynamics (NDK paper Eq. 4) for an ensemble of networks and record their outputs.

    Parameters
    ----------
    x_train : ``(P, N0)``; y : ``(P,)``; x_test : ``(n_test, N0)`` (may have 0 rows).
    record_times : times ≥ 0, increasing; each is rounded to the nearest multiple of ``dt``.
    L, activation, width : hidden layers, ``'relu' | 'erf' | 'identity'``, hidden width ``N``.
    sigma0_sq, sigma_sq, T : initial variance σ0², prior variance σ², temperature ``T ≥ 0``.
    dt : Euler-Maruyama step. n_networks : ensemble size ``E``. seed : int or torch.Generator (init and noise).
    record_weights : also keep every weight tensor at the recorded times (memory ``E·G·#params``).
    freeze_readout_at : from this time on (rounded to a step) the readout ``a`` stops moving (no gradient, decay or
        noise) while the hidden weights keep diffusing — the representational-drift protocol of formulas.md section 5.
    loss_gradient_after_freeze : whether the hidden weights still feel the loss gradient after the freeze (the
        paper's drift scenario has none: pure prior diffusion ``−(T/σ²)θ dt + √(2T dt) ξ``).
    device, dtype : where and in which precision to simulate (default float32).

    Returns :class:`LangevinResult`.
    """
    check_choice(activation, "activation", ACTIVATIONS)
    dev, dtp = resolve(device if device is not None else (x_train.device if isinstance(x_train, torch.Tensor)
                                                           else None), dtype)
    x_train = as_tensor(x_train, "x_train", ndim=2, device=dev, dtype=dtp)
    x_test = as_tensor(x_test, "x_test", ndim=2, device=dev, dtype=dtp)
    y = as_tensor(y, "y", ndim=1, device=dev, dtype=dtp)
    if y.shape[0] != x_train.shape[0]:
        raise ValueError(f"y must have one label per training input ({x_train.shape[0]}), got {y.shape[0]}")
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_test must have N0={x_train.shape[1]} columns, got {x_test.shape[1]}")
    sigma_sq = check_real(sigma_sq, "sigma_sq", low=0.0, low_open=True)
    T = check_real(T, "T", low=0.0)
    dt = check_real(dt, "dt", low=0.0, low_open=True)
    rt = as_tensor(record_times, "record_times", ndim=(0, 1), dtype=torch.float64, device="cpu").reshape(-1)
    steps = torch.round(rt / dt).to(torch.int64)
    if rt.numel() == 0 or bool((rt < 0).any()) or bool((steps[1:] <= steps[:-1]).any()):
        raise ValueError("record_times must be non-empty, >= 0 and increasing by at least dt")
    freeze = None
    if freeze_readout_at is not None:
        freeze = round(check_real(freeze_readout_at, "freeze_readout_at", low=0.0) / dt)
    gen = generator(seed, dev)
    net = MLPEnsemble.init(n_networks, x_train.shape[1], width, L, activation, sigma0_sq, seed=gen,
                           device=dev, dtype=dtp)
    x_all = torch.cat([x_train, x_test])
    P, G = x_train.shape[0], steps.numel()
    out = torch.empty(n_networks, G, x_all.shape[0], dtype=dtp, device=dev)
    saved = [torch.empty((n_networks, G) + w.shape[1:], dtype=dtp, device=dev) for w in net.weights] \
        if record_weights else None
    decay, noise_scale = 1.0 - dt * T / sigma_sq, math.sqrt(2.0 * T * dt)
    noise = [torch.empty_like(w) for w in net.weights]
    rec = steps.tolist()
    k = 0
    for step in range(rec[-1] + 1):
        while k < G and rec[k] == step:
            out[:, k] = net.forward(x_all)
            if saved is not None:
                for s, w in zip(saved, net.weights):
                    s[:, k] = w
            k += 1
        if step == rec[-1]:
            break
        frozen = freeze is not None and step >= freeze
        grads, _ = net.gradient(x_train, y) if (not frozen or loss_gradient_after_freeze) else (None, None)
        n_move = len(net.weights) - (1 if frozen else 0)
        for j in range(n_move):
            w = net.weights[j]
            w.mul_(decay)
            if grads is not None:
                w.add_(grads[j], alpha=-dt)
            if noise_scale:
                torch.randn(w.shape, generator=gen, out=noise[j])
                w.add_(noise[j], alpha=noise_scale)
    times = steps.to(torch.float64) * dt
    return LangevinResult(times, out[:, :, :P], out[:, :, P:], saved)
