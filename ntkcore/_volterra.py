"""Product integration for the mean-predictor equations (NDK paper Eqs. 14-15), a Volterra equation of the 2nd kind.

    f(t) = ∫₀ᵗ K(t, t′) r(t′) dt′,   r = y − f_train          (K: (n_out, P) matrices, f: (n_out,), r: (P,))

With labels of M outputs (``y`` of shape ``(P, M)``, NDK paper Eqs. 14-15 for each output) the kernel is shared and
the equations decouple column by column: ``f`` is ``(n_out, M)`` and ``r`` is ``(P, M)``, and every kernel
evaluation and every P×P implicit solve serves all M columns at once (M right-hand sides).

The two time scales of the problem separate cleanly: the residual ``r`` changes on the fast scale ``1/λ(K_NTK)``
early on, the kernel only on the slow scale ``σ²/T`` (it depends on time through ``e^{−γt}``, ``γ = T/σ²``), apart
from a ``√|t−t′|`` cusp at ``t′ = t`` (ReLU networks: diagonal input pairs, and sharp bends for nearly equal inputs).
So the two factors get different treatments:

* ``r`` is piecewise linear on the solution grid (nodes ``t_0 = 0 < t_1 < …``), which is graded to the fast scale;
  the value at the current node is implicit (a P×P solve per node), which keeps the scheme stable when a step is far
  longer than ``1/λ_max``.
* ``K(t_i, ·)`` is interpolated on its own nodes per row ``t_i``: near the diagonal (the last two solution steps,
  length δ) by a polynomial in ``s = √((t_i − t′)/δ)``, which turns the cusp into a smooth function; further back
  on panels in ``τ = t_i − t′`` that grow geometrically (ratio 4) away from the diagonal, up to a width of
  ``2/γ``, with Chebyshev-Lobatto nodes (degree 6). Panel ends sit on solution nodes.

The integral of (interpolated kernel) × (piecewise-linear r) is then exact: row ``i`` needs the kernel at
``n_i ≈ 7 + 6·(panels)`` times instead of at all ``i`` solution nodes, and the kernel is the expensive part.

The same rows also solve the problem on the grid of every second node (the "coarse" solution): same kernel nodes,
coarse hat functions. ``|fine − coarse|`` is the error estimate of :func:`ntkcore.ndk.mean_predictor`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: Kernel interpolation: Chebyshev-Lobatto degree on far panels, in s on the near field; panel growth ratio.
FAR_DEGREE = 6
NEAR_DEGREE = 6
RATIO = 4.0
#: Widest far panel, in units of the kernel's time scale ``1/γ``.
MAX_WIDTH = 2.0
#: Gauss-Legendre points per solution step: exact for the products integrated (degree 7 far, 9 near).
_GAUSS_FAR = np.polynomial.legendre.leggauss(4)
_GAUSS_NEAR = np.polynomial.legendre.leggauss(6)
_LOBATTO_FAR = -np.cos(np.pi * np.arange(FAR_DEGREE + 1) / FAR_DEGREE)  # ascending on [-1, 1]
_S_NEAR = 0.5 * (1.0 - np.cos(np.pi * np.arange(NEAR_DEGREE + 1) / NEAR_DEGREE))  # ascending on [0, 1]


def _lagrange(nodes, x):
    """Lagrange basis of ``nodes (n,)`` at points ``x (...)``: ``(..., n)``, exact (1/0) at the nodes."""
    d = x[..., None] - nodes
    out = np.ones(d.shape)
    for j in range(nodes.shape[0]):
        f = d[..., j:j + 1] / np.where(np.arange(nodes.shape[0]) == j, 1.0, nodes - nodes[j])
        f[..., j] = 1.0
        out *= f
    return out


def _gauss(a, b, rule):
    """Gauss points ``(n, m)`` and weights on the intervals ``[a_k, b_k]`` (arrays of length n)."""
    x, w = rule
    half = 0.5 * (b - a)[:, None]
    return 0.5 * (a + b)[:, None] + half * x, half * w


class _Row:
    """Kernel nodes and integration weights of row ``i``.

    taus : ``(nk,)`` lags ``t_i − t′`` of the row's nk kernel nodes. fine : ``(nk, i+1)`` weights on the fine residuals
    ``r_0..r_i``; coarse : ``(nk, i/2+1)`` on the coarse residuals (even ``i`` only, else None): the row's integral
    is ``Σ_k K(t_i, t_i − τ_k) (W @ r)_k``.
    """

    def __init__(self, t, i, gamma):
        self.i, ti = i, t[i]
        keys, taus = {}, []  # a kernel node at a solution node is shared between panels

        def node(tau, key=None):
            if key is not None and key in keys:
                return keys[key]
            taus.append(tau)
            if key is not None:
                keys[key] = len(taus) - 1
            return len(taus) - 1

        # per panel: kernel-node indices (n_int, nb), its fine steps js (n_int,), basis values times Gauss weights
        # (n_int, m, nb) and the Gauss points' times (n_int, m)
        contrib = []

        # near field: the last two steps (one coarse step), polynomial in s = sqrt((t_i - t')/delta)
        j0 = max(i - 2, 0)
        delta = ti - t[j0]
        near = [node(0.0, i)] + [node(delta * s * s) for s in _S_NEAR[1:-1]] + [node(delta, j0)]
        js = np.arange(j0, i)
        sa, sb = np.sqrt((ti - t[js + 1]) / delta), np.sqrt((ti - t[js]) / delta)
        sg, wg = _gauss(sa, sb, _GAUSS_NEAR)
        tg = ti - delta * sg * sg
        basis = _lagrange(_S_NEAR, sg) * (wg * 2.0 * delta * sg)[..., None]  # dt' = 2 delta s ds
        contrib.append((np.array(near)[None, :].repeat(len(js), 0), js, basis, tg))

        # far field: panels of whole solution steps in [0, t_{j0}], growing away from the diagonal
        hi = j0
        width_cap = MAX_WIDTH / gamma if gamma > 0 else math.inf
        while hi > 0:
            tau_hi = ti - t[hi]
            target = ti - (tau_hi + min((RATIO - 1.0) * tau_hi, width_cap))
            lo = int(np.searchsorted(t, target, side="right")) - 1
            lo = min(max(lo, 0), hi - 1)
            if lo > 0 and t[lo] < 0.25 * (t[hi] - t[lo]):
                lo = 0  # no sliver panel at t' = 0
            js = np.arange(lo, hi)
            xg, wg = _gauss(t[js], t[js + 1], _GAUSS_FAR)
            nodes_t = t[lo] + 0.5 * (t[hi] - t[lo]) * (_LOBATTO_FAR + 1.0)
            idx = np.array([node(ti - t[lo], lo)] + [node(ti - s) for s in nodes_t[1:-1]] + [node(ti - t[hi], hi)])
            basis = _lagrange(nodes_t, xg) * wg[..., None]
            contrib.append((idx[None, :].repeat(len(js), 0), js, basis, xg))
            hi = lo

        nk = len(taus)
        self.taus = np.array(taus)
        self.fine = np.zeros((nk, i + 1))
        self.coarse = np.zeros((nk, i // 2 + 1)) if i % 2 == 0 else None
        for idx, js, basis, tg in contrib:
            _add_hats(self.fine, idx, js, t[js], t[js + 1], tg, basis)  # fine hats on [t_j, t_{j+1}]
            if self.coarse is not None:  # coarse hats on [t_{2c}, t_{2c+2}] containing the fine step
                c = js // 2
                _add_hats(self.coarse, idx, c, t[2 * c], t[2 * c + 2], tg, basis)


def _add_hats(weights, idx, first, left, right, tg, basis):
    """``weights[idx, first (+1)] += Σ_m basis × (hat of the left (right) node)`` at the Gauss points ``tg``, for the
    steps ``[left, right]`` (arrays over the steps) whose left node has index ``first``."""
    theta = (tg - left[:, None]) / (right - left)[:, None]
    for which, hat in ((0, 1.0 - theta), (1, theta)):
        vals = np.einsum("nm,nmk->nk", hat, basis)
        np.add.at(weights, (idx, (first + which)[:, None].repeat(idx.shape[1], 1)), vals)


def solve(kernel, y, t, n_out, *, gamma, batch_elements):
    """Solve ``f(t) = ∫₀ᵗ K(t,t′)(y − f_train(t′)) dt′`` on the fine grid ``t`` (odd length) and on ``t[0::2]``.

    kernel(ta, tb) returns ``K(ta_b, tb_b)`` as ``(B, n_out, P)`` float64 (the first P outputs are the training
    inputs); ``y`` is ``(P,)`` or ``(P, M)`` (M outputs sharing the kernel: each kernel block is evaluated once for all
    of them); ``gamma = T/σ²`` sets the widest kernel panel (``MAX_WIDTH/γ``). Returns ``(f_fine, f_coarse, pairs)``:
    ``f_fine (G_f, n_out)`` and ``f_coarse (G_c, n_out)``, with a trailing axis M for ``y (P, M)``; ``pairs`` the
    number of time pairs at which the kernel was evaluated.
    """
    vector = y.ndim == 1
    y = y[:, None] if vector else y
    P, M = y.shape
    G = t.shape[0]
    tn = t.detach().cpu().numpy()
    opts = dict(dtype=t.dtype, device=t.device)
    eye = torch.eye(P, **opts)
    out_f = torch.zeros(G, n_out, M, **opts)
    out_c = torch.zeros((G + 1) // 2, n_out, M, **opts)
    res_f = torch.zeros(G, P, M, **opts)
    res_c = torch.zeros((G + 1) // 2, P, M, **opts)
    res_f[0] = res_c[0] = y
    i, pairs = 1, 0
    while i < G:
        rows = [_Row(tn, i, gamma)]
        total = rows[0].taus.shape[0]
        while i + len(rows) < G and total * n_out * P < batch_elements:
            rows.append(_Row(tn, i + len(rows), gamma))
            total += rows[-1].taus.shape[0]
        ta = torch.cat([torch.full((r.taus.shape[0],), float(tn[r.i]), **opts) for r in rows])
        tb = ta - torch.as_tensor(np.concatenate([r.taus for r in rows]), **opts)
        kern = kernel(ta, tb.clamp_min(0.0))
        pairs += ta.shape[0]
        start = 0
        for r in rows:
            k = kern[start:start + r.taus.shape[0]]
            start += r.taus.shape[0]
            systems = [(torch.as_tensor(r.fine, **opts), res_f, out_f, r.i)]
            if r.coarse is not None:
                systems.append((torch.as_tensor(r.coarse, **opts), res_c, out_c, r.i // 2))
            _step(k, systems, y, eye)
        i += len(rows)
    if vector:
        out_f, out_c = out_f[..., 0], out_c[..., 0]
    return out_f, out_c, pairs


def _step(k, systems, y, eye):
    """Implicit step at the current node of one or two grids (the kernel block ``k (nk, n_out, P)`` at the row's nk
    kernel nodes is read once for both, and for all M outputs). Each system is ``(w (nk, n+1), res (·, P, M),
    out (·, n_out, M), n)``: ``f_n = h + A r_n`` with ``h = Σ_k K_k (w[:, :n] @ r)_k``, ``A = Σ_k w[k, n] K_k`` and
    ``r_n = y − f_n[:P]``, a P×P solve with M right-hand sides; ``y`` is ``(P, M)``."""
    P, M = y.shape
    nk, n_out = k.shape[0], k.shape[1]
    hist = torch.stack([(w[:, :n] @ res[:n].reshape(n, P * M)).reshape(nk, P, M) for w, res, _, n in systems], -1)
    S = hist.shape[-1]
    h = torch.bmm(k, hist.reshape(nk, P, M * S)).sum(0).reshape(n_out, M, S)
    a = (torch.stack([w[:, n] for w, _, _, n in systems]) @ k.reshape(nk, -1)).reshape(-1, n_out, P)  # (S, n_out, P)
    for s, (_, res, out, n) in enumerate(systems):
        r = torch.linalg.solve(eye + a[s, :P], y - h[:P, :, s])
        res[n] = r
        out[n] = h[:, :, s] + a[s] @ r
