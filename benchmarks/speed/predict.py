"""Prediction speed: peft-sentiment's pipeline and `peft-sentiment predict` against
`pipeline("text-classification")` with its defaults, on the same merged model and real reviews.

The reviews are the first N of `shuffle(seed=42)` of the test split. The default pipeline is called
with truncation=True (reviews run past the model's 512 positions) and nothing else: batch size 1,
the weights as saved (fp32). Each contender runs in this process after a warm-up on 16 reviews,
except the command, which is timed as a whole process (start-up and model loading included).
Writes results.json and results.md to --out and prints the table.

    python benchmarks/speed/predict.py --model MERGED_DIR --data DIR --out DIR [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from datasets import load_dataset
from transformers import pipeline

from peft_sentiment.perf import device_name
from peft_sentiment.predict import BATCH_SIZE, load_pipeline, predict
from peft_sentiment.probe import choose_precision


def shuffled_test_reviews(data: str, n: int) -> list[str]:
    """The first `n` reviews of shuffle(seed=42) of DATA/test.parquet."""
    test = load_dataset("parquet", data_files={"test": str(Path(data) / "test.parquet")})["test"]
    return list(test.shuffle(seed=42).select(range(n))["text"])


def timed(fn, texts: list[str]) -> tuple[list[str], float]:
    fn(texts[:16])  # warm-up
    start = time.perf_counter()
    labels = fn(texts)
    return labels, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a merged model folder")
    parser.add_argument("--data", required=True, help="folder with test.parquet")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    texts = shuffled_test_reviews(args.data, args.n)

    default = pipeline("text-classification", model=args.model)
    rows = []
    base_labels, seconds = timed(lambda t: [o["label"] for o in default(t, truncation=True)], texts)
    rows.append({"contender": 'pipeline("text-classification"), defaults', "seconds": seconds})
    for precision in ("fp32", "auto"):
        pipe = load_pipeline(args.model, precision=precision)
        labels, seconds = timed(lambda t: [p.label for p in predict(pipe, t)], texts)
        rows.append({"contender": f"peft_sentiment.predict, precision {precision} "
                                  f"({choose_precision(precision)}), batch {BATCH_SIZE}, length-sorted",
                     "seconds": seconds, "agreement": _agree(base_labels, labels)})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "reviews.txt").write_text("".join(t.replace("\n", " ").replace("\r", " ") + "\n" for t in texts))
        cmd = [sys.executable, "-m", "peft_sentiment", "predict", args.model, "--file", f"{tmp}/reviews.txt",
               "--output", f"{tmp}/out.txt"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        # One line per review; a review may hold other line separators (U+2028, ...), so split on \n only.
        lines = (Path(tmp) / "out.txt").read_text().rstrip("\n").split("\n")
        labels = [line.split("\t")[0] for line in lines]
    rows.append({"contender": "peft-sentiment predict --file (whole process)", "seconds": seconds,
                 "agreement": _agree(base_labels, labels)})
    base = rows[0]["seconds"]
    for row in rows:
        row["reviews_per_second"] = args.n / row["seconds"]
        row["speedup"] = base / row["seconds"]
    results = {"args": {k: str(v) for k, v in vars(args).items()},
               "command": shlex.join(["python", "benchmarks/speed/predict.py", *sys.argv[1:]]),
               "environment": {"device": device_name(), "torch": torch.__version__,
                               "transformers": transformers.__version__, "python": platform.python_version()},
               "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| contender | reviews/s | speed-up | labels agreeing with the default pipeline |",
             "| --- | --- | --- | --- |"]
    for r in rows:
        agree = f"{100 * r['agreement']:.2f}%" if "agreement" in r else "-"
        lines.append(f"| {r['contender']} | {r['reviews_per_second']:.2f} | {r['speedup']:.2f}x | {agree} |")
    lines += ["", f"Model: {args.model}. Reviews: the first {args.n} of shuffle(seed=42) of "
              f"{args.data}/test.parquet.", f"Device: {results['environment']['device']}; torch "
              f"{torch.__version__}, transformers {transformers.__version__}.", f"Command: `{results['command']}`"]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _agree(a: list[str], b: list[str]) -> float:
    if len(a) != len(b):
        raise SystemExit(f"{len(b)} predictions for {len(a)} reviews")
    return sum(x == y for x, y in zip(a, b)) / len(a)


if __name__ == "__main__":
    main()
