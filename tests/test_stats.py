"""Statistics against values worked out by hand on small fixed inputs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score

from peft_sentiment.stats import (
    accuracy_rows,
    bootstrap_indices,
    bootstrap_interval,
    confusion_counts,
    f1_rows,
    macro_f1_rows,
    mcnemar,
    mean_std,
    n_classes,
    paired_difference,
    percentile_interval,
)


def test_mean_and_sample_standard_deviation() -> None:
    mean, std = mean_std([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9)
    assert std == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)
    assert mean_std([0.7]) == (0.7, None)
    with pytest.raises(ValueError):
        mean_std([])


def test_accuracy_and_f1_by_hand() -> None:
    labels = np.array([1, 1, 0, 0, 1])
    preds = np.array([1, 0, 0, 1, 1])  # tp 2, fp 1, fn 1, tn 1
    assert accuracy_rows(labels, preds) == pytest.approx(3 / 5)
    assert f1_rows(labels, preds) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # No positive label and no positive prediction: F1 is defined as 0, not a division error.
    assert f1_rows(np.array([0, 0]), np.array([0, 0])) == 0.0


def test_percentile_interval_is_numpy_linear_interpolation() -> None:
    # Sorted samples 0, 0.75, 0.75, 1: the 2.5th percentile sits 0.075 of the way from 0 to 0.75,
    # the 97.5th 0.925 of the way from 0.75 to 1.
    low, high = percentile_interval(np.array([0.75, 0.0, 1.0, 0.75]))
    assert low == pytest.approx(0.075 * 0.75)
    assert high == pytest.approx(0.75 + 0.925 * 0.25)


# Four reviews; one model right on reviews 0, 1 and 3.
LABELS = np.array([1, 0, 1, 0])
PREDS = np.array([1, 0, 0, 0])
INDEX = np.array([
    [0, 1, 2, 3],  # accuracy 3/4
    [2, 2, 2, 2],  # 0
    [0, 0, 1, 1],  # 1
    [0, 2, 1, 3],  # 3/4
])


def test_bootstrap_interval_on_a_fixed_index_matrix() -> None:
    interval = bootstrap_interval("accuracy", LABELS, PREDS[None, :], INDEX)
    assert interval.value == pytest.approx(0.75)
    assert interval.low == pytest.approx(0.075 * 0.75)
    assert interval.high == pytest.approx(0.75 + 0.925 * 0.25)


def test_bootstrap_interval_averages_seeds_on_each_resample() -> None:
    other = np.array([1, 1, 1, 0])  # right on 0, 2, 3: accuracy 3/4
    interval = bootstrap_interval("accuracy", LABELS, np.stack([PREDS, other]), INDEX)
    # Per resample, seed mean: row 0 (3/4+3/4)/2, row 1 (0+1)/2, row 2 (1+1/2)/2, row 3 (3/4+3/4)/2
    samples = np.array([0.75, 0.5, 0.75, 0.75])
    assert interval.value == pytest.approx(0.75)
    expected = np.percentile(samples, [2.5, 97.5])
    assert (interval.low, interval.high) == pytest.approx(tuple(expected))
    assert interval.low == pytest.approx(0.5 + 0.075 * 0.25)  # sorted 0.5, 0.75, 0.75, 0.75


def test_bootstrap_f1_interval_by_hand() -> None:
    # Resample 0: tp 1 fp 0 fn 1 -> 2/3. Resample 1: only review 2 (label 1, pred 0): tp 0 fn 4 -> 0.
    # Resample 2: reviews 0,0,1,1: tp 2, fp 0, fn 0 -> 1. Resample 3: same reviews as 0 -> 2/3.
    interval = bootstrap_interval("f1", LABELS, PREDS[None, :], INDEX)
    assert interval.value == pytest.approx(2 / 3)
    expected = np.percentile([2 / 3, 0.0, 1.0, 2 / 3], [2.5, 97.5])
    assert (interval.low, interval.high) == pytest.approx(tuple(expected))


def test_paired_difference_uses_the_same_resamples_for_both() -> None:
    a = PREDS  # right on 0, 1, 3
    b = np.array([0, 0, 1, 0])  # right on 1, 2, 3
    diff = paired_difference("accuracy", LABELS, a[None, :], b[None, :], INDEX)
    assert diff.value == pytest.approx(0.0)
    # Per resample a - b: row 0: 0; row 1 (review 2 x4): 0 - 1 = -1; row 2 (0,0,1,1): 1 - 1/2 = 1/2;
    # row 3: 0.
    expected = np.percentile([0.0, -1.0, 0.5, 0.0], [2.5, 97.5])
    assert (diff.low, diff.high) == pytest.approx(tuple(expected))


def test_identical_models_have_a_zero_width_paired_interval() -> None:
    index = bootstrap_indices(4, 500, seed=1)
    diff = paired_difference("accuracy", LABELS, PREDS[None, :], PREDS[None, :], index)
    assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)


def test_bootstrap_indices_are_reproducible_and_in_range() -> None:
    a, b = bootstrap_indices(10, 50, seed=3), bootstrap_indices(10, 50, seed=3)
    assert a.shape == (50, 10) and (a == b).all()
    assert a.min() >= 0 and a.max() <= 9
    assert not (a == bootstrap_indices(10, 50, seed=4)).all()
    with pytest.raises(ValueError):
        bootstrap_indices(0, 10)


def test_mcnemar_exact_p_value_by_hand() -> None:
    # A right and B wrong on 1 review, B right and A wrong on 5, both right on 2.
    labels = [1] * 8
    a = [1, 0, 0, 0, 0, 0, 1, 1]
    b = [0, 1, 1, 1, 1, 1, 1, 1]
    result = mcnemar(labels, a, b)
    assert (result.only_a, result.only_b) == (1, 5)
    # Two-sided binomial(6, 1/2) tail at 1: 2 * (C(6,0) + C(6,1)) / 2^6 = 14 / 64.
    assert result.p_value == pytest.approx(14 / 64)
    assert result.statistic == pytest.approx((abs(1 - 5) - 1) ** 2 / 6)
    swapped = mcnemar(labels, b, a)
    assert (swapped.only_a, swapped.only_b, swapped.p_value) == (5, 1, result.p_value)


def test_mcnemar_edge_cases() -> None:
    same = mcnemar([1, 0, 1], [1, 0, 0], [1, 0, 0])
    assert (same.only_a, same.only_b, same.statistic, same.p_value) == (0, 0, 0.0, 1.0)
    balanced = mcnemar([1, 1], [1, 0], [0, 1])
    assert balanced.p_value == 1.0  # 2 * (1 + 2) / 4 capped at 1
    lopsided = mcnemar([1] * 10, [1] * 10, [0] * 10)
    assert lopsided.p_value == pytest.approx(2 / 2**10)
    assert lopsided.statistic == pytest.approx(81 / 10)
    assert math.isclose(mcnemar([0], [0], [1]).p_value, 1.0)
    with pytest.raises(ValueError):
        mcnemar([1, 0], [1], [0, 1])


@pytest.mark.parametrize("b, c", [(0, 1), (1, 0), (0, 7), (3, 7), (7, 3), (12, 3), (20, 20), (21, 20),
                                  (40, 60), (150, 111), (1000, 1100)])
def test_mcnemar_p_value_is_the_exact_binomial_tail(b: int, c: int) -> None:
    """scipy's binomtest gives 2 * sum_{k <= min(b, c)} C(n, k) / 2^n (capped at 1), computed exactly."""
    n = b + c
    labels = [1] * n
    a = [1] * b + [0] * c
    other = [0] * b + [1] * c
    exact = min(Fraction(1), 2 * Fraction(sum(math.comb(n, k) for k in range(min(b, c) + 1)), 2**n))
    result = mcnemar(labels, a, other)
    assert (result.only_a, result.only_b) == (b, c)
    assert result.p_value == pytest.approx(float(exact), rel=1e-12, abs=0)
    assert mcnemar(labels, other, a).p_value == result.p_value  # symmetric to the last bit


