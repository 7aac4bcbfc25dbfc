"""Label sets and label ids: which labels a dataset has, and the id each raw label value maps to.

Owns `TextLabels` (texts with their label ids), the AG News label names, checking a list of
label names, choosing the label set of training data (explicit `data.label_names`, AG News
classes, integer labels 0..K-1 or 1..K without gaps, or sorted string names), mapping raw label
cells onto a label set, and `read_labeled`, which reads a file for evaluation against a model's labels.
"""
from __future__ import annotations

import collections
import difflib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ._util import _ROLES, _as_id, _cell, _listing, _missing, _setting
from .formats import _Raw, _read_raw

AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
MIN_ROWS_PER_CLASS = 10  # below this a class can hardly be learned, and the validation split may hold none of it
TYPO_SIMILARITY = 0.8  # difflib ratio from which a much smaller label reads as a misspelling of a bigger one
TYPO_SIZE_RATIO = 5  # ... when the bigger class has at least this many times its rows (label_1/label_2 are not typos)


@dataclass
class TextLabels:
    """Texts with their label ids (None for unlabelled input)."""

    texts: list[str]
    labels: list[int] | None


def _check_label_names(names: Sequence[str], what: str) -> None:
    if len(names) < 2:
        raise DataError(f"{what} has {len(names)} label(s); a classifier needs at least 2 classes")
    dupes = sorted(n for n, k in collections.Counter(names).items() if k > 1)
    if dupes:
        raise DataError(f"{what} lists {_listing(dupes)} more than once; give each label once")


def _label_set(raw: _Raw, cfg: DataConfig) -> tuple[list[str], bool]:
    """The label names, and whether ids (not only names) may stand for labels."""
    if cfg.label_names is not None:
        return list(cfg.label_names), True
    present = [v for v in raw.labels if not _missing(v)]
    if not present:
        return [], False  # mapping then reports row 1's missing label
    if raw.ag_news:  # ids already: class 1 is id 0
        if max(present) < len(AG_NEWS_LABELS):
            return AG_NEWS_LABELS, True
        return _integer_names(raw, [None if _missing(v) else v + 1 for v in raw.labels], (1,), cfg), True
    ids = [_as_id(v) for v in present]
    if all(i is not None for i in ids):
        # "0".."K-1" or "1".."K": the values are names, so 1..K maps to ids 0..K-1 as AG News does.
        return _integer_names(raw, [None if _missing(v) else _as_id(v) for v in raw.labels], (0, 1), cfg), True
    return sorted({_cell(v).strip() for v in present}), False


def _ranges(values: list[int], limit: int = 8) -> str:
    """Sorted distinct integers as runs: "0-2, 5, 1000000"."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = [f"{a}" if a == b else f"{a}, {b}" if b == a + 1 else f"{a}-{b}" for a, b in runs]
    return ", ".join(text[:limit]) + (", ..." if len(text) > limit else "")


def _integer_names(raw: _Raw, per_row: list[int | None], starts: tuple[int, ...], cfg: DataConfig) -> list[str]:
    """Names "lo".."hi" for integer labels (or AG News classes) that run from lo in `starts` without gaps.

    Anything else, such as one mistyped 1000000 among 0..3, would silently become a head with a
    class for every integer up to the largest: one DataError line names the value, its row and the gap.
    """
    u = sorted({v for v in per_row if v is not None})
    lo, hi = u[0], u[-1]
    if lo in starts and hi - lo + 1 == len(u):
        return [str(c) for c in range(lo, hi + 1)]
    if lo not in starts:
        row = per_row.index(lo) + 1
        why = f"the smallest, {lo} (row {row}), is not {' or '.join(map(str, starts))}"
    else:
        k = next(i for i in range(1, len(u)) if u[i] != u[i - 1] + 1)
        a, b = u[k - 1] + 1, u[k] - 1
        why = f"row {per_row.index(u[k]) + 1} has {u[k]}, after a gap ({a if a == b else f'{a}-{b}'} missing)"
    span = " or ".join(f"{s}..K{'-1' if s == 0 else ''}" for s in starts)
    if raw.ag_news:
        noun, nouns, where = "class", "classes", ""
        fix = f"set data.label_names=[...] to the names of classes 1..{hi} in order"
    else:
        noun, nouns, where = "label", "labels", f" in column '{cfg.label_column}'"
        fix = (f"set data.label_names=[{','.join(map(str, u))}] to keep exactly these labels" if len(u) <= 12
               else "set data.label_names=[...] to the full label set")
        fix += ", or use class names instead of numbers"
    raise DataError(f"{raw.source} has integer {nouns} {_ranges(u)}{where}; integer {nouns} must run {span} "
                    f"without gaps, but {why}; fix the {noun}, or {fix}")


def _map_labels(values: Sequence[Any], names: list[str], ids_ok: bool, src: str, role: str,
                numbers_are_ids: bool = False) -> list[int]:
    """Label ids for raw values: a value is a name, else (if `ids_ok`) an id 0..K-1.

    A number is a name too ("1" of "1".."K"), unless `numbers_are_ids` (AG News classes already
    turned into ids, hub ClassLabel columns). Where every name is an integer, ids are not tried:
    "0" is no name of "1".."K", and taking it for id 0 (label "1") would hide the mistake.
    """
    index = {n: i for i, n in enumerate(names)}
    ids_ok = ids_ok and not all(_as_id(n) is not None and str(_as_id(n)) == n for n in names)
    out = []
    for row, v in enumerate(values, 1):
        if _missing(v):
            raise DataError(f"{src} row {row} has no label; fill in its label or remove the row")
        is_number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        n = _as_id(v)
        if numbers_are_ids and is_number:
            i = n
        else:
            i = index.get(_cell(v).strip())
            if i is None and n is not None:  # 1.0 from JSON, "01": the name "1"; else an id
                i = index.get(str(n), n if ids_ok else None)
        if i is None or i >= len(names):
            ids = f" (or ids 0-{len(names) - 1})" if ids_ok else ""
            raise DataError(f"{src} row {row} has label '{_cell(v).strip()}', which is not in the label set; "
                            f"valid labels: {_listing(names)}{ids}; {_label_fix(role)}")
        out.append(i)
    return out


def _label_fix(role: str) -> str:
    if _ROLES[role].cli:  # evaluate: the label set is the trained model's
        return (f"fix the label (the run's model knows only these labels), or "
                f"{_setting(role, 'label_column', 'COLUMN')} if this is not the label column")
    return "fix the label or set data.label_names=[...] to the full label set"


def _labelled(raw: _Raw, names: list[str], ids_ok: bool) -> TextLabels:
    """`raw`'s texts with its labels mapped onto `names`."""
    return TextLabels(raw.texts, _map_labels(raw.labels, names, ids_ok, raw.source, raw.role, raw.ids))


