"""Static int8 of an ONNX export's feed-forward layers (`export --quantize int8-static`), with NNCF.

NNCF's post-training quantization (the transformer preset, with its SmoothQuant and bias correction)
calibrates the activation ranges on training texts and writes int8 weights and activations as
QuantizeLinear/DequantizeLinear pairs into the ONNX graph, which onnxruntime and OpenVINO both run.
Only the feed-forward layers are quantized: the linear layers whose weight is not square (hidden ->
intermediate -> hidden), two thirds of the linear layers' multiply-adds. The attention projections, the
attention itself and the embedding tables stay in floating point: quantizing the attention
projections too cost about 3% of labels on train-split reviews that no run trains on
(benchmarks/speed/int8_static/). As with `--quantize int8`, when labels then agree with PyTorch on
less than the bar on the selection texts (reviews the run never trained on), the feed-forward layers
that move the logits most are put back to fp32 (`keep_fp32`: exactly the fp32 computation for those
layers), as few as reach it (layer_search.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelError, first_line
from .layer_search import keep_fewest

INSTALL_HINT = "pip install 'peft-sentiment[openvino]'"
SCHEME = ("NNCF post-training static quantization (transformer preset): int8 weights per output channel "
          "and int8 activations calibrated on training texts, in the feed-forward layers only")


@dataclass(frozen=True)
class StaticInt8:
    int8_layers: tuple[str, ...]  # feed-forward layers left int8
    fp32_layers: tuple[str, ...]  # the attention projections, then feed-forward layers kept fp32
    kept_layers: tuple[str, ...]  # the feed-forward layers the search kept fp32, most harmful first
    unquantized_layers: tuple[str, ...]  # linear layers on [batch, features] inputs (head, pooler)
    n_calibration: int  # training texts the activation ranges were calibrated on
    chosen_on: str  # the selection texts, in words
    selection_agreement: float  # labels of the int8 graph against PyTorch's, on the selection texts
    all_int8_agreement: float  # the same with every feed-forward layer int8
    layer_errors: dict[str, float]  # mean |logit diff| of each feed-forward layer int8 alone (when searched)
    tried: dict[int, float] = dataclasses.field(default_factory=dict)  # agreement by layers kept fp32

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": SCHEME,
            "per_channel": True,
            "int8_layers": list(self.int8_layers),
            "fp32_layers": list(self.fp32_layers),
            "fp32_layers_why": ("the scheme keeps the attention projections in floating point"
                                + (f", and the search the feed-forward layers {', '.join(self.kept_layers)}"
                                   if self.kept_layers else "")),
            "kept_layers": list(self.kept_layers),
            "unquantized_layers": list(self.unquantized_layers),
            "calibrated_on": f"the first {self.n_calibration} texts of the run's training subset",
            "chosen_on": self.chosen_on,
            "selection_agreement": self.selection_agreement,
            "all_int8_selection_agreement": self.all_int8_agreement,
            "layer_errors": self.layer_errors,
            "agreement_by_layers_kept": {str(k): v for k, v in self.tried.items()},
        }


def require_nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise ConfigError(f"--quantize int8-static needs nncf: {INSTALL_HINT}") from None
    return nncf


def feed_forward(fp32_path: Path, layers: dict[str, str]) -> dict[str, str]:
    """Of `layers` ({module: MatMul node}), those whose weight matrix is not square."""
    import onnx

    model = onnx.load(str(fp32_path), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    weight_of = {node.name: node.input[1] for node in model.graph.node if len(node.input) > 1}
    return {module: node for module, node in layers.items()
            if len(set(shapes.get(weight_of.get(node, ""), ()))) == 2}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF logs INFO lines and draws progress bars on stdout: neither belongs in this tool's output."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def quantize_static(fp32_path: Path, out_path: Path, calibration: Sequence[dict[str, np.ndarray]],
                    layers: dict[str, str], unquantized: Sequence[str], agreement: Callable[[Path], float],
                    error: Callable[[Path], float], chosen_on: str, bar: float,
                    stage: Callable[[str], None]) -> StaticInt8:
    """Write `out_path`: `fp32_path` with its feed-forward layers int8, calibrated on `calibration`
    (batches of model inputs). `agreement(path)` scores a graph's labels against PyTorch's on the
    selection texts (`chosen_on`); below `bar`, the feed-forward layers that move the logits most
    (`error(path)` of the graph with that layer alone int8) go back to fp32, as few as reach it."""
    import onnx

    ffn = feed_forward(fp32_path, layers)
    if not ffn:
        raise ModelError("int8-static: the exported graph has no feed-forward layer (a linear layer with a "
                         "non-square weight) to quantize")
    fp32 = onnx.load(str(fp32_path))
    quantized = calibrate(fp32, calibration, set(ffn.values()))

    def score(kept: Sequence[str], path: Path) -> float:
        onnx.save(keep_fp32(quantized, fp32, {ffn[name] for name in kept}), str(path))
        return agreement(path)

    def harm(name: str, path: Path) -> float:
        onnx.save(keep_fp32(quantized, fp32, {ffn[other] for other in ffn if other != name}), str(path))
        return error(path)

    found = keep_fewest(list(ffn), score, harm, out_path, bar, stage, chosen_on)
    n_calibration = sum(len(batch["input_ids"]) for batch in calibration)
    return StaticInt8(int8_layers=tuple(n for n in ffn if n not in found.kept),
                      fp32_layers=tuple(m for m in layers if m not in ffn) + found.kept, kept_layers=found.kept,
                      unquantized_layers=tuple(unquantized), n_calibration=n_calibration,
                      chosen_on=chosen_on, selection_agreement=found.agreement,
                      all_int8_agreement=found.all_int8_agreement, layer_errors=found.errors,
                      tried=found.tried)


def calibrate(fp32: Any, calibration: Sequence[dict[str, np.ndarray]], nodes: set[str]) -> Any:
    """The ONNX model `fp32` with the MatMul nodes `nodes` int8 (NNCF, transformer preset), their
    activation ranges calibrated on `calibration` (batches of model inputs); every other node as it was."""
    nncf = require_nncf()
    others = [node.name for node in fp32.graph.node  # Gather: NNCF would make the embedding tables int8
              if node.op_type in ("MatMul", "Gemm", "Gather") and node.name not in nodes]
    try:
        with _quiet():
            return nncf.quantize(
                fp32, nncf.Dataset(list(calibration)), model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(calibration), ignored_scope=nncf.IgnoredScope(names=others, validate=False))
    except Exception as err:  # noqa: BLE001 - NNCF raises many types
        raise ModelError(f"int8-static quantization failed: {first_line(err)}") from None


def keep_fp32(quantized: Any, fp32: Any, nodes: set[str]) -> Any:
    """A copy of the NNCF graph `quantized` in which the MatMul nodes `nodes` compute as in the `fp32`
    graph again: their input is taken from before NNCF's quantize node (and before its SmoothQuant
    scaling), their weight and the bias added after them from the `fp32` graph (undoing SmoothQuant's
    rescaling and the bias correction). What nothing reads any more is dropped."""
    import onnx

    graph = onnx.ModelProto()
    graph.CopyFrom(quantized)
    producer = {out: node for node in graph.graph.node for out in node.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    fp32_nodes = {node.name: node for node in fp32.graph.node}
    fp32_weights = {init.name: init for init in fp32.graph.initializer}

    def fp32_copy(name: str, new_name: str) -> str:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(fp32_weights[name])
        tensor.name = new_name  # the int8 graph may hold an int8 tensor under the original name
        graph.graph.initializer.append(tensor)
        return new_name

    for node in graph.graph.node:
        if node.name not in nodes:
            continue
        source = node.input[0]
        for op in ("DequantizeLinear", "QuantizeLinear", "Mul"):  # each there or not
            step = producer.get(source)
            if step is not None and step.op_type == op and (op != "Mul" or "smooth_quant" in step.name):
                source = step.input[0]
        node.input[0] = source
        node.input[1] = fp32_copy(fp32_nodes[node.name].input[1], f"{node.name}.fp32_weight")
        for add in readers.get(node.output[0], []):
            original = fp32_nodes.get(add.name)
            if add.op_type != "Add" or original is None:
                continue
            for k, name in enumerate(original.input):  # the bias, on either side
                if name in fp32_weights:
                    add.input[k] = fp32_copy(name, f"{add.name}.fp32_bias")
    _drop_unread(graph)
    return graph


def _drop_unread(model: Any) -> None:
    """Remove nodes whose outputs nothing reads (repeatedly), then initializers nothing reads."""
    graph = model.graph
    outputs = {out.name for out in graph.output}
    while True:
        read = outputs | {name for node in graph.node for name in node.input}
        dead = [node for node in graph.node if not any(out in read for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in read]:
        graph.initializer.remove(init)


__all__ = ["SCHEME", "StaticInt8", "feed_forward", "keep_fp32", "quantize_static", "require_nncf"]
