"""Export a finished run to ONNX, optionally with int8 weights, and verify the export before keeping it.

An adapter run is merged first (merge.write_merged, with its own logit check). The model is exported
by PyTorch's own exporter, `torch.onnx.export(dynamo=True)`, with dynamic batch and sequence axes.
Both of torch's exporters gave logits within 1e-6 of PyTorch for DistilBERT and BERT over batch
sizes and lengths, but the legacy TorchScript one is deprecated since torch 2.9 and its tracer turns
Python branches on tensor values (transformers' mask code has some) into constants; the dynamo one
records module names on each node, which name the layers int8 keeps in fp32. For BERT and DistilBERT
classifiers the last layer is exported for the first token only past its self-attention (the head
reads no other position: first_token.py), which the check below verifies like any export. int8 is
onnxruntime's dynamic quantization of the linear layers' weights, per output channel.

The export folder describes itself:

    model.onnx          inputs input_ids, attention_mask (and token_type_ids for BERT), output logits
    config.json         the model's config, with id2label and label2id
    tokenizer files     the run's tokenizer, model_max_length set to the run's max_length
    export.json         source run, method, base model, max_length, quantization, how the last layer
                        was exported, the run's test metrics and data config (so `evaluate EXPORT`
                        needs nothing else)
    export_check.json   the verification: largest |logit difference| from the PyTorch model and label
                        agreement on the run's test texts; for int8, which layers stayed fp32 and why

Every export is verified on the run's test texts (or the test split of --check-data), and one whose
labels agree with the PyTorch model's on less than AGREEMENT_BAR of them is refused unless forced.
For int8, when quantizing every linear layer does not reach the bar on reviews the run never trained
on (its validation reviews and the ones after them: `_selection_texts`), the layers that move the
logits most there are kept in fp32, as few as reach the bar (layer_search.py); the test texts only
verify the result.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import logging
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig, config_to_dict
from .errors import ConfigError, DataError, ModelError, RunError, first_line
from .first_token import first_token_only
from .layer_search import keep_fewest
from .loading import run_labels
from .merge import MergeResult, copy_tokenizer, write_merged
from .onnx_backend import (
    CHECK_FILE,
    FORMATS,
    METADATA_FILE,
    MODEL_FILE,
    QUANTIZATIONS,
    encode,
    inference_session,
    require,
)
from .rundir import (
    ADAPTER_DIR,
    MODEL_DIR,
    atomic_dir,
    check_output,
    is_run,
    load_metrics,
    load_run_config,
    unfinished_message,
    write_json,
)
from .static_int8 import StaticInt8, quantize_static, require_nncf

log = logging.getLogger(__name__)

# Labels must agree with the PyTorch model's on at least this share of the check texts: on the 300
# test reviews of the seed protocol, at most one may flip.
AGREEMENT_BAR = 0.995
# fp32 graphs compute the same products as PyTorch in another order: measured max |logit diff| 9e-7
# on the smoke DistilBERT and 8e-8 on MiniLM-L6 (BERT) at 256 tokens. 1e-3 (merge.py's tolerance)
# leaves orders of magnitude for that noise and still catches a wrong graph.
LOGIT_TOLERANCE = 1e-3
BATCH_SIZE = 32  # texts per forward pass while checking (length-sorted)
# Reviews never trained on on which int8 must reach the bar before it is verified on the test texts:
# 500 resolve an agreement of 99.5% to one label (0.2%), 256 only to 0.4%.
N_SELECTION = 500
N_CALIBRATION = 256  # training texts that calibrate int8-static's activation ranges
# Of those, the texts nearest the decision boundary, on which each layer's own int8 error is measured.
# On a LoRA run of MiniLM (int8-static, 12 feed-forward layers, 500 selection texts), layers ranked
# on these reached the bar with 5 in fp32 (1 label flipped), as with the first 32 texts (2 flipped)
# and before all 500 (6 layers). Flips do not fall steadily as layers go back to fp32, and with the
# first 32 the bisection stopped at 7 (benchmarks/speed/int8_static/ranking.json).
N_RANKING = 32
# Only MatMul: onnxruntime's dynamic quantization has no integer Gemm, so layers applied to a
# [batch, features] input (the classification head, BERT's pooler) stay fp32; embeddings (Gather)
# are lookups, not compute, and stay fp32 too.
QUANTIZED_OPS = ("MatMul",)
# Weights in 7 bits: a CPU without VNNI multiplies uint8 activations by int8 weights with
# vpmaddubsw, whose 16-bit pair sums saturate for full 8-bit weights (onnxruntime's quantization
# docs). 7 bits give every x86 CPU the results verified here. On MiniLM-L6 with every layer int8,
# 300 reviews: 97.3% agreement with 7 bits, 96.7% with 8 (max |logit diff| 0.0088 and 0.0092).
REDUCE_RANGE = True


# Length-sorted batches of model inputs, each with the positions of its texts in the list they came from.
Batches = list[tuple[np.ndarray, dict[str, np.ndarray]]]


@dataclass(frozen=True)
class ExportResult:
    output: Path
    format: str
    quantization: str  # none or int8
    max_abs_logit_diff: float  # largest |logit(export) - logit(PyTorch)| on the check texts
    agreement: float  # share of check texts whose label is the PyTorch model's
    n_texts: int
    texts_from: str
    passed: bool  # agreement >= AGREEMENT_BAR (and, fp32, logits within LOGIT_TOLERANCE)
    model_bytes: int
    int8_layers: tuple[str, ...] = ()
    fp32_layers: tuple[str, ...] = ()  # int8: linear layers kept in fp32 by the search
    selection_agreement: float | None = None  # int8: agreement on the selection texts that chose them
    chosen_on: str | None = None  # int8: those texts, in words
    merge_max_abs_diff: float | None = None  # adapter runs: the merge's own check, merged vs base + adapter


def export_run(run_dir: str | Path, output: str | Path, format: str = "onnx", quantize: str = "none",
               check_data: str | Path | None = None, force: bool = False, overwrite: bool = False,
               on_stage: Callable[[str], None] | None = None) -> ExportResult:
    """Export the finished run `run_dir` into the new folder `output`, verified; see the module doc.

    `on_stage` hears what the export is doing (for a progress display). Raises `ModelError`, leaving
    nothing at `output`, when the export agrees with the PyTorch model too little and not `force`.
    """
    run_dir, output = Path(run_dir), Path(output)
    stage = on_stage or (lambda message: None)
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r} is not supported (choose from {', '.join(FORMATS)})")
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize {quantize!r} is not supported (choose from "
                          f"{', '.join(QUANTIZATIONS)})")
    require("onnx", "onnxscript", "onnxruntime", what="export")
    if quantize == "int8-static":
        require_nncf()
    cfg = _finished_run(run_dir)
    check_output(output, overwrite)
    texts, texts_from = _check_texts(cfg, run_dir, check_data)
    selection = _selection_texts(cfg, run_dir) if quantize != "none" else None
    max_length = cfg.data.max_length

    with atomic_dir(output, overwrite) as tmp:
        work = tmp / ".work"
        work.mkdir()
        model, merge = _fp32_model(run_dir, cfg, work, stage)
        _write_model_files(run_dir, cfg, work, tmp)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tmp))  # the exported tokenizer, as users load it
        names = input_names(model, tokenizer)
        stage(f"computing PyTorch logits on {len(texts)} check texts")
        batches = length_batches(tokenizer, texts, max_length, names)
        reference = torch_logits(model, batches)
        stage("exporting with torch.onnx.export")
        fp32_path = work / "fp32.onnx"
        example = (texts * 2)[:2]  # a batch of two (the first text twice when there is only one)
        with first_token_only(model) as last_layer:
            export_onnx(model, encode(tokenizer, example, max_length, names), fp32_path)
        search: Int8Search | StaticInt8 | None = None
        if quantize == "none":
            shutil.move(fp32_path, tmp / MODEL_FILE)
        else:
            assert selection is not None
            chosen = length_batches(tokenizer, selection.texts, max_length, names)
            if quantize == "int8":
                search = quantize_int8(fp32_path, tmp / MODEL_FILE, model, chosen, selection.origin, stage)
            else:
                calibration = length_batches(tokenizer, selection.calibration, max_length, names)
                search = _quantize_static(fp32_path, tmp / MODEL_FILE, model, chosen, selection.origin,
                                          calibration, stage)
        stage(f"verifying on {len(texts)} texts")
        logits = onnx_logits(tmp / MODEL_FILE, batches)
        diff = float(np.abs(logits - reference).max())
        agreement = float((logits.argmax(-1) == reference.argmax(-1)).mean())
        passed = agreement >= AGREEMENT_BAR and (quantize != "none" or diff <= LOGIT_TOLERANCE)
        del model
        shutil.rmtree(work)
        check: dict[str, Any] = {
            "passed": passed,
            "forced": force and not passed,
            "max_abs_logit_diff": diff,
            "agreement": agreement,
            "agreement_bar": AGREEMENT_BAR,
            "logit_tolerance": LOGIT_TOLERANCE if quantize == "none" else None,
            "n_texts": len(texts),
            "texts": texts_from,
            "max_length": max_length,
            "reference": "the run's model in PyTorch, fp32" + (", merged" if merge is not None else ""),
        }
        if merge is not None:
            check["merge"] = {"max_abs_logit_diff": merge.max_abs_diff, "tolerance": merge.tolerance,
                              "n_texts": merge.n_texts, "texts": merge.texts_from}
        if search is not None:
            check["int8"] = search.to_dict()
        write_json(check, tmp / CHECK_FILE)
        write_json(_metadata(run_dir, cfg, quantize, names, merge, last_layer), tmp / METADATA_FILE)
        if not passed and not force:
            what = f"agrees with the PyTorch model on {agreement:.1%} of {len(texts)} texts"
            if quantize == "none" and agreement >= AGREEMENT_BAR:
                what = (f"differs from the PyTorch model by {diff:.3g} in logits (tolerance "
                        f"{LOGIT_TOLERANCE:g})")
            raise ModelError(f"ONNX export of {run_dir} {what} ({texts_from}; bar {AGREEMENT_BAR:.1%}): "
                             "nothing was saved; pass --force to keep it anyway")
        model_bytes = (tmp / MODEL_FILE).stat().st_size
    log.info("exported %s to %s: agreement %.4f on %d texts, max |logit diff| %.3g", run_dir, output,
             agreement, len(texts), diff)
    return ExportResult(
        output=output, format=format, quantization=quantize, max_abs_logit_diff=diff, agreement=agreement,
        n_texts=len(texts), texts_from=texts_from, passed=passed, model_bytes=model_bytes,
        int8_layers=search.int8_layers if search else (), fp32_layers=search.fp32_layers if search else (),
        selection_agreement=search.selection_agreement if search else None,
        chosen_on=search.chosen_on if search else None,
        merge_max_abs_diff=merge.max_abs_diff if merge is not None else None)


# ---------------------------------------------------------------- the run and its texts


def _finished_run(run_dir: Path) -> RunConfig:
    message = unfinished_message(run_dir)
    if message is not None:
        raise RunError(message)
    if not run_dir.exists():
        raise RunError(f"run folder not found: {run_dir}")
    if not is_run(run_dir):
        raise RunError(f"{run_dir} is not a finished run folder (it needs config.yaml and {MODEL_DIR}/ "
                       f"or {ADAPTER_DIR}/)")
    return load_run_config(run_dir)


def _check_texts(cfg: RunConfig, run_dir: Path, check_data: str | Path | None) -> tuple[list[str], str]:
    """The texts every export is verified on: the run's test subset, or that of `check_data`."""
    from .data import load_splits

    data = cfg.data
    if check_data is not None:
        folder = Path(check_data).expanduser()
        if not folder.is_dir():
            raise DataError(f"--check-data {check_data}: no such folder")
        data = dataclasses.replace(data, source=str(folder))
    try:
        test = load_splits(data, need_train=False, labels=run_labels(run_dir)).test
    except DataError as err:
        if check_data is not None:
            raise DataError(f"--check-data {check_data}: {err}") from None
        raise DataError(f"cannot read the test texts of {run_dir} to verify the export ({err}): pass "
                        "--check-data with a data folder") from None
    return list(test["text"]), f"the test subset of {data.source}"


