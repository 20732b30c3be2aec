"""`push` and the model card, against a fake HfApi: what is uploaded, what is refused, and no token leaks.

`peft_sentiment.hub.hub_api` is replaced by a factory returning `FakeHub`, which checks every call
against the real `HfApi` signature, records it, and snapshots the uploaded folder.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from conftest import assert_one_line_error, copy_run, dot_entries, invoke
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from peft_sentiment import hub
from peft_sentiment.card import benchmark_rows, build_card, ci95
from peft_sentiment.errors import ConfigError

TOKEN = "hf_TESTTOKEN123"
REPO = "acme/smoke-sentiment"
# labels.json: the classes, which an adapter's weights do not carry (loading.adapter_labels reads it).
ADAPTER_FILES = {"README.md", "adapter_config.json", "adapter_model.safetensors", "labels.json", "tokenizer.json",
                 "tokenizer_config.json"}
MERGED_FILES = {"README.md", "config.json", "labels.json", "merge_check.json", "model.safetensors",
                "tokenizer.json", "tokenizer_config.json"}


# ---------------------------------------------------------------- runs




def hub_base_run(lora_run: Path, dest: Path, name: str = "acme/tiny-base") -> Path:
    """The smoke adapter presented as trained on a base named `name` (a Hub id or a local folder)."""
    run = copy_run(lora_run, dest, model__name=name, model__architecture=None)
    shutil.rmtree(run / "base")
    return run


def full_run(lora_run: Path, dest: Path) -> Path:
    """A method-full run folder: the merged smoke model stands in for a full fine-tune."""
    from peft_sentiment.merge import merge_run

    run = copy_run(lora_run, dest, method="full")
    merge_run(lora_run, output=run / "model")
    shutil.rmtree(run / "adapter")
    shutil.rmtree(run / "base")
    return run


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the fake Hub


class FakeHub:
    """Records HfApi calls; `files` maps revision -> repo files; `fail` maps method -> exception."""

    def __init__(self, files: dict[str, list[str]] | None = None, private: bool = False) -> None:
        self.files = files  # None: the repo does not exist
        self.private = private
        self.fail: dict[str, BaseException] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploaded: dict[str, bytes] | None = None

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        bound = inspect.signature(getattr(HfApi, name)).bind(None, *args, **kwargs)  # a real call?
        self.calls.append((name, {k: v for k, v in bound.arguments.items() if k != "self"}))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def call(self, name: str) -> dict[str, Any]:
        [found] = [kwargs for n, kwargs in self.calls if n == name]
        return found

    def list_repo_files(self, *args: Any, **kwargs: Any) -> list[str]:
        self._record("list_repo_files", *args, **kwargs)
        revision = kwargs.get("revision") or "main"
        if self.files is None:
            raise RepositoryNotFoundError("404 Repository Not Found", response=_response(404))
        if revision not in self.files:
            raise RevisionNotFoundError(f"404 Revision Not Found: {revision}", response=_response(404))
        return list(self.files[revision])

    def repo_info(self, *args: Any, **kwargs: Any) -> Any:
        self._record("repo_info", *args, **kwargs)
        return type("Info", (), {"private": self.private})()

    def create_repo(self, *args: Any, **kwargs: Any) -> str:
        self._record("create_repo", *args, **kwargs)
        return f"https://huggingface.co/{args[0] if args else kwargs['repo_id']}"

    def create_branch(self, *args: Any, **kwargs: Any) -> None:
        self._record("create_branch", *args, **kwargs)

    def create_commit(self, *args: Any, **kwargs: Any) -> Any:
        self._record("create_commit", *args, **kwargs)

    def upload_folder(self, *args: Any, **kwargs: Any) -> Any:
        self._record("upload_folder", *args, **kwargs)
        self.uploaded = folder_bytes(Path(kwargs["folder_path"]))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123"})()


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))


@pytest.fixture
def staging_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temporary folder, redirected so tests can see staging leftovers."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, staging_tmp: Path) -> Callable[..., FakeHub]:
    """Install a FakeHub (and HF_TOKEN); returns a function that sets up and returns the fake."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    state: dict[str, Any] = {"fake": FakeHub(), "tokens": []}

    def factory(token: str | None = None) -> FakeHub:
        state["tokens"].append(token)
        return state["fake"]

    monkeypatch.setattr(hub, "hub_api", factory)

    def install(**kwargs: Any) -> FakeHub:
        state["fake"] = FakeHub(**kwargs)
        state["fake"].tokens = state["tokens"]  # type: ignore[attr-defined]
        return state["fake"]

    return install


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text


