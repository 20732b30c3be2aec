"""ONNX export: logits of the export against PyTorch over batch sizes and lengths (dynamic axes), the
self-describing folder, int8 with its layer search, refusal below the agreement bar, predict and
evaluate on an export, and the one-line hint when the onnx extra is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import (
    CliRun,
    assert_one_line_error,
    copy_run,
    dot_entries,
    invoke,
    make_rows,
    write_data_folder,
)

from peft_sentiment import export as export_module
from peft_sentiment.errors import ConfigError, DataError, ModelError
from peft_sentiment.export import (
    AGREEMENT_BAR,
    ExportResult,
    export_onnx,
    export_run,
    input_names,
    length_batches,
    linear_layers,
    onnx_logits,
    quantize,
    torch_logits,
)
from peft_sentiment.first_token import DESCRIPTION, first_token_only
from peft_sentiment.layer_search import fewest
from peft_sentiment.loading import load_model
from peft_sentiment.onnx_backend import (
    CHECK_FILE,
    METADATA_FILE,
    MODEL_FILE,
    OnnxClassifier,
    encode,
    inference_session,
)
from peft_sentiment.predict import load_pipeline, max_length, predict

SMOKE_MAX_LENGTH = 64
LONG_TEXT = " ".join(["the movie was great and the acting brilliant"] * 12)  # past 64 tokens
# Lengths from one word to past max_length, so batches pad differently.
TEXTS = ["bad", "The movie was wonderful.", "great great great", LONG_TEXT,
         "The plot was a waste of time. The acting was boring. I hated every minute of it.",
         "It runs a little over two hours.", "awful"]


def run_path(run: CliRun | Path) -> Path:
    return Path(getattr(run, "path", run))


@pytest.fixture(scope="module")
def exports(smoke_full: CliRun, lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fp32 exports of the full and the LoRA smoke run, made once through the library."""
    folder = tmp_path_factory.mktemp("exports")
    return {kind: (run, export_run(run, folder / kind))
            for kind, run in (("full", run_path(smoke_full)), ("lora", lora_run))}


