"""Checkpoints and resume: a run that dies keeps its last checkpoint and ends, once resumed, where an
uninterrupted run ends; signals save a checkpoint; an unfinished run is never taken as finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_one_line_error, dot_entries, invoke
from transformers import TrainerCallback

from peft_sentiment.config import load_config, save_config
from peft_sentiment.errors import Interrupted, RunError
from peft_sentiment.loading import load_model
from peft_sentiment.run import run_training
from peft_sentiment.rundir import last_checkpoint, partial_dir
from peft_sentiment.train import clock_seconds

# Resuming restores the optimizer, scheduler, RNG states and the data order (and the run's own
# tokenizer and random base), so on the CPU the resumed run repeats the uninterrupted one's
# arithmetic: measured bit-identical final logits on the smoke runs. The documented tolerance, 1e-4
# on logits with the same predictions and metrics, leaves room for kernels that are not
# deterministic (GPUs).
RESUME_ATOL = 1e-4
PROBES = ["The movie was wonderful and the acting brilliant.", "A boring, awful waste of time.",
          "The plot was fine, the music great."]


class Crash(TrainerCallback):
    """Dies like a killed process would, a few steps after a checkpoint."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise RuntimeError("simulated crash")


class Signal(TrainerCallback):
    """Sends this process a signal at the end of a step, as `kill` from outside would."""

    def __init__(self, at_step: int, signum: int = signal.SIGTERM) -> None:
        self.at_step, self.signum = at_step, signum

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)


