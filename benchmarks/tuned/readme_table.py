"""The README's results table: some columns of the benchmark report's 2000-review table.

    python benchmarks/tuned/readme_table.py benchmarks/tuned/work/bench/results.md
"""

from __future__ import annotations

import sys
from pathlib import Path

SECTION = "## 2000 test reviews"
KEEP = ("method", "seeds", "accuracy [95% CI]", "F1 [95% CI]", "Δ acc vs full [95% CI]",
        "McNemar p (per seed)", "peak memory MiB", "train s", "trainable", "upload")


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table(report: str) -> list[list[str]]:
    lines = report.splitlines()
    start = lines.index(SECTION) + 1
    rows = []
    for line in lines[start:]:
        if line.startswith("|"):
            rows.append(cells(line))
        elif rows:
            break
    return rows


def main(report: Path) -> None:
    header, _, *body = table(report.read_text())
    missing = [name for name in KEEP if name not in header]
    if missing:
        raise SystemExit(f"{report}: no column {missing[0]!r} under {SECTION!r}")
    columns = [header.index(name) for name in KEEP]
    print("| " + " | ".join(KEEP) + " |")
    print("|" + "---|" * len(KEEP))
    for row in body:
        print("| " + " | ".join(row[i] for i in columns) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
