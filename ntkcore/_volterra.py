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
``n_i ≈ 7 + 6·(panels)`` times instead of at all ``i`` solution nodes, and the kernel is the expensive part. The
weights of a row on the residual nodes are kept by panel (each kernel node weighs only the nodes of its panel; one
batched product over the panels), so that the history sum ``Σ_j W_kj r_j`` costs about 7 times the number of nodes
read, not that times the number of kernel nodes.

The same rows also solve the problem on the grid of every second node (the "coarse" solution): same kernel nodes,
coarse hat functions. ``|fine − coarse|`` is the error estimate of :func:`ntkcore.ndk.mean_predictor`.

Far-field truncation
--------------------
Without it, the panels of row ``i`` tile all of ``[0, t_i]`` and are at most ``2/γ`` wide, so a row costs
``O(γ t_i)`` kernel pairs and ``O(i)`` history nodes: cost ``O(G²)`` over a horizon that is long compared with
``1/γ``. The kernel does not become small at long times (at equilibrium it tends to the stationary NDK ``K^d(τ)``
of the lag), nor does the residual (it tends to ``γ (γ + K_GP)^{-1} y ≠ 0`` for ``T > 0``), but the integrand's
dependence on the distant past does decay, and that part of the integral is what is cut, with a bound.

*The bound.* The NDK is ``K^d(x,t; x′,t′) = e^{−γ|t−t′|} C(x,t; x′,t′)`` with ``C = E[∇_θ f(x, θ(t)) · ∇_θ f(x′,
θ(t′))]`` (NDK paper Eq. 7), an expectation of Gram matrices, hence a positive semi-definite kernel on (input,
time) pairs, with ``C = K^d`` at equal times. Cauchy-Schwarz for ``C`` gives, for every output row a and training
column b,

    |K_ab(t, t′)| ≤ e^{−γ(t−t′)} d_a(t) d_b(t′),      d_a(t) = √K_aa(t, t)  (the equal-time diagonal)      (B)

(``solve`` takes ``diagonal``, the kernel's equal-time diagonal, as the promise that (B) holds with its ``gamma``).
So the part of row i's integral before a node ``t_c`` is bounded, for each output a and label column m, by

    |∫₀^{t_c} K(t_i, t′) r(t′) dt′|_am ≤ d_a(t_i) e^{−γ(t_i − t_c)} Σ_b S_bm(t_c),
    S_bm(s) = ∫₀ˢ e^{−γ(s−t′)} d_b(t′) |r_bm(t′)| dt′.

Both reasons for smallness are in it: the kernel's decay in the lag (the factor ``e^{−γ(t_i − t_c)}``) and the
residual's history (``S`` is small when the residual has decayed, as in the gradient-driven phase at low T).
``S`` is carried along the coarse grid, one update per coarse step ``H``: ``S ← e^{−γH} S + H d̄_b |r̄_bm|``, with
``|r̄|`` the largest modulus of the fine and coarse residuals at the step's nodes (both are piecewise linear, so
they are largest at nodes) and ``d̄`` the largest ``d_b`` at the step's nodes (``d_b`` depends on t only through
``m(t,t)``, which is monotone in t, and grows with it: a polynomial with non-negative coefficients for ReLU and the
identity, checked for erf in the tests); ``e^{−γ(·)} ≤ 1`` on the step. With ``d`` and ``r`` bounded,
``S ≤ d̄ |r̄| / γ`` at all times, so the lag ``τ_c`` at which the bound falls below a tolerance ``ε`` is at most
``(1/γ) ln(P d̄² |r̄| / (γ ε))``, independent of ``t_i``: a row reads a bounded window of the history, needs the
kernel at a bounded number of pairs, and the cost grows linearly with the horizon, with memory (weights, kernel
blocks) bounded.

