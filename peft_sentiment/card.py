"""Model cards for published runs and ONNX exports: Hub metadata (YAML front matter) and a readable account."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import EvalResult, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .config import LORA_METHODS, METHOD_NAMES, RunConfig, expand_path, path_exists
from .errors import ConfigError
from .first_token import DESCRIPTION as FIRST_TOKEN_ONLY
from .labels import LabelSet, labels_of_folder
from .loading import weights_dir
from .merge import MergeResult
from .onnx_backend import CHECK_FILE, METADATA_FILE, MODEL_FILE
from .rundir import ADAPTER_DIR, load_metrics, load_run_config

Kind = Literal["merged", "adapter", "onnx"]

IMDB_ID = "stanfordnlp/imdb"
# Short legacy ids still redirect on the Hub, but metadata and adapter configs should name the
# canonical repo (pitfalls.md section 4).
CANONICAL_IDS = {
    "distilbert-base-uncased": "distilbert/distilbert-base-uncased",
    "bert-base-uncased": "google-bert/bert-base-uncased",
    "roberta-base": "FacebookAI/roberta-base",
}
# Benchmark columns shown when present, in this order: (key, header).
BENCHMARK_COLUMNS = (
    ("model", "model"), ("n_test", "test reviews"), ("accuracy", "accuracy"),
    ("accuracy_ci95", "accuracy 95% interval"), ("f1", "F1"), ("train_seconds", "train s"),
    ("peak_memory_mib", "peak memory MiB"), ("trainable_params", "trainable params"), ("device", "device"),
)


def hub_id(name: str) -> str | None:
    """`name` as a canonical Hub id, or None for a local path or a `builtin:` data set."""
    if not name or name.startswith(("builtin:", ".", "/", "~")) or path_exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return CANONICAL_IDS.get(name, name)


def build_card(
    run_dir: Path,
    kind: Kind,
    repo_id: str,
    base_model_id: str | None,
    license: str = "apache-2.0",
    benchmark: Path | None = None,
    merge: MergeResult | None = None,
) -> str:
    """README.md for the pushed folder; `base_model_id` is None when the base is no Hub model."""
    cfg = load_run_config(run_dir)
    metrics = load_metrics(run_dir)
    labels = run_classes(run_dir, metrics)
    bench_rows = benchmark_rows(benchmark, cfg.method) if benchmark is not None else []
    data = _card_data(cfg, metrics, kind, repo_id, base_model_id, license, labels)
    parts = [
        f"---\n{data.to_yaml()}\n---\n",
        f"# {repo_id.split('/')[-1]}\n",
        _summary(cfg, metrics, kind, base_model_id, labels),
        _results(cfg, metrics, labels),
        _benchmark(bench_rows, benchmark, cfg.method) if bench_rows else "",
        _training(cfg, metrics, run_dir, merge),
        _usage(cfg, kind, repo_id, base_model_id, labels),
        _limitations(cfg, metrics, base_model_id),
    ]
    return "\n".join(p for p in parts if p)


def run_classes(run_dir: Path, metrics: dict[str, Any]) -> LabelSet:
    """The run's classes: the labels.json beside its weights; for a run saved before labels.json
    existed, the names its metrics.json lists, else the seed protocol's NEGATIVE/POSITIVE."""
    names = metrics.get("labels")
    return labels_of_folder(weights_dir(run_dir), dict(enumerate(names)) if names else None)


def _card_data(cfg: RunConfig, metrics: dict[str, Any], kind: Kind, repo_id: str,
               base_model_id: str | None, license: str, labels: LabelSet) -> ModelCardData:
    dataset_id = hub_id(cfg.data.source)
    results = eval_results(cfg.data.source, cfg.data.test_split, metrics, labels)
    tags = ["sentiment-analysis", "text-classification", "peft-sentiment"]
    if cfg.saves_adapter:
        tags += ["peft", cfg.method] if kind == "adapter" else [cfg.method, f"merged-{cfg.method}"]
    return _metadata(base_model_id, "peft" if kind == "adapter" else "transformers", dataset_id, license,
                     tags, repo_id, results)


