"""Tests of ntkcore.kernels: neural-tangents reference values, closed forms against quadrature, kernel properties,
tiling, the lecture's two-layer kernels, and bad input."""
from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcore import activations, kernels, layers as L
from ntkcore.device import available_devices

DEVICES = available_devices()
REFERENCE = pathlib.Path(__file__).parent / "data" / "nt_reference.npz"


def _points(n, d, seed, device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# neural-tangents reference (tests/data/make_nt_reference.py)
# ---------------------------------------------------------------------------------------------------------------

def _reference_cases():
    with np.load(REFERENCE) as ref:
        keys = sorted({k.rsplit("_", 2)[0] for k in ref.files if k not in ("x1", "x2")})
    return keys


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", _reference_cases())
def test_matches_neural_tangents(case, device):
    ref = np.load(REFERENCE)
    act, depth, wv, bv = case.split("_")
    kw = dict(depth=int(depth[1:]), activation=act, weight_var=float(wv[1:]), bias_var=float(bv[1:]))
    x1 = torch.as_tensor(ref["x1"], device=device)
    x2 = torch.as_tensor(ref["x2"], device=device)
    for tag, k in (("same", kernels.fc(x1, **kw)), ("cross", kernels.fc(x1, x2, **kw))):
        for kind in ("nngp", "ntk"):
            expected = torch.as_tensor(ref[f"{case}_{kind}_{tag}"], device=device)
            got = getattr(k, kind)
            assert got.dtype == torch.float64 and got.device.type == torch.device(device).type
            # 1e-7 relative; entries that are exactly 0 (ReLU of antiparallel inputs) get rounding slack only
            torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-13 * float(expected.abs().max()))


# ---------------------------------------------------------------------------------------------------------------
# Closed forms against quadrature
# ---------------------------------------------------------------------------------------------------------------

_CALLABLES = {"relu": torch.relu, "erf": torch.erf, "identity": lambda z: z}


@settings(max_examples=25, deadline=None)
@given(q11=st.floats(0.01, 10.0), q22=st.floats(0.01, 10.0), cos=st.floats(-1.0, 1.0),
       name=st.sampled_from(sorted(_CALLABLES)))
def test_quadrature_matches_closed_forms(q11, q22, cos, name):
    q11, q22 = torch.tensor([q11], dtype=torch.float64), torch.tensor([q22], dtype=torch.float64)
    q12 = cos * (q11 * q22).sqrt()
    e_phi, e_dphi = kernels.gaussian_expectations(_CALLABLES[name], q11, q22, q12)
    k, kdot = activations.get(name).moments(q11, q22, q12)
    assert abs(float(e_phi - k)) <= 1e-8 * max(1.0, float(k.abs()))
    assert abs(float(e_dphi - kdot)) <= 1e-8


def test_quadrature_relu_kink_and_unknown_activation():
    """ReLU's kink sits on the angle splits: exact to rounding. A function without closed form (tanh) checked by
    Monte Carlo with a 5-sigma tolerance."""
    q = torch.tensor([0.7, 2.0, 1.3], dtype=torch.float64)
    q12 = torch.tensor([0.7, -1.9, 0.4], dtype=torch.float64)
    e, ed = kernels.gaussian_expectations(torch.relu, q, q.flip(0), q12 * (q * q.flip(0)).sqrt() / q.max())
    assert torch.isfinite(e).all() and torch.isfinite(ed).all()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 400_000, generator=g, dtype=torch.float64)
    q11, q22, c = 1.5, 0.8, 0.6
    u = math.sqrt(q11) * z[0]
    v = math.sqrt(q22) * (c * z[0] + math.sqrt(1 - c * c) * z[1])
    for fn, dfn in ((torch.tanh, lambda s: 1 - torch.tanh(s) ** 2),):
        est, dest = kernels.gaussian_expectations(fn, torch.tensor(q11), torch.tensor(q22),
                                                  torch.tensor(c * math.sqrt(q11 * q22)))
        for value, sample in ((est, fn(u) * fn(v)), (dest, dfn(u) * dfn(v))):
            assert abs(float(value) - float(sample.mean())) <= 5 * float(sample.std()) / math.sqrt(sample.numel())


