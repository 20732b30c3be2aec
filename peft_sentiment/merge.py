"""Merge a run's LoRA adapter into its base model: a standalone model that loads without peft.

The merged model is checked before it is kept: its logits, reloaded from the saved folder, must match
base + adapter on a sample of the run's own test texts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from .artifacts import (
    ADAPTER_DIR,
    MODEL_DIR,
    atomic_dir,
    check_output,
    load_model,
    load_run_config,
    write_json,
)
from .config import RunConfig, looks_like_path
from .data import load_splits
from .errors import ModelError, PeftSentimentError, RunError

log = logging.getLogger(__name__)

MERGED_DIR = "merged"
CHECK_FILE = "merge_check.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# What an adapter/ or model/ folder holds besides the tokenizer (weights end in .safetensors).
NOT_TOKENIZER = ("adapter_config.json", "config.json", "generation_config.json", "README.md", CHECK_FILE)
N_CHECK_TEXTS = 32  # the first texts of the run's test subset
# Merging in fp32 computes x·(W + s·B·A) where the adapter computed x·W + s·(x·A)·B: the same sums in
# another order, so only fp32 rounding (eps 1.2e-7) separates them. Measured max |logit diff|: 5e-7 on
# the smoke model, 3e-7 on a full-size DistilBERT (LoRA r=16 on every linear layer, B ~ N(0, 0.02)).
# 1e-3 leaves three orders of magnitude for that noise, yet catches real faults: a head left untrained
# or lost moves logits by far more, and a bf16 round trip of the weights already gave 1.5e-3 on that
# DistilBERT (whose logits are only ~0.3 in size). A 1e-3 logit change moves a probability by at most
# 2.5e-4 (the logistic function's slope is at most 1/4).
LOGIT_TOLERANCE = 1e-3
# Used when the run's data cannot be read (e.g. a Hub data set offline).
SAMPLE_TEXTS = (
    "A wonderful film: the acting was brilliant and the story moved me deeply.",
    "Two hours of my life I will never get back. Dull, predictable and badly acted.",
    "The plot was thin, but the music and the photography made up for it.",
    "I laughed, I cried, and I will watch it again next week.",
    "The worst sequel I have seen; even the director seems bored.",
    "Not bad, not great. The middle drags, the ending is fine.",
    "An honest, tender movie with a cast that clearly believed in it.",
    "Confusing, loud and far too long.",
)


@dataclass(frozen=True)
class MergeResult:
    output: Path
    max_abs_diff: float  # largest |logit(merged) - logit(base + adapter)| over the sample
    tolerance: float
    n_texts: int
    texts_from: str  # where the sample came from
    base_model: str
    base_dequantized: bool


def merge_adapter(model: torch.nn.Module) -> PreTrainedModel:
    """Fold the LoRA weights into the base and put the trained head copies in place."""
    return model.merge_and_unload()  # not in place: only the returned model is merged (peft#2032)


def check_mergeable(run_dir: Path) -> RunConfig:
    """The run's config, if the run has an adapter to merge."""
    cfg = load_run_config(run_dir)
    if cfg.method == "full":
        raise RunError(f"run {run_dir} was trained with method full: it is already a standalone model "
                       f"in {run_dir / MODEL_DIR}")
    if not (run_dir / ADAPTER_DIR).is_dir():
        raise RunError(f"run {run_dir} has no {ADAPTER_DIR}/ folder: it did not finish")
    return cfg


def merge_run(run_dir: str | Path, output: str | Path | None = None, overwrite: bool = False) -> MergeResult:
    """Merge the run's adapter and save the standalone model at `output` (default RUN/merged)."""
    run_dir = Path(run_dir)
    check_mergeable(run_dir)
    output = Path(output) if output is not None else run_dir / MERGED_DIR
    check_output(output, overwrite)  # before the slow work
    with atomic_dir(output, overwrite) as tmp:
        result = write_merged(run_dir, tmp)
    return dataclasses.replace(result, output=output)


