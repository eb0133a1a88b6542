"""Class subsets and seeded, class-balanced train/test draws: the one path every real dataset goes through.

Balanced means: ``n`` points over C classes give ``n // C`` per class, and one more to each of the first
``n % C`` classes in the order of ``classes``. Within a class the points are a seeded random choice; the
returned split is shuffled (a seeded permutation), so classes are interleaved.

Sizes are validated against the data before anything is drawn: ``n_train ≥ 1`` and ``n_test ≥ 0`` points
(``n_test=0`` asks for no test set, an empty ``(0, ...)`` split), never more than a class holds. ``None`` takes the
rest of each class, which must leave at least one point of every class: a split that would silently lose a class
(or be empty without being asked to) raises a ValueError naming the size to change.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import check_int
from .dataset import Dataset, encode_labels
from .preprocess import preprocess as apply_preprocess


def rng(seed) -> np.random.Generator:
    """A numpy Generator from an int seed (>= 0) or an existing Generator (returned as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(check_int(seed, "seed", low=0))


def resolve_classes(classes, names: tuple, dataset: str) -> tuple:
    """The requested ``classes`` as class numbers 0..C−1 of the dataset (``names`` in that order); each entry
    a class number or its name.

    ``None`` means every class. Unknown or repeated classes raise a ValueError naming ``classes``.
    """
    if classes is None:
        return tuple(range(len(names)))
    if isinstance(classes, (str, numbers.Integral)):
        raise ValueError(f"classes must be a sequence such as (0, 1), got {classes!r}")
    picked = []
    for c in classes:
        if isinstance(c, str) and c in names:
            picked.append(names.index(c))
        elif not isinstance(c, bool) and isinstance(c, numbers.Integral) and 0 <= c < len(names):
            picked.append(int(c))
        else:
            accepted = ", ".join(f"{v} ({n!r})" if str(v) != n else str(v) for v, n in enumerate(names))
            raise ValueError(f"classes: {c!r} is not a class of {dataset}; accepted: {accepted}")
    if len(set(picked)) != len(picked):
        raise ValueError(f"classes={tuple(classes)!r} names a class twice")
    if len(picked) < 2:
        raise ValueError(f"classes must name at least two classes, got {tuple(classes)!r}")
    return tuple(picked)


def per_class(n: int, n_classes: int) -> np.ndarray:
    """How many of ``n`` points each class gets in a balanced draw (module docstring)."""
    counts = np.full(n_classes, n // n_classes)
    counts[: n % n_classes] += 1
    return counts


def _check_size(n, name, low=1):
    return None if n is None else check_int(n, name, low=low)


def _shortage(name, n, need, have, cls, extra=""):
    return ValueError(f"{name}={n} asks for {need} points of class {cls!r}, but it has only {have}{extra}; "
                      f"ask for fewer points")


def _no_rest(name, n, other, cls, size):
    """The split ``other`` (None: the rest of each class) would get no point of class ``cls``."""
    hint = ", or pass n_test=0 for no test set" if other == "n_test" else ""
    return ValueError(f"{name}={n} takes all {size} points of class {cls!r}, which leaves none for the "
                      f"{'test' if other == 'n_test' else 'training'} set ({other}=None takes the rest of each "
                      f"class); ask for fewer points, give {other}{hint}")


def draw(targets: np.ndarray, picked: tuple, names: tuple, n_train, n_test, gen,
         test_targets: np.ndarray | None = None):
    """Indices of a balanced train and test draw.

    ``targets`` (n,) holds the class numbers of the pool, ``picked`` the chosen ones. With ``test_targets``
    (an official test split) train indices come from ``targets`` and test indices from ``test_targets``;
    ``None`` takes all points of the chosen classes. Without it both come from the same pool, disjoint:
    ``None`` takes the rest of each class after the other split (both ``None``: half of each class, the
    extra one to training), and must leave at least one point of each class. ``n_test=0``: no test set.
    Returns ``(train_idx, train_pos, test_idx, test_pos)`` with ``*_pos`` the label positions 0..C−1.
    """
    n_train, n_test = _check_size(n_train, "n_train"), _check_size(n_test, "n_test", low=0)
    c = len(picked)
    tr, te = [], []
    for k, cls in enumerate(picked):
        pool = gen.permutation(np.flatnonzero(targets == cls))
        if test_targets is not None:
            test_pool = gen.permutation(np.flatnonzero(test_targets == cls))
            n_tr = len(pool) if n_train is None else per_class(n_train, c)[k]
            n_te = len(test_pool) if n_test is None else per_class(n_test, c)[k]
            if n_tr > len(pool):
                raise _shortage("n_train", n_train, n_tr, len(pool), names[cls], " in the training split")
            if n_te > len(test_pool):
                raise _shortage("n_test", n_test, n_te, len(test_pool), names[cls], " in the test split")
            tr.append(pool[:n_tr])
            te.append(test_pool[:n_te])
            continue
        size = len(pool)
        if n_train is None and n_test is None:
            n_tr = size - size // 2
            n_te = size // 2
        else:
            n_te = size - per_class(n_train, c)[k] if n_test is None else per_class(n_test, c)[k]
            n_tr = size - n_te if n_train is None else per_class(n_train, c)[k]
        if n_test is not None and n_te > size:
            raise _shortage("n_test", n_test, n_te, size, names[cls])
        if n_train is not None and n_tr + max(n_te, 0) > size:
            extra = f" ({n_te} of them already go to the test set)" if n_te > 0 else ""
            raise _shortage("n_train", n_train, n_tr, size - max(n_te, 0), names[cls], extra)
        if n_test is None and n_te == 0:
            raise _no_rest("n_train", "None" if n_train is None else n_train, "n_test", names[cls], size)
        if n_train is None and n_tr == 0:
            raise _no_rest("n_test", n_test, "n_train", names[cls], size)
        te.append(pool[:n_te])
        tr.append(pool[n_te:n_te + n_tr])
    train_pos = np.concatenate([np.full(len(i), k) for k, i in enumerate(tr)])
    test_pos = np.concatenate([np.full(len(i), k) for k, i in enumerate(te)])
    p_tr, p_te = gen.permutation(len(train_pos)), gen.permutation(len(test_pos))
    return np.concatenate(tr)[p_tr], train_pos[p_tr], np.concatenate(te)[p_te], test_pos[p_te]


def make_dataset(name: str, x, targets, names: tuple, *, classes, n_train, n_test, seed,
                 preprocess, labels, x_test=None, test_targets=None, pixel_scale=1.0, meta=None) -> Dataset:
    """Select ``classes``, draw a balanced seeded split, preprocess with training statistics, code labels.

    ``x`` (n, ...) and ``targets`` (n,) hold the pool, with classes 0..C−1 named ``names``;
    ``x_test``/``test_targets`` an official test split if the dataset has one. The chosen rows (only those,
    so that a large uint8 pool is never copied whole) are divided by ``pixel_scale`` as float64.
    """
    picked = resolve_classes(classes, names, name)
    gen = rng(seed)
    official = test_targets is not None
    tr, tr_pos, te, te_pos = draw(np.asarray(targets), picked, names, n_train, n_test, gen,
                                  np.asarray(test_targets) if official else None)
    xt = np.asarray(x)[tr] / float(pixel_scale)
    xs = np.asarray(x_test if official else x)[te] / float(pixel_scale)
    xt, xs = apply_preprocess(xt, xs, preprocess)
    c = len(picked)
    return Dataset(xt, encode_labels(tr_pos, c, labels), xs, encode_labels(te_pos, c, labels),
                   classes=picked, class_names=tuple(names[i] for i in picked),
                   name=name, meta=dict(meta or {}))
