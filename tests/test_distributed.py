"""Data-parallel training through torchrun: two CPU processes (gloo) train one run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed
from conftest import dot_entries

from peft_sentiment.loading import load_model

GLOO = torch.distributed.is_available() and torch.distributed.is_gloo_available()
pytestmark = pytest.mark.skipif(not GLOO, reason="this torch build has no gloo backend: torchrun cannot "
                                                  "start two CPU processes")
# The smoke set is easy for full fine-tuning: 2 processes (global batch 32) and 1 process (batch 16)
# train differently but must both learn it and mostly agree review by review.
ARGS = ["train", "--recipe", "smoke", "--method", "full", "--epochs", "4"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ddp")
    two = _run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "peft_sentiment", *ARGS,
                "-o", "two"], folder)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _run(["-m", "peft_sentiment", *ARGS, "-o", "one"], folder)
    assert one.returncode == 0, one.stderr[-3000:]
    return {"folder": folder, "two": folder / "two", "one": folder / "one", "stdout": two.stdout}


def test_two_processes_write_one_run_folder(runs: dict[str, Path]) -> None:
    assert sorted(p.name for p in runs["folder"].iterdir()) == ["one", "two"]
    assert dot_entries(runs["folder"]) == []
    assert (runs["two"] / "model" / "model.safetensors").is_file()
    assert runs["stdout"].count("test reviews") == 1  # one process printed the table


def test_metrics_count_every_test_review_once(runs: dict[str, Path]) -> None:
    metrics = json.loads((runs["two"] / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert (metrics["per_device_batch_size"], metrics["global_batch_size"]) == (16, 32)
    assert metrics["n_test"] == 100
    assert sum(map(sum, metrics["confusion_matrix"])) == 100  # no padding duplicates in the metrics
    assert metrics["train_steps"] == 4 * (400 // 32) + 4 * bool(400 % 32)


def test_two_processes_predict_like_one(runs: dict[str, Path]) -> None:
    import torch

    from peft_sentiment.data import load_splits

    two, one = load_model(runs["two"]), load_model(runs["one"])
    texts = list(load_splits(two.config.data, need_train=False).test["text"])
    labels = []
    for loaded in (two, one):
        enc = loaded.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.no_grad():
            labels.append(loaded.model(**enc).logits.argmax(-1))
    agreement = (labels[0] == labels[1]).float().mean().item()
    assert agreement >= 0.9
    for run in ("two", "one"):
        assert json.loads((runs[run] / "metrics.json").read_text())["accuracy"] >= 0.85


@pytest.mark.slow  # 21 s; the two-process run folder test above keeps torchrun in the default suite
def test_benchmark_launches_its_runs_through_torchrun(tmp_path: Path) -> None:
    from conftest import invoke

    out = tmp_path / "bench"
    result = invoke(["benchmark", "-o", out, "--methods", "smoke", "--seeds", "1", "--epochs", "1",
                     "--launcher", "torchrun", "--nproc-per-node", "2", "--resamples", "100"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    (run,) = results["runs"]
    assert run["train"]["world_size"] == 2 and run["train"]["n_test"] == 100
    assert run["commands"][0][1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
    assert results["spec"]["nproc_per_node"] == 2
    assert "| 2 |" in (out / "results.md").read_text()  # the processes column


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 0, 1)),
    ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}, (3, 1, 4)),
    ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, (1, 1, 2)),
    ({"PMI_SIZE": "2", "PMI_RANK": "1"}, (1, 1, 2)),
])
def test_world_from_the_launcher(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                 expected: tuple[int, int, int]) -> None:
    from peft_sentiment.dist import world

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    w = world()
    assert (w.rank, w.local_rank, w.size) == expected
    assert w.is_main is (expected[0] == 0)