# ---------------------------------------------------------------- the model card


def card_of(run: Path, kind: str, base: str | None, **kwargs: Any) -> ModelCard:
    text = build_card(run, kind, REPO, base, **kwargs)  # type: ignore[arg-type]
    return ModelCard(text)


def test_card_metadata_and_metrics(lora_run: Path) -> None:
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert metrics["n_test"] == 100
    assert ci95(0.88, 300) == pytest.approx(0.0368, abs=1e-4)  # the seed protocol's 300 reviews
    card = card_of(lora_run, "merged", None)
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-classification"
    assert data.license == "apache-2.0"
    assert data.base_model is None  # random weights: no Hub model to name
    assert data.datasets is None  # builtin:smoke is no Hub data set
    assert {"sentiment-analysis", "text-classification", "lora"} <= set(data.tags)
    by_metric = {r.metric_type: r for r in data.eval_results}
    assert set(by_metric) == {"accuracy", "f1"}
    assert by_metric["accuracy"].metric_value == metrics["accuracy"]
    assert by_metric["f1"].metric_value == metrics["f1"]
    for result in data.eval_results:
        assert result.task_type == "text-classification"
        assert result.dataset_split == "test"
    text = card.text
    for needle in ("## Results", "## Training", "## How to use", "## Limitations", "8,290",
                   "`learning_rate` | 0.005", "max length | 64 tokens", "k_lin, lin1, lin2, out_lin, q_lin, v_lin",
                   f'pipeline("text-classification", model="{REPO}"', "random weights",
                   "`tiny-distilbert` is a label", f"±{100 * ci95(metrics['accuracy'], 100):.1f} points"):
        assert needle in text, needle
    assert "## Benchmark" not in text


def test_card_for_an_imdb_adapter(lora_run: Path, tmp_path: Path) -> None:
    run = hub_base_run(lora_run, tmp_path / "run", name="distilbert-base-uncased")
    copy = yaml.safe_load((run / "config.yaml").read_text())
    copy["data"]["source"] = "stanfordnlp/imdb"
    (run / "config.yaml").write_text(yaml.safe_dump(copy))
    card = card_of(run, "adapter", "distilbert/distilbert-base-uncased", license="mit")
    data = card.data
    assert data.base_model == "distilbert/distilbert-base-uncased"
    assert data.library_name == "peft"
    assert data.license == "mit"
    assert data.datasets == ["stanfordnlp/imdb"]
    assert {"peft", "lora"} <= set(data.tags)
    for result in data.eval_results:
        assert (result.dataset_type, result.dataset_name, result.dataset_split) == ("stanfordnlp/imdb",
                                                                                   "IMDb", "test")
    assert 'PeftModel.from_pretrained(base, "acme/smoke-sentiment")' in card.text
    assert "\"distilbert/distilbert-base-uncased\", num_labels=2" in card.text
    assert "id2label={0: 'NEGATIVE', 1: 'POSITIVE'}" in card.text
    assert "stand-in" not in card.text  # trained from the Hub model the card names


def test_card_names_a_local_stand_in(lora_run: Path, tmp_path: Path) -> None:
    local = tmp_path / "models" / "minilm-stand-in"
    local.mkdir(parents=True)
    run = hub_base_run(lora_run, tmp_path / "run", name=str(local))
    text = card_of(run, "adapter", "distilbert/distilbert-base-uncased").text
    assert ".../models/minilm-stand-in" in text
    assert "stand-in" in text
    assert str(tmp_path) not in text  # no local folders above it


