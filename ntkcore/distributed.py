"""Kernel matrices and kernel regression beyond one machine, on Dask.

The kernels of :mod:`ntkcore` are computed in tiles within a memory bound (:meth:`ntkcore.layers.Serial.kernel`,
:func:`ntkcore.empirical.ntk`). This module hands blocks of a kernel matrix to Dask, which runs them on whatever
scheduler is active: its threads or processes, a ``distributed`` cluster of many machines, or GPU workers
(``dask-cuda``; each worker computes on the device that ``NTKCORE_DEVICE`` names there, :mod:`ntkcore.device`).

* :func:`kernel_matrix` gives the kernel matrix ``K(x1, x2)`` as a lazy ``dask.array`` of ``chunk × chunk`` blocks.
  Each block is the in-memory kernel of its two blocks of examples, computed by the in-memory call itself
  (:meth:`Serial.kernel <ntkcore.layers.Serial.kernel>` for a network of :mod:`ntkcore.layers`,
  :func:`ntkcore.empirical.ntk` for a torch model); a symmetric call (``x2=None``) computes the blocks on and above
  the diagonal and mirrors them. :func:`to_npy` writes it to disk block by block without ever holding it.
* :class:`KernelOperator` is the same matrix as a linear operator: a product ``K v`` recomputes every block and
  keeps only vectors, for a matrix that does not fit in the cluster's memory.
* :func:`solve_cholesky` (the blocked Cholesky factorization of ``dask.array.linalg``, for a matrix that fits in the
  cluster's memory) and :func:`solve_cg` (conjugate gradients with a Nyström preconditioner, matrix-free)
  solve kernel ridge regression ``(K + λI) α = y`` (book Chapter 5; :func:`ntkcore.predict.kernel_ridge` in memory)
  and report the residual and the iterations; :func:`kernel_ridge` also predicts ``k(x, X) α`` on test inputs.

Inputs may be numpy arrays, torch tensors, ``dask.array`` arrays (from Zarr, HDF5, ...), or the path of a ``.npy``
file, read block by block where the block is computed (the workers must see the file). A graph network of
:mod:`ntkcore.layers` takes the pair ``(x, adjacency)`` of arrays ``(n, N, C)`` and ``(n, N, N)``, or for graphs of
different sizes the pair of lists of ``(N_i, C)`` and ``(N_i, N_i)`` arrays, as :meth:`Serial.kernel
<ntkcore.layers.Serial.kernel>` takes them (padded here with their numbers of nodes, and cut back to lists in each
block); a torch model with several inputs takes the tuple of them (as :func:`ntkcore.empirical.ntk`).

Memory. A block task holds its two blocks of inputs, the kernel block it computes and the intermediates of the
in-memory call, which ``max_memory`` bounds: :attr:`KernelOperator.task_memory` is the sum, independent of the
number of examples. A worker holds it once per thread, the blocks of inputs that its tasks still need, and the blocks
of the kernel it has finished until they are written or consumed: :meth:`KernelOperator.to_npy` and the products
consume each block in the task that computes it (:meth:`KernelOperator.worker_memory`).

Dask is imported when a function of this module is called (``pip install "ntkcore[distributed]"``).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from . import empirical, layers
from ._checks import as_numpy, check_bool, check_choice, check_int, check_real, labels
from .device import resolve_device
from .layers._execute import DEFAULT_MAX_MEMORY as LAYERS_MAX_MEMORY
from .layers._execute import graph_list
from .predict import _magnitude

__all__ = ["KernelOperator", "Solution", "Regression", "kernel_matrix", "to_npy", "solve_cholesky", "solve_cg",
           "kernel_ridge", "peak_memory"]

DEFAULT_CHUNK = 2048
"""Examples per block: a block of ``2048²`` entries is 32 MiB in float64, large enough that Dask's overhead per task
(about a millisecond) is negligible against its computation."""
DASK_WORKING_MEMORY = 32 * 2**20
"""Bytes a Dask worker holds besides its tasks (messages, task states, communication buffers), in the bound of
:meth:`KernelOperator.worker_memory`: measured up to 22 MiB on a ``LocalCluster`` of two workers computing a hundred
blocks; it grows by a few kB per task."""
_PROBE_ROWS = 2  # examples per side of the block computed on the client to check the arguments
_RESTARTS = 2  # restarts of CG from its true residual when the recursion's residual has drifted from it


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as err:  # pragma: no cover - the extra is installed with the tests
        raise ImportError('ntkcore.distributed needs Dask: pip install "ntkcore[distributed]" (dask and '
                          'distributed)') from err
    return dask, da


# ---------------------------------------------------------------------------------------------------------------
# One block: the in-memory kernel of two blocks of examples
# ---------------------------------------------------------------------------------------------------------------

class Tile:
    """The kernel between two blocks of examples, by the in-memory call: :meth:`Serial.kernel
    <ntkcore.layers.Serial.kernel>` for a network of :mod:`ntkcore.layers` (its ``get``: ``"ntk"`` or ``"nngp"``),
    :func:`ntkcore.empirical.ntk` for a torch model (``method``, ``trace_outputs``). ``max_memory`` bounds the
    call's intermediates (None: the call's default). Computes on the device that ``NTKCORE_DEVICE`` names where it
    runs. Blocks are tuples of numpy arrays (the parts of the inputs), results numpy arrays."""

    def __init__(self, net, *, get: str, max_memory, method: str, trace_outputs: bool):
        if isinstance(net, layers.Layer):
            self.net = net if isinstance(net, layers.Serial) else layers.serial(net)
            self.get = check_choice(get, "get", ("ntk", "nngp"))
        elif isinstance(net, nn.Module):
            self.net = net
            self.get = check_choice(get, "get (a torch model gives its empirical NTK)", ("ntk",))
        else:
            raise ValueError(f"net must be a network of ntkcore.layers (its analytic kernel) or a torch.nn.Module "
                             f"(its empirical NTK), got {type(net).__name__}")
        self.max_memory = None if max_memory is None else check_int(max_memory, "max_memory", low=1)
        self.method = check_choice(method, "method", empirical.METHODS)
        self.trace_outputs = check_bool(trace_outputs, "trace_outputs")
        self._models = {}  # the torch model on each device, copied once per process

    def __getstate__(self):
        return {**self.__dict__, "_models": {}}

    def __call__(self, a: tuple, b: tuple | None = None, where: str = "") -> np.ndarray:
        """``K(a, b)``; ``K(a, a)`` for ``b`` None (the in-memory symmetric call, exactly symmetric). A ValueError
        of the call names the block (``where``)."""
        try:
            with torch.no_grad():
                k = self._analytic(a, b) if isinstance(self.net, layers.Serial) else self._empirical(a, b)
        except ValueError as err:
            raise ValueError(f"{err} (in the block of {where})" if where else str(err)) from err
        return k.detach().cpu().numpy()

    def _analytic(self, a, b):
        xa, adjacency = _network_inputs(a)
        xb = None
        if b is not None:
            xb, adjacency_b = _network_inputs(b)
            adjacency = None if adjacency is None else (adjacency, adjacency_b)
        kernels = self.net.kernel(xa, xb, get=self.get, adjacency=adjacency, max_memory=self.max_memory)
        return getattr(kernels, self.get)

    def _empirical(self, a, b):
        device = resolve_device(None)
        model = self._models.get(device)
        if model is None:
            on = next(self.net.parameters(), torch.empty(0)).device
            model = self.net if on == device else copy.deepcopy(self.net).to(device)
            self._models[device] = model

        return empirical.ntk(model, _inputs(a), None if b is None else _inputs(b), method=self.method,
                             trace_outputs=self.trace_outputs, max_memory=self.max_memory)


def _network_inputs(parts: tuple):
    """A block of examples as :meth:`Serial.kernel <ntkcore.layers.Serial.kernel>` takes it, on the device that
    ``NTKCORE_DEVICE`` names: ``(x, None)``, ``(x, adjacency)``, or for padded graphs of different sizes (``parts``
    holding their numbers of nodes too, :func:`_graph_lists`) the lists of their features and adjacencies."""
    device = resolve_device(None)

    def tensor(x):
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    if len(parts) == 3:
        x, adjacency, nodes = parts
        return ([tensor(x[i, :m]) for i, m in enumerate(nodes[:, 0])],
                [tensor(adjacency[i, :m, :m]) for i, m in enumerate(nodes[:, 0])])
    return tensor(parts[0]), (tensor(parts[1]) if len(parts) > 1 else None)


def _where(rows: tuple[int, int], cols: tuple[int, int]) -> str:
    return f"rows {rows[0]}:{rows[1]} of x1 and {cols[0]}:{cols[1]} of x2"


def _block(tile: Tile, rows, cols, n_parts: int, *chunks) -> np.ndarray:
    """The task of one block on or above the diagonal (a diagonal block of a symmetric matrix: no ``b`` chunks)."""
    a, b = chunks[:n_parts], chunks[n_parts:]
    return tile(a, b or None, _where(rows, cols))


def _mirror(block: np.ndarray) -> np.ndarray:
    """The block below the diagonal of a symmetric matrix: the transpose of the one above it."""
    return block.T if block.ndim == 2 else block.transpose(1, 0, 3, 2)


def _block_product(tile: Tile, rows, cols, n_parts: int, v_rows, v_cols, *chunks):
    """``K_ij v_j`` for one block, and ``K_ijᵀ v_i`` for a block above the diagonal of a symmetric matrix (``v_rows``
    given): the block itself is dropped once the products are taken."""
    # in float64 (the products of a float32 block are exact), converted once: numpy multiplies a float32 matrix by a
    # float64 vector without BLAS, ten times slower than the conversion and two products together
    k = _block(tile, rows, cols, n_parts, *chunks).astype(np.float64, copy=False)
    forward = k @ v_cols
    if v_rows is None:  # a block on the diagonal, or of a matrix that is not symmetric
        return forward
    return forward, k.T @ v_rows


def _block_to_npy(tile: Tile, rows, cols, n_parts: int, path: str, symmetric: bool, *chunks) -> np.ndarray:
    """Compute one block and write it into the ``.npy`` file ``path``, with its mirror image below the diagonal of a
    symmetric matrix; returns one block of the 1-d array the writes are computed as."""
    k = _block(tile, rows, cols, n_parts, *chunks)
    _write_block(path, k, rows[0], cols[0])
    if symmetric and len(chunks) > n_parts:  # above the diagonal: its mirror image too, transposed by torch (about
        # four times faster than numpy's copy of a transposed view)
        _write_block(path, torch.from_numpy(_mirror(k)).contiguous().numpy(), cols[0], rows[0])
    return np.ones(1, dtype=np.int64)


def _write_block(path: str, block: np.ndarray, row: int, col: int) -> None:
    """Write ``block`` at ``(row, col)`` of the C-ordered ``.npy`` array in ``path``, row by row (no mapping of the
    file into this process: its pages do not count in the worker's memory)."""
    target = np.load(path, mmap_mode="r")
    offset, width = target.offset, math.prod(target.shape[1:]) // target.shape[1]
    stride, item = target.shape[1] * width, target.dtype.itemsize
    del target
    fd = os.open(path, os.O_WRONLY)
    try:
        for r in range(block.shape[0]):
            data = np.ascontiguousarray(block[r], dtype=block.dtype)
            os.pwrite(fd, data, offset + ((row + r) * stride + col * width) * item)
    finally:
        os.close(fd)


def _row_sum(which: tuple, *parts) -> np.ndarray:
    """The sum of the products of one row of blocks, in float64 (``which``: the element of a pair to take)."""
    total = None
    for w, part in zip(which, parts):
        term = (part if w is None else part[w]).astype(np.float64)
        total = term if total is None else total + term
    return total


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------

class _NpyFile:
    """A ``.npy`` file as an array that ``dask.array.from_array`` reads block by block; it pickles as its path, so
    that each worker reads its own rows."""

    def __init__(self, path, name: str):
        self.path = os.fspath(path)
        try:
            array = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise ValueError(f"{name} names the file {self.path!r}, which is not a readable .npy array: {err}") from err
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, index) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r")[index])

    def __dask_tokenize__(self):
        return self.path, os.stat(self.path).st_mtime_ns, self.shape, str(self.dtype)


