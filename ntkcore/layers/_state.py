"""What flows between layers: the static shape of the features, and the kernel of a block of input pairs."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from ..activations import Variances

VECTOR, IMAGE, GRAPH = "vector", "image", "graph"


class Kernels(NamedTuple):
    """NNGP and NTK matrices, each ``(n1, n2)``; a field not asked for (``get=``) is None."""

    nngp: torch.Tensor | None
    ntk: torch.Tensor | None


class Shape(NamedTuple):
    """The features of one example between two layers.

    kind : ``"vector"`` (``(C,)``), ``"image"`` (``(C, H, W)``) or ``"graph"`` (node features ``(N, C)``).
    channels : C (None where only the kernel is computed and the inputs have not been seen).
    spatial : ``()``, ``(H, W)`` or ``(N,)`` (N None: graphs of any size).
    gaussian : whether the features are Gaussian in the infinite-width limit (the output of a Dense or Conv, and
        linear maps of it). A nonlinear activation needs Gaussian inputs: its kernel step is an expectation over a
        Gaussian pair.
    fresh : whether the features are a linear map of weights drawn after the last ``FanOut``: such a branch is
        uncorrelated with every other branch, so that ``FanInSum`` may add the branches' kernels.
    """

    kind: str
    channels: int | None
    spatial: tuple
    gaussian: bool = False
    fresh: bool = False

    def describe(self) -> str:
        if self.kind == VECTOR:
            return f"vectors (n, {self.channels if self.channels is not None else 'd'})"
        if self.kind == IMAGE:
            return f"images (n, C, H, W) with (H, W) = {self.spatial}"
        return "graphs (node features (n, N, C) with an adjacency (n, N, N))"


class Layout:
    """How per-example tensors ``(n, *P)`` (a variance per position or node) line up with the kernel of a block of
    pairs ``(b1, b2, *S)``, and with the kernel of the pairs ``(x, x)`` of a block of examples ``(n, *S)``.

    vector: P = S = ().  image, diagonal: P = S = (H, W), only pairs of equal positions are kept (enough for a
    network that reads its output off the spatial diagonal, as Flatten does).  image, full: P = (H, W),
    S = (H, W, H, W), every pair of positions.  graph: P = (N,), S = (N1, N2), every pair of nodes.
    """

    def __init__(self, kind: str, full: bool):
        self.kind, self.full = kind, full

    def side1(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == GRAPH:
            return t[:, None, :, None]
        if self.kind == IMAGE and self.full:
            return t[:, None, :, :, None, None]
        return t[:, None]

    def side2(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == GRAPH:
            return t[None, :, None, :]
        if self.kind == IMAGE and self.full:
            return t[None, :, None, None, :, :]
        return t[None]

    def self_sides(self, t: torch.Tensor):
        """The two sides of the pairs ``(x, x)`` from per-example ``t (n, *P)``."""
        if self.kind == GRAPH:
            return t[:, :, None], t[:, None, :]
        if self.kind == IMAGE and self.full:
            return t[:, :, :, None, None], t[:, None, None, :, :]
        return t, t

    def diagonal(self, k: torch.Tensor) -> torch.Tensor:
        """Per-example variances ``(n, *P)`` read off the kernel of the pairs ``(x, x)``, ``(n, *S)``."""
        view = self.diag_view(k)
        return view.reshape(k.shape[:1] + k.shape[1:3]) if self.kind == IMAGE and self.full else view

    def diag_view(self, k: torch.Tensor) -> torch.Tensor:
        """A view of the entries of ``k (n, *S)`` whose two sides are the same position of the same input."""
        if self.kind == GRAPH:
            return k.diagonal(dim1=-2, dim2=-1)
        if self.kind == IMAGE and self.full:
            n, h, w = k.shape[:3]
            return k.view(n, h * w, h * w).diagonal(dim1=-2, dim2=-1)
        return k


@dataclasses.dataclass
class Side:
    """Per-example data of one side of a block of pairs, already lined up with the kernel (:class:`Layout`).

    adjacency : graphs, ``A`` (rows receive), ``(b, 1, N, N)`` / ``(1, b, N, N)`` / ``(n, N, N)``.
    mask : graphs, 1 for real nodes and 0 for padding, lined up like a variance.
    count : graphs, the number of real nodes per graph, lined up like a kernel entry.
    """

    adjacency: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    count: torch.Tensor | None = None
    _normalized: dict = dataclasses.field(default_factory=dict)

    def aggregation(self, normalize) -> torch.Tensor:
        """:func:`aggregation_matrix` of this side's adjacency (computed once per normalization)."""
        if normalize not in self._normalized:
            self._normalized[normalize] = aggregation_matrix(self.adjacency, normalize)
        return self._normalized[normalize]


def aggregation_matrix(adjacency: torch.Tensor, normalize) -> torch.Tensor:
    """``A`` itself, or ``c ⊙ A`` with ``c_u = 1/Σ_v A_uv`` (Du et al.'s ``c_u = 1/(|N(u)| + 1)`` when ``A``
    has self-loops); an empty row keeps ``c_u = 0``. ``adjacency (..., N, N)``, rows receive."""
    if normalize != "degree":
        return adjacency
    degree = adjacency.sum(-1, keepdim=True)
    scale = torch.where(degree > 0, 1 / degree.clamp_min(torch.finfo(adjacency.dtype).tiny), torch.zeros_like(degree))
    return adjacency * scale


