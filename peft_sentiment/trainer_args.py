"""The `trainer:` section of a recipe: any transformers `TrainingArguments` field, passed through.

transformers checks the values (its field types and its own `__post_init__`). This module adds only
what transformers cannot know: the fields the project sets itself (RESERVED), the types a YAML or
`--set` value is coerced to, and lower bounds that transformers leaves to fail later in training.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from typing import Any

from .errors import ConfigError, first_line

# Fields the project sets from its own config, and where to set them instead.
RESERVED = {
    "output_dir": "the run folder is --output",
    "seed": "use train.seed (--seed)",
    "bf16": "use train.precision (--precision)",
    "fp16": "use train.precision (--precision)",
    "bf16_full_eval": "use train.precision (--precision)",
    "fp16_full_eval": "use train.precision (--precision)",
    "eval_strategy": "peft-sentiment evaluates on validation after every epoch (data.validation_size)",
    "save_strategy": "use train.save_steps or train.save_every_epoch",
    "save_steps": "use train.save_steps",
    "save_total_limit": "use train.keep_checkpoints",
    "load_best_model_at_end": "use train.keep_best or train.early_stopping_patience (on validation)",
    "metric_for_best_model": "validation accuracy chooses (train.keep_best, train.early_stopping_patience)",
    "greater_is_better": "validation accuracy chooses (train.keep_best, train.early_stopping_patience)",
    "resume_from_checkpoint": "use `peft-sentiment train --resume RUN`",
    "push_to_hub": "use `peft-sentiment push`",
    "hub_model_id": "use `peft-sentiment push --repo-id`",
    "hub_token": "never put a token in a recipe: set HF_TOKEN or run `hf auth login`",
    "disable_tqdm": "peft-sentiment shows its own progress",
    "length_column_name": "peft-sentiment names the tokenized length column",
}

# Lower bounds transformers does not check when the arguments are built: (bound, inclusive).
BOUNDS = {
    "learning_rate": (0.0, False),
    "num_train_epochs": (0.0, False),
    "per_device_train_batch_size": (1, True),
    "per_device_eval_batch_size": (1, True),
    "gradient_accumulation_steps": (1, True),
    "logging_steps": (0.0, False),
    "weight_decay": (0.0, True),
    "max_grad_norm": (0.0, True),
    "label_smoothing_factor": (0.0, True),
}

TRACKERS = ("none", "all", "tensorboard", "trackio", "mlflow", "wandb", "comet_ml", "clearml",
            "dagshub", "dvclive", "neptune", "swanlab", "codecarbon", "azure_ml")


@functools.cache
def _fields() -> dict[str, Any]:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainingArguments) if f.init}


def field_type(name: str) -> Any:
    """The declared type of a TrainingArguments field (KeyError if there is none)."""
    return _fields()[name]


def _check_name(name: Any) -> None:
    if name in RESERVED:
        raise ConfigError(f"trainer.{name} is set by peft-sentiment: {RESERVED[name]}")
    if name not in _fields():
        close = difflib.get_close_matches(str(name), list(_fields()), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown key 'trainer.{name}': not a transformers TrainingArguments field{hint}")


def coerce_trainer(options: dict[str, Any]) -> dict[str, Any]:
    """A recipe's trainer: mapping with YAML and --set values turned into the fields' types."""
    from .config import _coerce

    out = {}
    for name, value in options.items():
        _check_name(name)
        tp = _scalar(field_type(name))
        if name == "report_to":
            value = _trackers(value)
        elif tp in (int, float, bool) and value is not None:
            value = _coerce(tp, value, f"trainer.{name}")
        out[name] = value
    return out


def _scalar(tp: Any) -> Any:
    """int, float or bool for `X` and `X | None`; anything else as it is."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else tp


def _trackers(value: Any) -> Any:
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"trainer.report_to must be a tracker name or a list of them, got {value!r}")
    names = [n.strip() for n in names if n.strip()]
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"trainer.report_to: unknown tracker {name!r} (known: {', '.join(TRACKERS)})")
    return names[0] if len(names) == 1 else names


def check_trainer(options: dict[str, Any]) -> None:
    """Every field known and not the project's, within bounds, and accepted by TrainingArguments."""
    from transformers import TrainingArguments

    for name, value in options.items():
        _check_name(name)
        if name in BOUNDS and value is not None:
            bound, inclusive = BOUNDS[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"trainer.{name} must be a number, got {value!r}")
            if value < bound or (value == bound and not inclusive):
                relation = "at least" if inclusive else "above"
                raise ConfigError(f"trainer.{name} must be {relation} {bound:g}, got {value!r}")
    try:
        TrainingArguments(output_dir="unused", **options)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"trainer: {_culprit(options)}{first_line(err)}") from None


def _culprit(options: dict[str, Any]) -> str:
    """The first field TrainingArguments refuses on its own, as a prefix of the message."""
    from transformers import TrainingArguments

    for name, value in options.items():
        try:
            TrainingArguments(output_dir="unused", **{name: value})
        except (ValueError, TypeError):
            return f"{name}={value!r}: "
    return ""


def check_trackers_installed(options: dict[str, Any]) -> None:
    """The trackers of trainer.report_to can run here (checked before any work)."""
    from transformers.integrations import get_available_reporting_integrations

    wanted = options.get("report_to", "none")
    wanted = [wanted] if isinstance(wanted, str) else list(wanted or [])
    available = set(get_available_reporting_integrations())
    for name in wanted:
        if name not in ("none", "all") and name not in available:
            raise ConfigError(f"trainer.report_to: {name} is not installed here: pip install {name}")


def training_arguments(options: dict[str, Any], owned: dict[str, Any]):  # -> TrainingArguments
    """TrainingArguments from the project's defaults < the recipe's trainer: section < what the
    project owns (`owned`: output folder, seed, precision, checkpoints, evaluation)."""
    import torch
    from transformers import TrainingArguments

    defaults = {
        "report_to": "none",
        "logging_strategy": "steps",
        "use_cpu": not torch.cuda.is_available(),
        # Data parallel: every trainable parameter gets a gradient in every method here (frozen
        # weights are not tracked by DDP), so the unused-parameter search is skipped.
        "ddp_find_unused_parameters": False,
        "dataloader_num_workers": 0,  # workers would each start their own thread pool on the CPU
    }
    merged = {**defaults, **options, **owned}
    if merged.get("gradient_checkpointing") and merged.get("gradient_checkpointing_kwargs") is None:
        # Non-reentrant checkpointing needs no gradient on the inputs, so frozen embeddings work.
        merged["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return TrainingArguments(**merged)
