"""Hyperparameter search with Optuna: trials of a recipe's `tune:` search space, each trained in its own
process, chosen on validation accuracy and pruned epoch by epoch.

A tune folder holds:
  study.db                  the Optuna study (SQLite): every trial, its state, parameters and per-epoch
                            validation accuracy; --resume continues it
  trials/<n>.yaml           trial n's recipe: the base recipe, the options, and the trial's values
  trials/<n>/               trial n's run folder, written by `peft-sentiment train` (complete trials only)
  trials/<n>.log            what its process printed
  trials/<n>.events.jsonl   its structured events (events.py): progress, validation accuracy, errors
  best.yaml                 the best trial's recipe: `train --recipe` and `benchmark --methods` take it
  trials.csv, study.json    every trial (number, state, parameters, validation accuracy, seconds); the
                            sampler, pruner, seeds, best trial, commands and versions
  history.png               validation accuracy per trial and the best so far

The objective is the validation accuracy of the model a trial ends with (metrics.json's
`validation.accuracy`); the test subset plays no part in the search. The sampler is Optuna's TPE,
seeded; the pruner is the median rule: after each epoch the parent reads the child's `evaluate`
event, reports its validation accuracy, and stops a trial that is below the median of the completed
trials at that epoch (SIGTERM, then SIGKILL after STOP_WAIT_SECONDS).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import yaml

from . import events
from .config import (
    LORA_METHODS,
    RunConfig,
    TuneParam,
    build,
    check_seed,
    config_to_dict,
    load_config,
    recipe_path,
    tune_space,
    yaml_number,
)
from .errors import ConfigError, Interrupted, RunError, signal_of
from .rundir import (
    METRICS_FILE,
    load_run_config,
    output_lock,
    partial_dir,
    write_json,
)

try:
    import optuna
except ImportError:  # the `tune` extra; run_tune says how to install it
    optuna = None

STUDY_FILE = "study.db"
STUDY_NAME = "peft-sentiment-tune"
TRIALS_DIR = "trials"
BEST_FILE = "best.yaml"
TRIALS_CSV = "trials.csv"
STUDY_JSON = "study.json"
HISTORY_PNG = "history.png"
SCHEMA = 1

# TPE samples the first trials at random, then models the good and the bad ones. Optuna's default of
# 10 random trials is half of a typical 20-trial budget of runs this long; 5 leave TPE the rest.
SAMPLER_STARTUP_TRIALS = 5
# No pruning until 2 trials have completed (the median of fewer says nothing); from then on a trial is
# judged after every epoch, its first included (0 warmup epochs): with 2 or 3 epochs per trial a
# later first look would save little. A trial's last epoch is never judged: its training is paid for.
PRUNER_STARTUP_TRIALS = 2
PRUNER_WARMUP_EPOCHS = 0
STOP_WAIT_SECONDS = 60.0  # a pruned trial's process saves a checkpoint on SIGTERM: then SIGKILL
POLL_SECONDS = 0.2  # how often a running trial's events are read
MAX_FAILURES_IN_A_ROW = 3  # then the recipe itself is likely broken: stop and say so
# Trials must be compared on the same validation reviews, and a seed is not a hyperparameter.
READING_KEYS = ("data.max_length", "data.truncation", "data.head_tokens")  # the data keys a trial may vary
FIXED_KEYS = {
    "data": ("it changes which reviews validate the trials (only how much of a review is read may be tuned: "
             f"{', '.join(READING_KEYS)})"),
    "train.seed": "tuning the seed picks a lucky draw, not a better recipe",
}


@dataclass(frozen=True)
class TuneSpec:
    recipe: str | None = None  # name or path of a recipe with a tune: section; None: the method's own
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys applied to every trial
    trials: int = 20  # trials the study holds when this call ends (complete, pruned or failed)
    timeout: float | None = None  # seconds after which this call starts no new trial
    seed: int = 42  # the sampler's (each trial trains with the recipe's train.seed)
    enqueue: tuple[dict[str, Any], ...] = ()  # points of the space to run first (keys left out: sampled)

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        check_seed(self.seed, "--seed")


@dataclass
class TrialRecord:
    number: int
    state: str  # complete, pruned, failed, running (a tune was killed during it), waiting
    params: dict[str, Any]
    value: float | None  # validation accuracy; a pruned trial's: its last reported epoch's
    epochs: dict[int, float]  # validation accuracy after each epoch, as reported
    seconds: float | None  # the trial's process, from start to exit
    run: str | None  # its run folder, relative to the tune folder (complete trials)
    note: str | None = None  # why it failed, where it was pruned, what it retries

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["epochs"] = {str(k): v for k, v in self.epochs.items()}
        return out


@dataclass
class TuneResult:
    output: Path
    trials: list[TrialRecord]
    best: TrialRecord | None
    ran: int  # trials run by this call
    files: dict[str, Path]
    stopped: str | None = None  # "timeout" when --timeout ended the call before --trials


class TuneReporter(Protocol):
    def start(self, total: int, done: int, earlier: list[TrialRecord]) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def evaluated(self, epoch: int, accuracy: float) -> None: ...
    def trial_finished(self, record: TrialRecord, best: TrialRecord | None) -> None: ...
    def close(self) -> None: ...


class SilentReporter:
    def start(self, total: int, done: int, earlier: list[TrialRecord]) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def evaluated(self, epoch: int, accuracy: float) -> None: ...
    def trial_finished(self, record: TrialRecord, best: TrialRecord | None) -> None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------- planning: everything checked first


@dataclass(frozen=True)
class TunePlan:
    config: RunConfig  # the base recipe with the options applied
    space: dict[str, TuneParam]
    enqueue: tuple[dict[str, Any], ...]  # the points, in the space's types


def plan(spec: TuneSpec) -> TunePlan:
    """The base config and its search space, refused in one line where no trial could mean anything."""
    cfg = load_config(spec.recipe, spec.overrides)
    where = f"recipe {spec.recipe}" if spec.recipe is not None else f"the {cfg.method} recipe"
    if cfg.data.validation_size == 0:
        raise ConfigError(f"tune chooses on validation accuracy but {where} has data.validation_size 0: "
                          "pass --validation-size N")
    space = tune_space(cfg)
    if not space:
        raise ConfigError(f"{where} has no tune: section: add a search space (README, Tuning), e.g. "
                          "tune: {trainer.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}}")
    methods = space["method"].choices if "method" in space else (cfg.method,)
    for key in space:
        _check_tunable(key, methods, spec.overrides)
    points = tuple(_point(space, raw) for raw in spec.enqueue)
    for point in points:
        try:
            load_config(spec.recipe, {**spec.overrides, **point})
        except ConfigError as err:
            raise ConfigError(f"--enqueue {_describe(point)}: {err}") from None
    return TunePlan(cfg, space, points)


def _check_tunable(key: str, methods: Sequence[str], overrides: dict[str, Any]) -> None:
    for fixed, why in FIXED_KEYS.items():
        if (key == fixed or key.startswith(fixed + ".")) and key not in READING_KEYS:
            raise ConfigError(f"tune.{key} cannot be tuned: {why}")
    section = key.split(".")[0]
    used = {"lora": set(LORA_METHODS), "ia3": {"ia3"}, "quant": {"qlora"}}.get(section)
    if used is not None and not used & set(methods):
        raise ConfigError(f"tune.{key} does nothing for method {', '.join(map(str, methods))}: remove it "
                          "from the recipe's tune: section")
    for given in overrides:
        if given == key or key.startswith(given + ".") or given.startswith(key + "."):
            raise ConfigError(f"the option {given} fixes tune.{key}, which the search varies: drop one")


def _point(space: dict[str, TuneParam], raw: dict[str, Any]) -> dict[str, Any]:
    """An --enqueue point with each value in its dimension's type (a choice exactly as listed)."""
    point = {}
    for key, value in raw.items():
        if key not in space:
            raise ConfigError(f"--enqueue {key}: not a key of the search space ({', '.join(space)})")
        param, value = space[key], yaml_number(value)
        if not param.contains(value):
            raise ConfigError(f"--enqueue {key}={value!r} is outside the search space ({_range(param)})")
        if param.choices is not None:
            value = next(c for c in param.choices if c == value)
        elif not param.is_int:
            value = float(value)
        else:
            value = int(value)
        point[key] = value
    return point


