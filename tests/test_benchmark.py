"""The benchmark: aggregation by hand, its contract with child processes (fake children), and smoke
benchmarks end to end through the CLI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO, assert_one_line_error, dot_entries, invoke

from peft_sentiment import events
from peft_sentiment.config import config_to_dict, load_config
from peft_sentiment.errors import ConfigError
from peft_sentiment.report import confusion_plots, markdown, plot, summarize

# ---------------------------------------------------------------- aggregation on fixed inputs


def _run(label: str, seed: int, preds: list[int], labels: list[int], memory: float) -> dict[str, Any]:
    acc = float(np.mean(np.array(preds) == np.array(labels)))
    return {
        "name": f"{label}-seed{seed}", "label": label, "method": label, "seed": seed, "status": "ok",
        "upload_kind": "model", "upload_bytes": 1000,
        "train": {"peak_memory_mib": memory, "train_seconds": 10.0 * seed, "train_samples_per_second": 2.0,
                  "trainable_params": 10, "total_params": 100, "trainable_share": 0.1,
                  "peak_memory_kind": "test", "compute_dtype": "fp32"},
        "evals": {"6": {"accuracy": acc, "f1": 0.5, "precision": 0.5, "recall": 0.5,
                        "eval_samples_per_second": 100.0, "preds": preds}},
    }


def _results() -> dict[str, Any]:
    labels = [1, 1, 1, 0, 0, 0]
    return {
        "spec": {"methods": ["full", "lora"], "seeds": [1, 2], "baseline": "full", "resamples": 300},
        "test_sets": {"6": {"labels": labels}},
        "runs": [
            _run("full", 1, [1, 1, 1, 0, 0, 0], labels, 100.0),  # 6/6
            _run("full", 2, [1, 1, 0, 0, 0, 0], labels, 102.0),  # 5/6
            _run("lora", 1, [1, 0, 0, 0, 0, 1], labels, 50.0),  # 3/6
            _run("lora", 2, [1, 1, 0, 0, 0, 1], labels, 52.0),  # 4/6
            {"name": "lora-seed3", "label": "lora", "method": "lora", "seed": 3, "status": "failed",
             "error": "boom"},
        ],
    }


def test_summary_by_hand() -> None:
    rows = {row["label"]: row for row in summarize(_results())["6"]}
    full, lora = rows["full"], rows["lora"]
    assert full["seeds"] == [1, 2] and lora["seeds"] == [1, 2]  # the failed run is left out
    assert full["accuracy"]["mean"] == pytest.approx((1 + 5 / 6) / 2)
    assert full["accuracy"]["std"] == pytest.approx(np.std([1, 5 / 6], ddof=1))
    assert lora["accuracy"]["mean"] == pytest.approx((3 / 6 + 4 / 6) / 2)
    assert full["peak_memory_mib"] == {"mean": 101.0, "std": pytest.approx(np.sqrt(2))}
    assert full["train_seconds"]["mean"] == 15.0
    for row in (full, lora):
        assert row["accuracy"]["low"] <= row["accuracy"]["mean"] <= row["accuracy"]["high"]
    assert "vs_baseline" not in full
    paired = lora["vs_baseline"]
    assert paired["seeds"] == [1, 2]
    diff = paired["accuracy_difference"]
    assert diff["value"] == pytest.approx(lora["accuracy"]["mean"] - full["accuracy"]["mean"])
    assert diff["low"] <= diff["value"] <= diff["high"]
    # Seed 1: full right everywhere, lora wrong on reviews 1, 2, 5 -> only the baseline right on 3.
    # Seed 2: full wrong on 2; lora wrong on 2 and 5 -> only the baseline right on 1.
    m1, m2 = paired["mcnemar"]
    assert (m1["seed"], m1["only_this_right"], m1["only_baseline_right"]) == (1, 0, 3)
    assert m1["p_value"] == pytest.approx(2 / 8)
    assert (m2["seed"], m2["only_this_right"], m2["only_baseline_right"]) == (2, 0, 1)
    assert m2["p_value"] == 1.0


def test_plot_shows_accuracy_only_for_trained_weights(tmp_path: Path) -> None:
    results = _results()
    assert plot(results, summarize(results), tmp_path / "a.png") == ["accuracy-6", "cost"]
    for run in results["runs"]:  # random weights: accuracy measures nothing, training cost remains
        run["config"] = {"model": {"name": "m", "random_init": True}, "data": {"train_size": 6}}
    assert plot(results, summarize(results), tmp_path / "b.png") == ["cost"]
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_binary_tables_read_as_before_with_or_without_class_names() -> None:
    """Evaluations now record the class names and macro-F1; a binary report is the same with them."""
    from sklearn.metrics import f1_score

    old = _results()
    for key, value in (("environment", {"device": "cpu", "torch_threads": 1, "versions": {}}),
                       ("created", "2024-01-01"), ("command", None)):
        old[key] = value
    new = json.loads(json.dumps(old))
    labels = new["test_sets"]["6"]["labels"]
    for run in (r for r in new["runs"] if r["status"] == "ok"):
        ev = run["evals"]["6"]
        ev["macro_f1"] = f1_score(labels, ev["preds"], average="macro")
        ev["labels"] = ["NEGATIVE", "POSITIVE"]
    summary = summarize(new)
    assert markdown(new, summary) == markdown(old, summarize(old))
    assert "| F1 [95% CI] |" in markdown(new, summary) and "macro-F1" not in markdown(new, summary)
    full = {row["label"]: row for row in summary["6"]}["full"]
    # Seed 1 right on all six (macro-F1 1); seed 2 wrong on one positive: (4/5 + 6/7) / 2.
    assert full["macro_f1"]["mean"] == pytest.approx((1 + (4 / 5 + 6 / 7) / 2) / 2)
    assert "macro_f1" not in summarize(old)["6"][0]


def test_confusion_plots_of_binary_runs_without_class_names(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from peft_sentiment import report

    drawn: dict[str, tuple[Any, Any]] = {}
    monkeypatch.setattr(report, "confusion_matrix_png",
                        lambda matrix, names, path, title: drawn.setdefault(path.name, (matrix, names)))
    results = _results()
    assert confusion_plots(results, summarize(results), tmp_path) == ["confusion-full.png", "confusion-lora.png"]
    # Summed over seeds 1 and 2, true down and predicted across. lora: both seeds call negative review
    # 5 positive; they miss 2 and 1 positives. full: seed 2 misses one positive.
    assert drawn["confusion-lora.png"] == ([[4, 2], [3, 3]], ["NEGATIVE", "POSITIVE"])
    assert drawn["confusion-full.png"] == ([[6, 0], [1, 5]], ["NEGATIVE", "POSITIVE"])


def test_summary_pairs_only_matching_seeds() -> None:
    results = _results()
    results["runs"] = [r for r in results["runs"] if r["name"] != "full-seed2"]
    lora = {row["label"]: row for row in summarize(results)["6"]}["lora"]
    assert lora["vs_baseline"]["seeds"] == [1]
    assert len(lora["vs_baseline"]["mcnemar"]) == 1


# ---------------------------------------------------------------- child processes, faked

# Stands in for `python -m peft_sentiment train|evaluate ...`: it speaks only the events schema, and
# prints lines that a parser of printed output would misread.
FAKE_CHILD = """#!{python}
import json, os, signal, sys, time

