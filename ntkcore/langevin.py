"""Langevin dynamics of ensembles of finite-width networks in the NDK paper's parameterization.

The network (NDK paper Eqs. 1-2; book Chapter 6): ``f(x) = N^(-1/2) a·x^L``,
``x^l = φ(N_{l-1}^(-1/2) W^l x^{l-1})``, ``x^0 = x ∈ R^{N0}``, every hidden layer of width ``N``, no biases.
Training (paper Eqs. 3-4): cost ``E = ½‖f_train − y‖² + (T/2σ²)‖θ‖²`` from ``θ(0) ~ N(0, σ0² I)``, integrated by
Euler-Maruyama, ``θ ← θ − dt ∇E + √(2T dt) ξ``, ``ξ ~ N(0, I)``.

An ensemble of ``n_networks`` independent networks advances together: every weight tensor has a leading ensemble
axis and each step is a few batched matrix products (``torch.mm``/``bmm``); gradients come from an analytic
backward pass through the batched MLP, and each weight's update ``θ ← (1 − dt T/σ²) θ − dt ∇E + √(2T dt) ξ`` is
fused into the product that computes its gradient (``baddbmm_`` with ``beta = 1 − dt T/σ²``), plus one pass that
adds the noise. On the CPU a large noise draw is split into fixed chunks with their own generators (seeded from
``seed``), filled by worker threads; results depend on the seed only, not on the number of threads.

The ensemble mean estimates the mean predictor of :mod:`ntkcore.ndk` (paper Eqs. 14-15), with an ``O(1/N)``
finite-width bias and an ``O(dt)`` discretization bias.

Simulations default to float32 (the statistical error of an ensemble is far above float32 rounding); pass
``dtype=torch.float64`` for exact gradient checks.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from . import activations
from ._checks import as_tensor, check_choice, check_int, check_real, generator, inputs, labels
from .device import resolve

ACTIVATIONS = activations.CLOSED_FORM_NAMES
PARTS = ("train", "test")


class MLPEnsemble:
    """``n_networks`` fully connected networks of the NDK paper (Eqs. 1-2) held as batched weight tensors.

    Attributes: ``weights``, the list ``[W^1 (E, N, N0), W^2 (E, N, N), …, W^L (E, N, N), a (E, N)]`` (the readout
    last). Construct with :meth:`init` (``θ ~ N(0, σ0²)``) or from a list of tensors.

    Internally the first layer, whose input the ensemble shares, is one matrix product
    ``(n, N0) @ (N0, E·N)``; the ``N^(-1/2)`` factors ride on the ``alpha`` of the matrix products rather than on
    extra passes over memory.
    """

    def __init__(self, weights, activation):
        self.phi = activations.get(activation, closed_form=True)
        self.activation = self.phi.name
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

    def _hidden(self, xs):
        """Forward through the hidden layers on ``xs = x / √N0 (n, N0)``: list of ``(h^l, x^l)``, each
        ``(E, n, N)`` (``h^l`` is None for ReLU, whose ``x^l`` overwrote it; layer 1's are strided views of one
        ``(n, E·N)`` product)."""
        W1 = self.weights[0]
        E, N = W1.shape[:2]
        h = torch.mm(xs, W1.reshape(E * N, -1).t()).view(-1, E, N).transpose(0, 1)
        layers = []
        for layer in range(self.depth):
            if layer:
                prev, w = layers[-1][1], self.weights[layer]
                h = torch.baddbmm(prev.new_empty(E, prev.shape[1], w.shape[1]), prev, w.transpose(1, 2),
                                  beta=0.0, alpha=1 / math.sqrt(prev.shape[2]))
            act = self.phi.apply_(h)  # in place for ReLU, whose φ′ is then read off φ(h)
            layers.append((None if self.phi.in_place else h, act))
        return layers

    def _readout(self, act):
        a = self.weights[-1]
        return torch.bmm(act, a[:, :, None])[:, :, 0].mul_(1 / math.sqrt(a.shape[1]))

    def forward(self, x, keep=False):
        """Outputs ``f (E, n)`` on inputs ``x (n, N0)`` (paper Eqs. 1-2). With ``keep``, also the list of the hidden
        layers' activations ``[x^1, …, x^L]``, each ``(E, n, N)``."""
        layers = self._hidden(x / math.sqrt(x.shape[1]))
        f = self._readout(layers[-1][1])
        return (f, [act for _, act in layers]) if keep else f

    def _backprop(self, xs, y, update):
        """Forward and backward pass on ``xs = x / √N0 (n, N0)``; returns ``f (E, n)``.

        The gradient of ``½‖f − y‖²`` with respect to ``weights[j]`` is handed to ``update(j, A, B, alpha)`` as the
        batched product ``alpha · A @ B`` (``(E, N, 1)`` for the readout), after the last use of ``weights[j]``, so
        ``update`` may change it in place. Analytic backward pass: ``∂/∂a = N^{-1/2} Σ_μ δ_μ x^L_μ`` with
        ``δ = f − y``; ``g^L = N^{-1/2} δ a ⊙ φ′(h^L)``, ``∂/∂W^l = N_{l-1}^{-1/2} (g^l)ᵀ x^{l-1}``,
        ``g^{l-1} = N_{l-1}^{-1/2} (g^l W^l) ⊙ φ′(h^{l-1})``; ``g`` is carried as ``c · g̃``, the scalar ``c``
        folded into the products' ``alpha``.
        """
        layers = self._hidden(xs)
        f = self._readout(layers[-1][1])
        delta = f - y
        a = self.weights[-1]
        c = 1 / math.sqrt(a.shape[1])
        g = delta[:, :, None] * a[:, None, :]  # dloss/dx^L / c, (E, n, N); reads a before its update
        update(self.depth, layers[-1][1].transpose(1, 2), delta[:, :, None], c)
        for layer in range(self.depth - 1, -1, -1):
            h, act = layers[layer]
            g, k = self.phi.mul_derivative_(g, h, act)  # dloss/dh^l / (c k)
            c *= k
            if layer:
                prev = layers[layer - 1][1]
                s = 1 / math.sqrt(prev.shape[2])
                g_prev = torch.bmm(g, self.weights[layer])
                update(layer, g.transpose(1, 2), prev, c * s)
                g, c = g_prev, c * s
            else:
                update(0, g.transpose(1, 2), xs.expand(g.shape[0], -1, -1), c)
        return f

    def gradient(self, x, y):
        """Gradients of ``½‖f(x) − y‖²`` for every network: list shaped like ``weights``; also ``f (E, n)``
        (analytic backward pass, see :meth:`_backprop`)."""
        grads = [None] * len(self.weights)

        def keep(j, A, B, alpha):
            grads[j] = torch.bmm(A, B).mul_(alpha).view(self.weights[j].shape)

        f = self._backprop(x / math.sqrt(x.shape[1]), y, keep)
        return grads, f


