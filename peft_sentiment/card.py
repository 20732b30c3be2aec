"""Model cards for published runs: Hub metadata (YAML front matter) and a readable account of the run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import EvalResult, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .config import LORA_METHODS, METHOD_NAMES, RunConfig, expand_path, path_exists
from .data import ID2LABEL, LABEL2ID
from .errors import ConfigError
from .merge import MergeResult
from .rundir import ADAPTER_DIR, load_metrics, load_run_config

Kind = Literal["merged", "adapter"]

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
    bench_rows = benchmark_rows(benchmark, cfg.method) if benchmark is not None else []
    data = _card_data(cfg, metrics, kind, repo_id, base_model_id, license)
    parts = [
        f"---\n{data.to_yaml()}\n---\n",
        f"# {repo_id.split('/')[-1]}\n",
        _summary(cfg, metrics, kind, base_model_id),
        _results(cfg, metrics),
        _benchmark(bench_rows, benchmark, cfg.method) if bench_rows else "",
        _training(cfg, metrics, run_dir, merge),
        _usage(cfg, kind, repo_id, base_model_id),
        _limitations(cfg, metrics, base_model_id),
    ]
    return "\n".join(p for p in parts if p)


def _card_data(cfg: RunConfig, metrics: dict[str, Any], kind: Kind, repo_id: str,
               base_model_id: str | None, license: str) -> ModelCardData:
    dataset_id = hub_id(cfg.data.source)
    dataset_type, dataset_name = _dataset_fields(cfg.data.source, dataset_id)
    results = [
        EvalResult(task_type="text-classification", task_name="Text Classification",
                   dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=cfg.data.test_split,
                   metric_type=metric, metric_name=name, metric_value=metrics[metric])
        for metric, name in (("accuracy", "Accuracy"), ("f1", "F1"))
    ]
    tags = ["sentiment-analysis", "text-classification", "peft-sentiment"]
    if cfg.saves_adapter:
        tags += ["peft", cfg.method] if kind == "adapter" else [cfg.method, f"merged-{cfg.method}"]
    return ModelCardData(
        base_model=base_model_id,
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag="text-classification",
        datasets=[dataset_id] if dataset_id else None,
        language="en",
        license=license,
        tags=tags,
        metrics=["accuracy", "f1"],
        model_name=repo_id.split("/")[-1],
        eval_results=results,
    )


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
        return f"a local model folder (`{_short_path(name)}`)"
    return f"[`{hub_id(name)}`](https://huggingface.co/{hub_id(name)})"


def _summary(cfg: RunConfig, metrics: dict[str, Any], kind: Kind, base_model_id: str | None) -> str:
    method = METHOD_NAMES[cfg.method]
    lines = [
        ("A binary sentiment classifier for English movie reviews (labels `NEGATIVE`, `POSITIVE`), "
         f"trained with {method} from {_base_description(cfg)}, on {_data_description(cfg)}, "
         "with `peft-sentiment`."),
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


def _data_description(cfg: RunConfig) -> str:
    source = cfg.data.source
    if hub_id(source) == IMDB_ID:
        return f"the IMDb data set ([`{IMDB_ID}`](https://huggingface.co/datasets/{IMDB_ID}))"
    if hub_id(source) is not None:
        return f"the data set [`{hub_id(source)}`](https://huggingface.co/datasets/{hub_id(source)})"
    if source.startswith("builtin:"):
        return f"the synthetic reviews shipped with peft-sentiment (`{source}`)"
    return f"a local data folder (`{_short_path(source)}`)"


def _results(cfg: RunConfig, metrics: dict[str, Any]) -> str:
    n = metrics["n_test"]
    rows = [
        ("accuracy", f"{metrics['accuracy']:.4f} (95% interval ±{100 * ci95(metrics['accuracy'], n):.1f} points)"),
        ("F1 (POSITIVE)", f"{metrics['f1']:.4f}"),
        ("precision", f"{metrics['precision']:.4f}"),
        ("recall", f"{metrics['recall']:.4f}"),
        ("test reviews", f"{n:,}"),
        ("training time", f"{metrics['train_seconds']:.1f} s"),
        ("peak memory", f"{metrics['peak_memory_mib']:,.0f} MiB ({metrics['peak_memory_kind']})"),
        ("device", metrics["device"]),
    ]
    return (
        "## Results\n\n"
        f"Test subset: `shuffle(seed={cfg.data.shuffle_seed}).select(range({n}))` of the "
        f"`{cfg.data.test_split}` split.\n\n" + _table(("metric", "value"), rows)
    )


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


def _usage(cfg: RunConfig, kind: Kind, repo_id: str, base_model_id: str | None) -> str:
    length = cfg.data.max_length
    if kind == "adapter":
        code = (
            "from peft import PeftModel\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline\n\n"
            "base = AutoModelForSequenceClassification.from_pretrained(\n"
            f"    \"{base_model_id}\", num_labels=2,\n"
            f"    id2label={dict(ID2LABEL)!r}, label2id={dict(LABEL2ID)!r},\n"
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
    code += "classifier(\"A wonderful film: the acting was brilliant.\")  # [{'label': 'POSITIVE', ...}]\n"
    return f"## How to use\n\n```python\n{code}```\n\n{note}\n"


def _limitations(cfg: RunConfig, metrics: dict[str, Any], base_model_id: str | None) -> str:
    n = metrics["n_test"]
    items = [
        "Trained and tested on English movie reviews only; other domains and languages are untested.",
        (f"Reviews are truncated to {cfg.data.max_length} tokens, so a long review is judged on its "
         "beginning."),
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
        return (f"The model trained was a local folder (`{_short_path(cfg.model.name)}`), a stand-in "
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


def _short_path(name: str) -> str:
    """The last two parts of a local path: enough to recognise it, without the user's folders."""
    parts = expand_path(name).parts
    return ".../" + "/".join(parts[-2:]) if len(parts) > 2 else name


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |\n"

    return line(header) + line(tuple("---" for _ in header)) + "".join(line(r) for r in rows)
