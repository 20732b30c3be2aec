"""Trainer options passed through without code, and experiment tracking (TensorBoard, read back)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from peft_sentiment.cli import main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SMALL = ["--train-size", "64", "--test-size", "32", "--epochs", "2", "--batch-size", "8"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("tracking") / "run"
    result = CliRunner().invoke(main, ["train", "--recipe", "smoke", "-o", str(run), *SMALL,
                                       "--report-to", "tensorboard", "--logging-steps", "1",
                                       "--set", "trainer.gradient_accumulation_steps=2"])
    assert result.exit_code == 0, result.output
    return run


def test_any_trainer_option_reaches_the_trainer(tracked_run: Path) -> None:
    """gradient_accumulation_steps has no code of its own: it goes from --set to the Trainer."""
    args = json.loads((tracked_run / "training_args.json").read_text())
    assert args["gradient_accumulation_steps"] == 2 and args["report_to"] == ["tensorboard"]
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    # 64 reviews in batches of 8 is 8 batches an epoch; two batches make one optimizer step.
    assert metrics["train_steps"] == 2 * 8 // 2
    assert metrics["global_batch_size"] == 16
    assert "gradient_accumulation_steps: 2" in (tracked_run / "config.yaml").read_text()


def test_tensorboard_holds_the_training_curve_and_test_metrics(tracked_run: Path) -> None:
    events = EventAccumulator(str(tracked_run / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "train/loss" in scalars and "eval/accuracy" in scalars
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))  # every step logged
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(metrics["accuracy"])
    assert events.Scalars("test/f1")[-1].value == pytest.approx(metrics["f1"])


def test_tensorboard_holds_the_run_config_as_hyperparameters(tracked_run: Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    folder = tracked_run / "tensorboard" / "hparams"
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = data.session_start_info.hparams
    assert hparams["method"].string_value == "lora"
    assert hparams["lora.r"].number_value == 8
    assert hparams["trainer.gradient_accumulation_steps"].number_value == 2
    assert hparams["data.train_size"].number_value == 64
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(metrics["accuracy"])


def test_missing_tracker_is_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "get_available_reporting_integrations", lambda: [])
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--recipe", "smoke", "-o", str(run), "--report-to", "mlflow"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: trainer.report_to: mlflow is not installed here: pip install mlflow"
    assert list(tmp_path.iterdir()) == []


def test_default_reports_nowhere(tmp_path: Path) -> None:
    from peft_sentiment.config import load_config
    from peft_sentiment.train import training_arguments

    args = training_arguments(load_config("smoke"), tmp_path, evaluate=True)
    assert args.report_to == []  # transformers' spelling of "none"


def test_metrics_record_the_code_version(tracked_run: Path) -> None:
    import subprocess
    from importlib import metadata

    recorded = json.loads((tracked_run / "metrics.json").read_text())["versions"]
    assert recorded["peft-sentiment"] == metadata.version("peft-sentiment")
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert recorded["peft-sentiment-commit"] in (head, f"{head}-dirty")
