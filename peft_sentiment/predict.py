"""Sentiment predictions through a transformers text-classification pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from transformers import Pipeline, pipeline

from .artifacts import load_model


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str  # NEGATIVE or POSITIVE
    score: float  # probability of `label`


def load_pipeline(source: str | Path, max_length: int | None = None) -> Pipeline:
    """`pipeline("text-classification")` on a run, a model or adapter folder, or a Hub id."""
    loaded = load_model(source)
    if max_length is None and loaded.config is not None:
        max_length = loaded.config.data.max_length
    elif max_length is None:
        # A merged model's tokenizer records its training length; others have 512 or no limit.
        max_length = min(loaded.tokenizer.model_max_length, 512)
    # Reviews run past 512 tokens: truncate, as in training.
    return pipeline("text-classification", model=loaded.model, tokenizer=loaded.tokenizer,
                    truncation=True, max_length=max_length)


def predict(pipe: Pipeline, texts: Iterable[str], batch_size: int = 16) -> list[Prediction]:
    texts = list(texts)
    outputs = pipe(texts, batch_size=batch_size)
    return [Prediction(text=t, label=o["label"], score=float(o["score"])) for t, o in zip(texts, outputs)]