@dataclass(frozen=True)
class Selection:
    texts: list[str]  # reviews the run never trained on: int8 chooses its fp32 layers on these
    origin: str  # where they come from, in words
    calibration: list[str]  # the first training texts: int8-static calibrates its ranges on these


def _selection_texts(cfg: RunConfig, run_dir: Path) -> Selection:
    """Up to N_SELECTION reviews the run never trained on: its validation reviews and, taken the same
    way, the ones after them (from the data's own validation split when it has one; any that repeat a
    training or test text left out). Not the test texts, which only verify; not training texts, on
    which a model is surer than on reviews it has not seen."""
    from .data import load_splits

    data = dataclasses.replace(cfg.data, validation_size=max(cfg.data.validation_size, N_SELECTION),
                               drop_overlap=True)
    try:
        splits = load_splits(data, validation_up_to=True)
    except DataError as err:
        raise DataError(f"int8 export chooses which layers stay fp32 on reviews {run_dir} never trained "
                        f"on, which cannot be read: {err}") from None
    if splits.validation is None or len(splits.validation) == 0:
        raise DataError(f"int8 export chooses which layers stay fp32 on reviews {run_dir} never trained "
                        f"on, and {cfg.data.source} has none beyond its training subset: give the data a "
                        "validation split")
    n = len(splits.validation)
    return Selection(texts=list(splits.validation["text"]), origin=f"{n} reviews of {splits.validation_origin}",
                     calibration=list(splits.train["text"][:N_CALIBRATION]))


