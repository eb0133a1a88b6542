"""Tests of ntkcore.layers: neural-tangents reference values, kernel properties (symmetry, positive semi-definiteness,
x2=None, invariances, tiling), the finite modules, and bad input."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from ntkcore import empirical, layers as L
from ntkcore.device import available_devices
from ntkcore.layers._state import Pool

REFERENCE = pathlib.Path(__file__).parent / "data" / "nt_layers_reference.npz"
DEVICES = available_devices()


def build(entries):
    """ntkcore layers from the JSON spec of tests/data/make_nt_layers_reference.py (finite widths are arbitrary)."""
    out = []
    for name, opts in entries:
        opts = dict(opts)
        if name == "parallel":
            out.append(L.parallel(*[L.serial(*build(branch)) for branch in opts["branches"]]))
        elif name == "Dense":
            out.append(L.Dense(7, **opts))
        elif name == "Conv":
            out.append(L.Conv(7, opts.pop("kernel_size"), **opts))
        elif name == "AvgPool":
            out.append(L.AvgPool(opts.pop("window"), **opts))
        elif name == "Aggregate":
            out.append(L.Aggregate(**opts))
        elif name == "FanOut":
            out.append(L.FanOut(opts["n"]))
        else:
            out.append(getattr(L, name)())
    return out


def _cases():
    with np.load(REFERENCE) as ref:
        return sorted({k.split("/")[0] for k in ref.files})


def _points(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _graphs(n, nodes, channels, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, nodes, channels, generator=g, dtype=torch.float64)
    a = (torch.rand(n, nodes, nodes, generator=g) < 0.4).double()
    return x, ((a + a.transpose(1, 2)) > 0).double() + torch.eye(nodes, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# neural-tangents reference (tests/data/make_nt_layers_reference.py)
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", _cases())
def test_matches_neural_tangents(case, device):
    """Dense, conv (same/valid/circular, strides, even filters), average pooling, flatten, global average and sum
    pooling, aggregation, residual branches, ReLU/erf/identity and biases, against neural-tangents 0.6.5, to 1e-7
    relative in float64, for x2=None and for an explicit x2."""
    ref = np.load(REFERENCE)
    spec = json.loads(str(ref[f"{case}/spec"]))
    net = L.serial(*build(spec["layers"]))
    x1 = torch.as_tensor(ref[f"{case}/x1"], device=device)
    x2 = torch.as_tensor(ref[f"{case}/x2"], device=device)
    same, cross = {}, {}
    if spec["kind"] == "graph":
        a1, a2 = (torch.as_tensor(ref[f"{case}/{a}"], device=device) for a in ("a1", "a2"))
        same, cross = {"adjacency": a1}, {"adjacency": (a1, a2)}
    for tag, k in (("same", net.kernel(x1, **same)), ("cross", net.kernel(x1, x2, **cross))):
        for kind in ("nngp", "ntk"):
            expected = torch.as_tensor(ref[f"{case}/{kind}_{tag}"], device=device)
            got = getattr(k, kind)
            assert got.dtype == torch.float64 and got.device.type == torch.device(device).type
            torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-13 * float(expected.abs().max()))


# ---------------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------------

def _image_nets():
    return {
        "gap": L.serial(L.Conv(4, 3, weight_var=2.0, bias_var=0.1), L.Relu(), L.Conv(4, 3, weight_var=2.0),
                        L.Relu(), L.GlobalAvgPool(), L.Dense(1, weight_var=2.0)),
        "flatten": L.serial(L.Conv(4, 3, weight_var=2.0), L.Erf(), L.Conv(4, 2, padding="valid", weight_var=1.5),
                            L.Relu(), L.Flatten(), L.Dense(1, weight_var=2.0, bias_var=0.2)),
        "pool": L.serial(L.Conv(4, 3, weight_var=2.0), L.Relu(), L.AvgPool(2), L.Conv(4, 2, weight_var=2.0),
                         L.Relu(), L.Flatten(), L.Dense(1, weight_var=2.0)),
    }


def _graph_net(jumping=False):
    from ntkcore import kernels

    return kernels.gntk_network(2, 2, normalize="degree", jumping_knowledge=jumping, bias_var=0.1)


@pytest.mark.parametrize("name", sorted(_image_nets()))
def test_image_kernels_symmetric_psd_and_equal_to_explicit_call(name):
    net = _image_nets()[name]
    x = _points((7, 2, 6, 6), 0)
    x[5] = x[2]  # a repeated image
    sym, explicit = net.kernel(x), net.kernel(x, x)
    for k, e in zip(sym, explicit):
        torch.testing.assert_close(k, k.T, rtol=0, atol=0)  # mirrored exactly
        # the explicit call computes the repeated pairs through arccos(1 − ε), which resolves angles to ~√eps
        torch.testing.assert_close(k, e, rtol=1e-6, atol=1e-7 * float(e.abs().max()))
        lam = torch.linalg.eigvalsh(k)
        assert float(lam[0]) >= -1e-12 * float(lam[-1])


@pytest.mark.parametrize("jumping", [False, True])
def test_graph_kernels_symmetric_psd_and_invariant_to_node_relabelling(jumping):
    net = _graph_net(jumping)
    x, a = _graphs(6, 7, 3, seed=1)
    k = net.kernel(x, adjacency=a)
    for m in k:
        torch.testing.assert_close(m, m.T, rtol=0, atol=0)
        assert float(torch.linalg.eigvalsh(m)[0]) >= -1e-12 * float(m.diagonal().max())
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    relabelled = net.kernel(x[:, perm], adjacency=a[:, perm][:, :, perm])
    for got, want in zip(relabelled, k):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(net.kernel(x[:2], x, adjacency=(a[:2], a)).ntk, k.ntk[:2], rtol=1e-6, atol=0)


def test_graphs_of_different_sizes_are_padded_and_masked():
    """A list of graphs of different sizes gives, for every pair, the kernel of the two graphs computed alone."""
    net = _graph_net(jumping=True)
    sizes = [4, 7, 5]
    g = torch.Generator().manual_seed(5)
    xs, adjs = [], []
    for n in sizes:
        x, a = _graphs(1, n, 3, seed=int(torch.randint(0, 1000, (1,), generator=g)))
        xs.append(x[0])
        adjs.append(a[0])
    k = net.kernel(xs, adjacency=adjs)
    for i in range(3):
        for j in range(3):
            alone = net.kernel(xs[i][None], xs[j][None], adjacency=(adjs[i][None], adjs[j][None]))
            for got, want in zip(k, alone):
                torch.testing.assert_close(got[i, j], want[0, 0], rtol=1e-6 if i == j else 1e-12, atol=0)


def test_graphs_of_different_sizes_against_graphs_of_one_size():
    """One side padded (a mask), the other of one size (no mask): the cross kernel is the block of the symmetric
    kernel of all the graphs (it failed before: the pooling multiplied by the missing mask of the second side)."""
    net = _graph_net()
    mixed, same = [_graphs(1, n, 3, seed=10 + n) for n in (4, 7, 5)], [_graphs(1, 6, 3, seed=20 + i) for i in range(2)]
    xs, adjs = [x[0] for x, _ in mixed + same], [a[0] for _, a in mixed + same]
    whole = net.kernel(xs, adjacency=adjs)
    for rows, cols in ((slice(0, 3), slice(3, 5)), (slice(3, 5), slice(0, 3))):
        cross = net.kernel(xs[rows], xs[cols], adjacency=(adjs[rows], adjs[cols]))
        for got, want in zip(cross, whole):
            torch.testing.assert_close(got, want[rows, cols], rtol=1e-12, atol=0)


def test_gap_kernel_invariant_to_circular_shifts():
    """With circular padding, a convolution commutes with circular shifts and global average pooling forgets where
    a feature was: the GAP kernel does not change when the images are shifted (the flatten kernel does)."""
    conv = [L.Conv(4, 3, padding="circular", weight_var=2.0, bias_var=0.1), L.Relu(),
            L.Conv(4, 3, padding="circular", weight_var=2.0), L.Relu()]
    gap = L.serial(*conv, L.GlobalAvgPool(), L.Dense(1, weight_var=2.0))
    vanilla = L.serial(*conv, L.Flatten(), L.Dense(1, weight_var=2.0))
    x1, x2 = _points((3, 2, 6, 6), 2), _points((4, 2, 6, 6), 3)
    shifted = torch.roll(x2, shifts=(2, -1), dims=(2, 3))
    for a, b in zip(gap.kernel(x1, x2), gap.kernel(x1, shifted)):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=0)
    assert float((vanilla.kernel(x1, x2).ntk - vanilla.kernel(x1, shifted).ntk).abs().max()) > 1e-3


@pytest.mark.parametrize("name", sorted(_image_nets()))
def test_tiling_does_not_change_the_kernel(name):
    net = _image_nets()[name]
    x1, x2 = _points((9, 2, 5, 5), 4), _points((5, 2, 5, 5), 5)
    for args in ((x1,), (x1, x2)):
        whole = net.kernel(*args, block_size=64)
        for block in (1, 2, 4):
            for a, b in zip(whole, net.kernel(*args, block_size=block)):
                torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
        for a, b in zip(whole, net.kernel(*args, max_memory=50_000)):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


def test_float32_follows_input_and_agrees():
    net = _image_nets()["gap"]
    x = _points((4, 2, 5, 5), 6)
    k64, k32 = net.kernel(x), net.kernel(x.float())
    assert k32.ntk.dtype == torch.float32
    torch.testing.assert_close(k32.ntk.double(), k64.ntk, rtol=1e-5, atol=1e-6)
    assert net.kernel(x, get="nngp").ntk is None and net.kernel(x, get="ntk").nngp is None


def test_frozen_layers_drop_their_gradient_term():
    """trainable=False removes a layer's own term from the NTK and leaves the NNGP alone: with every layer but the
    readout frozen the NTK is the readout's term, the NNGP; with everything frozen it is 0."""
    x = _points((5, 4), 7)
    free = L.serial(L.Dense(3, weight_var=2.0), L.Relu(), L.Dense(1, weight_var=2.0, bias_var=0.1))
    readout_only = L.serial(L.Dense(3, weight_var=2.0, trainable=False), L.Relu(),
                            L.Dense(1, weight_var=2.0, bias_var=0.1))
    none = L.serial(L.Dense(3, weight_var=2.0, trainable=False), L.Relu(),
                    L.Dense(1, weight_var=2.0, bias_var=0.1, trainable=False))
    k, k_readout, k_none = free.kernel(x), readout_only.kernel(x), none.kernel(x)
    torch.testing.assert_close(k_readout.nngp, k.nngp, rtol=0, atol=0)
    torch.testing.assert_close(k_readout.ntk, k.nngp, rtol=1e-14, atol=0)
    assert float(k_none.ntk.abs().max()) == 0.0
    dropped = torch.linalg.eigvalsh(k.ntk - k_readout.ntk)  # the first layer's term: a nonzero PSD kernel
    assert float(dropped[0]) >= -1e-12 * float(dropped[-1]) and float(dropped[-1]) > 0.1
    # the same holds for convolutions, and the finite module's frozen parameters do not count
    conv = L.serial(L.Conv(3, 3, weight_var=2.0, trainable=False), L.Relu(), L.Flatten(), L.Dense(1, weight_var=2.0))
    xi = _points((3, 1, 4, 4), 8)
    kc = conv.kernel(xi)
    torch.testing.assert_close(kc.ntk, kc.nngp, rtol=1e-14, atol=0)
    module = conv.module((1, 4, 4), seed=0)
    assert [p.requires_grad for p in module.parameters()] == [False, True]