*The tolerance.* ``ε`` is a fraction ``truncation`` (:data:`TRUNCATION`, 1e-3) of the error estimate observed so
far, ``max |f_fine − f_coarse|`` over the coarse nodes already solved. Fine and coarse solutions cut the same part,
so their difference does not see it: the cut is kept a thousand times below what the estimate reports, and its
bound (``neglected``) is returned so that the caller can add it. A perturbation ``e`` of the row integrals is not
amplified by the equation (at equilibrium it changes ``f_train`` by ``γ (γ + K_GP)^{-1} e``, a contraction; test
outputs by ``e_test − k_GPᵀ (γ + K_GP)^{-1} e_train``).

*Safety.* A row is cut only at a coarse node already solved (so ``S`` there is known), only where the bound is
``≤ ε``, and the cut is a node of both grids. With ``γ = 0`` (``T = 0``) the factor ``e^{−γτ}`` is 1: the bound
does not fall with the lag, and only a history whose whole weight ``d_a Σ_b S_bm`` is below ``ε`` can be cut (in
practice nothing is); before any error has been observed ``ε = 0``, and only a history that is exactly zero is cut. A zero
kernel row (``d_a = 0``) or a zero residual history (``S = 0``) is cut exactly.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

#: Kernel interpolation: Chebyshev-Lobatto degree on far panels and in s on the near field (the same nodes); panel
#: growth ratio.
FAR_DEGREE = NEAR_DEGREE = 6
RATIO = 4.0
#: Widest far panel, in units of the kernel's time scale ``1/γ``.
MAX_WIDTH = 2.0
#: Far-field truncation: the bound on the part of a row's integral that is cut stays below this fraction of the
#: error estimate observed so far (module docstring, "Far-field truncation").
TRUNCATION = 1e-3
#: Gauss-Legendre points per solution step: exact for the products integrated (degree 7 far, 9 near).
_GAUSS_FAR = np.polynomial.legendre.leggauss(4)
_GAUSS_NEAR = np.polynomial.legendre.leggauss(6)
_LOBATTO_FAR = -np.cos(np.pi * np.arange(FAR_DEGREE + 1) / FAR_DEGREE)  # ascending on [-1, 1]
_S_NEAR = 0.5 * (_LOBATTO_FAR + 1.0)  # the same nodes on [0, 1], ascending


class Solution(NamedTuple):
    """What :func:`solve` returns.

    fine : ``(G_f, n_out)`` the solution on the fine grid (``(G_f, n_out, M)`` for ``y (P, M)``).
    coarse : ``(G_c, n_out)`` (or ``(G_c, n_out, M)``) the solution on every second node.
    pairs : the number of time pairs at which the kernel was evaluated.
    history : the largest number of fine residual nodes one row's integral reads (``i + 1 − cut``): the retained
        history, bounded in the horizon when the far field is cut.
    neglected : ``(G_c,)`` the largest bound (B) on a cut far field among the rows up to each coarse node (zeros
        when nothing was cut).
    """

    fine: torch.Tensor
    coarse: torch.Tensor
    pairs: int
    history: int
    neglected: torch.Tensor


def _chebyshev(u):
    """Chebyshev polynomials ``T_0..T_{FAR_DEGREE}`` at ``u (...)``: ``(..., FAR_DEGREE + 1)``."""
    out = np.empty(u.shape + (FAR_DEGREE + 1,))
    out[..., 0], out[..., 1] = 1.0, u
    for p in range(2, FAR_DEGREE + 1):
        out[..., p] = 2.0 * u * out[..., p - 1] - out[..., p - 2]
    return out


#: Lagrange basis of the Chebyshev-Lobatto nodes in the Chebyshev basis: ``L(u) = T(u) @ _LAGRANGE`` (the matrix
#: ``T_p(x_j)`` is a cosine transform: well conditioned).
_LAGRANGE = np.linalg.inv(_chebyshev(_LOBATTO_FAR))


def _lagrange(u):
    """Lagrange basis of the degree-6 Chebyshev-Lobatto nodes of ``[-1, 1]`` (``_LOBATTO_FAR``) at ``u (...)``:
    ``(..., 7)``."""
    return _chebyshev(u) @ _LAGRANGE


