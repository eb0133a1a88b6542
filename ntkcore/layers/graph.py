"""Neighbourhood aggregation on graphs (book appendix "Closed-form kernels and conventions", section "Graphs";
Du et al. 2019, the BLOCK operation of the graph NTK)."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice
from ._base import Layer, _require
from ._state import GRAPH, Shape, aggregation_matrix

NORMALIZATIONS = (None, "degree")


class _AggregateModule(nn.Module):
    takes_graph = True

    def __init__(self, normalize):
        super().__init__()
        self.normalize = normalize

    def forward(self, x, graph):
        if graph is None:
            raise ValueError("a graph network needs the adjacency: call it as net(x, adjacency)")
        return aggregation_matrix(graph.adjacency, self.normalize) @ x

    def extra_repr(self):
        return f"normalize={self.normalize!r}"


class Aggregate(Layer):
    """Sum over each node's neighbourhood, ``h′_u = c_u Σ_v A_uv h_v``, on node features ``(n, N, C)``.

    ``A`` is the adjacency the caller passes (``A_uv`` the weight of the edge from v into u), so it holds self-loops
    exactly where the caller put them (Du et al. add ``I``). ``normalize``: None (``c_u = 1``, their uniform
    scaling) or ``"degree"`` (``c_u = 1/Σ_v A_uv``, their ``1/(|N(u)| + 1)``). Kernel between graphs G and G′:
    ``K′ = (c ⊙ A) K (c′ ⊙ A′)ᵀ`` over pairs of nodes, the same for Θ (Du et al. 2019, Eqs. 3-4; neural-tangents'
    ``stax.Aggregate``, whose pattern is ``Aᵀ``): two matrix products per pair of graphs.
    """

    def __init__(self, *, normalize=None):
        self.normalize = check_choice(normalize, "normalize", NORMALIZATIONS)

    def _out_shape(self, shape: Shape) -> Shape:
        _require(shape.kind == GRAPH, self, shape, "graphs: node features (n, N, C) with an adjacency (n, N, N)")
        return shape

    def _transform(self, p, full_after):
        a1 = p.side1.aggregation(self.normalize)
        a2 = p.side2.aggregation(self.normalize).transpose(-1, -2)
        return p.map(lambda t: a1 @ t @ a2)

    def _module(self, shape, gen, device, dtype, parameterization):
        return _AggregateModule(self.normalize)

    def __repr__(self):
        return f"Aggregate(normalize={self.normalize!r})"
