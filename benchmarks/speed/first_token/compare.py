"""The last layer for the first token only (peft_sentiment/first_token.py): speed and logits of the same
merged model exported both ways, under OpenVINO bf16 as `predict --backend openvino` runs it.

    python benchmarks/speed/first_token/compare.py --model MERGED --data DIR --out DIR

MERGED: a merged model folder (`peft-sentiment merge RUN -o MERGED`). Both graphs come from the
project's own exporter (export_onnx), one inside `first_token_only`; they label rows 3500-3899 of
shuffle(seed=42) of the train split (reviews no run trains or validates on), longest first, requests
of 8, timed in turns (full, first-token, full, first-token, ...) after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from peft_sentiment.export import export_onnx, input_names
from peft_sentiment.first_token import first_token_only
from peft_sentiment.onnx_backend import encode
from peft_sentiment.openvino_backend import BATCH

ROWS = (3500, 3900)
ROUNDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    model = AutoModelForSequenceClassification.from_pretrained(str(args.model)).float().eval()
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    names = input_names(model, tokenizer)
    train = load_dataset("parquet", data_files={"train": f"{args.data}/train.parquet"})["train"].shuffle(seed=42)
    texts = list(train.select(range(*ROWS))["text"])
    order = sorted(range(len(texts)), key=lambda i: -len(tokenizer(texts[i])["input_ids"]))
    example = encode(tokenizer, texts[:2], args.max_length, names)
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"every token": Path(tmp) / "full.onnx", "first token only": Path(tmp) / "first.onnx"}
        export_onnx(model, example, paths["every token"])
        with first_token_only(model) as applied:
            assert applied, "first_token.py does not know this architecture"
            export_onnx(model, example, paths["first token only"])
        compiled = {name: core.compile_model(core.read_model(str(path)), "CPU",
                                             {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "THROUGHPUT"})
                    for name, path in paths.items()}

    def run(name: str, subset: list[int]) -> tuple[np.ndarray, float]:
        c = compiled[name]
        out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
        queue = ov.AsyncInferQueue(c, int(c.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        queue.set_callback(lambda request, index: out.__setitem__(index, request.get_output_tensor(0).data))
        start = time.perf_counter()
        for s in range(0, len(subset), BATCH):
            index = subset[s:s + BATCH]
            queue.start_async(encode(tokenizer, [texts[i] for i in index], args.max_length, names), index)
        queue.wait_all()
        return out, len(subset) / (time.perf_counter() - start)

    for name in compiled:
        run(name, order[:16])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in compiled}
    logits: dict[str, np.ndarray] = {}
    for _ in range(ROUNDS):
        for name in compiled:
            logits[name], rate = run(name, order)
            rates[name].append(round(rate, 2))
    full, first = logits["every token"], logits["first token only"]
    result = {
        "command": shlex.join(["python", "benchmarks/speed/first_token/compare.py", *sys.argv[1:]]),
        "model": str(args.model), "rows": ROWS, "n": len(texts), "max_length": args.max_length,
        "reviews_per_second": rates,
        "median_speedup": round(float(np.median(rates["first token only"]) / np.median(rates["every token"])), 3),
        "max_abs_logit_diff_bf16": float(np.abs(full - first).max()),
        "labels_agreeing": float((full.argmax(-1) == first.argmax(-1)).mean()),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "openvino": ov.__version__,
                        "cpu_threads": torch.get_num_threads()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
