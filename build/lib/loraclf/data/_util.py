"""Small helpers the data modules share: one-line message pieces, cell values and label ids.

Nothing here reads files or knows a format; it only turns values into the text that DataError
messages quote, says how the command that reads a file changes a data setting, and recognises
the non-negative integers that stand for label ids.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

_ID = re.compile(r"[0-9]+")  # not \d: that also matches non-ASCII digits int() may reject


@dataclass(frozen=True)
class _Role:
    """What a file is to the command that reads it, for messages about it."""

    noun: str  # "train file": the subject of messages
    option: str | None  # the option that names the file, if any
    cli: bool  # its command takes data settings as options (--format), not as data.* keys


# train/tune read train/validation/test files and take data settings as `data.key=value` (or
# YAML); predict ("input") and evaluate/report ("eval") take --format, --text-columns and
# --label-column and otherwise use the run's saved data settings.
_ROLES = {
    "train": _Role("train file", "--train-file", False),
    "validation": _Role("validation file", "--validation-file", False),
    "test": _Role("test file", "--test-file", False),
    "data": _Role("data file", None, False),  # detect_format called on its own
    "input": _Role("input file", "--input", True),
    "eval": _Role("input file", "--data", True),
}
_CLI_OPTIONS = {"format": "--format", "text_columns": "--text-columns", "label_column": "--label-column"}


def _source(path: str, role: str) -> str:
    return "stdin" if path == "-" else f"{_ROLES[role].noun} '{path}'"


def _check_option(role: str) -> str:
    """Where to fix a wrong path: the option that gave it."""
    option = _ROLES[role].option
    return f"check {option}" if option else "check the path"


def _setting(role: str, key: str, value: str | Sequence[str], verb: bool = True) -> str:
    """How the user of `role`'s command sets data setting `key`: `set data.key=value` or `pass --key value`.

    A list value is written [a,b] for a data.* key and a,b for an option. Keys without an option
    (label_names, delimiter) are always data.* keys: the caller says how they apply. `verb=False`
    leaves out "set"/"pass" (for the second of two settings).
    """
    if _ROLES[role].cli and key in _CLI_OPTIONS:
        text, how = f"{_CLI_OPTIONS[key]} {value if isinstance(value, str) else ','.join(value)}", "pass"
    else:
        text, how = f"data.{key}={value if isinstance(value, str) else '[' + ','.join(value) + ']'}", "set"
    return f"{how} {text}" if verb else text


def _one_line(text: Any, limit: int = 200) -> str:
    """Collapse whitespace (messages must stay on one line) and cut long text."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _listing(values: Sequence[Any], limit: int = 20) -> str:
    vals = [_one_line(v, 40) for v in values]  # a data row mistaken for a header has long "names"
    more = f", ... ({len(vals)} in all)" if len(vals) > limit else ""
    return ", ".join(vals[:limit]) + more


def _cell(v: Any) -> str:
    """A cell as text: missing values (None, NaN from ragged rows or JSON) are empty strings."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v if isinstance(v, str) else str(v)


def _missing(v: Any) -> bool:
    return not _cell(v).strip()


def _as_id(v: Any) -> int | None:
    """The label id `v` stands for (int, integral float, digit string), else None."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v) if v >= 0 else None
    if isinstance(v, (float, np.floating)):
        return int(v) if v.is_integer() and v >= 0 else None
    if isinstance(v, str) and _ID.fullmatch(v.strip()):
        return int(v)
    return None