def test_card_benchmark_section(lora_run: Path, tmp_path: Path) -> None:
    bench = tmp_path / "benchmark.json"
    bench.write_text(json.dumps({"results": [
        {"method": "full", "accuracy": 0.88, "f1": 0.89},
        {"method": "lora", "model": "minilm", "accuracy": 0.8705, "f1": 0.872, "train_seconds": 3086.0},
    ]}))
    text = card_of(lora_run, "merged", None, benchmark=bench).text
    assert "## Benchmark" in text
    assert "| minilm | 0.8705 | 0.8720 | 3086 |" in text
    assert "0.88" not in text.split("## Benchmark")[1].split("##")[0]  # only this method's line
    bench.write_text(json.dumps([{"method": "full", "accuracy": 0.88}]))
    assert "## Benchmark" not in card_of(lora_run, "merged", None, benchmark=bench).text
    bench.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        benchmark_rows(bench, "lora")


# ---------------------------------------------------------------- pushing


def test_push_merged_uploads_exactly_the_dry_run_folder(lora_run: Path, tmp_path: Path,
                                                       fake_hub: Callable[..., FakeHub],
                                                       staging_tmp: Path) -> None:
    run = copy_run(lora_run, tmp_path / "run")
    fake = fake_hub(files={"main": [".gitattributes"]})
    dry = invoke(["push", run, "--repo-id", REPO, "--merged", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    folder = run / "push-dry-run-merged"
    assert dry.stdout.splitlines()[0] == f"dry run: nothing uploaded; {len(MERGED_FILES)} files for {REPO} in {folder}"
    assert fake.calls == [] and fake.tokens == []  # type: ignore[attr-defined]  # no Hub client at all
    staged = folder_bytes(folder)
    assert set(staged) == MERGED_FILES
    for name in staged:
        assert name in dry.stdout
    assert ModelCard(staged["README.md"].decode()).data.library_name == "transformers"
    assert str(tmp_path) not in staged["merge_check.json"].decode()  # no local paths published

    pushed = invoke(["push", run, "--repo-id", REPO, "--merged"])
    assert pushed.exit_code == 0, pushed.output
    assert pushed.stdout.splitlines()[0] == (f"pushed {len(MERGED_FILES)} files to {REPO}: "
                                             f"https://huggingface.co/{REPO}/commit/abc123")
    assert fake.tokens == [TOKEN]  # type: ignore[attr-defined]
    assert fake.names() == ["list_repo_files", "create_repo", "upload_folder"]  # one commit
    assert fake.call("create_repo") == {"repo_id": REPO, "private": False, "exist_ok": True,
                                        "repo_type": "model"}
    upload = fake.call("upload_folder")
    assert upload["repo_id"] == REPO and upload["revision"] is None and upload["delete_patterns"] is None
    assert upload["commit_message"] == "Upload merged model from peft-sentiment run run"
    assert fake.uploaded == staged  # same names, same bytes
    assert_no_token(dry.output, pushed.output, *(b.decode("utf-8", "replace") for b in staged.values()))
    assert list(staging_tmp.iterdir()) == []  # the staging folder is gone
    assert dot_entries(run) == []


def test_push_adapter_only(lora_run: Path, tmp_path: Path, fake_hub: Callable[..., FakeHub]) -> None:
    run = hub_base_run(lora_run, tmp_path / "run")
    fake = fake_hub()  # the repo does not exist yet
    result = invoke(["push", run, "--repo-id", REPO, "--adapter-only", "--private",
                     "--commit-message", "first adapter"])
    assert result.exit_code == 0, result.output
    assert fake.names() == ["list_repo_files", "create_repo", "upload_folder"]
    assert fake.call("create_repo")["private"] is True
    assert fake.call("upload_folder")["commit_message"] == "first adapter"
    assert fake.uploaded is not None and set(fake.uploaded) == ADAPTER_FILES
    config = json.loads(fake.uploaded["adapter_config.json"])
    assert config["base_model_name_or_path"] == "acme/tiny-base"
    assert fake.uploaded["adapter_model.safetensors"] == (run / "adapter" / "adapter_model.safetensors").read_bytes()
    card = ModelCard(fake.uploaded["README.md"].decode())
    assert card.data.base_model == "acme/tiny-base" and card.data.library_name == "peft"
    assert_no_token(result.output, *(b.decode("utf-8", "replace") for b in fake.uploaded.values()))


def test_adapter_only_from_a_local_base_needs_a_hub_id(lora_run: Path, tmp_path: Path,
                                                       fake_hub: Callable[..., FakeHub]) -> None:
    local = tmp_path / "local-base"
    local.mkdir()
    run = hub_base_run(lora_run, tmp_path / "run", name=str(local))
    fake = fake_hub()
    assert_one_line_error(invoke(["push", run, "--repo-id", REPO, "--adapter-only"]), 1,
                          f"trained from the local folder {local}", "--base-model-id")
    assert_one_line_error(invoke(["push", run, "--repo-id", REPO, "--adapter-only", "--base-model-id",
                                  str(local)]), 1, "must be a Hub model id, not a local path")
    assert fake.calls == []
    result = invoke(["push", run, "--repo-id", REPO, "--adapter-only", "--base-model-id",
                     "distilbert-base-uncased"])
    assert result.exit_code == 0, result.output
    assert fake.uploaded is not None
    config = json.loads(fake.uploaded["adapter_config.json"])
    assert config["base_model_name_or_path"] == "distilbert/distilbert-base-uncased"  # canonical id
    assert str(local) not in fake.uploaded["README.md"].decode()


def test_adapter_only_on_a_random_base_suggests_merged(lora_run: Path, fake_hub: Callable[..., FakeHub]) -> None:
    fake = fake_hub()
    line = assert_one_line_error(
        invoke(["push", lora_run, "--repo-id", REPO, "--adapter-only", "--base-model-id",
                "distilbert/distilbert-base-uncased", "--dry-run"]), 1, "random weights", "--merged")
    assert line == (f"Error: run {lora_run} has a base with random weights that exists only in "
                    f"{lora_run / 'base'}, so its adapter cannot be used alone: push the standalone "
                    "model with --merged")
    assert fake.calls == []
    assert not (lora_run / "push-dry-run-adapter").exists()


def test_push_full_run(lora_run: Path, tmp_path: Path, fake_hub: Callable[..., FakeHub]) -> None:
    run = full_run(lora_run, tmp_path / "full")
    fake_hub()
    assert_one_line_error(invoke(["push", run, "--repo-id", REPO, "--adapter-only"]), 1,
                          "method full", "--merged")
    result = invoke(["push", run, "--repo-id", REPO, "--merged", "--dry-run"])
    assert result.exit_code == 0, result.output
    staged = folder_bytes(run / "push-dry-run-merged")
    assert set(staged) == MERGED_FILES - {"merge_check.json"}
    assert staged["model.safetensors"] == (run / "model" / "model.safetensors").read_bytes()
    assert "logit check" not in result.stdout


def test_overwrite_is_needed_for_a_repo_with_files(lora_run: Path, tmp_path: Path,
                                                  fake_hub: Callable[..., FakeHub],
                                                  staging_tmp: Path) -> None:
    run = hub_base_run(lora_run, tmp_path / "run")
    fake = fake_hub(files={"main": [".gitattributes", "README.md", "model.safetensors"]})
    line = assert_one_line_error(invoke(["push", run, "--repo-id", REPO, "--adapter-only"]), 1,
                                 f"{REPO} already holds README.md, model.safetensors", "--overwrite")
    assert ".gitattributes" not in line
    assert fake.names() == ["list_repo_files"]
    assert list(staging_tmp.iterdir()) == []

    result = invoke(["push", run, "--repo-id", REPO, "--adapter-only", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert fake.names()[-2:] == ["create_repo", "upload_folder"]
    # Files not replaced go in the same commit: an old model.safetensors must not stay beside an adapter.
    assert fake.call("upload_folder")["delete_patterns"] == "*"


def test_private_push_to_an_existing_public_repo_is_refused(lora_run: Path, tmp_path: Path,
                                                           fake_hub: Callable[..., FakeHub]) -> None:
    run = hub_base_run(lora_run, tmp_path / "run")
    fake = fake_hub(files={"main": [".gitattributes"]}, private=False)
    assert_one_line_error(invoke(["push", run, "--repo-id", REPO, "--adapter-only", "--private"]), 1,
                          "exists and is public")
    assert "upload_folder" not in fake.names() and "create_repo" not in fake.names()


def test_revision(lora_run: Path, tmp_path: Path, fake_hub: Callable[..., FakeHub]) -> None:
    run = hub_base_run(lora_run, tmp_path / "run")
    fake = fake_hub(files={"main": [".gitattributes"]})
    assert_one_line_error(invoke(["push", run, "--repo-id", REPO, "--adapter-only", "--revision", "dev"]), 1,
                          f"revision 'dev' not found in {REPO}", "--create-branch")
    assert fake.names() == ["list_repo_files"]

    result = invoke(["push", run, "--repo-id", REPO, "--adapter-only", "--revision", "dev", "--create-branch"])
    assert result.exit_code == 0, result.output
    assert fake.names()[-3:] == ["create_repo", "create_branch", "upload_folder"]
    assert fake.call("create_branch")["branch"] == "dev"
    assert fake.call("upload_folder")["revision"] == "dev"
    assert f"to {REPO}@dev:" in result.stdout

    fake = fake_hub()  # no repo at all: a branch of it cannot exist
    assert_one_line_error(invoke(["push", run, "--repo-id", REPO, "--adapter-only", "--revision", "dev"]), 1,
                          "revision 'dev' not found", "does not exist yet")


# ---------------------------------------------------------------- errors: one line, nothing left


@pytest.mark.parametrize("repo_id, fragment", [
    ("smoke-sentiment", "must look like NAME/REPO"),
    ("acme/models/smoke", "not a valid Hub repo id"),
    ("acme/bad name", "not a valid Hub repo id"),
    ("acme/-x", "not a valid Hub repo id"),
])
def test_bad_repo_id(lora_run: Path, fake_hub: Callable[..., FakeHub], repo_id: str, fragment: str) -> None:
    fake = fake_hub()
    assert_one_line_error(invoke(["push", lora_run, "--repo-id", repo_id, "--merged"]), 1, repo_id, fragment)
    assert_one_line_error(invoke(["push", lora_run, "--repo-id", repo_id, "--merged", "--dry-run"]), 1,
                          fragment)
    assert fake.calls == [] and fake.tokens == []  # type: ignore[attr-defined]
    assert not (lora_run / "push-dry-run-merged").exists()


def test_no_token(lora_run: Path, fake_hub: Callable[..., FakeHub], monkeypatch: pytest.MonkeyPatch,
                  staging_tmp: Path) -> None:
    fake = fake_hub()
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    assert_one_line_error(invoke(["push", lora_run, "--repo-id", REPO, "--merged"]), 1,
                          "no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    assert fake.calls == [] and fake.tokens == []  # type: ignore[attr-defined]
    assert list(staging_tmp.iterdir()) == []
    # A dry run needs no token.
    result = invoke(["push", lora_run, "--repo-id", REPO, "--merged", "--dry-run",
                     "--staging-dir", staging_tmp / "dry"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("method, error, fragment", [
    ("upload_folder", httpx2.ConnectError("[Errno 111] Connection refused"),
     "cannot reach the Hub to push acme/smoke-sentiment (ConnectError: [Errno 111] Connection refused)"),
    ("list_repo_files", httpx2.ReadTimeout("timed out"), "ReadTimeout: timed out"),
    ("create_repo", ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError"),
    ("upload_folder", HfHubHTTPError("500 Server Error: Internal Server Error", response=_response(500)),
     "the Hub refused a request for acme/smoke-sentiment (HTTP 500): 500 Server Error"),
    ("create_repo", HfHubHTTPError(f"403 Forbidden: token {TOKEN} cannot write to acme",
                                   response=_response(403)), "(HTTP 403)"),
])
def test_network_and_hub_failures(lora_run: Path, tmp_path: Path, fake_hub: Callable[..., FakeHub],
                                  staging_tmp: Path, method: str, error: BaseException,
                                  fragment: str) -> None:
    run = hub_base_run(lora_run, tmp_path / "run")
    fake = fake_hub(files={"main": [".gitattributes"]})
    fake.fail[method] = error
    result = invoke(["push", run, "--repo-id", REPO, "--adapter-only"])
    line = assert_one_line_error(result, 1, fragment, "nothing was committed")
    assert_no_token(result.output, line)
    assert fake.uploaded is None or method == "upload_folder"
    assert list(staging_tmp.iterdir()) == []
    assert dot_entries(run) == []


def test_offline_with_the_real_client(lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      staging_tmp: Path) -> None:
    """No fake: the real HfApi under HF_HUB_OFFLINE=1 (set by conftest) fails before any socket."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = hub_base_run(lora_run, tmp_path / "run")
    result = invoke(["push", run, "--repo-id", REPO, "--adapter-only"])
    assert_one_line_error(result, 1, "HF_HUB_OFFLINE is set")
    assert_no_token(result.output)
    assert list(staging_tmp.iterdir()) == []


def test_dry_run_folder_is_not_replaced_silently(lora_run: Path, tmp_path: Path) -> None:
    run = copy_run(lora_run, tmp_path / "run")
    staging = tmp_path / "staging"
    args = ["push", run, "--repo-id", REPO, "--merged", "--dry-run", "--staging-dir", staging]
    assert invoke(args).exit_code == 0
    assert_one_line_error(invoke(args), 1, f"dry-run folder {staging} already exists", "--overwrite")
    assert invoke([*args, "--overwrite"]).exit_code == 0
    assert {p.name for p in staging.iterdir()} == MERGED_FILES
    assert dot_entries(tmp_path) == []


def test_option_mistakes(lora_run: Path) -> None:
    assert_one_line_error(invoke(["push", lora_run, "--repo-id", REPO]), 2,
                          "pass exactly one of --merged and --adapter-only")
    assert_one_line_error(invoke(["push", lora_run, "--repo-id", REPO, "--merged", "--adapter-only"]), 2,
                          "pass exactly one of --merged and --adapter-only")
    assert_one_line_error(invoke(["push", lora_run, "--merged"]), 2, "--repo-id")
    assert_one_line_error(invoke(["push", lora_run, "--repo-id", REPO, "--merged", "--staging-dir", "x"]), 1,
                          "--staging-dir only applies with --dry-run")
    assert_one_line_error(invoke(["push", lora_run, "--repo-id", REPO, "--merged", "--dry-run",
                                  "--benchmark", lora_run / "nope.json"]), 1, "cannot read benchmark file")
    assert not (lora_run / "push-dry-run-merged").exists()


def test_help() -> None:
    for command in ("merge", "push"):
        result = invoke([command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.stdout


# ---------------------------------------------------------------- ONNX exports

ONNX_FILES = {"README.md", "model.onnx", "config.json", "export.json", "export_check.json", "labels.json",
              "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def onnx_export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real fp32 export of the smoke LoRA run, made once through the CLI as a user makes one."""
    out = tmp_path_factory.mktemp("onnx") / "smoke-onnx"
    result = invoke(["export", lora_run, "--format", "onnx", "-o", out])
    assert result.exit_code == 0, result.output
    return out


def export_copy(onnx_export: Path, dest: Path) -> Path:
    shutil.copytree(onnx_export, dest)
    return dest


def run_onnx_snippet(card: str, folder: Path) -> str:
    """Run the card's Python example on `folder` as the downloaded repo; what it prints."""
    import builtins
    import contextlib
    import io
    import types

    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    hub_stub = types.SimpleNamespace(snapshot_download=lambda repo_id: str(folder))

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        return hub_stub if name == "huggingface_hub" else builtins.__import__(name, *args, **kwargs)

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {"__builtins__": {**vars(builtins), "__import__": fake_import}})  # noqa: S102
    return printed.getvalue()


def test_push_onnx_dry_run_then_upload(onnx_export: Path, lora_run: Path, tmp_path: Path,
                                       fake_hub: Callable[..., FakeHub], staging_tmp: Path) -> None:
    export = export_copy(onnx_export, tmp_path / "export")
    check = json.loads((export / "export_check.json").read_text())
    fake = fake_hub(files={"main": [".gitattributes"]})
    dry = invoke(["push", export, "--repo-id", REPO, "--format", "onnx", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    folder = export / "push-dry-run-onnx"
    assert dry.stdout.splitlines()[0] == f"dry run: nothing uploaded; {len(ONNX_FILES)} files for {REPO} in {folder}"
    assert dry.stdout.splitlines()[1].startswith("export check: max |logit diff| from PyTorch = ")
    assert f"labels agree on {check['agreement']:.2%} of {check['n_texts']} texts" in dry.stdout
    assert fake.calls == [] and fake.tokens == []  # type: ignore[attr-defined]
    staged = folder_bytes(folder)
    assert set(staged) == ONNX_FILES
    assert staged["model.onnx"] == (export / "model.onnx").read_bytes()
    for name in staged:
        assert name in dry.stdout
    for name, content in staged.items():  # no local folder is published
        if name != "model.onnx":
            assert str(tmp_path) not in content.decode() and str(lora_run.parent) not in content.decode(), name
    assert json.loads(staged["export.json"])["source_run"] == lora_run.name
    assert json.loads(staged["export_check.json"]) == check  # builtin:smoke texts: nothing to hide

    card = ModelCard(staged["README.md"].decode())
    assert card.data.library_name == "onnx" and card.data.pipeline_tag == "text-classification"
    assert {"onnx", "lora", "peft-sentiment"} <= set(card.data.tags)
    assert card.data.base_model is None  # the smoke base has random weights
    by_metric = {r.metric_type: r.metric_value for r in card.data.eval_results}  # fp32, passed
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert by_metric == {"accuracy": metrics["accuracy"], "f1": metrics["f1"]}
    text = card.text
    for needle in ("An ONNX export of a binary sentiment classifier", "Weights: fp32", "## Export check",
                   "last layer past self-attention for the first token only",
                   "| quantization | fp32 |",
                   f"| largest \\|logit difference\\| from PyTorch | {check['max_abs_logit_diff']:.2g} (tolerance 0.001) |",
                   f"| label agreement with PyTorch | {check['agreement']:.2%} (bar 99.5%) |",
                   f"| texts checked | {check['n_texts']:,}, the test subset of builtin:smoke",
                   "| merge check | max \\|merged - (base + adapter)\\|", "| result | passed |",
                   "| F1 (POSITIVE) |", "ort.InferenceSession(", f'snapshot_download("{REPO}")',
                   "AutoTokenizer.from_pretrained(folder)", "`input_ids`, `attention_mask`",
                   f"hf download {REPO} --local-dir smoke-sentiment",
                   'peft-sentiment predict smoke-sentiment "A wonderful film: the acting was brilliant." --backend onnx',
                   "random weights", "## Limitations"):
        assert needle in text, needle
    assert "int8 layers kept in fp32" not in text and "did not pass" not in text
    printed = run_onnx_snippet(text, folder)  # the example runs on the files pushed
    assert yaml.safe_load(printed.replace("'", '"')) in (["NEGATIVE"], ["POSITIVE"])

    pushed = invoke(["push", export, "--repo-id", REPO, "--format", "onnx"])
    assert pushed.exit_code == 0, pushed.output
    assert fake.tokens == [TOKEN]  # type: ignore[attr-defined]
    assert fake.names() == ["list_repo_files", "create_repo", "upload_folder"]
    assert fake.call("upload_folder")["commit_message"] == "Upload ONNX export (fp32) from peft-sentiment export export"
    assert fake.uploaded == {**staged}  # the dry-run folder inside the export is not uploaded
    assert_no_token(dry.output, pushed.output, staged["README.md"].decode())
    assert list(staging_tmp.iterdir()) == []


def test_push_onnx_refusals(onnx_export: Path, lora_run: Path, tmp_path: Path,
                            fake_hub: Callable[..., FakeHub]) -> None:
    fake = fake_hub(files={"main": [".gitattributes", "model.onnx"]})
    assert_one_line_error(invoke(["push", lora_run, "--repo-id", REPO, "--format", "onnx", "--dry-run"]), 1,
                          f"{lora_run} is not an ONNX export (it has no export.json)",
                          "peft-sentiment export RUN --format onnx -o DIR")
    assert not (lora_run / "push-dry-run-onnx").exists()
    assert_one_line_error(invoke(["push", tmp_path / "nope", "--repo-id", REPO, "--format", "onnx"]), 1,
                          "export folder not found")
    assert_one_line_error(invoke(["push", onnx_export, "--repo-id", REPO, "--merged"]), 1,
                          "is an ONNX export, not a run: push it with --format onnx")
    assert_one_line_error(invoke(["push", onnx_export, "--repo-id", REPO, "--format", "onnx", "--merged"]), 2,
                          "leave out --merged and --adapter-only")
    assert_one_line_error(invoke(["push", onnx_export, "--repo-id", REPO, "--format", "onnx",
                                  "--base-model-id", "distilbert/distilbert-base-uncased"]), 1,
                          "made from random weights")
    broken = export_copy(onnx_export, tmp_path / "broken")
    (broken / "export_check.json").unlink()
    assert_one_line_error(invoke(["push", broken, "--repo-id", REPO, "--format", "onnx", "--dry-run"]), 1,
                          "has no export_check.json")
    (broken / "model.onnx").unlink()
    assert_one_line_error(invoke(["push", broken, "--repo-id", REPO, "--format", "onnx"]), 1, "model.onnx")
    assert fake.calls == []
    # A repo with files is not replaced without --overwrite.
    assert_one_line_error(invoke(["push", onnx_export, "--repo-id", REPO, "--format", "onnx"]), 1,
                          f"{REPO} already holds model.onnx", "--overwrite")
    assert fake.names() == ["list_repo_files"]
    assert not (onnx_export / "push-dry-run-onnx").exists()


def test_onnx_card_int8_and_forced(onnx_export: Path, tmp_path: Path) -> None:
    """The int8 figures of export_check.json (layers kept in fp32), and a forced export, in the card."""
    from peft_sentiment.card import build_export_card

    export = export_copy(onnx_export, tmp_path / "export")
    meta = json.loads((export / "export.json").read_text())
    meta["quantization"] = "int8"
    (export / "export.json").write_text(json.dumps(meta))
    check = json.loads((export / "export_check.json").read_text())
    check.update(agreement=0.99, passed=False, forced=True, max_abs_logit_diff=0.0123, logit_tolerance=None)
    check["int8"] = {"scheme": "onnxruntime dynamic quantization: int8 weights per output channel",
                     "int8_layers": ["layer.0.lin1", "layer.1.lin1"], "fp32_layers": ["layer.0.lin2"],
                     "unquantized_layers": ["classifier"], "chosen_on": "500 reviews of data/train.parquet after the training subset",
                     "selection_agreement": 0.996, "all_int8_selection_agreement": 0.98}
    (export / "export_check.json").write_text(json.dumps(check))
    card = ModelCard(build_export_card(export, REPO, "acme/tiny-base"))
    assert card.data.base_model == "acme/tiny-base"
    assert "int8" in card.data.tags
    assert card.data.eval_results is None  # the figures were measured on fp32 PyTorch, not on this model
    text = card.text
    for needle in ("| quantization | int8 (2 of 3 quantizable linear layers, 1 kept in fp32) |",
                   "| largest \\|logit difference\\| from PyTorch | 0.012 |",
                   "| label agreement with PyTorch | 99.00% (bar 99.5%) |",
                   "| int8 layers kept in fp32 | `layer.0.lin2` |",
                   ("500 reviews of data/train.parquet after the training subset: 98.00% agreement with every layer int8, "
                    "99.60% with these kept"), "| linear layers on pooled features, fp32 | `classifier` |",
                   "**failed**: kept with `--force`", "This export did not pass its check",
                   f"changed {round(0.01 * check['n_texts'])} of their {check['n_texts']:,} labels"):
        assert needle in text, needle
