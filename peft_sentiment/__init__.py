"""Fine-tune encoders for binary sentiment: full fine-tuning, LoRA, QLoRA, DoRA, (IA)3 or head only.

The names below load on first use, so `import peft_sentiment` (and the CLI's --help) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunConfig": "config", "load_config": "config",
    "ConfigError": "errors", "DataError": "errors", "HubError": "errors", "ModelError": "errors",
    "PeftSentimentError": "errors", "RunError": "errors",
    "MergeResult": "merge", "merge_run": "merge",
    "ExportResult": "export", "export_run": "export",
    "Prediction": "predict", "load_pipeline": "predict", "predict": "predict", "predict_stream": "predict",
    "EvalResult": "run", "RunResult": "run", "evaluate_run": "run", "run_training": "run",
    "BenchmarkSpec": "benchmark", "run_benchmark": "benchmark",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
