"""The command line: help, and every bad input as one `Error:` line with no run folder left behind.

Data and model errors use the smoke recipe pointed at bad folders: they must be caught before any
training starts (the smoke run would otherwise take seconds and leave a run folder).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    assert_one_line_error,
    dot_entries,
    error_lines,
    invoke,
    make_rows,
    write_data_folder,
)

NEG_POS = {0: "neg", 1: "pos"}
SMALL = ["--train-size", "40", "--test-size", "20"]


# ---------------------------------------------------------------- help and version


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--help"], ["train", "evaluate", "predict", "Fine-tune"]),
        (["-h"], ["train", "evaluate", "predict"]),
        (["train", "--help"], ["--method", "--recipe", "--output", "--overwrite", "--lora-r",
                               "--target-modules", "--train-size", "--set", "--precision"]),
        (["evaluate", "--help"], ["SOURCE", "--json", "--data", "--test-size"]),
        (["predict", "--help"], ["SOURCE", "TEXTS", "--file", "--json", "--batch-size"]),
    ],
)
def test_help(args: list[str], fragments: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage:")
    for fragment in fragments:
        assert fragment in result.stdout


def test_version() -> None:
    from importlib import metadata

    result = invoke(["--version"])
    assert result.exit_code == 0
    assert metadata.version("peft-sentiment") in result.stdout


# ---------------------------------------------------------------- bad inputs to train


def good_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return make_rows(n, seed=seed)


def data_with_train(tmp_path: Path, train: list[dict[str, Any]]) -> Path:
    return write_data_folder(tmp_path / "data", train, good_rows(30, 2))


def relabel(rows: list[dict[str, Any]], names: dict[int, Any]) -> list[dict[str, Any]]:
    return [{"text": r["text"], "label": names[r["label"]]} for r in rows]


Case = Callable[[Path], tuple[list[str], int, list[str]]]


def _unknown_method(t: Path):
    return ["--method", "adalora"], 2, ["Invalid value for '--method'", "adalora"]


def _bad_scheduler(t: Path):
    return ["--recipe", "smoke", "--scheduler", "step"], 2, ["--scheduler", "step"]


def _bad_int_option(t: Path):
    return ["--recipe", "smoke", "--train-size", "many"], 2, ["--train-size", "many"]


def _unknown_option(t: Path):
    return ["--recipe", "smoke", "--learning-rate", "0.1"], 2, ["--learning-rate"]


def _missing_recipe_name(t: Path):
    return ["--recipe", "nope"], 1, ["unknown recipe 'nope'", "dora, full, head, ia3, lora, qlora, seed, smoke"]


def _missing_recipe_file(t: Path):
    return ["--recipe", str(t / "missing.yaml")], 1, ["recipe not found", "missing.yaml"]


def _recipe_unknown_key(t: Path):
    (t / "r.yaml").write_text("method: full\ntrain:\n  learning_rate: 0.1\n")
    return ["--recipe", str(t / "r.yaml")], 1, ["unknown key", "learning_rate"]


def _recipe_unknown_section(t: Path):
    (t / "r.yaml").write_text("method: full\noptimizer:\n  lr: 0.1\n")
    return ["--recipe", str(t / "r.yaml")], 1, ["unknown key", "optimizer"]


def _recipe_wrong_type(t: Path):
    (t / "r.yaml").write_text("method: full\ntrainer:\n  per_device_train_batch_size: sixteen\n")
    return ["--recipe", str(t / "r.yaml")], 1, ["trainer.per_device_train_batch_size must be an integer",
                                                "sixteen"]


def _recipe_bad_yaml(t: Path):
    (t / "r.yaml").write_text("method: full\ntrain:\n  lr: [0.1\n  seed: 1\n")
    return ["--recipe", str(t / "r.yaml")], 1, ["not valid YAML", "line"]


def _recipe_not_a_mapping(t: Path):
    (t / "r.yaml").write_text("- full\n- lora\n")
    return ["--recipe", str(t / "r.yaml")], 1, ["must be a mapping"]


def _set_no_equals(t: Path):
    return ["--recipe", "smoke", "--set", "trainer.learning_rate"], 1, ["'trainer.learning_rate'", "key=value"]


def _set_no_key(t: Path):
    return ["--recipe", "smoke", "--set", "=0.1"], 1, ["key=value"]


def _set_unknown_key(t: Path):
    return ["--recipe", "smoke", "--set", "train.momentum=0.9"], 1, ["unknown key", "momentum"]


def _set_into_value(t: Path):
    return ["--recipe", "smoke", "--set", "train.seed.max=1"], 1, ["'seed' is not a section"]


def _set_wrong_type(t: Path):
    return ["--recipe", "smoke", "--set", "trainer.num_train_epochs=many"], 1, \
        ["trainer.num_train_epochs must be a number"]


def _size(option: str, value: str, key: str):
    def case(t: Path):
        return ["--recipe", "smoke", f"{option}={value}"], 1, [f"data.{key} must be positive, got {value}"]
    case.__name__ = f"_{key}_{value}"
    return case


def _missing_model_folder(t: Path):
    return (["--recipe", "smoke", "--model", str(t / "no-model"), "--set", "model.architecture=null"],
            1, ["model folder not found", "no-model"])


def _model_folder_without_config(t: Path):
    (t / "empty-model").mkdir()
    return (["--recipe", "smoke", "--model", str(t / "empty-model"), "--set", "model.architecture=null"],
            1, ["not a model folder", "config.json"])


def _hub_model_offline(t: Path):
    return (["--recipe", "smoke", "--model", "no-such-org/no-such-model",
             "--set", "model.architecture=null"],
            1, ["no-such-org/no-such-model", "pass a local folder"])


def _hub_tokenizer_offline(t: Path):
    folder = write_data_folder(t / "data", good_rows(60, 1), good_rows(30, 2))
    return (["--method", "full", "--model", "no-such-org/no-such-model", "--data", str(folder), *SMALL,
             "--validation-size", "10"],
            1, ["no-such-org/no-such-model", "pass a local folder"])


def _unknown_target_module(t: Path):
    return (["--recipe", "smoke", "--method", "lora", "--target-modules", "q_lin,qkv_proj"],
            1, ["lora.target_modules", "qkv_proj"])


def _missing_data_folder(t: Path):
    return ["--recipe", "smoke", "--data", str(t / "no-data")], 1, ["data folder not found", "no-data"]


def _hub_data_offline(t: Path):
    return (["--recipe", "smoke", "--data", "no-such-org/no-such-dataset"], 1,
            ["no-such-org/no-such-dataset", "pass a local folder with --data"])


def _missing_test_file(t: Path):
    folder = write_data_folder(t / "data", good_rows(60, 1), None)
    return ["--recipe", "smoke", "--data", str(folder), *SMALL], 1, ["no test file in", str(folder)]


def _missing_column(t: Path):
    rows = [{"review": r["text"], "label": r["label"]} for r in good_rows(60, 1)]
    folder = write_data_folder(t / "data", rows, rows)
    return (["--recipe", "smoke", "--data", str(folder), *SMALL], 1,
            ["train.jsonl", "no column 'text'", "review"])


def _missing_custom_column(t: Path):
    folder = write_data_folder(t / "data", good_rows(60, 1), good_rows(30, 2))
    return (["--recipe", "smoke", "--data", str(folder), "--label-column", "stars", *SMALL], 1,
            ["no column 'stars'"])


def data_with_test(tmp_path: Path, test: list[dict[str, Any]]) -> Path:
    return write_data_folder(tmp_path / "data", good_rows(60, 1), test)


# A third label in the training split is a third class (tests/test_multiclass.py); in the test split
# of a binary training set it is refused.
def _label_two(t: Path):
    folder = data_with_test(t, good_rows(30, 2) + [{"text": "so-so", "label": 2}])
    return (["--recipe", "smoke", "--data", str(folder), *SMALL], 1,
            ["test.jsonl", "1 label(s) outside the two classes", "2"])


def _label_neutral(t: Path):
    rows = relabel(good_rows(30, 2), NEG_POS) + [{"text": "so-so", "label": "neutral"},
                                                 {"text": "meh", "label": "neutral"}]
    folder = data_with_test(t, rows)
    return (["--recipe", "smoke", "--data", str(folder), *SMALL], 1,
            ["2 label(s) outside the two classes", "'neutral'"])


def _empty_texts(t: Path):
    rows = good_rows(60, 1) + [{"text": "", "label": 0}, {"text": "  ", "label": 1},
                               {"text": "\n", "label": 0}]
    folder = data_with_train(t, rows)
    return (["--recipe", "smoke", "--data", str(folder), *SMALL], 1,
            ["3 empty text(s)", "column 'text'"])


def _subset_too_large(t: Path):
    folder = write_data_folder(t / "data", good_rows(30, 1), good_rows(30, 2))
    return (["--recipe", "smoke", "--data", str(folder), "--train-size", "31", "--test-size", "10"], 1,
            ["train subset of 31 is larger than the split (30 rows)"])


def _one_class(t: Path):
    folder = write_data_folder(t / "data", good_rows(60, 1),
                               [{"text": f"Great film number {i}.", "label": 1} for i in range(30)])
    return (["--recipe", "smoke", "--data", str(folder), *SMALL], 1,
            ["test subset of 20 has only one class (POSITIVE)"])


def _unreadable_file(t: Path):
    folder = write_data_folder(t / "data", None, good_rows(30, 2))
    (folder / "train.csv").write_bytes(b"\xff\xfe\x00garbage\x00,,,\n\x00")
    return ["--recipe", "smoke", "--data", str(folder), *SMALL], 1, ["train.csv"]


CASES: list[Case] = [
    _unknown_method, _bad_scheduler, _bad_int_option, _unknown_option,
    _missing_recipe_name, _missing_recipe_file, _recipe_unknown_key, _recipe_unknown_section,
    _recipe_wrong_type, _recipe_bad_yaml, _recipe_not_a_mapping,
    _set_no_equals, _set_no_key, _set_unknown_key, _set_into_value, _set_wrong_type,
    _size("--train-size", "0", "train_size"), _size("--test-size", "0", "test_size"),
    _size("--train-size", "-5", "train_size"), _size("--test-size", "-1", "test_size"),
    _missing_model_folder, _model_folder_without_config, _hub_model_offline, _hub_tokenizer_offline,
    _unknown_target_module,
    _missing_data_folder, _hub_data_offline, _missing_test_file, _missing_column,
    _missing_custom_column, _label_two, _label_neutral, _empty_texts, _subset_too_large, _one_class,
    _unreadable_file,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_bad_train_input(tmp_path: Path, case: Case) -> None:
    args, code, fragments = case(tmp_path)
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke(["train", *args, "-o", str(out)])
    assert_one_line_error(result, code, *fragments)
    assert not out.exists()
    assert dot_entries(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing else was written


def test_failure_after_output_is_started_cleans_up(tmp_path: Path) -> None:
    # The bad target module is found after the run folder's temporary sibling (with base/) exists.
    out = tmp_path / "new-parent" / "out"
    result = invoke(["train", "--recipe", "smoke", "--method", "lora", "--target-modules", "nope",
                     "-o", str(out)])
    assert_one_line_error(result, 1, "nope")
    assert not out.exists()
    assert not out.parent.exists()  # a parent created for the run is removed again
    assert dot_entries(tmp_path) == []


def test_existing_output_is_kept_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier run")
    result = invoke(["train", "--recipe", "smoke", "--method", "full", "-o", str(out)])
    assert_one_line_error(result, 1, "already exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "earlier run"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert dot_entries(tmp_path) == []


def test_output_that_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("a file")
    result = invoke(["train", "--recipe", "smoke", "--method", "full", "-o", str(out), "--overwrite"])
    assert_one_line_error(result, 1, "not a folder")
    assert out.read_text() == "a file"


def test_overwrite_replaces_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier run")
    (out / "model").mkdir()
    (out / "model" / "stale.bin").write_text("old weights")
    result = invoke(["train", "--recipe", "smoke", "--method", "full", "-o", str(out), "--overwrite",
                     "--epochs", "1", "--train-size", "64", "--test-size", "32"])
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists()
    assert not (out / "model" / "stale.bin").exists()
    assert (out / "model" / "model.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_test"]) == (64, 32)
    assert dot_entries(tmp_path) == []  # neither .partial nor .old left


# ---------------------------------------------------------------- bad inputs to evaluate and predict


def test_evaluate_missing_folder(tmp_path: Path) -> None:
    assert_one_line_error(invoke(["evaluate", str(tmp_path / "no-run")]), 1, "folder not found")


def test_evaluate_unfinished_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("method: full\n")
    assert_one_line_error(invoke(["evaluate", str(tmp_path / "run")]), 1, "did not finish")


def test_evaluate_folder_that_is_no_model(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    assert_one_line_error(invoke(["predict", str(tmp_path / "junk"), "text"]), 1,
                          "neither a run, a model folder nor an adapter folder")


def test_predict_hub_id_offline() -> None:
    assert_one_line_error(invoke(["predict", "no-such-org/no-such-model", "good"]), 1,
                          "no-such-org/no-such-model", "local folder")


def test_predict_without_text(tmp_path: Path) -> None:
    assert_one_line_error(invoke(["predict", str(tmp_path), "--json"], input=""), 2, "no text given")


def test_predict_bad_batch_size(tmp_path: Path) -> None:
    assert_one_line_error(invoke(["predict", str(tmp_path), "x", "--batch-size", "0"]), 2,
                          "--batch-size")


def test_unknown_command() -> None:
    assert_one_line_error(invoke(["fit"]), 2, "No such command 'fit'")


# ---------------------------------------------------------------- real processes: real stderr


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "peft-sentiment"
    found = str(script) if script.exists() else shutil.which("peft-sentiment")
    if found is None:
        pytest.skip("the peft-sentiment console script is not installed in this environment")
    return [found]


def test_errors_in_a_real_process(tmp_path: Path) -> None:
    """Library warnings and progress bars bound to the real stderr must not add lines.

    Two fresh processes, run side by side: the console script and `python -m peft_sentiment`.
    """
    rows = relabel(good_rows(30, 2), NEG_POS) + [{"text": "meh", "label": "neutral"}]
    folder = data_with_test(tmp_path, rows)
    cases = [
        ([*_console_script(), "train", "--recipe", "smoke", "--data", str(folder), *SMALL,
          "-o", str(tmp_path / "o1")], 1, "outside the two classes"),
        ([sys.executable, "-m", "peft_sentiment", "train", "--recipe", "smoke",
          "--model", "no-such-org/no-such-model", "--set", "model.architecture=null",
          "-o", str(tmp_path / "o2")], 1, "pass a local folder"),
    ]
    import subprocess

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for args, _, _ in cases]
    for proc, (args, code, fragment) in zip(procs, cases):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == code, (args, stdout, stderr)
        lines = error_lines(stderr)
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, stderr)
        assert fragment in lines[0]
        assert "Traceback" not in stderr and stdout.strip() == ""
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert dot_entries(tmp_path) == []
    assert not (tmp_path / "runs").exists()  # nothing went to the default output either


# ---------------------------------------------------------------- the offline guard itself


def test_network_is_blocked_and_hub_is_offline() -> None:
    import socket

    import huggingface_hub.constants
    from conftest import NetworkDisabled

    with pytest.raises(NetworkDisabled):
        socket.create_connection(("203.0.113.1", 443), timeout=1)  # TEST-NET-3, never routed
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    assert os.environ["HF_HOME"] not in ("", str(Path.home() / ".cache" / "huggingface"))


def test_ctrl_c_stops_cleanly_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during training: a message, exit 130, and no run folder or temporary folder left."""
    import peft_sentiment.run as run_module

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "train", interrupted)
    out = tmp_path / "runs" / "interrupted"
    result = invoke(["train", "--recipe", "smoke", "-o", out])
    assert result.exit_code == 130
    assert "Interrupted" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not out.exists()
    assert not (tmp_path / "runs").exists()
