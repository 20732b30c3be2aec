"""Structured events between `peft-sentiment benchmark` or `tune` and the child processes they start.

The benchmark gives each child the environment variable PEFT_SENTIMENT_EVENTS, the path of a JSON-lines
file (logs/<run>.events.jsonl, one per run, shared by its train and evaluate processes; tune: one per
trial, trials/<n>.events.jsonl). Every event is one JSON object on one line, appended with a single
write and never rewritten:

    {"v": 1, "event": "start", "time": 1718000000.123, ...}

Common fields: `v` (schema version, 1), `event` (below), `time` (Unix seconds). Events:

  start  (benchmark or tune, before a child  stage: "train" | "evaluate"; command: the child's argv
          starts)                            (list of str); continued_from: the checkpoint a train
                                             process continues from; test_size: reviews evaluated;
                                             trial: tune's trial number
  step   (child, during training)            step, total (optimizer steps), epoch (float); at most
                                             a few a second, and always the last step
  epoch  (child, at each epoch's end)        step, total, epoch (written before the epoch's evaluation)
  evaluate (child, after each epoch's        step, total, epoch; accuracy, f1, loss: on the validation
           validation, when there is one)    subset (never the test subset). tune prunes on accuracy
  error  (child, before it exits non-zero)   message (one line; for an unexpected exception
                                             "<type>: <first line>"), type (the exception's class)
  done   (benchmark or tune, after the child exit_code (negative: killed by that signal), seconds;
          exits)                             output: the child's last line of output, if it failed;
                                             pruned: true when tune stopped the trial (SIGTERM).
                                             Not written when the parent itself is interrupted.

Events between a `start` and its `done` come from that start's process. Readers skip lines that are
not complete JSON objects (a writer killed mid-line) and events of another `v`, and ignore event
types and fields they do not know. Outside a benchmark or tune (the variable unset) nothing is written.

Versioning: a new event or field that readers may ignore keeps `v` (the `evaluate` event and the
`trial` and `pruned` fields came this way, in v1); a change that would mislead an existing reader (a
field renamed or given another meaning) bumps it, and readers skip events of other versions.

transformers is imported only when a callback is built: every command imports this module.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_VAR = "PEFT_SENTIMENT_EVENTS"
VERSION = 1
STEP_INTERVAL_SECONDS = 0.25  # at most 4 step events a second: a 10k-step run writes ~1 MB at most

logger = logging.getLogger(__name__)


def target() -> Path | None:
    """The events file this process reports to, if any."""
    path = os.environ.get(ENV_VAR)
    return Path(path) if path else None


def append(path: Path, event: str, **fields: Any) -> None:
    """Append one event to `path` as one line, in one write (flushed: a reader sees it at once)."""
    line = json.dumps({"v": VERSION, "event": event, "time": round(time.time(), 3), **fields})
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A writer killed mid-line left no newline: start on a line of our own so this one stays whole.
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def emit(event: str, **fields: Any) -> None:
    """Append an event to this process's events file; nothing outside a benchmark."""
    path = target()
    if path is not None:
        _append_or_warn(path, event, **fields)


def _append_or_warn(path: Path, event: str, **fields: Any) -> None:
    """A file that cannot be written is logged, not raised: a progress report never stops a run."""
    try:
        append(path, event, **fields)
    except OSError as err:
        logger.warning("cannot write the event %r to %s: %s", event, path, err.strerror)


def parse(lines: bytes) -> list[dict[str, Any]]:
    """The events in `lines` (complete lines only); malformed lines and other versions are skipped."""
    found = []
    for line in lines.split(b"\n"):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("v") == VERSION and isinstance(item.get("event"), str):
            found.append(item)
    return found


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete event in `path` ([] when it does not exist); an unfinished last line is skipped."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return parse(data[: data.rfind(b"\n") + 1])


class Tail:
    """Follows an events file being written: each `poll` returns the events completed since the last."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # an unfinished line is read again next time
        self.offset += len(complete)
        return parse(complete)


# ---------------------------------------------------------------- processes, read back


@dataclass
class ChildProcess:
    """One child process as its events tell it: its `start`, its own events, and its `done`."""

    start: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)  # step, epoch, error, ...
    done: dict[str, Any] | None = None  # None: still running, or the benchmark stopped before it ended

    @property
    def command(self) -> list[str]:
        return [str(arg) for arg in self.start.get("command", [])]

    @property
    def exit_code(self) -> int | None:
        return None if self.done is None else int(self.done.get("exit_code", -1))

    @property
    def error(self) -> str | None:
        """The message of its last `error` event."""
        messages = [str(ev["message"]) for ev in self.events if ev["event"] == "error" and ev.get("message")]
        return messages[-1] if messages else None


def processes(events: list[dict[str, Any]]) -> list[ChildProcess]:
    """The child processes in `events`, in order; events outside a start..done are left out."""
    found: list[ChildProcess] = []
    for ev in events:
        if ev["event"] == "start":
            found.append(ChildProcess(start=ev))
        elif not found or found[-1].done is not None:
            continue
        elif ev["event"] == "done":
            found[-1].done = ev
        else:
            found[-1].events.append(ev)
    return found


# ---------------------------------------------------------------- training progress


def callbacks() -> list[Any]:
    """The TrainerCallback that writes step, epoch and evaluate events, when this process has an events
    file."""
    path = target()
    return [_callback_class()(path)] if path is not None else []


@functools.cache
def _callback_class() -> type:
    from transformers import TrainerCallback

    class EventsCallback(TrainerCallback):
        """Step events (throttled to STEP_INTERVAL_SECONDS, the last step always), epoch events and
        each epoch's validation figures."""

        def __init__(self, path: Path) -> None:
            self.path = path
            self.written = -1  # the last step written
            self.at = 0.0

        def _step(self, state: Any) -> None:
            self.written, self.at = state.global_step, time.monotonic()
            _append_or_warn(self.path, "step", **_position(state))

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self._step(state)  # the total at once (and where a continued run starts)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            last = state.global_step >= state.max_steps
            if last or time.monotonic() - self.at >= STEP_INTERVAL_SECONDS:
                self._step(state)

        def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001
            _append_or_warn(self.path, "epoch", **_position(state))

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
            # The Trainer evaluates only the validation subset during training (after on_epoch_end).
            if metrics and "eval_accuracy" in metrics:
                found = {name: round(float(metrics[f"eval_{name}"]), 6) for name in ("accuracy", "f1", "loss")
                         if isinstance(metrics.get(f"eval_{name}"), (int, float))}
                _append_or_warn(self.path, "evaluate", **_position(state), **found)

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if state.global_step != self.written:  # stopped early: its last step still gets reported
                self._step(state)

    return EventsCallback


def _position(state: Any) -> dict[str, Any]:
    return {"step": state.global_step, "total": state.max_steps, "epoch": round(state.epoch or 0.0, 4)}


def last_log_line(log: Path, start: int, limit: int = 300) -> str | None:
    """The last non-empty line a child's log holds after byte `start` (its last words when it died
    without an error event), cut to `limit` characters."""
    with log.open("rb") as f:
        f.seek(max(start, f.seek(0, os.SEEK_END) - 64 * 1024))
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        return None
    return lines[-1] if len(lines[-1]) <= limit else lines[-1][: limit - 3] + "..."
