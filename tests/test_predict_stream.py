"""Streaming predict: chunked reading in input order, skipped blank lines with line numbers, the
truncation note, invalid UTF-8, atomic --output, and bounded memory on large inputs."""

from __future__ import annotations

import importlib
import io
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from conftest import CliRun, assert_one_line_error, dot_entries, error_lines, invoke
from hypothesis import given, settings
from hypothesis import strategies as st

from peft_sentiment.errors import DataError
from peft_sentiment.predict import CHUNK_LINES, Prediction, load_pipeline, predict, predict_stream, read_lines

WORDS = ["the", "movie", "film", "was", "great", "good", "bad", "awful", "boring", "brilliant", "plot"]
# Lines of different lengths, blank lines among them (1-based numbers of the blank ones: 3, 5, 9).
TEXTS_WITH_BLANKS = [
    "The movie was wonderful. The acting was brilliant.",
    "bad",
    "",
    "The plot was a waste of time. The acting was boring. I hated every minute of it, really.",
    "   \t ",
    "It runs a little over two hours.",
    "great great great",
    "The film is a masterpiece",
    "",
    "awful",
]
LONG_TEXT = " ".join(["the movie was great"] * 30)  # 120 words: past the smoke run's 64 tokens
SMOKE_MAX_LENGTH = 64


def short_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + "\n" for _ in range(n)]


def json_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def notes(stderr: str) -> list[str]:
    return [line for line in error_lines(stderr) if line.startswith("note:")]


@pytest.fixture(scope="module")
def pipe(smoke_full: CliRun) -> Any:
    return load_pipeline(smoke_full.path)


# ---------------------------------------------------------------- the library with a stand-in pipeline


class FakeTokenizer:
    model_max_length = 10**30  # the pipeline's own max_length below wins

    def __call__(self, texts: list[str], **kwargs: Any) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0] * (len(t.split()) + 2) for t in texts]}


class FakePipeline:
    """Labels a text by its length; records what each call received."""

    _preprocess_params: ClassVar[dict[str, Any]] = {"truncation": True, "max_length": 6}

    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer()
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str], batch_size: int) -> list[dict[str, Any]]:
        self.calls.append(list(texts))
        return [expected_output(t) for t in texts]


def expected_output(text: str) -> dict[str, Any]:
    return {"label": "POSITIVE" if len(text) % 2 else "NEGATIVE", "score": 0.5 + (len(text) % 7) / 14}


lines_strategy = st.lists(
    st.one_of(st.just(""), st.sampled_from([" ", "\t", "  \n"]),
              st.lists(st.sampled_from(WORDS), min_size=1, max_size=9).map(" ".join)),
    max_size=40,
)


@settings(max_examples=50, deadline=None)
@given(lines=lines_strategy, chunk_size=st.integers(1, 12), batch_size=st.integers(1, 5))
def test_stream_keeps_order_and_line_numbers(lines: list[str], chunk_size: int, batch_size: int) -> None:
    fake = FakePipeline()
    got = list(predict_stream(fake, [f"{line}\n" for line in lines], batch_size, chunk_size))
    kept = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    assert [(p.line, p.text) for p in got] == kept
    assert [(p.label, p.score) for p in got] == [tuple(expected_output(t).values()) for _, t in kept]
    assert [p.truncated for p in got] == [len(t.split()) + 2 > 6 for _, t in kept]
    assert all(len(call) <= chunk_size for call in fake.calls)
    for call in fake.calls:  # longest first within a chunk
        sizes = [len(t.split()) for t in call]
        assert sizes == sorted(sizes, reverse=True)


def test_stream_reads_lazily() -> None:
    consumed = itertools.count(1)
    endless = (f"line {next(consumed)}" for _ in itertools.repeat(None))
    first = list(itertools.islice(predict_stream(FakePipeline(), endless, 4, chunk_size=10), 15))
    assert [p.line for p in first] == list(range(1, 16))
    assert next(consumed) <= 21  # two chunks of 10 were read, no more


def test_predict_list_api_unchanged() -> None:
    texts = ["a b c d e f g", "", "x"]
    got = predict(FakePipeline(), texts, batch_size=2)
    assert [p.text for p in got] == texts  # every text, blank ones too
    assert all(isinstance(p, Prediction) and p.line is None for p in got)
    assert [p.truncated for p in got] == [True, False, False]


def test_stream_rejects_bad_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        list(predict_stream(FakePipeline(), ["a"], 1, chunk_size=0))


