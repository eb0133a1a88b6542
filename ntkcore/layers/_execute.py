"""Computing the kernel matrix of a network: reading the inputs, the pass over the pairs ``(x, x)``, tiles of pairs
with a memory bound, and threads.

Two executors share the layers' transforms:

* networks of entrywise layers on vectors (fully connected networks) run on the fast path: a panel of rows of
  ``K¹`` is one matrix product, the layers then run on cache-sized tiles of it, and panels are spread over threads;
* every other network runs on tiles of pairs of examples: each tile holds the covariances over pairs of positions
  (images) or nodes (graphs) for a block of example pairs.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import math

import torch

from .._checks import as_tensor, check_int, inputs
from ..activations import NEAR, Near, needs_grad
from . import _entrywise
from ._base import branches
from ._state import GRAPH, IMAGE, VECTOR, Kernels, Layout, Pairs, Pool, Recorder, Replay, Shape, Side

DEFAULT_MAX_MEMORY = 2**28  # bytes of intermediates (256 MiB), outputs not included
_TILE_ROWS, _TILE_COLS = 256, 512  # CPU tiles of the fast path (panel rows × tile columns): fastest at n = 4000
_N_BUFFERS = 5  # tile-sized buffers of the fast path: K, Θ and three intermediates (ReLU)
_PAIR_BUFFERS = 10  # block-of-pairs-sized tensors alive at once on the pairs path (measured peak, with margin)
_PAIR_TILE_ENTRIES = 2**18  # entries of one tile tensor (2 MiB in float64): fastest for 8×8 images on the CPU


def parse_get(get):
    names = (get,) if isinstance(get, str) else tuple(get) if isinstance(get, (tuple, list)) else ()
    if not names or any(n not in ("nngp", "ntk") for n in names):
        raise ValueError(f"get={get!r} is not accepted; accepted: 'nngp', 'ntk' or ('nngp', 'ntk')")
    return "nngp" in names, "ntk" in names


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------

class Examples:
    """The examples of one side of a kernel call, and for graphs their adjacency, node mask and node counts."""

    def __init__(self, x, adjacency=None, mask=None, tracked: bool = False):
        self.x, self.adjacency, self.mask, self.tracked = x, adjacency, mask, tracked
        if adjacency is not None:
            self.count = mask.sum(1) if mask is not None else x.new_full((x.shape[0],), float(x.shape[1]))

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def grad(self) -> bool:
        """Whether autograd follows these examples or the network's variances (``tracked``): then the kernel is
        computed out of place, differentiably."""
        return self.tracked or needs_grad(self.x, self.adjacency)

    def per_feature(self, features: int) -> "Examples":
        """These examples with ``x / √features``, whose inner products are the input covariances ``x·x′/features``
        without an intermediate that overflows (``x·x′`` can exceed the largest float where ``x·x′/features``
        does not)."""
        return Examples(self.x * (1.0 / math.sqrt(features)), self.adjacency, self.mask, self.tracked) \
            if features else self

    def contents(self) -> torch.Tensor:
        """Everything that defines each example, one row per example: two examples with equal rows are the same
        input (for graphs: features, adjacency and node mask)."""
        if self.adjacency is None:
            return self.x
        parts = [self.x, self.adjacency] + ([] if self.mask is None else [self.mask])
        return torch.cat([p.detach().reshape(self.n, -1).to(self.x.dtype) for p in parts], dim=1)

    def lined_up(self, rows: slice, layout: Layout, which):
        """The graph data of ``rows`` lined up for side 1 (``which=1``), side 2 (``which=2``) or the two sides of
        the pairs ``(x, x)`` (``which=None``): a pair of :class:`~ntkcore.layers._state.Side` (None for the side
        not asked for)."""
        if self.adjacency is None:
            return Side(), Side()
        a, count = self.adjacency[rows], self.count[rows]
        mask = None if self.mask is None else self.mask[rows]
        if which is None:
            m1, m2 = (None, None) if mask is None else layout.self_sides(mask)
            return Side(a, m1, count), Side(a, m2, count)
        if which == 1:
            return Side(a[:, None], None if mask is None else layout.side1(mask), count[:, None]), None
        return None, Side(a[None], None if mask is None else layout.side2(mask), count[None])


def _channels_first(x: torch.Tensor, name: str) -> None:
    """Refuse images that look channels-last, ``(n, H, W, C)`` with a square ``H × W`` and at most 4 channels."""
    _, c, h, w = x.shape
    if w <= 4 and w < c and c == h:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, which looks like channels-last images (n, H, W, C); "
                         "images must be (n, C, H, W) as in torch: pass x.permute(0, 3, 1, 2)")


def graph_list(xs, adjacency, name, adj_name, device, dtype):
    """Pad a list of graphs ``(N_i, C)`` with adjacencies ``(N_i, N_i)`` to one batch; returns (x, A, mask)."""
    if not isinstance(adjacency, (list, tuple)) or len(adjacency) != len(xs):
        raise ValueError(f"{adj_name} must be a list of one (N_i, N_i) array per graph of {name} ({len(xs)}), got "
                         f"{type(adjacency).__name__}")
    if not xs:
        raise ValueError(f"{name} must hold at least one graph")
    feats, adjs = [], []
    for i, (xi, ai) in enumerate(zip(xs, adjacency)):
        f = as_tensor(xi, f"{name}[{i}]", ndim=2, device=device if i == 0 else feats[0].device,
                      dtype=dtype if i == 0 else feats[0].dtype)
        if feats and f.shape[1] != feats[0].shape[1]:
            raise ValueError(f"{name}[{i}] must have the {feats[0].shape[1]} node features of {name}[0], got "
                             f"shape {tuple(f.shape)}")
        feats.append(f)
        adjs.append(_adjacency(ai, f"{adj_name}[{i}]", f.shape[0], f))
    sizes = [f.shape[0] for f in feats]
    n_max = max(sizes)
    x = feats[0].new_zeros(len(feats), n_max, feats[0].shape[1])
    a = feats[0].new_zeros(len(feats), n_max, n_max)
    for i, (f, ai) in enumerate(zip(feats, adjs)):
        x[i, : f.shape[0]] = f
        a[i, : f.shape[0], : f.shape[0]] = ai
    mask = None
    if min(sizes) != n_max:
        mask = (torch.arange(n_max, device=x.device)[None, :] < torch.tensor(sizes, device=x.device)[:, None])
        mask = mask.to(x.dtype)
    return x, a, mask


def _adjacency(a, name, n_nodes, like, batch=None):
    shape = (n_nodes, n_nodes) if batch is None else (batch, n_nodes, n_nodes)
    a = as_tensor(a, name, device=like.device, dtype=like.dtype)
    if tuple(a.shape) != shape:
        raise ValueError(f"{name} must be a square adjacency of shape {shape} (one row and column per node), got "
                         f"{tuple(a.shape)}")
    if bool((a < 0).any()):
        raise ValueError(f"{name} must have edge weights >= 0")
    return a


def _graphs(x, adjacency, name, adj_name, device, dtype):
    if isinstance(x, (list, tuple)):
        return graph_list(list(x), adjacency, name, adj_name, device, dtype)
    t = as_tensor(x, name, device=device, dtype=dtype)
    if t.ndim != 3:
        raise ValueError(f"{name} must be graphs: node features (n, N, C) or a list of (N_i, C) arrays, got shape "
                         f"{tuple(t.shape)}")
    if adjacency is None:
        raise ValueError(f"graph inputs need their adjacency: pass adjacency (n, N, N) for {name}")
    return t, _adjacency(adjacency, adj_name, t.shape[1], t, batch=t.shape[0]), None


def read_inputs(x1, x2, adjacency, device):
    """``(side1, side2 or None, shape of one example)`` from the arguments of :meth:`Serial.kernel`."""
    graphs = isinstance(x1, (list, tuple)) or (adjacency is not None)
    if graphs:
        if x2 is None:
            a1, a2 = adjacency, None
        else:
            if not isinstance(adjacency, (list, tuple)) or len(adjacency) != 2:
                raise ValueError("with x2 given, adjacency must be the pair (adjacency of x1, adjacency of x2)")
            a1, a2 = adjacency
        x, a, mask = _graphs(x1, a1, "x1", "adjacency" if x2 is None else "adjacency[0]", device, None)
        side1 = Examples(x, a, mask)
        side2 = None
        if x2 is not None:
            xb, ab, maskb = _graphs(x2, a2, "x2", "adjacency[1]", x.device, x.dtype)
            if xb.shape[2] != x.shape[2]:
                raise ValueError(f"x2 must have the {x.shape[2]} node features of x1, got {xb.shape[2]}")
            side2 = Examples(xb, ab, maskb)
        return side1, side2, Shape(GRAPH, x.shape[2], (None,))
    x = as_tensor(x1, "x1", device=device)
    if x.ndim == 3:
        raise ValueError(f"x1 of shape {tuple(x.shape)} looks like graphs (n, N, C): pass their adjacency")
    if x.ndim not in (2, 4):
        raise ValueError(f"x1 must be vectors (n, d), images (n, C, H, W) or graphs (n, N, C), got shape "
                         f"{tuple(x.shape)}")
    x, xb = inputs(x, x2, ndim=x.ndim)
    if x.ndim == 4:
        _channels_first(x, "x1")
    shape = Shape(IMAGE, x.shape[1], tuple(x.shape[2:])) if x.ndim == 4 else Shape(VECTOR, x.shape[1], ())
    return Examples(x), None if xb is None else Examples(xb), shape


# ---------------------------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _single_threaded_ops():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_workers(work, workers: int) -> None:
    """Call ``work(w)`` for ``w < workers``: in this thread for one worker, else in Python threads while torch's own
    intra-op threads are set to 1 (one synchronization per call instead of one per elementwise operation)."""
    if workers == 1:
        work(0)
        return
    with _single_threaded_ops(), concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(work, w) for w in range(workers)]:
            f.result()


def _workers(t: torch.Tensor) -> int:
    return torch.get_num_threads() if t.device.type == "cpu" else 1


# ---------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------

def kernel(net, x1, x2=None, *, get=("nngp", "ntk"), adjacency=None, device=None, max_memory=None,
           block_size=None) -> Kernels:
    """The kernels of ``net`` (a :class:`~ntkcore.layers.Serial`); see :meth:`Serial.kernel`."""
    want_nngp, want_ntk = parse_get(get)
    max_memory = DEFAULT_MAX_MEMORY if max_memory is None else check_int(max_memory, "max_memory", low=1)
    if block_size is not None:
        block_size = check_int(block_size, "block_size", low=1)
    side1, side2, shape = read_inputs(x1, x2, adjacency, device)
    given = [s.x for s in (side1, side2) if s is not None]
    for side in (side1, side2):
        if side is not None:
            side.tracked = _variances_tracked(net)
    side1, side2 = (None if s is None else s.per_feature(shape.channels) for s in (side1, side2))
    out = net._out_shape(shape)
    if branches(out) or out.kind != VECTOR:
        described = "several branches" if branches(out) else out.describe()
        raise ValueError(f"the network's output must be one vector per input (end it with Flatten(), "
                         f"GlobalAvgPool() or GlobalSumPool(), and a Dense readout), got {described}")
    n2 = side1.n if side2 is None else side2.n
    if not side1.n or not n2:  # no pairs: empty kernels
        return Kernels(*(side1.x.new_zeros(side1.n, n2) if want else None for want in (want_nngp, want_ntk)))
    if shape.kind == VECTOR and net.entrywise:
        kernels = entrywise_kernel(side1.x, None if side2 is None else side2.x, net._units(), want_nngp, want_ntk,
                                   block_size, max_memory, grad=side1.grad or (side2 is not None and side2.grad))
    else:
        kernels = pairs_kernel(net, side1, side2, shape, want_nngp, want_ntk, block_size, max_memory)
    return Kernels(*_entrywise.representable(
        kernels, given[0].dtype, lambda: f"the inputs' largest entry is {max(_largest(x) for x in given):.3g}"))


def _variances_tracked(net) -> bool:
    """Whether autograd follows a variance of one of the network's layers (given as a tensor that requires
    gradients; :func:`ntkcore._checks.check_variance`)."""
    return any(needs_grad(getattr(leaf, "weight_var", None), getattr(leaf, "bias_var", None))
               for leaf in net._leaves())


def _largest(x: torch.Tensor) -> float:
    return float(x.detach().abs().max()) if x.numel() else 0.0


# ---------------------------------------------------------------------------------------------------------------
# The fast path: entrywise layers on vectors
# ---------------------------------------------------------------------------------------------------------------

def entrywise_kernel(x1, x2, units, want_nngp, want_ntk, block_size, max_memory, grad: bool = False) -> Kernels:
    """Kernels of a chain of entrywise units on vectors ``x1 (n1, d)``, ``x2 (n2, d)`` or None (``x1``, symmetric).

    The first unit's affine map on ``K⁰ = x·x′/d`` is one matrix product per panel of rows; the rest of the chain
    runs on tiles of ``rows × 512`` entries (cache-sized on the CPU; the whole panel on CUDA). In a symmetric call
    only the tiles on and right of the diagonal are computed, the angle is exactly 0 on the diagonal and the
    output is mirrored, hence exactly symmetric.
    """
    symmetric = x2 is None
    same = _entrywise.same_inputs(x1, x2)
    xb = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    # autograd follows the inputs or the variances: one worker, every operation out of place
    grad = grad or needs_grad(x1, xb) or _entrywise.tracked(units)
    workers = 1 if grad else _workers(x1)
    tile_cols = _TILE_COLS if x1.device.type == "cpu" else max(n2, 1)
    if block_size is None:  # a panel of rows and its tile buffers, per worker, within max_memory
        per_row = (max(n2, 1) + (_N_BUFFERS - 1) * min(tile_cols, max(n2, 1))) * x1.element_size() * workers
        block_size = max(1, min(_TILE_ROWS if x1.device.type == "cpu" else n1, max_memory // per_row))
    block = block_size

    first, rest = (units[0].affine, units[1:]) if units[0].activation is None else (None, units)
    wv0, bv0 = (first.wv, first.bv) if first is not None else (1.0, 0.0)
    init_theta = first is not None and first.trains and want_ntk

    def diagonal_variances(x):
        return _entrywise.marginal_variances(_entrywise.squared_norms(x), units)[0]

    q1 = diagonal_variances(x1)
    q2 = q1 if symmetric else diagonal_variances(xb)
    outputs = [x1.new_empty(n1, n2) if want else None for want in (want_nngp, want_ntk)]
    starts = list(range(0, n1, block))
    workers = max(1, min(workers, len(starts)))

    def work(worker: int) -> None:  # panels worker, worker + workers, ...: balanced when widths shrink
        gram = x1.new_empty(min(block, n1) * n2)
        tiles = [x1.new_empty(min(block, n1) * min(max(tile_cols, block), n2))
                 for _ in range(_N_BUFFERS - 1 if rest else 0)]
        for i in starts[worker::workers]:
            rows = slice(i, min(i + block, n1))
            begin = i if symmetric else 0  # a symmetric call needs the entries right of the diagonal only
            xr = x1[rows]
            # K¹ = σw² x·x′/d + σb² for the whole panel: one matrix product
            if grad:
                panel = wv0 * (xr @ xb[begin:].T) + bv0
            else:
                panel = torch.addmm(torch.full((), _entrywise.number(bv0), dtype=x1.dtype, device=x1.device), xr,
                                    xb[begin:].T, beta=1.0 if _entrywise.number(bv0) else 0.0,
                                    alpha=_entrywise.number(wv0),
                                    out=gram[: (rows.stop - rows.start) * (n2 - begin)].view(rows.stop - rows.start,
                                                                                               n2 - begin))
            edges = ([i] if symmetric else []) + list(range(rows.stop if symmetric else 0, n2, tile_cols)) + [n2]
            row_vars = [v.map(lambda t: t[rows, None]) for v in q1]
            for j, stop in zip(edges[:-1], edges[1:]):
                cols = slice(j, stop)
                k = panel[:, j - begin: stop - begin]
                buffers = None if grad else [t[: k.numel()].view(k.shape) for t in tiles]
                on_diagonal = symmetric and j == i
                pairs = iter(list(zip(row_vars, [v.map(lambda t: t[None, cols]) for v in q2])))
                diag = _same_in_tile(same, rows, cols, on_diagonal)
                near = _NearParallel(x1[rows], xb[cols], q1[0].q[rows], q2[0].q[cols], wv0, bv0, diag) \
                    if rest and rest[0].activation is not None else None
                results = _entrywise.run(k, k if init_theta else None, rest, lambda _: next(pairs), diag=diag,
                                         want_ntk=want_ntk, buffers=buffers, near=near)
                if want_ntk and results[1] is None:
                    results = (results[0], torch.zeros_like(results[0]))
                for out, res in zip(outputs, results):
                    if out is None:
                        continue
                    if on_diagonal:  # mirror the upper triangle, so that the output is exactly symmetric
                        out[rows, cols] = res.triu() + res.triu(1).T
                    else:
                        out[rows, cols] = res
                        if symmetric:
                            out[cols, rows] = res.T

    run_workers(work, workers)
    return Kernels(*outputs)


class _NearParallel:
    """``near`` of the first activation of a tile (:class:`~ntkcore.activations.Near`): the pairs of inputs
    whose correlation is within ``NEAR`` of ±1 get ``1 − c²`` from the inputs themselves. One reduction over the
    tile finds whether there are any (usually not). The pairs of an input with itself (``diag``, whose correlation
    is exactly 1) are left out."""

    def __init__(self, x_rows, x_cols, q_rows, q_cols, wv, bv, diag):
        self.x_rows, self.x_cols, self.q_rows, self.q_cols, self.wv, self.bv = x_rows, x_cols, q_rows, q_cols, wv, bv
        self.diag = diag

    def __call__(self, c: torch.Tensor):
        low, high = torch.aminmax(c.detach())
        if float(high) <= 1 - NEAR and float(low) >= NEAR - 1:
            return None
        hits = c.detach().abs() > 1 - NEAR
        if isinstance(self.diag, torch.Tensor):
            hits &= ~self.diag
        elif self.diag is not None:
            self.diag(hits).fill_(False)
        r, col = hits.nonzero(as_tuple=True)
        if not r.numel():
            return None
        sin_sq = _entrywise.input_sine_squared(self.x_rows[r], self.x_cols[col], self.q_rows[r], self.q_cols[col],
                                               self.wv, self.bv)
        keep = sin_sq > 0  # exactly parallel or equal inputs: c is ±1, and diag marks the equal ones
        return Near((r[keep], col[keep]), sin_sq[keep]) if bool(keep.any()) else None


def _tile_diagonal(t: torch.Tensor) -> torch.Tensor:
    return t.diagonal()


def _same_in_tile(same, rows: slice, cols: slice, on_diagonal: bool):
    """The entries of a tile that pair an input with itself (``diag`` of :func:`_entrywise.run`): its diagonal in a
    symmetric call, and the pairs of identical inputs (``same``, from :func:`_entrywise.same_inputs`)."""
    if same is not None:
        mask = same[0][rows, None] == same[1][None, cols]
        if mask.any():
            return mask
    return _tile_diagonal if on_diagonal else None


# ---------------------------------------------------------------------------------------------------------------
# Tiles of pairs: images, graphs, and networks that are not chains of entrywise layers
# ---------------------------------------------------------------------------------------------------------------

def _pair_elements(layout: Layout, side1: Examples, side2: Examples) -> int:
    """Numbers per pair of examples in the kernel's widest state."""
    if layout.kind == IMAGE:
        h, w = side1.x.shape[2:]
        return (h * w) ** 2 if layout.full else h * w
    if layout.kind == GRAPH:
        return side1.x.shape[1] * side2.x.shape[1]
    return 1


