"""Predictions over HTTP: a FastAPI app that micro-batches the texts of concurrent requests.

`create_app(source)` returns the app (POST /predict, GET /health, GET /info); its lifespan loads the
model once and runs a `MicroBatcher`, which gathers texts from concurrent requests into one forward
pass (up to `max_batch` texts, or what arrived within `max_wait_ms` of the first) in a worker thread,
so the event loop keeps accepting requests while the model computes. `serve(source, host, port)`
runs it on uvicorn until SIGINT or SIGTERM.

Request limits are checked before any text reaches the model: a body larger than any request within
the limits can be is refused before it is read (from its Content-Length, else while it streams in),
then the JSON is parsed and every text's UTF-8 size checked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import truncation
from .config import expand_path, path_exists
from .errors import ConfigError, first_line

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
except ModuleNotFoundError:
    raise ConfigError("serve needs fastapi and uvicorn: pip install 'peft-sentiment[serve]'") from None

log = logging.getLogger(__name__)

TEST_METRICS = ("accuracy", "f1", "precision", "recall", "n_test")  # from a run's metrics.json
# A JSON string may spell one UTF-8 byte as up to 6 bytes (a control character as \u001f), and the
# list, the key and whitespace around them need a little more: a body over this bound cannot hold a
# request within the limits, so it is refused unread.
JSON_BYTES_PER_TEXT_BYTE = 6
JSON_OVERHEAD_BYTES = 64 * 1024

R = TypeVar("R")


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 32  # texts per forward pass
    max_wait_ms: float = 10.0  # how long a batch waits for more texts after its first arrived
    max_texts: int = 256  # texts per request (more: 413)
    max_text_bytes: int = 100_000  # UTF-8 bytes per text (more: 413)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_texts", "max_text_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.max_wait_ms, (int, float)) and math.isfinite(self.max_wait_ms)
                and self.max_wait_ms >= 0):
            raise ConfigError(f"max_wait_ms must be a finite number of milliseconds >= 0, "
                              f"got {self.max_wait_ms!r}")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body a request within the limits can need."""
        return self.max_texts * (JSON_BYTES_PER_TEXT_BYTE * self.max_text_bytes + 4) + JSON_OVERHEAD_BYTES

    def limits(self) -> dict[str, Any]:
        return {**asdict(self), "max_body_bytes": self.max_body_bytes}


# ---------------------------------------------------------------- micro-batching


class BatcherStopped(RuntimeError):
    """The batcher stopped (the server is shutting down) before a request's texts were done."""


@dataclass
class BatchStats:
    requests: int = 0  # requests submitted
    texts: int = 0  # texts sent to the model
    batches: int = 0  # model calls (forward passes)


@dataclass(eq=False)
class _Job(Generic[R]):
    """One request's texts, its results as they come back, and the future its handler awaits."""

    texts: Sequence[str]
    future: asyncio.Future[list[R]]
    arrived: float  # event loop time
    taken: int = 0  # texts handed to batches so far
    filled: int = 0  # results received so far
    results: list[Any] = field(init=False)  # one slot per text

    def __post_init__(self) -> None:
        self.results = [None] * len(self.texts)