def test_fan_in_sum_of_residual_block_is_the_sum_of_its_branches():
    """A residual block h + Conv(Relu(h)): the branches are uncorrelated (the Conv's weights are fresh), so the NNGP
    and the NTK (in which the stem's gradient reaches the output along both branches) are the sums of the kernels
    of the two branch networks; a linear bias-free readout keeps that."""
    stem, conv = L.Conv(3, 3, weight_var=2.0), L.Conv(3, 3, weight_var=2.0, bias_var=0.1)
    x = _points((4, 2, 5, 5), 9)
    res = L.serial(stem, L.FanOut(2), L.parallel(L.serial(L.Relu(), conv), L.Identity()), L.FanInSum(),
                   L.GlobalAvgPool(), L.Dense(1))
    k_branch = L.serial(stem, L.Relu(), conv, L.GlobalAvgPool(), L.Dense(1)).kernel(x)
    k_skip = L.serial(stem, L.GlobalAvgPool(), L.Dense(1)).kernel(x)
    k = res.kernel(x)
    torch.testing.assert_close(k.nngp, k_branch.nngp + k_skip.nngp, rtol=1e-12, atol=0)
    torch.testing.assert_close(k.ntk, k_branch.ntk + k_skip.ntk, rtol=1e-12, atol=0)


