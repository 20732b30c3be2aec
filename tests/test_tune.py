"""`peft-sentiment tune`: the search space in recipes, the study, pruning, resume, and what it writes.

One real study trains the smoke model in child processes (`python -m peft_sentiment train`), three
trials, each chosen with --enqueue so that the outcome does not depend on what the sampler draws: two
trials at a learning rate that learns the synthetic reviews within the first epoch (validation
accuracy 0.9 and above after epoch 1, measured), then one at 1e-7, which leaves the model where it
started (0.44: it predicts one class). Pruning starts after two completed trials, and the third,
three epochs long, is below their median after its first epoch: pruned, deterministically. Training
on the CPU with one thread and a fixed seed gives the same accuracies run after run.

The other paths of the parent (a trial left running by a killed tune, a child that ignores SIGTERM,
failures, --timeout) run against a stand-in child that speaks only the events schema and takes a
fraction of a second.
"""

from __future__ import annotations

import copy
import csv
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from conftest import REPO, assert_one_line_error, dot_entries, invoke

from peft_sentiment import events
from peft_sentiment.config import RunConfig, build, config_to_dict, load_config, set_dotted
from peft_sentiment.rundir import load_run_config

optuna = pytest.importorskip("optuna")

GOOD = "trainer.learning_rate=3.0e-3,trainer.num_train_epochs=2"
ALSO_GOOD = "trainer.learning_rate=4.0e-3,trainer.num_train_epochs=2"
HOPELESS = "trainer.learning_rate=1.0e-7,trainer.num_train_epochs=3"
ENQUEUE = ["--enqueue", GOOD, "--enqueue", ALSO_GOOD, "--enqueue", HOPELESS]


def tune_recipe(folder: Path, **changes: Any) -> Path:
    """The smoke recipe as a full fine-tune that learns in one epoch: all 400 training reviews in
    batches of 8 (50 steps an epoch), 32 validation and 16 test reviews; `changes` set dotted keys."""
    data = yaml.safe_load((REPO / "recipes" / "smoke.yaml").read_text())
    data["method"] = "full"
    data["data"].update(train_size=400, validation_size=32, test_size=16)
    data["trainer"]["per_device_train_batch_size"] = 8
    data["tune"] = {"trainer.learning_rate": {"low": 1.0e-7, "high": 1.0e-2, "log": True},
                    "trainer.num_train_epochs": {"choices": [2, 3]}}
    for key, value in changes.items():
        set_dotted(data, key, value)
    path = folder / "tune-smoke.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load_study(folder: Path) -> Any:
    return optuna.load_study(study_name="peft-sentiment-tune", storage=f"sqlite:///{folder / 'study.db'}")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- the real study


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("tune")
    recipe = tune_recipe(folder)
    out = folder / "study"
    result = invoke(["tune", "--recipe", recipe, "-o", out, "--trials", "3", *ENQUEUE])
    return SimpleNamespace(recipe=recipe, out=out, result=result)


def test_three_trials_with_the_hopeless_one_pruned(study: SimpleNamespace) -> None:
    result, out = study.result, study.out
    assert result.exit_code == 0, result.output + result.stderr
    trials = load_study(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [t.params["trainer.learning_rate"] for t in trials] == [3e-3, 4e-3, 1e-7]
    good, also_good, hopeless = trials
    assert good.intermediate_values[1] >= 0.75 and also_good.intermediate_values[1] >= 0.75
    assert list(hopeless.intermediate_values) == [1]  # judged after its first epoch, and stopped
    assert hopeless.intermediate_values[1] < 0.6 and hopeless.user_attrs["pruned_at_epoch"] == 1
    # The pruned trial's process was stopped with SIGTERM (it saves a checkpoint and exits 143), and
    # only its log and events stay: no run folder, no checkpoint.
    found = events.read(out / "trials" / "2.events.jsonl")
    assert next(e for e in found if e["event"] == "evaluate")["accuracy"] < 0.6
    assert found[-1]["event"] == "done" and found[-1]["pruned"] is True and found[-1]["exit_code"] == 143
    assert not (out / "trials" / "2").exists() and not (out / "trials" / "2.partial").exists()
    assert (out / "trials" / "2.log").is_file() and (out / "trials" / "2.yaml").is_file()
    # A complete trial is a finished run; its objective is metrics.json's validation accuracy.
    for trial in (good, also_good):
        metrics = json.loads((out / "trials" / str(trial.number) / "metrics.json").read_text())
        assert trial.value == metrics["validation"]["accuracy"]
        assert metrics["n_validation"] == 32
    assert dot_entries(out) == []
    assert "best: trial" in result.stdout and "recipe: " in result.stdout


def test_best_yaml_is_the_best_trials_config(study: SimpleNamespace) -> None:
    from peft_sentiment.benchmark import BenchmarkSpec, plan

    out = study.out
    trials = load_study(out).get_trials()
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: (t.value, -t.number))
    run_config = load_run_config(out / "trials" / str(best.number))
    assert load_config(out / "best.yaml") == run_config
    saved = yaml.safe_load((out / "best.yaml").read_text())
    assert saved == yaml.safe_load((out / "trials" / str(best.number) / "config.yaml").read_text())
    assert "tune" not in saved  # a recipe to train, not to search
    assert saved["trainer"]["learning_rate"] == best.params["trainer.learning_rate"]
    assert saved["trainer"]["num_train_epochs"] == best.params["trainer.num_train_epochs"]
    assert saved["data"]["validation_size"] == 32 and saved["method"] == "full"
    (run,) = plan(BenchmarkSpec(methods=(str(out / "best.yaml"),), baseline="best"))  # benchmark takes it
    assert run.config == run_config


def test_trials_csv_and_study_json(study: SimpleNamespace) -> None:
    out = study.out
    trials = load_study(out).get_trials()
    rows = read_csv(out / "trials.csv")
    assert list(rows[0]) == ["number", "state", "trainer.learning_rate", "trainer.num_train_epochs",
                             "validation_accuracy", "seconds", "note"]
    assert [(r["number"], r["state"]) for r in rows] == [("0", "complete"), ("1", "complete"),
                                                         ("2", "pruned")]
    for row, trial in zip(rows, trials):
        assert float(row["trainer.learning_rate"]) == trial.params["trainer.learning_rate"]
        assert float(row["validation_accuracy"]) == trial.value
        assert float(row["seconds"]) > 0
    assert rows[2]["note"] == "pruned after epoch 1"

    data = json.loads((out / "study.json").read_text())
    assert data["sampler"]["name"] == "TPESampler" and data["sampler"]["seed"] == 42
    assert data["pruner"] == {"name": "MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 0,
                              "interval_steps": 1, "step": "epoch", "last_epoch_pruned": False}
    assert data["seed"] == 42 and data["method"] == "full" and data["recipe"] == str(study.recipe)
    assert data["space"]["trainer.learning_rate"] == {"low": 1e-7, "high": 1e-2, "log": True}
    assert data["counts"] == {"complete": 2, "pruned": 1, "failed": 0}
    assert [t["state"] for t in data["trials"]] == ["complete", "complete", "pruned"]
    best = data["best_trial"]
    assert best["value"] == max(t.value for t in trials if t.state.name == "COMPLETE")
    assert best["run"] == f"trials/{best['number']}"
    assert data["command"].startswith("peft-sentiment tune --recipe") and "--enqueue" in data["command"]
    assert data["environment"]["versions"]["optuna"] == optuna.__version__
    assert "transformers" in data["environment"]["versions"]
    assert "test" in data["objective"] and "validation" in data["objective"]


