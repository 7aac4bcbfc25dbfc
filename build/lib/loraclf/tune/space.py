"""The search space: checking it, storing it with the study, drawing a trial's values, applying them to a config.

A dimension is a dotted config field (`train.lr`, `lora.r`) with a `SearchParam` from `tune.space`;
a trial's config is the base config with its values set at those paths and validated again.
"""
from __future__ import annotations

import json
from typing import Any

from ..config import Config, SearchParam, config_from_dict, set_dotted
from ..errors import ConfigError


def canonical_space(params: dict[str, SearchParam]) -> dict[str, Any]:
    """The space as stored in the study (JSON round-tripped, so it compares equal after a reload)."""
    return json.loads(json.dumps({k: p.to_dict() for k, p in sorted(params.items())}))


def check_space_values(cfg: Config) -> dict[str, SearchParam]:
    """The checked space; every choice and bound must also make a valid config.

    Raises:
        ConfigError: one line listing each bad entry (empty space, bad type or range, invalid value).
    """
    errs: list[str] = []
    params = cfg.tune.search_params(errs)
    if errs:
        raise ConfigError("; ".join(errs))
    for key, p in params.items():
        for value in p.choices if p.type == "categorical" else [p.low, p.high]:
            try:
                apply_params(cfg, {key: value})
            except ConfigError as e:
                errs.append(f"tune.space.{key}: the value {value!r} makes an invalid config ({e})")
    if errs:
        raise ConfigError("; ".join(errs))
    return params


def suggest(trial: Any, params: dict[str, SearchParam]) -> dict[str, Any]:
    """The trial's value for every dimension (an enqueued or retried trial gets its fixed values)."""
    values = {}
    for key, p in params.items():
        if p.type == "categorical":
            values[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return values


def apply_params(cfg: Config, values: dict[str, Any], **top: Any) -> Config:
    """A copy of `cfg` with `values` at their dotted paths (and top-level fields such as name/out), re-validated.

    Raises:
        ConfigError: a value makes an invalid config.
    """
    raw = cfg.to_dict()
    for key, value in values.items():
        set_dotted(raw, key, value)
    raw.update(top)
    return config_from_dict(raw)


def best_config(cfg: Config, params: dict[str, Any]) -> Config:
    """The base config with the best trial's values: ready for `loraclf train --config best.yaml`."""
    return apply_params(cfg, params, name=f"{cfg.tune.study_name}-best", out=None)
