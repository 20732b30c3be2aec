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
        """float32 logits, one row per text, the texts in batches of up to BATCH run side by side.

        The requests are waited on in turn, with no Python callback: an AsyncInferQueue callback
        runs on OpenVINO's threads and takes the GIL, and tearing the compiled model down while one
        of those threads waits for it has hung the process (seen with openvino 2026.4 on AMD EPYC)."""
        texts = list(texts)
        size = request_size(len(texts), self.requests)
        chunks = range(0, len(texts), size)
        rows: list[np.ndarray | None] = [None] * len(chunks)
        requests = [self.compiled.create_infer_request() for _ in range(min(self.requests, len(chunks)))]
        running: list[int | None] = [None] * len(requests)  # the chunk each request works on

        def collect(slot: int) -> None:
            index = running[slot]
            if index is not None:
                requests[slot].wait()
                rows[index] = np.array(requests[slot].get_output_tensor(0).data, dtype=np.float32)
                running[slot] = None

        try:
            for index, start in enumerate(chunks):
                slot = index % len(requests)
                collect(slot)
                requests[slot].start_async(encode(self.tokenizer, texts[start:start + size], self.max_length,
                                                  self.input_names))
                running[slot] = index
            for slot in range(len(requests)):
                collect(slot)
        finally:
            for slot, request in enumerate(requests):  # after an error: nothing left running
                if running[slot] is not None:
                    request.wait()
        return np.concatenate(rows) if rows else np.zeros((0, len(self.id2label)), dtype=np.float32)


__all__ = ["BATCH", "OpenVinoClassifier", "request_size"]
