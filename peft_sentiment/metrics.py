"""Classification metrics for any number of classes (scikit-learn; nothing fetched at run time).

Binary (the seed protocol's NEGATIVE/POSITIVE): `f1`, `precision` and `recall` are those of the
POSITIVE class (id 1), as they always were. More classes: they are macro averages (every class
counts the same). Both add `macro_f1`, `weighted_f1` (classes weighted by support) and a per-class
table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


@dataclass(frozen=True)
class ClassScores:
    label: str
    precision: float
    recall: float
    f1: float
    support: int  # reviews of this class in the data scored


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    f1: float  # binary: of the POSITIVE class; more classes: macro average
    precision: float
    recall: float
    confusion_matrix: list[list[int]]  # rows: true class (id order); columns: predicted
    n: int
    # With class names (classification_metrics); absent from a plain binary_metrics result.
    labels: list[str] | None = None
    macro_f1: float | None = None
    weighted_f1: float | None = None
    per_class: list[ClassScores] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.labels is None:
            for key in ("labels", "macro_f1", "weighted_f1", "per_class"):
                out.pop(key)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Metrics":
        per_class = [ClassScores(**row) for row in data.get("per_class") or []]
        return cls(accuracy=data["accuracy"], f1=data["f1"], precision=data["precision"], recall=data["recall"],
                   confusion_matrix=data["confusion_matrix"], n=data["n"], labels=data.get("labels"),
                   macro_f1=data.get("macro_f1"), weighted_f1=data.get("weighted_f1"), per_class=per_class)


def _check(labels: Sequence[int], preds: Sequence[int]) -> None:
    if len(labels) != len(preds):
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    if not labels:
        raise ValueError("no labels to score")


def binary_metrics(labels: Sequence[int], preds: Sequence[int]) -> Metrics:
    """Accuracy, and precision/recall/F1 with POSITIVE (1) as the positive class."""
    _check(labels, preds)
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


def classification_metrics(labels: Sequence[int], preds: Sequence[int], names: Sequence[str]) -> Metrics:
    """Every metric for class ids 0..len(names)-1: accuracy, F1 (see the module's note), macro and
    weighted F1, per-class precision/recall/F1/support, and the confusion matrix."""
    _check(labels, preds)
    ids = list(range(len(names)))
    outside = sorted({int(v) for v in (*labels, *preds)} - set(ids))
    if outside:
        raise ValueError(f"class id {outside[0]} is not one of the {len(names)} classes")
    p, r, f, support = precision_recall_fscore_support(labels, preds, labels=ids, average=None, zero_division=0)
    per_class = [ClassScores(label=str(name), precision=float(p[i]), recall=float(r[i]), f1=float(f[i]),
                             support=int(support[i])) for i, name in enumerate(names)]
    macro = precision_recall_fscore_support(labels, preds, labels=ids, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(labels, preds, labels=ids, average="weighted", zero_division=0)
    if len(names) == 2:  # the POSITIVE class's (id 1), as binary_metrics reports them
        precision, recall, f1 = float(p[1]), float(r[1]), float(f[1])
    else:
        precision, recall, f1 = float(macro[0]), float(macro[1]), float(macro[2])
    return Metrics(
        accuracy=float(accuracy_score(labels, preds)),
        f1=f1,
        precision=precision,
        recall=recall,
        confusion_matrix=confusion_matrix(labels, preds, labels=ids).tolist(),
        n=len(labels),
        labels=[str(name) for name in names],
        macro_f1=float(macro[2]),
        weighted_f1=float(weighted[2]),
        per_class=per_class,
    )
