"""binary_metrics against values computed by hand."""

from __future__ import annotations

import pytest

from peft_sentiment.metrics import Metrics, binary_metrics


def test_hand_computed_example() -> None:
    labels = [1, 1, 1, 0, 0, 0, 0, 0, 1, 0]
    preds = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    # TP = 2 (0, 8), FN = 2 (1, 2), FP = 1 (4), TN = 5 (3, 5, 6, 7, 9)
    m = binary_metrics(labels, preds)
    assert m.accuracy == pytest.approx(7 / 10)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 4)
    assert m.f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))  # = 4/7
    assert m.f1 == pytest.approx(4 / 7)
    assert m.confusion_matrix == [[5, 1], [2, 2]]  # rows true NEG, POS; columns predicted
    assert m.n == 10


def test_positive_class_is_one_not_zero() -> None:
    # Swapping which class is positive changes precision and recall: F1 must be POSITIVE's.
    labels = [1, 1, 1, 1, 0, 0]
    preds = [1, 1, 1, 1, 1, 1]
    m = binary_metrics(labels, preds)
    assert m.precision == pytest.approx(4 / 6)
    assert m.recall == pytest.approx(1.0)
    assert m.f1 == pytest.approx(2 * (4 / 6) / (4 / 6 + 1))  # 0.8
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.confusion_matrix == [[0, 2], [0, 4]]


def test_perfect_predictions() -> None:
    m = binary_metrics([0, 1, 0, 1], [0, 1, 0, 1])
    assert (m.accuracy, m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0, 1.0)
    assert m.confusion_matrix == [[2, 0], [0, 2]]


def test_zero_division_when_nothing_is_predicted_positive() -> None:
    m = binary_metrics([1, 0, 1, 0], [0, 0, 0, 0])
    assert m.accuracy == pytest.approx(0.5)
    assert m.precision == 0.0  # 0/0 -> 0, not NaN, no exception
    assert m.recall == 0.0
    assert m.f1 == 0.0
    assert m.confusion_matrix == [[2, 0], [2, 0]]


def test_zero_division_with_a_single_class() -> None:
    m = binary_metrics([0, 0, 0], [0, 0, 0])
    assert m.accuracy == 1.0
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    assert m.confusion_matrix == [[3, 0], [0, 0]]  # still 2x2 with one class only
    m = binary_metrics([1, 1], [1, 1])
    assert m.confusion_matrix == [[0, 0], [0, 2]]
    assert m.f1 == 1.0


def test_values_are_plain_python_types() -> None:
    m = binary_metrics([0, 1, 1], [0, 1, 0])
    d = m.to_dict()
    assert set(d) == {"accuracy", "f1", "precision", "recall", "confusion_matrix", "n"}
    assert all(type(d[k]) is float for k in ("accuracy", "f1", "precision", "recall"))
    assert all(type(v) is int for row in d["confusion_matrix"] for v in row)
    assert isinstance(m, Metrics)


@pytest.mark.parametrize("labels, preds", [([0, 1, 1], [0, 1]), ([0], [0, 1]), ([], [1])])
def test_mismatched_lengths_raise(labels: list[int], preds: list[int]) -> None:
    with pytest.raises(ValueError, match="labels but"):
        binary_metrics(labels, preds)


def test_empty_input_raises() -> None:
    with pytest.raises(ValueError, match="no labels"):
        binary_metrics([], [])
