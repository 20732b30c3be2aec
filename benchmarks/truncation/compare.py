"""Head, tail or head+tail: which part of a long IMDb review should the LoRA recipe read?

    python benchmarks/truncation/compare.py --data ../shared/data/imdb \
        --tokenizer ../shared/models/distilbert-base-uncased-shape --tokenizer MINILM_DIR \
        --run head=RUN --run tail=RUN --run head+tail=RUN --baseline head \
        --validation-size 2000 --out benchmarks/truncation

1. How many reviews are longer than 512 tokens (special tokens included), for each tokenizer, in the
   whole train and test splits and in the seed protocol's 3000 training reviews.
2. Each run (one `peft-sentiment train --truncation ...` per strategy) predicts, through
   `load_pipeline` as a user would, the validation reviews: the train split's reviews right after the
   3000 training ones in the seed protocol's shuffled order (the test split is never read here).
   Accuracy with a 95% bootstrap interval, the paired difference to the baseline with its interval,
   McNemar's exact p, and accuracy on the long reviews alone, where the strategies differ.

Writes results.json (every prediction, the environment, the command) and results.md to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers
import yaml
from transformers import AutoTokenizer

import peft_sentiment
from peft_sentiment.config import DataConfig
from peft_sentiment.data import load_splits
from peft_sentiment.predict import load_pipeline, max_length, predict
from peft_sentiment.stats import bootstrap_indices, bootstrap_interval, mcnemar, paired_difference

LIMIT = 512


def long_shares(data: Path, tokenizer_dirs: list[str], train_size: int) -> list[dict]:
    """Share of reviews over LIMIT tokens per tokenizer and split."""
    frames = {split: pd.read_parquet(data / f"{split}.parquet") for split in ("train", "test")}
    seed_train = list(load_splits(DataConfig(source=str(data), train_size=train_size, test_size=100)).train["text"])
    rows = []
    for folder in tokenizer_dirs:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        for name, texts in (("train split", list(frames["train"]["text"])),
                            ("test split", list(frames["test"]["text"])),
                            (f"seed protocol's {train_size} training reviews", seed_train)):
            lengths = np.array([len(i) for i in tokenizer(texts, truncation=False, verbose=False)["input_ids"]])
            rows.append({"tokenizer": folder, "reviews": name, "n": len(texts),
                         "over_limit": int((lengths > LIMIT).sum()), "share": float((lengths > LIMIT).mean()),
                         "median_tokens": float(np.median(lengths)), "p90_tokens": float(np.percentile(lengths, 90))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tokenizer", action="append", default=[], help="Tokenizer folder for the length shares.")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=RUN", required=True)
    parser.add_argument("--baseline", default="head")
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--validation-size", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.run)

    shares = long_shares(args.data, args.tokenizer, args.train_size) if args.tokenizer else []
    cfg = DataConfig(source=str(args.data), train_size=args.train_size, test_size=100,
                     validation_size=args.validation_size, drop_overlap=True)  # IMDb repeats a few reviews
    splits = load_splits(cfg)
    validation = splits.validation
    texts, labels = list(validation["text"]), np.asarray(validation["label"])

    results = {}
    for name, run in runs.items():
        pipe = load_pipeline(run)
        start = time.perf_counter()
        found = predict(pipe, texts)
        seconds = time.perf_counter() - start
        label2id = pipe.model.config.label2id
        limit = max_length(pipe)
        results[name] = {"run": run, "max_length": limit, "preds": [int(label2id[p.label]) for p in found],
                         "truncated": [p.truncated for p in found], "seconds": seconds,
                         "data_config": yaml.safe_load((Path(run) / "config.yaml").read_text())["data"]}
    long = np.asarray(results[args.baseline]["truncated"])
    index = bootstrap_indices(len(labels), 2000)
    base = np.asarray([results[args.baseline]["preds"]])
    rows = []
    for name, r in results.items():
        preds = np.asarray([r["preds"]])
        acc = bootstrap_interval("accuracy", labels, preds, index)
        row = {"strategy": name, "accuracy": acc.value, "low": acc.low, "high": acc.high,
               "long_accuracy": float((preds[0][long] == labels[long]).mean()),
               "short_accuracy": float((preds[0][~long] == labels[~long]).mean())}
        if name != args.baseline:
            diff = paired_difference("accuracy", labels, preds, base, index)
            test = mcnemar(labels.tolist(), r["preds"], results[args.baseline]["preds"])
            row |= {"diff": diff.value, "diff_low": diff.low, "diff_high": diff.high, "mcnemar_p": test.p_value,
                    "only_this": test.only_a, "only_baseline": test.only_b}
        rows.append(row)

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "peft_sentiment": peft_sentiment.__version__, "machine": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "environment": env, "validation": {"n": len(labels), "long": int(long.sum()),
         "labels": labels.tolist(), "origin": splits.validation_origin, "dropped": splits.validation_dropped},
         "long_shares": shares, "table": rows, "runs": results}, indent=1))
    lines = [f"Reviews over {LIMIT} tokens (special tokens included):", "",
             "| tokenizer | reviews | n | over 512 | share | median tokens | 90th percentile |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {Path(s['tokenizer']).name} | {s['reviews']} | {s['n']:,} | {s['over_limit']:,} | {s['share']:.1%} | "
              f"{s['median_tokens']:.0f} | {s['p90_tokens']:.0f} |" for s in shares]
    about = (f"Validation: {len(labels):,} reviews, {splits.validation_origin} (seed protocol order), "
             f"{int(long.sum())} of them longer than {limit} tokens ({splits.validation_dropped} left out for "
             "repeating a training or test review). "
             f"Paired differences to {args.baseline}.")
    header = (f"| truncation | accuracy [95% CI] | Δ vs {args.baseline} [95% CI] | McNemar p (right only here / "
              "only there) | accuracy, long reviews | accuracy, the rest |")
    lines += ["", about, "", header, "|---|---|---|---|---|---|"]
    for row in rows:
        diff = (f"{row['diff']:+.4f} [{row['diff_low']:+.4f}, {row['diff_high']:+.4f}]" if "diff" in row else "-")
        p = f"{row['mcnemar_p']:.2g} ({row['only_this']} / {row['only_baseline']})" if "diff" in row else "-"
        lines.append(f"| {row['strategy']} | {row['accuracy']:.4f} [{row['low']:.4f}, {row['high']:.4f}] | {diff} | {p} | "
                     f"{row['long_accuracy']:.4f} | {row['short_accuracy']:.4f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
