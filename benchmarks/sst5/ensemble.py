"""Is the SST-5 recipes' margin limited by seed noise or by the model? Three seeds of one recipe, each
alone and averaged as an ensemble (the mean of their class probabilities), on the validation split.
(A weight soup is left out: each seed starts its classifier from its own random weights, so their
weights do not average into a model.)

    python benchmarks/sst5/ensemble.py --data ../shared/data/sst5 --name sst5-full \
        --out benchmarks/sst5/ensemble/full.json RUN_SEED42 RUN_SEED43 RUN_SEED44

RUN: the run folders a benchmark of the recipe trained (its runs/ folder; they are not committed).
Every sentence of validation.parquet is scored, in the file's order. If the ensemble does no better
than its members, seed-to-seed noise is not what holds the recipes back. Prints a markdown table;
--out gets the figures, every prediction, the command and the environment.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from peft_sentiment import __version__
from peft_sentiment.loading import load_model
from peft_sentiment.stats import (
    accuracy_rows,
    bootstrap_indices,
    bootstrap_interval,
    macro_f1_rows,
    paired_difference,
)

RESAMPLES = 2000
BATCH = 128


def probabilities(model: torch.nn.Module, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), BATCH):
            enc = tokenizer(texts[i:i + BATCH], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits.float(), dim=-1))
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="SST-5 folder with validation.parquet")
    parser.add_argument("--name", required=True, help="the recipe's name, for the table")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    data = Dataset.from_parquet(str(args.data / "validation.parquet"))
    texts, labels = list(data["text"]), np.asarray(data["label"])
    classes = int(labels.max()) + 1
    probs = []
    for run in args.runs:
        loaded = load_model(run)
        probs.append(probabilities(loaded.model.float().eval(), loaded.tokenizer, texts, args.max_length))
    singles = np.stack([p.argmax(-1) for p in probs])
    ensemble = np.mean(probs, axis=0).argmax(-1)[None]

    index = bootstrap_indices(len(labels), RESAMPLES)
    figures: dict[str, dict] = {}
    print(f"SST-5 validation split, {len(labels)} sentences; 95% bootstrap intervals over sentences; "
          "Δ: paired with the seeds' mean on the same sentences.\n")
    print("| recipe | models | accuracy [95% CI] | Δ accuracy vs seeds [95% CI] | macro-F1 [95% CI] "
          "| Δ macro-F1 vs seeds [95% CI] |")
    print("|---|---|---|---|---|---|")
    for what, preds in (("each seed alone (mean)", singles), ("ensemble (mean probability)", ensemble)):
        row = {"predictions": preds.tolist()}
        cells = [args.name, what]
        per_model = {"accuracy": accuracy_rows(labels, preds), "macro_f1": macro_f1_rows(labels, preds, classes)}
        for metric, values in per_model.items():
            ci = bootstrap_interval(metric, labels, preds, index, classes=classes)
            row[metric] = {"mean": float(values.mean()), "low": ci.low, "high": ci.high,
                           "per_model": values.tolist()}
            cell = f"{values.mean():.3f} [{ci.low:.3f}, {ci.high:.3f}]"
            if preds is singles:
                cells += [cell, "-"]
                continue
            diff = paired_difference(metric, labels, preds, singles, index, classes=classes)
            row[metric]["vs_seeds"] = {"value": diff.value, "low": diff.low, "high": diff.high}
            cells += [cell, f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"]
        figures[what] = row
        print("| " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(sys.argv), "runs": [str(r) for r in args.runs], "labels": labels.tolist(),
        "figures": figures,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "peft_sentiment": __version__, "cpu": platform.processor() or platform.machine(),
                        "threads": torch.get_num_threads()},
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
