"""Typed run configuration: recipes (YAML) and overrides load into frozen dataclasses.

Validation happens here, once: the rest of the package trusts a `RunConfig`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, DataError

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
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")

DEFAULT_MODEL = "distilbert-base-uncased"
DEFAULT_DATA = "stanfordnlp/imdb"


def opt(default: Any, flag: str, help: str) -> Any:
    """A config field with its command-line option: the one schema the CLI options are made from."""
    return field(default=default, metadata={"flag": flag, "help": help})


def check_seed(seed: int, key: str) -> None:
    """Seeds go to numpy and datasets, which take 0 to 2**32 - 1."""
    if not 0 <= seed < 2**32:
        raise ConfigError(f"{key} must be between 0 and {2**32 - 1}, got {seed}")


@dataclass(frozen=True)
class DataConfig:
    source: str = opt(DEFAULT_DATA, "--data", "Hub dataset id or local folder (train/test files or aclImdb).")
    text_column: str = opt("text", "--text-column", "Column holding the review text.")
    label_column: str = opt("label", "--label-column",
                            "Column holding the label (class values or names; 0/1, neg/pos, "
                            "negative/positive are NEGATIVE/POSITIVE).")
    # None: the classes are the train split's sorted unique label values (labels.py).
    labels: str | None = opt(None, "--labels",
                             "Class names in order ('very negative,negative,neutral,...') or VALUE=NAME "
                             "pairs ('0=bad,1=good'); default: the data's sorted label values.")
    stratify: bool = opt(False, "--stratify/--no-stratify",
                         "Take each subset class by class, keeping the split's class shares.")
    train_split: str = opt("train", "--train-split", "Name of the training split (file stem in a local folder).")
    test_split: str = opt("test", "--test-split", "Name of the test split.")
    validation_split: str = "validation"  # used for validation when the data has it
    train_size: int = opt(3000, "--train-size", "Training reviews: shuffle(seed).select(range(n)).")
    test_size: int = opt(300, "--test-size", "Test reviews, taken the same way.")
    # Epochs are evaluated, and checkpoints chosen, on these reviews only: the test subset is read once.
    validation_size: int = opt(0, "--validation-size",
                               "Validation reviews: the data's validation split, else the train split's "
                               "reviews right after the training subset; 0 for none.")
    drop_overlap: bool = opt(False, "--drop-overlap/--no-drop-overlap",
                             "Drop validation reviews whose text is also a training or test review "
                             "(default: refuse such data).")
    # Selects the subset: shuffle(seed).select(range(n)), apart from train.seed.
    shuffle_seed: int = opt(42, "--shuffle-seed", "Seed of the subset shuffle (not the training seed).")
    max_length: int = opt(512, "--max-length", "Maximum tokens per review; longer ones are truncated.")
    # Which tokens of a longer review are read, in training and in every prediction (truncation.py).
    truncation: Literal["head", "tail", "head+tail"] = opt(
        "head", "--truncation", "Tokens kept of a review longer than --max-length: its start (head), its end "
        "(tail), or --head-tokens from its start and the rest from its end (head+tail).")
    head_tokens: int = opt(128, "--head-tokens", "head+tail: tokens kept from a long review's start.")

    def __post_init__(self) -> None:
        for name in ("train_size", "test_size", "max_length"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"data.{name} must be positive, got {value}")
        check_seed(self.shuffle_seed, "data.shuffle_seed")
        if self.head_tokens <= 0:
            raise ConfigError(f"data.head_tokens must be positive, got {self.head_tokens}")
        if self.truncation == "head+tail" and self.head_tokens >= self.max_length - 2:
            raise ConfigError(f"data.head_tokens {self.head_tokens} leaves no room for a review's end in "
                              f"data.max_length {self.max_length}: choose fewer than {self.max_length - 2}")
        if self.labels is not None:
            from .labels import parse_option

            try:
                parse_option(self.labels)
            except DataError as err:
                raise ConfigError(f"data.labels: {err}") from None
        if self.validation_size < 0:
            raise ConfigError(f"data.validation_size must not be negative, got {self.validation_size}")
        for name in ("source", "text_column", "label_column", "train_split", "test_split", "validation_split"):
            if not getattr(self, name):
                raise ConfigError(f"data.{name} must not be empty")


@dataclass(frozen=True)
class ModelConfig:
    name: str = opt(DEFAULT_MODEL, "--model", "Hub id or local folder of the base model.")
    random_init: bool = opt(False, "--random-init/--pretrained",
                            "Random weights in the model's architecture (speed runs).")
    architecture: dict[str, Any] | None = None  # build a new model from these config fields instead
    tokenizer: str | None = opt(None, "--tokenizer", "Tokenizer Hub id or folder (default: the model's).")
    tokenizer_vocab_size: int | None = opt(None, "--tokenizer-vocab-size",
                                           "Train a WordPiece tokenizer of this size on the train texts.")
    trust_remote_code: bool = opt(False, "--trust-remote-code/--no-trust-remote-code",
                                  "Allow a model repo's own Python code to run (off unless given).")

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
    r: int = opt(8, "--lora-r", "LoRA rank.")
    alpha: int = opt(16, "--lora-alpha", "LoRA scaling alpha (the update is scaled by alpha / r).")
    dropout: float = opt(0.1, "--lora-dropout", "Dropout on the LoRA input.")
    # None: every attention and feed-forward linear layer
    target_modules: tuple[str, ...] | None = opt(
        None, "--target-modules",
        "Comma-separated module names for LoRA, DoRA and QLoRA (default: per architecture).")

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

    quant_type: Literal["nf4", "fp4"] = opt("nf4", "--quant-type", "QLoRA: 4-bit data type of the base.")
    # ~0.4 bit per weight saved
    double_quant: bool = opt(True, "--double-quant/--no-double-quant",
                             "QLoRA: also quantize the quantization constants.")
    compute_dtype: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where the hardware runs it


@dataclass(frozen=True)
class TrainConfig:
    """What the project itself interprets about training. Every plain Trainer option (learning rate,
    batch size, epochs, schedule, accumulation, optimizer...) lives in the `trainer:` section."""

    seed: int = opt(42, "--seed", "Training seed: initialization, dropout, batch order.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "fp32", "--precision",
        "Compute precision (autocast); auto picks bf16 only where it is faster here, fp16 needs CUDA.")
    # At 0 PyTorch's fused attention kernel runs instead of one that draws a batch x heads x len x len mask.
    attention_dropout: float | None = opt(
        None, "--attention-dropout",
        "Dropout on attention probabilities (default: the model's); 0 lets the fused attention kernel run.")
    save_steps: int | None = opt(None, "--save-steps",
                                 "Checkpoint every N steps, so that --resume can continue the run.")
    save_every_epoch: bool = opt(False, "--save-every-epoch/--no-save-every-epoch",
                                 "Checkpoint at the end of each epoch.")
    keep_checkpoints: int = opt(2, "--keep-checkpoints", "Checkpoints kept while the run is in progress.")
    # Both choose on validation accuracy, never on test data; both checkpoint every epoch.
    keep_best: bool = opt(False, "--keep-best/--keep-last",
                          "Keep the epoch with the best validation accuracy instead of the last one.")
    early_stopping_patience: int | None = opt(
        None, "--early-stopping-patience",
        "Stop after N epochs without a better validation accuracy, and keep the best epoch.")
    class_weights: str = opt("none", "--class-weights",
                             "Weighted cross-entropy: none, balanced (n / (classes * count)) or one "
                             "weight per class, 'w1,w2,...'.")

    @property
    def selects_on_validation(self) -> bool:
        return self.keep_best or self.early_stopping_patience is not None

    def __post_init__(self) -> None:
        check_seed(self.seed, "train.seed")
        if self.class_weights not in ("none", "balanced"):
            try:
                weights = [float(w) for w in self.class_weights.split(",")]
            except ValueError:
                weights = []
            if len(weights) < 2 or not all(math.isfinite(w) and w > 0 for w in weights):
                raise ConfigError(f"train.class_weights must be none, balanced or positive numbers "
                                  f"'w1,w2,...', got {self.class_weights!r}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"train.early_stopping_patience must be at least 1, got {self.early_stopping_patience}")
        if self.selects_on_validation and self.save_steps is not None:
            raise ConfigError("train.save_steps cannot be combined with keep_best or early stopping, "
                              "which checkpoint every epoch: use train.save_every_epoch")
        if self.save_steps is not None and self.save_steps <= 0:
            raise ConfigError(f"train.save_steps must be positive, got {self.save_steps}")
        if self.save_steps is not None and self.save_every_epoch:
            raise ConfigError("pass train.save_steps or train.save_every_epoch, not both")
        if self.keep_checkpoints <= 0:
            raise ConfigError(f"train.keep_checkpoints must be positive, got {self.keep_checkpoints}")
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError(f"train.attention_dropout must be in [0, 1), got {self.attention_dropout}")


# The project's defaults for the Trainer (the seed recipe's); a recipe's trainer: section goes on top.
DEFAULT_TRAINER: dict[str, Any] = {
    "learning_rate": 2.0e-5,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 16,
    "num_train_epochs": 2.0,
    "weight_decay": 0.01,
    "logging_steps": 10,
}


@dataclass(frozen=True)
class TrainerFlag:
    """A TrainingArguments field with an option of its own (the rest: --set trainer.KEY=VALUE)."""

    flags: str  # click's spelling: "--lr/--learning-rate" for aliases, "--x/--no-x" for a switch
    kind: Any  # int, float, str, bool, or a tuple of choices
    help: str


# The Trainer options most runs change. Types and values are checked by transformers (trainer_args.py);
# tests/test_config.py checks that each name is a TrainingArguments field of this type.
TRAINER_FLAGS: dict[str, TrainerFlag] = {
    "learning_rate": TrainerFlag("--lr", float, "Peak learning rate."),
    "per_device_train_batch_size": TrainerFlag("--batch-size", int, "Training batch size per device."),
    "per_device_eval_batch_size": TrainerFlag("--eval-batch-size", int, "Evaluation batch size per device."),
    "num_train_epochs": TrainerFlag("--epochs", float, "Training epochs."),
    "weight_decay": TrainerFlag("--weight-decay", float, "AdamW weight decay."),
    "warmup_steps": TrainerFlag("--warmup", float,
                                "Learning-rate warmup: steps, or a share of all steps when below 1."),
    "lr_scheduler_type": TrainerFlag("--scheduler", SCHEDULERS, "Learning-rate schedule."),
    "gradient_accumulation_steps": TrainerFlag("--gradient-accumulation-steps", int,
                                               "Batches whose gradients add up to one optimizer step."),
    "train_sampling_strategy": TrainerFlag("--sampling", ("random", "sequential", "group_by_length"),
                                           "Batch order; group_by_length batches reviews of similar length."),
    "gradient_checkpointing": TrainerFlag("--gradient-checkpointing/--no-gradient-checkpointing", bool,
                                          "Recompute activations in the backward pass: less memory, more time."),
    "logging_steps": TrainerFlag("--logging-steps", float,
                                 "Log the training loss every N steps (below 1: a share of all steps)."),
    "report_to": TrainerFlag("--report-to", str,
                             "Experiment tracking: none, tensorboard, trackio or mlflow (comma-separated); "
                             "TensorBoard logs go to RUN/tensorboard/."),
}


@dataclass(frozen=True)
class RunConfig:
    method: Literal["full", "lora", "qlora", "dora", "ia3", "head"] = "lora"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)  # lora, qlora and dora
    ia3: Ia3Config = field(default_factory=Ia3Config)
    quant: QuantConfig = field(default_factory=QuantConfig)  # qlora
    train: TrainConfig = field(default_factory=TrainConfig)
    # Any transformers TrainingArguments field, on top of DEFAULT_TRAINER; checked by transformers.
    trainer: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRAINER))
    # The search space of `peft-sentiment tune`: dotted recipe key -> {low, high, log?, step?} or
    # {choices: [...]}. Training ignores it, so it takes no part in equality (two configs that train
    # the same are equal) and config_to_dict leaves it out of every saved config.
    tune: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        from .trainer_args import check_trainer

        check_trainer(self.trainer)
        if self.train.selects_on_validation and self.data.validation_size == 0:
            key = "train.keep_best" if self.train.keep_best else "train.early_stopping_patience"
            raise ConfigError(f"{key} chooses the epoch on validation, and data.validation_size is 0: "
                              "pass --validation-size N")
        check_tune(self)

    @property
    def saves_adapter(self) -> bool:
        return self.method in ADAPTER_METHODS


# ---------------------------------------------------------------- search spaces (peft-sentiment tune)

TUNE_FIELDS = ("low", "high", "log", "step", "choices")
# What PyYAML reads as a string although it is a number: 1e-5 (a YAML 1.1 float needs a dot).
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class TuneParam:
    """One dimension of a recipe's `tune:` section: a range {low, high, log?, step?} (integers when
    low and high are) or a list {choices: [...]}."""

    key: str  # the dotted recipe key it sets
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False  # sample on a log scale (learning rates)
    step: int | float | None = None  # a grid inside the range
    choices: tuple[Any, ...] | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step)
                                            if v is not None)

    def values_to_check(self) -> list[Any]:
        """The values a config is built with to check the dimension: every choice, or both ends."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return any(value == c and type(value) is type(c) or _same_number(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.is_int and value != int(value):
            return False
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    @classmethod
    def parse(cls, key: str, spec: Any) -> TuneParam:
        shape = "{low: ..., high: ...} or {choices: [...]}"
        if not isinstance(spec, dict):
            raise ConfigError(f"tune.{key} must be {shape}, got {_short(spec)}")
        unknown = [str(name) for name in spec if name not in TUNE_FIELDS]
        if unknown:
            raise ConfigError(f"tune.{key}: unknown field {unknown[0]!r} (known: {', '.join(TUNE_FIELDS)})")
        if "choices" in spec:
            others = [name for name in spec if name != "choices"]
            if others:
                raise ConfigError(f"tune.{key}: choices cannot be combined with {', '.join(others)}")
            return cls(key, choices=_tune_choices(key, spec["choices"]))
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"tune.{key} needs low and high (a range) or choices (a list): {shape}")
        low, high = (_tune_number(key, name, spec[name]) for name in ("low", "high"))
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"tune.{key}.log must be true or false, got {_short(log)}")
        step = spec.get("step")
        if step is not None:
            step = _tune_number(key, "step", step)
            if step <= 0:
                raise ConfigError(f"tune.{key}.step must be positive, got {step!r}")
        if not all(isinstance(v, int) for v in (low, high, step) if v is not None):
            low, high = float(low), float(high)
            step = None if step is None else float(step)
        if not low < high:
            raise ConfigError(f"tune.{key}: low must be below high, got low {low!r} and high {high!r}")
        if log and step is not None:
            raise ConfigError(f"tune.{key}: log and step cannot be combined (a log range has no grid)")
        if log and low <= 0:
            raise ConfigError(f"tune.{key}: a log range needs low above 0, got {low!r}")
        return cls(key, low=low, high=high, log=log, step=step)


