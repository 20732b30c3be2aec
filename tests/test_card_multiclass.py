"""The model card of a run with more than two classes: its description, the F1 it reports, macro and
weighted F1, the per-class table, valid metadata, and an adapter snippet with the run's real classes."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from conftest import copy_run
from huggingface_hub import ModelCard

from peft_sentiment.card import build_card

REPO = "acme/three-class-sentiment"
NAMES = ["negative", "it's mixed", "positive"]  # a quote: the snippet's literals must still be Python
PER_CLASS = [
    {"label": "negative", "precision": 0.81, "recall": 0.9, "f1": 0.8526, "support": 40},
    {"label": "it's mixed", "precision": 0.5, "recall": 0.25, "f1": 0.3333, "support": 20},
    {"label": "positive", "precision": 0.8, "recall": 0.85, "f1": 0.8242, "support": 40},
]


def three_class_run(lora_run: Path, dest: Path, base: str = "acme/tiny-base") -> Path:
    """The smoke adapter run presented as a 3-class run trained from the Hub model `base`."""
    run = copy_run(lora_run, dest, model__name=base, model__architecture=None)
    shutil.rmtree(run / "base")
    (run / "adapter" / "labels.json").write_text(json.dumps({"names": NAMES, "values": ["0", "1", "2"]}))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(labels=NAMES, f1=0.6700, macro_f1=0.6700, weighted_f1=0.7374, precision=0.7033,
                   recall=0.6667, per_class=PER_CLASS, accuracy=0.75)
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def run_adapter_snippet(text: str) -> dict[str, Any]:
    """Run the card's Python example with peft and transformers stubbed; the arguments it passed."""
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    calls: dict[str, Any] = {}

    class Auto:
        @staticmethod
        def from_pretrained(name: str, **kwargs: Any) -> str:
            calls["base"] = (name, kwargs)
            return "base-model"

    class Tokenizer:
        @staticmethod
        def from_pretrained(name: str) -> str:
            calls["tokenizer"] = name
            return "tokenizer"

    class Peft:
        @staticmethod
        def from_pretrained(base: str, name: str) -> str:
            calls["adapter"] = (base, name)
            return "model"

    def pipeline(task: str, **kwargs: Any) -> Any:
        calls["pipeline"] = (task, kwargs)
        return lambda text: [{"label": NAMES[2], "score": 0.9}]

    stubs = {"peft": {"PeftModel": Peft},
             "transformers": {"AutoModelForSequenceClassification": Auto, "AutoTokenizer": Tokenizer,
                              "pipeline": pipeline}}

    def fake_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if name in stubs:
            return type(name, (), stubs[name])
        return builtins.__import__(name, globals, locals, fromlist, level)

    exec(code, {"__builtins__": {**vars(builtins), "__import__": fake_import}})  # noqa: S102
    return calls


def test_three_class_adapter_card(lora_run: Path, tmp_path: Path) -> None:
    run = three_class_run(lora_run, tmp_path / "run")
    text = build_card(run, "adapter", REPO, "acme/tiny-base")
    card = ModelCard(text)
    meta = front_matter(text)  # the YAML parses, and the Hub's parser reads the same results
    assert meta["library_name"] == "peft"
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["accuracy"].metric_value == 0.75
    assert results["f1"].metric_value == 0.67
    assert results["f1"].metric_name == "Macro F1" and results["f1"].metric_args == {"average": "macro"}

    body = card.text
    for needle in (("A sentiment classifier for English movie reviews with 3 classes (labels `negative`, "
                    "`it's mixed`, `positive`, in class id order)"),
                   "| macro-F1 | 0.6700 |", "| weighted F1 | 0.7374 |", "| macro precision | 0.7033 |",
                   "| macro recall | 0.6667 |", "| class | precision | recall | F1 | support |",
                   "| `negative` | 0.8100 | 0.9000 | 0.8526 | 40 |", "| `it's mixed` | 0.5000 | 0.2500 | 0.3333 | 20 |",
                   "label is one of 'negative', \"it's mixed\", 'positive'"):
        assert needle in body, needle
    for binary_only in ("binary", "F1 (POSITIVE)", "NEGATIVE", "num_labels=2"):
        assert binary_only not in body, binary_only

    calls = run_adapter_snippet(body)
    name, kwargs = calls["base"]
    assert name == "acme/tiny-base"
    assert kwargs == {"num_labels": 3, "id2label": dict(enumerate(NAMES)),
                      "label2id": {n: i for i, n in enumerate(NAMES)}}
    assert calls["adapter"] == ("base-model", REPO) and calls["tokenizer"] == REPO


def test_three_class_merged_card(lora_run: Path, tmp_path: Path) -> None:
    run = three_class_run(lora_run, tmp_path / "run")
    text = build_card(run, "merged", REPO, None)
    front_matter(text)
    assert "with 3 classes" in text and "| macro-F1 | 0.6700 |" in text
    assert f'pipeline("text-classification", model="{REPO}"' in text
    assert "num_labels" not in text  # a merged model's config carries its classes


def test_binary_card_adds_macro_and_weighted_f1(lora_run: Path, tmp_path: Path) -> None:
    run = copy_run(lora_run, tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(macro_f1=0.61, weighted_f1=0.62, per_class=[
        {"label": "NEGATIVE", "precision": 0.6, "recall": 0.7, "f1": 0.65, "support": 50},
        {"label": "POSITIVE", "precision": 0.65, "recall": 0.55, "f1": 0.5958, "support": 50}])
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = build_card(run, "merged", REPO, None)
    for needle in ("A binary sentiment classifier for English movie reviews (labels `NEGATIVE`, `POSITIVE`)",
                   f"| F1 (POSITIVE) | {metrics['f1']:.4f} |", "| macro-F1 | 0.6100 |", "| weighted F1 | 0.6200 |",
                   f"| precision | {metrics['precision']:.4f} |", "| `POSITIVE` | 0.6500 | 0.5500 | 0.5958 | 50 |",
                   "# [{'label': 'POSITIVE', ...}]"):
        assert needle in text, needle
    f1 = [r for r in ModelCard(text).data.eval_results if r.metric_type == "f1"]
    assert [(r.metric_name, r.metric_args) for r in f1] == [("F1", None)]


def test_binary_card_with_other_names(lora_run: Path, tmp_path: Path) -> None:
    run = copy_run(lora_run, tmp_path / "run", model__name="acme/tiny-base", model__architecture=None)
    shutil.rmtree(run / "base")
    (run / "adapter" / "labels.json").write_text(json.dumps({"names": ["bad", "good"], "values": ["0", "1"]}))
    text = build_card(run, "adapter", REPO, "acme/tiny-base")
    assert "(labels `bad`, `good`)" in text and "| F1 (good) |" in text
    assert "\"acme/tiny-base\", num_labels=2,\n    id2label={0: 'bad', 1: 'good'}, label2id={'bad': 0, 'good': 1}," in text
    assert run_adapter_snippet(text)["base"][1]["id2label"] == {0: "bad", 1: "good"}
