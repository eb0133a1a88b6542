"""Finite-width (empirical) NTK and NNGP of torch models.

The empirical NTK of a network ``f(x; θ)`` with ``O`` outputs is (Jacot et al. 2018; lecture slides, H(0))::

    Θ(x_i, x_j)_ab = Σ_p ∂f_a(x_i)/∂θ_p · ∂f_b(x_j)/∂θ_p

summed over the *trainable* parameters only (``requires_grad=True``; buffers and frozen parameters, such as the
readout ``a`` of :class:`ntkcore.models.TwoLayerNet`, do not count). :func:`ntk` computes it in three exact ways:

* ``"jacobian"``: per-example Jacobians (``vmap`` over ``jacrev``) contracted over parameters; ``O · P`` entries
  per example for ``P`` parameters, computed in blocks whose memory ``max_memory`` bounds.
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

from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from . import activations
from ._checks import (batch, check_bool, check_choice, check_int, check_memory, check_real, finite_result,
                      trainable_parameters)
from .layers import ScaledLinear

METHODS = ("auto", "layerwise", "jacobian", "vjp-jvp")
#: Default bound of :func:`ntk` in bytes (2 GiB), the result not included. Larger than the quadrature scratch
#: bound of :mod:`ntkcore.activations`: below the size of one side's Jacobians, the number of passes (each
#: recomputing the streamed Jacobians) grows as the inverse of the bound.
DEFAULT_MAX_MEMORY = 2**31

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


def _shapes(args: tuple) -> str:
    """"of shape (..)" for one input tensor, "of shapes (..), (..)" for a tuple of them."""
    return ("of shape " if len(args) == 1 else "of shapes ") + ", ".join(str(tuple(a.shape)) for a in args)


def _probe(model, args: tuple, name: str) -> tuple[int, int]:
    """Outputs per example and bytes of activations saved for the backward pass, from a forward pass of the first
    example of ``args``; a ValueError naming ``name`` when the inputs do not fit the model."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = [0]

    def pack(t):
        if t.untyped_storage().data_ptr() not in param_storages:  # parameters are saved by reference
            saved[0] += t.numel() * t.element_size()
        return t

    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(*_take(args, slice(0, 1)))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"{name} {_shapes(args)} does not fit the model: {err}") from err
    if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must map a batch of inputs (n, ...) to a tensor of outputs (n, ...); for one example "
                         f"of {name} it returned {got}")
    if out[0].numel() == 0:
        raise ValueError(f"model has no outputs: it maps one example of {name} to shape {tuple(out.shape)}")
    return out[0].numel(), saved[0]


def _fit(model, x1: tuple, x2: tuple | None, mods, method: str) -> tuple[int, int]:
    """``(O, saved)``: outputs per example and activation bytes per example (0 for ``"layerwise"``, which needs no
    forward pass); a ValueError naming x1 or x2 when they do not fit the model."""
    if mods is not None:
        first = next(m for m in mods if isinstance(m, nn.Linear))
        if x1[0].ndim != 2 or x1[0].shape[1] != first.in_features:
            raise ValueError(f"x1 must have shape (n, {first.in_features}) to fit the model's first layer, "
                             f"got {tuple(x1[0].shape)}")
        if method == "layerwise":
            return next(m for m in reversed(mods) if isinstance(m, nn.Linear)).out_features, 0
    n_out, saved = _probe(model, x1, "x1")
    if x2 is not None:
        n_out2, saved2 = _probe(model, x2, "x2")
        if n_out2 != n_out:
            raise ValueError(f"x2 must give as many outputs per example as x1 ({n_out}); the model gives {n_out2}")
        saved = max(saved, saved2)
    return n_out, saved


def _check_finite(params: dict) -> None:
    bad = [name for name, p in params.items() if p.device.type != "meta" and not bool(torch.isfinite(p).all())]
    if bad:
        raise ValueError(f"model has parameters that are NaN or inf ({', '.join(bad[:3])}); its NTK is not defined")