def _part(x, name: str, chunk: int):
    """One input array as a dask array with ``chunk`` examples per block and one block along its other axes."""
    _, da = _dask()
    if isinstance(x, (str, os.PathLike)):
        source = _NpyFile(x, name)
        x = da.from_array(source, chunks=(chunk,) + source.shape[1:], lock=False, inline_array=True,
                          meta=np.empty((0,) * source.ndim, dtype=source.dtype))
    elif not isinstance(x, da.Array):
        x = as_numpy(x, name, dtype=None)
        x = da.from_array(x, chunks=(chunk,) + x.shape[1:])
    if x.ndim < 2:
        raise ValueError(f"{name} must hold examples along its first axis, (n, ...), got shape {x.shape}")
    if any(math.isnan(c) for c in x.chunks[0]):
        raise ValueError(f"{name} has blocks of unknown size; call {name}.compute_chunk_sizes() first")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example, got shape {x.shape}")
    return x.rechunk((chunk,) + (-1,) * (x.ndim - 1))


def _graph_lists(features: list, adjacency: list, name: str) -> tuple:
    """Graphs of different sizes, lists of ``(N_i, C)`` features and ``(N_i, N_i)`` adjacencies, as three arrays:
    padded features ``(n, N, C)`` and adjacencies ``(n, N, N)`` (checked and padded as :meth:`Serial.kernel
    <ntkcore.layers.Serial.kernel>` pads them), and the numbers of nodes ``(n, 1)`` (examples along the first axis,
    as every part)."""
    x, a, mask = graph_list(features, adjacency, f"{name}[0]", f"{name}[1]", "cpu", None)
    nodes = np.full(x.shape[0], x.shape[1], dtype=np.int64) if mask is None else mask.sum(1).long().numpy()
    return x.numpy(), a.numpy(), nodes[:, None]


def _side(x, name: str, chunk: int) -> tuple:
    """The parts of one side's inputs (one array, or a tuple: a graph's features and adjacency, as arrays or as
    lists of graphs of different sizes; a model's inputs)."""
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], list):
        x = _graph_lists(x[0], x[1], name)
    if isinstance(x, tuple):
        if not x:
            raise ValueError(f"{name} must be an array or a non-empty tuple of arrays")
        parts = tuple(_part(p, f"{name}[{k}]", chunk) for k, p in enumerate(x))
        if any(p.shape[0] != parts[0].shape[0] for p in parts):
            raise ValueError(f"the arrays of {name} must hold the same number of examples, got shapes "
                             f"{[p.shape for p in parts]}")
        return parts
    return (_part(x, name, chunk),)


def _inputs(parts: tuple):
    """One side's inputs as the network takes them: the array, or the tuple of arrays."""
    return parts[0] if len(parts) == 1 else tuple(parts)


def _starts(chunks: tuple[int, ...]) -> list[int]:
    return [0, *np.cumsum(chunks).tolist()]


# ---------------------------------------------------------------------------------------------------------------
# The kernel matrix: lazy blocks and matrix-free products
# ---------------------------------------------------------------------------------------------------------------

class KernelOperator:
    """The kernel matrix ``K(x1, x2)`` of a network, in blocks of ``chunk × chunk`` entries that Dask computes.

    Parameters
    ----------
    net : a network of :mod:`ntkcore.layers` (e.g. :func:`ntkcore.kernels.fc_network`,
        :func:`ntkcore.kernels.cntk_network`): its analytic kernel ``get``; or a ``torch.nn.Module``: its empirical
        NTK (:func:`ntkcore.empirical.ntk` with ``method``, ``trace_outputs``).
    x1, x2 : inputs ``(n1, ...)``, ``(n2, ...)``: numpy arrays, torch tensors, dask arrays, or paths of ``.npy``
        files; a tuple of such arrays for a graph network ``(x, adjacency)`` or a model with several inputs; for
        graphs of different sizes the pair of lists ``([x_i (N_i, C)], [adjacency_i (N_i, N_i)])``.
        ``x2=None`` is the symmetric matrix ``K(x1, x1)``: only the blocks on and above the diagonal are computed.
    get : ``"ntk"`` (default) or ``"nngp"`` (networks of :mod:`ntkcore.layers` only).
    chunk : examples per block (default :data:`DEFAULT_CHUNK`).
    max_memory : bound in bytes on the intermediates of one block's in-memory call (None: that call's default,
        256 MiB for :meth:`Serial.kernel <ntkcore.layers.Serial.kernel>`, 2 GiB for :func:`ntkcore.empirical.ntk`).

    The arguments are checked on a block of the first examples, computed here before anything is sent to Dask.
    """

    def __init__(self, net, x1, x2=None, *, get: str = "ntk", chunk: int = DEFAULT_CHUNK, max_memory=None,
                 method: str = "auto", trace_outputs: bool = False):
        _dask()
        options = dict(get=get, max_memory=max_memory, method=method, trace_outputs=trace_outputs)
        tile = Tile(net, **options)
        chunk = check_int(chunk, "chunk", low=1)
        if isinstance(tile.net, layers.Serial):  # three parts are graphs of different sizes (_graph_lists)
            for x, name in ((x1, "x1"), (x2, "x2")):
                if isinstance(x, tuple) and len(x) > 2:
                    raise ValueError(f"{name} of a network of ntkcore.layers must be an array, or for graphs the pair "
                                     f"(x, adjacency) of arrays or of lists of graphs; got a tuple of {len(x)}")
        sides = [_side(x1, "x1", chunk)] + ([] if x2 is None else [_side(x2, "x2", chunk)])
        self._start(tile, options, chunk, sides)

    def _start(self, tile: Tile, options: dict, chunk: int, sides: list) -> None:
        """Set up the operator of ``tile`` on ``sides`` (the parts of each side's inputs as :func:`_side` gives
        them; one side: the symmetric matrix), and check it on a block of the first examples."""
        dask, _ = _dask()
        self.tile, self._options, self.chunk, self._sides = tile, options, chunk, sides
        self.symmetric = len(sides) == 1
        first = dask.compute(*[tuple(p[:_PROBE_ROWS] for p in side) for side in sides])
        probe = self.tile(first[0], first[-1])
        self.dtype = probe.dtype
        self.shape = (sides[0][0].shape[0], sides[-1][0].shape[0]) + probe.shape[2:]
        self._persisted = False

    @property
    def task_memory(self) -> int:
        """Bytes one block task holds at most: ``max_memory`` (the intermediates of the in-memory call), the block of
        the kernel twice (the result, and a copy where Dask moves it between workers or, in float64, where a product
        multiplies it), and the two blocks of inputs. A bound independent of the number of examples."""
        default = empirical.DEFAULT_MAX_MEMORY if isinstance(self.tile.net, nn.Module) else LAYERS_MAX_MEMORY
        intermediates = default if self.tile.max_memory is None else self.tile.max_memory
        entries = self.chunk ** 2 * math.prod(self.shape[2:])
        inputs = sum(p.dtype.itemsize * math.prod(p.shape[1:]) for side in self._sides for p in side)
        copy = max(self.dtype.itemsize, 8)  # a copy moved between workers, or in float64 for a product
        return intermediates + entries * (self.dtype.itemsize + copy) + self.chunk * inputs * (2 if self.symmetric
                                                                                                else 1)

    def worker_memory(self, threads: int = 1) -> int:
        """Bound in bytes on the growth of a worker's memory while it computes blocks of this matrix on ``threads``
        threads: ``threads`` × :attr:`task_memory`, plus the inputs (Dask keeps the blocks of inputs where tasks
        still need them: at most all of them, ``n`` examples, not ``n²`` entries), plus
        :data:`DASK_WORKING_MEMORY`; where the blocks are consumed as they come (written by :meth:`to_npy`, or
        multiplied by a product). A matrix kept in the cluster's memory (``.persist()``) comes on top."""
        inputs = sum(p.nbytes for side in self._sides for p in side)
        return check_int(threads, "threads", low=1) * self.task_memory + inputs + DASK_WORKING_MEMORY

    # ----------------------------------------------------------------------------------------- the graphs
    def _tasks(self, kind: str, fn, extra=lambda i, j: (), token=(), key=None) -> tuple[str, dict, list]:
        """The graph of one task per block computed, ``fn(tile, rows, cols, n_parts, *extra(i, j), *chunks)``:
        its name, its tasks (with the tile, once, as data) and the list of ``(i, j, key)``, keyed
        ``key(name, b, i, j)`` for the ``b``-th block (default ``(name-block, i, j)``). The blocks are all of them,
        or those on and above the diagonal of a symmetric matrix (whose diagonal blocks get one side's chunks)."""
        from dask.task_spec import DataNode, Task, TaskRef
        from dask.base import tokenize

        name = f"ntkcore-{kind}-" + tokenize(self.tile, [p.name for side in self._sides for p in side], *token)
        key = key or (lambda name, b, i, j: (name + "-block", i, j))
        tile = TaskRef(name + "-tile")
        tasks, blocks = {name + "-tile": DataNode(name + "-tile", self.tile)}, []
        s1, s2 = _starts(self._sides[0][0].chunks[0]), _starts(self._sides[-1][0].chunks[0])
        for i in range(len(s1) - 1):
            for j in range(i if self.symmetric else 0, len(s2) - 1):
                chunks = self._chunk_refs(0, i) + ([] if self.symmetric and i == j else self._chunk_refs(-1, j))
                k = key(name, len(blocks), i, j)
                tasks[k] = Task(k, fn, tile, (s1[i], s1[i + 1]), (s2[j], s2[j + 1]), len(self._sides[0]),
                                *extra(i, j), *chunks)
                blocks.append((i, j, k))
        return name, tasks, blocks

    def _chunk_refs(self, side: int, i: int) -> list:
        from dask.task_spec import TaskRef

        return [TaskRef((p.name, i) + (0,) * (p.ndim - 1)) for p in self._sides[side]]

    def _array(self, name: str, tasks: dict, chunks: tuple, dtype):
        """The dask array of ``tasks`` (its blocks keyed ``(name, i, ...)``), on top of the inputs' graphs."""
        _, da = _dask()
        from dask.highlevelgraph import HighLevelGraph

        graph = HighLevelGraph.from_collections(name, tasks, dependencies=[p for side in self._sides for p in side])
        return da.Array(graph, name, chunks, meta=np.empty((0,) * len(chunks), dtype=dtype))

    def matrix(self):
        """The kernel matrix as a lazy ``dask.array`` of shape ``(n1, n2)`` (``(n1, n2, O, O)`` for the empirical
        NTK of a model with ``O > 1`` outputs and ``trace_outputs=False``), in blocks of ``chunk`` examples."""
        from dask.task_spec import Task, TaskRef

        tail = (0,) * (len(self.shape) - 2)
        name, tasks, blocks = self._tasks("kernel", _block, key=lambda name, b, i, j: (name, i, j) + tail)
        for i, j, key in blocks:
            if self.symmetric and j > i:
                below = (name, j, i) + tail
                tasks[below] = Task(below, _mirror, TaskRef(key))
        chunks = (self._sides[0][0].chunks[0], self._sides[-1][0].chunks[0]) + tuple((s,) for s in self.shape[2:])
        return self._array(name, tasks, chunks, self.dtype)

    def columns(self, index) -> np.ndarray:
        """The columns ``index`` of the symmetric matrix, ``K(x, x[index])`` of shape ``(n, len(index))``, computed
        (the landmarks of :func:`solve_cg`'s preconditioner)."""
        dask, _ = _dask()
        if not self.symmetric:
            raise ValueError("columns needs the symmetric matrix K(x1, x1) (x2=None)")
        side = self._sides[0]
        chosen = dask.compute(*(p[np.asarray(index)] for p in side))
        cross = KernelOperator.__new__(KernelOperator)  # on the parts of this one (graph lists stay three parts)
        cross._start(self.tile, self._options, self.chunk,
                     [side, tuple(_part(p, "x1[index]", self.chunk) for p in chosen)])
        return cross.matrix().compute()

    def __matmul__(self, v) -> np.ndarray:
        """``K v`` for ``v`` of shape ``(n2,)`` or ``(n2, m)``, in float64: every block is computed again and
        dropped once multiplied, so that only vectors are kept. The inputs are kept in the cluster's memory from the
        first product on."""
        dask, _ = _dask()
        from dask.task_spec import DataNode, Task, TaskRef
        from dask.base import tokenize

        if len(self.shape) != 2:
            raise ValueError(f"products need a matrix (n1, n2); this kernel has shape {self.shape}: pass "
                             f"trace_outputs=True or a model with one output")
        v = as_numpy(v, "v")
        if v.ndim not in (1, 2) or v.shape[0] != self.shape[1]:
            raise ValueError(f"v must have shape ({self.shape[1]},) or ({self.shape[1]}, m), got {v.shape}")
        if not self._persisted:  # the inputs stay on the workers between products (CG takes many)
            self._sides = [dask.persist(*side) for side in self._sides]
            self._persisted = True
        starts = _starts(self._sides[-1][0].chunks[0])
        token = tokenize(v)
        pieces = {j: (f"ntkcore-vector-{token}", j) for j in range(len(starts) - 1)}

        def vectors(i, j):  # v_i for a block above the diagonal of a symmetric matrix (its mirror's product)
            return (TaskRef(pieces[i]) if self.symmetric and i != j else None), TaskRef(pieces[j])

        name, tasks, blocks = self._tasks("product", _block_product, vectors, token=(token,))
        tasks.update({k: DataNode(k, v[starts[j]:starts[j + 1]]) for j, k in pieces.items()})
        rows = {}
        for i, j, key in blocks:
            pair = self.symmetric and i != j
            rows.setdefault(i, []).append((0 if pair else None, key))
            if pair:
                rows.setdefault(j, []).append((1, key))
        tail = (0,) * (v.ndim - 1)
        for i, parts in rows.items():
            which, keys = zip(*parts)
            tasks[(name, i) + tail] = Task((name, i) + tail, _row_sum, which, *(TaskRef(k) for k in keys))
        chunks = (self._sides[0][0].chunks[0],) + tuple((s,) for s in v.shape[1:])
        return self._array(name, tasks, chunks, np.float64).compute()

    def to_npy(self, path) -> Path:
        """Write the matrix to the ``.npy`` file ``path``: each task computes a block, writes it (and its mirror
        image below the diagonal) where it runs and drops it, so that a worker holds :attr:`task_memory` per thread
        and nothing waits to be written. The workers must see ``path`` (one machine, or a shared file system).
        Read it back with ``numpy.load(path, mmap_mode="r")``. Returns the path."""
        path = _new_npy(path, self.shape, self.dtype)
        name, tasks, blocks = self._tasks("npy", _block_to_npy, lambda i, j: (str(path), self.symmetric),
                                          token=(str(path),),
                                          key=lambda name, b, i, j: (name, b))
        self._array(name, tasks, ((1,) * len(blocks),), np.int64).compute()
        return path


