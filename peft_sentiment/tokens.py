"""Tokenization, done once per (tokenizer, maximum length, data) and cached on disk.

The cache key is a hash of the tokenizer's full definition (vocabulary, normalizer, special tokens),
the maximum length, and every text and label of the split: change any of them and the reviews are
tokenized again. Entries live in `<cache>/tokenized/<key>/` (see probe.cache_dir); set
PEFT_SENTIMENT_CACHE=off to tokenize every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from datasets import Dataset, load_from_disk
from transformers import PreTrainedTokenizerBase

from . import truncation
from .probe import cache_dir, cache_off

log = logging.getLogger(__name__)
FORMAT = 1  # bump when what is stored changes


def tokenize(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
             cache: bool = True) -> Dataset:
    """Token ids for each review, truncated to `max_length` by the tokenizer's rule (truncation.py), with
    its `length` (for length-grouped batches); padding happens per batch. Served from the cache when
    this exact input was seen."""
    root = tokenized_cache() if cache else None
    if root is None:
        return _encode(dataset, tokenizer, max_length)
    folder = root / cache_key(dataset, tokenizer, max_length)
    if (folder / "dataset_info.json").is_file():
        try:
            return load_from_disk(str(folder))
        except Exception as err:  # noqa: BLE001 - a damaged entry is rebuilt, never trusted
            log.warning("tokenization cache entry %s is unreadable (%s): tokenizing again", folder, err)
            shutil.rmtree(folder, ignore_errors=True)
    encoded = _encode(dataset, tokenizer, max_length)
    try:
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        encoded.save_to_disk(str(tmp))
        os.replace(tmp, folder)  # whole entries only: a reader never sees half of one
    except OSError:  # another process stored it first, or the cache is not writable
        shutil.rmtree(tmp, ignore_errors=True)
    return encoded


def tokenized_cache() -> Path | None:
    if cache_off():
        return None
    return cache_dir() / "tokenized"


def cache_key(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT, "max_length": max_length,
                              "tokenizer": tokenizer_fingerprint(tokenizer)}).encode())
    digest.update(data_fingerprint(dataset).encode())
    return digest.hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of everything that decides the token ids."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        for state in ("truncation", "padding"):  # set by each call, not part of the definition
            definition.pop(state, None)
        digest.update(json.dumps(definition, sort_keys=True).encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps({"side": tokenizer.truncation_side, "rule": str(truncation.of(tokenizer)),
                              "special": [str(t) for t in tokenizer.all_special_tokens]}).encode())
    return digest.hexdigest()


def data_fingerprint(dataset: Dataset) -> str:
    digest = hashlib.sha256(str(len(dataset)).encode())
    for text, label in zip(dataset["text"], dataset["label"]):
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00%d\x00" % int(label))
    return digest.hexdigest()


def _encode(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = truncation.cut(tokenizer, batch["text"], max_length)  # head+tail; the rest truncate here
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return dataset.map(encode, batched=True, remove_columns=["text"], desc="Tokenizing",
                       load_from_cache_file=False)
