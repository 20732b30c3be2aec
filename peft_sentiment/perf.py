"""Device and peak-memory readings."""

from __future__ import annotations

import platform
import resource
import sys
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemoryStats:
    peak_mib: float
    kind: str  # how it was measured


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


def reset_peak_memory() -> None:
    """Start a CUDA peak window; CPU RSS peaks cannot be reset (one process per measurement)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> MemoryStats:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return MemoryStats(
            peak_mib=torch.cuda.max_memory_allocated() / 2**20,
            kind="cuda max_memory_allocated since the start of training",
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB
    return MemoryStats(peak_mib=rss_bytes / 2**20, kind="cpu peak RSS of the whole process")
