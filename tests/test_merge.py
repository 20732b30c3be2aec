"""`merge`: a LoRA run becomes a standalone model with the same logits, its trained head, and no peft.

One smoke LoRA run is trained per session (shared with test_push.py); tests that change a run work
on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_one_line_error, copy_run, dot_entries, invoke
from safetensors.torch import load_file

from peft_sentiment.data import ID2LABEL, load_splits
from peft_sentiment.loading import load_model
from peft_sentiment.merge import CHECK_FILE, LOGIT_TOLERANCE, N_CHECK_TEXTS, SAMPLE_TEXTS, merge_run
from peft_sentiment.predict import load_pipeline, predict
from peft_sentiment.rundir import load_run_config

HEAD = ("pre_classifier", "classifier")  # DistilBERT's head, trained as modules_to_save
MERGED_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "labels.json", CHECK_FILE}


# ---------------------------------------------------------------- the run, trained once




@pytest.fixture(scope="session")
def merged_dir(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run merged once through the library, outside the run folder."""
    out = tmp_path_factory.mktemp("merged") / "merged"
    merge_run(lora_run, output=out)
    return out


def sample_texts(run: Path) -> list[str]:
    """Eight test reviews and one longer than the run's 64-token limit (truncation must agree)."""
    texts = list(load_splits(load_run_config(run).data, need_train=False).test["text"][:8])
    return [*texts, " ".join(texts)]


@torch.no_grad()
def logits(model: torch.nn.Module, tokenizer: Any, texts: list[str], max_length: int) -> torch.Tensor:
    batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return model.eval()(**batch).logits


# ---------------------------------------------------------------- the merge itself


