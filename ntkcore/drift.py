"""Representational drift: what a readout frozen at equilibrium still computes while the hidden weights diffuse.

Setting (book Chapter 7, "Representational drift"; NDK paper section 5, Eqs. 19-21): a network of the NDK
paper (``f(x) = N^(-1/2) a·x^L``, see :mod:`ntkcore.ndk`) has reached the equilibrium of Langevin dynamics at a
time ``t0``. The readout ``a`` is frozen at ``a(t0)``; from then on the hidden weights ``W^l`` keep diffusing with the
prior's Ornstein-Uhlenbeck dynamics (no loss gradient), so the weights at times ``t`` and ``t0`` have covariance
``σ² e^{−γτ}`` with ``τ = t − t0`` and ``γ = T/σ²``. The frozen network's output ``f_drift(x, τ)`` has the mean

    E f_drift(x, τ) = k^L(x, τ)ᵀ (γ I + K_GP)⁻¹ y                       (paper Eq. 19)

where ``k^L(x, τ)_μ = K^L(x, t; x_μ, t0)`` is the stationary two-time NNGP kernel (:func:`drift_kernel`). At
``τ = 0`` it is the NNGP posterior mean (paper Eq. 18). As ``τ → ∞`` the weights at the two times decorrelate
layer by layer, the two representations become independent and ``k^L`` tends to the *mean kernel*

    K_mean(x, x′) = μ(x) μ(x′),   μ(x) = E φ(h^L(x)),   h^L(x) ~ N(0, σ² q^{L−1}(x, x))     (paper Eqs. 20-21)

(:func:`mean_kernel`, :func:`mean_activation`): the product of the two separate Gaussian averages. For ReLU
``μ(x) = √(σ² q^{L−1}(x, x) / (2π)) = √(K_GP(x, x)/π)``, which grows with ``‖x‖``; for the odd activations erf and
identity ``μ = 0`` and everything the network learned is lost.

Conventions as in :mod:`ntkcore.ndk`: inputs are rows ``(n, N0)``, theory is float64 on the device of the inputs
(every floating input is converted to float64, an explicit conversion; tensors must share the device of the first
input unless ``device`` is given), lags ``tau`` are a 1-D array of length G and kernels over lags have shape
``(G, n1, n2)``.
"""
from __future__ import annotations

import math

import torch

from . import ndk
from ._checks import as_tensor, check_int, finite_result, labels as check_labels, times

ACTIVATIONS = ndk.ACTIVATIONS


def _rows(x, name, device):
    return ndk._inputs(x, None, device, names=(name, name))[0]


# ----------------------------------------------------------------------------------------------------------------
# kernels


def drift_kernel(x1, x2=None, tau=0.0, *, L, activation, sigma_sq, T, device=None):
    """Stationary two-time NNGP kernel ``k^L(τ) = K^L(x, t0 + τ; x′, t0)`` at equilibrium, shape ``(G, n1, n2)``.

    Book Chapter 7, "Representational drift"; NDK paper Eq. 19: the recursion of paper Eqs. 11-13 with
    weight covariance ``σ²`` at equal times and ``σ² e^{−γτ}`` across the two times (``γ = T/σ²``), computed by
    :func:`ntkcore.ndk.stationary_kernels`. ``k^L(0) = K_GP`` (:func:`ntkcore.ndk.k_gp`) and
    ``k^L(τ) → K_mean`` (:func:`mean_kernel`) as ``τ → ∞``, exponentially on the scale ``1/γ``.

    ``x1 (n1, N0)`` inputs at time ``t0 + τ``; ``x2 (n2, N0)`` inputs at time ``t0`` (None: ``x1``); ``tau`` lags
    ``≥ 0`` (number or 1-D, length G); ``L ≥ 1`` hidden layers; ``activation`` in ``'relu', 'erf', 'identity'``;
    ``sigma_sq`` the prior variance σ² > 0; ``T ≥ 0`` the temperature.
    """
    L, activation, sigma_sq, T = ndk.check_hyper(L=L, activation=activation, sigma_sq=sigma_sq, T=T)
    x1, x2 = ndk._inputs(x1, x2, device)
    tau = times(tau, "tau", like=x1, like_name="x1", dtype=torch.float64, device=device, nonempty=True)
    return ndk.stationary_kernels(x1, x2, tau, L=L, activation=activation, sigma_sq=sigma_sq, T=T).nngp


