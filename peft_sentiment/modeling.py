"""Build the model for a run: a sequence classifier, fully trainable or wrapped with LoRA."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .config import LoraConfig, ModelConfig, RunConfig, looks_like_path
from .data import ID2LABEL, LABEL2ID
from .errors import ConfigError, ModelError

log = logging.getLogger(__name__)

# Every attention and feed-forward linear layer, per architecture. PEFT has no default for
# DistilBERT, so the names are always explicit.
DEFAULT_LORA_TARGETS = {
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
    "bert": ("query", "key", "value", "dense"),
    "roberta": ("query", "key", "value", "dense"),
    "xlm-roberta": ("query", "key", "value", "dense"),
    "electra": ("query", "key", "value", "dense"),
}
# The classification head, trained in full and saved with the adapter (PEFT modules_to_save).
HEAD_MODULES = {"distilbert": ("pre_classifier", "classifier")}
DEFAULT_HEAD = ("classifier",)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class BuiltModel:
    model: torch.nn.Module  # PreTrainedModel, or PeftModel for adapter methods
    tokenizer: PreTrainedTokenizerBase
    base: PreTrainedModel  # the plain transformers model (inside the PeftModel for LoRA)
    head_modules: tuple[str, ...]


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def build_model(cfg: RunConfig, train_texts: Iterable[str] | None = None) -> BuiltModel:
    """Tokenizer and model for `cfg`, seeded; LoRA applied when the method asks for it."""
    return apply_method(build_base(cfg, train_texts), cfg)


def build_base(cfg: RunConfig, train_texts: Iterable[str] | None = None) -> BuiltModel:
    """The plain classifier with NEGATIVE/POSITIVE labels, before any adapter."""
    from transformers import set_seed

    set_seed(cfg.train.seed)  # before any random init: the head and LoRA A are drawn here
    tokenizer = load_tokenizer(cfg.model, train_texts)
    base, new_modules = _load_base(cfg.model, tokenizer)
    head = head_modules(base.config.model_type, new_modules, base)
    return BuiltModel(model=base, tokenizer=tokenizer, base=base, head_modules=head)


def apply_method(built: BuiltModel, cfg: RunConfig) -> BuiltModel:
    """`full`: every weight trains; `lora`: base frozen, LoRA layers and the head train."""
    if cfg.method == "full":
        return built
    model = apply_lora(built.base, cfg.lora, built.head_modules)
    return BuiltModel(model=model, tokenizer=built.tokenizer, base=built.base,
                      head_modules=built.head_modules)


def load_tokenizer(cfg: ModelConfig, train_texts: Iterable[str] | None = None) -> PreTrainedTokenizerBase:
    if cfg.tokenizer_vocab_size is not None:
        if train_texts is None:
            raise ConfigError("model.tokenizer_vocab_size needs training texts to train a tokenizer")
        return train_wordpiece(train_texts, cfg.tokenizer_vocab_size)
    source = cfg.tokenizer or cfg.name
    if cfg.architecture is not None and cfg.tokenizer is None:
        raise ConfigError("model.architecture needs model.tokenizer or model.tokenizer_vocab_size")
    _check_local(source, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, HTTP errors
        raise ModelError(_load_message("tokenizer", source, err)) from None


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerBase:
    """An uncased WordPiece tokenizer trained on `texts` (offline runs and tests)."""
    from tokenizers import BertWordPieceTokenizer

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(list(texts), vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    return BertTokenizer(vocab=wordpiece.get_vocab(), do_lower_case=True)


def _load_base(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[PreTrainedModel, set[str]]:
    """The classifier and the names of the modules whose weights are new (not from a checkpoint)."""
    labels = {"num_labels": 2, "id2label": dict(ID2LABEL), "label2id": dict(LABEL2ID)}
    if cfg.architecture is not None:
        fields = dict(cfg.architecture)
        model_type = fields.pop("model_type")
        fields.setdefault("vocab_size", len(tokenizer))
        fields.setdefault("pad_token_id", tokenizer.pad_token_id)
        try:
            config = AutoConfig.for_model(model_type, **fields, **labels)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model.architecture: {err}") from None
        model = AutoModelForSequenceClassification.from_config(config)
        return model, {name for name, _ in model.named_modules()}
    _check_local(cfg.name, "model")
    try:
        if cfg.random_init:
            config = AutoConfig.from_pretrained(cfg.name, **labels)
            model = AutoModelForSequenceClassification.from_config(config)
            return model, {name for name, _ in model.named_modules()}
        model, info = AutoModelForSequenceClassification.from_pretrained(
            cfg.name, output_loading_info=True, **labels
        )
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ModelError(_load_message("model", cfg.name, err)) from None
    new = {key.rsplit(".", 1)[0] for key in info.get("missing_keys", [])}
    return model, new


def head_modules(model_type: str, new_modules: set[str], model: PreTrainedModel) -> tuple[str, ...]:
    """Head modules to train with an adapter: the classifier, plus a pooler that starts untrained."""
    head = HEAD_MODULES.get(model_type, DEFAULT_HEAD)
    names = {name for name, _ in model.named_modules()}
    poolers = sorted(
        {n.rsplit(".", 1)[0] for n in new_modules if n.endswith("pooler.dense")}
        & {n for n in names if n.endswith("pooler")}
    )
    extra = tuple(p.rsplit(".", 1)[-1] for p in poolers[:1])
    return head + extra


def apply_lora(base: PreTrainedModel, cfg: LoraConfig, head: tuple[str, ...]) -> torch.nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    model_type = base.config.model_type
    targets = cfg.target_modules or DEFAULT_LORA_TARGETS.get(model_type)
    if targets is None:
        raise ConfigError(
            f"no default LoRA targets for model type {model_type!r}: pass --target-modules"
        )
    module_names = [name for name, _ in base.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in module_names)]
    if missing:
        raise ConfigError(
            f"lora.target_modules: no module named {', '.join(missing)} in {model_type}"
        )
    # A target such as BERT's "dense" also matches the head's layers: keep the head out of LoRA.
    exclude = [n for n in module_names if any(n == h or n.startswith(f"{h}.") or f".{h}." in f".{n}."
                                                for h in head)]
    peft_config = PeftLoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(targets),
        exclude_modules=exclude or None,
        modules_to_save=list(head),
    )
    return get_peft_model(base, peft_config)


def _check_local(source: str, what: str) -> None:
    if looks_like_path(source) and not Path(source).expanduser().exists():
        raise ModelError(f"{what} folder not found: {source}")
    path = Path(source).expanduser()
    if path.is_dir() and what == "model" and not (path / "config.json").is_file():
        raise ModelError(f"{source} is not a model folder (no config.json)")


def _load_message(what: str, source: str, err: BaseException) -> str:
    if Path(source).expanduser().is_dir():
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"cannot load {what} from {source}: {first}"
    return (
        f"cannot load {what} {source!r} from the Hub (no network or no such repo): "
        "pass a local folder with --model"
    )