@pytest.mark.parametrize("name", sorted(_CALLABLES))
def test_callable_activation_matches_named(name):
    x = _points(6, 4, 0)
    for bias in (0.0, 0.3):
        named = kernels.fc(x, depth=2, activation=name, bias_var=bias)
        numeric = kernels.fc(x, depth=2, activation=_CALLABLES[name], bias_var=bias)
        for a, b in zip(named, numeric):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------------

_setups = st.fixed_dictionaries({
    "n": st.integers(1, 7), "d": st.integers(1, 5), "seed": st.integers(0, 2**16),
    "depth": st.integers(0, 3), "activation": st.sampled_from(kernels.ACTIVATIONS),
    "weight_var": st.floats(0.5, 3.0), "bias_var": st.sampled_from([0.0, 0.2, 1.0]),
})


@settings(max_examples=40, deadline=None)
@given(s=_setups)
def test_symmetric_psd_and_equal_to_explicit_call(s):
    # d ≥ 2: collinear inputs (all of them when d = 1) put cos θ = ±1 off the diagonal, where arccos resolves θ
    # only to ~√eps, and the rank-deficient exact kernel then shows eigenvalues of -1e-9 relative
    x = _points(s["n"], max(s["d"], 2), s["seed"])
    kw = {k: s[k] for k in ("depth", "activation", "weight_var", "bias_var")}
    sym = kernels.fc(x, **kw)
    explicit = kernels.fc(x, x, **kw)
    for k, e in zip(sym, explicit):
        torch.testing.assert_close(k, k.T, rtol=0, atol=0)  # mirrored exactly
        # off the exact diagonal, arccos near cos θ = ±1 resolves θ only to ~√eps (collinear inputs when d = 1)
        torch.testing.assert_close(k, e, rtol=1e-6, atol=1e-7 * float(e.abs().max()))
        lam = torch.linalg.eigvalsh(k)
        assert float(lam[0]) >= -1e-10 * float(lam[-1].abs())


@settings(max_examples=30, deadline=None)
@given(s=_setups, c=st.floats(0.1, 10.0))
def test_relu_homogeneity(s, c):
    """Bias-free ReLU and identity networks: K¹ scales by c², E[φφ] is 2-homogeneous and K̇ depends on the angle
    only, so NNGP and NTK both scale by c² when the inputs scale by c."""
    if s["activation"] == "erf":
        s["activation"] = "relu"
    x = _points(s["n"], s["d"], s["seed"])
    kw = {k: s[k] for k in ("depth", "activation", "weight_var")}
    base, scaled = kernels.fc(x, **kw), kernels.fc(c * x, **kw)
    for a, b in zip(base, scaled):
        # arccos near cos θ = ±1 (collinear inputs when d = 1) resolves θ only to ~√eps
        torch.testing.assert_close(b, c * c * a, rtol=1e-9, atol=1e-7 * c * c * float(a.abs().max()))


def test_diagonal_is_exact():
    """On the diagonal of a symmetric call the angle is 0 exactly: with σw² = 2 and no bias, ReLU keeps the
    variance, NNGP(x, x) = 2|x|²/d and NTK(x, x) = (L+1) NNGP(x, x)."""
    x = _points(9, 5, 3)
    q = 2 * (x * x).sum(1) / 5
    for depth in range(4):
        k = kernels.fc(x, depth=depth)
        torch.testing.assert_close(k.nngp.diagonal(), q, rtol=1e-14, atol=0)
        torch.testing.assert_close(k.ntk.diagonal(), (depth + 1) * q, rtol=1e-14, atol=0)


