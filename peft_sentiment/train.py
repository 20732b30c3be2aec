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
    EarlyStoppingCallback,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer_utils import has_length

from . import trainer_args
from .config import RunConfig
from .errors import ConfigError, Interrupted
from .metrics import classification_metrics
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
    epochs: float = 0.0  # epochs reached (the Trainer's count: trainer.max_steps may end a run early)
    arguments: dict[str, Any] = field(default_factory=dict)  # the TrainingArguments, as JSON
    best_step: int | None = None  # with keep_best or early stopping: the step whose weights were kept
    seconds_before: float = 0.0  # train seconds of the processes before a resume (from the checkpoint)

    @property
    def total_seconds(self) -> float:
        """Train seconds of the whole run: this process and every one it resumed from."""
        return self.seconds_before + self.train_seconds


def training_arguments(cfg: RunConfig, output_dir: Path, evaluate: bool) -> TrainingArguments:
    """The recipe's trainer: section, with what the project owns set from its own config."""
    t = cfg.train
    best = evaluate and t.selects_on_validation  # chosen on the evaluation set: validation
    precision = choose_precision(t.precision)
    owned = {
        "output_dir": str(output_dir),
        "seed": t.seed,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "eval_strategy": "epoch" if evaluate else "no",
        # Checkpoints (for --resume) only when asked for, or to keep the best epoch; a signal saves
        # one regardless.
        "save_strategy": "steps" if t.save_steps else "epoch" if t.save_every_epoch or best else "no",
        "load_best_model_at_end": best,
        "metric_for_best_model": "accuracy" if best else None,
        "greater_is_better": True if best else None,
        "save_steps": t.save_steps or 500,
        "save_total_limit": t.keep_checkpoints,
        "disable_tqdm": True,  # progress is the caller's callback
        "length_column_name": "length",
    }
    return trainer_args.training_arguments(cfg.trainer, owned)


def _compute_metrics(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred
    logits = np.asarray(logits)
    preds = logits.argmax(axis=-1)
    names = [str(i) for i in range(logits.shape[-1])]
    m = classification_metrics(list(map(int, labels)), list(map(int, preds)), names)
    return {"accuracy": m.accuracy, "f1": m.f1, "macro_f1": m.macro_f1}


def class_weights(option: str, train_labels: Sequence[int], n_classes: int) -> list[float] | None:
    """train.class_weights for the training labels: None for "none"; "balanced" gives each class
    n / (classes * its count), so the weights average 1 over the training reviews (scikit-learn's rule);
    "w1,w2,..." gives one weight per class, in class id order."""
    if option == "none":
        return None
    if option == "balanced":
        counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=n_classes)
        missing = [i for i, c in enumerate(counts) if c == 0]
        if missing:
            raise ConfigError(f"train.class_weights=balanced: class {missing[0]} has no training review")
        return [len(train_labels) / (n_classes * int(c)) for c in counts]
    weights = [float(w) for w in option.split(",")]
    if len(weights) != n_classes:
        raise ConfigError(f"train.class_weights {option!r} gives {len(weights)} weights for {n_classes} classes")
    return weights


def weighted_cross_entropy(weights: Sequence[float]):
    """The Trainer's loss with a weight per class: sum of weight(label) * cross-entropy over the
    reviews, divided by the number of reviews in the step (the Trainer's num_items_in_batch, so
    gradient accumulation sums the same way)."""
    table = torch.tensor(list(weights), dtype=torch.float32)

    def loss(outputs, labels, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        per_review = torch.nn.functional.cross_entropy(
            logits.float(), labels, weight=table.to(logits.device), reduction="none")
        count = num_items_in_batch if num_items_in_batch is not None else labels.numel()
        return per_review.sum() / count

    return loss


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
    cfg: RunConfig,
    work_dir: Path,
    train: Dataset | None = None,
    evaluation: Dataset | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    weights: Sequence[float] | None = None,
) -> Trainer:
    """A Trainer for `cfg`; with both data sets, `evaluation` (the validation subset) is evaluated
    after every epoch. `weights`: one per class, for a weighted cross-entropy loss."""
    args = training_arguments(cfg, work_dir, evaluate=train is not None and evaluation is not None)
    trainer = _Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics,
        callbacks=list(callbacks),
        compute_loss_func=weighted_cross_entropy(weights) if weights is not None else None,
    )
    trainer.remove_callback(PrinterCallback)  # the caller's callbacks report progress
    return trainer