mode, stage = os.environ["FAKE_CHILD"], sys.argv[3]
path = os.environ["PEFT_SENTIMENT_EVENTS"]

def event(name, **fields):
    with open(path, "a") as f:
        f.write(json.dumps({{"v": 1, "event": name, "time": time.time(), **fields}}) + "\\n")

print("step 7/9 epoch 0.50 loss 0.1234", flush=True)
print("Error: printed, never reported", flush=True)
if stage == "evaluate":
    sys.exit(0)
if mode == "steps":
    for step in (0, 2, 4):
        event("step", step=step, total=4, epoch=step / 2)
        time.sleep(0.3)  # the benchmark follows the file while this process runs
elif mode == "error":
    event("error", message="data folder /gone not found", type="DataError")
    sys.exit(1)
else:
    print("loading the model", flush=True)
    with open(path, "a") as f:
        f.write('{{"v": 1, "event": "step", "st')  # dies in the middle of an event
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(3)
"""


class Recorder:
    """A Reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []
        self.records: list[dict[str, Any]] = []

    def start(self, total: int) -> None: ...
    def stage(self, run: Any, stage: str, index: int) -> None: ...
    def step(self, done: int, total: int) -> None:
        self.steps.append((done, total))
    def finished(self, record: dict[str, Any]) -> None:
        self.records.append(record)
    def close(self) -> None: ...


