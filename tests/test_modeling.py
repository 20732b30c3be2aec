"""Model building: labels, LoRA targets and head, parameter counts, tokenizers, load errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peft_sentiment.config import LoraConfig, ModelConfig, RunConfig, TrainConfig
from peft_sentiment.errors import ConfigError, ModelError
from peft_sentiment.modeling import (
    DEFAULT_LORA_TARGETS,
    build_base,
    build_model,
    count_parameters,
    load_tokenizer,
    train_wordpiece,
)

DISTIL_TARGETS = ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")
# tiny models: hidden 32, feed-forward 64, 2 layers, 2 labels
H, FF, LAYERS, LABELS = 32, 64, 2, 2


def lora_cfg(folder: Path, r: int = 8, targets: tuple[str, ...] | None = None, seed: int = 42) -> RunConfig:
    return RunConfig(method="lora", model=ModelConfig(name=str(folder)),
                     lora=LoraConfig(r=r, alpha=2 * r, dropout=0.0, target_modules=targets),
                     train=TrainConfig(seed=seed))


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def linear_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# Written out per architecture, apart from DEFAULT_LORA_TARGETS: where LoRA must land with no
# --target-modules. BERT-like encoders: attention q, k, v and output, and both feed-forward layers of every
# layer; never a head's own "dense" (RoBERTa's and ELECTRA's classifier) or a new pooler (BERT).
BERT_LIKE_LAYER = ("attention.self.query", "attention.self.key", "attention.self.value",
                   "attention.output.dense", "intermediate.dense", "output.dense")
EXPECTED_LORA_LAYERS = {  # "{i}": the layer number
    "distilbert": ["distilbert.transformer.layer.{i}." + m for m in (
        "attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
        "ffn.lin1", "ffn.lin2")],
    "bert": ["bert.encoder.layer.{i}." + m for m in BERT_LIKE_LAYER],
    "roberta": ["roberta.encoder.layer.{i}." + m for m in BERT_LIKE_LAYER],
    "xlm-roberta": ["roberta.encoder.layer.{i}." + m for m in BERT_LIKE_LAYER],
    "electra": ["electra.encoder.layer.{i}." + m for m in BERT_LIKE_LAYER],
}
TINY_SIZES = {"distilbert": {"dim": H, "n_layers": LAYERS, "n_heads": 2, "hidden_dim": FF}}
BERT_LIKE_SIZES = {"hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
                   "intermediate_size": FF}


@pytest.mark.parametrize("model_type", sorted(EXPECTED_LORA_LAYERS))
def test_default_targets(model_type: str, tiny_distilbert_dir: Path) -> None:
    """A tiny model of each architecture with a default target list, built from a config: the modules
    that actually get LoRA layers are exactly the expected ones."""
    from peft.tuners.lora import LoraLayer

    assert sorted(DEFAULT_LORA_TARGETS) == sorted(EXPECTED_LORA_LAYERS)  # a new default needs a row here
    architecture = {"model_type": model_type, **TINY_SIZES.get(model_type, BERT_LIKE_SIZES),
                    "max_position_embeddings": 128}
    cfg = RunConfig(method="lora", model=ModelConfig(name=f"tiny-{model_type}", architecture=architecture,
                                                     tokenizer=str(tiny_distilbert_dir)),
                    lora=LoraConfig(r=4, alpha=8, dropout=0.0))
    built = build_model(cfg)
    adapted = {n for n, m in built.model.named_modules() if isinstance(m, LoraLayer)}
    expected = {f"base_model.model.{name.format(i=i)}"
                for name in EXPECTED_LORA_LAYERS[model_type] for i in range(LAYERS)}
    assert adapted == expected


def test_count_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == (4 + 4 * 2 + 2, 3 * 4 + 4 + 4 * 2 + 2)


# ---------------------------------------------------------------- labels and seeding


def test_built_model_has_sentiment_labels(tmp_path: Path) -> None:
    from conftest import save_tiny_distilbert
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    folder = save_tiny_distilbert(tmp_path / "m")
    # A checkpoint that carries other label names: the run's labels must win.
    config = DistilBertConfig.from_pretrained(folder, num_labels=2,
                                              id2label={0: "LABEL_0", 1: "LABEL_1"})
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    for method in ("full", "lora"):
        cfg = RunConfig(method=method, model=ModelConfig(name=str(folder)))
        built = build_model(cfg)
        assert built.base.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
        assert built.base.config.label2id == {"NEGATIVE": 0, "POSITIVE": 1}
        assert built.base.config.num_labels == 2


def test_smoke_architecture_has_sentiment_labels() -> None:
    from peft_sentiment.config import load_config

    cfg = load_config("smoke", {"model.tokenizer_vocab_size": 120})
    built = build_model(cfg, ["a good film", "a bad film"] * 20)
    assert built.base.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert built.base.config.model_type == "distilbert"
    assert built.base.config.dim == 32 and built.base.config.n_layers == 2
    assert built.base.config.vocab_size == len(built.tokenizer)
    assert built.base.config.pad_token_id == built.tokenizer.pad_token_id


def test_initialization_is_seeded(tiny_distilbert_dir: Path) -> None:
    def head_and_lora(seed: int) -> list[torch.Tensor]:
        model = build_model(lora_cfg(tiny_distilbert_dir, seed=seed)).model
        return [p.detach().clone() for n, p in model.named_parameters()
                if p.requires_grad and ("lora_A" in n or "modules_to_save" in n)]

    a, b, c = head_and_lora(1), head_and_lora(1), head_and_lora(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------- LoRA on DistilBERT


@pytest.mark.parametrize("r", [8, 4])
def test_distilbert_lora_trainable_parameters(tiny_distilbert_dir: Path, r: int) -> None:
    plain = build_base(lora_cfg(tiny_distilbert_dir, r=r))
    base_total = sum(p.numel() for p in plain.model.parameters())
    built = build_model(lora_cfg(tiny_distilbert_dir, r=r))
    assert built.head_modules == ("pre_classifier", "classifier")

    prefix = "base_model.model.distilbert.transformer.layer"
    where = {"q_lin": "attention", "k_lin": "attention", "v_lin": "attention", "out_lin": "attention",
             "lin1": "ffn", "lin2": "ffn"}
    expected = {f"{prefix}.{i}.{where[t]}.{t}.lora_{ab}.default.weight"
                for i in range(LAYERS) for t in DISTIL_TARGETS for ab in "AB"}
    expected |= {f"base_model.model.{m}.modules_to_save.default.{w}"
                 for m in ("pre_classifier", "classifier") for w in ("weight", "bias")}
    assert trainable_names(built.model) == expected

    # Shapes by hand: lora_A is (r, in), lora_B is (out, r).
    shapes = {"q_lin": (H, H), "k_lin": (H, H), "v_lin": (H, H), "out_lin": (H, H),
              "lin1": (H, FF), "lin2": (FF, H)}
    params = dict(built.model.named_parameters())
    for t, (n_in, n_out) in shapes.items():
        a = params[f"{prefix}.0.{where[t]}.{t}.lora_A.default.weight"]
        b = params[f"{prefix}.0.{where[t]}.{t}.lora_B.default.weight"]
        assert tuple(a.shape) == (r, n_in) and tuple(b.shape) == (n_out, r)
    lora = LAYERS * sum(r * (n_in + n_out) for n_in, n_out in shapes.values())
    head = linear_params(H, H) + linear_params(H, LABELS)  # pre_classifier, classifier
    trainable, total = count_parameters(built.model)
    assert trainable == lora + head
    if r == 8:
        assert trainable == 8290  # 7168 LoRA + 1056 pre_classifier + 66 classifier
    # The base is intact and frozen; the head's trainable copies come on top of it.
    assert total == base_total + lora + head


def test_full_method_trains_every_weight(tiny_distilbert_dir: Path) -> None:
    built = build_model(RunConfig(method="full", model=ModelConfig(name=str(tiny_distilbert_dir))))
    trainable, total = count_parameters(built.model)
    assert trainable == total
    assert built.model is built.base
    assert not any("lora" in n for n, _ in built.model.named_parameters())


def test_explicit_targets(tiny_distilbert_dir: Path) -> None:
    built = build_model(lora_cfg(tiny_distilbert_dir, r=4, targets=("q_lin", "v_lin")))
    lora = {n for n in trainable_names(built.model) if "lora_" in n}
    assert len(lora) == LAYERS * 2 * 2
    assert all(".q_lin." in n or ".v_lin." in n for n in lora)
    trainable, _ = count_parameters(built.model)
    assert trainable == LAYERS * 2 * 4 * (H + H) + linear_params(H, H) + linear_params(H, LABELS)


def test_unknown_target_module_is_named(tiny_distilbert_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_model(lora_cfg(tiny_distilbert_dir, targets=("q_lin", "qkv_proj")))
    message = str(info.value)
    assert "qkv_proj" in message
    assert "q_lin" not in message  # only the missing one is named
    assert "distilbert" in message


# ---------------------------------------------------------------- LoRA on BERT, pooler or not


def bert_lora_names(r: int, pooler_in_head: bool) -> set[str]:
    enc = "base_model.model.bert.encoder.layer"
    modules = ["attention.self.query", "attention.self.key", "attention.self.value",
               "attention.output.dense", "intermediate.dense", "output.dense"]
    names = {f"{enc}.{i}.{m}.lora_{ab}.default.weight"
             for i in range(LAYERS) for m in modules for ab in "AB"}
    names |= {f"base_model.model.classifier.modules_to_save.default.{w}" for w in ("weight", "bias")}
    if pooler_in_head:
        names |= {f"base_model.model.bert.pooler.modules_to_save.default.dense.{w}"
                  for w in ("weight", "bias")}
    else:  # a pretrained pooler's dense layer is a LoRA target like any other "dense"
        names |= {f"base_model.model.bert.pooler.dense.lora_{ab}.default.weight" for ab in "AB"}
    return names


@pytest.mark.parametrize("with_pooler", [True, False], ids=["pooler-saved", "pooler-new"])
def test_bert_lora_trainable_parameters(tiny_bert_dirs: dict[bool, Path], with_pooler: bool) -> None:
    r = 8
    folder = tiny_bert_dirs[with_pooler]
    built = build_model(lora_cfg(folder, r=r))
    pooler_new = not with_pooler
    assert built.head_modules == (("classifier", "pooler") if pooler_new else ("classifier",))
    assert trainable_names(built.model) == bert_lora_names(r, pooler_in_head=pooler_new)

    per_layer = r * (H + H) * 4 + r * (H + FF) + r * (FF + H)  # q, k, v, attn-out; inter; out
    lora = LAYERS * per_layer
    classifier = linear_params(H, LABELS)
    pooler = linear_params(H, H) if pooler_new else r * (H + H)  # full copy, or LoRA on it
    trainable, _ = count_parameters(built.model)
    assert trainable == lora + classifier + pooler
    assert trainable == (8290 if pooler_new else 7746)


def test_bert_head_is_kept_out_of_lora(tiny_bert_dirs: dict[bool, Path]) -> None:
    built = build_model(lora_cfg(tiny_bert_dirs[False]))
    names = [n for n, _ in built.model.named_parameters()]
    assert not any("pooler" in n and "lora_" in n for n in names)
    assert not any("classifier" in n and "lora_" in n for n in names)


# ---------------------------------------------------------------- tokenizers


def test_train_wordpiece_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    texts = ["The movie was wonderful.", "The film was terrible and boring."] * 30
    tok = train_wordpiece(texts, vocab_size=120)
    vocab = tok.get_vocab()
    assert len(vocab) <= 120
    for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        assert special in vocab
    assert tok.pad_token_id == vocab["[PAD]"]
    ids = tok("THE MOVIE was Wonderful")["input_ids"]
    assert ids == tok("the movie was wonderful")["input_ids"]  # uncased
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again("THE MOVIE was Wonderful")["input_ids"] == ids


def test_train_wordpiece_is_deterministic() -> None:
    texts = [f"The film number {i} was {'great' if i % 2 else 'awful'}, truly." for i in range(50)]
    first, second = train_wordpiece(texts, 80), train_wordpiece(list(reversed(texts)), 80)
    assert first.get_vocab() == second.get_vocab()
    vocab = first.get_vocab()
    by_id = sorted(vocab, key=vocab.__getitem__)
    assert by_id[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "the" in vocab and "##t" in vocab and len(vocab) == 80
    # The most frequent words come first; ties in alphabetical order.
    words = [t for t in by_id if len(t) > 1 and not t.startswith(("##", "["))]
    assert words[:6] == ["film", "number", "the", "truly", "was", "awful"]


def test_tokenizer_vocab_size_needs_texts() -> None:
    with pytest.raises(ConfigError, match="needs training texts"):
        load_tokenizer(ModelConfig(name="x", tokenizer_vocab_size=200))


def test_architecture_needs_a_tokenizer() -> None:
    with pytest.raises(ConfigError, match="model.architecture needs model.tokenizer"):
        build_base(RunConfig(model=ModelConfig(name="x", architecture={"model_type": "distilbert"})))


def test_bad_architecture_field() -> None:
    from peft_sentiment.config import load_config

    cfg = load_config("smoke", {"model.architecture": {"model_type": "no-such-type"},
                                "model.tokenizer_vocab_size": 120})
    with pytest.raises(ConfigError, match="model.architecture"):
        build_base(cfg, ["a good film", "a bad film"] * 10)


# ---------------------------------------------------------------- load errors


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="folder not found"):
        build_model(RunConfig(model=ModelConfig(name=str(tmp_path / "nope"))))


def test_folder_without_config(tmp_path: Path, tiny_distilbert_dir: Path) -> None:
    folder = tmp_path / "no-config"
    folder.mkdir()
    with pytest.raises(ModelError, match="not a model folder"):
        build_model(RunConfig(model=ModelConfig(name=str(folder), tokenizer=str(tiny_distilbert_dir))))


def test_hub_id_without_network() -> None:
    with pytest.raises(ModelError) as info:
        build_model(RunConfig(model=ModelConfig(name="no-such-org/no-such-model")))
    assert "pass a local folder" in str(info.value)
    assert "no-such-org/no-such-model" in str(info.value)


def test_random_init_keeps_architecture(tiny_distilbert_dir: Path) -> None:
    trained = build_model(RunConfig(method="full", model=ModelConfig(name=str(tiny_distilbert_dir))))
    fresh = build_model(RunConfig(method="full", model=ModelConfig(name=str(tiny_distilbert_dir),
                                                                    random_init=True)))
    assert count_parameters(fresh.model) == count_parameters(trained.model)
    w_trained = trained.model.distilbert.embeddings.word_embeddings.weight
    w_fresh = fresh.model.distilbert.embeddings.word_embeddings.weight
    assert not torch.equal(w_trained, w_fresh)  # the checkpoint's weights were not loaded
