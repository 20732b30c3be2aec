"""Fine-tuning with the transformers Trainer, and batched prediction with it."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import SequentialSampler
from transformers import (
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import has_length

from .config import TrainConfig
from .errors import Interrupted
from .metrics import binary_metrics
from .probe import choose_precision


@dataclass
class TrainResult:
    train_seconds: float  # the optimizer steps: the evaluations after each epoch are not counted
    train_samples_per_second: float
    steps: int
    final_loss: float
    log: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0  # all of trainer.train(), evaluations included
    share: float = 1.0  # the part of the run's steps done in this process (less after a resume)


def resolve_precision(precision: str) -> str:
    """The precision a run computes in (`auto` resolved for this machine: see probe.choose_precision)."""
    return choose_precision(precision)


def training_arguments(cfg: TrainConfig, output_dir: Path, evaluate: bool) -> TrainingArguments:
    precision = resolve_precision(cfg.precision)
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        num_train_epochs=cfg.epochs,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # v5: a float below 1 is a share of the steps
        lr_scheduler_type=cfg.scheduler,
        seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=cfg.gradient_checkpointing,
        # Non-reentrant checkpointing needs no gradient on the inputs, so frozen embeddings work.
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        length_column_name="length",
        eval_strategy="epoch" if evaluate else "no",
        # Checkpoints (for --resume) only when asked for; a signal saves one regardless.
        save_strategy="steps" if cfg.save_steps else "epoch" if cfg.save_every_epoch else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.keep_checkpoints,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        report_to=[],
        # Data parallel: every trainable parameter gets a gradient in every method here (frozen
        # weights are not tracked by DDP), so the unused-parameter search is skipped.
        ddp_find_unused_parameters=False,
        disable_tqdm=True,  # progress is the caller's callback
        dataloader_num_workers=0,  # workers would each start their own thread pool on the CPU
        use_cpu=not torch.cuda.is_available(),
    )


def _compute_metrics(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred
    preds = np.asarray(logits).argmax(axis=-1)
    m = binary_metrics(list(map(int, labels)), list(map(int, preds)))
    return {"accuracy": m.accuracy, "f1": m.f1}


class _Trainer(Trainer):
    """The Trainer, evaluating in dataset order.

    With length-grouped training batches, transformers also groups evaluation batches by length,
    which returns predictions in a shuffled order: per-review predictions would no longer line up
    with the reviews (metrics stay right, paired comparisons across runs would not).
    """

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None


def make_trainer(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    cfg: TrainConfig,
    work_dir: Path,
    train: Dataset | None = None,
    test: Dataset | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> Trainer:
    args = training_arguments(cfg, work_dir, evaluate=train is not None and test is not None)
    trainer = _Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # the caller's callbacks report progress
    return trainer


class StopOnSignal(TrainerCallback):
    """SIGINT or SIGTERM during training: finish the current step, save a checkpoint, stop.

    A second signal interrupts at once (KeyboardInterrupt). Handlers are installed only while
    training runs, and only in the main thread (where Python delivers signals).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.step = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step
        if self.signum is not None:
            control.should_save = True
            control.should_training_stop = True
        return control


def train(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train_set: Dataset,
    test_set: Dataset,
    cfg: TrainConfig,
    work_dir: Path,
    callbacks: Sequence[TrainerCallback] = (),
    resume_from: Path | None = None,
) -> TrainResult:
    """Fine-tune `model` in place, evaluating on `test_set` after each epoch; checkpoints go to
    `work_dir`. `resume_from`: a checkpoint of the same run (optimizer, scheduler, RNG and data
    order are restored by the Trainer). Raises `Interrupted` after a signal's checkpoint."""
    stopper = StopOnSignal()
    trainer = make_trainer(model, tokenizer, cfg, work_dir, train_set, test_set, [stopper, *callbacks])
    first_step = _checkpoint_step(resume_from)
    start = time.perf_counter()
    with stopper:
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.perf_counter() - start
    if stopper.signum is not None:
        name = signal.Signals(stopper.signum).name
        raise Interrupted(f"{name}: stopped at step {stopper.step} of {trainer.state.max_steps} after "
                          "saving a checkpoint", stopper.signum)
    # The Trainer's history: after a resume it also holds what was logged before the checkpoint.
    log = [dict(entry) for entry in trainer.state.log_history]
    evaluating = sum(e.get("eval_runtime", 0.0) for e in log if e.get("step", 0) > first_step)
    seconds = max(wall - evaluating, 1e-9)
    share = (output.global_step - first_step) / max(trainer.state.max_steps, 1)
    samples = cfg.epochs * len(train_set) * share
    return TrainResult(
        train_seconds=seconds,
        train_samples_per_second=samples / seconds,
        steps=output.global_step,
        final_loss=output.training_loss,
        log=log,
        wall_seconds=wall,
        share=share,
    )


def _checkpoint_step(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError):
        return 0


@dataclass
class Predictions:
    logits: np.ndarray
    labels: np.ndarray
    seconds: float

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(axis=-1)


def predict_dataset(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    test_set: Dataset,
    cfg: TrainConfig,
    work_dir: Path,
) -> Predictions:
    """Logits for a tokenized data set, in its order."""
    trainer = make_trainer(model, tokenizer, cfg, work_dir, test=test_set)
    start = time.perf_counter()
    output = trainer.predict(test_set)
    seconds = time.perf_counter() - start
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return Predictions(logits=np.asarray(logits, dtype=np.float32),
                       labels=np.asarray(output.label_ids), seconds=seconds)


def write_log(entries: list[dict[str, Any]], path: Path) -> None:
    with path.open("w") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")