def test_pool_hands_out_each_tensor_once_and_never_a_view():
    """The pairs path reuses its large tensors through a pool: a tensor given back twice is pooled once, views and
    slices are never pooled (they share memory with a live tensor)."""
    pool = Pool()
    like = torch.zeros(1, dtype=torch.float64)
    a = pool.take((3, 4), like)
    pool.give(a, a)
    pool.give(a.view(12)[2:], torch.zeros(4, 4)[1:])
    b, c = pool.take((12,), like), pool.take((2, 6), like)
    assert b.data_ptr() == a.data_ptr() and c.data_ptr() != a.data_ptr() and b.shape == (12,)
    assert pool.take((4, 3), torch.zeros(1, dtype=torch.float32)).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# Finite modules
# ---------------------------------------------------------------------------------------------------------------

def test_modules_have_the_right_shapes_and_are_deterministic():
    net = _image_nets()["pool"]
    x = _points((3, 2, 6, 6), 10)
    a, b = net.module((2, 6, 6), seed=4), net.module((2, 6, 6), seed=4)
    assert a(x).shape == (3, 1) and torch.equal(a(x), b(x))
    assert not torch.equal(a(x), net.module((2, 6, 6), seed=5)(x))
    assert a.readout_weight_var == 2.0 and a.features(x).shape == (3, 4 * 3 * 3)
    assert isinstance(a[0], L.ScaledConv2d) and a[0].weight.shape == (4, 2, 3, 3)
    g = _graph_net(jumping=True).module((None, 3), seed=0)
    xg, ag = _graphs(2, 5, 3, seed=11)
    assert g(xg, ag).shape == (2, 1)
    mask = torch.ones(2, 5, dtype=torch.float64)
    torch.testing.assert_close(g(xg, ag, mask), g(xg, ag), rtol=1e-14, atol=0)
    dense = L.serial(L.Dense(8, weight_var=2.0), L.Relu(), L.Dense(2)).module((3,), seed=0)
    assert empirical.layerwise_layers(dense) is not None  # plain chains keep the empirical NTK's fast path