def _fp32_model(run_dir: Path, cfg: RunConfig, work: Path,
                stage: Callable[[str], None]) -> tuple[torch.nn.Module, MergeResult | None]:
    """The run's model in fp32, eval mode: merged first when the run trained an adapter."""
    from transformers import AutoModelForSequenceClassification

    if not cfg.saves_adapter:
        from .loading import load_model

        return load_model(run_dir).model.float().eval(), None
    stage("merging the adapter into its base")
    merge = write_merged(run_dir, work / "merged")
    model = AutoModelForSequenceClassification.from_pretrained(
        str(work / "merged"), use_safetensors=True, trust_remote_code=cfg.model.trust_remote_code)
    return model.float().eval(), merge


def _write_model_files(run_dir: Path, cfg: RunConfig, work: Path, folder: Path) -> None:
    """config.json (with the label names) of the exported model, and the run's tokenizer."""
    source = work / "merged" if cfg.saves_adapter else run_dir / MODEL_DIR
    shutil.copyfile(source / "config.json", folder / "config.json")
    copy_tokenizer(run_dir / (ADAPTER_DIR if cfg.saves_adapter else MODEL_DIR), folder, cfg.data.max_length)


def _metadata(run_dir: Path, cfg: RunConfig, quantize: str, names: Sequence[str],
              merge: MergeResult | None, last_layer: str | None) -> dict[str, Any]:
    import onnxruntime
    import transformers

    from . import __version__

    try:
        metrics = load_metrics(run_dir)
    except RunError:
        metrics = {}
    return {
        "format": "onnx",
        "model_file": MODEL_FILE,
        "quantization": quantize,
        "source_run": str(run_dir.resolve()),
        "method": cfg.method,
        "base_model": cfg.model.name + (" (random weights made by the run)" if cfg.model.builds_new_weights
                                        else ""),
        "merged": merge is not None,
        "max_length": cfg.data.max_length,
        "truncation": cfg.data.truncation,  # also in the tokenizer files; head+tail is cut before tokenizing
        "head_tokens": cfg.data.head_tokens,
        "inputs": list(names),
        "outputs": ["logits"],
        "last_layer": last_layer or "every token, as in PyTorch (first_token.py does not know this architecture)",
        "test_metrics": {k: metrics[k] for k in ("accuracy", "f1", "precision", "recall", "n_test")
                         if k in metrics},
        "data": config_to_dict(cfg.data),
        "exporter": f"torch.onnx.export (dynamo), torch {torch.__version__}",
        "versions": {"peft_sentiment": __version__, "transformers": transformers.__version__,
                     "onnxruntime": onnxruntime.__version__},
    }


