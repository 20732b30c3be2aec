"""The tuning budget and each method's best trial, from the `peft-sentiment tune` folders.

    python benchmarks/tuned/summarize.py benchmarks/tuned/tune/{full,lora,dora,qlora,ia3,head} > benchmarks/tuned/tuning.md

Each folder holds one method's study (study.json, trials.csv, best.yaml). The table shows how many
trials each method had and how they ended, the validation accuracy of its best trial, the best
values, and the hours the trials took.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def row(folder: Path) -> list[str]:
    study = json.loads((folder / "study.json").read_text())
    counts = study["counts"]
    best = study["best_trial"]
    seconds = sum(t["seconds"] or 0 for t in study["trials"])
    values = ", ".join(f"{key.split('.')[-1]} {short(v)}" for key, v in sorted(best["params"].items())) if best else "-"
    return [study["method"], str(sum(counts.values())),
            f"{counts['complete']} / {counts['pruned']} / {counts['failed']}",
            f"{best['value']:.4f} (trial {best['number']})" if best else "-", values, f"{seconds / 3600:.2f}"]


def main() -> None:
    folders = [Path(arg) for arg in sys.argv[1:]]
    first = json.loads((folders[0] / "study.json").read_text())
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(first["overrides"].items())
                          if k.startswith("data.") and k != "data.source")
    print(f"Each method: the same number of trials, TPE sampler seed {first['seed']} "
          f"({first['sampler']['n_startup_trials']} random trials first), median pruner after "
          f"{first['pruner']['n_startup_trials']} complete trials, objective: validation accuracy. "
          f"Trial fidelity: {overrides}.\n")
    header = ["method", "trials", "complete / pruned / failed", "best validation accuracy", "best values", "trial hours"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for folder in folders:
        print("| " + " | ".join(row(folder)) + " |")


if __name__ == "__main__":
    main()