def _gauss(a, b, rule):
    """Gauss points ``(n, m)`` and weights on the intervals ``[a_k, b_k]`` (arrays of length n)."""
    x, w = rule
    half = 0.5 * (b - a)[:, None]
    return 0.5 * (a + b)[:, None] + half * x, half * w


class Weights(NamedTuple):
    """A row's weights on the residual nodes of one grid, by blocks: the near field, then each far panel. Block b
    weighs the residuals at the nodes ``col0[b] + 0..width−1`` with ``blocks[b] (nb, width)`` for its kernel nodes
    ``idx[b] (nb,)`` (zero-padded to a common width): the row's integral is ``Σ_k K_k (W r)_k`` with
    ``(W r)[idx[b]] += blocks[b] @ r[col0[b] : col0[b] + width]``, plus ``current (nk,)`` times the residual at the
    current node ``n`` (implicit, so kept out of the blocks). ``first`` is the lowest node read."""

    first: int
    n: int
    col0: np.ndarray
    idx: np.ndarray
    blocks: np.ndarray
    current: np.ndarray

    @property
    def size(self) -> int:
        return self.blocks.size + self.current.size

    def dense(self) -> np.ndarray:
        """``(nk, n − first + 1)``: the weights as a dense matrix on the nodes ``first..n``."""
        out = np.zeros((self.current.shape[0], self.n - self.first + 1))
        cols = np.minimum(self.col0[:, None] + np.arange(self.blocks.shape[2]), self.n) - self.first  # pads: 0
        np.add.at(out, (self.idx[:, :, None], cols[:, None, :]), self.blocks)
        out[:, -1] += self.current
        return out


def _weights(parts, idx, col0, stride, t, n):
    """:class:`Weights` on the grid of every ``stride``-th node (1: fine, 2: coarse) from the row's parts
    ``(block (S,), js (S,), basis (S, m, nb), tg (S, m))``: for each fine step j, its block, its basis values times
    Gauss weights at its Gauss points ``tg``. The hats live on the grid's steps ``[t_{stride·c}, t_{stride·(c+1)}]``,
    ``c = j // stride``; their integrals against the basis are summed into the blocks (by one bincount)."""
    n_b, nb = idx.shape
    bid, left, vl, vr = [], [], [], []
    for block, js, basis, tg in parts:
        c = js // stride
        a, b = t[stride * c], t[stride * (c + 1)]
        theta = (tg - a[:, None]) / (b - a)[:, None]
        bid.append(block)
        left.append(c)
        vl.append(np.einsum("sm,smk->sk", 1.0 - theta, basis))
        vr.append(np.einsum("sm,smk->sk", theta, basis))
    bid, left = np.concatenate(bid), np.concatenate(left)
    pos = left - col0[bid]
    width = int(pos.max()) + 2
    base = (bid[:, None] * nb + np.arange(nb)) * width + pos[:, None]  # (S, nb): entry of the left node
    blocks = np.bincount(np.concatenate([base.ravel(), (base + 1).ravel()]),
                         weights=np.concatenate([np.concatenate(vl).ravel(), np.concatenate(vr).ravel()]),
                         minlength=n_b * nb * width).reshape(n_b, nb, width)
    current = np.zeros(int(idx.max()) + 1)
    current[idx[0]] = blocks[0, :, n - col0[0]]  # only the near field reaches the current node
    blocks[0, :, n - col0[0]] = 0.0
    return Weights(int(col0.min()), n, col0, idx, blocks, current)


def _panels(t, ti, j0, cut, gamma):
    """Far panels ``(lo, hi)`` of solution nodes tiling ``[t_cut, t_{j0}]``, from the diagonal back, growing by
    :data:`RATIO` up to a width of ``MAX_WIDTH/γ``; no sliver panel at the cut. Returns ``(n_p, 2)`` integers."""
    out, hi = [], j0
    width_cap = MAX_WIDTH / gamma if gamma > 0 else math.inf
    while hi > cut:
        tau_hi = ti - t[hi]
        target = ti - (tau_hi + min((RATIO - 1.0) * tau_hi, width_cap))
        lo = int(np.searchsorted(t, target, side="right")) - 1
        lo = min(max(lo, cut), hi - 1)
        if lo > cut and t[lo] - t[cut] < 0.25 * (t[hi] - t[lo]):
            lo = cut
        out.append((lo, hi))
        hi = lo
    return np.array(out, dtype=np.int64).reshape(-1, 2)


