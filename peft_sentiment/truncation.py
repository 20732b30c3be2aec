"""Which tokens of a review longer than the maximum length the model reads.

- head: its first tokens (the tokenizer's own truncation; what a plain pipeline does).
- tail: its last tokens (the tokenizer's `truncation_side="left"`, which a plain pipeline honours too).
- head+tail: its first `head_tokens` tokens and as many of its last as fit. No tokenizer does this
  natively, so the text is cut before tokenization (`cut`): the kept words are joined with a space,
  and tokenizing the result gives exactly the kept tokens (cuts fall between words, never inside one).

The choice lives in the tokenizer (`configure`): `truncation_side`, and for head+tail a
`review_truncation` entry that `save_pretrained` writes into tokenizer_config.json. So every folder
made from a run (run, merged model, adapter, export, Hub upload) carries it, and everything that reads
texts through `cut` (training, evaluation, predict, the ONNX backend, serve) truncates alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

STRATEGIES = ("head", "tail", "head+tail")
KEY = "review_truncation"  # tokenizer_config.json entry for head+tail


@dataclass(frozen=True)
class Truncation:
    strategy: str = "head"
    head_tokens: int = 0  # head+tail: tokens kept from the start

    def describe(self, max_length: int | None, special_tokens: int = 2) -> str:
        """What is read of a long review: 'start', 'end', or e.g. 'first 128 and last 382 tokens'."""
        if self.strategy == "head":
            return "start"
        if self.strategy == "tail":
            return "end"
        if max_length is None:
            return f"first {self.head_tokens} tokens and end"
        return f"first {self.head_tokens} and last {max_length - special_tokens - self.head_tokens} tokens"


def configure(tokenizer: Any, strategy: str, head_tokens: int) -> None:
    """Make `tokenizer` truncate with `strategy`; `save_pretrained` then records it."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"truncation must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    tokenizer.truncation_side = "left" if strategy == "tail" else "right"
    tokenizer.init_kwargs["truncation_side"] = tokenizer.truncation_side  # what save_pretrained writes
    tokenizer.init_kwargs.pop(KEY, None)
    if strategy == "head+tail":
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("truncation head+tail needs a fast tokenizer (with offsets): "
                              f"{type(tokenizer).__name__} is not one")
        tokenizer.init_kwargs[KEY] = {"strategy": strategy, "head_tokens": head_tokens}


def of(tokenizer: Any) -> Truncation:
    """The truncation a (saved or configured) tokenizer applies."""
    entry = getattr(tokenizer, "init_kwargs", {}).get(KEY)
    if isinstance(entry, dict) and entry.get("strategy") == "head+tail":
        return Truncation("head+tail", int(entry.get("head_tokens", 0)))
    return Truncation("tail" if getattr(tokenizer, "truncation_side", "right") == "left" else "head")


def cut(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[str]:
    """`texts` with each one too long for head+tail shortened to its head and tail words; other
    strategies (and texts that fit) are returned as they are, the tokenizer truncating them."""
    texts = list(texts)
    rule = of(tokenizer)
    if rule.strategy != "head+tail" or not texts:
        return texts
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    head = max(0, min(rule.head_tokens, budget))
    enc = tokenizer(texts, add_special_tokens=False, truncation=False, return_offsets_mapping=True,
                    verbose=False)
    out = []
    for i, text in enumerate(texts):
        n = len(enc["input_ids"][i])
        if n <= budget:
            out.append(text)
            continue
        words, offsets = enc.word_ids(i), enc["offset_mapping"][i]
        end = head  # tokens [0, end) stay: back off to a word boundary
        while 0 < end and words[end] == words[end - 1]:
            end -= 1
        start = n - (budget - head)  # tokens [start, n) stay: move on to a word boundary
        while start < n and words[start] == words[start - 1]:
            start += 1
        kept_head = text[:offsets[end - 1][1]] if end else ""
        kept_tail = text[offsets[start][0]:] if start < n else ""
        out.append(f"{kept_head} {kept_tail}" if kept_head and kept_tail else kept_head or kept_tail)
    return out
