"""Config loading, overrides and validation messages."""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from loraclf.config import Config, DataConfig, config_from_dict, describe_fields, load_config
from loraclf.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted field: value} for a to_dict() tree (tune.space stays one value)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "space":
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def float_fields(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted field whose values are floats (optional ones included)."""
    out = []
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out.extend(float_fields(tp, f"{prefix}{name}."))
        elif tp is float or float in typing.get_args(tp):
            out.append(f"{prefix}{name}")
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path: Path) -> None:
    """It loads every preset in configs/, and its resolved form loads back to the same config."""
    cfg = load_config(path)
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict() == cfg.to_dict()
    errs: list[str] = []
    assert cfg.tune.search_params(errs) and errs == []


def test_builtin_defaults_are_default_yaml() -> None:
    """It gives the same config without --config as with configs/default.yaml, field by field."""
    builtin, preset = flat(load_config(None).to_dict()), flat(load_config(CONFIG_DIR / "default.yaml").to_dict())
    assert builtin.keys() == preset.keys()
    for key in builtin:
        assert builtin[key] == preset[key], f"{key}: built-in default {builtin[key]!r} != configs/default.yaml {preset[key]!r}"
    assert Config() == load_config(None)  # the dataclass defaults themselves, not only after validation


def test_seed_preset_is_the_study() -> None:
    """It keeps the original study's settings in configs/seed.yaml."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "seed.yaml")
    assert cfg.model.name == "FacebookAI/roberta-base"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules, cfg.lora.bias) == (8, 16, 0.15, ["query", "value"], "none")
    t = cfg.train
    assert (t.lr, t.batch_size, t.eval_batch_size, t.grad_accum, t.epochs, t.weight_decay, t.warmup_steps, t.scheduler, t.seed) == (
        2e-5, 32, 64, 2, 3, 0.01, 500, "cosine", 42)
    assert cfg.data.val_fraction == 0.1
    assert cfg.lora.modules_to_save == [] and cfg.train.early_stopping_patience == 0 and cfg.train.warmup_ratio == 0.0
    assert cfg.model.max_length == 512 and cfg.train.group_by_length is False
    # plain LoRA: none of the levers the built-in defaults turn on
    assert (cfg.lora.use_rslora, cfg.lora.use_dora, cfg.lora.init) == (False, False, "default")
    assert (t.head_lr, t.lora_plus_ratio, t.label_smoothing) == (None, 1.0, 0.0)
    assert cfg.tune.space == {
        "lora.r": {"type": "categorical", "choices": [4, 8, 16]},
        "lora.alpha": {"type": "categorical", "choices": [8, 16, 32]},
        "lora.dropout": {"type": "float", "low": 0.05, "high": 0.2},
        "train.lr": {"type": "categorical", "choices": [1e-5, 2e-5, 3e-5]},
        "train.epochs": {"type": "categorical", "choices": [2, 3]},
    }


def test_default_space_searches_around_the_recommendation() -> None:
    """It searches the learning rates, label smoothing, rank and dropout around the recommended values, which lie inside."""
    cfg = load_config(None)
    space = cfg.tune.search_params()
    assert set(space) == {"train.lr", "train.head_lr", "train.label_smoothing", "lora.r", "lora.dropout"}
    for key, value in [("train.lr", cfg.train.lr), ("train.head_lr", cfg.train.head_lr)]:
        assert space[key].log and space[key].low < value < space[key].high
    assert cfg.lora.r in space["lora.r"].choices
    for key, value in [("lora.dropout", cfg.lora.dropout), ("train.label_smoothing", cfg.train.label_smoothing)]:
        assert space[key].low <= value <= space[key].high


def test_overrides_win_and_parse_types() -> None:
    """It applies dotted key=value overrides with YAML typing."""
    cfg = config_from_dict({"lora": {"r": 4}}, ["lora.r=16", "train.lr=5e-4", "lora.target_modules=query,key,value", "data.max_train_rows=null"])
    assert cfg.lora.r == 16
    assert cfg.train.lr == 5e-4
    assert cfg.lora.target_modules == ["query", "key", "value"]
    assert cfg.data.max_train_rows is None