def test_history_is_a_png(study: SimpleNamespace) -> None:
    png = study.out / "history.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_resume_adds_trials_without_repeating_finished_ones(study: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "study"
    shutil.copytree(study.out, out)
    finished = {n: (out / "trials" / n / "metrics.json").stat().st_mtime_ns for n in ("0", "1")}
    refused = invoke(["tune", "--recipe", study.recipe, "-o", out, "--trials", "4", *ENQUEUE])
    assert_one_line_error(refused, 1, "already exists", "--resume")
    result = invoke(["tune", "--recipe", study.recipe, "-o", out, "--trials", "4", "--resume", *ENQUEUE])
    assert result.exit_code == 0, result.output + result.stderr
    trials = load_study(out).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]  # one trial added, the enqueued ones not run again
    assert [t.state.name for t in trials[:3]] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert trials[3].state.name in ("COMPLETE", "PRUNED")
    assert {n: (out / "trials" / n / "metrics.json").stat().st_mtime_ns for n in finished} == finished
    assert sorted(p.name for p in (out / "trials").glob("*.yaml")) == [f"{n}.yaml" for n in range(4)]
    assert [r["number"] for r in read_csv(out / "trials.csv")] == ["0", "1", "2", "3"]
    data = json.loads((out / "study.json").read_text())
    assert len(data["commands"]) == 2 and "--resume" in data["command"]
    assert data["sampler"]["seeds_by_invocation"] == [42, 45]  # past the 3 trials it had: no repeated draws
    # Resuming with another search space is refused.
    narrower = {"trainer.learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}
    other = tune_recipe(tmp_path, tune=narrower)
    changed = invoke(["tune", "--recipe", other, "-o", out, "--trials", "5", "--resume"])
    assert_one_line_error(changed, 1, "another search space")


# ---------------------------------------------------------------- bad input: one line, nothing left


def _recipe_without_validation(t: Path) -> list[Any]:
    return ["--recipe", tune_recipe(t, **{"data.validation_size": 0})]


def _unknown_key(t: Path) -> list[Any]:
    return ["--recipe", tune_recipe(t, tune={"lora.rank": {"choices": [4, 8]}})]


def _low_not_below_high(t: Path) -> list[Any]:
    return ["--recipe", tune_recipe(t, tune={"trainer.learning_rate": {"low": 1.0e-3, "high": 1.0e-3}})]


@pytest.mark.parametrize(("args", "fragments"), [
    (_recipe_without_validation, ["data.validation_size 0", "--validation-size"]),
    (lambda t: ["--recipe", "smoke", "--validation-size", "0"], ["data.validation_size 0"]),
    (_unknown_key, ["unknown key 'lora.rank'", "r, alpha, dropout"]),
    (_low_not_below_high, ["tune.trainer.learning_rate", "low must be below high"]),
    (lambda t: ["--recipe", "seed"], ["no tune: section"]),
    (lambda t: ["--recipe", "smoke", "--set", "tune={lora.r: {choices: [0, 8]}}"],
     ["tune.lora.r", "lora.r must be positive"]),
    (lambda t: ["--recipe", "smoke", "--lr", "1e-3"], ["trainer.learning_rate", "drop one"]),
    (lambda t: ["--recipe", "smoke", "--set", "tune={lora.r: {choices: [4, 8]}}", "--method", "full"],
     ["tune.lora.r does nothing for method full"]),
    (lambda t: ["--recipe", "smoke", "--set", "tune={data.train_size: {choices: [100, 200]}}"],
     ["tune.data.train_size cannot be tuned"]),
    (lambda t: ["--recipe", "smoke", "--enqueue", "trainer.learning_rate=0.5"],
     ["--enqueue", "outside the search space"]),
    (lambda t: ["--recipe", "smoke", "--enqueue", "lora.r=8"], ["--enqueue lora.r", "not a key of"]),
], ids=["no-validation", "validation-size-zero", "unknown-key", "low-not-below-high", "no-tune-section",
        "choice-refused", "option-fixes-a-tuned-key", "key-inert-for-method", "data-key", "enqueue-outside",
        "enqueue-unknown-key"])
def test_bad_input_is_one_line_and_leaves_nothing(args: Any, fragments: list[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    built = args(tmp_path)
    before = set(tmp_path.rglob("*"))
    result = invoke(["tune", *built, "-o", tmp_path / "study", "--trials", "2"])
    assert_one_line_error(result, 1, *fragments)
    assert set(tmp_path.rglob("*")) == before and dot_entries(tmp_path) == []


def test_a_study_stored_before_a_config_field_existed_still_resumes() -> None:
    """A field added since the study began takes its default, which keeps the old behaviour: the study
    resumes. Any other difference still refuses."""
    from peft_sentiment.tune import TuneSpec, _as_today, _identity, plan

    spec = TuneSpec(recipe="smoke")
    today = _identity(spec, plan(spec))["config"]
    older = copy.deepcopy(today)
    del older["data"]["truncation"], older["data"]["head_tokens"]
    assert older != today and _as_today(older) == today
    older["data"]["max_length"] = 32
    assert _as_today(older) != today


def test_without_optuna_the_command_says_how_to_install_it(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from peft_sentiment import tune

    monkeypatch.setattr(tune, "optuna", None)
    result = invoke(["tune", "--recipe", "smoke", "-o", tmp_path / "study"])
    assert_one_line_error(result, 1, "pip install 'peft-sentiment[tune]'")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the search space in recipes


def test_every_recipe_but_the_seed_has_a_search_space_and_train_ignores_it() -> None:
    from peft_sentiment.tune import TuneSpec, plan

    for name in ("full", "lora", "dora", "qlora", "ia3", "head", "smoke"):
        cfg = load_config(name)
        assert cfg.tune and "trainer.learning_rate" in cfg.tune, name
        assert plan(TuneSpec(recipe=name)).space  # every key tunable for its own method
        saved = config_to_dict(cfg)
        assert "tune" not in saved  # run folders record what trains
        assert build(RunConfig, saved) == cfg and build(RunConfig, saved).tune == {}
    assert load_config("seed").tune == {}
    assert {"lora.r", "lora.alpha", "lora.dropout"} <= set(load_config("lora").tune)
    assert load_config("full").tune["trainer.learning_rate"] == {"low": 1e-5, "high": 1e-4, "log": True}


def test_ranges_and_choices_are_typed() -> None:
    lr = {"low": "1e-4", "high": 1.0e-2, "log": True}  # 1e-4: a string to PyYAML
    cfg = load_config("smoke", {"tune": {"trainer.learning_rate": lr,
                                         "lora.r": {"low": 4, "high": 16, "step": 4},
                                         "trainer.lr_scheduler_type": {"choices": ["linear", "cosine"]}}})
    from peft_sentiment.config import tune_space

    space = tune_space(cfg)
    assert space["trainer.learning_rate"].low == 1e-4 and not space["trainer.learning_rate"].is_int
    assert space["lora.r"].is_int and space["lora.r"].contains(8) and not space["lora.r"].contains(20)
    assert space["trainer.lr_scheduler_type"].contains("cosine")


# ---------------------------------------------------------------- the parent, with a stand-in child

# Stands in for `python -m peft_sentiment train --recipe R -o OUT`: its validation accuracy is ten times
# its learning rate after every epoch; FAKE_TUNE=fail fails, =stubborn ignores SIGTERM.
FAKE_CHILD = """#!{python}
import json, os, signal, sys, time
import yaml

recipe, out = sys.argv[sys.argv.index("--recipe") + 1], sys.argv[sys.argv.index("-o") + 1]
cfg = yaml.safe_load(open(recipe))
mode, path = os.environ.get("FAKE_TUNE", ""), os.environ["PEFT_SENTIMENT_EVENTS"]

def event(name, **fields):
    with open(path, "a") as f:
        f.write(json.dumps({{"v": 1, "event": name, "time": time.time(), **fields}}) + "\\n")

if mode == "fail":
    event("error", message="data folder /gone not found", type="DataError")
    sys.exit(1)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
accuracy = 10 * cfg["trainer"]["learning_rate"]
epochs = int(cfg["trainer"]["num_train_epochs"])
for epoch in range(1, epochs + 1):
    event("epoch", step=10 * epoch, total=10 * epochs, epoch=float(epoch))
    event("evaluate", step=10 * epoch, total=10 * epochs, epoch=float(epoch), accuracy=accuracy)
    time.sleep(float(os.environ.get("FAKE_EPOCH_SECONDS", "0.4")))
os.makedirs(out)
with open(os.path.join(out, "config.yaml"), "w") as f:
    yaml.safe_dump(cfg, f)
with open(os.path.join(out, "metrics.json"), "w") as f:  # test figures the search must never read
    json.dump({{"accuracy": 1 - accuracy, "validation": {{"accuracy": accuracy}}}}, f)
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    python = tmp_path / "python"
    python.write_text(FAKE_CHILD.format(python=sys.executable))
    python.chmod(0o755)
    recipe = tune_recipe(tmp_path, tune={"trainer.learning_rate": {"low": 0.01, "high": 0.1},
                                         "trainer.num_train_epochs": {"choices": [2, 3]}})
    return SimpleNamespace(python=str(python), recipe=str(recipe), out=tmp_path / "out")


def run_fake(fake: SimpleNamespace, trials: int, *points: dict[str, Any], **kwargs: Any) -> Any:
    from peft_sentiment.tune import TuneSpec, run_tune

    spec = TuneSpec(recipe=fake.recipe, trials=trials, enqueue=points, timeout=kwargs.pop("timeout", None))
    return run_tune(spec, fake.out, python=fake.python, **kwargs)


def point(lr: float, epochs: int = 2) -> dict[str, Any]:
    return {"trainer.learning_rate": lr, "trainer.num_train_epochs": epochs}


def test_validation_accuracy_chooses_never_the_test_figures(fake: SimpleNamespace) -> None:
    result = run_fake(fake, 3, point(0.05), point(0.09), point(0.02, 3))
    assert [(r.state, r.value) for r in result.trials] == [
        ("complete", pytest.approx(0.5)), ("complete", pytest.approx(0.9)), ("pruned", pytest.approx(0.2))]
    assert result.best.number == 1  # its test accuracy (0.1) is the worst
    assert yaml.safe_load((fake.out / "best.yaml").read_text())["trainer"]["learning_rate"] == 0.09


def test_a_trial_left_running_by_a_killed_tune_is_failed_and_retried(fake: SimpleNamespace) -> None:
    run_fake(fake, 2, point(0.05), point(0.09))
    # What a killed tune leaves: a trial asked for and never told, with the start of a run folder.
    study = load_study(fake.out)
    study.enqueue_trial(point(0.07))
    left = study.ask({"trainer.learning_rate": optuna.distributions.FloatDistribution(0.01, 0.1),
                      "trainer.num_train_epochs": optuna.distributions.CategoricalDistribution([2, 3])})
    (fake.out / "trials" / f"{left.number}.partial").mkdir()
    result = run_fake(fake, 3, resume=True)
    states = [(r.number, r.state) for r in result.trials]
    assert states == [(0, "complete"), (1, "complete"), (2, "failed"), (3, "complete")]
    assert result.trials[3].params == point(0.07) and result.trials[3].note == "retry of trial 2"
    assert "retried as trial 3" in result.trials[2].note
    assert not (fake.out / "trials" / "2.partial").exists() and (fake.out / "trials" / "3").is_dir()
    assert result.ran == 1
    rows = read_csv(fake.out / "trials.csv")
    assert [r["state"] for r in rows] == ["complete", "complete", "failed", "complete"]


def test_a_retry_queued_when_the_study_has_its_trials_is_shown_as_not_run(fake: SimpleNamespace) -> None:
    run_fake(fake, 2, point(0.05), point(0.09))
    study = load_study(fake.out)
    study.ask({"trainer.learning_rate": optuna.distributions.FloatDistribution(0.01, 0.1)})  # left running
    result = run_fake(fake, 2, resume=True)  # the study already holds 2 finished trials: nothing runs
    assert result.ran == 0
    assert [(r.number, r.state) for r in result.trials] == [(0, "complete"), (1, "complete"), (2, "failed"),
                                                             (3, "waiting")]
    assert result.trials[2].note.endswith("queued again as trial 3, not run (the study had its trials)")
    assert result.trials[3].note == "retry of trial 2, not run"


def test_a_child_that_ignores_sigterm_is_killed(fake: SimpleNamespace,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from peft_sentiment import tune

    monkeypatch.setattr(tune, "STOP_WAIT_SECONDS", 0.5)
    monkeypatch.setenv("FAKE_TUNE", "stubborn")
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "1.0")
    result = run_fake(fake, 3, point(0.05), point(0.09), point(0.02, 3))
    assert result.trials[2].state == "pruned" and result.trials[2].note == "pruned after epoch 1"
    done = events.read(fake.out / "trials" / "2.events.jsonl")[-1]
    assert done["event"] == "done" and done["exit_code"] == -9 and done["pruned"] is True


def test_three_failures_in_a_row_stop_the_study(fake: SimpleNamespace,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from peft_sentiment.errors import RunError

    monkeypatch.setenv("FAKE_TUNE", "fail")
    with pytest.raises(RunError, match="3 trials in a row failed.*exit 1: data folder /gone not found"):
        run_fake(fake, 10)
    rows = read_csv(fake.out / "trials.csv")
    assert [r["state"] for r in rows] == ["failed"] * 3
    assert rows[0]["note"] == "exit 1: data folder /gone not found"
    assert not (fake.out / "best.yaml").exists() and (fake.out / "history.png").is_file()


def test_timeout_starts_no_new_trial(fake: SimpleNamespace) -> None:
    result = run_fake(fake, 5, point(0.05), timeout=0.5)  # one trial takes two 0.4 s epochs
    assert result.stopped == "timeout" and result.ran == 1 and len(result.trials) == 1


# ---------------------------------------------------------------- the child's evaluate event


def test_the_events_callback_reports_each_epochs_validation(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(events.ENV_VAR, str(path))
    (callback,) = events.callbacks()
    state = SimpleNamespace(global_step=50, max_steps=100, epoch=1.0)
    callback.on_evaluate(None, state, None, metrics={"eval_accuracy": 0.75, "eval_f1": 0.5, "eval_loss": 0.6,
                                                     "eval_runtime": 0.1})
    callback.on_evaluate(None, state, None, metrics={"test_accuracy": 0.1})  # not a validation evaluation
    (found,) = events.read(path)
    assert {k: v for k, v in found.items() if k != "time"} == {
        "v": 1, "event": "evaluate", "step": 50, "total": 100, "epoch": 1.0, "accuracy": 0.75, "f1": 0.5,
        "loss": 0.6}
