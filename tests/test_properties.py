"""Property-based tests (hypothesis) for the config loader and the data labels.

The config strategies are derived from the dataclasses' fields and type hints, so a section or
field added to `RunConfig` is covered without changing this file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from peft_sentiment.config import (
    DEFAULT_TRAINER,
    LEGACY_TRAIN_KEYS,
    DataConfig,
    RunConfig,
    build,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)
from peft_sentiment.data import load_splits
from peft_sentiment.errors import ConfigError, DataError
from peft_sentiment.labels import BINARY

PROPERTY = settings(max_examples=50, deadline=None)
NONE = type(None)

# ---------------------------------------------------------------- the config tree, from its type hints


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The fields these properties cover: all but RunConfig.tune, the search space of `tune`, which
    training ignores and saved configs leave out (tests/test_tune.py covers it)."""
    return [f for f in dataclasses.fields(cls) if not (cls is RunConfig and f.name == "tune")]


def _inner(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not NONE]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def leaf_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, type) below `cls`, sections left out."""
    hints = typing.get_type_hints(cls)
    leaves: list[tuple[str, Any]] = []
    for f in config_fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            leaves += leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            leaves.append((f"{prefix}{f.name}", hints[f.name]))
    return leaves


def all_keys(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, type), sections included."""
    hints = typing.get_type_hints(cls)
    keys: list[tuple[str, Any]] = []
    for f in config_fields(cls):
        keys.append((f"{prefix}{f.name}", hints[f.name]))
        if dataclasses.is_dataclass(hints[f.name]):
            keys += all_keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


def known_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


SECTIONS = [""] + [key + "." for key, tp in all_keys() if dataclasses.is_dataclass(tp)]


def section_class(section: str) -> type:
    cls: type = RunConfig
    for part in filter(None, section.split(".")):
        cls = typing.get_type_hints(cls)[part]
    return cls


# ---------------------------------------------------------------- value strategies


def _plain_name(text: str) -> bool:
    """Not `~user` (tested on its own below) and no existing file or folder (model.name)."""
    return not text.startswith("~") and not Path(text).exists()