class MicroBatcher(Generic[R]):
    """Runs `model(texts) -> one result per text` on batches gathered from concurrent `submit` calls.

    A batch closes when it holds `max_batch` texts, or `max_wait_s` after its first request arrived
    (it still takes whatever is queued by then). A request with more texts than the room left is split
    across batches, and gets its results, in order, once all its texts are done. The model runs in a
    worker thread, one batch at a time. Use as `async with MicroBatcher(...) as batcher:`.
    """

    def __init__(self, model: Callable[[list[str]], Sequence[R]], max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job[R]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MicroBatcher[R]:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name="micro-batcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._worker is not None:
            self._worker.cancel()
            # The worker's own cancellation comes back as a result; a cancellation of this task still raises.
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def submit(self, texts: Sequence[str]) -> list[R]:
        """The model's results for `texts`, in order."""
        if self._queue is None or not self.running:
            raise RuntimeError("the batcher is not running: use it as `async with MicroBatcher(...)`")
        self.stats.requests += 1
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        job: _Job[R] = _Job(texts=list(texts), future=loop.create_future(), arrived=loop.time())
        self._queue.put_nowait(job)
        return await job.future

    async def _work(self) -> None:
        assert self._queue is not None
        carry: _Job[R] | None = None  # a request only partly batched so far
        batch: list[tuple[_Job[R], int, int]] = []
        try:
            while True:
                job = carry if carry is not None else await self._queue.get()
                carry, batch = None, []
                size, deadline = 0, job.arrived + self.max_wait_s
                while job is not None:
                    if not job.future.done():  # done: its request was cancelled, or failed in a batch
                        take = min(self.max_batch - size, len(job.texts) - job.taken)
                        batch.append((job, job.taken, job.taken + take))
                        job.taken += take
                        size += take
                        if job.taken < len(job.texts):
                            carry = job
                            break
                        if size == self.max_batch:
                            break
                    job = await self._next(deadline)
                if batch:
                    await self._run(batch)
        finally:  # cancelled (shutdown): no request is left waiting
            pending = [job for job, _, _ in batch] + ([carry] if carry is not None else [])
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            for job in pending:
                if not job.future.done():
                    job.future.set_exception(BatcherStopped("the server is shutting down"))

    async def _next(self, deadline: float) -> _Job[R] | None:
        """The next queued request, waiting for one until `deadline`; None when there is none by then."""
        assert self._queue is not None
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0 or not self._queue.empty():
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _run(self, batch: list[tuple[_Job[R], int, int]]) -> None:
        texts = [text for job, start, stop in batch for text in job.texts[start:stop]]
        self.stats.batches += 1
        self.stats.texts += len(texts)
        try:
            outputs = await asyncio.to_thread(self._model, texts)
            if len(outputs) != len(texts):
                raise RuntimeError(f"the model returned {len(outputs)} results for {len(texts)} texts")
        except Exception as err:  # noqa: BLE001 - every request in the batch gets the model's error
            for job, _, _ in batch:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        offset = 0
        for job, start, stop in batch:
            job.results[start:stop] = outputs[offset:offset + stop - start]
            offset += stop - start
            job.filled += stop - start
            if job.filled == len(job.texts) and not job.future.done():
                job.future.set_result(job.results)


# ---------------------------------------------------------------- requests


class RequestError(Exception):
    """A request the server refuses: its HTTP status and a one-line message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_texts(body: bytes, config: ServeConfig) -> list[str]:
    """The texts of a `{"texts": [...]}` body, or a `RequestError` naming what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError; deep nesting recurses
        reason = "nested too deeply" if isinstance(err, RecursionError) else first_line(err)
        raise RequestError(422, f"request body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise RequestError(422, 'request body must be a JSON object {"texts": [...]}, '
                                f"got {_json_type(data)}")
    if "texts" not in data:
        raise RequestError(422, 'request body has no "texts" field: send {"texts": ["a review", ...]}')
    unknown = sorted(set(data) - {"texts"})
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r} in the request body (known: texts)")
    texts = data["texts"]
    if not isinstance(texts, list):
        raise RequestError(422, f'"texts" must be a list of strings, got {_json_type(texts)}')
    if not texts:
        raise RequestError(422, '"texts" is empty: send at least one text')
    if len(texts) > config.max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; the limit is {config.max_texts} "
                                "(--max-texts)")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(422, f"texts[{i}] must be a string, got {_json_type(text)}")
        if len(text) > config.max_text_bytes:  # at least one byte per character: too long before encoding
            raise RequestError(413, f"texts[{i}] has over {config.max_text_bytes} UTF-8 bytes; the limit is "
                                    f"{config.max_text_bytes} (--max-text-bytes)")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise RequestError(422, f"texts[{i}] is not valid Unicode (it holds a lone surrogate)") from None
        if size > config.max_text_bytes:
            raise RequestError(413, f"texts[{i}] has {size} UTF-8 bytes; the limit is "
                                    f"{config.max_text_bytes} (--max-text-bytes)")
    return texts


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- the app


def describe_source(source: str | Path, pipe: Any) -> dict[str, Any]:
    """Backend, base model, method, test metrics and label names of what `pipe` was loaded from: a
    run's config.yaml and metrics.json, an export's export.json, else what the model records (an
    adapter's base and PEFT type; no metrics)."""
    from .onnx_backend import OnnxClassifier

    onnx = isinstance(pipe, OnnxClassifier)  # it has no torch model
    id2label = pipe.id2label if onnx else pipe.model.config.id2label
    described = _describe_folder(expand_path(str(source))) if path_exists(str(source), folder=True) else None
    if described is None:
        described = _describe_model(pipe.model, source)
    return {"backend": pipe.backend if onnx else "torch", **described,
            "labels": [id2label[i] for i in sorted(id2label)]}


def _describe_folder(path: Path) -> dict[str, Any] | None:
    from .onnx_backend import is_export, read_metadata
    from .rundir import METRICS_FILE, is_run, load_metrics, load_run_config

    if is_run(path):
        cfg = load_run_config(path)
        metrics = load_metrics(path) if (path / METRICS_FILE).is_file() else None
        return {"base_model": cfg.model.name, "method": cfg.method,
                "test_metrics": {k: metrics.get(k) for k in TEST_METRICS} if metrics is not None else None}
    if is_export(path):
        meta = read_metadata(path)
        return {"base_model": meta.get("base_model"), "method": meta.get("method"),
                "test_metrics": meta.get("test_metrics") or None}
    return None


