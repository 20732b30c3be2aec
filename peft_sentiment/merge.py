"""Merge a run's adapter (LoRA, DoRA, (IA)3, QLoRA) into its base model: a standalone model that loads without peft.

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
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from . import truncation
from .config import RunConfig, looks_like_path, path_exists
from .data import load_splits
from .errors import ModelError, PeftSentimentError, RunError
from .labels import LabelSet
from .loading import adapter_labels, base_source, load_adapter, load_base, load_model, run_labels
from .rundir import ADAPTER_DIR, BASE_DIR, MODEL_DIR, atomic_dir, check_output, load_run_config, write_json

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
# QLoRA: the merged model (dequantized base + update, fp32) is also compared with the 4-bit model as it
# was trained. bitsandbytes' 4-bit kernels do not compute like an fp32 matmul on the dequantized
# weights (on the CPU: 2e-3 apart on one smoke layer's outputs, 0.9-1.7e-3 on smoke logits), so this
# is a sanity bound, not an equality check: 5e-2 is an order of magnitude above what was measured
# and well below a head lost or an adapter left out. The exact check is the one above.
FOUR_BIT_TOLERANCE = 5e-2
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
    max_abs_diff_vs_4bit: float | None = None  # QLoRA: against the 4-bit model as trained


def check_mergeable(run_dir: Path) -> RunConfig:
    """The run's config, if the run has an adapter to merge."""
    cfg = load_run_config(run_dir)
    if not cfg.saves_adapter:
        raise RunError(f"run {run_dir} was trained with method {cfg.method}: it is already a standalone "
                       f"model in {run_dir / MODEL_DIR}")
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
    model, tokenizer, quantized = _load_for_merge(run_dir, cfg)
    texts, texts_from = check_texts(cfg, run_labels(run_dir))
    batches = _encode(tokenizer, texts, cfg.data.max_length, cfg.trainer["per_device_eval_batch_size"])
    reference = _logits(model, batches)  # base + adapter, before merging

    # Fold the adapter weights into the base and put the trained head copies in place. Not in place:
    # only the returned model is merged (peft#2032).
    merged = model.merge_and_unload()
    merged.save_pretrained(folder)  # a clean folder: model.safetensors and config.json, no adapter files
    copy_tokenizer(run_dir / ADAPTER_DIR, folder, cfg.data.max_length)

    # Check what was written, reloaded the way users will load it.
    reloaded = AutoModelForSequenceClassification.from_pretrained(
        str(folder), use_safetensors=True, trust_remote_code=cfg.model.trust_remote_code).eval()
    merged_logits = _logits(reloaded, batches)
    diff = float((merged_logits - reference).abs().max())
    base = _base_name(cfg, run_dir)
    check = {
        "max_abs_logit_diff": diff,
        "tolerance": LOGIT_TOLERANCE,
        "n_texts": len(texts),
        "texts": texts_from,
        "source_run": str(run_dir) if record_paths else run_dir.resolve().name,
        "base_model": _base_name(cfg, run_dir, public=not record_paths),
        "base_dequantized": quantized is not None,
        "dtype": "float32",
    }
    problems = []
    if not diff <= LOGIT_TOLERANCE:  # also refuses NaN
        problems.append(f"differs from base + adapter by {diff:.3g} in logits (tolerance {LOGIT_TOLERANCE:g})")
    if quantized is not None:
        four_bit = float((merged_logits - _logits(quantized, batches)).abs().max())
        check.update({"max_abs_logit_diff_vs_4bit": four_bit, "tolerance_vs_4bit": FOUR_BIT_TOLERANCE})
        if not four_bit <= FOUR_BIT_TOLERANCE:
            problems.append(f"differs from the 4-bit model as trained by {four_bit:.3g} in logits "
                            f"(tolerance {FOUR_BIT_TOLERANCE:g})")
    write_json(check, folder / CHECK_FILE)
    if problems:
        raise ModelError(f"merged model of {run_dir} {'; '.join(problems)} on {len(texts)} texts: "
                         "nothing was saved")
    log.info("merged %s: max |logit diff| %.3g on %d texts", run_dir, diff, len(texts))
    return MergeResult(output=folder, max_abs_diff=diff, tolerance=LOGIT_TOLERANCE, n_texts=len(texts),
                       texts_from=texts_from, base_model=base, base_dequantized=quantized is not None,
                       max_abs_diff_vs_4bit=check.get("max_abs_logit_diff_vs_4bit"))


def _load_for_merge(run_dir: Path, cfg: RunConfig) -> tuple[torch.nn.Module, PreTrainedTokenizerBase,
                                                             torch.nn.Module | None]:
    """(base + adapter in fp32, ready to merge; tokenizer; for QLoRA, the 4-bit model as trained).

    fp32, because a bf16 sum would round the small adapter update away. A QLoRA base is dequantized
    first: the merged model holds exactly the weights the 4-bit base stood for.
    """
    if cfg.method != "qlora":
        loaded = load_model(run_dir)  # passes the run's trust_remote_code on
        return loaded.model.float().eval(), loaded.tokenizer, None
    from peft import PeftModel

    fp32 = dataclasses.replace(cfg.quant, compute_dtype="fp32")
    adapter_dir = run_dir / ADAPTER_DIR
    base_dir = run_dir / BASE_DIR if (run_dir / BASE_DIR).is_dir() else None
    remote = cfg.model.trust_remote_code
    quantized, tokenizer = load_adapter(adapter_dir, base_dir, fp32, remote)
    base = load_base(base_source(adapter_dir, base_dir), fp32, remote, adapter_labels(adapter_dir)).dequantize().float()
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    return model, tokenizer, quantized.eval()


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


def check_texts(cfg: RunConfig, labels: LabelSet) -> tuple[list[str], str]:
    """The first texts of the run's test subset, or built-in sentences when the data is unavailable."""
    try:
        splits = load_splits(cfg.data, need_train=False, labels=labels)
    except PeftSentimentError as err:
        log.warning("using built-in sample sentences for the merge check: %s", err)
        return list(SAMPLE_TEXTS), "built-in sample sentences (the run's data was unavailable)"
    texts = splits.test["text"][:N_CHECK_TEXTS]
    return list(texts), f"first {len(texts)} texts of the test subset of {cfg.data.source}"


def _encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int,
            batch_size: int) -> list[dict[str, torch.Tensor]]:
    texts = truncation.cut(tokenizer, texts, max_length)
    return [tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length,
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
    if public and (path_exists(name) or looks_like_path(name)):
        return f"a local folder named {Path(name).name}"
    return name
