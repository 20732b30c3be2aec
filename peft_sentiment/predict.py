"""Sentiment predictions through a transformers text-classification pipeline, or through an ONNX
export on onnxruntime (onnx_backend.OnnxClassifier, which is called the same way).

`predict` labels a list of texts. `predict_stream` labels the lines of a file or stream a chunk at a
time, so memory stays bounded whatever the input size; `read_lines` decodes such a stream line by line.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import torch
from transformers import Pipeline, TextClassificationPipeline, pipeline

from . import truncation
from .config import expand_path, path_exists
from .errors import ConfigError, DataError, RunError
from .loading import load_model
from .modeling import is_quantized
from .onnx_backend import BACKENDS, OnnxClassifier, is_export
from .probe import DTYPES, choose_precision

BATCH_SIZE = 64  # texts per forward pass: length-sorted, so batches carry little padding
CHUNK_LINES = 1024  # lines read and predicted at a time by predict_stream
DECODE_ERRORS = ("strict", "replace")
Classifier = Pipeline | OnnxClassifier  # what load_pipeline returns; both are called the same way


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str  # NEGATIVE or POSITIVE
    score: float  # probability of `label`
    line: int | None = None  # 1-based input line (predict_stream); None for predict
    truncated: bool = False  # longer than the pipeline's max length: only its start was read


def load_pipeline(source: str | Path, max_length: int | None = None, precision: str = "auto",
                  backend: str | None = None) -> Classifier:
    """`pipeline("text-classification")` on a run, a model or adapter folder, or a Hub id, on the GPU
    when there is one, with its weights in `precision` (auto: bf16 where that is faster here; a 4-bit
    QLoRA base keeps its own compute dtype).

    `backend` "onnx" runs an export folder (`peft-sentiment export`) on onnxruntime instead, in the
    precision it was exported in; None picks onnx for an export folder and torch for anything else.
    """
    path = expand_path(str(source))
    export = path_exists(str(source), folder=True) and is_export(path)
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend in ("onnx", "openvino") or (backend is None and export):
        if not export:
            raise ConfigError(f"backend {backend} runs an ONNX export and {source} is none: make one with "
                              f"`peft-sentiment export {source} --format onnx -o DIR` and pass DIR")
        if backend == "openvino":
            from .openvino_backend import OpenVinoClassifier

            return OpenVinoClassifier(path, max_length, precision)
        if precision != "auto":
            raise ConfigError(f"precision {precision} applies to the torch backend: the ONNX export {source} "
                              "runs in the precision it was exported in")
        return OnnxClassifier(path, max_length)
    if export:
        raise ConfigError(f"{source} is an ONNX export: it runs with backend onnx or openvino")
    loaded = load_model(source)
    dtype = DTYPES[choose_precision(precision)]
    model = loaded.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not is_quantized(base):
        model = model.to(dtype)
        if torch.cuda.is_available():
            model = model.to("cuda")
    if max_length is None and loaded.config is not None:
        max_length = loaded.config.data.max_length
    elif max_length is None:
        # A merged model's tokenizer records its training length; others have 512 or no limit.
        max_length = min(loaded.tokenizer.model_max_length, 512)
    # Reviews run past 512 tokens: truncate, as in training (the tokenizer's rule; head+tail by ReviewPipeline).
    return pipeline("text-classification", model=model, tokenizer=loaded.tokenizer,
                    trust_remote_code=loaded.trust_remote_code, truncation=True, max_length=max_length,
                    pipeline_class=ReviewPipeline)


class ReviewPipeline(TextClassificationPipeline):
    """The text-classification pipeline, with a review too long for head+tail truncation cut to its
    head and tail first (truncation.cut), as in training; head and tail truncate in the tokenizer."""

    def preprocess(self, inputs: Any, **tokenizer_kwargs: Any) -> Any:
        if isinstance(inputs, str):
            limit = tokenizer_kwargs.get("max_length") or self.tokenizer.model_max_length
            inputs = truncation.cut(self.tokenizer, [inputs], limit)[0]
        return super().preprocess(inputs, **tokenizer_kwargs)


def max_length(pipe: Classifier) -> int | None:
    """Tokens the pipeline reads per text (longer texts are truncated); None when unlimited."""
    if isinstance(pipe, OnnxClassifier):
        return pipe.max_length
    length = getattr(pipe, "_preprocess_params", {}).get("max_length")
    if length is None:
        length = getattr(pipe.tokenizer, "model_max_length", None)
    return length if isinstance(length, int) and length < 1_000_000 else None


def truncation_note(pipe: Classifier, first: Prediction) -> str:
    """The one note line for the first truncated prediction."""
    where = f" (first at line {first.line})" if first.line is not None else ""
    limit = max_length(pipe)
    kept = truncation.of(pipe.tokenizer).describe(limit, pipe.tokenizer.num_special_tokens_to_add(pair=False))
    return f"note: texts longer than {limit} tokens are truncated to their {kept}{where}"


def predict(pipe: Classifier, texts: Iterable[str], batch_size: int = BATCH_SIZE) -> list[Prediction]:
    """One prediction per text, in order."""
    return _predict_chunk(pipe, [(None, text) for text in texts], batch_size)


def predict_stream(pipe: Classifier, lines: Iterable[str], batch_size: int = BATCH_SIZE,
                   chunk_size: int = CHUNK_LINES) -> Iterator[Prediction]:
    """Predictions for `lines` in input order, read and predicted `chunk_size` lines at a time.

    Empty and whitespace-only lines are skipped; each prediction carries its 1-based line number.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    numbered = ((n, line.rstrip("\r\n")) for n, line in enumerate(lines, 1) if line.strip())
    while chunk := list(itertools.islice(numbered, chunk_size)):
        yield from _predict_chunk(pipe, chunk, batch_size)