def kernel_matrix(net, x1, x2=None, *, get: str = "ntk", chunk: int = DEFAULT_CHUNK, max_memory=None,
                  method: str = "auto", trace_outputs: bool = False):
    """The kernel matrix ``K(x1, x2)`` of ``net`` as a lazy ``dask.array`` in blocks of ``chunk × chunk`` entries,
    each computed by the in-memory call on its two blocks of examples; arguments as :class:`KernelOperator`.

    Equal to the in-memory kernel (``net.kernel(x1, x2)``, ``empirical.ntk(model, x1, x2)``) up to rounding; a
    symmetric call (``x2=None``) computes the blocks on and above the diagonal and mirrors them, so the result is
    exactly symmetric. Compute it (``.compute()``), keep it in the cluster's memory (``.persist()``), or write it
    block by block (:func:`to_npy`, or ``.to_zarr(...)`` with Zarr installed).
    """
    return KernelOperator(net, x1, x2, get=get, chunk=chunk, max_memory=max_memory, method=method,
                          trace_outputs=trace_outputs).matrix()


def _new_npy(path, shape: tuple, dtype) -> Path:
    """Create the ``.npy`` file ``path`` of ``shape`` and ``dtype``: its header, and room for the entries."""
    path = Path(path)
    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    return path


class _NpyTarget:
    """The target of ``dask.array.store``: writes a block into a ``.npy`` file opened where the block is."""

    def __init__(self, path: str):
        self.path = path

    def __setitem__(self, index, block) -> None:
        out = np.load(self.path, mmap_mode="r+")
        out[index] = block
        del out  # unmapped: the page cache writes it back


