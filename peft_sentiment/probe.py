"""The machine's matrix-multiply peak per precision, measured once and cached, and the precision
`auto` chooses from it.

The peak is what a short probe achieves on square matrix products in the precision that the model's
linear layers run in under autocast; model FLOPs utilization (MFU) is measured against it.
The cache lives in `$PEFT_SENTIMENT_CACHE` (default `~/.cache/peft-sentiment`; `off` probes every
time), keyed by device, torch version and thread count. The probe draws its matrices from a
generator of its own: whether it runs or is read from the cache, a run's seeded initialization
(LoRA matrices, a new head) is the same.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import ConfigError
from .perf import cpu_flags, device_name

CACHE_ENV = "PEFT_SENTIMENT_CACHE"
PEAK_FILE = "peak_flops.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# bf16 is chosen on a CPU without AMX only when the probe finds it at least this much faster.
BF16_MARGIN = 1.2


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "peft-sentiment").expanduser()


def cache_off() -> bool:
    """PEFT_SENTIMENT_CACHE=off (or 0, none): nothing is read from or written to a cache."""
    return os.environ.get(CACHE_ENV, "").lower() in {"off", "0", "none"}


def device_key() -> str:
    return f"{device_name()} | torch {torch.__version__}"


def measure_peak(precision: str, size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` products of two size x size matrices in `precision`."""
    cuda = torch.cuda.is_available()
    size = size or (8192 if cuda else 1024)
    device = "cuda" if cuda else "cpu"
    own = torch.Generator(device=device).manual_seed(0)  # the global RNG stays as the run seeded it
    a = torch.randn(size, size, device=device, generator=own).to(DTYPES[precision])
    b = torch.randn(size, size, device=device, generator=own).to(DTYPES[precision])
    best = float("inf")
    for i in range(repeats + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first product warms up the kernels
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(precision: str, measure: Callable[[str], float] = measure_peak) -> float:
    """The cached peak for `precision` on this device, probed on first use."""
    if cache_off():
        return float(measure(precision))
    path = cache_dir() / PEAK_FILE
    key = device_key()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key, {})
    if precision not in entry:
        entry[precision] = measure(precision)
        cache[key] = entry
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=2) + "\n")
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home: probe again next time
    return float(entry[precision])


def check_precision(requested: str, cuda: bool | None = None) -> None:
    """Refuse a precision this machine cannot run well, without probing anything."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if requested == "fp16" and not cuda:
        raise ConfigError("precision fp16 needs a CUDA GPU: CPUs have no fast fp16 matmul, use bf16 or fp32")


def choose_precision(
    requested: str,
    *,
    cuda: bool | None = None,
    cuda_bf16: bool | None = None,
    flags: set[str] | None = None,
    peak: Callable[[str], float] = peak_flops,
) -> str:
    """The precision a run computes in. `auto`: on CUDA bf16 where supported, else fp16; on a CPU
    bf16 where it has AMX, fp32 where it has no bf16 instructions at all, and with AVX512-BF16 alone
    whichever of the two the matmul probe finds faster (by BF16_MARGIN), so auto is never slower
    than fp32. Arguments default to this machine; tests pass their own."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    check_precision(requested, cuda)
    if requested != "auto":
        return requested
    if cuda:
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        return "bf16" if supported else "fp16"
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "bf16"
    if "avx512_bf16" not in flags:
        return "fp32"
    return "bf16" if peak("bf16") >= BF16_MARGIN * peak("fp32") else "fp32"