def _fake_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> tuple[Recorder, Path]:
    from peft_sentiment.benchmark import BenchmarkSpec, run_benchmark

    python = tmp_path / "python"
    python.write_text(FAKE_CHILD.format(python=sys.executable))
    python.chmod(0o755)
    monkeypatch.setenv("FAKE_CHILD", mode)
    recorder, out = Recorder(), tmp_path / "out"
    run_benchmark(BenchmarkSpec(methods=("smoke",), seeds=(1,), baseline="smoke"), out, reporter=recorder,
                  python=str(python))
    return recorder, out


def test_progress_comes_from_the_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, out = _fake_benchmark(tmp_path, monkeypatch, "steps")
    assert recorder.steps == [(0, 4), (2, 4), (4, 4)]  # not the printed "step 7/9"
    (record,) = recorder.records
    assert record["status"] == "ok" and set(record["process_seconds"]) == {"train", "evaluate-100"}
    found = events.read(out / "logs" / "smoke-seed1.events.jsonl")
    assert [e["event"] for e in found] == ["start", "step", "step", "step", "done", "start", "done"]
    assert [e["stage"] for e in found if e["event"] == "start"] == ["train", "evaluate"]
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert [cmd[3] for cmd in run["commands"]] == ["train", "evaluate"]  # read back from the events
    assert run["commands"] == [e["command"] for e in found if e["event"] == "start"]
    assert "step 7/9" in (out / "logs" / "smoke-seed1.log").read_text()  # the log stays for people


def test_an_error_event_becomes_the_runs_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peft_sentiment.benchmark import load_results

    recorder, out = _fake_benchmark(tmp_path, monkeypatch, "error")
    (record,) = recorder.records
    assert (record["status"], record["stage"]) == ("failed", "train")
    assert record["error"] == "exit 1: data folder /gone not found"
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert run["error"] == record["error"] and run["commands"][0][3] == "train"
    (again,) = load_results(out)["runs"]  # --report on the folder: read back from the events
    assert (again["status"], again["stage"], again["error"]) == ("failed", "train", record["error"])
    assert again["commands"] == run["commands"]


@pytest.mark.parametrize(("mode", "error"), [
    ("exit", "exit 3: loading the model"),
    ("kill", "exit -9 (SIGKILL): loading the model"),
])
def test_a_child_without_an_error_event_is_reported_by_its_exit_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, error: str) -> None:
    from peft_sentiment.benchmark import load_results

    recorder, out = _fake_benchmark(tmp_path, monkeypatch, mode)
    assert recorder.records[0]["error"] == error and recorder.steps == []
    (again,) = load_results(out)["runs"]
    assert (again["status"], again["error"]) == ("failed", error)
    done = events.read(out / "logs" / "smoke-seed1.events.jsonl")[-1]  # after the broken line
    assert (done["event"], done["exit_code"]) == ("done", int(error.split()[1].rstrip(":")))


# ---------------------------------------------------------------- the smoke benchmark through the CLI


