"""The last encoder layer computed for the first token only, for export.

A BERT or DistilBERT sequence classifier reads one position of the last layer's output: the first
token's (BERT's pooler takes `hidden[:, 0]`, DistilBERT's head `hidden_state[:, 0]`). The other
positions of the last layer feed nothing, yet a plain export computes them all: the last layer's
attention output projection and feed-forward block for every token, about a seventh of the whole
model's work at a few hundred tokens. `first_token_only(model)` swaps the last layer, for as long as
the context lasts, for one that runs self-attention over every token as before (keys and values need
them all) and the rest of the layer for the first token alone, so it hands on `[batch, 1, hidden]`.
The logits are the same computation; the export's own check against the unchanged PyTorch model
verifies them. The swapped layer keeps the original's submodules under their own names, so the
exported graph names its layers as before (the int8 searches report them by those names).
Other architectures are left as they are (`first_token_only` yields None).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

# model_type -> (path to the layer list, the head that reads only position 0)
SUPPORTED = {
    "bert": ("bert.encoder.layer", "BertForSequenceClassification"),
    "distilbert": ("distilbert.transformer.layer", "DistilBertForSequenceClassification"),
}
DESCRIPTION = "the last layer past self-attention runs for the first token only (the classifier reads no other)"


class _FirstTokenLayer(nn.Module):
    """`layer` with everything after its self-attention computed for position 0 only."""

    def __init__(self, layer: nn.Module, model_type: str) -> None:
        super().__init__()
        for name, child in layer.named_children():  # the same modules under the same names
            self.add_module(name, child)
        self.model_type = model_type

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *args: Any, **kwargs: Any) -> torch.Tensor:
        first = hidden_states[:, :1]
        if self.model_type == "bert":
            kwargs.pop("encoder_attention_mask", None)  # passed by BertEncoder; None in an encoder
            context, _ = self.attention.self(hidden_states, attention_mask=attention_mask, **kwargs)
            attended = self.attention.output(context[:, :1], first)  # output projection, residual, norm
            return self.output(self.intermediate(attended), attended)
        context, _ = self.attention(hidden_states, attention_mask=attention_mask, **kwargs)
        attended = self.sa_layer_norm(context[:, :1] + first)
        return self.output_layer_norm(self.ffn(attended) + attended)


def _supported(model: nn.Module) -> tuple[nn.ModuleList, str] | None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED:
        return None
    path, head = SUPPORTED[model_type]
    if type(model).__name__ != head or getattr(model.config, "is_decoder", False):
        return None
    layers: Any = model
    for part in path.split("."):
        layers = getattr(layers, part, None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    return layers, model_type


@contextmanager
def first_token_only(model: nn.Module) -> Iterator[str | None]:
    """Within the context, `model`'s last layer computes past self-attention for the first token only;
    yields DESCRIPTION, or None where the architecture is not one this knows (nothing is changed)."""
    found = _supported(model)
    if found is None:
        yield None
        return
    layers, model_type = found
    original = layers[-1]
    layers[-1] = _FirstTokenLayer(original, model_type)
    try:
        yield DESCRIPTION
    finally:
        layers[-1] = original


__all__ = ["DESCRIPTION", "SUPPORTED", "first_token_only"]
