"""Finite-width (empirical) NTK and NNGP of torch models.

The empirical NTK of a network ``f(x; θ)`` with ``O`` outputs is (Jacot et al. 2018; lecture slides, H(0))::

    Θ(x_i, x_j)_ab = Σ_p ∂f_a(x_i)/∂θ_p · ∂f_b(x_j)/∂θ_p

summed over the *trainable* parameters only (``requires_grad=True``; buffers and frozen parameters, such as the
readout ``a`` of :class:`ntkcore.models.TwoLayerNet`, do not count). :func:`ntk` computes it in three exact ways:

* ``"jacobian"``: per-example Jacobians (``vmap`` over ``jacrev``) contracted over parameters; memory
  ``n · O · P`` for ``P`` parameters.
* ``"vjp-jvp"``: NTK-vector products ``J₁ (J₂ᵀ v)`` for the basis cotangents ``v`` (implicit; never stores a Jacobian,
  the "NTK-vector products" method of Novak et al. 2022).
* ``"layerwise"``: exact fast path for ``nn.Sequential`` chains of ``nn.Linear`` layers (including
  :class:`ntkcore.models.ScaledLinear`) and parameter-free elementwise activations. A layer ``y = s_W W a + s_b b``
  contributes ``(s_W² a_i·a_j + s_b²) · (δ_{i,a}·δ_{j,b})``, where ``a_i`` is the layer's input for example ``i``
  and ``δ_{i,a} = ∂f_a(x_i)/∂y`` the output sensitivity at its pre-activation; the weight term appears only if ``W``
  is trainable, the bias term only if ``b`` is. Cost: a forward and a backward sweep per example and Gram matrices
  of activations and sensitivities, independent of ``P``.

The empirical NNGP (:func:`nngp`) is the readout's covariance given the last-layer features ``Φ``:
``σw²/n · Φ(x) Φ(x′)ᵀ + σb²``, which converges to the analytic NNGP ``K^{L+1}`` (book appendix "Closed-form kernels
and conventions", section "Fully connected networks").
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from . import activations
from ._checks import batch, check_choice, check_int, check_real, trainable_parameters
from .layers import ScaledLinear

METHODS = ("auto", "layerwise", "jacobian", "vjp-jvp")

# Parameter-free activations that act entry by entry (modules may also declare ``elementwise = True``).
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Identity, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softplus, nn.ELU, nn.LeakyReLU,
                nn.CELU, nn.SELU, nn.Mish, nn.Softsign, nn.Tanhshrink, nn.Hardtanh, nn.ReLU6)
_LINEAR_FORWARDS = (nn.Linear.forward, ScaledLinear.forward)


# --------------------------------------------------------------------------------------------------------- checks
def _trainable(model) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, detached (the functional transforms differentiate with respect to them)."""
    return {name: p.detach() for name, p in trainable_parameters(model).items()}


def _tensor(x, name: str, ref: torch.Tensor) -> torch.Tensor:
    return batch(x, name, like=ref, min_ndim=2, same_device=True)


