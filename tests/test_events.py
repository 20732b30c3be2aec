"""The events contract between the benchmark and its child processes (peft_sentiment/events.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import invoke

from peft_sentiment import events


@pytest.fixture
def events_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process reports to a fresh events file, as a benchmark's child does."""
    path = tmp_path / "run.events.jsonl"
    monkeypatch.setenv(events.ENV_VAR, str(path))
    return path


def test_schema_round_trip(events_file: Path) -> None:
    before = time.time()
    events.append(events_file, "start", stage="train", command=["python", "-m", "peft_sentiment", "train"])
    events.emit("step", step=3, total=10, epoch=0.25)
    events.emit("error", message="data folder /x not found", type="DataError")
    events.append(events_file, "done", exit_code=1, seconds=2.5)
    lines = events_file.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["v"] == events.VERSION == 1 for line in lines)
    found = events.read(events_file)
    assert [e["event"] for e in found] == ["start", "step", "error", "done"]
    assert all(before - 0.001 <= e["time"] <= time.time() + 1 for e in found)  # rounded to the ms
    assert {k: v for k, v in found[1].items() if k != "time"} == {"v": 1, "event": "step", "step": 3,
                                                                    "total": 10, "epoch": 0.25}
    (child,) = events.processes(found)
    assert child.command == ["python", "-m", "peft_sentiment", "train"] and child.start["stage"] == "train"
    assert (child.exit_code, child.error, child.done["seconds"]) == (1, "data folder /x not found", 2.5)
    assert [e["event"] for e in child.events] == ["step", "error"]


def test_nothing_is_written_outside_a_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(events.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    events.emit("error", message="x", type="RuntimeError")
    assert events.callbacks() == [] and list(tmp_path.iterdir()) == []


def test_reader_skips_a_truncated_last_line(events_file: Path) -> None:
    events.append(events_file, "start", stage="train", command=["c"])
    events.append(events_file, "step", step=1, total=4, epoch=0.1)
    with events_file.open("a") as f:  # a child killed in the middle of a write
        f.write('{"v": 1, "event": "step", "st')
    assert [e["event"] for e in events.read(events_file)] == ["start", "step"]
    tail = events.Tail(events_file)
    assert [e["event"] for e in tail.poll()] == ["start", "step"]
    assert tail.poll() == []  # the unfinished line is not consumed...
    with events_file.open("a") as f:
        f.write('ep": 2, "total": 4}\n')
    assert [(e["step"], e["total"]) for e in tail.poll()] == [(2, 4)]  # ...and read once complete
    with events_file.open("a") as f:  # killed mid-line for good: the next writer starts a line of its own
        f.write('{"v": 1, "event": "ste')
    events.append(events_file, "done", exit_code=-9, seconds=1.0)
    found = events.read(events_file)
    assert [e["event"] for e in found] == ["start", "step", "step", "done"]
    assert events.processes(found)[0].exit_code == -9
    assert [e["event"] for e in tail.poll()] == ["done"]
    json_lines = [line for line in events_file.read_text().splitlines() if line.endswith("}")]
    assert len(json_lines) == 4


def test_other_versions_and_unknown_events_are_skipped(events_file: Path) -> None:
    events_file.write_text('{"v": 2, "event": "step", "step": 1, "total": 2}\n[1, 2]\nnot json\n')
    events.append(events_file, "start", stage="evaluate", command=["c"], test_size=5)
    events.append(events_file, "heartbeat")  # a newer writer's event: kept, and ignored by processes()
    events.append(events_file, "done", exit_code=0, seconds=0.1)
    assert [e["event"] for e in events.read(events_file)] == ["start", "heartbeat", "done"]
    (child,) = events.processes(events.read(events_file))
    assert child.exit_code == 0 and child.error is None and child.start["test_size"] == 5


def test_callback_throttles_steps_and_always_reports_the_last(events_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(events.time, "monotonic", lambda: clock[0])
    (callback,) = events.callbacks()
    state = SimpleNamespace(global_step=0, max_steps=500, epoch=0.0)
    callback.on_train_begin(None, state, None)
    for step in range(1, 501):
        clock[0] += 0.1  # 10 steps a second: a step event at most every 0.25 s, i.e. every 3rd step
        state.global_step, state.epoch = step, step / 250
        callback.on_step_end(None, state, None)
        if step % 250 == 0:
            callback.on_epoch_end(None, state, None)
    callback.on_train_end(None, state, None)
    found = events.read(events_file)
    steps = [e["step"] for e in found if e["event"] == "step"]
    assert steps[0] == 0 and steps[-1] == 500 and steps.count(500) == 1
    assert steps == sorted(steps) and len(steps) <= 500 // 3 + 2
    assert all(e["total"] == 500 for e in found)
    assert [(e["step"], e["epoch"]) for e in found if e["event"] == "epoch"] == [(250, 1.0), (500, 2.0)]


def test_callback_reports_a_run_that_stops_early(events_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events.time, "monotonic", lambda: 0.0)  # the clock never lets a step through
    (callback,) = events.callbacks()
    state = SimpleNamespace(global_step=0, max_steps=100, epoch=0.0)
    callback.on_train_begin(None, state, None)
    for step in range(1, 41):
        state.global_step = step
        callback.on_step_end(None, state, None)
    callback.on_train_end(None, state, None)
    assert [e["step"] for e in events.read(events_file)] == [0, 40]


def test_a_failing_command_writes_its_error_line_as_an_event(events_file: Path) -> None:
    result = invoke(["train", "--recipe", "no-such-recipe"])
    assert result.exit_code == 1
    (error,) = events.read(events_file)
    assert error["event"] == "error" and error["type"] == "ConfigError"
    assert f"Error: {error['message']}" == result.stderr.strip()

    result = invoke(["train", "--resume", "somewhere", "--recipe", "smoke"])  # a usage error in the body
    assert result.exit_code == 2
    error = events.read(events_file)[-1]
    assert error["type"] == "UsageError" and f"Error: {error['message']}" == result.stderr.strip()


def test_an_unexpected_exception_writes_its_type_and_first_line(events_file: Path) -> None:
    from peft_sentiment.cli import handle_errors

    @handle_errors
    def command() -> None:
        raise RuntimeError("CUDA error: device-side assert triggered\nCompile with TORCH_USE_CUDA_DSA")

    with pytest.raises(RuntimeError):  # the traceback still reaches the log
        command()
    (error,) = events.read(events_file)
    assert error["type"] == "RuntimeError"
    assert error["message"] == "RuntimeError: CUDA error: device-side assert triggered"
