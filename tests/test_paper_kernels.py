"""Our kernels against the papers' own recursions, recomputed independently in plain numpy, up to the stated constant
factors (ntkcore.kernels' docstrings and the book appendix "Closed-form kernels and conventions"):

* the CNTK of Arora et al. 2019 (the recursion of their CuPy code: patch sums without normalization, the ReLU step with
  c_σ/9, a sum or mean over positions at the end): theirs = ours · C/2 with GAP, ours · C·H·W/2 vanilla;
* the GNTK of Du et al. 2019 (their numpy code: kron(A, A′) on vectorized covariances, c_σ = 2, the final × 2,
  jumping knowledge over the input and every block): theirs = ours · C;
* the fully connected NTK of Arora et al. 2020's UCI code (c_σ = 1, the first ``fix`` layers not trained):
  theirs = ours · d, which checks ``trainable=False``;
* the bridge between Part I's parameterization (σw in the forward pass) and Part II's (variance in the weights):
  ``fc(weight_var=s).ntk = s · ndk.ntk0(sigma0_sq=s)`` and ``fc(weight_var=s).nngp = s · ndk.k_gp(sigma_sq=s)``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkcore import kernels, ndk


def _relu_moments(s, l1, l2, c_sigma, same=None):
    """c_σ E[relu relu] and c_σ E[relu′ relu′] for covariance ``s`` and standard deviations ``l1``, ``l2``.

    ``same`` marks the entries whose two sides are the same input at the same position: their correlation is set
    to exactly 1 (the papers' codes compute it through arccos(1 − ε), which resolves the angle only to ~√eps).
    """
    c = np.clip(s / (l1 * l2), -1.0, 1.0)
    if same is not None:
        c = np.where(same, 1.0, c)
    theta = np.arccos(c)
    return (c * (math.pi - theta) + np.sqrt(1.0 - c * c)) * l1 * l2 * c_sigma / (2 * math.pi), \
        (math.pi - theta) * c_sigma / (2 * math.pi)


# ---------------------------------------------------------------------------------------------------------------
# CNTK (Arora et al. 2019)
# ---------------------------------------------------------------------------------------------------------------

def _conv3(s):
    """Σ over a 3×3 patch along the diagonal of a pair of positions, zero outside: t[a,b,c,e] = Σ s[a+i,b+j,c+i,e+j]."""
    h, w = s.shape[:2]
    p = np.zeros((h + 2, w + 2, h + 2, w + 2))
    p[1:-1, 1:-1, 1:-1, 1:-1] = s
    return sum(p[i:i + h, j:j + w, i:i + h, j:j + w] for i in range(3) for j in range(3))


def _same_positions(h, w):
    return np.eye(h * w, dtype=bool).reshape(h, w, h, w)


def _arora_cntk_pair(x, z, depth, gap, fix, lx, lz, same):
    """Their ``xz``: one kernel value; ``depth`` counts the readout (conv layers = depth − 1)."""
    c, h, w = x.shape
    s = _conv3(np.einsum("chw,cij->hwij", x, z))
    t = np.zeros_like(s) if fix else s.copy()
    for layer in range(1, depth):
        bs, ds = _relu_moments(s, lx[layer][:, :, None, None], lz[layer][None, None, :, :], 2.0 / 9.0,
                               _same_positions(h, w) if same else None)
        t, s = t * ds + bs, bs
        if layer < depth - 1:
            s, t = _conv3(s), _conv3(t)
    if fix:
        t = t - s
    return t.mean() if gap else np.trace(t.reshape(h * w, h * w))


def _arora_cntk_diag(x, depth):
    """Their ``xx``: the standard deviations √Σ(x, x)[p, p] entering every ReLU step."""
    h, w = x.shape[1:]
    s = _conv3(np.einsum("chw,cij->hwij", x, x))
    out = [None]
    for layer in range(1, depth):
        ell = np.sqrt(np.diagonal(s.reshape(h * w, h * w))).reshape(h, w)
        out.append(ell)
        s = _relu_moments(s, ell[:, :, None, None], ell[None, None, :, :], 2.0 / 9.0, _same_positions(h, w))[0]
        if layer < depth - 1:
            s = _conv3(s)
    return out


@pytest.mark.parametrize("gap", [True, False])
@pytest.mark.parametrize("fix", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
def test_cntk_matches_arora_et_al_recursion(gap, fix, depth):
    g = torch.Generator().manual_seed(depth + 2 * gap + 4 * fix)
    x = torch.randn(3, 2, 5, 4, generator=g, dtype=torch.float64)
    c, h, w = x.shape[1:]
    ours = kernels.cntk(x, depth=depth, gap=gap, fix=fix).ntk.numpy()
    diags = [_arora_cntk_diag(xi, depth + 1) for xi in x.numpy()]
    xs = x.numpy()
    theirs = np.array([[_arora_cntk_pair(xs[i], xs[j], depth + 1, gap, fix, diags[i], diags[j], i == j)
                        for j in range(3)] for i in range(3)])
    factor = c / 2 if gap else c * h * w / 2
    np.testing.assert_allclose(ours * factor, theirs, rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# GNTK (Du et al. 2019)
# ---------------------------------------------------------------------------------------------------------------

def _du_aggregate(s, a1, a2, c1, c2):
    return (np.kron(a1, a2) @ s.reshape(-1)).reshape(a1.shape[0], a2.shape[0]) * np.outer(c1, c2)


def _du_gntk(x1, a1, x2, a2, n_blocks, n_mlp, jk, degree, same):
    """Their ``diag`` and ``gntk`` for one pair of graphs (their num_layers = n_blocks + 1)."""
    def scale(a):
        return 1.0 / a.sum(1) if degree else np.ones(a.shape[0])

    def diagonals(x, a):
        s = _du_aggregate(x @ x.T, a, a, scale(a), scale(a))
        out = []
        for block in range(n_blocks):
            for _ in range(n_mlp):
                d = np.sqrt(np.diag(s))
                out.append(d)
                s = _relu_moments(s, d[:, None], d[None, :], 2.0, np.eye(len(d), dtype=bool))[0]
            if block < n_blocks - 1:
                s = _du_aggregate(s, a, a, scale(a), scale(a))
        return out

    d1, d2 = diagonals(x1, a1), diagonals(x2, a2)
    sigma = x1 @ x2.T
    jump = sigma.copy()
    sigma = _du_aggregate(sigma, a1, a2, scale(a1), scale(a2))
    ntk = sigma.copy()
    for block in range(n_blocks):
        for r in range(n_mlp):
            i = block * n_mlp + r
            sigma, dot = _relu_moments(sigma, d1[i][:, None], d2[i][None, :], 2.0,
                                       np.eye(len(d1[i]), dtype=bool) if same else None)
            ntk = ntk * dot + sigma
        jump = jump + ntk
        if block < n_blocks - 1:
            sigma = _du_aggregate(sigma, a1, a2, scale(a1), scale(a2))
            ntk = _du_aggregate(ntk, a1, a2, scale(a1), scale(a2))
    return 2 * (jump.sum() if jk else ntk.sum())


@pytest.mark.parametrize("degree", [False, True])
@pytest.mark.parametrize("jk", [False, True])
def test_gntk_matches_du_et_al_recursion(degree, jk):
    rng = np.random.default_rng(7 + degree + 2 * jk)
    graphs = []
    for n in (4, 6, 5):  # graphs of different sizes, A + I as in their loader
        # Continuous features, and no two nodes with the same closed neighbourhood: otherwise two distinct nodes
        # have correlation exactly 1, which both codes resolve only to ~√eps through arccos.
        a = np.eye(n)
        while len({tuple(row) for row in a}) < n or (a.sum(1) == 1).all():
            adj = np.triu((rng.uniform(size=(n, n)) < 0.5).astype(float), 1)
            a = adj + adj.T + np.eye(n)
        graphs.append((rng.normal(size=(n, 3)), a))
    xs, adjs = [torch.as_tensor(x) for x, _ in graphs], [torch.as_tensor(a) for _, a in graphs]
    ours = kernels.gntk(xs, adjacency=adjs, n_blocks=2, n_mlp_layers=2, normalize="degree" if degree else None,
                        jumping_knowledge=jk).ntk.numpy()
    theirs = np.array([[_du_gntk(*graphs[i], *graphs[j], 2, 2, jk, degree, i == j) for j in range(3)]
                       for i in range(3)])
    np.testing.assert_allclose(ours * 3, theirs, rtol=1e-10)  # C = 3 node features


# ---------------------------------------------------------------------------------------------------------------
# Fully connected NTK with fixed layers (Arora et al. 2020, UCI)
# ---------------------------------------------------------------------------------------------------------------

def _arora_uci(x, d_max):
    """Their ``kernel_value_batch``: K[dep][fix], depth dep + 1, the first ``fix`` layers not trained, c_σ = 1."""
    k = np.zeros((d_max, d_max, x.shape[0], x.shape[0]))
    for fix in range(d_max):
        s = x @ x.T
        h = np.zeros_like(s)
        for dep in range(d_max):
            if fix <= dep:
                h = h + s
            k[dep, fix] = h
            ell = np.sqrt(np.diag(s))
            s, dot = _relu_moments(s, ell[:, None], ell[None, :], 1.0, np.eye(len(ell), dtype=bool))
            h = h * dot
    return k


def test_fixed_layers_match_arora_et_al_uci_recursion():
    x = np.random.default_rng(3).normal(size=(6, 4))
    theirs = _arora_uci(x, 4)
    for dep in range(4):
        for fix in range(dep + 1):
            net = kernels.fc_network(dep, weight_var=1.0, bias_var=0.0, trainable_layers=range(fix, dep + 1))
            ours = net.kernel(torch.as_tensor(x), get="ntk").ntk.numpy()
            np.testing.assert_allclose(ours * x.shape[1], theirs[dep, fix], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# Part I and Part II parameterizations
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "erf", "identity"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_part_one_and_part_two_kernels_are_the_same_up_to_the_weight_variance(activation, depth):
    """With the variance s in the forward pass (Part I) every layer's gradient carries a factor s that the NDK
    parameterization (variance in the weights) does not, except at the readout: fc = s · ntk0, and fc's NNGP, which
    includes the readout's variance, is s · K_GP. Both share one recursion and an exact diagonal, so they agree to
    rounding (a duplicated input included)."""
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(depth), dtype=torch.float64)
    x[6] = x[2]
    for s in (0.5, 2.0):
        fc = kernels.fc(x, depth=depth, activation=activation, weight_var=s)
        ntk0 = ndk.ntk0(x, L=depth, activation=activation, sigma0_sq=s)
        gp = ndk.k_gp(x, L=depth, activation=activation, sigma_sq=s)
        torch.testing.assert_close(fc.ntk, s * ntk0, rtol=1e-13, atol=1e-15 * float(fc.ntk.abs().max()))
        torch.testing.assert_close(fc.nngp, s * gp, rtol=1e-13, atol=1e-15 * float(fc.nngp.abs().max()))
