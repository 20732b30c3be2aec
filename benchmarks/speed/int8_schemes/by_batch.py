"""Dynamic int8 (`export --quantize int8` with every linear layer int8): how its label agreement with
the fp32 graph depends on the reviews and on which of them share a batch.

    python benchmarks/speed/int8_schemes/by_batch.py --export ONNX_FP32_DIR --data DIR --out DIR

onnxruntime's dynamic quantization takes each activation's range from the whole batch it is given,
so a review's int8 logits depend on the reviews batched with it. Agreement is measured on three sets
of reviews in `shuffle(seed=42)` order (the first 256 of the train split, the 500 after the first
3000, the first 300 of the test split), in length-sorted batches of 32 (as the export's search and
check run) and one review at a time.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
from datasets import load_dataset
from transformers import AutoTokenizer

from peft_sentiment.export import BATCH_SIZE, length_batches, linear_layers, onnx_logits, quantize
from peft_sentiment.onnx_backend import encode

SETS = {"train rows 0-255": ("train", 0, 256), "train rows 3000-3499": ("train", 3000, 3500),
        "test rows 0-299": ("test", 0, 300)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    fp32 = args.export / "model.onnx"
    tokenizer = AutoTokenizer.from_pretrained(str(args.export))
    max_length = json.loads((args.export / "export.json").read_text())["max_length"]
    names = [i.name for i in onnxruntime.InferenceSession(str(fp32)).get_inputs()]
    layers, _ = linear_layers(fp32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        int8 = Path(tmp) / "int8.onnx"
        quantize(fp32, int8, list(layers.values()))
        for label, (split, start, stop) in SETS.items():
            ds = load_dataset("parquet", data_files={split: f"{args.data}/{split}.parquet"})[split]
            texts = list(ds.shuffle(seed=42).select(range(start, stop))["text"])
            for batch in (BATCH_SIZE, 1):
                batches = length_batches(tokenizer, texts, max_length, names) if batch == BATCH_SIZE else [
                    (np.array([i]), encode(tokenizer, [text], max_length, names)) for i, text in enumerate(texts)]
                same = onnx_logits(fp32, batches).argmax(-1) == onnx_logits(int8, batches).argmax(-1)
                rows.append({"reviews": label, "batch": batch, "n": len(texts), "flipped": int((~same).sum()),
                             "agreement": float(same.mean())})
                print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "by_batch.json").write_text(json.dumps({
        "command": f"python benchmarks/speed/int8_schemes/by_batch.py --export {args.export} --data {args.data} "
                   f"--out {args.out}",
        "int8_layers": len(layers), "rows": rows,
        "environment": {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__}},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
