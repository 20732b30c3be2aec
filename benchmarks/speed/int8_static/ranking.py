"""Which feed-forward layers int8-static should put back to fp32 first: three ways of ranking them,
scored by the labels that flip, on reviews no run trains on (never on test reviews).

    python benchmarks/speed/int8_static/ranking.py --export ONNX_FP32_DIR --data DIR --out DIR

ONNX_FP32_DIR: an fp32 export (`peft-sentiment export RUN -o DIR`) of a run trained on the first 3000
of shuffle(seed=42) of the train split. As `export --quantize int8-static` does, the feed-forward
layers are made int8 by NNCF (static_int8.calibrate), calibrated on the first 256 training reviews;
the selection texts are rows 3000-3499 of the same order (the export's selection texts for such a
run). Each layer's harm is the mean |logit diff| from the fp32 graph with that layer alone int8,
measured on (a) the first 32 selection texts, (b) the 32 selection texts with the smallest fp32
margin, (c) all 500; for each ranking, the labels that flip with its k most harmful layers in fp32,
k = 0..8. onnxruntime runs every graph, as the export's check does.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import nncf
import numpy as np
import onnx
import onnxruntime
from datasets import load_dataset
from transformers import AutoTokenizer

from peft_sentiment.export import N_CALIBRATION, N_RANKING, length_batches, linear_layers, onnx_logits
from peft_sentiment.static_int8 import calibrate, feed_forward, keep_fp32

SELECTION = (3000, 3500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    train = load_dataset("parquet", data_files={"train": f"{args.data}/train.parquet"})["train"].shuffle(seed=42)
    texts = list(train.select(range(*SELECTION))["text"])
    path = args.export / "model.onnx"
    tokenizer = AutoTokenizer.from_pretrained(str(args.export))
    fp32 = onnx.load(str(path))
    names = [i.name for i in fp32.graph.input]
    max_length = json.loads((args.export / "export.json").read_text())["max_length"]
    selection = length_batches(tokenizer, texts, max_length, names)
    calibration = length_batches(tokenizer, list(train.select(range(N_CALIBRATION))["text"]), max_length, names)
    layers, _ = linear_layers(path)
    ffn = feed_forward(path, layers)
    quantized = calibrate(fp32, [inputs for _, inputs in calibration], set(ffn.values()))
    reference = onnx_logits(path, selection)
    margin = np.abs(np.diff(reference, axis=-1)[:, 0])

    with tempfile.TemporaryDirectory() as tmp:
        def logits(kept: set[str]) -> np.ndarray:
            onnx.save(keep_fp32(quantized, fp32, {ffn[name] for name in kept}), f"{tmp}/g.onnx")
            return onnx_logits(Path(f"{tmp}/g.onnx"), selection)

        def flips(kept: set[str]) -> int:
            return int((logits(kept).argmax(-1) != reference.argmax(-1)).sum())

        alone = {name: np.abs(logits(set(ffn) - {name}) - reference).mean(-1) for name in ffn}
        print("measured each layer alone", flush=True)
        subsets = {"first 32": np.arange(N_RANKING), "32 smallest margins": np.argsort(margin)[:N_RANKING],
                   "all 500": np.arange(len(texts))}
        rankings = {how: sorted(ffn, key=lambda name, rows=rows: -alone[name][rows].mean())
                    for how, rows in subsets.items()}
        cache: dict[frozenset[str], int] = {}
        curves: dict[str, list[int]] = {}
        for how, order in rankings.items():
            curves[how] = []
            for k in range(min(len(order), 8) + 1):
                kept = frozenset(order[:k])
                if kept not in cache:
                    cache[kept] = flips(set(kept))
                curves[how].append(cache[kept])
            print(how, curves[how], flush=True)
    result = {
        "command": f"python benchmarks/speed/int8_static/ranking.py --export {args.export} --data {args.data} "
                   f"--out {args.out}",
        "selection_rows": SELECTION, "calibration_rows": [0, N_CALIBRATION], "n_selection": len(texts),
        "rankings": rankings, "flips_with_k_most_harmful_fp32": curves,
        "harm": {how: {name: float(alone[name][rows].mean()) for name in ffn} for how, rows in subsets.items()},
        "environment": {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
                        "nncf": nncf.__version__, "threads": "OMP_NUM_THREADS=2"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ranking.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