# ---------------------------------------------------------------- export and logits


def input_names(model: torch.nn.Module, tokenizer: Any) -> list[str]:
    """What the tokenizer makes that the model's forward takes (DistilBERT has no token_type_ids)."""
    params = inspect.signature(model.forward).parameters
    return [name for name in tokenizer.model_input_names if name in params]


def length_batches(tokenizer: Any, texts: Sequence[str], max_length: int,
                   names: Sequence[str]) -> Batches:
    """Length-sorted batches (little padding): (positions in `texts`, inputs) each."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = [len(i) for i in ids]
    order = np.argsort([-n for n in lengths], kind="stable")
    return [(order[i:i + BATCH_SIZE], encode(tokenizer, [texts[j] for j in order[i:i + BATCH_SIZE]],
                                               max_length, names))
            for i in range(0, len(texts), BATCH_SIZE)]


def _gather(batches: Batches,
            run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> np.ndarray:
    """`run` on each batch, rows back in the texts' order."""
    n = sum(len(index) for index, _ in batches)
    out = np.zeros((n, 0), dtype=np.float32)
    for index, inputs in batches:
        logits = run(inputs)
        if out.shape[1] == 0:
            out = np.zeros((n, logits.shape[1]), dtype=np.float32)
        out[index] = logits
    return out


