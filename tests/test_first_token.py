"""The last layer computed for the first token only (first_token.py): the same logits, the same names."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from peft_sentiment.first_token import DESCRIPTION, first_token_only


def _models() -> dict[str, torch.nn.Module]:
    # Large initial weights: attention peaks on a few tokens, so each position's output is its own
    # (with the usual 0.02, attention is near uniform and every position looks alike).
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3,
                                                    num_attention_heads=4, intermediate_size=64,
                                                    initializer_range=0.5))
    distil = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=32, n_layers=3, n_heads=4,
                                                                  hidden_dim=64, initializer_range=0.5))
    return {"bert": bert.eval(), "distilbert": distil.eval()}


def _batch(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (4, 23), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate((23, 17, 5, 1)):  # padded rows, down to a single token
        mask[row, length:] = 0
        ids[row, length:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if model.config.model_type == "bert":
        batch["token_type_ids"] = torch.zeros_like(ids)
    return batch


@torch.no_grad()
@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_same_logits_and_only_the_first_position_leaves_the_last_layer(kind: str) -> None:
    model = _models()[kind]
    batch = _batch(model)
    plain = model(**batch, output_hidden_states=True)
    expected = plain.logits
    last = plain.hidden_states[-1]
    assert (last[:, 1:] - last[:, :1]).abs().amax(dim=(1, 2))[:3].min() > 0.1  # positions tell apart
    names = [name for name, _ in model.named_parameters()]
    layers = model.bert.encoder.layer if kind == "bert" else model.distilbert.transformer.layer
    original = layers[-1]
    with first_token_only(model) as applied:
        assert applied == DESCRIPTION and layers[-1] is not original
        assert [name for name, _ in model.named_parameters()] == names  # the layer names stay as they were
        got = model(**batch, output_hidden_states=True)
        assert got.hidden_states[-1].shape == (4, 1, 32)  # one position out of the last layer
        assert got.hidden_states[-2].shape == (4, 23, 32)
    torch.testing.assert_close(got.hidden_states[-1], last[:, :1], atol=1e-5, rtol=0)
    torch.testing.assert_close(got.logits, expected, atol=1e-5, rtol=0)
    assert layers[-1] is original  # put back
    torch.testing.assert_close(model(**batch).logits, expected, atol=0, rtol=0)


def test_other_architectures_are_left_alone() -> None:
    model = RobertaForSequenceClassification(RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                           num_attention_heads=4, intermediate_size=64)).eval()
    last = model.roberta.encoder.layer[-1]
    with first_token_only(model) as applied:
        assert applied is None and model.roberta.encoder.layer[-1] is last


def test_put_back_when_the_body_raises() -> None:
    model = _models()["bert"]
    last = model.bert.encoder.layer[-1]
    with pytest.raises(RuntimeError), first_token_only(model):
        raise RuntimeError("export failed")
    assert model.bert.encoder.layer[-1] is last


def test_saved_and_reloaded_model_is_unchanged(tmp_path) -> None:
    """A model saved after an export loads as a plain classifier: nothing of the swap stays."""
    model = _models()["distilbert"]
    with first_token_only(model):
        pass
    model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    batch = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, model(**batch).logits, atol=0, rtol=0)
