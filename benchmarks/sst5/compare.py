"""Are the SST-5 recipes better than a plain Trainer fine-tune, beyond noise? Paired differences on
the same validation sentences, each side averaged over its seeds.

    python benchmarks/sst5/compare.py --data ../shared/data/sst5 \
        --pair NAME benchmarks/sst5/first/full 'benchmarks/sst5/plain/full-seed*.json' \
        --pair NAME benchmarks/sst5/searched/full benchmarks/sst5/first/full ... > benchmarks/sst5/compare.md

(README.md here has the exact command.) A pair is a benchmark folder (a recipe over its seeds) and
what it is compared with: the plain_trainer.py results of the same method (a glob, one file per
seed) or another benchmark folder.
The plain runs list their predictions in the validation file's order; the benchmark's test subset
is that file in `shuffle(seed=42)` order, rebuilt here and checked against the labels the
benchmark recorded. Interval: 95% paired percentile bootstrap over sentences
(`peft_sentiment.stats.paired_difference`), so the sentences' difficulty cancels out.
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np
from datasets import Dataset

from peft_sentiment.stats import accuracy_rows, bootstrap_indices, macro_f1_rows, paired_difference

RESAMPLES = 2000
CLASSES = 5


def recipe_side(folder: Path) -> tuple[np.ndarray, np.ndarray, list[int], int]:
    """Labels and predictions (seeds x sentences) of a benchmark folder, its seeds, its shuffle seed."""
    results = json.loads((folder / "results.json").read_text())
    runs = [r for r in results["runs"] if r["status"] == "ok"]
    (n, test), = results["test_sets"].items()
    preds = np.asarray([r["evals"][n]["preds"] for r in runs])
    return np.asarray(test["labels"]), preds, [r["seed"] for r in runs], runs[0]["config"]["data"]["shuffle_seed"]


def other_side(pattern: str, order: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Predictions (seeds x sentences, in the benchmark's order) of plain_trainer.py's result files,
    or of another benchmark folder of the same sentences."""
    if (Path(pattern) / "results.json").is_file():
        other_labels, preds, seeds, _ = recipe_side(Path(pattern))
        if not np.array_equal(other_labels, labels):
            raise SystemExit(f"{pattern} scored other sentences or another order")
        return preds, seeds
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no plain results match {pattern}")
    runs = [json.loads(Path(f).read_text()) for f in files]
    missing = [f for f, r in zip(files, runs) if "predictions" not in r]
    if missing:
        raise SystemExit(f"{missing[0]} has no predictions: rerun plain_trainer.py for it")
    return np.asarray([np.asarray(r["predictions"])[order] for r in runs]), [r["seed"] for r in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="SST-5 folder with validation.parquet")
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("NAME", "FOLDER", "BASELINE"),
                        help="a name, a benchmark folder, and a glob of plain_trainer.py results or a folder")
    args = parser.parse_args()
    file_labels = np.asarray(Dataset.from_parquet(str(args.data / "validation.parquet"))["label"])
    index = None
    print("SST-5 validation split: a recipe minus its baseline on the same sentences, each the mean over "
          "its seeds; 95% paired bootstrap interval over sentences.\n")
    print("| recipe | baseline | recipe seeds | baseline seeds | recipe accuracy | baseline accuracy "
          "| Δ accuracy [95% CI] | recipe macro-F1 | baseline macro-F1 | Δ macro-F1 [95% CI] |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, folder, pattern in args.pair:
        labels, recipe, recipe_seeds, shuffle_seed = recipe_side(Path(folder))
        order = np.asarray(Dataset.from_dict({"i": np.arange(len(file_labels))}).shuffle(seed=shuffle_seed)["i"])
        order = order[: len(labels)]
        if not np.array_equal(file_labels[order], labels):
            raise SystemExit(f"{folder}: its test labels are not validation.parquet in shuffle({shuffle_seed}) order")
        plain, plain_seeds = other_side(pattern, order, labels)
        index = bootstrap_indices(len(labels), RESAMPLES) if index is None else index
        cells = [name, f"`{pattern}`", ", ".join(map(str, recipe_seeds)), ", ".join(map(str, plain_seeds))]
        for metric in ("accuracy", "macro_f1"):
            diff = paired_difference(metric, labels, recipe, plain, index, classes=CLASSES)
            cells += [f"{_mean(metric, labels, recipe):.3f}", f"{_mean(metric, labels, plain):.3f}",
                      f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"]
        print("| " + " | ".join(cells) + " |")


def _mean(metric: str, labels: np.ndarray, preds: np.ndarray) -> float:
    """The metric of each seed's predictions, averaged over the seeds."""
    rows = accuracy_rows(labels, preds) if metric == "accuracy" else macro_f1_rows(labels, preds, CLASSES)
    return float(rows.mean())


if __name__ == "__main__":
    main()
