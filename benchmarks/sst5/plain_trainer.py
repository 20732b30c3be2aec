"""A plain transformers Trainer fine-tune on SST-5, without peft-sentiment: the yardstick for the recipes.

    python benchmarks/sst5/plain_trainer.py --model DIR --data DIR --method full|lora --seed N --out FILE

Untuned settings as a newcomer would write them: max length 128, batch 32, 3 epochs, bf16 autocast,
the Trainer's defaults otherwise (linear decay, no warmup); full fine-tuning at lr 5e-5, LoRA r=16
(alpha 32) on every linear layer below the classifier at lr 5e-4, the classifier trained in full.
Trains on the whole train split and scores the validation split once, after training; writes
accuracy, macro-F1 and each sentence's predicted class (in the split's file order) to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
import transformers
from datasets import load_dataset
from sklearn.metrics import accuracy_score, f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--method", choices=("full", "lora"), required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    files = {split: str(args.data / f"{split}.parquet") for split in ("train", "validation")}
    data = load_dataset("parquet", data_files=files)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=5)
    lr = 5e-5
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                 modules_to_save=["classifier"]))
        lr = 5e-4
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir=str(args.out.parent / f".work-{args.out.stem}"), learning_rate=lr,
                               per_device_train_batch_size=32, per_device_eval_batch_size=128,
                               num_train_epochs=3, bf16=True, use_cpu=not torch.cuda.is_available(), seed=args.seed, save_strategy="no",
                               report_to="none", logging_steps=50),
        train_dataset=data["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.train()
    output = trainer.predict(data["validation"])
    preds = np.asarray(output.predictions).argmax(-1)
    labels = np.asarray(data["validation"]["label"])
    result = {"method": args.method, "seed": args.seed, "learning_rate": lr, "n": len(labels),
              "accuracy": float(accuracy_score(labels, preds)),
              "macro_f1": float(f1_score(labels, preds, average="macro")),
              "predictions": preds.tolist(),
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
