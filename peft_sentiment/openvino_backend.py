"""Running an ONNX export (peft_sentiment.export) with OpenVINO on the CPU.

`OpenVinoClassifier` is called like `OnnxClassifier` (and like a text-classification pipeline) and
reads the same export folder. Where the CPU computes bf16 natively (AVX512-BF16 or AMX) and
`precision` is auto, OpenVINO runs the graph in bf16 (its inference precision hint); the weights
on disk stay fp32. Texts go in batches of `BATCH`, several batches in flight at once (its
throughput hint), longest first as predict sorts them; fewer texts than fill every request (a
micro-batch of `serve`) are shared out among the requests, so that no stream idles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelError, first_line
from .onnx_backend import OnnxClassifier, encode

BATCH = 8  # texts per request: benchmarks/speed/predict_backends measured 4 to 32 on 2 cores
INSTALL_HINT = "pip install 'peft-sentiment[openvino]'"
HINTS = {"bf16": "bf16", "fp32": "f32"}


def require_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise ConfigError(f"the openvino backend needs openvino: {INSTALL_HINT}") from None
    return openvino


def request_size(n_texts: int, requests: int) -> int:
    """Texts per infer request: BATCH, or fewer when `n_texts` would not give each request one."""
    return max(1, min(BATCH, -(-n_texts // max(requests, 1))))


class OpenVinoClassifier(OnnxClassifier):
    """An ONNX export compiled by OpenVINO for the CPU, in `precision` (auto: bf16 where it is faster)."""

    backend = "openvino"

    def __init__(self, folder: str | Path, max_length: int | None = None, precision: str = "auto",
                 threads: int | None = None) -> None:
        from .probe import choose_precision

        chosen = choose_precision(precision)
        if chosen not in HINTS:
            raise ConfigError(f"precision {precision} is not one the openvino backend runs on the CPU: "
                              f"choose {', '.join(['auto', *HINTS])}")
        self.precision = chosen
        super().__init__(folder, max_length, threads)

    def _start(self, path: Path, threads: int | None) -> None:
        ov = require_openvino()
        options: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[self.precision],
                                   "PERFORMANCE_HINT": "THROUGHPUT"}
        if threads:
            options["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", options)
        except Exception as err:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise ModelError(f"cannot load {path} with openvino: {first_line(err)}") from None
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """float32 logits, one row per text, the texts in batches of up to BATCH run side by side."""
        from openvino import AsyncInferQueue

        texts = list(texts)
        size = request_size(len(texts), self.requests)
        rows: list[np.ndarray | None] = [None] * ((len(texts) + size - 1) // size)

        def keep(request: Any, index: int) -> None:
            rows[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32)

        queue = AsyncInferQueue(self.compiled, self.requests)
        queue.set_callback(keep)
        for index, start in enumerate(range(0, len(texts), size)):
            queue.start_async(encode(self.tokenizer, texts[start:start + size], self.max_length,
                                     self.input_names), index)
        queue.wait_all()
        return np.concatenate(rows) if rows else np.zeros((0, len(self.id2label)), dtype=np.float32)


__all__ = ["BATCH", "OpenVinoClassifier", "request_size"]
