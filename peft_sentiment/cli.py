"""Command line: parse options, call the library, print the result."""

from __future__ import annotations

import functools
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import click

from .config import METHODS, PRECISIONS, SCHEDULERS, DataConfig, load_config, parse_override
from .errors import PeftSentimentError

# (flag, dotted recipe key, click type, help). Each recipe key has an option; --set covers the rest.
TRAIN_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--data", "data.source", str, "Hub dataset id or local folder (train/test files or aclImdb)."),
    ("--text-column", "data.text_column", str, "Column holding the review text."),
    ("--label-column", "data.label_column", str, "Column holding the label (0/1, neg/pos, negative/positive)."),
    ("--train-split", "data.train_split", str, "Name of the training split (file stem in a local folder)."),
    ("--test-split", "data.test_split", str, "Name of the test split."),
    ("--train-size", "data.train_size", int, "Training reviews: shuffle(seed).select(range(n)). [recipe: 3000]"),
    ("--test-size", "data.test_size", int, "Test reviews, taken the same way. [recipe: 300]"),
    ("--shuffle-seed", "data.shuffle_seed", int, "Seed of the subset shuffle (not the training seed). [42]"),
    ("--max-length", "data.max_length", int, "Maximum tokens per review; longer ones are truncated."),
    ("--model", "model.name", str, "Hub id or local folder of the base model."),
    ("--random-init/--pretrained", "model.random_init", None, "Random weights in the model's architecture (speed runs)."),
    ("--tokenizer", "model.tokenizer", str, "Tokenizer Hub id or folder (default: the model's)."),
    ("--tokenizer-vocab-size", "model.tokenizer_vocab_size", int, "Train a WordPiece tokenizer of this size on the train texts."),
    ("--lora-r", "lora.r", int, "LoRA rank."),
    ("--lora-alpha", "lora.alpha", int, "LoRA scaling alpha (the update is scaled by alpha / r)."),
    ("--lora-dropout", "lora.dropout", float, "Dropout on the LoRA input."),
    ("--target-modules", "lora.target_modules", str, "Comma-separated module names for LoRA (default: per architecture)."),
    ("--lr", "train.lr", float, "Peak learning rate."),
    ("--batch-size", "train.batch_size", int, "Training batch size per device."),
    ("--eval-batch-size", "train.eval_batch_size", int, "Evaluation batch size per device."),
    ("--epochs", "train.epochs", float, "Training epochs."),
    ("--weight-decay", "train.weight_decay", float, "AdamW weight decay."),
    ("--warmup-ratio", "train.warmup_ratio", float, "Share of steps spent warming up the learning rate."),
    ("--scheduler", "train.scheduler", click.Choice(SCHEDULERS), "Learning-rate schedule."),
    ("--seed", "train.seed", int, "Training seed: initialization, dropout, batch order."),
    ("--precision", "train.precision", click.Choice(PRECISIONS),
     "Compute precision; auto picks bf16 where the hardware runs it natively."),
    ("--group-by-length/--no-group-by-length", "train.group_by_length", None, "Batch reviews of similar length together."),
    ("--logging-steps", "train.logging_steps", int, "Log the training loss every N steps."),
]

DATA_OPTIONS = [o for o in TRAIN_OPTIONS if o[1].startswith("data.")]


def _param_name(flag: str) -> str:
    return flag.split("/")[0].lstrip("-").replace("-", "_")


def recipe_options(options: list[tuple[str, str, Any, str]]) -> Callable:
    def decorate(func: Callable) -> Callable:
        for flag, key, kind, help_text in reversed(options):
            if kind is None:
                func = click.option(flag, _param_name(flag), default=None, help=help_text)(func)
            else:
                func = click.option(flag, _param_name(flag), type=kind, default=None,
                                    help=f"{help_text} ({key})")(func)
        return func
    return decorate


def collect_overrides(options: list[tuple[str, str, Any, str]], values: dict[str, Any]) -> dict[str, Any]:
    return {key: values[_param_name(flag)] for flag, key, _, _ in options
            if values.get(_param_name(flag)) is not None}


def handle_errors(func: Callable) -> Callable:
    """Library errors become one `Error: ...` line and exit 1; Ctrl-C exits 130 cleanly."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PeftSentimentError as err:
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted: stopped cleanly, nothing was saved.", err=True)
            sys.exit(130)
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


class OneLineErrors(click.Group):
    """Usage errors as one `Error: ...` line on stderr (exit 2), like library errors (exit 1)."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
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
    """Fine-tune encoders for binary sentiment (IMDb) with full fine-tuning or LoRA."""


@main.command()
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="Training method; without --recipe its own recipe is used. [default: lora]")
@click.option("--recipe", default=None, metavar="NAME|PATH",
              help="Recipe name in recipes/ (full, lora, smoke) or a YAML path.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Run folder to create. [default: runs/<method>-<timestamp>]")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@recipe_options(TRAIN_OPTIONS)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any recipe key, e.g. --set train.lr=1.0e-4 or model.architecture='{...}'.")
