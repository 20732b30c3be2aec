"""Experiment tracking beyond the Trainer's own integrations: a finished run's config and test metrics.

The Trainer's callbacks (`trainer.report_to`) log the TrainingArguments, the loss and the per-epoch
evaluations while training runs. What they cannot see, the project's own config (method, adapter,
data protocol) and the test metrics measured after training, is added here as TensorBoard
hyperparameters, so runs can be compared in TensorBoard's HPARAMS tab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import RunConfig, config_to_dict

# metrics.json key -> TensorBoard tag
FINAL_METRICS = {"accuracy": "test/accuracy", "f1": "test/f1", "precision": "test/precision",
                 "recall": "test/recall", "train_seconds": "run/train_seconds",
                 "peak_memory_mib": "run/peak_memory_mib"}


def reports_to(cfg: RunConfig, tracker: str) -> bool:
    wanted = cfg.trainer.get("report_to", "none")
    wanted = [wanted] if isinstance(wanted, str) else list(wanted or [])
    return tracker in wanted or "all" in wanted


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """`section.key` -> value, with lists and mappings as text (hyperparameters are scalars)."""
    out: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict) and not prefix.endswith("architecture."):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")
        else:
            out[prefix.rstrip(".")] = value if isinstance(value, (bool, int, float, str)) else str(value)

    walk(config_to_dict(cfg), "")
    return out


def log_final(tensorboard_dir: Path, cfg: RunConfig, summary: dict[str, Any]) -> None:
    """With `trainer.report_to` naming tensorboard: the run's config as hyperparameters, with its
    test metrics, in `tensorboard_dir`."""
    if not reports_to(cfg, "tensorboard"):
        return
    from torch.utils.tensorboard import SummaryWriter

    metrics = {tag: float(summary[key]) for key, tag in FINAL_METRICS.items()
               if isinstance(summary.get(key), (int, float))}
    with SummaryWriter(log_dir=str(tensorboard_dir)) as writer:
        writer.add_hparams(flat_config(cfg), metrics, run_name="hparams")
        for name, value in metrics.items():
            writer.add_scalar(name, value, summary.get("train_steps", 0))
