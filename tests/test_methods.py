"""The methods beyond full and LoRA: DoRA, (IA)3, head-only and QLoRA.

Exact trainable parameters per method and architecture, and for each method on the smoke setup:
train, save, reload with the same predictions, and merge equivalence where the method merges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_one_line_error, invoke
from test_train_end_to_end import PROBE_TEXTS, CaptureAtTrainEnd, reloaded_logits

from peft_sentiment.config import Ia3Config, LoraConfig, ModelConfig, RunConfig, TrainConfig, load_config
from peft_sentiment.errors import ConfigError
from peft_sentiment.loading import load_model
from peft_sentiment.modeling import build_model, count_parameters
from peft_sentiment.predict import load_pipeline, predict

H, FF, LAYERS, LABELS = 32, 64, 2, 2  # the tiny models of conftest


def linear_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def cfg_for(method: str, folder: Path, **extra: Any) -> RunConfig:
    return RunConfig(method=method, model=ModelConfig(name=str(folder)),
                     lora=LoraConfig(r=8, alpha=16, dropout=0.0), train=TrainConfig(seed=1), **extra)


def four_bit_problem() -> str | None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "bitsandbytes is not installed (pip install 'peft-sentiment[qlora]')"
    from peft_sentiment.modeling import _four_bit_problem

    return _four_bit_problem()


needs_4bit = pytest.mark.skipif(four_bit_problem() is not None, reason=str(four_bit_problem()))

DISTIL_HEAD = linear_params(H, H) + linear_params(H, LABELS)  # pre_classifier, classifier


# ---------------------------------------------------------------- trainable parameters, by hand


def test_head_only_distilbert(tiny_distilbert_dir: Path) -> None:
    built = build_model(cfg_for("head", tiny_distilbert_dir))
    assert built.model is built.base  # a plain transformers model, saved whole
    assert trainable_names(built.model) == {f"{m}.{w}" for m in ("pre_classifier", "classifier")
                                            for w in ("weight", "bias")}
    trainable, total = count_parameters(built.model)
    assert trainable == DISTIL_HEAD == 1122
    assert total == sum(p.numel() for p in built.base.parameters())


@pytest.mark.parametrize("with_pooler", [True, False], ids=["pooler-saved", "pooler-new"])
def test_head_only_bert(tiny_bert_dirs: dict[bool, Path], with_pooler: bool) -> None:
    built = build_model(cfg_for("head", tiny_bert_dirs[with_pooler]))
    expected = {"classifier.weight", "classifier.bias"}
    if not with_pooler:  # a pooler that starts untrained is part of the head
        expected |= {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    assert trainable_names(built.model) == expected
    trainable, _ = count_parameters(built.model)
    assert trainable == linear_params(H, LABELS) + (0 if with_pooler else linear_params(H, H))


def test_dora_distilbert(tiny_distilbert_dir: Path) -> None:
    built = build_model(cfg_for("dora", tiny_distilbert_dir))
    names = trainable_names(built.model)
    magnitudes = {n for n in names if "lora_magnitude_vector" in n}
    assert len(magnitudes) == LAYERS * 6  # one per adapted layer
    shapes = {"q_lin": (H, H), "k_lin": (H, H), "v_lin": (H, H), "out_lin": (H, H),
              "lin1": (H, FF), "lin2": (FF, H)}
    lora = LAYERS * sum(8 * (n_in + n_out) for n_in, n_out in shapes.values())
    magnitude = LAYERS * sum(n_out for _, n_out in shapes.values())  # one scale per output row
    trainable, _ = count_parameters(built.model)
    assert trainable == lora + magnitude + DISTIL_HEAD == 8738


def test_dora_bert_keeps_the_head_out(tiny_bert_dirs: dict[bool, Path]) -> None:
    built = build_model(cfg_for("dora", tiny_bert_dirs[False]))
    names = trainable_names(built.model)
    assert not any(("classifier" in n or "pooler" in n) and "lora_" in n for n in names)
    per_layer_lora = 8 * (H + H) * 4 + 8 * (H + FF) + 8 * (FF + H)
    per_layer_magnitude = H * 4 + FF + H
    trainable, _ = count_parameters(built.model)
    assert trainable == LAYERS * (per_layer_lora + per_layer_magnitude) + linear_params(H, LABELS) \
        + linear_params(H, H)  # the new pooler, trained in full


def test_ia3_distilbert(tiny_distilbert_dir: Path) -> None:
    built = build_model(cfg_for("ia3", tiny_distilbert_dir))
    vectors = {n: p for n, p in built.model.named_parameters() if p.requires_grad and "ia3_l" in n}
    adapted = sorted({n.split(".ia3_l")[0].rsplit(".", 1)[-1] for n in vectors})
    assert adapted == ["k_lin", "lin2", "v_lin"]
    for name, p in vectors.items():
        if ".lin2." in name:  # feed-forward: scales the layer's input
            assert tuple(p.shape) == (1, FF)
        else:  # keys and values: scale the output
            assert tuple(p.shape) == (H, 1)
        assert torch.all(p == 1.0)  # starts as the identity
    trainable, _ = count_parameters(built.model)
    assert trainable == LAYERS * (H + H + FF) + DISTIL_HEAD == 1378


@pytest.mark.parametrize("with_pooler", [True, False], ids=["pooler-saved", "pooler-new"])
def test_ia3_bert_adapts_the_feed_forward_output_not_the_attention_output(
        tiny_bert_dirs: dict[bool, Path], with_pooler: bool) -> None:
    built = build_model(cfg_for("ia3", tiny_bert_dirs[with_pooler]))
    vectors = {n: p for n, p in built.model.named_parameters() if p.requires_grad and "ia3_l" in n}
    adapted = sorted({n.split("encoder.layer.0.")[1].split(".ia3_l")[0] for n in vectors
                      if "encoder.layer.0." in n})
    assert adapted == ["attention.self.key", "attention.self.value", "output.dense"]
    assert tuple(vectors["base_model.model.bert.encoder.layer.0.output.dense.ia3_l.default"].shape) == (1, FF)
    trainable, _ = count_parameters(built.model)
    head = linear_params(H, LABELS) + (0 if with_pooler else linear_params(H, H))
    assert trainable == LAYERS * (H + H + FF) + head


def test_ia3_explicit_modules(tiny_distilbert_dir: Path) -> None:
    ia3 = Ia3Config(target_modules=("v_lin", "lin1"), feedforward_modules=("lin1",))
    built = build_model(cfg_for("ia3", tiny_distilbert_dir, ia3=ia3))
    trainable, _ = count_parameters(built.model)
    assert trainable == LAYERS * (H + H) + DISTIL_HEAD  # v_lin: out 32; lin1 (feed-forward): in 32


def test_ia3_config_errors(tiny_distilbert_dir: Path) -> None:
    with pytest.raises(ConfigError, match="must be among ia3.target_modules: lin2"):
        Ia3Config(target_modules=("v_lin",), feedforward_modules=("lin2",))
    with pytest.raises(ConfigError, match="together"):
        Ia3Config(target_modules=("v_lin",))
    with pytest.raises(ConfigError, match="no module named nope"):
        build_model(cfg_for("ia3", tiny_distilbert_dir,
                            ia3=Ia3Config(target_modules=("nope",), feedforward_modules=("nope",))))


@needs_4bit
def test_qlora_quantizes_the_encoder_and_keeps_the_head(tiny_distilbert_dir: Path) -> None:
    import bitsandbytes as bnb

    lora = build_model(cfg_for("lora", tiny_distilbert_dir))
    built = build_model(cfg_for("qlora", tiny_distilbert_dir))
    modules = dict(built.model.named_modules())
    encoder = [m for n, m in modules.items() if n.endswith(("q_lin.base_layer", "lin2.base_layer"))]
    assert encoder and all(isinstance(m, bnb.nn.Linear4bit) for m in encoder)
    heads = [m for n, m in modules.items() if n.endswith(("classifier.modules_to_save.default",))]
    assert heads and all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32 for m in heads)
    # The same adapter and head train as with LoRA.
    assert trainable_names(built.model) == trainable_names(lora.model)
    assert count_parameters(built.model)[0] == count_parameters(lora.model)[0] == 8290
    assert count_parameters(built.model)[1] == count_parameters(lora.model)[1]  # 4-bit weights count whole


def test_qlora_without_bitsandbytes_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails
    result = invoke(["train", "--recipe", "smoke", "--method", "qlora", "-o", tmp_path / "run"])
    assert_one_line_error(result, 1, "bitsandbytes", "pip install 'peft-sentiment[qlora]'")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- smoke runs: train, reload, merge

# bitsandbytes packs 4-bit weights in blocks of 64: QLoRA's smoke model is 64 wide.
QLORA_SMOKE = {"model.architecture": {"model_type": "distilbert", "dim": 64, "n_layers": 2, "n_heads": 2,
                                      "hidden_dim": 128, "max_position_embeddings": 128}}
# The 4-bit layers compute in another order (and, packed for inference on the CPU, in bf16) once
# reloaded: the same labels, logits within this.
QLORA_RELOAD_ATOL = 2e-2


def _run(tmp_path_factory: pytest.TempPathFactory, method: str) -> dict[str, Any]:
    from peft_sentiment.run import run_training

    overrides: dict[str, Any] = {"method": method, "train.epochs": 2}
    if method == "qlora":
        overrides.update(QLORA_SMOKE)
    out = tmp_path_factory.mktemp(f"method-{method}") / "run"
    capture = CaptureAtTrainEnd()
    result = run_training(load_config("smoke", overrides), output=out, callbacks=[capture])
    return {"method": method, "path": out, "capture": capture, "result": result}


@pytest.fixture(scope="module", params=["dora", "ia3", "head",
                                        pytest.param("qlora", marks=needs_4bit)])
def method_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(tmp_path_factory, request.param)


def test_run_folder_holds_the_right_artifact(method_run: dict[str, Any]) -> None:
    path = method_run["path"]
    if method_run["method"] == "head":
        assert (path / "model" / "model.safetensors").is_file() and not (path / "adapter").exists()
    else:
        assert (path / "adapter" / "adapter_model.safetensors").is_file() and not (path / "model").exists()
        assert (path / "base" / "model.safetensors").is_file()  # the random base, unquantized
    assert method_run["result"].summary["method"] == method_run["method"]


def test_training_moved_the_trained_weights(method_run: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    path = method_run["path"]
    if method_run["method"] == "head":
        return  # a full model: test_head_only_run_changes_only_the_head compares it weight by weight
    weights = load_file(path / "adapter" / "adapter_model.safetensors")
    if method_run["method"] == "ia3":
        vectors = [w for k, w in weights.items() if "ia3_l" in k]
        assert vectors and any(not torch.all(v == 1.0) for v in vectors)
    else:
        lora_b = [w for k, w in weights.items() if "lora_B" in k]
        assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # B starts at zero


@pytest.fixture(scope="module")
def head_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(tmp_path_factory, "head")


def test_head_only_run_changes_only_the_head(head_run: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    from peft_sentiment.modeling import build_base

    cfg = load_config("smoke", {"method": "head", "train.epochs": 2})
    initial = {n: p.detach() for n, p in build_base(cfg, _smoke_train_texts(cfg)).base.named_parameters()}
    trained = load_file(head_run["path"] / "model" / "model.safetensors")
    for name, value in initial.items():
        if name.startswith(("pre_classifier.", "classifier.")):
            assert not torch.equal(trained[name], value), name
        else:
            assert torch.equal(trained[name], value), name


def _smoke_train_texts(cfg: RunConfig) -> list[str]:
    from peft_sentiment.data import load_splits

    return list(load_splits(cfg.data).train["text"])


def test_reload_gives_the_same_predictions(method_run: dict[str, Any]) -> None:
    loaded = load_model(method_run["path"])
    ids, logits = reloaded_logits(loaded)
    cap = method_run["capture"]
    assert torch.equal(ids, cap.input_ids)
    atol = QLORA_RELOAD_ATOL if method_run["method"] == "qlora" else 1e-5
    torch.testing.assert_close(logits, cap.logits, atol=atol, rtol=0)
    assert torch.equal(logits.argmax(-1), cap.logits.argmax(-1))


def test_pipeline_on_the_run(method_run: dict[str, Any]) -> None:
    preds = predict(load_pipeline(method_run["path"], precision="fp32"), PROBE_TEXTS, batch_size=4)
    expected = method_run["capture"].logits.argmax(-1).tolist()
    assert [p.label for p in preds] == [["NEGATIVE", "POSITIVE"][i] for i in expected]


def test_merge_equivalence(method_run: dict[str, Any], tmp_path: Path) -> None:
    path = method_run["path"]
    if method_run["method"] == "head":
        result = invoke(["merge", path, "-o", tmp_path / "merged"])
        assert_one_line_error(result, 1, "method head", "already a standalone model")
        return
    from peft_sentiment.merge import LOGIT_TOLERANCE, merge_run

    merged = merge_run(path, output=tmp_path / "merged")
    assert merged.max_abs_diff <= LOGIT_TOLERANCE
    assert merged.base_dequantized is (method_run["method"] == "qlora")
    # The merged folder is a plain model: no peft, no 4-bit layers, the same labels.
    files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert "adapter_config.json" not in files and "model.safetensors" in files
    plain = predict(load_pipeline(tmp_path / "merged", precision="fp32"), PROBE_TEXTS, batch_size=4)
    expected = method_run["capture"].logits.argmax(-1).tolist()
    assert [p.label for p in plain] == [["NEGATIVE", "POSITIVE"][i] for i in expected]


def test_push_merged_dry_run(method_run: dict[str, Any], tmp_path: Path) -> None:
    """Every method pushes as a standalone model; the card names the method."""
    import shutil

    from huggingface_hub import ModelCard

    run = tmp_path / "run"
    shutil.copytree(method_run["path"], run)
    result = invoke(["push", run, "--repo-id", "someone/sentiment", "--merged", "--dry-run"])
    assert result.exit_code == 0, result.output
    folder = run / "push-dry-run-merged"
    files = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "README.md"} <= files
    assert "adapter_config.json" not in files
    assert ("merge_check.json" in files) is (method_run["method"] != "head")
    card = ModelCard((folder / "README.md").read_text())
    assert card.data.library_name == "transformers"
    names = {"dora": "DoRA", "ia3": "(IA)3", "head": "head-only training", "qlora": "QLoRA"}
    assert f"trained with {names[method_run['method']]}" in card.text
    if method_run["method"] == "qlora":
        assert "dequantized 4-bit base" in card.text


# ---------------------------------------------------------------- QLoRA on the smoke recipe's 32-wide model

# The QLoRA smoke runs above are 64 wide. The smoke recipe itself is 32 wide: bitsandbytes quantizes in
# blocks of 64 values, which then span two weight rows, and its CPU inference repack cannot hold that.


@pytest.mark.parametrize(("rows", "columns"), [(32, 32), (64, 32), (48, 64), (32, 96), (32, 64), (64, 128)])
@needs_4bit
def test_repack_check_agrees_with_bitsandbytes(rows: int, columns: int) -> None:
    """`can_repack` is True exactly where bitsandbytes' own repack of the layer succeeds (it runs on any
    CPU: only the forward pass that calls it needs AVX512-BF16)."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    from peft_sentiment.modeling import can_repack

    layer = bnb.nn.Linear4bit(columns, rows, quant_type="nf4", compute_dtype=torch.float32).to("cpu")
    expected = can_repack(layer)
    try:
        _convert_weight_packed_for_cpu(layer.weight.data, layer.weight.quant_state)
        repacked = True
    except (RuntimeError, AssertionError):
        repacked = False
    assert repacked is expected
    assert expected is (rows % 32 == 0 and columns % 64 == 0)


