"""The analytic kernels over the whole floating-point range: agreement with a 60-digit reference (mpmath), exact
self-pairs (explicit ``x2 = x1``, repeated inputs), positive semi-definiteness at depth, a clean error where a
kernel overflows, and derivatives with respect to the inputs and the variances (``torch.autograd.gradcheck``)."""
from __future__ import annotations

import math

import mpmath as mp
import pytest
import torch
from torch.autograd import gradcheck

from ntkcore import kernels, layers as L, ndk
from ntkcore.layers._entrywise import CHUNK_ENTRIES, same_inputs, squared_norms

EPS = torch.finfo(torch.float64).eps


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# A high-precision reference for the fully connected erf network (book appendix "Closed-form kernels")


def _erf_reference(x1, x2, depth, wv, bv, digits):
    """(NNGP, NTK) of ``kernels.fc(..., activation="erf")`` for one pair, in ``digits``-digit arithmetic from the
    float inputs taken exactly."""
    with mp.workdps(digits):
        d = len(x1)
        a = [mp.mpf(v) for v in x1]
        b = [mp.mpf(v) for v in x2]
        q11 = wv * mp.fsum(u * u for u in a) / d + bv
        q22 = wv * mp.fsum(v * v for v in b) / d + bv
        q12 = wv * mp.fsum(u * v for u, v in zip(a, b)) / d + bv
        theta = q12
        for _ in range(depth):
            det = (1 + 2 * q11) * (1 + 2 * q22) - 4 * q12 ** 2
            e12 = 2 / mp.pi * mp.asin(2 * q12 / mp.sqrt((1 + 2 * q11) * (1 + 2 * q22)))
            e11 = 2 / mp.pi * mp.asin(2 * q11 / (1 + 2 * q11))
            e22 = 2 / mp.pi * mp.asin(2 * q22 / (1 + 2 * q22))
            q11, q22, q12 = wv * e11 + bv, wv * e22 + bv, wv * e12 + bv
            theta = wv * 4 / mp.pi / mp.sqrt(det) * theta + q12
        return float(q12), float(theta)


def _pairs():
    """Inputs with a diagonal, a generic pair, a pair at angle about 1e-6 and an exactly parallel pair (x, 3x)."""
    x = torch.randn(4, 6, dtype=torch.float64, generator=_gen(1))
    x[1] = x[0] * (1 + 1e-3) + 1e-6 * x[2]
    x[3] = x[0] * 3.0
    return x, _angle(x[0], x[1])


def _angle(u, v):
    with mp.workdps(60):
        a = [mp.mpf(t) for t in u.tolist()]
        b = [mp.mpf(t) for t in v.tolist()]
        c = mp.fsum(p * q for p, q in zip(a, b)) / mp.sqrt(mp.fsum(p * p for p in a) * mp.fsum(q * q for q in b))
        return float(mp.acos(c))


@pytest.mark.parametrize("norm", [1.0, 1e4, 1e8, 1e15])
@pytest.mark.parametrize("depth", [1, 3])
def test_erf_kernels_match_high_precision_reference(norm, depth):
    # The old step formed 1 − z² from a rounded z: relative error q·ε (5e-8 at norm 1e4, 100% from 1e8 on the
    # diagonal). Now every pair is within rounding of the reference, except that a pair at angle θ inherits the
    # conditioning of the angle itself: inputs perturbed by one rounding (relative ε) move θ by ε, which moves
    # 1 − c² by 2θε, that is by 2ε/θ relative (4e-10 for θ = 1e-6); the bound below is 4ε/θ. For the parallel
    # pair, one rounding turns sin²θ = 0 into ε², which moves the NTK by q ε² relative (q the first layer's
    # variance): nothing up to q ~ 1e24, a percent at q ~ 1e30 (norm 1e15); the bound adds 4 q ε².
    x, theta = _pairs()
    x = x * norm
    k = kernels.fc(x, depth=depth, activation="erf", weight_var=2.0, bias_var=0.0)
    digits = 40 + 2 * int(math.log10(norm))
    q = 2.0 * float((x[0] * x[0]).mean())
    bounds = {(0, 0): 50 * EPS, (0, 2): 50 * EPS, (0, 3): 50 * EPS + 4 * q * EPS ** 2, (0, 1): 4 * EPS / theta}
    for (i, j), bound in bounds.items():
        nngp, ntk = _erf_reference(x[i].tolist(), x[j].tolist(), depth, 2.0, 0.0, digits)
        assert abs(k.nngp[i, j].item() - nngp) <= bound * abs(nngp), (i, j)
        assert abs(k.ntk[i, j].item() - ntk) <= bound * abs(ntk), (i, j)


