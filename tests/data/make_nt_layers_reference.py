"""Generate tests/data/nt_layers_reference.npz: kernels of composed networks from neural-tangents, the reference for
``ntkcore.layers`` (dense, convolution with same/valid/circular padding and strides, average pooling, flatten, global
average and sum pooling, aggregation over graphs, residual branches, ReLU/erf/identity, biases).

neural-tangents 0.6.5 does not import with current JAX, so this script runs in its own virtual environment::

    python3 -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install "jax[cpu]==0.4.30" "jaxlib==0.4.30" "numpy<2" neural-tangents==0.6.5
    /tmp/ntvenv/bin/python tests/data/make_nt_layers_reference.py

The stored file was produced with Python 3.11, jax 0.4.30, jaxlib 0.4.30, neural-tangents 0.6.5, numpy 1.26, in
float64 (``jax_enable_x64``).

Each network is described by a small JSON spec, stored with its results, from which ``tests/test_layers.py`` builds
the same network with ``ntkcore.layers``: a list of ``[name, {options}]``, where ``parallel`` holds a list of such
lists. Per case the file holds ``{case}/spec``, ``{case}/x1``, ``{case}/x2`` (and for graphs ``{case}/a1``,
``{case}/a2``, our adjacency with rows receiving) and ``{case}/{nngp|ntk}_{same|cross}``. Images are stored in
torch's (n, C, H, W) layout and transposed to NHWC for neural-tangents; neural-tangents' aggregation pattern is the
transposed adjacency (its rows send).
"""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from neural_tangents import stax  # noqa: E402

CASES = {
    "dense_mixed": ("vector", [
        ["Dense", {"weight_var": 1.5, "bias_var": 0.1}], ["Relu", {}],
        ["Dense", {"weight_var": 2.0, "bias_var": 0.0}], ["Erf", {}],
        ["Dense", {"weight_var": 0.7, "bias_var": 0.3}]]),
    "conv_same_flatten": ("image", [
        ["Conv", {"kernel_size": 3, "padding": "same", "weight_var": 2.0, "bias_var": 0.1}], ["Relu", {}],
        ["Conv", {"kernel_size": 3, "padding": "same", "weight_var": 1.5, "bias_var": 0.0}], ["Relu", {}],
        ["Flatten", {}], ["Dense", {"weight_var": 2.0, "bias_var": 0.05}]]),
    "conv_valid_even_gap": ("image", [
        ["Conv", {"kernel_size": 3, "padding": "valid", "weight_var": 2.0, "bias_var": 0.0}], ["Erf", {}],
        ["Conv", {"kernel_size": 2, "padding": "same", "weight_var": 1.2, "bias_var": 0.2}], ["Relu", {}],
        ["GlobalAvgPool", {}], ["Dense", {"weight_var": 1.0, "bias_var": 0.0}]]),
    "conv_strides_flatten": ("image", [
        ["Conv", {"kernel_size": 3, "padding": "same", "stride": 2, "weight_var": 2.0, "bias_var": 0.1}],
        ["Relu", {}],
        ["Conv", {"kernel_size": [2, 3], "padding": "valid", "stride": [1, 2], "weight_var": 1.7, "bias_var": 0.0}],
        ["Relu", {}], ["Flatten", {}], ["Dense", {"weight_var": 2.0, "bias_var": 0.0}]]),
    "conv_pool_gap": ("image", [
        ["Conv", {"kernel_size": 3, "padding": "same", "weight_var": 2.0, "bias_var": 0.0}], ["Relu", {}],
        ["AvgPool", {"window": 2}],
        ["Conv", {"kernel_size": 2, "padding": "same", "weight_var": 2.0, "bias_var": 0.1}], ["Relu", {}],
        ["GlobalAvgPool", {}], ["Dense", {"weight_var": 2.0, "bias_var": 0.0}]]),
    "conv_pool_flatten": ("image", [
        ["Conv", {"kernel_size": 3, "padding": "same", "weight_var": 2.0, "bias_var": 0.1}], ["Relu", {}],
        ["AvgPool", {"window": 2, "stride": 1}],
        ["Conv", {"kernel_size": 3, "padding": "same", "weight_var": 1.5, "bias_var": 0.0}], ["Erf", {}],
        ["Flatten", {}], ["Dense", {"weight_var": 1.0, "bias_var": 0.2}]]),
    "conv_circular_sum": ("image", [
        ["Conv", {"kernel_size": 3, "padding": "circular", "weight_var": 2.0, "bias_var": 0.1}], ["Relu", {}],
        ["Conv", {"kernel_size": 3, "padding": "circular", "weight_var": 2.0, "bias_var": 0.0}], ["Relu", {}],
        ["GlobalSumPool", {}], ["Dense", {"weight_var": 2.0, "bias_var": 0.0}]]),
    "conv_residual": ("image", [
        ["Conv", {"kernel_size": 3, "padding": "same", "weight_var": 2.0, "bias_var": 0.0}],
        ["FanOut", {"n": 2}],
        ["parallel", {"branches": [
            [["Relu", {}], ["Conv", {"kernel_size": 3, "padding": "same", "weight_var": 2.0, "bias_var": 0.1}]],
            [["Identity", {}]]]}],
        ["FanInSum", {}], ["Relu", {}], ["GlobalAvgPool", {}], ["Dense", {"weight_var": 2.0, "bias_var": 0.0}]]),
    "graph_sum": ("graph", [
        ["Aggregate", {"normalize": None}],
        ["Dense", {"weight_var": 2.0, "bias_var": 0.1}], ["Relu", {}],
        ["Dense", {"weight_var": 2.0, "bias_var": 0.0}], ["Relu", {}],
        ["Aggregate", {"normalize": None}],
        ["Dense", {"weight_var": 2.0, "bias_var": 0.0}], ["Relu", {}],
        ["GlobalSumPool", {}], ["Dense", {"weight_var": 2.0, "bias_var": 0.0}]]),
    "graph_degree_avg": ("graph", [
        ["Aggregate", {"normalize": "degree"}],
        ["Dense", {"weight_var": 1.5, "bias_var": 0.2}], ["Erf", {}],
        ["Aggregate", {"normalize": "degree"}],
        ["Dense", {"weight_var": 2.0, "bias_var": 0.0}], ["Relu", {}],
        ["GlobalAvgPool", {}], ["Dense", {"weight_var": 1.0, "bias_var": 0.1}]]),
}


