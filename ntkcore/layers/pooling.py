"""Pooling and flattening over image positions or graph nodes (book appendix "Closed-form kernels and conventions",
section "Pooling and readouts")."""
from __future__ import annotations

import torch
from torch import nn

from ._base import Layer, _require
from ._state import GRAPH, IMAGE, VECTOR, Layout, Shape
from .conv import pair


class AvgPool(Layer):
    """Average over ``window`` positions of an image, moved by ``stride`` (default: the window; no padding).

    Kernel: ``K′[P, P′] = mean_{a, a′ ∈ window} K[s P + a, s P′ + a′]``, the same for Θ (neural-tangents'
    ``stax.AvgPool`` with ``padding="VALID"``). It mixes positions, so it needs the covariance of every pair of
    positions.
    """

    image_pairs = True

    def __init__(self, window, *, stride=None):
        self.window = pair(window, "window")
        self.stride = self.window if stride is None else pair(stride, "stride")

    def _out_shape(self, shape: Shape) -> Shape:
        _require(shape.kind == IMAGE, self, shape, "images (n, C, H, W)")
        if any(s < w for s, w in zip(shape.spatial, self.window)):
            raise ValueError(f"{self!r} needs images of at least {self.window} positions, got (H, W) = "
                             f"{shape.spatial}")
        spatial = tuple((s - w) // st + 1 for s, w, st in zip(shape.spatial, self.window, self.stride))
        return shape._replace(spatial=spatial)

    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        for axis in range(4):
            window, stride = self.window[axis % 2], self.stride[axis % 2]
            t = t.unfold(t.dim() - 4 + axis, window, stride).mean(-1)
        return t.contiguous()

    def _transform(self, p, full_after):
        return p.map(self._pool)

    def _module(self, shape, gen, device, dtype, parameterization):
        return nn.AvgPool2d(self.window, self.stride)

    def __repr__(self):
        return f"AvgPool({self.window}, stride={self.stride})"


class _NodePool(nn.Module):
    """Sum or mean over the real nodes of each graph: ``(n, N, C) -> (n, C)``."""

    takes_graph = True

    def __init__(self, mean: bool):
        super().__init__()
        self.mean = mean

    def forward(self, x, graph):
        mask = None if graph is None else graph.mask
        if mask is None:
            return x.mean(1) if self.mean else x.sum(1)
        total = (x * mask[..., None]).sum(1)
        return total / mask.sum(1, keepdim=True) if self.mean else total


class _SpatialPool(nn.Module):
    """Sum or mean over the positions of an image: ``(n, C, H, W) -> (n, C)``."""

    def __init__(self, mean: bool):
        super().__init__()
        self.mean = mean

    def forward(self, x):
        return x.mean((-2, -1)) if self.mean else x.sum((-2, -1))


class _GlobalPool(Layer):
    """Sum or mean over all positions of an image or all real nodes of a graph."""

    image_pairs = True
    mean = False

    def _out_shape(self, shape: Shape) -> Shape:
        _require(shape.kind in (IMAGE, GRAPH), self, shape, "images (n, C, H, W) or graphs (n, N, C)")
        return shape._replace(kind=VECTOR, spatial=())

    def _pool(self, t, p):
        if p.layout.kind == IMAGE:
            return t.mean((-4, -3, -2, -1)) if self.mean else t.sum((-4, -3, -2, -1))
        for mask in (p.side1.mask, p.side2.mask):  # a side of graphs of one size has no padding, and no mask
            if mask is not None:
                t = t * mask
        total = t.sum((-2, -1))
        if self.mean:
            total = total / (p.side1.count * p.side2.count)
        return total

    def _transform(self, p, full_after):
        return p.map(lambda t: self._pool(t, p)).replace(layout=Layout(VECTOR, False))

    def _module(self, shape, gen, device, dtype, parameterization):
        return _NodePool(self.mean) if shape.kind == GRAPH else _SpatialPool(self.mean)


class GlobalAvgPool(_GlobalPool):
    """Mean over all positions of an image, or over the nodes of a graph: ``(n, C, H, W)`` or ``(n, N, C)`` to
    ``(n, C)``. Kernel: the mean of ``K`` and ``Θ`` over all pairs of positions (nodes), which makes a
    convolutional network's kernel invariant to circular shifts of its inputs (with circular padding)."""

    mean = True


class GlobalSumPool(_GlobalPool):
    """Sum over all positions of an image, or over the nodes of a graph (the READOUT of Du et al. 2019). Kernel: the
    sum of ``K`` and ``Θ`` over all pairs of positions (nodes)."""

    mean = False


class Flatten(Layer):
    """Flatten an image ``(n, C, H, W)`` into a vector ``(n, C·H·W)``.

    Kernel: the mean of ``K`` and ``Θ`` over the spatial diagonal, ``mean_p K[p, p]`` (a Dense readout normalizes by
    its fan-in ``C·H·W``); only pairs of equal positions matter (the "vanilla" CNTK of Arora et al. 2019).
    """

    def _out_shape(self, shape: Shape) -> Shape:
        _require(shape.kind == IMAGE, self, shape, "images (n, C, H, W)")
        channels = None if shape.channels is None else shape.channels * shape.spatial[0] * shape.spatial[1]
        return shape._replace(kind=VECTOR, channels=channels, spatial=())

    def _transform(self, p, full_after):
        def flatten(t):
            if p.layout.full:
                batch, (h, w) = t.shape[:-4], t.shape[-2:]
                t = t.reshape(*batch, h * w, h * w).diagonal(dim1=-2, dim2=-1)
                return t.mean(-1)
            return t.mean((-2, -1))

        return p.map(flatten).replace(layout=Layout(VECTOR, False))

    def _module(self, shape, gen, device, dtype, parameterization):
        return nn.Flatten()
