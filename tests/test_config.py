"""Recipes, overrides and typed validation (peft_sentiment.config), and the shipped smoke data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from peft_sentiment.config import (
    DEFAULT_TRAINER,
    TRAINER_FLAGS,
    DataConfig,
    LoraConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    available_recipes,
    build,
    config_to_dict,
    load_config,
    parse_override,
    recipes_dir,
    save_config,
)
from peft_sentiment.errors import ConfigError
from peft_sentiment.train import training_arguments

REPO = Path(__file__).resolve().parent.parent


def write_recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- shipped recipes


def test_shipped_recipes_are_the_repository_recipes() -> None:
    assert recipes_dir().resolve() == (REPO / "recipes").resolve()
    assert available_recipes() == ["dora", "full", "head", "ia3", "lora", "qlora", "seed", "smoke", "sst5-full",
                                   "sst5-lora"]


@pytest.mark.parametrize("name", ["full", "lora", "qlora", "dora", "ia3", "head", "seed", "smoke", "sst5-full",
                                  "sst5-lora"])
def test_every_shipped_recipe_loads_by_name_and_by_path(name: str) -> None:
    by_name = load_config(name)
    by_path = load_config(REPO / "recipes" / f"{name}.yaml")
    assert isinstance(by_name, RunConfig)
    assert by_name == by_path
    # The recipe file names its own method.
    assert by_name.method == {"seed": "full", "smoke": "lora"}.get(name, name.removeprefix("sst5-"))


def test_seed_recipe_is_the_blog_recipe_exactly() -> None:
    cfg = load_config("seed")
    assert cfg.method == "full"
    assert cfg.model.name == "distilbert-base-uncased"
    assert cfg.model.random_init is False and cfg.model.architecture is None
    assert cfg.data == DataConfig(source="stanfordnlp/imdb", text_column="text", label_column="label",
                                  train_split="train", test_split="test", train_size=3000,
                                  test_size=300, shuffle_seed=42, max_length=512,
                                  validation_size=500)  # the 500 after the 3000: the seed protocol's rows stay
    assert cfg.train.seed == 42 and cfg.train.precision == "fp32"
    t = cfg.trainer
    assert t["learning_rate"] == 2e-5 and isinstance(t["learning_rate"], float)
    assert t["per_device_train_batch_size"] == 16
    assert t["per_device_eval_batch_size"] == 16
    assert t["num_train_epochs"] == 2.0
    assert t["weight_decay"] == 0.01
    assert t["warmup_steps"] == 0.0
    assert t["lr_scheduler_type"] == "linear"
    assert t["train_sampling_strategy"] == "random"
    args = training_arguments(cfg, Path("unused"), evaluate=True)  # what the Trainer gets
    assert (args.learning_rate, args.per_device_train_batch_size, args.num_train_epochs) == (2e-5, 16, 2.0)
    assert (args.weight_decay, args.warmup_steps, args.seed, args.bf16) == (0.01, 0, 42, False)
    assert args.gradient_accumulation_steps == 1 and args.train_sampling_strategy == "random"


SEARCHED = ("learning_rate", "num_train_epochs", "weight_decay", "warmup_steps")  # full.yaml's tune space


def test_full_recipe_is_the_seed_recipe_computed_fast_with_searched_optimizer_values() -> None:
    """The seed recipe's data, model and batches; fast compute (precision, batching, no dropout on
    attention probabilities); learning rate, epochs, weight decay and warmup from the search."""
    fast, seed = load_config("full"), load_config("seed")
    assert fast.method == seed.method == "full"
    assert fast.data == seed.data and fast.model == seed.model
    assert fast.train.precision == "auto" and fast.trainer["train_sampling_strategy"] == "group_by_length"
    assert dataclasses.replace(seed.train, precision="auto", attention_dropout=0.0) == fast.train
    compute = {"train_sampling_strategy": "group_by_length",
               "per_device_eval_batch_size": fast.trainer["per_device_eval_batch_size"]}
    searched = {k: fast.trainer[k] for k in SEARCHED}
    assert {**seed.trainer, **compute, **searched} == fast.trainer


@pytest.mark.parametrize("method", ["full", "lora", "dora", "qlora", "ia3", "head"])
def test_shipped_recipes_take_the_values_the_tuned_benchmark_trained(method: str) -> None:
    """benchmarks/tuned/recipes holds each study's best trial at full fidelity; the shipped recipe
    is that recipe, its search space kept."""
    shipped = load_config(method)
    tuned = load_config(Path(__file__).parents[1] / "benchmarks" / "tuned" / "recipes" / f"{method}.yaml")
    assert dataclasses.replace(shipped, tune=tuned.tune) == tuned
    assert shipped.tune  # the space stays for the next search


def test_the_bf16_check_is_the_tuned_full_recipe_with_bf16_forced() -> None:
    """benchmarks/tuned/full-bf16.yaml differs from the tuned full recipe in train.precision alone."""
    tuned = Path(__file__).parents[1] / "benchmarks" / "tuned"
    full = load_config(tuned / "recipes" / "full.yaml")
    check = load_config(tuned / "full-bf16.yaml")
    assert check.train.precision == "bf16"
    assert dataclasses.replace(check, train=dataclasses.replace(check.train, precision=full.train.precision)) == full


def test_lora_recipe_values() -> None:
    cfg = load_config("lora")
    assert cfg.method == "lora"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules) == (8, 16, None)
    assert cfg.trainer["learning_rate"] == pytest.approx(1.21e-3, rel=1e-2)
    assert (cfg.data.train_size, cfg.data.test_size, cfg.data.shuffle_seed) == (3000, 300, 42)


def test_smoke_recipe_is_offline() -> None:
    cfg = load_config("smoke")
    assert cfg.data.source == "builtin:smoke"
    assert (cfg.data.train_size, cfg.data.test_size) == (400, 100)
    assert cfg.model.architecture is not None and cfg.model.architecture["model_type"] == "distilbert"
    assert cfg.model.builds_new_weights
    assert cfg.model.tokenizer_vocab_size == 300


def test_method_without_recipe_uses_that_methods_recipe() -> None:
    assert load_config(None, {"method": "full"}) == load_config("full")
    assert load_config(None, {"method": "lora"}) == load_config("lora")
    assert load_config(None) == load_config("lora")  # the default method is lora


# ---------------------------------------------------------------- precedence


def test_precedence_option_over_recipe_over_default(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "method: full\ntrainer:\n  learning_rate: 0.1\n"
                                    "  per_device_train_batch_size: 8\ndata:\n  train_size: 50\n")
    cfg = load_config(recipe, {"trainer.learning_rate": 0.5, "data.test_size": 7})
    assert cfg.trainer["learning_rate"] == 0.5  # override beats the recipe
    assert cfg.data.test_size == 7  # override beats the default
    assert cfg.trainer["per_device_train_batch_size"] == 8  # recipe beats the default
    assert cfg.data.train_size == 50
    # Defaults when nobody sets them.
    assert cfg.trainer["per_device_eval_batch_size"] == DEFAULT_TRAINER["per_device_eval_batch_size"]
    assert cfg.trainer["weight_decay"] == DEFAULT_TRAINER["weight_decay"]
    assert cfg.train == TrainConfig()
    assert cfg.lora == LoraConfig()
    assert cfg.method == "full"


def test_override_of_method_beats_recipe_method() -> None:
    assert load_config("smoke", {"method": "full"}).method == "full"
    assert load_config("full", {"method": "lora"}).method == "lora"


def test_override_creates_missing_sections(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "method: lora\n")
    cfg = load_config(recipe, {"lora.r": 4, "lora.target_modules": "q_lin, v_lin"})
    assert cfg.lora.r == 4
    assert cfg.lora.target_modules == ("q_lin", "v_lin")


@pytest.mark.parametrize("text", ["", "# method: lora\n", "\n\n"])
def test_empty_recipe_is_refused(tmp_path: Path, text: str) -> None:
    """An empty file is a mistake (a wrong path, a failed write), not a request for every default."""
    with pytest.raises(ConfigError, match="recipe .*recipe.yaml is empty"):
        load_config(write_recipe(tmp_path, text))


# ---------------------------------------------------------------- coercion and validation


def test_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    # PyYAML reads 1e-3 (no dot) as the string "1e-3".
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"
    cfg = load_config(write_recipe(tmp_path, "trainer:\n  learning_rate: 1e-3\n  num_train_epochs: 3\n"))
    assert cfg.trainer["learning_rate"] == pytest.approx(0.001) and isinstance(cfg.trainer["learning_rate"], float)
    epochs = cfg.trainer["num_train_epochs"]
    assert epochs == 3.0 and isinstance(epochs, float)  # int -> float, TrainingArguments' type
    key, value = parse_override("trainer.learning_rate=1e-4")
    assert load_config("smoke", {key: value}).trainer["learning_rate"] == pytest.approx(1e-4)


def test_parse_override_reads_yaml_values() -> None:
    assert parse_override("train.lr=1.0e-4") == ("train.lr", 1e-4)
    assert parse_override("data.train_size=64") == ("data.train_size", 64)
    assert parse_override("train.group_by_length=true") == ("train.group_by_length", True)
    assert parse_override(" model.name = foo ")[0] == "model.name"
    assert parse_override("model.tokenizer=") == ("model.tokenizer", None)
    assert parse_override("model.architecture={model_type: bert, hidden_size: 32}") == (
        "model.architecture", {"model_type": "bert", "hidden_size": 32})


@pytest.mark.parametrize("item", ["train.lr", "=3", "  =x", ""])
def test_parse_override_rejects_bad_syntax(item: str) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_override(item)


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("train:\n  lrr: 0.1\n", ["lrr", "known:"]),
        ("trian:\n  lr: 0.1\n", ["trian"]),
        ("data:\n  train_sise: 10\n", ["train_sise"]),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_recipe(tmp_path, text))
    assert "unknown key" in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("trainer:\n  per_device_train_batch_size: big\n",
         ["trainer.per_device_train_batch_size", "integer", "'big'"]),
        ("trainer:\n  per_device_train_batch_size: 2.5\n", ["trainer.per_device_train_batch_size", "integer"]),
        ("trainer:\n  per_device_train_batch_size: true\n", ["trainer.per_device_train_batch_size", "integer"]),
        ("trainer:\n  learning_rate: fast\n", ["trainer.learning_rate", "number", "'fast'"]),
        ("trainer:\n  learning_rate: true\n", ["trainer.learning_rate", "number"]),
        ("trainer:\n  gradient_checkpointing: 1\n", ["trainer.gradient_checkpointing", "true or false"]),
        ("trainer:\n  lr_scheduler_type: step\n", ["lr_scheduler_type='step'", "not a valid SchedulerType"]),
        ("trainer:\n  optim: sgdd\n", ["optim='sgdd'", "not a valid OptimizerNames"]),
        ("trainer:\n  report_to: wandbb\n", ["trainer.report_to", "'wandbb'"]),
        ("trainer: [1]\n", ["trainer", "mapping"]),
        ("train:\n  lr: fast\n", ["trainer.learning_rate", "number", "'fast'"]),  # the legacy spelling
        ("train:\n  precision: fp8\n", ["train.precision", "'fp8'"]),
        ("method: adalora\n", ["method", "'adalora'"]),
        ("model:\n  name: 3\n", ["model.name", "string"]),
        ("lora:\n  target_modules: [1, 2]\n", ["lora.target_modules", "list of strings"]),
        ("model:\n  architecture: [a]\n", ["model.architecture", "mapping"]),
        ("train: 5\n", ["train", "mapping"]),
        ("- a\n- b\n", ["mapping"]),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_recipe(tmp_path, text))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"data.train_size": 0}, "data.train_size must be positive, got 0"),
        ({"data.test_size": -3}, "data.test_size must be positive, got -3"),
        ({"data.max_length": 0}, "data.max_length must be positive"),
        ({"data.text_column": ""}, "data.text_column must not be empty"),
        ({"trainer.learning_rate": 0}, "trainer.learning_rate must be above 0, got 0"),
        ({"trainer.num_train_epochs": -1}, "trainer.num_train_epochs must be above 0, got -1"),
        ({"trainer.per_device_train_batch_size": 0}, "trainer.per_device_train_batch_size must be at least 1"),
        ({"trainer.gradient_accumulation_steps": 0}, "trainer.gradient_accumulation_steps must be at least 1"),
        ({"trainer.weight_decay": -0.1}, "trainer.weight_decay must be at least 0, got -0.1"),
        ({"trainer.max_grad_norm": -1}, "trainer.max_grad_norm must be at least 0, got -1"),
        ({"trainer.warmup_steps": -1}, "warmup_steps=-1.0: Got warmup_steps = -1.0"),
        ({"trainer.momentum": 0.9}, "unknown key 'trainer.momentum'"),
        ({"trainer.learnin_rate": 0.1}, "did you mean learning_rate?"),
        ({"trainer.bf16": True}, "trainer.bf16 is set by peft-sentiment: use train.precision"),
        ({"trainer.hub_token": "hf_x"}, "never put a token in a recipe"),
        ({"trainer.load_best_model_at_end": True}, "use train.keep_best or train.early_stopping_patience"),
        ({"train.keep_best": True, "data.validation_size": 0}, "train.keep_best chooses the epoch on validation"),
        ({"train.early_stopping_patience": 0}, "train.early_stopping_patience must be at least 1, got 0"),
        ({"train.keep_best": True, "train.save_steps": 5}, "cannot be combined with keep_best"),
        ({"data.validation_size": -1}, "data.validation_size must not be negative, got -1"),
        ({"lora.r": 0}, "lora.r must be positive"),
        ({"lora.alpha": -2}, "lora.alpha must be positive"),
        ({"lora.dropout": 1.0}, "lora.dropout must be in [0, 1)"),
        ({"lora.target_modules": []}, "lora.target_modules must name at least one module"),
        ({"model.name": ""}, "model.name must not be empty"),
        ({"model.architecture": {"dim": 32}}, "model.architecture needs a model_type"),
        ({"model.tokenizer_vocab_size": 50}, "model.tokenizer_vocab_size must be at least 100"),
    ],
)
def test_values_are_validated(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("smoke", overrides)
    assert fragment in str(info.value)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "method: lora\ntrainer:\n  learning_rate: [0.1\n  seed: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(recipe)
    assert "not valid YAML" in str(info.value)
    assert "line" in str(info.value)


def test_missing_recipes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'nope'") as info:
        load_config("nope")
    assert "dora, full, head, ia3, lora, qlora, seed, smoke" in str(info.value)
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(tmp_path)  # a folder is not a recipe


def test_dotted_override_into_a_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        load_config("smoke", {"train.seed.x": 1})
    with pytest.raises(ConfigError, match="bad key"):
        load_config("smoke", {"train..seed": 1})


def test_configs_are_frozen() -> None:
    cfg = load_config("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.method = "full"  # type: ignore[misc]


# ---------------------------------------------------------------- saving


@pytest.mark.parametrize("name", ["full", "lora", "qlora", "dora", "ia3", "head", "seed", "smoke"])
def test_saved_config_reads_back_equal(tmp_path: Path, name: str) -> None:
    cfg = load_config(name, {"lora.target_modules": ["q_lin", "v_lin"], "trainer.learning_rate": "3e-4",
                             "trainer.report_to": "tensorboard,mlflow"})
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    back = build(RunConfig, yaml.safe_load(path.read_text()))
    assert back == cfg
    assert back.lora.target_modules == ("q_lin", "v_lin")
    assert config_to_dict(cfg)["lora"]["target_modules"] == ["q_lin", "v_lin"]


def test_build_checks_nested_dataclasses() -> None:
    cfg = build(RunConfig, {"data": {"source": "x"}, "model": {"name": "m", "random_init": True}})
    assert cfg.data == DataConfig(source="x")
    assert cfg.model == ModelConfig(name="m", random_init=True)
    assert cfg.model.builds_new_weights


# ---------------------------------------------------------------- shipped synthetic data


def test_shipped_smoke_data_is_what_make_reviews_generates(tmp_path: Path) -> None:
    from peft_sentiment.synthetic import SMOKE_DIR, make_reviews, write_smoke_data

    write_smoke_data(tmp_path)
    for split in ("train", "test"):
        shipped = (SMOKE_DIR / f"{split}.jsonl").read_bytes()
        assert shipped == (tmp_path / f"{split}.jsonl").read_bytes(), split
    rows = make_reviews(400, 1)
    assert sum(r["label"] for r in rows) == 200  # balanced
    assert make_reviews(10, 3) == make_reviews(10, 3)
    assert make_reviews(10, 3) != make_reviews(10, 4)


def test_model_folder_with_architecture_is_refused(tmp_path: Path) -> None:
    """A recipe that builds a model from `architecture` must not silently ignore a --model folder."""
    with pytest.raises(ConfigError, match="model.architecture=null"):
        load_config("smoke", {"model.name": str(tmp_path)})


def test_recipe_name_wins_over_a_folder_of_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run folder called `lora` in the working directory does not hide the lora recipe."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lora").mkdir()
    assert load_config("lora").method == "lora"
    (tmp_path / "mine").write_text("method: head\n")  # a file without a suffix is still a path
    assert load_config("mine").method == "head"


# ---------------------------------------------------------------- the trainer: passthrough


def test_any_training_arguments_field_passes_through(tmp_path: Path) -> None:
    """No code knows these options: the recipe's trainer: section reaches TrainingArguments as it is."""
    recipe = write_recipe(tmp_path, "method: lora\ntrainer:\n  gradient_accumulation_steps: 4\n"
                                    "  max_grad_norm: 0.5\n  optim: adafactor\n  label_smoothing_factor: 0.1\n")
    cfg = load_config(recipe, {"trainer.lr_scheduler_kwargs": {"num_cycles": 2}})
    args = training_arguments(cfg, tmp_path / "out", evaluate=False)
    assert args.gradient_accumulation_steps == 4 and args.max_grad_norm == 0.5
    assert args.optim == "adafactor" and args.label_smoothing_factor == 0.1
    assert args.lr_scheduler_kwargs == {"num_cycles": 2}
    assert args.learning_rate == DEFAULT_TRAINER["learning_rate"]  # the project's default underneath


