"""Train/validation/test splits, from local files or the Hugging Face hub.

Owns `Splits`, `load_splits` (the entry point for training and tuning), loading a hub dataset,
the seeded stratified subsample (`data.max_train_rows`) and validation hold-out
(`data.val_fraction`), and the `data.max_eval_rows` cap on validation and test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..config import DataConfig
from ..errors import DataError
from ._util import _as_id, _listing, _one_line
from .formats import _check_texts, _frame_texts, _Raw, _read_raw, _require_columns, _text_columns
from .labels import TextLabels, _label_set, _labelled, label_warnings
from .settings import _check_config


@dataclass
class Splits:
    """Train, validation and optional test data with the label names their ids index."""

    train: TextLabels
    validation: TextLabels
    test: TextLabels | None
    label_names: list[str]
    labels_are_names: bool = False  # the data's labels were names (strings), not class ids
    warnings: list[str] = field(default_factory=list)  # about the training labels (`label_warnings`), for the start block


def _subset(d: TextLabels, idx: Sequence[int]) -> TextLabels:
    return TextLabels([d.texts[i] for i in idx], None if d.labels is None else [d.labels[i] for i in idx])


def _seeded_split(labels: list[int], seed: int, **size: Any) -> tuple[list[int], list[int]]:
    from sklearn.model_selection import train_test_split  # slow import; only needed here

    idx = np.arange(len(labels))
    try:
        a, b = train_test_split(idx, random_state=seed, stratify=labels, **size)
    except ValueError:
        # A class with a single row (or more classes than held-out rows) makes stratification
        # impossible; a plain seeded split is the best that data allows.
        a, b = train_test_split(idx, random_state=seed, **size)
    return a.tolist(), b.tolist()


def _assemble(pool: TextLabels, val: TextLabels | None, test: TextLabels | None, names: list[str],
              cfg: DataConfig, seed: int, src: str) -> Splits:
    assert pool.labels is not None
    if len(set(pool.labels)) < 2:
        only = names[pool.labels[0]] if pool.labels else "none"
        raise DataError(f"{src} has only one class in label column '{cfg.label_column}' ('{only}'); "
                        "classification needs at least 2 classes")
    if cfg.max_train_rows is not None and len(pool.texts) > cfg.max_train_rows:
        keep, _ = _seeded_split(pool.labels, seed, train_size=cfg.max_train_rows)
        pool = _subset(pool, sorted(keep))  # subsample first, so the validation rows come from it too
    if val is None:
        if len(pool.texts) < 2:
            raise DataError(f"{src} has {len(pool.texts)} row(s), too few to hold out a validation set; "
                            "add rows or pass --validation-file")
        tr, va = _seeded_split(pool.labels, seed, test_size=cfg.val_fraction)
        pool, val = _subset(pool, tr), _subset(pool, va)
    if cfg.max_eval_rows is not None:
        val = _subset(val, range(min(cfg.max_eval_rows, len(val.texts))))
        test = None if test is None else _subset(test, range(min(cfg.max_eval_rows, len(test.texts))))
    return Splits(pool, val, test, names)


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Load train, validation and (optional) test data from local files or the hub.

    Without a validation file (or hub validation split), a seeded stratified `val_fraction` of
    the training pool is held out. `max_train_rows` subsamples the pool (seeded, stratified)
    before that split; `max_eval_rows` keeps the first rows of validation and test.

    Args:
        cfg: data settings.
        seed: seeds the subsample and the split (same seed, same rows).

    Returns:
        The splits and the label names their ids index.

    Raises:
        DataError: bad settings, unreadable data, bad rows or labels, fewer than 2 classes, or no hub.
    """
    _check_config(cfg)
    if cfg.train_file is None:
        return _load_hub(cfg, seed)
    raw = _read_raw(cfg.train_file, cfg, "train")
    names, ids_ok = _label_set(raw, cfg)
    pool = _labelled(raw, names, ids_ok)
    val, test = (None if path is None else _labelled(_read_raw(path, cfg, role), names, ids_ok)
                 for role, path in (("validation", cfg.validation_file), ("test", cfg.test_file)))
    splits = _assemble(pool, val, test, names, cfg, seed, raw.source)
    splits.labels_are_names, splits.warnings = not ids_ok, label_warnings(pool.labels or [], names, not ids_ok)
    return splits


def _load_hub(cfg: DataConfig, seed: int) -> Splits:
    what = f"dataset '{cfg.dataset}'" + (f" (config '{cfg.dataset_config}')" if cfg.dataset_config else "")
    try:
        from ..hub import prepare_hub_access

        prepare_hub_access()  # fail fast, and without pages of retries, when there is no network
        import datasets  # slow import; local files do not need it

        dd = datasets.load_dataset(cfg.dataset, cfg.dataset_config)
    except Exception as e:  # offline, DNS, not found, bad config: the user's fix is the same
        raise DataError(f"cannot load {what} from the Hugging Face hub (no network or no such dataset: "
                        f"{_one_line(e, 160)}); pass a local file with --train-file (CSV/TSV/JSONL/Parquet)") from e
    if "train" not in dd:
        raise DataError(f"{what} has no 'train' split (it has: {_listing(list(dd))}); pass --train-file")

    def split(name: str) -> _Raw:
        ds, src = dd[name], f"split '{name}' of {what}"
        role = name if name in ("train", "test") else "validation"
        _require_columns(ds.column_names, cfg, src, need_label=True, role=role)
        texts = _frame_texts(pd.DataFrame({c: ds[c] for c in _text_columns(cfg)}), _text_columns(cfg))
        _check_texts(texts, src)
        class_ids = isinstance(ds.features.get(cfg.label_column), datasets.ClassLabel)  # ints index the names
        return _Raw(texts, list(ds[cfg.label_column]), False, src, role, ids=class_ids)

    train = split("train")
    feature = dd["train"].features.get(cfg.label_column)
    if cfg.label_names is None and isinstance(feature, datasets.ClassLabel):
        names, ids_ok = list(feature.names), True
    else:
        names, ids_ok = _label_set(train, cfg)
    pool = _labelled(train, names, ids_ok)
    val_name = next((n for n in ("validation", "valid", "dev") if n in dd), None)
    val = None if val_name is None else _labelled(split(val_name), names, ids_ok)
    test = None
    if "test" in dd:
        r = split("test")
        # Benchmarks such as GLUE hide test labels as -1: keep the texts, drop the labels.
        unlabelled = all(_as_id(v) is None and not isinstance(v, str) for v in r.labels)
        test = TextLabels(r.texts, None) if unlabelled else _labelled(r, names, ids_ok)
    splits = _assemble(pool, val, test, names, cfg, seed, train.source)
    splits.labels_are_names, splits.warnings = not ids_ok, label_warnings(pool.labels or [], names, not ids_ok)
    return splits
