"""Synthetic datasets with known structure, generated from a seed.

- :func:`orthogonal_synthetic`: the task of the NDK paper (seed 001, Figure 1 and Figure 3).
- :func:`two_gaussians`: two Gaussian classes with labels ±1.
- :func:`sphere`: points uniform on the unit sphere, labelled by a seeded linear teacher (or your function).

Sizes: ``n_train ≥ 1`` and ``n_test ≥ 0`` (``n_test=0`` gives an empty test split of shape ``(0, dim)``).
"""
from __future__ import annotations

import numpy as np

from .._checks import as_numpy, check_int, check_memory, check_real
from .dataset import Dataset, finish
from .subset import per_class, rng


def _fits(rows: int, cols: int, what: str, copies: int = 2) -> None:
    """Refuse a data set of ``rows × cols`` float64 values (``copies`` arrays of it at once) that cannot fit in
    memory, before anything is drawn (:func:`ntkcore._checks.check_memory`); ``what`` names the sizes."""
    check_memory(8 * copies * rows * cols, f"a data set of {rows} × {cols} values ({what})", "cpu")


def orthonormal_columns(dim: int, k: int, gen: np.random.Generator) -> np.ndarray:
    """``k`` random orthonormal columns in ``R^dim`` (shape (dim, k)): QR of a Gaussian matrix with the signs
    fixed so that the distribution is Haar (uniform over the Stiefel manifold)."""
    q, r = np.linalg.qr(gen.standard_normal((dim, k)))
    return q * np.sign(np.diag(r))


def orthogonal_synthetic(n_train=4, n_test=None, *, overlap=0.5, dim=None, seed=0, torch=False, device=None,
                         dtype=None) -> Dataset:
    """The synthetic task of the NDK paper (seed 001, Figure 1): orthogonal training inputs, random ±1 labels,
    test points that overlap exactly one training input.

    Training inputs ``x_μ`` (μ = 1..P, P = ``n_train``) are orthogonal, with ``‖x_μ‖² = N0`` (``dim``), so that
    ``q⁰(x, x) = x·x/N0 = 1`` in the kernel recursion (NDK paper Eqs. 11-13; book Chapter 6); labels are seeded
    fair coin flips ±1. Test point j overlaps training input ``k_j = j mod P`` and is orthogonal to the others:

        x_test_j = ρ x_{k_j} + √(1 − ρ²) √N0 u_j,      label y_{k_j},

    with ``ρ = overlap`` ∈ [0, 1] and ``u_j`` unit vectors orthogonal to every training input and to each
    other. Hence ``x_test_j · x_μ / N0 = ρ δ_{μ k_j}`` and ``‖x_test_j‖² = N0`` (the paper's SI Sec. E is
    not in the seed; this is the construction its caption describes). ``n_test`` defaults to P (one test point
    per training input); ``dim`` defaults to, and must be at least, P + n_test. The directions are a Haar-random
    orthonormal frame. ``meta["overlaps"]`` holds the ``k_j`` (shape (n_test,)).

    Returns a :class:`~ntkcore.data.Dataset` with x of shape (P, N0) and (n_test, N0), classes (−1, +1).
    """
    p = check_int(n_train, "n_train", low=1)
    m = p if n_test is None else check_int(n_test, "n_test", low=0)
    rho = check_real(overlap, "overlap", low=0.0, high=1.0)
    d = p + m if dim is None else check_int(dim, "dim", low=p + m)
    _fits(d, p + m, "dim × (n_train + n_test)", copies=4)  # the Gaussian matrix, its QR and the frame
    gen = rng(seed)
    frame = orthonormal_columns(d, p + m, gen).T * np.sqrt(d)   # rows: orthogonal, norm √N0
    x_train, u = frame[:p], frame[p:]
    y_train = gen.choice([-1.0, 1.0], size=p)
    k = np.arange(m) % p
    x_test = rho * x_train[k] + np.sqrt(1.0 - rho**2) * u
    ds = Dataset(x_train, y_train, x_test, y_train[k].copy(), classes=(-1, 1), class_names=("-1", "+1"),
                 name="orthogonal_synthetic", meta={"overlaps": k, "overlap": rho})
    return finish(ds, torch, device, dtype)