def test_smoke_benchmark_with_a_base_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`benchmark --recipe smoke --methods full,lora`: offline, in one command."""
    from peft_sentiment.ui import BenchmarkProgress

    steps: list[tuple[int, int]] = []
    monkeypatch.setattr(BenchmarkProgress, "step", lambda self, done, total: steps.append((done, total)))
    out = tmp_path / "out"
    sizes = ["--set", "data.train_size=48", "--set", "data.test_size=24"]  # 6 steps a method
    result = invoke(["benchmark", "--recipe", "smoke", "--methods", "full,lora", "-o", out, *sizes,
                     "--resamples", "100"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["spec"]["recipe"] == "smoke"
    runs = {r["name"]: r for r in results["runs"]}
    assert {name: r["status"] for name, r in runs.items()} == {"full-seed42": "ok", "lora-seed42": "ok"}
    smoke = config_to_dict(load_config("smoke", {"data.train_size": 48, "data.test_size": 24}))
    for method in ("full", "lora"):
        config, own = runs[f"{method}-seed42"]["config"], config_to_dict(load_config(method))
        assert (config["data"], config["model"]) == (smoke["data"], smoke["model"])  # from --recipe
        assert {k: v for k, v in config.items() if k not in ("data", "model")} == \
            {k: v for k, v in own.items() if k not in ("data", "model")}  # the rest: the method's recipe
        found = events.read(out / "logs" / f"{method}-seed42.events.jsonl")
        progress = [(e["step"], e["total"]) for e in found if e["event"] == "step"]
        assert progress and progress[-1][0] == progress[-1][1] > 0
        assert set(progress) <= set(steps)  # the progress shown came from the events
        assert runs[f"{method}-seed42"]["commands"] == [e["command"] for e in found if e["event"] == "start"]
    assert all(done <= total for done, total in steps)
    # The base recipe is part of the benchmark: resuming without it is refused.
    refused = invoke(["benchmark", "--methods", "full,lora", "-o", out, *sizes, "--resamples", "100",
                      "--resume"])
    assert_one_line_error(refused, 1, "--recipe smoke", "resume with the same settings")


def _recipe(folder: Path, name: str, **changes: Any) -> Path:
    data = yaml.safe_load((REPO / "recipes" / "smoke.yaml").read_text())
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[section] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three methods x two seeds; one method's data folder does not exist, so both its runs fail."""
    folder = tmp_path_factory.mktemp("bench")
    # The smoke recipe made cheaper (2 epochs, no per-epoch validation): what is tested here is the
    # benchmark's bookkeeping, not learning.
    fast = {"trainer.num_train_epochs": 2, "data.validation_size": 0}
    full = _recipe(folder, "smoke_full", method="full", **fast)
    smoke = _recipe(folder, "smoke", **fast)
    broken = _recipe(folder, "broken", **{"data.source": str(folder / "no-such-data")})
    out = folder / "out"
    args = ["benchmark", "-o", out, "--methods", f"{broken},{full},{smoke}", "--seeds", "1,2",
            "--baseline", "smoke_full", "--eval-test-size", "50", "--resamples", "200"]
    result = invoke(args)
    return {"out": out, "result": result, "args": args, "folder": folder}


def test_benchmark_runs_everything_and_records_the_failures(bench: dict[str, Any]) -> None:
    out, result = bench["out"], bench["result"]
    # The broken runs fail first (seed by seed, broken is listed first) and the others still run.
    assert result.exit_code == 1, result.output
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("Error: 2 of 6 runs did not finish: broken-seed1, broken-seed2")
    results = json.loads((out / "results.json").read_text())
    status = {r["name"]: r["status"] for r in results["runs"]}
    assert status == {"broken-seed1": "failed", "smoke_full-seed1": "ok", "smoke-seed1": "ok",
                      "broken-seed2": "failed", "smoke_full-seed2": "ok", "smoke-seed2": "ok"}
    failed = next(r for r in results["runs"] if r["name"] == "broken-seed1")
    assert failed["stage"] == "train" and "no-such-data" in failed["error"]
    assert not (out / "runs" / "broken-seed1").exists()  # nothing half-written
    assert dot_entries(out) == []


