"""Training speed of the project's recipes against the seed recipe, measured side by side.

Each round runs every configuration once, in the same order, each in a fresh process on the same
inputs: the seed recipe as a plain transformers script (seed_peer.py, the peer), the project's
`--recipe seed` (the same procedure through peft-sentiment), then the fast recipes. Figures are the
median over rounds; ratios are to the peer. Writes results.json (every run, the environment, the
command) and results.md to --out, and prints the table.

    python benchmarks/speed/run.py --model DIR --data DIR --out DIR [--train-size N] [--rounds R]
        [--configs peer,seed,full,lora] [--random-init]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS: dict[str, list[str]] = {
    "peer": [],  # seed_peer.py
    "seed": ["--recipe", "seed"],
    "full": ["--recipe", "full"],
    "lora": ["--recipe", "lora"],
    "full+gc": ["--recipe", "full", "--gradient-checkpointing"],
    "lora+gc": ["--recipe", "lora", "--gradient-checkpointing"],
}


def run_one(name: str, args: argparse.Namespace, work: Path) -> dict:
    out = work / name.replace("+", "-")
    data = ["--model", args.model, "--data", args.data, "--train-size", str(args.train_size),
            "--test-size", str(args.test_size), "--epochs", str(args.epochs)]
    if args.random_init:
        data.append("--random-init")
    if name == "peer":
        cmd = [sys.executable, str(HERE / "seed_peer.py"), *data, "--out", f"{out}.json"]
    else:
        cmd = [sys.executable, "-m", "peft_sentiment", "train", *CONFIGS[name], *data, "-o", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"{name} failed ({proc.returncode}): {' | '.join(tail)}")
    metrics = json.loads(Path(f"{out}.json" if name == "peer" else out / "metrics.json").read_text())
    keep = ("accuracy", "f1", "train_seconds", "train_samples_per_second", "train_tokens_per_second",
            "train_mfu", "train_flops", "peak_flops_per_second", "peak_memory_mib", "compute_dtype",
            "n_train", "n_test")
    record = {"name": name, "command": shlex.join(cmd), "process_seconds": round(time.perf_counter() - start, 1),
              **{k: metrics.get(k) for k in keep}}
    return record


def environment() -> dict:
    import torch
    import transformers

    from peft_sentiment.perf import device_name

    return {"device": device_name(), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "platform": platform.platform()}


def summarize(runs: list[dict], names: list[str]) -> list[dict]:
    by = {n: [r for r in runs if r["name"] == n] for n in names}
    peer = statistics.median(r["train_samples_per_second"] for r in by["peer"]) if by.get("peer") else None
    seed_runs = by.get("seed") or []
    rows = []
    for name in names:
        rs = by[name]
        sps = statistics.median(r["train_samples_per_second"] for r in rs)
        mfus = [r["train_mfu"] for r in rs if r.get("train_mfu") is not None]
        if name == "peer" and seed_runs and seed_runs[0].get("train_flops"):
            # Same model, data and epochs as --recipe seed: the same FLOPs, over the peer's own time.
            seed = seed_runs[0]
            mfus = [seed["train_flops"] / r["train_seconds"] / seed["peak_flops_per_second"] for r in rs]
        rows.append({
            "config": name,
            "runs": len(rs),
            "train_samples_per_second": sps,
            "all_samples_per_second": [r["train_samples_per_second"] for r in rs],
            "ratio_to_peer": sps / peer if peer else None,
            "train_tokens_per_second": statistics.median(r["train_tokens_per_second"] for r in rs),
            "mfu": statistics.median(mfus) if mfus else None,
            "peak_memory_mib": max(r["peak_memory_mib"] for r in rs),
            "accuracy": rs[0]["accuracy"],
            "f1": rs[0]["f1"],
            "compute_dtype": rs[0].get("compute_dtype") or "fp32",
        })
    return rows


def markdown(rows: list[dict], results: dict) -> str:
    a = results["args"]
    lines = [
        "| config | train samples/s (median) | ratio to peer | tokens/s | MFU | peak memory (MiB) | "
        "accuracy | F1 | dtype |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r['ratio_to_peer']:.2f}x" if r["ratio_to_peer"] else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"| {r['config']} | {r['train_samples_per_second']:.2f} | {ratio} | "
                     f"{r['train_tokens_per_second']:.0f} | {mfu} | {r['peak_memory_mib']:.0f} | "
                     f"{r['accuracy']:.4f} | {r['f1']:.4f} | {r['compute_dtype']} |")
    env = results["environment"]
    lines += ["", f"Model: {a['model']}{' (random weights)' if a['random_init'] else ''}. Data: {a['data']}, "
              f"{a['train_size']} train / {a['test_size']} test reviews, {a['epochs']:g} epoch(s), "
              f"{a['rounds']} round(s), configurations alternating within each round.",
              f"Device: {env['device']}; torch {env['torch']}, transformers {env['transformers']}.",
              f"Command: `{results['command']}`",
              "Samples/s and tokens/s count training steps only (the per-epoch evaluations are excluded); "
              "peak memory is each process's peak RSS; MFU is model FLOPs (peft_sentiment/flops.py) over "
              "the probed matmul peak of the precision used."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--train-size", type=int, default=320)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configs", default="peer,seed,full,lora")
    parser.add_argument("--random-init", action="store_true")
    args = parser.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config {unknown[0]!r}: choose from {', '.join(CONFIGS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="speed-") as tmp:
        for round_ in range(args.rounds):
            for name in names:
                work = Path(tmp) / f"round{round_}"
                work.mkdir(exist_ok=True)
                record = run_one(name, args, work)
                record["round"] = round_
                runs.append(record)
                print(f"round {round_ + 1}/{args.rounds} {name}: {record['train_samples_per_second']:.2f} "
                      f"samples/s, accuracy {record['accuracy']:.4f}, peak {record['peak_memory_mib']:.0f} MiB",
                      flush=True)
    results = {"args": {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()},
               "command": shlex.join(["python", "benchmarks/speed/run.py", *sys.argv[1:]]),
               "environment": environment(), "runs": runs}
    rows = summarize(runs, names)
    results["summary"] = rows
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(rows, results)
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