@torch.no_grad()
def torch_logits(model: torch.nn.Module, batches: Batches) -> np.ndarray:
    return _gather(batches, lambda inputs: model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
                   .logits.float().numpy())


def onnx_logits(path: Path, batches: Batches) -> np.ndarray:
    session = inference_session(path)
    return _gather(batches, lambda inputs: session.run(None, inputs)[0])


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's warnings (axis names, unused torchvision ops) are nothing a user can act on."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: torch.nn.Module, example: dict[str, np.ndarray], path: Path) -> None:
    """`model` as one ONNX file, with dynamic batch and sequence axes on every input."""
    from torch.export import Dim

    batch, sequence = Dim("batch"), Dim("sequence")
    kwargs = {name: torch.from_numpy(value) for name, value in example.items()}
    try:
        with _quiet_exporter():
            program = torch.onnx.export(model, (), kwargs=kwargs, dynamo=True, verbose=False,
                                        dynamic_shapes={name: {0: batch, 1: sequence} for name in kwargs},
                                        output_names=["logits"])
            program.save(str(path), external_data=False)
    except Exception as err:  # noqa: BLE001 - torch.export and the ONNX translation raise many types
        raise ModelError(f"torch.onnx.export failed on this model: {first_line(err)}") from None


# ---------------------------------------------------------------- int8


@dataclass(frozen=True)
class Int8Search:
    int8_layers: tuple[str, ...]
    fp32_layers: tuple[str, ...]  # kept fp32 by the search, most harmful first
    unquantized_layers: tuple[str, ...]  # linear layers onnxruntime's dynamic quantization leaves fp32
    selection_agreement: float  # with fp32_layers kept, on the selection texts
    all_int8_agreement: float  # with every layer int8, on the same texts
    chosen_on: str  # the selection texts, in words
    layer_errors: dict[str, float]  # mean |logit diff| of each layer quantized alone (when searched)
    tried: dict[int, float] = dataclasses.field(default_factory=dict)  # agreement by layers kept fp32

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": "onnxruntime dynamic quantization: int8 weights per output channel (7 bits: "
                      "reduce_range), uint8 activations per tensor, quantized at run time",
            "per_channel": True,
            "reduce_range": REDUCE_RANGE,
            "int8_layers": list(self.int8_layers),
            "fp32_layers": list(self.fp32_layers),
            "unquantized_layers": list(self.unquantized_layers),
            "chosen_on": self.chosen_on,
            "selection_agreement": self.selection_agreement,
            "all_int8_selection_agreement": self.all_int8_agreement,
            "layer_errors": self.layer_errors,
            "agreement_by_layers_kept": {str(k): v for k, v in self.tried.items()},
        }


def linear_layers(path: Path) -> tuple[dict[str, str], list[str]]:
    """({module name: MatMul node name} of the linear layers onnxruntime can quantize, names of the
    other linear layers), from the module scopes the exporter records on each node."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    quantizable: dict[str, str] = {}
    other: list[str] = []
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        classes = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
        if len(scopes) < 2 or len(classes) < 2 or not classes[-2].endswith(".Linear"):
            continue
        module = scopes[-2]
        if node.op_type in QUANTIZED_OPS and len(node.input) > 1 and node.input[1] in weights:
            quantizable[module] = node.name
        elif node.op_type in ("Gemm", "MatMul") and module not in other:
            other.append(module)
    return quantizable, other


@contextmanager
def _root_logger_kept() -> Iterator[None]:
    """onnxruntime.quantization logs with logging.info/warning on the root logger, which installs a
    stderr handler there on first use: give it a handler that drops them, and restore the root after.

    Its advice to pre-process the model is left out: its symbolic shape inference fails on graphs
    from torch.export ("Incomplete symbolic shape inference"), and the plain shape inference it would
    add is what quantize_dynamic runs anyway.
    """
    root = logging.getLogger()
    handlers = root.handlers[:]
    if not handlers:
        root.addHandler(logging.NullHandler())
    try:
        yield
    finally:
        root.handlers[:] = handlers


def quantize(fp32_path: Path, out_path: Path, nodes: Sequence[str]) -> None:
    """onnxruntime dynamic quantization of the MatMul nodes `nodes`: int8 weights per channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _root_logger_kept():
        quantize_dynamic(fp32_path, out_path, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                         reduce_range=REDUCE_RANGE, weight_type=QuantType.QInt8,
                         nodes_to_quantize=list(nodes))


