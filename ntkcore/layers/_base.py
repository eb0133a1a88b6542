"""The layer protocol, the combinators (serial, parallel, FanOut, FanInSum) and the finite networks they build."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_int, generator, model_input
from ..device import resolve
from . import _entrywise
from ._state import GRAPH, IMAGE, VECTOR, Layout, Pairs, Shape

PARAMETERIZATIONS = ("ntk", "standard")


class Layer:
    """A layer of a network, with its infinite-width kernel transform and its finite-width module.

    Every layer is a network of one layer: :meth:`kernel` and :meth:`module` work on it as on
    ``serial(layer)``. Subclasses define

    * ``_out_shape(shape)``: the :class:`~ntkcore.layers._state.Shape` of the output, or a ValueError that says why
      the layer does not accept ``shape``;
    * ``_transform(pairs, full_after)``: the kernel transform of a block of pairs (entrywise layers define
      ``_units()`` instead, and the transform runs them);
    * ``_module(shape, gen, device, dtype, parameterization)``: the finite-width ``nn.Module``.

    ``entrywise = True`` declares that the layer's kernel transform changes every covariance entry independently of
    the others (given the variances of its two inputs): dense layers and activations. A network made of entrywise
    layers only runs on the tiled, threaded fast path. ``image_pairs = True`` declares that the layer needs the
    covariance of every pair of spatial positions (image pooling); without such a layer an image network keeps only
    pairs of equal positions.
    """

    entrywise = False
    image_pairs = False

    def _out_shape(self, shape: Shape) -> Shape:
        raise NotImplementedError

    def _units(self):
        raise NotImplementedError

    def _transform(self, p: Pairs, full_after: bool) -> Pairs:
        k, theta = _entrywise.run(p.nngp, p.ntk, self._units(), p.variances, diag=p.diag, want_ntk=p.want_ntk,
                                  pool=p.pool)
        return p.replace(nngp=k, ntk=theta)

    def _module(self, shape: Shape, gen, device, dtype, parameterization: str) -> nn.Module:
        raise NotImplementedError

    def _leaves(self):
        yield self

    def kernel(self, x1, x2=None, **kwargs):
        """The infinite-width kernels of the network made of this layer alone (see :meth:`Serial.kernel`)."""
        return serial(self).kernel(x1, x2, **kwargs)

    def module(self, in_shape, **kwargs):
        """The finite-width network made of this layer alone (see :meth:`Serial.module`)."""
        return serial(self).module(in_shape, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def branches(value) -> bool:
    """Whether ``value`` (a Shape or Pairs, or a tuple of them after a FanOut) holds several branches."""
    return isinstance(value, tuple) and not isinstance(value, Shape)


def _require(condition: bool, layer: Layer, shape: Shape, accepted: str) -> None:
    if not condition:
        raise ValueError(f"{layer!r} accepts {accepted}, got {shape.describe()}")


def to_diagonal(p: Pairs) -> Pairs:
    """Keep only the pairs of equal positions of an image kernel (no later layer needs the others)."""
    if p.layout.kind != IMAGE or not p.layout.full:
        return p

    def diag(t):
        batch, (h, w) = t.shape[:-4], t.shape[-2:]
        return t.reshape(*batch, h * w, h * w).diagonal(dim1=-2, dim2=-1).reshape(*batch, h, w).contiguous()

    return p.map(diag).replace(layout=Layout(IMAGE, full=False))


class Serial(Layer):
    """Layers applied one after another (:func:`serial`)."""

    def __init__(self, layers):
        flat = []
        for layer in layers:
            if not isinstance(layer, Layer):
                raise ValueError(f"serial takes ntkcore.layers layers (Dense, Conv, Relu, ...), got "
                                 f"{type(layer).__name__}")
            flat.extend(layer.layers if isinstance(layer, Serial) else [layer])
        if not flat:
            raise ValueError("serial needs at least one layer")
        self.layers = tuple(flat)
        self.entrywise = all(layer.entrywise for layer in flat)
        self.image_pairs = any(leaf.image_pairs for leaf in self._leaves())
        self._steps = self._compile()
        # _pairs_after[i]: whether a step after step i needs all pairs of image positions
        needs = [any(leaf.image_pairs for leaf in step._leaves()) for step in self._steps]
        self._pairs_after = [any(needs[i + 1:]) for i in range(len(needs))]

    def _compile(self):
        """Consecutive entrywise layers become one fused run of units."""
        steps, run = [], []
        for layer in self.layers:
            if layer.entrywise:
                run.append(layer)
                continue
            if run:
                steps.append(_Run(run))
                run = []
            steps.append(layer)
        if run:
            steps.append(_Run(run))
        return steps

    def _leaves(self):
        for layer in self.layers:
            yield from layer._leaves()

    def _units(self):
        return _entrywise.fuse([unit for layer in self.layers for unit in layer._units()])

    def _out_shape(self, shape):
        for index, layer in enumerate(self.layers):
            try:
                shape = layer._out_shape(shape)
            except ValueError as err:
                if isinstance(layer, Serial) or len(self.layers) == 1:
                    raise
                raise ValueError(f"layer {index} of the network, {err}") from None
        return shape

    def _transform(self, p, full_after):
        for step, later in zip(self._steps, self._pairs_after):
            p = step._transform(p, full_after or later)
            if isinstance(p, Pairs) and not (full_after or later):
                p = to_diagonal(p)
        return p

    def _module(self, shape, gen, device, dtype, parameterization):
        return _SerialModule(*self._layer_modules(shape, gen, device, dtype, parameterization))

    def _layer_modules(self, shape, gen, device, dtype, parameterization):
        children = []
        for layer in self.layers:
            children.append(layer._module(shape, gen, device, dtype, parameterization))
            shape = layer._out_shape(shape)
        return children

    def modules_for(self, in_shape, gen: torch.Generator, device, dtype, parameterization: str = "ntk"):
        """The finite modules of the layers, in order, for inputs of shape ``in_shape``, their parameters drawn
        from ``gen`` (what :meth:`module` assembles; :class:`ntkcore.models.MLP` uses it too)."""
        shape = input_shape(in_shape)
        self._out_shape(shape)
        return self._layer_modules(shape, gen, device, dtype, parameterization)

    def kernel(self, x1, x2=None, *, get=("nngp", "ntk"), adjacency=None, device=None, max_memory=None,
               block_size=None):
        """NNGP and NTK of the infinite-width network, :class:`Kernels` ``(n1, n2)`` each.

        Parameters
        ----------
        x1, x2 : inputs, numpy or torch; ``x2=None`` means ``x2 = x1`` (the symmetry is used and the diagonal is
            exact). Vectors ``(n, d)``; images ``(n, C, H, W)``; graphs, node features ``(n, N, C)`` or a list of
            ``(N_i, C)`` arrays (graphs of different sizes). Outputs follow ``x1``'s device and dtype (numpy
            input gives float64 on the default device) unless ``device`` is given.
        get : ``"nngp"``, ``"ntk"`` or both; the fields not asked for are None.
        adjacency : graphs only: for ``x1``, an ``(n, N, N)`` array or a list of ``(N_i, N_i)`` arrays, with
            ``A[u, v]`` the weight of the edge from node v into node u (include self-loops where wanted); with
            ``x2``, the pair ``(adjacency1, adjacency2)``.
        device : where to compute (default: the device of ``x1``, see :func:`ntkcore.device.resolve`).
        max_memory : bound in bytes on the intermediates of a block of pairs (default 256 MiB); the outputs
            come on top of it.
        block_size : rows of ``x1`` per panel for fully connected networks (see :func:`ntkcore.kernels.fc`);
            examples per side of a tile of pairs otherwise (default: as many as ``max_memory`` allows, at most a
            cache-sized tile on the CPU).
        """
        from ._execute import kernel

        return kernel(self, x1, x2, get=get, adjacency=adjacency, device=device, max_memory=max_memory,
                      block_size=block_size)

    def module(self, in_shape, *, seed, device=None, dtype=None, parameterization: str = "ntk") -> nn.Module:
        """The finite-width network of this specification, an ``nn.Module``.

        ``in_shape`` is the shape of one input: ``(d,)``, ``(C, H, W)`` or ``(N, C)`` for graphs (``N`` may be
        None). Parameters are drawn from ``seed`` (an int or a CPU ``torch.Generator``) in float64, layer by
        layer (weight, then bias), then cast: the same seed gives the same network on every device and dtype.
        In the NTK parameterization (default) its empirical NTK converges to :meth:`kernel` as the widths grow;
        ``"standard"`` puts the variances in the raw parameters instead (the same functions at initialization,
        another NTK). Graph networks are called as ``net(x, adjacency, mask=None)``.
        """
        check_choice(parameterization, "parameterization", PARAMETERIZATIONS)
        device, dtype = resolve(device, dtype)
        children = self.modules_for(in_shape, generator(seed), device, dtype, parameterization)
        cls = GraphNetwork if any(getattr(c, "takes_graph", False) for c in children) else Network
        net = cls(*children)
        net.spec, net.in_shape = self, tuple(in_shape)
        net.register_forward_pre_hook(_check_network_input)
        last = self.layers[-1]
        if getattr(last, "is_readout", False):
            net.readout_weight_var, net.readout_bias_var = last.weight_var, last.bias_var
        return net

    def __repr__(self) -> str:
        return f"serial({', '.join(map(repr, self.layers))})"


class _Run(Layer):
    """Consecutive entrywise layers of a :class:`Serial`, fused into one call of the entrywise recursion."""

    entrywise = True

    def __init__(self, layers):
        self.layers = layers
        self.units = _entrywise.fuse([unit for layer in layers for unit in layer._units()])

    def _units(self):
        return self.units

    def _leaves(self):
        return iter(self.layers)


def serial(*layers) -> Serial:
    """The network that applies ``layers`` one after another (neural-tangents' ``stax.serial``)."""
    return Serial(layers)


class FanOut(Layer):
    """Copy the features into ``n`` branches (to be followed by :func:`parallel` and :class:`FanInSum`)."""

    def __init__(self, n: int):
        self.n = check_int(n, "n", low=1)

    def _out_shape(self, shape):
        return tuple(shape._replace(fresh=False) for _ in range(self.n))

    def _transform(self, p, full_after):
        def copy(t):
            return None if t is None else p.take(t.shape).copy_(t)

        return (p,) + tuple(p.replace(nngp=copy(p.nngp), ntk=copy(p.ntk)) for _ in range(self.n - 1))

    def _module(self, shape, gen, device, dtype, parameterization):
        return _FanOutModule(self.n)

    def __repr__(self):
        return f"FanOut({self.n})"


class Parallel(Layer):
    """Branch ``i`` of the features goes through ``layers[i]`` (:func:`parallel`)."""

    def __init__(self, layers):
        if not layers:
            raise ValueError("parallel needs at least one layer")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise ValueError(f"parallel takes ntkcore.layers layers, got {type(layer).__name__}")
        self.layers = tuple(layers)
        self.image_pairs = any(leaf.image_pairs for leaf in self._leaves())

    def _leaves(self):
        for layer in self.layers:
            yield from layer._leaves()

    def _branches(self, value, what: str):
        if not branches(value) or len(value) != len(self.layers):
            got = f"{len(value)} branches" if branches(value) else "one branch"
            raise ValueError(f"{self!r} needs {len(self.layers)} branches from a FanOut({len(self.layers)}), "
                             f"got {got} of {what}")
        return value

    def _out_shape(self, shape):
        return tuple(layer._out_shape(s) for layer, s in zip(self.layers, self._branches(shape, "features")))

    def _transform(self, ps, full_after):
        return tuple(layer._transform(p, full_after) for layer, p in zip(self.layers, ps))

    def _module(self, shape, gen, device, dtype, parameterization):
        shapes = self._branches(shape, "features")
        return _ParallelModule(*[layer._module(s, gen, device, dtype, parameterization)
                                 for layer, s in zip(self.layers, shapes)])

    def __repr__(self):
        return f"parallel({', '.join(map(repr, self.layers))})"


def parallel(*layers) -> Parallel:
    """Apply ``layers[i]`` to branch ``i`` of a :class:`FanOut` (neural-tangents' ``stax.parallel``)."""
    return Parallel(layers)


class FanInSum(Layer):
    """Sum the branches of a :class:`FanOut`.

    The kernel of a sum is the sum of the branches' kernels when the branches are uncorrelated: every branch but at
    most one must end in fresh weights (a Dense or Conv after the FanOut, followed only by linear layers), as in a
    residual block ``x + f(x)``. Two branches without fresh weights (say two identities) raise a ValueError: their
    kernel is not the sum of the branches' kernels.
    """

    def _out_shape(self, shape):
        if not branches(shape):
            raise ValueError("FanInSum() needs the branches of a FanOut, got a single branch")
        first = shape[0]
        for s in shape[1:]:
            if (s.kind, s.spatial) != (first.kind, first.spatial) or (
                    None not in (s.channels, first.channels) and s.channels != first.channels):
                raise ValueError(f"FanInSum() needs branches of one shape, got {first.describe()} (channels "
                                 f"{first.channels}) and {s.describe()} (channels {s.channels})")
        if sum(not s.fresh for s in shape) > 1:
            raise ValueError("FanInSum() adds the kernels of its branches, which is exact only for uncorrelated "
                             "branches: all branches but one must end in fresh weights (a Dense or Conv after the "
                             "FanOut, followed only by linear layers)")
        return first._replace(gaussian=all(s.gaussian for s in shape), fresh=all(s.fresh for s in shape))

    def _transform(self, ps, full_after):
        if any(p.layout.kind == IMAGE and not p.layout.full for p in ps):
            ps = [to_diagonal(p) for p in ps]
        nngp = ps[0].nngp
        for p in ps[1:]:
            nngp = nngp.add_(p.nngp)
        thetas = [p.ntk for p in ps if p.ntk is not None]
        ntk = thetas[0] if thetas else None
        for theta in thetas[1:]:
            ntk = ntk.add_(theta)
        ps[0].pool.give(*[t for p in ps[1:] for t in (p.nngp, p.ntk) if t is not None and t is not ntk])
        return ps[0].replace(nngp=nngp, ntk=ntk)

    def _module(self, shape, gen, device, dtype, parameterization):
        return _FanInSumModule()


# ---------------------------------------------------------------------------------------------------------------
# Finite networks
# ---------------------------------------------------------------------------------------------------------------

def input_shape(in_shape) -> Shape:
    """The :class:`Shape` of one input: ``(d,)`` vectors, ``(C, H, W)`` images, ``(N, C)`` graphs."""
    try:
        dims = tuple(in_shape)
    except TypeError:
        raise ValueError(f"in_shape must be a tuple: (d,), (C, H, W) or (N, C) for graphs, got {in_shape!r}") \
            from None
    if len(dims) == 1:
        return Shape(VECTOR, check_int(dims[0], "in_shape[0]", low=1), ())
    if len(dims) == 3:
        c, h, w = (check_int(v, f"in_shape[{i}]", low=1) for i, v in enumerate(dims))
        return Shape(IMAGE, c, (h, w))
    if len(dims) == 2:
        n = None if dims[0] is None else check_int(dims[0], "in_shape[0]", low=1)
        return Shape(GRAPH, check_int(dims[1], "in_shape[1]", low=1), (n,))
    raise ValueError(f"in_shape must be (d,), (C, H, W) or (N, C) for graphs, got {in_shape!r}")


class GraphInputs:
    """What the graph layers of a finite network read: the adjacency ``(n, N, N)`` and the node mask ``(n, N)``."""

    def __init__(self, adjacency: torch.Tensor, mask: torch.Tensor | None):
        self.adjacency, self.mask = adjacency, mask


def _call(module: nn.Module, x, graph):
    return module(x, graph) if getattr(module, "takes_graph", False) else module(x)


class _SerialModule(nn.Sequential):
    """A serial block inside a finite network (passes the graph inputs to the layers that read them)."""

    def __init__(self, *children):
        super().__init__(*children)
        self.takes_graph = any(getattr(c, "takes_graph", False) for c in children)

    def forward(self, x, graph=None):
        for module in self:
            x = _call(module, x, graph)
        return x


class _FanOutModule(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        return (x,) * self.n


class _ParallelModule(nn.ModuleList):
    def __init__(self, *children):
        super().__init__(children)
        self.takes_graph = any(getattr(c, "takes_graph", False) for c in children)

    def forward(self, xs, graph=None):
        return tuple(_call(m, x, graph) for m, x in zip(self, xs))


class _FanInSumModule(nn.Module):
    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


def _check_network_input(net: "Network", args: tuple) -> None:
    net.check_input(args[0] if args else None)


class Network(nn.Sequential):
    """The finite network of a :class:`Serial` specification (:meth:`Serial.module`).

    ``spec`` is the specification and ``in_shape`` the shape of one input. When the last layer is a Dense readout,
    ``readout`` is that layer, :meth:`features` the readout's input and ``readout_weight_var``,
    ``readout_bias_var`` its variances (what :func:`ntkcore.empirical.nngp` needs).
    """

    def check_input(self, x, name: str = "x") -> None:
        """A ValueError for an input that is not a batch of ``in_shape`` (for graphs, of any number of nodes) on
        the parameters' device and dtype. A forward pre-hook, not an overridden ``forward``: the network stays a
        plain ``nn.Sequential`` chain for the fast path of :func:`ntkcore.empirical.ntk`."""
        shape = getattr(self, "in_shape", None)
        if shape is not None and isinstance(self, GraphNetwork):
            shape = (None, *shape[1:])
        model_input(x, shape, next(self.parameters(), None), name)

    @property
    def readout(self) -> nn.Module:
        return self[-1]

    def features(self, x, *graph_inputs):
        """The input of the last layer (the readout's features)."""
        graph = GraphInputs(*graph_inputs) if graph_inputs else None
        for module in list(self)[:-1]:
            x = _call(module, x, graph)
        return x


class GraphNetwork(Network):
    """A :class:`Network` with graph layers, called as ``net(x, adjacency, mask=None)``: node features
    ``(n, N, C)``, adjacency ``(n, N, N)`` and the mask ``(n, N)`` of real nodes (None: all nodes are real)."""

    def forward(self, x, adjacency, mask=None):
        graph = GraphInputs(adjacency, mask)
        for module in self:
            x = _call(module, x, graph)
        return x

    def features(self, x, adjacency, mask=None):
        return super().features(x, adjacency, mask)
