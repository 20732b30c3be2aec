"""The seed recipe as a plain transformers script, the peer every speed figure is compared with.

The procedure of the seed recipe, written without any of peft-sentiment: the IMDb subset
(`shuffle(seed=42).select(range(n))` of each split), the model's tokenizer with truncation at 512
tokens, `DataCollatorWithPadding` (random batches padded to their longest review), the Trainer in
fp32 with lr 2e-5, batch 16, weight decay 0.01 and an evaluation after each epoch; accuracy and F1
from scikit-learn. It reads local parquet files and a local model folder, so it runs offline.

    python benchmarks/speed/seed_peer.py --model DIR --data DIR --out result.json [--train-size N ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from datasets import load_dataset
from sklearn.metrics import accuracy_score, f1_score
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder (distilbert-base-uncased on the Hub)")
    parser.add_argument("--data", required=True, help="folder with train.parquet and test.parquet")
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the figures")
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--test-size", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--random-init", action="store_true", help="random weights (speed runs)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    files = {split: str(Path(args.data) / f"{split}.parquet") for split in ("train", "test")}
    imdb = load_dataset("parquet", data_files=files)
    train = imdb["train"].shuffle(seed=42).select(range(args.train_size))
    test = imdb["test"].shuffle(seed=42).select(range(args.test_size))

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.random_init:
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(args.model, num_labels=2))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def preprocess(examples: dict) -> dict:
        return tokenizer(examples["text"], truncation=True, max_length=512)

    train = train.map(preprocess, batched=True)
    test = test.map(preprocess, batched=True)

    def compute_metrics(eval_pred) -> dict:
        logits, labels = eval_pred
        preds = np.argmax(logits, axis=-1)
        return {"accuracy": accuracy_score(labels, preds), "f1": f1_score(labels, preds)}

    with tempfile.TemporaryDirectory() as work:
        training_args = TrainingArguments(
            output_dir=work,
            learning_rate=2e-5,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=16,
            num_train_epochs=args.epochs,
            weight_decay=0.01,
            eval_strategy="epoch",
            save_strategy="no",
            seed=args.seed,
            report_to=[],
            use_cpu=True,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=test,
                          processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                          compute_metrics=compute_metrics)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        evaluating = sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history)
        metrics = trainer.evaluate()
    seconds = wall - evaluating  # training steps only, as peft-sentiment reports them
    samples = args.epochs * len(train)
    tokens = samples / len(train) * sum(len(ids) for ids in train["input_ids"])
    result = {
        "accuracy": metrics["eval_accuracy"],
        "f1": metrics["eval_f1"],
        "train_seconds": round(seconds, 2),
        "train_samples_per_second": round(samples / seconds, 3),
        "train_tokens_per_second": round(tokens / seconds, 1),
        "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "n_train": len(train),
        "n_test": len(test),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
