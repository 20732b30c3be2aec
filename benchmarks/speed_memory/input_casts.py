"""Bytes allocated in one LoRA training step (bf16 autocast, frozen linears in bf16) with PEFT's cast of
each adapted layer's input to fp32, and without it (`skip_input_casts`, what the recipes do).

    python benchmarks/speed_memory/input_casts.py --model ../shared/models/distilbert-base-uncased-shape \
        --out benchmarks/speed_memory/input_casts.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from saved_tensors import write_table  # this folder's script, on the path when run as a script
from torch.profiler import ProfilerActivity, profile

from peft_sentiment.config import load_config
from peft_sentiment.modeling import build_model, skip_input_casts, store_frozen_linears


def allocated(model: str, skip: bool, batch: int, length: int) -> tuple[float, int]:
    """MiB allocated by aten::empty* during one forward and backward, and the number of dtype copies."""
    built = build_model(load_config("lora", {"model.name": model, "model.random_init": True}))
    store_frozen_linears(built.model, built.head_modules, torch.bfloat16)
    if skip:
        skip_input_casts(built.model)
    built.model.train()
    ids = torch.randint(1000, 20000, (batch, length))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = built.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                               labels=torch.zeros(batch, dtype=torch.long)).loss
        loss.backward()
    events = prof.key_averages()
    total = sum(e.cpu_memory_usage for e in events
                if e.key in ("aten::empty", "aten::empty_strided") and e.cpu_memory_usage > 0)
    copies = sum(e.count for e in events if e.key == "aten::_to_copy")
    return total / 2**20, copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lines = ["| PEFT input casts | MiB allocated per step | dtype copies per step |", "| --- | --- | --- |"]
    for skip in (False, True):
        mib, copies = allocated(args.model, skip, args.batch_size, args.length)
        lines.append(f"| {'skipped' if skip else 'on (PEFT default)'} | {mib:.0f} | {copies} |")
    write_table(args.out, lines, f"Model: {args.model} (random weights), LoRA recipe, batch {args.batch_size} "
                f"x {args.length} tokens, one forward and backward under bf16 autocast.")


if __name__ == "__main__":
    main()