def test_the_project_owns_its_arguments(tmp_path: Path) -> None:
    cfg = load_config("smoke", {"train.seed": 7, "train.save_steps": 3, "train.keep_checkpoints": 1})
    args = training_arguments(cfg, tmp_path / "out", evaluate=True)
    assert args.seed == 7 and args.save_strategy == "steps" and args.save_steps == 3
    assert args.save_total_limit == 1 and args.eval_strategy == "epoch" and args.disable_tqdm
    assert args.report_to == []  # nothing is tracked unless asked for


def test_legacy_train_keys_still_load(tmp_path: Path) -> None:
    """config.yaml of runs made before the trainer: section."""
    old = write_recipe(tmp_path, "method: lora\ntrain:\n  lr: 0.001\n  batch_size: 8\n  epochs: 1\n"
                                 "  warmup_ratio: 0.06\n  scheduler: cosine\n  group_by_length: true\n  seed: 3\n")
    cfg = load_config(old)
    assert cfg.train.seed == 3
    assert cfg.trainer == {**DEFAULT_TRAINER, "learning_rate": 0.001, "per_device_train_batch_size": 8,
                           "num_train_epochs": 1.0, "warmup_steps": 0.06, "lr_scheduler_type": "cosine",
                           "train_sampling_strategy": "group_by_length"}