def _same_number(a: Any, b: Any) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return numbers and a == b


def yaml_number(value: Any) -> Any:
    """`1e-5` as PyYAML reads it (a string) turned into the number it is; anything else as it is."""
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def _tune_number(key: str, name: str, value: Any) -> int | float:
    value = yaml_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"tune.{key}.{name} must be a finite number, got {_short(value)}")
    return value


def _tune_choices(key: str, choices: Any) -> tuple[Any, ...]:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"tune.{key}.choices must be a non-empty list, got {_short(choices)}")
    found: list[Any] = []
    for choice in map(yaml_number, choices):
        # Optuna stores a choice as it is: scalars only (a list of target modules cannot be one).
        if choice is not None and not isinstance(choice, (str, int, float, bool)):
            raise ConfigError(f"tune.{key}.choices: {_short(choice)} is not a number, string, boolean or "
                              "null")
        if any(choice == c and type(choice) is type(c) for c in found):
            raise ConfigError(f"tune.{key}.choices: {choice!r} is given twice")
        found.append(choice)
    return tuple(found)


def parse_tune(raw: Any) -> dict[str, TuneParam]:
    """A recipe's tune: section, read and checked for shape (not yet against the config)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"tune must be a mapping of recipe keys to search ranges, got {_short(raw)}")
    space = {}
    for key, spec in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"tune: {key!r} is not a dotted recipe key such as trainer.learning_rate")
        space[key] = TuneParam.parse(key, spec)
    return space


def tune_space(cfg: RunConfig) -> dict[str, TuneParam]:
    """The search space of `cfg`, in the recipe's order."""
    return parse_tune(cfg.tune)


def check_tune(cfg: RunConfig) -> None:
    """Every key of the search space is a recipe key, and each of its values (a range's ends, every
    choice) applied alone to `cfg` makes a valid config. Errors name the key."""
    if not cfg.tune:
        return
    base = config_to_dict(cfg)
    for key, param in tune_space(cfg).items():
        _check_tune_key(key)
        for value in param.values_to_check():
            data = copy.deepcopy(base)
            try:
                set_dotted(data, key, value)
                build(RunConfig, data)
            except ConfigError as err:
                raise ConfigError(f"tune.{key}: {_short(value)} is refused: {err}") from None


def _check_tune_key(key: str) -> None:
    """`key` names a value of the config (not a section, not the search space itself)."""
    from .trainer_args import _check_name

    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"tune: bad key {key!r}")
    cls: Any = RunConfig
    for depth, part in enumerate(parts):
        if cls is None:  # inside a mapping (model.architecture): the value check decides
            return
        names = [f.name for f in dataclasses.fields(cls) if not (cls is RunConfig and f.name == "tune")]
        if part not in names:
            where = ".".join(parts[:depth]) or "a recipe"
            raise ConfigError(f"tune: unknown key {key!r} (known in {where}: {', '.join(names)})")
        if cls is RunConfig and part == "trainer":
            if len(parts) != 2:
                raise ConfigError(f"tune: {key!r} must name one TrainingArguments field, e.g. "
                                  "trainer.learning_rate")
            try:
                _check_name(parts[1])
            except ConfigError as err:
                raise ConfigError(f"tune: {err}") from None
            return
        tp = typing.get_type_hints(cls)[part]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if dataclasses.is_dataclass(tp):
            cls = tp
        elif depth < len(parts) - 1 and typing.get_origin(inner[0]) is dict:
            cls = None
        elif depth < len(parts) - 1:
            raise ConfigError(f"tune: {'.'.join(parts[:depth + 1])!r} is a value, not a section: {key!r} "
                              "names nothing")
        else:
            return
    names = ", ".join(f.name for f in dataclasses.fields(cls))
    raise ConfigError(f"tune: {key!r} is a section: name one of its keys ({names})")


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
        raise ConfigError(f"recipe {path} is empty: it needs at least a method, e.g. `method: lora`")
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
    model = data.get("model")
    if (overrides.get("model.name") and "model.architecture" not in overrides and isinstance(model, dict)
            and model.get("architecture") is not None):
        raise ConfigError(f"--model {overrides['model.name']}: this recipe builds a new model from "
                          "model.architecture and would not load it; pass --set model.architecture=null "
                          "(and --tokenizer if the recipe trains one) to use it")
    for key, value in overrides.items():
        set_dotted(data, *_upgrade_override(key, value))
    return build(RunConfig, data)


@dataclass(frozen=True)
class CliOption:
    flags: str  # click's spelling, e.g. "--lora-r" or "--random-init/--pretrained"
    key: str  # dotted recipe key
    kind: Any  # int, float, str, bool, or a tuple of choices
    help: str


def cli_options() -> list[CliOption]:
    """The command-line option of every recipe key that has one: the config fields' own (their
    `opt` metadata), then TRAINER_FLAGS."""
    found: list[CliOption] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            elif "flag" in f.metadata:
                found.append(CliOption(f.metadata["flag"], prefix + f.name, _option_kind(hints[f.name]),
                                       f.metadata["help"]))

    walk(RunConfig, "")
    found += [CliOption(flag.flags, f"trainer.{name}", flag.kind, flag.help) for name, flag in TRAINER_FLAGS.items()]
    return found


def _option_kind(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _option_kind(args[0])
    if typing.get_origin(tp) is Literal:
        return tuple(args)
    if typing.get_origin(tp) is tuple:
        return str  # comma-separated
    return tp


# What train: held before the trainer: section existed, and the TrainingArguments field each became:
# config.yaml of older runs, and older recipes, still load.
LEGACY_TRAIN_KEYS = {
    "lr": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "epochs": "num_train_epochs",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_steps",  # v5: a float below 1 is a share of the steps
    "scheduler": "lr_scheduler_type",
    "group_by_length": "train_sampling_strategy",
    "gradient_checkpointing": "gradient_checkpointing",
    "logging_steps": "logging_steps",
}


def _upgrade_legacy_value(old: str, value: Any) -> Any:
    if old == "group_by_length" and isinstance(value, bool):
        return "group_by_length" if value else "random"
    return value


def _upgrade_override(key: str, value: Any) -> tuple[str, Any]:
    """A legacy `train.KEY` override, as the trainer: key it stands for (so it beats the recipe's)."""
    section, _, name = key.partition(".")
    if section == "train" and name in LEGACY_TRAIN_KEYS:
        return f"trainer.{LEGACY_TRAIN_KEYS[name]}", _upgrade_legacy_value(name, value)
    return key, value


def upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Move the legacy train: keys of a recipe to trainer:."""
    train, trainer = data.get("train"), data.get("trainer", {})
    if not isinstance(train, dict) or not isinstance(trainer, dict) or not set(train) & set(LEGACY_TRAIN_KEYS):
        return data
    train, trainer = dict(train), dict(trainer)
    for old, new in LEGACY_TRAIN_KEYS.items():
        if old not in train:
            continue
        if new in trainer:
            raise ConfigError(f"train.{old} and trainer.{new} set the same option: keep trainer.{new}")
        trainer[new] = _upgrade_legacy_value(old, train.pop(old))
    return {**data, "train": train, "trainer": trainer}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (lists for tuples) that `build` reads back to an equal config.

    A RunConfig's search space (`tune`) is left out: a saved config (a run's config.yaml, a trial's
    recipe, tune's best.yaml) records what trains, and the search space belongs to the recipe.
    """
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if not (isinstance(value, RunConfig) and f.name == "tune")}
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
    if cls is RunConfig:
        data = upgrade_legacy(data)
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {prefix + str(key)!r} (known: {', '.join(known)})")
    kwargs = {key: _coerce(hints[key], value, f"{prefix}{key}") for key, value in data.items()}
    if cls is RunConfig and "trainer" in kwargs:
        from .trainer_args import coerce_trainer

        kwargs["trainer"] = {**DEFAULT_TRAINER, **coerce_trainer(kwargs["trainer"])}
    if cls is RunConfig and "tune" in kwargs:
        kwargs["tune"] = {key: param.to_dict() for key, param in parse_tune(kwargs["tune"]).items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # pragma: no cover - all fields have defaults
        raise ConfigError(str(err)) from None


MAX_INT = 2**63 - 1  # what a C long holds: torch, numpy and itertools take no more


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
            if not -MAX_INT <= value <= MAX_INT:
                raise ConfigError(f"{key} must be at most {MAX_INT} in size, got {_short(value)}")
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
