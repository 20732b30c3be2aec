"""Statistics for comparing runs on one test set: seed spread, bootstrap intervals, paired tests.

Every function takes plain arrays: `labels` (n,) of class ids 0..k-1, and predictions per seed (s, n),
all on the same test reviews in the same order. Bootstrap resamples are rows of an index matrix
(B, n) drawn once and shared by every method, so that paired differences use the same resamples.

"f1" is what metrics.py calls f1: with two classes the F1 of the positive class (1), with more the
macro-F1. "macro_f1" is the macro-F1 for any number of classes, as scikit-learn's
`f1_score(average="macro", labels=range(k), zero_division=0)`: a class absent from both the labels
and the predictions of a resample still counts, with F1 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import binomtest

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    value: float  # on the test set as it is
    low: float
    high: float


@dataclass(frozen=True)
class McNemar:
    only_a: int  # reviews model A gets right and B gets wrong
    only_b: int  # reviews B gets right and A gets wrong
    statistic: float  # chi-square with continuity correction, (|b - c| - 1)^2 / (b + c)
    p_value: float  # exact two-sided binomial test on the discordant reviews


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the deviation is None for one value."""
    if not values:
        raise ValueError("no values")
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return float(array.mean()), std


def bootstrap_indices(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, n) indices drawn with replacement."""
    if n <= 0 or resamples <= 0:
        raise ValueError("need at least one review and one resample")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def accuracy_rows(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Accuracy of each row of `preds` (..., n) against `labels` (..., n)."""
    return (np.asarray(preds) == np.asarray(labels)).mean(axis=-1)


def f1_rows(labels: np.ndarray, preds: np.ndarray, classes: int | None = None) -> np.ndarray:
    """F1 of the positive class (1) for each row when there are two classes, as the binary runs have
    always reported it (0 where a row has no positive label or prediction); macro-F1 for more.
    `classes`: by default what the ids imply (n_classes)."""
    classes = classes or n_classes(labels, preds)
    if classes > 2:
        return macro_f1_rows(labels, preds, classes)
    labels, preds = np.asarray(labels), np.asarray(preds)
    tp = ((preds == 1) & (labels == 1)).sum(axis=-1)
    fp = ((preds == 1) & (labels == 0)).sum(axis=-1)
    fn = ((preds == 0) & (labels == 1)).sum(axis=-1)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def macro_f1_rows(labels: np.ndarray, preds: np.ndarray, classes: int | None = None) -> np.ndarray:
    """Mean over the classes of each class's F1, 2 tp / (predicted + true), for each row; a class with
    neither counts 0. `classes`: by default what the ids imply (n_classes)."""
    tp, predicted, true = class_counts(labels, preds, classes or n_classes(labels, preds))
    denominator = predicted + true
    per_class = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return per_class.mean(axis=-1)