# ---------------------------------------------------------------- any number of classes


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_f1_rows_match_scikit_learn_on_every_row(classes: int) -> None:
    """Rows of 8 reviews: with 5 classes most rows lack some class in both labels and predictions,
    and such a class still counts (F1 0) in the macro average, as with sklearn's labels=range(k)."""
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, size=(300, 8))
    preds = np.where(rng.random((300, 8)) < 0.5, labels, rng.integers(0, classes, size=(300, 8)))
    ids = list(range(classes))
    macro = [f1_score(t, p, labels=ids, average="macro", zero_division=0) for t, p in zip(labels, preds)]
    headline = macro if classes > 2 else [f1_score(t, p, pos_label=1, zero_division=0)
                                          for t, p in zip(labels, preds)]
    assert macro_f1_rows(labels, preds, classes) == pytest.approx(macro, abs=1e-12)
    assert f1_rows(labels, preds, classes) == pytest.approx(headline, abs=1e-12)
    assert min(headline) < max(headline)  # rows that differ, some of them 0


def test_the_class_count_is_inferred_or_given() -> None:
    labels, preds = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    assert n_classes(labels, preds) == 3 and n_classes(np.array([0, 0])) == 2
    # Per class F1: 1, 0, 1/2; a fourth class that appears nowhere counts 0 when the caller says it exists.
    assert f1_rows(labels, preds) == pytest.approx(1.5 / 3)
    assert macro_f1_rows(labels, preds, 4) == pytest.approx(1.5 / 4)
    with pytest.raises(ValueError, match="not a class id 0..2"):
        macro_f1_rows(labels, np.array([0, 1, 3, 2]), 3)


