"""Command line: parse options, call the library, print the result."""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .config import METHODS, PRECISIONS, CliOption, DataConfig, cli_options, load_config, parse_override
from .errors import Interrupted, PeftSentimentError
from .onnx_backend import BACKENDS, FORMATS, QUANTIZATIONS

# bitsandbytes logs at import time that an optional CPU kernel from the Hub is missing: nothing a user
# can act on offline, and it would print on every command.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

# Every recipe key with an option of its own, from the config's one schema (config.cli_options);
# --set KEY=VALUE reaches the rest, and --set trainer.KEY=VALUE any TrainingArguments field.
OPTIONS = cli_options()
# evaluate's options: the data's, but how a long review is truncated is the model's own (in its tokenizer)
DATA_OPTIONS = [o for o in OPTIONS
                if o.key.startswith("data.") and o.key not in ("data.truncation", "data.head_tokens")]
BENCHMARK_OPTIONS = [o for o in OPTIONS if o.key != "train.seed"]  # seeds come from --seeds


def _param_name(option: CliOption) -> str:
    return option.key.replace(".", "__")


def recipe_options(options: list[CliOption]) -> Callable:
    def decorate(func: Callable) -> Callable:
        for o in reversed(options):
            help_text = f"{o.help} ({o.key})"
            if o.kind is bool:
                func = click.option(o.flags, _param_name(o), default=None, help=help_text)(func)
            else:
                kind = click.Choice(o.kind) if isinstance(o.kind, tuple) else o.kind
                func = click.option(o.flags, _param_name(o), type=kind, default=None, help=help_text)(func)
        return func
    return decorate


def collect_overrides(options: list[CliOption], values: dict[str, Any]) -> dict[str, Any]:
    return {o.key: values[_param_name(o)] for o in options if values.get(_param_name(o)) is not None}


def option_overrides(options: list[CliOption], values: dict[str, Any], sets: tuple[str, ...]) -> dict[str, Any]:
    """Dotted recipe keys from the recipe options given, then from each --set KEY=VALUE."""
    overrides = collect_overrides(options, values)
    for item in sets:
        key, value = parse_override(item)
        overrides[key] = value
    return overrides


def handle_errors(func: Callable) -> Callable:
    """Library errors become one `Error: ...` line and exit 1; Ctrl-C exits 130 cleanly.

    Every failure is also written as an `error` event for a benchmark that started this process
    (events.py); an unexpected exception still ends with its traceback.
    """
    from . import events
    from .errors import first_line

    def report(err: BaseException, message: str) -> None:
        events.emit("error", message=message, type=type(err).__name__)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Interrupted as err:
            report(err, f"Interrupted: {first_line(err)}")
            click.echo(f"Interrupted: {err}", err=True)
            sys.exit(128 + err.signum)
        except PeftSentimentError as err:
            report(err, first_line(err))
            raise click.ClickException(str(err)) from None
        except click.ClickException as err:  # a usage error found in the command's body
            report(err, first_line(err))
            raise
        except KeyboardInterrupt as err:
            message = "Interrupted: stopped cleanly, nothing was saved."
            report(err, message)
            click.echo(message, err=True)
            sys.exit(143 if isinstance(err, Terminated) else 130)
        except Exception as err:
            report(err, f"{type(err).__name__}: {first_line(err)}")
            raise
    return wrapper


def _quiet_libraries() -> None:
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    logging.getLogger("peft").setLevel(logging.ERROR)


_INVOCATION: list[str] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so that the same clean-up runs (exit 143)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated




class OneLineErrors(click.Group):
    """Usage errors as one `Error: ...` line on stderr (exit 2), like library errors (exit 1)."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        _INVOCATION[:] = list(args) if args is not None else sys.argv[1:]  # recorded by benchmark
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            self._main(args, prog_name, **extra)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _main(self, args: Any, prog_name: str | None, **extra: Any) -> None:
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as err:
            click.echo(f"Error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="peft-sentiment")
def main() -> None:
    """Fine-tune encoders for binary sentiment (IMDb): full fine-tuning, LoRA, QLoRA, DoRA, (IA)3 or head only."""


@main.command()
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="Training method; without --recipe its own recipe is used. [default: lora]")
@click.option("--recipe", default=None, metavar="NAME|PATH",
              help="Recipe name in recipes/ (full, lora, qlora, dora, ia3, head, seed, smoke) or a YAML path.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Run folder to create. [default: runs/<method>-<timestamp>]")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder (or an unfinished one).")
@click.option("--resume", "resume_run", type=click.Path(path_type=Path), default=None, metavar="RUN",
              help="Continue the unfinished RUN from its last checkpoint, with its own config.")
@recipe_options(OPTIONS)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any recipe key, e.g. --set trainer.max_grad_norm=0.5 (any TrainingArguments "
                   "field) or --set model.architecture='{...}'.")
@handle_errors
def train(method: str | None, recipe: str | None, output: Path | None, overwrite: bool,
          resume_run: Path | None, sets: tuple[str, ...], **options: Any) -> None:
    """Fine-tune a model and write a run folder with its metrics.

    The run trains in OUTPUT.partial/ and appears as OUTPUT/ when it has finished. With --save-steps
    or --save-every-epoch it checkpoints as it goes; SIGINT or SIGTERM (Ctrl-C) saves a checkpoint
    and stops. `--resume OUTPUT` continues from the last checkpoint.
    """
    from rich.console import Console

    from . import events
    from .dist import world
    from .run import run_training
    from .rundir import load_run_config
    from .ui import RichProgress, class_table, err_console, format_params, metrics_table

    overrides: dict[str, Any] = {}
    if method is not None:
        overrides["method"] = method
    elif recipe is None and resume_run is None:
        overrides["method"] = "lora"
    overrides.update(option_overrides(OPTIONS, options, sets))
    if resume_run is not None:
        if overrides or recipe is not None or output is not None:
            raise click.UsageError("--resume continues a run with its own config: pass no other "
                                   "training options")
        cfg = None
    else:
        cfg = load_config(recipe, overrides)
    _quiet_libraries()

    main = world().is_main  # under torchrun, one process reports

    def on_model(built: Any, trainable: int, total: int) -> None:
        what = f"resuming {resume_run}" if resume_run is not None else cfg.method
        size = world().size
        per_process = f" on {size} processes" if size > 1 else ""
        err_console.print(f"[bold]{what}[/]{per_process}: {format_params(trainable, total)}")

    progress = RichProgress()
    try:
        result = run_training(cfg, output=resume_run or output, overwrite=overwrite,
                              callbacks=[progress, *events.callbacks()] if main else [],
                              on_model=on_model if main else None, resume=resume_run is not None)
    finally:
        progress.close()
    if not main:
        return
    cfg = load_run_config(result.output)
    s = result.summary
    extra = {}
    if s.get("validation"):
        v = s["validation"]
        kept = f", epoch of step {s['best_step']}" if s.get("best_step") is not None else ""
        extra["validation acc / f1"] = f"{v['accuracy']:.4f} / {v['f1']:.4f} ({v['n']} reviews{kept})"
    extra |= {
        "train seconds": f"{s['train_seconds']:.1f}",
        "train samples/s": f"{s['train_samples_per_second']:.2f}",
        "peak memory (MiB)": f"{s['peak_memory_mib']:.0f} ({s['peak_memory_kind']})",
        "trainable params": f"{result.trainable_params:,} ({100 * s['trainable_share']:.2f}%)",
    }
    if s["world_size"] > 1:
        extra["processes"] = f"{s['world_size']} (global batch {s['global_batch_size']})"
    console = Console()
    console.print(metrics_table(f"{cfg.method} — {result.output}", result.metrics, extra))
    if result.metrics.labels is not None and len(result.metrics.labels) > 2:
        console.print(class_table(result.metrics))


@main.command()
@click.argument("source")
@recipe_options(DATA_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@click.option("--save-predictions", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Also write the metrics and every review's label and prediction to a new JSON file.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Also draw the confusion matrix, with the class names, to a new PNG file.")
@handle_errors
def evaluate(source: str, as_json: bool, save_predictions: Path | None, plot: Path | None,
             **options: Any) -> None:
    """Re-evaluate a run (or model folder, or ONNX export) on its own test subset or on --data.

    Prints the metrics and, per class, precision, recall, F1, support and the confusion matrix."""
    from rich.console import Console

    from .config import build, config_to_dict
    from .onnx_backend import export_data_config, is_export
    from .run import evaluate_run
    from .rundir import check_new_file, is_run, load_run_config, write_json_atomic
    from .ui import class_table, metrics_table

    overrides = collect_overrides(DATA_OPTIONS, options)
    data = None
    if overrides:
        path = Path(source)
        base = (load_run_config(path).data if is_run(path)
                else export_data_config(path) if is_export(path) else DataConfig())
        fields = config_to_dict(base)
        for key, value in overrides.items():
            fields[key.split(".", 1)[1]] = value
        data = build(DataConfig, fields, "data.")
    for path in (save_predictions, plot):
        if path is not None:
            check_new_file(path)
    _quiet_libraries()
    result = evaluate_run(source, data)
    if save_predictions is not None:
        write_json_atomic(result.to_dict(per_review=True), save_predictions)
    if plot is not None:
        from .plots import confusion_matrix_png

        m = result.metrics
        confusion_matrix_png(m.confusion_matrix, m.labels or [], plot,
                             f"{source}\n{m.n} reviews of {result.data.source}, accuracy {m.accuracy:.4f}")
    if as_json:
        click.echo(json.dumps(result.to_dict(per_review=False)))
        return
    console = Console()
    console.print(metrics_table(f"evaluate — {source}", result.metrics,
                                {"eval seconds": f"{result.eval_seconds:.1f}"}))
    console.print(class_table(result.metrics))
    if plot is not None:
        console.print(f"confusion matrix: {plot}")


@main.command()
@click.argument("source")
@click.argument("texts", nargs=-1)
@click.option("--file", "file", type=click.File("rb"), default=None,
              help="Read texts from a file, one per line ('-' for standard input), --chunk-size lines at a "
                   "time. Empty and whitespace-only lines are skipped.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: text, label, score, and for --file or standard input the "
                   "input's 1-based line number as line (skipped lines get no object).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Write the results to a new FILE instead of standard output: all of them or, on failure, none.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
@click.option("--errors", type=click.Choice(["strict", "replace"]), default="strict", show_default=True,
              help="Input that is not UTF-8: stop with an error naming the line, or replace the bad bytes.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Texts per forward pass (texts are sorted by length within each chunk).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Weights and compute precision; auto picks bf16 where it is faster on this machine.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Input lines read and predicted before their results are written; memory grows with it.")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Run the model with torch, or an ONNX export (peft-sentiment export) with onnxruntime "
                   "(onnx) or OpenVINO (openvino, bf16 where the CPU has it). "
                   "[default: onnx for an export folder, torch otherwise]")
@handle_errors
def predict(source: str, texts: tuple[str, ...], file: Any, as_json: bool, output: Path | None,
            overwrite: bool, errors: str, batch_size: int, precision: str, chunk_size: int,
            backend: str | None) -> None:
    """Label TEXTS (or --file, or standard input) with the model's classes (NEGATIVE or POSITIVE for binary runs).

    SOURCE is a run folder, a model or adapter folder, an ONNX export folder, or a Hub id. Input
    lines are read, predicted and written a chunk at a time, in input order. Texts longer than the
    model's maximum length are truncated (one note on standard error says so).
    """
    import itertools
    import os
    from contextlib import nullcontext

    from .predict import (
        atomic_output,
        check_output_file,
        format_prediction,
        load_pipeline,
        peek_text,
        predict_stream,
        read_lines,
        truncation_note,
    )
    from .predict import predict as run_predict

    if output is not None:
        check_output_file(output, overwrite)
    named_file = file is not None
    if file is None and not texts and not sys.stdin.isatty():
        file = click.get_binary_stream("stdin")
    name = getattr(file, "name", "<stdin>")
    name = "standard input" if name in ("<stdin>", "-") else str(name)
    has_lines, lines = peek_text(read_lines(file, name, errors) if file is not None else ())
    if not texts and not has_lines:
        if named_file:
            raise click.UsageError(f"no text in {name}: every line is empty")
        raise click.UsageError("no text given: pass TEXT arguments, --file, or standard input")
    _quiet_libraries()
    pipe = load_pipeline(source, precision=precision, backend=backend)
    predictions = itertools.chain(run_predict(pipe, texts, batch_size) if texts else [],
                                  predict_stream(pipe, lines, batch_size, chunk_size))
    count, noted = 0, False
    try:
        with atomic_output(output) if output is not None else nullcontext(None) as out:
            for p in predictions:
                if p.truncated and not noted:
                    click.echo(truncation_note(pipe, p), err=True)
                    noted = True
                click.echo(format_prediction(p, as_json), file=out)
                count += 1
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    if output is not None:
        click.echo(f"{count} predictions written to {output}")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Folder for the merged model. [default: RUN/merged]")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@handle_errors
def merge(run: Path, output: Path | None, overwrite: bool) -> None:
    """Merge an adapter run (lora, dora, ia3, qlora) into its base: a standalone model that loads without peft.

    The merged model's logits are checked against base + adapter before it is kept.
    """
    from .merge import merge_run

    _quiet_libraries()
    result = merge_run(run, output=output, overwrite=overwrite)
    click.echo(f"merged model: {result.output}")
    click.echo(f"logit check: max |merged - (base + adapter)| = {result.max_abs_diff:.2g} on "
               f"{result.n_texts} texts ({result.texts_from}); tolerance {result.tolerance:g}")
    if result.max_abs_diff_vs_4bit is not None:
        click.echo(f"against the 4-bit model as trained: max |logit diff| = {result.max_abs_diff_vs_4bit:.2g}")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "format_", type=click.Choice(FORMATS), default="onnx", show_default=True,
              help="Export format.")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default="none", show_default=True,
              help="int8: onnxruntime dynamic quantization of the linear layers, per channel. int8-static: "
                   "NNCF static int8 of the feed-forward layers, calibrated on training texts (the fastest "
                   "with --backend openvino; needs nncf). Both keep in fp32 the fewest layers that bring "
                   "label agreement to 99.5% on reviews the run never trained on (its validation reviews).")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Export folder to create.")
@click.option("--check-data", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Verify on the test split of this data folder instead of the run's test subset.")
@click.option("--force", is_flag=True,
              help="Keep an export whose labels agree with the PyTorch model's on less than 99.5% of the "
                   "check texts.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@handle_errors
def export(run: Path, format_: str, quantize: str, output: Path, check_data: Path | None, force: bool,
           overwrite: bool) -> None:
    """Export a finished run to ONNX, verified against the PyTorch model.

    An adapter run is merged first. The folder holds model.onnx, the tokenizer, config.json,
    export.json (what was exported) and export_check.json (the verification on the run's test texts);
    `peft-sentiment predict DIR` and `evaluate DIR` run it with onnxruntime.
    """
    from rich.console import Console
    from rich.table import Table

    from .export import export_run
    from .ui import err_console

    _quiet_libraries()
    with err_console.status("exporting") as status:
        result = export_run(run, output, format=format_, quantize=quantize, check_data=check_data,
                            force=force, overwrite=overwrite, on_stage=lambda message: status.update(message))
    table = Table(title=f"export — {result.output}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("model", f"{result.format}, {result.quantization if result.quantization != 'none' else 'fp32'} "
                           f"({result.model_bytes / 2**20:.1f} MiB)")
    table.add_row("label agreement",
                  f"{result.agreement:.2%} of {result.n_texts} texts ({result.texts_from})")
    table.add_row("max |logit diff|", f"{result.max_abs_logit_diff:.2g} from the PyTorch model")
    if result.merge_max_abs_diff is not None:
        table.add_row("merge check",
                      f"max |logit diff| {result.merge_max_abs_diff:.2g} (adapter merged first)")
    if result.quantization != "none":
        n = len(result.int8_layers) + len(result.fp32_layers)
        kept = f"; kept fp32: {', '.join(result.fp32_layers)}" if result.fp32_layers else ""
        if result.quantization == "int8-static":
            kept = " (feed-forward only: attention, and any feed-forward layer the search kept, stays fp32)"
        table.add_row("int8 layers", f"{len(result.int8_layers)} of {n} linear layers{kept}")
        table.add_row("layers chosen on", f"{result.chosen_on}: {result.selection_agreement:.2%} agreement")
    Console().print(table)
    if not result.passed:
        err_console.print(f"[bold]kept with --force[/]: below the bar (see "
                          f"{result.output / 'export_check.json'})")


@main.command()
@click.argument("run", type=click.Path(path_type=Path), metavar="RUN|EXPORT")
@click.option("--repo-id", required=True, metavar="NAME/REPO", help="Hub repo to push to (created if missing).")
@click.option("--merged", is_flag=True, help="Push the standalone model (a LoRA run is merged first).")
@click.option("--adapter-only", is_flag=True, help="Push the adapter, its head and the tokenizer.")
@click.option("--format", "format_", type=click.Choice(["safetensors", "onnx"]), default="safetensors",
              show_default=True,
              help="safetensors: the run's weights, with --merged or --adapter-only. onnx: push EXPORT, a "
                   "folder made by `peft-sentiment export RUN --format onnx -o DIR`, as it is, with a card "
                   "that says how to load it and carries its check.")
@click.option("--base-model-id", default=None, metavar="HUB_ID",
              help="Hub id of the base weights, for a run trained from a local folder.")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--revision", default=None, metavar="BRANCH", help="Branch to push to. [default: main]")
@click.option("--create-branch", is_flag=True, help="Create --revision if it does not exist.")
@click.option("--commit-message", default=None, metavar="MSG", help="Commit message.")
@click.option("--license", "license_", default="apache-2.0", show_default=True,
              help="License id for the model card.")
@click.option("--benchmark", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Benchmark JSON (benchmark.json, results.json) whose line for this method goes in the card.")
@click.option("--dry-run", is_flag=True,
              help="Build and keep the folder that would be uploaded, list it, and upload nothing.")
@click.option("--staging-dir", type=click.Path(path_type=Path), default=None,
              help="Where --dry-run builds the folder. [default: RUN/push-dry-run-merged or -adapter, "
                   "EXPORT/push-dry-run-onnx]")
@click.option("--overwrite", is_flag=True,
              help="Replace the files a repo (or an earlier dry-run folder) already holds.")
@handle_errors
def push(run: Path, repo_id: str, merged: bool, adapter_only: bool, format_: str, base_model_id: str | None,
         private: bool, revision: str | None, create_branch: bool, commit_message: str | None,
         license_: str, benchmark: Path | None, dry_run: bool, staging_dir: Path | None,
         overwrite: bool) -> None:
    """Push a run (or, with --format onnx, an ONNX export) to the Hugging Face Hub with a generated
    model card, in one commit.

    The token comes from HF_TOKEN or `hf auth login`.
    """
    from rich.console import Console
    from rich.table import Table

    from .hub import push_run

    if format_ == "onnx" and (merged or adapter_only):
        raise click.UsageError("--format onnx pushes an export folder as it is: leave out --merged and "
                               "--adapter-only")
    if format_ != "onnx" and merged == adapter_only:
        raise click.UsageError("pass exactly one of --merged and --adapter-only")
    kind = "onnx" if format_ == "onnx" else "merged" if merged else "adapter"
    _quiet_libraries()
    result = push_run(run, repo_id, kind, private=private, revision=revision,
                      create_branch=create_branch, commit_message=commit_message, dry_run=dry_run,
                      overwrite=overwrite, base_model_id=base_model_id, license=license_,
                      benchmark=benchmark, staging_dir=staging_dir)
    where = f"{result.repo_id}@{result.revision}" if result.revision else result.repo_id
    if result.folder is not None:
        click.echo(f"dry run: nothing uploaded; {len(result.files)} files for {where} in {result.folder}")
    else:
        click.echo(f"pushed {len(result.files)} files to {where}: {result.commit_url}")
    if result.merge is not None:
        click.echo(f"logit check: max |merged - (base + adapter)| = {result.merge.max_abs_diff:.2g} on "
                   f"{result.merge.n_texts} texts; tolerance {result.merge.tolerance:g}")
    if result.check is not None:
        check = result.check
        click.echo(f"export check: max |logit diff| from PyTorch = {check['max_abs_logit_diff']:.2g}; labels "
                   f"agree on {check['agreement']:.2%} of {check['n_texts']} texts"
                   + ("" if check.get("passed") else " (below the bar: kept with --force)"))
    table = Table(show_header=True, header_style="bold")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for f in result.files:
        table.add_row(f.name, f"{f.size:,}")
    table.add_row("[bold]total[/]", f"[bold]{sum(f.size for f in result.files):,}[/]")
    Console().print(table)


def _processes(launcher: str, nproc_per_node: int | None) -> int:
    if launcher == "python":
        if nproc_per_node not in (None, 1):
            raise click.UsageError("--nproc-per-node needs --launcher torchrun")
        return 1
    return nproc_per_node or 2


def _wide_console() -> Any:
    """A terminal's own width; a file or pipe gets wide lines rather than wrapped table cells."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=180)


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None


@main.command()
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Benchmark folder. [default: runs/benchmark-<timestamp>]")
@click.option("--methods", default="full,lora", show_default=True, metavar="NAME,...",
              help="Methods to compare: recipe names in recipes/ or recipe YAML paths.")
@click.option("--recipe", default=None, metavar="NAME|PATH",
              help="Base recipe whose data and model sections every method uses (e.g. smoke: offline); each "
                   "method's own recipe gives the rest.")
@click.option("--seeds", default="42", show_default=True, metavar="N,...", help="Training seeds per method.")
@recipe_options(BENCHMARK_OPTIONS)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe key for every method.")
@click.option("--eval-test-size", "eval_sizes", type=click.IntRange(min=1), multiple=True, metavar="N",
              help="Also evaluate every trained run on N test reviews (repeatable), e.g. 2000.")
@click.option("--baseline", default=None,
              help="Method every other one is compared with on the same reviews. [default: full when it "
                   "is among --methods, else the first method]")
@click.option("--resamples", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples for the intervals.")
@click.option("--launcher", type=click.Choice(["python", "torchrun"]), default="python", show_default=True,
              help="How each training run starts: one process, or data-parallel through torchrun.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=None,
              help="Processes per training run with --launcher torchrun. [default: 2]")
@click.option("--resume", is_flag=True, help="Continue a benchmark folder: finished runs are kept.")
@click.option("--overwrite", is_flag=True, help="Replace an existing benchmark folder.")
@click.option("--report", "report_from", type=click.Path(path_type=Path), default=None, metavar="DIR|FILE",
              help="Re-render the tables and plot of a finished benchmark (its folder or results.json); runs nothing.")
@handle_errors
def benchmark(output: Path | None, methods: str, recipe: str | None, seeds: str, sets: tuple[str, ...],
              eval_sizes: tuple[int, ...], baseline: str, resamples: int, launcher: str,
              nproc_per_node: int | None, resume: bool, overwrite: bool, report_from: Path | None,
              **options: Any) -> None:
    """Train every method with every seed, each in its own process, and compare them.

    Writes results.json (every run, per-review predictions, environment), results.md and plot.png:
    accuracy and F1 with bootstrap intervals, the paired difference to --baseline with McNemar's
    test, peak memory, time, trainable parameters and upload size.
    """
    from datetime import datetime

    from .benchmark import RESULTS_FILE, BenchmarkSpec, default_baseline, load_results, run_benchmark
    from .report import rich_tables, write_report
    from .ui import BenchmarkProgress

    if report_from is not None:
        results = load_results(report_from)
        folder = report_from if report_from.is_dir() else report_from.parent
        summary = write_report(results, folder)
        for table in rich_tables(results, summary):
            _wide_console().print(table)
        click.echo(f"report: {folder / 'results.md'}, {folder / 'plot.png'}")
        return
    overrides = option_overrides(BENCHMARK_OPTIONS, options, sets)
    names = tuple(m.strip() for m in methods.split(",") if m.strip())
    spec = BenchmarkSpec(methods=names,
                         seeds=_int_list(seeds, "--seeds"), overrides=overrides,
                         eval_test_sizes=tuple(sorted(set(eval_sizes))),
                         baseline=baseline or default_baseline(names),
                         resamples=resamples, nproc_per_node=_processes(launcher, nproc_per_node),
                         recipe=recipe)
    output = output or Path("runs") / f"benchmark-{datetime.now():%Y%m%d-%H%M%S}"
    _quiet_libraries()
    outcome = run_benchmark(spec, output, resume=resume, overwrite=overwrite, reporter=BenchmarkProgress(),
                            command=["peft-sentiment", *map(str, _INVOCATION)])
    summary = write_report(outcome.results, output)
    for table in rich_tables(outcome.results, summary):
        _wide_console().print(table)
    click.echo(f"results: {output / RESULTS_FILE}, {output / 'results.md'}, {output / 'plot.png'}")
    if outcome.failed:
        raise click.ClickException(f"{len(outcome.failed)} of {len(outcome.results['runs'])} runs did not "
                                   f"finish: {', '.join(outcome.failed)} (errors in results.md and logs/)")


@main.command()
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="Method to tune: without --recipe its own recipe and search space. [default: lora]")
@click.option("--recipe", default=None, metavar="NAME|PATH",
              help="Recipe whose tune: section is the search space: a name in recipes/ or a YAML path.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Study folder. [default: runs/tune-<recipe>-<timestamp>]")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Finished trials (complete, pruned or failed) the study holds at the end, with --resume "
                   "those of earlier runs included.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Start no trial after SECONDS; the one running finishes.")
