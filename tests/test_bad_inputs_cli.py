"""Bad input across every command: numbers at zero, below zero and absurdly large; recipes that are
not mappings or are empty; model folders with broken or foreign configs; data without its columns,
texts or splits; outputs where nothing can be written.

Each case exits non-zero with exactly one `Error: ...` line on stderr that names the bad value or
path, prints no traceback, and leaves nothing behind. Cases the code does not meet yet are strict
xfails whose reason says what happens instead (the owner of the module named there fixes it).
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from conftest import copy_run, dot_entries, error_lines, invoke, make_rows, write_data_folder, write_jsonl

SMALL = ["--train-size", "32", "--test-size", "16", "--epochs", "1"]
HUGE = 10**30  # past every int64: no library can take it
NO_TYPE = 2  # exit code of a click usage error; library errors exit 1
MAX_LENGTH = ("data.max_length", "--max-length")

# A fragment the error line must hold; a tuple holds alternatives (a key spelled either way).
Fragment = str | tuple[str, ...]
# (args, exit code or codes, fragments)
Built = tuple[list[Any], int | tuple[int, ...], list[Fragment]]


class Runs:
    """The shared smoke runs, trained on first use, so cases that need none start at once."""

    FIXTURES = {"full": "smoke_full", "lora": "lora_run"}

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self.used: dict[str, Path] = {}
        self._taken: socket.socket | None = None

    def __getitem__(self, kind: str) -> Path:
        if kind not in self.used:
            value = self._request.getfixturevalue(self.FIXTURES[kind])
            self.used[kind] = Path(getattr(value, "path", value))
        return self.used[kind]

    @property
    def taken_port(self) -> int:
        """A port on 127.0.0.1 that this test holds open until it ends."""
        if self._taken is None:
            self._taken = socket.create_server(("127.0.0.1", 0))
            self._request.addfinalizer(self._taken.close)
        return self._taken.getsockname()[1]


Case = Callable[[Path, Runs], Built]


def case(name: str, build: Case, xfail: str | None = None) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(build, id=name, marks=marks)


# ---------------------------------------------------------------- builders


def _file(path: Path, data: str | bytes = "a file") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def _folder(path: Path, files: dict[str, str | bytes] | None = None) -> Path:
    path.mkdir(parents=True)
    for name, data in (files or {}).items():
        _file(path / name, data)
    return path


def train(t: Path, *args: Any) -> list[Any]:
    """`train --recipe smoke` into a run folder under `t` (never the default runs/ folder)."""
    return ["train", "--recipe", "smoke", "-o", t / "run", *args]


def train_model(t: Path, model: Path) -> list[Any]:
    """`train` from the local model folder `model` (the smoke recipe builds its own otherwise)."""
    return train(t, "--set", "model.architecture=null", "--model", model, *SMALL)


def train_data(t: Path, data: Path) -> list[Any]:
    return train(t, "--data", data, *SMALL)


ROWS = make_rows(40)


def _renamed(rows: list[dict[str, Any]], **names: str) -> list[dict[str, Any]]:
    return [{names.get(k, k): v for k, v in row.items()} for row in rows]


def bert_config() -> str:
    """A valid config of another architecture than the runs' DistilBERT."""
    return json.dumps({"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 64})


def model_copy(t: Path, runs: Runs, files: dict[str, str | None]) -> Path:
    """The full run's model/ folder copied, with files replaced (None: removed)."""
    folder = t / "model"
    shutil.copytree(runs["full"] / "model", folder)
    for name, text in files.items():
        if text is None:
            (folder / name).unlink()
        else:
            (folder / name).write_text(text)
    return folder


def adapter_copy(t: Path, runs: Runs, config: str | None = None, **changes: Any) -> Path:
    """The LoRA run's adapter/ folder copied, its adapter_config.json replaced by `config` or changed."""
    folder = t / "adapter"
    shutil.copytree(runs["lora"] / "adapter", folder)
    if config is None:
        config = json.dumps({**json.loads((folder / "adapter_config.json").read_text()), **changes})
    (folder / "adapter_config.json").write_text(config)
    return folder


def lora_copy(t: Path, runs: Runs, files: dict[str, str | None]) -> Path:
    """A copy of the LoRA run with files replaced; None empties a folder."""
    run = copy_run(runs["lora"], t / "lora-run")
    for relative, text in files.items():
        if text is None:
            shutil.rmtree(run / relative)
            (run / relative).mkdir()
        else:
            (run / relative).write_text(text)
    return run


def train_file(t: Path, name: str, text: str) -> Path:
    """The training file `name` holding `text`, in a data folder with good test rows."""
    return _file(write_data_folder(t / "d", None, ROWS) / name, text)


def csv_header_only(t: Path, r: Runs) -> Built:
    file = train_file(t, "train.csv", "text,label\n")
    return train_data(t, file.parent), 1, [str(file), "no rows"]


def jsonl_bad_line(t: Path, r: Runs) -> Built:
    file = train_file(t, "train.jsonl", json.dumps(ROWS[0]) + "\n{broken\n")
    return train_data(t, file.parent), 1, [str(file), "line 2", "not valid JSON"]


def push(run: Path, staging: Path, *args: Any, repo_id: str = "someone/model") -> list[Any]:
    """A dry-run push of the merged model of `run`, staged in `staging`."""
    return ["push", run, "--repo-id", repo_id, "--merged", "--dry-run", "--staging-dir", staging, *args]


def serve(r: Runs, source: Any, *args: Any) -> list[Any]:
    """`serve SOURCE` on a port that is taken: a case that wrongly got as far as listening fails (and
    names the port) instead of serving forever."""
    return ["serve", source, "--port", r.taken_port, *args]


def benchmark(t: Path, *args: Any, method: str = "smoke") -> list[Any]:
    """A benchmark of one method (its own baseline) into a folder under `t`."""
    return ["benchmark", "-o", t / "bench", "--methods", method, "--baseline", Path(method).stem, *args]


def benchmark_unwritable(t: Path, *args: Any) -> list[Any]:
    """A benchmark whose output cannot be created: a bad spec must be named before the output is
    touched (if it is checked only later, the error names the output instead)."""
    return ["benchmark", "-o", _file(t / "f") / "bench", *args]


def export(run: Path, t: Path, *args: Any) -> list[Any]:
    """`export RUN` into a folder under `t`."""
    return ["export", run, "-o", t / "out", *args]


def tune(t: Path, *args: Any) -> list[Any]:
    """A search of the smoke recipe's space into a folder under `t`."""
    return ["tune", "--recipe", "smoke", "-o", t / "study", *args]


# ---------------------------------------------------------------- cases

CASES = [
    # ---- train: numbers at zero, below zero, absurd
    case("train-lr-zero", lambda t, r: (
        train(t, "--lr", "0"), 1, [("learning_rate", "train.lr"), "got 0"])),
    case("train-lr-negative", lambda t, r: (
        train(t, "--lr", "-0.001"), 1, [("learning_rate", "train.lr"), "got -0.001"])),
    case("train-epochs-negative", lambda t, r: (
        train(t, "--epochs", "-2"), 1, ["epochs", "got -2"])),
    case("train-epochs-infinite", lambda t, r: (
        train(t, "--epochs", "inf"), 1, ["epochs", "finite", "got inf"])),
    case("train-batch-size-zero", lambda t, r: (
        train(t, "--batch-size", "0"), 1, ["train_batch_size", "got 0"])),
    case("train-eval-batch-size-negative", lambda t, r: (
        train(t, "--eval-batch-size", "-4"), 1, ["eval_batch_size", "got -4"])),
    case("train-weight-decay-negative", lambda t, r: (
        train(t, "--weight-decay", "-0.1"), 1, ["weight_decay", "got -0.1"])),
    case("train-max-length-zero", lambda t, r: (
        train(t, "--max-length", "0"), 1, [MAX_LENGTH, "got 0"])),
    case("train-lora-r-negative", lambda t, r: (
        train(t, "--lora-r", "-4"), 1, ["lora.r", "got -4"])),
    case("train-lora-alpha-zero", lambda t, r: (
        train(t, "--lora-alpha", "0"), 1, ["lora.alpha", "got 0"])),
    case("train-lora-dropout-one", lambda t, r: (
        train(t, "--lora-dropout", "1"), 1, ["lora.dropout", "got 1"])),
    case("train-train-size-absurd", lambda t, r: (
        train(t, "--train-size", 10**12), 1, [str(10**12), "larger than the split"])),
    case("train-max-length-absurd", lambda t, r: (
        train(t, *SMALL, "--max-length", HUGE), 1, [MAX_LENGTH, str(HUGE)])),
    case("train-batch-size-absurd", lambda t, r: (
        train(t, *SMALL, "--batch-size", HUGE), 1, ["train_batch_size", str(HUGE)])),
    case("train-lora-r-absurd", lambda t, r: (
        train(t, *SMALL, "--lora-r", HUGE), 1, ["lora.r", str(HUGE)])),
    case("train-seed-negative", lambda t, r: (
        train(t, *SMALL, "--seed", "-1"), 1, [("train.seed", "--seed"), "got -1"])),
    case("train-shuffle-seed-negative", lambda t, r: (
        train(t, *SMALL, "--set", "data.shuffle_seed=-1"), 1, ["data.shuffle_seed", "got -1"])),
    # ---- train: recipes that are not mappings, or are empty
    case("train-recipe-list", lambda t, r: (
        ["train", "--recipe", p := _file(t / "list.yaml", "- lora\n- full\n"), "-o", t / "run"], 1,
        [str(p), "mapping"])),
    case("train-recipe-scalar", lambda t, r: (
        ["train", "--recipe", p := _file(t / "scalar.yaml", "lora\n"), "-o", t / "run"], 1,
        [str(p), "mapping"])),
    case("train-recipe-section-list", lambda t, r: (
        ["train", "--recipe", _file(t / "section.yaml", "data: [builtin:smoke]\n"), "-o", t / "run"], 1,
        ["data must be a mapping", "list"])),
    case("train-recipe-not-utf8", lambda t, r: (
        ["train", "--recipe", p := _file(t / "binary.yaml", b"\xff\xfe\x00method"), "-o", t / "run"], 1,
        [str(p), "utf-8"])),
    case("train-recipe-empty", lambda t, r: (
        ["train", "--recipe", p := _file(t / "empty.yaml", ""), "-o", t / "run"], 1,
        [str(p), "empty"])),
    case("train-recipe-only-comments", lambda t, r: (
        ["train", "--recipe", p := _file(t / "comments.yaml", "# method: lora\n"), "-o", t / "run"], 1,
        [str(p), "empty"])),
    # ---- train: model folders with broken or foreign configs
    case("train-model-config-not-json", lambda t, r: (
        train_model(t, m := _folder(t / "m", {"config.json": "{not json"})), 1, [str(m), "JSON"])),
    case("train-model-config-a-list", lambda t, r: (
        train_model(t, m := _folder(t / "m", {"config.json": "[1, 2]"})), 1, [str(m)])),
    case("train-model-foreign-config-no-weights", lambda t, r: (
        train_model(t, m := _folder(t / "m", {"config.json": bert_config()})), 1,
        [str(m), "model.safetensors"])),
    case("train-model-unsupported-type", lambda t, r: (
        train_model(t, m := _folder(t / "m", {"config.json": '{"model_type": "vit"}'})), 1,
        [str(m), "ViT"])),
    case("train-model-unknown-type", lambda t, r: (
        train_model(t, m := _folder(t / "m", {"config.json": '{"model_type": "no-such-model"}'})), 1,
        [str(m), "no-such-model"])),
    case("train-model-is-a-file", lambda t, r: (
        train_model(t, f := _file(t / "config.json", bert_config())), 1, [str(f)])),
    # ---- train: data without columns, texts or splits
    case("train-data-test-without-labels", lambda t, r: (
        train_data(t, d := write_data_folder(t / "d", ROWS, _renamed(ROWS, label="stars"))), 1,
        [str(d / "test.jsonl"), "'label'"])),
    case("train-data-only-test-split", lambda t, r: (
        train_data(t, d := write_data_folder(t / "d", None, ROWS)), 1, ["no train file", str(d)])),
    case("train-data-is-a-file", lambda t, r: (
        train_data(t, f := write_jsonl(t / "reviews.jsonl", ROWS)), 1, [str(f), "must be a folder"])),
    case("train-data-csv-header-only", csv_header_only),
    case("train-data-jsonl-bad-line", jsonl_bad_line),
    case("train-data-texts-not-strings", lambda t, r: (
        train_data(t, d := write_data_folder(t / "d", [{"text": i, "label": i % 2} for i in range(40)],
                                             ROWS)), 1, [str(d / "train.jsonl"), "not text"])),
    case("train-data-whitespace-texts", lambda t, r: (
        train_data(t, d := write_data_folder(t / "d", ROWS, [{**row, "text": " \t "} for row in ROWS])), 1,
        [str(d / "test.jsonl"), "40 empty text(s)"])),
    # ---- evaluate
    case("evaluate-test-size-absurd", lambda t, r: (
        ["evaluate", r["full"], "--test-size", 10**9], 1, [str(10**9), "larger than the split"])),
    case("evaluate-max-length-zero", lambda t, r: (
        ["evaluate", r["full"], "--max-length", "0"], 1, [MAX_LENGTH, "got 0"])),
    case("evaluate-max-length-absurd", lambda t, r: (
        ["evaluate", r["full"], "--max-length", HUGE], 1, [MAX_LENGTH, str(HUGE)])),
    case("evaluate-data-only-train-split", lambda t, r: (
        ["evaluate", r["full"], "--data", d := write_data_folder(t / "d", ROWS, None)], 1,
        ["no test file", str(d)])),
    case("evaluate-data-empty-texts", lambda t, r: (
        ["evaluate", r["full"], "--test-size", "8",
         "--data", d := write_data_folder(t / "d", None, ROWS[:30] + [{"text": "", "label": 1}])], 1,
        [str(d / "test.jsonl"), "1 empty text(s)"])),
    case("evaluate-save-predictions-under-a-file", lambda t, r: (
        ["evaluate", r["full"], "--save-predictions", _file(t / "f") / "predictions.json"], 1,
        [str(t / "f")])),
    case("evaluate-model-config-not-json", lambda t, r: (
        ["evaluate", m := model_copy(t, r, {"config.json": "{not json"}), "--data", "builtin:smoke"], 1,
        [str(m), "JSON"])),
    case("evaluate-foreign-config-no-weights", lambda t, r: (
        ["evaluate", m := _folder(t / "m", {"config.json": bert_config()}), "--data", "builtin:smoke"], 1,
        [str(m / "model.safetensors"), "missing"])),
    # ---- predict
    case("predict-output-under-a-file", lambda t, r: (
        ["predict", r["full"], "good film", "-o", _file(t / "f") / "out.txt"], 1,
        [str(t / "f"), "not a folder"])),
    case("predict-batch-size-negative", lambda t, r: (
        ["predict", r["full"], "good", "--batch-size", "-1"], NO_TYPE,
        ["--batch-size", "-1 is not in the range"])),
    case("predict-chunk-size-zero", lambda t, r: (
        ["predict", r["full"], "good", "--chunk-size", "0"], NO_TYPE,
        ["--chunk-size", "0 is not in the range"])),
    case("predict-file-missing", lambda t, r: (
        ["predict", r["full"], "--file", t / "texts.txt"], NO_TYPE, [str(t / "texts.txt")])),
    case("predict-file-empty", lambda t, r: (
        ["predict", r["full"], "--file", f := _file(t / "texts.txt", "\n \n")], (1, NO_TYPE), [str(f)])),
    case("predict-model-config-not-json", lambda t, r: (
        ["predict", m := model_copy(t, r, {"config.json": "{not json"}), "good"], 1, [str(m), "JSON"])),
    case("predict-foreign-config-other-weights", lambda t, r: (
        ["predict", m := model_copy(t, r, {"config.json": bert_config()}), "good"], 1, [str(m)])),
    case("predict-model-without-tokenizer", lambda t, r: (
        ["predict", m := model_copy(t, r, {"tokenizer.json": None, "tokenizer_config.json": None}), "good"],
        1, [str(m)])),
    case("predict-adapter-config-not-json", lambda t, r: (
        ["predict", a := adapter_copy(t, r, config="not json"), "good"], 1, [str(a)])),
    case("predict-adapter-base-missing", lambda t, r: (
        ["predict", adapter_copy(t, r, base_model_name_or_path=str(t / "no-base")), "good"], 1,
        [str(t / "no-base")])),
    # ---- merge
    case("merge-output-under-a-file", lambda t, r: (
        ["merge", r["lora"], "-o", _file(t / "f") / "merged"], 1, [str(t / "f")])),
    case("merge-output-is-a-file", lambda t, r: (
        ["merge", r["lora"], "-o", _file(t / "f"), "--overwrite"], 1, [str(t / "f"), "not a folder"])),
    case("merge-run-config-a-list", lambda t, r: (
        ["merge", run := lora_copy(t, r, {"config.yaml": "- lora\n"}), "-o", t / "merged"], 1,
        [str(run / "config.yaml"), "mapping"])),
    case("merge-run-config-empty", lambda t, r: (
        ["merge", run := lora_copy(t, r, {"config.yaml": ""}), "-o", t / "merged"], 1,
        [str(run / "config.yaml")])),
    case("merge-base-config-not-json", lambda t, r: (
        ["merge", run := lora_copy(t, r, {"base/config.json": "{not json"}), "-o", t / "merged"], 1,
        [str(run / "base"), "JSON"])),
    case("merge-base-foreign-config", lambda t, r: (
        ["merge", run := lora_copy(t, r, {"base/config.json": bert_config()}), "-o", t / "merged"], 1,
        [str(run / "base")])),
    case("merge-base-empty-folder", lambda t, r: (
        ["merge", run := lora_copy(t, r, {"base": None}), "-o", t / "merged"], 1,
        [str(run / "base" / "model.safetensors"), "missing"])),
    # ---- push
    case("push-staging-under-a-file", lambda t, r: (
        push(r["full"], _file(t / "f") / "staged"), 1, [str(t / "f")])),
    case("push-staging-is-a-file", lambda t, r: (
        push(r["full"], _file(t / "f"), "--overwrite"), 1, [str(t / "f"), "not a folder"])),
    case("push-repo-id-three-parts", lambda t, r: (
        push(r["full"], t / "staged", repo_id="a/b/c"), 1, ["'a/b/c'"])),
    case("push-benchmark-empty-file", lambda t, r: (
        push(r["full"], t / "staged", "--benchmark", f := _file(t / "b.json", "")), 1, [str(f), "JSON"])),
    case("push-benchmark-is-a-folder", lambda t, r: (
        push(r["full"], t / "staged", "--benchmark", d := _folder(t / "bench")), 1, [str(d)])),
    case("push-license-empty", lambda t, r: (
        push(r["full"], t / "staged", "--license", ""), 1, ["--license ''"])),
    case("push-license-two-lines", lambda t, r: (
        push(r["full"], t / "staged", "--license", "mit\ntags: [x]"), 1, ["--license", "'mit\\ntags: [x]'"])),
    case("push-base-model-id-local-path", lambda t, r: (
        push(r["full"], t / "staged", "--base-model-id", "./weights"), 1, ["'./weights'", "Hub model id"])),
    # ---- benchmark
    case("benchmark-seeds-empty", lambda t, r: (
        benchmark(t, "--seeds", ","), 1, ["seeds"])),
    case("benchmark-seeds-negative", lambda t, r: (
        benchmark_unwritable(t, "--methods", "smoke", "--baseline", "smoke", "--seeds", "-1"), 1,
        [("train.seed", "--seeds"), "got -1"])),
    case("benchmark-resamples-too-few", lambda t, r: (
        benchmark(t, "--resamples", "5"), NO_TYPE, ["--resamples", "5 is not in the range"])),
    case("benchmark-eval-test-size-zero", lambda t, r: (
        benchmark(t, "--eval-test-size", "0"), NO_TYPE, ["--eval-test-size", "0 is not in the range"])),
    case("benchmark-nproc-per-node-zero", lambda t, r: (
        benchmark(t, "--launcher", "torchrun", "--nproc-per-node", "0"), NO_TYPE,
        ["--nproc-per-node", "0 is not in the range"])),
    case("benchmark-lr-negative", lambda t, r: (
        benchmark(t, "--lr", "-1"), 1, [("learning_rate", "train.lr"), "got -1"])),
    case("benchmark-max-length-zero", lambda t, r: (
        benchmark(t, "--max-length", "0"), 1, [MAX_LENGTH, "got 0"])),
    case("benchmark-output-under-a-file", lambda t, r: (
        benchmark_unwritable(t, "--methods", "smoke", "--baseline", "smoke"), 1, [str(t / "f")])),
    case("benchmark-recipe-not-a-mapping", lambda t, r: (
        benchmark(t, method=str(p := _file(t / "list.yaml", "- lora\n"))), 1, [str(p), "mapping"])),
    case("benchmark-recipe-empty", lambda t, r: (
        benchmark_unwritable(t, "--methods", p := _file(t / "empty.yaml", ""), "--baseline", "empty"), 1,
        [str(p)])),
    case("benchmark-baseline-unknown", lambda t, r: (
        benchmark_unwritable(t, "--methods", "smoke", "--baseline", "nope"), 1, ["nope"])),
    case("benchmark-report-not-results", lambda t, r: (
        ["benchmark", "--report", f := _file(t / "results.json", "[1, 2]")], 1,
        [str(f), "not a peft-sentiment benchmark results file"])),
    # ---- serve: every case fails before the server listens
    case("serve-port-zero", lambda t, r: (
        ["serve", r["full"], "--port", "0"], NO_TYPE, ["--port", "0 is not in the range"])),
    case("serve-port-negative", lambda t, r: (
        ["serve", r["full"], "--port", "-1"], NO_TYPE, ["--port", "-1 is not in the range"])),
    case("serve-port-absurd", lambda t, r: (
        ["serve", r["full"], "--port", "70000"], NO_TYPE, ["--port", "70000 is not in the range"])),
    case("serve-max-batch-zero", lambda t, r: (
        serve(r, r["full"], "--max-batch", "0"), NO_TYPE, ["--max-batch", "0 is not in the range"])),
    case("serve-max-wait-ms-negative", lambda t, r: (
        serve(r, r["full"], "--max-wait-ms", "-1"), NO_TYPE, ["--max-wait-ms", "-1.0 is not in the range"])),
    case("serve-max-wait-ms-nan", lambda t, r: (
        serve(r, r["full"], "--max-wait-ms", "nan"), 1, ["max_wait_ms", "nan"])),
    case("serve-max-texts-zero", lambda t, r: (
        serve(r, r["full"], "--max-texts", "0"), NO_TYPE, ["--max-texts", "0 is not in the range"])),
    case("serve-max-text-bytes-negative", lambda t, r: (
        serve(r, r["full"], "--max-text-bytes", "-5"), NO_TYPE,
        ["--max-text-bytes", "-5 is not in the range"])),
    case("serve-backend-bogus", lambda t, r: (
        serve(r, r["full"], "--backend", "bogus"), NO_TYPE, ["--backend", "'bogus'"])),
    case("serve-backend-onnx-on-a-run", lambda t, r: (
        serve(r, r["full"], "--backend", "onnx"), 1, ["backend onnx", str(r["full"])])),
    case("serve-folder-not-a-run", lambda t, r: (
        serve(r, d := _folder(t / "notes", {"notes.txt": "a review"})), 1, [str(d), "neither a run"])),
    case("serve-unfinished-run", lambda t, r: (
        serve(r, _folder(t / "run.partial", {"IN_PROGRESS": ""}).with_name("run")), 1,
        [str(t / "run"), "did not finish"])),
    case("serve-model-config-not-json", lambda t, r: (
        serve(r, m := model_copy(t, r, {"config.json": "{not json"})), 1, [str(m), "JSON"])),
    case("serve-port-taken", lambda t, r: (
        serve(r, r["full"]), 1, [f"cannot listen on 127.0.0.1:{r.taken_port}", "in use"])),
    # ---- tune: every case fails before a trial starts
    case("tune-validation-size-zero", lambda t, r: (
        tune(t, "--validation-size", "0"), 1, ["data.validation_size 0", "--validation-size"])),
    case("tune-recipe-without-tune-section", lambda t, r: (
        ["tune", "--recipe", "seed", "-o", t / "study"], 1, ["no tune: section"])),
    case("tune-key-unknown", lambda t, r: (
        tune(t, "--set", "tune={lora.rank: {choices: [4, 8]}}"), 1, ["unknown key 'lora.rank'"])),
    case("tune-low-not-below-high", lambda t, r: (
        tune(t, "--set", "tune={trainer.learning_rate: {low: 1.0e-3, high: 1.0e-4}}"), 1,
        ["tune.trainer.learning_rate", "low must be below high"])),
    case("tune-range-not-numbers", lambda t, r: (
        tune(t, "--set", "tune={trainer.learning_rate: {low: small, high: big}}"), 1,
        ["tune.trainer.learning_rate.low", "'small'"])),
    case("tune-choice-zero", lambda t, r: (
        tune(t, "--set", "tune={lora.r: {choices: [0, 8]}}"), 1, ["tune.lora.r", "got 0"])),
    case("tune-trials-zero", lambda t, r: (
        tune(t, "--trials", "0"), NO_TYPE, ["--trials", "0 is not in the range"])),
    case("tune-timeout-negative", lambda t, r: (
        tune(t, "--timeout", "-1"), NO_TYPE, ["--timeout", "-1.0 is not in the range"])),
    case("tune-seed-negative", lambda t, r: (
        tune(t, "--seed", "-1"), 1, ["--seed", "got -1"])),
    case("tune-lr-fixed-and-tuned", lambda t, r: (
        tune(t, "--lr", "1e-3"), 1, ["trainer.learning_rate", "drop one"])),
    case("tune-enqueue-outside-space", lambda t, r: (
        tune(t, "--enqueue", "trainer.learning_rate=0.5"), 1, ["--enqueue", "outside the search space"])),
    case("tune-output-is-a-file", lambda t, r: (
        ["tune", "--recipe", "smoke", "-o", _file(t / "f")], 1, [str(t / "f"), "not a folder"])),
    case("tune-output-under-a-file", lambda t, r: (
        ["tune", "--recipe", "smoke", "-o", _file(t / "f") / "study"], 1, [str(t / "f")])),
    case("tune-output-exists", lambda t, r: (
        ["tune", "--recipe", "smoke", "-o", d := _folder(t / "study", {"notes.txt": "x"})], 1,
        [str(d), "already exists", "--resume"])),
    case("tune-resume-not-a-study", lambda t, r: (
        ["tune", "--recipe", "smoke", "-o", d := _folder(t / "study", {"notes.txt": "x"}), "--resume"], 1,
        [str(d), "no study.db", "nothing to resume"])),
    # ---- export: every case fails before the model is loaded
    case("export-quantize-bogus", lambda t, r: (
        export(r["full"], t, "--quantize", "bogus"), NO_TYPE, ["--quantize", "'bogus'"])),
    case("export-format-bogus", lambda t, r: (
        export(r["full"], t, "--format", "tflite"), NO_TYPE, ["--format", "'tflite'"])),
    case("export-output-under-a-file", lambda t, r: (
        ["export", r["full"], "-o", _file(t / "f") / "out"], 1, [str(t / "f")])),
    case("export-output-is-a-file", lambda t, r: (
        ["export", r["full"], "-o", _file(t / "f"), "--overwrite"], 1, [str(t / "f"), "not a folder"])),
    case("export-output-exists", lambda t, r: (
        ["export", r["full"], "-o", d := _folder(t / "out", {"notes.txt": "x"})], 1,
        [str(d), "already exists", "--overwrite"])),
    case("export-unfinished-run", lambda t, r: (
        export(_folder(t / "run.partial", {"IN_PROGRESS": ""}).with_name("run"), t), 1,
        [str(t / "run"), "did not finish"])),
    case("export-folder-not-a-run", lambda t, r: (
        export(d := _folder(t / "notes", {"notes.txt": "a review"}), t), 1, [str(d), "not a finished run"])),
    case("export-run-missing", lambda t, r: (
        export(t / "no-run", t), 1, [str(t / "no-run"), "not found"])),
    case("export-check-data-missing", lambda t, r: (
        export(r["full"], t, "--check-data", t / "no-data"), 1, ["--check-data", str(t / "no-data")])),
    case("export-check-data-without-test-split", lambda t, r: (
        export(r["full"], t, "--check-data", d := write_data_folder(t / "d", ROWS, None)), 1,
        ["--check-data", "no test file", str(d)])),
    case("export-run-config-a-list", lambda t, r: (
        export(run := lora_copy(t, r, {"config.yaml": "- lora\n"}), t), 1,
        [str(run / "config.yaml"), "mapping"])),
]


# ---------------------------------------------------------------- the checks


def tree(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def assert_one_error_line(result: Result, code: int | tuple[int, ...], fragments: list[Fragment]) -> None:
    codes = code if isinstance(code, tuple) else (code,)
    detail = f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    # An escaped library exception shows in CliRunner as exit 1 too: insist on a deliberate exit.
    assert isinstance(result.exception, SystemExit), f"{result.exception!r}\n{detail}"
    assert result.exit_code in codes, detail
    assert "Traceback" not in result.output, detail
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), detail
    assert result.stdout.strip() == "", detail
    for fragment in fragments:
        options = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(o in lines[0] for o in options), f"none of {options} in {lines[0]!r}"


def test_every_command_has_many_cases() -> None:
    names = [c.id for c in CASES]
    assert len(names) == len(set(names))
    commands = {name.split("-")[0] for name in names}
    assert commands == {"train", "evaluate", "predict", "merge", "push", "benchmark", "serve", "tune",
                        "export"}
    assert all(sum(n.startswith(f"{c}-") for n in names) >= 5 for c in commands)


@pytest.mark.parametrize("build", CASES)
def test_bad_input(build: Case, tmp_path: Path, request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything written to a relative default lands where it is seen
    runs = Runs(request)
    args, code, fragments = build(tmp_path, runs)
    before = tree(tmp_path)
    shared = {path: tree(path.parent) for path in runs.used.values()}
    result = invoke(args)
    assert_one_error_line(result, code, fragments)
    assert tree(tmp_path) == before, f"left behind: {sorted(map(str, tree(tmp_path) - before))}"
    assert dot_entries(tmp_path) == [], "a .partial or .lock file was left"
    for path, files in shared.items():  # the shared runs (and their parents) are untouched
        assert tree(path.parent) == files