def test_yaml_and_command_line_spellings() -> None:
    """It reads `2e-5` (a string to YAML 1.1) as a float, ints as floats, numeric names as strings, a comma list as a list."""
    cfg = config_from_dict({"train": {"lr": "2e-5", "weight_decay": 0}, "model": {"name": 123}},
                           ["data.label_column=3", "lora.target_modules=query,value", "data.text_columns=title, body"])
    assert cfg.train.lr == 2e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 0.0 and isinstance(cfg.train.weight_decay, float)
    assert cfg.model.name == "123" and cfg.data.label_column == "3"
    assert cfg.lora.target_modules == ["query", "value"] and cfg.data.text_columns == ["title", "body"]
    assert config_from_dict({"lora": None}).lora == load_config(None).lora  # `lora:` with nothing under it


def test_yaml_file_with_exponent_without_dot(tmp_path: Path) -> None:
    """It accepts `lr: 2e-5` in a YAML file."""
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 2e-5\n  max_grad_norm: 1\n")
    cfg = load_config(p)
    assert cfg.train.lr == 2e-5 and cfg.train.max_grad_norm == 1.0


def test_only_true_and_false_are_booleans(tmp_path: Path) -> None:
    """It reads yes/no/on/off as the words they are (YAML 1.1 made them booleans), on the command line and in a
    file, so a model or column with such a name keeps it and a flag set to `yes` gets a one-line error."""
    cfg = config_from_dict({}, ["model.name=yes", "data.text_columns=[on, off]", "data.label_column=no"])
    assert cfg.model.name == "yes" and cfg.data.text_columns == ["on", "off"] and cfg.data.label_column == "no"
    p = tmp_path / "c.yaml"
    p.write_text("lora:\n  use_dora: yes\ntrain:\n  progress: False\n")
    with pytest.raises(ConfigError, match=r"^lora\.use_dora: 'yes' has the wrong type; expected true or false$"):
        load_config(p)
    p.write_text("lora:\n  use_dora: TRUE\n")
    assert load_config(p).lora.use_dora is True


@pytest.mark.parametrize("override, expected", [
    ("lora.r=true", r"lora\.r: True has the wrong type; expected an integer"),
    ("lora.r=8.5", r"lora\.r: 8\.5 has the wrong type; expected an integer"),
    ("train.progress=1", r"train\.progress: 1 has the wrong type; expected true or false"),
    ("train.lr=fast", r"train\.lr: 'fast' has the wrong type; expected a number"),
    ("data.text_columns={a: 1}", r"data\.text_columns: \{'a': 1\} has the wrong type; expected a list"),
    ("lora=3", r"lora: expected a mapping of keys, got 3"),
    ("lora.r=0", r"lora\.r: 0 is too small; use at least 1"),
    ("train.lr=2", r"train\.lr: 2 is out of range; use a value in \(0, 1\]"),
    ("data.val_fraction=0.9", r"data\.val_fraction: 0\.9 is out of range; use a value in \(0, 0\.5\]"),
    ("data.max_train_rows=0", r"data\.max_train_rows: 0 is too small; use at least 1 \(or null for all rows\)"),
    ("lora.bias=some", r"lora\.bias: 'some' is not an option; use one of none, all, lora_only"),
    ("lora.target_modules=[]", r"lora\.target_modules: is empty; name at least one module"),
    ("model.name=", r"model\.name: is empty; give a hub id or a local model directory"),
    ("tune.study_name=a/b", r"tune\.study_name: 'a/b' must be a non-empty name without '/'"),
    ("tune.heartbeat_interval=30", r"tune\.grace_period: 30 must exceed tune\.heartbeat_interval \(30\)"),
])
def test_one_problem_is_one_line_naming_field_value_and_fix(override: str, expected: str) -> None:
    """It reports a single problem as itself, on one line, with the field, the value and the fix."""
    with pytest.raises(ConfigError) as e:
        config_from_dict({}, [override])
    msg = str(e.value)
    assert "\n" not in msg and not msg.startswith("config has errors")
    assert re.match(expected, msg), msg


def test_float_fields_are_known() -> None:
    """It finds the float fields the NaN/inf test below covers."""
    assert {"train.lr", "train.weight_decay", "train.max_grad_norm", "tune.timeout", "lora.dropout"} <= set(float_fields())