@handle_errors
def train(method: str | None, recipe: str | None, output: Path | None, overwrite: bool,
          sets: tuple[str, ...], **options: Any) -> None:
    """Fine-tune a model and write a run folder with its metrics."""
    from rich.console import Console

    from .run import run_training
    from .ui import RichProgress, err_console, format_params, metrics_table

    overrides: dict[str, Any] = {}
    if method is not None:
        overrides["method"] = method
    elif recipe is None:
        overrides["method"] = "lora"
    overrides.update(collect_overrides(TRAIN_OPTIONS, options))
    if isinstance(overrides.get("lora.target_modules"), str):
        overrides["lora.target_modules"] = [m.strip() for m in overrides["lora.target_modules"].split(",")
                                            if m.strip()]
    for item in sets:
        key, value = parse_override(item)
        overrides[key] = value
    cfg = load_config(recipe, overrides)
    _quiet_libraries()

    def on_model(built: Any, trainable: int, total: int) -> None:
        err_console.print(f"[bold]{cfg.method}[/] on {cfg.model.name}: {format_params(trainable, total)}")

    progress = RichProgress()
    try:
        result = run_training(cfg, output=output, overwrite=overwrite, callbacks=[progress],
                              on_model=on_model)
    finally:
        progress.close()
    s = result.summary
    extra = {
        "train seconds": f"{s['train_seconds']:.1f}",
        "train samples/s": f"{s['train_samples_per_second']:.2f}",
        "peak memory (MiB)": f"{s['peak_memory_mib']:.0f} ({s['peak_memory_kind']})",
        "trainable params": f"{result.trainable_params:,} ({100 * s['trainable_share']:.2f}%)",
    }
    Console().print(metrics_table(f"{cfg.method} — {result.output}", result.metrics, extra))


@main.command()
@click.argument("source")
@recipe_options(DATA_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@handle_errors
def evaluate(source: str, as_json: bool, **options: Any) -> None:
    """Re-evaluate a run (or model folder) on its own test subset or on --data."""
    import dataclasses

    from rich.console import Console

    from .artifacts import is_run, load_run_config
    from .config import build, config_to_dict
    from .run import evaluate_run
    from .ui import metrics_table

    overrides = collect_overrides(DATA_OPTIONS, options)
    data = None
    if overrides:
        path = Path(source)
        base = load_run_config(path).data if is_run(path) else DataConfig()
        fields = config_to_dict(base)
        for key, value in overrides.items():
            fields[key.split(".", 1)[1]] = value
        data = build(DataConfig, fields, "data.")
    _quiet_libraries()
    result = evaluate_run(source, data)
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(result.metrics), "source": result.source,
                               "eval_seconds": round(result.eval_seconds, 2)}))
        return
    Console().print(metrics_table(f"evaluate — {source}", result.metrics,
                                  {"eval seconds": f"{result.eval_seconds:.1f}"}))


@main.command()
@click.argument("source")
@click.argument("texts", nargs=-1)
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), default=None,
              help="Read texts from a file, one per line ('-' for standard input).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: text, label, score.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Texts per forward pass.")
@handle_errors
def predict(source: str, texts: tuple[str, ...], file: Any, as_json: bool, batch_size: int) -> None:
    """Label TEXTS (or --file, or standard input) as NEGATIVE or POSITIVE.

    SOURCE is a run folder, a model or adapter folder, or a Hub id.
    """
    from .predict import load_pipeline
    from .predict import predict as run_predict

    items = list(texts)
    if file is not None:
        items += [line.rstrip("\n") for line in file if line.strip()]
    elif not items and not sys.stdin.isatty():
        items = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not items:
        raise click.UsageError("no text given: pass TEXT arguments, --file, or standard input")
    _quiet_libraries()
    pipe = load_pipeline(source)
    for p in run_predict(pipe, items, batch_size=batch_size):
        if as_json:
            click.echo(json.dumps({"text": p.text, "label": p.label, "score": round(p.score, 6)}))
        else:
            click.echo(f"{p.label}\t{p.score:.4f}\t{p.text}")



@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Folder for the merged model. [default: RUN/merged]")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@handle_errors
def merge(run: Path, output: Path | None, overwrite: bool) -> None:
    """Merge a LoRA run's adapter into its base: a standalone model that loads without peft.

    The merged model's logits are checked against base + adapter before it is kept.
    """
    from .merge import merge_run

    _quiet_libraries()
    result = merge_run(run, output=output, overwrite=overwrite)
    click.echo(f"merged model: {result.output}")
    click.echo(f"logit check: max |merged - (base + adapter)| = {result.max_abs_diff:.2g} on "
               f"{result.n_texts} texts ({result.texts_from}); tolerance {result.tolerance:g}")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--repo-id", required=True, metavar="NAME/REPO", help="Hub repo to push to (created if missing).")
@click.option("--merged", is_flag=True, help="Push the standalone model (a LoRA run is merged first).")
@click.option("--adapter-only", is_flag=True, help="Push the adapter, its head and the tokenizer.")
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
              help="Where --dry-run builds the folder. [default: RUN/push-dry-run-merged or -adapter]")
@click.option("--overwrite", is_flag=True,
              help="Replace the files a repo (or an earlier dry-run folder) already holds.")
@handle_errors
def push(run: Path, repo_id: str, merged: bool, adapter_only: bool, base_model_id: str | None,
         private: bool, revision: str | None, create_branch: bool, commit_message: str | None,
         license_: str, benchmark: Path | None, dry_run: bool, staging_dir: Path | None,
         overwrite: bool) -> None:
    """Push a run to the Hugging Face Hub with a generated model card, in one commit.

    The token comes from HF_TOKEN or `hf auth login`.
    """
    from rich.console import Console
    from rich.table import Table

    from .hub import push_run

    if merged == adapter_only:
        raise click.UsageError("pass exactly one of --merged and --adapter-only")
    _quiet_libraries()
    result = push_run(run, repo_id, "merged" if merged else "adapter", private=private, revision=revision,
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
    table = Table(show_header=True, header_style="bold")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for f in result.files:
        table.add_row(f.name, f"{f.size:,}")
    table.add_row("[bold]total[/]", f"[bold]{sum(f.size for f in result.files):,}[/]")
    Console().print(table)


if __name__ == "__main__":
    main()
