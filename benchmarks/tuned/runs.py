"""Where and when each run of the tuned benchmark trained, from its own files.

    python benchmarks/tuned/runs.py benchmarks/tuned/work/bench > benchmarks/tuned/runs.md

One row per run: the folder its training command wrote to (the benchmark part it ran in), the UTC
start of training, the CPU it reported, the dtype it computed in (`train.precision: auto` picks
bf16 only on a CPU with bf16 instructions), the matmul peak of that dtype measured on that machine
(probed once per machine and cached; the denominator of its MFU), train seconds, MFU and peak
memory. Rows on different CPUs, in different dtypes or with different measured peaks do not compare
on seconds, and the dtype changes peak memory too.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path


def first_event(path: Path) -> dict:
    with path.open() as lines:
        return json.loads(next(lines))


def part_of(command: list[str]) -> str:
    output = Path(command[command.index("-o") + 1])
    return str(output.parent.parent)  # FOLDER/runs/RUN -> FOLDER


def main(bench: Path) -> None:
    print(f"# Where each run of `{bench}` trained\n")
    print(f"Made by `python benchmarks/tuned/runs.py {bench}` from each run's `metrics.json` and the first "
          "event of its `logs/<run>.events.jsonl`.\n")
    print("| run | trained in | started (UTC) | cpu | dtype | measured peak GFLOP/s | train s | train MFU | peak memory MiB |")
    print("|---|---|---|---|---|---:|---:|---:|---:|")
    for metrics_file in sorted(bench.glob("runs/*/metrics.json")):
        run = metrics_file.parent.name
        metrics = json.loads(metrics_file.read_text())
        start = first_event(bench / "logs" / f"{run}.events.jsonl")
        when = datetime.fromtimestamp(start["time"], timezone.utc).strftime("%Y-%m-%d %H:%M")
        print(f"| {run} | `{part_of(start['command'])}` | {when} | {metrics['device']} | {metrics['compute_dtype']} | "
              f"{metrics['peak_flops_per_second'] / 1e9:.0f} | {metrics['train_seconds']:.0f} | "
              f"{metrics['train_mfu']:.1%} | {metrics['peak_memory_mib']:.0f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
