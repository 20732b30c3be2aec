"""A benchmark's paired comparison again, against another baseline, from its results.json.

    python benchmarks/tuned/versus.py benchmarks/tuned/work/bench full-bf16 > benchmarks/tuned/versus-full-bf16.md

The same bootstrap resamples and McNemar tests as the benchmark's own report (peft_sentiment.report),
with only the baseline changed; nothing is trained or evaluated.
"""

from __future__ import annotations

import sys
from pathlib import Path

from peft_sentiment.benchmark import load_results
from peft_sentiment.report import fmt_difference, fmt_interval, fmt_mcnemar, summarize


def main(folder: Path, baseline: str) -> None:
    results = load_results(folder)
    labels = {run["label"] for run in results["runs"]}
    if baseline not in labels:
        raise SystemExit(f"no method {baseline!r} in {folder}: {', '.join(sorted(labels))}")
    results["spec"]["baseline"] = baseline
    print(f"# Every method against {baseline}\n")
    print(f"Made by `python benchmarks/tuned/versus.py {folder} {baseline}` from `{folder}/results.json`: "
          "mean accuracy over seeds with a 95% bootstrap interval, the paired difference to "
          f"{baseline} on the same reviews and seeds, McNemar's exact p-value per seed.")
    for n, rows in summarize(results).items():
        print(f"\n## {n} test reviews\n")
        print(f"| method | accuracy [95% CI] | Δ acc vs {baseline} [95% CI] | McNemar p (per seed) |")
        print("|---|---:|---:|---:|")
        for row in rows:
            print(f"| {row['label']} | {fmt_interval(row['accuracy'])} | {fmt_difference(row)} | "
                  f"{fmt_mcnemar(row)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
