"""Device and peak-memory readings."""

from __future__ import annotations

import platform
import resource
import sys
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemoryStats:
    peak_mib: float  # the figure reported: CUDA peak allocated above the baseline, or CPU peak RSS
    kind: str  # how it was measured
    reserved_mib: float | None = None  # CUDA: peak reserved by the caching allocator above the baseline
    baseline_mib: float | None = None  # CUDA: allocated when the window started (model weights, ...)


def device_name() -> str:
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def reset_peak_memory() -> float:
    """Start a peak window and return its baseline in MiB (CUDA memory allocated now).

    CPU RSS peaks cannot be reset: measure one run per process.
    """
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    return 0.0


def peak_memory(baseline_mib: float = 0.0) -> MemoryStats:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return MemoryStats(
            peak_mib=torch.cuda.max_memory_allocated() / 2**20 - baseline_mib,
            kind="cuda max_memory_allocated during training, minus what was allocated before it",
            reserved_mib=torch.cuda.max_memory_reserved() / 2**20 - baseline_mib,
            baseline_mib=baseline_mib,
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB
    return MemoryStats(peak_mib=rss_bytes / 2**20, kind="cpu peak RSS of the whole process")
