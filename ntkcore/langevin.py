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
``dtype=torch.float64`` for exact gradient checks. The inputs are converted to that dtype (an explicit conversion,
see the policy for mixed inputs of :mod:`ntkcore._checks`); tensors must share the device of ``x_train``.

Sizes are bounded: ``L ≤ 1000`` hidden layers, at most :data:`MAX_STEPS` Euler-Maruyama steps, and the weights,
noise, activations and recorded outputs must fit in the device's memory.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from . import activations
from ._checks import (as_tensor, check_bool, check_choice, check_depth, check_int, check_memory, check_real, generator,
                      inputs, labels)
from .device import resolve

ACTIVATIONS = activations.CLOSED_FORM_NAMES
PARTS = ("train", "test")
MAX_STEPS = 10**8
"""Most Euler-Maruyama steps one :func:`simulate` call runs (``record_times[-1] / dt``): even the smallest ensemble
needs tens of microseconds per step, so 10⁸ steps are about an hour; a larger count is almost always a wrong ``dt``
or time unit (and beyond 2⁶³ it does not even fit the step counter)."""


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
        L = check_depth(L, "L", low=1)
        s0 = math.sqrt(check_real(sigma0_sq, "sigma0_sq", low=0.0, low_open=True))
        dev, dt = resolve(device, dtype)
        check_memory(_n_params(E, n_in, N, L) * torch.finfo(dt).bits // 8,
                     f"an ensemble of {E} networks of width {N} and {L} hidden layers", dev)
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


