"""Which linear layers static int8 may quantize: agreement and speed under OpenVINO bf16, measured on
train-split reviews that no run trains or validates on, never on test reviews.

    python benchmarks/speed/int8_static/variants.py --export ONNX_FP32_DIR --data DIR --out DIR

ONNX_FP32_DIR: an fp32 export (`peft-sentiment export RUN -o DIR`). Each variant is NNCF's static
post-training quantization (transformer preset) of that graph, calibrated on rows 5500-5755 of
shuffle(seed=42) of the train split, with some linear layers left out; its labels on rows 3500-5499
(OpenVINO, bf16, requests of 8, longest first) are compared with the fp32 graph's (OpenVINO, f32).
The embedding tables stay fp32 in every variant, as in the export. No layer is put back to fp32 by
a search here: these are the schemes as they come.
  all          every linear layer NNCF quantizes (its default, less the embedding tables)
  attention    every one but the feed-forward layers
  feed-forward only the feed-forward layers (what `export --quantize int8-static` does)
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
from datasets import load_dataset
from transformers import AutoTokenizer

from peft_sentiment.export import linear_layers
from peft_sentiment.openvino_backend import BATCH
from peft_sentiment.static_int8 import _quiet, feed_forward, require_nncf

CALIBRATION = (5500, 5756)
SELECTION = (3500, 5500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    nncf = require_nncf()
    train = load_dataset("parquet", data_files={"train": f"{args.data}/train.parquet"})["train"].shuffle(seed=42)
    calibration = list(train.select(range(*CALIBRATION))["text"])
    texts = list(train.select(range(*SELECTION))["text"])
    path = args.export / "model.onnx"
    tokenizer = AutoTokenizer.from_pretrained(str(args.export))
    graph = onnx.load(str(path))
    names = [i.name for i in graph.graph.input]
    max_length = json.loads((args.export / "export.json").read_text())["max_length"]

    def encode(batch: list[str]) -> dict[str, np.ndarray]:
        enc = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        return {n: enc[n].astype(np.int64) for n in names}

    order = sorted(range(len(texts)), key=lambda i: -len(tokenizer(texts[i])["input_ids"]))
    core = ov.Core()

    def labels(model: onnx.ModelProto, precision: str) -> tuple[np.ndarray, float]:
        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(model, f"{tmp}/model.onnx")
            read = core.read_model(f"{tmp}/model.onnx")
        compiled = core.compile_model(read, "CPU",
                                      {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT"})
        out = np.zeros(len(texts), dtype=np.int64)

        def done(request: ov.InferRequest, index: list[int]) -> None:
            out[index] = request.get_output_tensor(0).data.argmax(-1)

        queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue.set_callback(done)
        start = time.perf_counter()
        for s in range(0, len(order), BATCH):
            index = order[s:s + BATCH]
            queue.start_async(encode([texts[i] for i in index]), index)
        queue.wait_all()
        return out, len(texts) / (time.perf_counter() - start)

    reference, _ = labels(graph, "f32")
    layers, _ = linear_layers(path)
    ffn = set(feed_forward(path, layers).values())
    matmuls = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Gemm")]
    lookups = [n.name for n in graph.graph.node if n.op_type == "Gather"]  # embedding tables stay fp32
    variants = {"all": lookups, "attention": sorted(ffn) + lookups,
                "feed-forward": [n for n in matmuls if n not in ffn] + lookups}
    rows = []
    for name, ignored in variants.items():
        start = time.perf_counter()
        with _quiet():
            quantized = nncf.quantize(graph, nncf.Dataset([calibration[i:i + BATCH]
                                                           for i in range(0, len(calibration), BATCH)], encode),
                                      model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration),
                                      ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
        seconds = time.perf_counter() - start
        found, rate = labels(quantized, "bf16")
        rows.append({"variant": name, "nodes_left_out": len(ignored), "quantize_seconds": round(seconds, 1),
                     "reviews_per_second": round(rate, 2), "agreement_with_fp32": float((found == reference).mean())})
        print(rows[-1], flush=True)
    _, rate = labels(graph, "bf16")
    rows.append({"variant": "none (fp32 graph, bf16 compute)", "reviews_per_second": round(rate, 2)})
    print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({
        "command": f"python benchmarks/speed/int8_static/variants.py --export {args.export} --data {args.data} "
                   f"--out {args.out}",
        "calibration_rows": CALIBRATION, "selection_rows": SELECTION, "rows": rows,
        "environment": {"python": platform.python_version(), "openvino": ov.__version__,
                        "nncf": nncf.__version__}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