def _pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


def nt_layer(name, opts):
    """The neural-tangents layer for one entry of a spec (readout width 1: the kernels do not depend on widths)."""
    std = {"W_std": opts.get("weight_var", 1.0) ** 0.5, "b_std": opts.get("bias_var", 0.0) ** 0.5}
    if name == "Dense":
        return stax.Dense(1, **std)
    if name == "Conv":
        k = _pair(opts["kernel_size"])
        s = _pair(opts.get("stride", 1))
        return stax.Conv(1, k, strides=s, padding=opts["padding"].upper(), **std)
    if name == "AvgPool":
        w = _pair(opts["window"])
        return stax.AvgPool(w, strides=_pair(opts.get("stride", opts["window"])), padding="VALID")
    if name == "Aggregate":
        return stax.Aggregate(aggregate_axis=1, batch_axis=0, channel_axis=-1)
    if name == "FanOut":
        return stax.FanOut(opts["n"])
    if name == "parallel":
        return stax.parallel(*[stax.serial(*[nt_layer(*entry) for entry in branch]) for branch in opts["branches"]])
    return {"Relu": stax.Relu, "Erf": stax.Erf, "Identity": stax.Identity, "Flatten": stax.Flatten,
            "GlobalAvgPool": stax.GlobalAvgPool, "GlobalSumPool": stax.GlobalSumPool,
            "FanInSum": stax.FanInSum}[name]()


def aggregation(a, spec):
    """neural-tangents' pattern for the first Aggregate of the spec: (c ⊙ A)ᵀ (all Aggregates of a case share the
    normalization)."""
    normalize = next(opts["normalize"] for name, opts in spec if name == "Aggregate")
    if normalize == "degree":
        a = a / a.sum(-1, keepdims=True)
    return np.swapaxes(a, -1, -2)


def inputs(kind, rng):
    if kind == "vector":
        return rng.normal(size=(5, 4)) * np.linspace(0.5, 1.5, 5)[:, None], rng.normal(size=(3, 4)), None, None
    if kind == "image":
        x1 = rng.normal(size=(4, 2, 6, 6))
        x1[3] = x1[1]  # a repeated image: the pair (1, 3) has angle 0 at every position
        return x1, rng.normal(size=(3, 2, 6, 6)) * 1.3, None, None
    def graphs(n, nodes):
        a = (rng.uniform(size=(n, nodes, nodes)) < 0.4).astype(float)
        a = np.maximum(a, np.swapaxes(a, 1, 2)) + np.eye(nodes)
        return rng.normal(size=(n, nodes, 3)), np.minimum(a, 1.0)
    (x1, a1), (x2, a2) = graphs(4, 5), graphs(3, 5)
    return x1, x2, a1, a2


def main():
    rng = np.random.default_rng(2024)
    out = {}
    for case, (kind, spec) in CASES.items():
        x1, x2, a1, a2 = inputs(kind, rng)
        kernel_fn = stax.serial(*[nt_layer(*entry) for entry in spec])[2]
        nt1, nt2 = (np.transpose(x1, (0, 2, 3, 1)), np.transpose(x2, (0, 2, 3, 1))) if kind == "image" else (x1, x2)
        kw_same, kw_cross = {}, {}
        if kind == "graph":
            p1, p2 = aggregation(a1, spec), aggregation(a2, spec)
            kw_same, kw_cross = {"pattern": (p1, p1)}, {"pattern": (p1, p2)}
            out[f"{case}/a1"], out[f"{case}/a2"] = a1, a2
        same = kernel_fn(nt1, None, ("nngp", "ntk"), **kw_same)
        cross = kernel_fn(nt1, nt2, ("nngp", "ntk"), **kw_cross)
        out[f"{case}/spec"] = np.array(json.dumps({"kind": kind, "layers": spec}))
        out[f"{case}/x1"], out[f"{case}/x2"] = x1, x2
        for tag, k in (("same", same), ("cross", cross)):
            out[f"{case}/nngp_{tag}"] = np.asarray(k.nngp)
            out[f"{case}/ntk_{tag}"] = np.asarray(k.ntk)
    path = pathlib.Path(__file__).with_name("nt_layers_reference.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {len(out)} arrays for {len(CASES)} networks to {path}")


if __name__ == "__main__":
    main()
