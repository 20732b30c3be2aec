"""The label set of a classifier: class names in id order and the values that stand for them in the data.

The set comes from the training data (its sorted unique values) or from `data.labels` (`--labels`):
names in order (`"very negative,negative,neutral,positive,very positive"`), or a mapping from the
values in the files to names (`"0=very negative,1=negative,..."`). Binary data spelled the way the
seed protocol spells them (0/1, neg/pos, negative/positive) keep the names NEGATIVE and POSITIVE.

The set is saved as labels.json beside the weights of every artifact (run, merged model, export,
Hub repo), and the model's config carries the names as id2label/label2id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import DataError

LABELS_FILE = "labels.json"
# The seed protocol's spellings of the two classes (strings compared lower-case).
_BINARY_SPELLINGS = {"neg": 0, "negative": 0, "pos": 1, "positive": 1, "0": 0, "1": 1}


def first_repeat(items: Iterable[str]) -> str | None:
    """The first item equal to an earlier one (stripped, case ignored), or None."""
    seen: set[str] = set()
    for item in items:
        if item.strip().lower() in seen:
            return item
        seen.add(item.strip().lower())
    return None


@dataclass(frozen=True)
class LabelSet:
    names: tuple[str, ...]  # class names, in id order
    values: tuple[str, ...]  # the value that stands for each class in the data, as text

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise DataError(f"a classifier needs at least two classes, got {len(self.names)}: {list(self.names)}")
        if len(self.values) != len(self.names):
            raise DataError(f"{len(self.names)} label names but {len(self.values)} values")
        for what, items in (("name", self.names), ("value", self.values)):
            if not all(item.strip() for item in items):
                raise DataError(f"a label {what} is empty: {list(items)}")
            repeated = first_repeat(items)
            if repeated is not None:
                raise DataError(f"label {what} {repeated!r} is given twice: {list(items)}")

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @property
    def is_binary(self) -> bool:
        return len(self.names) == 2

    @property
    def is_seed_binary(self) -> bool:
        """The seed protocol's two classes: values 0/1 (also spelled neg/pos, negative/positive)."""
        return self.values == ("0", "1")

    def id_of(self, value: object) -> int | None:
        """The class id of a value read from the data (its value, or its name); None when it is neither."""
        key = value_key(value)
        if key is None:
            return None
        for i, (name, stored) in enumerate(zip(self.names, self.values)):
            if key == stored.strip().lower() or key == name.strip().lower():
                return i
        if self.is_seed_binary:
            return _BINARY_SPELLINGS.get(key)
        return None

    def to_dict(self) -> dict[str, list[str]]:
        return {"names": list(self.names), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabelSet":
        return cls(names=tuple(str(n) for n in data["names"]), values=tuple(str(v) for v in data["values"]))


BINARY = LabelSet(names=("NEGATIVE", "POSITIVE"), values=("0", "1"))


def value_key(value: object) -> str | None:
    """How a label value is compared: integers (also 3.0) as their digits, text stripped and
    lower-case; None for what cannot be a label (booleans, fractions, missing values, lists)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else None
    if isinstance(value, str):
        return value.strip().lower() or None
    return None


def parse_option(text: str) -> tuple[list[str], list[str] | None]:
    """`--labels` -> (names, values): "a,b,c" gives names only (values None); "0=a,1=b" gives both."""
    parts = [part.strip() for part in text.split(",")]
    if any(not part for part in parts):
        raise DataError(f"--labels {text!r}: an empty name between commas")
    mapped = ["=" in part for part in parts]
    if any(mapped) and not all(mapped):
        raise DataError(f"--labels {text!r}: give every class as VALUE=NAME, or names only")
    if any(mapped):
        pairs = [part.split("=", 1) for part in parts]
        names, values = [n.strip() for _, n in pairs], [v.strip() for v, _ in pairs]
    else:
        names, values = parts, None
    for what, items in (("name", names), ("value", values or [])):
        if not all(items):
            raise DataError(f"--labels {text!r}: a class without a {what}")
        repeated = first_repeat(items)
        if repeated is not None:
            raise DataError(f"--labels {text!r}: label {what} {repeated!r} is given twice")
    return names, values



def infer(values: Iterable[object], option: str | None, origin: str, column: str = "label") -> LabelSet:
    """The label set of a training split's label values, named by `option` (`--labels`) when given."""
    keys: dict[str, object] = {}
    bad = []
    for value in values:
        key = value_key(value)
        if key is None:
            bad.append(value)
        else:
            keys.setdefault(key, value)
    if bad:
        shown = ", ".join(sorted({repr(v) for v in bad})[:5])
        raise DataError(f"{origin}: {len(bad)} label(s) in column {column!r} are not classes: {shown} "
                        "(use integers or names)")
    if len(keys) < 2:
        raise DataError(f"{origin}: the labels hold only one class ({', '.join(map(repr, keys.values())) or 'none'})")
    seed_binary = set(keys) <= set(_BINARY_SPELLINGS) and len({_BINARY_SPELLINGS[k] for k in keys}) == 2
    if option is None or not option.strip():
        if seed_binary:
            return BINARY
        ordered = sorted(keys.values(), key=_sort_key)
        return LabelSet(names=tuple(str(v).strip() for v in ordered), values=tuple(value_key(v) for v in ordered))
    names, given = parse_option(option)
    if given is not None:
        labels = LabelSet(names=tuple(names), values=tuple(value_key(v) or v for v in given))
        unknown = [keys[k] for k in keys if labels.id_of(keys[k]) is None]
        if unknown:
            raise DataError(f"{origin}: label {unknown[0]!r} is not in --labels {option!r}")
        return labels
    if seed_binary and len(names) == 2:
        return LabelSet(names=tuple(names), values=BINARY.values)
    if len(names) != len(keys):
        raise DataError(f"{origin}: --labels names {len(names)} classes but the data hold {len(keys)} "
                        f"({', '.join(repr(keys[k]) for k in sorted(keys, key=lambda k: _sort_key(keys[k])))})")
    ordered = sorted(keys.values(), key=_sort_key)
    return LabelSet(names=tuple(names), values=tuple(value_key(v) for v in ordered))


def _sort_key(value: object) -> tuple[int, float, str]:
    """Numbers in numeric order, before text in alphabetical order."""
    key = value_key(value) or ""
    try:
        return (0, float(key), "")
    except ValueError:
        return (1, 0.0, key)


def to_ids(values: Iterable[object], labels: LabelSet, origin: str, column: str) -> list[int]:
    """The class id of every value, or an error naming the values that are not classes of `labels`."""
    values = list(values)
    ids = [labels.id_of(value) for value in values]
    bad = [value for value, i in zip(values, ids) if i is None]
    if bad:
        shown = ", ".join(sorted({repr(v) for v in bad})[:5])
        if labels.is_seed_binary:
            raise DataError(f"{origin}: {len(bad)} label(s) outside the two classes in column {column!r}: "
                            f"{shown} (use 0/1, neg/pos or negative/positive)")
        raise DataError(f"{origin}: {len(bad)} label(s) in column {column!r} are not classes the model was "
                        f"trained on: {shown} (classes: {', '.join(labels.names)})")
    return ids  # type: ignore[return-value]


def save_labels(labels: LabelSet, folder: Path) -> None:
    (Path(folder) / LABELS_FILE).write_text(json.dumps(labels.to_dict(), indent=2) + "\n", encoding="utf-8")


def labels_of_folder(folder: Path | None, id2label: Mapping[Any, str] | None = None) -> LabelSet:
    """The label set saved with an artifact; without labels.json, the names of its config's id2label
    (values: the ids), and the seed protocol's two classes when there is neither."""
    if folder is not None and (Path(folder) / LABELS_FILE).is_file():
        try:
            return LabelSet.from_dict(json.loads((Path(folder) / LABELS_FILE).read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{Path(folder) / LABELS_FILE} is not a label set: {err}") from None
    if id2label:
        ordered = sorted(((int(k), str(v)) for k, v in id2label.items()))
        names = tuple(name for _, name in ordered)
        if names == BINARY.names:
            return BINARY
        # ("LABEL_0", "LABEL_1"): transformers' placeholders, a config never given names.
        if [i for i, _ in ordered] == list(range(len(ordered))) and names != ("LABEL_0", "LABEL_1"):
            return LabelSet(names=names, values=tuple(str(i) for i in range(len(names))))
    return BINARY
