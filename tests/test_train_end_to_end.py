"""Training end to end: CLI smoke runs (full, lora), the run folder, learning, evaluate and predict,
and the save/reload round trip against the in-memory model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SMOKE_EVAL_BATCH, CliRun, dot_entries, invoke, make_rows, write_data_folder
from transformers import TrainerCallback

from peft_sentiment.config import load_config
from peft_sentiment.loading import load_model
from peft_sentiment.predict import load_pipeline, predict
from peft_sentiment.rundir import load_metrics, load_run_config

METRIC_KEYS = {"accuracy", "f1", "precision", "recall", "confusion_matrix", "n_train", "n_test",
               "train_seconds", "train_samples_per_second", "peak_memory_mib", "peak_memory_kind",
               "trainable_params", "total_params", "versions", "device"}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json"}
POSITIVE_TEXT = "The movie was wonderful. The acting was brilliant. The plot was a delight."
NEGATIVE_TEXT = "The movie was terrible. The acting was boring. The plot was a waste of time."
# Fixed batch for the round trip: words the smoke tokenizer knows, some it does not, mixed case.
PROBE_TEXTS = [
    POSITIVE_TEXT,
    NEGATIVE_TEXT,
    "THE SCRIPT IS PAINFULLY BAD. I watched it on a Sunday evening.",
    "Still, the soundtrack deserves every award. It is based on a novel.",
    "Zebra quantum xylophone!",
    "The ending was great fun. The cast felt cheap and lazy. The story is a masterpiece.",
]


def expected_cfg(method: str):
    return load_config("smoke", {"method": method, "trainer.per_device_eval_batch_size": SMOKE_EVAL_BATCH})


def read_log(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    assert lines, "empty log"
    return [json.loads(line) for line in lines]


# ---------------------------------------------------------------- the CLI runs and their folders


def test_cli_train_succeeds(smoke_run: CliRun) -> None:
    result = smoke_run.result
    assert result.exit_code == 0, f"{result.exception!r}\n{result.stdout}\n{result.stderr}"
    assert result.exception is None
    assert "Traceback" not in result.output


def test_run_folder_config(smoke_run: CliRun) -> None:
    cfg = load_run_config(smoke_run.path)
    assert cfg == expected_cfg(smoke_run.method)
    assert cfg.trainer["per_device_eval_batch_size"] == SMOKE_EVAL_BATCH  # CLI option beat the recipe's 64
    assert "warmup_steps" not in cfg.trainer  # not in the smoke recipe: TrainingArguments' default
    assert json.loads((smoke_run.path / "training_args.json").read_text())["warmup_steps"] == 0


def test_run_folder_metrics(smoke_run: CliRun) -> None:
    m = smoke_run.metrics
    assert METRIC_KEYS <= set(m)
    assert m == load_metrics(smoke_run.path)
    assert m["method"] == smoke_run.method
    assert (m["n_train"], m["n_test"]) == (400, 100)
    cm = m["confusion_matrix"]
    assert sum(map(sum, cm)) == 100
    assert m["accuracy"] == pytest.approx((cm[0][0] + cm[1][1]) / 100)
    tp, fp, fn = cm[1][1], cm[0][1], cm[1][0]
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["train_seconds"] > 0 and m["train_samples_per_second"] > 0
    assert m["peak_memory_mib"] > 0 and isinstance(m["peak_memory_kind"], str) and m["peak_memory_kind"]
    assert isinstance(m["device"], str) and m["device"]
    for package in ("python", "torch", "transformers", "peft", "datasets", "peft-sentiment"):
        assert m["versions"][package] not in ("", "not installed"), package
    assert 0 < m["trainable_params"] <= m["total_params"]
    assert m["train_steps"] == 5 * (400 // 16)


def test_parameter_counts_in_metrics(smoke_full: CliRun, smoke_lora: CliRun) -> None:
    full, lora = smoke_full.metrics, smoke_lora.metrics
    assert full["trainable_params"] == full["total_params"]
    model = load_model(smoke_full.path / "model").model
    assert full["total_params"] == sum(p.numel() for p in model.parameters())
    # LoRA r=8 on q,k,v,out (32->32), lin1 (32->64), lin2 (64->32) in 2 layers, plus the head
    # (pre_classifier 32x32+32, classifier 32x2+2).
    lora_params = 2 * (4 * 8 * (32 + 32) + 8 * (32 + 64) + 8 * (64 + 32))
    assert lora["trainable_params"] == lora_params + (32 * 32 + 32) + (32 * 2 + 2) == 8290
    # The LoRA total is the full model plus the LoRA layers plus the head's trainable copies.
    assert lora["total_params"] == full["total_params"] + lora["trainable_params"]
    assert lora["head_modules"] == ["pre_classifier", "classifier"]


def test_run_folder_log(smoke_run: CliRun) -> None:
    entries = read_log(smoke_run.path / "log.jsonl")
    steps = smoke_run.metrics["train_steps"]
    losses = [e for e in entries if "loss" in e]
    evals = [e for e in entries if "eval_accuracy" in e]
    assert len(losses) == steps // 5  # logging_steps 5 in the smoke recipe
    assert all(isinstance(e["loss"], float) and e["loss"] >= 0 for e in losses)
    assert [e["epoch"] for e in evals] == [1.0, 2.0, 3.0, 4.0, 5.0]  # one evaluation per epoch
    assert all({"eval_loss", "eval_f1", "step"} <= set(e) for e in evals)
    # Epochs are evaluated on validation: the last evaluation saw the final model on those reviews.
    assert evals[-1]["eval_accuracy"] == pytest.approx(smoke_run.metrics["validation"]["accuracy"])
    assert smoke_run.metrics["n_validation"] == 100 and smoke_run.metrics["kept"] == "last"
    assert losses[-1]["loss"] < losses[0]["loss"]


def test_run_folder_files(smoke_run: CliRun) -> None:
    path = smoke_run.path
    top = {p.name for p in path.iterdir()}
    if smoke_run.method == "full":
        assert top == {"config.yaml", "training_args.json", "metrics.json", "log.jsonl", "confusion_matrix.png",
                       "model"}
        files = {p.name for p in (path / "model").iterdir()}
        assert {"model.safetensors", "config.json", "labels.json"} | TOKENIZER_FILES <= files
        assert not any(f.endswith((".bin", ".pt")) for f in files)
    else:
        assert top == {"config.yaml", "training_args.json", "metrics.json", "log.jsonl", "confusion_matrix.png",
                       "adapter", "base"}
        files = {p.name for p in (path / "adapter").iterdir()}
        assert {"adapter_model.safetensors", "adapter_config.json", "labels.json"} | TOKENIZER_FILES <= files
        assert not any(f.endswith((".bin", ".pt")) for f in files)
        base = {p.name for p in (path / "base").iterdir()}
        assert {"model.safetensors", "config.json"} | TOKENIZER_FILES <= base
        adapter_cfg = json.loads((path / "adapter" / "adapter_config.json").read_text())
        assert set(adapter_cfg["target_modules"]) == {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"}
        assert {"pre_classifier", "classifier"} <= set(adapter_cfg["modules_to_save"])
        assert adapter_cfg["r"] == 8
    # Nothing else next to the run: no .partial or .old folders.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert dot_entries(path.parent) == []


def test_saved_model_labels(smoke_full: CliRun) -> None:
    config = json.loads((smoke_full.path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}
    assert config["label2id"] == {"NEGATIVE": 0, "POSITIVE": 1}


def test_cli_prints_parameters_and_metrics(smoke_run: CliRun) -> None:
    m = smoke_run.metrics
    stderr, stdout = smoke_run.result.stderr, smoke_run.result.stdout
    assert f"trainable params: {m['trainable_params']:,} of {m['total_params']:,}" in stderr
    for row in ("accuracy", "f1", "precision", "recall", "trainable params", "peak memory"):
        assert row in stdout
    assert f"{m['accuracy']:.4f}" in stdout
    assert f"{m['f1']:.4f}" in stdout
    assert f"{m['trainable_params']:,}" in stdout


# ---------------------------------------------------------------- learning


def test_full_fine_tuning_learns(smoke_full: CliRun) -> None:
    m = smoke_full.metrics
    assert m["accuracy"] >= 0.8, m
    assert m["f1"] >= 0.8, m


def test_lora_learns(smoke_lora: CliRun) -> None:
    m = smoke_lora.metrics
    assert m["accuracy"] >= 0.7, m
    assert m["f1"] > 0.5, m


# ---------------------------------------------------------------- evaluate and predict through the CLI


def test_evaluate_json_reproduces_metrics(smoke_run: CliRun) -> None:
    result = invoke(["evaluate", str(smoke_run.path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # exactly one JSON object on stdout
    saved = smoke_run.metrics
    assert data["accuracy"] == pytest.approx(saved["accuracy"], abs=1e-12)
    assert data["f1"] == pytest.approx(saved["f1"], abs=1e-12)
    assert data["confusion_matrix"] == saved["confusion_matrix"]
    assert data["n"] == 100
    assert data["source"] == str(smoke_run.path)


def test_evaluate_table(smoke_full: CliRun) -> None:
    result = invoke(["evaluate", str(smoke_full.path)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout
    assert f"{smoke_full.metrics['accuracy']:.4f}" in result.stdout


def test_evaluate_on_other_data(smoke_full: CliRun, tmp_path: Path) -> None:
    folder = write_data_folder(tmp_path / "d", None, make_rows(40, seed=11))
    result = invoke(["evaluate", str(smoke_full.path), "--data", str(folder), "--test-size", "30",
                     "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == 30
    assert sum(map(sum, data["confusion_matrix"])) == 30
    assert data["accuracy"] >= 0.7  # same distribution as the smoke set


def test_evaluate_model_folder_needs_data(smoke_full: CliRun) -> None:
    from conftest import assert_one_line_error

    result = invoke(["evaluate", str(smoke_full.path / "model")])
    assert_one_line_error(result, 1, "not a run folder", "--data")


def parse_json_lines(stdout: str) -> list[dict[str, Any]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_predict_json(smoke_run: CliRun) -> None:
    texts = [POSITIVE_TEXT, NEGATIVE_TEXT, "It runs a little over two hours."]
    result = invoke(["predict", str(smoke_run.path), *texts, "--json"])
    assert result.exit_code == 0, result.output
    rows = parse_json_lines(result.stdout)
    assert [r["text"] for r in rows] == texts
    assert all(r["label"] in {"NEGATIVE", "POSITIVE"} for r in rows)
    # What a score means (the softmax of the model's own logits) is checked in test_predict_stream.py.
    assert set(rows[0]) == {"text", "label", "score"}
    if smoke_run.method == "full":  # 99% on the test set: the clear cases must be right
        assert rows[0]["label"] == "POSITIVE"
        assert rows[1]["label"] == "NEGATIVE"


def test_predict_from_file(smoke_full: CliRun, tmp_path: Path) -> None:
    file = tmp_path / "reviews.txt"
    file.write_text(f"{POSITIVE_TEXT}\n\n{NEGATIVE_TEXT}\n   \n")  # blank lines are skipped
    result = invoke(["predict", str(smoke_full.path), "--file", str(file), "--json"])
    assert result.exit_code == 0, result.output
    rows = parse_json_lines(result.stdout)
    assert [r["text"] for r in rows] == [POSITIVE_TEXT, NEGATIVE_TEXT]
    assert [r["label"] for r in rows] == ["POSITIVE", "NEGATIVE"]


def test_predict_from_stdin(smoke_full: CliRun) -> None:
    result = invoke(["predict", str(smoke_full.path), "--json"], input=f"{NEGATIVE_TEXT}\n{POSITIVE_TEXT}\n")
    assert result.exit_code == 0, result.output
    rows = parse_json_lines(result.stdout)
    assert [r["label"] for r in rows] == ["NEGATIVE", "POSITIVE"]
    # "-" as --file reads standard input too.
    result = invoke(["predict", str(smoke_full.path), "--file", "-", "--json"], input=f"{POSITIVE_TEXT}\n")
    assert [r["label"] for r in parse_json_lines(result.stdout)] == ["POSITIVE"]


def test_predict_plain_output(smoke_full: CliRun) -> None:
    result = invoke(["predict", str(smoke_full.path), POSITIVE_TEXT, "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    label, score, text = result.stdout.rstrip("\n").split("\t")
    assert label == "POSITIVE" and text == POSITIVE_TEXT
    as_json = parse_json_lines(invoke(["predict", str(smoke_full.path), POSITIVE_TEXT, "--json"]).stdout)[0]
    assert float(score) == pytest.approx(as_json["score"], abs=5e-5)  # the same score, as printed


def test_predict_same_from_run_and_model_folder(smoke_full: CliRun) -> None:
    a = invoke(["predict", str(smoke_full.path), *PROBE_TEXTS, "--json"])
    b = invoke(["predict", str(smoke_full.path / "model"), *PROBE_TEXTS, "--json"])
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    ra, rb = parse_json_lines(a.stdout), parse_json_lines(b.stdout)
    assert [r["label"] for r in ra] == [r["label"] for r in rb]
    assert [r["score"] for r in ra] == pytest.approx([r["score"] for r in rb], abs=1e-5)


# ---------------------------------------------------------------- round trip against the in-memory model


class CaptureAtTrainEnd(TrainerCallback):
    """At the end of training: the model's logits on PROBE_TEXTS, the token ids, and the head."""

    def __init__(self) -> None:
        self.logits: torch.Tensor | None = None
        self.input_ids: torch.Tensor | None = None
        self.head: dict[str, torch.Tensor] = {}
        self.initial_head: dict[str, torch.Tensor] = {}

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        was_training = model.training
        model.eval()
        with torch.no_grad():
            enc = encode(processing_class, model)
            self.input_ids = enc["input_ids"].cpu()
            self.logits = model(**enc).logits.float().cpu()
        model.train(was_training)
        for name, p in model.named_parameters():
            if "modules_to_save" in name or name.startswith(("pre_classifier.", "classifier.")):
                self.head[name] = p.detach().cpu().clone()
            if "original_module" in name:
                self.initial_head[name] = p.detach().cpu().clone()


