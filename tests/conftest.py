"""Shared fixtures: offline environment, network guard, tiny models, data folders, smoke runs.

Everything here is offline: the environment is set before transformers, datasets or
huggingface_hub are imported, the Hugging Face cache points to an empty temporary folder (no
downloaded model or data set can be read), and a session-wide guard makes any connection to a
non-local address fail.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- environment, before any HF import

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# An empty cache: nothing downloaded earlier on this machine can be picked up by the tests.
_HF_HOME = tempfile.mkdtemp(prefix="peft-sentiment-tests-hf-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _HF_HOME
os.environ.pop("HF_DATASETS_CACHE", None)
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("TRANSFORMERS_CACHE", None)
# The project's own cache (matmul peaks, tokenized data) starts empty too.
os.environ["PEFT_SENTIMENT_CACHE"] = os.path.join(_HF_HOME, "peft-sentiment")
# Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads spinning
# against another process make each step ~100x slower. PEFT_SENTIMENT_TEST_THREADS overrides.
_THREADS = os.environ.get("PEFT_SENTIMENT_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = _THREADS
os.environ["MKL_NUM_THREADS"] = _THREADS

import pytest
import torch
import yaml

torch.set_num_threads(int(_THREADS))

from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- network guard

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkDisabled(OSError):
    pass


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family == getattr(socket, "AF_UNIX", object()):
        return
    host = address[0] if isinstance(address, tuple) else address
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in _LOCAL_HOSTS or host.startswith("127."):
        return
    raise NetworkDisabled(f"network access is disabled in the tests: connect to {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    _check_address(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def no_network() -> Iterable[None]:
    """Session-wide (so session fixtures that train are covered too): no non-local connections."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = _real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


# ---------------------------------------------------------------- data helpers

def make_rows(n: int, seed: int = 0, labels: Sequence[Any] = (0, 1)) -> list[dict[str, Any]]:
    """`n` balanced synthetic reviews (unique texts), labels spelled with `labels` (neg, pos)."""
    from peft_sentiment.synthetic import make_reviews

    rows = make_reviews(n, seed)
    return [{"text": f"{r['text']} Review number {i}.", "label": labels[int(r["label"])]}
            for i, r in enumerate(rows)]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def write_data_folder(folder: Path, train: list[dict[str, Any]] | None,
                      test: list[dict[str, Any]] | None) -> Path:
    """A local data folder with train.jsonl and test.jsonl (a None split is left out)."""
    folder.mkdir(parents=True, exist_ok=True)
    if train is not None:
        write_jsonl(folder / "train.jsonl", train)
    if test is not None:
        write_jsonl(folder / "test.jsonl", test)
    return folder


# ---------------------------------------------------------------- tiny models

VOCAB_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "film", "was", "is",
               "great", "good", "bad", "awful", "wonderful", "boring", "brilliant", "terrible",
               "acting", "plot", ".", ",", "a", "and", "it", "i", "liked", "hated"]


def tiny_vocab() -> dict[str, int]:
    return {token: i for i, token in enumerate(VOCAB_WORDS)}


def save_tiny_distilbert(folder: Path) -> Path:
    """A tiny DistilBERT encoder (no classification head) and its tokenizer in `folder`."""
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizer

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(VOCAB_WORDS), dim=32, n_layers=2, n_heads=2,
                              hidden_dim=64, max_position_embeddings=128)
    DistilBertModel(config).save_pretrained(folder)
    DistilBertTokenizer(vocab=tiny_vocab(), do_lower_case=True).save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path, with_pooler: bool) -> Path:
    """A tiny BERT encoder saved with or without pooler weights, and its tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB_WORDS), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config, add_pooling_layer=with_pooler).save_pretrained(folder)
    BertTokenizer(vocab=tiny_vocab(), do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_distilbert(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def tiny_bert_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """{True: saved with pooler weights, False: saved without (add_pooling_layer=False)}."""
    return {pool: save_tiny_bert(tmp_path_factory.mktemp(f"tiny-bert-pooler-{pool}"), pool)
            for pool in (True, False)}


# ---------------------------------------------------------------- CLI helpers

def cli_runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def invoke(args: Sequence[str], input: str | None = None) -> Result:
    """Run the `peft-sentiment` Click group in-process."""
    from peft_sentiment.cli import main

    return cli_runner().invoke(main, [str(a) for a in args], input=input)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_one_line_error(result: Result, exit_code: int, *fragments: str) -> str:
    """Exit `exit_code`, exactly one non-empty stderr line `Error: ...` naming `fragments`."""
    detail = f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    # A library exception that escaped would be caught by CliRunner and show as exit 1: insist on
    # a deliberate SystemExit.
    assert isinstance(result.exception, SystemExit), f"{result.exception!r}\n{detail}"
    assert result.exit_code == exit_code, detail
    lines = error_lines(result.stderr)
    assert len(lines) == 1, detail
    assert lines[0].startswith("Error: "), detail
    assert len(lines[0]) > len("Error: "), detail
    assert "Traceback" not in result.output, detail
    assert result.stdout.strip() == "", detail
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def run_subprocess(args: Sequence[str], cwd: Path | None = None, timeout: float = 300,
                   input: str | None = None) -> subprocess.CompletedProcess:
    """`python -m peft_sentiment ARGS` in a fresh process with the tests' offline environment."""
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = "ignore"
    return subprocess.run([sys.executable, "-m", "peft_sentiment", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout, input=input,
                          check=False)


def dot_entries(folder: Path) -> list[Path]:
    """Hidden leftovers (e.g. `.out.partial-123`) anywhere under `folder`."""
    return sorted(p for p in folder.rglob(".*"))


# ---------------------------------------------------------------- smoke runs through the CLI

SMOKE_EVAL_BATCH = 50  # passed on the command line: must win over the recipe's 64


@dataclass
class CliRun:
    method: str
    path: Path
    result: Result

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.path / "metrics.json").read_text())


def _smoke_cli_run(tmp_path_factory: pytest.TempPathFactory, method: str) -> CliRun:
    parent = tmp_path_factory.mktemp(f"smoke-{method}")
    out = parent / f"run-{method}"
    result = invoke(["train", "--recipe", "smoke", "--method", method, "-o", out,
                     "--eval-batch-size", SMOKE_EVAL_BATCH])
    return CliRun(method=method, path=out, result=result)


@pytest.fixture(scope="session")
def smoke_full(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """`train --recipe smoke --method full` through the CLI, once per session."""
    return _smoke_cli_run(tmp_path_factory, "full")


@pytest.fixture(scope="session")
def smoke_lora(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """`train --recipe smoke --method lora` through the CLI, once per session."""
    return _smoke_cli_run(tmp_path_factory, "lora")


@pytest.fixture(scope="session", params=["full", "lora"])
def smoke_run(request: pytest.FixtureRequest) -> CliRun:
    return request.getfixturevalue(f"smoke_{request.param}")


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke LoRA run trained once through the library, shared by the merge and push tests."""
    from peft_sentiment.config import load_config
    from peft_sentiment.run import run_training

    out = tmp_path_factory.mktemp("shared-lora") / "smoke-lora"
    run_training(load_config("smoke", {"method": "lora"}), output=out)
    return out


def copy_run(run: Path, dest: Path, **config_changes: Any) -> Path:
    """A copy of `run` whose config.yaml has `section__key=value` changes applied."""
    from peft_sentiment.config import set_dotted

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("merged", "push-dry-run-*"))
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    for key, value in config_changes.items():
        set_dotted(cfg, key.replace("__", "."), value)
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest
