"""Run configuration: nested dataclasses loaded from YAML, overridden by `key=value`, validated by pydantic.

- schema.py: the sections (DataConfig, ModelConfig, LoraConfig, TrainConfig, TuneConfig, Config), each
  field's type, range and help (`metadata["help"]`, printed by `loraclf config show --fields`), and
  the built-in defaults, which equal configs/default.yaml.
- space.py: the tune search space (SearchParam) and its checks.
- loader.py: YAML files, `key=value` overrides, and every problem gathered into one ConfigError line.
"""
from .loader import config_from_dict, get_dotted, load_config, preset_summary, presets, read_yaml, resolve_config, set_dotted
from .inference import InferenceSettings, check_inference_options, compile_choice
from .schema import (FORMATS, LORA_BIAS, PRECISIONS, PRUNERS, SCHEDULERS, TRACKERS, Config, DataConfig, LoraConfig,
                     ModelConfig, TrainConfig, TuneConfig, describe_fields, is_config_field)
from .space import SEARCH_TYPES, SearchParam, parse_search_param

__all__ = [
    "Config", "DataConfig", "ModelConfig", "LoraConfig", "TrainConfig", "TuneConfig", "SearchParam",
    "PRECISIONS", "SCHEDULERS", "FORMATS", "LORA_BIAS", "TRACKERS", "PRUNERS", "SEARCH_TYPES",
    "load_config", "config_from_dict", "read_yaml", "set_dotted", "get_dotted", "is_config_field",
    "parse_search_param", "describe_fields", "presets", "preset_summary", "resolve_config",
]