def test_read_lines_decodes_each_line() -> None:
    data = io.BytesIO("\ufeffcafé\r\n\nnaïve".encode() + b"\n")
    assert list(read_lines(data, "x")) == ["café\r\n", "\n", "naïve\n"]


def test_read_lines_names_the_bad_line() -> None:
    data = io.BytesIO(b"ok\nfine\nbad \xff byte\nnever read\n")
    with pytest.raises(DataError, match=r"^in\.txt line 3 is not valid UTF-8: byte 0xff at position 5"):
        list(read_lines(data, "in.txt"))
    data.seek(0)
    assert list(read_lines(data, "in.txt", errors="replace"))[2] == "bad \ufffd byte\n"


# ---------------------------------------------------------------- through the CLI with a trained model


def test_order_matches_one_text_at_a_time(smoke_full: CliRun, pipe: Any, tmp_path: Path) -> None:
    file = tmp_path / "in.txt"
    file.write_text("\n".join(TEXTS_WITH_BLANKS) + "\n")
    result = invoke(["predict", smoke_full.path, "--file", file, "--json", "--chunk-size", "3",
                     "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    rows = json_rows(result.stdout)
    kept = [t for t in TEXTS_WITH_BLANKS if t.strip()]
    assert [r["text"] for r in rows] == kept
    alone = [predict(pipe, [t])[0] for t in kept]
    assert [r["label"] for r in rows] == [p.label for p in alone]
    assert [r["score"] for r in rows] == pytest.approx([p.score for p in alone], abs=1e-4)


def test_scores_are_the_models_own_probabilities(smoke_full: CliRun) -> None:
    """Each row's label is the class the model's logits rank first and its score that class's softmax
    probability, to 1e-5 (a check like `score >= 0.5` holds for any top score of two classes)."""
    texts = [t for t in TEXTS_WITH_BLANKS if t.strip()] + [LONG_TEXT]
    result = invoke(["predict", smoke_full.path, *texts, "--json", "--precision", "fp32",
                     "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    rows = json_rows(result.stdout)
    fp32 = load_pipeline(smoke_full.path, precision="fp32")  # the same model and tokenizer
    for row, text in zip(rows, texts, strict=True):
        batch = fp32.tokenizer(text, truncation=True, max_length=SMOKE_MAX_LENGTH, return_tensors="pt")
        with torch.no_grad():
            probs = fp32.model(**batch).logits.float().softmax(-1)[0]
        best = int(probs.argmax())
        assert (row["text"], row["label"]) == (text, ["NEGATIVE", "POSITIVE"][best])
        assert row["score"] == pytest.approx(float(probs[best]), abs=1e-5)
    assert {r["label"] for r in rows} == {"NEGATIVE", "POSITIVE"}  # both labels' mapping exercised


def test_blank_lines_are_skipped_with_line_numbers(smoke_full: CliRun, tmp_path: Path) -> None:
    file = tmp_path / "in.txt"
    file.write_text("\n".join(TEXTS_WITH_BLANKS))  # no newline at the end
    result = invoke(["predict", smoke_full.path, "--file", file, "--json", "--chunk-size", "4"])
    assert result.exit_code == 0, result.output
    rows = json_rows(result.stdout)
    assert [r["line"] for r in rows] == [1, 2, 4, 6, 7, 8, 10]
    assert all(r["text"] == TEXTS_WITH_BLANKS[r["line"] - 1] for r in rows)
    assert set(rows[0]) == {"text", "label", "score", "line"}
    plain = invoke(["predict", smoke_full.path, "--file", file]).stdout.splitlines()
    assert [line.split("\t")[2] for line in plain] == [r["text"] for r in rows]


def test_stdin_lines_have_numbers_and_texts_do_not(smoke_full: CliRun, tmp_path: Path) -> None:
    result = invoke(["predict", smoke_full.path, "--json"], input="\n\ngood film\n")
    assert [(r["line"], r["text"]) for r in json_rows(result.stdout)] == [(3, "good film")]
    file = tmp_path / "in.txt"
    file.write_text("bad plot\n")
    result = invoke(["predict", smoke_full.path, "great", "--file", file, "--json"])
    rows = json_rows(result.stdout)
    assert [r["text"] for r in rows] == ["great", "bad plot"]
    assert "line" not in rows[0] and rows[1]["line"] == 1


def test_truncation_note_once(smoke_full: CliRun, tmp_path: Path) -> None:
    file = tmp_path / "in.txt"
    file.write_text(f"short one\n\n{LONG_TEXT}\nanother\n{LONG_TEXT} again\n{LONG_TEXT}\n")
    result = invoke(["predict", smoke_full.path, "--file", file, "--chunk-size", "2"])
    assert result.exit_code == 0, result.output
    assert notes(result.stderr) == [
        f"note: texts longer than {SMOKE_MAX_LENGTH} tokens are truncated to their start (first at line 3)"]
    assert len(result.stdout.splitlines()) == 5


def test_no_truncation_note_for_short_texts(smoke_full: CliRun) -> None:
    result = invoke(["predict", smoke_full.path, "good", "bad"])
    assert result.exit_code == 0, result.output
    assert notes(result.stderr) == []
    result = invoke(["predict", smoke_full.path, "good", LONG_TEXT])
    assert notes(result.stderr) == [f"note: texts longer than {SMOKE_MAX_LENGTH} tokens are truncated to their start"]


def test_invalid_utf8_is_one_line_error(smoke_full: CliRun, tmp_path: Path) -> None:
    file = tmp_path / "in.txt"
    file.write_bytes(b"good film\n\nbad \xff\xfe plot\nfine\n")
    line = assert_one_line_error(invoke(["predict", smoke_full.path, "--file", file]), 1,
                                 f"{file} line 3 is not valid UTF-8", "--errors replace")
    assert "0xff" in line
    result = invoke(["predict", smoke_full.path], input=b"good\n\xc3\x28\n")
    assert_one_line_error(result, 1, "standard input line 2 is not valid UTF-8")


def test_errors_replace_goes_on(smoke_full: CliRun, tmp_path: Path) -> None:
    file = tmp_path / "in.txt"
    file.write_bytes(b"good film\n\nbad \xff\xfe plot\nfine\n")
    result = invoke(["predict", smoke_full.path, "--file", file, "--errors", "replace", "--json"])
    assert result.exit_code == 0, result.output
    rows = json_rows(result.stdout)
    assert [(r["line"], r["text"]) for r in rows] == [
        (1, "good film"), (3, "bad \ufffd\ufffd plot"), (4, "fine")]


# ---------------------------------------------------------------- --output


def test_output_file(smoke_full: CliRun, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = invoke(["predict", smoke_full.path, "--json", "--output", out], input="good\n\nbad\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"2 predictions written to {out}\n"
    assert [r["line"] for r in json_rows(out.read_text())] == [1, 3]
    assert dot_entries(tmp_path) == []


def test_output_refuses_existing_file(smoke_full: CliRun, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("keep me\n")
    assert_one_line_error(invoke(["predict", smoke_full.path, "good", "--output", out]), 1,
                          str(out), "already exists", "--overwrite")
    assert out.read_text() == "keep me\n"
    result = invoke(["predict", smoke_full.path, "good", "--output", out, "--overwrite"])
    assert result.exit_code == 0, result.output
    label, _, text = out.read_text().rstrip("\n").split("\t")
    assert label in {"NEGATIVE", "POSITIVE"} and text == "good" and out.read_text().count("\n") == 1
    assert dot_entries(tmp_path) == []


def test_output_in_missing_folder(smoke_full: CliRun, tmp_path: Path) -> None:
    assert_one_line_error(invoke(["predict", smoke_full.path, "good", "-o", tmp_path / "no" / "out.txt"]),
                          1, "does not exist")


def test_output_untouched_on_failure(smoke_full: CliRun, tmp_path: Path) -> None:
    """A bad line after the first chunk was written: no file, no leftover, the old file kept."""
    file = tmp_path / "in.txt"
    file.write_bytes(b"good\nbad\nfine\n\xff\n")
    out = tmp_path / "out" / "res.txt"
    out.parent.mkdir()
    args = ["predict", smoke_full.path, "--file", file, "--chunk-size", "1", "--output", out]
    assert_one_line_error(invoke(args), 1, "line 4 is not valid UTF-8")
    assert not out.exists() and dot_entries(tmp_path) == []
    out.write_text("old\n")
    assert_one_line_error(invoke([*args, "--overwrite"]), 1, "line 4")
    assert out.read_text() == "old\n" and dot_entries(tmp_path) == []


def test_output_untouched_on_ctrl_c(smoke_full: CliRun, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("peft_sentiment.predict")  # the package exports a `predict` too
    real_stream = module.predict_stream

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        stream = real_stream(*args, **kwargs)
        yield next(stream)
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "predict_stream", interrupted)
    out = tmp_path / "out.txt"
    result = invoke(["predict", smoke_full.path, "--output", out, "--chunk-size", "1"], input="good\nbad\n")
    assert result.exit_code == 130, result.output
    assert not out.exists() and dot_entries(tmp_path) == []


# ---------------------------------------------------------------- subprocesses: streaming and memory


def _command(args: Sequence[Any]) -> list[str]:
    return [sys.executable, "-m", "peft_sentiment", *map(str, args)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


# Runs the CLI and writes its own peak RSS (VmHWM, KiB) to the file named first. Read in the process
# itself: getrusage() of a child counts the parent's peak too (vfork shares it up to exec).
PEAK_RSS_RUNNER = """
import atexit, runpy, sys
peak_file = sys.argv.pop(1)
def record():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(peak_file, "w") as out:
        out.write(kib)
atexit.register(record)
runpy.run_module("peft_sentiment", run_name="__main__", alter_sys=True)
"""


def run_measured(args: Sequence[Any], peak_file: Path, timeout: float = 240) -> tuple[int, int, str]:
    """Exit code, peak RSS (KiB) and stderr of the CLI with ARGS in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS_RUNNER, str(peak_file), *map(str, args)],
                          env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)
    return proc.returncode, int(peak_file.read_text()), proc.stderr


@pytest.mark.slow  # 45 s: two subprocesses over 10,000 and 100,000 lines; run with -m slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_stays_bounded(smoke_full: CliRun, tmp_path: Path) -> None:
    """Peak RSS for 100,000 lines is that of 10,000 lines, give or take noise (reading the whole
    input and keeping every prediction, as before streaming, adds about 40 MiB here)."""
    peaks = {}
    for n in (10_000, 100_000):
        lines = short_lines(n, seed=n)
        file = tmp_path / f"in-{n}.txt"
        file.write_text("".join(lines))
        out = tmp_path / f"out-{n}.jsonl"
        code, peaks[n], stderr = run_measured(["predict", smoke_full.path, "--file", file, "--json",
                                               "--batch-size", "64", "--output", out],
                                              tmp_path / f"peak-{n}")
        assert code == 0, stderr
        rows = json_rows(out.read_text())
        assert [r["line"] for r in rows] == list(range(1, n + 1))
        assert rows[-1]["text"] == lines[-1].rstrip("\n")
    growth_mib = (peaks[100_000] - peaks[10_000]) / 1024
    print(f"peak RSS: 10,000 lines {peaks[10_000] / 1024:.0f} MiB, "
          f"100,000 lines {peaks[100_000] / 1024:.0f} MiB")
    assert growth_mib < 16, peaks


def test_stdin_output_comes_before_input_ends(smoke_full: CliRun, tmp_path: Path) -> None:
    lines = short_lines(10_000)
    head = CHUNK_LINES + 100  # one full chunk, then the input stalls until the first result is read
    first_read = threading.Event()
    stalled_out = []

    def feed(stdin: Any) -> None:
        stdin.write("".join(lines[:head]))
        stdin.flush()
        stalled_out.append(not first_read.wait(timeout=180))
        stdin.write("".join(lines[head:]))
        stdin.close()

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(_command(["predict", smoke_full.path, "--json", "--batch-size", "64"]),
                                env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True)
        watchdog = threading.Timer(300, proc.kill)
        watchdog.start()
        feeder = threading.Thread(target=feed, args=(proc.stdin,))
        feeder.start()
        try:
            first = proc.stdout.readline()
            first_read.set()
            rest = proc.stdout.read()
            code = proc.wait()
        finally:
            first_read.set()
            feeder.join()
            watchdog.cancel()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    assert code == 0, stderr
    assert stalled_out == [False], "no output before the input ended"
    rows = json_rows(first + rest)
    assert [r["line"] for r in rows] == list(range(1, 10_001))
    assert [r["text"] for r in rows] == [line.rstrip("\n") for line in lines]


def test_closed_reader_stops_quietly(smoke_full: CliRun, tmp_path: Path) -> None:
    """`predict ... | head -1`: the reader goes away; no traceback, exit 141 as for SIGPIPE."""
    file = tmp_path / "in.txt"
    file.write_text("".join(short_lines(3000)))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(_command(["predict", smoke_full.path, "--file", file, "--chunk-size", "500"]),
                                env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        first = proc.stdout.readline()
        proc.stdout.close()
        code = proc.wait(timeout=240)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    assert first.count(b"\t") == 2
    assert code == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
