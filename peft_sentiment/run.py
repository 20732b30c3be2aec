"""The training pipeline shared by the CLI and the library: data -> model -> train -> evaluate -> run folder."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import TrainerCallback

from .config import (
    DataConfig,
    RunConfig,
    build,
    config_to_dict,
    expand_path,
    path_exists,
    read_recipe,
    save_config,
)
from .data import load_splits
from .dist import barrier, world
from .errors import ConfigError, Interrupted, RunError
from .flops import forward_flops, model_shape, training_flops, utilization
from .loading import load_model, model_labels
from .labels import LabelSet, save_labels
from .metrics import Metrics, classification_metrics
from .modeling import (
    FROZEN_BASE_METHODS,
    BuiltModel,
    apply_method,
    build_base,
    check_max_length,
    count_parameters,
    model_config,
    skip_input_casts,
    store_frozen_linears,
)
from .perf import device_name, peak_memory, reset_peak_memory
from .plots import CONFUSION_FILE, confusion_matrix_png
from .probe import check_precision, choose_precision, peak_flops
from .rundir import (
    ADAPTER_DIR,
    BASE_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    IN_PROGRESS_FILE,
    LOG_FILE,
    METRICS_FILE,
    MODEL_DIR,
    TENSORBOARD_DIR,
    TRAINING_ARGS_FILE,
    atomic_dir,
    check_output,
    default_output,
    last_checkpoint,
    load_run_config,
    partial_dir,
    write_json,
)
from .tokens import tokenize
from .tracking import log_final
from .train import TrainResult, class_weights, predict_dataset, train, write_log
from .trainer_args import check_trackers_installed

PACKAGES = ("peft-sentiment", "torch", "transformers", "peft", "datasets", "accelerate")


@dataclass
class RunResult:
    output: Path
    metrics: Metrics
    train: TrainResult
    trainable_params: int
    total_params: int
    summary: dict[str, Any]  # what metrics.json holds


@dataclass
class EvalResult:
    metrics: Metrics
    eval_seconds: float
    source: str
    data: DataConfig  # what was evaluated on
    labels: list[int]  # per test review, in the subset's order
    preds: list[int]

    @property
    def samples_per_second(self) -> float:
        return self.metrics.n / self.eval_seconds if self.eval_seconds > 0 else 0.0

    def to_dict(self, per_review: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.metrics.to_dict(),
            "source": self.source,
            "data": config_to_dict(self.data),
            "eval_seconds": round(self.eval_seconds, 3),
            "eval_samples_per_second": round(self.samples_per_second, 3),
        }
        if per_review:  # class ids per review; `labels` holds the class names
            out["label_ids"] = self.labels
            out["preds"] = self.preds
        return out


def versions() -> dict[str, str]:
    """Python's and the packages' versions, and the commit of this code when it runs from a git checkout."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    commit = git_commit()
    if commit is not None:
        found["peft-sentiment-commit"] = commit
    return found


