"""`peft-sentiment serve`: a real uvicorn process answering over HTTP on 127.0.0.1, the app in-process
(FastAPI's TestClient), and the micro-batcher alone with a fake model.

Every server started here is stopped by its fixture or context manager (SIGTERM, then SIGKILL), and
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import assert_one_line_error, invoke, make_rows

from peft_sentiment.serve import BatcherStopped, MicroBatcher, ServeConfig, create_app

START_TIMEOUT_S = 180  # importing torch and loading the model on a busy 2-core machine
STOP_TIMEOUT_S = 30
REQUEST_TIMEOUT_S = 60
SERVER_ARGS = ["--precision", "fp32", "--max-batch", "8", "--max-wait-ms", "100", "--max-texts", "64"]
# fp32: batches of other sizes pad differently, which moves bf16 probabilities by ~4e-4 (measured on
# the smoke LoRA run) but fp32 ones by ~2e-7; predict --json rounds scores to 6 decimals.
SCORE_TOLERANCE = 2e-6
TEXTS = [
    "The acting was brilliant. The story moved me deeply.",
    "Dull, predictable and far too long.",
    "The plot is a masterpiece and the soundtrack deserves every award.",
    "Still, the cast was a waste of time.",
    "",
    "I watched it on a Sunday evening. ünïcödé – “quoted” 🎬",
]


# ---------------------------------------------------------------- a server process


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self) -> httpx.Client:
        # trust_env=False: no proxy from the environment between the tests and 127.0.0.1
        return httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S, trust_env=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    return process.returncode


@contextmanager
def running_server(source: Path, folder: Path, *args: str) -> Iterator[Server]:
    """`python -m peft_sentiment serve SOURCE --port P ARGS`, healthy, on a free port; stopped after."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with log.open("w") as out:  # a file, not a pipe: a pipe nobody reads would fill and block the server
        process = subprocess.Popen([sys.executable, "-m", "peft_sentiment", "serve", str(source),
                                    "--port", str(port), *args],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_healthy(server)
        yield server
    finally:
        stop(process)


def wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with server.client() as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(f"serve exited with {server.process.returncode}:\n{server.log.read_text()}")
            try:
                if client.get("/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    pytest.fail(f"serve did not answer /health within {START_TIMEOUT_S} s:\n{server.log.read_text()}")


@pytest.fixture(scope="module")
def server(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The smoke LoRA run served in fp32, batches of at most 8 texts gathered for up to 100 ms."""
    with running_server(lora_run, tmp_path_factory.mktemp("serve"), *SERVER_ARGS) as running:
        yield running


def cli_predictions(source: Path, texts: Sequence[str], *args: str) -> list[dict[str, Any]]:
    """`peft-sentiment predict SOURCE --json TEXTS`: one {text, label, score} per text."""
    result = invoke(["predict", source, "--json", *args, "--", *texts])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_same(answer: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [a["label"] for a in answer] == [e["label"] for e in expected]
    for a, e in zip(answer, expected):
        assert a["score"] == pytest.approx(e["score"], abs=SCORE_TOLERANCE)


def stats(client: httpx.Client) -> dict[str, int]:
    return client.get("/info").json()["stats"]


# ---------------------------------------------------------------- answers


def test_predictions_equal_the_predict_command(server: Server, lora_run: Path) -> None:
    expected = cli_predictions(lora_run, TEXTS, "--precision", "fp32")
    with server.client() as client:
        response = client.post("/predict", json={"texts": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["predictions"]
    assert all(set(p) == {"label", "score"} for p in body["predictions"])
    assert_same(body["predictions"], expected)


def test_health_and_info(server: Server, lora_run: Path) -> None:
    metrics = json.loads((lora_run / "metrics.json").read_text())
    with server.client() as client:
        health = client.get("/health")
        info = client.get("/info").json()
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert info["source"] == str(lora_run)
    assert info["base_model"] == "tiny-distilbert" and info["method"] == "lora"
    assert info["labels"] == ["NEGATIVE", "POSITIVE"]
    assert info["test_metrics"] == {k: metrics[k]
                                    for k in ("accuracy", "f1", "precision", "recall", "n_test")}
    assert info["backend"] == "torch"
    assert info["max_length"] == 64  # the smoke recipe's data.max_length
    assert info["limits"] == {"max_batch": 8, "max_wait_ms": 100.0, "max_texts": 64,
                              "max_text_bytes": 100_000,
                              "max_body_bytes": ServeConfig(8, 100, 64, 100_000).max_body_bytes}
    assert set(info["stats"]) == {"requests", "texts", "batches"}


def test_a_request_larger_than_a_batch_is_split_and_kept_in_order(server: Server, lora_run: Path) -> None:
    texts = [row["text"] for row in make_rows(20, seed=3)]
    expected = cli_predictions(lora_run, texts, "--precision", "fp32")
    with server.client() as client:
        before = stats(client)
        response = client.post("/predict", json={"texts": texts})
        after = stats(client)
    assert response.status_code == 200, response.text
    assert_same(response.json()["predictions"], expected)
    assert after["texts"] - before["texts"] == 20
    assert after["batches"] - before["batches"] >= 3  # at most 8 texts a forward pass


def test_concurrent_clients_each_get_their_own_answers(server: Server, lora_run: Path) -> None:
    clients = 16
    pool = [row["text"] for row in make_rows(80, seed=11)]
    expected = {p["text"]: p for p in cli_predictions(lora_run, pool, "--precision", "fp32")}
    # Texts whose scores are far apart, so that an answer handed to the wrong request cannot pass.
    distinct: list[str] = []
    for text in sorted(expected, key=lambda t: expected[t]["score"]):
        if not distinct or expected[text]["score"] - expected[distinct[-1]]["score"] > 1e-4:
            distinct.append(text)
    sizes = [1 + i % 3 for i in range(clients)]
    assert len(distinct) >= sum(sizes), "the pool is too small to give every client its own texts"
    it = iter(distinct)
    requests = [[next(it) for _ in range(size)] for size in sizes]
    start = threading.Barrier(clients, timeout=REQUEST_TIMEOUT_S)

    def ask(texts: list[str]) -> httpx.Response:
        with server.client() as client:
            start.wait()  # all at once: the batcher has something to gather
            return client.post("/predict", json={"texts": texts})

    with server.client() as client:
        before = stats(client)
        with ThreadPoolExecutor(clients) as executor:
            responses = list(executor.map(ask, requests))
        after = stats(client)
    for texts, response in zip(requests, responses):
        assert response.status_code == 200, response.text
        assert_same(response.json()["predictions"], [expected[t] for t in texts])
    assert after["requests"] - before["requests"] == clients  # /info is no request to the model
    assert after["texts"] - before["texts"] == sum(sizes)
    assert after["batches"] - before["batches"] < clients  # texts of several requests shared forward passes


# ---------------------------------------------------------------- refusals


BAD_REQUESTS = [
    ("not-json", b'{"texts": ["good"', 422, "not valid JSON"),
    ("not-utf8", b'{"texts": ["\xff"]}', 422, "not valid JSON"),
    ("deeply-nested", b"[" * 100_000 + b"]" * 100_000, 422, "nested too deeply"),
    ("not-an-object", b'["good"]', 422, 'JSON object {"texts": [...]}, got a list'),
    ("missing-field", b'{"text": ["good"]}', 422, 'no "texts" field'),
    ("unknown-field", b'{"texts": ["good"], "batch": 3}', 422, "unknown field 'batch'"),
    ("texts-a-string", b'{"texts": "good"}', 422, '"texts" must be a list of strings, got a string'),
    ("empty-list", b'{"texts": []}', 422, '"texts" is empty'),
    ("text-a-number", b'{"texts": ["good", 3]}', 422, "texts[1] must be a string, got a number"),
    ("text-null", b'{"texts": [null]}', 422, "texts[0] must be a string, got null"),
    ("lone-surrogate", b'{"texts": ["\\ud800"]}', 422, "texts[0] is not valid Unicode"),
    ("too-many-texts", json.dumps({"texts": ["good"] * 65}).encode(), 413,
     "65 texts in one request; the limit is 64"),
    ("text-too-long", json.dumps({"texts": ["good", "é" * 50_001]}).encode(), 413,
     "texts[1] has 100002 UTF-8 bytes; the limit is 100000"),
]


@pytest.mark.parametrize("body,status,fragment",
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS])
def test_bad_request_is_refused_with_one_json_message(server: Server, body: bytes, status: int,
                                                      fragment: str) -> None:
    with server.client() as client:
        before = stats(client)
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
        after = stats(client)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["detail"] and fragment in response.json()["detail"]
    assert "Traceback" not in response.text and "\n" not in response.json()["detail"]
    assert after["texts"] == before["texts"]  # nothing reached the model


def test_five_megabyte_text_is_refused_fast_and_never_tokenized(server: Server) -> None:
    body = json.dumps({"texts": ["good " * 1_000_000]}).encode()
    with server.client() as client:
        before = stats(client)
        started = time.monotonic()
        response = client.post("/predict", content=body)
        seconds = time.monotonic() - started
        after = stats(client)
        healthy = client.get("/health").status_code
    assert response.status_code == 413, response.text
    assert "texts[0] has over 100000 UTF-8 bytes" in response.json()["detail"]
    assert seconds < 5
    assert after["texts"] == before["texts"] and healthy == 200


def test_unknown_route_and_method_answer_json(server: Server) -> None:
    with server.client() as client:
        missing = client.get("/nope")
        wrong = client.get("/predict")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert wrong.status_code == 405 and "detail" in wrong.json()


# ---------------------------------------------------------------- the app in-process


@pytest.fixture(scope="module")
def small_app_client(lora_run: Path) -> Iterator[Any]:
    """create_app with a tiny body limit, its lifespan run by TestClient (no socket)."""
    from fastapi.testclient import TestClient

    app = create_app(lora_run, precision="fp32", config=ServeConfig(max_texts=1, max_text_bytes=10))
    with TestClient(app) as client:
        yield client


def test_body_over_the_limit_is_refused_before_it_is_read(small_app_client: Any) -> None:
    limit = ServeConfig(max_texts=1, max_text_bytes=10).max_body_bytes
    declared = small_app_client.post("/predict", content=b" " * (limit + 1))
    assert declared.status_code == 413
    assert declared.json() == {
        "detail": f"request body of {limit + 1} bytes is over the limit of {limit} bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused as it streams in
        for _ in range(limit // 1000 + 2):
            yield b" " * 1000

    streamed = small_app_client.post("/predict", content=chunks())
    assert streamed.status_code == 413
    assert streamed.json() == {"detail": f"request body is over the limit of {limit} bytes"}


def test_app_in_process_answers_like_the_server(small_app_client: Any, lora_run: Path) -> None:
    expected = cli_predictions(lora_run, ["good film"], "--precision", "fp32")
    response = small_app_client.post("/predict", json={"texts": ["good film"]})
    assert response.status_code == 200
    assert_same(response.json()["predictions"], expected)
    assert small_app_client.get("/info").json()["limits"]["max_texts"] == 1


def test_a_failing_model_is_a_500_with_one_json_line(lora_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    import peft_sentiment.predict

    def broken(pipe: Any, texts: list[str], batch_size: int) -> list[Any]:
        raise RuntimeError("out of memory\nwith details on a second line")

    monkeypatch.setattr(peft_sentiment.predict, "predict", broken)
    with TestClient(create_app(lora_run)) as client:
        response = client.post("/predict", json={"texts": ["good"]})
        healthy = client.get("/health").status_code
    assert response.status_code == 500
    assert response.json() == {"detail": "prediction failed: out of memory"}
    assert healthy == 200  # the next batch runs


def test_health_is_503_before_the_model_is_loaded(lora_run: Path) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(create_app(lora_run))  # not entered: the lifespan has not run
    response = client.get("/health")
    assert response.status_code == 503 and response.json() == {"detail": "the model is not loaded"}


@pytest.fixture(scope="module")
def onnx_export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft_sentiment.export import export_run

    return export_run(lora_run, tmp_path_factory.mktemp("export") / "onnx").output


def test_an_onnx_export_is_served_as_predict_runs_it(onnx_export: Path, lora_run: Path) -> None:
    from fastapi.testclient import TestClient

    expected = cli_predictions(onnx_export, TEXTS)  # an export runs on onnxruntime unless told otherwise
    with TestClient(create_app(onnx_export)) as client:
        response = client.post("/predict", json={"texts": TEXTS})
        info = client.get("/info").json()
    assert response.status_code == 200, response.text
    assert_same(response.json()["predictions"], expected)
    metrics = json.loads((lora_run / "metrics.json").read_text())
    metadata = json.loads((onnx_export / "export.json").read_text())
    assert info["backend"] == "onnx" and info["method"] == "lora"
    assert info["base_model"] == metadata["base_model"]
    assert info["test_metrics"] == {k: metrics[k]
                                    for k in ("accuracy", "f1", "precision", "recall", "n_test")}
    assert info["labels"] == ["NEGATIVE", "POSITIVE"] and info["max_length"] == 64 and info["truncation"] == "head"


def test_info_of_an_adapter_folder_comes_from_its_adapter_config(lora_run: Path) -> None:
    from peft_sentiment.predict import load_pipeline
    from peft_sentiment.serve import describe_source

    described = describe_source(lora_run / "adapter", load_pipeline(lora_run / "adapter", precision="fp32"))
    assert described["method"] == "lora" and described["test_metrics"] is None
    assert described["labels"] == ["NEGATIVE", "POSITIVE"]


# ---------------------------------------------------------------- the micro-batcher with a fake model


class FakeModel:
    """Upper-cases texts; records every batch it was given."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        if self.fail_on in texts:
            raise ValueError(f"cannot read {self.fail_on!r}")
        return [t.upper() for t in texts]


def test_batcher_fills_batches_from_concurrent_requests() -> None:
    model = FakeModel()
    requests = [[f"r{i}t{j}" for j in range(1 + i % 5)] for i in range(12)]  # 1 to 5 texts each, 33 in all

    async def scenario() -> list[list[str]]:
        async with MicroBatcher(model, max_batch=8, max_wait_s=0.5) as batcher:
            return await asyncio.gather(*(batcher.submit(r) for r in requests))

    answers = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert answers == [[t.upper() for t in r] for r in requests]  # each request its own results, in order
    assert [len(b) for b in model.batches] == [8, 8, 8, 8, 1]  # full batches: requests split across them
    assert [t for b in model.batches for t in b] == [t for r in requests for t in r]


def test_batcher_sends_a_lone_request_after_max_wait() -> None:
    model = FakeModel()

    async def scenario() -> tuple[list[str], float, list[str]]:
        async with MicroBatcher(model, max_batch=8, max_wait_s=0.05) as batcher:
            started = time.monotonic()
            first = await batcher.submit(["a"])
            waited = time.monotonic() - started
            await asyncio.sleep(0.1)
            second = await batcher.submit(["b", "c"])
            return first, waited, second

    first, waited, second = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert first == ["A"] and second == ["B", "C"]
    assert 0.04 <= waited < 5
    assert model.batches == [["a"], ["b", "c"]]


def test_batcher_error_reaches_every_request_of_its_batch_and_the_next_batch_runs() -> None:
    model = FakeModel(fail_on="bad")

    async def scenario() -> tuple[list[Any], list[str]]:
        async with MicroBatcher(model, max_batch=4, max_wait_s=0.2) as batcher:
            failed = await asyncio.gather(batcher.submit(["x", "bad"]), batcher.submit(["y"]),
                                          return_exceptions=True)
            return failed, await batcher.submit(["z"])

    failed, after = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert all(isinstance(f, ValueError) and "cannot read 'bad'" in str(f) for f in failed)
    assert after == ["Z"]


def test_batcher_skips_cancelled_requests_and_counts_forward_passes() -> None:
    model = FakeModel()

    async def scenario() -> tuple[list[str], Any]:
        async with MicroBatcher(model, max_batch=4, max_wait_s=0.2) as batcher:
            gone = asyncio.create_task(batcher.submit(["gone"]))
            await asyncio.sleep(0)  # queued
            gone.cancel()
            kept = await batcher.submit(["kept"])
            return kept, batcher.stats

    kept, counted = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert kept == ["KEPT"] and model.batches == [["kept"]]
    assert (counted.requests, counted.texts, counted.batches) == (2, 1, 1)


def test_batcher_fails_waiting_requests_when_it_stops() -> None:
    release = threading.Event()

    def slow(texts: list[str]) -> list[str]:
        release.wait(10)
        return texts

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(slow, max_batch=1, max_wait_s=0)
        async with batcher:
            waiting = [asyncio.create_task(batcher.submit([t])) for t in "abc"]
            await asyncio.sleep(0.05)  # "a" is in the model, "b" and "c" queued
        release.set()
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert all(isinstance(r, BatcherStopped) and "shutting down" in str(r) for r in results)


def test_serve_config_names_a_bad_limit() -> None:
    from peft_sentiment.errors import ConfigError

    for kwargs, fragment in [({"max_batch": 0}, "max_batch must be a positive integer, got 0"),
                             ({"max_texts": -1}, "max_texts"), ({"max_text_bytes": 1.5}, "max_text_bytes"),
                             ({"max_wait_ms": float("inf")}, "max_wait_ms"), ({"max_wait_ms": -1}, "got -1")]:
        with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
            ServeConfig(**kwargs)


# ---------------------------------------------------------------- the command


def test_full_run_served_with_defaults_then_sigterm_stops_it_cleanly(smoke_full: Any, tmp_path: Path) -> None:
    texts = TEXTS[:3]
    expected = cli_predictions(smoke_full.path, texts)  # precision auto on both sides, one batch each
    with running_server(smoke_full.path, tmp_path) as server:
        with server.client() as client:
            answer = client.post("/predict", json={"texts": texts}).json()["predictions"]
            info = client.get("/info").json()
        code = stop(server.process)
    assert_same(answer, expected)
    assert info["method"] == "full"
    assert info["limits"]["max_batch"] == 32 and info["limits"]["max_texts"] == 256
    assert info["test_metrics"]["accuracy"] == smoke_full.metrics["accuracy"]
    log = server.log.read_text()
    assert code == 128 + signal.SIGTERM, log
    assert "Traceback" not in log
    assert f"serving {smoke_full.path} on {server.url}" in log


def test_broken_model_folder_exits_with_one_error_line(smoke_full: Any, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(smoke_full.path / "model", broken)
    (broken / "config.json").write_text("{not json")
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "peft_sentiment", "serve", str(broken),
                             "--port", str(port)], capture_output=True, text=True, timeout=START_TIMEOUT_S,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(broken) in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_port_in_use_is_one_error_line(lora_run: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = invoke(["serve", lora_run, "--port", port])
    assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{port}", "in use")


def test_without_fastapi_serve_says_what_to_install(monkeypatch: pytest.MonkeyPatch, lora_run: Path) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "peft_sentiment.serve")
    result = invoke(["serve", lora_run])
    assert_one_line_error(result, 1, "pip install 'peft-sentiment[serve]'")


def test_help_names_the_options() -> None:
    result = invoke(["serve", "--help"])
    assert result.exit_code == 0
    for option in ("SOURCE", "--host", "--port", "--backend", "--max-batch", "--max-wait-ms", "--max-texts",
                   "--max-text-bytes"):
        assert option in result.stdout
