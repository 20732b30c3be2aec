"""The training pipeline shared by the CLI and the library: data -> model -> train -> evaluate -> run folder."""

from __future__ import annotations

import dataclasses
import platform
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

from transformers import TrainerCallback

from .artifacts import (
    ADAPTER_DIR,
    BASE_DIR,
    CONFIG_FILE,
    LOG_FILE,
    METRICS_FILE,
    MODEL_DIR,
    atomic_dir,
    check_output,
    default_output,
    load_model,
    load_run_config,
    write_json,
)
from .config import DataConfig, RunConfig, config_to_dict, expand_path, path_exists, save_config
from .data import load_splits
from .metrics import Metrics, binary_metrics
from .modeling import BuiltModel, apply_method, build_base, count_parameters
from .perf import device_name, peak_memory, reset_peak_memory
from .train import TrainResult, predict_dataset, resolve_precision, tokenize, train, write_log

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
        if per_review:
            out["labels"] = self.labels
            out["preds"] = self.preds
        return out


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def run_training(
    cfg: RunConfig,
    output: Path | None = None,
    overwrite: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    on_model: Callable[[BuiltModel, int, int], None] | None = None,
) -> RunResult:
    """Train `cfg` and write a complete run folder at `output`; nothing is left there on failure."""
    output = Path(output) if output is not None else default_output(cfg.method)
    cfg = absolute_local_paths(cfg)
    check_output(output, overwrite)  # before any slow work
    splits = load_splits(cfg.data)
    built = build_base(cfg, splits.train["text"])
    with atomic_dir(output, overwrite) as tmp:
        saved_base = None
        if cfg.saves_adapter and cfg.model.builds_new_weights:
            # Random base weights exist only here: keep them so the adapter can be reloaded.
            saved_base = tmp / BASE_DIR
            built.base.save_pretrained(saved_base)
            built.tokenizer.save_pretrained(saved_base)
        built = apply_method(built, cfg, saved_base)
        trainable, total = count_parameters(built.model)
        if on_model is not None:
            on_model(built, trainable, total)
        train_set = tokenize(splits.train, built.tokenizer, cfg.data.max_length)
        test_set = tokenize(splits.test, built.tokenizer, cfg.data.max_length)
        with tempfile.TemporaryDirectory(prefix="peft-sentiment-") as work:
            baseline = reset_peak_memory()
            result = train(built.model, built.tokenizer, train_set, test_set, cfg.train,
                           Path(work), callbacks)
            memory = peak_memory(baseline)
            built.model.eval()
            preds = predict_dataset(built.model, built.tokenizer, test_set, cfg.train, Path(work))
        metrics = binary_metrics(preds.labels.tolist(), preds.preds.tolist())
        _save_model(built, cfg, tmp)
        summary = {
            **metrics.to_dict(),
            "method": cfg.method,
            "model": cfg.model.name,
            "data": cfg.data.source,
            "train_origin": splits.train_origin,
            "test_origin": splits.test_origin,
            "n_train": len(splits.train),
            "n_test": len(splits.test),
            "shuffle_seed": cfg.data.shuffle_seed,
            "seed": cfg.train.seed,
            "compute_dtype": resolve_precision(cfg.train.precision),
            "train_seconds": round(result.train_seconds, 2),
            "train_samples_per_second": round(result.train_samples_per_second, 3),
            "train_steps": result.steps,
            "final_train_loss": result.final_loss,
            "eval_seconds": round(preds.seconds, 2),
            "eval_samples_per_second": round(len(test_set) / preds.seconds, 3),
            "peak_memory_mib": round(memory.peak_mib, 1),
            "peak_memory_kind": memory.kind,
            "peak_memory_reserved_mib": _round(memory.reserved_mib),
            "memory_baseline_mib": _round(memory.baseline_mib),
            "trainable_params": trainable,
            "total_params": total,
            "trainable_share": trainable / total,
            "head_modules": list(built.head_modules),
            "device": device_name(),
            "versions": versions(),
        }
        save_config(cfg, tmp / CONFIG_FILE)
        write_json(summary, tmp / METRICS_FILE)
        write_log(result.log, tmp / LOG_FILE)
    return RunResult(output=output, metrics=metrics, train=result, trainable_params=trainable,
                     total_params=total, summary=summary)


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


def _save_model(built: BuiltModel, cfg: RunConfig, run_dir: Path) -> None:
    target = run_dir / (ADAPTER_DIR if cfg.saves_adapter else MODEL_DIR)
    built.model.save_pretrained(target)  # safetensors; for PEFT, the adapter and the head
    built.tokenizer.save_pretrained(target)


def evaluate_run(
    source: str | Path,
    data: DataConfig | None = None,
) -> EvalResult:
    """Re-evaluate a run (or model/adapter folder) on its own test subset or on `data`."""
    loaded = load_model(source)
    if data is None:
        if loaded.config is None:
            from .errors import ConfigError

            raise ConfigError(f"{source} is not a run folder: pass --data to say what to evaluate on")
        data = loaded.config.data
    splits = load_splits(data, need_train=False)
    train_cfg = loaded.config.train if loaded.config is not None else RunConfig().train
    test_set = tokenize(splits.test, loaded.tokenizer, data.max_length)
    with tempfile.TemporaryDirectory(prefix="peft-sentiment-") as work:
        preds = predict_dataset(loaded.model, loaded.tokenizer, test_set, train_cfg, Path(work))
    labels, predicted = preds.labels.astype(int).tolist(), preds.preds.astype(int).tolist()
    return EvalResult(metrics=binary_metrics(labels, predicted), eval_seconds=preds.seconds,
                      source=str(source), data=data, labels=labels, preds=predicted)


__all__ = ["RunResult", "EvalResult", "run_training", "evaluate_run", "load_run_config"]
