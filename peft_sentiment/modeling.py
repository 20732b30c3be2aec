"""Build the model for a run: a sequence classifier, trained in full, head-only, or through a PEFT adapter
(LoRA, DoRA, (IA)3, or LoRA on a 4-bit base: QLoRA)."""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from . import truncation
from .config import (
    Ia3Config,
    LoraConfig,
    ModelConfig,
    QuantConfig,
    RunConfig,
    expand_path,
    looks_like_path,
    path_exists,
)
from .errors import ConfigError, ModelError, first_line
from .labels import BINARY, LabelSet

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
# (IA)3 learns scaling vectors for keys, values and the second feed-forward layer; the feed-forward
# one scales that layer's input. Regexes over full module names, because BERT's "output.dense" as a
# suffix would also catch the attention output projection (PEFT's own default for BERT does).
_BERT_IA3 = (r".*\.attention\.self\.(key|value)|.*\.layer\.\d+\.output\.dense", r".*\.layer\.\d+\.output\.dense")
DEFAULT_IA3 = {
    "distilbert": (r".*\.(k_lin|v_lin|lin2)", r".*\.lin2"),
    "bert": _BERT_IA3,
    "roberta": _BERT_IA3,
    "xlm-roberta": _BERT_IA3,
    "electra": _BERT_IA3,
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
    """(trainable, total) parameter counts. A 4-bit weight counts the values it stands for, not its
    packed bytes (two values to a byte), so QLoRA's total is the model's."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(_values(p) for p in model.parameters())
    return trainable, total


def _values(param: torch.nn.Parameter) -> int:
    shape = getattr(getattr(param, "quant_state", None), "shape", None)  # bitsandbytes Params4bit
    return math.prod(shape) if shape is not None else param.numel()


def build_model(cfg: RunConfig, train_texts: Iterable[str] | None = None, labels: LabelSet = BINARY) -> BuiltModel:
    """Tokenizer and model for `cfg`, seeded; LoRA applied when the method asks for it."""
    return apply_method(build_base(cfg, train_texts, labels), cfg)


def build_base(cfg: RunConfig, train_texts: Iterable[str] | None = None, labels: LabelSet = BINARY) -> BuiltModel:
    """The plain classifier with the classes of `labels` (names in id2label), before any adapter.

    For QLoRA from a checkpoint the base is loaded in 4 bits right away; a base with new (random)
    weights is built in full precision and quantized by `apply_method`.
    """
    from transformers import set_seed

    set_seed(cfg.train.seed)  # before any random init: the head and LoRA A are drawn here
    tokenizer = load_tokenizer(cfg.model, train_texts)
    truncation.configure(tokenizer, cfg.data.truncation, cfg.data.head_tokens)  # saved with the tokenizer
    quant = cfg.quant if cfg.method == "qlora" and not cfg.model.builds_new_weights else None
    base, new_modules = _load_base(cfg.model, tokenizer, labels, quant, cfg.train.attention_dropout)
    head = head_modules(base.config.model_type, new_modules, base)
    return BuiltModel(model=base, tokenizer=tokenizer, base=base, head_modules=head)


def apply_method(built: BuiltModel, cfg: RunConfig, saved_base: Path | None = None) -> BuiltModel:
    """full: every weight trains. head: only the classification head. lora, dora, ia3, qlora: the base
    is frozen and the adapter and the head train. `saved_base`: where a new base was saved (QLoRA
    quantizes it from there)."""
    base = built.base
    if cfg.method == "full":
        return built
    if cfg.method == "head":
        model = freeze_all_but_head(base, built.head_modules)
    elif cfg.method == "ia3":
        model = apply_ia3(base, cfg.ia3, built.head_modules)
    elif cfg.method == "qlora":
        if not is_quantized(base):
            base = _quantize_new_base(base, cfg.quant, saved_base)
        base = prepare_kbit(base)
        model = apply_lora(base, cfg.lora, built.head_modules)
    else:
        model = apply_lora(base, cfg.lora, built.head_modules, use_dora=cfg.method == "dora")
    return BuiltModel(model=model, tokenizer=built.tokenizer, base=base, head_modules=built.head_modules)


# Methods whose saved artifact leaves the frozen base untouched, so the base may train in a lower precision.
FROZEN_BASE_METHODS = ("lora", "ia3")


def store_frozen_linears(model: torch.nn.Module, head: tuple[str, ...], dtype: torch.dtype) -> None:
    """Keep the frozen linear layers of the encoder in `dtype`.

    Under bf16 autocast every linear product rounds its weights to bf16 anyway, so storing the frozen
    ones in bf16 gives the same products, and spares both their fp32 copies and the bf16 copy that
    autocast would make (and keep for the backward pass) at every step. Trainable layers, the head,
    embeddings and norms stay as they are.
    """
    for name, module in model.named_modules():
        if (isinstance(module, torch.nn.Linear) and not module.weight.requires_grad
                and not set(name.split(".")) & set(head)):
            module.to(dtype)


def skip_input_casts(model: torch.nn.Module) -> None:
    """Stop PEFT layers from casting their input to the adapter's dtype (fp32) before the adapter runs.

    Under autocast the adapter's product casts it back to bf16 at once, so the cast only makes a
    full-size fp32 copy of every adapted layer's input (the feed-forward output's included) at every
    step, and again in the backward pass: a bf16 value is exact in fp32, so the products are the same.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def freeze_all_but_head(model: PreTrainedModel, head: tuple[str, ...]) -> PreTrainedModel:
    """A linear probe: every encoder weight frozen, the head modules trainable."""
    for name, param in model.named_parameters():
        param.requires_grad = bool(set(name.split(".")[:-1]) & set(head))
    return model