def quantize_int8(fp32_path: Path, out_path: Path, model: torch.nn.Module, selection: Batches,
                  described: str, stage: Callable[[str], None]) -> Int8Search:
    """Quantize every linear layer; if labels then agree with fp32 on less than AGREEMENT_BAR of the
    selection texts (`described`), keep in fp32 the fewest of the most harmful layers that reach it
    (layer_search.keep_fewest). A layer's harm is the mean |logit diff| from fp32 on the N_RANKING
    selection texts nearest the decision boundary with that layer alone quantized (onnxruntime).
    """
    layers, unquantizable = linear_layers(fp32_path)
    if not layers:
        raise ModelError("int8: the exported graph has no linear layer that onnxruntime can quantize")
    agreement, error = _scorers(model, selection)

    def score(kept: Sequence[str], path: Path) -> float:
        nodes = [node for name, node in layers.items() if name not in kept]
        if nodes:
            quantize(fp32_path, path, nodes)
        else:  # an empty node list would quantize every node: every layer fp32 is the fp32 graph
            shutil.copyfile(fp32_path, path)
        return agreement(path)

    def harm(name: str, path: Path) -> float:
        quantize(fp32_path, path, [layers[name]])
        return error(path)

    stage(f"quantizing {len(layers)} linear layers to int8")
    found = keep_fewest(list(layers), score, harm, out_path, AGREEMENT_BAR, stage, described)
    return Int8Search(int8_layers=tuple(n for n in layers if n not in found.kept), fp32_layers=found.kept,
                      unquantized_layers=tuple(unquantizable), selection_agreement=found.agreement,
                      all_int8_agreement=found.all_int8_agreement, chosen_on=described,
                      layer_errors=found.errors, tried=found.tried)


def _quantize_static(fp32_path: Path, out_path: Path, model: torch.nn.Module, selection: Batches,
                     described: str, calibration: Batches, stage: Callable[[str], None]) -> StaticInt8:
    """int8-static (static_int8.py): calibrated on `calibration` (training texts), its fp32 layers
    chosen on the selection texts (`described`)."""
    layers, unquantizable = linear_layers(fp32_path)
    agreement, error = _scorers(model, selection)
    stage(f"calibrating int8 on {sum(len(index) for index, _ in calibration)} training texts")
    return quantize_static(fp32_path, out_path, [inputs for _, inputs in calibration], layers, unquantizable,
                           agreement, error, described, AGREEMENT_BAR, stage)


def _scorers(model: torch.nn.Module, selection: Batches) -> tuple[Callable[[Path], float],
                                                                  Callable[[Path], float]]:
    """(agreement, error) of an ONNX graph against PyTorch: the share of selection texts whose label
    agrees, and the mean |logit diff| on the N_RANKING of them nearest PyTorch's decision boundary
    (the smallest gap between the two highest logits), the texts whose labels int8 can flip."""
    reference = torch_logits(model, selection)
    nearest = nearest_boundary(reference, N_RANKING)
    ranking = _ranking_batches(selection, nearest)
    ranking_reference = reference[nearest]  # _ranking_batches numbers the texts in this order
    labels = reference.argmax(-1)

    def agreement(path: Path) -> float:
        return float((onnx_logits(path, selection).argmax(-1) == labels).mean())

    def error(path: Path) -> float:
        return float(np.abs(onnx_logits(path, ranking) - ranking_reference).mean())

    return agreement, error


def nearest_boundary(logits: np.ndarray, n: int) -> np.ndarray:
    """Positions of the `n` rows of `logits` with the smallest gap between their two highest logits."""
    top = np.sort(logits, axis=-1)
    return np.argsort(top[:, -1] - top[:, -2], kind="stable")[:n]


def _ranking_batches(selection: Batches, rows: np.ndarray) -> Batches:
    """The selection texts at positions `rows`, in their length-sorted batches, numbered 0.. in the
    order of `rows`."""
    number = {int(row): i for i, row in enumerate(rows)}
    picked = []
    for index, inputs in selection:
        keep = np.flatnonzero(np.isin(index, rows))
        if len(keep):
            picked.append((np.array([number[int(row)] for row in index[keep]]),
                           {k: v[keep] for k, v in inputs.items()}))
    return picked