def to_npy(k, path) -> Path:
    """Write the kernel matrix ``k`` to the ``.npy`` file ``path`` block by block, without ever holding it; read it
    back with ``numpy.load(path, mmap_mode="r")``. Returns the path.

    ``k``: a :class:`KernelOperator` (each task computes a block, writes it and its mirror image, and drops it:
    :meth:`KernelOperator.to_npy`), or any dask array (a :func:`kernel_matrix`, written by ``dask.array.store``,
    which may hold some computed blocks until they are written). The workers must see ``path`` (one machine, or a
    shared file system; else write Zarr, ``k.to_zarr(url)`` with Zarr installed).
    """
    _, da = _dask()
    if isinstance(k, KernelOperator):
        return k.to_npy(path)
    if not isinstance(k, da.Array):
        raise ValueError(f"k must be a KernelOperator or a dask array (a kernel_matrix), got {type(k).__name__}")
    if any(math.isnan(c) for chunks in k.chunks for c in chunks):
        raise ValueError("k has blocks of unknown size; call k.compute_chunk_sizes() first")
    path = _new_npy(path, k.shape, k.dtype)
    da.store(k, _NpyTarget(str(path)), lock=False)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Kernel ridge regression
# ---------------------------------------------------------------------------------------------------------------

class Solution(NamedTuple):
    """The solution ``coef`` ``(n[, O])`` of ``(K + λI) coef = y``, its relative residual
    ``max_o ‖y_o − (K + λI) coef_o‖ / ‖y_o‖`` and the iterations it took (0 for a direct solve)."""

    coef: np.ndarray
    residual: float
    iterations: int


