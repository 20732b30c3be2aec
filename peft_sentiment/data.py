"""Load a binary sentiment data set and take the seed protocol's subsets.

Sources: a Hub dataset id (default `stanfordnlp/imdb`), a folder with train and test files
(parquet, CSV or JSON Lines), or an `aclImdb` folder as Stanford distributes it.
The subset of each split is `shuffle(seed=shuffle_seed).select(range(n))`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from .config import DataConfig, expand_path, looks_like_path
from .errors import DataError, first_line

ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}
# Accepted label spellings (strings compared lower-case).
_LABEL_NAMES = {"neg": 0, "negative": 0, "pos": 1, "positive": 1, "0": 0, "1": 1}
_FILE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}


@dataclass(frozen=True)
class Splits:
    train: Dataset | None  # columns: text, label (0/1); None when only the test split was asked for
    test: Dataset
    train_origin: str  # where each split came from (file path or Hub id[split]), for messages
    test_origin: str


def load_splits(cfg: DataConfig, need_train: bool = True) -> Splits:
    """Both subsets, validated; raises `DataError` naming the file and the problem."""
    train_ds, train_origin = (
        _load_split(cfg, cfg.train_split) if need_train else (None, "")
    )
    test_ds, test_origin = _load_split(cfg, cfg.test_split)
    train = _subset(train_ds, cfg, cfg.train_size, train_origin, "train") if need_train else None
    test = _subset(test_ds, cfg, cfg.test_size, test_origin, "test")
    return Splits(train=train, test=test, train_origin=train_origin, test_origin=test_origin)


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


def _subset(ds: Dataset, cfg: DataConfig, n: int, origin: str, role: str) -> Dataset:
    ds = _normalize(ds, cfg, origin)
    if n > len(ds):
        raise DataError(
            f"{origin}: {role} subset of {n} is larger than the split ({len(ds)} rows)"
        )
    subset = ds.shuffle(seed=cfg.shuffle_seed).select(range(n))
    classes = set(subset["label"])
    if len(classes) < 2:
        only = ID2LABEL[classes.pop()] if classes else "none"
        raise DataError(f"{origin}: the {role} subset of {n} has only one class ({only})")
    return subset


def _normalize(ds: Dataset, cfg: DataConfig, origin: str) -> Dataset:
    """Keep text and label columns, labels as 0/1 ints; refuse anything else."""
    for column in (cfg.text_column, cfg.label_column):
        if column not in ds.column_names:
            raise DataError(
                f"{origin}: no column {column!r} (columns: {', '.join(ds.column_names)})"
            )
    if len(ds) == 0:
        raise DataError(f"{origin}: the split is empty")
    texts = ds[cfg.text_column]
    not_text = [t for t in texts if t is not None and not isinstance(t, str)]
    if not_text:
        raise DataError(f"{origin}: {len(not_text)} value(s) in column {cfg.text_column!r} are not text, "
                        f"e.g. {not_text[0]!r}")
    empty = sum(1 for t in texts if t is None or not t.strip())
    if empty:
        raise DataError(f"{origin}: {empty} empty text(s) in column {cfg.text_column!r}")
    labels = [_label_id(v) for v in ds[cfg.label_column]]
    bad = [v for v, i in zip(ds[cfg.label_column], labels) if i is None]
    if bad:
        shown = ", ".join(sorted({repr(v) for v in bad})[:5])
        raise DataError(
            f"{origin}: {len(bad)} label(s) outside the two classes in column "
            f"{cfg.label_column!r}: {shown} (use 0/1, neg/pos or negative/positive)"
        )
    return Dataset.from_dict({"text": texts, "label": labels})


def _label_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value in (0, 1) else None
    if isinstance(value, float):
        return int(value) if value in (0.0, 1.0) else None
    if isinstance(value, str):
        return _LABEL_NAMES.get(value.strip().lower())
    return None


