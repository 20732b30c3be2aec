"""What each recipe keeps for the backward pass: the bytes of every tensor autograd saves during one
training forward of one review of `--length` tokens, parameters excluded, in the recipe's precision.

    python benchmarks/speed_memory/saved_tensors.py --model ../shared/models/distilbert-base-uncased-shape \
        --out benchmarks/speed_memory/saved_tensors.md
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path

import torch

from peft_sentiment.config import load_config
from peft_sentiment.modeling import FROZEN_BASE_METHODS, build_model, store_frozen_linears
from peft_sentiment.perf import device_name
from peft_sentiment.probe import choose_precision


def saved_bytes(recipe: str, model: str, length: int) -> tuple[int, str]:
    cfg = load_config(recipe, {"model.name": model, "model.random_init": True})
    precision = choose_precision(cfg.train.precision)
    built = build_model(cfg)
    if cfg.method in FROZEN_BASE_METHODS and precision == "bf16":
        store_frozen_linears(built.model, built.head_modules, torch.bfloat16)
    built.model.train()
    params = {p.data_ptr() for p in built.model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in params:
            seen[t.data_ptr()] = max(seen.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    ids = torch.randint(1000, 20000, (1, length))
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        built.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([1]))
    return sum(seen.values()), precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--recipes", default="seed,full,lora")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lines = [f"| recipe | precision | saved MiB per review | x batch {args.batch_size} |", "| --- | --- | --- | --- |"]
    for recipe in args.recipes.split(","):
        torch.manual_seed(0)
        size, precision = saved_bytes(recipe, args.model, args.length)
        mib = size / 2**20
        lines.append(f"| {recipe} | {precision} | {mib:.1f} | {mib * args.batch_size:.0f} MiB |")
    write_table(args.out, lines, f"Model: {args.model} (random weights), one review of {args.length} tokens.")


def write_table(out: Path, lines: list[str], setting: str) -> None:
    """The table, what it measured, the device and the command: to `out` and the terminal."""
    lines = [*lines, "", setting, f"Device: {device_name()}; torch {torch.__version__}.",
             f"Command: `{shlex.join(['python', *sys.argv])}`"]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