class Regression(NamedTuple):
    """Kernel ridge regression: the predictions ``k(x, X) coef`` ``(n_test[, O])`` and the :class:`Solution`."""

    prediction: np.ndarray
    solution: Solution


def _targets(y, n: int) -> np.ndarray:
    return labels(y, n, like=torch.empty(0, dtype=torch.float64), ndim=(1, 2)).numpy()


def _relative_residual(r: np.ndarray, y: np.ndarray) -> float:
    norms = np.linalg.norm(y.reshape(y.shape[0], -1), axis=0)
    res = np.linalg.norm(r.reshape(r.shape[0], -1), axis=0)
    return float(np.max(np.where(norms > 0, res / np.where(norms > 0, norms, 1.0), res), initial=0.0))


def _smallest_eigenvalue(matvec, n: int) -> float:
    """The smallest eigenvalue of a symmetric matrix from its products, by Lanczos (``scipy.sparse.linalg.eigsh``)."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    op = LinearOperator((n, n), matvec=lambda v: matvec(np.asarray(v).reshape(-1)), dtype=np.float64)
    try:
        return float(eigsh(op, k=1, which="SA", tol=1e-6, maxiter=max(100, n), return_eigenvectors=False)[0])
    except ArpackNoConvergence as err:
        return float(np.min(err.eigenvalues)) if len(err.eigenvalues) else float("nan")


def _square(k, name: str = "k", *, in_memory: bool = False):
    """A square matrix: a dask array with square blocks (of a :class:`KernelOperator`, the matrix), or with
    ``in_memory`` a :class:`KernelOperator` or numpy array as they are."""
    _, da = _dask()
    if isinstance(k, KernelOperator):
        if not k.symmetric:
            raise ValueError(f"{name} must be the symmetric kernel matrix K(x, x) (a KernelOperator with x2=None)")
        return k if in_memory else _square(k.matrix(), name)
    if not isinstance(k, da.Array):
        k = as_numpy(k, name)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) kernel matrix, got shape {k.shape}")
    if isinstance(k, np.ndarray):
        return k if in_memory else da.from_array(k, chunks=min(DEFAULT_CHUNK, max(1, k.shape[0])))
    return k.rechunk(k.chunks[0][0])


def _padded(a, rhs):
    """``[[a, 0], [0, I]]`` and ``[rhs; 0]`` in square blocks of equal size (``dask.array.linalg.cholesky`` needs
    them): the matrix grows to a multiple of its block, and the solution's first ``n`` rows are unchanged."""
    _, da = _dask()
    n, c = a.shape[0], a.chunks[0][0]
    m = -n % c
    if not m:
        return a, rhs
    top = da.concatenate([a, da.zeros((n, m), chunks=(a.chunks[0], m), dtype=a.dtype)], axis=1)
    bottom = da.concatenate([da.zeros((m, n), chunks=(m, a.chunks[1]), dtype=a.dtype),
                             da.eye(m, dtype=a.dtype, chunks=m)], axis=1)
    zeros = da.zeros((m, rhs.shape[1]), dtype=rhs.dtype, chunks=(m, -1))
    return (da.concatenate([top, bottom], axis=0).rechunk(c),
            da.concatenate([rhs, zeros], axis=0).rechunk((c, -1)))


def solve_cholesky(k, y, *, ridge: float = 0.0, jitter: float = 0.0) -> Solution:
    """``(K + (ridge + jitter) I) coef = y`` by the blocked Cholesky factorization of ``dask.array.linalg``:
    kernel ridge regression's coefficients (book Chapter 5; :func:`ntkcore.predict.kernel_ridge` in memory).

    ``k``: the symmetric ``(n, n)`` kernel matrix, a dask array (:func:`kernel_matrix`; ``.persist()`` it first when
    it fits, or it is computed twice: for the factor and for the residual), a :class:`KernelOperator` or an
    in-memory array. The cluster holds the matrix and its factor, about twice the matrix. ``y``: ``(n,)`` or
    ``(n, O)``. ``ridge`` (λ) and ``jitter`` (for numerical reasons only) are ≥ 0.

    Returns a :class:`Solution` (``iterations`` 0). A matrix that is not positive definite is a ValueError naming its
    smallest eigenvalue (by Lanczos on its products).
    """
    dask, da = _dask()
    k = _square(k)
    n = k.shape[0]
    y = _targets(y, n)
    shift = check_real(ridge, "ridge", low=0.0) + check_real(jitter, "jitter", low=0.0)
    a = k + shift * da.eye(n, chunks=k.chunks[0][0], dtype=k.dtype) if shift else k
    s = _magnitude(torch.from_numpy(y))
    rhs = da.from_array((y / s).reshape(n, -1), chunks=(k.chunks[0][0], -1))
    padded, padded_rhs = _padded(a, rhs)
    factor = da.linalg.cholesky(padded, lower=True)
    try:
        lower = da.linalg.solve_triangular(factor, padded_rhs, lower=True)
        coef = da.linalg.solve_triangular(factor.T, lower, lower=False)[:n].compute()
    except np.linalg.LinAlgError:
        smallest = _smallest_eigenvalue(lambda v: (a @ v).compute(), n)
        raise ValueError(f"k is not positive definite (smallest eigenvalue {smallest:.3g}"
                         f"{f' after ridge + jitter {shift:g}' if shift else ''}); pass a larger ridge= or "
                         f"jitter=") from None
    residual = (rhs - a @ coef).compute()
    coef = s * coef.reshape(y.shape)
    return Solution(coef, _relative_residual(residual, rhs.compute()), 0)


