"""Typed run configuration: recipes (YAML) and overrides load into frozen dataclasses.

Validation happens here, once: the rest of the package trusts a `RunConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

METHODS = ("full", "lora", "qlora", "dora", "ia3", "head")
ADAPTER_METHODS = ("lora", "qlora", "dora", "ia3")  # saved as a PEFT adapter on a frozen base
LORA_METHODS = ("lora", "qlora", "dora")  # configured by the lora: section
METHOD_NAMES = {
    "full": "full fine-tuning",
    "lora": "LoRA",
    "qlora": "QLoRA",
    "dora": "DoRA",
    "ia3": "(IA)3",
    "head": "head-only training",
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")

DEFAULT_MODEL = "distilbert-base-uncased"
DEFAULT_DATA = "stanfordnlp/imdb"


@dataclass(frozen=True)
class DataConfig:
    source: str = DEFAULT_DATA  # Hub dataset id or a local folder
    text_column: str = "text"
    label_column: str = "label"
    train_split: str = "train"
    test_split: str = "test"
    train_size: int = 3000
    test_size: int = 300
    shuffle_seed: int = 42  # selects the subset: shuffle(seed).select(range(n)), apart from train.seed
    max_length: int = 512  # tokens; longer reviews are truncated

    def __post_init__(self) -> None:
        for name in ("train_size", "test_size", "max_length"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"data.{name} must be positive, got {value}")
        for name in ("source", "text_column", "label_column", "train_split", "test_split"):
            if not getattr(self, name):
                raise ConfigError(f"data.{name} must not be empty")


@dataclass(frozen=True)
class ModelConfig:
    name: str = DEFAULT_MODEL  # Hub id or a local folder
    random_init: bool = False  # build the architecture of `name` with random weights (speed runs)
    architecture: dict[str, Any] | None = None  # build a new model from these config fields instead
    tokenizer: str | None = None  # Hub id or folder; defaults to `name`
    tokenizer_vocab_size: int | None = None  # train a WordPiece tokenizer of this size on the train texts
    trust_remote_code: bool = False  # run a Hub repo's own Python code: only when the user asks

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("model.name must not be empty")
        if self.architecture is not None and "model_type" not in self.architecture:
            raise ConfigError("model.architecture needs a model_type, e.g. distilbert")
        if self.architecture is not None and path_exists(self.name):
            raise ConfigError(
                f"model.name {self.name!r} is a folder but model.architecture builds a new model: "
                "pass --set model.architecture=null to load the folder"
            )
        if self.tokenizer_vocab_size is not None and self.tokenizer_vocab_size < 100:
            raise ConfigError(
                f"model.tokenizer_vocab_size must be at least 100, got {self.tokenizer_vocab_size}"
            )

    @property
    def builds_new_weights(self) -> bool:
        """True when the base weights exist only in this run (they must be saved with it)."""
        return self.random_init or self.architecture is not None


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None  # None: every attention and feed-forward linear layer

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora.r must be positive, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError("lora.target_modules must name at least one module")


@dataclass(frozen=True)
class Ia3Config:
    target_modules: tuple[str, ...] | None = None  # None: keys, values and the second feed-forward layer
    feedforward_modules: tuple[str, ...] | None = None  # of the targets, those scaled on their input

    def __post_init__(self) -> None:
        for name in ("target_modules", "feedforward_modules"):
            value = getattr(self, name)
            if value is not None and not value:
                raise ConfigError(f"ia3.{name} must name at least one module")
        if (self.feedforward_modules is None) != (self.target_modules is None):
            raise ConfigError("set ia3.target_modules and ia3.feedforward_modules together")
        if self.target_modules and self.feedforward_modules:
            extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
            if extra:
                raise ConfigError(f"ia3.feedforward_modules must be among ia3.target_modules: {', '.join(extra)}")


@dataclass(frozen=True)
class QuantConfig:
    """QLoRA's 4-bit base (bitsandbytes)."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True  # quantize the quantization constants too (~0.4 bit per weight saved)
    compute_dtype: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where the hardware runs it


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 2.0e-5
    batch_size: int = 16
    eval_batch_size: int = 16
    epochs: float = 2.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    seed: int = 42  # model init, dropout and batch order
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"  # auto: see perf.choose_precision
    group_by_length: bool = False  # batches of similar length: less padding
    # Dropout on the attention probabilities; None keeps the model's own (DistilBERT/BERT: 0.1). At 0
    # PyTorch's fused attention kernel runs instead of one that draws a batch x heads x len x len mask.
    attention_dropout: float | None = None
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory
    logging_steps: int = 10
    save_steps: int | None = None  # checkpoint every N optimizer steps, for --resume
    save_every_epoch: bool = False  # checkpoint at the end of each epoch
    keep_checkpoints: int = 2  # the last K checkpoints are kept while the run is in progress

    def __post_init__(self) -> None:
        for name in ("lr", "epochs"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"train.{name} must be positive, got {value}")
        for name in ("batch_size", "eval_batch_size", "logging_steps"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"train.{name} must be positive, got {value}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must not be negative, got {self.weight_decay}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.save_steps is not None and self.save_steps <= 0:
            raise ConfigError(f"train.save_steps must be positive, got {self.save_steps}")
        if self.save_steps is not None and self.save_every_epoch:
            raise ConfigError("pass train.save_steps or train.save_every_epoch, not both")
        if self.keep_checkpoints <= 0:
            raise ConfigError(f"train.keep_checkpoints must be positive, got {self.keep_checkpoints}")
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError(f"train.attention_dropout must be in [0, 1), got {self.attention_dropout}")


@dataclass(frozen=True)
class RunConfig:
    method: Literal["full", "lora", "qlora", "dora", "ia3", "head"] = "lora"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)  # lora, qlora and dora
    ia3: Ia3Config = field(default_factory=Ia3Config)
    quant: QuantConfig = field(default_factory=QuantConfig)  # qlora
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def saves_adapter(self) -> bool:
        return self.method in ADAPTER_METHODS