@click.option("--seed", "sampler_seed", type=int, default=42, show_default=True,
              help="Seed of the TPE sampler (each trial trains with the recipe's train.seed).")
@click.option("--enqueue", multiple=True, metavar="KEY=VALUE,...",
              help="Run this point of the search space before sampled ones (repeatable), e.g. the recipe's "
                   "own values; keys left out are sampled.")
@click.option("--resume", is_flag=True,
              help="Continue the study in the output folder: finished trials are kept, and a trial left "
                   "running by a killed tune runs again.")
@click.option("--overwrite", is_flag=True, help="Replace an existing tune folder.")
@recipe_options(BENCHMARK_OPTIONS)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key for every trial (e.g. --train-size 1000 for a cheaper search).")
@handle_errors
def tune(method: str | None, recipe: str | None, output: Path | None, trials: int, timeout: float | None,
         sampler_seed: int, enqueue: tuple[str, ...], resume: bool, overwrite: bool, sets: tuple[str, ...],
         **options: Any) -> None:
    """Search a recipe's tune: space with Optuna, each trial trained in its own process.

    Trials are sampled by TPE and judged on validation accuracy, never on the test subset; after each
    epoch a trial below the median of the completed ones is stopped (pruned). Writes OUTPUT/best.yaml
    (a recipe for train and benchmark), trials.csv, study.json, history.png, and study.db for --resume.
    """
    from datetime import datetime

    from .tune import TuneSpec, run_tune
    from .ui import TuneProgress, format_trial_params

    overrides: dict[str, Any] = {}
    if method is not None:
        overrides["method"] = method
    elif recipe is None:
        overrides["method"] = "lora"
    overrides.update(option_overrides(BENCHMARK_OPTIONS, options, sets))
    points = tuple(dict(parse_override(item) for item in text.split(",") if item.strip()) for text in enqueue)
    spec = TuneSpec(recipe=recipe, overrides=overrides, trials=trials, timeout=timeout, seed=sampler_seed,
                    enqueue=points)
    label = Path(recipe).stem if recipe is not None else overrides["method"]
    output = output or Path("runs") / f"tune-{label}-{datetime.now():%Y%m%d-%H%M%S}"
    _quiet_libraries()
    logging.getLogger("optuna").setLevel(logging.WARNING)  # the table shows each trial
    result = run_tune(spec, output, resume=resume, overwrite=overwrite, reporter=TuneProgress(),
                      command=["peft-sentiment", *map(str, _INVOCATION)])
    best, files = result.best, result.files
    if result.stopped == "timeout":
        click.echo(f"--timeout: stopped after {result.ran} trials of this run")
    click.echo(f"best: trial {best.number}, validation accuracy {best.value:.4f} "
               f"({format_trial_params(best.params)})")
    click.echo(f"recipe: {files['best']} (peft-sentiment train --recipe {files['best']})")
    click.echo(f"trials: {files['trials']}, {files['json']}, {files['history']}; study: {files['study']}")


@main.command()
@click.argument("source")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface of this machine).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Run the model with torch, or an ONNX export (peft-sentiment export) with onnxruntime "
                   "(onnx) or OpenVINO (openvino, bf16 where the CPU has it). "
                   "[default: onnx for an export folder, torch otherwise]")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Weights and compute precision, as for predict; auto picks bf16 where it is faster here.")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Texts per forward pass, gathered from concurrent requests.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="How long a batch waits for more texts after its first arrived (milliseconds).")
@click.option("--max-texts", type=click.IntRange(min=1), default=256, show_default=True,
              help="Texts per request; a request with more is refused (413).")
@click.option("--max-text-bytes", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="UTF-8 bytes per text; a request with a longer text is refused (413).")
@handle_errors
def serve(source: str, host: str, port: int, backend: str | None, precision: str, max_batch: int,
          max_wait_ms: float, max_texts: int, max_text_bytes: int) -> None:
    """Serve predictions over HTTP: POST /predict {"texts": [...]}, GET /health, GET /info.

    SOURCE is a run folder, a model or adapter folder, an ONNX export folder or a Hub id. The model
    loads before the server listens; texts of concurrent requests are batched into one forward pass.
    Ctrl-C or SIGTERM stops it after the requests in flight.
    """
    from .serve import ServeConfig
    from .serve import serve as run_server

    config = ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_texts=max_texts,
                         max_text_bytes=max_text_bytes)
    _quiet_libraries()
    run_server(source, host=host, port=port, backend=backend, precision=precision, config=config,
               on_ready=lambda url: click.echo(f"serving {source} on {url} (Ctrl-C to stop)", err=True))


if __name__ == "__main__":
    main()