def input_covariance(xa: torch.Tensor, xb: torch.Tensor | None, layout: Layout, pool: Pool) -> torch.Tensor:
    """The NNGP of the inputs, the channel mean ``Σ_c x_c x′_c / C`` of inputs already divided by ``√C``
    (:meth:`Examples.per_feature`), so the sum over the channels: for pairs (``xb`` given), ``(a, b, *S)``; for the
    pairs ``(x, x)`` of ``xa`` (``xb`` None), ``(a, *S)``. Full image covariances come from ``pool``."""
    if layout.kind == VECTOR:
        return (xa * xa).sum(1) if xb is None else xa @ xb.T
    if layout.kind == GRAPH:
        return xa @ xa.transpose(1, 2) if xb is None else torch.einsum("anc,bmc->abnm", xa, xb)
    a, c, h, w = xa.shape
    if not layout.full:
        return (xa * xa).sum(1) if xb is None else torch.einsum("achw,bchw->abhw", xa, xb)
    fa = xa.reshape(a, c, h * w)
    if xb is None:
        return torch.bmm(fa.transpose(1, 2), fa, out=pool.out((a, h * w, h * w), xa)).view(a, h, w, h, w)
    b = xb.shape[0]
    fb = xb.reshape(b, c, h * w)
    gram = torch.mm(fa.transpose(1, 2).reshape(a * h * w, c), fb.permute(1, 0, 2).reshape(c, b * h * w),
                    out=pool.out((a * h * w, b * h * w), xa))
    if pool.grad:
        return gram.view(a, h * w, b, h * w).permute(0, 2, 1, 3).reshape(a, b, h, w, h, w)
    out = pool.take((a, b, h, w, h, w), xa)
    out.view(a, b, h * w, h * w).copy_(gram.view(a, h * w, b, h * w).permute(0, 2, 1, 3))
    pool.give(gram)
    return out


