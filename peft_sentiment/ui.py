"""Rich terminal output: the training progress bar and result tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from transformers import TrainerCallback

from .metrics import Metrics

err_console = Console(stderr=True)


class RichProgress(TrainerCallback):
    """A progress bar over optimizer steps, and one line per epoch evaluation."""

    def __init__(self, console: Console = err_console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task = None
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.progress = Progress(
            TextColumn("[bold]training[/] epoch {task.fields[epoch]:.2f}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, epoch=0.0, loss="-")

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, epoch=state.epoch or 0.0)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if self.progress is not None and logs and "loss" in logs:
            self.progress.update(self.task, loss=f"{logs['loss']:.4f}")
            if not self.console.is_terminal:  # a log file gets a line per logging step instead of a bar
                self.console.print(f"step {state.global_step}/{state.max_steps} epoch {state.epoch:.2f}"
                                   f" loss {logs['loss']:.4f}")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
        if metrics and self.progress is not None:
            self.progress.console.print(
                f"epoch {state.epoch:.0f}: validation accuracy {metrics.get('eval_accuracy', 0):.4f}"
                f"  f1 {metrics.get('eval_f1', 0):.4f}  loss {metrics.get('eval_loss', 0):.4f}"
            )

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def metrics_table(title: str, metrics: Metrics, extra: dict[str, Any] | None = None) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    several = metrics.labels is not None and len(metrics.labels) > 2
    which = " (macro)" if several else ""
    table.add_row("accuracy", f"{metrics.accuracy:.4f}")
    table.add_row(f"f1{which}", f"{metrics.f1:.4f}")
    table.add_row(f"precision{which}", f"{metrics.precision:.4f}")
    table.add_row(f"recall{which}", f"{metrics.recall:.4f}")
    if metrics.macro_f1 is not None and not several:
        table.add_row("macro f1", f"{metrics.macro_f1:.4f}")
    if metrics.weighted_f1 is not None:
        table.add_row("weighted f1", f"{metrics.weighted_f1:.4f}")
    table.add_row("test reviews", str(metrics.n))
    for key, value in (extra or {}).items():
        table.add_row(key, str(value))
    return table


def class_table(metrics: Metrics) -> Table | None:
    """Per class: precision, recall, F1 and support, and the confusion matrix's row (predictions
    across, by class number); None for metrics without class names."""
    if metrics.labels is None:
        return None
    table = Table(title="per class; columns 0.. count the predictions of each class", header_style="bold")
    table.add_column("class")
    for name in ("precision", "recall", "f1", "support"):
        table.add_column(name, justify="right")
    for i in range(len(metrics.labels)):
        table.add_column(str(i), justify="right", style="dim")
    for i, (scores, row) in enumerate(zip(metrics.per_class, metrics.confusion_matrix)):
        table.add_row(f"{i} {scores.label}", f"{scores.precision:.3f}", f"{scores.recall:.3f}", f"{scores.f1:.3f}",
                      str(scores.support), *map(str, row))
    return table


def format_params(trainable: int, total: int) -> str:
    return f"trainable params: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"


class BenchmarkProgress:
    """Which benchmark run is going (with its training steps), and how long the finished ones took."""

    def __init__(self, console: Console = err_console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.overall = None
        self.current = None

    def start(self, total: int) -> None:
        self.progress.start()
        self.overall = self.progress.add_task("[bold]runs[/]", total=total)

    def stage(self, run: Any, stage: str, index: int) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
        self.current = self.progress.add_task(f"{run.name}: {stage}", total=None)
        if not self.console.is_terminal:
            self.console.print(f"{run.name}: {stage}")

    def step(self, done: int, total: int) -> None:
        if self.current is not None:
            self.progress.update(self.current, completed=done, total=total)

    def finished(self, record: dict[str, Any]) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None
        times = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in record["process_seconds"].items())
        if record["status"] != "ok":
            self.progress.console.print(f"[red]failed[/] {record['name']} ({record.get('stage')}): "
                                        f"{record['error']}", soft_wrap=True, markup=True, highlight=False)
        elif times:
            self.progress.console.print(f"[green]done[/] {record['name']}: {times}", soft_wrap=True)
        else:
            self.progress.console.print(f"[dim]done earlier[/] {record['name']}", soft_wrap=True)
        if self.overall is not None:
            self.progress.advance(self.overall)

    def close(self) -> None:
        self.progress.stop()


def format_trial_params(params: dict[str, Any]) -> str:
    """Trial values as `name=value`, by the last part of each key (learning_rate=0.0003 r=16)."""
    def short(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return " ".join(f"{key.rsplit('.', 1)[-1]}={short(value)}" for key, value in params.items())


TRIAL_STYLES = {"complete": "green", "pruned": "yellow", "failed": "red"}


def trials_table(title: str | None = None) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    for name, justify in (("trial", "right"), ("state", "left"), ("validation acc", "right"),
                          ("seconds", "right"), ("params", "left"), ("note", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    return table


def add_trial_row(table: Table, record: Any, best: Any | None) -> None:
    """One trial (a tune.TrialRecord); the best in bold, with a *."""
    style = TRIAL_STYLES.get(record.state, "")
    value = "" if record.value is None else f"{record.value:.4f}"
    seconds = "" if record.seconds is None else f"{record.seconds:.0f}"
    is_best = best is not None and best.number == record.number
    table.add_row(str(record.number), f"[{style}]{record.state}[/]" if style else record.state,
                  f"[bold]{value} *[/]" if is_best else value, seconds, format_trial_params(record.params),
                  record.note or "", style="bold" if is_best else None)


class _TableProgress(Progress):
    """Progress bars under a table that grows as trials finish."""

    def __init__(self, table: Table, *columns: Any, **kwargs: Any) -> None:
        self.table = table
        super().__init__(*columns, **kwargs)

    def get_renderables(self) -> Any:
        yield self.table
        yield self.make_tasks_table(self.tasks)


class TuneProgress:
    """A table of finished trials (state, validation accuracy, values; * marks the best), a bar over
    the study's trials and one over the running trial's steps."""

    def __init__(self, console: Console | None = None) -> None:
        # A log file gets a line per trial and epoch, and a final table wide enough to read.
        wide = err_console if err_console.is_terminal else Console(stderr=True, width=160)
        self.console = console or wide
        self.records: list[Any] = []
        self.progress = _TableProgress(
            trials_table(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.overall = None
        self.current = None

    def start(self, total: int, done: int, earlier: list[Any]) -> None:
        self.records = [r for r in earlier if r.state != "waiting"]  # a resumed study's trials so far
        self._show(None)
        self.progress.start()
        self.overall = self.progress.add_task("[bold]trials[/]", total=total, completed=done)

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self._drop_current()
        self.current = self.progress.add_task(f"trial {number}: {format_trial_params(params)}", total=None)
        if not self.console.is_terminal:
            self.console.print(f"trial {number}: {format_trial_params(params)}", soft_wrap=True,
                               highlight=False, markup=False)

    def step(self, done: int, total: int) -> None:
        if self.current is not None:
            self.progress.update(self.current, completed=done, total=total)

    def evaluated(self, epoch: int, accuracy: float) -> None:
        if not self.console.is_terminal:
            self.console.print(f"  epoch {epoch}: validation accuracy {accuracy:.4f}", highlight=False)

    def trial_finished(self, record: Any, best: Any | None) -> None:
        self._drop_current()
        self.records.append(record)
        self._show(best)
        if not self.console.is_terminal:
            value = "" if record.value is None else f" {record.value:.4f}"
            note = f" ({record.note})" if record.note else ""
            self.console.print(f"trial {record.number}: {record.state}{value}{note}", soft_wrap=True,
                               highlight=False, markup=False)
        if self.overall is not None:
            self.progress.advance(self.overall)

    def _show(self, best: Any | None) -> None:
        """The table rebuilt, so that only the best trial (as it stands now) is marked."""
        if best is None:
            complete = [r for r in self.records if r.state == "complete" and r.value is not None]
            best = max(complete, key=lambda r: (r.value, -r.number)) if complete else None
        table = trials_table()
        for record in self.records:
            add_trial_row(table, record, best)
        self.progress.table = table

    def _drop_current(self) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None

    def close(self) -> None:
        self._drop_current()
        self.progress.stop()