def _range(param: TuneParam) -> str:
    if param.choices is not None:
        return "one of " + ", ".join(map(repr, param.choices))
    scale = ", log" if param.log else f", step {param.step}" if param.step is not None else ""
    return f"{param.low} to {param.high}{scale}"


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short_value(v)}" for k, v in params.items())


def _short_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- running


def run_tune(
    spec: TuneSpec,
    output: Path,
    resume: bool = False,
    overwrite: bool = False,
    reporter: TuneReporter | None = None,
    command: Sequence[str] | None = None,
    python: str = sys.executable,
) -> TuneResult:
    """Run trials until the study holds `spec.trials` finished ones (or `spec.timeout` passes), then
    write best.yaml, trials.csv, study.json and history.png. `resume` continues the study in `output`:
    finished trials are kept, and a trial a killed tune left running is marked failed and run again."""
    planned = plan(spec)  # before the folder is touched: bad input leaves nothing behind
    if optuna is None:
        raise ConfigError("tune needs optuna: pip install 'peft-sentiment[tune]'")
    reporter = reporter or SilentReporter()
    output = Path(output)
    with output_lock(output):  # a second tune into the same folder is refused
        _prepare_folder(output, resume, overwrite)
        study = _open_study(output, spec, planned, command)
        _fail_stale_trials(study, output)
        for point in planned.enqueue:
            study.enqueue_trial(point, skip_if_exists=True)
        distributions = {key: _distribution(param) for key, param in planned.space.items()}
        reporter.start(spec.trials, _counted(study), _records(study))
        ran, stopped, failures, begin = 0, None, 0, time.monotonic()
        try:
            while _counted(study) < spec.trials:
                if spec.timeout is not None and time.monotonic() - begin >= spec.timeout:
                    stopped = "timeout"
                    break
                trial = study.ask(distributions)
                record = _run_trial(study, trial, spec, output, python, reporter)
                ran += 1
                reporter.trial_finished(record, _best(_records(study)))
                failures = failures + 1 if record.state == "failed" else 0
                if failures >= MAX_FAILURES_IN_A_ROW:
                    stopped = "failures"
                    break
        except KeyboardInterrupt as err:
            _write_outputs(study, output, spec, planned)
            signum = signal_of(err)
            raise Interrupted(f"{signum.name}: the trial in progress was stopped; the "
                              f"study's finished trials are kept in {output / STUDY_FILE}: continue it "
                              "with the same command and --resume", signum) from None
        finally:
            reporter.close()
        records, files = _write_outputs(study, output, spec, planned)
    best = _best(records)
    if stopped == "failures":
        last = [r for r in records if r.state == "failed"][-1]
        raise RunError(f"{MAX_FAILURES_IN_A_ROW} trials in a row failed, the last (trial {last.number}): "
                       f"{last.note} ({output / TRIALS_DIR / f'{last.number}.log'}); fix it and continue "
                       "with --resume")
    if best is None:
        raise RunError(f"no trial of {output} completed (see trials.csv and {output / TRIALS_DIR}/*.log)")
    return TuneResult(output=output, trials=records, best=best, ran=ran, files=files, stopped=stopped)