def test_zero_input_gives_zero_kernel():
    x = _points(4, 3, 5)
    x[2] = 0
    k = kernels.fc(x, depth=2)
    assert torch.isfinite(k.ntk).all() and torch.isfinite(k.nngp).all()
    assert float(k.ntk[2].abs().max()) == 0.0 and float(k.nngp[:, 2].abs().max()) == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", ["relu", "erf", torch.tanh])
def test_tiled_equals_untiled(device, activation):
    x1, x2 = _points(11, 4, 0, device), _points(7, 4, 1, device)
    kw = dict(depth=2, activation=activation, bias_var=0.1, quadrature_degree=12)
    for args in ((x1,), (x1, x2)):
        whole = kernels.fc(*args, block_size=64, **kw)
        for block in (1, 3, 5):
            tiled = kernels.fc(*args, block_size=block, **kw)
            for a, b in zip(whole, tiled):
                torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    # a memory bound small enough to force tiny panels, and a wide input that spans several column tiles
    wide = _points(300, 3, 2, device)
    torch.testing.assert_close(kernels.fc(wide, depth=1, max_memory=20_000).ntk,
                               kernels.fc(wide, depth=1, block_size=300).ntk, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_follow_input_device_and_dtype(device):
    x32 = _points(5, 3, 0, device, torch.float32)
    k = kernels.fc(x32, depth=1)
    assert k.ntk.dtype == torch.float32 and k.ntk.device.type == torch.device(device).type
    cross = kernels.fc(x32, x32.double().cpu().numpy(), depth=1)  # numpy x2 follows x1
    assert cross.ntk.dtype == torch.float32 and cross.ntk.device.type == torch.device(device).type
    k64 = kernels.fc(x32.cpu().double().numpy(), depth=1)
    assert k64.ntk.dtype == torch.float64
    torch.testing.assert_close(k.ntk.cpu().double(), k64.ntk.cpu(), rtol=1e-5, atol=1e-6)


def test_get_one_kernel():
    x = _points(4, 3, 0)
    both = kernels.fc(x, depth=2)
    only = kernels.fc(x, depth=2, get="ntk")
    assert only.nngp is None
    torch.testing.assert_close(only.ntk, both.ntk, rtol=0, atol=0)
    assert kernels.fc(x, depth=2, get=("nngp",)).ntk is None


# ---------------------------------------------------------------------------------------------------------------
# The lecture's two-layer kernels
# ---------------------------------------------------------------------------------------------------------------

def _unit(n, d, seed):
    x = _points(n, d, seed)
    return x / x.norm(dim=1, keepdim=True)


def test_two_layer_limit_relu_formula():
    x = _unit(6, 4, 0)
    gram = (x @ x.T).clamp(-1, 1)
    expected = gram * (math.pi - torch.arccos(gram)) / (2 * math.pi) / 3
    expected.diagonal().copy_(torch.full((6,), 0.5 / 3, dtype=torch.float64))
    torch.testing.assert_close(kernels.two_layer_limit(x), expected, rtol=1e-7, atol=1e-15)
    # general norms: the expectation depends on the angle only
    scale = torch.linspace(0.5, 3, 6, dtype=torch.float64)[:, None]
    torch.testing.assert_close(kernels.two_layer_limit(scale * x, a_second_moment=1.0),
                               3 * expected * (scale * scale.T), rtol=1e-12, atol=1e-15)
    # the kernel row k(x, X) is the same function with x2
    torch.testing.assert_close(kernels.two_layer_limit(x[:2], x), kernels.two_layer_limit(x)[:2], rtol=1e-6, atol=0)


@pytest.mark.parametrize("activation", ["erf", "identity"])
def test_two_layer_limit_closed_forms_match_quadrature(activation):
    x = _points(5, 3, 1)
    torch.testing.assert_close(kernels.two_layer_limit(x, activation=_CALLABLES[activation]),
                               kernels.two_layer_limit(x, activation=activation), rtol=1e-7, atol=1e-12)


def test_two_layer_empirical_is_the_ntk_of_w():
    """H(0) equals the Gram matrix of the gradients of f = m^(−1/2) Σ a_r σ(w_rᵀx) with respect to W."""
    g = torch.Generator().manual_seed(0)
    x, m = _unit(5, 3, 2), 7
    w = torch.randn(m, 3, generator=g, dtype=torch.float64)
    a = torch.rand(m, generator=g, dtype=torch.float64) * 2 - 1
    for act, fn in (("relu", torch.relu), ("erf", torch.erf), (torch.tanh, torch.tanh)):
        jac = torch.func.jacrev(lambda w_: (fn(x @ w_.T) * a).sum(1) / math.sqrt(m))(w).reshape(5, -1)
        torch.testing.assert_close(kernels.two_layer_empirical(x, w=w, a=a, activation=act), jac @ jac.T,
                                   rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(kernels.two_layer_empirical(x[:2], x, w=w, a=a, activation=act),
                                   (jac @ jac.T)[:2], rtol=1e-12, atol=1e-14)


def test_two_layer_empirical_concentrates_on_limit():
    """Lemma 2 of the lecture: H(0) → H* entrywise; each entry is a mean of m i.i.d. terms, checked within 5
    standard errors computed from the terms themselves."""
    g = torch.Generator().manual_seed(4)
    x, m = _unit(4, 3, 3), 20_000
    w = torch.randn(m, 3, generator=g, dtype=torch.float64)
    a = torch.rand(m, generator=g, dtype=torch.float64) * 2 - 1
    h0 = kernels.two_layer_empirical(x, w=w, a=a)
    terms = (x @ x.T)[:, :, None] * ((x @ w.T > 0).double()[:, None, :] * (x @ w.T > 0).double()[None, :, :]) * a**2
    stderr = terms.std(dim=2) / math.sqrt(m)
    assert bool(((h0 - kernels.two_layer_limit(x)).abs() <= 5 * stderr + 1e-15).all())


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, x2, match", [
    ({"depth": -1}, None, "depth"),
    ({"depth": 1.5}, None, "depth"),
    ({"depth": 1, "weight_var": -1.0}, None, "weight_var"),
    ({"depth": 1, "bias_var": -0.1}, None, "bias_var"),
    ({"depth": 1, "activation": "sigmoid"}, None, "activation.*'relu'"),
    ({"depth": 1, "activation": 3}, None, "activation"),
    ({"depth": 1, "get": "both"}, None, "get"),
    ({"depth": 1, "block_size": 0}, None, "block_size"),
    ({"depth": 1}, np.ones((2, 4)), "x2.*feature dimension"),
    ({"depth": 1}, np.array([[1.0, np.nan, 0.0]]), "x2.*NaN"),
])
def test_bad_input(kwargs, x2, match):
    with pytest.raises(ValueError, match=match):
        kernels.fc(np.ones((3, 3)), x2, **kwargs)


