"""Loading a run back: the run's `model.trust_remote_code` reaches every load, and Hub file checks work offline.

The trust_remote_code tests record what the transformers Auto classes receive from peft_sentiment's own
calls while a copy of a smoke run (config.yaml changed) is evaluated, predicted with and merged.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import CliRun, copy_run

from peft_sentiment.loading import _hub_has_file, load_model
from peft_sentiment.merge import merge_run
from peft_sentiment.predict import load_pipeline, predict
from peft_sentiment.run import evaluate_run

Calls = list[tuple[str, Any]]


@pytest.fixture
def load_calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """(class name, trust_remote_code) for each Auto*.from_pretrained and pipeline call made by
    peft_sentiment (calls transformers makes internally are left out)."""
    import transformers

    import peft_sentiment.predict as predict_module

    calls: Calls = []

    def recorder(name: str, real: Any) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            if sys._getframe(1).f_globals.get("__name__", "").startswith("peft_sentiment."):
                calls.append((name, kwargs.get("trust_remote_code", "not passed")))
            return real(*args, **kwargs)
        return record

    for cls in (transformers.AutoConfig, transformers.AutoModelForSequenceClassification,
                transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", recorder(cls.__name__, cls.from_pretrained))
    monkeypatch.setattr(predict_module, "pipeline", recorder("pipeline", predict_module.pipeline))
    return calls


def _run(kind: str, lora_run: Path, smoke_full: CliRun, folder: Path, trust: bool) -> Path:
    source = lora_run if kind == "lora" else smoke_full.path
    return copy_run(source, folder / "run", model__trust_remote_code=trust)


def _assert_all(calls: Calls, trust: bool, *names: str) -> None:
    assert {name for name, _ in calls} >= set(names), calls
    assert all(value is trust for _, value in calls), calls


@pytest.mark.parametrize("trust", [True, False])
@pytest.mark.parametrize("kind", ["lora", "full"])
def test_evaluate_passes_the_runs_trust_remote_code(kind: str, trust: bool, lora_run: Path, smoke_full: CliRun,
                                                    tmp_path: Path, load_calls: Calls) -> None:
    run = _run(kind, lora_run, smoke_full, tmp_path, trust)
    result = evaluate_run(run)
    assert result.metrics.n > 0
    _assert_all(load_calls, trust, "AutoModelForSequenceClassification", "AutoTokenizer")


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_predict_passes_the_runs_trust_remote_code(kind: str, lora_run: Path, smoke_full: CliRun,
                                                   tmp_path: Path, load_calls: Calls) -> None:
    run = _run(kind, lora_run, smoke_full, tmp_path, True)
    pipe = load_pipeline(run, precision="fp32")
    assert predict(pipe, ["a great film"])[0].label in {"NEGATIVE", "POSITIVE"}
    _assert_all(load_calls, True, "AutoModelForSequenceClassification", "AutoTokenizer", "pipeline")


def test_merge_passes_the_runs_trust_remote_code(lora_run: Path, smoke_full: CliRun, tmp_path: Path,
                                                 load_calls: Calls) -> None:
    run = _run("lora", lora_run, smoke_full, tmp_path, True)
    merge_run(run, output=tmp_path / "merged")
    models = [value for name, value in load_calls if name == "AutoModelForSequenceClassification"]
    assert len(models) == 2  # the base under the adapter, and the merged model reloaded for the check
    _assert_all(load_calls, True, "AutoModelForSequenceClassification", "AutoTokenizer")


def test_folders_without_a_run_config_do_not_trust_remote_code(lora_run: Path, tmp_path: Path,
                                                              load_calls: Calls) -> None:
    """Only a run's config.yaml can switch it on: a bare adapter or model folder never does."""
    run = copy_run(lora_run, tmp_path / "run", model__trust_remote_code=True)
    assert load_model(run / "adapter").trust_remote_code is False
    merged = merge_run(run, output=tmp_path / "merged").output
    load_calls.clear()
    assert load_model(merged).kind == "model"
    _assert_all(load_calls, False, "AutoModelForSequenceClassification", "AutoTokenizer")


# ---------------------------------------------------------------- Hub file checks


def _cache_file(repo_id: str, filename: str) -> Path:
    """Put `filename` into the (empty, per-session) Hub cache as a download of `repo_id` would."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / filename).write_text("{}")
    return repo


def test_hub_has_file_offline_answers_from_the_cache() -> None:
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # huggingface_hub.file_exists raises here: the cache must answer
    repo = _cache_file("acme/cached-adapter", "adapter_config.json")
    try:
        assert _hub_has_file("acme/cached-adapter", "adapter_config.json") is True
        assert _hub_has_file("acme/cached-adapter", "tokenizer_config.json") is False
        assert _hub_has_file("acme/not-cached", "adapter_config.json") is False
        assert _hub_has_file("not a repo id!", "adapter_config.json") is False
    finally:
        shutil.rmtree(repo)


def test_hub_has_file_asks_the_hub_when_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    asked: list[tuple[str, str]] = []

    def file_exists(repo_id: str, filename: str) -> bool:
        asked.append((repo_id, filename))
        return filename == "adapter_config.json"

    monkeypatch.setattr(huggingface_hub, "file_exists", file_exists)
    assert _hub_has_file("acme/remote", "adapter_config.json") is True
    assert _hub_has_file("acme/remote", "tokenizer_config.json") is False
    assert asked == [("acme/remote", "adapter_config.json"), ("acme/remote", "tokenizer_config.json")]