NAMES = st.text(min_size=1, max_size=20).filter(_plain_name)
MODULES = st.sampled_from(["query", "key", "value", "dense", "q_lin", "v_lin"]) | NAMES
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
SCALARS = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | FLOATS | st.text(max_size=20)
ANY_VALUE = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
PLAIN_VALUE = st.recursive(  # what YAML reads back equal: no NaN
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


# trainer: takes any TrainingArguments field; these few, in ranges transformers accepts, stand for them.
TRAINER_RANGES = {
    "learning_rate": (1e-6, 0.99),
    "num_train_epochs": (0.01, 50.0),
    "per_device_train_batch_size": (1, 512),
    "weight_decay": (0.0, 0.99),
}
SCHEDULER_VALUES = ["linear", "cosine", "constant"]
TRAINER_VALUES = {
    **{name: (st.integers if isinstance(low, int) else st.floats)(low, high)
       for name, (low, high) in TRAINER_RANGES.items()},
    "lr_scheduler_type": st.sampled_from(SCHEDULER_VALUES),
}


def _valid_trainer_option(name: str, value: Any) -> bool:
    if name == "lr_scheduler_type":
        return value in SCHEDULER_VALUES
    low, high = TRAINER_RANGES[name]
    kind = int if isinstance(low, int) else float
    return isinstance(value, kind) and not isinstance(value, bool) and low <= value <= high


def valid_values(tp: Any, key: str = "") -> st.SearchStrategy:
    """Values of type `tp` that every field's own range check accepts."""
    tp, optional = _inner(tp)
    base = _valid_values(tp, key)
    return st.none() | base if optional else base


def _valid_values(tp: Any, key: str) -> st.SearchStrategy:
    if dataclasses.is_dataclass(tp):
        return section_dicts(tp, f"{key}.")
    if key == "trainer":
        return st.fixed_dictionaries({}, optional=TRAINER_VALUES)
    if typing.get_origin(tp) is Literal:
        return st.sampled_from(typing.get_args(tp))
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(100, 2**31)  # sizes, seeds, steps and vocabulary sizes alike
    if tp is float:
        return st.floats(1e-6, 0.99)  # rates, ratios, epochs and dropout alike
    if tp is str:
        return NAMES
    if typing.get_origin(tp) is tuple:
        return st.lists(MODULES, min_size=1, max_size=4, unique=True)
    if typing.get_origin(tp) is dict:  # model.architecture needs a model_type
        return st.dictionaries(st.text(max_size=8), PLAIN_VALUE, max_size=3).map(
            lambda d: {**d, "model_type": "distilbert"})
    raise AssertionError(f"no strategy for {tp}")


def edge_values(tp: Any) -> st.SearchStrategy:
    """Values of type `tp` at and around the range rules' bounds (0, 1, 100, empty), where a missing or
    shifted check shows."""
    tp, optional = _inner(tp)
    if tp is int:
        edges = st.integers(-2, 2) | st.sampled_from([99, 100, 101, 2**32 - 1, 2**32, -LONG, -LONG - 1])
    elif tp is float:
        edges = st.sampled_from([-1.0, -0.0, 0.0, 1e-9, 0.5, 0.999, 1.0, 2.0, "0", "1e-3", "-1", "1"])
    elif tp is str:
        edges = st.sampled_from(["", " ", "x"])
    elif typing.get_origin(tp) is tuple:
        edges = st.sampled_from(["", ",", " , ", "a,b", [], [""], ["a"]])
    elif typing.get_origin(tp) is dict:
        edges = st.sampled_from([{}, {"model_type": "bert"}, {"x": 1}])
    elif dataclasses.is_dataclass(tp):
        edges = st.just({})
    else:  # bool, Literal: ANY_VALUE and valid_values cover them
        edges = st.nothing()
    return st.none() | edges if optional else edges


def section_dicts(cls: type, prefix: str = "") -> st.SearchStrategy:
    """Mappings for `build(cls, ...)`: any subset of the fields, each with a valid value."""
    hints = typing.get_type_hints(cls)
    return st.fixed_dictionaries({}, optional={f.name: valid_values(hints[f.name], prefix + f.name)
                                               for f in config_fields(cls)})


@st.composite
def run_configs(draw: st.DrawFn) -> RunConfig:
    data = draw(section_dicts(RunConfig))
    try:
        return build(RunConfig, data)
    except ConfigError:  # a check across fields (e.g. ia3 targets) refused the combination
        assume(False)
        raise


def _parses_as_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _accepts(tp: Any, value: Any) -> bool:
    """The loader's type rules: whether `value` has the right type for `tp` (range aside)."""
    tp, optional = _inner(tp)
    if value is None:
        return optional
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) or origin is dict:
        return isinstance(value, dict)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
            isinstance(value, str) and _parses_as_float(value))
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:  # a comma-separated string or a list of strings
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    raise AssertionError(f"no rule for {tp}")


# The range rules of each field and section, written here apart from config.py: a value of the right
# type is accepted exactly when its rule holds (a field without a rule takes any value of its type).
def _positive(v: Any) -> bool:
    return v > 0


def _unit(v: Any) -> bool:
    return 0.0 <= v < 1.0


def _named(v: Any) -> bool:
    return len(v) > 0


def _seed(v: Any) -> bool:
    return 0 <= v < 2**32  # what numpy and datasets take


LONG = 2**63 - 1  # every integer field: what a C long holds


def _class_weights(v: str) -> bool:
    """none, balanced, or two or more positive finite numbers separated by commas."""
    if v in ("none", "balanced"):
        return True
    try:
        weights = [float(w) for w in v.split(",")]
    except ValueError:
        return False
    return len(weights) >= 2 and all(math.isfinite(w) and w > 0 for w in weights)


