"""Config loading, overrides and validation messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from loraclf.config import Config, config_from_dict, describe_fields, load_config
from loraclf.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path: Path) -> None:
    """It loads every preset in configs/ without errors."""
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_seed_preset_is_the_study() -> None:
    """It keeps the original study's settings in configs/seed.yaml."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "seed.yaml")
    assert cfg.model.name == "FacebookAI/roberta-base"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules, cfg.lora.bias) == (8, 16, 0.15, ["query", "value"], "none")
    t = cfg.train
    assert (t.lr, t.batch_size, t.eval_batch_size, t.grad_accum, t.epochs, t.weight_decay, t.warmup_steps, t.scheduler, t.seed) == (
        2e-5, 32, 64, 2, 3, 0.01, 500, "cosine", 42)
    assert cfg.data.val_fraction == 0.1


def test_overrides_win_and_parse_types() -> None:
    """It applies dotted key=value overrides with YAML typing."""
    cfg = config_from_dict({"lora": {"r": 4}}, ["lora.r=16", "train.lr=5e-4", "lora.target_modules=query,key,value", "data.max_train_rows=null"])
    assert cfg.lora.r == 16
    assert cfg.train.lr == 5e-4
    assert cfg.lora.target_modules == ["query", "key", "value"]
    assert cfg.data.max_train_rows is None


def test_unknown_key_lists_valid_keys() -> None:
    """It names an unknown key and lists the valid keys of its section."""
    with pytest.raises(ConfigError, match=r"lora\.rank: unknown key; valid keys in lora: r, alpha, dropout, target_modules, bias, modules_to_save"):
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
    """It documents every field."""
    rows = describe_fields()
    assert all(help_text for _, _, help_text in rows)
    assert any(name == "lora.r" for name, _, _ in rows)
