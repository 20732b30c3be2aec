"""LoRA on a real pretrained model and real reviews (deselected by default: run with -m slow).

    PEFT_SENTIMENT_REAL_MODEL=/path/to/model PEFT_SENTIMENT_REAL_DATA=/path/to/imdb \\
        python -m pytest -m slow tests/test_real_data.py

The model is a local folder (e.g. distilbert-base-uncased); the data a local folder with train and
test files or an aclImdb folder. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import error_lines, run_subprocess

from peft_sentiment.artifacts import load_run_config

pytestmark = pytest.mark.slow


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set: point it to a local folder to run this test")
    path = Path(value).expanduser().resolve()
    if not path.exists():
        pytest.skip(f"{name}={value} does not exist")
    return path


def test_lora_on_real_model_and_data(tmp_path: Path) -> None:
    model = _env_path("PEFT_SENTIMENT_REAL_MODEL")
    data = _env_path("PEFT_SENTIMENT_REAL_DATA")
    out = tmp_path / "real-lora"
    proc = run_subprocess(["train", "--method", "lora", "--model", str(model), "--data", str(data),
                           "--train-size", "64", "--test-size", "32", "--max-length", "128",
                           "--epochs", "1", "--precision", "fp32", "-o", str(out)],
                          cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not [line for line in error_lines(proc.stderr) if line.startswith("Error")]

    cfg = load_run_config(out)
    assert cfg.method == "lora"
    assert cfg.model.name == str(model)
    assert (cfg.data.train_size, cfg.data.test_size, cfg.data.max_length) == (64, 32, 128)

    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_test"]) == (64, 32)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert sum(map(sum, metrics["confusion_matrix"])) == 32
    assert 0 < metrics["trainable_params"] < metrics["total_params"] / 2
    assert (out / "log.jsonl").read_text().strip()
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in (out / "adapter").iterdir()}
    assert not (out / "base").exists()  # pretrained base: it is the model folder
    assert not (out / "model").exists()

    # The saved adapter reproduces the run's accuracy.
    proc = run_subprocess(["evaluate", str(out), "--json"], cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(metrics["accuracy"])