def test_bad_x1():
    with pytest.raises(ValueError, match="x1.*NaN or inf"):
        kernels.fc(np.array([[1.0, np.inf]]), depth=1)
    with pytest.raises(ValueError, match="x1.*dimension"):
        kernels.fc(np.ones(3), depth=1)
    with pytest.raises(ValueError, match="activation"):
        kernels.fc(np.ones((2, 2)), depth=1, activation=lambda z: z.sum())


def test_bad_two_layer_input():
    x = np.ones((3, 2))
    with pytest.raises(ValueError, match="w must be"):
        kernels.two_layer_empirical(x, w=np.ones((4, 3)), a=np.ones(4))
    with pytest.raises(ValueError, match="a must have"):
        kernels.two_layer_empirical(x, w=np.ones((4, 2)), a=np.ones(3))
    with pytest.raises(ValueError, match="activation"):
        kernels.two_layer_empirical(x, w=np.ones((4, 2)), a=np.ones(4), activation="sigmoid")
    with pytest.raises(ValueError, match="a_second_moment"):
        kernels.two_layer_limit(x, a_second_moment=-1)


def test_zero_dimensional_features_and_zero_width_are_value_errors():
    """Not a ZeroDivisionError (x·x′/d with d = 0) and not a NaN kernel (1/m with m = 0)."""
    with pytest.raises(ValueError, match=r"x1 must have a feature dimension of at least 1 .*\(3, 0\)"):
        kernels.fc(np.ones((3, 0)), depth=1)
    with pytest.raises(ValueError, match="x1 must have a feature dimension of at least 1"):
        kernels.two_layer_limit(np.ones((3, 0)))
    with pytest.raises(ValueError, match=r"w must be \(m, d\) with m >= 1"):
        kernels.two_layer_empirical(np.ones((3, 2)), w=np.ones((0, 2)), a=np.ones(0))