# ---------------------------------------------------------------- QLoRA: the 4-bit base


def is_quantized(model: torch.nn.Module) -> bool:
    return getattr(model, "hf_quantizer", None) is not None


def require_bitsandbytes() -> None:
    """bitsandbytes is installed and runs 4-bit on this device, or a one-line error says why."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("method qlora needs bitsandbytes: pip install 'peft-sentiment[qlora]'") from None
    problem = _four_bit_problem()
    if problem is not None:
        raise ConfigError(f"method qlora cannot run here: {problem}")


_PROBE: dict[str, str | None] = {}


def _four_bit_problem() -> str | None:
    """Quantize and multiply a small matrix in 4 bits on this device; None if that works."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in _PROBE:
        import bitsandbytes as bnb

        try:
            layer = bnb.nn.Linear4bit(16, 16, quant_type="nf4", compute_dtype=torch.float32).to(device)
            layer(torch.ones(2, 16, device=device))
            _PROBE[device] = None
        except Exception as err:  # noqa: BLE001 - any failure means no 4-bit here
            first = first_line(err)
            _PROBE[device] = (f"bitsandbytes {getattr(bnb, '__version__', '?')} cannot run 4-bit on the "
                              f"{device} ({first})")
    return _PROBE[device]


def quantization_config(quant: QuantConfig, model_type: str) -> object:
    from transformers import BitsAndBytesConfig

    from .probe import choose_precision

    require_bitsandbytes()
    compute = quant.compute_dtype if quant.compute_dtype != "auto" else choose_precision("auto")
    # The head stays in full precision and trainable; poolers are kept out too (one may be new).
    skip = [*HEAD_MODULES.get(model_type, DEFAULT_HEAD), "pooler"]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16 if compute == "bf16" else torch.float32,
        llm_int8_skip_modules=skip,
    )


def quantized_load_kwargs(quant: QuantConfig, model_type: str) -> dict:
    from .dist import world

    # Under torchrun each process puts its 4-bit base on its own GPU.
    device = world().local_rank if torch.cuda.is_available() else "cpu"
    return {"quantization_config": quantization_config(quant, model_type), "device_map": {"": device}}


def _quantize_new_base(base: PreTrainedModel, quant: QuantConfig, saved_base: Path | None) -> PreTrainedModel:
    """Reload a base with new weights in 4 bits, from where the run saved it (or a temporary copy)."""
    kwargs = quantized_load_kwargs(quant, base.config.model_type)
    if saved_base is not None:
        return AutoModelForSequenceClassification.from_pretrained(str(saved_base), **kwargs)
    with tempfile.TemporaryDirectory(prefix="peft-sentiment-base-") as tmp:
        base.save_pretrained(tmp)
        return AutoModelForSequenceClassification.from_pretrained(tmp, **kwargs)


def prepare_kbit(base: PreTrainedModel) -> PreTrainedModel:
    from peft import prepare_model_for_kbit_training

    # Layer norms and the head in fp32, input gradients on; no gradient checkpointing by default.
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    keep_training_layout(base)
    return base


def keep_training_layout(model: torch.nn.Module) -> None:
    """On the CPU, bitsandbytes repacks 4-bit weights into an AVX512-BF16 inference layout at the first
    forward pass without gradients (the per-epoch evaluation); training steps after that fail on the
    repacked layers (bitsandbytes 0.50). A model that is still to be trained keeps the plain layout."""
    for module in _linear4bit_layers(model):
        module.support_avx512bf16_for_cpu = False


