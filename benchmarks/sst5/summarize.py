"""One table for the SST-5 benchmark folders: accuracy with its interval, macro-F1, per-class F1,
peak memory and training time of each method, from each folder's results.json.

    python benchmarks/sst5/summarize.py [NAME=]FOLDER ... > benchmarks/sst5/table.md

Each folder is a `peft-sentiment benchmark` of one method over the same seeds (see README.md here
for the commands). Intervals: 95% percentile bootstrap over the evaluated sentences of the
seed-averaged metric, as the benchmark's own report computes them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from peft_sentiment.stats import bootstrap_indices, bootstrap_interval, mean_std


def method_row(folder: Path, name: str | None = None) -> tuple[str, list[str], list[str]]:
    results = json.loads((folder / "results.json").read_text())
    runs = [r for r in results["runs"] if r["status"] == "ok"]
    (n, test), = results["test_sets"].items()
    labels = np.asarray(test["labels"])
    preds = np.asarray([r["evals"][n]["preds"] for r in runs])
    index = bootstrap_indices(len(labels), 2000)
    evals = [r["evals"][n] for r in runs]
    names = evals[0]["labels"]
    cells = [name or runs[0]["label"], ", ".join(str(r["seed"]) for r in runs)]
    for metric in ("accuracy", "macro_f1"):
        interval = bootstrap_interval(metric, labels, preds, index, classes=len(names))
        mean, sd = mean_std([e[metric] for e in evals])
        cells.append(f"{mean:.3f} [{interval.low:.3f}, {interval.high:.3f}], sd {sd:.3f}")
    for i in range(len(names)):
        cells.append(f"{np.mean([e['per_class'][i]['f1'] for e in evals]):.3f}")
    train = [r["train"] for r in runs]
    for key, digits in (("peak_memory_mib", 0), ("train_seconds", 0)):
        mean, sd = mean_std([t[key] for t in train])
        cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f}")
    cells.append(f"{100 * train[0]['trainable_share']:.2f}%")
    return n, names, cells


def main() -> None:
    rows = []
    for arg in sys.argv[1:]:
        name, _, folder = arg.rpartition("=")
        rows.append(method_row(Path(folder), name or None))
    n, names, _ = rows[0]
    header = ["method", "seeds", "accuracy [95% CI]", "macro-F1 [95% CI]", *[f"F1 {name}" for name in names],
              "peak memory MiB", "train s", "trainable"]
    print(f"SST-5 validation split, {n} sentences, each read once after training; mean over seeds.\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for _, _, cells in rows:
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