def _inputs(x, name: str, ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The model's positional inputs as a tuple of checked tensors with one batch axis: ``x`` itself, or the
    tensors of a tuple ``x`` (e.g. node features and adjacency of a graph network)."""
    if not isinstance(x, tuple):
        return (_tensor(x, name, ref),)
    if not x:
        raise ValueError(f"{name} must be a tensor or a non-empty tuple of tensors (the model's inputs)")
    args = tuple(_tensor(t, f"{name}[{i}]", ref) for i, t in enumerate(x))
    if any(a.shape[0] != args[0].shape[0] for a in args):
        raise ValueError(f"the tensors of {name} must share their batch axis, got shapes "
                         f"{[tuple(a.shape) for a in args]}")
    return args


def _pair(x1, x2, ref: torch.Tensor):
    x1 = _inputs(x1, "x1", ref)
    if x2 is None:
        return x1, None
    x2 = _inputs(x2, "x2", ref)
    if len(x2) != len(x1) or (len(x1) == 1 and x2[0].shape[1:] != x1[0].shape[1:]):
        raise ValueError(f"x2 must have the same per-example shape as x1, {tuple(x1[0].shape[1:])}, "
                         f"got {tuple(x2[0].shape[1:])}" if len(x1) == 1 else
                         f"x2 must hold {len(x1)} tensors like x1, got {len(x2)}")
    return x1, x2


def _take(args: tuple, rows: slice) -> tuple:
    return tuple(a[rows] for a in args)


def _is_elementwise(m: nn.Module) -> bool:
    return (isinstance(m, _ELEMENTWISE) or getattr(m, "elementwise", False) is True) and \
        not any(p.requires_grad for p in m.parameters())


def _flat_modules(seq: nn.Sequential) -> list[nn.Module] | None:
    out = []
    for m in seq:
        if isinstance(m, nn.Sequential):
            if type(m).forward is not nn.Sequential.forward:
                return None
            inner = _flat_modules(m)
            if inner is None:
                return None
            out.extend(inner)
        else:
            out.append(m)
    return out


def layerwise_layers(model: nn.Module) -> list[nn.Module] | None:
    """The module chain of ``model`` if the ``"layerwise"`` NTK applies to it, else ``None``.

    It applies to an ``nn.Sequential`` (possibly nested, forward not overridden) whose modules are ``nn.Linear`` /
    :class:`ntkcore.models.ScaledLinear` layers, each used once, and elementwise activations without trainable
    parameters (the usual torch activations, or modules with ``elementwise = True``).
    """
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None
    mods = _flat_modules(model)
    if mods is None:
        return None
    linears = [m for m in mods if isinstance(m, nn.Linear)]
    if not linears or len({id(m) for m in linears}) != len(linears):
        return None
    for m in mods:
        if isinstance(m, nn.Linear):
            if type(m).forward not in _LINEAR_FORWARDS:
                return None
        elif not _is_elementwise(m):
            return None
    return mods


def _output_size(model, args: tuple, mods) -> int:
    """Number of outputs per example; fails with a ValueError when the inputs do not fit the model."""
    x = args[0]
    if mods is not None:
        first = next(m for m in mods if isinstance(m, nn.Linear))
        if x.ndim != 2 or x.shape[1] != first.in_features:
            raise ValueError(f"x1 must have shape (n, {first.in_features}) to fit the model's first layer, "
                             f"got {tuple(x.shape)}")
        return next(m for m in reversed(mods) if isinstance(m, nn.Linear)).out_features
    try:
        with torch.no_grad():
            out = model(*_take(args, slice(0, 1)))
    except RuntimeError as err:
        raise ValueError(f"x1 of shape {tuple(x.shape)} does not fit the model: {err}") from None
    return out[0].numel()


# --------------------------------------------------------------------------------------------------------- methods
# Each method is a pair (prepare, contract): prepare(x_block) -> per-block data; contract(d1, d2) -> (b1, b2, O, O).

def _jacobian_method(model, params):
    def f_single(p, *xs):
        return functional_call(model, p, tuple(x.unsqueeze(0) for x in xs)).reshape(-1)

    def prepare(args):
        jac = vmap(jacrev(f_single), in_dims=(None,) + (0,) * len(args))(params, *args)  # name -> (b, O, *shape)
        return [j.reshape(j.shape[0] * j.shape[1], -1) for j in jac.values()], args[0].shape[0]

    def contract(d1, d2):
        (j1, n1), (j2, n2) = d1, d2
        gram = sum(a @ b.T for a, b in zip(j1, j2))  # (n1·O, n2·O)
        return gram.reshape(n1, -1, n2, gram.shape[1] // n2).permute(0, 2, 1, 3)

    return prepare, contract


def _vjp_jvp_method(model, params):
    def f_batch(p, args):
        return functional_call(model, p, args).reshape(args[0].shape[0], -1)

    def contract(x1, x2):
        out2, pullback = vjp(lambda p: f_batch(p, x2), params)
        n2, n_out = out2.shape
        basis = torch.eye(n2 * n_out, dtype=out2.dtype, device=out2.device).reshape(n2 * n_out, n2, n_out)
        cotangents = vmap(pullback)(basis)[0]  # name -> (n2·O, *shape): J₂ᵀ e_(j,b)
        prods = vmap(lambda t: jvp(lambda p: f_batch(p, x1), (params,), (t,))[1])(cotangents)  # (n2·O, n1, O)
        return prods.reshape(n2, n_out, x1[0].shape[0], n_out).permute(2, 0, 3, 1)

    return (lambda x: x), contract


def _layer_scales(m: nn.Linear) -> tuple[float, float]:
    return (m.weight_scale, m.bias_scale) if isinstance(m, ScaledLinear) else (1.0, 1.0)


def _layerwise_method(mods):
    def prepare(args):
        """Per dense layer: (input a (b, fan_in), sensitivity δ (b, O, fan_out), layer)."""
        records, h = [], args[0]
        for m in mods:
            if isinstance(m, nn.Linear):
                records.append((h, m))
                h = m(h)
            else:
                records.append((activations.derivative_of_module(m, h), None))
                h = m(h)
        n, n_out = h.shape
        delta = torch.eye(n_out, dtype=h.dtype, device=h.device).expand(n, n_out, n_out)
        first_linear = next(k for k, (_, m) in enumerate(records) if m is not None)
        layers = []
        for k in range(len(records) - 1, first_linear - 1, -1):
            value, m = records[k]
            if m is None:  # through the activation: δ ← δ ⊙ φ'(h)
                delta = delta * value.unsqueeze(1)
                continue
            layers.append((value, delta, m))
            if k > first_linear:  # through the layer: δ ← s_W δ W
                delta = delta @ m.weight
                if _layer_scales(m)[0] != 1.0:
                    delta = delta * _layer_scales(m)[0]
        return layers

    def contract(d1, d2):
        total = None
        for (a1, g1, m), (a2, g2, _) in zip(d1, d2):
            w_scale, b_scale = _layer_scales(m)
            train_w = isinstance(m.weight, nn.Parameter) and m.weight.requires_grad
            train_b = isinstance(m.bias, nn.Parameter) and m.bias.requires_grad
            if not (train_w or train_b):
                continue
            bias_term = b_scale ** 2 if train_b else 0.0
            if train_w:  # s_W² a₁a₂ᵀ + s_b²
                inputs = torch.addmm(a1.new_tensor(bias_term), a1, a2.T, alpha=w_scale ** 2)
            else:
                inputs = a1.new_full((a1.shape[0], a2.shape[0]), bias_term)
            n1, n_out, width = g1.shape
            sens = (g1.reshape(n1 * n_out, width) @ g2.reshape(-1, width).T).reshape(n1, n_out, -1, n_out)
            inputs = inputs[:, None, :, None]
            total = inputs * sens if total is None else torch.addcmul(total, inputs, sens)
        return total.permute(0, 2, 1, 3)

    return prepare, contract


def _blocks(n: int, size: int | None) -> list[slice]:
    size = n if size is None else size
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def ntk(model: nn.Module, x1, x2=None, *, method: str = "auto", trace_outputs: bool = False,
        batch_size: int | None = None) -> torch.Tensor:
    """Empirical NTK ``Θ(x_i, x_j)_ab = Σ_p ∂f_a(x_i)/∂θ_p ∂f_b(x_j)/∂θ_p`` of ``model`` at its current parameters.

    Only trainable parameters (``requires_grad=True``) count; the model is evaluated as it is (call ``model.eval()``
    first if it has dropout or batch norm). For an :class:`ntkcore.models.MLP` in NTK
    parameterization it converges to ``kernels.fc(...).ntk ⊗ I_O`` as the width grows (book appendix "Closed-form
    kernels and conventions", section "Fully connected networks"; Jacot et al. 2018); for
    :class:`ntkcore.models.TwoLayerNet` it is the lecture's ``H(0)`` (book Chapter 2).

    Parameters
    ----------
    model : any ``torch.nn.Module`` mapping a batch ``(n, ...)`` to ``(n, O)`` (or ``(n, ...)``, flattened to O).
    x1 : inputs ``(n1, ...)``; numpy arrays and tensors are cast to the model's dtype (tensors must already be on
        the model's device). A model with several inputs takes a tuple of them, each with the batch axis first
        (a graph network of :mod:`ntkcore.layers`: ``(x, adjacency)`` or ``(x, adjacency, mask)``).
    x2 : inputs ``(n2, ...)`` like x1; ``None`` means ``x2 = x1`` (then only the upper block triangle is computed).
    method : "auto" (``"layerwise"`` when :func:`layerwise_layers` accepts the model, else ``"jacobian"``),
        "layerwise", "jacobian" or "vjp-jvp"; all are exact and agree to rounding.
    trace_outputs : if True, return the *mean* over outputs of the diagonal blocks, ``(1/O) Σ_a Θ_aa`` (the
        neural-tangents ``trace_axes`` convention, which divides the trace by the number of outputs), so the result
        converges to the scalar analytic NTK.
    batch_size : examples per block (bounds memory: ``"jacobian"`` stores two blocks of Jacobians); ``None`` = one
        block.

    Returns
    -------
    Tensor ``(n1, n2, O, O)``; ``(n1, n2)`` when ``O = 1`` or ``trace_outputs=True``. Detached, on the model's device.
    """
    params = _trainable(model)
    ref = next(iter(params.values()))
    x1, x2 = _pair(x1, x2, ref)
    check_choice(method, "method", METHODS)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", low=1)
    mods = layerwise_layers(model) if len(x1) == 1 else None
    if method == "layerwise" and mods is None:
        raise ValueError("method='layerwise' needs an nn.Sequential of nn.Linear layers and parameter-free "
                         "elementwise activations; use method='jacobian' or 'vjp-jvp' for this model")
    n_out = _output_size(model, x1, mods)
    if method == "auto":
        method = "layerwise" if mods is not None else "jacobian"
    if method == "layerwise":
        prepare, contract = _layerwise_method(mods)
    elif method == "jacobian":
        prepare, contract = _jacobian_method(model, params)
    else:
        prepare, contract = _vjp_jvp_method(model, params)

    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    rows, cols = _blocks(x1[0].shape[0], batch_size), _blocks(x2[0].shape[0], batch_size)
    out = x1[0].new_empty(x1[0].shape[0], x2[0].shape[0], n_out, n_out)
    with torch.no_grad():
        for i, s1 in enumerate(rows):
            d1 = prepare(_take(x1, s1))
            for j, s2 in enumerate(cols):
                if symmetric and j < i:
                    continue
                d2 = d1 if symmetric and j == i else prepare(_take(x2, s2))
                block = contract(d1, d2)
                out[s1, s2] = block
                if symmetric and j > i:
                    out[s2, s1] = block.permute(1, 0, 3, 2)
    if trace_outputs:
        return out.diagonal(dim1=2, dim2=3).mean(-1)
    return out[:, :, 0, 0] if n_out == 1 else out


def nngp(model: nn.Module, x1, x2=None, *, features=None, normalize: bool = True, weight_var: float | None = None,
         bias_var: float | None = None) -> torch.Tensor:
    """Empirical NNGP: the covariance of the output over a fresh readout layer, given the last-layer features.

    With features ``Φ(x) ∈ R^n`` (the inputs of the readout) and a readout ``f = σw/√n · w·Φ + σb b``,
    ``w, b ~ N(0, 1)``::

        K̂(x, x′) = σw²/n · Φ(x)·Φ(x′) + σb²

    which converges to the analytic NNGP ``K^{L+1}(x, x′) = σw² E[φ(u)φ(v)] + σb²`` (book appendix "Closed-form
    kernels and conventions", section "Fully connected networks"; the ``nngp`` of ``kernels.fc``) as the width
    grows; its average over initializations equals it exactly for depth 1.
    For :class:`ntkcore.models.TwoLayerNet` it is ``E[a²]/m · Φ Φᵀ``.

    Parameters
    ----------
    model : the network; its parameters fix device and dtype.
    x1, x2 : inputs ``(n1, ...)``, ``(n2, ...)``; ``x2=None`` means ``x1``.
    features : callable ``x -> Φ(x)`` of shape ``(n, F)`` (further axes are flattened); default ``model.features``
        (defined by :class:`~ntkcore.models.MLP` and :class:`~ntkcore.models.TwoLayerNet`).
    normalize : if True return ``σw²/F · Φ₁Φ₂ᵀ + σb²``; if False the plain Gram ``Φ₁Φ₂ᵀ``.
    weight_var, bias_var : σw², σb² of the readout; default ``model.readout_weight_var``, ``model.readout_bias_var``.

    Returns
    -------
    Tensor ``(n1, n2)``, detached.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ref = next(iter(model.parameters()), None)
    if ref is None:
        raise ValueError("model has no parameters to take the device and dtype from")
    features = getattr(model, "features", None) if features is None else features
    if not callable(features):
        raise ValueError("features must be a callable x -> Φ(x) (the inputs of the readout layer); the model has no "
                         "features() method, so pass features=...")
    x1, x2 = _pair(x1, x2, ref)
    with torch.no_grad():
        try:
            phi1 = features(*x1)
            phi2 = phi1 if x2 is None else features(*x2)
        except RuntimeError as err:
            raise ValueError(f"x1 of shape {tuple(x1[0].shape)} does not fit the model's features: {err}") from None
        phi1, phi2 = phi1.reshape(phi1.shape[0], -1), phi2.reshape(phi2.shape[0], -1)
        gram = phi1 @ phi2.T
    if not normalize:
        return gram
    wv = getattr(model, "readout_weight_var", None) if weight_var is None else weight_var
    bv = getattr(model, "readout_bias_var", None) if bias_var is None else bias_var
    if wv is None or bv is None:
        raise ValueError("normalize=True needs the readout variances: pass weight_var and bias_var (the model has "
                         "no readout_weight_var / readout_bias_var attributes)")
    wv = check_real(wv, "weight_var", low=0.0)
    bv = check_real(bv, "bias_var", low=0.0)
    return wv / phi1.shape[1] * gram + bv