def test_depths_are_bounded():
    x = np.ones((2, 2))
    with pytest.raises(ValueError, match="depth must be <= 1000"):
        kernels.fc(x, depth=10**7)
    with pytest.raises(ValueError, match="depth must be <= 1000"):
        kernels.cntk(np.ones((1, 1, 3, 3)), depth=10**6)
    with pytest.raises(ValueError, match="n_blocks must be <= 1000"):
        kernels.gntk_network(10**6, 1)
    with pytest.raises(ValueError, match="n_mlp_layers must be <= 1000"):
        kernels.gntk_network(1, 10**6)
    assert bool(torch.isfinite(kernels.fc(_points(3, 2, 0), depth=1000).ntk).all())  # the largest depth runs


def test_quadrature_degree_is_accurate_up_to_its_cap_and_refused_beyond():
    """The radial rule overflows from degree 353 on (all-NaN kernels before the cap existed). At the cap, the
    kernels of φ = sin(a·) match their closed forms: E[sin(au) sin(av)] = e^{−a²(q11+q22)/2} sinh(a² q12) and
    E[φ′(u)φ′(v)] = a² e^{−a²(q11+q22)/2} cosh(a² q12)."""
    a, x = 3.0, _points(3, 4, 5) / 2
    got = kernels.fc(x, depth=1, activation=lambda z: torch.sin(a * z), weight_var=1.0,
                     quadrature_degree=kernels.MAX_QUADRATURE_DEGREE)
    q = x @ x.T / x.shape[1]
    damp = torch.exp(-a * a * (q.diagonal()[:, None] + q.diagonal()[None, :]) / 2)
    nngp = damp * torch.sinh(a * a * q)
    torch.testing.assert_close(got.nngp, nngp, rtol=0, atol=1e-13)
    torch.testing.assert_close(got.ntk, nngp + a * a * damp * torch.cosh(a * a * q) * q, rtol=0, atol=1e-13)
    for degree in (kernels.MAX_QUADRATURE_DEGREE + 1, 10**5):
        with pytest.raises(ValueError, match="quadrature_degree must be <= 352"):
            kernels.fc(x, depth=2, activation=torch.relu, quadrature_degree=degree)
    with pytest.raises(ValueError, match="quadrature_degree must be <= 352"):
        kernels.two_layer_limit(x, activation="tanh", quadrature_degree=353)
    with pytest.raises(ValueError, match="quadrature_degree must be <= 352"):  # the layer, closed form or not
        L.Elementwise(torch.tanh, quadrature_degree=353)
    with pytest.raises(ValueError, match="degree must be <= 352"):
        kernels.gaussian_expectations(torch.tanh, 1.0, 1.0, 0.5, degree=353)


@pytest.mark.parametrize("q11, q22, q12, match", [
    (-1.0, 1.0, 0.0, "q11 must hold variances >= 0"),
    (1.0, -1e-300, 0.0, "q22 must hold variances >= 0"),
    (1.0, 4.0, 2.5, r"q12 must satisfy q12² <= q11 q22"),
    (1.0, 1.0, math.nan, "q12"),
    ([1.0, 1.0], [1.0, 1.0, 1.0], 0.0, "broadcastable shapes"),
    ("1", 1.0, 0.5, "q11 must be an array of real numbers"),
])
def test_gaussian_expectations_takes_covariance_matrices_only(q11, q22, q12, match):
    with pytest.raises(ValueError, match=match):
        kernels.gaussian_expectations(torch.tanh, q11, q22, q12)