def test_relu_near_parallel_pair_matches_reference():
    # ReLU: E[relu′ relu′] = (π − θ)/(2π) with θ from arccos(c) had error ε/θ (1e-10 at θ = 1e-6); the first
    # layer's angle now comes from the inputs (difference of unit vectors), accurate to the conditioning ε.
    x, theta = _pairs()
    k = kernels.fc(x[:2], depth=1, activation="relu", weight_var=2.0)
    with mp.workdps(60):
        a = [mp.mpf(t) for t in x[0].tolist()]
        b = [mp.mpf(t) for t in x[1].tolist()]
        q1, q2 = (2 * mp.fsum(u * u for u in v) / 6 for v in (a, b))
        q12 = 2 * mp.fsum(u * v for u, v in zip(a, b)) / 6
        th = mp.acos(q12 / mp.sqrt(q1 * q2))
        nngp = 2 * mp.sqrt(q1 * q2) / (2 * mp.pi) * (mp.sin(th) + (mp.pi - th) * mp.cos(th))
        ntk = 2 * (mp.pi - th) / (2 * mp.pi) * q12 + nngp
    assert abs(k.ntk[0, 1].item() - float(ntk)) <= 8 * EPS * float(ntk)
    assert abs(k.nngp[0, 1].item() - float(nngp)) <= 8 * EPS * float(nngp)


# ---------------------------------------------------------------------------------------------------------------
# Pairs of an input with itself