def mean_activation(x, *, L, activation, sigma_sq, device=None):
    """Mean hidden activation ``μ(x) = E φ(h^L(x))`` of one unit of the last hidden layer, shape ``(n,)``.

    NDK paper Eq. 20 (book Chapter 7): at infinite width the pre-activation ``h^L(x)`` of a unit is
    ``N(0, v)`` with ``v = σ² q^{L−1}(x, x)``, where ``q^0(x, x) = ‖x‖²/N0`` and ``q^{L−1}`` is the one-time NNGP
    kernel of ``L − 1`` hidden layers (:func:`ntkcore.ndk.k_gp`). ReLU: ``μ = √(v/(2π))``; erf and identity are odd,
    so ``μ = 0``. ``x (n, N0)``.
    """
    L, activation, sigma_sq = ndk.check_hyper(L=L, activation=activation, sigma_sq=sigma_sq)
    x = _rows(x, "x", device)
    if activation != "relu":  # erf and identity are odd: E φ(h) = 0 for a centred Gaussian h
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    q = (x * x).sum(1) / x.shape[1] if L == 1 else _diag_k_gp(x, L - 1, activation, sigma_sq)
    return torch.sqrt(sigma_sq * q / (2 * math.pi))


def _diag_k_gp(x, L, activation, sigma_sq):
    """Diagonal ``q^L(x, x)`` of the NNGP kernel, without forming the ``n × n`` matrix (batches of 256 rows)."""
    out = [torch.diagonal(ndk.k_gp(chunk, L=L, activation=activation, sigma_sq=sigma_sq))
           for chunk in torch.split(x, 256)]
    return torch.cat(out)


def mean_kernel(x1, x2=None, *, L, activation, sigma_sq, device=None):
    """Mean kernel ``K_mean(x, x′) = μ(x) μ(x′)`` (NDK paper Eq. 20), the ``τ → ∞`` limit of :func:`drift_kernel`,
    shape ``(n1, n2)``.

    The NNGP kernel with the Gaussian averages over the weights taken separately for ``x`` and ``x′``
    (:func:`mean_activation`). For ReLU it equals ``√(K_GP(x, x) K_GP(x′, x′))/π`` and depends on the inputs only
    through their norms; for erf and identity it is identically 0.
    """
    x1, x2 = ndk._inputs(x1, x2, device)
    mu1 = mean_activation(x1, L=L, activation=activation, sigma_sq=sigma_sq)
    mu2 = mu1 if x2 is x1 else mean_activation(x2, L=L, activation=activation, sigma_sq=sigma_sq)
    return mu1[:, None] * mu2[None, :]


# ----------------------------------------------------------------------------------------------------------------
# predictors


def posterior_coefficients(x_train, y, *, L, activation, sigma_sq, T, device=None):
    """Coefficients ``α = (γ I + K_GP)⁻¹ y`` of the equilibrium (NNGP) mean predictor, shape ``(P,)``:
    :func:`ntkcore.ndk.posterior_coefficients` after this module's argument checks.

    NDK paper Eqs. 18-21 (book Chapter 7): every equilibrium-time predictor of this module is
    ``κ(x)ᵀ α`` for some kernel row ``κ``. With ``γ = T/σ²``. Cholesky; a matrix that is not positive definite
    raises a ValueError naming its smallest eigenvalue. ``x_train (P, N0)``, ``y (P,)``.
    """
    L, activation, sigma_sq, T = ndk.check_hyper(L=L, activation=activation, sigma_sq=sigma_sq, T=T)
    x_train = _rows(x_train, "x_train", device)
    y = check_labels(y, x_train.shape[0], like=x_train, like_name="x_train", device=device, dtype=torch.float64)
    return ndk.posterior_coefficients(x_train, y, L=L, activation=activation, sigma_sq=sigma_sq, T=T)


