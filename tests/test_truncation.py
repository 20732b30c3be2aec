"""data.truncation: head, tail and head+tail, the same in training, evaluation, predict, merged folders
and ONNX exports.

The end-to-end data hide each review's verdict in its last sentence, after neutral filler longer than
max_length: a model that reads the head only cannot learn it, one that reads head+tail can.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import assert_one_line_error, invoke, write_data_folder, write_jsonl

from peft_sentiment import truncation
from peft_sentiment.errors import ConfigError

WORDS = [f"w{i}" for i in range(400)]


@pytest.fixture(scope="module")
def tokenizer():
    from peft_sentiment.modeling import train_wordpiece

    # whole words w0..w399, plus "unbelievable" that the small vocabulary splits into pieces
    texts = [" ".join(WORDS)] * 3 + ["un be liev able unbel iev able"]
    return train_wordpiece(texts, 600)


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_head_tail_keeps_the_first_and_last_tokens(tokenizer) -> None:
    truncation.configure(tokenizer, "head+tail", 5)
    text = " ".join(WORDS[:100])
    (short,) = truncation.cut(tokenizer, [text], 20)
    budget = 20 - tokenizer.num_special_tokens_to_add(pair=False)
    assert short == " ".join(WORDS[:5] + WORDS[100 - (budget - 5):100])
    assert ids(tokenizer, short) == ids(tokenizer, text)[:5] + ids(tokenizer, text)[-(budget - 5):]
    # the model then sees [CLS] head tail [SEP], untruncated by the tokenizer
    encoded = tokenizer(truncation.cut(tokenizer, [text], 20), truncation=True, max_length=20)["input_ids"][0]
    assert len(encoded) == 20 and encoded[1:-1] == ids(tokenizer, short)


def test_head_tail_cuts_between_words_and_leaves_short_texts(tokenizer) -> None:
    truncation.configure(tokenizer, "head+tail", 3)
    assert len(ids(tokenizer, "unbelievable")) > 1  # a word in several pieces
    text = "w1 w2 unbelievable " + " ".join(WORDS[10:40]) + " unbelievable w7"
    (short,) = truncation.cut(tokenizer, [text], 12)
    kept = ids(tokenizer, short)
    full = ids(tokenizer, text)
    # the head stops before the split word, the tail starts after it: whole words, within the budget
    words = short.split()
    assert words[:2] == ["w1", "w2"] and words[2:] == text.split()[-len(words[2:]):]
    assert len(kept) <= 10 and kept == full[:2] + full[len(full) - (len(kept) - 2):]
    assert truncation.cut(tokenizer, ["w1 w2 w3"], 12) == ["w1 w2 w3"]


def test_head_and_tail_leave_texts_to_the_tokenizer(tokenizer) -> None:
    text = " ".join(WORDS[:50])
    truncation.configure(tokenizer, "tail", 128)
    assert truncation.cut(tokenizer, [text], 10) == [text]
    last = tokenizer(text, truncation=True, max_length=10)["input_ids"]
    assert last[1:-1] == ids(tokenizer, text)[-8:]
    truncation.configure(tokenizer, "head", 128)
    assert tokenizer(text, truncation=True, max_length=10)["input_ids"][1:-1] == ids(tokenizer, text)[:8]
    assert truncation.of(tokenizer) == truncation.Truncation("head")


def test_the_rule_travels_with_the_saved_tokenizer(tokenizer, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from peft_sentiment.tokens import tokenizer_fingerprint

    prints = {}
    for strategy in truncation.STRATEGIES:
        truncation.configure(tokenizer, strategy, 7)
        tokenizer.save_pretrained(tmp_path / strategy)
        loaded = AutoTokenizer.from_pretrained(tmp_path / strategy)
        assert truncation.of(loaded) == truncation.of(tokenizer)
        prints[strategy] = tokenizer_fingerprint(loaded)
    assert len(set(prints.values())) == 3  # the tokenization cache tells them apart
    assert truncation.of(loaded) == truncation.Truncation("head+tail", 7)


def test_config_checks_the_truncation_keys() -> None:
    from peft_sentiment.config import load_config

    with pytest.raises(ConfigError, match="data.truncation"):
        load_config("smoke", {"data.truncation": "middle"})
    with pytest.raises(ConfigError, match="data.head_tokens 62 leaves no room"):
        load_config("smoke", {"data.truncation": "head+tail", "data.head_tokens": 62})
    assert load_config("smoke", {"data.head_tokens": 300}).data.truncation == "head"  # unused: not checked


def verdict_rows(n: int, seed: int) -> list[dict]:
    """Neutral filler (far more than 64 tokens), then the verdict as the review's last words."""
    rng = random.Random(seed)
    filler = ["it was shown on a sunday", "the cinema was half full", "my friend chose the seats",
              "we came by train", "the tickets were cheap", "it rained all day"]
    rows = []
    for i in range(n):
        label = i % 2
        verdict = rng.choice(["wonderful", "brilliant", "superb"] if label else ["awful", "boring", "dreadful"])
        body = ". ".join(rng.choice(filler) for _ in range(14))
        rows.append({"text": f"{body.capitalize()}. In short it was {verdict}.", "label": label})
    return rows


