"""Benchmark: methods x seeds on one data protocol, each run in a fresh process, compared on the same reviews.

A benchmark folder holds:
  benchmark.json            the spec, for --resume
  configs/<run>.yaml        the resolved config each run was trained with (a recipe in its own right)
  runs/<run>/               ordinary run folders, written by `peft-sentiment train`
  evals/<run>/test-<n>.json each run evaluated on n test reviews, with every review's prediction
  evals/<run>/artifact.json what a push of the run uploads (kind, bytes), recorded when it finished:
                            the report needs no weights, so a finished run's model/ or adapter/
                            folder may be deleted to free disk and the benchmark still resumes
  logs/<run>.log            what each child process printed
  logs/<run>.events.jsonl   the run's structured events: each child's command, progress, error and
                            exit code (the schema is in events.py)
  results.json              every run's raw figures, per-review predictions and the environment
  results.md, plot.png      the report (re-rendered from results.json by `benchmark --report`)
  confusion-<method>.png    with it, each method's confusion matrix, summed over its seeds

Each training run and each evaluation is its own `python -m peft_sentiment ...` process: its peak
memory is its own, a crash is recorded and the next run goes on, and the command is replayable.
The benchmark learns a child's progress and failure from its events, never from its printed output.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from . import events
from .config import RunConfig, config_to_dict, load_config, read_recipe, recipe_path, save_config
from .errors import ConfigError, Interrupted, RunError, signal_of
from .rundir import (
    CONFIG_FILE,
    IN_PROGRESS_FILE,
    METRICS_FILE,
    last_checkpoint,
    load_metrics,
    load_run_config,
    output_lock,
    partial_dir,
    read_config,
    upload_files,
    write_json,
)

SPEC_FILE = "benchmark.json"
RESULTS_FILE = "results.json"
ARTIFACT_FILE = "artifact.json"
SCHEMA = 1
BASE_SECTIONS = ("data", "model")  # what --recipe gives every method
POLL_SECONDS = 0.2  # how often a running child's events are read


@dataclass(frozen=True)
class BenchmarkSpec:
    methods: tuple[str, ...] = ("full", "lora")  # recipe names (one per method) or recipe paths
    seeds: tuple[int, ...] = (42,)
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted recipe keys, applied to every method
    eval_test_sizes: tuple[int, ...] = ()  # more evaluations of each trained run, on n test reviews
    baseline: str = "full"  # what every other method is compared with, review by review
    resamples: int = 2000  # bootstrap resamples
    nproc_per_node: int = 1  # more than 1: each training run data-parallel through torchrun
    recipe: str | None = None  # base recipe (name or path) whose data and model sections every method uses

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("no methods to benchmark")
        if not self.seeds:
            raise ConfigError("no seeds to benchmark")
        labels = [method_label(m) for m in self.methods]
        for items, what in ((labels, "method"), (list(self.seeds), "seed")):
            repeated = sorted({str(x) for x in items if items.count(x) > 1})
            if repeated:
                raise ConfigError(f"{what} given twice: {', '.join(repeated)}" + (
                    " (recipe files are named by their stem in tables and run folders: rename one)"
                    if what == "method" and len(set(self.methods)) == len(self.methods) else ""))
        for n in self.eval_test_sizes:
            if n <= 0:
                raise ConfigError(f"evaluation test sizes must be positive, got {n}")
        if self.resamples < 100:
            raise ConfigError(f"resamples must be at least 100, got {self.resamples}")
        if self.nproc_per_node < 1:
            raise ConfigError(f"--nproc-per-node must be at least 1, got {self.nproc_per_node}")
        if "train.seed" in self.overrides:
            raise ConfigError("train.seed is set per run by --seeds, not by an override")
        if self.baseline not in labels:
            raise ConfigError(f"--baseline {self.baseline!r} is not among the methods ({', '.join(labels)})")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"], out["seeds"] = list(self.methods), list(self.seeds)
        out["eval_test_sizes"] = list(self.eval_test_sizes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkSpec:
        return cls(methods=tuple(data["methods"]), seeds=tuple(data["seeds"]),
                   overrides=dict(data.get("overrides", {})),
                   eval_test_sizes=tuple(data.get("eval_test_sizes", ())),
                   baseline=data.get("baseline", "full"), resamples=int(data.get("resamples", 2000)),
                   nproc_per_node=int(data.get("nproc_per_node", 1)), recipe=data.get("recipe"))


def default_baseline(methods: Sequence[str]) -> str:
    """full when it is among the methods, else the first one."""
    labels = [method_label(m) for m in methods]
    return "full" if "full" in labels or not labels else labels[0]


def method_label(method: str) -> str:
    """How a method appears in tables: the recipe name, or a recipe file's stem."""
    path = Path(method)
    return path.stem if path.suffix in (".yaml", ".yml") else method


