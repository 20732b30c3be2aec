"""Binary classification metrics (scikit-learn; nothing fetched at run time)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    f1: float  # of the POSITIVE class
    precision: float
    recall: float
    confusion_matrix: list[list[int]]  # rows: true NEGATIVE, POSITIVE; columns: predicted
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def binary_metrics(labels: Sequence[int], preds: Sequence[int]) -> Metrics:
    """Accuracy, and precision/recall/F1 with POSITIVE (1) as the positive class."""
    if len(labels) != len(preds):
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    if not labels:
        raise ValueError("no labels to score")
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, average="binary", pos_label=1, zero_division=0
    )
    matrix = confusion_matrix(labels, preds, labels=[0, 1])
    return Metrics(
        accuracy=float(accuracy_score(labels, preds)),
        f1=float(f1),
        precision=float(precision),
        recall=float(recall),
        confusion_matrix=matrix.tolist(),
        n=len(labels),
    )