def test_adapter_is_trained(lora_run: Path) -> None:
    """LoRA B starts at zero: an untrained adapter would make the merge tests pass trivially."""
    weights = load_file(lora_run / "adapter" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b
    assert max(float(w.abs().max()) for w in lora_b) > 0


def test_merged_logits_match_base_plus_adapter(lora_run: Path, merged_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = sample_texts(lora_run)
    adapter = load_model(lora_run)
    assert adapter.model.__class__.__name__.startswith("PeftModel")
    expected = logits(adapter.model, adapter.tokenizer, texts, 64)
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    got = logits(merged, AutoTokenizer.from_pretrained(merged_dir), texts, 64)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # The adapter changes the model: the same comparison against the bare base must fail.
    base = AutoModelForSequenceClassification.from_pretrained(lora_run / "base")
    assert float((logits(base, adapter.tokenizer, texts, 64) - expected).abs().max()) > 1e-2

    check = json.loads((merged_dir / CHECK_FILE).read_text())
    assert check["n_texts"] == N_CHECK_TEXTS
    assert check["tolerance"] == LOGIT_TOLERANCE
    assert 0 <= check["max_abs_logit_diff"] <= LOGIT_TOLERANCE
    assert check["source_run"] == str(lora_run)
    assert check["base_dequantized"] is False
    assert "test subset of builtin:smoke" in check["texts"]
    assert "random weights" in check["base_model"]


def test_merged_head_is_the_trained_head(lora_run: Path, merged_dir: Path) -> None:
    adapter = load_file(lora_run / "adapter" / "adapter_model.safetensors")
    base = load_file(lora_run / "base" / "model.safetensors")
    merged = load_file(merged_dir / "model.safetensors")
    for module in HEAD:
        for part in ("weight", "bias"):
            key = f"{module}.{part}"
            trained = adapter[f"base_model.model.{key}"]
            assert not torch.equal(trained, base[key]), f"{key} did not train: the test means nothing"
            assert torch.equal(merged[key], trained), key
    assert not any("lora" in key or "modules_to_save" in key for key in merged)


def test_merged_folder_is_a_plain_model(merged_dir: Path) -> None:
    assert {p.name for p in merged_dir.iterdir()} == MERGED_FILES  # no adapter_config.json beside it
    config = json.loads((merged_dir / "config.json").read_text())
    assert config["id2label"] == {str(k): v for k, v in ID2LABEL.items()}
    assert config["label2id"] == {v: k for k, v in ID2LABEL.items()}
    assert config["architectures"] == ["DistilBertForSequenceClassification"]
    tokenizer_config = json.loads((merged_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 64  # the run's max length
    assert "local_files_only" not in tokenizer_config


NO_PEFT_SCRIPT = """
import importlib.abc, json, sys

class BlockPeft(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("peft is not installed here")
        return None

sys.meta_path.insert(0, BlockPeft())
sys.modules["peft"] = None  # `import peft` fails, importlib.util.find_spec("peft") is None
from transformers import AutoModelForSequenceClassification, pipeline
from transformers.utils import is_peft_available

folder, texts = sys.argv[1], json.loads(sys.stdin.read())
model = AutoModelForSequenceClassification.from_pretrained(folder)
predictions = pipeline("text-classification", model=folder, truncation=True)(texts)
try:
    import peft  # noqa: F401
    blocked = False
except ImportError:
    blocked = True
loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] == "peft")
print(json.dumps({"peft_available": is_peft_available(), "blocked": blocked, "loaded": loaded,
                  "id2label": model.config.id2label, "predictions": predictions}))
"""


def test_merged_model_loads_without_peft(lora_run: Path, merged_dir: Path) -> None:
    texts = sample_texts(lora_run)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", NO_PEFT_SCRIPT, str(merged_dir)], input=json.dumps(texts),
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["blocked"] and not out["peft_available"] and out["loaded"] == []
    assert out["id2label"] == {str(k): v for k, v in ID2LABEL.items()}
    expected = predict(load_pipeline(lora_run, precision="fp32"), texts)  # base + adapter through peft, in this process
    assert [p["label"] for p in out["predictions"]] == [p.label for p in expected]
    for got, want in zip(out["predictions"], expected):
        assert got["score"] == pytest.approx(want.score, abs=1e-4)


def test_predict_gives_the_same_answers_for_run_and_merged(lora_run: Path, merged_dir: Path) -> None:
    texts = sample_texts(lora_run)
    from_run = predict(load_pipeline(lora_run, precision="fp32"), texts)
    from_merged = predict(load_pipeline(merged_dir, precision="fp32"), texts)
    assert [p.label for p in from_merged] == [p.label for p in from_run]
    assert {p.label for p in from_run} == {"NEGATIVE", "POSITIVE"}
    for a, b in zip(from_merged, from_run):
        assert a.score == pytest.approx(b.score, abs=1e-4)

    def cli(source: Path) -> list[dict[str, Any]]:
        result = invoke(["predict", source, "--json", "--precision", "fp32", *texts])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    run_lines, merged_lines = cli(lora_run), cli(merged_dir)
    assert [r["label"] for r in merged_lines] == [r["label"] for r in run_lines]
    for a, b in zip(merged_lines, run_lines):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


# ---------------------------------------------------------------- the command


def test_merge_command_writes_run_merged_atomically(lora_run: Path, tmp_path: Path) -> None:
    run = copy_run(lora_run, tmp_path / "run")
    result = invoke(["merge", run])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"merged model: {run / 'merged'}"
    assert lines[1].startswith("logit check: max |merged - (base + adapter)| = ")
    assert lines[1].endswith(f"on {N_CHECK_TEXTS} texts (first {N_CHECK_TEXTS} texts of the test subset "
                             f"of builtin:smoke); tolerance {LOGIT_TOLERANCE:g}")
    assert result.stderr.strip() == ""
    assert {p.name for p in (run / "merged").iterdir()} == MERGED_FILES
    assert dot_entries(run) == []

    assert_one_line_error(invoke(["merge", run]), 1, f"output {run / 'merged'} already exists",
                          "--overwrite")
    result = invoke(["merge", run, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert dot_entries(run) == []


def test_merge_full_run_is_refused(lora_run: Path, merged_dir: Path, tmp_path: Path) -> None:
    run = copy_run(lora_run, tmp_path / "full-run", method="full")
    shutil.rmtree(run / "adapter")
    shutil.rmtree(run / "base")
    shutil.copytree(merged_dir, run / "model")
    line = assert_one_line_error(invoke(["merge", run]), 1)
    assert line == (f"Error: run {run} was trained with method full: it is already a standalone model "
                    f"in {run / 'model'}")
    assert not (run / "merged").exists()


def test_merge_of_a_folder_that_is_no_run(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    assert_one_line_error(invoke(["merge", tmp_path / "junk"]), 1, "is not a run folder")
    assert_one_line_error(invoke(["merge", tmp_path / "missing"]), 1, "is not a run folder")


def test_failed_check_leaves_nothing(lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peft.tuners.tuners_utils import BaseTuner  # PeftModel.merge_and_unload forwards to it

    real = BaseTuner.merge_and_unload

    def broken_merge(tuner: BaseTuner, *args: Any, **kwargs: Any) -> torch.nn.Module:
        merged = real(tuner, *args, **kwargs)
        with torch.no_grad():
            merged.classifier.bias += 0.5  # what a head lost in the merge would look like
        return merged

    monkeypatch.setattr(BaseTuner, "merge_and_unload", broken_merge)
    out = tmp_path / "out" / "merged"
    assert_one_line_error(invoke(["merge", lora_run, "--output", out]), 1,
                          f"merged model of {lora_run} differs from base + adapter by 0.5",
                          f"on {N_CHECK_TEXTS} texts", "nothing was saved")
    assert not (tmp_path / "out").exists()  # the parent it created is gone too
    assert not (lora_run / "merged").exists()


def test_check_falls_back_to_sample_sentences(lora_run: Path, tmp_path: Path) -> None:
    run = copy_run(lora_run, tmp_path / "run", data__source=str(tmp_path / "data-moved-away"))
    result = merge_run(run)
    assert result.n_texts == len(SAMPLE_TEXTS)
    assert result.texts_from.startswith("built-in sample sentences")
    assert result.max_abs_diff <= LOGIT_TOLERANCE
    assert result.output == run / "merged"