def git_commit() -> str | None:
    """HEAD of the checkout this package runs from, `-dirty` when tracked files differ from it; None
    for an installed copy (no checkout around it) or without git."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if changed else head


def run_training(
    cfg: RunConfig | None,
    output: Path | None = None,
    overwrite: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    on_model: Callable[[BuiltModel, int, int], None] | None = None,
    resume: bool = False,
) -> RunResult:
    """Train `cfg` and write a complete run folder at `output`.

    The run trains in OUTPUT.partial/ and becomes OUTPUT/ when it has finished. On failure nothing
    is left, unless a checkpoint was saved (train.save_steps, train.save_every_epoch, or SIGINT and
    SIGTERM): then OUTPUT.partial/ stays, and `resume=True` (with `cfg` None: the run's own config)
    continues it from its last checkpoint.
    """
    if resume:
        if output is None:
            raise RunError("resume needs the run folder to continue")
        output = Path(output)
        cfg, checkpoint = _resume_point(output, cfg)
    else:
        if cfg is None:
            raise ConfigError("no config to train")
        output = Path(output) if output is not None else default_output(cfg.method)
        cfg = absolute_local_paths(cfg)
        checkpoint = None
    check_output(output, overwrite)  # before any slow work
    check_precision(cfg.train.precision)  # likewise: fp16 without CUDA is refused here
    check_trackers_installed(cfg.trainer)
    check_max_length(cfg.data.max_length, model_config(cfg.model), cfg.model.name)
    splits = load_splits(cfg.data)
    weights = class_weights(cfg.train.class_weights, splits.train["label"], len(splits.labels.names))
    staging = partial_dir(output)
    me = world()  # under torchrun or accelerate launch every process trains; the main one writes
    if me.is_main:
        folder = atomic_dir(output, overwrite, staging=staging, resume=resume,
                            keep_if=lambda d: last_checkpoint(d) is not None)
    else:
        folder = nullcontext(staging)
    with folder as tmp:
        if me.is_main and not resume:
            save_config(cfg, tmp / CONFIG_FILE)
            write_json({"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                       tmp / IN_PROGRESS_FILE)
        saved_base = tmp / BASE_DIR if cfg.saves_adapter and cfg.model.builds_new_weights else None
        if resume and saved_base is not None:
            # The random base this run made: load it back rather than building it again.
            base_cfg = dataclasses.replace(cfg, model=dataclasses.replace(
                cfg.model, name=str(saved_base), random_init=False, architecture=None, tokenizer=None,
                tokenizer_vocab_size=None))
            built = build_base(base_cfg, splits.train["text"], splits.labels)
        else:
            built = build_base(cfg, splits.train["text"], splits.labels)
            if saved_base is not None and me.is_main:  # random base weights exist only here: keep them
                built.base.save_pretrained(saved_base)
                built.tokenizer.save_pretrained(saved_base)
        if me.is_main:  # probe the matmul peaks once, not in every process at the same time
            peak_flops(choose_precision(cfg.train.precision))
        barrier()  # the run folder, a new base and the probed peaks are on disk for every process
        precision = choose_precision(cfg.train.precision)
        built = apply_method(built, cfg, saved_base)
        if cfg.method in FROZEN_BASE_METHODS and precision == "bf16":
            store_frozen_linears(built.model, built.head_modules, torch.bfloat16)
            skip_input_casts(built.model)
        trainable, total = count_parameters(built.model)
        if on_model is not None:
            on_model(built, trainable, total)
        train_set = tokenize(splits.train, built.tokenizer, cfg.data.max_length)
        validation_set = (tokenize(splits.validation, built.tokenizer, cfg.data.max_length)
                          if splits.validation is not None else None)
        baseline = reset_peak_memory()
        try:
            result = train(built.model, built.tokenizer, train_set, validation_set, cfg,
                           tmp / CHECKPOINTS_DIR, callbacks, resume_from=checkpoint,
                           tensorboard_dir=tmp / TENSORBOARD_DIR, weights=weights)
        except Interrupted as err:
            raise Interrupted(f"{err}; resume with `peft-sentiment train --resume {output}`",
                              err.signum) from None
        memory = peak_memory(baseline)
        built.model.eval()
        names = splits.labels.names
        validation = None
        with tempfile.TemporaryDirectory(prefix="peft-sentiment-") as work:
            if validation_set is not None:  # the kept model, on the reviews that chose it
                found = predict_dataset(built.model, built.tokenizer, validation_set, cfg, Path(work))
                validation = classification_metrics(found.labels.tolist(), found.preds.tolist(), names)
            # The test subset is read here, once, by the model training ended with.
            test_set = tokenize(splits.test, built.tokenizer, cfg.data.max_length)
            preds = predict_dataset(built.model, built.tokenizer, test_set, cfg, Path(work))
        metrics = classification_metrics(preds.labels.tolist(), preds.preds.tolist(), names)  # every review once
        summary = _summary(cfg, splits, metrics, result, preds, memory, built, trainable, total, me.size,
                           precision, validation)
        summary["class_weights"] = weights
        summary.update(throughput(built, train_set["length"], test_set["length"], cfg, result, preds.seconds,
                                  me.size, precision))
        if checkpoint is not None:
            summary["resumed_from"] = checkpoint.name
            # train_seconds is the whole run's; the rates are this process's part
            summary["train_seconds_before_resume"] = round(result.seconds_before, 2)
        if not me.is_main:
            return RunResult(output=output, metrics=metrics, train=result, trainable_params=trainable,
                             total_params=total, summary=summary)
        _save_model(built, cfg, tmp, splits.labels)
        write_json(summary, tmp / METRICS_FILE)
        confusion_matrix_png(metrics.confusion_matrix, names, tmp / CONFUSION_FILE,
                             f"{cfg.method}: {metrics.n} test reviews of {cfg.data.source}, "
                             f"accuracy {metrics.accuracy:.4f}")
        write_json(_relative_paths(result.arguments, tmp), tmp / TRAINING_ARGS_FILE)
        log_final(tmp / TENSORBOARD_DIR, cfg, summary)
        write_log(result.log, tmp / LOG_FILE)
        shutil.rmtree(tmp / CHECKPOINTS_DIR, ignore_errors=True)  # the finished run needs none
        (tmp / IN_PROGRESS_FILE).unlink()
    return RunResult(output=output, metrics=metrics, train=result, trainable_params=trainable,
                     total_params=total, summary=summary)


def _summary(cfg: RunConfig, splits: Any, metrics: Metrics, result: TrainResult, preds: Any,
             memory: Any, built: BuiltModel, trainable: int, total: int, world_size: int,
             precision: str, validation: Metrics | None) -> dict[str, Any]:
    """What metrics.json holds: the test metrics at the top (read once, after training), the
    validation metrics of the same model apart."""
    per_device = cfg.trainer["per_device_train_batch_size"]
    accumulation = cfg.trainer.get("gradient_accumulation_steps", 1)
    return {
        **metrics.to_dict(),
        "validation": validation.to_dict() if validation is not None else None,
        "n_validation": len(splits.validation) if splits.validation is not None else 0,
        "validation_origin": splits.validation_origin or None,
        "validation_dropped": splits.validation_dropped,  # repeats of training or test texts (drop_overlap)
        "kept": "best" if result.best_step is not None else "last",  # which epoch's weights were kept
        "best_step": result.best_step,
        "method": cfg.method,
        "model": cfg.model.name,
        "data": cfg.data.source,
        "train_origin": splits.train_origin,
        "test_origin": splits.test_origin,
        "n_train": len(splits.train),
        "n_test": len(splits.test),
        "shuffle_seed": cfg.data.shuffle_seed,
        "seed": cfg.train.seed,
        "compute_dtype": precision,
        "train_seconds": round(result.total_seconds, 2),  # a resumed run's earlier processes included
        "train_samples_per_second": round(result.train_samples_per_second, 3),
        "train_steps": result.steps,
        "final_train_loss": result.final_loss,
        "eval_seconds": round(preds.seconds, 2),
        "eval_samples_per_second": round(metrics.n / preds.seconds, 3),
        "peak_memory_mib": round(memory.peak_mib, 1),
        "peak_memory_kind": memory.kind,
        "peak_memory_reserved_mib": _round(memory.reserved_mib),
        "memory_baseline_mib": _round(memory.baseline_mib),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total,
        "head_modules": list(built.head_modules),
        "device": device_name(),
        "world_size": world_size,  # processes training data-parallel
        "per_device_batch_size": per_device,
        "global_batch_size": per_device * accumulation * world_size,  # what one optimizer step sees
        "versions": versions(),
    }


def throughput(built: BuiltModel, train_lengths: Sequence[int], test_lengths: Sequence[int],
               cfg: RunConfig, result: TrainResult, eval_seconds: float, processes: int,
               precision: str) -> dict[str, Any]:
    """Tokens per second and model FLOPs utilization of training and of the final evaluation (the
    formula is in flops.py; the peak comes from the cached matmul probe of probe.py)."""
    shape = model_shape(built.model, built.head_modules)
    peak = peak_flops(precision)
    train_tokens = sum(train_lengths) * result.epochs * result.share
    train_flops = training_flops(shape, train_lengths, result.epochs) * result.share
    eval_flops = forward_flops(shape, test_lengths)
    train_mfu = utilization(train_flops, result.train_seconds, peak, processes)
    eval_mfu = utilization(eval_flops, eval_seconds, peak, processes)
    return {
        "train_wall_seconds": round(result.wall_seconds, 2),  # with the per-epoch evaluations
        "train_tokens": int(train_tokens),  # real tokens, padding excluded
        "train_tokens_per_second": round(train_tokens / result.train_seconds, 1),
        "train_flops": train_flops,
        "train_mfu": None if train_mfu is None else round(train_mfu, 4),
        "eval_tokens_per_second": round(sum(test_lengths) / eval_seconds, 1) if eval_seconds > 0 else None,
        "eval_mfu": None if eval_mfu is None else round(eval_mfu, 4),
        "peak_flops_per_second": peak,  # per process, probed for this precision on this device
    }


def _resume_point(output: Path, cfg: RunConfig | None) -> tuple[RunConfig, Path]:
    """The unfinished run's config and its last complete checkpoint."""
    staging = partial_dir(output)
    if output.exists() and not staging.exists():
        raise RunError(f"run {output} has finished: there is nothing to resume")
    if not (staging / IN_PROGRESS_FILE).is_file():
        raise RunError(f"no unfinished run to resume at {output} ({staging} does not exist)")
    saved = build(RunConfig, read_recipe(staging / CONFIG_FILE))
    if cfg is not None and cfg != saved:
        raise ConfigError(f"{output} was started with another config: resume it without changing "
                          "options (its config.yaml is used)")
    checkpoint = last_checkpoint(staging)
    if checkpoint is None:
        raise RunError(f"{staging} has no complete checkpoint to resume from: start the run again "
                       "with --overwrite")
    return saved, checkpoint


def _relative_paths(arguments: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The TrainingArguments as recorded: paths inside the run folder relative to it (it is renamed
    when it finishes)."""
    out = dict(arguments)
    for key, value in out.items():
        if isinstance(value, str) and value.startswith(str(run_dir)):
            out[key] = os.path.relpath(value, run_dir)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def absolute_local_paths(cfg: RunConfig) -> RunConfig:
    """Record local model and data folders as absolute paths, so the run reloads from anywhere."""
    def absolute(value: str | None) -> str | None:
        if value is None or value.startswith("builtin:") or not path_exists(value):
            return value
        return str(expand_path(value).resolve())

    model = dataclasses.replace(cfg.model, name=absolute(cfg.model.name), tokenizer=absolute(cfg.model.tokenizer))
    data = dataclasses.replace(cfg.data, source=absolute(cfg.data.source))
    return dataclasses.replace(cfg, model=model, data=data)


def _save_model(built: BuiltModel, cfg: RunConfig, run_dir: Path, labels: LabelSet) -> None:
    target = run_dir / (ADAPTER_DIR if cfg.saves_adapter else MODEL_DIR)
    built.model.save_pretrained(target)  # safetensors; for PEFT, the adapter and the head
    built.tokenizer.save_pretrained(target)
    save_labels(labels, target)  # the class names and the values that stand for them in the data


def evaluate_run(
    source: str | Path,
    data: DataConfig | None = None,
) -> EvalResult:
    """Re-evaluate a run (or model/adapter folder, or ONNX export) on its own test subset or on `data`."""
    from .config import path_exists
    from .onnx_backend import evaluate_export, is_export

    if path_exists(str(source), folder=True) and is_export(Path(source)):
        data, label_set, labels, predicted, seconds = evaluate_export(Path(source), data)
        return EvalResult(metrics=classification_metrics(labels, predicted, label_set.names), eval_seconds=seconds,
                          source=str(source), data=data, labels=labels, preds=predicted)
    loaded = load_model(source)
    if data is None:
        if loaded.config is None:
            raise ConfigError(f"{source} is not a run folder: pass --data to say what to evaluate on")
        data = loaded.config.data
    label_set = model_labels(loaded)
    splits = load_splits(data, need_train=False, labels=label_set)
    check_max_length(data.max_length, loaded.model.config, str(source))
    run_cfg = loaded.config if loaded.config is not None else RunConfig()
    test_set = tokenize(splits.test, loaded.tokenizer, data.max_length)
    with tempfile.TemporaryDirectory(prefix="peft-sentiment-") as work:
        preds = predict_dataset(loaded.model, loaded.tokenizer, test_set, run_cfg, Path(work))
    labels, predicted = preds.labels.astype(int).tolist(), preds.preds.astype(int).tolist()
    return EvalResult(metrics=classification_metrics(labels, predicted, label_set.names), eval_seconds=preds.seconds,
                      source=str(source), data=data, labels=labels, preds=predicted)


__all__ = ["RunResult", "EvalResult", "run_training", "evaluate_run", "load_run_config"]