@pytest.fixture(scope="module")
def smoke_qlora_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`train --recipe smoke --method qlora` through the CLI, as a user runs it."""
    out = tmp_path_factory.mktemp("smoke-qlora-cli") / "run"
    result = invoke(["train", "--recipe", "smoke", "--method", "qlora", "-o", out])
    assert result.exit_code == 0 and result.exception is None, result.output
    return out


@needs_4bit
def test_predict_and_evaluate_on_the_smoke_qlora_run(smoke_qlora_cli: Path) -> None:
    """Inference on the reloaded 4-bit base: no repack failure (bitsandbytes' `shape '[32, 0]' is
    invalid` on 32-wide layers), a sentiment label, and the run's own accuracy again."""
    import json

    result = invoke(["predict", smoke_qlora_cli, "a great film", "--json"])
    assert result.exit_code == 0 and result.exception is None, f"{result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(rows) == 1 and rows[0]["text"] == "a great film"
    assert rows[0]["label"] in {"NEGATIVE", "POSITIVE"}

    result = invoke(["evaluate", smoke_qlora_cli, "--json"])
    assert result.exit_code == 0 and result.exception is None, f"{result.exception!r}\n{result.output}"
    saved = json.loads((smoke_qlora_cli / "metrics.json").read_text())
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(saved["accuracy"], abs=1e-12)
