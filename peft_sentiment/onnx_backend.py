"""Running an ONNX export (peft_sentiment.export) with onnxruntime on the CPU.

`OnnxClassifier` offers what predict.py uses of a transformers text-classification pipeline: its
`tokenizer`, its `max_length`, and a call on a list of texts that returns one {"label", "score"} per
text, the score being the softmax probability of the label. Only onnxruntime is imported here (on
first use), never torch.onnx: predicting from an export needs neither the exporter nor the run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import truncation
from .config import DataConfig, build
from .errors import ConfigError, ModelError, first_line
from .labels import LabelSet, labels_of_folder

BACKENDS = ("torch", "onnx", "openvino")  # onnx and openvino run an export folder
FORMATS = ("onnx",)  # of `peft-sentiment export`
QUANTIZATIONS = ("none", "int8", "int8-static")
MODEL_FILE = "model.onnx"
METADATA_FILE = "export.json"
CHECK_FILE = "export_check.json"
INSTALL_HINT = "pip install 'peft-sentiment[onnx]'"


def require(*modules: str, what: str = "the onnx backend") -> None:
    """Each module imports, or one line says what to install."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(f"{what} needs {name}: {INSTALL_HINT}") from None


def is_export(path: Path) -> bool:
    """Whether `path` is a folder written by `peft-sentiment export`."""
    return (path / METADATA_FILE).is_file()


def read_metadata(folder: Path) -> dict[str, Any]:
    """export.json of an export folder, with its model file present."""
    try:
        meta = json.loads((folder / METADATA_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read {folder / METADATA_FILE}: {first_line(err)}") from None
    if not isinstance(meta, dict) or meta.get("format") != "onnx":
        raise ModelError(f"{folder / METADATA_FILE} does not describe an ONNX export")
    if not (folder / meta.get("model_file", MODEL_FILE)).is_file():
        raise ModelError(f"{folder / meta.get('model_file', MODEL_FILE)} is missing: export the run again")
    return meta


def export_data_config(folder: Path) -> DataConfig:
    """The data the exported run was trained and tested on, as its export.json records it."""
    return build(DataConfig, read_metadata(folder)["data"], "data.")


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on: hyper-threads of one core share its
    matrix units, so a thread per hyper-thread only adds contention."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:  # no sysfs (not Linux): count every CPU
            return max(1, len(cpus))
    return max(1, len(cores))


def default_threads() -> int:
    """OMP_NUM_THREADS when set (the same limit torch honours), else the physical cores."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else physical_cores()


def session_options(threads: int | None = None) -> Any:
    """onnxruntime options for one process predicting on the CPU: one thread per physical core inside
    each operator, operators run one after another (a classifier's graph is a chain, so a second pool
    would only compete for the same cores), every graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings (e.g. unused initializers) are not the user's
    return options


def inference_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime session on the CPU for the model file `path`."""
    require("onnxruntime")
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelError(f"cannot load {path}: {first_line(err)}") from None


def encode(tokenizer: Any, texts: Sequence[str], max_length: int,
           names: Sequence[str]) -> dict[str, np.ndarray]:
    """One padded batch of the graph's inputs, truncated at `max_length` as in training."""
    enc = tokenizer(truncation.cut(tokenizer, texts, max_length), truncation=True, max_length=max_length,
                    padding=True, return_tensors="np")
    return {name: enc[name].astype(np.int64) for name in names}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class OnnxClassifier:
    """An ONNX export on onnxruntime, called like a text-classification pipeline."""

    backend = "onnx"

    def __init__(self, folder: str | Path, max_length: int | None = None, threads: int | None = None) -> None:
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.metadata = read_metadata(self.folder)
        self.max_length: int = max_length or int(self.metadata["max_length"])
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
            config = json.loads((self.folder / "config.json").read_text())
            self.id2label = {int(k): v for k, v in config["id2label"].items()}
        except Exception as err:  # noqa: BLE001 - tokenizers and JSON fail in many ways
            raise ModelError(f"cannot load {self.folder}: {first_line(err)}") from None
        self._start(self.folder / self.metadata.get("model_file", MODEL_FILE), threads)

    def _start(self, path: Path, threads: int | None) -> None:
        """The engine that runs the graph: an onnxruntime session."""
        require("onnxruntime")
        self.session = inference_session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """float32 logits, one row per text, in one forward pass."""
        return self.session.run(None, encode(self.tokenizer, texts, self.max_length, self.input_names))[0]

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """[{"label", "score"}] per text, as the pipeline returns them."""
        if isinstance(texts, str):
            texts = [texts]
        out: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            probs = softmax(self.logits(texts[start:start + batch_size]).astype(np.float64))
            best = probs.argmax(axis=-1)
            out.extend({"label": self.id2label[int(b)], "score": float(p[b])} for p, b in zip(probs, best))
        return out


def evaluate_export(folder: Path, data: DataConfig | None,
                    batch_size: int = 64) -> tuple[DataConfig, LabelSet, list[int], list[int], float]:
    """(data, classes, labels, predictions, seconds) of an export on its run's test subset or on `data`."""
    from transformers import AutoConfig

    from .data import load_splits
    from .modeling import check_max_length
    from .predict import predict

    data = data if data is not None else export_data_config(folder)
    config = AutoConfig.from_pretrained(str(folder))
    labels = labels_of_folder(folder, config.id2label)
    splits = load_splits(data, need_train=False, labels=labels)
    check_max_length(data.max_length, config, str(folder))
    classifier = OnnxClassifier(folder, max_length=data.max_length)
    start = time.perf_counter()
    found = predict(classifier, list(splits.test["text"]), batch_size)
    seconds = time.perf_counter() - start
    return (data, labels, [int(x) for x in splits.test["label"]], [labels.label2id[p.label] for p in found],
            seconds)
