"""Load a sentiment data set and take the seed protocol's subsets.

Sources: a Hub dataset id (default `stanfordnlp/imdb`), a folder with train and test files
(parquet, CSV or JSON Lines), or an `aclImdb` folder as Stanford distributes it.
The subset of each split is `shuffle(seed=shuffle_seed).select(range(n))`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from .config import DataConfig, expand_path, looks_like_path
from .errors import DataError, first_line
from .labels import BINARY, LabelSet, infer, to_ids

# The seed protocol's two classes (any other label set comes from the data: labels.py).
ID2LABEL = BINARY.id2label
LABEL2ID = BINARY.label2id
_FILE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}


@dataclass(frozen=True)
class Splits:
    train: Dataset | None  # columns: text, label (class id); None when only the test split was asked for
    test: Dataset
    train_origin: str  # where each split came from (file path or Hub id[split]), for messages
    test_origin: str
    validation: Dataset | None = None  # None without data.validation_size (or without train)
    validation_origin: str = ""
    labels: LabelSet = BINARY  # the class names and the values that stand for them in the files
    validation_dropped: int = 0  # validation reviews left out for repeating a training or test text


def load_splits(cfg: DataConfig, need_train: bool = True, labels: LabelSet | None = None,
                validation_up_to: bool = False) -> Splits:
    """The subsets, validated and disjoint; raises `DataError` naming the file and the problem.

    train is `shuffle(seed).select(range(train_size))` of the train split and test the same of the
    test split (the seed protocol). Validation comes from the data's own validation split when it
    has one (up to validation_size of it, taken the same way), else from the train split right
    after the training subset: `select(range(train_size, train_size + validation_size))`.
    `data.stratify` takes each subset class by class in the same shuffled order (see `_subset`).

    The label set comes from the train split (`labels.infer`) unless given; without the train split
    it is `labels` or the seed protocol's two classes. Labels of the other splits must be in it.
    `validation_up_to` takes fewer validation rows after the training subset, not an error, when
    the train split has fewer than validation_size left (none at all: no validation).
    """
    if not need_train:
        labels = labels or BINARY
        test_ds, test_origin = _load_split(cfg, cfg.test_split)
        test = _subset(_normalize(test_ds, cfg, test_origin, labels), cfg, cfg.test_size, test_origin, "test",
                       labels)
        return Splits(train=None, test=test, train_origin="", test_origin=test_origin, labels=labels)
    train_ds, train_origin = _load_split(cfg, cfg.train_split)
    test_ds, test_origin = _load_split(cfg, cfg.test_split)
    if labels is None:
        _check_columns(train_ds, cfg, train_origin)
        labels = infer(train_ds[cfg.label_column], cfg.labels, train_origin, cfg.label_column)
    train_all = _normalize(train_ds, cfg, train_origin, labels)
    train = _subset(train_all, cfg, cfg.train_size, train_origin, "train", labels)
    test = _subset(_normalize(test_ds, cfg, test_origin, labels), cfg, cfg.test_size, test_origin, "test", labels)
    validation, validation_origin = None, ""
    if cfg.validation_size > 0:
        own = _own_validation(cfg)
        if own is not None:
            ds, validation_origin = own
            ds = _normalize(ds, cfg, validation_origin, labels)
            validation = _subset(ds, cfg, min(cfg.validation_size, len(ds)), validation_origin, "validation",
                                 labels)
        else:
            n = cfg.validation_size
            if validation_up_to:
                n = min(n, max(len(train_all) - cfg.train_size, 0))
            if n > 0:
                validation_origin = f"{train_origin} after the training subset"
                validation = _subset(train_all, cfg, n, train_origin, "validation", labels, start=cfg.train_size)
    splits = Splits(train=train, test=test, train_origin=train_origin, test_origin=test_origin,
                    validation=validation, validation_origin=validation_origin, labels=labels)
    if cfg.drop_overlap:
        splits = drop_overlap(splits)
    check_disjoint(splits)
    return splits


def _own_validation(cfg: DataConfig) -> tuple[Dataset, str] | None:
    """The data's own validation split, or None when it has none."""
    path = resolve_source(cfg.source)
    if path.is_dir():
        has_file = any(p.is_file() and p.suffix in _FILE_FORMATS and p.stem == cfg.validation_split
                       for p in path.iterdir())
        return _load_file_split(path, cfg.validation_split) if has_file else None
    if path.exists() or looks_like_path(cfg.source):
        return None
    try:
        return _load_hub_split(cfg.source, cfg.validation_split), f"{cfg.source}[{cfg.validation_split}]"
    except DataError as err:
        if "has no split" in str(err):
            return None
        raise