CLOCK_FILE = "train_clock.json"


def clock_seconds(checkpoint: Path | None) -> float:
    """The train seconds a checkpoint records (0 for none, or for one saved without a clock)."""
    if checkpoint is None:
        return 0.0
    try:
        return float(json.loads((checkpoint / CLOCK_FILE).read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


class TrainClock(TrainerCallback):
    """The run's train seconds, evaluations not counted: this process's since `start()`, and into each
    checkpoint it saves the whole run's (the earlier processes' included), so that a resumed run
    reports what the whole run took."""

    def __init__(self, first_step: int = 0, seconds_before: float = 0.0) -> None:
        self.first_step = first_step  # the step this process starts from (its checkpoint's)
        self.seconds_before = seconds_before
        self.began = time.perf_counter()

    def start(self) -> None:
        self.began = time.perf_counter()

    def wall(self) -> float:
        return time.perf_counter() - self.began

    def seconds(self, log_history: list[dict[str, Any]]) -> float:
        """This process's train seconds so far: its wall time less its evaluations. The Trainer's
        history after a resume also holds what was logged before the checkpoint: left out."""
        evaluating = sum(e.get("eval_runtime", 0.0) for e in log_history if e.get("step", 0) > self.first_step)
        return self.wall() - evaluating

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            seconds = self.seconds_before + self.seconds(state.log_history)
            (folder / CLOCK_FILE).write_text(json.dumps({"train_seconds": round(seconds, 3),
                                                         "step": state.global_step}))


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

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.signum is not None and abs(state.epoch - round(state.epoch)) > 1e-6:
            # stopped part-way through an epoch: the checkpoint is saved already, and validation
            # scores whole epochs only (the resumed run scores this one when it ends)
            control.should_evaluate = False
            control.should_save = False
        return control


def train(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train_set: Dataset,
    validation_set: Dataset | None,
    cfg: RunConfig,
    work_dir: Path,
    callbacks: Sequence[TrainerCallback] = (),
    resume_from: Path | None = None,
    tensorboard_dir: Path | None = None,
    weights: Sequence[float] | None = None,
) -> TrainResult:
    """Fine-tune `model` in place, evaluating on `validation_set` after each epoch (when there is one)
    and, with train.keep_best or early stopping, ending on its best epoch; checkpoints go to
    `work_dir`. `resume_from`: a checkpoint of the same run (optimizer, scheduler, RNG and data
    order are restored by the Trainer). Raises `Interrupted` after a signal's checkpoint.
    `tensorboard_dir`: where TensorBoard logs go when the trainer reports to it. `weights`: class
    weights of the loss (`class_weights`)."""
    stopper = StopOnSignal()
    first_step = _checkpoint_step(resume_from)
    clock = TrainClock(first_step, clock_seconds(resume_from))
    extra: list[TrainerCallback] = [clock]
    if cfg.train.early_stopping_patience is not None and validation_set is not None:
        extra.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    trainer = make_trainer(model, tokenizer, cfg, work_dir, train_set, validation_set,
                           [stopper, *extra, *callbacks], weights)
    if tensorboard_dir is not None:
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
                callback.logging_dir = str(tensorboard_dir)  # else: under output_dir, removed at the end
    clock.start()
    with stopper:
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = clock.wall()
    if stopper.signum is not None:
        name = signal.Signals(stopper.signum).name
        raise Interrupted(f"{name}: stopped at step {stopper.step} of {trainer.state.max_steps} after "
                          "saving a checkpoint", stopper.signum)
    log = [dict(entry) for entry in trainer.state.log_history]
    seconds = max(clock.seconds(log), 1e-9)
    share = (output.global_step - first_step) / max(trainer.state.max_steps, 1)
    epochs = float(trainer.state.epoch or 0.0)
    samples = epochs * len(train_set) * share
    return TrainResult(
        train_seconds=seconds,
        train_samples_per_second=samples / seconds,
        steps=output.global_step,
        final_loss=output.training_loss,
        log=log,
        wall_seconds=wall,
        share=share,
        epochs=epochs,
        arguments=trainer.args.to_dict(),
        best_step=_checkpoint_step(Path(best)) if (best := trainer.state.best_model_checkpoint) else None,
        seconds_before=clock.seconds_before,
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
    cfg: RunConfig,
    work_dir: Path,
) -> Predictions:
    """Logits for a tokenized data set, in its order."""
    trainer = make_trainer(model, tokenizer, cfg, work_dir, evaluation=test_set)
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