def write_merged(run_dir: Path, folder: Path, record_paths: bool = True) -> MergeResult:
    """Merge into the empty `folder`, check it and write merge_check.json; raises if the check fails.

    `record_paths=False` keeps local paths out of merge_check.json (folders that get published).
    """
    cfg = check_mergeable(run_dir)
    loaded = load_model(run_dir)
    # Full precision: a bf16 sum would round the small LoRA update away. Nothing in this package
    # trains on a quantized base, so there is nothing to dequantize; the field records that.
    model = loaded.model.float().eval()
    dequantized = False
    texts, texts_from = check_texts(cfg)
    batches = _encode(loaded.tokenizer, texts, cfg.data.max_length, cfg.train.eval_batch_size)
    reference = _logits(model, batches)

    merged = merge_adapter(model)
    merged.save_pretrained(folder)  # a clean folder: model.safetensors and config.json, no adapter files
    copy_tokenizer(run_dir / ADAPTER_DIR, folder, cfg.data.max_length)

    # Check what was written, reloaded the way users will load it.
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True).eval()
    diff = float((_logits(reloaded, batches) - reference).abs().max())
    base = _base_name(cfg, run_dir)
    check = {
        "max_abs_logit_diff": diff,
        "tolerance": LOGIT_TOLERANCE,
        "n_texts": len(texts),
        "texts": texts_from,
        "source_run": str(run_dir) if record_paths else run_dir.resolve().name,
        "base_model": _base_name(cfg, run_dir, public=not record_paths),
        "base_dequantized": dequantized,
        "dtype": "float32",
    }
    write_json(check, folder / CHECK_FILE)
    if not diff <= LOGIT_TOLERANCE:  # also refuses NaN
        raise ModelError(
            f"merged model of {run_dir} differs from base + adapter by {diff:.3g} in logits on "
            f"{len(texts)} texts (tolerance {LOGIT_TOLERANCE:g}): nothing was saved"
        )
    log.info("merged %s: max |logit diff| %.3g on %d texts", run_dir, diff, len(texts))
    return MergeResult(output=folder, max_abs_diff=diff, tolerance=LOGIT_TOLERANCE, n_texts=len(texts),
                       texts_from=texts_from, base_model=base, base_dequantized=dequantized)


def copy_tokenizer(source: Path, folder: Path, max_length: int) -> None:
    """The run's tokenizer files as saved, with `model_max_length` set to the training length.

    Copied rather than re-saved: a tokenizer that has been used saves its call state (padding,
    `local_files_only`) into its config.
    """
    files = [p for p in source.iterdir() if p.is_file() and p.name not in NOT_TOKENIZER
             and not p.name.endswith((".safetensors", ".safetensors.index.json", ".bin"))]
    if not any(p.name == TOKENIZER_CONFIG for p in files):
        raise RunError(f"{source} has no {TOKENIZER_CONFIG}: the run's tokenizer is missing")
    for src in files:
        shutil.copyfile(src, folder / src.name)
    config = json.loads((folder / TOKENIZER_CONFIG).read_text())
    config["model_max_length"] = max_length  # pipelines then truncate where training did
    write_json(config, folder / TOKENIZER_CONFIG)


def check_texts(cfg: RunConfig) -> tuple[list[str], str]:
    """The first texts of the run's test subset, or built-in sentences when the data is unavailable."""
    try:
        splits = load_splits(cfg.data, need_train=False)
    except PeftSentimentError as err:
        log.warning("using built-in sample sentences for the merge check: %s", err)
        return list(SAMPLE_TEXTS), "built-in sample sentences (the run's data was unavailable)"
    texts = splits.test["text"][:N_CHECK_TEXTS]
    return list(texts), f"first {len(texts)} texts of the test subset of {cfg.data.source}"


def _encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int,
            batch_size: int) -> list[dict[str, torch.Tensor]]:
    return [tokenizer(list(texts[i:i + batch_size]), truncation=True, max_length=max_length,
                      padding=True, return_tensors="pt")
            for i in range(0, len(texts), batch_size)]


@torch.no_grad()
def _logits(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([model(**{k: v.to(device) for k, v in b.items()}).logits.float().cpu()
                      for b in batches])


def _base_name(cfg: RunConfig, run_dir: Path, public: bool = False) -> str:
    """The base the adapter was merged into; `public` leaves out local folders."""
    name = cfg.model.name
    if cfg.model.builds_new_weights:
        where = "the run's base/ folder" if public else str(run_dir / "base")
        return f"{where} (random weights made by the run, model.name {name})"
    if public and (Path(name).expanduser().exists() or looks_like_path(name)):
        return f"a local folder named {Path(name).name}"
    return name