class _Marginal:
    """The pass over the pairs ``(x, x)`` of one side: the variances at every activation (the tape), and the
    kernel of ``(x, x)`` itself (the exact diagonal of a symmetric call)."""

    def __init__(self, net, side: Examples, layout: Layout, want_ntk: bool, chunk: int):
        nngp, ntk, tapes = [], [], []
        pool = Pool(grad=side.grad)
        for start in range(0, side.n, chunk):
            rows = slice(start, min(start + chunk, side.n))
            data = side.lined_up(rows, layout, None)
            recorder = Recorder()
            p = Pairs(input_covariance(side.x[rows], None, layout, pool), None, layout, data[0], data[1], recorder,
                      want_ntk, marginal=True, pool=pool)
            p = net._transform(p, False)
            nngp.append(p.nngp)
            ntk.append(p.ntk if p.ntk is not None else torch.zeros_like(p.nngp))
            tapes.append(recorder.tape)
        self.nngp, self.ntk = torch.cat(nngp), torch.cat(ntk)
        self.tape = [type(parts[0])(*(torch.cat(t) for t in zip(*parts))) for parts in zip(*tapes)]


def pairs_kernel(net, side1: Examples, side2: Examples | None, shape: Shape, want_nngp, want_ntk, block_size,
                 max_memory) -> Kernels:
    """Kernels on tiles of example pairs, ``b1 × b2`` pairs per tile within ``max_memory`` per worker thread."""
    symmetric = side2 is None
    other = side1 if symmetric else side2
    layout = Layout(shape.kind, full=shape.kind == IMAGE and net.image_pairs)
    x = side1.x
    grad = side1.grad or other.grad
    workers = 1 if grad else _workers(x)
    elements = _pair_elements(layout, side1, other)
    budget = max(1, max_memory // workers)
    chunk = max(1, budget // (elements * x.element_size() * _PAIR_BUFFERS))
    if x.device.type == "cpu":  # cache-sized tiles; a GPU takes the largest tiles memory allows
        chunk = max(1, min(chunk, _PAIR_TILE_ENTRIES // elements))
    marginal1 = _Marginal(net, side1, layout, want_ntk, chunk)
    marginal2 = marginal1 if symmetric else _Marginal(net, other, layout, want_ntk, chunk)
    n1, n2 = side1.n, other.n
    block = block_size or max(1, math.isqrt(chunk))
    b1, b2 = min(block, n1), min(block, n2)
    tiles = [(slice(i, min(i + b1, n1)), slice(j, min(j + b2, n2)))
             for i in range(0, n1, b1) for j in range(0, n2, b2) if not symmetric or j + b2 > i]
    outputs = [x.new_empty(n1, n2) if want else None for want in (want_nngp, want_ntk)]
    workers = max(1, min(workers, len(tiles)))

    def work(worker: int) -> None:
        pool = Pool(grad=grad)  # each worker reuses its large tensors from one tile to the next
        for rows, cols in tiles[worker::workers]:
            s1 = side1.lined_up(rows, layout, 1)[0]
            s2 = other.lined_up(cols, layout, 2)[1]
            p = Pairs(input_covariance(side1.x[rows], other.x[cols], layout, pool), None, layout, s1, s2,
                      Replay(marginal1.tape, marginal2.tape, rows, cols), want_ntk, marginal=False, pool=pool)
            p = net._transform(p, False)
            results = (p.nngp, p.ntk if p.ntk is not None else torch.zeros_like(p.nngp))
            for out, res in zip(outputs, results):
                if out is None:
                    continue
                if symmetric and rows == cols:  # mirror the upper triangle: the output is exactly symmetric
                    out[rows, cols] = res.triu() + res.triu(1).T
                    continue
                out[rows, cols] = res
                if symmetric:
                    out[cols, rows] = res.T

    run_workers(work, workers)
    if symmetric:  # the exact diagonal, from the pairs (x, x)
        for out, res in zip(outputs, (marginal1.nngp, marginal1.ntk)):
            if out is not None:
                out.diagonal().copy_(res)
    same = _entrywise.same_inputs(side1.contents(), None if symmetric else other.contents())
    if same is not None:  # pairs of identical examples: the kernel of the example with itself, exactly
        i, j = (same[0][:, None] == same[1][None, :]).nonzero(as_tuple=True)
        for out, res in zip(outputs, (marginal1.nngp, marginal1.ntk)):
            if out is not None:
                out[i, j] = res[i]
    return Kernels(*outputs)

