"""The validation split: disjoint from training and test, the only data epochs and checkpoints are
chosen on; the test subset is read once, after training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke, make_rows, write_data_folder, write_jsonl
from datasets import Dataset

from peft_sentiment.config import DataConfig, load_config
from peft_sentiment.data import load_splits
from peft_sentiment.errors import DataError


def shuffled(rows: list[dict[str, Any]], seed: int = 42) -> Dataset:
    """The protocol computed independently: the split in shuffle(seed) order."""
    return Dataset.from_dict({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}).shuffle(
        seed=seed)


def test_validation_follows_the_training_subset_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    train, test = make_rows(80, seed=1), make_rows(30, seed=2)
    folder = write_data_folder(tmp_path / "d", train, test)
    without = load_splits(DataConfig(source=str(folder), train_size=40, test_size=20))
    splits = load_splits(DataConfig(source=str(folder), train_size=40, test_size=20, validation_size=25))
    order = shuffled(train)
    assert splits.train.to_dict() == without.train.to_dict() == order.select(range(40)).to_dict()
    assert splits.test.to_dict() == without.test.to_dict()  # the seed protocol's rows are unchanged
    assert splits.validation.to_dict() == order.select(range(40, 65)).to_dict()
    assert without.validation is None
    texts = [set(ds["text"]) for ds in (splits.train, splits.validation, splits.test)]
    assert not texts[0] & texts[1] and not texts[1] & texts[2] and not texts[0] & texts[2]


def test_the_datas_own_validation_split_is_used(tmp_path: Path) -> None:
    folder = write_data_folder(tmp_path / "d", make_rows(60, seed=1), make_rows(20, seed=2))
    own = make_rows(30, seed=3)
    write_jsonl(folder / "validation.jsonl", own)
    splits = load_splits(DataConfig(source=str(folder), train_size=40, test_size=20, validation_size=500))
    assert splits.validation.to_dict() == shuffled(own).to_dict()  # all of it: fewer than asked is fine
    assert splits.validation_origin == str(folder / "validation.jsonl")
    assert splits.train.to_dict() == shuffled(make_rows(60, seed=1)).select(range(40)).to_dict()


def test_validation_overlapping_training_or_test_is_refused(tmp_path: Path) -> None:
    train, test = make_rows(60, seed=1), make_rows(20, seed=2)
    folder = write_data_folder(tmp_path / "d", train, test)
    write_jsonl(folder / "validation.jsonl", make_rows(10, seed=3) + test[:3])
    with pytest.raises(DataError, match=r"3 review\(s\) of the validation subset .* also in the test subset"):
        load_splits(DataConfig(source=str(folder), train_size=40, test_size=20, validation_size=13))
    write_jsonl(folder / "validation.jsonl", make_rows(10, seed=3) + train[:5])
    with pytest.raises(DataError, match=r"also in the training subset"):
        load_splits(DataConfig(source=str(folder), train_size=60, test_size=20, validation_size=15))


def test_too_few_rows_after_the_training_subset(tmp_path: Path) -> None:
    folder = write_data_folder(tmp_path / "d", make_rows(50, seed=1), make_rows(20, seed=2))
    with pytest.raises(DataError, match="validation subset of 20 takes rows 40 to 59 .* which has 50 rows"):
        load_splits(DataConfig(source=str(folder), train_size=40, test_size=20, validation_size=20))


class GuardedTest:
    """A test subset that refuses to be read until training has ended."""

    def __init__(self, ds: Dataset) -> None:
        self._ds, self.open = ds, False

    def _check(self) -> None:
        if not self.open:
            raise AssertionError("the test subset was read before training ended")

    def __getattr__(self, name: str) -> Any:
        self._check()
        return getattr(self._ds, name)

    def __len__(self) -> int:
        self._check()
        return len(self._ds)

    def __getitem__(self, key: Any) -> Any:
        self._check()
        return self._ds[key]


def test_training_never_reads_the_test_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainerCallback

    import peft_sentiment.run as run

    guards: list[GuardedTest] = []
    real = run.load_splits

    def guarded(cfg: DataConfig, need_train: bool = True) -> Any:
        splits = real(cfg, need_train)
        guards.append(GuardedTest(splits.test))
        return type(splits)(**{**splits.__dict__, "test": guards[-1]})

    class OpenAtTheEnd(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            guards[-1].open = True

    monkeypatch.setattr(run, "load_splits", guarded)
    cfg = load_config("smoke", {"data.train_size": 48, "data.test_size": 20, "trainer.num_train_epochs": 2})
    result = run.run_training(cfg, output=tmp_path / "run", callbacks=[OpenAtTheEnd()])
    assert guards[-1].open and result.metrics.n == 20
    evals = [e for e in result.train.log if "eval_accuracy" in e]
    assert len(evals) == 2  # both epochs were evaluated: on validation


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = invoke(["train", "--recipe", "smoke", "--method", "full", "-o", str(run), "--epochs", "40",
                     "--train-size", "200", "--early-stopping-patience", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    evals = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    evals = [e for e in evals if "eval_accuracy" in e]
    assert len(evals) < 40  # it stopped early
    best = max(e["eval_accuracy"] for e in evals)
    assert best >= 0.8  # after learning, not on a plateau of chance
    first_best = next(e for e in evals if e["eval_accuracy"] == best)
    # Two more epochs without a better accuracy, then the stop (patience 2).
    assert evals[-1]["epoch"] == first_best["epoch"] + 2
    assert metrics["kept"] == "best" and metrics["best_step"] == first_best["step"]
    # The kept model is the best epoch's: it scores that epoch's validation accuracy again.
    assert metrics["validation"]["accuracy"] == pytest.approx(best)
    again = invoke(["evaluate", str(run), "--json"])
    assert json.loads(again.stdout)["accuracy"] == pytest.approx(metrics["accuracy"])
