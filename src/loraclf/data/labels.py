"""Label sets and label ids: which labels a dataset has, and the id each raw label value maps to.

Owns `TextLabels` (texts with their label ids), the AG News label names, checking a list of
label names, choosing the label set of training data (explicit `data.label_names`, AG News
classes, integer ids or sorted string names), mapping raw label cells onto a label set, and
`read_labeled`, which reads a file for evaluation against a model's labels.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ._util import _ROLES, _as_id, _cell, _listing, _missing, _setting
from .formats import _Raw, _read_raw

AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]


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
    if raw.ag_news:
        top = max(present)
        return (AG_NEWS_LABELS if top < 4 else [str(c) for c in range(1, top + 2)]), True
    ids = [_as_id(v) for v in present]
    if all(i is not None for i in ids):
        return [str(i) for i in range(max(ids) + 1)], True  # type: ignore[type-var]
    return sorted({_cell(v).strip() for v in present}), False


def _map_labels(values: Sequence[Any], names: list[str], ids_ok: bool, src: str, role: str) -> list[int]:
    """Label ids for raw values: numbers are ids; strings are names, or ids if `ids_ok` and not a name."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for row, v in enumerate(values, 1):
        if _missing(v):
            raise DataError(f"{src} row {row} has no label; fill in its label or remove the row")
        is_number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        i = _as_id(v) if ids_ok and is_number else index.get(_cell(v).strip())
        if i is None and ids_ok and not is_number:
            i = _as_id(v)
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
    return TextLabels(raw.texts, _map_labels(raw.labels, names, ids_ok, raw.source, raw.role))


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
