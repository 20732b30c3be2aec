"""The bad-input suite: every command, fed something wrong, exits non-zero with one line on stderr that
names the problem, prints no traceback, and leaves nothing behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_line_error, copy_run, dot_entries, invoke, make_rows, write_data_folder

SMALL = ["--train-size", "32", "--test-size", "16", "--epochs", "1"]


def tree(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


# Each case: (tmp_path, runs) -> (args, exit code, fragments the error line must hold).
Case = Callable[[Path, dict[str, Path]], tuple[list[Any], int, list[str]]]


def recipe(t: Path, text: str) -> Path:
    path = t / "recipe.yaml"
    path.write_text(text)
    return path


def truncated_model_run(t: Path, runs: dict[str, Path]) -> Path:
    run = copy_run(runs["full"], t / "run")
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return run


def other_base_adapter(t: Path, runs: dict[str, Path]) -> Path:
    """The LoRA run's adapter next to the random base of a wider model: shapes do not match."""
    from peft_sentiment.config import load_config
    from peft_sentiment.modeling import build_base

    run = copy_run(runs["lora"], t / "run")
    wider = load_config("smoke", {"model.architecture": {"model_type": "distilbert", "dim": 64, "n_layers": 2,
                                                         "n_heads": 2, "hidden_dim": 128}})
    built = build_base(wider, ["a few words to build a vocabulary from"] * 4)
    built.base.save_pretrained(run / "base")
    return run


CASES: dict[str, Case] = {
    # ---- train
    "train-bad-yaml": lambda t, r: (["train", "--recipe", recipe(t, "train: [unclosed\n")], 1,
                                    ["not valid YAML", "line"]),
    "train-wrong-type": lambda t, r: (["train", "--recipe", recipe(t, "trainer:\n  learning_rate: fast\n")], 1,
                                      ["trainer.learning_rate must be a number", "'fast'"]),
    "train-unknown-key": lambda t, r: (["train", "--recipe", "smoke", "--set", "train.momentum=0.9"], 1,
                                       ["unknown key", "train.momentum"]),
    "train-not-finite": lambda t, r: (["train", "--recipe", "smoke", "--lr", "nan"], 1,
                                      ["trainer.learning_rate must be a finite number"]),
    "train-zero-size": lambda t, r: (["train", "--recipe", "smoke", "--train-size", "0"], 1,
                                     ["data.train_size must be positive, got 0"]),
    # The smoke model has 128 positions: a longer review would fail at its first long batch.
    "train-max-length-beyond-positions": lambda t, r: (["train", "--recipe", "smoke", "--max-length", "1024",
                                                        "-o", t / "run"], 1,
                                                       ["--max-length 1024", "128 positions"]),
    "train-unknown-trainer-key": lambda t, r: (["train", "--recipe", "smoke", "--set", "trainer.lerning_rate=1"],
                                               1, ["trainer.lerning_rate", "did you mean learning_rate"]),
    "train-bad-trainer-value": lambda t, r: (["train", "--recipe", "smoke", "--set", "trainer.optim=sgdd"], 1,
                                             ["optim='sgdd'"]),
    "train-reserved-trainer-key": lambda t, r: (["train", "--recipe", "smoke", "--set",
                                                 "trainer.output_dir=/tmp/x"], 1,
                                                ["trainer.output_dir is set by peft-sentiment"]),
    "train-test-label-not-a-training-class": lambda t, r: (
        ["train", "--recipe", "smoke", "--data",
         write_data_folder(t / "d", make_rows(40, labels=("neg", "neutral")), make_rows(20)), *SMALL], 1,
        ["test.jsonl", "20 label(s) in column 'label' are not classes the model was trained on: 0, 1",
         "(classes: neg, neutral)"]),
    "train-bad-labels-option": lambda t, r: (["train", "--recipe", "smoke", "--labels", "a,,b"], 1,
                                             ["data.labels", "an empty name between commas"]),
    "train-labels-option-does-not-fit": lambda t, r: (["train", "--recipe", "smoke", "--labels", "a,b,c"], 1,
                                                      ["--labels names 3 classes but the data hold 2"]),
    "train-bad-class-weights": lambda t, r: (["train", "--recipe", "smoke", "--class-weights", "1,x"], 1,
                                             ["train.class_weights", "'1,x'"]),
    "train-class-weights-count": lambda t, r: (["train", "--recipe", "smoke", "--class-weights", "1,2,3"], 1,
                                               ["gives 3 weights for 2 classes"]),
    "train-empty-data": lambda t, r: (
        ["train", "--recipe", "smoke", "--data", write_data_folder(t / "d", [], make_rows(20)), *SMALL], 1,
        ["train.jsonl is empty"]),
    "train-missing-data": lambda t, r: (["train", "--recipe", "smoke", "--data", t / "nowhere"], 1,
                                        ["data folder not found", "nowhere"]),
    "train-recipe-is-a-folder": lambda t, r: (["train", "--recipe", _folder(t / "r.yaml")], 1,
                                              ["recipe not found", "r.yaml"]),
    "train-output-under-a-file": lambda t, r: (["train", "--recipe", "smoke", "-o", _file(t / "f") / "run"], 1,
                                               ["cannot create", "f"]),
    "train-resume-nothing": lambda t, r: (["train", "--resume", t / "never"], 1, ["no unfinished run"]),
    "train-unknown-method": lambda t, r: (["train", "--method", "adalora"], 2, ["--method", "adalora"]),
    # ---- evaluate
    "evaluate-missing": lambda t, r: (["evaluate", t / "no-run"], 1, ["folder not found"]),
    "evaluate-truncated-weights": lambda t, r: (["evaluate", truncated_model_run(t, r)], 1,
                                                ["model.safetensors is damaged or truncated"]),
    "evaluate-missing-weights": lambda t, r: (["evaluate", _without(copy_run(r["full"], t / "run"),
                                                                    "model/model.safetensors")], 1,
                                              ["model.safetensors is missing"]),
    "evaluate-pickle-weights": lambda t, r: (["evaluate", _pickled(copy_run(r["full"], t / "run"))], 1,
                                             ["pytorch_model.bin is a pickle file", "safetensors"]),
    "evaluate-max-length-beyond-positions": lambda t, r: (["evaluate", r["full"], "--max-length", "4096"], 1,
                                                          ["--max-length 4096", "128 positions"]),
    "evaluate-zero-test-size": lambda t, r: (["evaluate", r["full"], "--test-size", "0"], 1,
                                             ["data.test_size must be positive"]),
    "evaluate-broken-config": lambda t, r: (["evaluate", _config(copy_run(r["full"], t / "run"), "[1, 2\n")],
                                            1, ["config.yaml", "not valid YAML"]),
    # ---- predict
    "predict-not-utf8": lambda t, r: (["predict", r["full"], "--file", _bytes(t / "in.txt", b"good\n\xff\xfe bad\n")],
                                      1, ["line 2 is not valid UTF-8", "--errors replace"]),
    "predict-file-is-a-folder": lambda t, r: (["predict", r["full"], "--file", _folder(t / "texts")], 2,
                                              ["texts"]),
    "predict-adapter-of-another-base": lambda t, r: (["predict", other_base_adapter(t, r), "good film"], 1,
                                                     ["does not fit the base"]),
    "predict-batch-size-zero": lambda t, r: (["predict", r["full"], "good", "--batch-size", "0"], 2,
                                             ["--batch-size"]),
    # ---- merge
    "merge-full-run": lambda t, r: (["merge", r["full"], "-o", t / "m"], 1, ["method full", "standalone"]),
    "merge-output-exists": lambda t, r: (["merge", r["lora"], "-o", _folder(t / "m")], 1, ["already exists"]),
    "merge-not-a-run": lambda t, r: (["merge", _folder(t / "empty")], 1, ["not a run folder"]),
    # ---- push
    "push-kind-missing": lambda t, r: (["push", r["full"], "--repo-id", "someone/x"], 2,
                                       ["exactly one of --merged and --adapter-only"]),
    "push-adapter-of-full-run": lambda t, r: (["push", r["full"], "--repo-id", "someone/x", "--adapter-only",
                                               "--dry-run", "--staging-dir", t / "s"], 1, ["no adapter"]),
    "push-bad-repo-id": lambda t, r: (["push", r["full"], "--repo-id", "not a repo", "--merged", "--dry-run",
                                       "--staging-dir", t / "s"], 1, ["not a repo"]),
    # ---- benchmark
    "benchmark-unknown-method": lambda t, r: (["benchmark", "-o", t / "b", "--methods", "nope"], 1,
                                              ["unknown recipe 'nope'"]),
    "benchmark-bad-seeds": lambda t, r: (["benchmark", "-o", t / "b", "--seeds", "1,two"], 2, ["--seeds"]),
    "benchmark-report-without-results": lambda t, r: (["benchmark", "--report", _folder(t / "b")], 1,
                                                      ["no results.json"]),
}


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _file(path: Path) -> Path:
    path.write_text("a file")
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _without(run: Path, relative: str) -> Path:
    (run / relative).unlink()
    return run