def _nystrom(k, landmarks: int, ridge: float, seed: int):
    """``r ↦ P⁻¹ r`` for the Nyström preconditioner of ``K + ridge I`` (Frangella, Tropp and Udell 2023, "Randomized
    Nyström preconditioning", SIAM J. Matrix Anal. Appl. 44): with ``K ≈ U Λ Uᵀ``, the Nyström approximation from
    ``landmarks`` columns of ``K`` drawn at random (Williams and Seeger 2001),
    ``P⁻¹ = (λ_ℓ + ridge) U (Λ + ridge I)⁻¹ Uᵀ + (I − U Uᵀ)``, ``λ_ℓ`` the smallest of ``Λ``. Costs one pass over
    ``n × landmarks`` entries of ``K``, and holds them."""
    n = k.shape[0]
    index = np.sort(np.random.default_rng(seed).choice(n, min(landmarks, n), replace=False))
    columns = k.columns(index) if isinstance(k, KernelOperator) else k[:, index]
    columns = np.asarray(columns if isinstance(columns, np.ndarray) else columns.compute(), dtype=np.float64)
    w = columns[index]
    theta, q = np.linalg.eigh((w + w.T) / 2)
    top, eps = max(float(theta[-1]), np.finfo(np.float64).tiny), np.finfo(np.float64).eps
    if theta[0] < -math.sqrt(eps) * top:
        raise ValueError(f"k is not positive definite: the kernel between its {len(index)} landmark examples has "
                         f"smallest eigenvalue {theta[0]:.3g}, an upper bound on the smallest eigenvalue of k")
    keep = theta > len(index) * eps * top  # the rest is rounding noise of a singular kernel
    u, sv, _ = np.linalg.svd(columns @ (q[:, keep] / np.sqrt(theta[keep])), full_matrices=False)
    lam = sv ** 2
    u, lam = u[:, lam > 0], lam[lam > 0]
    if not lam.size or lam[-1] + ridge <= 0:
        return lambda r: r.copy()

    def apply(r: np.ndarray) -> np.ndarray:
        ur = u.T @ r
        return (lam[-1] + ridge) * (u @ (ur / (lam + ridge)[:, None])) + r - u @ ur

    return apply


def solve_cg(k, y, *, ridge: float = 0.0, tol: float = 1e-8, max_iterations: int = 1000, landmarks: int = 500,
             seed: int = 0) -> Solution:
    """``(K + ridge I) coef = y`` by preconditioned conjugate gradients (Hestenes and Stiefel 1952; Saad 2003,
    "Iterative methods for sparse linear systems", Algorithm 9.1): one product with ``K`` per iteration.

    The preconditioner is the Nyström approximation of ``K`` from ``landmarks`` of its columns, drawn at random
    with ``seed`` (Frangella, Tropp and Udell 2023; 0: no preconditioner). It costs a pass over ``n × landmarks``
    entries of ``K`` and holds them here; with landmarks a fifth of the examples, CG takes three to five times fewer
    iterations on the NTK of a fully connected network of 1000 examples (``tests/test_distributed.py``).

    ``k``: a :class:`KernelOperator` (matrix-free: every product recomputes every block, for a matrix that does not
    fit in the cluster's memory), a dask array (:func:`kernel_matrix`, best ``.persist()``-ed) or an in-memory array
    (multiplied here, without Dask).
    ``y``: ``(n,)`` or ``(n, O)`` (the columns are solved together, one product per iteration). The products are in
    float64 (exact for a float32 kernel). CG stops when the relative residual of its recursion is at most ``tol`` for
    every column; one more product then gives the true residual, which is reported, and CG restarts from it (at most
    twice) where rounding made the two drift apart.

    Returns a :class:`Solution`. A ValueError when ``K + ridge I`` is not positive definite (the kernel of the
    landmarks is not, naming its smallest eigenvalue, or CG meets a direction ``p`` with ``pᵀ(K + ridge I)p ≤ 0``,
    naming that Rayleigh quotient: both bound the smallest eigenvalue from above), and when CG stalls: no tolerance
    after ``max_iterations``, or a true residual above ``tol`` after the restarts (rounding limits it, for ``K + ridge
    I`` nearly singular: ask for a larger ``tol`` or ``ridge``).
    """
    k = _square(k, in_memory=True)
    n = k.shape[0]
    y = _targets(y, n)
    ridge = check_real(ridge, "ridge", low=0.0)
    tol = check_real(tol, "tol", low=0.0, low_open=True)
    max_iterations = check_int(max_iterations, "max_iterations", low=1)
    landmarks = check_int(landmarks, "landmarks", low=0)
    seed = check_int(seed, "seed", low=0)
    precondition = _nystrom(k, landmarks, ridge, seed) if landmarks else (lambda r: r.copy())

    def product(p):
        kp = k @ p
        return (kp if isinstance(kp, np.ndarray) else kp.compute()) + ridge * p

    s = _magnitude(torch.from_numpy(y))
    b = (y / s).reshape(n, -1)
    coef, r, iterations = np.zeros_like(b), b.copy(), 0
    for _ in range(_RESTARTS + 1):
        iterations = _conjugate_gradients(product, precondition, b, coef, r, tol, iterations, max_iterations)
        r = b - product(coef)  # the true residual: the recursion's drifts from it by rounding
        residual = _relative_residual(r, b)
        if residual <= tol:
            return Solution(s * coef.reshape(y.shape), residual, iterations)
    raise ValueError(f"CG stalled: the relative residual {residual:.3g} stays above the tolerance {tol:g} after "
                     f"{iterations} iterations and {_RESTARTS} restarts from the true residual; rounding limits it (K "
                     f"nearly singular): pass a larger tol= or ridge=")


