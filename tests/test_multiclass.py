"""Any number of classes: labels from the data or --labels, metrics for every class, class weights,
stratified subsets, and every artifact carrying the class names."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, invoke, make_rows, write_data_folder, write_jsonl
from sklearn.metrics import f1_score

from peft_sentiment.config import DataConfig, TrainConfig
from peft_sentiment.data import load_splits
from peft_sentiment.errors import ConfigError, DataError
from peft_sentiment.labels import BINARY, LabelSet, infer, labels_of_folder, parse_option
from peft_sentiment.metrics import classification_metrics
from peft_sentiment.synthetic import make_graded_reviews
from peft_sentiment.train import class_weights, weighted_cross_entropy

NAMES = {3: ["negative", "neutral", "positive"],
         5: ["very negative", "negative", "neutral", "positive", "very positive"]}


def graded_folder(folder: Path, classes: int, n_train: int = 300, n_test: int = 100,
                  shares: list[float] | None = None) -> Path:
    """train.jsonl and test.jsonl of graded synthetic reviews, labels 0..classes-1, texts unique."""
    def rows(n: int, seed: int, tag: str) -> list[dict[str, Any]]:
        return [{"text": f"{r['text']} ({tag} {i})", "label": r["label"]}
                for i, r in enumerate(make_graded_reviews(n, seed, classes, shares))]
    return write_data_folder(folder, rows(n_train, 1, "a"), rows(n_test, 2, "b"))


# ---------------------------------------------------------------- the label set

def test_binary_data_keep_the_seed_protocols_names() -> None:
    for values in ([0, 1, 1], ["neg", "pos"], ["Negative", " positive "], [0.0, 1.0]):
        assert infer(values, None, "f") == BINARY
    assert BINARY.id_of("pos") == 1 and BINARY.id_of("NEGATIVE") == 0 and BINARY.id_of(2) is None


def test_classes_from_the_data_are_its_sorted_values() -> None:
    labels = infer([10, 2, 2, 7], None, "f")
    assert labels.names == ("2", "7", "10")  # numbers in numeric order
    assert [labels.id_of(v) for v in (2, 7, 10, "10", 10.0)] == [0, 1, 2, 2, 2]
    words = infer(["positive", "neutral", "negative", "neutral"], None, "f")
    assert words.names == ("negative", "neutral", "positive")
    assert words.id_of(" Neutral") == 1


def test_names_from_the_option() -> None:
    five = infer([0, 1, 2, 3, 4], ",".join(NAMES[5]), "f")
    assert five.names == tuple(NAMES[5]) and five.values == ("0", "1", "2", "3", "4")
    assert five.id_of("neutral") == 2 and five.id_of(2) == 2  # a value or a name
    mapped = infer(["b", "g", "g"], "g=good,b=bad", "f")
    assert mapped.names == ("good", "bad") and mapped.id_of("b") == 1  # the order given
    renamed = infer(["neg", "pos"], "bad,good", "f")
    assert renamed.names == ("bad", "good") and renamed.id_of("negative") == 0


@pytest.mark.parametrize("values, option, fragment", [
    ([0, 1, 2], "a,b", "names 2 classes but the data hold 3"),
    (["x", "y", "z"], "x=1,y=2", "label 'z' is not in --labels"),
    ([0, 0], None, "only one class"),
    ([0, 1, 0.5, True], None, "2 label(s) in column 'label' are not classes: 0.5, True"),
])
def test_label_set_errors_name_the_problem(values: list[Any], option: str | None, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        infer(values, option, "train.jsonl")


@pytest.mark.parametrize("option, fragment", [
    ("a,,b", "an empty name between commas"),
    ("0=a,b", "give every class as VALUE=NAME, or names only"),
    ("a,b,A", "label name 'A' is given twice"),
])
def test_bad_labels_option_is_refused_at_the_edge(option: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        DataConfig(labels=option)
    assert parse_option("0=x, 1 = y") == (["x", "y"], ["0", "1"])


def test_a_test_label_that_training_never_saw_is_named(tmp_path: Path) -> None:
    folder = graded_folder(tmp_path / "d", 3, 60, 30)
    write_jsonl(folder / "test.jsonl", [{"text": f"odd {i}", "label": 4 if i == 3 else i % 3} for i in range(30)])
    with pytest.raises(DataError, match=r"1 label\(s\) in column 'label' are not classes the model was trained "
                                        r"on: 4 \(classes: 0, 1, 2\)"):
        load_splits(DataConfig(source=str(folder), train_size=40, test_size=20))


def test_labels_of_a_folder(tmp_path: Path) -> None:
    assert labels_of_folder(None) == BINARY
    assert labels_of_folder(tmp_path, {"0": "LABEL_0", "1": "LABEL_1"}) == BINARY
    three = labels_of_folder(tmp_path, {0: "neg", 1: "mid", 2: "pos"})
    assert three.names == ("neg", "mid", "pos") and three.id_of(1) == 1 and three.id_of("mid") == 1
    (tmp_path / "labels.json").write_text(json.dumps({"names": ["a", "b", "c"], "values": ["x", "y", "z"]}))
    assert labels_of_folder(tmp_path, {0: "neg"}) == LabelSet(("a", "b", "c"), ("x", "y", "z"))


# ---------------------------------------------------------------- metrics

def test_three_class_metrics_by_hand() -> None:
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    preds = [0, 0, 1, 1, 2, 2, 2, 2, 0, 2]
    m = classification_metrics(labels, preds, ["neg", "mid", "pos"])
    assert m.confusion_matrix == [[2, 1, 0], [0, 1, 1], [1, 0, 4]]
    assert m.accuracy == pytest.approx(7 / 10)
    # neg: P 2/3, R 2/3, F1 2/3; mid: P 1/2, R 1/2, F1 1/2; pos: P 4/5, R 4/5, F1 4/5
    assert [c.label for c in m.per_class] == ["neg", "mid", "pos"]
    assert [c.support for c in m.per_class] == [3, 2, 5]
    assert [c.f1 for c in m.per_class] == pytest.approx([2 / 3, 1 / 2, 4 / 5])
    assert m.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)
    assert m.f1 == m.macro_f1  # more than two classes: f1 is macro
    assert m.weighted_f1 == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 5 * 4 / 5) / 10)
    assert m.precision == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)


def test_binary_keeps_f1_of_positive_and_adds_macro() -> None:
    labels, preds = [0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 0]
    m = classification_metrics(labels, preds, ["NEGATIVE", "POSITIVE"])
    assert m.f1 == pytest.approx(f1_score(labels, preds))  # 2*3/5*3/4 / (3/5+3/4) = 2/3
    assert m.f1 == pytest.approx(2 / 3)
    assert m.macro_f1 == pytest.approx(f1_score(labels, preds, average="macro"))
    assert set(m.to_dict()) >= {"accuracy", "f1", "precision", "recall", "confusion_matrix", "n", "macro_f1",
                                "weighted_f1", "per_class", "labels"}


def test_a_class_never_predicted_scores_zero_not_an_error() -> None:
    m = classification_metrics([0, 1, 2, 2], [0, 1, 1, 1], ["a", "b", "c"])
    assert m.per_class[2].precision == 0.0 and m.per_class[2].recall == 0.0
    assert m.confusion_matrix[2] == [0, 2, 0]


# ---------------------------------------------------------------- class weights

def test_balanced_weights_follow_the_class_counts() -> None:
    labels = [0] * 6 + [1] * 3 + [2] * 1
    assert class_weights("balanced", labels, 3) == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert class_weights("none", labels, 3) is None
    assert class_weights("1,2,3", labels, 3) == [1.0, 2.0, 3.0]
    with pytest.raises(ConfigError, match="gives 2 weights for 3 classes"):
        class_weights("1,2", labels, 3)
    with pytest.raises(ConfigError, match="class 2 has no training review"):
        class_weights("balanced", [0, 1, 1], 3)


@pytest.mark.parametrize("value", ["0,1", "1", "a,b", "balance", "1,-2", "1,nan"])
def test_bad_class_weights_are_refused_at_the_edge(value: str) -> None:
    with pytest.raises(ConfigError, match="train.class_weights"):
        TrainConfig(class_weights=value)


def test_weighted_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 2, 1])
    weights = [1.0, 4.0, 0.5]
    ce = [-torch.log_softmax(logits[i], -1)[labels[i]] for i in range(3)]
    expected = (1.0 * ce[0] + 0.5 * ce[1] + 4.0 * ce[2]) / 3
    loss = weighted_cross_entropy(weights)({"logits": logits}, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # With gradient accumulation the Trainer passes the reviews of the whole step.
    assert weighted_cross_entropy(weights)({"logits": logits}, labels, num_items_in_batch=6).item() == \
        pytest.approx(expected.item() / 2, rel=1e-6)
    plain = weighted_cross_entropy([1.0, 1.0, 1.0])({"logits": logits}, labels)
    assert plain.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


# ---------------------------------------------------------------- stratified subsets

def test_stratified_subsets_keep_the_class_shares(tmp_path: Path) -> None:
    folder = graded_folder(tmp_path / "d", 3, 400, 100, shares=[0.7, 0.2, 0.1])
    cfg = DataConfig(source=str(folder), train_size=100, test_size=50, validation_size=50, stratify=True)
    splits = load_splits(cfg)
    assert Counter(splits.train["label"]) == {0: 70, 1: 20, 2: 10}
    assert Counter(splits.validation["label"]) == {0: 35, 1: 10, 2: 5}
    assert Counter(splits.test["label"]) == {0: 35, 1: 10, 2: 5}
    texts = [set(ds["text"]) for ds in (splits.train, splits.validation)]
    assert not texts[0] & texts[1]
    # Class by class in the shuffled order: the training rows of class 2 are the first 10 of that class.
    plain = load_splits(DataConfig(source=str(folder), train_size=400, test_size=50))
    order = [t for t, label in zip(plain.train["text"], plain.train["label"]) if label == 2]
    assert [t for t, label in zip(splits.train["text"], splits.train["label"]) if label == 2] == order[:10]
    assert [t for t, label in zip(splits.validation["text"], splits.validation["label"]) if label == 2] == \
        order[10:15]


def test_stratify_off_leaves_the_seed_protocol_as_it_is(tmp_path: Path) -> None:
    folder = write_data_folder(tmp_path / "d", make_rows(80, seed=1), make_rows(40, seed=2))
    plain = load_splits(DataConfig(source=str(folder), train_size=30, test_size=20))
    assert plain.labels == BINARY
    assert plain.train.to_dict() == load_splits(DataConfig(source=str(folder), train_size=30, test_size=20,
                                                           stratify=False)).train.to_dict()


# ---------------------------------------------------------------- end to end

@pytest.fixture(scope="module", params=[3, 5])
def graded_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    classes = request.param
    parent = tmp_path_factory.mktemp(f"classes-{classes}")
    data = graded_folder(parent / "data", classes, 400, 100)
    run = parent / "run"
    result = invoke(["train", "--recipe", "smoke", "--data", data, "--labels", ",".join(NAMES[classes]),
                     "--train-size", 300, "--validation-size", 100, "--test-size", 100,
                     "--epochs", 8, "-o", run])
    assert result.exit_code == 0, result.output + result.stderr
    return classes, run


def test_run_folder_carries_the_class_names(graded_run: tuple[int, Path]) -> None:
    classes, run = graded_run
    names = NAMES[classes]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels"] == names
    assert [c["label"] for c in metrics["per_class"]] == names
    assert len(metrics["confusion_matrix"]) == classes and sum(map(sum, metrics["confusion_matrix"])) == 100
    assert metrics["f1"] == pytest.approx(metrics["macro_f1"])
    assert metrics["validation"]["labels"] == names
    # Learned: well above chance (1 / classes). The tiny random base with LoRA tells neutral reviews
    # from the rest first; 8 epochs give 0.66 (3 classes) and 0.63 (5).
    assert metrics["accuracy"] > 1.5 / classes
    adapter = run / "adapter"
    assert json.loads((adapter / "labels.json").read_text()) == {"names": names,
                                                                 "values": [str(i) for i in range(classes)]}
    assert (run / "confusion_matrix.png").stat().st_size > 0


def test_evaluate_prints_every_class_and_draws_the_matrix(graded_run: tuple[int, Path], tmp_path: Path) -> None:
    classes, run = graded_run
    plot = tmp_path / "cm.png"
    result = invoke(["evaluate", run, "--plot", plot])
    assert result.exit_code == 0, result.output + result.stderr
    for name in NAMES[classes]:
        assert name in result.stdout
    assert "support" in result.stdout and plot.read_bytes()[:4] == b"\x89PNG"
    again = invoke(["evaluate", run, "--plot", plot])
    assert_one_line_error(again, 1, "already exists")
    as_json = json.loads(invoke(["evaluate", run, "--json"]).stdout)
    assert as_json["accuracy"] == json.loads((run / "metrics.json").read_text())["accuracy"]


def test_predict_and_merged_pipeline_say_the_names(graded_run: tuple[int, Path], tmp_path: Path) -> None:
    from transformers import pipeline

    classes, run = graded_run
    names = NAMES[classes]
    texts = ["The movie is a masterpiece. The plot moved me deeply.",
             "It runs a little over two hours. I saw it with my family.",
             "The movie was painfully bad. The plot was awful."]
    result = invoke(["predict", run, *texts, "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert set(labels) <= set(names)
    merged = tmp_path / "merged"
    assert invoke(["merge", run, "-o", merged]).exit_code == 0
    config = json.loads((merged / "config.json").read_text())
    assert config["id2label"] == {str(i): n for i, n in enumerate(names)}
    assert json.loads((merged / "labels.json").read_text())["names"] == names
    pipe = pipeline("sentiment-analysis", model=str(merged), tokenizer=str(merged))
    assert [p["label"] for p in pipe(texts)] == labels
    evaluated = json.loads(invoke(["evaluate", merged, "--data", run.parent / "data", "--test-size", 100,
                                   "--max-length", 64, "--json", "--save-predictions", tmp_path / "p.json"]).stdout)
    assert evaluated["labels"] == names
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["labels"] == names and len(saved["label_ids"]) == len(saved["preds"]) == 100
    assert sum(a == b for a, b in zip(saved["label_ids"], saved["preds"])) / 100 == pytest.approx(saved["accuracy"])
    assert evaluated["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["accuracy"])


def test_push_dry_run_card_names_the_classes(graded_run: tuple[int, Path], tmp_path: Path) -> None:
    classes, run = graded_run
    staging = tmp_path / "staging"
    result = invoke(["push", run, "--repo-id", "someone/graded", "--merged", "--dry-run", "--staging-dir", staging])
    assert result.exit_code == 0, result.output + result.stderr
    card = (staging / "README.md").read_text()
    for name in NAMES[classes]:
        assert name in card
    config = json.loads((staging / "config.json").read_text())
    assert list(config["id2label"].values()) == NAMES[classes]


def test_balanced_weights_raise_the_minority_recall(tmp_path: Path) -> None:
    """A 3-class set where the last class is 1 review in 20: the same run with balanced class weights
    recalls more of that class on a balanced test set."""
    train = [{"text": f"{r['text']} (a {i})", "label": r["label"]}
             for i, r in enumerate(make_graded_reviews(400, 1, 3, shares=[0.6, 0.05, 0.35]))]
    test = [{"text": f"{r['text']} (b {i})", "label": r["label"]} for i, r in enumerate(make_graded_reviews(150, 2, 3))]
    data = write_data_folder(tmp_path / "data", train, test)
    recalls = {}
    for weights in ("none", "balanced"):
        out = tmp_path / weights
        result = invoke(["train", "--recipe", "smoke", "--method", "full", "--data", data, "--train-size", 400,
                         "--test-size", 150, "--validation-size", 0, "--epochs", 5, "--class-weights", weights,
                         "-o", out])
        assert result.exit_code == 0, result.output + result.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        recalls[weights] = metrics["per_class"][1]["recall"]
        assert (metrics["class_weights"] is None) == (weights == "none")
    assert recalls["balanced"] > recalls["none"] + 0.5, recalls