def _labels(v: str) -> bool:
    """Names, or VALUE=NAME pairs (all or none), none empty, none twice (ignoring case)."""
    parts = [p.strip() for p in v.split(",")]
    pairs = ["=" in p for p in parts]
    if any(pairs) and not all(pairs):
        return False
    columns = [[p.split("=", 1)[i].strip() for p in parts] for i in (0, 1)] if all(pairs) else [parts]
    return all(all(items) and len({i.lower() for i in items}) == len(items) for items in columns)


RANGES: dict[str, Any] = {
    **{f"data.{name}": _positive for name in ("train_size", "test_size", "max_length", "head_tokens")},
    **{f"data.{name}": _named
       for name in ("source", "text_column", "label_column", "train_split", "test_split", "validation_split")},
    "data.validation_size": lambda v: v >= 0,
    "data.labels": _labels,
    "train.class_weights": _class_weights,
    "data.shuffle_seed": _seed,
    "model.name": _named,
    "model.architecture": lambda v: "model_type" in v,
    "model.tokenizer_vocab_size": lambda v: v >= 100,
    "lora.r": _positive,
    "lora.alpha": _positive,
    "lora.dropout": _unit,
    "lora.target_modules": _named,
    "ia3.target_modules": _named,
    "ia3.feedforward_modules": _named,
    "train.seed": _seed,
    "train.save_steps": _positive,
    "train.keep_checkpoints": _positive,
    "train.attention_dropout": _unit,
    "train.early_stopping_patience": _positive,
}


def _exists(name: str) -> bool:
    try:
        return Path(name).expanduser().exists()
    except (OSError, ValueError, RuntimeError):  # too long, a NUL byte, an unknown user
        return False


SECTION_RULES: dict[str, Any] = {  # rules across the fields of one section, on its plain dict
    "data": lambda d: d["truncation"] != "head+tail" or d["head_tokens"] < d["max_length"] - 2,
    "model": lambda m: m["architecture"] is None or not _exists(m["name"]),
    "ia3": lambda s: (s["target_modules"] is None) == (s["feedforward_modules"] is None) and (
        s["target_modules"] is None or set(s["feedforward_modules"]) <= set(s["target_modules"])),
    "train": lambda t: t["save_steps"] is None or not (
        t["save_every_epoch"] or t["keep_best"] or t["early_stopping_patience"] is not None),
}


def _run_rule(cfg: dict[str, Any]) -> bool:
    """Across sections: choosing an epoch on validation needs validation reviews."""
    chooses = cfg["train"]["keep_best"] or cfg["train"]["early_stopping_patience"] is not None
    return not chooses or cfg["data"]["validation_size"] > 0
REFUSED = object()