def expand_path(source: str) -> Path:
    """`source` as a path with `~` expanded (left as it is where the user is unknown)."""
    try:
        return Path(source).expanduser()
    except RuntimeError:
        return Path(source)


def path_exists(source: str, folder: bool = False) -> bool:
    """Whether `source` names an existing path (a folder, with `folder`); False for names no file
    system accepts (too long, a NUL byte)."""
    try:
        path = expand_path(source)
        return path.is_dir() if folder else path.exists()
    except (OSError, ValueError):
        return False


def looks_like_path(source: str) -> bool:
    """A source written as a path (./x, /x, ~/x, a/b/c) rather than a Hub id (name or owner/name)."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1


# ---------------------------------------------------------------- loading


def recipes_dir() -> Path:
    """Folder of the shipped recipes: inside the wheel, or recipes/ of a source checkout."""
    packaged = Path(str(resources.files("peft_sentiment"))) / "recipes"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "recipes"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    """A recipe name (file stem in recipes/) or a path to a YAML file."""
    path = Path(name_or_path)
    named = (recipes_dir() / f"{name_or_path}.yaml").is_file() and path.suffix not in (".yaml", ".yml")
    if path.suffix in (".yaml", ".yml") or (path.exists() and not (named and path.is_dir())):
        if not path.is_file():
            raise ConfigError(f"recipe not found: {name_or_path}")
        return path
    candidate = recipes_dir() / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = ", ".join(available_recipes())
        raise ConfigError(f"unknown recipe {name_or_path!r} (known: {known}; or pass a .yaml path)")
    return candidate


def read_recipe(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"recipe {path} is not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read recipe {path}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of keys to values")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, creating missing sections."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"bad key {key!r}")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{part!r} is not a section, cannot set {key!r}")
        node = child
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`train.lr=1.0e-4` -> ("train.lr", 1e-4); the value is read as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError):  # e.g. `!!int abc`: the text itself, for the type check to name
        value = raw
    return key.strip(), value


def load_config(
    recipe: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Recipe (name or path) < overrides (dotted keys) -> validated `RunConfig`.

    Without a recipe the method's own recipe is used, where one ships.
    """
    overrides = dict(overrides or {})
    if recipe is None:
        method = overrides.get("method", RunConfig.method)
        candidate = recipes_dir() / f"{method}.yaml"
        data = read_recipe(candidate) if candidate.is_file() else {}
    else:
        data = read_recipe(recipe_path(str(recipe)))
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return build(RunConfig, data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (lists for tuples) that `build` reads back to an equal config."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(cfg)


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------- typed construction


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a dict, checking keys and types; errors name the key."""
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {prefix + str(key)!r} (known: {', '.join(known)})")
    kwargs = {key: _coerce(hints[key], value, f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # pragma: no cover - all fields have defaults
        raise ConfigError(str(err)) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, f"{key}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        number = None
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
                number = float(value)
        except (ValueError, OverflowError):
            pass
        if number is None:
            raise ConfigError(f"{key} must be a number, got {_short(value)}")
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {_short(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key} must be a list of strings, got {value!r}")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key} must be a mapping, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover
