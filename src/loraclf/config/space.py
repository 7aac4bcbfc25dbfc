"""The tune search space: one `SearchParam` per dotted config field, checked entry by entry.

Each entry is checked on its own terms here (type, choices, bounds); whether every choice and bound
also makes a valid config is checked by loraclf.tune (it builds that config).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import brief

SEARCH_TYPES = ("categorical", "int", "float")


@dataclass
class SearchParam:
    """One dimension of the search space: categorical `choices`, or a `low`..`high` range."""

    type: str = field(default="categorical", metadata={"help": "categorical, int or float."})
    choices: list[Any] | None = field(default=None, metadata={"help": "Values to choose from (categorical)."})
    low: float | None = field(default=None, metadata={"help": "Lower bound (int/float)."})
    high: float | None = field(default=None, metadata={"help": "Upper bound (int/float)."})
    log: bool = field(default=False, metadata={"help": "Sample on a log scale (int/float)."})
    step: float | None = field(default=None, metadata={"help": "Step between values (int/float, optional)."})

    def to_dict(self) -> dict[str, Any]:
        """The canonical form stored with a study: only the keys this type uses."""
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices or [])}
        d: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            d["step"] = self.step
        return d


def _number(v: Any) -> Any:
    """YAML 1.1 reads `1e-5` as a string: turn numeric strings back into numbers, leave the rest."""
    if isinstance(v, str):
        for conv in (int, float):
            try:
                return conv(v)
            except ValueError:
                pass
    return v


def parse_space(space: Any, errs: list[str] | None, is_field: Callable[[str], bool]) -> dict[str, SearchParam]:
    """`tune.space` as checked SearchParams (problems go to `errs`; unusable entries are left out). `is_field`:
    whether a dotted key names a config field (the schema's own check, passed in: the schema imports this module)."""
    errs = [] if errs is None else errs
    if not isinstance(space, dict) or not space:
        errs.append("tune.space: is empty; give at least one field, e.g. lora.r: {type: categorical, choices: [4, 8, 16]}")
        return {}
    out = {}
    for key, raw in space.items():
        p = parse_search_param(str(key), raw, errs, is_field)
        if p is not None:
            out[str(key)] = p
    return out


def parse_search_param(key: str, raw: Any, errs: list[str], is_field: Callable[[str], bool]) -> SearchParam | None:
    """Check one `tune.space` entry and return it as a SearchParam (None when it is unusable)."""
    where = f"tune.space.{key}"
    if not is_field(key):
        errs.append(f"{where}: {brief(key)} is not a config field; use a dotted field such as lora.r or train.lr")
        return None
    # tune loads the data once per worker, and tune/name/out describe the study itself, not a trial.
    if key in ("name", "out") or key.startswith(("data.", "tune.")):
        errs.append(f"{where}: data, tune, name and out cannot be searched (data is loaded once per worker); search model, lora or train fields")
        return None
    if not isinstance(raw, dict):
        errs.append(f"{where}: expected a mapping like {{type: categorical, choices: [4, 8]}}, got {brief(raw)}")
        return None
    known = [f.name for f in dataclasses.fields(SearchParam)]
    unknown = sorted(map(str, set(raw) - set(known)))
    if unknown:
        errs.append(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        return None
    p = SearchParam(**{k: _number(v) if k in ("low", "high", "step") else v for k, v in raw.items()})
    if p.type not in SEARCH_TYPES:
        errs.append(f"{where}.type: {brief(p.type)} is not a parameter type; use one of {', '.join(SEARCH_TYPES)}")
        return None
    if p.type == "categorical":
        return _categorical(p, where, errs)
    return _range(p, where, errs)


def _categorical(p: SearchParam, where: str, errs: list[str]) -> SearchParam | None:
    if not isinstance(p.choices, list) or not p.choices:
        errs.append(f"{where}.choices: missing or empty; list the values to try, e.g. choices: [4, 8, 16]")
        return None
    p.choices = [_number(c) for c in p.choices]
    bad = [c for c in p.choices if not (c is None or isinstance(c, (bool, int, float, str)))]
    if bad:
        errs.append(f"{where}.choices: {brief(bad[0])} is not a plain value; write lists as one string, e.g. 'query,value'")
        return None
    if len(set(map(repr, p.choices))) != len(p.choices):
        errs.append(f"{where}.choices: {p.choices} repeats a value; list each choice once")
    return p


def _range(p: SearchParam, where: str, errs: list[str]) -> SearchParam | None:
    if p.choices is not None:
        errs.append(f"{where}: choices only go with type categorical; give low and high for type {p.type}")
        return None
    for name in ("low", "high", "step"):
        v = getattr(p, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            errs.append(f"{where}.{name}: {brief(v)} is not a number")
            return None
        if v is not None and not math.isfinite(v):
            errs.append(f"{where}.{name}: {brief(v)} is not a finite number; NaN and infinity cannot bound a search")
            return None
    if p.low is None or p.high is None:
        errs.append(f"{where}: type {p.type} needs both low and high")
        return None
    if p.type == "int" and not all(float(v).is_integer() for v in (p.low, p.high, p.step or 1)):
        errs.append(f"{where}: type int needs whole-number low, high and step")
        return None
    if p.low >= p.high:
        errs.append(f"{where}: low ({p.low}) must be below high ({p.high})")
        return None
    if not isinstance(p.log, bool):
        errs.append(f"{where}.log: {brief(p.log)} must be true or false")
        return None
    if p.log and p.low <= 0:
        errs.append(f"{where}: a log scale needs low > 0 (got {p.low})")
        return None
    if p.step is not None and (p.step <= 0 or (p.log and not (p.type == "int" and p.step == 1))):
        errs.append(f"{where}.step: {p.step} must be positive and cannot be combined with log: true")
        return None
    if p.type == "int":
        p.low, p.high = int(p.low), int(p.high)
        p.step = None if p.step is None else int(p.step)
    else:
        p.low, p.high = float(p.low), float(p.high)
        p.step = None if p.step is None else float(p.step)
    return p