def _expected(tp: Any, value: Any, key: str) -> Any:
    """What the loader must make of `value` for `key`: the value as config_to_dict shows it, or REFUSED."""
    if not _accepts(tp, value):
        return REFUSED
    tp, _ = _inner(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        return _expected_section(tp, value, key)
    if key == "trainer":
        return _expected_trainer(value)
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            return REFUSED
    elif typing.get_origin(tp) is tuple:
        value = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    elif tp is int and not -LONG <= value <= LONG:
        return REFUSED
    rule = RANGES.get(key)
    return value if rule is None or rule(value) else REFUSED


def _expected_section(cls: type, data: dict[Any, Any], key: str) -> Any:
    """A section replaced by `data`: its fields from `data`, the others at their defaults."""
    if not set(data) <= known_names(cls):
        return REFUSED
    hints = typing.get_type_hints(cls)
    section = config_to_dict(cls())
    for name, value in data.items():
        section[name] = _expected(hints[name], value, f"{key}.{name}")
        if section[name] is REFUSED:
            return REFUSED
    rule = SECTION_RULES.get(key)
    return section if rule is None or rule(section) else REFUSED


def _expected_trainer(options: dict[Any, Any]) -> Any:
    """The project's defaults, updated by `options` when each is a value TRAINER_VALUES would draw."""
    from transformers import TrainingArguments

    if not set(options) <= {f.name for f in dataclasses.fields(TrainingArguments)}:
        return REFUSED  # not a TrainingArguments field
    valid = all(name in TRAINER_VALUES and _valid_trainer_option(name, v) for name, v in options.items())
    assume(valid)  # other values of real fields are transformers' to judge
    return {**DEFAULT_TRAINER, **options}


def expected_override(key: str, value: Any) -> Any:
    """`--set key=value` on the default recipe: the value the config holds, or REFUSED."""
    section, _, name = key.rpartition(".")
    cls = section_class(section)
    typed = _expected(typing.get_type_hints(cls)[name], value, key)
    if typed is REFUSED:
        return typed
    whole = config_to_dict(RunConfig())
    if section in SECTION_RULES:
        merged = {**config_to_dict(cls()), name: typed}
        if not SECTION_RULES[section](merged):
            return REFUSED
        whole[section] = merged
    elif not section:  # a whole section (or a top-level key) replaced
        whole[name] = typed
    return typed if _run_rule(whole) else REFUSED


def test_rules_name_real_keys() -> None:
    """A renamed field fails here rather than leaving its rule unused."""
    keys = {key for key, _ in all_keys()}
    assert set(RANGES) <= keys and set(SECTION_RULES) <= keys


# ---------------------------------------------------------------- config: round trips


@pytest.fixture(scope="module")
def default_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The defaults as a recipe file: a base for overrides that touches no recipe in recipes/."""
    path = tmp_path_factory.mktemp("recipe") / "defaults.yaml"
    save_config(RunConfig(), path)
    return path


@PROPERTY
@given(cfg=run_configs())
def test_saved_config_reads_back_equal(cfg: RunConfig) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        save_config(cfg, path)
        assert load_config(path) == cfg
    assert build(RunConfig, config_to_dict(cfg)) == cfg


@PROPERTY
@given(cfg=run_configs())
def test_overrides_rebuild_any_config(cfg: RunConfig, default_recipe: Path) -> None:
    """`--set key=value` for every field, values written as YAML, gives the same config."""
    flat = {key: _get(config_to_dict(cfg), key) for key, _ in leaf_fields()}
    items = [f"{key}={yaml.safe_dump(value)}" for key, value in flat.items()]
    overrides = dict(parse_override(item) for item in items)
    assert overrides == flat
    assert load_config(default_recipe, overrides) == cfg


def _get(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


@PROPERTY
@given(key=st.text(alphabet=st.characters(blacklist_characters="="), min_size=1, max_size=20),
       value=PLAIN_VALUE)
def test_parse_override_reads_yaml_values(key: str, value: Any) -> None:
    assume(key.strip())
    assert parse_override(f"{key}={yaml.safe_dump(value)}") == (key.strip(), value)


@PROPERTY
@given(item=st.text(max_size=40))
@example(item="novalue")
@example(item=" =x")
@example(item="a=[1, 2")
def test_parse_override_returns_a_pair_or_config_error(item: str) -> None:
    """Refused exactly when there is no `=` or nothing before it; otherwise the key, stripped."""
    key, sep, _ = item.partition("=")
    if not sep or not key.strip():
        with pytest.raises(ConfigError, match="must look like key=value"):
            parse_override(item)
    else:
        assert parse_override(item)[0] == key.strip()


# ---------------------------------------------------------------- config: unknown keys, wrong types


@PROPERTY
@given(section=st.sampled_from(SECTIONS), key=st.text(min_size=1, max_size=20), value=PLAIN_VALUE)
def test_unknown_key_is_named(section: str, key: str, value: Any) -> None:
    assume(key not in known_names(section_class(section)))
    assume(not (section == "train." and key in LEGACY_TRAIN_KEYS))  # moved to trainer:, not unknown
    data: dict[str, Any] = {}
    node = data
    for part in filter(None, section.split(".")):
        node = node.setdefault(part, {})
    node[key] = value
    with pytest.raises(ConfigError) as err:
        build(RunConfig, data)
    dotted = ".".join(filter(None, [*section.split("."), key]))
    assert repr(dotted) in str(err.value) and "unknown key" in str(err.value)


@PROPERTY
@given(section=st.sampled_from(SECTIONS),
       key=st.text(alphabet=st.characters(blacklist_characters=".="), min_size=1, max_size=20),
       value=PLAIN_VALUE)
def test_unknown_override_is_named(section: str, key: str, value: Any, default_recipe: Path) -> None:
    assume(key.strip() == key and key not in known_names(section_class(section)))
    assume(not (section == "train." and key in LEGACY_TRAIN_KEYS))  # moved to trainer:, not unknown
    with pytest.raises(ConfigError) as err:
        load_config(default_recipe, {f"{section}{key}": value})
    assert repr(f"{section}{key}") in str(err.value)


@PROPERTY
@given(data=st.data())
def test_wrong_type_is_named(data: st.DataObject, default_recipe: Path) -> None:
    key, tp = data.draw(st.sampled_from(all_keys()), label="key")
    value = data.draw(ANY_VALUE.filter(lambda v: not _accepts(tp, v)), label="value")
    with pytest.raises(ConfigError) as err:
        load_config(default_recipe, {key: value})
    assert key in str(err.value)


@settings(PROPERTY, max_examples=300)
@given(data=st.data())
def test_any_value_builds_or_names_the_key(data: st.DataObject, default_recipe: Path) -> None:
    """Whatever a recipe or --set holds for a known key: the config holding it where the type and range
    rules allow it, else a ConfigError naming the key; the rules above say which."""
    key, tp = data.draw(st.sampled_from(all_keys()), label="key")
    value = data.draw(ANY_VALUE | valid_values(tp, key) | edge_values(tp), label="value")
    expected = expected_override(key, value)
    event("refused" if expected is REFUSED else "accepted")
    if expected is REFUSED:
        with pytest.raises(ConfigError) as err:
            load_config(default_recipe, {key: value})
        assert key in str(err.value)
    else:
        assert _get(config_to_dict(load_config(default_recipe, {key: value})), key) == expected


# Inputs at the edges: each accepted, or refused with the package's own error naming the key (never
# another exception type, which the CLI would show as a traceback); non-finite numbers are refused.


@pytest.mark.parametrize("name", ["~no-such-user-here/model", "x" * 300])
def test_model_name_that_is_no_path(name: str) -> None:
    """Names no file system has (an unknown user's home, too long for a path) are no folder: a new
    model may be built under them."""
    cfg = load_config(None, {"model.name": name, "model.architecture": {"model_type": "distilbert"}})
    assert cfg.model.name == name and cfg.model.architecture == {"model_type": "distilbert"}


@pytest.mark.parametrize(("item", "kind"), [("train.seed=!!int abc", "an integer"),
                                            ("trainer.learning_rate=!!float x", "a number")])
def test_override_with_bad_yaml_tag(item: str, kind: str) -> None:
    """YAML that fails to construct is kept as text, for the type check to name."""
    key, value = parse_override(item)
    assert (key, value) == tuple(item.split("=", 1))
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be {kind}, got {value!r}")):
        load_config(None, {key: value})


@pytest.mark.parametrize("key", ["trainer.learning_rate", "lora.dropout"])
def test_float_field_given_a_huge_integer(key: str) -> None:
    """10**400 is a YAML integer no float holds."""
    name, value = parse_override(f"{key}=1" + "0" * 400)
    assert (name, value) == (key, 10**400)
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be a number, got 1000")):
        load_config(None, {name: value})


@pytest.mark.parametrize("key", ["trainer.learning_rate", "trainer.num_train_epochs", "trainer.weight_decay",
                                 "lora.dropout", "train.attention_dropout"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "inf"])
def test_non_finite_numbers_are_refused(key: str, value: float | str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be a finite number")):
        load_config(None, {key: value})


def test_data_source_of_unknown_user() -> None:
    """`~user/...` of an unknown user is a path (not a Hub id) that does not exist."""
    with pytest.raises(DataError, match=re.escape("data folder not found: ~no-such-user-here/data")):
        load_splits(DataConfig(source="~no-such-user-here/data"), need_train=False)


# ---------------------------------------------------------------- data: labels

NEGATIVE_SPELLINGS = ["neg", "negative", "0"]
POSITIVE_SPELLINGS = ["pos", "positive", "1"]
ACCEPTED = set(NEGATIVE_SPELLINGS) | set(POSITIVE_SPELLINGS)


@st.composite
def spelled(draw: st.DrawFn, label: int) -> str:
    """An accepted spelling of `label` in any case, with spaces or tabs around it."""
    word = draw(st.sampled_from(POSITIVE_SPELLINGS if label else NEGATIVE_SPELLINGS))
    upper = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    pad = st.text(alphabet=" \t", max_size=2)
    return draw(pad) + "".join(c.upper() if u else c for c, u in zip(word, upper)) + draw(pad)


def _is_invalid(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() not in ACCEPTED
    return value not in (0, 1)


INVALID_LABELS = {  # per JSON column type, so the file reads as one column type
    "string": st.text(max_size=12).filter(_is_invalid),
    "int": st.integers(-2**63, 2**63 - 1).filter(_is_invalid),
    "float": st.floats(allow_nan=False, allow_infinity=False).filter(_is_invalid),
    "bool": st.booleans(),
    "null": st.none(),
}


@PROPERTY
@given(label=st.integers(0, 1), data=st.data())
def test_label_id_accepts_every_spelling(label: int, data: st.DataObject) -> None:
    value = data.draw(spelled(label) | st.sampled_from([label, float(label)]))
    assert BINARY.id_of(value) == label


@PROPERTY
@given(value=st.one_of(*INVALID_LABELS.values(), st.lists(st.integers(0, 1), max_size=2)))
def test_label_id_refuses_anything_else(value: Any) -> None:
    assert BINARY.id_of(value) is None


def _write_test_split(folder: Path, labels: list[Any]) -> DataConfig:
    with (folder / "test.jsonl").open("w") as f:
        for i, label in enumerate(labels):
            f.write(json.dumps({"text": f"review {i}", "label": label}) + "\n")
    return DataConfig(source=str(folder), test_size=len(labels))


@settings(PROPERTY, max_examples=25)
@given(data=st.data(), classes=st.lists(st.integers(0, 1), min_size=2, max_size=10),
       family=st.sampled_from(["string", "int", "float"]))
def test_load_splits_maps_labels_to_ids(data: st.DataObject, classes: list[int], family: str) -> None:
    assume(set(classes) == {0, 1})
    if family == "string":
        labels: list[Any] = [data.draw(spelled(c)) for c in classes]
    else:
        labels = [c if family == "int" else float(c) for c in classes]
    with tempfile.TemporaryDirectory() as folder:
        test = load_splits(_write_test_split(Path(folder), labels), need_train=False).test
        got = dict(zip(test["text"], test["label"]))
    assert got == {f"review {i}": c for i, c in enumerate(classes)}


@settings(PROPERTY, max_examples=25)
@given(data=st.data(), classes=st.lists(st.integers(0, 1), min_size=1, max_size=8),
       family=st.sampled_from(sorted(INVALID_LABELS)), position=st.integers(0, 8))
def test_load_splits_names_a_bad_label(data: st.DataObject, classes: list[int], family: str,
                                       position: int) -> None:
    bad = data.draw(INVALID_LABELS[family], label="bad")
    valid: list[Any] = [str(c) if family == "string" else c for c in classes]
    if family == "float":
        valid = [float(c) for c in classes]
    if family in ("bool", "null"):
        valid = [bad] * len(classes)  # a JSON column of one type: true/false or null only
    labels = valid[:position] + [bad] + valid[position:]
    with tempfile.TemporaryDirectory() as folder, pytest.raises(DataError) as err:
        load_splits(_write_test_split(Path(folder), labels), need_train=False)
    assert repr(bad) in str(err.value), str(err.value)
    assert "outside the two classes" in str(err.value)
