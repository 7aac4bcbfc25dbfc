"""Data settings: checking a DataConfig before any data is read, and the command line's overrides.

Owns `_check_config` (format, delimiter, text columns, val_fraction, row caps and label names,
each as one DataError line naming the data.* setting) and `data_config_for` (--format, --text-columns and
--label-column applied to a run's saved data settings).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ..config import FORMATS, DataConfig
from ..errors import DataError
from .formats import _delimiter, _text_columns
from .labels import _check_label_names


def _check_config(cfg: DataConfig) -> None:
    if cfg.train_file is None and not cfg.dataset:
        raise DataError("data.dataset is empty and no train file is given; pass --train-file FILE or set data.dataset to a hub dataset id")
    if cfg.format not in FORMATS:
        raise DataError(f"data.format is '{cfg.format}'; use one of {', '.join(FORMATS)}")
    _delimiter(cfg, "csv")  # one character
    if not _text_columns(cfg):
        raise DataError("data.text_columns is empty; name at least one text column")
    if not 0.0 < cfg.val_fraction <= 0.5:
        raise DataError(f"data.val_fraction is {cfg.val_fraction}; it must be in (0, 0.5] "
                        "(the share of the training data held out for validation)")
    for name in ("max_train_rows", "max_eval_rows"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise DataError(f"data.{name} is {v}; it must be at least 1 (or null for all rows)")
    if cfg.label_names is not None:
        _check_label_names(cfg.label_names, "data.label_names")


def data_config_for(
    run_data: DataConfig,
    format: str | None = None,
    text_columns: Sequence[str] | str | None = None,
    label_column: str | None = None,
) -> DataConfig:
    """The run's data settings with the command line's --format/--text-columns/--label-column applied.

    Args:
        text_columns: a list, or one string of comma-separated column names.

    Raises:
        DataError: `text_columns` names no column.
    """
    changes: dict[str, Any] = {}
    if format is not None:
        changes["format"] = format
    if text_columns is not None:
        cols = [c.strip() for c in text_columns.split(",")] if isinstance(text_columns, str) else list(text_columns)
        changes["text_columns"] = [c for c in cols if c]
        if not changes["text_columns"]:
            raise DataError("--text-columns is empty; name at least one text column, e.g. --text-columns title,description")
    if label_column is not None:
        changes["label_column"] = label_column
    return dataclasses.replace(run_data, **changes)