@pytest.mark.parametrize("field", float_fields())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", ".nan", ".inf", "NaN"])
def test_nan_and_inf_are_refused(field: str, value: str) -> None:
    """It refuses NaN and infinity for every float field, with one line naming the field."""
    with pytest.raises(ConfigError) as e:
        config_from_dict({}, [f"{field}={value}"])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{field}: ") and "is not a finite number" in msg, msg


@pytest.mark.parametrize("key, guess", [
    ("train.learning_rate", "train.lr"),
    ("train.num_train_epochs", "train.epochs"),
    ("lora.alpah", "lora.alpha"),
    ("train.dropout", "lora.dropout"),
    ("lr", "train.lr"),
    ("modle", "model"),
])
def test_unknown_key_suggests_the_field(key: str, guess: str) -> None:
    """It suggests the field the user probably meant."""
    with pytest.raises(ConfigError, match=re.escape(f"did you mean `{guess}`?")):
        config_from_dict({}, [f"{key}=1"])


def test_unknown_key_without_a_likely_field_has_no_suggestion() -> None:
    """It lists the valid keys and guesses nothing when nothing is close."""
    with pytest.raises(ConfigError) as e:
        config_from_dict({}, ["train.zzz=1"])
    assert "valid keys in train: lr, batch_size" in str(e.value) and "did you mean" not in str(e.value)


def test_unknown_key_lists_valid_keys() -> None:
    """It names an unknown key and lists the valid keys of its section."""
    with pytest.raises(ConfigError, match=r"lora\.rank: unknown key; valid keys in lora: r, alpha, dropout, target_modules, bias, modules_to_save, use_rslora, use_dora, init"):
        config_from_dict({"lora": {"rank": 8}})


def test_wrong_type_names_field_value_and_type() -> None:
    """It names the field, the bad value and the expected type."""
    with pytest.raises(ConfigError, match=r"train\.epochs: 'three' has the wrong type; expected an integer"):
        config_from_dict({}, ["train.epochs=three"])


def test_all_problems_reported_at_once_on_one_line() -> None:
    """It gathers every problem into one single-line error."""
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"batch_size": 0, "lr": -1.0}, "lora": {"bias": "some"}})
    msg = str(e.value)
    assert "\n" not in msg
    assert "train.batch_size" in msg and "train.lr" in msg and "lora.bias" in msg


def test_range_type_and_unknown_key_errors_together() -> None:
    """It reports a range error alongside an unknown key, a wrong type, a NaN and a bad space entry."""
    with pytest.raises(ConfigError) as e:
        config_from_dict({}, ["lora.r=-1", "lora.rank=8", "train.epochs=three", "train.max_grad_norm=nan", "bogus=1",
                              "tune.space={lora.r: {type: int, low: 8, high: 4}}"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("config has errors: ")
    for part in ["lora.r: -1 is too small; use at least 1", "lora.rank: unknown key", "train.epochs: 'three' has the wrong type",
                 "train.max_grad_norm: nan is not a finite number", "bogus: unknown key; valid keys: name, out, data",
                 "tune.space.lora.r: low (8) must be below high (4)"]:
        assert part in msg, (part, msg)


def test_bad_yaml_file(tmp_path: Path) -> None:
    """It reports invalid YAML with its line."""
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line"):
        load_config(p)


def test_missing_file(tmp_path: Path) -> None:
    """It says the config file is missing."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_override_without_equals() -> None:
    """It explains the key=value form."""
    with pytest.raises(ConfigError, match="overrides are key=value"):
        config_from_dict({}, ["lora.r"])


def test_fields_have_help() -> None:
    """It documents every field; batch_size is the global micro-batch."""
    rows = describe_fields()
    assert all(help_text for _, _, help_text in rows)
    assert any(name == "lora.r" for name, _, _ in rows)
    help_of = {name: h for name, _, h in rows}
    assert "per device" not in help_of["train.batch_size"] and "all processes" in help_of["train.batch_size"]


def test_sections_stay_plain_dataclasses() -> None:
    """It keeps dataclasses.replace/fields/asdict working, without validating what code builds."""
    data = dataclasses.replace(DataConfig(), format="csv", text_columns=["a"])
    assert data.format == "csv" and [f.name for f in dataclasses.fields(data)][0] == "dataset"
    assert dataclasses.asdict(Config())["lora"]["r"] == 16
