"""Recipes, overrides and typed validation (peft_sentiment.config), and the shipped smoke data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from peft_sentiment.config import (
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

REPO = Path(__file__).resolve().parent.parent


def write_recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- shipped recipes


def test_shipped_recipes_are_the_repository_recipes() -> None:
    assert recipes_dir().resolve() == (REPO / "recipes").resolve()
    assert available_recipes() == ["dora", "full", "head", "ia3", "lora", "qlora", "seed", "smoke"]


@pytest.mark.parametrize("name", ["full", "lora", "qlora", "dora", "ia3", "head", "seed", "smoke"])
def test_every_shipped_recipe_loads_by_name_and_by_path(name: str) -> None:
    by_name = load_config(name)
    by_path = load_config(REPO / "recipes" / f"{name}.yaml")
    assert isinstance(by_name, RunConfig)
    assert by_name == by_path
    # The recipe file names its own method.
    assert by_name.method == {"seed": "full", "smoke": "lora"}.get(name, name)


def test_seed_recipe_is_the_blog_recipe_exactly() -> None:
    cfg = load_config("seed")
    assert cfg.method == "full"
    assert cfg.model.name == "distilbert-base-uncased"
    assert cfg.model.random_init is False and cfg.model.architecture is None
    assert cfg.data == DataConfig(source="stanfordnlp/imdb", text_column="text", label_column="label",
                                  train_split="train", test_split="test", train_size=3000,
                                  test_size=300, shuffle_seed=42, max_length=512)
    t = cfg.train
    assert t.lr == 2e-5 and isinstance(t.lr, float)
    assert t.batch_size == 16
    assert t.eval_batch_size == 16
    assert t.epochs == 2.0
    assert t.weight_decay == 0.01
    assert t.warmup_ratio == 0.0
    assert t.scheduler == "linear"
    assert t.seed == 42
    assert t.precision == "fp32"
    assert t.group_by_length is False


def test_full_recipe_is_the_seed_recipe_with_fast_compute_only() -> None:
    """Only how it computes differs: precision, batching, no dropout on attention probabilities."""
    fast, seed = load_config("full"), load_config("seed")
    assert fast.method == seed.method == "full"
    assert fast.data == seed.data and fast.model == seed.model
    assert fast.train.precision == "auto" and fast.train.group_by_length is True
    same = dict(precision="auto", group_by_length=True, eval_batch_size=fast.train.eval_batch_size,
                attention_dropout=0.0)
    assert dataclasses.replace(seed.train, **same) == fast.train


def test_lora_recipe_values() -> None:
    cfg = load_config("lora")
    assert cfg.method == "lora"
    assert cfg.lora == LoraConfig(r=16, alpha=32, dropout=0.0, target_modules=None)
    assert cfg.train.lr == 5e-4
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
    recipe = write_recipe(tmp_path, "method: full\ntrain:\n  lr: 0.1\n  batch_size: 8\n"
                                    "data:\n  train_size: 50\n")
    cfg = load_config(recipe, {"train.lr": 0.5, "data.test_size": 7})
    assert cfg.train.lr == 0.5  # override beats the recipe
    assert cfg.data.test_size == 7  # override beats the default
    assert cfg.train.batch_size == 8  # recipe beats the default
    assert cfg.data.train_size == 50
    default = TrainConfig()
    assert cfg.train.eval_batch_size == default.eval_batch_size  # default when nobody sets it
    assert cfg.train.weight_decay == default.weight_decay
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


def test_empty_recipe_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write_recipe(tmp_path, "")) == RunConfig()


# ---------------------------------------------------------------- coercion and validation


def test_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    # PyYAML reads 1e-3 (no dot) as the string "1e-3".
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"
    cfg = load_config(write_recipe(tmp_path, "train:\n  lr: 1e-3\n  epochs: 3\n"))
    assert cfg.train.lr == pytest.approx(0.001) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3.0 and isinstance(cfg.train.epochs, float)  # int -> float
    key, value = parse_override("train.lr=1e-4")
    assert load_config("smoke", {key: value}).train.lr == pytest.approx(1e-4)


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
        ("train:\n  batch_size: big\n", ["train.batch_size", "integer", "'big'"]),
        ("train:\n  batch_size: 2.5\n", ["train.batch_size", "integer"]),
        ("train:\n  batch_size: true\n", ["train.batch_size", "integer"]),
        ("train:\n  lr: fast\n", ["train.lr", "number", "'fast'"]),
        ("train:\n  lr: true\n", ["train.lr", "number"]),
        ("train:\n  group_by_length: 1\n", ["train.group_by_length", "true or false"]),
        ("train:\n  scheduler: step\n", ["train.scheduler", "linear", "'step'"]),
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
        ({"train.lr": 0}, "train.lr must be positive"),
        ({"train.epochs": -1}, "train.epochs must be positive"),
        ({"train.batch_size": 0}, "train.batch_size must be positive"),
        ({"train.weight_decay": -0.1}, "train.weight_decay must not be negative"),
        ({"train.warmup_ratio": 1.0}, "train.warmup_ratio must be in [0, 1)"),
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
    recipe = write_recipe(tmp_path, "method: lora\ntrain:\n  lr: [0.1\n  seed: 3\n")
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
    with pytest.raises(ConfigError, match="'lr' is not a section"):
        load_config("smoke", {"train.lr.x": 1})
    with pytest.raises(ConfigError, match="bad key"):
        load_config("smoke", {"train..lr": 1})


def test_configs_are_frozen() -> None:
    cfg = load_config("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.method = "full"  # type: ignore[misc]


# ---------------------------------------------------------------- saving


@pytest.mark.parametrize("name", ["full", "lora", "qlora", "dora", "ia3", "head", "seed", "smoke"])
def test_saved_config_reads_back_equal(tmp_path: Path, name: str) -> None:
    cfg = load_config(name, {"lora.target_modules": ["q_lin", "v_lin"], "train.lr": "3e-4"})
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
