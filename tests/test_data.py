"""Data sources, label normalization and the subset protocol (peft_sentiment.data)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from conftest import make_rows, write_data_folder, write_jsonl
from datasets import Dataset

from peft_sentiment.config import DataConfig
from peft_sentiment.data import ID2LABEL, LABEL2ID, load_splits
from peft_sentiment.errors import DataError

NEG_POS = {0: "neg", 1: "pos"}


def expected_subset(rows: list[dict[str, Any]], n: int, seed: int = 42,
                    text: str = "text", label: str = "label") -> dict[str, list]:
    """The protocol computed independently: the normalized split, shuffle(seed).select(range(n))."""
    names = {"neg": 0, "negative": 0, "pos": 1, "positive": 1, "0": 0, "1": 1}
    labels = [r[label] if isinstance(r[label], int) else names[str(r[label]).strip().lower()]
              for r in rows]
    ds = Dataset.from_dict({"text": [r[text] for r in rows], "label": labels})
    return ds.shuffle(seed=seed).select(range(n)).to_dict()


# ---------------------------------------------------------------- subset protocol


@pytest.fixture()
def spelled_folder(tmp_path: Path) -> tuple[Path, list[dict], list[dict]]:
    """train labels spelled neg/pos, test labels negative/positive (mixed case, padded)."""
    train = make_rows(60, seed=1, labels=("neg", "pos"))
    test = make_rows(40, seed=2, labels=("Negative", " POSITIVE "))
    return write_data_folder(tmp_path / "data", train, test), train, test


def test_subset_is_shuffle_select_of_normalized_split(spelled_folder) -> None:
    folder, train, test = spelled_folder
    splits = load_splits(DataConfig(source=str(folder), train_size=25, test_size=15))
    assert splits.train.column_names == ["text", "label"]
    assert splits.train.to_dict() == expected_subset(train, 25)
    assert splits.test.to_dict() == expected_subset(test, 15)
    assert set(splits.train["label"]) == {0, 1} and set(splits.test["label"]) == {0, 1}
    assert splits.train_origin == str(folder / "train.jsonl")
    assert splits.test_origin == str(folder / "test.jsonl")


def test_labels_normalize_to_ids(spelled_folder) -> None:
    folder, train, test = spelled_folder
    splits = load_splits(DataConfig(source=str(folder), train_size=60, test_size=40))
    by_text = {r["text"]: r["label"] for r in train}
    for text, label in zip(splits.train["text"], splits.train["label"]):
        assert label == {"neg": 0, "pos": 1}[by_text[text]]
    by_text = {r["text"]: r["label"] for r in test}
    for text, label in zip(splits.test["text"], splits.test["label"]):
        assert label == {"Negative": 0, " POSITIVE ": 1}[by_text[text]]
    assert ID2LABEL == {0: "NEGATIVE", 1: "POSITIVE"}
    assert LABEL2ID == {"NEGATIVE": 0, "POSITIVE": 1}


def test_same_seed_same_rows_other_seed_other_rows(spelled_folder) -> None:
    folder, train, _ = spelled_folder
    first = load_splits(DataConfig(source=str(folder), train_size=20, test_size=10))
    again = load_splits(DataConfig(source=str(folder), train_size=20, test_size=10))
    other = load_splits(DataConfig(source=str(folder), train_size=20, test_size=10, shuffle_seed=7))
    assert first.train["text"] == again.train["text"]
    assert first.test["text"] == again.test["text"]
    assert first.train["text"] != other.train["text"]
    assert set(first.train["text"]) != set(other.train["text"])
    assert other.train.to_dict() == expected_subset(train, 20, seed=7)


def test_smaller_subset_is_a_prefix_of_a_larger_one(spelled_folder) -> None:
    folder, _, _ = spelled_folder
    small = load_splits(DataConfig(source=str(folder), train_size=10, test_size=10))
    large = load_splits(DataConfig(source=str(folder), train_size=30, test_size=10))
    assert large.train["text"][:10] == small.train["text"]


def test_need_train_false_loads_only_test(tmp_path: Path) -> None:
    folder = write_data_folder(tmp_path / "d", None, make_rows(20, seed=3))
    splits = load_splits(DataConfig(source=str(folder), test_size=10), need_train=False)
    assert splits.train is None
    assert len(splits.test) == 10


def test_builtin_smoke_source() -> None:
    from peft_sentiment.synthetic import SMOKE_DIR

    splits = load_splits(DataConfig(source="builtin:smoke", train_size=400, test_size=100))
    assert len(splits.train) == 400 and len(splits.test) == 100
    assert splits.train_origin == str(SMOKE_DIR / "train.jsonl")
    with pytest.raises(DataError, match="unknown built-in data set"):
        load_splits(DataConfig(source="builtin:nope"))


# ---------------------------------------------------------------- file formats


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_local_folder_formats(tmp_path: Path, fmt: str) -> None:
    train = make_rows(30, seed=4)
    test = make_rows(20, seed=5)
    # Text with commas, quotes and a newline survives each format.
    train[0] = {"text": 'Great, "really" great.\nSecond line, too.', "label": 1}
    folder = tmp_path / fmt
    folder.mkdir()
    for split, rows in (("train", train), ("test", test)):
        path = folder / f"{split}.{fmt}"
        if fmt == "parquet":
            Dataset.from_list(rows).to_parquet(str(path))
        elif fmt == "csv":
            _write_csv(path, rows)
        else:
            write_jsonl(path, rows)
    splits = load_splits(DataConfig(source=str(folder), train_size=30, test_size=12))
    assert splits.train.to_dict() == expected_subset(train, 30)
    assert splits.test.to_dict() == expected_subset(test, 12)
    assert splits.train_origin.endswith(f"train.{fmt}")


def test_hub_style_sharded_parquet_names(tmp_path: Path) -> None:
    folder = tmp_path / "imdb"
    folder.mkdir()
    train, test = make_rows(20, seed=6), make_rows(20, seed=7)
    Dataset.from_list(train).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    Dataset.from_list(test).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    # An "unsupervised" split next to them must not be taken for train or test.
    Dataset.from_list(make_rows(4, seed=8)).to_parquet(str(folder / "unsupervised-00000-of-00001.parquet"))
    splits = load_splits(DataConfig(source=str(folder), train_size=20, test_size=10))
    assert splits.train.to_dict() == expected_subset(train, 20)
    assert splits.test.to_dict() == expected_subset(test, 10)


def test_custom_split_names(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    write_jsonl(folder / "fit.jsonl", make_rows(20, seed=1))
    write_jsonl(folder / "holdout.jsonl", make_rows(20, seed=2))
    splits = load_splits(DataConfig(source=str(folder), train_split="fit", test_split="holdout",
                                    train_size=10, test_size=10))
    assert splits.train_origin.endswith("fit.jsonl")
    assert splits.test_origin.endswith("holdout.jsonl")


def test_custom_column_names(tmp_path: Path) -> None:
    rows = [{"id": i, "review": r["text"], "sentiment": NEG_POS[r["label"]]}
            for i, r in enumerate(make_rows(30, seed=9))]
    folder = tmp_path / "cols"
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "test.jsonl", rows[:20])
    cfg = DataConfig(source=str(folder), text_column="review", label_column="sentiment",
                     train_size=30, test_size=20)
    splits = load_splits(cfg)
    assert splits.train.column_names == ["text", "label"]  # extra columns dropped, renamed
    assert splits.train.to_dict() == expected_subset(rows, 30, text="review", label="sentiment")
    with pytest.raises(DataError, match="no column 'text'"):
        load_splits(DataConfig(source=str(folder), train_size=30, test_size=20))


# ---------------------------------------------------------------- aclImdb layout


def write_aclimdb(root: Path, split: str, reviews: dict[str, dict[int, str]]) -> None:
    for name, by_id in reviews.items():
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        for review_id, text in by_id.items():
            (d / f"{review_id}_{7 if name == 'pos' else 2}.txt").write_text(text, encoding="utf-8")


def test_aclimdb_folder(tmp_path: Path) -> None:
    root = tmp_path / "aclImdb"
    ids = [0, 1, 2, 10, 11, 3]  # numeric order 0,1,2,3,10,11 differs from string order
    neg = {i: f"Negative review {i}: it was awful and boring." for i in ids}
    pos = {i: f"Positive review {i}: it was wonderful, café crème." for i in ids}
    write_aclimdb(root, "train", {"neg": neg, "pos": pos})
    write_aclimdb(root, "test", {"neg": dict(list(neg.items())[:4]), "pos": dict(list(pos.items())[:4])})
    (root / "train" / "unsup").mkdir()  # ignored
    (root / "train" / "unsup" / "0_0.txt").write_text("unlabelled")
    splits = load_splits(DataConfig(source=str(root), train_size=12, test_size=8))
    order = sorted(ids)
    rows = ([{"text": neg[i], "label": 0} for i in order]
            + [{"text": pos[i], "label": 1} for i in order])
    assert splits.train.to_dict() == expected_subset(rows, 12)
    assert splits.train_origin == str(root / "train")
    assert "unlabelled" not in splits.train["text"]
    assert len(splits.test) == 8 and set(splits.test["label"]) == {0, 1}


def test_aclimdb_missing_class_folder(tmp_path: Path) -> None:
    root = tmp_path / "aclImdb"
    write_aclimdb(root, "train", {"neg": {0: "bad"}, "pos": {0: "good"}})
    write_aclimdb(root, "test", {"pos": {0: "good"}})
    with pytest.raises(DataError, match="missing folder .*neg"):
        load_splits(DataConfig(source=str(root), train_size=2, test_size=1))


# ---------------------------------------------------------------- refusals (library level)


def _cfg(folder: Path, **kw: Any) -> DataConfig:
    return DataConfig(source=str(folder), **{"train_size": 10, "test_size": 10, **kw})


@pytest.mark.parametrize(
    "bad_rows, where, fragments",
    [
        # A third value in the training split is a third class; in the test split of a binary
        # training set it is refused.
        ([{"text": "fine", "label": 2}], "test", ["1 label(s) outside the two classes", "2"]),
        ([{"text": "fine", "label": "neutral"}], "test", ["'neutral'", "column 'label'"]),
        ([{"text": "", "label": 1}, {"text": "   ", "label": 0}], "train", ["2 empty text(s)"]),
        ([{"text": None, "label": 1}], "train", ["1 empty text(s)"]),
        ([{"text": "fine", "label": 0.5}], "test", ["outside the two classes"]),
        ([{"text": "fine", "label": True}], "test", ["outside the two classes"]),
        ([{"text": "fine", "label": 0.5}], "train", ["1 label(s) in column 'label' are not classes: 0.5"]),
        ([{"text": "fine", "label": True}], "train", ["are not classes: False, True"]),  # a JSON column of booleans
    ],
)
def test_bad_rows_are_refused(tmp_path: Path, bad_rows: list[dict], where: str, fragments: list[str]) -> None:
    rows = make_rows(20, seed=1)
    if isinstance(bad_rows[0]["label"], str):
        rows = [{"text": r["text"], "label": NEG_POS[r["label"]]} for r in rows]
    if isinstance(bad_rows[0]["label"], float):
        rows = [{"text": r["text"], "label": float(r["label"])} for r in rows]
    if isinstance(bad_rows[0]["label"], bool):
        rows = [{"text": r["text"], "label": bool(r["label"])} for r in rows]
    other = make_rows(20, seed=2)
    train, test = (rows + bad_rows, other) if where == "train" else (other, rows + bad_rows)
    folder = write_data_folder(tmp_path / "d", train, test)
    with pytest.raises(DataError) as info:
        load_splits(_cfg(folder, test_size=21 if where == "test" else 10))
    message = str(info.value)
    assert f"{where}.jsonl" in message
    for fragment in fragments:
        assert fragment in message, message


def test_float_labels_zero_and_one_are_accepted(tmp_path: Path) -> None:
    rows = [{"text": r["text"], "label": float(r["label"])} for r in make_rows(20, seed=1)]
    folder = write_data_folder(tmp_path / "d", rows, rows)
    splits = load_splits(_cfg(folder))
    assert set(splits.train["label"]) == {0, 1}
    assert all(type(v) is int for v in splits.train["label"])


def test_subset_larger_than_split(tmp_path: Path) -> None:
    folder = write_data_folder(tmp_path / "d", make_rows(20, seed=1), make_rows(8, seed=2))
    with pytest.raises(DataError, match=r"test subset of 10 is larger than the split \(8 rows\)"):
        load_splits(_cfg(folder))


def test_subset_with_one_class(tmp_path: Path) -> None:
    test = [{"text": f"good {i}", "label": 1} for i in range(20)]
    folder = write_data_folder(tmp_path / "d", make_rows(20, seed=1), test)
    with pytest.raises(DataError, match=r"the test subset of 10 has only one class \(POSITIVE\)"):
        load_splits(_cfg(folder))


def test_missing_and_ambiguous_files(tmp_path: Path) -> None:
    folder = write_data_folder(tmp_path / "d", make_rows(20, seed=1), None)
    with pytest.raises(DataError, match="no test file in"):
        load_splits(_cfg(folder))
    write_jsonl(folder / "test.jsonl", make_rows(20, seed=2))
    _write_csv(folder / "test.csv", make_rows(20, seed=2))
    with pytest.raises(DataError, match="several test files .*test.csv, test.jsonl"):
        load_splits(_cfg(folder))


def test_missing_folder_and_file_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        load_splits(_cfg(tmp_path / "nope"))
    file = write_jsonl(tmp_path / "train.jsonl", make_rows(4))
    with pytest.raises(DataError, match="must be a folder"):
        load_splits(_cfg(file))


def test_unreadable_file(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "train.parquet").write_bytes(b"this is not parquet")
    write_jsonl(folder / "test.jsonl", make_rows(20))
    with pytest.raises(DataError, match="cannot read .*train.parquet"):
        load_splits(_cfg(folder))


def test_hub_dataset_without_network() -> None:
    with pytest.raises(DataError) as info:
        load_splits(DataConfig(source="no-such-org/no-such-dataset"))
    assert "without network pass a local folder" in str(info.value)