def _conjugate_gradients(product, precondition, b, coef, r, tol, iterations, max_iterations) -> int:
    """Preconditioned CG from ``coef`` with residual ``r`` (both updated in place) until the recursion's relative
    residual of every column of ``b`` is at most ``tol``; returns the number of iterations done in all."""
    norms = np.linalg.norm(b, axis=0)
    z = precondition(r)
    p, rz = z.copy(), np.sum(r * z, axis=0)
    while (active := np.linalg.norm(r, axis=0) > tol * norms).any():
        if iterations == max_iterations:
            raise ValueError(f"CG stalled: relative residual {_relative_residual(r, b):.3g} after max_iterations="
                             f"{max_iterations} (tolerance {tol:g}); pass a larger max_iterations=, tol= or ridge=")
        iterations += 1
        q = product(p)
        curvature = np.sum(p * q, axis=0)
        if (bad := active & (curvature <= 0)).any():
            c = int(np.argmax(bad))
            raise ValueError(f"k is not positive definite: CG found a direction p with pᵀ(K + ridge I)p / ‖p‖² = "
                             f"{curvature[c] / np.sum(p[:, c] ** 2):.3g} <= 0 (an upper bound on its smallest "
                             f"eigenvalue); pass a larger ridge=")
        alpha = np.where(active, rz / np.where(active, curvature, 1.0), 0.0)
        coef += alpha * p
        r -= alpha * q
        z = precondition(r)
        rz_new = np.sum(r * z, axis=0)
        p = np.where(active, z + np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0) * p, p)
        rz = rz_new
    return iterations


def kernel_ridge(net, x_train, y, x_test, *, ridge: float = 0.0, solver: str = "cholesky", get: str = "ntk",
                 chunk: int = DEFAULT_CHUNK, max_memory=None, tol: float = 1e-8, max_iterations: int = 1000,
                 landmarks: int = 500, seed: int = 0) -> Regression:
    """Kernel ridge regression ``f(x) = k(x, X)(K + ridge I)⁻¹ y`` with the kernel of ``net`` (book Chapter 5;
    :func:`ntkcore.predict.kernel_ridge` in memory), on Dask.

    ``solver="cholesky"``: the kernel matrix is kept in the cluster's memory and factored (:func:`solve_cholesky`);
    ``"cg"``: matrix-free conjugate gradients (:func:`solve_cg` on a :class:`KernelOperator`), each iteration
    recomputing the matrix. The predictions are a matrix-free product with ``k(x_test, X)`` either way. Inputs,
    ``get``, ``chunk`` and ``max_memory`` as :class:`KernelOperator`; ``tol``, ``max_iterations``, ``landmarks``
    and ``seed`` for CG.
    Returns a :class:`Regression`.
    """
    solver = check_choice(solver, "solver", ("cholesky", "cg"))
    options = dict(get=get, chunk=chunk, max_memory=max_memory)
    op = KernelOperator(net, x_train, **options)
    if solver == "cholesky":
        solution = solve_cholesky(op.matrix().persist(), y, ridge=ridge)
    else:
        solution = solve_cg(op, y, ridge=ridge, tol=tol, max_iterations=max_iterations, landmarks=landmarks,
                            seed=seed)
    cross = KernelOperator(net, x_test, x_train, **options)
    return Regression(cross @ solution.coef, solution)


# ---------------------------------------------------------------------------------------------------------------
# Measuring the workers' memory
# ---------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def peak_memory(client, interval: float = 0.002):
    """The peak resident memory of every worker of the ``distributed.Client`` ``client`` while the ``with`` block
    runs. Yields a dict that holds, on exit, ``{worker address: (peak, growth)}`` in bytes: the largest resident
    memory and its growth over the memory at the start (to set against :meth:`KernelOperator.worker_memory`).

    On Linux each worker's kernel keeps the peak itself (``VmHWM`` in ``/proc/self/status``, reset at the start by
    writing 5 to ``/proc/self/clear_refs``): exact, and free. Elsewhere a thread of each worker samples its resident
    memory every ``interval`` seconds, which misses a peak shorter than that and takes the worker's CPU (at 2 ms,
    a tenth of the time of two workers on two cores)."""
    client.run(_start_peak, interval=check_real(interval, "interval", low=0.0, low_open=True))
    result = {}
    try:
        yield result
    finally:
        result.update(client.run(_stop_peak))


_STATUS, _CLEAR_REFS = "/proc/self/status", "/proc/self/clear_refs"


def _high_water_mark() -> int | None:
    """The peak resident memory of this process since its last reset, in bytes (Linux), or None."""
    try:
        with open(_STATUS) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def _reset_high_water_mark() -> bool:
    """Reset this process's peak resident memory to its current one (Linux 4.0 and later); whether it was."""
    try:
        with open(_CLEAR_REFS, "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return _high_water_mark() is not None


def _start_peak(dask_worker, interval: float) -> None:
    import psutil  # a dependency of distributed

    process, state = psutil.Process(), {"run": True}
    state["base"] = state["peak"] = process.memory_info().rss
    if _reset_high_water_mark():
        state["thread"] = None
    else:
        def sample():
            while state["run"]:
                state["peak"] = max(state["peak"], process.memory_info().rss)
                time.sleep(interval)

        state["thread"] = threading.Thread(target=sample, daemon=True)
        state["thread"].start()
    dask_worker.ntkcore_memory = state


def _stop_peak(dask_worker) -> tuple[int, int]:
    state = dask_worker.ntkcore_memory
    if state["thread"] is None:
        state["peak"] = max(state["base"], _high_water_mark())
    else:
        state["run"] = False
        state["thread"].join()
    return state["peak"], state["peak"] - state["base"]
