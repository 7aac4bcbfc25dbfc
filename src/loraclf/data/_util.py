"""Small helpers the data modules share: one-line message pieces, cell values and label ids.

Nothing here reads files or knows a format; it only turns values into the text that DataError
messages quote and recognises the non-negative integers that stand for label ids.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

_ID = re.compile(r"[0-9]+")  # not \d: that also matches non-ASCII digits int() may reject


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