def read_labeled(path: str, cfg: DataConfig, label_names: list[str], role: str = "eval") -> TextLabels:
    """Read a labelled file for evaluation, mapping its labels onto a model's label set.

    Args:
        path: the file (any format `detect_format` knows except plain text).
        cfg: the text/label columns and format to use.
        label_names: the model's labels; the file may hold these names or ids 0..K-1.
        role: "eval" (evaluate, report: fixes name --data, --format, --text-columns, --label-column)
            or "test" (tune's test file: fixes name --test-file and data.* settings).

    Returns:
        All rows, in file order (data.max_eval_rows is not applied here).

    Raises:
        DataError: missing/unreadable file, unknown column, empty text, label not in `label_names`.
    """
    _check_label_names(label_names, "the label set")
    return _labelled(_read_raw(path, cfg, role), list(label_names), True)


def _rows_text(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(map(str, rows[:limit])) + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")
    return f"{len(rows)} row{'s' if len(rows) > 1 else ''}: {'row' if len(rows) == 1 else 'rows'} {shown}"


def _squashed(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def label_warnings(labels: Sequence[int], names: Sequence[str], names_from_data: bool) -> list[str]:
    """Warnings about a training pool's labels: a label that differs from a bigger class only by case, spacing or
    punctuation, or (for a much bigger class) by a small edit, and classes with very few rows, each naming its rows.

    Args:
        labels: the label id of every row, in file order (row 1 is the first data row).
        names: the label names the ids index.
        names_from_data: the names are the data's own strings (not class ids or data.label_names), so typos may hide there.
    """
    rows: dict[int, list[int]] = collections.defaultdict(list)
    for row, i in enumerate(labels, 1):
        rows[i].append(row)
    count = {i: len(rows[i]) for i in range(len(names))}
    out = []
    for i, name in enumerate(names):
        if not count[i]:
            continue
        bigger = [j for j in range(len(names)) if j != i and (count[j], j) > (count[i], i)] if names_from_data else []
        twin = next((j for j in bigger if _squashed(names[j]) == _squashed(name)), None)
        if twin is not None:
            out.append(f"label '{name}' ({_rows_text(rows[i])}) differs from '{names[twin]}' ({count[twin]:,} rows) only by "
                       "case, spacing or punctuation; fix it in the train file, or it trains as a class of its own")
            continue
        close = [j for j in bigger if count[j] >= TYPO_SIZE_RATIO * count[i]
                 and difflib.SequenceMatcher(None, name.casefold(), names[j].casefold()).ratio() >= TYPO_SIMILARITY]
        if close:
            j = max(close, key=lambda j: difflib.SequenceMatcher(None, name.casefold(), names[j].casefold()).ratio())
            out.append(f"label '{name}' ({_rows_text(rows[i])}) looks like a misspelling of '{names[j]}' ({count[j]:,} rows); "
                       "fix it in the train file, or it trains as a class of its own")
        elif count[i] < MIN_ROWS_PER_CLASS:
            out.append(f"class '{name}' has only {_rows_text(rows[i])} in the train file: too few to learn or to validate; "
                       "add rows, or merge or drop the class")
    return out
