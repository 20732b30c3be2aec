"""Model FLOPs of training and inference, counted from the model's shapes and the real token counts.

For a review of s tokens (padding excluded, so that wasted work lowers utilization), with W the
weights of the linear layers applied to every token (in x out summed: attention, feed-forward and
adapter matrices), H those of the head applied once per review, d the hidden size and L the layers:

    forward       2 W s + 2 H + 4 L d s^2          (each multiply-add is 2 FLOPs; the attention
                                                    scores Q K^T and their product with V are the s^2 terms)
    backward      2 W s + 8 L d s^2                (gradients of the activations; absent when only the
                                                    head trains, since nothing before it needs them)
                  + 2 T s + 2 H                    (gradients of the trainable weights T among W, and the head's)

Full fine-tuning thus costs 6 W s + 12 L d s^2 per review, the usual 3x the forward pass. Embedding
lookups, layer norms, softmax, activations and the optimizer are not counted.
MFU = counted FLOPs / (seconds x the probed peak FLOP/s of the precision used x processes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shape:
    token_weights: int  # W: linear weights applied to every token
    trainable_token_weights: int  # T: those that receive a gradient
    head_weights: int  # H: linear weights applied once per review (pooler, classifier)
    layers: int
    hidden: int
    encoder_trains: bool  # whether gradients must flow back through the encoder

    def forward(self, length: int) -> float:
        return 2 * self.token_weights * length + 2 * self.head_weights + 4 * self.layers * self.hidden * length**2

    def training(self, length: int) -> float:
        flops = self.forward(length) + 2 * self.trainable_token_weights * length + 2 * self.head_weights
        if self.encoder_trains:
            flops += 2 * self.token_weights * length + 8 * self.layers * self.hidden * length**2
        return flops


def model_shape(model: torch.nn.Module, head_modules: Iterable[str]) -> Shape:
    """The counts of `Shape` for a transformers model, or a PEFT model around one."""
    head = set(head_modules) | {"pooler"}
    token = trainable = per_review = 0
    for name, module in model.named_modules():
        parts = name.split(".")
        if not isinstance(module, torch.nn.Linear) or "original_module" in parts:
            continue  # PEFT keeps a frozen copy of a trained head that never runs
        weights = module.in_features * module.out_features
        if head & set(parts):
            per_review += weights
            continue
        token += weights
        if module.weight.requires_grad:
            trainable += weights
    encoder_trains = any(p.requires_grad for n, p in model.named_parameters()
                         if not head & set(n.split(".")[:-1]))
    config = getattr(model, "config", None)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    return Shape(token, trainable, per_review, layers, hidden, encoder_trains)


def training_flops(shape: Shape, lengths: Iterable[int], epochs: float = 1.0) -> float:
    return epochs * sum(shape.training(int(n)) for n in lengths)


def forward_flops(shape: Shape, lengths: Iterable[int]) -> float:
    return float(sum(shape.forward(int(n)) for n in lengths))


def utilization(flops: float, seconds: float, peak: float, processes: int = 1) -> float | None:
    """Achieved FLOP/s over the peak of the processes used; None without a measurable time."""
    if seconds <= 0 or peak <= 0:
        return None
    return flops / seconds / (peak * processes)