def encode(tokenizer, model) -> dict[str, torch.Tensor]:
    enc = tokenizer(PROBE_TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    device = next(model.parameters()).device
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


@dataclass
class LibraryRun:
    method: str
    path: Path
    capture: CaptureAtTrainEnd
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _library_run(tmp_path_factory: pytest.TempPathFactory, method: str) -> LibraryRun:
    from peft_sentiment.run import run_training

    cfg = load_config("smoke", {"method": method, "trainer.num_train_epochs": 2})
    out = tmp_path_factory.mktemp(f"library-{method}") / "run"
    capture = CaptureAtTrainEnd()
    result = run_training(cfg, output=out, callbacks=[capture])
    return LibraryRun(method=method, path=out, capture=capture, result=result)


@pytest.fixture(scope="module")
def library_full(tmp_path_factory: pytest.TempPathFactory) -> LibraryRun:
    return _library_run(tmp_path_factory, "full")


@pytest.fixture(scope="module")
def library_lora(tmp_path_factory: pytest.TempPathFactory) -> LibraryRun:
    return _library_run(tmp_path_factory, "lora")


@pytest.fixture(scope="module", params=["full", "lora"])
def library_run(request: pytest.FixtureRequest) -> LibraryRun:
    return request.getfixturevalue(f"library_{request.param}")


def reloaded_logits(loaded) -> tuple[torch.Tensor, torch.Tensor]:
    assert not loaded.model.training  # eval mode: no dropout
    with torch.no_grad():
        enc = encode(loaded.tokenizer, loaded.model)
        return enc["input_ids"].cpu(), loaded.model(**enc).logits.float().cpu()


def test_run_result(library_run: LibraryRun) -> None:
    result = library_run.result
    assert result.output == library_run.path
    saved = load_metrics(library_run.path)
    assert result.summary == saved
    assert result.metrics.accuracy == saved["accuracy"]
    assert result.trainable_params == saved["trainable_params"]
    assert result.train.steps == 2 * (400 // 16)


# (method, folder inside the run): the run folder itself, and full's model/ directly. The adapter/
# folder of the random-base smoke run is covered by the reload test at the end of this file.
RELOAD_SOURCES = [("full", ""), ("full", "model"), ("lora", "")]
RELOAD_IDS = ["full-run", "full-model-folder", "lora-run"]


@pytest.mark.parametrize("method, sub", RELOAD_SOURCES, ids=RELOAD_IDS)
def test_reload_gives_same_logits(request: pytest.FixtureRequest, method: str, sub: str) -> None:
    library_run: LibraryRun = request.getfixturevalue(f"library_{method}")
    source = library_run.path / sub if sub else library_run.path
    loaded = load_model(source)
    assert loaded.kind == ("model" if sub else "run")
    ids, logits = reloaded_logits(loaded)
    cap = library_run.capture
    assert torch.equal(ids, cap.input_ids)  # the tokenizer round-trips too
    torch.testing.assert_close(logits, cap.logits, atol=1e-5, rtol=0)
    assert torch.equal(logits.argmax(-1), cap.logits.argmax(-1))
    assert loaded.model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}


@pytest.mark.parametrize("method, sub", RELOAD_SOURCES, ids=RELOAD_IDS)
def test_pipeline_gives_same_labels_and_scores(request: pytest.FixtureRequest, method: str,
                                               sub: str) -> None:
    library_run: LibraryRun = request.getfixturevalue(f"library_{method}")
    source = library_run.path / sub if sub else library_run.path
    preds = predict(load_pipeline(source, precision="fp32"), PROBE_TEXTS, batch_size=4)
    probs = library_run.capture.logits.softmax(-1)
    labels = ["NEGATIVE", "POSITIVE"]
    assert [p.label for p in preds] == [labels[i] for i in probs.argmax(-1).tolist()]
    assert [p.score for p in preds] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)
    assert [p.text for p in preds] == PROBE_TEXTS


