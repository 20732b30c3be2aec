"""Which layers an int8 export keeps in fp32: the fewest of the most harmful that reach the bar.

Both int8 schemes (`export.quantize_int8`, `static_int8.quantize_static`) search the same way. With
every candidate layer int8, labels are compared with PyTorch's on the selection texts; below the bar,
each layer's harm is measured with that layer alone int8, and layers go back to fp32 most harmful
first, as few as reach the bar (found by doubling, then bisection).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# score(kept, path): write the graph with the layers `kept` in fp32 (every other candidate int8) to
# `path`, and return the share of selection texts whose label agrees with PyTorch's there.
Score = Callable[[Sequence[str], Path], float]
# harm(name, path): write the graph with the layer `name` alone int8 to `path`, and return how far its
# logits move from PyTorch's.
Harm = Callable[[str, Path], float]


@dataclass(frozen=True)
class Found:
    kept: tuple[str, ...]  # the layers kept in fp32, most harmful first
    agreement: float  # with `kept` in fp32
    all_int8_agreement: float  # with every candidate int8
    errors: dict[str, float]  # each layer's harm, when the search had to measure it
    tried: dict[int, float]  # agreement with the k most harmful layers in fp32, for each k tried


def keep_fewest(layers: Sequence[str], score: Score, harm: Harm, out_path: Path, bar: float,
                stage: Callable[[str], None], described: str) -> Found:
    """Leave at `out_path` the graph with the fewest of `layers` in fp32 that agrees at `bar` or above
    (every layer in fp32 when no fewer do). `described` names the selection texts in progress lines."""
    all_int8 = score((), out_path)
    if all_int8 >= bar:
        return Found(kept=(), agreement=all_int8, all_int8_agreement=all_int8, errors={}, tried={0: all_int8})
    trial = out_path.with_name(f"{out_path.stem}.trial{out_path.suffix}")
    errors: dict[str, float] = {}
    for i, name in enumerate(layers, 1):
        stage(f"int8 agrees on {all_int8:.1%} of {described}: measuring layer {i}/{len(layers)}")
        errors[name] = harm(name, trial)
    order = sorted(layers, key=lambda name: -errors[name])
    tried: dict[int, float] = {0: all_int8}

    def reaches(count: int) -> bool:
        stage(f"trying the {count} most harmful of {len(order)} layers in fp32")
        tried[count] = score(order[:count], trial)
        if tried[count] < bar:
            return False
        trial.replace(out_path)  # the last count that reaches is the one left
        return True

    count = fewest(len(order), reaches)
    if count not in tried:  # no smaller count reached the bar: every layer fp32
        tried[count] = score(order, out_path)
    trial.unlink(missing_ok=True)
    return Found(kept=tuple(order[:count]), agreement=tried[count], all_int8_agreement=all_int8, errors=errors,
                 tried=dict(sorted(tried.items())))


def fewest(n: int, reaches: Callable[[int], bool]) -> int:
    """The smallest count in 1..n that `reaches`, for a `reaches` that holds from some count on (and
    not at 0): doubling, then bisection, about 2 log2(count) calls. n, untried, when no smaller one does."""
    low, high = 0, 1  # low: known not to reach
    while high < n and not reaches(high):
        low, high = high, high * 2
    high = min(high, n)
    while high - low > 1:
        middle = (low + high) // 2
        if reaches(middle):
            high = middle
        else:
            low = middle
    return high
