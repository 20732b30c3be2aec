"""Prediction speed and agreement: `pipeline("text-classification")` with its defaults against
peft-sentiment's torch pipeline, its ONNX exports (fp32 and int8) and `serve`, on the same model and
the same real reviews.

    python benchmarks/speed/predict_backends.py --run RUN --data DIR --out DIR [--n 2000] [--work DIR]

RUN is a finished adapter run (e.g. LoRA on the MiniLM stand-in). The script merges it and exports it
(fp32, int8 and int8-static) with the project's own commands into --work, unless they are there already;
the int8 exports with --force, so that one refused by its check is still measured, and marked. The test
reviews are the first N of `shuffle(seed=42)` of DIR/test.parquet; every contender reads them
truncated at the run's max length, which is also what the default pipeline does (the merged model's
tokenizer records it as model_max_length, and the pipeline is called with truncation=True).

Batch size and threads of the ONNX contenders are chosen by speed on 256 reviews of the train split
that neither training (the first 3000 of shuffle(seed=42)) nor validation (the next 500) used, never
on the test reviews. Each in-process contender runs after a warm-up on 16 reviews. `serve` runs as
its own process: 8 client threads send one review per request, and each request's latency is timed.
Writes results.json and results.md to --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
import transformers
from datasets import load_dataset
from transformers import pipeline

from peft_sentiment.onnx_backend import OnnxClassifier
from peft_sentiment.openvino_backend import BATCH as OV_BATCH
from peft_sentiment.perf import device_name
from peft_sentiment.predict import load_pipeline, predict
from peft_sentiment.run import versions

SELECTION = (3500, 3756)  # rows of shuffle(seed=42) of the train split after training and validation
BATCHES = (1, 8, 16, 32, 64)
CLIENTS = 8


def reviews(data: str, split: str, rows: tuple[int, int]) -> tuple[list[str], list[int]]:
    ds = load_dataset("parquet", data_files={split: str(Path(data) / f"{split}.parquet")})[split]
    part = ds.shuffle(seed=42).select(range(*rows))
    return list(part["text"]), list(part["label"])


def cli(*args: str) -> list[str]:
    cmd = [sys.executable, "-m", "peft_sentiment", *args]
    subprocess.run(cmd, check=True)
    return cmd


def timed(fn: Callable[[list[str]], list[str]], texts: list[str]) -> tuple[list[str], float]:
    fn(texts[:16])  # warm-up
    start = time.perf_counter()
    labels = fn(texts)
    return labels, time.perf_counter() - start


def onnx_labels(folder: Path, threads: int, batch: int) -> Callable[[list[str]], list[str]]:
    model = OnnxClassifier(folder, threads=threads)
    return lambda texts: [p.label for p in predict(model, texts, batch)]


def choose(folder: Path, texts: list[str]) -> dict[str, Any]:
    """The fastest (threads, batch size) on the selection reviews."""
    trials = []
    for threads in (1, 2):
        for batch in BATCHES:
            _, seconds = timed(onnx_labels(folder, threads, batch), texts)
            trials.append({"threads": threads, "batch_size": batch, "reviews_per_second": len(texts) / seconds})
    best = max(trials, key=lambda t: t["reviews_per_second"])
    return {"threads": best["threads"], "batch_size": best["batch_size"], "trials": trials}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_run(export: Path, texts: list[str], options: list[str]) -> dict[str, Any]:
    """`peft-sentiment serve` under CLIENTS concurrent clients, one review per request."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "peft_sentiment", "serve", str(export), "--port", str(port), *options]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit("serve did not answer /health within 180 s")
        labels: list[str | None] = [None] * len(texts)
        latencies: list[float] = []
        lock = threading.Lock()

        def client(indices: range) -> None:
            with httpx.Client(timeout=120) as http:
                for i in indices:
                    start = time.perf_counter()
                    answer = http.post(f"{url}/predict", json={"texts": [texts[i]]})
                    answer.raise_for_status()
                    with lock:
                        latencies.append(time.perf_counter() - start)
                    labels[i] = answer.json()["predictions"][0]["label"]

        with httpx.Client() as http:  # warm-up
            http.post(f"{url}/predict", json={"texts": texts[:16]}).raise_for_status()
        threads = [threading.Thread(target=client, args=(range(k, len(texts), CLIENTS),)) for k in range(CLIENTS)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        stats = httpx.get(f"{url}/info").json().get("stats")
    finally:
        server.terminate()
        server.wait(timeout=60)
    cuts = statistics.quantiles(latencies, n=100)
    return {"command": cmd, "seconds": seconds, "labels": labels, "p50_ms": 1000 * cuts[49],
            "p95_ms": 1000 * cuts[94], "server_stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished adapter run")
    parser.add_argument("--data", required=True, help="folder with train.parquet and test.parquet")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--work", type=Path, default=Path("predict-work"), help="merged model and exports")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    merged, fp32, int8 = args.work / "merged", args.work / "onnx-fp32", args.work / "onnx-int8"
    static = args.work / "onnx-int8-static"
    commands = []
    if not merged.is_dir():
        commands.append(cli("merge", str(args.run), "-o", str(merged)))
    if not fp32.is_dir():
        commands.append(cli("export", str(args.run), "--format", "onnx", "-o", str(fp32)))
    if not int8.is_dir():
        commands.append(cli("export", str(args.run), "--format", "onnx", "--quantize", "int8", "--force", "-o",
                            str(int8)))
    if not static.is_dir():
        commands.append(cli("export", str(args.run), "--format", "onnx", "--quantize", "int8-static", "--force",
                            "-o", str(static)))
    exports = (("onnx fp32", fp32), ("onnx int8", int8), ("onnx int8-static", static))
    checks = {name: json.loads((folder / "export_check.json").read_text()) for name, folder in exports}
    forced = {name: " (its export check failed: kept with --force)" if check.get("forced") else ""
              for name, check in checks.items()}
    texts, gold = reviews(args.data, "test", (0, args.n))
    selection, _ = reviews(args.data, "train", SELECTION)
    chosen = {name: choose(folder, selection) for name, folder in exports}

    rows: list[dict[str, Any]] = []
    default = pipeline("text-classification", model=str(merged))
    base, seconds = timed(lambda t: [o["label"] for o in default(t, truncation=True)], texts)
    rows.append({"contender": 'pipeline("text-classification"), defaults (batch 1, fp32)', "seconds": seconds,
                 "labels": base})
    for precision in ("fp32", "auto"):
        pipe = load_pipeline(merged, precision=precision)
        labels, seconds = timed(lambda t: [p.label for p in predict(pipe, t)], texts)
        rows.append({"contender": f"predict, torch, precision {precision}, batch 64 length-sorted",
                     "seconds": seconds, "labels": labels})
    for name, folder in exports:
        pick = chosen[name]
        labels, seconds = timed(onnx_labels(folder, pick["threads"], pick["batch_size"]), texts)
        rows.append({"contender": f"predict, {name}, batch {pick['batch_size']} length-sorted, "
                                  f"{pick['threads']} thread(s){forced[name]}", "seconds": seconds, "labels": labels})
    for name, folder in (("fp32", fp32), ("int8-static", static)):
        ov = load_pipeline(folder, backend="openvino")  # precision auto: bf16 on a CPU with AVX512-BF16 or AMX
        labels, seconds = timed(lambda t: [p.label for p in predict(ov, t)], texts)
        rows.append({"contender": f"predict, openvino {ov.precision} (the {name} export), requests of {OV_BATCH} "
                                  f"length-sorted, {ov.requests} in flight{forced['onnx ' + name]}",
                     "seconds": seconds, "labels": labels})
    served = serve_run(static, texts, ["--backend", "openvino"])
    rows.append({"contender": f"serve, openvino {ov.precision} (the int8-static export), {CLIENTS} concurrent "
                              "clients, 1 review per request",
                 "seconds": served["seconds"], "labels": served["labels"],
                 "p50_ms": served["p50_ms"], "p95_ms": served["p95_ms"]})

    torch_fp32 = rows[1]["labels"]
    for row in rows:
        labels = row.pop("labels")
        row["reviews_per_second"] = args.n / row["seconds"]
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
        row["agreement_with_torch_fp32"] = _agree(torch_fp32, labels)
        row["agreement_with_default_pipeline"] = _agree(base, labels)
        row["accuracy"] = sum(label == ("POSITIVE" if g == 1 else "NEGATIVE") for label, g in zip(labels, gold)) / args.n
    results = {
        "command": shlex.join(["python", "benchmarks/speed/predict_backends.py", *sys.argv[1:]]),
        "setup_commands": [shlex.join(c) for c in commands],
        "serve_command": shlex.join(served["command"]),
        "environment": {"device": device_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "python": platform.python_version(),
                        "versions": versions()},
        "model": str(args.run), "n": args.n, "choices": chosen, "export_checks": checks,
        "server_stats": served["server_stats"], "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| contender | reviews/s | speed-up | labels agreeing with torch fp32 | with the default pipeline "
             "| accuracy | latency p50 / p95 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        latency = f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f} ms" if "p50_ms" in r else "-"
        lines.append(f"| {r['contender']} | {r['reviews_per_second']:.2f} | {r['speedup']:.2f}x | "
                     f"{100 * r['agreement_with_torch_fp32']:.2f}% | {100 * r['agreement_with_default_pipeline']:.2f}% "
                     f"| {r['accuracy']:.4f} | {latency} |")
    lines += ["", f"Model: {args.run} (merged into {merged}). Reviews: the first {args.n} of shuffle(seed=42) of "
              f"{args.data}/test.parquet, truncated at the run's max length.",
              f"Chosen on 256 train-split reviews (rows {SELECTION[0]}-{SELECTION[1] - 1} of shuffle(seed=42)): "
              + "; ".join(f"{k}: batch {v['batch_size']}, {v['threads']} thread(s)" for k, v in chosen.items()) + ".",
              *(f"{name} export check: {json.dumps({k: v for k, v in check.items() if not isinstance(v, (list, dict))})}"
                for name, check in checks.items() if name != "onnx fp32"),
              f"Device: {results['environment']['device']}; torch {torch.__version__}, transformers "
              f"{transformers.__version__}.", f"Command: `{results['command']}`"]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _agree(a: list[str], b: list[Any]) -> float:
    if len(a) != len(b):
        raise SystemExit(f"{len(b)} predictions for {len(a)} reviews")
    return sum(x == y for x, y in zip(a, b)) / len(a)


if __name__ == "__main__":
    main()