def test_reloaded_adapter_keeps_the_trained_head(library_lora: LibraryRun) -> None:
    cap = library_lora.capture
    assert {n.split(".modules_to_save")[0].rsplit(".", 1)[-1] for n in cap.head} == {
        "pre_classifier", "classifier"}
    # The head did train: a reload that re-initialized or kept the initial head would differ.
    for name, trained in cap.head.items():
        initial = cap.initial_head[name.replace("modules_to_save.default", "original_module")]
        assert not torch.equal(trained, initial), name
    loaded = dict(load_model(library_lora.path).model.named_parameters())
    for name, trained in cap.head.items():
        assert torch.equal(loaded[name], trained), name


def test_adapter_holds_only_adapter_and_head(library_lora: LibraryRun) -> None:
    from safetensors import safe_open

    with safe_open(str(library_lora.path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys
    assert all("lora_" in k or "pre_classifier" in k or "classifier" in k for k in keys), keys
    assert any("pre_classifier" in k for k in keys) and any(k.endswith("classifier.weight") for k in keys)


def test_lora_round_trip_with_new_bert_pooler(tiny_bert_dirs: dict[bool, Path],
                                              tmp_path: Path) -> None:
    """A pretrained BERT saved without pooler: the new pooler trains and must come back."""
    from peft_sentiment.run import run_training

    cfg = load_config("smoke", {"method": "lora", "model.name": str(tiny_bert_dirs[False]),
                                "model.architecture": None, "model.tokenizer_vocab_size": None,
                                "data.train_size": 48, "data.test_size": 20, "trainer.num_train_epochs": 1})
    capture = CaptureAtTrainEnd()
    result = run_training(cfg, output=tmp_path / "run", callbacks=[capture])
    assert result.summary["head_modules"] == ["classifier", "pooler"]
    assert not (tmp_path / "run" / "base").exists()  # the base is the pretrained folder
    loaded = load_model(tmp_path / "run")
    ids, logits = reloaded_logits(loaded)
    assert torch.equal(ids, capture.input_ids)
    torch.testing.assert_close(logits, capture.logits, atol=1e-5, rtol=0)
    params = dict(loaded.model.named_parameters())
    pooler = [n for n in capture.head if ".pooler." in n]
    assert len(pooler) == 2
    for name in pooler:
        assert torch.equal(params[name], capture.head[name]), name


# ---------------------------------------------------------------- reloading from elsewhere


def test_adapter_subfolder_of_random_base_run_loads(library_lora: LibraryRun) -> None:
    loaded = load_model(library_lora.path / "adapter")
    _, logits = reloaded_logits(loaded)
    torch.testing.assert_close(logits, library_lora.capture.logits, atol=1e-5, rtol=0)


def test_lora_run_on_relative_model_path_reloads_elsewhere(tiny_distilbert_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from peft_sentiment.run import run_training

    monkeypatch.chdir(tiny_distilbert_dir.parent)
    cfg = load_config("smoke", {"method": "lora", "model.name": f"./{tiny_distilbert_dir.name}",
                                "model.architecture": None, "model.tokenizer_vocab_size": None,
                                "data.train_size": 32, "data.test_size": 16, "trainer.num_train_epochs": 1})
    run_training(cfg, output=tmp_path / "run")
    monkeypatch.chdir(tmp_path)  # any other working directory
    loaded = load_model(tmp_path / "run")
    assert loaded.kind == "run"
