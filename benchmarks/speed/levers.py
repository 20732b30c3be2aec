"""One training step under each speed lever, to see what each one buys.

Fixed batches of random token ids (batch 16 x --length tokens, no padding) through a sequence
classifier loaded from --model; full fine-tuning and LoRA (r 16 on every attention and feed-forward
linear layer), fp32 or bf16 autocast, attention dropout at the model's own rate or 0, LoRA dropout
0.1 or 0. Each configuration: one warm-up step, then the median of --steps timed steps (forward,
backward, AdamW). Writes levers.json and levers.md to --out.

    python benchmarks/speed/levers.py --model DIR --out DIR [--length 320] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForSequenceClassification

from peft_sentiment.modeling import DEFAULT_LORA_TARGETS, set_attention_dropout
from peft_sentiment.perf import device_name

# name, method, bf16 autocast, attention dropout (None: the model's), LoRA dropout
CONFIGS = [
    ("full fp32", "full", False, None, None),
    ("full bf16", "full", True, None, None),
    ("full fp32, attention dropout 0", "full", False, 0.0, None),
    ("full bf16, attention dropout 0", "full", True, 0.0, None),
    ("lora bf16, lora dropout 0.1", "lora", True, None, 0.1),
    ("lora bf16, attention dropout 0, lora dropout 0.1", "lora", True, 0.0, 0.1),
    ("lora bf16, attention dropout 0, lora dropout 0", "lora", True, 0.0, 0.0),
]


def build(model_dir: str, method: str, attention_dropout: float | None, lora_dropout: float | None):
    config = AutoConfig.from_pretrained(model_dir, num_labels=2)
    set_attention_dropout(config, attention_dropout)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config)
    if method == "lora":
        targets = list(DEFAULT_LORA_TARGETS[config.model_type])
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=16, lora_alpha=32,
                                                 lora_dropout=lora_dropout, target_modules=targets))
    return model.train()


def time_steps(model: torch.nn.Module, bf16: bool, batch: dict, steps: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--length", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    vocab = AutoConfig.from_pretrained(args.model).vocab_size
    ids = torch.randint(1000, vocab, (args.batch_size, args.length))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.randint(0, 2, (args.batch_size,))}
    rows = []
    for name, method, bf16, attention, lora_dropout in CONFIGS:
        seconds = time_steps(build(args.model, method, attention, lora_dropout), bf16, batch, args.steps)
        rows.append({"config": name, "seconds_per_step": seconds, "samples_per_second": args.batch_size / seconds})
        print(f"{name}: {seconds:.2f} s/step", flush=True)
    command = shlex.join(["python", "benchmarks/speed/levers.py", *sys.argv[1:]])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "levers.json").write_text(json.dumps(
        {"command": command, "device": device_name(), "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    lines = ["| configuration | s per step | samples/s |", "| --- | --- | --- |"]
    lines += [f"| {r['config']} | {r['seconds_per_step']:.2f} | {r['samples_per_second']:.2f} |" for r in rows]
    lines += ["", f"Model: {args.model}; batch {args.batch_size} x {args.length} tokens; median of "
              f"{args.steps} steps after a warm-up.", f"Device: {device_name()}; torch {torch.__version__}.",
              f"Command: `{command}`"]
    (args.out / "levers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