def drop_overlap(splits: Splits) -> Splits:
    """Without the validation reviews whose text is also a training or test review (data.drop_overlap:
    for data sets that repeat a few texts across their own splits); `validation_dropped` says how many."""
    if splits.validation is None:
        return splits
    seen = {_text_hash(t) for ds in (splits.train, splits.test) for t in ds["text"]}
    keep = [i for i, t in enumerate(splits.validation["text"]) if _text_hash(t) not in seen]
    if len(keep) == len(splits.validation):
        return splits
    return dataclasses.replace(splits, validation=splits.validation.select(keep),
                               validation_dropped=len(splits.validation) - len(keep))


def check_disjoint(splits: Splits) -> None:
    """No validation review (by its text's hash) is also a training or a test review: what chooses
    epochs and checkpoints must be data the model did not train on, and not the test data.

    Train and test are the data's own splits and are taken as they are (IMDb's hold 96 reviews in
    common), as in the seed protocol."""
    if splits.validation is None:
        return
    seen = {_text_hash(t) for t in splits.validation["text"]}
    for name, ds in (("training", splits.train), ("test", splits.test)):
        shared = sum(1 for t in set(ds["text"]) if _text_hash(t) in seen)
        if shared:
            raise DataError(f"{shared} review(s) of the validation subset ({splits.validation_origin}) are "
                            f"also in the {name} subset (same text): validation must not overlap them "
                            "(--drop-overlap leaves them out)")


def _text_hash(text: str) -> bytes:
    import hashlib

    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def resolve_source(source: str) -> Path:
    """`builtin:smoke` is the synthetic set shipped with the package; anything else is a path."""
    if source.startswith("builtin:"):
        folder = Path(__file__).resolve().parent / f"{source.split(':', 1)[1]}_data"
        if not folder.is_dir():
            raise DataError(f"unknown built-in data set {source!r} (known: builtin:smoke)")
        return folder
    return expand_path(source)


def _load_split(cfg: DataConfig, split: str) -> tuple[Dataset, str]:
    path = resolve_source(cfg.source)
    if path.exists():
        if not path.is_dir():
            raise DataError(f"data source {cfg.source} must be a folder with train and test files")
        if _is_aclimdb(path):
            return _load_aclimdb(path, split), str(path / split)
        return _load_file_split(path, split)
    if looks_like_path(cfg.source):
        raise DataError(f"data folder not found: {cfg.source}")
    return _load_hub_split(cfg.source, split), f"{cfg.source}[{split}]"


def _load_hub_split(dataset_id: str, split: str) -> Dataset:
    from datasets import load_dataset

    try:
        return load_dataset(dataset_id, split=split)
    except ValueError as err:
        if "split" in str(err).lower():
            raise DataError(f"dataset {dataset_id} has no split {split!r}") from None
        raise DataError(f"cannot load dataset {dataset_id}: {first_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - network and Hub errors come in many types
        raise DataError(
            f"cannot load dataset {dataset_id!r} from the Hub ({first_line(err)}); "
            "without network pass a local folder with --data"
        ) from None


def _load_file_split(folder: Path, split: str) -> tuple[Dataset, str]:
    matches = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix in _FILE_FORMATS and re.match(rf"{re.escape(split)}([-_.]|$)", p.stem)
    )
    if not matches:
        raise DataError(
            f"no {split} file in {folder} (expected {split}.parquet, {split}.csv or {split}.jsonl)"
        )
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise DataError(f"several {split} files in {folder}: {names}; keep one")
    file = matches[0]
    if file.stat().st_size == 0:
        raise DataError(f"{file} is empty: no reviews to read")
    if file.suffix in (".csv", ".jsonl") and not _has_rows(file):
        raise DataError(f"{file} has no rows: no reviews to read")
    try:
        if file.suffix == ".parquet":
            ds = Dataset.from_parquet(str(file))
        elif file.suffix == ".csv":
            ds = Dataset.from_csv(str(file))
        else:
            ds = Dataset.from_json(str(file))
    except Exception as err:  # noqa: BLE001 - pyarrow/pandas raise many types for bad files
        # datasets only says "An error occurred while generating the dataset": find the line.
        problem = _bad_json_line(file) if file.suffix == ".jsonl" else None
        raise DataError(f"cannot read {file}: {problem or first_line(err)}") from None
    return ds, str(file)


def _has_rows(file: Path) -> bool:
    """Whether a CSV file holds a row after its header, or a JSON Lines file a non-blank line."""
    needed = 2 if file.suffix == ".csv" else 1
    with file.open("rb") as f:
        for line in f:
            if line.strip():
                needed -= 1
                if needed == 0:
                    return True
    return False