def eval_results(source: str, split: str, metrics: dict[str, Any], labels: LabelSet) -> list[EvalResult]:
    """model-index results: accuracy and F1. With more than two classes F1 is the macro average, which
    `metric_args` says: `f1` alone does not say how the classes are averaged."""
    dataset_type, dataset_name = _dataset_fields(source, hub_id(source))
    f1_fields: dict[str, Any] = {"metric_name": "F1"}
    if not labels.is_binary:
        f1_fields = {"metric_name": "Macro F1", "metric_args": {"average": "macro"}}
    fields = (("accuracy", {"metric_name": "Accuracy"}), ("f1", f1_fields))
    return [
        EvalResult(task_type="text-classification", task_name="Text Classification",
                   dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                   metric_type=metric, metric_value=metrics[metric], **extra)
        for metric, extra in fields
    ]


def _dataset_fields(source: str, dataset_id: str | None) -> tuple[str, str]:
    """model-index `dataset.type` (must look like a Hub id) and `dataset.name`."""
    if dataset_id == IMDB_ID:
        return IMDB_ID, "IMDb"
    if dataset_id is not None:
        return dataset_id, dataset_id
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        return f"peft-sentiment-{name}", f"peft-sentiment built-in synthetic reviews ({name})"
    folder = expand_path(source).name or "local"
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in folder).strip("-.") or "local"
    return slug, f"local data folder {folder}"


def _base_description(cfg: RunConfig) -> str:
    name = cfg.model.name
    if cfg.model.architecture is not None:
        fields = ", ".join(f"{k} {v}" for k, v in cfg.model.architecture.items() if k != "model_type")
        return f"a {cfg.model.architecture['model_type']} built by the run with random weights ({fields})"
    if cfg.model.random_init:
        return f"the architecture of `{name}` with random weights"
    if hub_id(name) is None:
        return f"a local model folder (`{short_path(name)}`)"
    return f"[`{hub_id(name)}`](https://huggingface.co/{hub_id(name)})"


def classifier_words(labels: LabelSet) -> str:
    """What the model is, naming its classes in id order."""
    names = ", ".join(f"`{name}`" for name in labels.names)
    if labels.is_binary:
        return f"A binary sentiment classifier for English movie reviews (labels {names})"
    return (f"A sentiment classifier for English movie reviews with {len(labels.names)} classes "
            f"(labels {names}, in class id order)")


def _summary(cfg: RunConfig, metrics: dict[str, Any], kind: Kind, base_model_id: str | None,
             labels: LabelSet) -> str:
    method = METHOD_NAMES[cfg.method]
    lines = [
        (f"{classifier_words(labels)}, trained with {method} from {_base_description(cfg)}, on "
         f"{data_description(cfg.data.source)}, with `peft-sentiment`."),
        "",
    ]
    if kind == "adapter":
        heads = ", ".join(f"`{h}`" for h in metrics.get("head_modules", []))
        lines.append(f"This repo holds the {method} adapter, the classification head trained in full "
                     f"({heads}) and the tokenizer. Load it on top of `{base_model_id}` with peft (see below).")
        if cfg.method == "qlora":
            lines.append("It was trained on the base quantized to 4 bits; loaded on the full-precision "
                         "base its predictions can differ slightly from the evaluation above.")
    elif cfg.saves_adapter:
        into = "the dequantized 4-bit base weights" if cfg.method == "qlora" else "the base weights"
        lines.append(f"The {method} update is merged into {into} (`merge_and_unload`): this is a "
                     "standalone transformers model, and peft is not needed to use it.")
    elif cfg.method == "head":
        lines.append("Only the classification head was trained; the encoder keeps the base model's "
                     "weights. This is a standalone transformers model.")
    else:
        lines.append("Every weight was trained: this is a standalone transformers model.")
    return "\n".join(lines) + "\n"