def test_legacy_and_new_key_in_one_recipe_is_refused(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "train:\n  lr: 0.1\ntrainer:\n  learning_rate: 0.2\n")
    with pytest.raises(ConfigError, match="train.lr and trainer.learning_rate set the same option"):
        load_config(recipe)


def test_legacy_override_beats_the_recipes_trainer_key() -> None:
    cfg = load_config("lora", {"train.lr": 0.1, "train.group_by_length": False})
    assert cfg.trainer["learning_rate"] == 0.1 and cfg.trainer["train_sampling_strategy"] == "random"


def test_trainer_flags_name_real_fields_of_their_type() -> None:
    """The options of TRAINER_FLAGS are TrainingArguments fields, with the type transformers declares."""
    import typing

    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    for name, flag in TRAINER_FLAGS.items():
        declared = hints[name]
        if isinstance(flag.kind, tuple):
            for choice in flag.kind:  # every choice is a value transformers accepts
                TrainingArguments(output_dir="x", **{name: choice})
        else:
            assert flag.kind is declared or flag.kind in typing.get_args(declared), (name, declared)


def test_explicit_model_is_not_ignored_by_an_architecture_recipe() -> None:
    with pytest.raises(ConfigError, match="--model /nonexistent/dir: this recipe builds a new model"):
        load_config("smoke", {"model.name": "/nonexistent/dir"})
    cfg = load_config("smoke", {"model.name": "x", "model.architecture": None, "model.tokenizer_vocab_size": None})
    assert cfg.model.name == "x" and cfg.model.architecture is None