def _bad_json_line(file: Path) -> str | None:
    """The first line of a JSON Lines file that is not a JSON object, described; None if all are."""
    with file.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except UnicodeDecodeError:
                return f"line {number} is not valid UTF-8"
            except ValueError as err:
                return f"line {number} is not valid JSON ({getattr(err, 'msg', err)})"
            if not isinstance(row, dict):
                return f"line {number} is not a JSON object"
    return None


def _is_aclimdb(folder: Path) -> bool:
    return (folder / "train" / "pos").is_dir() or (folder / "test" / "pos").is_dir()


def _load_aclimdb(folder: Path, split: str) -> Dataset:
    """Stanford layout: <split>/neg/<id>_<rating>.txt and <split>/pos/...; negatives first, by id."""
    split_dir = folder / split
    if not split_dir.is_dir():
        raise DataError(f"no {split} folder in {folder}")
    texts: list[str] = []
    labels: list[int] = []
    for label, name in ((0, "neg"), (1, "pos")):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise DataError(f"missing folder {class_dir}")
        files = sorted(class_dir.glob("*.txt"), key=_review_id)
        for file in files:
            try:
                texts.append(file.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"{file} is not valid UTF-8") from None
            labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels})


def _review_id(path: Path) -> tuple[int, str]:
    head = path.stem.split("_")[0]
    return (int(head), path.stem) if head.isdigit() else (-1, path.stem)


def _subset(ds: Dataset, cfg: DataConfig, n: int, origin: str, role: str, labels: LabelSet,
            start: int = 0) -> Dataset:
    """Rows start..start+n of `shuffle(seed)` of the (normalized) split.

    With `data.stratify`, class by class: each class gets its share of the n rows (its share of the
    split, largest remainders rounded up), taken in the shuffled order from its own rows; a subset
    that starts after another (validation after training) starts after that one's share of each class.
    """
    if start + n > len(ds):
        if start:
            raise DataError(f"{origin}: the {role} subset of {n} takes rows {start} to {start + n - 1} of the "
                            f"shuffled split, which has {len(ds)} rows: pass a smaller --validation-size "
                            "or give the data a validation split")
        raise DataError(
            f"{origin}: {role} subset of {n} is larger than the split ({len(ds)} rows)"
        )
    shuffled = ds.shuffle(seed=cfg.shuffle_seed)
    if cfg.stratify:
        subset = shuffled.select(_stratified_rows(shuffled["label"], start, n))
    else:
        subset = shuffled.select(range(start, start + n))
    classes = set(subset["label"])
    if len(classes) < 2:
        only = labels.names[classes.pop()] if classes else "none"
        raise DataError(f"{origin}: the {role} subset of {n} has only one class ({only})")
    return subset


def _stratified_rows(labels: list[int], start: int, n: int) -> list[int]:
    """Positions (in the shuffled order) of rows start..start+n taken class by class."""
    counts: dict[int, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    total = len(labels)
    skip, take = _shares(counts, total, start), _shares(counts, total, n)
    rows: list[int] = []
    seen = {c: 0 for c in counts}
    for position, label in enumerate(labels):
        if skip[label] <= seen[label] < skip[label] + take[label]:
            rows.append(position)
        seen[label] += 1
    return rows


def _shares(counts: dict[int, int], total: int, n: int) -> dict[int, int]:
    """n rows split by each class's share of `total` (largest remainders, ties to the lower class id)."""
    exact = {c: n * k / total for c, k in counts.items()}
    shares = {c: int(x) for c, x in exact.items()}
    for c in sorted(counts, key=lambda c: (-(exact[c] - shares[c]), c))[: n - sum(shares.values())]:
        shares[c] += 1
    return shares


def _check_columns(ds: Dataset, cfg: DataConfig, origin: str) -> None:
    for column in (cfg.text_column, cfg.label_column):
        if column not in ds.column_names:
            raise DataError(
                f"{origin}: no column {column!r} (columns: {', '.join(ds.column_names)})"
            )
    if len(ds) == 0:
        raise DataError(f"{origin}: the split is empty")


def _normalize(ds: Dataset, cfg: DataConfig, origin: str, labels: LabelSet) -> Dataset:
    """Keep text and label columns, labels as class ids of `labels`; refuse anything else."""
    _check_columns(ds, cfg, origin)
    texts = ds[cfg.text_column]
    not_text = [t for t in texts if t is not None and not isinstance(t, str)]
    if not_text:
        raise DataError(f"{origin}: {len(not_text)} value(s) in column {cfg.text_column!r} are not text, "
                        f"e.g. {not_text[0]!r}")
    empty = sum(1 for t in texts if t is None or not t.strip())
    if empty:
        raise DataError(f"{origin}: {empty} empty text(s) in column {cfg.text_column!r}")
    ids = to_ids(ds[cfg.label_column], labels, origin, cfg.label_column)
    return Dataset.from_dict({"text": texts, "label": ids})