@pytest.fixture(scope="module")
def int8_export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return export_run(lora_run, tmp_path_factory.mktemp("int8") / "out", quantize="int8")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@torch.no_grad()
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_fp32_logits_match_pytorch(kind: str, exports: dict[str, Any]) -> None:
    """Any batch size and length (dynamic axes): logits within 1e-4 of the run's model as it loads
    for predict (a LoRA run: base + adapter, unmerged), the same labels."""
    run, result = exports[kind]
    model = load_model(run)
    session = inference_session(result.output / MODEL_FILE)
    names = [i.name for i in session.get_inputs()]
    assert [i.shape for i in session.get_inputs()] == [["batch", "sequence"]] * len(names)
    seen = set()
    for size in (1, 2, 3, len(TEXTS)):
        for start in range(0, len(TEXTS), size):
            batch = model.tokenizer(TEXTS[start:start + size], truncation=True, max_length=SMOKE_MAX_LENGTH,
                                    padding=True, return_tensors="pt")
            seen.add(tuple(batch["input_ids"].shape))
            expected = model.model.float()(**{n: batch[n] for n in names}).logits.numpy()
            got = session.run(None, {n: batch[n].numpy() for n in names})[0]
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
            assert (got.argmax(-1) == expected.argmax(-1)).all()
    assert len({s[0] for s in seen}) >= 4 and len({s[1] for s in seen}) >= 4
    assert max(s[1] for s in seen) == SMOKE_MAX_LENGTH


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_export_folder_describes_itself(kind: str, exports: dict[str, Any]) -> None:
    run, result = exports[kind]
    out = result.output
    assert {p.name for p in out.iterdir()} >= {MODEL_FILE, "config.json", "tokenizer.json",
                                               "tokenizer_config.json", METADATA_FILE, CHECK_FILE}
    assert not (out / "model.safetensors").exists() and not (out / ".work").exists()
    assert read_json(out / "config.json")["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}
    assert read_json(out / "tokenizer_config.json")["model_max_length"] == SMOKE_MAX_LENGTH
    meta = read_json(out / METADATA_FILE)
    metrics = read_json(run / "metrics.json")
    assert meta["format"] == "onnx" and meta["quantization"] == "none"
    assert meta["source_run"] == str(run.resolve()) and meta["method"] == kind
    assert meta["max_length"] == SMOKE_MAX_LENGTH and meta["data"]["source"] == "builtin:smoke"
    assert meta["test_metrics"]["accuracy"] == metrics["accuracy"] and meta["test_metrics"]["n_test"] == 100
    assert meta["merged"] == (kind == "lora") and "tiny-distilbert" in meta["base_model"]
    assert meta["last_layer"] == DESCRIPTION  # DistilBERT: the last layer for the first token only
    check = read_json(out / CHECK_FILE)
    assert check["passed"] is True and check["forced"] is False
    assert check["agreement"] == 1.0 and check["agreement_bar"] == AGREEMENT_BAR
    assert 0 <= check["max_abs_logit_diff"] < 1e-4 and check["logit_tolerance"] == 1e-3
    assert check["n_texts"] == 100 and check["texts"] == "the test subset of builtin:smoke"
    assert check["max_length"] == SMOKE_MAX_LENGTH and "int8" not in check
    assert ("merge" in check) == (kind == "lora")
    assert (result.agreement, result.n_texts, result.passed) == (1.0, 100, True)


def test_int8_records_agreement_and_layers(int8_export: ExportResult) -> None:
    import onnx

    check = read_json(int8_export.output / CHECK_FILE)
    assert read_json(int8_export.output / METADATA_FILE)["quantization"] == "int8"
    assert check["passed"] is True and check["agreement"] >= AGREEMENT_BAR
    assert check["logit_tolerance"] is None  # int8 is held to the agreement bar only
    int8 = check["int8"]
    assert int8["per_channel"] is True and int8["reduce_range"] is True
    assert int8["chosen_on"].startswith("100 reviews of ") and "validation" in int8["chosen_on"]
    layers = int8["int8_layers"] + int8["fp32_layers"]
    assert len(layers) == 12 and len(set(layers)) == 12  # 2 blocks x (q, k, v, out, lin1, lin2)
    assert all(name.startswith("distilbert.transformer.layer.") for name in layers)
    assert set(int8["unquantized_layers"]) == {"pre_classifier", "classifier"}  # Gemm: no integer kernel
    graph = onnx.load(str(int8_export.output / MODEL_FILE))
    assert sum(n.op_type == "MatMulInteger" for n in graph.graph.node) == len(int8["int8_layers"]) > 0
    assert int8_export.int8_layers == tuple(int8["int8_layers"])


def test_int8_chooses_on_reviews_the_run_never_trained_on(tmp_path: Path) -> None:
    """The selection texts: the reviews after the training subset in the same shuffled order (up to
    N_SELECTION, fewer when the split has fewer), none of them a training or test text; the
    calibration texts: the first training texts. A split with nothing left is an error."""
    from datasets import Dataset

    from peft_sentiment.config import DataConfig, RunConfig

    train, test = make_rows(90, seed=1), make_rows(30, seed=2)
    folder = write_data_folder(tmp_path / "d", train, test)
    cfg = RunConfig(data=DataConfig(source=str(folder), train_size=40, test_size=20, validation_size=10))
    found = export_module._selection_texts(cfg, tmp_path / "run")
    shuffled = Dataset.from_list(train).shuffle(seed=42)["text"]
    assert found.texts == shuffled[40:90]  # the run's 10 validation reviews, then the 40 after them
    assert found.calibration == shuffled[:40] and found.origin.startswith("50 reviews of ")
    assert not set(found.texts) & {r["text"] for r in test}
    with pytest.raises(DataError, match="none beyond its training subset: give the data a validation split"):
        export_module._selection_texts(RunConfig(data=DataConfig(source=str(folder), train_size=90,
                                                                 test_size=20)), tmp_path / "run")


def test_ranking_texts_keep_their_inputs_and_are_numbered_in_order() -> None:
    """The texts a layer's harm is measured on are cut out of the length-sorted batches whole, and
    numbered in the order asked for (so that logits computed on them line up)."""
    ids = np.arange(12).reshape(6, 2)
    selection = [(np.array([4, 0, 2]), {"input_ids": ids[:3]}), (np.array([1, 5, 3]), {"input_ids": ids[3:]})]
    picked = export_module._ranking_batches(selection, np.array([3, 0, 5]))
    assert [index.tolist() for index, _ in picked] == [[1], [2, 0]]
    assert [inputs["input_ids"].tolist() for _, inputs in picked] == [[[2, 3]], [[8, 9], [10, 11]]]


def test_layers_are_ranked_on_the_texts_nearest_the_boundary() -> None:
    logits = np.array([[0.0, 3.0, 0.5], [1.0, 1.2, -4.0], [2.0, -2.0, 1.9], [5.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    assert export_module.nearest_boundary(logits, 3).tolist() == [2, 1, 4]  # gaps 0.1, 0.2, 0.3


def test_fewest_doubles_then_bisects() -> None:
    for needed in range(1, 40):
        calls: list[int] = []

        def reaches(count: int, needed: int = needed, calls: list[int] = calls) -> bool:
            calls.append(count)
            return count >= needed

        assert fewest(39, reaches) == needed
        assert len(calls) <= 2 * needed.bit_length() + 1
    assert fewest(5, lambda count: False) == 5  # none below n: all of them, n itself untried


def fragile_run(smoke_full: CliRun, dest: Path) -> Path:
    """A copy of the full smoke run whose decision boundary is moved to where int8 flips most labels
    of the texts the export chooses its layers on (the run's validation reviews)

    The smoke model's logit margins sit in two tight clusters near -6 and +6, far out of reach of
    int8's errors (a few thousandths). Shifting the classifier's bias shifts the fp32 and the int8
    margins alike (the head stays fp32), so the test computes both margins as the export will (same
    texts, batches, graph and quantization) and puts the boundary where most of them straddle it.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from peft_sentiment.rundir import load_run_config

    run = copy_run(smoke_full.path, dest)
    cfg = load_run_config(run)
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    names = input_names(model, tokenizer)
    texts = export_module._selection_texts(cfg, run).texts
    batches = length_batches(tokenizer, texts, SMOKE_MAX_LENGTH, names)
    with first_token_only(model):  # as the export does
        export_onnx(model, encode(tokenizer, texts[:2], SMOKE_MAX_LENGTH, names), dest.parent / "fp32.onnx")
    layers, _ = linear_layers(dest.parent / "fp32.onnx")
    quantize(dest.parent / "fp32.onnx", dest.parent / "int8.onnx", list(layers.values()))
    fp32, int8 = (np.diff(logits, axis=-1)[:, 0] for logits in (
        torch_logits(model, batches), onnx_logits(dest.parent / "int8.onnx", batches)))
    # Margins (fp32, int8) straddling a boundary at least 1e-5 inside (fp32 rounding of the saved
    # bias is ~5e-7), at midpoints between the margins.
    low, high = np.minimum(fp32, int8) + 1e-5, np.maximum(fp32, int8) - 1e-5
    ends = np.sort(np.concatenate([fp32, int8]))
    boundary = max((ends[1:] + ends[:-1]) / 2, key=lambda b: int(((low < b) & (b < high)).sum()))
    flipped = int(((low < boundary) & (boundary < high)).sum())
    assert flipped / len(texts) > 1 - AGREEMENT_BAR, f"int8 flips only {flipped} of {len(texts)}"
    with torch.no_grad():
        model.classifier.bias[1] -= float(boundary)
    model.save_pretrained(run / "model")
    return run


def test_int8_keeps_the_most_harmful_layers_fp32(smoke_full: CliRun, tmp_path: Path) -> None:
    """When int8 everywhere flips labels on the selection texts, the layers that move the logits most
    stay fp32, just enough of them to reach the bar there; the test texts then verify."""
    run = fragile_run(smoke_full, tmp_path / "run")
    result = export_run(run, tmp_path / "out", quantize="int8", force=True)
    check = read_json(tmp_path / "out" / CHECK_FILE)
    int8 = check["int8"]
    assert int8["all_int8_selection_agreement"] < AGREEMENT_BAR
    assert int8["selection_agreement"] >= AGREEMENT_BAR
    kept, errors = int8["fp32_layers"], int8["layer_errors"]
    assert set(errors) == set(kept) | set(int8["int8_layers"]) and len(errors) == 12
    assert len(kept) > 0 and kept == sorted(errors, key=lambda name: -errors[name])[:len(kept)]
    assert result.fp32_layers == tuple(kept) and result.selection_agreement == int8["selection_agreement"]
    tried = int8["agreement_by_layers_kept"]  # every count the search tried, with its agreement
    assert tried["0"] == int8["all_int8_selection_agreement"] and tried[str(len(kept))] == int8["selection_agreement"]
    assert all(value < AGREEMENT_BAR for count, value in tried.items() if int(count) < len(kept))
    assert check["agreement"] == result.agreement  # verified on the test texts, whatever it found


# ---------------------------------------------------------------- refusal


def test_refused_below_the_bar_leaves_nothing(smoke_full: CliRun, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "AGREEMENT_BAR", 1.01)  # no export can agree on 101%
    out = tmp_path / "out"
    line = assert_one_line_error(invoke(["export", smoke_full.path, "-o", out]), 1,
                                 str(smoke_full.path), "100.0% of 100 texts", "bar 101.0%", "--force")
    assert "nothing was saved" in line
    assert list(tmp_path.iterdir()) == [] and dot_entries(smoke_full.path.parent) == []
    with pytest.raises(ModelError, match="nothing was saved"):
        export_run(smoke_full.path, out)
    assert not out.exists()

    result = invoke(["export", smoke_full.path, "-o", out, "--force"])
    assert result.exit_code == 0, result.output
    assert "kept with --force" in result.stderr
    check = read_json(out / CHECK_FILE)
    assert check["passed"] is False and check["forced"] is True and check["agreement_bar"] == 1.01


def test_existing_output_needs_overwrite(exports: dict[str, Any]) -> None:
    run, result = exports["full"]
    before = (result.output / CHECK_FILE).read_text()
    assert_one_line_error(invoke(["export", run, "-o", result.output]), 1, str(result.output), "--overwrite")
    assert (result.output / CHECK_FILE).read_text() == before


def test_cli_export_with_check_data(lora_run: Path, tmp_path: Path) -> None:
    result = invoke(["export", lora_run, "-o", tmp_path / "out", "--check-data", tmp_path / "nowhere"])
    assert_one_line_error(result, 1, "--check-data", str(tmp_path / "nowhere"))
    data = write_data_folder(tmp_path / "data", make_rows(40, seed=1), make_rows(120, seed=2))
    result = invoke(["export", lora_run, "-o", tmp_path / "out", "--check-data", data])
    assert result.exit_code == 0, result.output
    assert "label agreement" in result.stdout and "merge check" in result.stdout
    check = read_json(tmp_path / "out" / CHECK_FILE)
    assert check["texts"] == f"the test subset of {data}" and check["n_texts"] == 100
    assert read_json(tmp_path / "out" / METADATA_FILE)["data"]["source"] == "builtin:smoke"  # the run's own


# ---------------------------------------------------------------- predict and evaluate on an export


def json_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_same_predictions(onnx_out: str, torch_out: str) -> None:
    got, expected = json_rows(onnx_out), json_rows(torch_out)
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected):
        assert {k: v for k, v in g.items() if k != "score"} == {k: v for k, v in e.items() if k != "score"}
        assert g["score"] == pytest.approx(e["score"], abs=1e-4)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_predict_onnx_equals_torch(kind: str, exports: dict[str, Any], tmp_path: Path) -> None:
    """--json with TEXT arguments, --file (blank lines, chunks) and standard input: the same rows,
    scores within 1e-4 of the fp32 torch pipeline; the export implies --backend onnx."""
    run, result = exports[kind]
    file = tmp_path / "in.txt"
    file.write_text("\n".join([*TEXTS[:3], "", *TEXTS[3:], "   "]) + "\n")
    for inputs in ([*TEXTS], ["--file", file, "--chunk-size", "3", "--batch-size", "2"]):
        expected = invoke(["predict", run, "--backend", "torch", "--precision", "fp32", "--json", *inputs])
        for backend in (["--backend", "onnx"], []):
            got = invoke(["predict", result.output, *backend, "--json", *inputs])
            assert got.exit_code == 0 and expected.exit_code == 0, got.output + expected.output
            assert_same_predictions(got.stdout, expected.stdout)
            assert got.stderr == expected.stderr  # the same truncation note
    stdin = file.read_text()
    got = invoke(["predict", result.output, "--backend", "onnx", "--json"], input=stdin)
    expected = invoke(["predict", run, "--backend", "torch", "--precision", "fp32", "--json"], input=stdin)
    assert_same_predictions(got.stdout, expected.stdout)
    assert [r["line"] for r in json_rows(got.stdout)] == [1, 2, 3, 5, 6, 7, 8]
    assert "note: texts longer than 64 tokens are truncated to their start (first at line 5)" in got.stderr
    plain = invoke(["predict", result.output, "--file", file]).stdout.splitlines()
    assert [line.split("\t")[2] for line in plain] == [r["text"] for r in json_rows(got.stdout)]


def test_load_pipeline_onnx(exports: dict[str, Any]) -> None:
    run, result = exports["full"]
    pipe = load_pipeline(result.output)
    assert isinstance(pipe, OnnxClassifier) and max_length(pipe) == SMOKE_MAX_LENGTH
    assert isinstance(load_pipeline(result.output, backend="onnx"), OnnxClassifier)
    reference = load_pipeline(run, precision="fp32")
    got, expected = predict(pipe, TEXTS, batch_size=3), predict(reference, TEXTS)
    assert [(p.label, p.truncated) for p in got] == [(p.label, p.truncated) for p in expected]
    assert [p.score for p in got] == pytest.approx([p.score for p in expected], abs=1e-4)
    with pytest.raises(ConfigError, match="runs with backend onnx"):
        load_pipeline(result.output, backend="torch")
    with pytest.raises(ConfigError, match="peft-sentiment export"):
        load_pipeline(run, backend="onnx")
    with pytest.raises(ConfigError, match="precision bf16 applies to the torch backend"):
        load_pipeline(result.output, precision="bf16")


def test_evaluate_an_export(exports: dict[str, Any]) -> None:
    run, result = exports["full"]
    got = invoke(["evaluate", result.output, "--json"])
    expected = invoke(["evaluate", run, "--json"])
    assert got.exit_code == 0, got.output
    g, e = json.loads(got.stdout), json.loads(expected.stdout)
    assert (g["accuracy"], g["f1"], g["n"], g["data"]) == (e["accuracy"], e["f1"], e["n"], e["data"])
    smaller = json.loads(invoke(["evaluate", result.output, "--test-size", "20", "--json"]).stdout)
    assert smaller["n"] == 20 and smaller["data"]["max_length"] == SMOKE_MAX_LENGTH


# ---------------------------------------------------------------- without the onnx extra


@pytest.mark.parametrize("module", ["onnx", "onnxscript", "onnxruntime"])
def test_missing_extra_is_one_line(module: str, exports: dict[str, Any], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run, result = exports["full"]
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    assert_one_line_error(invoke(["export", run, "-o", tmp_path / "out"]), 1,
                          f"export needs {module}: pip install 'peft-sentiment[onnx]'")
    assert list(tmp_path.iterdir()) == []
    if module == "onnxruntime":
        assert_one_line_error(invoke(["predict", result.output, "good"]), 1,
                              "the onnx backend needs onnxruntime: pip install 'peft-sentiment[onnx]'")


def test_int8_static_quantizes_the_feed_forward_layers(lora_run: Path, tmp_path: Path) -> None:
    """int8-static: NNCF's static int8 in the feed-forward layers only, recorded, runnable by
    onnxruntime (predict, evaluate) and OpenVINO, with a card that names the scheme."""
    pytest.importorskip("nncf")
    import onnx

    from peft_sentiment.card import build_export_card

    # The tiny random smoke model's margins are thin: int8 flips about one of its 100 test texts, under
    # the bar, so the export is forced and the check must say so.
    result = export_run(lora_run, tmp_path / "out", quantize="int8-static", force=True)
    out = result.output
    assert read_json(out / METADATA_FILE)["quantization"] == "int8-static"
    check = read_json(out / CHECK_FILE)
    assert check["passed"] == (check["agreement"] >= AGREEMENT_BAR)
    assert check["forced"] == (not check["passed"])
    assert check["agreement"] >= 0.9 and check["logit_tolerance"] is None
    int8 = check["int8"]
    assert "NNCF" in int8["scheme"] and "training subset" in int8["calibrated_on"]
    assert int8["chosen_on"].startswith("100 reviews of ") and "validation" in int8["chosen_on"]
    # DistilBERT's feed-forward layers are ffn.lin1 and ffn.lin2 of each block; q, k, v, out stay fp32.
    assert sorted(int8["int8_layers"]) == [f"distilbert.transformer.layer.{i}.ffn.lin{j}"
                                           for i in (0, 1) for j in (1, 2)]
    assert len(int8["fp32_layers"]) == 8 and all(".attention." in name for name in int8["fp32_layers"])
    assert 0 < int8["selection_agreement"] <= 1 and result.selection_agreement == int8["selection_agreement"]
    graph = onnx.load(str(out / MODEL_FILE))
    assert sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) >= 4  # activations and weights
    assert not (out / ".work").exists()
    found = load_pipeline(out).logits(TEXTS)  # onnxruntime
    assert found.shape == (len(TEXTS), 2)
    pytest.importorskip("openvino")
    ov = load_pipeline(out, backend="openvino", precision="fp32").logits(TEXTS)
    np.testing.assert_allclose(ov, found, atol=0.05)  # one int8 graph, two runtimes
    card = build_export_card(out, "user/model", None)
    assert "NNCF post-training static quantization" in card and "the scheme keeps the attention" in card


def test_int8_static_without_nncf_says_what_to_install(lora_run: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    hint = r"int8-static needs nncf: pip install 'peft-sentiment\[openvino\]'"
    with pytest.raises(ConfigError, match=hint):
        export_run(lora_run, tmp_path / "out", quantize="int8-static")
    assert not (tmp_path / "out").exists()


def _ffn_kept(path: Path) -> int:
    import onnx

    return sum(n.op_type == "MatMul" and n.input[1].endswith(".fp32_weight")
               for n in onnx.load(str(path)).graph.node)


def test_int8_static_search_keeps_the_fewest_feed_forward_layers_fp32(exports: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    """Below the bar, feed-forward layers go back to fp32, most harmful first, as few as reach it;
    with every one kept the graph computes the fp32 graph's logits again."""
    pytest.importorskip("nncf")
    import onnx
    from transformers import AutoTokenizer

    from peft_sentiment.static_int8 import keep_fp32, quantize_static

    folder = exports["full"][1].output
    fp32_path = folder / MODEL_FILE
    tokenizer = AutoTokenizer.from_pretrained(folder)
    names = [i.name for i in inference_session(fp32_path).get_inputs()]
    batches = [encode(tokenizer, TEXTS[i:i + 3], SMOKE_MAX_LENGTH, names) for i in range(0, len(TEXTS), 3)]
    layers, unquantized = linear_layers(fp32_path)
    reference = np.concatenate([inference_session(fp32_path).run(None, b)[0] for b in batches])

    def logits(path: Path) -> np.ndarray:
        session = inference_session(path)
        return np.concatenate([session.run(None, b)[0] for b in batches])

    stages: list[str] = []
    found = quantize_static(fp32_path, tmp_path / "int8.onnx", batches, layers, unquantized,
                            agreement=lambda path: 1.0 if _ffn_kept(path) >= 3 else 0.5,
                            error=lambda path: float(np.abs(logits(path) - reference).mean()),
                            chosen_on="the test texts", bar=AGREEMENT_BAR, stage=stages.append)
    assert len(found.kept_layers) == 3 and _ffn_kept(tmp_path / "int8.onnx") == 3
    assert found.all_int8_agreement == 0.5 and found.selection_agreement == 1.0
    assert found.tried == {0: 0.5, 1: 0.5, 2: 0.5, 3: 1.0}  # 1, 2 fail; 4 (every one) untried; then 3
    assert set(found.layer_errors) == set(found.int8_layers) | set(found.kept_layers)  # the 4 ffn layers
    assert list(found.kept_layers) == sorted(found.layer_errors, key=lambda n: -found.layer_errors[n])[:3]
    assert set(found.kept_layers) <= set(found.fp32_layers) and not (tmp_path / "int8.trial.onnx").exists()
    assert any("measuring layer 4/4" in s for s in stages)

    quantized = onnx.load(str(tmp_path / "int8.onnx"))
    everything = keep_fp32(quantized, onnx.load(str(fp32_path)), set(layers.values()))
    onnx.save(everything, str(tmp_path / "all-fp32.onnx"))
    assert not any(n.op_type == "QuantizeLinear" for n in everything.graph.node)
    np.testing.assert_allclose(logits(tmp_path / "all-fp32.onnx"), reference, atol=1e-5)
