"""The benchmark report of a three-class benchmark, on fixed inputs: macro-F1 in the summary and the
tables, and each method's confusion matrix summed over its seeds."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import confusion_matrix, f1_score

from peft_sentiment import report
from peft_sentiment.report import markdown, rich_tables, summarize, write_report

NAMES = ["negative", "neutral", "positive"]
LABELS = [0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDS = {
    ("full", 1): [0, 0, 0, 1, 1, 1, 2, 2, 2],
    ("full", 2): [0, 0, 1, 1, 1, 1, 2, 2, 0],
    ("lora", 1): [0, 1, 1, 1, 2, 1, 2, 2, 2],
    ("lora", 2): [0, 0, 2, 1, 1, 0, 2, 1, 2],
}


def _eval(preds: list[int], n: int) -> dict[str, Any]:
    labels, preds = LABELS[:n], preds[:n]
    macro = f1_score(labels, preds, labels=[0, 1, 2], average="macro", zero_division=0)
    return {"accuracy": float(np.mean(np.array(preds) == np.array(labels))), "f1": macro, "macro_f1": macro,
            "precision": 0.5, "recall": 0.5, "eval_samples_per_second": 100.0, "preds": preds,
            "labels": NAMES}


def _run(label: str, seed: int) -> dict[str, Any]:
    return {
        "name": f"{label}-seed{seed}", "label": label, "method": label, "seed": seed, "status": "ok",
        "upload_kind": "adapter", "upload_bytes": 1000,
        "config": {"model": {"name": "tiny"}, "data": {"source": "builtin:smoke", "train_size": 30,
                                                        "test_size": 9, "max_length": 64, "shuffle_seed": 42}},
        "train": {"peak_memory_mib": 100.0, "train_seconds": 10.0, "train_samples_per_second": 2.0,
                  "trainable_params": 10, "total_params": 100, "trainable_share": 0.1,
                  "peak_memory_kind": "test", "compute_dtype": "fp32"},
        "evals": {n: _eval(PREDS[label, seed], int(n)) for n in ("6", "9")},  # 9: the runs' own test set
    }


def _results() -> dict[str, Any]:
    return {
        "spec": {"methods": ["full", "lora"], "seeds": [1, 2], "baseline": "full", "resamples": 200},
        "environment": {"device": "cpu", "torch_threads": 1, "versions": {"torch": "x"}},
        "command": None, "created": "2024-01-01T00:00:00+00:00",
        "test_sets": {"6": {"labels": LABELS[:6]}, "9": {"labels": LABELS}},
        "runs": [_run(label, seed) for seed in (1, 2) for label in ("full", "lora")],
    }


def test_rows_have_macro_f1_and_the_confusion_matrix_summed_over_seeds() -> None:
    rows = {row["label"]: row for row in summarize(_results())["9"]}
    lora = rows["lora"]
    values = [f1_score(LABELS, PREDS["lora", s], labels=[0, 1, 2], average="macro") for s in (1, 2)]
    assert lora["macro_f1"]["mean"] == pytest.approx(np.mean(values))
    assert lora["macro_f1"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert lora["macro_f1"]["low"] <= lora["macro_f1"]["mean"] <= lora["macro_f1"]["high"]
    assert lora["macro_f1"]["low"] < lora["macro_f1"]["high"]
    assert lora["f1"] == lora["macro_f1"]  # F1 of more than two classes is their macro average
    expected = sum(confusion_matrix(LABELS, PREDS["lora", s], labels=[0, 1, 2]) for s in (1, 2))
    assert lora["confusion_matrix"] == expected.tolist()
    diff = lora["vs_baseline"]["f1_difference"]
    assert diff["value"] == pytest.approx(lora["f1"]["mean"] - rows["full"]["f1"]["mean"])
    # McNemar counts right and wrong answers whatever the classes: seed 1, full right on all 9.
    m1 = lora["vs_baseline"]["mcnemar"][0]
    assert (m1["only_this_right"], m1["only_baseline_right"]) == (0, 3)


def test_tables_call_f1_macro_f1_and_name_the_classes() -> None:
    results = _results()
    summary = summarize(results)
    md = markdown(results, summary)
    assert "- classes: negative, neutral, positive" in md
    assert "| macro-F1 [95% CI] |" in md and "| run | status | accuracy | macro-F1 |" in md
    assert "Accuracy and macro-F1: mean over seeds" in md
    assert "F1 [95% CI]" not in md.replace("macro-F1 [95% CI]", "")
    lora = next(row for row in summary["9"] if row["label"] == "lora")
    assert f"| {report.fmt_interval(lora['macro_f1'])} |" in md
    console = Console(file=io.StringIO(), width=300)
    for table in rich_tables(results, summary):
        console.print(table)
    assert "macro-F1 [95% CI]" in console.file.getvalue()


def test_write_report_draws_each_methods_confusion_matrix(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: dict[str, tuple[Any, Any, str]] = {}
    real = report.confusion_matrix_png

    def record(matrix: Any, names: Any, path: Path, title: str) -> Path:
        drawn[path.name] = (matrix, names, title)
        return real(matrix, names, path, title)

    monkeypatch.setattr(report, "confusion_matrix_png", record)
    summary = write_report(_results(), tmp_path)
    assert set(drawn) == {"confusion-full.png", "confusion-lora.png"}
    for name in drawn:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    matrix, names, title = drawn["confusion-full.png"]
    expected = sum(confusion_matrix(LABELS, PREDS["full", s], labels=[0, 1, 2]) for s in (1, 2))
    assert matrix == expected.tolist() and names == NAMES  # on the runs' own 9 reviews, not on 6
    assert "full: 9 test reviews x 2 seeds" in title
    assert [row.get("confusion_plot") for row in summary["9"]] == ["confusion-full.png", "confusion-lora.png"]
    assert all("confusion_plot" not in row for row in summary["6"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion-full.png", "confusion-lora.png",
                                                          "plot.png", "results.md"]