def test_benchmark_writes_every_output(bench: dict[str, Any]) -> None:
    out = bench["out"]
    results = json.loads((out / "results.json").read_text())
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.glob("confusion-*.png")) == ["confusion-smoke.png",
                                                                    "confusion-smoke_full.png"]
    md = (out / "results.md").read_text()
    assert "## 100 test reviews" in md and "## 50 test reviews" in md
    assert "broken-seed1 | failed" in md
    assert set(results["test_sets"]) == {"50", "100"}
    env = results["environment"]
    assert env["versions"]["torch"] and env["device"] and env["torch_threads"] >= 1
    assert results["command"].startswith("peft-sentiment benchmark -o ")
    for name in ("smoke_full-seed1", "smoke-seed2"):
        assert (out / "configs" / f"{name}.yaml").is_file()
        assert (out / "logs" / f"{name}.log").read_text().startswith("$ ")
        found = events.read(out / "logs" / f"{name}.events.jsonl")
        last = [e for e in found if e["event"] == "step"][-1]
        assert last["step"] == last["total"] > 0  # the child's own progress, to its last step
        assert [e["exit_code"] for e in found if e["event"] == "done"] == [0, 0, 0]  # train, 2 evaluations
    for run in (r for r in results["runs"] if r["status"] == "ok"):
        train = run["train"]
        for key in ("accuracy", "f1", "precision", "recall", "train_seconds", "train_samples_per_second",
                    "eval_samples_per_second", "peak_memory_mib", "trainable_params", "trainable_share"):
            assert key in train, key
        assert train["seed"] == run["seed"]
        assert run["evals"]["100"]["labels"] == ["NEGATIVE", "POSITIVE"]  # class names, not the reviews'
        assert run["upload_kind"] == ("model" if run["label"] == "smoke_full" else "adapter")
        folder = out / "runs" / run["name"] / run["upload_kind"]
        assert run["upload_bytes"] == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_each_evaluation_matches_its_run(bench: dict[str, Any]) -> None:
    out = bench["out"]
    results = json.loads((out / "results.json").read_text())
    labels100 = results["test_sets"]["100"]["labels"]
    assert results["test_sets"]["50"]["labels"] == labels100[:50]  # the subset is a prefix
    for run in (r for r in results["runs"] if r["status"] == "ok"):
        ev100, ev50 = run["evals"]["100"], run["evals"]["50"]
        assert ev100["accuracy"] == pytest.approx(run["train"]["accuracy"])  # the run's own test set
        assert ev50["preds"] == ev100["preds"][:50]
        acc = np.mean(np.array(ev100["preds"]) == np.array(labels100))
        assert ev100["accuracy"] == pytest.approx(acc)


def test_summary_shows_the_paired_comparison(bench: dict[str, Any]) -> None:
    results = json.loads((bench["out"] / "results.json").read_text())
    rows = {row["label"]: row for row in summarize(results)["100"]}
    assert set(rows) == {"smoke_full", "smoke"}
    assert rows["smoke"]["vs_baseline"]["seeds"] == [1, 2]
    assert len(rows["smoke"]["vs_baseline"]["mcnemar"]) == 2
    assert rows["smoke_full"]["upload_bytes"] > rows["smoke"]["upload_bytes"]
    assert rows["smoke"]["trainable_share"] < 1.0 == rows["smoke_full"]["trainable_share"]


def test_report_rerenders_from_results_alone(bench: dict[str, Any], tmp_path: Path) -> None:
    shutil.copy(bench["out"] / "results.json", tmp_path / "results.json")
    result = invoke(["benchmark", "--report", tmp_path])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results.md").read_text() == (bench["out"] / "results.md").read_text()
    assert (tmp_path / "plot.png").is_file()
    assert "smoke_full" in result.stdout