# --------------------------------------------------------------------------------------------------------- methods
class _Method(NamedTuple):
    """One way to compute NTK blocks, with its memory model.

    Block data are nested lists, tuples and dicts of tensors with the examples on their first axis (other leaves,
    such as layers, are passed along). ``col(args)`` prepares the data of a block to be kept in the panel,
    ``row(args)`` the data of a block paired with the panel, and ``contract(r, c)`` gives ``Θ(rows, cols)`` of shape
    ``(b_r, b_c, O, O)``. ``shared``: row and col data are the same, so the panel's rows serve as row blocks.
    ``row_bytes``, ``col_bytes``: bytes per example of row and col data (0: the inputs themselves, free to
    prepare); ``work(b, r)``: bytes of intermediates while preparing a block of ``b`` examples and contracting it
    with ``r`` kept examples (affine in ``r``).
    """
    row: Callable
    col: Callable
    contract: Callable
    shared: bool
    row_bytes: int
    col_bytes: int
    work: Callable[[int, int], int]


def _sizes(params: dict) -> tuple[int, int]:
    """Number of trainable parameters ``P`` and bytes per entry."""
    ref = next(iter(params.values()))
    return sum(p.numel() for p in params.values()), ref.element_size()


def _jacobian_method(model, params, n_out: int, saved: int, trace: bool) -> _Method:
    """Per-example Jacobians ``(b, O, P_k)`` per parameter tensor by ``vmap(jacrev)``, contracted by one matrix
    product per parameter tensor. Memory per example: ``O·P`` entries kept, up to as many again while ``jacrev``
    assembles them, and the backward pass's activations for ``O`` cotangents. ``trace``: only the sum of the
    diagonal blocks, as a ``(b_r, b_c, 1, 1)`` block (O times fewer operations)."""
    def f_single(p, *xs):
        return functional_call(model, p, tuple(x.unsqueeze(0) for x in xs)).reshape(-1)

    def prepare(args):
        jac = vmap(jacrev(f_single), in_dims=(None,) + (0,) * len(args))(params, *args)  # name -> (b, O, *shape)
        return [j.reshape(j.shape[0], n_out, -1) for j in jac.values()]

    def contract(d1, d2):
        n1, n2 = d1[0].shape[0], d2[0].shape[0]
        o = 1 if trace else n_out  # traced: Σ_a J_a(x1)·J_a(x2), one (O·P)-long dot product per pair
        gram = sum(a.reshape(n1 * o, -1) @ b.reshape(n2 * o, -1).T for a, b in zip(d1, d2))
        return gram.reshape(n1, o, n2, o).permute(0, 2, 1, 3)

    n_params, item = _sizes(params)
    kept = n_out * n_params * item
    return _Method(prepare, prepare, contract, True, kept, kept,
                   lambda b, r: b * (kept + 2 * (n_out + 1) * saved) + 2 * b * r * n_out ** 2 * item)


def _vjp_jvp_method(model, params, n_out: int, saved: int) -> _Method:
    """A kept block holds the pullbacks ``J₂ᵀ e`` of its basis cotangents (one ``vjp``, vmapped); a row block is
    its inputs, and a pair is the forward-mode product ``J₁ (J₂ᵀ e)`` (one ``jvp`` per cotangent, vmapped, over
    chunks of the panel as large as the row block). The vmapped passes run over whole blocks, so their
    intermediates grow as ``b²``."""
    def f_batch(p, args):
        return functional_call(model, p, args).reshape(args[0].shape[0], -1)

    def col(args):
        out, pullback = vjp(lambda p: f_batch(p, args), params)
        n = out.shape[0]
        basis = torch.eye(n * n_out, dtype=out.dtype, device=out.device).reshape(n * n_out, n, n_out)
        cotangents = vmap(pullback)(basis)[0]  # name -> (n·O, *shape): J₂ᵀ e_(j,b)
        return {k: v.reshape(n, n_out, *v.shape[1:]) for k, v in cotangents.items()}

    def contract(args, d2):
        n1, n2 = args[0].shape[0], next(iter(d2.values())).shape[0]
        parts = []
        for c in range(0, n2, n1):
            tangents = {k: v[c:c + n1].reshape(-1, *v.shape[2:]) for k, v in d2.items()}
            prods = vmap(lambda t: jvp(lambda p: f_batch(p, args), (params,), (t,))[1])(tangents)  # (c·O, n1, O)
            parts.append(prods.reshape(-1, n_out, n1, n_out).permute(2, 0, 3, 1))
        return torch.cat(parts, dim=1)

    n_params, item = _sizes(params)
    kept = n_out * n_params * item
    return _Method(lambda args: args, col, contract, False, 0, kept,
                   lambda b, r: b * (kept + saved) + 2 * b * b * n_out * (saved + 2 * n_out * item)
                   + 2 * b * r * n_out ** 2 * item)