def test_same_inputs_labels_identical_rows_only():
    x = torch.randn(6, 5, dtype=torch.float64, generator=_gen())
    assert same_inputs(x) is None
    x[4] = x[1]
    x[5] = -0.0 * x[2]
    x[2] = 0.0 * x[2]  # +0 and −0: the same input
    labels, again = same_inputs(x)
    assert again is labels
    assert labels[4] == labels[1] and labels[5] == labels[2]
    assert len(set(labels.tolist())) == 4
    assert same_inputs(x[:3], x[3:4].clone()) is None  # x[3] matches nothing in x[:3]
    l1, l2 = same_inputs(x[:3], x[4:].clone())
    assert l2[0] == l1[1] and l2[1] == l1[2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_inputs_across_chunks_of_rows(dtype):
    """Rows hashed in chunks of CHUNK_ENTRIES entries through reused buffers: duplicates in different chunks, and in
    the last, shorter chunk, are found; nothing else is."""
    d = 7
    n = 2 * (CHUNK_ENTRIES // d) + 5  # two full chunks and a short one
    x = torch.randn(n, d, dtype=dtype, generator=_gen())
    assert same_inputs(x) is None
    x[n - 1] = x[0]  # last chunk against the first
    x[CHUNK_ENTRIES // d + 3] = x[2]  # second chunk against the first
    labels, _ = same_inputs(x)
    assert labels[n - 1] == labels[0] and labels[CHUNK_ENTRIES // d + 3] == labels[2]
    assert len(set(labels.tolist())) == n - 2


@pytest.mark.parametrize("shape", [(1, 3), (5000, 33), (2048, 784), (3, 70000)])
def test_squared_norms_in_chunks_equal_the_plain_sum(shape):
    x = torch.randn(*shape, dtype=torch.float64, generator=_gen())
    # positive terms summed in two orders (a long row is split into chunks): torch's cascade summation errs by
    # O(log d) ulps in each, within 4√d ulps
    assert torch.allclose(squared_norms(x), (x * x).sum(1), rtol=4 * EPS * math.sqrt(shape[1]), atol=0)
    tracked = x[:3].clone().requires_grad_(True)
    squared_norms(tracked).sum().backward()  # an input autograd follows keeps its gradient
    assert torch.equal(tracked.grad, 2 * x[:3])


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("depth", [1, 10, 50])
def test_explicit_x2_equal_to_x1_equals_the_symmetric_call(activation, depth):
    # Was 3.4e-9 at depth 1 and 7.9e-7 at depth 50 (arccos of a rounded correlation of 1). Entries pairing an
    # input with itself are now computed as in the symmetric call (angle exactly 0): equal to a few ulps. The
    # other entries differ only by the rounding of the two matrix products (ε per entry, carried through
    # the layers), bounded here by depth · 20ε.
    x = torch.randn(40, 10, dtype=torch.float64, generator=_gen())
    a = kernels.fc(x, depth=depth, activation=activation, bias_var=0.1)
    b = kernels.fc(x, x.clone(), depth=depth, activation=activation, bias_var=0.1)
    for s, e in zip(a, b):
        assert torch.allclose(e.diagonal(), s.diagonal(), rtol=4 * EPS, atol=0)
        assert (e - s).abs().max() <= depth * 20 * EPS * s.abs().max()


def test_repeated_inputs_equal_their_self_kernel_on_every_path():
    x = torch.randn(5, 6, dtype=torch.float64, generator=_gen())
    x = torch.cat([x, x[:2]])  # rows 5, 6 repeat rows 0, 1
    img = torch.randn(3, 2, 5, 5, dtype=torch.float64, generator=_gen(2))
    img = torch.cat([img, img[:1]])
    results = [kernels.fc(x, depth=20, activation="erf"), kernels.fc(x[:5], x, depth=20, activation="relu"),
               kernels.cntk(img, depth=3), kernels.cntk(img[:3], img, depth=3, gap=False)]
    pairs = [[(0, 5), (1, 6)], [(0, 5), (1, 6)], [(0, 3)], [(0, 3)]]
    for kern, where in zip(results, pairs):
        for k in kern:
            for i, j in where:
                assert k[i, j].item() == pytest.approx(k[i, i].item(), rel=4 * EPS)
    two = ndk.two_time_kernels(x[:3], x[:3].clone(), torch.tensor([0.0, 1.0], dtype=torch.float64), L=3,
                               activation="erf", sigma0_sq=2.0, sigma_sq=1.5, T=0.5)
    same = ndk.two_time_kernels(x[:3], None, torch.tensor([0.0, 1.0], dtype=torch.float64), L=3,
                                activation="erf", sigma0_sq=2.0, sigma_sq=1.5, T=0.5)
    for e, s in zip(two, same):
        assert torch.equal(e, s)


@pytest.mark.parametrize("activation", ["erf", "relu"])
@pytest.mark.parametrize("depth", [12, 50, 100])
def test_deep_kernels_stay_positive_semidefinite(activation, depth):
    # Repeated inputs and norms spread over six decades, weight_var = 2. The smallest eigenvalue was −3.3e-8 of
    # the largest (erf, depth 100); now it is at the level of the eigensolver's own backward error, n ε λ_max.
    n = 30
    x = torch.randn(n, 5, dtype=torch.float64, generator=_gen(3))
    x = x * torch.logspace(-3, 3, n, dtype=torch.float64)[torch.randperm(n, generator=_gen(4))][:, None]
    x = torch.cat([x, x[:5]])
    for k in kernels.fc(x, depth=depth, activation=activation, weight_var=2.0):
        eig = torch.linalg.eigvalsh(k)
        assert eig[0] >= -x.shape[0] * EPS * eig[-1]


# ---------------------------------------------------------------------------------------------------------------
# Large and tiny inputs


@pytest.mark.parametrize("scale", [1e-150, 1e100, 1e150])
def test_relu_kernels_are_homogeneous_over_the_range(scale):
    # K(s x, s x′) = s² K(x, x′) for ReLU without bias; the inner products are formed from x/√d, so nothing
    # overflows before the kernel itself does.
    x = torch.randn(6, 784, dtype=torch.float64, generator=_gen())
    ref = kernels.fc(x, depth=3)
    big = kernels.fc(x * scale, depth=3)
    for r, b in zip(ref, big):
        assert torch.allclose(b / scale / scale, r, rtol=1e-14, atol=0)


def test_a_kernel_beyond_float_range_raises_a_clear_error():
    x = torch.randn(4, 784, dtype=torch.float64, generator=_gen())
    for call in (lambda: kernels.fc(x * 1e155, depth=2), lambda: kernels.fc(x * 1e154, depth=2, activation="erf"),
                 lambda: kernels.fc(x, depth=40, weight_var=1e20),
                 lambda: kernels.cntk((x * 1e160).reshape(4, 1, 28, 28), depth=2),
                 lambda: ndk.ntk0(x * 1e160, L=2, activation="relu", sigma0_sq=1.0)):
        with pytest.raises(ValueError, match="not representable in torch.float64"):
            call()
    assert torch.isfinite(kernels.fc(x * 1e153, depth=2).ntk).all()


# ---------------------------------------------------------------------------------------------------------------
# Derivatives with respect to the inputs


def _leaf(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=_gen(seed)).requires_grad_(True)


@pytest.mark.parametrize("activation", ["relu", "erf", "identity", "tanh"])
def test_fc_kernels_are_differentiable_in_the_inputs(activation):
    x, x2 = _leaf(4, 3), _leaf(3, 3, seed=1)
    for get in ("nngp", "ntk"):
        assert gradcheck(lambda a, b: getattr(kernels.fc(a, b, depth=2, activation=activation, bias_var=0.1),
                                              get), (x, x2))
        assert gradcheck(lambda a: getattr(kernels.fc(a, depth=2, activation=activation, bias_var=0.1), get), (x,))


def test_conv_graph_and_two_time_kernels_are_differentiable_in_the_inputs():
    img, img2 = _leaf(2, 1, 4, 4), _leaf(2, 1, 4, 4, seed=1)
    net = L.serial(L.Conv(2, 3, weight_var=2.0, bias_var=0.1), L.Relu(), L.Conv(2, 3), L.Erf(),
                   L.GlobalAvgPool(), L.Dense(1))
    assert gradcheck(lambda a, b: net.kernel(a, b).ntk, (img, img2))
    nodes = _leaf(2, 3, 2, seed=2)
    adjacency = torch.tensor([[[0, 1, 0], [1, 0, 1], [0, 1, 0]], [[0, 1, 1], [1, 0, 0], [1, 0, 0]]],
                             dtype=torch.float64)
    assert gradcheck(lambda a: kernels.gntk(a, adjacency=adjacency).ntk, (nodes,))
    x = _leaf(4, 3, seed=3)
    assert gradcheck(lambda a: ndk.ntk0(a, L=2, activation="erf", sigma0_sq=1.5), (x,))
    t = torch.tensor([0.0, 0.7], dtype=torch.float64)
    assert gradcheck(lambda a: ndk.two_time_kernels(a, None, t, L=2, activation="relu", sigma0_sq=1.5,
                                                    sigma_sq=1.0, T=0.3).ndk, (x,))


@pytest.mark.filterwarnings("error")  # no "converting a tensor that requires grad to a scalar" on the way
def test_limit_predictors_are_differentiable_in_the_training_inputs():
    x, x_test = _leaf(4, 3, seed=4), torch.randn(2, 3, dtype=torch.float64, generator=_gen(5))
    y = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    assert gradcheck(lambda a: ndk.ntk_limit(a, y, x_test, [0.5, 2.0], L=2, activation="erf", sigma0_sq=1.5), (x,))
    assert gradcheck(lambda a: ndk.nngp_limit(a, y, x_test, L=2, activation="relu", sigma_sq=1.5, T=0.3), (x,))


def _variances(wv=1.7, bv=0.3):
    return (torch.tensor(wv, dtype=torch.float64, requires_grad=True),
            torch.tensor(bv, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("activation", ["relu", "erf", "identity"])
def test_fc_kernels_are_differentiable_in_the_variances(activation):
    x = torch.randn(4, 3, dtype=torch.float64, generator=_gen(4))
    wv, bv = _variances()
    assert gradcheck(lambda w, b: kernels.fc(x, depth=2, activation=activation, weight_var=w, bias_var=b), (wv, bv))
    # the same numbers (to rounding) as with Python floats, with autograd following the tensors or not
    plain = kernels.fc(x, depth=2, activation=activation, weight_var=1.7, bias_var=0.3)
    with torch.no_grad():
        untracked = kernels.fc(x, depth=2, activation=activation, weight_var=wv, bias_var=bv)
    traced = kernels.fc(x, depth=2, activation=activation, weight_var=wv, bias_var=bv)
    for p, u, t in zip(plain, untracked, traced):
        assert torch.allclose(u, p, rtol=1e-14, atol=0) and torch.allclose(t.detach(), p, rtol=1e-14, atol=0)


def test_conv_and_graph_kernels_are_differentiable_in_the_variances():
    img = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=_gen(5))
    wv, bv = _variances()
    assert gradcheck(lambda w, b: kernels.cntk(img, depth=1, kernel_size=3, weight_var=w, bias_var=b).ntk, (wv, bv))
    # graphs of different sizes (padded nodes have variance 0) with identical nodes (correlation exactly 1)
    nodes = [torch.randn(3, 2, dtype=torch.float64, generator=_gen(6)),
             torch.randn(2, 2, dtype=torch.float64, generator=_gen(7))]
    adjacency = [torch.ones(3, 3, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)]

    def graph(w):
        net = L.serial(L.Dense(3, weight_var=w, bias_var=0.1), L.Relu(), L.Aggregate(), L.Dense(3, weight_var=w),
                       L.Erf(), L.GlobalSumPool(), L.Dense(1, weight_var=w))
        return net.kernel(nodes, adjacency=adjacency).ntk

    assert gradcheck(graph, (wv,))


@pytest.mark.filterwarnings("error")
def test_two_time_kernels_are_differentiable_in_the_variances():
    x = torch.randn(4, 3, dtype=torch.float64, generator=_gen(6))
    t = torch.tensor([0.0, 0.7], dtype=torch.float64)
    s0, s = _variances(1.5, 0.8)
    assert gradcheck(lambda a, b: ndk.two_time_kernels(x, None, t, L=2, activation="erf", sigma0_sq=a, sigma_sq=b,
                                                       T=0.3).ndk, (s0, s))
    assert gradcheck(lambda b: ndk.nngp_limit(x, torch.ones(4, dtype=torch.float64), x[:2], L=2, activation="relu",
                                              sigma_sq=b, T=0.3), (s,))
    plain = ndk.two_time_kernels(x, None, t, L=2, activation="erf", sigma0_sq=1.5, sigma_sq=0.8, T=0.3).ndk
    traced = ndk.two_time_kernels(x, None, t, L=2, activation="erf", sigma0_sq=s0, sigma_sq=s, T=0.3).ndk
    assert torch.allclose(traced.detach(), plain, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="mean_predictor is not differentiable"):
        ndk.mean_predictor(x, torch.ones(4, dtype=torch.float64), x, 1.0, L=1, activation="relu", sigma0_sq=s0,
                           sigma_sq=1.0, T=0.5)
    with pytest.raises(ValueError, match="sigma_sq must be finite and > 0"):
        ndk.k_gp(x, L=2, activation="relu", sigma_sq=torch.tensor(0.0))


@pytest.mark.parametrize("bad", [torch.tensor([1.0]), torch.tensor(-1.0), torch.tensor(math.nan), torch.tensor(2)])
def test_a_variance_tensor_is_checked_like_a_number(bad):
    with pytest.raises(ValueError, match="weight_var"):
        L.Dense(1, weight_var=bad)


def test_no_gradient_leaves_the_fast_path_unchanged():
    # The same numbers with and without autograd: the in-place tiled path and the out-of-place one.
    x = torch.randn(300, 20, dtype=torch.float64, generator=_gen())
    plain = kernels.fc(x, depth=3, activation="erf")
    traced = kernels.fc(x.clone().requires_grad_(True), depth=3, activation="erf")
    assert traced.ntk.requires_grad and not plain.ntk.requires_grad
    for p, t in zip(plain, traced):
        assert torch.allclose(t.detach(), p, rtol=1e-14, atol=0)