def _prepare_folder(output: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ConfigError("pass --resume or --overwrite, not both")
    if output.exists() and not output.is_dir():
        raise RunError(f"output {output} exists and is not a folder")
    if output.exists() and any(output.iterdir()):
        is_study = (output / STUDY_FILE).is_file()
        if (resume or overwrite) and not is_study:
            what = "nothing to resume" if resume else "refusing to replace it"
            raise RunError(f"{output} is not a tune folder (no {STUDY_FILE}): {what}")
        if overwrite:
            shutil.rmtree(output)
        elif not resume:
            raise RunError(f"output {output} already exists: pass --resume to continue its study or "
                           "--overwrite")
    try:
        (output / TRIALS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create {output}: {err.strerror}") from None


def _identity(spec: TuneSpec, planned: TunePlan) -> dict[str, Any]:
    """What a resumed study must share with the one it continues (JSON as stored)."""
    return json.loads(json.dumps({"config": config_to_dict(planned.config), "space": planned.config.tune,
                                  "seed": spec.seed}))


def _as_today(config: Any) -> Any:
    """A stored config read through today's schema: fields added since it was stored take their
    defaults (which keep the old behaviour), so a study started by an older version still resumes."""
    try:
        return json.loads(json.dumps(config_to_dict(build(RunConfig, config))))
    except (ConfigError, TypeError):
        return config


def _open_study(output: Path, spec: TuneSpec, planned: TunePlan,
                command: Sequence[str] | None) -> Any:
    storage = f"sqlite:///{(output / STUDY_FILE).resolve()}"
    names = optuna.study.get_all_study_names(storage) if (output / STUDY_FILE).is_file() else []
    n_before = 0
    if STUDY_NAME in names:
        n_before = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials)
    # A resumed study's sampler is seeded past the trials it already has: seeded afresh with the same
    # seed it would draw the first random trials' values again.
    sampler = optuna.samplers.TPESampler(seed=(spec.seed + n_before) % 2**32,
                                         n_startup_trials=SAMPLER_STARTUP_TRIALS)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                         n_warmup_steps=PRUNER_WARMUP_EPOCHS, interval_steps=1)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    identity = _identity(spec, planned)
    stored = study.user_attrs.get("identity")
    if stored is not None:
        stored = {**stored, "config": _as_today(stored.get("config"))}
    if stored is not None and stored != identity:
        label = next(label for name, label in (("space", "search space"), ("seed", "--seed"),
                                               ("config", "recipe and options"))
                     if stored.get(name) != identity[name])
        raise ConfigError(f"{output} was started with another {label}: resume with the same settings or "
                          "use another folder")
    study.set_user_attr("identity", identity)
    study.set_user_attr("recipe", str(recipe_path(spec.recipe)) if spec.recipe is not None else None)
    study.set_user_attr("overrides", json.loads(json.dumps(spec.overrides, default=str)))
    invocations = list(study.user_attrs.get("invocations", []))
    invocations.append({"command": [str(c) for c in command or []], "trials_before": n_before,
                        "sampler_seed": (spec.seed + n_before) % 2**32,
                        "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    study.set_user_attr("invocations", invocations)
    return study


def _fail_stale_trials(study: Any, output: Path) -> None:
    """Trials left running by a tune that was killed: failed, and queued again with the same values."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
        run_dir = output / TRIALS_DIR / str(trial.number)
        try:
            with output_lock(run_dir):  # its process may outlive the tune that started it: then leave it
                for folder in (run_dir, partial_dir(run_dir)):
                    shutil.rmtree(folder, ignore_errors=True)
        except RunError:
            pass


def _distribution(param: TuneParam) -> Any:
    d = optuna.distributions
    if param.choices is not None:
        return d.CategoricalDistribution(param.choices)
    if param.is_int:
        return d.IntDistribution(param.low, param.high, log=param.log, step=param.step or 1)
    return d.FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def _counted(study: Any) -> int:
    """Finished trials that count towards --trials: a trial failed by a killed tune is retried instead."""
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return sum(1 for t in trials if t.state in (states.COMPLETE, states.PRUNED)
               or (t.state == states.FAIL and t.number not in retried))


def _run_trial(study: Any, trial: Any, spec: TuneSpec, output: Path, python: str,
               reporter: TuneReporter) -> TrialRecord:
    """Train one trial in its own process, reporting each epoch's validation accuracy to the pruner."""
    states = optuna.trial.TrialState
    number, params = trial.number, dict(trial.params)
    reporter.trial_started(number, params)
    folder = output / TRIALS_DIR
    run_dir, recipe = folder / str(number), folder / f"{number}.yaml"
    log, events_file = folder / f"{number}.log", folder / f"{number}.events.jsonl"
    try:
        cfg = load_config(spec.recipe, {**spec.overrides, **params})
    except ConfigError as err:  # each value was checked alone; this combination is refused
        trial.set_user_attr("error", str(err))
        study.tell(trial, state=states.FAIL)
        return _record(_frozen(study, number), {})
    from .run import absolute_local_paths

    _write_recipe(absolute_local_paths(cfg), recipe,
                  [f"Trial {number} of the study in {output}: {_describe(params)}"])
    cmd = [python, "-m", "peft_sentiment", "train", "--recipe", str(recipe), "-o", str(run_dir)]
    trial.set_user_attr("command", cmd)
    child = _Child(cmd, log, events_file, number)
    pruned_at: int | None = None
    try:
        while child.running():
            for ev in child.new_events():
                if pruned_at is not None:  # decided: what it does until it stops is not reported
                    continue
                epoch = _on_event(ev, trial, reporter)
                last = ev.get("step") == ev.get("total")
                if epoch is not None and not last and trial.should_prune():
                    pruned_at = epoch
                    child.stop()
    except KeyboardInterrupt as err:
        child.interrupt(forward=type(err) is not KeyboardInterrupt)
        raise
    for ev in child.new_events() if pruned_at is None else []:  # what it wrote before it exited
        _on_event(ev, trial, reporter)
    done = child.finish(pruned=pruned_at is not None)
    trial.set_user_attr("seconds", done["seconds"])
    if pruned_at is not None:
        for path in (run_dir, partial_dir(run_dir)):  # a pruned trial keeps its log and events, no weights
            shutil.rmtree(path, ignore_errors=True)
        trial.set_user_attr("pruned_at_epoch", pruned_at)
        study.tell(trial, state=states.PRUNED)
    elif done["exit_code"] == 0 and (value := _validation_accuracy(run_dir)) is not None:
        trial.set_user_attr("run", f"{TRIALS_DIR}/{number}")
        study.tell(trial, value)
    else:
        trial.set_user_attr("error", child.failure(done))
        study.tell(trial, state=states.FAIL)
    return _record(_frozen(study, number), {})


def _frozen(study: Any, number: int) -> Any:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _on_event(ev: dict[str, Any], trial: Any, reporter: TuneReporter) -> int | None:
    """Progress to the reporter; an evaluate event's accuracy to the trial (returns its epoch)."""
    step, total = ev.get("step"), ev.get("total")
    if isinstance(step, int) and isinstance(total, int) and ev["event"] in ("step", "epoch", "evaluate"):
        reporter.step(step, total)
    accuracy, epoch = ev.get("accuracy"), ev.get("epoch")
    numbers = all(isinstance(v, (int, float)) for v in (accuracy, epoch))
    if ev["event"] != "evaluate" or not numbers:
        return None
    # The pruner's steps are epochs 1, 2, ...: evaluations come at the end of each epoch (not where a
    # signal stops a run part-way) and at the last step, which counts even when fractional
    # (num_train_epochs 2.5 reports as step 3).
    whole = abs(epoch - round(epoch)) < 1e-3
    if not whole and step != total:
        return None
    number = max(1, round(epoch) if whole else math.ceil(epoch))
    trial.report(float(accuracy), number)
    reporter.evaluated(number, float(accuracy))
    return number


def _validation_accuracy(run_dir: Path) -> float | None:
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
        return float(metrics["validation"]["accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Child:
    """A trial's `train` process: its output appended to the log, its events followed."""

    def __init__(self, cmd: list[str], log: Path, events_file: Path, number: int) -> None:
        events.append(events_file, "start", stage="train", trial=number, command=cmd)
        self.events_file = events_file
        self.tail = events.Tail(events_file, events_file.stat().st_size)
        self.log = log
        self.begin = time.perf_counter()
        self.stop_deadline: float | None = None
        env = {**os.environ, "PYTHONUNBUFFERED": "1", events.ENV_VAR: str(events_file.resolve())}
        with log.open("ab") as out:  # the child writes here itself: the log can be followed live
            out.write(f"$ {shlex.join(cmd)}\n".encode())
            out.flush()
            self.printed_from = out.tell()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

    def running(self) -> bool:
        try:
            self.proc.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                self.proc.kill()  # it did not stop in time
            return True
        return False

    def new_events(self) -> list[dict[str, Any]]:
        return self.tail.poll()

    def stop(self) -> None:
        """SIGTERM: the run finishes its step and exits; SIGKILL if it is still there after the wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.stop_deadline = time.monotonic() + STOP_WAIT_SECONDS

    def interrupt(self, forward: bool) -> None:
        """The tune itself was interrupted: Ctrl-C reached the child too; a SIGTERM is passed on."""
        if forward and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def finish(self, pruned: bool) -> dict[str, Any]:
        code = self.proc.wait()
        done: dict[str, Any] = {"exit_code": code, "seconds": round(time.perf_counter() - self.begin, 1)}
        if pruned:
            done["pruned"] = True
        elif code != 0 and (last := events.last_log_line(self.log, self.printed_from)) is not None:
            done["output"] = last
        with self.log.open("ab") as out:
            out.write(f"[exit {code}{' (pruned)' if pruned else ''}]\n".encode())
        events.append(self.events_file, "done", **done)
        return done

    def failure(self, done: dict[str, Any]) -> str:
        """The one-line error of a failed trial: its own error event, else its last line of output."""
        code = done["exit_code"]
        how = f"exit {code}"
        if code < 0:
            try:
                how += f" ({signal.Signals(-code).name})"
            except ValueError:
                pass
        child = events.processes(events.read(self.events_file))[-1]
        if code == 0:
            return f"{how}: no validation accuracy in {METRICS_FILE}"
        return f"{how}: {child.error or done.get('output') or 'no output'}"




# ---------------------------------------------------------------- reading the study back


def _records(study: Any) -> list[TrialRecord]:
    trials = study.get_trials(deepcopy=False)
    retries = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    waiting = {t.number for t in trials if t.state == optuna.trial.TrialState.WAITING}
    return [_record(t, retries, waiting) for t in trials]


def _record(trial: Any, retries: dict[int, int], waiting: Collection[int] = ()) -> TrialRecord:
    """One trial as trials.csv and study.json show it; `retries`: failed trial -> the trial retrying it;
    `waiting`: trials queued and never run (a retry queued when the study already had its trials)."""
    states = optuna.trial.TrialState
    state = {states.COMPLETE: "complete", states.PRUNED: "pruned", states.FAIL: "failed",
             states.RUNNING: "running", states.WAITING: "waiting"}[trial.state]
    attrs = trial.user_attrs
    note = attrs.get("error")
    if trial.state == states.PRUNED:
        note = f"pruned after epoch {attrs.get('pruned_at_epoch', trial.last_step)}"
    elif trial.state == states.FAIL and trial.number in retries:
        retry = retries[trial.number]
        note = (f"interrupted (a tune stopped during it): queued again as trial {retry}, not run (the study "
                "had its trials)" if retry in waiting else
                f"interrupted (a tune stopped during it): retried as trial {retry}")
    if "retry_of" in attrs and trial.state != states.FAIL:
        note = (f"retry of trial {attrs['retry_of']}" + (", not run" if trial.number in waiting else "")
                + (f"; {note}" if note else ""))
    return TrialRecord(number=trial.number, state=state, params=dict(trial.params),
                       value=trial.value if trial.state in (states.COMPLETE, states.PRUNED) else None,
                       epochs={int(k): float(v) for k, v in sorted(trial.intermediate_values.items())},
                       seconds=attrs.get("seconds"), run=attrs.get("run"), note=note)


def _best(records: list[TrialRecord]) -> TrialRecord | None:
    """The complete trial with the highest validation accuracy (the earliest of equals)."""
    complete = [r for r in records if r.state == "complete" and r.value is not None]
    return max(complete, key=lambda r: (r.value, -r.number)) if complete else None


# ---------------------------------------------------------------- outputs


def _write_outputs(study: Any, output: Path, spec: TuneSpec,
                   planned: TunePlan) -> tuple[list[TrialRecord], dict[str, Path]]:
    records = _records(study)
    best = _best(records)
    files = {"study": output / STUDY_FILE, "trials": output / TRIALS_CSV, "json": output / STUDY_JSON,
             "history": output / HISTORY_PNG}
    _write_csv(records, list(planned.space), files["trials"])
    write_json(_study_json(study, spec, planned, records, best), files["json"])
    _plot_history(records, files["history"])
    if best is not None:
        files["best"] = output / BEST_FILE
        _write_best(output, best, files["best"])
    return records, files


def _write_csv(records: list[TrialRecord], keys: list[str], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", *keys, "validation_accuracy", "seconds", "note"])
        for r in records:
            writer.writerow([r.number, r.state, *(r.params.get(k, "") for k in keys),
                             "" if r.value is None else r.value, "" if r.seconds is None else r.seconds,
                             r.note or ""])


def _study_json(study: Any, spec: TuneSpec, planned: TunePlan, records: list[TrialRecord],
                best: TrialRecord | None) -> dict[str, Any]:
    from .benchmark import environment

    env = environment()
    env["versions"]["optuna"] = optuna.__version__
    invocations = study.user_attrs.get("invocations", [])
    commands = [shlex.join(i["command"]) for i in invocations if i.get("command")]
    counts = {state: sum(r.state == state for r in records) for state in ("complete", "pruned", "failed")}
    return {
        "schema": SCHEMA,
        "study": STUDY_NAME,
        "storage": STUDY_FILE,
        "objective": "validation accuracy (metrics.json validation.accuracy; a pruned trial: its last "
                     "epoch's), maximized; the test subset is never read for the search",
        "recipe": study.user_attrs.get("recipe"),
        "overrides": study.user_attrs.get("overrides", {}),
        "method": planned.config.method,
        "space": planned.config.tune,
        "seed": spec.seed,
        "sampler": {"name": "TPESampler", "seed": spec.seed, "n_startup_trials": SAMPLER_STARTUP_TRIALS,
                    "seeds_by_invocation": [i.get("sampler_seed") for i in invocations]},
        "pruner": {"name": "MedianPruner", "n_startup_trials": PRUNER_STARTUP_TRIALS,
                   "n_warmup_steps": PRUNER_WARMUP_EPOCHS, "interval_steps": 1, "step": "epoch",
                   "last_epoch_pruned": False},
        "trials_requested": spec.trials,
        "counts": counts,
        "best_trial": best.to_dict() if best is not None else None,
        "trials": [r.to_dict() for r in records],
        "command": commands[-1] if commands else None,  # this call's
        "commands": commands,  # every call's, the first started the study
        "environment": env,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_recipe(cfg: RunConfig, path: Path, header: list[str]) -> None:
    text = "".join(f"# {line}\n" for line in header)
    path.write_text(text + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _write_best(output: Path, best: TrialRecord, path: Path) -> None:
    """The best trial's recipe: the config its run folder recorded (no tune: section)."""
    run_dir = output / TRIALS_DIR / str(best.number)
    try:
        cfg = load_run_config(run_dir)
    except RunError:  # its run folder was removed: the recipe it was started with
        cfg = load_config(output / TRIALS_DIR / f"{best.number}.yaml")
    _write_recipe(cfg, path, [
        f"The best trial ({best.number}) of the study in {output}: validation accuracy {best.value:.4f}.",
        f"Its values: {_describe(best.params)}",
        f"peft-sentiment train --recipe {path}",
    ])


def _plot_history(records: list[TrialRecord], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for state, style in (("complete", {"marker": "o", "color": "C0"}),
                         ("pruned", {"marker": "x", "color": "0.5"})):
        shown = [r for r in records if r.state == state and r.value is not None]
        label = "complete" if state == "complete" else "pruned (its last epoch)"
        if shown:
            ax.scatter([r.number for r in shown], [r.value for r in shown], label=label, zorder=3, **style)
    failed = [r.number for r in records if r.state == "failed"]
    if failed:  # no accuracy: marked along the bottom
        ax.scatter(failed, [0.02] * len(failed), transform=ax.get_xaxis_transform(), marker="v", color="C3",
                   label="failed", zorder=3)
    best_so_far, xs, ys = None, [], []
    for r in records:
        if r.state == "complete" and r.value is not None:
            best_so_far = r.value if best_so_far is None else max(best_so_far, r.value)
        if best_so_far is not None:
            xs.append(r.number)
            ys.append(best_so_far)
    if xs:
        ax.step(xs, ys, where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.set_title("tune: validation accuracy per trial")
    if records:
        ax.set_xlim(-0.5, max(r.number for r in records) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["TrialRecord", "TuneResult", "TuneSpec", "plan", "run_tune"]