def _describe_model(model: Any, source: str | Path) -> dict[str, Any]:
    peft_configs = getattr(model, "peft_config", None)
    if peft_configs:
        adapter = next(iter(peft_configs.values()))
        method = getattr(adapter.peft_type, "value", str(adapter.peft_type)).lower()
        return {"base_model": adapter.base_model_name_or_path, "method": method, "test_metrics": None}
    name = getattr(model.config, "name_or_path", None) or str(source)
    return {"base_model": name, "method": None, "test_metrics": None}


def create_app(source: str | Path, backend: str | None = None, precision: str = "auto",
               config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving `source` (a run, a model or adapter folder, an ONNX export or a Hub id)
    with `backend` as `predict.load_pipeline` takes it (None: onnx for an export, torch otherwise).

    The model loads when the app's lifespan starts (in `serve` before the socket is bound; in tests,
    `with TestClient(app)`), so a model that cannot be loaded, or a bad backend or precision, fails
    before any request is answered.
    """
    from .predict import load_pipeline, max_length, predict

    config = config or ServeConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pipe = load_pipeline(source, precision=precision, backend=backend)

        def run_model(texts: list[str]) -> list[Any]:
            return predict(pipe, texts, batch_size=len(texts))  # the whole batch in one forward pass

        app.state.info = {"source": str(source), **describe_source(source, pipe), "max_length": max_length(pipe),
                          "truncation": truncation.of(pipe.tokenizer).strategy, "limits": config.limits()}
        async with MicroBatcher(run_model, config.max_batch, config.max_wait_ms / 1000) as batcher:
            app.state.batcher = batcher
            try:
                yield
            finally:
                del app.state.batcher

    app = FastAPI(title="peft-sentiment", summary="Binary sentiment predictions.", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error: {type(err).__name__}"}, status_code=500)

    @app.post("/predict")
    async def predict_texts(request: Request) -> JSONResponse:
        """`{"texts": [...]}` -> `{"predictions": [{"label": ..., "score": ...}, ...]}`, in order."""
        batcher = _running(request.app)
        texts = parse_texts(await read_body(request, config.max_body_bytes), config)
        try:
            predictions = await batcher.submit(texts)
        except BatcherStopped as err:
            raise RequestError(503, str(err)) from None
        except Exception as err:  # noqa: BLE001 - the client gets one line; the log keeps the traceback
            log.error("prediction failed", exc_info=err)
            raise RequestError(500, f"prediction failed: {first_line(err)}") from None
        return JSONResponse({"predictions": [{"label": p.label, "score": p.score} for p in predictions]})

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """200 once the model is loaded and the batcher runs."""
        _running(request.app)
        return JSONResponse({"status": "ok"})

    @app.get("/info")
    async def info(request: Request) -> JSONResponse:
        """The model served, its test metrics, the limits, and counts of requests and forward passes."""
        batcher = _running(request.app)
        return JSONResponse({**request.app.state.info, "stats": asdict(batcher.stats)})

    return app


def _running(app: FastAPI) -> MicroBatcher[Any]:
    batcher = getattr(app.state, "batcher", None)
    if batcher is None or not batcher.running:
        raise RequestError(503, "the model is not loaded")
    return batcher


# ---------------------------------------------------------------- the server


def serve(source: str | Path, host: str = "127.0.0.1", port: int = 8000, backend: str | None = None,
          precision: str = "auto", config: ServeConfig | None = None,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Load the model, listen on `host:port` and answer requests until SIGINT or SIGTERM.

    Nothing listens before the model has loaded: a model that fails raises its own error first.
    `on_ready(url)` is called once the socket is bound. On a signal, the requests in flight finish,
    then the signal is raised again (the process exits as the signal's handler says).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"port must be between 1 and 65535, got {port!r}")
    app = create_app(source, backend, precision, config)
    asyncio.run(_serve(app, host, port, on_ready))


async def _serve(app: FastAPI, host: str, port: int, on_ready: Callable[[str], None] | None) -> None:
    # The lifespan is entered here rather than by uvicorn: uvicorn would log a failed model load as a
    # traceback and exit 3, where here it raises the loader's own one-line error before any socket exists.
    async with app.router.lifespan_context(app):
        sock = listen(host, port)
        with sock:
            server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="info"))
            if on_ready is not None:
                shown = f"[{host}]" if ":" in host else host
                on_ready(f"http://{shown}:{port}")
            await server.serve(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` and listening, or one line saying why it cannot be."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind at once after a restart
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:  # address in use, no such address or host, a privileged port
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or first_line(err)}") from None
    return sock