def data_description(source: str) -> str:
    if hub_id(source) == IMDB_ID:
        return f"the IMDb data set ([`{IMDB_ID}`](https://huggingface.co/datasets/{IMDB_ID}))"
    if hub_id(source) is not None:
        return f"the data set [`{hub_id(source)}`](https://huggingface.co/datasets/{hub_id(source)})"
    if source.startswith("builtin:"):
        return f"the synthetic reviews shipped with peft-sentiment (`{source}`)"
    return f"a local data folder (`{short_path(source)}`)"


def _results(cfg: RunConfig, metrics: dict[str, Any], labels: LabelSet) -> str:
    n = metrics["n_test"]
    rows = [
        *score_rows(metrics, labels),
        ("test reviews", f"{n:,}"),
        ("training time", f"{metrics['train_seconds']:.1f} s"),
        ("peak memory", f"{metrics['peak_memory_mib']:,.0f} MiB ({metrics['peak_memory_kind']})"),
        ("device", metrics["device"]),
    ]
    return (
        "## Results\n\n"
        f"Test subset: `shuffle(seed={cfg.data.shuffle_seed}).select(range({n}))` of the "
        f"`{cfg.data.test_split}` split.\n\n" + _table(("metric", "value"), rows) + per_class_table(metrics)
    )


def f1_name(labels: LabelSet) -> str:
    """Which F1 the `f1` metric is: of the second class (POSITIVE) for two classes, else the macro average."""
    return f"F1 ({labels.names[1]})" if labels.is_binary else "macro-F1"


def score_rows(metrics: dict[str, Any], labels: LabelSet) -> list[tuple[str, str]]:
    """Accuracy with its interval, F1, precision and recall as the run defines them, then the macro and
    weighted F1 a multi-class metrics.json adds (for two classes, beside the F1 of POSITIVE)."""
    n = metrics["n_test"]
    averaged = "" if labels.is_binary else "macro "
    rows = [
        ("accuracy", f"{metrics['accuracy']:.4f} (95% interval ±{100 * ci95(metrics['accuracy'], n):.1f} points)"),
        (f1_name(labels), f"{metrics['f1']:.4f}"),
    ]
    if labels.is_binary and metrics.get("macro_f1") is not None:
        rows.append(("macro-F1", f"{metrics['macro_f1']:.4f}"))
    if metrics.get("weighted_f1") is not None:
        rows.append(("weighted F1", f"{metrics['weighted_f1']:.4f}"))
    for key in ("precision", "recall"):
        if key in metrics:
            rows.append((f"{averaged}{key}", f"{metrics[key]:.4f}"))
    return rows


def per_class_table(metrics: dict[str, Any]) -> str:
    """Each class's precision, recall, F1 and test reviews, when metrics.json has them."""
    per_class = metrics.get("per_class") or []
    if not per_class:
        return ""
    rows = [(f"`{c['label']}`", f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
             f"{c['support']:,}") for c in per_class]
    return ("\nPer class (each class against the others; support: its test reviews):\n\n"
            + _table(("class", "precision", "recall", "F1", "support"), rows))


