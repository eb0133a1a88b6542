"""Comparing classifiers over many data sets: the metrics of Fernández-Delgado et al. (JMLR 2014, "Do we need hundreds
of classifiers to solve real world classification problems?") as Arora et al. (ICLR 2020, "Harnessing the power of
infinitely wide deep nets on small-data tasks", Section 5) report them.

For an accuracy table ``A`` of ``n`` data sets (rows) by ``m`` classifiers (columns), with ``best_i = max_j A_ij``
over every classifier in the table:

* **Friedman rank**: on each data set the classifiers are ranked by accuracy, 1 the best, ties sharing the average of
  their ranks (Friedman 1937; Demšar, JMLR 2006); a classifier's rank is the mean of its ranks over the data sets;
* **average accuracy**, ± its standard deviation over data sets;
* **P90, P95**: the share of data sets on which ``A_ij / best_i`` is strictly above 0.90 / 0.95;
* **PMA** (percentage of the maximum accuracy): the mean of ``A_ij / best_i``, ± its standard deviation.

Missing results (NaN in the table: the classifier failed, or was not run, on that data set). Friedman's ranks need
every classifier ranked on every data set: a missing result is ranked below every result on its data set (the missing
ones share the average of the last ranks, as ties do), so every data set contributes the ranks ``1..m`` and a
classifier gains nothing by failing. The other metrics are means over the data sets on which the classifier has a
result (``n_results`` says how many); ``best_i`` is taken over the results present. Standard deviations are those of
the values over data sets (``ddof = 0``, numpy's default; Arora et al. do not say which; the two differ by a factor
``√(n/(n−1))``, 1% at ``n = 45``).

>>> import numpy as np
>>> from ntkcore.benchmark import classifier_metrics
>>> m = classifier_metrics([[90.0, 80.0], [70.0, np.nan]], names=["a", "b"])
>>> m.friedman_rank.tolist(), m.pma.tolist()
([1.0, 2.0], [1.0, 0.8888888888888888])
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

from ._checks import as_numpy

__all__ = ["ClassifierMetrics", "classifier_metrics", "friedman_ranks"]


class ClassifierMetrics(NamedTuple):
    """The metrics of :func:`classifier_metrics`, each an array ``(m,)`` in the order of the table's columns
    (accuracies in the table's unit, percent or fraction; P90, P95 and PMA as fractions in [0, 1]).
    ``pandas.DataFrame(metrics._asdict())`` makes it a table."""

    names: tuple
    friedman_rank: np.ndarray
    accuracy: np.ndarray
    accuracy_std: np.ndarray
    p90: np.ndarray
    p95: np.ndarray
    pma: np.ndarray
    pma_std: np.ndarray
    n_results: np.ndarray


def _table(accuracy) -> np.ndarray:
    """The accuracy table as float64 ``(n, m)``: NaN for a missing result, else finite and ≥ 0; every data set
    with a result > 0."""
    acc = as_numpy(accuracy, "accuracy", finite=False)
    if acc.ndim != 2 or 0 in acc.shape:
        raise ValueError(f"accuracy must be a 2-D table (n_datasets, n_classifiers) with at least one row and one "
                         f"column, got shape {acc.shape}")
    present = ~np.isnan(acc)
    if not np.all(np.isfinite(acc[present]) & (acc[present] >= 0)):
        raise ValueError("accuracy must hold accuracies >= 0 (percent or fractions) or NaN for a missing result; "
                         "it contains inf or a negative value")
    empty = np.flatnonzero(~np.any(present & (np.nan_to_num(acc) > 0), axis=1))
    if empty.size:
        raise ValueError(f"accuracy: every data set (row) needs a result > 0 to compare with; rows {empty.tolist()} "
                         "have none")
    return acc


def _names(names, m: int) -> tuple:
    if names is None:
        return tuple(str(j) for j in range(m))
    if isinstance(names, str) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names) \
            or len(names) != m:
        raise ValueError(f"names must be {m} distinct strings, one per column of accuracy, got {names!r}")
    return tuple(names)


def friedman_ranks(accuracy) -> np.ndarray:
    """Ranks ``(n, m)`` of the classifiers on each data set: 1 the most accurate, ties sharing the average of their
    ranks, missing results (NaN) below every result (module docstring)."""
    acc = _table(accuracy)
    return rankdata(np.where(np.isnan(acc), np.inf, -acc), method="average", axis=1)


def _over_results(values: np.ndarray):
    """Mean and standard deviation (ddof = 0) of each column over its non-NaN entries; NaN for an empty column."""
    count = np.sum(~np.isnan(values), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(values, axis=0) / count
        var = np.nansum((values - mean) ** 2, axis=0) / count
    return mean, np.sqrt(var)


def _share(hit: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Share of each column's results (``present``) that are hits."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(hit & present, axis=0) / np.sum(present, axis=0)


def classifier_metrics(accuracy, names=None) -> ClassifierMetrics:
    """Friedman rank, average accuracy, P90, P95 and PMA of each classifier (Fernández-Delgado et al. 2014; Arora et
    al. 2020, Section 5; definitions and the handling of missing results in the module docstring).

    Parameters
    ----------
    accuracy : array ``(n_datasets, n_classifiers)`` of accuracies ≥ 0 (percent or fractions: every metric but the
        average accuracy is scale-free), NaN for a missing result. The best accuracy of a data set is taken over
        every classifier in the table, so the classifiers being compared must all be columns of it.
    names : ``n_classifiers`` distinct strings, the columns' names (default ``"0"``, ``"1"``, ...).

    Returns
    -------
    ClassifierMetrics, one entry per classifier. A classifier without any result has NaN metrics (and the
    average of the last ranks).
    """
    acc = _table(accuracy)
    names = _names(names, acc.shape[1])
    present = ~np.isnan(acc)
    ratio = acc / np.nanmax(acc, axis=1, keepdims=True)
    mean, std = _over_results(acc)
    pma, pma_std = _over_results(ratio)
    return ClassifierMetrics(names, friedman_ranks(acc).mean(axis=0), mean, std,
                             _share(ratio > 0.90, present), _share(ratio > 0.95, present), pma, pma_std,
                             present.sum(axis=0))