def drift_predictor(x_train, y, x_test, tau, *, L, activation, sigma_sq, T, device=None):
    """Mean output of the drifting network with the readout frozen at equilibrium, ``(G, n_test)``:

        E f_drift(x, τ) = k^L(x, τ)ᵀ (γ I + K_GP)⁻¹ y                (NDK paper Eq. 19; book Chapter 7)

    with ``k^L`` from :func:`drift_kernel` (the test inputs at time ``t0 + τ``, the training inputs at ``t0``).
    ``τ = 0`` gives the NNGP posterior mean (paper Eq. 18, :func:`ntkcore.ndk.nngp_limit`); for the ``τ → ∞`` limit
    use :func:`drift_limit`. ``x_train (P, N0)``, ``y (P,)``, ``x_test (n_test, N0)``, ``tau`` lags ``≥ 0`` (G).
    """
    alpha = posterior_coefficients(x_train, y, L=L, activation=activation, sigma_sq=sigma_sq, T=T, device=device)
    x_train, x_test = ndk._inputs(x_train, x_test, device, names=("x_train", "x_test"))
    k = drift_kernel(x_test, x_train, tau, L=L, activation=activation, sigma_sq=sigma_sq, T=T)
    return k @ alpha


def drift_limit(x_train, y, x_test, *, L, activation, sigma_sq, T, device=None):
    """Long-lag limit ``lim_{τ→∞} E f_drift(x, τ) = k_meanᵀ (γ I + K_GP)⁻¹ y`` (NDK paper Eq. 21), shape ``(n_test,)``.

    ``k_mean`` is the row of :func:`mean_kernel` between ``x_test`` and ``x_train``. Since
    ``K_mean(x, x′) = μ(x)μ(x′)``, the limit is ``c μ(x)`` with one scalar ``c = μ(X)ᵀ α`` for every input: for ReLU
    a multiple of ``‖x‖`` at every depth (ReLU is homogeneous), and 0 for erf and identity.
    """
    alpha = posterior_coefficients(x_train, y, L=L, activation=activation, sigma_sq=sigma_sq, T=T, device=device)
    x_train, x_test = ndk._inputs(x_train, x_test, device, names=("x_train", "x_test"))
    return mean_kernel(x_test, x_train, L=L, activation=activation, sigma_sq=sigma_sq) @ alpha


# ----------------------------------------------------------------------------------------------------------------
# measurements on simulations and predictors


def weight_correlation(w, ref=0):
    """Normalized overlap of recorded weights with themselves at the recorded time ``ref``, shape ``(E, G)``:

        ρ_e(t_g) = w_e(t_ref) · w_e(t_g) / ‖w_e(t_ref)‖²       (one value per network e and recorded time g)

    ``w`` is one recorded weight tensor of :class:`ntkcore.langevin.LangevinResult` (``(E, G, ...)``, e.g. ``W^1``
    of shape ``(E, G, N, N0)``). At equilibrium every weight is an Ornstein-Uhlenbeck coordinate of the prior up to
    ``O(N^{-1/2})`` per weight, so ``E ρ(t_ref + τ) ≈ e^{−γτ}`` (the weight covariance ``m(t, t′)`` of NDK paper
    Eq. 9; book Chapter 6). ``ρ`` is invariant under a rescaling of ``w_e``: each network's weights are divided by
    their largest magnitude at ``t_ref`` first, so that weights anywhere in the float64 range give the same ``ρ``
    (a ``ρ`` beyond that range is a ValueError).
    """
    w = as_tensor(w, "w", device=w.device if isinstance(w, torch.Tensor) else None)
    if w.ndim < 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"w must have shape (E, G, ...) with E, G >= 1, got {tuple(w.shape)}")
    ref = check_int(ref, "ref", low=-w.shape[1], high=w.shape[1] - 1)
    w = w.reshape(w.shape[0], w.shape[1], -1).double()
    top = w[:, ref].abs().amax(1) if w.shape[2] else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if bool((top == 0).any()):
        raise ValueError("w is zero at the reference time for some network; the overlap is undefined")
    w = w / top[:, None, None]  # ρ is invariant under w_e → w_e / c: no overflow or underflow in the products
    w0 = w[:, ref]
    rho = torch.einsum("egk,ek->eg", w, w0) / (w0 * w0).sum(1)[:, None]
    return finite_result(rho, "weight correlation", "w (its entries span more than the float64 range)")