def test_gaussian_expectations_accepts_names_zero_variances_and_the_boundary():
    # E[relu(u) relu(v)] for perfectly correlated unit variances is E[relu(u)²] = 1/2; a zero variance gives
    # E[φ(0) φ(v)] = 0 for relu; the names of the registry work as their functions do.
    e, ed = kernels.gaussian_expectations("relu", np.array([1.0, 0.0]), 1.0, np.array([1.0, 0.0]))
    torch.testing.assert_close(e, torch.tensor([0.5, 0.0], dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(ed, torch.tensor([0.5, 0.0], dtype=torch.float64), rtol=0, atol=1e-14)


def test_empty_inputs_filters_and_overflow():
    x = _points(4, 3, 0)
    for get in ("nngp", "ntk"):  # no pairs: an empty kernel, on every path
        assert getattr(kernels.fc(x[:0], x, depth=2, get=get), get).shape == (0, 4)
        assert getattr(kernels.cntk(np.ones((0, 1, 4, 4)), np.ones((2, 1, 4, 4)), depth=1, get=get), get).shape \
            == (0, 2)
    with pytest.raises(ValueError, match=r"kernel_size at most 2·size \+ 1"):  # was: a loop of 10**9 passes
        kernels.cntk(np.ones((2, 1, 4, 4)), depth=1, kernel_size=10**9)
    with pytest.raises(ValueError, match="kernel_size must be <= 9223372036854775807"):  # was: OverflowError
        kernels.cntk(np.ones((2, 1, 4, 4)), depth=1, kernel_size=10**30)
    with pytest.raises(ValueError, match="rescale x1, x2, w or a"):  # was: a kernel of inf
        kernels.two_layer_empirical(x * 1e155, w=np.ones((7, 3)), a=np.ones(7))
    with pytest.raises(ValueError, match=r"Rescale x1 \(and x2\) .* or lower weight_var"):
        kernels.fc(x * 1e200, depth=2)


def test_gaussian_expectations_at_perfect_correlation_scale_exactly():
    # q11 = q22 = q12: a rounded correlation 1 − ε would become an angle √(2ε), and E[relu′ relu′] = (π − θ)/2π
    # would be 2e-9 off
    q = torch.tensor([0.3, 1.7, 2.9, 0.1], dtype=torch.float64)
    for scale in (1.0, 1e10, 1e-10):
        e, e_dot = kernels.gaussian_expectations(torch.relu, q * scale, q * scale, q * scale)
        torch.testing.assert_close(e / scale, q / 2, rtol=1e-14, atol=0)
        torch.testing.assert_close(e_dot, torch.full_like(q, 0.5), rtol=1e-14, atol=0)  # E[relu′(u)²] = 1/2


def test_cntk_network_with_several_outputs_has_the_same_kernel_and_a_classifier_module():
    """``out_features`` changes the readout's width, not the kernel; the module gives one output per class."""
    x = torch.randn(3, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for gap in (False, True):
        one = kernels.cntk_network(2, gap=gap).kernel(x)
        ten = kernels.cntk_network(2, gap=gap, out_features=10).kernel(x)
        assert torch.allclose(one.ntk, ten.ntk, rtol=1e-14) and torch.allclose(one.nngp, ten.nngp, rtol=1e-14)
        assert torch.allclose(ten.ntk, kernels.cntk(x, depth=2, gap=gap).ntk, rtol=1e-14)
        net = kernels.cntk_network(2, gap=gap, channels=4, out_features=10).module((1, 5, 5), seed=0)
        assert net(x).shape == (3, 10)
    with pytest.raises(ValueError, match="out_features"):
        kernels.cntk_network(1, out_features=0)