class Recorder:
    """Variances for the pairs ``(x, x)`` of a block of examples: read off the kernel itself and recorded per
    example, in the order the activations run, for the pass over pairs of different examples."""

    def __init__(self):
        self.tape = []

    def __call__(self, k: torch.Tensor, layout: Layout):
        var = Variances.of(layout.diagonal(k).clone(memory_format=torch.contiguous_format))
        self.tape.append(var)
        return (var.map(lambda t: layout.self_sides(t)[0]), var.map(lambda t: layout.self_sides(t)[1]))


class Replay:
    """Variances for a block of pairs (rows of side 1 × columns of side 2), replayed from the two recorded tapes."""

    def __init__(self, tape1, tape2, rows: slice, cols: slice):
        self.tape1, self.tape2, self.rows, self.cols = tape1, tape2, rows, cols
        self.index = 0

    def __call__(self, k: torch.Tensor, layout: Layout):
        v1, v2 = self.tape1[self.index], self.tape2[self.index]
        self.index += 1
        return v1.map(lambda t: layout.side1(t[self.rows])), v2.map(lambda t: layout.side2(t[self.cols]))


class Pool:
    """Large tensors of one worker, reused from one block of pairs to the next.

    Every block of pairs allocates and frees tensors of the same few sizes. Left to the C allocator, large tensors
    freed in a loop end up served from its heap, which fragments: the resident memory of a long kernel computation
    then grows far beyond the memory bound (several GB for a hundred 32×32 images). The transforms of the pairs path
    therefore take their outputs from a pool and give back the inputs they no longer need. A tensor is given back
    once, only when nothing else refers to it; views are never pooled.

    With ``grad=True`` (inputs that require gradients) nothing is reused and :meth:`out` is None: every operation
    then allocates its result, which autograd needs.
    """

    def __init__(self, grad: bool = False):
        self.grad = grad
        self._free: dict = {}
        self._pooled: set = set()

    def take(self, shape, like: torch.Tensor) -> torch.Tensor:
        """An uninitialized contiguous tensor of ``shape``, with ``like``'s dtype and device."""
        size = 1
        for dim in shape:
            size *= dim
        free = self._free.get((size, like.dtype, like.device))
        if free:
            flat = free.pop()
            self._pooled.discard(flat.data_ptr())
            return flat.view(shape)
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def out(self, shape, like: torch.Tensor):
        """A tensor for an operation's ``out=`` argument, or None when autograd follows the computation."""
        return None if self.grad else self.take(shape, like)

    def give(self, *tensors) -> None:
        """Return tensors that are no longer needed (anything that is not a whole contiguous tensor is ignored)."""
        if self.grad:
            return
        for t in tensors:
            if not isinstance(t, torch.Tensor) or not t.numel() or not t.is_contiguous() or t.storage_offset() \
                    or t.untyped_storage().nbytes() != t.numel() * t.element_size() or t.data_ptr() in self._pooled:
                continue
            self._pooled.add(t.data_ptr())
            self._free.setdefault((t.numel(), t.dtype, t.device), []).append(t.view(-1))


@dataclasses.dataclass
class Pairs:
    """The kernel of a block of input pairs as it flows through the layers.

    nngp : ``(b1, b2, *S)`` for pairs of different examples, ``(n, *S)`` for the pairs ``(x, x)`` (``marginal``).
    ntk : the same shape, or None while no layer so far is trainable (a zero tangent kernel).
    layout : :class:`Layout` (kind of features, full or diagonal spatial pairs).
    side1, side2 : :class:`Side` data (graphs).
    source : a :class:`Recorder` (marginal) or :class:`Replay` (pairs) of the variances at each activation.
    want_ntk : whether the tangent kernel is computed at all.
    pool : the worker's :class:`Pool` of large tensors.
    """

    nngp: torch.Tensor
    ntk: torch.Tensor | None
    layout: Layout
    side1: Side
    side2: Side
    source: object
    want_ntk: bool
    marginal: bool
    pool: Pool = dataclasses.field(default_factory=Pool)

    def variances(self, k: torch.Tensor):
        """``(v1, v2)`` entering the next activation, lined up with ``k``."""
        return self.source(k, self.layout)

    @property
    def diag(self):
        """Where the two sides are the same position of the same input (marginal pass only)."""
        return self.layout.diag_view if self.marginal else None

    def replace(self, **changes) -> "Pairs":
        return dataclasses.replace(self, **changes)

    def map(self, fn) -> "Pairs":
        """The same linear map applied to the NNGP and the NTK; their old tensors go back to the pool."""
        out = self.replace(nngp=fn(self.nngp), ntk=None if self.ntk is None else fn(self.ntk))
        kept = {t.untyped_storage().data_ptr() for t in (out.nngp, out.ntk) if t is not None}
        self.pool.give(*[t for t in (self.nngp, self.ntk)
                         if t is not None and t.untyped_storage().data_ptr() not in kept])
        return out

    def take(self, shape) -> torch.Tensor:
        """A tensor for an output or a scratch result, from the pool."""
        return self.pool.take(shape, self.nngp)