def probe_logits(run: Path) -> torch.Tensor:
    loaded = load_model(run)
    enc = loaded.tokenizer(PROBES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        return loaded.model(**enc).logits


def smoke(method: str, **extra: Any):
    return load_config("smoke", {"method": method, "trainer.num_train_epochs": 2, "train.save_steps": 10, **extra})


@pytest.mark.parametrize("method", ["lora", "full"])
def test_crash_then_resume_matches_an_uninterrupted_run(tmp_path: Path, method: str) -> None:
    cfg = smoke(method)
    whole = run_training(cfg, output=tmp_path / "whole")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, output=tmp_path / "cut", callbacks=[Crash(at_step=24)])
    staging = partial_dir(tmp_path / "cut")
    assert not (tmp_path / "cut").exists()
    assert last_checkpoint(staging).name == "checkpoint-20"  # the work since step 20 is lost, no more
    assert (staging / "IN_PROGRESS").is_file()

    before = clock_seconds(last_checkpoint(staging))  # the first process's train seconds to step 20
    assert before > 0
    resumed = run_training(None, output=tmp_path / "cut", resume=True)
    assert not staging.exists()
    assert resumed.summary["resumed_from"] == "checkpoint-20"
    # train_seconds is the whole run's: the seconds before the checkpoint and the resumed part
    assert resumed.summary["train_seconds_before_resume"] == pytest.approx(before, abs=0.01)
    assert resumed.summary["train_seconds"] == pytest.approx(before + resumed.train.train_seconds, abs=0.01)
    assert "train_seconds_before_resume" not in whole.summary
    assert whole.summary["train_seconds"] == pytest.approx(whole.train.train_seconds, abs=0.01)
    assert resumed.train.steps == whole.train.steps
    for key in ("accuracy", "f1", "confusion_matrix"):
        assert resumed.summary[key] == whole.summary[key], key
    torch.testing.assert_close(probe_logits(tmp_path / "cut"), probe_logits(tmp_path / "whole"),
                               atol=RESUME_ATOL, rtol=0)
    assert not (tmp_path / "cut" / "checkpoints").exists()  # a finished run keeps no checkpoints
    assert not (tmp_path / "cut" / "IN_PROGRESS").exists()
    # The log holds the steps before the checkpoint too.
    steps = [json.loads(line).get("step") for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert min(s for s in steps if s) <= 10


def test_a_crash_before_any_checkpoint_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        run_training(smoke("lora"), output=tmp_path / "run", callbacks=[Crash(at_step=5)])
    assert sorted(tmp_path.iterdir()) == []


def test_keep_checkpoints_bounds_what_is_kept(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        run_training(smoke("lora", **{"train.keep_checkpoints": 2}), output=tmp_path / "run",
                     callbacks=[Crash(at_step=45)])
    kept = sorted(p.name for p in (partial_dir(tmp_path / "run") / "checkpoints").iterdir())
    assert kept == ["checkpoint-30", "checkpoint-40"]


def _eval_epochs(log: list[dict]) -> list[float]:
    return [entry["epoch"] for entry in log if "eval_accuracy" in entry]


def test_a_signal_mid_epoch_saves_without_scoring_part_of_an_epoch(tmp_path: Path) -> None:
    """Validation scores whole epochs: a run stopped part-way through its second epoch neither
    evaluates nor competes for the best checkpoint there; the resumed run scores that epoch."""
    cfg = smoke("lora", **{"train.save_steps": None, "train.keep_best": True})
    with pytest.raises(Interrupted, match="SIGTERM: stopped at step 31 of 50"):
        run_training(cfg, output=tmp_path / "run", callbacks=[Signal(at_step=30)])
    saved = last_checkpoint(partial_dir(tmp_path / "run"))
    assert saved.name == "checkpoint-31"
    state = json.loads((saved / "trainer_state.json").read_text())
    assert _eval_epochs(state["log_history"]) == [1.0]
    assert state["best_model_checkpoint"].endswith("checkpoint-25")

    resumed = run_training(None, output=tmp_path / "run", resume=True)
    assert resumed.summary["resumed_from"] == "checkpoint-31"
    assert _eval_epochs(resumed.train.log) == [1.0, 2.0]


def test_unfinished_run_is_refused_everywhere(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        run_training(smoke("lora"), output=tmp_path / "run", callbacks=[Crash(at_step=15)])
    run, staging = tmp_path / "run", partial_dir(tmp_path / "run")
    for args in (["evaluate", run], ["evaluate", staging], ["predict", run, "good"], ["predict", staging, "good"],
                 ["merge", run], ["merge", staging],
                 ["push", run, "--repo-id", "someone/x", "--merged", "--dry-run"]):
        assert_one_line_error(invoke(args), 1, "did not finish", "--resume")
    with pytest.raises(RunError, match="did not finish"):
        load_model(staging)
    # A new run at the same place must not silently throw the checkpoint away.
    result = invoke(["train", "--recipe", "smoke", "-o", run])
    assert_one_line_error(result, 1, "holds an unfinished run", "--resume", "--overwrite")
    assert last_checkpoint(staging) is not None


def test_resume_errors(tmp_path: Path, smoke_lora) -> None:
    assert_one_line_error(invoke(["train", "--resume", tmp_path / "nothing"]), 1, "no unfinished run")
    assert_one_line_error(invoke(["train", "--resume", smoke_lora.path]), 1, "has finished")
    assert_one_line_error(invoke(["train", "--resume", smoke_lora.path, "--lr", "0.1"]), 2,
                          "--resume", "its own config")


# ---------------------------------------------------------------- real signals, real processes


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "peft_sentiment", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(staging: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = last_checkpoint(staging) if staging.exists() else None
        if found is not None:
            return found
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


LONG = ["train", "--recipe", "smoke", "--epochs", "30", "--save-steps", "10"]


def test_sigkill_loses_at_most_the_work_since_the_last_checkpoint(tmp_path: Path) -> None:
    proc = _start([*LONG, "-o", "run"], tmp_path)
    _wait_for_checkpoint(tmp_path / "run.partial", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    kept = last_checkpoint(tmp_path / "run.partial")
    assert kept is not None and not (tmp_path / "run").exists()
    # The lock died with the process: resuming is not refused as "being written".
    resumed = subprocess.run([sys.executable, "-m", "peft_sentiment", "train", "--resume", "run"], cwd=tmp_path, check=False,
                             capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["resumed_from"] == kept.name
    assert metrics["train_steps"] == 30 * (400 // 16)
    assert dot_entries(tmp_path) == []


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_save_a_checkpoint_and_say_how_to_resume(tmp_path: Path, signum: int, code: int) -> None:
    proc = _start([*LONG, "-o", "run"], tmp_path)
    _wait_for_checkpoint(tmp_path / "run.partial", proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"Interrupted: {signal.Signals(signum).name}: stopped at step ")
    assert "peft-sentiment train --resume run" in last
    step = int(last.split("stopped at step ")[1].split()[0])
    saved = last_checkpoint(tmp_path / "run.partial")
    assert saved.name == f"checkpoint-{step}"  # saved on the signal
    assert clock_seconds(saved) > 0  # with the train seconds so far, for the resumed run's total
    assert "Traceback" not in stderr


def test_second_writer_is_refused_while_the_first_trains(tmp_path: Path) -> None:
    proc = _start([*LONG, "-o", "run"], tmp_path)
    try:
        _wait_for_checkpoint(tmp_path / "run.partial", proc)
        result = invoke(["train", "--recipe", "smoke", "-o", tmp_path / "run", "--overwrite"])
        assert_one_line_error(result, 1, "is being written by process", str(proc.pid))
        assert (tmp_path / "run.partial" / "IN_PROGRESS").is_file()  # the first run's work is intact
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


def test_a_benchmark_stopped_by_sigterm_continues_its_run_from_the_saved_checkpoint(tmp_path: Path) -> None:
    """SIGTERM to a benchmark reaches its training child, which saves a checkpoint with its train
    seconds; --resume continues that run (not started over) and reports the whole run's seconds."""
    recipe = tmp_path / "long.yaml"
    save_config(load_config("smoke", {"trainer.num_train_epochs": 30}), recipe)
    args = ["benchmark", "-o", "bench", "--methods", str(recipe), "--seeds", "1"]
    proc = _start(args, tmp_path)
    staging = tmp_path / "bench" / "runs" / "long-seed1.partial"
    events_file = tmp_path / "bench" / "logs" / "long-seed1.events.jsonl"
    deadline = time.monotonic() + 120
    while not (events_file.is_file() and '"event": "step"' in events_file.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    saved = last_checkpoint(staging)
    assert saved is not None and (staging / "IN_PROGRESS").is_file()
    last = [line for line in stderr.splitlines() if line.strip()][-1]  # what was kept, and how to go on
    assert last.startswith(f"Interrupted: SIGTERM: long-seed1 stopped at {saved.name}, where --resume "
                           "continues it; finished runs are kept in "), stderr
    before = clock_seconds(saved)
    assert before > 0

    result = invoke([*args[:2], tmp_path / "bench", *args[3:], "--resume"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "bench" / "results.json").read_text())["runs"][0]
    assert run["status"] == "ok" and run["continued_from"] == saved.name
    metrics = json.loads((tmp_path / "bench" / "runs" / "long-seed1" / "metrics.json").read_text())
    assert metrics["resumed_from"] == saved.name
    assert metrics["train_seconds_before_resume"] == pytest.approx(before, abs=0.01)
    assert metrics["train_seconds"] > before
    assert metrics["train_steps"] == 30 * (400 // 16)
