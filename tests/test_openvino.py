"""predict --backend openvino: the ONNX export run by OpenVINO gives the onnxruntime backend's answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, invoke

from peft_sentiment.errors import ConfigError
from peft_sentiment.synthetic import make_reviews

pytest.importorskip("onnxruntime")
TEXTS = [str(r["text"]) for r in make_reviews(40, 7)] + ["short", "the film " * 80]  # one past 64 tokens


@pytest.fixture(scope="module")
def export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft_sentiment.export import export_run

    return export_run(lora_run, tmp_path_factory.mktemp("ov-export") / "onnx").output


def test_fp32_matches_onnxruntime(export: Path) -> None:
    pytest.importorskip("openvino")
    from peft_sentiment.predict import load_pipeline, predict

    ort = load_pipeline(export, backend="onnx")
    ov = load_pipeline(export, backend="openvino", precision="fp32")
    assert ov.backend == "openvino" and ov.precision == "fp32"
    np.testing.assert_allclose(ov.logits(TEXTS), ort.logits(TEXTS), atol=1e-4)
    expected, found = predict(ort, TEXTS), predict(ov, TEXTS, batch_size=5)  # 5: requests of 8 split it
    assert [(p.label, p.truncated) for p in found] == [(p.label, p.truncated) for p in expected]
    assert [p.score for p in found] == pytest.approx([p.score for p in expected], abs=1e-4)


def test_bf16_stays_close(export: Path) -> None:
    pytest.importorskip("openvino")
    from peft_sentiment.predict import load_pipeline

    ort = load_pipeline(export, backend="onnx").logits(TEXTS)
    bf16 = load_pipeline(export, backend="openvino", precision="bf16").logits(TEXTS)
    assert bf16.shape == ort.shape and np.abs(bf16 - ort).max() < 0.1  # bf16 keeps 8 bits of mantissa


def test_cli_predict_and_serve_info(export: Path) -> None:
    pytest.importorskip("openvino")
    from peft_sentiment.predict import load_pipeline
    from peft_sentiment.serve import describe_source

    result = invoke(["predict", export, "--backend", "openvino", "--precision", "fp32", "--json", *TEXTS[:3]])
    assert result.exit_code == 0, result.output + result.stderr
    expected = invoke(["predict", export, "--backend", "onnx", "--json", *TEXTS[:3]])
    assert [json.loads(line)["label"] for line in result.stdout.splitlines()] == \
        [json.loads(line)["label"] for line in expected.stdout.splitlines()]
    assert describe_source(export, load_pipeline(export, backend="openvino"))["backend"] == "openvino"


def test_a_run_folder_is_refused(lora_run: Path) -> None:
    result = invoke(["predict", lora_run, "--backend", "openvino", "fine"])
    assert_one_line_error(result, 1, "backend openvino runs an ONNX export", "peft-sentiment export")


def test_fp16_is_refused(export: Path) -> None:
    from peft_sentiment.openvino_backend import OpenVinoClassifier

    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU|not one the openvino backend runs"):
        OpenVinoClassifier(export, precision="fp16")


def test_without_openvino_one_line_says_what_to_install(export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    result = invoke(["predict", export, "--backend", "openvino", "fine"])
    assert_one_line_error(result, 1, "pip install 'peft-sentiment[openvino]'")


def test_a_micro_batch_is_shared_out_among_the_requests(export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve's micro-batches are often fewer texts than fill every infer request: they are split so
    that each request gets some, never more than BATCH; long lists go in requests of BATCH."""
    from peft_sentiment.openvino_backend import BATCH, request_size

    assert BATCH == 8
    assert [request_size(n, 2) for n in (1, 2, 7, 8, 15, 16, 17, 2000)] == [1, 1, 4, 4, 8, 8, 8, 8]
    assert request_size(8, 4) == 2 and request_size(8, 1) == 8 and request_size(3, 0) == 3
    openvino = pytest.importorskip("openvino")
    from peft_sentiment.predict import load_pipeline

    sizes: list[int] = []

    class Counting:  # the infer requests logits() starts its batches on
        def __init__(self, request: object) -> None:
            self.request = request

        def start_async(self, inputs: dict[str, np.ndarray]) -> None:
            sizes.append(len(inputs["input_ids"]))
            self.request.start_async(inputs)

        def __getattr__(self, name: str) -> object:
            return getattr(self.request, name)

    class Compiled:
        def __init__(self, compiled: object) -> None:
            self.compiled = compiled

        def create_infer_request(self) -> Counting:
            return Counting(self.compiled.create_infer_request())

    def no_queue(*args: object, **kwargs: object) -> None:
        raise AssertionError("an AsyncInferQueue's Python callback can hang the process at teardown")

    ov = load_pipeline(export, backend="openvino", precision="fp32")
    ov.requests, ov.compiled = 2, Compiled(ov.compiled)
    monkeypatch.setattr(openvino, "AsyncInferQueue", no_queue)
    assert ov.logits(TEXTS[:8]).shape == (8, 2) and sizes == [4, 4]
    sizes.clear()
    assert ov.logits(TEXTS[:20]).shape == (20, 2) and sizes == [8, 8, 4]
