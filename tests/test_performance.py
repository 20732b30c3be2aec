"""The performance choices, guarded by what they decide rather than by the clock: the precision `auto`
picks, the matmul-peak cache, the FLOP count behind MFU, the tokenization cache and its
invalidation, length-grouped batches, the fused-attention setting, gradient checkpointing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, invoke, make_rows
from datasets import Dataset

from peft_sentiment import probe
from peft_sentiment.config import load_config
from peft_sentiment.errors import ConfigError
from peft_sentiment.flops import Shape, forward_flops, model_shape, training_flops, utilization
from peft_sentiment.modeling import build_model
from peft_sentiment.tokens import cache_key, tokenize

# ---------------------------------------------------------------- precision


def no_probe(precision: str) -> float:
    raise AssertionError("the matmul probe must not run for this CPU")


def test_auto_is_bf16_on_a_cpu_with_amx() -> None:
    flags = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert probe.choose_precision("auto", cuda=False, flags=flags, peak=no_probe) == "bf16"


def test_auto_is_fp32_on_a_cpu_without_bf16_instructions() -> None:
    assert probe.choose_precision("auto", cuda=False, flags={"avx2", "fma", "avx512f"}, peak=no_probe) == "fp32"
    assert probe.choose_precision("auto", cuda=False, flags=set(), peak=no_probe) == "fp32"


@pytest.mark.parametrize(("bf16", "expected"), [(400e9, "bf16"), (210e9, "fp32"), (100e9, "fp32")])
def test_auto_with_avx512_bf16_alone_follows_the_probe(bf16: float, expected: str) -> None:
    """Without AMX, bf16 is chosen only when the probe measures it clearly faster than fp32."""
    peaks = {"fp32": 200e9, "bf16": bf16}
    got = probe.choose_precision("auto", cuda=False, flags={"avx512_bf16"}, peak=peaks.__getitem__)
    assert got == expected


def test_auto_on_cuda() -> None:
    assert probe.choose_precision("auto", cuda=True, cuda_bf16=True, peak=no_probe) == "bf16"
    assert probe.choose_precision("auto", cuda=True, cuda_bf16=False, peak=no_probe) == "fp16"


def test_explicit_precision_is_kept_and_fp16_needs_cuda() -> None:
    assert probe.choose_precision("fp32", cuda=False, flags={"amx_bf16"}, peak=no_probe) == "fp32"
    assert probe.choose_precision("fp16", cuda=True, peak=no_probe) == "fp16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        probe.choose_precision("fp16", cuda=False, peak=no_probe)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal of fp16")
def test_cli_refuses_fp16_on_the_cpu(tmp_path: Path) -> None:
    result = invoke(["train", "--recipe", "smoke", "--precision", "fp16", "-o", tmp_path / "run"])
    assert_one_line_error(result, 1, "fp16 needs a CUDA GPU")
    assert not (tmp_path / "run").exists()


def test_peak_is_probed_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path))
    calls: list[str] = []

    def measure(precision: str) -> float:
        calls.append(precision)
        return {"fp32": 1e11, "bf16": 3e11}[precision]

    assert probe.peak_flops("fp32", measure) == 1e11
    assert probe.peak_flops("bf16", measure) == 3e11
    assert probe.peak_flops("fp32", measure) == 1e11  # from the cache
    assert calls == ["fp32", "bf16"]
    cached = json.loads((tmp_path / probe.PEAK_FILE).read_text())
    assert cached == {probe.device_key(): {"fp32": 1e11, "bf16": 3e11}}


def test_cache_off_probes_every_time_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(probe.CACHE_ENV, "off")
    rates = iter([1e11, 2e11])
    assert probe.peak_flops("fp32", lambda p: next(rates)) == 1e11
    assert probe.peak_flops("fp32", lambda p: next(rates)) == 2e11  # probed again
    assert list(tmp_path.iterdir()) == []  # no folder named "off"


def test_the_probe_leaves_the_seeded_global_generator_alone() -> None:
    """A run probes between seeding and drawing LoRA's matrices when the peak is not cached yet: the
    draw must not depend on whether it did."""
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    probe.measure_peak("fp32", size=32, repeats=1)
    assert torch.equal(torch.rand(4), expected)


def test_the_probe_rate_is_the_best_timed_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a scripted clock: 2 n^3 FLOPs over the fastest timed product, the warm-up left out."""
    import types

    ticks = iter([0.0,  # the warm-up product: its end is not read
                  10.0, 14.0, 20.0, 22.0, 30.0, 33.0])  # timed products of 4, 2 and 3 seconds
    monkeypatch.setattr(probe, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    products: list[tuple[tuple[int, ...], torch.dtype]] = []
    real_mm = torch.mm

    def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        products.append((tuple(a.shape) + tuple(b.shape), a.dtype))
        return real_mm(a, b)

    monkeypatch.setattr(torch, "mm", mm)
    assert probe.measure_peak("bf16", size=64, repeats=3) == 2 * 64**3 / 2.0
    assert products == [((64, 64, 64, 64), torch.bfloat16)] * 4
    assert next(ticks, None) is None  # every product timed


def test_the_probe_measures_a_real_rate() -> None:
    """On the real clock, in FLOP/s: the timed products each took at least the best one's time and all
    fit in the call's wall time, so the rate is at least repeats * 2 n^3 / wall seconds."""
    import time

    size, repeats = 128, 3
    start = time.perf_counter()
    flops = probe.measure_peak("fp32", size=size, repeats=repeats)
    wall = time.perf_counter() - start
    assert flops >= repeats * 2 * size**3 / wall


# ---------------------------------------------------------------- FLOP count


def test_shape_of_tiny_distilbert_by_hand() -> None:
    """dim 32, hidden 64, 2 layers: per layer q, k, v, out 4 x 32x32 + lin1 32x64 + lin2 64x32."""
    full = build_model(load_config("smoke", {"method": "full"}), make_texts())
    shape = model_shape(full.model, full.head_modules)
    per_layer = 4 * 32 * 32 + 2 * 32 * 64
    assert shape == Shape(token_weights=2 * per_layer, trainable_token_weights=2 * per_layer,
                          head_weights=32 * 32 + 32 * 2, layers=2, hidden=32, encoder_trains=True)

    lora = build_model(load_config("smoke", {"method": "lora"}), make_texts())  # r = 8 on all six
    lora_per_layer = 4 * (32 * 8 + 8 * 32) + (32 * 8 + 8 * 64) + (64 * 8 + 8 * 32)
    shape = model_shape(lora.model, lora.head_modules)
    assert shape.token_weights == 2 * (per_layer + lora_per_layer)
    assert shape.trainable_token_weights == 2 * lora_per_layer
    assert shape.head_weights == 32 * 32 + 32 * 2  # PEFT's frozen copy of the head is not counted
    assert shape.encoder_trains

    head = build_model(load_config("smoke", {"method": "head"}), make_texts())
    shape = model_shape(head.model, head.head_modules)
    assert shape.trainable_token_weights == 0 and not shape.encoder_trains


def test_flops_formula_by_hand() -> None:
    shape = Shape(token_weights=100, trainable_token_weights=100, head_weights=10, layers=2, hidden=4,
                  encoder_trains=True)
    # forward: 2*100*3 + 2*10 + 4*2*4*9 = 600 + 20 + 288
    assert shape.forward(3) == 908
    # full: forward + weight grads 2*100*3 + head 2*10 + activation grads 2*100*3 + 8*2*4*9
    assert shape.training(3) == 908 + 600 + 20 + 600 + 576
    probe_only = Shape(100, 0, 10, 2, 4, encoder_trains=False)
    assert probe_only.training(3) == 908 + 20
    assert training_flops(shape, [3, 3], epochs=2) == 4 * shape.training(3)
    assert forward_flops(shape, [3, 1]) == shape.forward(3) + shape.forward(1)
    assert utilization(1e12, 10.0, 2e11, processes=1) == 0.5
    assert utilization(1e12, 10.0, 2e11, processes=2) == 0.25
    assert utilization(1e12, 0.0, 2e11) is None


def _product_tolerance(rate: float, rate_step: float, seconds: float, seconds_step: float) -> float:
    """How far rate x seconds may land from the count they were computed from, each of the two rounded
    to its step in metrics.json."""
    return rate * seconds_step / 2 + seconds * rate_step / 2 + rate_step * seconds_step / 4


def test_metrics_report_tokens_and_mfu(smoke_lora) -> None:
    """The rates agree with the counts and the time they come from, rounding aside."""
    import math

    import yaml

    m = smoke_lora.metrics
    epochs = m["train_steps"] / math.ceil(m["n_train"] / m["global_batch_size"])
    samples, seconds = m["n_train"] * epochs, m["train_seconds"]
    assert m["train_samples_per_second"] * seconds == pytest.approx(
        samples, abs=_product_tolerance(m["train_samples_per_second"], 1e-3, seconds, 1e-2))
    assert m["train_tokens_per_second"] * seconds == pytest.approx(
        m["train_tokens"], abs=_product_tolerance(m["train_tokens_per_second"], 0.1, seconds, 1e-2))
    # Real tokens, each epoch: at least [CLS], a word and [SEP] per review, at most max_length.
    max_length = yaml.safe_load((smoke_lora.path / "config.yaml").read_text())["data"]["max_length"]
    assert 3 <= m["train_tokens"] / samples <= max_length
    assert 0 < m["train_mfu"] < 1 and 0 < m["eval_mfu"] < 1
    assert m["peak_flops_per_second"] > 0
    assert m["train_flops"] == pytest.approx(m["train_mfu"] * m["train_seconds"] * m["peak_flops_per_second"],
                                             rel=0.02)
    assert m["train_wall_seconds"] >= m["train_seconds"]  # evaluations are not training time


# ---------------------------------------------------------------- tokenization cache


def make_texts(n: int = 40) -> list[str]:
    return [row["text"] for row in make_rows(n)]


def dataset(n: int = 40, seed: int = 0) -> Dataset:
    return Dataset.from_list(make_rows(n, seed=seed))


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path))
    return tmp_path / "tokenized"