def test_same_padding_module_matches_kernel_geometry():
    """Strided and even-filter convolutions: the finite module's output shape is the kernel layer's."""
    for k, s, padding in ((3, 2, "same"), (2, 1, "same"), (4, 3, "valid"), (3, 2, "circular")):
        conv = L.Conv(5, k, stride=s, padding=padding)
        shape = conv._out_shape(L._state.Shape("image", 2, (7, 6)))
        out = conv.module((2, 7, 6), seed=0)(_points((1, 2, 7, 6), 12))
        assert tuple(out.shape[2:]) == shape.spatial, (k, s, padding)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: L.serial(), "at least one layer"),
    (lambda: L.serial(L.Dense(1), "relu"), "ntkcore.layers layers"),
    (lambda: L.Dense(1, weight_var=-1.0), "weight_var"),
    (lambda: L.Conv(1, 3, bias_var=-0.5), "bias_var"),
    (lambda: L.Conv(1, 3, stride=0), "stride"),
    (lambda: L.Conv(1, (3, 0)), r"kernel_size\[1\]"),
    (lambda: L.Conv(1, 3, padding="full"), "padding.*'same', 'valid', 'circular'"),
    (lambda: L.AvgPool(0), "window"),
    (lambda: L.Aggregate(normalize="mean"), "normalize"),
    (lambda: L.Dense(0), "out_features"),
    (lambda: L.Dense(2, trainable="yes"), "trainable"),
    (lambda: L.Elementwise("softsign"), "fn.*'relu'"),
    (lambda: L.FanOut(0), "n must be"),
])
def test_bad_layer_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_networks_and_inputs():
    x_img = _points((3, 2, 5, 5), 13)
    conv_net = _image_nets()["gap"]
    with pytest.raises(ValueError, match="Conv.*accepts images"):
        conv_net.kernel(_points((3, 4), 0))
    with pytest.raises(ValueError, match="channels-last"):
        conv_net.kernel(_points((3, 6, 6, 1), 0))
    with pytest.raises(ValueError, match="Dense.*accepts vectors"):
        L.serial(L.Dense(1)).kernel(x_img)
    with pytest.raises(ValueError, match="not Gaussian"):
        L.serial(L.Relu(), L.Dense(1)).kernel(_points((3, 4), 0))
    with pytest.raises(ValueError, match="not Gaussian"):
        L.serial(L.Dense(2), L.Relu(), L.Relu(), L.Dense(1)).kernel(_points((3, 4), 0))
    with pytest.raises(ValueError, match="one vector per input"):
        L.serial(L.Conv(2, 3), L.Relu()).kernel(x_img)
    with pytest.raises(ValueError, match="uncorrelated"):
        L.serial(L.Dense(2), L.FanOut(2), L.parallel(L.Identity(), L.Identity()), L.FanInSum(),
                 L.Dense(1)).kernel(_points((3, 4), 0))
    with pytest.raises(ValueError, match="needs 2 branches"):
        L.serial(L.Dense(2), L.FanOut(3), L.parallel(L.Dense(1), L.Dense(1)), L.FanInSum()).kernel(_points((3, 4), 0))
    with pytest.raises(ValueError, match="at least .* positions"):
        L.serial(L.Conv(2, 5, padding="valid"), L.Relu(), L.Flatten(), L.Dense(1)).kernel(_points((2, 1, 4, 4), 0))
    with pytest.raises(ValueError, match="x2 must have the per-example shape"):
        conv_net.kernel(x_img, _points((2, 2, 6, 6), 0))
    with pytest.raises(ValueError, match="x1 contains NaN"):
        conv_net.kernel(torch.full((2, 1, 4, 4), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="get="):
        conv_net.kernel(x_img, get="both")


def test_bad_graph_inputs():
    net = _graph_net()
    x, a = _graphs(3, 5, 3, seed=14)
    with pytest.raises(ValueError, match="adjacency"):
        net.kernel(x)
    with pytest.raises(ValueError, match=r"adjacency must be a square adjacency of shape \(3, 5, 5\)"):
        net.kernel(x, adjacency=a[:, :, :4])
    with pytest.raises(ValueError, match=r"adjacency must be a square adjacency of shape \(3, 5, 5\)"):
        net.kernel(x, adjacency=a[:2])
    with pytest.raises(ValueError, match="edge weights >= 0"):
        net.kernel(x, adjacency=-a)
    with pytest.raises(ValueError, match="pair"):
        net.kernel(x, x, adjacency=a)
    with pytest.raises(ValueError, match=r"adjacency\[1\]"):
        net.kernel([x[0], x[1]], adjacency=[a[0], a[1][:3, :3]])
    with pytest.raises(ValueError, match="Aggregate.*accepts graphs"):
        net.kernel(_points((3, 5), 0))
    with pytest.raises(ValueError, match="in_shape"):
        net.module((3, 5, 5, 5), seed=0)


def test_finite_networks_check_their_input():
    """A wrong feature count, channel count, dtype or type is a ValueError naming x, not a torch error."""
    dense = L.serial(L.Dense(4, weight_var=2.0), L.Relu(), L.Dense(1)).module((5,), seed=0, dtype=torch.float64)
    conv = L.serial(L.Conv(2, 3), L.Relu(), L.GlobalAvgPool(), L.Dense(1)).module((1, 6, 6), seed=0,
                                                                                   dtype=torch.float64)
    graph = L.serial(L.Dense(2), L.Relu(), L.Aggregate(), L.GlobalSumPool(), L.Dense(1)).module(
        (4, 3), seed=0, dtype=torch.float64)
    cases = [(dense, (torch.zeros(2, 4, dtype=torch.float64),), r"x must have shape \(n, 5\)"),
             (dense, (torch.zeros(2, 5),), "x has dtype torch.float32 but the model's parameters"),
             (dense, ([[0.0] * 5],), "x must be a torch.Tensor"),
             (conv, (torch.zeros(2, 2, 6, 6, dtype=torch.float64),), r"x must have shape \(n, 1, 6, 6\)"),
             (graph, (torch.zeros(2, 4, 2, dtype=torch.float64), torch.ones(2, 4, 4, dtype=torch.float64)),
              r"x must have shape \(n, N, 3\)")]
    for net, args, match in cases:
        with pytest.raises(ValueError, match=match):
            net(*args)
    # graphs of any node count pass
    assert graph(torch.zeros(2, 7, 3, dtype=torch.float64), torch.ones(2, 7, 7, dtype=torch.float64)).shape == (2, 1)