@dataclass(frozen=True)
class PlannedRun:
    name: str  # <label>-seed<seed>: its folder name in runs/, evals/, logs/ and configs/
    label: str
    seed: int
    config: RunConfig


def plan(spec: BenchmarkSpec) -> list[PlannedRun]:
    """Every run's resolved config, validated before anything starts."""
    from .run import absolute_local_paths

    for method in spec.methods:
        recipe_path(method)  # an unknown recipe fails here, once
    base = base_sections(spec.recipe) if spec.recipe is not None else {}
    runs = []
    for seed in spec.seeds:  # seed by seed: a partial benchmark already holds complete comparisons
        for method in spec.methods:
            label = method_label(method)
            cfg = load_config(method, {**base, **spec.overrides, "train.seed": seed})
            runs.append(PlannedRun(f"{label}-seed{seed}", label, seed, absolute_local_paths(cfg)))
    return runs


def base_sections(recipe: str) -> dict[str, Any]:
    """The whole data and model sections of a base recipe: they replace each method recipe's own."""
    path = recipe_path(recipe)
    found = {key: value for key, value in read_recipe(path).items() if key in BASE_SECTIONS}
    if not found:
        raise ConfigError(f"recipe {path} has no {' or '.join(BASE_SECTIONS)} section to give the methods: "
                          "pass a recipe that has them, or no --recipe")
    return found


# ---------------------------------------------------------------- progress