# The repacked layout (bitsandbytes 0.50 `functional._convert_weight_packed_for_cpu`) tiles the weight's
# N output rows by 32 and regroups the quantization scales per row, as absmax[N, K / blocksize]. But a
# 4-bit weight is quantized in blocks of `blocksize` (64) consecutive values of the flattened [N, K]
# matrix, so a block stays inside one row only when K is a multiple of it: a 32-wide layer (the smoke
# model) has blocks that span two rows, K // 64 == 0, and the repack dies on reshape(32, 0).
PACKED_ROWS = 32


def can_repack(module: torch.nn.Module) -> bool:
    """Whether bitsandbytes' CPU inference layout can hold this 4-bit layer's weight."""
    state = module.weight.quant_state
    rows, columns = state.shape
    return rows % PACKED_ROWS == 0 and columns % state.blocksize == 0


def keep_plain_layout_where_repack_fails(model: torch.nn.Module) -> None:
    """Before inference on a 4-bit base: layers whose shape the repacked layout cannot represent keep the
    plain one (dequantize, then multiply), where bitsandbytes would otherwise fail at the first forward
    pass; the others keep bitsandbytes' faster repacked kernel."""
    for module in _linear4bit_layers(model):
        if not can_repack(module):
            module.support_avx512bf16_for_cpu = False


def _linear4bit_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The 4-bit linear layers that bitsandbytes may repack on the CPU (none without bitsandbytes)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    return [m for m in model.modules()
            if isinstance(m, bnb.nn.Linear4bit) and hasattr(m, "support_avx512bf16_for_cpu")]


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
        return AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, HTTP errors
        raise ModelError(_load_message("tokenizer", source, err)) from None


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerBase:
    """An uncased WordPiece tokenizer built from `texts` (offline runs and tests).

    The vocabulary: the special tokens, every character seen (alone and as a `##` continuation), then
    the most frequent words, ties broken alphabetically, up to `vocab_size` entries (more only when the
    characters alone exceed it). Deterministic, unlike the tokenizers library's trainer, whose hash
    maps break ties differently from run to run: the same texts must give the same tokenizer, or a
    resumed or repeated run would not be the same run.
    """
    from collections import Counter

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer, splitter = BertNormalizer(lowercase=True), BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += words[: max(vocab_size - len(vocab), 0)]
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)


def label_kwargs(labels: LabelSet) -> dict[str, Any]:
    """What a model config takes to carry the classes: their number and names."""
    return {"num_labels": len(labels.names), "id2label": labels.id2label, "label2id": labels.label2id}


# Where each architecture keeps its dropout on attention probabilities.
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def set_attention_dropout(config: object, value: float | None) -> None:
    """Set the dropout on attention probabilities in a model config (left as it is for None)."""
    if value is None:
        return
    keys = [key for key in ATTENTION_DROPOUT_KEYS if hasattr(config, key)]
    if not keys:
        raise ConfigError(f"train.attention_dropout: {getattr(config, 'model_type', 'this model')} has no "
                          "attention dropout setting")
    for key in keys:
        setattr(config, key, value)


def _load_base(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, label_set: LabelSet,
               quant: QuantConfig | None = None,
               attention_dropout: float | None = None) -> tuple[PreTrainedModel, set[str]]:
    """The classifier and the names of the modules whose weights are new (not from a checkpoint)."""
    labels = label_kwargs(label_set)
    if cfg.architecture is not None:
        fields = dict(cfg.architecture)
        model_type = fields.pop("model_type")
        fields.setdefault("vocab_size", len(tokenizer))
        fields.setdefault("pad_token_id", tokenizer.pad_token_id)
        try:
            config = AutoConfig.for_model(model_type, **fields, **labels)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model.architecture: {err}") from None
        set_attention_dropout(config, attention_dropout)
        model = AutoModelForSequenceClassification.from_config(config)
        return model, {name for name, _ in model.named_modules()}
    _check_local(cfg.name, "model")
    try:
        config = AutoConfig.from_pretrained(cfg.name, trust_remote_code=cfg.trust_remote_code, **labels)
        set_attention_dropout(config, attention_dropout)
        if cfg.random_init:
            model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=cfg.trust_remote_code)
            return model, {name for name, _ in model.named_modules()}
        extra = quantized_load_kwargs(quant, config.model_type) if quant is not None else {}
        model, info = AutoModelForSequenceClassification.from_pretrained(
            cfg.name, config=config, output_loading_info=True, use_safetensors=True,
            trust_remote_code=cfg.trust_remote_code, **extra
        )
    except (ModelError, ConfigError):
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


