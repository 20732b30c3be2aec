"""The run folder: its layout, its lock, atomic writes into it, and reading it back.

A run folder holds:
  config.yaml   the fully resolved RunConfig
  training_args.json  every TrainingArguments field the Trainer ran with (tokens masked)
  metrics.json  test metrics, timing, memory, parameters, versions, device
  log.jsonl     the Trainer's log, one JSON object per line
  tensorboard/  with --report-to tensorboard: the Trainer's logs, test metrics and config as hparams
  model/        method full: model and tokenizer (save_pretrained, safetensors)
  adapter/      adapter methods: PEFT adapter with the classification head, and the tokenizer
  base/         adapter methods whose base has random weights made by the run (it exists nowhere else)

While it trains, a run lives in RUN.partial/ (its config.yaml, an IN_PROGRESS marker and, with
--save-steps or --save-every-epoch or after SIGINT/SIGTERM, checkpoints/), and becomes RUN/ only
when it has finished. A RUN.partial/ that holds a checkpoint outlives a crash: `train --resume RUN`
continues it. Every command that writes a run or output folder holds the lock file .NAME.lock beside
it, so a second writer is refused instead of racing the first.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import RunConfig, build, read_recipe
from .errors import RunError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
BASE_DIR = "base"
IN_PROGRESS_FILE = "IN_PROGRESS"
CHECKPOINTS_DIR = "checkpoints"
PARTIAL_SUFFIX = ".partial"
TRAINING_ARGS_FILE = "training_args.json"
TENSORBOARD_DIR = "tensorboard"
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence marks it complete


def default_output(method: str) -> Path:
    return Path("runs") / f"{method}-{datetime.now():%Y%m%d-%H%M%S}"


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output unless overwriting is asked for."""
    if path.exists() and not overwrite:
        raise RunError(f"output {path} already exists: pass --overwrite or choose another --output")
    if path.exists() and not path.is_dir():
        raise RunError(f"output {path} exists and is not a folder")


@contextmanager
def atomic_dir(final: Path, overwrite: bool = False, staging: Path | None = None, resume: bool = False,
               keep_if: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a staging folder that becomes `final` only if the block succeeds, holding the lock on
    `final` throughout.

    `staging` (default: a hidden sibling for this process) is where the work happens; with `resume`
    it must hold an earlier attempt. On failure the staging folder is removed unless `keep_if` says
    it is worth keeping (a run with a checkpoint).
    """
    check_output(final, overwrite)
    parent = final.parent
    created_parent = not parent.exists()
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create {parent}: {err.strerror}") from None
    try:
        with output_lock(final):
            tmp = staging if staging is not None else parent / f".{final.name}.partial-{os.getpid()}"
            _prepare_staging(tmp, final, overwrite, resume)
            try:
                yield tmp
            except BaseException:
                if keep_if is None or not keep_if(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
            old = None
            if final.exists():
                old = parent / f".{final.name}.old-{os.getpid()}"
                final.rename(old)
            tmp.rename(final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if created_parent:
            _remove_if_empty(parent)
        raise


def _prepare_staging(tmp: Path, final: Path, overwrite: bool, resume: bool) -> None:
    if resume:
        if not tmp.is_dir():
            raise RunError(f"nothing to resume: {tmp} does not exist")
        return
    if tmp.exists():
        if (tmp / IN_PROGRESS_FILE).is_file() and not overwrite:
            raise RunError(f"{tmp} holds an unfinished run: resume it with `peft-sentiment train "
                           f"--resume {final}`, or pass --overwrite to start over")
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
    except OSError as err:
        raise RunError(f"cannot write to {final.parent}: {err.strerror}") from None


def partial_dir(final: Path) -> Path:
    """Where the run for `final` trains until it finishes."""
    return final.with_name(final.name + PARTIAL_SUFFIX)


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of an unfinished run, or None."""
    folder = run_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    complete = [p for p in folder.glob("checkpoint-*") if (p / TRAINER_STATE).is_file()
                and p.name.split("-")[-1].isdigit()]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


def unfinished_message(path: Path) -> str | None:
    """Why `path` (or the run meant by it) is not a finished run, if it is an unfinished one."""
    if path.name.endswith(PARTIAL_SUFFIX) and (path / IN_PROGRESS_FILE).is_file():
        final = path.with_name(path.name[: -len(PARTIAL_SUFFIX)])
    elif not path.exists() and (partial_dir(path) / IN_PROGRESS_FILE).is_file():
        final = path
    else:
        return None
    checkpoint = last_checkpoint(partial_dir(final))
    if checkpoint is None:
        return f"run {final} did not finish and has no checkpoint (it may still be training)"
    return (f"run {final} did not finish (last checkpoint: {checkpoint.name}): resume it with "
            f"`peft-sentiment train --resume {final}`")


@contextmanager
def output_lock(final: Path) -> Iterator[None]:
    """Hold .NAME.lock beside `final`: a second writer of the same folder is refused, not raced.

    An flock is released by the kernel when its process dies, even on SIGKILL: no stale locks.
    """
    import fcntl

    lock = final.parent / f".{final.name}.lock"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a+")
    except OSError as err:
        raise RunError(f"cannot write to {final.parent}: {err.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise RunError(f"{final} is being written by {owner}: wait for it to finish or use another "
                       "output") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def write_json(data: Any, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def check_new_file(path: Path) -> None:
    """Refuse to replace an existing file, or to write where the folder is missing."""
    if path.exists():
        raise RunError(f"{path} already exists: choose another file name")
    if not path.parent.is_dir():
        raise RunError(f"folder {path.parent} does not exist")


def write_json_atomic(data: Any, path: Path) -> None:
    """Write JSON to a temporary sibling and rename it into place: never a half-written file."""
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(data) + "\n")
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise RunError(f"cannot write {path}: {err.strerror}") from None


def upload_files(run_dir: Path) -> tuple[str, list[Path]]:
    """What a push of this run uploads besides the model card: the adapter folder of an adapter
    run (push --adapter-only), the model folder of a full run."""
    for kind, folder in (("adapter", run_dir / ADAPTER_DIR), ("model", run_dir / MODEL_DIR)):
        if folder.is_dir():
            return kind, sorted(p for p in folder.rglob("*") if p.is_file())
    raise RunError(f"{run_dir} has no {MODEL_DIR}/ or {ADAPTER_DIR}/ folder: it did not finish")


def is_run(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and ((path / MODEL_DIR).is_dir() or (path / ADAPTER_DIR).is_dir())


def load_run_config(run_dir: Path) -> RunConfig:
    message = unfinished_message(run_dir)
    if message is not None:
        raise RunError(message)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    return read_config(run_dir)


def read_config(folder: Path) -> RunConfig:
    """The config a run folder (finished or not) was started with."""
    return build(RunConfig, read_recipe(folder / CONFIG_FILE))


def load_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no {METRICS_FILE}")
    return json.loads(path.read_text())