def threshold_accuracy(scores, labels, eval_scores=None, eval_labels=None):
    """Accuracy of the best one-dimensional linear classifier on a scalar predictor, one value per row.

    The classifier is ``sign(o (s − θ))`` with orientation ``o = ±1`` and threshold ``θ`` chosen to maximize the
    accuracy on ``(scores, labels)``; ``θ`` is one of the training scores (rule ``s ≥ θ``) or ``+∞``, so the
    classifier, and its accuracy, are unchanged by any strictly increasing transformation of the scores (a decreasing
    one can move held-out scores that fall between two training scores to the other side). This is the
    linear classifier on the predictor of the NDK paper's Figure 4. The accuracy is measured on
    ``(eval_scores, eval_labels)`` when given (held-out data), else on the training pairs.

    ``scores (n,)`` or ``(G, n)``; ``labels (n,)`` in ``{−1, +1}``; ``eval_scores (m,)`` or ``(G, m)``,
    ``eval_labels (m,)``. Returns a float64 tensor ``(G,)`` (a 0-d tensor for 1-D scores).
    """
    s = as_tensor(scores, "scores", ndim=(1, 2), dtype=torch.float64)
    one = s.ndim == 1
    s = s.reshape(1, -1) if one else s
    if s.shape[1] == 0:
        raise ValueError(f"scores must hold at least one score per row, got shape {tuple(s.shape)}")
    y = _signs(labels, "labels", s.shape[1], s)
    if (eval_scores is None) != (eval_labels is None):
        raise ValueError("give both eval_scores and eval_labels, or neither")
    if eval_scores is None:
        e, ye = s, y
    else:
        e = as_tensor(eval_scores, "eval_scores", ndim=(1, 2), like=s, like_name="scores", dtype=torch.float64)
        e = e.reshape(1, -1) if e.ndim == 1 else e
        if e.shape[0] != s.shape[0] or e.shape[1] == 0:
            raise ValueError(f"eval_scores must have {s.shape[0]} rows like scores and at least one column, got shape "
                             f"{tuple(e.shape)}")
        ye = _signs(eval_labels, "eval_labels", e.shape[1], s)
    n = s.shape[1]
    srt, order = torch.sort(s, dim=1)
    ys = y[order]
    # rule "predict +1 iff s >= srt[:, k]" (k = n: all −1): correct = #(−1 below k) + #(+1 from k on)
    neg_below = torch.cat([torch.zeros_like(srt[:, :1]), torch.cumsum(ys < 0, 1, dtype=s.dtype)], 1)
    pos_from = (ys > 0).sum(1, keepdim=True) - torch.cat(
        [torch.zeros_like(srt[:, :1]), torch.cumsum(ys > 0, 1, dtype=s.dtype)], 1)
    correct = neg_below + pos_from  # (G, n + 1)
    valid = torch.ones_like(correct, dtype=torch.bool)
    valid[:, 1:n] = srt[:, 1:] > srt[:, :-1]  # a cut inside a run of ties is not a threshold rule
    up = torch.where(valid, correct, torch.full_like(correct, -1.0))
    down = torch.where(valid, n - correct, torch.full_like(correct, -1.0))
    best_up, k_up = up.max(1)
    best_down, k_down = down.max(1)
    orient = torch.where(best_up >= best_down, 1.0, -1.0).to(s.dtype)
    k = torch.where(best_up >= best_down, k_up, k_down)
    thr = torch.cat([srt, torch.full_like(srt[:, :1], math.inf)], 1).gather(1, k[:, None])
    pred = orient[:, None] * (2.0 * (e >= thr).to(s.dtype) - 1.0)
    acc = (pred == ye[None, :]).to(s.dtype).mean(1)
    return acc[0] if one else acc


def _signs(values, name, n, like):
    y = check_labels(values, n, like=like, like_name="scores", dtype=torch.float64, name=name, of="score")
    if not bool(((y == 1) | (y == -1)).all()):
        raise ValueError(f"{name} must be ±1 labels")
    return y