def class_counts(labels: np.ndarray, preds: np.ndarray, classes: int) -> tuple[np.ndarray, ...]:
    """True positives, predictions and labels of each class in each row, each (..., classes).

    One bincount over all rows at once (each row's ids shifted into its own block of `classes` bins):
    bootstrap matrices have thousands of rows, and a loop over them or over classes would be slow."""
    labels, preds = _class_ids(classes, np.asarray(labels), np.asarray(preds))
    shape = labels.shape[:-1]
    offsets = np.arange(int(np.prod(shape)) * classes, step=classes).reshape(*shape, 1)
    size = offsets.size * classes

    def count(ids: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        flat = None if weights is None else weights.ravel()
        return np.bincount((offsets + ids).ravel(), flat, minlength=size).reshape(*shape, classes)

    return count(labels, labels == preds), count(preds), count(labels)


def confusion_counts(labels: np.ndarray, preds_by_seed: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts, true classes down and predictions across, summed over the seeds:
    labels (n,), predictions (s, n) or (n,)."""
    labels, preds = _class_ids(classes, np.asarray(labels), np.atleast_2d(np.asarray(preds_by_seed)))
    cells = np.bincount((labels * classes + preds).ravel(), minlength=classes * classes)
    return cells.reshape(classes, classes)


def _class_ids(classes: int, labels: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions broadcast to one shape, checked to be ids 0..classes-1: an id outside
    would be counted in the wrong bin, not fail."""
    labels, preds = np.broadcast_arrays(labels, preds)
    for name, ids in (("label", labels), ("prediction", preds)):
        if ids.size and (ids.min() < 0 or ids.max() >= classes):
            raise ValueError(f"a {name} is not a class id 0..{classes - 1}")
    return labels, preds


def n_classes(*arrays: np.ndarray) -> int:
    """The number of classes the ids in `arrays` imply: the largest id + 1, and at least two."""
    return max([2, *(int(np.max(a)) + 1 for a in arrays if np.size(a))])


METRICS = {
    "accuracy": lambda labels, preds, classes: accuracy_rows(labels, preds),
    "f1": f1_rows,
    "macro_f1": macro_f1_rows,
}


def _seed_mean(metric: str, labels: np.ndarray, preds_by_seed: np.ndarray, index: np.ndarray | None,
               classes: int) -> np.ndarray:
    """The metric averaged over seeds, on the test set (index None) or on each resample."""
    labels = np.asarray(labels)
    preds_by_seed = np.atleast_2d(np.asarray(preds_by_seed))
    score = METRICS[metric]
    if index is None:
        return score(labels[None, :], preds_by_seed, classes).mean()
    resampled_labels = labels[index]  # (B, n)
    per_seed = [score(resampled_labels, p[index], classes) for p in preds_by_seed]  # s x (B,)
    return np.mean(per_seed, axis=0)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(metric: str, labels: np.ndarray, preds_by_seed: np.ndarray, index: np.ndarray,
                       level: float = LEVEL, classes: int | None = None) -> Interval:
    """Percentile bootstrap interval over test reviews for the seed-averaged metric. `classes`: the
    number of classes, by default what the ids imply; decided once for the whole test set, since a
    resample may lack the last class."""
    classes = classes or n_classes(labels, preds_by_seed)
    value = float(_seed_mean(metric, labels, preds_by_seed, None, classes))
    low, high = percentile_interval(_seed_mean(metric, labels, preds_by_seed, index, classes), level)
    return Interval(value, low, high)


def paired_difference(metric: str, labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray,
                      index: np.ndarray, level: float = LEVEL, classes: int | None = None) -> Interval:
    """A minus B for the seed-averaged metric, with a paired bootstrap interval: both are scored on
    the same resampled reviews, so the reviews' difficulty cancels out of the difference. `classes`:
    as for bootstrap_interval."""
    classes = classes or n_classes(labels, preds_a, preds_b)
    value = float(_seed_mean(metric, labels, preds_a, None, classes)
                  - _seed_mean(metric, labels, preds_b, None, classes))
    samples = (_seed_mean(metric, labels, preds_a, index, classes)
               - _seed_mean(metric, labels, preds_b, index, classes))
    low, high = percentile_interval(samples, level)
    return Interval(value, low, high)


def mcnemar(labels: Sequence[int], preds_a: Sequence[int], preds_b: Sequence[int]) -> McNemar:
    """McNemar's test of whether A and B have the same error rate on the same reviews."""
    labels, preds_a, preds_b = map(np.asarray, (labels, preds_a, preds_b))
    if not (labels.shape == preds_a.shape == preds_b.shape):
        raise ValueError("labels and both prediction vectors must have the same length")
    right_a, right_b = preds_a == labels, preds_b == labels
    b = int((right_a & ~right_b).sum())
    c = int((~right_a & right_b).sum())
    n = b + c
    if n == 0:
        return McNemar(b, c, 0.0, 1.0)
    statistic = (abs(b - c) - 1) ** 2 / n if abs(b - c) >= 1 else 0.0
    # Exact test: Binomial(n, 1/2) is symmetric, so this is 2 * P(X <= min(b, c)), capped at 1. min(b, c)
    # makes McNemar(a, b) and McNemar(b, a) give the same float, not two that differ in the last bit.
    return McNemar(b, c, float(statistic), float(binomtest(min(b, c), n, 0.5).pvalue))
