"""ntkcore.benchmark.classifier_metrics on a hand-made table, every value computed by hand in the comments."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ntkcore.benchmark import classifier_metrics, friedman_ranks

NAN = np.nan
# Four data sets (rows) by four classifiers A, B, C, D (columns). Row 1 has a tie for the best and results at exactly
# 95% and 90% of the best (not "strictly above"); rows 2 and 4 have missing results; row 3 a three-way tie.
TABLE = np.array([
    [80.0, 76.0, 72.0, 80.0],   # best 80:  ratios 1, 0.95, 0.90, 1    ranks 1.5, 3, 4, 1.5 (A and D share 1 and 2)
    [50.0, 100.0, 96.0, NAN],   # best 100: ratios 0.5, 1, 0.96, -     ranks 3, 1, 2, 4 (missing: last)
    [60.0, 60.0, 60.0, 30.0],   # best 60:  ratios 1, 1, 1, 0.5        ranks 2, 2, 2, 4 (A, B, C share 1..3)
    [90.0, 45.0, NAN, NAN],     # best 90:  ratios 1, 0.5, -, -        ranks 1, 2, 3.5, 3.5 (C, D share 3 and 4)
])
NAMES = ["A", "B", "C", "D"]


def test_hand_made_table():
    m = classifier_metrics(TABLE, names=NAMES)
    assert m.names == tuple(NAMES)
    # Friedman rank, mean of the ranks above: A (1.5+3+2+1)/4, B (3+1+2+2)/4, C (4+2+2+3.5)/4, D (1.5+4+4+3.5)/4;
    # they sum to 4 · (1+2+3+4)/4 = 10
    np.testing.assert_allclose(m.friedman_rank, [1.875, 2.0, 2.875, 3.25], rtol=1e-15)
    # average accuracy over each classifier's results: A 280/4, B 281/4, C 228/3, D 110/2
    np.testing.assert_allclose(m.accuracy, [70.0, 70.25, 76.0, 55.0], rtol=1e-15)
    # A: deviations 10, -20, -10, 20 -> variance 1000/4; B: 5.75, 29.75, -10.25, -25.25 -> 1660.75/4;
    # C: -4, 20, -16 -> 672/3; D: 25, -25 -> 625
    np.testing.assert_allclose(m.accuracy_std, np.sqrt([250.0, 1660.75 / 4, 224.0, 625.0]), rtol=1e-14)
    # P90 (ratio > 0.90): A 1, 0.5, 1, 1 -> 3/4; B 0.95, 1, 1, 0.5 -> 3/4; C 0.90 (not above), 0.96, 1 -> 2/3;
    # D 1, 0.5 -> 1/2
    np.testing.assert_allclose(m.p90, [0.75, 0.75, 2 / 3, 0.5], rtol=1e-15)
    # P95 (ratio > 0.95): A 3/4; B 0.95 (not above), 1, 1, 0.5 -> 2/4; C 0.96, 1 -> 2/3; D 1/2
    np.testing.assert_allclose(m.p95, [0.75, 0.5, 2 / 3, 0.5], rtol=1e-15)
    # PMA, mean ratio: A 3.5/4, B 3.45/4, C 2.86/3, D 1.5/2
    np.testing.assert_allclose(m.pma, [0.875, 0.8625, 2.86 / 3, 0.75], rtol=1e-14)
    # A: deviations 0.125 (three times), -0.375 -> variance 0.1875/4; B: 0.0875, 0.1375, 0.1375, -0.3625 ->
    # 0.176875/4; C: -0.16/3, 0.02/3, 0.14/3 -> (0.0256+0.0004+0.0196)/9/3; D: 0.25, -0.25 -> 0.0625
    np.testing.assert_allclose(m.pma_std, np.sqrt([0.1875 / 4, 0.176875 / 4, 0.0456 / 27, 0.0625]), rtol=1e-12)
    np.testing.assert_array_equal(m.n_results, [4, 4, 3, 2])


def test_ranks_per_data_set():
    np.testing.assert_array_equal(friedman_ranks(TABLE), [[1.5, 3, 4, 1.5], [3, 1, 2, 4], [2, 2, 2, 4],
                                                          [1, 2, 3.5, 3.5]])


def test_scale_free_and_column_order():
    """Fractions give the same metrics as percent (the accuracy divided by 100); permuting the columns permutes
    them."""
    pct, frac = classifier_metrics(TABLE), classifier_metrics(TABLE / 100)
    for field in ("friedman_rank", "p90", "p95", "pma", "pma_std"):
        np.testing.assert_allclose(getattr(frac, field), getattr(pct, field), rtol=1e-14)
    np.testing.assert_allclose(frac.accuracy, pct.accuracy / 100, rtol=1e-14)
    order = [2, 0, 3, 1]
    perm = classifier_metrics(TABLE[:, order], names=[NAMES[j] for j in order])
    assert perm.names == ("C", "A", "D", "B")
    np.testing.assert_allclose(perm.friedman_rank, classifier_metrics(TABLE).friedman_rank[order], rtol=1e-15)


def test_a_classifier_without_results():
    m = classifier_metrics(np.column_stack([TABLE, np.full(4, NAN)]))
    assert m.n_results[-1] == 0 and all(math.isnan(getattr(m, f)[-1]) for f in ("accuracy", "p90", "pma"))
    # every data set ranks it last (alone on rows 1 and 3; sharing with the other missing ones on rows 2 and 4)
    np.testing.assert_allclose(m.friedman_rank[-1], (5 + 4.5 + 5 + 4) / 4)
    np.testing.assert_allclose(m.pma[:4], classifier_metrics(TABLE).pma)


@pytest.mark.parametrize("table, match", [
    ([80.0, 70.0], "2-D"),
    (np.zeros((0, 3)), "2-D"),
    ([[80.0, -1.0]], "negative"),
    ([[80.0, np.inf]], "inf"),
    ([[80.0, 70.0], [NAN, NAN]], r"rows \[1\]"),
    ([[0.0, 0.0]], r"rows \[0\]"),
    ([["80", "70"]], "accuracy must be an array of real numbers"),
])
def test_bad_table(table, match):
    with pytest.raises(ValueError, match=match):
        classifier_metrics(table)


@pytest.mark.parametrize("names", [["A", "B", "C"], ["A", "B", "C", "A"], "ABCD", ["A", "B", "C", 4]])
def test_bad_names(names):
    with pytest.raises(ValueError, match="names must be 4 distinct strings"):
        classifier_metrics(TABLE, names=names)