class _Row:
    """Kernel nodes and integration weights of row ``i``, its far field cut at the even node ``cut`` (0: not cut).

    taus : ``(nk,)`` lags ``t_i − t′`` of the row's nk kernel nodes: the near field's seven (0 first, the last at
    ``t_{i−2}``), then per far panel, from the diagonal back, its five interior nodes and its lower end (its upper
    end is the previous panel's lower end, or the near field's last node). fine : :class:`Weights` on the fine
    residuals ``r_cut..r_i``; coarse : on the coarse residuals ``r_{cut/2}..r_{i/2}`` (even ``i`` only, else None):
    the row's integral is ``Σ_k K(t_i, t_i − τ_k) (W r)_k`` over ``t′ ∈ [t_cut, t_i]``.
    """

    def __init__(self, t, i, gamma, cut=0):
        self.i, self.cut, ti = i, cut, t[i]
        # near field: the last two steps (one coarse step), a polynomial in s = sqrt((t_i - t')/delta)
        j0 = max(i - 2, 0)
        delta = ti - t[j0]
        jn = np.arange(j0, i)
        sg, wg = _gauss(np.sqrt((ti - t[jn + 1]) / delta), np.sqrt((ti - t[jn]) / delta), _GAUSS_NEAR)
        basis = _lagrange(2.0 * sg - 1.0) * (wg * 2.0 * delta * sg)[..., None]  # dt' = 2 delta s ds
        near = (np.zeros(jn.shape[0], dtype=np.int64), jn, basis, ti - delta * sg * sg)
        # far field: panels of whole solution steps in [t_cut, t_{j0}], Chebyshev-Lobatto nodes on each
        panels = _panels(t, ti, j0, cut, gamma)
        n_p = panels.shape[0]
        lo, hi = t[panels[:, 0]], t[panels[:, 1]]
        nodes_t = lo[:, None] + 0.5 * (hi - lo)[:, None] * (_LOBATTO_FAR + 1.0)  # (n_p, 7) ascending
        own = NEAR_DEGREE + 1 + FAR_DEGREE * np.arange(n_p)[:, None] + np.arange(FAR_DEGREE)  # interior…, lower end
        upper = np.concatenate([[NEAR_DEGREE], own[:-1, -1]])[:n_p]
        idx = np.concatenate([np.arange(NEAR_DEGREE + 1)[None], np.concatenate(
            [own[:, -1:], own[:, :-1], upper[:, None]], 1)])  # (1 + n_p, 7): block 0 the near field
        self.taus = np.concatenate([delta * _S_NEAR ** 2, ti - np.concatenate([nodes_t[:, 1:-1], nodes_t[:, :1]],
                                                                              1).ravel()])
        jf = np.arange(cut, j0)
        pid = n_p - np.searchsorted(panels[::-1, 0], jf, side="right")  # the panel of each far step
        xg, wf = _gauss(t[jf], t[jf + 1], _GAUSS_FAR)
        u = (2.0 * xg - (lo + hi)[pid, None]) / (hi - lo)[pid, None]  # on the reference nodes in [-1, 1]
        far = (1 + pid, jf, _lagrange(u) * wf[..., None], xg)
        col0 = np.concatenate([[j0], panels[:, 0]])
        # fine hats on [t_j, t_{j+1}]; coarse hats on [t_{2c}, t_{2c+2}] containing the fine step
        self.fine = _weights((near, far), idx, col0, 1, t, i)
        self.coarse = _weights((near, far), idx, col0 // 2, 2, t, i // 2) if i % 2 == 0 else None

    def elements(self, block: int) -> int:
        """Memory of the row in a batch, in numbers: its kernel block (``block`` per kernel node) and weights."""
        return self.taus.shape[0] * block + self.fine.size + (self.coarse.size if self.coarse is not None else 0)


class _Tail:
    """The running bound of the far field (module docstring, "Far-field truncation"): ``S_bm`` at the last coarse
    node updated, and ``log max_m Σ_b S_bm(t_c) + γ t_c`` at every coarse node (nondecreasing in c, kept so: the
    cut of a row is then a search). ``d`` is ``(G, n_out)``: the square roots of the kernel's equal-time diagonal
    at every fine node, the first P columns the training inputs."""

    def __init__(self, t, gamma, d, shape):
        self.t, self.gamma = t, gamma
        self.dmax = d.amax(1).cpu().numpy()
        self.dtrain = d[:, :shape[0]]
        self.s = torch.zeros(shape, dtype=d.dtype, device=d.device)
        self.log = np.full((t.shape[0] + 1) // 2, -np.inf)
        self.done = 0  # the coarse nodes 0..done have their S

    def update(self, c, res_f, res_c):
        """Advance S over the coarse step ``[t_{2c−2}, t_{2c}]`` (fine residuals up to ``2c``, coarse up to ``c``)."""
        j, h = 2 * c, self.t[2 * c] - self.t[2 * c - 2]
        d = self.dtrain[j - 2:j + 1].amax(0)
        r = torch.maximum(res_f[j - 2:j + 1].abs().amax(0), res_c[c - 1:c + 1].abs().amax(0))  # (P, M)
        self.s = self.s * math.exp(-self.gamma * h) + h * d[:, None] * r
        total = float(self.s.sum(0).max())
        now = math.log(total) + self.gamma * self.t[j] if total > 0 else -math.inf
        self.log[c] = max(self.log[c - 1], now)
        self.done = c

    def cut(self, i, eps):
        """``(cut, bound)`` for row ``i``: the last even node ``cut ≤ i − 2`` among those done where the bound (B)
        on ``∫₀^{t_cut}`` is ``≤ eps``, and that bound (0 and 0 when none)."""
        last = min(self.done, (i - 2) // 2)
        if last <= 0:
            return 0, 0.0
        dmax = self.dmax[i]
        if dmax == 0.0:  # a zero kernel row: its integral is exactly zero
            return 2 * last, 0.0
        threshold = math.log(eps) - math.log(dmax) + self.gamma * self.t[i] if eps > 0 else -math.inf
        c = int(np.searchsorted(self.log[:last + 1], threshold, side="right")) - 1  # log[0] = -inf: c >= 0
        log_bound = self.log[c] + math.log(dmax) - self.gamma * self.t[i]
        return 2 * c, (math.exp(log_bound) if c > 0 else 0.0)


def solve(kernel, y, t, n_out, *, gamma, batch_elements, diagonal=None, truncation=TRUNCATION):
    """Solve ``f(t) = ∫₀ᵗ K(t,t′)(y − f_train(t′)) dt′`` on the fine grid ``t`` (odd length) and on ``t[0::2]``.

    kernel(ta, tb) returns ``K(ta_b, tb_b)`` as ``(B, n_out, P)`` float64 (the first P outputs are the training
    inputs); ``y`` is ``(P,)`` or ``(P, M)`` (M outputs sharing the kernel: each kernel block is evaluated once for all
    of them); ``gamma = T/σ²`` sets the widest kernel panel (``MAX_WIDTH/γ``). ``diagonal(ts)`` (optional) returns the
    equal-time diagonal ``K_aa(t, t)`` as ``(B, n_out)`` for the outputs a (the training inputs first), for which the
    bound (B) of the module docstring holds with ``gamma``: then the far field is cut where (B) proves it below
    ``truncation`` times the error estimate so far (0: never). ``batch_elements`` bounds the numbers held per batch
    of rows (kernel blocks and weights). Returns :class:`Solution`.
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
    tail = None
    if diagonal is not None and truncation > 0:
        tail = _Tail(tn, gamma, diagonal(t).clamp_min(0.0).sqrt(), (P, M))
    neglected = np.zeros((G + 1) // 2)
    # a batch's cuts are decided before it is solved: with a cut, a batch spans at most half a far panel (1/γ)
    span = 0.5 * MAX_WIDTH / gamma if tail is not None and gamma > 0 else math.inf
    i, pairs, history, estimate = 1, 0, 0, 0.0
    while i < G:
        rows, bounds, held = [], [], 0
        while i + len(rows) < G and (not rows or (held < batch_elements and tn[i + len(rows)] - tn[i] <= span)):
            cut, bound = tail.cut(i + len(rows), truncation * estimate) if tail is not None else (0, 0.0)
            rows.append(_Row(tn, i + len(rows), gamma, cut))
            bounds.append(bound)
            held += rows[-1].elements(n_out * P)
        ta = torch.cat([torch.full((r.taus.shape[0],), float(tn[r.i]), **opts) for r in rows])
        tb = ta - torch.as_tensor(np.concatenate([r.taus for r in rows]), **opts)
        kern = kernel(ta, tb.clamp_min(0.0))
        pairs += ta.shape[0]
        start = 0
        for r, bound in zip(rows, bounds):
            k = kern[start:start + r.taus.shape[0]]
            start += r.taus.shape[0]
            systems = [(r.fine, res_f, out_f, r.i)]
            if r.coarse is not None:
                systems.append((r.coarse, res_c, out_c, r.i // 2))
            _step(k, systems, y, eye)
            history = max(history, r.i + 1 - r.cut)
            neglected[(r.i + 1) // 2] = max(neglected[(r.i + 1) // 2], bound)
            if r.coarse is not None:
                estimate = max(estimate, float((out_f[r.i] - out_c[r.i // 2]).abs().max()))
                if tail is not None:
                    tail.update(r.i // 2, res_f, res_c)
        i += len(rows)
    if vector:
        out_f, out_c = out_f[..., 0], out_c[..., 0]
    return Solution(out_f, out_c, pairs, history, torch.as_tensor(np.maximum.accumulate(neglected), **opts))


def _history(w, res, n):
    """``(W r)_k`` over the history nodes (all but the current one) of one grid: ``(nk, P·M)``, one batched product
    over the row's blocks (:class:`Weights`)."""
    opts = dict(device=res.device)
    rows = (torch.as_tensor(w.col0, **opts)[:, None] + torch.arange(w.blocks.shape[2], **opts)).clamp_max(n - 1)
    block = torch.bmm(torch.as_tensor(w.blocks, dtype=res.dtype, **opts), res[rows].flatten(2))
    out = torch.zeros(w.current.shape[0], block.shape[2], dtype=res.dtype, **opts)
    return out.index_add_(0, torch.as_tensor(w.idx, **opts).reshape(-1), block.reshape(-1, block.shape[2]))


def _step(k, systems, y, eye):
    """Implicit step at the current node of one or two grids (the kernel block ``k (nk, n_out, P)`` at the row's nk
    kernel nodes is read once for both, and for all M outputs). Each system is ``(w, res (·, P, M), out (·, n_out,
    M), n)`` with ``w`` the row's :class:`Weights` on that grid: ``f_n = h + A r_n`` with ``h = Σ_k K_k (W_hist @
    r)_k``, ``A = Σ_k w.current[k] K_k`` and ``r_n = y − f_n[:P]``, a P×P solve with M right-hand sides; ``y`` is
    ``(P, M)``."""
    P, M = y.shape
    nk, n_out = k.shape[0], k.shape[1]
    hist = torch.stack([_history(w, res, n).reshape(nk, P, M) for w, res, _, n in systems], -1)
    S = hist.shape[-1]
    h = torch.bmm(k, hist.reshape(nk, P, M * S)).sum(0).reshape(n_out, M, S)
    current = torch.as_tensor(np.stack([w.current for w, _, _, _ in systems]), dtype=k.dtype, device=k.device)
    a = (current @ k.reshape(nk, -1)).reshape(-1, n_out, P)  # (S, n_out, P)
    for s, (_, res, out, n) in enumerate(systems):
        r = torch.linalg.solve(eye + a[s, :P], y - h[:P, :, s])
        res[n] = r
        out[n] = h[:, :, s] + a[s] @ r