def _layer_scales(m: nn.Linear) -> tuple[float, float]:
    return (m.weight_scale, m.bias_scale) if isinstance(m, ScaledLinear) else (1.0, 1.0)


def _layerwise_records(mods, x):
    """Forward sweep: per module, (its input, the layer) for a dense layer, (φ'(h), None) for an activation."""
    records, h = [], x
    for m in mods:
        records.append((h, m) if isinstance(m, nn.Linear) else (activations.derivative_of_module(m, h), None))
        h = m(h)
    return records, h


def _layerwise_method(mods, n_out: int, dtype: torch.dtype, trace: bool) -> _Method:
    """``trace``: only the sum over outputs of the diagonal blocks, ``Σ_a δ_{i,a}·δ_{j,a}`` per layer, as a
    ``(b_r, b_c, 1, 1)`` block (O times fewer operations in the sensitivities' Gram matrices)."""
    def prepare(args):
        """Per dense layer: (input a (b, fan_in), sensitivity δ (b, O, fan_out), layer)."""
        records, h = _layerwise_records(mods, args[0])
        n = h.shape[0]
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
            n1, o, n2 = g1.shape[0], (1 if trace else n_out), g2.shape[0]
            sens = (g1.reshape(n1 * o, -1) @ g2.reshape(n2 * o, -1).T).reshape(n1, o, n2, o)
            inputs = inputs[:, None, :, None]
            total = inputs * sens if total is None else torch.addcmul(total, inputs, sens)
        return total.permute(0, 2, 1, 3)

    item = torch.empty((), dtype=dtype).element_size()
    linears = [m for m in mods if isinstance(m, nn.Linear)]
    kept = item * sum(m.in_features + n_out * m.out_features for m in linears)
    widths = item * sum(m.in_features + m.out_features for m in linears)
    return _Method(prepare, prepare, contract, True, kept, kept,
                   lambda b, r: 4 * b * widths + 2 * b * b * n_out ** 2 * item + 6 * b * r * n_out ** 2 * item)


def _method(name: str, model, params, mods, n_out: int, saved: int, trace: bool) -> _Method:
    """The method ``name``; ``trace`` asks the layerwise and Jacobian methods for the summed diagonal blocks only
    (``"vjp-jvp"`` computes every block, which :func:`ntk` then traces)."""
    if name == "layerwise":
        return _layerwise_method(mods, n_out, next(iter(params.values())).dtype, trace)
    if name == "jacobian":
        return _jacobian_method(model, params, n_out, saved, trace)
    return _vjp_jvp_method(model, params, n_out, saved)


