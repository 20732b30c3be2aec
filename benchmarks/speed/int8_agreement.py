"""Would dynamic int8 quantization keep the labels? Agreement of `quantize_dynamic` (int8 linear layers)
and of bf16 weights with fp32 predictions on real reviews, through the library's pipeline.

    python benchmarks/speed/int8_agreement.py --model MERGED_DIR --data DIR --out DIR [--n 300]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from pathlib import Path

import torch
from predict import shuffled_test_reviews  # benchmarks/speed/predict.py

from peft_sentiment.perf import device_name
from peft_sentiment.predict import load_pipeline, predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    texts = shuffled_test_reviews(args.data, args.n)
    reference = [p.label for p in predict(load_pipeline(args.model, precision="fp32"), texts)]
    bf16 = [p.label for p in predict(load_pipeline(args.model, precision="bf16"), texts)]
    pipe = load_pipeline(args.model, precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.model = torch.ao.quantization.quantize_dynamic(pipe.model, {torch.nn.Linear}, dtype=torch.qint8)
    int8 = [p.label for p in predict(pipe, texts)]
    rows = {name: sum(a == b for a, b in zip(reference, got)) / len(texts) for name, got in
            (("bf16 weights", bf16), ("int8 dynamic quantization", int8))}
    command = shlex.join(["python", "benchmarks/speed/int8_agreement.py", *sys.argv[1:]])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_agreement.json").write_text(json.dumps(
        {"command": command, "device": device_name(), "torch": torch.__version__, "n": args.n,
         "agreement_with_fp32": rows}, indent=2) + "\n")
    lines = ["| weights | labels agreeing with fp32 |", "| --- | --- |"]
    lines += [f"| {name} | {100 * value:.2f}% |" for name, value in rows.items()]
    lines += ["", f"Model: {args.model}; the first {args.n} reviews of shuffle(seed=42) of the test split.",
              f"Device: {device_name()}; torch {torch.__version__}.", f"Command: `{command}`"]
    (args.out / "int8_agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