def _signed_balanced(n: int) -> np.ndarray:
    minus, plus = per_class(n, 2)
    return np.concatenate([-np.ones(minus), np.ones(plus)])


def two_gaussians(n_train=100, n_test=100, *, dim=2, separation=2.0, std=1.0, seed=0, torch=False,
                  device=None, dtype=None) -> Dataset:
    """Two Gaussian classes in ``R^dim``: ``x ~ N(y · (separation/2) e_1, std² I)`` with balanced labels
    ``y = ±1`` (the −1 class gets the smaller half when n is odd). x of shape (n, dim), seeded, shuffled."""
    n_tr, n_te = check_int(n_train, "n_train", low=1), check_int(n_test, "n_test", low=0)
    d = check_int(dim, "dim", low=1)
    sep = check_real(separation, "separation", low=0.0)
    s = check_real(std, "std", low=0.0, low_open=True)
    _fits(n_tr + n_te, d, "(n_train + n_test) × dim")
    gen = rng(seed)

    def sample(n):
        y = gen.permutation(_signed_balanced(n))
        with np.errstate(over="ignore", invalid="ignore"):
            x = s * gen.standard_normal((n, d))
            x[:, 0] += y * (sep / 2)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"std={std!r} and separation={separation!r} give inputs beyond the float64 range "
                             f"({np.finfo(np.float64).max:.3g}); use a smaller std or separation")
        return x, y

    ds = Dataset(*sample(n_tr), *sample(n_te), classes=(-1, 1), class_names=("-1", "+1"), name="two_gaussians")
    return finish(ds, torch, device, dtype)


def sphere(n_train=100, n_test=100, *, dim=3, target=None, seed=0, torch=False, device=None,
           dtype=None) -> Dataset:
    """Points uniform on the unit sphere ``S^{dim−1}`` (normalized Gaussians; ``‖x‖ = 1`` as in Du et al.,
    book Chapter 2), x of shape (n, dim).

    Labels: ``target(x)`` (a function from an (n, dim) array to (n,) values) if given, else ``sign(w·x)`` for
    a seeded teacher ``w`` on the sphere (stored in ``meta["teacher"]``), which gives ±1 labels.
    """
    n_tr, n_te = check_int(n_train, "n_train", low=1), check_int(n_test, "n_test", low=0)
    d = check_int(dim, "dim", low=1)
    if target is not None and not callable(target):
        raise ValueError(f"target must be a function of x (array of shape (n, dim)), got {type(target).__name__}")
    _fits(n_tr + n_te + 1, d, "(n_train + n_test + 1) × dim")
    gen = rng(seed)
    g = gen.standard_normal((n_tr + n_te + 1, d))
    pts = g / np.linalg.norm(g, axis=1, keepdims=True)
    teacher, x_train, x_test = pts[0], pts[1:n_tr + 1], pts[n_tr + 1:]
    if target is None:
        def label(x):
            return np.where(x @ teacher >= 0, 1.0, -1.0)
        classes, names, meta = (-1, 1), ("-1", "+1"), {"teacher": teacher}
    else:
        def label(x):
            return _checked_target(target, x)
        classes, names, meta = (), (), {}
    ds = Dataset(x_train, label(x_train), x_test, label(x_test), classes=classes, class_names=names,
                 name="sphere", meta=meta)
    return finish(ds, torch, device, dtype)


def _checked_target(target, x):
    if len(x) == 0:  # an empty split: nothing to label
        return np.zeros(0)
    y = as_numpy(target(x), "target(x)", finite=False)
    if y.shape != (len(x),) or not np.all(np.isfinite(y)):
        raise ValueError(f"target(x) must return {len(x)} finite numbers (shape ({len(x)},)), got shape {y.shape}")
    return y