def _n_params(E, n_in, N, L):
    """Number of weights of an ensemble: ``E (N N0 + (L − 1) N² + N)``."""
    return E * (N * n_in + (L - 1) * N * N + N)


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
    x_train : ``(P, N0)``; y : ``(P,)``; x_test : ``(n_test, N0)`` (may have 0 rows; None: no test inputs). Converted
        to ``dtype``; tensors must be on the device of ``x_train`` unless ``device`` is given.
    record_times : times ≥ 0, increasing; each is rounded to the nearest multiple of ``dt``, and the last one is at
        most :data:`MAX_STEPS` steps.
    L, activation, width : hidden layers (``1 ≤ L ≤ 1000``), ``'relu' | 'erf' | 'identity'``, hidden width ``N``.
    sigma0_sq, sigma_sq, T : initial variance σ0², prior variance σ², temperature ``T ≥ 0``.
    dt : Euler-Maruyama step. n_networks : ensemble size ``E``. seed : int or torch.Generator (init and noise).
    record_weights : also keep every weight tensor at the recorded times (memory ``E·G·#params``).
    freeze_readout_at : from this time on (rounded to a step) the readout ``a`` stops moving (no gradient, decay or
        noise) while the hidden weights keep diffusing — the representational-drift protocol of book Chapter 7.
        None: never.
    loss_gradient_after_freeze : whether the hidden weights still feel the loss gradient after the freeze (the
        paper's drift scenario has none: pure prior diffusion ``−(T/σ²)θ dt + √(2T dt) ξ``).
    device, dtype : where and in which precision to simulate (default: the device of ``x_train``, float32).

    Returns :class:`LangevinResult`. A simulation that diverges (NaN or inf outputs, e.g. ``dt`` too large for
    the kernel's largest eigenvalue) raises a FloatingPointError instead of returning them. A step that cannot be
    stable, ``dt·T/σ² > 2`` (each step multiplies the weights by ``|1 − dt·T/σ²| > 1``), or a noise scale
    ``√(2T dt)`` beyond ``dtype``'s range is a ValueError naming ``T``, ``sigma_sq`` and ``dt`` before anything
    runs. The simulation is a sampler updated in place, not a differentiable function: inputs that require grad are a
    ValueError (pass ``.detach()``).
    """
    _no_grad(x_train=x_train, y=y, x_test=x_test, record_times=record_times)
    activations.get(activation, closed_form=True)
    dtp = resolve(None, dtype)[1]
    x_train, x_test = inputs(x_train, x_test, device=device, dtype=dtp, names=("x_train", "x_test"),
                             feature="input dimension N0")
    x_test = x_train[:0] if x_test is None else x_test
    dev = x_train.device
    y = labels(y, x_train.shape[0], like=x_train, like_name="x_train", device=device, dtype=dtp)
    sigma_sq = check_real(sigma_sq, "sigma_sq", low=0.0, low_open=True)
    T = check_real(T, "T", low=0.0)
    dt = check_real(dt, "dt", low=0.0, low_open=True)
    _check_step(T, sigma_sq, dt, dtp)
    steps = _record_steps(record_times, dt, x_train, device)
    record_weights = check_bool(record_weights, "record_weights")
    loss_gradient_after_freeze = check_bool(loss_gradient_after_freeze, "loss_gradient_after_freeze")
    freeze = None
    if freeze_readout_at is not None:  # a step beyond the last one never comes
        ratio = check_real(freeze_readout_at, "freeze_readout_at", low=0.0) / dt
        freeze = round(ratio) if ratio <= MAX_STEPS else MAX_STEPS + 1
    E, N, L = check_int(n_networks, "n_networks", low=1), check_int(width, "width", low=1), check_depth(L, "L", low=1)
    P, G, n_all = x_train.shape[0], steps.numel(), x_train.shape[0] + x_test.shape[0]
    n_params = _n_params(E, x_train.shape[1], N, L)
    n_floats = 2 * n_params + 3 * E * n_all * N * L + E * G * n_all + (G * n_params if record_weights else 0)
    check_memory(n_floats * torch.finfo(dtp).bits // 8,
                 f"simulate (E={E}, width={N}, L={L}, {G} recorded times{', record_weights' if record_weights else ''})",
                 dev)
    gen = generator(seed, dev)
    net = MLPEnsemble.init(n_networks, x_train.shape[1], width, L, activation, sigma0_sq, seed=gen,
                           device=dev, dtype=dtp)
    x_all = torch.cat([x_train, x_test])
    P, G = x_train.shape[0], steps.numel()
    xs_train, xs_all = x_train / math.sqrt(x_train.shape[1]), x_all / math.sqrt(x_all.shape[1])
    # NaN until written: no entry can ever return uninitialized memory (and every one is written, checked below)
    out = torch.full((n_networks, G, x_all.shape[0]), math.nan, dtype=dtp, device=dev)
    saved = [torch.full((n_networks, G) + w.shape[1:], math.nan, dtype=dtp, device=dev) for w in net.weights] \
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
    if k != G:  # cannot happen with increasing steps; never hand out an unwritten buffer
        raise RuntimeError(f"simulate recorded {k} of {G} times")
    if out.numel() and not bool(torch.isfinite(out).all()):
        raise FloatingPointError(f"the simulation diverged (NaN or inf outputs); lower dt (now {dt:g}; Euler-Maruyama "
                                 f"needs dt · T/sigma_sq = {dt * T / sigma_sq:.3g} well below 1 and dt below the "
                                 f"inverse of the kernel's largest eigenvalue)")
    times = steps.to(torch.float64) * dt
    return LangevinResult(times, out[:, :, :P], out[:, :, P:], saved)


def _no_grad(**arrays) -> None:
    """ValueError for a tensor argument that requires grad: :func:`simulate` is not differentiable."""
    for name, a in arrays.items():
        if isinstance(a, torch.Tensor) and a.requires_grad:
            raise ValueError(f"{name} requires grad, but simulate is not differentiable (Langevin dynamics samples "
                             f"with in-place updates); pass {name}.detach()")


def _check_step(T: float, sigma_sq: float, dt: float, dtype: torch.dtype) -> None:
    """The Euler-Maruyama step's factors must be usable: the prior decay ``1 − dt·T/σ²`` at most 1 in magnitude
    (``dt·T/σ² ≤ 2``; beyond, every step amplifies the weights and the run diverges) and the noise scale
    ``√(2T dt)`` representable in ``dtype``."""
    rate = dt * T / sigma_sq  # inf when it overflows: rejected below
    if not rate <= 2.0:
        raise ValueError(f"dt * T / sigma_sq = {rate:.3g} (dt={dt:g}, T={T:g}, sigma_sq={sigma_sq:g}) must be <= 2: "
                         f"each Euler-Maruyama step multiplies the weights by |1 - dt T/sigma_sq| > 1 and the "
                         f"simulation diverges; lower dt or T, or raise sigma_sq")
    if not math.sqrt(2.0 * T * dt) <= torch.finfo(dtype).max:
        raise ValueError(f"the noise scale sqrt(2 T dt) (T={T:g}, dt={dt:g}) exceeds the largest {dtype}; lower T or "
                         f"dt")


def _record_steps(record_times, dt: float, x_train: torch.Tensor, device) -> torch.Tensor:
    """Step indices ``round(t / dt)`` of the record times (CPU int64): non-empty, ≥ 0, strictly increasing, and the
    last at most :data:`MAX_STEPS`. The times are converted to float64 (step counts), an explicit conversion."""
    rt = as_tensor(record_times, "record_times", ndim=(0, 1), like=x_train, like_name="x_train", device=device,
                   dtype=torch.float64).reshape(-1).cpu()
    if rt.numel() == 0 or bool((rt < 0).any()):
        raise ValueError("record_times must be non-empty and >= 0")
    ratio = rt / dt
    if not bool((ratio <= MAX_STEPS).all()):
        raise ValueError(f"record_times up to {float(rt.max()):.6g} with dt={dt:g} ask for {float(ratio.max()):.3g} "
                         f"Euler-Maruyama steps; at most {MAX_STEPS:.0e} are allowed (MAX_STEPS): use a larger dt or "
                         f"shorter times")
    steps = torch.round(ratio).to(torch.int64)
    if bool((steps[1:] <= steps[:-1]).any()):
        raise ValueError(f"record_times must be increasing by at least dt={dt:g} (each is rounded to a step)")
    return steps