def _predict_chunk(pipe: Classifier, numbered: Sequence[tuple[int | None, str]],
                   batch_size: int) -> list[Prediction]:
    """Longest texts first (batches of similar length pad less), results back in input order."""
    if not numbered:
        return []
    texts = [text for _, text in numbered]
    lengths = _token_counts(pipe, texts)
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    outputs: list[dict] = [{}] * len(texts)
    for i, output in zip(order, pipe([texts[i] for i in order], batch_size=batch_size)):
        outputs[i] = output
    limit = max_length(pipe)
    return [Prediction(text=text, label=o["label"], score=float(o["score"]), line=line,
                       truncated=limit is not None and n > limit)
            for (line, text), o, n in zip(numbered, outputs, lengths)]


def _token_counts(pipe: Classifier, texts: list[str]) -> list[int]:
    """Tokens per text before truncation, special tokens included."""
    ids = pipe.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return [len(i) for i in ids]


# ---------------------------------------------------------------- input and output


def read_lines(stream: BinaryIO, name: str, errors: str = "strict") -> Iterator[str]:
    """Decode a binary stream as UTF-8 one line at a time, so a bad byte is reported at its line.

    errors="strict" raises `DataError` naming the line; "replace" puts U+FFFD for bad bytes.
    """
    if errors not in DECODE_ERRORS:
        raise ValueError(f"errors must be one of {', '.join(DECODE_ERRORS)}, got {errors!r}")
    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8", errors=errors)
        except UnicodeDecodeError as err:
            raise DataError(
                f"{name} line {number} is not valid UTF-8: byte 0x{raw[err.start]:02x} at position "
                f"{err.start + 1} ({err.reason}); pass --errors replace to replace bad bytes"
            ) from None
        yield text.removeprefix("\ufeff") if number == 1 else text


def peek_text(lines: Iterable[str]) -> tuple[bool, Iterator[str]]:
    """Whether `lines` holds a non-blank line, and the same lines (blank ones kept for numbering)."""
    lines = iter(lines)
    for blank, line in enumerate(lines):
        if line.strip():
            return True, itertools.chain(itertools.repeat("", blank), [line], lines)
    return False, iter(())


def format_prediction(p: Prediction, as_json: bool) -> str:
    """`LABEL<tab>SCORE<tab>TEXT`, or a JSON object: text, label, score and the line if known."""
    if not as_json:
        return f"{p.label}\t{p.score:.4f}\t{p.text}"
    row: dict[str, object] = {"text": p.text, "label": p.label, "score": round(p.score, 6)}
    if p.line is not None:
        row["line"] = p.line
    return json.dumps(row)


def check_output_file(path: Path, overwrite: bool) -> None:
    """Refuse an existing file unless overwriting, and a folder that is missing or is a file."""
    if path.exists() and not overwrite:
        raise RunError(f"{path} already exists: pass --overwrite or choose another --output")
    if path.is_dir():
        raise RunError(f"{path} is a folder")
    if path.parent.exists() and not path.parent.is_dir():
        raise RunError(f"cannot write {path}: {path.parent} is a file, not a folder")
    if not path.parent.is_dir():
        raise RunError(f"folder {path.parent} does not exist")


@contextmanager
def atomic_output(path: Path) -> Iterator[TextIO]:
    """A temporary sibling file that replaces `path` only if the block succeeds."""
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        handle = tmp.open("w", encoding="utf-8")
    except OSError as err:
        raise RunError(f"cannot write to {path.parent}: {err.strerror}") from None
    try:
        with handle:
            yield handle
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