def _pickled(run: Path) -> Path:
    weights = run / "model" / "model.safetensors"
    weights.rename(run / "model" / "pytorch_model.bin")
    return run


def _config(run: Path, text: str) -> Path:
    (run / "config.yaml").write_text(text)
    return run


@pytest.fixture(scope="module")
def runs(smoke_full: Any, lora_run: Path) -> dict[str, Path]:
    return {"full": smoke_full.path, "lora": lora_run}


def test_the_suite_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 25
    commands = {name.split("-")[0] for name in CASES}
    assert commands == {"train", "evaluate", "predict", "merge", "push", "benchmark"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, tmp_path: Path, runs: dict[str, Path]) -> None:
    args, code, fragments = CASES[name](tmp_path, runs)
    before = tree(tmp_path)
    shared_before = {p: tree(p) for p in runs.values()}
    result = invoke(args)
    assert_one_line_error(result, code, *fragments)
    assert tree(tmp_path) == before, f"{name} left {sorted(tree(tmp_path) - before)}"
    assert dot_entries(tmp_path) == []
    for path, files in shared_before.items():  # the shared runs are untouched
        assert tree(path) == files


def test_metrics_of_a_run_are_not_read_as_a_model(tmp_path: Path, runs: dict[str, Path]) -> None:
    """A run folder whose metrics.json is all there is: refused with one line, not loaded."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"accuracy": 1.0}))
    assert_one_line_error(invoke(["evaluate", run]), 1, "neither a run")