def test_binary_f1_is_the_positive_class_and_macro_f1_both_classes() -> None:
    labels = np.array([1, 1, 0, 0, 1])
    preds = np.array([1, 0, 0, 1, 1])  # class 1: 2 * 2 / (3 + 3); class 0: 2 * 1 / (2 + 2)
    assert f1_rows(labels, preds) == f1_rows(labels, preds, 2) == pytest.approx(2 / 3)
    assert macro_f1_rows(labels, preds) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_binary_intervals_do_not_depend_on_how_the_class_count_comes() -> None:
    index = bootstrap_indices(4, 300, seed=2)
    inferred = bootstrap_interval("f1", LABELS, PREDS[None, :], index)
    assert bootstrap_interval("f1", LABELS, PREDS[None, :], index, classes=2) == inferred
    # All-negative predictions on a resample imply one class; the interval still uses the binary F1.
    assert bootstrap_interval("f1", np.zeros(4, int), np.zeros((1, 4), int), index) == (
        bootstrap_interval("f1", np.zeros(4, int), np.zeros((1, 4), int), index, classes=2))


@pytest.mark.parametrize("classes", [3, 5])
def test_multiclass_bootstrap_and_paired_difference_match_scikit_learn(classes: int) -> None:
    rng = np.random.default_rng(10 + classes)
    n, seeds = 30, 2
    labels = rng.integers(0, classes, size=n)
    a = np.where(rng.random((seeds, n)) < 0.7, labels, rng.integers(0, classes, size=(seeds, n)))
    b = np.where(rng.random((seeds, n)) < 0.4, labels, rng.integers(0, classes, size=(seeds, n)))
    index = bootstrap_indices(n, 200, seed=classes)
    ids = list(range(classes))

    def macro(preds: np.ndarray, rows: np.ndarray) -> float:
        return float(np.mean([f1_score(labels[rows], p[rows], labels=ids, average="macro", zero_division=0)
                              for p in preds]))

    samples_a, samples_b = (np.array([macro(p, rows) for rows in index]) for p in (a, b))
    for metric in ("f1", "macro_f1"):  # the same with more than two classes
        interval = bootstrap_interval(metric, labels, a, index, classes=classes)
        assert interval.value == pytest.approx(macro(a, np.arange(n)))
        assert (interval.low, interval.high) == pytest.approx(tuple(np.percentile(samples_a, [2.5, 97.5])))
        diff = paired_difference(metric, labels, a, b, index, classes=classes)
        assert diff.value == pytest.approx(macro(a, np.arange(n)) - macro(b, np.arange(n)))
        expected = np.percentile(samples_a - samples_b, [2.5, 97.5])
        assert (diff.low, diff.high) == pytest.approx(tuple(expected))


def test_confusion_counts_sum_the_seeds() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=50)
    preds = rng.integers(0, 4, size=(3, 50))
    expected = sum(confusion_matrix(labels, p, labels=range(4)) for p in preds)
    assert (confusion_counts(labels, preds, 4) == expected).all()
    assert (confusion_counts(labels, preds[0], 4) == confusion_matrix(labels, preds[0], labels=range(4))).all()
    with pytest.raises(ValueError, match="not a class id"):
        confusion_counts(labels, preds, 3)


def test_mcnemar_counts_right_and_wrong_answers_of_any_class() -> None:
    # Three classes. A right where B is wrong: reviews 0 (B says 1), 3 (B says 0); B right where A is
    # wrong: review 2 (A says 0). Both wrong on review 4, with different wrong classes: not discordant.
    labels = [0, 1, 2, 2, 1, 0]
    a = [0, 1, 0, 2, 2, 0]
    b = [1, 1, 2, 0, 0, 0]
    result = mcnemar(labels, a, b)
    assert (result.only_a, result.only_b) == (2, 1)
    assert result.p_value == 1.0  # 2 * (C(3,0) + C(3,1)) / 8 capped at 1
    assert result.statistic == 0.0  # (|2 - 1| - 1)^2 / 3
    assert mcnemar([2] * 6, [2] * 6, [0, 1, 0, 1, 0, 1]).p_value == pytest.approx(2 / 2**6)