def _check_targets(base: PreTrainedModel, targets: Iterable[str], key: str) -> None:
    module_names = [name for name, _ in base.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in module_names)]
    if missing:
        raise ConfigError(f"{key}: no module named {', '.join(missing)} in {base.config.model_type}")


def _head_exclusions(base: PreTrainedModel, head: tuple[str, ...]) -> list[str]:
    """Every module inside the head: a target such as BERT's "dense" must not reach it."""
    return [n for n, _ in base.named_modules()
            if any(n == h or n.startswith(f"{h}.") or f".{h}." in f".{n}." for h in head)]


def apply_lora(base: PreTrainedModel, cfg: LoraConfig, head: tuple[str, ...],
               use_dora: bool = False) -> torch.nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    model_type = base.config.model_type
    targets = cfg.target_modules or DEFAULT_LORA_TARGETS.get(model_type)
    if targets is None:
        raise ConfigError(
            f"no default LoRA targets for model type {model_type!r}: pass --target-modules"
        )
    _check_targets(base, targets, "lora.target_modules")
    _check_rank(base, targets, cfg.r)
    peft_config = PeftLoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(targets),
        exclude_modules=_head_exclusions(base, head) or None,
        modules_to_save=list(head),
        use_dora=use_dora,
    )
    return get_peft_model(base, peft_config)


def _check_rank(base: PreTrainedModel, targets: tuple[str, ...], r: int) -> None:
    """A rank above a layer's width adds parameters and no capacity (and a huge one cannot be allocated)."""
    widths = [min(m.in_features, m.out_features) for name, m in base.named_modules()
              if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in targets]
    if widths and r > min(widths):
        raise ConfigError(f"lora.r {r} is more than the width of the layers it adapts ({min(widths)}): "
                          f"pass --lora-r {min(widths)} or less")


def apply_ia3(base: PreTrainedModel, cfg: Ia3Config, head: tuple[str, ...]) -> torch.nn.Module:
    from peft import IA3Config, TaskType, get_peft_model

    model_type = base.config.model_type
    if cfg.target_modules is not None:
        _check_targets(base, cfg.target_modules, "ia3.target_modules")
        targets, feedforward = list(cfg.target_modules), list(cfg.feedforward_modules or ())
    elif model_type in DEFAULT_IA3:
        targets, feedforward = DEFAULT_IA3[model_type]
    else:
        raise ConfigError(f"no default (IA)3 targets for model type {model_type!r}: set "
                          "ia3.target_modules and ia3.feedforward_modules")
    peft_config = IA3Config(
        task_type=TaskType.SEQ_CLS,
        target_modules=targets,
        feedforward_modules=feedforward,
        exclude_modules=_head_exclusions(base, head) or None,
        modules_to_save=list(head),
    )
    return get_peft_model(base, peft_config)


def _check_local(source: str, what: str) -> None:
    if looks_like_path(source) and not path_exists(source):
        raise ModelError(f"{what} folder not found: {source}")
    if path_exists(source, folder=True) and what == "model" and not (expand_path(source) / "config.json").is_file():
        raise ModelError(f"{source} is not a model folder (no config.json)")


def _load_message(what: str, source: str, err: BaseException) -> str:
    if path_exists(source, folder=True):
        first = first_line(err)
        return f"cannot load {what} from {source}: {first}"
    return (
        f"cannot load {what} {source!r} from the Hub (no network or no such repo): "
        "pass a local folder with --model"
    )


def position_limit(config: object) -> int | None:
    """The longest input, in tokens, that a model config has position embeddings for."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    if getattr(config, "model_type", None) in ("roberta", "xlm-roberta", "camembert"):
        positions -= (getattr(config, "pad_token_id", 1) or 1) + 1  # positions start after the pad id
    return positions


def check_max_length(max_length: int, config: object, name: str) -> None:
    """Refuse a data.max_length beyond the model's position embeddings, before any training."""
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        raise ConfigError(f"--max-length {max_length} is more than {name} takes ({limit} positions): "
                          f"pass --max-length {limit} or less")


def model_config(cfg: ModelConfig) -> object | None:
    """The transformers config of the model a run would build, read without its weights (None when it
    cannot be read: loading the model then says why)."""
    try:
        if cfg.architecture is not None:
            fields = dict(cfg.architecture)
            return AutoConfig.for_model(fields.pop("model_type"), **fields)
        return AutoConfig.from_pretrained(cfg.name, trust_remote_code=cfg.trust_remote_code)
    except Exception:  # noqa: BLE001 - missing, offline or broken: reported when the model loads
        return None