# ------------------------------------------------------------------------------------------------ blocks and plans
class _Plan(NamedTuple):
    block: int  # examples per streamed block
    panel: int  # blocks whose col data are kept at once


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _largest(fits: Callable[[int], bool], n: int) -> int:
    """The largest ``b`` in ``[1, n]`` with ``fits(b)`` for a monotone ``fits``; 0 if none."""
    low, high = 0, n
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def _plan(method: _Method, name: str, n: int, max_memory: int, batch_size: int | None) -> _Plan:
    """Block size: ``batch_size``, or the largest whose row data and intermediates (with a panel of one block)
    take at most half of ``max_memory``; the panel: as many blocks of col data as fit in the rest (at least one).
    Half and half balances the two costs of a bound: passes over the streamed blocks (fewer with a larger panel)
    and the memory traffic of the contractions, which read the panel once per streamed block (less with larger
    blocks). The plan uses 7/8 of ``max_memory``: the rest is headroom for what the footprint model does not count
    (allocator rounding, short-lived copies inside torch), which measured up to 5% of the bound."""
    def footprint(b, r):
        return b * method.row_bytes + r * method.col_bytes + method.work(b, r)

    budget = max_memory - max_memory // 8
    if batch_size is not None:
        block = min(batch_size, n)
    else:
        block = _largest(lambda b: footprint(b, b) - b * method.col_bytes <= budget // 2, n)
        if block == 0 and footprint(1, 1) <= budget:
            block = 1
        if block == 0:
            raise ValueError(f"max_memory={max_memory} bytes is too small for method={name!r} on this model: one "
                             f"example needs about {footprint(1, 1)} bytes (its Jacobian, outputs × parameters "
                             f"entries, and intermediates); pass a larger max_memory, or batch_size=1 to accept "
                             f"that footprint")
    per_kept = footprint(block, 1) - footprint(block, 0)  # bytes per kept example, its data and contraction
    panel = (budget - footprint(block, 0)) // max(1, per_kept * block)
    return _Plan(block, max(1, panel))


# ------------------------------------------------------------------------------------------------ panels and passes
def _map(fn, data):
    """``fn`` applied to every tensor of nested lists, tuples and dicts; other leaves are kept."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, (list, tuple)):
        return type(data)(_map(fn, d) for d in data)
    if isinstance(data, dict):
        return {k: _map(fn, v) for k, v in data.items()}
    return data


def _write(buffer, data, start: int) -> None:
    """Copy the tensors of ``data`` into the same places of ``buffer``, from example ``start`` on."""
    if isinstance(buffer, torch.Tensor):
        buffer[start:start + data.shape[0]] = data
    elif isinstance(buffer, (list, tuple)):
        for b, d in zip(buffer, data):
            _write(b, d, start)
    elif isinstance(buffer, dict):
        for k in buffer:
            _write(buffer[k], data[k], start)


def _panel(method: _Method, x: tuple, blocks: list[slice], carry: list):
    """Col data of consecutive ``blocks`` in one buffer, prepared one block at a time (``carry``: a list that may
    hold the first block's data, already prepared); one block needs no buffer."""
    first = carry.pop() if carry else method.col(_take(x, blocks[0]))
    if len(blocks) == 1:
        return first
    start = blocks[0].start
    panel = _map(lambda t: t.new_empty((blocks[-1].stop - start,) + t.shape[1:]), first)
    _write(panel, first, 0)
    del first
    for rows in blocks[1:]:
        _write(panel, method.col(_take(x, rows)), rows.start - start)
    return panel


def _symmetric(method: _Method, x: tuple, plan: _Plan, out: torch.Tensor) -> None:
    """``Θ(x, x)`` in passes: a pass keeps a panel of consecutive blocks and contracts it with itself and every
    later block, each prepared once per pass, latest first; the last one, the next panel's first, is carried
    over. Only the lower triangle is computed; the upper one is its transpose."""
    blocks, carry = _blocks(x[0].shape[0], plan.block), []
    for a0 in range(0, len(blocks), plan.panel):
        _symmetric_pass(method, x, blocks, a0, min(a0 + plan.panel, len(blocks)), carry, out)


def _symmetric_pass(method: _Method, x: tuple, blocks: list[slice], a0: int, a1: int, carry: list, out) -> None:
    panel = _panel(method, x, blocks[a0:a1], carry)
    p0, p1 = blocks[a0].start, blocks[a1 - 1].stop
    for s in range(len(blocks) - 1, a0 - 1, -1):
        rows = blocks[s]
        inside = s < a1
        if inside and method.shared:
            row = _map(lambda t: t[rows.start - p0:rows.stop - p0], panel)
        else:
            row = method.row(_take(x, rows))
        stop = rows.stop if inside else p1  # within the panel, the columns up to the row block
        block = method.contract(row, _map(lambda t: t[:stop - p0], panel))  # Θ(x_s, x[p0:stop])
        out[rows, p0:stop] = block
        out[p0:stop, rows] = block.permute(1, 0, 3, 2)
        if method.shared and s == a1:
            carry.append(row)
        del row, block  # before the next block is prepared


def _cross(method: _Method, x1: tuple, x2: tuple, plan: _Plan, out: torch.Tensor) -> None:
    """``Θ(x1, x2)`` in passes: a pass keeps a panel of blocks of one side and contracts it with every block of
    the other, prepared once per pass. The kept side is the one that needs fewer block preparations."""
    b1, b2 = _blocks(x1[0].shape[0], plan.block), _blocks(x2[0].shape[0], plan.block)

    def preparations(kept, streamed):  # rows that keep no data (the inputs themselves) cost nothing
        return len(kept) + (-(-len(kept) // plan.panel) * len(streamed) if method.row_bytes else 0)

    keep_x2 = preparations(b2, b1) <= preparations(b1, b2)
    kept_x, kept_b, row_x, row_b = (x2, b2, x1, b1) if keep_x2 else (x1, b1, x2, b2)
    for a0 in range(0, len(kept_b), plan.panel):
        blocks = kept_b[a0:a0 + plan.panel]
        cols = slice(blocks[0].start, blocks[-1].stop)
        panel = _panel(method, kept_x, blocks, [])
        for rows in row_b:
            block = method.contract(method.row(_take(row_x, rows)), panel)  # Θ(row side, kept side)
            if keep_x2:
                out[rows, cols] = block
            else:
                out[cols, rows] = block.permute(1, 0, 3, 2)
            del block
        del panel


def ntk(model: nn.Module, x1, x2=None, *, method: str = "auto", trace_outputs: bool = False,
        batch_size: int | None = None, max_memory: int | None = None) -> torch.Tensor:
    """Empirical NTK ``Θ(x_i, x_j)_ab = Σ_p ∂f_a(x_i)/∂θ_p ∂f_b(x_j)/∂θ_p`` of ``model`` at its current parameters.

    Only trainable parameters (``requires_grad=True``) count; the model is evaluated as it is (call ``model.eval()``
    first if it has dropout or batch norm). For an :class:`ntkcore.models.MLP` in NTK
    parameterization it converges to ``kernels.fc(...).ntk ⊗ I_O`` as the width grows (book appendix "Closed-form
    kernels and conventions", section "Fully connected networks"; Jacot et al. 2018); for
    :class:`ntkcore.models.TwoLayerNet` it is the lecture's ``H(0)`` (book Chapter 2).

    Memory and reuse. The inputs are split into blocks of examples; a pass keeps the prepared data (``"jacobian"``:
    the per-example Jacobians, ``O·P`` entries each) of a *panel* of blocks and pairs it with every other block,
    which is prepared once per pass. When the whole of one side fits in ``max_memory``, there is one pass and every
    block is prepared exactly once; otherwise the streamed blocks are prepared once per pass (about
    ``2·n·O·P·itemsize / max_memory`` passes for ``"jacobian"``, whose panel gets about half of the bound): a full
    reuse would need every block in memory at once, which the bound does not allow. ``"vjp-jvp"`` keeps the pullbacks of its panel (once per block) and redoes the forward-mode
    product for every pair; ``"layerwise"`` keeps activations and sensitivities, independent of ``P``.

    Parameters
    ----------
    model : any ``torch.nn.Module`` mapping a batch ``(n, ...)`` to ``(n, O)`` (or ``(n, ...)``, flattened to O).
    x1 : inputs ``(n1, ...)``; numpy arrays and lists are converted to the model's dtype and device, tensors must
        already be on the model's device and (if floating) in its dtype. A model with several inputs takes a tuple
        of them, each with the batch axis first (a graph network of :mod:`ntkcore.layers`: ``(x, adjacency)`` or
        ``(x, adjacency, mask)``).
    x2 : inputs ``(n2, ...)`` like x1; ``None`` means ``x2 = x1`` (then only the lower block triangle is computed).
    method : "auto" (``"layerwise"`` when :func:`layerwise_layers` accepts the model, else ``"jacobian"``),
        "layerwise", "jacobian" or "vjp-jvp"; all are exact and agree to rounding.
    trace_outputs : if True, return the *mean* over outputs of the diagonal blocks, ``(1/O) Σ_a Θ_aa`` (the
        neural-tangents ``trace_axes`` convention, which divides the trace by the number of outputs), so the result
        converges to the scalar analytic NTK. The ``"layerwise"`` and ``"jacobian"`` methods then compute only that
        sum, O times fewer operations than the full ``(O, O)`` blocks.
    batch_size : examples per block; ``None`` chooses it from ``max_memory``. An explicit value overrides that
        choice (at least one kept and one streamed block are held, whatever their size).
    max_memory : bound in bytes (``None``: :data:`DEFAULT_MAX_MEMORY`, 2 GiB) on what is held besides the result ``(n1, n2, O, O)``: prepared
        blocks and intermediates, estimated from ``P``, ``O``, the dtype and the activations one forward pass saves.
        The automatic block takes at most half of it, the panel the rest. A ValueError if one example does not
        fit.

    Returns
    -------
    Tensor ``(n1, n2, O, O)``; ``(n1, n2)`` when ``O = 1`` or ``trace_outputs=True``. Detached, on the model's device.
    A ValueError instead of a kernel that overflows the dtype.
    """
    params = _trainable(model)
    x1, x2 = _pair(x1, x2, next(iter(params.values())))
    check_choice(method, "method", METHODS)
    trace_outputs = check_bool(trace_outputs, "trace_outputs")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", low=1)
    max_memory = DEFAULT_MAX_MEMORY if max_memory is None else check_int(max_memory, "max_memory", low=1)
    _check_finite(params)
    mods = layerwise_layers(model) if len(x1) == 1 else None
    if method == "layerwise" and mods is None:
        raise ValueError("method='layerwise' needs an nn.Sequential of nn.Linear layers and parameter-free "
                         "elementwise activations; use method='jacobian' or 'vjp-jvp' for this model")
    if method == "auto":
        method = "layerwise" if mods is not None else "jacobian"
    n_out, saved = _fit(model, x1, x2, mods, method)
    fused = trace_outputs and method != "vjp-jvp"  # the method sums the diagonal blocks itself
    impl = _method(method, model, params, mods, n_out, saved, fused)
    n1, n2 = x1[0].shape[0], (x1 if x2 is None else x2)[0].shape[0]
    plan = _plan(impl, method, max(n1, n2), max_memory, batch_size)
    o = 1 if fused else n_out
    check_memory(n1 * n2 * o ** 2 * x1[0].element_size(), f"the NTK of {n1} x {n2} examples with {n_out} outputs",
                 x1[0].device)
    out = x1[0].new_empty(n1, n2, o, o)
    with torch.no_grad():
        if x2 is None:
            _symmetric(impl, x1, plan, out)
        else:
            _cross(impl, x1, x2, plan, out)
    finite_result(out, "NTK", "x1" if x2 is None else "x1 or x2")
    if fused:
        return out[:, :, 0, 0] / n_out
    if trace_outputs:
        return out.diagonal(dim1=2, dim2=3).mean(-1)
    return out[:, :, 0, 0] if n_out == 1 else out


def _features(features, args: tuple, name: str) -> torch.Tensor:
    """``Φ`` of shape ``(n, F)``, ``F ≥ 1``; a ValueError naming ``name`` when the inputs do not fit."""
    try:
        phi = features(*args)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"{name} {_shapes(args)} does not fit the model's features: {err}") from err
    n = args[0].shape[0]
    if not isinstance(phi, torch.Tensor) or phi.ndim == 0 or phi.shape[0] != n:
        got = tuple(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
        raise ValueError(f"features must map {name} ({n} examples) to a tensor of shape ({n}, F), got {got}")
    phi = phi.reshape(n, -1)
    if phi.shape[1] == 0:
        raise ValueError(f"features must give at least one feature per example; the features of {name} "
                         f"{_shapes(args)} have shape {tuple(phi.shape)}")
    return phi


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
    features : callable ``x -> Φ(x)`` of shape ``(n, F)``, ``F ≥ 1`` (further axes are flattened); default
        ``model.features`` (defined by :class:`~ntkcore.models.MLP` and :class:`~ntkcore.models.TwoLayerNet`).
    normalize : if True return ``σw²/F · Φ₁Φ₂ᵀ + σb²``; if False the plain Gram ``Φ₁Φ₂ᵀ``.
    weight_var, bias_var : σw², σb² of the readout; default ``model.readout_weight_var``, ``model.readout_bias_var``.

    Returns
    -------
    Tensor ``(n1, n2)``, detached. A ValueError instead of a kernel that overflows the dtype.
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
    normalize = check_bool(normalize, "normalize")
    with torch.no_grad():
        phi1 = _features(features, x1, "x1")
        phi2 = phi1 if x2 is None else _features(features, x2, "x2")
        if phi2.shape[1] != phi1.shape[1]:
            raise ValueError(f"x2 must give as many features per example as x1 ({phi1.shape[1]}), got "
                             f"{phi2.shape[1]}")
        gram = phi1 @ phi2.T
    names = "x1" if x2 is None else "x1 or x2"
    if not normalize:
        return finite_result(gram, "NNGP", names)
    wv = getattr(model, "readout_weight_var", None) if weight_var is None else weight_var
    bv = getattr(model, "readout_bias_var", None) if bias_var is None else bias_var
    if wv is None or bv is None:
        raise ValueError("normalize=True needs the readout variances: pass weight_var and bias_var (the model has "
                         "no readout_weight_var / readout_bias_var attributes)")
    wv = check_real(wv, "weight_var", low=0.0)
    bv = check_real(bv, "bias_var", low=0.0)
    return finite_result(wv / phi1.shape[1] * gram + bv, "NNGP", names)
