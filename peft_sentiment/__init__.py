"""Fine-tune encoders for binary sentiment with full fine-tuning or LoRA."""

from .config import RunConfig, load_config
from .errors import ConfigError, DataError, HubError, ModelError, PeftSentimentError, RunError
from .merge import MergeResult, merge_run
from .predict import Prediction, load_pipeline, predict
from .run import EvalResult, RunResult, evaluate_run, run_training

__all__ = [
    "RunConfig", "load_config", "run_training", "evaluate_run", "load_pipeline", "predict",
    "Prediction", "RunResult", "EvalResult", "PeftSentimentError", "ConfigError", "DataError",
    "ModelError", "RunError", "HubError", "merge_run", "MergeResult",
]
__version__ = "0.1.0"