_NOISE_CHUNK = 1 << 16  # Gaussian draws per parallel chunk, at least
_NOISE_MAX_CHUNKS = 16


class _Noise:
    """A fresh ``N(0, 1)`` tensor for every weight, drawn each step in a fixed order into one reused buffer.

    A CPU generator (mt19937) samples serially; a large draw on the CPU is therefore split into chunks of at
    least ``_NOISE_CHUNK`` numbers, each with its own generator seeded once from ``gen``, and the chunks are
    filled by worker threads. The split depends only on the sizes, so a seed gives the same noise for any number
    of threads. Small draws, and draws on other devices, come straight from ``gen`` one weight after another."""

    def __init__(self, weights, gen, device, dtype):
        sizes = [w.numel() for w in weights]
        self.flat = torch.empty(sum(sizes), device=device, dtype=dtype)
        self.views = [v.view(w.shape) for v, w in zip(self.flat.split(sizes), weights)]
        self.offsets = [0, *itertools.accumulate(sizes)]
        self.gen = gen
        self.parallel = device.type == "cpu" and self._chunks(self.flat.numel()) > 1
        self.pool = None
        if self.parallel:
            seeds = torch.randint(0, 2**62, (_NOISE_MAX_CHUNKS,), generator=gen, device=device).tolist()
            self.gens = [torch.Generator().manual_seed(s) for s in seeds]
            workers = min(_NOISE_MAX_CHUNKS, torch.get_num_threads())
            if workers > 1:
                from concurrent.futures import ThreadPoolExecutor

                self.pool = ThreadPoolExecutor(workers, thread_name_prefix="ntkcore-noise")

    @staticmethod
    def _chunks(n):
        return min(_NOISE_MAX_CHUNKS, n // _NOISE_CHUNK)

    def draw(self, n_move):
        """Fill the noise of ``weights[:n_move]``; returns the list of views."""
        n = self.offsets[n_move]
        k = self._chunks(n) if self.parallel else 1
        if k <= 1:
            for v in self.views[:n_move]:
                torch.randn(v.shape, generator=self.gen, out=v)
            return self.views
        bounds = [n * i // k for i in range(k + 1)]
        jobs = [(self.flat[lo:hi], g) for lo, hi, g in zip(bounds[:-1], bounds[1:], self.gens)]

        def fill(job):
            out, g = job
            torch.randn(out.shape, generator=g, out=out)

        if self.pool is None:
            for job in jobs:
                fill(job)
        else:
            list(self.pool.map(fill, jobs))
        return self.views

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


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
        noise) while the hidden weights keep diffusing — the representational-drift protocol of book Chapter 7.
    loss_gradient_after_freeze : whether the hidden weights still feel the loss gradient after the freeze (the
        paper's drift scenario has none: pure prior diffusion ``−(T/σ²)θ dt + √(2T dt) ξ``).
    device, dtype : where and in which precision to simulate (default float32).

    Returns :class:`LangevinResult`.
    """
    activations.get(activation, closed_form=True)
    dev, dtp = resolve(device if device is not None else (x_train.device if isinstance(x_train, torch.Tensor)
                                                           else None), dtype)
    x_train, x_test = inputs(x_train, x_test, device=dev, dtype=dtp, names=("x_train", "x_test"),
                             feature="input dimension N0")
    y = labels(y, x_train.shape[0], like=x_train)
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
    xs_train, xs_all = x_train / math.sqrt(x_train.shape[1]), x_all / math.sqrt(x_all.shape[1])
    out = torch.empty(n_networks, G, x_all.shape[0], dtype=dtp, device=dev)
    saved = [torch.empty((n_networks, G) + w.shape[1:], dtype=dtp, device=dev) for w in net.weights] \
        if record_weights else None
    decay, noise_scale = 1.0 - dt * T / sigma_sq, math.sqrt(2.0 * T * dt)
    weights, n_layers = net.weights, len(net.weights)
    noise = _Noise(weights, gen, dev, dtp) if noise_scale else None
    xi = None
    moving = n_layers

    def update(j, A, B, alpha):
        """θ_j ← decay·θ_j − dt·alpha·A@B + √(2T dt)·ξ_j: the decay rides on the product's ``beta``."""
        if j >= moving:
            return
        w = weights[j]
        (w[:, :, None] if j == n_layers - 1 else w).baddbmm_(A, B, beta=decay, alpha=-dt * alpha)
        if xi is not None:
            w.add_(xi[j], alpha=noise_scale)

    rec = steps.tolist()
    k = 0
    try:
        for step in range(rec[-1] + 1):
            while k < G and rec[k] == step:
                out[:, k] = net._readout(net._hidden(xs_all)[-1][1])
                if saved is not None:
                    for s, w in zip(saved, weights):
                        s[:, k] = w
                k += 1
            if step == rec[-1]:
                break
            frozen = freeze is not None and step >= freeze
            moving = n_layers - (1 if frozen else 0)
            xi = noise.draw(moving) if noise is not None else None
            if not frozen or loss_gradient_after_freeze:
                net._backprop(xs_train, y, update)
            else:  # pure prior diffusion of the hidden weights
                for j in range(moving):
                    weights[j].mul_(decay)
                    if xi is not None:
                        weights[j].add_(xi[j], alpha=noise_scale)
    finally:
        if noise is not None:
            noise.close()
    times = steps.to(torch.float64) * dt
    return LangevinResult(times, out[:, :, :P], out[:, :, P:], saved)