def test_resume_runs_nothing_that_finished(bench: dict[str, Any]) -> None:
    out = bench["out"]
    logs = {p.name: p.stat().st_size for p in (out / "logs").iterdir()}
    before = {r["name"]: r["commands"] for r in json.loads((out / "results.json").read_text())["runs"]}
    result = invoke(["benchmark", "-o", out, "--methods", f"{bench['folder'] / 'smoke_full.yaml'},{bench['folder'] / 'smoke.yaml'}",
                     "--seeds", "1,2", "--baseline", "smoke_full", "--eval-test-size", "50", "--resamples",
                     "200", "--resume"])
    assert result.exit_code == 0, result.output
    assert {p.name: p.stat().st_size for p in (out / "logs").iterdir()} == logs  # no process started
    results = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in results["runs"]] == ["ok"] * 4
    for run in results["runs"]:  # finished in the first invocation: still with the commands that made it
        assert run["resumed"] and run["commands"] == before[run["name"]]
        run_dir = str(out / "runs" / run["name"])
        assert [cmd[3:5] for cmd in run["commands"]] == [["train", "--recipe"], ["evaluate", run_dir],
                                                         ["evaluate", run_dir]]


def test_a_finished_runs_weights_may_be_deleted(bench: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(bench["out"], out)
    before = {r["name"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    for run in ("smoke_full-seed1", "smoke-seed2"):
        record = json.loads((out / "evals" / run / "artifact.json").read_text())
        assert record["bytes"] == before[run]["upload_bytes"] > 0
        shutil.rmtree(out / "runs" / run / record["kind"])  # e.g. to free disk
    logs = {p.name: p.stat().st_size for p in (out / "logs").iterdir()}
    result = invoke(["benchmark", "-o", out, "--methods", f"{bench['folder'] / 'smoke_full.yaml'},{bench['folder'] / 'smoke.yaml'}",
                     "--seeds", "1,2", "--baseline", "smoke_full", "--eval-test-size", "50", "--resamples",
                     "200", "--resume"])
    assert result.exit_code == 0, result.output
    assert {p.name: p.stat().st_size for p in (out / "logs").iterdir()} == logs  # nothing trained again
    after = {r["name"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    for name, run in after.items():
        assert (run["upload_kind"], run["upload_bytes"]) == (before[name]["upload_kind"],
                                                             before[name]["upload_bytes"])
        assert run["evals"] == before[name]["evals"]
    # A folder from before the record: the report measures the weights that are there and records them.
    (out / "evals" / "smoke-seed1" / "artifact.json").unlink()
    assert invoke(["benchmark", "--report", out]).exit_code == 0
    assert json.loads((out / "evals" / "smoke-seed1" / "artifact.json").read_text())["bytes"] == \
        before["smoke-seed1"]["upload_bytes"]


def test_resume_starts_over_a_run_an_interrupted_benchmark_left(bench: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(bench["out"], out)
    # As a benchmark killed while training smoke-seed2 leaves it: a partial folder without a checkpoint.
    run = out / "runs" / "smoke-seed2"
    run.rename(run.with_name("smoke-seed2.partial"))
    (out / "runs" / "smoke-seed2.partial" / "IN_PROGRESS").write_text("{}")
    (out / "evals" / "smoke-seed2" / "test-50.json").write_text("stale")
    result = invoke(["benchmark", "-o", out, "--methods", f"{bench['folder'] / 'smoke_full.yaml'},{bench['folder'] / 'smoke.yaml'}",
                     "--seeds", "1,2", "--baseline", "smoke_full", "--eval-test-size", "50", "--resamples",
                     "200", "--resume"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in results["runs"]] == ["ok"] * 4
    again = next(r for r in results["runs"] if r["name"] == "smoke-seed2")
    assert "--overwrite" in again["commands"][0] and not again.get("resumed")
    assert [cmd[3] for cmd in again["commands"]] == ["train", "evaluate", "evaluate"]  # since it started over
    assert json.loads((out / "evals" / "smoke-seed2" / "test-50.json").read_text())  # evaluated anew
    assert not (out / "runs" / "smoke-seed2.partial").exists()


def test_an_interrupted_run_with_a_checkpoint_is_continued(tmp_path: Path) -> None:
    from peft_sentiment.benchmark import PlannedRun, _train_args
    from peft_sentiment.config import save_config
    from peft_sentiment.rundir import CHECKPOINTS_DIR

    cfg = load_config("smoke", {})
    run_dir, recipe = tmp_path / "runs" / "smoke-seed1", tmp_path / "configs" / "smoke-seed1.yaml"
    planned = PlannedRun(name="smoke-seed1", label="smoke", seed=1, config=cfg)
    assert _train_args(planned, run_dir, recipe) == (["--recipe", str(recipe), "-o", str(run_dir)], None)
    staging = tmp_path / "runs" / "smoke-seed1.partial"
    checkpoint = staging / CHECKPOINTS_DIR / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (staging / "IN_PROGRESS").write_text("{}")
    save_config(cfg, staging / "config.yaml")
    assert _train_args(planned, run_dir, recipe)[0][-1] == "--overwrite"  # the checkpoint is incomplete
    (checkpoint / "trainer_state.json").write_text("{}")
    assert _train_args(planned, run_dir, recipe) == (["--resume", str(run_dir)], checkpoint)
    other = PlannedRun(name="smoke-seed1", label="smoke", seed=1,
                       config=load_config("smoke", {"data.max_length": 32}))
    assert _train_args(other, run_dir, recipe)[0][-1] == "--overwrite"  # trained with another config


def test_a_stopped_benchmark_says_what_it_kept(tmp_path: Path) -> None:
    from peft_sentiment.benchmark import PlannedRun, _interrupted_message
    from peft_sentiment.config import save_config
    from peft_sentiment.rundir import CHECKPOINTS_DIR

    run = PlannedRun(name="smoke-seed1", label="smoke", seed=1, config=load_config("smoke", {}))
    kept = f"finished runs are kept in {tmp_path / 'runs'}: continue with the same command and --resume"
    assert _interrupted_message("SIGINT", tmp_path, run) == f"SIGINT: {kept}"  # stopped between runs
    staging = tmp_path / "runs" / "smoke-seed1.partial"
    staging.mkdir(parents=True)
    (staging / "IN_PROGRESS").write_text("{}")
    assert _interrupted_message("SIGTERM", tmp_path, run) == \
        f"SIGTERM: smoke-seed1 was stopped before its first checkpoint and starts over on --resume; {kept}"
    (staging / CHECKPOINTS_DIR / "checkpoint-8").mkdir(parents=True)
    (staging / CHECKPOINTS_DIR / "checkpoint-8" / "trainer_state.json").write_text("{}")
    save_config(run.config, staging / "config.yaml")  # as train writes it: --resume continues the run
    assert _interrupted_message("SIGTERM", tmp_path, run) == \
        f"SIGTERM: smoke-seed1 stopped at checkpoint-8, where --resume continues it; {kept}"


def test_resume_refuses_other_settings(bench: dict[str, Any]) -> None:
    result = invoke(["benchmark", "-o", bench["out"], "--methods", "smoke", "--seeds", "1",
                     "--set", "data.max_length=32", "--resume"])
    assert_one_line_error(result, 1, "resume with the same settings")


def test_existing_folder_needs_resume_or_overwrite(bench: dict[str, Any]) -> None:
    result = invoke(["benchmark", "-o", bench["out"], "--methods", "smoke", "--seeds", "1"])
    assert_one_line_error(result, 1, "already exists", "--resume")


def test_overwrite_refuses_a_folder_that_is_not_a_benchmark(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = invoke(["benchmark", "-o", tmp_path, "--methods", "smoke", "--overwrite"])
    assert_one_line_error(result, 1, "not a benchmark folder")
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("args", "code", "fragments"), [
    (["--methods", "smoke", "--seeds", "1,x"], 2, ["--seeds", "'1,x'"]),
    (["--methods", "nope"], 1, ["unknown recipe 'nope'"]),
    (["--methods", "smoke,smoke"], 1, ["method given twice: smoke"]),
    (["--methods", "smoke", "--seeds", "3,3"], 1, ["seed given twice: 3"]),
    (["--methods", "smoke", "--resamples", "10"], 2, ["--resamples"]),
    (["--methods", "smoke", "--set", "train.seed=3"], 1, ["--seeds"]),
    (["--methods", "smoke", "--set", "train.nope=3"], 1, ["unknown key", "nope"]),
    (["--methods", "smoke", "--eval-test-size", "0"], 2, ["--eval-test-size"]),
    (["--methods", "smoke", "--resume", "--overwrite"], 1, ["--resume or --overwrite"]),
])
def test_bad_benchmark_options(tmp_path: Path, args: list[str], code: int, fragments: list[str]) -> None:
    out = tmp_path / "out"
    result = invoke(["benchmark", "-o", out, *args])
    assert_one_line_error(result, code, *fragments)
    assert not out.exists()


def test_two_recipe_files_of_one_name_are_refused(tmp_path: Path) -> None:
    """tune writes best.yaml in every study folder: benchmarked side by side, they need names of their own."""
    recipe = (REPO / "recipes" / "smoke.yaml").read_text()
    for study in ("a", "b"):
        (tmp_path / study).mkdir()
        (tmp_path / study / "best.yaml").write_text(recipe)
    result = invoke(["benchmark", "-o", tmp_path / "out", "--methods",
                     f"{tmp_path / 'a' / 'best.yaml'},{tmp_path / 'b' / 'best.yaml'}"])
    assert_one_line_error(result, 1, "method given twice: best", "rename one")
    assert not (tmp_path / "out").exists()


def test_report_of_a_folder_without_results(tmp_path: Path) -> None:
    result = invoke(["benchmark", "--report", tmp_path])
    assert_one_line_error(result, 1, "no results.json")
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    assert_one_line_error(invoke(["benchmark", "--report", bad]), 1, "not valid JSON")


def test_a_second_benchmark_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    from peft_sentiment.rundir import output_lock

    out = tmp_path / "out"
    with output_lock(out):  # as a running benchmark holds it
        result = invoke(["benchmark", "-o", out, "--methods", "smoke"])
    assert_one_line_error(result, 1, "is being written by process")
    assert not out.exists()


def test_nproc_per_node_needs_torchrun(tmp_path: Path) -> None:
    result = invoke(["benchmark", "-o", tmp_path / "out", "--methods", "smoke", "--nproc-per-node", "2"])
    assert_one_line_error(result, 2, "--nproc-per-node needs --launcher torchrun")


def test_report_of_a_folder_still_running(bench: dict[str, Any], tmp_path: Path) -> None:
    """Without results.json (the benchmark has not finished), --report collects the runs on disk."""
    live = tmp_path / "live"
    shutil.copytree(bench["out"], live)
    (live / "results.json").unlink()
    spec = json.loads((live / "benchmark.json").read_text())  # as first started (a resume may narrow it)
    spec["methods"] = [str(bench["folder"] / "broken.yaml"), str(bench["folder"] / "smoke_full.yaml"), "smoke"]
    (live / "benchmark.json").write_text(json.dumps(spec))
    shutil.rmtree(live / "evals" / "smoke-seed2")  # a run still being evaluated
    result = invoke(["benchmark", "--report", live])
    assert result.exit_code == 0, result.output
    md = (live / "results.md").read_text()
    assert "| smoke-seed2 | missing" in md and "| smoke_full-seed2 | ok |" in md
    assert "| broken-seed1 | failed: exit 1: " in md and "no-such-data" in md  # read back from its events
    assert not (live / "results.json").exists()
    from peft_sentiment.benchmark import load_results

    runs = {r["name"]: r for r in load_results(live)["runs"]}
    assert [cmd[3] for cmd in runs["smoke_full-seed2"]["commands"]] == ["train", "evaluate", "evaluate"]
    assert [cmd[3] for cmd in runs["broken-seed1"]["commands"]] == ["train"]


def test_the_baseline_is_one_of_the_methods() -> None:
    from peft_sentiment.benchmark import BenchmarkSpec, default_baseline

    assert default_baseline(["lora", "full"]) == "full"
    assert default_baseline(["lora", "recipes/dora.yaml"]) == "lora"
    assert BenchmarkSpec(methods=("lora", "dora"), baseline=default_baseline(["lora", "dora"])).baseline == "lora"
    with pytest.raises(ConfigError, match="--baseline 'full' is not among the methods \\(lora, dora\\)"):
        BenchmarkSpec(methods=("lora", "dora"), baseline="full")