class Reporter(Protocol):
    def start(self, total: int) -> None: ...
    def stage(self, run: PlannedRun, stage: str, index: int) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def finished(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class SilentReporter:
    def start(self, total: int) -> None: ...
    def stage(self, run: PlannedRun, stage: str, index: int) -> None: ...
    def step(self, done: int, total: int) -> None: ...
    def finished(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------- running


@dataclass
class BenchmarkOutcome:
    output: Path
    results: dict[str, Any]
    failed: list[str]


def run_benchmark(
    spec: BenchmarkSpec,
    output: Path,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    command: Sequence[str] | None = None,
    python: str = sys.executable,
) -> BenchmarkOutcome:
    """Run every planned run that has not finished, then collect results.json."""
    reporter = reporter or SilentReporter()
    runs = plan(spec)
    output = Path(output)
    with output_lock(output):  # a second benchmark into the same folder is refused
        _prepare_folder(output, spec, runs, resume, overwrite)
        write_json(spec.to_dict(), output / SPEC_FILE)
        records: dict[str, dict[str, Any]] = {}
        reporter.start(len(runs))
        try:
            for index, run in enumerate(runs):
                records[run.name] = _execute(run, spec, output, python, reporter, index)
                reporter.finished(records[run.name])
        except KeyboardInterrupt as err:
            signum = signal_of(err)
            raise Interrupted(_interrupted_message(signum.name, output, run), signum) from None
        finally:
            reporter.close()
        results = collect(output, spec, runs, records, command)
        write_json(results, output / RESULTS_FILE)
    failed = [r["name"] for r in results["runs"] if r["status"] != "ok"]
    return BenchmarkOutcome(output, results, failed)


def _interrupted_message(signame: str, output: Path, run: PlannedRun) -> str:
    """What a stopped benchmark kept, and how to go on."""
    kept = f"finished runs are kept in {output / 'runs'}: continue with the same command and --resume"
    run_dir = output / "runs" / run.name
    if _finished(run_dir) or not (partial_dir(run_dir) / IN_PROGRESS_FILE).is_file():
        return f"{signame}: {kept}"
    _, checkpoint = _train_args(run, run_dir, output / "configs" / f"{run.name}.yaml")  # what --resume does
    stopped = (f"{run.name} stopped at {checkpoint.name}, where --resume continues it" if checkpoint
               else f"{run.name} was stopped before its first checkpoint and starts over on --resume")
    return f"{signame}: {stopped}; {kept}"


def _prepare_folder(output: Path, spec: BenchmarkSpec, runs: list[PlannedRun], resume: bool,
                    overwrite: bool) -> None:
    if resume and overwrite:
        raise ConfigError("pass --resume or --overwrite, not both")
    if output.exists() and not output.is_dir():
        raise RunError(f"output {output} exists and is not a folder")
    if output.exists() and any(output.iterdir()):
        is_benchmark = (output / SPEC_FILE).is_file()
        if resume and not is_benchmark:
            raise RunError(f"{output} is not a benchmark folder (no {SPEC_FILE}): nothing to resume")
        if overwrite:
            if not is_benchmark:
                raise RunError(f"{output} is not a benchmark folder (no {SPEC_FILE}): refusing to replace it")
            shutil.rmtree(output)
        elif not resume:
            raise RunError(f"output {output} already exists: pass --resume to continue it or --overwrite")
        else:
            _check_resumable(output, spec, runs)
    try:
        for sub in ("configs", "runs", "evals", "logs"):
            (output / sub).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create {output}: {err.strerror}") from None


def _check_resumable(output: Path, spec: BenchmarkSpec, runs: list[PlannedRun]) -> None:
    """Resuming may add methods, seeds or evaluations; a finished run must match its config exactly."""
    try:
        old = BenchmarkSpec.from_dict(json.loads((output / SPEC_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise RunError(f"{output / SPEC_FILE} is unreadable: {err}") from None
    if old.recipe != spec.recipe:
        raise ConfigError(f"{output} was started with --recipe {old.recipe or '(none)'}, not "
                          f"{spec.recipe or '(none)'}: resume with the same settings or use another folder")
    if old.overrides != spec.overrides:
        raise ConfigError(f"{output} was started with overrides {old.overrides}, not {spec.overrides}: "
                          "resume with the same settings or use another folder")
    for run in runs:
        run_dir = output / "runs" / run.name
        if (run_dir / CONFIG_FILE).is_file() and load_run_config(run_dir) != run.config:
            raise ConfigError(f"run {run_dir} was trained with another config than "
                              f"{run.label} now resolves to: resume with the same recipes or use "
                              "another folder")


def _finished(run_dir: Path) -> bool:
    return (run_dir / METRICS_FILE).is_file() and (run_dir / CONFIG_FILE).is_file()


def _execute(run: PlannedRun, spec: BenchmarkSpec, output: Path, python: str, reporter: Reporter,
             index: int) -> dict[str, Any]:
    run_dir = output / "runs" / run.name
    log, events_file = _log_files(output, run)
    record: dict[str, Any] = {"name": run.name, "label": run.label, "seed": run.seed,
                              "method": run.config.method, "status": "ok", "error": None,
                              "log": str(log.relative_to(output)),
                              "events": str(events_file.relative_to(output)), "process_seconds": {}}
    if not _finished(run_dir):
        recipe = output / "configs" / f"{run.name}.yaml"
        save_config(run.config, recipe)
        launcher = [python]
        if spec.nproc_per_node > 1:  # torchrun starts the processes; the Trainer runs DDP across them
            launcher = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(spec.nproc_per_node)]
        train_args, checkpoint = _train_args(run, run_dir, recipe)
        start: dict[str, Any] = {}
        if checkpoint is not None:
            record["continued_from"] = start["continued_from"] = checkpoint.name  # train s: the rest only
        shutil.rmtree(output / "evals" / run.name, ignore_errors=True)  # evaluations of an earlier attempt
        reporter.stage(run, "train", index)
        child = _run_child([*launcher, "-m", "peft_sentiment", "train", *train_args], log, events_file,
                           reporter, stage="train", **start)
        record["process_seconds"]["train"] = child.done["seconds"]
        if child.exit_code != 0:
            return {**record, "status": "failed", "stage": "train", "error": _failure(child)}
    else:
        record["resumed"] = True
    if _finished(run_dir):
        _artifact(output, run.name)  # recorded while the weights are there
    sizes = sorted({run.config.data.test_size, *spec.eval_test_sizes})
    for n in sizes:
        target = output / "evals" / run.name / f"test-{n}.json"
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        cmd = [python, "-m", "peft_sentiment", "evaluate", str(run_dir), "--test-size", str(n),
               "--save-predictions", str(target)]
        reporter.stage(run, f"evaluate on {n}", index)
        child = _run_child(cmd, log, events_file, reporter, stage="evaluate", test_size=n)
        record["process_seconds"][f"evaluate-{n}"] = child.done["seconds"]
        if child.exit_code != 0:
            return {**record, "status": "failed", "stage": f"evaluate on {n}", "error": _failure(child)}
    return record


def _log_files(output: Path, run: PlannedRun) -> tuple[Path, Path]:
    """The run's log (what its processes printed, for people) and its events (for the benchmark)."""
    return output / "logs" / f"{run.name}.log", output / "logs" / f"{run.name}.events.jsonl"


def _train_args(run: PlannedRun, run_dir: Path, recipe: Path) -> tuple[list[str], Path | None]:
    """A new run; or one an interrupted benchmark left unfinished: continued from its checkpoint (also
    returned) if it has one and was trained with this config, started over otherwise."""
    staging = partial_dir(run_dir)
    new = ["--recipe", str(recipe), "-o", str(run_dir)]
    if not (staging / IN_PROGRESS_FILE).is_file():
        return new, None
    checkpoint = last_checkpoint(staging)
    if checkpoint is not None and _config_of(staging) == run.config:
        return ["--resume", str(run_dir)], checkpoint
    return [*new, "--overwrite"], None


def _config_of(staging: Path) -> RunConfig | None:
    try:
        return read_config(staging)
    except (OSError, ValueError, ConfigError):
        return None


def _run_child(cmd: list[str], log: Path, events_file: Path, reporter: Reporter,
               **start: Any) -> events.ChildProcess:
    """Run one child process, its output appended to `log` and its events to `events_file`; its step
    events drive `reporter` while it runs. Returns the process as its events tell it."""
    events.append(events_file, "start", command=cmd, **start)
    tail = events.Tail(events_file, events_file.stat().st_size)  # the child's own events, from here on
    env = {**os.environ, "PYTHONUNBUFFERED": "1", events.ENV_VAR: str(events_file.resolve())}
    begin = time.perf_counter()
    with log.open("ab") as out:  # the child writes here itself: the log can be followed live
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        printed_from = out.tell()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            code = None
            while code is None:
                try:
                    code = proc.wait(timeout=POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
                _report_progress(tail.poll(), reporter)
        except KeyboardInterrupt as err:
            # Ctrl-C reaches the whole process group; a SIGTERM (a KeyboardInterrupt subclass in the
            # CLI) reached only this process: pass it on. Either way the child cleans up after itself,
            # and no `done` event is written: the run is unfinished, not failed.
            if type(err) is not KeyboardInterrupt and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise
        last = events.last_log_line(log, printed_from) if code != 0 else None
        out.write(f"[exit {code}]\n".encode())
    done: dict[str, Any] = {"exit_code": code, "seconds": round(time.perf_counter() - begin, 1)}
    if last is not None:
        done["output"] = last
    events.append(events_file, "done", **done)
    return events.processes(events.read(events_file))[-1]


def _report_progress(found: list[dict[str, Any]], reporter: Reporter) -> None:
    for ev in found:
        step, total = ev.get("step"), ev.get("total")
        if ev["event"] in ("step", "epoch") and isinstance(step, int) and isinstance(total, int):
            reporter.step(step, total)




def _failure(child: events.ChildProcess) -> str:
    """A failed child's one-line error: its own error event, else its last line of output."""
    code = child.exit_code
    how = f"exit {code}"
    if code is not None and code < 0:
        try:
            how += f" ({signal.Signals(-code).name})"
        except ValueError:
            pass
    message = child.error or (child.done or {}).get("output") or "no output"
    return f"{how}: {message}"


def run_commands(events_file: Path) -> list[list[str]]:
    """The child commands that made a run what it is: from its last training started afresh on
    (continued training and every evaluation since), in order, whichever invocation ran them."""
    children = events.processes(events.read(events_file))
    fresh = [i for i, c in enumerate(children) if c.start.get("stage") == "train"
             and not c.start.get("continued_from")]
    return [c.command for c in children[(fresh[-1] if fresh else 0):]]


# ---------------------------------------------------------------- collecting


def environment() -> dict[str, Any]:
    import torch

    from .perf import cpu_model, device_name
    from .run import versions

    return {
        "device": device_name(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "versions": {**versions(), **_optional_versions()},
    }


def _optional_versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("bitsandbytes", "scikit-learn", "matplotlib"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def collect(output: Path, spec: BenchmarkSpec, runs: list[PlannedRun],
            records: dict[str, dict[str, Any]] | None = None,
            command: Sequence[str] | None = None) -> dict[str, Any]:
    """results.json: every planned run's figures and per-review predictions, and the environment."""
    records = records or {}
    test_sets: dict[str, list[int]] = {}
    collected = []
    for run in runs:
        record = dict(records.get(run.name) or {"name": run.name, "label": run.label, "seed": run.seed,
                                                "method": run.config.method, "status": "ok", "error": None})
        record["commands"] = run_commands(_log_files(output, run)[1])
        record["config"] = config_to_dict(run.config)
        if record["status"] == "ok":
            record.update(_run_figures(output, run, spec, test_sets))
        collected.append(record)
    return {
        "schema": SCHEMA,
        "spec": spec.to_dict(),
        "command": shlex.join(command) if command else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "test_sets": {n: {"labels": labels} for n, labels in sorted(test_sets.items(), key=lambda x: int(x[0]))},
        "runs": collected,
    }


def _run_figures(output: Path, run: PlannedRun, spec: BenchmarkSpec,
                 test_sets: dict[str, list[int]]) -> dict[str, Any]:
    run_dir = output / "runs" / run.name
    if not _finished(run_dir):
        return {"status": "missing", "error": "not run yet (resume the benchmark)"}
    metrics = load_metrics(run_dir)
    artifact = _artifact(output, run.name)
    figures: dict[str, Any] = {
        "train": {k: v for k, v in metrics.items() if k not in ("confusion_matrix",)},
        "upload_kind": artifact["kind"],
        "upload_bytes": artifact["bytes"],
        "evals": {},
    }
    for n in sorted({run.config.data.test_size, *spec.eval_test_sizes}):
        path = output / "evals" / run.name / f"test-{n}.json"
        if not path.is_file():
            return {**figures, "status": "missing", "error": f"no evaluation on {n} test reviews"}
        ev = json.loads(path.read_text())
        labels = ev.pop("label_ids", None)  # the true class of each review
        if labels is None:  # saved before label_ids: the reviews' classes stood under `labels`, over the names
            labels = ev.pop("labels")
            if ev.get("per_class"):
                ev["labels"] = [c["label"] for c in ev["per_class"]]
        known = test_sets.setdefault(str(n), labels)
        if known != labels:
            raise RunError(f"{path}: its test labels differ from the other runs' on {n} reviews; "
                           "the runs were not evaluated on the same reviews")
        figures["evals"][str(n)] = ev
    return figures


def _artifact(output: Path, name: str) -> dict[str, Any]:
    """What a push of a finished run uploads: read from its record, else measured from its folder
    and recorded (so that the figures outlive the weights)."""
    record = output / "evals" / name / ARTIFACT_FILE
    if record.is_file():
        return json.loads(record.read_text())
    try:
        kind, files = upload_files(output / "runs" / name)
    except RunError:
        raise RunError(f"{output / 'runs' / name}: its weights are gone and {record} does not record "
                       "their size: delete the run folder and resume to train it again") from None
    artifact = {"kind": kind, "bytes": sum(f.stat().st_size for f in files), "files": len(files)}
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(artifact, record)
    return artifact


def collect_folder(folder: Path) -> dict[str, Any]:
    """Results of a benchmark folder as it stands, finished or still running: every run that has
    started is listed, and the unfinished ones are marked missing."""
    try:
        spec = BenchmarkSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise RunError(f"{folder / SPEC_FILE} is unreadable: {err}") from None
    runs = []
    for seed in spec.seeds:
        for method in spec.methods:
            name = f"{method_label(method)}-seed{seed}"
            recipe = folder / "configs" / f"{name}.yaml"
            if recipe.is_file():  # resolved when the run started
                runs.append(PlannedRun(name, method_label(method), seed, load_config(recipe)))
    previous = folder / RESULTS_FILE
    command = None
    if previous.is_file():
        try:
            command = json.loads(previous.read_text()).get("command")
        except ValueError:
            pass
    records = {run.name: record for run in runs if (record := _failure_from_events(folder, run)) is not None}
    results = collect(folder, spec, runs, records)
    results["command"] = command
    return results


def _failure_from_events(folder: Path, run: PlannedRun) -> dict[str, Any] | None:
    """The record of a run whose last child process failed, read back from its events."""
    log, events_file = _log_files(folder, run)
    children = events.processes(events.read(events_file))
    if not children or children[-1].exit_code in (None, 0):  # none yet, running, ended well or interrupted
        return None
    last = children[-1]
    stage = "train" if last.start.get("stage") == "train" else f"evaluate on {last.start.get('test_size')}"
    return {"name": run.name, "label": run.label, "seed": run.seed, "method": run.config.method,
            "status": "failed", "stage": stage, "error": _failure(last), "log": str(log.relative_to(folder)),
            "events": str(events_file.relative_to(folder))}


def load_results(path: Path) -> dict[str, Any]:
    """A results.json, or the results of a benchmark folder: collected afresh from its runs when it
    has them (it may still be running), else its results.json."""
    path = Path(path)
    if path.is_dir() and (path / SPEC_FILE).is_file() and (path / "runs").is_dir():
        return collect_folder(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise RunError(f"no {RESULTS_FILE} in {path}: run the benchmark first")
    try:
        data = json.loads(file.read_text())
    except ValueError as err:
        raise RunError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or "runs" not in data:
        raise RunError(f"{file} is not a peft-sentiment benchmark results file")
    return data
