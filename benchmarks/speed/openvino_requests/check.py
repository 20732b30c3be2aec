"""OpenVINO prediction with the backend's infer requests waited on in turn, against the AsyncInferQueue
with a Python callback it used before (which could hang the process when the model was dropped).

    python benchmarks/speed/openvino_requests/check.py --export DIR --data DIR --way requests|queue --out FILE

Reviews: the first --n of `shuffle(seed=42)` of DIR/test.parquet, through `predict` (length-sorted,
requests of openvino_backend.BATCH), bf16 where the CPU has it, after a warm-up on 16 reviews. `queue`
swaps the backend's `logits` for the earlier one for this process, and leaves with os._exit once the
result is written, before the compiled model is torn down.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import load_dataset

from peft_sentiment.onnx_backend import encode
from peft_sentiment.openvino_backend import OpenVinoClassifier, request_size
from peft_sentiment.predict import load_pipeline, predict


def queue_logits(self: OpenVinoClassifier, texts: Sequence[str]) -> np.ndarray:
    """The earlier way: one AsyncInferQueue per call, each request's output kept by a Python callback."""
    from openvino import AsyncInferQueue

    texts = list(texts)
    size = request_size(len(texts), self.requests)
    rows: list[Any] = [None] * ((len(texts) + size - 1) // size)

    def keep(request: Any, index: int) -> None:
        rows[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32)

    queue = AsyncInferQueue(self.compiled, self.requests)
    queue.set_callback(keep)
    for index, start in enumerate(range(0, len(texts), size)):
        queue.start_async(encode(self.tokenizer, texts[start:start + size], self.max_length, self.input_names),
                          index)
    queue.wait_all()
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--export", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--way", choices=("requests", "queue"), required=True)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    test = load_dataset("parquet", data_files={"test": str(args.data / "test.parquet")})["test"]
    texts = test.shuffle(seed=42).select(range(args.n))["text"]
    if args.way == "queue":
        OpenVinoClassifier.logits = queue_logits
    ov = load_pipeline(args.export, backend="openvino")
    predict(ov, texts[:16])
    start = time.perf_counter()
    labels = [p.label for p in predict(ov, texts)]
    seconds = time.perf_counter() - start
    result = {"way": args.way, "export": str(args.export), "precision": ov.precision, "requests": ov.requests,
              "n": len(texts), "seconds": seconds, "reviews_per_second": len(texts) / seconds, "labels": labels}
    args.out.write_text(json.dumps(result) + "\n")
    print(f"{args.way}: {ov.precision}, {ov.requests} requests, {len(texts) / seconds:.2f} reviews/s")
    if args.way == "queue":
        os._exit(0)


if __name__ == "__main__":
    main()