@pytest.fixture()
def tokenizer(tiny_distilbert_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_distilbert_dir)


def test_tokenization_is_cached_and_reused(cache: Path, tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tokenize(dataset(), tokenizer, 32)
    assert len(list(cache.iterdir())) == 1
    assert "length" in first.column_names

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(type(tokenizer), "__call__", refuse)
    again = tokenize(dataset(), tokenizer, 32)
    assert again["input_ids"] == first["input_ids"] and again["label"] == first["label"]


def test_cache_is_invalidated_by_tokenizer_length_and_data(cache: Path, tokenizer, tiny_bert_dirs) -> None:
    from transformers import AutoTokenizer

    base = tokenize(dataset(), tokenizer, 32)
    key = cache_key(dataset(), tokenizer, 32)
    assert cache_key(dataset(), tokenizer, 8) != key
    shorter = tokenize(dataset(), tokenizer, 8)
    assert max(shorter["length"]) <= 8 < max(base["length"])

    other = AutoTokenizer.from_pretrained(tiny_bert_dirs[True])  # same words, BERT's tokenizer
    assert cache_key(dataset(), other, 32) != key
    other.add_tokens(["wonderfully"])
    assert cache_key(dataset(), other, 32) != cache_key(dataset(), AutoTokenizer.from_pretrained(
        tiny_bert_dirs[True]), 32)

    changed = dataset().to_list()
    changed[3]["text"] += " boring"
    assert cache_key(Dataset.from_list(changed), tokenizer, 32) != key
    relabeled = dataset().to_list()
    relabeled[0]["label"] = 1 - relabeled[0]["label"]
    assert cache_key(Dataset.from_list(relabeled), tokenizer, 32) != key
    assert cache_key(dataset(), tokenizer, 32) == key  # and nothing else moves it
    assert len(list(cache.iterdir())) == 2


def test_cache_off(cache: Path, tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(probe.CACHE_ENV, "off")
    tokenize(dataset(), tokenizer, 32)
    assert not cache.exists()


def test_a_damaged_cache_entry_is_rebuilt(cache: Path, tokenizer) -> None:
    expected = list(tokenize(dataset(), tokenizer, 32)["input_ids"])
    entry = next(cache.iterdir())
    for arrow in entry.glob("*.arrow"):
        arrow.write_bytes(b"garbage")
    assert list(tokenize(dataset(), tokenizer, 32)["input_ids"]) == expected


# ---------------------------------------------------------------- batching, attention, checkpointing


@pytest.mark.parametrize("recipe", ["full", "lora", "dora", "qlora", "ia3", "head"])
def test_fast_recipes_choose_the_fast_settings(recipe: str) -> None:
    cfg = load_config(recipe)
    assert cfg.train.precision == "auto"
    assert cfg.trainer["train_sampling_strategy"] == "group_by_length"
    assert cfg.train.attention_dropout == 0.0
    # LoRA dropout (a mask per adapted layer) is the search's choice, not a speed setting:
    # test_config.test_shipped_recipes_take_the_values_the_tuned_benchmark_trained


def test_seed_recipe_is_the_plain_one() -> None:
    cfg = load_config("seed")
    sampling = cfg.trainer.get("train_sampling_strategy", "random")
    assert (cfg.train.precision, sampling, cfg.train.attention_dropout) == ("fp32", "random", None)


def test_length_grouped_batches_are_used(tiny_distilbert_dir: Path, tmp_path: Path, tokenizer) -> None:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from peft_sentiment.train import make_trainer

    cfg = load_config("smoke", {"model.name": str(tiny_distilbert_dir), "model.architecture": None,
                                "model.tokenizer_vocab_size": None})
    built = build_model(cfg)
    data = tokenize(dataset(64), built.tokenizer, 32)
    grouped = make_trainer(built.model, built.tokenizer, load_config(
        "smoke", {"trainer.train_sampling_strategy": "group_by_length"}), tmp_path, data, data)
    assert isinstance(grouped._get_train_sampler(), LengthGroupedSampler)
    plain = make_trainer(built.model, built.tokenizer, cfg, tmp_path, data, data)
    assert not isinstance(plain._get_train_sampler(), LengthGroupedSampler)


@pytest.mark.parametrize(("kind", "key"), [("distilbert", "attention_dropout"),
                                           ("bert", "attention_probs_dropout_prob")])
def test_attention_dropout_reaches_the_model(kind: str, key: str, tiny_distilbert_dir: Path,
                                             tiny_bert_dirs) -> None:
    folder = tiny_distilbert_dir if kind == "distilbert" else tiny_bert_dirs[True]
    overrides = {"model.name": str(folder), "model.architecture": None, "model.tokenizer_vocab_size": None,
                 "method": "full"}
    default = build_model(load_config("smoke", overrides))
    assert getattr(default.model.config, key) == pytest.approx(0.1)
    built = build_model(load_config("smoke", {**overrides, "train.attention_dropout": 0.0}))
    assert getattr(built.model.config, key) == 0.0
    assert built.model.config._attn_implementation == "sdpa"
    dropouts = [m.p for n, m in built.model.named_modules()
                if isinstance(m, torch.nn.Dropout) and "attention" in n and ".output." not in n]
    assert dropouts and all(p == 0.0 for p in dropouts)


def test_attention_dropout_of_a_new_model() -> None:
    built = build_model(load_config("smoke", {"train.attention_dropout": 0.0}), make_texts())
    assert built.model.config.attention_dropout == 0.0


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_checkpointing_trains(method: str, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from peft_sentiment.run import run_training

    seen: list[bool] = []

    class Check(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            seen.append(base.is_gradient_checkpointing)

    cfg = load_config("smoke", {"method": method, "trainer.gradient_checkpointing": True,
                                "trainer.num_train_epochs": 1,
                                "data.train_size": 64, "data.test_size": 32})
    result = run_training(cfg, output=tmp_path / "run", callbacks=[Check()])
    assert result.train.steps == 4
    assert seen == [True] * 4
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_tokens"] > 0


# ---------------------------------------------------------------- prediction


def test_prediction_runs_in_the_chosen_precision(lora_run: Path) -> None:
    from peft_sentiment.predict import load_pipeline, predict
    from peft_sentiment.probe import choose_precision

    texts = [row["text"] for row in make_rows(64, seed=3)]
    fp32 = load_pipeline(lora_run, precision="fp32")
    bf16 = load_pipeline(lora_run, precision="bf16")
    assert next(fp32.model.parameters()).dtype == torch.float32
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    auto = load_pipeline(lora_run)
    expected = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[choose_precision("auto")]
    assert next(auto.model.parameters()).dtype == expected
    exact, fast = predict(fp32, texts), predict(bf16, texts)
    agree = sum(a.label == b.label for a, b in zip(exact, fast)) / len(texts)
    assert agree >= 0.95
    assert max(abs(a.score - b.score) for a, b in zip(exact, fast) if a.label == b.label) < 0.05


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_frozen_base_trains_in_bf16_and_reloads_the_same(method: str, tmp_path: Path) -> None:
    """Computing in bf16, the frozen linear layers are stored in bf16 (autocast rounds them to bf16 for
    every product anyway); the saved adapter on the fp32 base predicts exactly what the run measured."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from peft_sentiment.run import evaluate_run, run_training

    dtypes: dict[str, torch.dtype] = {}
    casts: set[bool] = set()

    def look(built, trainable: int, total: int) -> None:
        for name, module in built.model.named_modules():
            if isinstance(module, torch.nn.Linear):
                dtypes[name] = module.weight.dtype
            if isinstance(module, BaseTunerLayer):
                casts.add(module.cast_input_dtype_enabled)

    cfg = load_config("smoke", {"method": method, "train.precision": "bf16", "trainer.num_train_epochs": 2})
    run = run_training(cfg, output=tmp_path / "run", on_model=look)
    frozen = {n: d for n, d in dtypes.items() if "lora_" not in n and "classifier" not in n}
    assert frozen and set(frozen.values()) == {torch.bfloat16}
    assert {d for n, d in dtypes.items() if "lora_" in n or "classifier" in n} == {torch.float32}
    assert casts == {False}  # no fp32 copy of each adapted layer's input
    again = evaluate_run(tmp_path / "run")
    assert again.metrics.confusion_matrix == run.metrics.confusion_matrix


def test_skipping_the_input_casts_changes_no_product() -> None:
    """Under bf16 autocast, PEFT's cast of each adapted layer's input to fp32 is undone by the product:
    loss and gradients are bit for bit the same without it."""
    from peft_sentiment.modeling import skip_input_casts, store_frozen_linears

    results = []
    for skip in (False, True):
        texts = ["a good film, great acting", "a bad movie, awful plot", "fine and boring"] * 20
        built = build_model(load_config("smoke", {"method": "lora"}), texts)
        store_frozen_linears(built.model, built.head_modules, torch.bfloat16)
        if skip:
            skip_input_casts(built.model)
        batch = built.tokenizer(texts[:4], padding=True, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = built.model(**batch, labels=torch.tensor([1, 0, 0, 1])).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in built.model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)


def test_frozen_base_stays_fp32_in_fp32_and_for_head_only(tmp_path: Path) -> None:
    from peft_sentiment.run import run_training

    for method, precision in (("lora", "fp32"), ("head", "bf16")):
        seen: set[torch.dtype] = set()
        cfg = load_config("smoke", {"method": method, "train.precision": precision,
                                    "trainer.num_train_epochs": 1,
                                    "data.train_size": 32, "data.test_size": 16})
        run_training(cfg, output=tmp_path / f"{method}-{precision}", on_model=lambda b, t, n: seen.update(
            m.weight.dtype for m in b.model.modules() if isinstance(m, torch.nn.Linear)))
        assert seen == {torch.float32}, (method, precision)


def test_evaluation_keeps_dataset_order_with_length_grouping(tmp_path: Path) -> None:
    """Length grouping is for training batches only: predictions come back in the reviews' order."""
    from peft_sentiment.train import predict_dataset

    cfg = load_config("smoke", {"trainer.train_sampling_strategy": "group_by_length",
                                "trainer.per_device_eval_batch_size": 4})
    built = build_model(cfg, make_texts())
    rows = make_rows(64, seed=5)
    data = tokenize(Dataset.from_list(rows), built.tokenizer, 32)
    assert len(set(data["length"])) > 4  # lengths vary, so a length-grouped order would differ
    preds = predict_dataset(built.model, built.tokenizer, data, cfg, tmp_path)
    assert preds.labels.tolist() == [row["label"] for row in rows]