@pytest.fixture(scope="module")
def verdict_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_data_folder(tmp_path_factory.mktemp("verdict") / "data", verdict_rows(320, 0),
                               verdict_rows(100, 1))
    write_jsonl(folder / "validation.jsonl", verdict_rows(60, 2))
    return folder


@pytest.fixture(scope="module")
def head_tail_run(verdict_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("head-tail") / "run"
    result = invoke(["train", "--recipe", "smoke", "--method", "full", "--data", str(verdict_data),
                     "--train-size", "320", "--test-size", "100", "--validation-size", "60",
                     "--truncation", "head+tail", "--head-tokens", "16", "--epochs", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_head_tail_training_reads_the_end_of_long_reviews(head_tail_run: Path, verdict_data: Path) -> None:
    from transformers import pipeline

    from peft_sentiment.predict import load_pipeline, predict

    metrics = json.loads((head_tail_run / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9  # the verdict lies beyond the first 64 tokens of every review
    config = json.loads((head_tail_run / "model" / "tokenizer_config.json").read_text())
    assert config[truncation.KEY] == {"strategy": "head+tail", "head_tokens": 16}

    tests = [json.loads(line) for line in (verdict_data / "test.jsonl").read_text().splitlines()]
    texts, labels = [r["text"] for r in tests], [r["label"] for r in tests]
    pipe = load_pipeline(head_tail_run)
    found = predict(pipe, texts)
    accuracy = sum((p.label == "POSITIVE") == bool(y) for p, y in zip(found, labels)) / len(labels)
    assert accuracy == pytest.approx(metrics["accuracy"])  # predict reads reviews as training did
    assert all(p.truncated for p in found)

    # A plain pipeline reads the start only, where nothing tells the classes apart.
    # The model folder carries the rule: loaded on its own it reads reviews as training did.
    assert [p.label for p in predict(load_pipeline(head_tail_run / "model"), texts)] == [p.label for p in found]
    result = invoke(["predict", str(head_tail_run), texts[0]])
    assert "truncated to their first 16 and last 46 tokens" in result.stderr

    # A plain pipeline reads the start only, where nothing tells the classes apart.
    plain = pipeline("text-classification", model=str(head_tail_run / "model"), truncation=True, max_length=64)
    plain_acc = sum((o["label"] == "POSITIVE") == bool(y) for o, y in zip(plain(texts), labels)) / len(labels)
    assert plain_acc < 0.75


def test_head_tail_survives_evaluate_and_onnx_export(head_tail_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from peft_sentiment.onnx_backend import OnnxClassifier
    from peft_sentiment.run import evaluate_run

    metrics = json.loads((head_tail_run / "metrics.json").read_text())
    assert evaluate_run(head_tail_run).metrics.accuracy == pytest.approx(metrics["accuracy"])
    out = tmp_path / "onnx"
    result = invoke(["export", str(head_tail_run), "--format", "onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    check = json.loads((out / "export_check.json").read_text())
    assert check["agreement"] == 1.0
    assert json.loads((out / "export.json").read_text())["truncation"] == "head+tail"
    assert truncation.of(OnnxClassifier(out).tokenizer) == truncation.Truncation("head+tail", 16)
    assert evaluate_run(out).metrics.accuracy == pytest.approx(metrics["accuracy"])


def test_evaluate_has_no_truncation_option(head_tail_run: Path) -> None:
    result = invoke(["evaluate", str(head_tail_run), "--truncation", "head"])
    assert_one_line_error(result, 2, "--truncation")


def test_tune_may_vary_how_much_of_a_review_is_read() -> None:
    pytest.importorskip("optuna")
    from peft_sentiment.config import load_config
    from peft_sentiment.tune import TuneSpec, plan

    space = {"data.truncation": {"choices": ["head", "tail", "head+tail"]}, "data.max_length": {"choices": [48, 64]}}
    assert set(plan(TuneSpec(recipe="smoke", overrides={"tune": space, "data.head_tokens": 16})).space) == set(space)
    with pytest.raises(ConfigError, match="tune.data.shuffle_seed cannot be tuned"):
        plan(TuneSpec(recipe="smoke", overrides={"tune": {"data.shuffle_seed": {"choices": [1, 2]}}}))
    assert load_config("smoke").data.truncation == "head"