def ci95(accuracy: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy measured on n reviews."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)


def benchmark_rows(path: Path, method: str) -> list[dict[str, Any]]:
    """This method's results from a benchmark JSON file: a list of results, or {"results": [...]}."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read benchmark file {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"benchmark file {path} is not valid JSON") from None
    rows = data.get("results", data.get("runs")) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"benchmark file {path} must hold a list of results, or {{\"results\": [...]}}")
    return [r for r in rows if r.get("method") == method]


def _benchmark(rows: list[dict[str, Any]], path: Path | None, method: str) -> str:
    columns = [(k, h) for k, h in BENCHMARK_COLUMNS if any(k in r for r in rows)]
    body = [tuple(_format(k, r.get(k, "")) for k, _ in columns) for r in rows]
    return (f"## Benchmark\n\nThe `{method}` results in `{Path(str(path)).name}`:\n\n"
            + _table(tuple(h for _, h in columns), body))


def _format(key: str, value: Any) -> str:
    if isinstance(value, float) and key in ("accuracy", "f1"):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _training(cfg: RunConfig, metrics: dict[str, Any], run_dir: Path, merge: MergeResult | None) -> str:
    t = cfg.train
    trainable = f"{metrics['trainable_params']:,} of {metrics['total_params']:,} " \
                f"({100 * metrics['trainable_share']:.2f}%)"
    rows = [("method", cfg.method), ("trainable parameters", trainable)]
    targets = ", ".join(_adapter_targets(cfg, run_dir))
    if cfg.method in LORA_METHODS:
        rows += [("LoRA r / alpha / dropout", f"{cfg.lora.r} / {cfg.lora.alpha} / {cfg.lora.dropout}"),
                 ("LoRA target modules", targets)]
    if cfg.method == "qlora":
        q = cfg.quant
        rows += [("base quantization", f"4-bit {q.quant_type}, double quantization {q.double_quant}, "
                                       f"compute {q.compute_dtype}")]
    if cfg.method == "ia3":
        rows += [("(IA)3 target modules", targets)]
    if cfg.method != "full":
        rows += [("head trained in full", ", ".join(metrics.get("head_modules", [])))]
    # Every Trainer option the recipe set (the rest are the transformers defaults of the versions below).
    rows += [(f"`{key}`", f"{value:g}" if isinstance(value, float) else str(value))
             for key, value in cfg.trainer.items()]
    rows += [
        ("precision", f"{t.precision} (computed in {metrics.get('compute_dtype', t.precision)})"),
        ("max length", f"{cfg.data.max_length} tokens"),
        ("truncation", cfg.data.truncation + (f" ({cfg.data.head_tokens} head tokens)"
                                              if cfg.data.truncation == "head+tail" else "")),
        ("training reviews", f"{metrics['n_train']:,} (`shuffle(seed={cfg.data.shuffle_seed})`)"),
        ("seed", str(t.seed)),
    ]
    versions = metrics.get("versions", {})
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    text = "## Training\n\n" + _table(("setting", "value"), rows)
    if merge is not None:
        text += (f"\nMerge check: on {merge.n_texts} test texts the merged model's logits match base + "
                 f"adapter within {merge.max_abs_diff:.2g} (tolerance {merge.tolerance:g}); "
                 "see `merge_check.json`.\n")
    return text


def _usage(cfg: RunConfig, kind: Kind, repo_id: str, base_model_id: str | None, labels: LabelSet) -> str:
    length = cfg.data.max_length
    if kind == "adapter":
        code = (
            "from peft import PeftModel\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline\n\n"
            "base = AutoModelForSequenceClassification.from_pretrained(\n"
            f"    \"{base_model_id}\", {_label_arguments(labels)},\n"
            ")\n"
            f"model = PeftModel.from_pretrained(base, \"{repo_id}\")  # adapter and trained head\n"
            f"tokenizer = AutoTokenizer.from_pretrained(\"{repo_id}\")\n"
            "classifier = pipeline(\"text-classification\", model=model, tokenizer=tokenizer,\n"
            f"                      truncation=True, max_length={length})\n"
        )
        note = ("The adapter does not carry the label names: pass `num_labels`, `id2label` and "
                "`label2id` when loading the base, as above.")
    else:
        code = (
            "from transformers import pipeline\n\n"
            f"classifier = pipeline(\"text-classification\", model=\"{repo_id}\", truncation=True)\n"
        )
        note = f"The tokenizer truncates to {length} tokens, the length used in training."
    if cfg.data.truncation == "head+tail":
        note += (" The model was trained on the start and end of long reviews (head+tail): a plain pipeline "
                 "reads their start only, `peft_sentiment.load_pipeline` reads them as in training.")
    code += f"classifier(\"A wonderful film: the acting was brilliant.\")  # {example_output(labels)}\n"
    return f"## How to use\n\n```python\n{code}```\n\n{note}\n"


def truncation_sentence(strategy: str, head_tokens: int, max_length: int) -> str:
    """What a model reads of a review longer than `max_length` tokens, for the Limitations."""
    if strategy == "tail":
        return (f"Reviews are truncated to their last {max_length} tokens (the tokenizer's `truncation_side` is "
                "`left`, which a plain pipeline follows), so a long review is judged on its ending.")
    if strategy == "head+tail":
        return (f"A review longer than {max_length} tokens is read as its first {head_tokens} tokens and as many "
                "of its last as fit (head+tail), in training and by `peft_sentiment` (`load_pipeline`, "
                "`predict`, `serve`); a plain `pipeline` reads its start only. To read texts as in training "
                f"elsewhere, cut them first with `peft_sentiment.truncation.cut(tokenizer, texts, {max_length})`.")
    return f"Reviews are truncated to {max_length} tokens, so a long review is judged on its beginning."


def _label_arguments(labels: LabelSet) -> str:
    """num_labels, id2label and label2id for the base, as Python literals: on one line for two classes
    (as cards always showed them), one argument a line for more."""
    if labels.is_binary:
        return (f"num_labels=2,\n    id2label={labels.id2label!r}, label2id={labels.label2id!r}")
    return (f"num_labels={len(labels.names)},\n    id2label={labels.id2label!r},\n"
            f"    label2id={labels.label2id!r}")


def example_output(labels: LabelSet) -> str:
    """The comment after the example call: the seed protocol's answer, else which names can come back."""
    if labels.names == ("NEGATIVE", "POSITIVE"):
        return "[{'label': 'POSITIVE', ...}]"
    return f"[{{'label': ..., 'score': ...}}]: label is one of {', '.join(repr(n) for n in labels.names)}"


def _limitations(cfg: RunConfig, metrics: dict[str, Any], base_model_id: str | None) -> str:
    n = metrics["n_test"]
    items = [
        "Trained and tested on English movie reviews only; other domains and languages are untested.",
        truncation_sentence(cfg.data.truncation, cfg.data.head_tokens, cfg.data.max_length),
        f"Trained on a small subset: {metrics['n_train']:,} reviews.",
        (f"Tested on {n:,} reviews: the 95% interval on accuracy is about "
         f"±{100 * ci95(metrics['accuracy'], n):.1f} points (1.96·√(acc·(1−acc)/n)), so small "
         "differences between models are noise."),
    ]
    trained = _stand_in(cfg, base_model_id)
    if trained:
        items.append(trained)
    return "## Limitations\n\n" + "".join(f"- {item}\n" for item in items)


def _stand_in(cfg: RunConfig, base_model_id: str | None) -> str:
    """A note naming the model actually trained, when it is not the Hub model the card names."""
    if cfg.model.builds_new_weights:
        label = (f" `{cfg.model.name}` is a label, not a Hub model."
                 if cfg.model.architecture is not None else "")
        return (f"The base was {_base_description(cfg)}: this model shows that the pipeline works, "
                f"and its predictions are not useful.{label}")
    if hub_id(cfg.model.name) is None:
        named = f"; the card names `{base_model_id}` as its base" if base_model_id else ""
        return (f"The model trained was a local folder (`{short_path(cfg.model.name)}`), a stand-in "
                f"not downloaded from the Hub{named}.")
    if base_model_id is not None and base_model_id != hub_id(cfg.model.name):
        return f"The model trained was `{cfg.model.name}`; the card names `{base_model_id}` as its base."
    return ""


def _adapter_targets(cfg: RunConfig, run_dir: Path) -> list[str]:
    path = run_dir / ADAPTER_DIR / "adapter_config.json"
    if path.is_file():
        targets = json.loads(path.read_text()).get("target_modules") or []
        return [f"`{targets}` (regex)"] if isinstance(targets, str) else sorted(targets)
    return list((cfg.ia3.target_modules if cfg.method == "ia3" else cfg.lora.target_modules) or ())


def short_path(name: str) -> str:
    """The last two parts of a local path: enough to recognise it, without the user's folders."""
    parts = expand_path(name).parts
    return ".../" + "/".join(parts[-2:]) if len(parts) > 2 else name


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |\n"

    return line(header) + line(tuple("---" for _ in header)) + "".join(line(r) for r in rows)


# ---------------------------------------------------------------- ONNX exports

# How export.json's base_model marks a base whose weights the run drew at random (export._metadata).
RANDOM_BASE = " (random weights made by the run)"


def build_export_card(
    folder: Path,
    repo_id: str,
    base_model_id: str | None,
    license: str = "apache-2.0",
    benchmark: Path | None = None,
) -> str:
    """README.md for an ONNX export folder (`peft-sentiment export`), from the folder alone: the run
    may be gone, and export.json keeps what the card needs of it (method, base, data, test metrics)."""
    meta = json.loads((folder / METADATA_FILE).read_text())
    check = json.loads((folder / CHECK_FILE).read_text())
    labels = export_classes(folder)
    method = str(meta.get("method", ""))
    bench_rows = benchmark_rows(benchmark, method) if benchmark is not None else []
    data = _export_card_data(meta, check, labels, repo_id, base_model_id, license)
    parts = [
        f"---\n{data.to_yaml()}\n---\n",
        f"# {repo_id.split('/')[-1]}\n",
        _export_summary(meta, check, labels),
        _export_results(meta, labels),
        _export_check(check, meta),
        _benchmark(bench_rows, benchmark, method) if bench_rows else "",
        _export_usage(meta, repo_id, labels),
        _export_limitations(meta, check),
    ]
    return "\n".join(p for p in parts if p)


def export_classes(folder: Path) -> LabelSet:
    """The export's classes: its labels.json, else its config's id2label."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    return labels_of_folder(folder, config.get("id2label") if isinstance(config, dict) else None)


def is_int8(meta: dict[str, Any]) -> bool:
    """Whether export.json describes an int8 export (int8 or int8-static)."""
    return str(meta.get("quantization", "none")).startswith("int8")


def _int8(check: dict[str, Any]) -> dict[str, Any]:
    return check.get("int8") or {}


def _export_card_data(meta: dict[str, Any], check: dict[str, Any], labels: LabelSet, repo_id: str,
                      base_model_id: str | None, license: str) -> ModelCardData:
    source = meta["data"]["source"]
    dataset_id = hub_id(source)
    metrics = meta.get("test_metrics") or {}
    # The test figures are the PyTorch model's: they are this model's own only where the export
    # computes the same logits (fp32, check passed). An int8 export's were never measured.
    same_model = meta.get("quantization") == "none" and check.get("passed") is True
    results = (eval_results(source, meta["data"].get("test_split", "test"), metrics, labels)
               if same_model and {"accuracy", "f1"} <= set(metrics) else None)
    tags = ["sentiment-analysis", "text-classification", "peft-sentiment", "onnx"]
    tags += [meta["method"]] if meta.get("method") else []
    tags += ["int8"] if is_int8(meta) else []
    return _metadata(base_model_id, "onnx", dataset_id, license, tags, repo_id, results)


def _metadata(base_model_id: str | None, library: str, dataset_id: str | None, license: str, tags: list[str],
              repo_id: str, results: Any) -> ModelCardData:
    """The card's YAML metadata, shared by every kind of upload."""
    return ModelCardData(
        base_model=base_model_id,
        library_name=library,
        pipeline_tag="text-classification",
        datasets=[dataset_id] if dataset_id else None,
        language="en",
        license=license,
        tags=tags,
        metrics=["accuracy", "f1"],
        model_name=repo_id.split("/")[-1],
        eval_results=results,
    )


def _export_base_description(name: str) -> str:
    """export.json's base_model in words (a Hub id, a local folder, or random weights)."""
    if name.endswith(RANDOM_BASE):
        return f"random weights made by the run (model `{short_path(name[:-len(RANDOM_BASE)])}`)"
    if hub_id(name) is None:
        return f"a local model folder (`{short_path(name)}`)"
    return f"[`{hub_id(name)}`](https://huggingface.co/{hub_id(name)})"


def quantization_words(meta: dict[str, Any], check: dict[str, Any]) -> str:
    """fp32, or int8 with how many linear layers are int8 and how many the check kept in fp32."""
    if not is_int8(meta):
        return "fp32"
    int8 = _int8(check)
    kept = len(int8.get("fp32_layers") or [])
    quantized = len(int8.get("int8_layers") or [])
    return f"int8 ({quantized} of {quantized + kept} quantizable linear layers, {kept} kept in fp32)"


def _export_summary(meta: dict[str, Any], check: dict[str, Any], labels: LabelSet) -> str:
    method = METHOD_NAMES.get(meta.get("method", ""), meta.get("method", "an unknown method"))
    words = classifier_words(labels)
    lines = [
        (f"An ONNX export of {words[0].lower()}{words[1:]}, trained with {method} from "
         f"{_export_base_description(str(meta.get('base_model', '')))}, on "
         f"{data_description(meta['data']['source'])}, with `peft-sentiment` (`peft-sentiment export`)."),
        "",
    ]
    if meta.get("merged"):
        lines.append(f"The {method} adapter was merged into its base before the export.")
    if is_int8(meta):
        scheme = _int8(check).get("scheme", "onnxruntime dynamic quantization")
        lines.append(f"Weights: {quantization_words(meta, check)}; {scheme}. The embeddings, the layers "
                     "kept in fp32 and the linear layers on pooled features (the head, below) stay fp32.")
    else:
        lines.append("Weights: fp32, as trained.")
    if meta.get("last_layer") == FIRST_TOKEN_ONLY:
        lines.append("The graph computes its last layer past self-attention for the first token only, the "
                     "one the classifier reads: the same logits with less work; it outputs the logits alone.")
    lines.append(f"`{meta.get('model_file', MODEL_FILE)}` runs with onnxruntime: neither PyTorch nor "
                 "peft is needed.")
    return "\n".join(lines) + "\n"


def _export_results(meta: dict[str, Any], labels: LabelSet) -> str:
    metrics = meta.get("test_metrics") or {}
    if not {"accuracy", "f1", "n_test"} <= set(metrics):
        return ""
    data = meta["data"]
    n = metrics["n_test"]
    rows = [*score_rows(metrics, labels), ("test reviews", f"{n:,}")]
    return (
        "## Results\n\n"
        "Measured on the run's PyTorch model before the export, on the test subset "
        f"`shuffle(seed={data.get('shuffle_seed')}).select(range({n}))` of the `{data.get('test_split')}` "
        "split; the export check below says how closely the export follows that model.\n\n"
        + _table(("metric", "value"), rows) + per_class_table(metrics)
    )


def _export_check(check: dict[str, Any], meta: dict[str, Any]) -> str:
    """export_check.json's figures: how far the export's logits and labels are from PyTorch's."""
    n = check["n_texts"]
    diff = f"{check['max_abs_logit_diff']:.2g}"
    if check.get("logit_tolerance") is not None:
        diff += f" (tolerance {check['logit_tolerance']:g})"
    rows = [
        ("quantization", quantization_words(meta, check)),
        ("largest |logit difference| from PyTorch", diff),
        ("label agreement with PyTorch", f"{check['agreement']:.2%} (bar {check['agreement_bar']:.1%})"),
        ("texts checked", f"{n:,}, {check['texts']} (up to {check.get('max_length', meta['max_length'])} tokens)"),
        ("compared with", check.get("reference", "the run's model in PyTorch")),
    ]
    int8 = _int8(check)
    if int8:
        kept = int8.get("fp32_layers") or []
        rows.append(("int8 layers kept in fp32", ", ".join(f"`{name}`" for name in kept) or "none"))
        if int8.get("fp32_layers_why"):
            rows.append(("why", int8["fp32_layers_why"]))
        if int8.get("kept_layers", kept):
            chosen = (f"{int8.get('chosen_on', 'training texts')}: "
                      f"{int8.get('all_int8_selection_agreement', 0):.2%} agreement with every layer int8, "
                      f"{int8.get('selection_agreement', 0):.2%} with these kept")
            rows.append(("fp32 layers chosen on", chosen))
        left = int8.get("unquantized_layers") or []
        if left:
            rows.append(("linear layers on pooled features, fp32", ", ".join(f"`{name}`" for name in left)))
    merge = check.get("merge")
    if merge:
        rows.append(("merge check", (f"max |merged - (base + adapter)| {merge['max_abs_logit_diff']:.2g} "
                                     f"on {merge['n_texts']} texts (tolerance {merge['tolerance']:g})")))
    rows.append(("result", "passed" if check.get("passed") else "**failed**: kept with `--force`"))
    text = ("## Export check\n\n`peft-sentiment export` ran the export and the PyTorch model on the same "
            "texts before keeping it (`export_check.json`):\n\n" + _table(("check", "value"), rows))
    if not check.get("passed"):
        text += ("\n**This export did not pass its check**: its labels or logits are further from the "
                 "PyTorch model's than the bar allows, and it was kept with `--force`.\n")
    return text


def _export_usage(meta: dict[str, Any], repo_id: str, labels: LabelSet) -> str:
    names = list(meta.get("inputs") or ["input_ids", "attention_mask"])
    length = meta["max_length"]
    folder = repo_id.split("/")[-1]
    code = (
        "import numpy as np\n"
        "import onnxruntime as ort\n"
        "from huggingface_hub import snapshot_download\n"
        "from transformers import AutoTokenizer\n\n"
        f"folder = snapshot_download(\"{repo_id}\")\n"
        "tokenizer = AutoTokenizer.from_pretrained(folder)\n"
        f"session = ort.InferenceSession(f\"{{folder}}/{meta.get('model_file', MODEL_FILE)}\", "
        "providers=[\"CPUExecutionProvider\"])\n"
        f"id2label = {labels.id2label!r}\n\n"
        "texts = [\"A wonderful film: the acting was brilliant.\"]\n"
        f"batch = tokenizer(texts, truncation=True, max_length={length}, padding=True, return_tensors=\"np\")\n"
        f"logits = session.run(None, {{name: batch[name].astype(np.int64) for name in {names!r}}})[0]\n"
        "print([id2label[int(i)] for i in logits.argmax(-1)])\n"
    )
    shell = (f"hf download {repo_id} --local-dir {folder}\n"
             f"peft-sentiment predict {folder} \"A wonderful film: the acting was brilliant.\" --backend onnx\n")
    return (f"## How to use\n\nWith onnxruntime and the tokenizer:\n\n```python\n{code}```\n\n"
            f"The graph takes {', '.join(f'`{n}`' for n in names)} (int64, any batch size and length) and "
            f"returns `logits`; truncate at {length} tokens, the length used in training (the tokenizer's "
            "`model_max_length`).\n\n"
            f"Or with `peft-sentiment` (`pip install 'peft-sentiment[onnx]'`):\n\n```bash\n{shell}```\n")


def _export_limitations(meta: dict[str, Any], check: dict[str, Any]) -> str:
    metrics = meta.get("test_metrics") or {}
    items = [
        "Trained and tested on English movie reviews only; other domains and languages are untested.",
        truncation_sentence(meta.get("truncation", "head"), meta.get("head_tokens", 0), meta["max_length"]),
    ]
    if {"accuracy", "n_test"} <= set(metrics):
        n = metrics["n_test"]
        items.append(f"Tested on {n:,} reviews: the 95% interval on accuracy is about "
                     f"±{100 * ci95(metrics['accuracy'], n):.1f} points, so small differences between "
                     "models are noise.")
    if is_int8(meta):
        changed = round((1 - check["agreement"]) * check["n_texts"])
        items.append(f"int8 weights move the logits (by up to {check['max_abs_logit_diff']:.2g} on the check "
                     f"texts) and changed {changed} of their {check['n_texts']:,} labels; the results above "
                     "are the fp32 model's.")
    items.append("Checked with onnxruntime on the CPU (`CPUExecutionProvider`); other execution providers "
                 "were not checked.")
    if str(meta.get("base_model", "")).endswith(RANDOM_BASE):
        items.append("The base had random weights: this model shows that the pipeline works, and its "
                     "predictions are not useful.")
    return "## Limitations\n\n" + "".join(f"- {item}\n" for item in items)
