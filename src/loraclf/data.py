"""Texts and labels from local files or the Hugging Face hub, split and batched for training.

Local files may be CSV, TSV, JSON lines, Parquet, plain text (prediction only) or the original
AG News CSV (no header; class 1..N, title, description). Every problem a user can fix becomes one
DataError line that names the file, row, value or option involved and says what to do.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from .config import FORMATS, DataConfig
from .errors import DataError

AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
               ".parquet": "parquet", ".pq": "parquet", ".txt": "txt"}
_OPTIONS = {"train": "--train-file", "validation": "--validation-file", "test": "--test-file"}
_ID = re.compile(r"[0-9]+")  # not \d: that also matches non-ASCII digits int() may reject
_SNIFF_BYTES = 1 << 16


@dataclass
class TextLabels:
    """Texts with their label ids (None for unlabelled input)."""

    texts: list[str]
    labels: list[int] | None


@dataclass
class Splits:
    """Train, validation and optional test data with the label names their ids index."""

    train: TextLabels
    validation: TextLabels
    test: TextLabels | None
    label_names: list[str]


class _Raw(NamedTuple):
    texts: list[str]
    labels: list[Any]  # raw cell values; ints are ids (AG News classes are already 0-based here)
    ag_news: bool
    source: str  # "train file 'x.csv'": the subject of every message about this data


# ---------------------------------------------------------------- small helpers

def _one_line(text: Any, limit: int = 200) -> str:
    """Collapse whitespace (messages must stay on one line) and cut long text."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _listing(values: Sequence[Any], limit: int = 20) -> str:
    vals = [_one_line(v, 40) for v in values]  # a data row mistaken for a header has long "names"
    more = f", ... ({len(vals)} in all)" if len(vals) > limit else ""
    return ", ".join(vals[:limit]) + more


def _source(path: str, role: str) -> str:
    return "stdin" if path == "-" else f"{role} file '{path}'"


def _hint(role: str) -> str:
    return f"check {_OPTIONS[role]}" if role in _OPTIONS else "check the path"


def _cell(v: Any) -> str:
    """A cell as text: missing values (None, NaN from ragged rows or JSON) are empty strings."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v if isinstance(v, str) else str(v)


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


def _text_columns(cfg: DataConfig) -> list[str]:
    # A YAML `text_columns: text` arrives as a string; treat it as the one column it names.
    return [cfg.text_columns] if isinstance(cfg.text_columns, str) else list(cfg.text_columns)


def _check_config(cfg: DataConfig) -> None:
    if cfg.format not in FORMATS:
        raise DataError(f"data.format is '{cfg.format}'; use one of {', '.join(FORMATS)}")
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


def _check_label_names(names: Sequence[str], what: str) -> None:
    if len(names) < 2:
        raise DataError(f"{what} has {len(names)} label(s); a classifier needs at least 2 classes")
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise DataError(f"{what} lists {_listing(dupes)} more than once; give each label once")


# ---------------------------------------------------------------- reading files

def _check_path(path: str, role: str) -> None:
    """Raise the "does not exist" / "is a directory" message for a path that is not a file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{_source(path, role)} does not exist; {_hint(role)}")
    if p.is_dir():
        raise DataError(f"{_source(path, role)} is a directory, not a file; {_hint(role)}")


def _read_bytes(path: str, role: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    _check_path(path, role)
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {_source(path, role)} ({_one_line(e.strerror or e)}); check its permissions") from e


def _decode(data: bytes, src: str) -> str:
    # Decoding ourselves (not inside pandas) gives the exact byte offset of the first bad byte.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{src} is not valid UTF-8 text (byte 0x{data[e.start]:02x} at position {e.start}); "
                        "re-save it as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text  # a BOM would stick to the first column name


def _looks_like_ag_news(path: str) -> bool:
    """True when the first rows have 3 fields and an integer class >= 1 first (so no header row)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False  # the full read that follows reports the problem with the right wording
    rows = list(csv.reader(io.StringIO(head.decode("utf-8", errors="replace"))))
    if len(head) == _SNIFF_BYTES:
        rows = rows[:-1]  # a row cut off by the sniff window proves nothing
    rows = [r for r in rows if r][:5]
    return bool(rows) and all(len(r) == 3 and _ID.fullmatch(r[0].strip()) and int(r[0]) >= 1 for r in rows)


def detect_format(path: str, declared: str = "auto") -> str:
    """The format of a data file: `declared` unless it is "auto", else judged by extension and content.

    Args:
        path: the file ("-" is stdin, read as plain text unless declared otherwise).
        declared: one of auto, ag_news, csv, tsv, jsonl, parquet, txt.

    Returns:
        One of ag_news, csv, tsv, jsonl, parquet, txt. A .csv file in the original AG News layout
        (no header; 3 fields, the first an integer class 1..N) is "ag_news".

    Raises:
        DataError: unknown declared format, unknown extension, or a .csv file that cannot be read.
    """
    if declared not in FORMATS:
        raise DataError(f"unknown data format '{declared}'; set data.format to one of {', '.join(FORMATS)}")
    if declared != "auto":
        return declared
    if path == "-":
        return "txt"
    ext = Path(path).suffix.lower()
    fmt = _EXTENSIONS.get(ext)
    if fmt is None:
        raise DataError(f"cannot tell the format of '{path}' from its extension '{ext}'; use .csv, .tsv, .jsonl, "
                        f".parquet or .txt, or set data.format to one of {', '.join(FORMATS[1:])}")
    if fmt == "csv":
        _check_path(path, "data")
        if _looks_like_ag_news(path):
            return "ag_news"
    return fmt


def _read_frame(path: str, fmt: str, role: str) -> pd.DataFrame:
    """Read a CSV/TSV/AG News/JSONL/Parquet file into a DataFrame with at least one row."""
    src = _source(path, role)
    data = _read_bytes(path, role)
    if fmt == "parquet":
        try:
            df = pd.read_parquet(io.BytesIO(data))
        except Exception as e:  # pyarrow raises several unrelated types for a damaged file
            raise DataError(f"cannot read {src} as Parquet ({_one_line(e, 120)}); "
                            "check that it is a complete Parquet file or set data.format") from e
    else:
        text = _decode(data, src)
        if not text.strip():
            raise DataError(f"{src} is empty; it needs at least one data row")
        if fmt == "jsonl":
            df = _parse_jsonl(text, src)
        else:
            try:
                # dtype=str + no NA parsing: "NA", "null" or "" in a text stay exactly what they are.
                df = pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",",
                                 header=None if fmt == "ag_news" else "infer", dtype=str,
                                 keep_default_na=False, na_filter=False, index_col=False)
            except (ValueError, csv.Error) as e:  # pandas' ParserError is a ValueError
                raise DataError(f"cannot parse {src} as {fmt.upper()} ({_one_line(e, 120)}); "
                                "fix the file or set data.format") from e
    if fmt == "ag_news":
        if df.shape[1] != 3:
            raise DataError(f"{src} has {df.shape[1]} columns; the AG News layout has 3 (class, title, "
                            "description): set data.format to csv for a file with a header row")
        df.columns = ["class", "title", "description"]
    if len(df) == 0:
        raise DataError(f"{src} has a header but no data rows; add rows")
    return df


def _parse_jsonl(text: str, src: str) -> pd.DataFrame:
    if text.lstrip().startswith("["):  # a .json file holding one array of objects
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{src} is not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
    else:
        records = []
        for lineno, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{src} line {lineno} is not valid JSON ({e.msg}); "
                                    "write one JSON object per line") from None
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise DataError(f"{src} record {i} is a JSON {type(r).__name__}, not an object; "
                            'write one object per line, like {"text": "...", "label": "..."}')
    return pd.DataFrame.from_records(records)


# ---------------------------------------------------------------- texts and labels

def _require_columns(columns: Sequence[str], cfg: DataConfig, src: str, need_label: bool) -> None:
    available = f"available columns: {_listing(columns)}"
    for c in _text_columns(cfg):
        if c not in columns:
            raise DataError(f"text column '{c}' not found in {src}; {available}; set data.text_columns")
    if need_label and cfg.label_column not in columns:
        raise DataError(f"label column '{cfg.label_column}' not found in {src}; {available}; set data.label_column")


def _frame_texts(df: pd.DataFrame, cols: list[str]) -> list[str]:
    columns = [[_cell(v) for v in df[c].tolist()] for c in cols]
    return [" ".join(parts) for parts in zip(*columns)]


def _check_texts(texts: list[str], src: str) -> None:
    """A labelled row without text would teach the model nothing and usually means a broken file."""
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        more = f" ({len(empty)} such rows in all)" if len(empty) > 1 else ""
        raise DataError(f"{src} row {empty[0] + 1} has an empty text{more}; remove the row or fill in its text")


def _ag_labels(df: pd.DataFrame, src: str) -> list[int]:
    out = []
    for row, v in enumerate(df["class"].tolist(), 1):
        s = _cell(v).strip()
        if not _ID.fullmatch(s) or int(s) < 1:
            raise DataError(f"{src} row {row} has class '{s}'; the AG News layout needs an integer class 1, 2, ... "
                            "in the first column (set data.format to csv if the file has a header row)")
        out.append(int(s) - 1)  # class 1 is label 0
    return out


def _read_raw(path: str, cfg: DataConfig, role: str) -> _Raw:
    """Read a labelled file: texts (none empty) and raw label values."""
    src = _source(path, role)
    if path != "-":
        _check_path(path, role)  # before detect_format, so the message names the role and option
    fmt = detect_format(path, cfg.format)
    if fmt == "txt":
        raise DataError(f"{src} is plain text, which has no labels; use a CSV, TSV, JSONL or Parquet file "
                        f"with a '{cfg.label_column}' column")
    df = _read_frame(path, fmt, role)
    if fmt == "ag_news":
        raw = _Raw(_frame_texts(df, ["title", "description"]), _ag_labels(df, src), True, src)
    else:
        _require_columns(list(map(str, df.columns)), cfg, src, need_label=True)
        raw = _Raw(_frame_texts(df, _text_columns(cfg)), df[cfg.label_column].tolist(), False, src)
    _check_texts(raw.texts, src)
    return raw


def _missing(v: Any) -> bool:
    return not _cell(v).strip()


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


def _map_labels(values: Sequence[Any], names: list[str], ids_ok: bool, src: str) -> list[int]:
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
                            f"valid labels: {_listing(names)}{ids}; fix the label or set data.label_names")
        out.append(i)
    return out


# ---------------------------------------------------------------- public readers

def read_labeled(path: str, cfg: DataConfig, label_names: list[str]) -> TextLabels:
    """Read a labelled file for evaluation, mapping its labels onto a model's label set.

    Args:
        path: the file (any format `detect_format` knows except plain text).
        cfg: the text/label columns and format to use.
        label_names: the model's labels; the file may hold these names or ids 0..K-1.

    Returns:
        All rows, in file order (data.max_eval_rows is not applied here).

    Raises:
        DataError: missing/unreadable file, unknown column, empty text, label not in `label_names`.
    """
    _check_label_names(label_names, "the label set")
    raw = _read_raw(path, cfg, "input")
    return TextLabels(raw.texts, _map_labels(raw.labels, list(label_names), True, raw.source))


def read_texts(path: str, cfg: DataConfig) -> list[str]:
    """Read texts to classify: a table's text columns, AG News CSV, or plain text (one per line).

    Args:
        path: the file; "-" reads plain text from stdin (unless data.format says otherwise).
        cfg: the text columns and format; the label column is ignored.

    Returns:
        One text per row or line, in order; empty texts stay "" so outputs line up with inputs.

    Raises:
        DataError: missing/unreadable/empty file, non-UTF-8 bytes, unknown text column.
    """
    src = _source(path, "input")
    if path != "-":
        _check_path(path, "input")
    fmt = detect_format(path, cfg.format)
    if fmt != "txt":
        df = _read_frame(path, fmt, "input")
        if fmt == "ag_news":
            return _frame_texts(df, ["title", "description"])
        _require_columns(list(map(str, df.columns)), cfg, src, need_label=False)
        return _frame_texts(df, _text_columns(cfg))
    text = _decode(_read_bytes(path, "input"), src)
    if not text:
        raise DataError(f"{src} is empty; give one text per line")
    lines = text.split("\n")  # not splitlines(): it also splits on form feeds and U+2028 inside texts
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# ---------------------------------------------------------------- splits

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
    pool = TextLabels(raw.texts, _map_labels(raw.labels, names, ids_ok, raw.source))
    other: dict[str, TextLabels | None] = {}
    for role, path in (("validation", cfg.validation_file), ("test", cfg.test_file)):
        r = None if path is None else _read_raw(path, cfg, role)
        other[role] = None if r is None else TextLabels(r.texts, _map_labels(r.labels, names, ids_ok, r.source))
    return _assemble(pool, other["validation"], other["test"], names, cfg, seed, raw.source)


def _load_hub(cfg: DataConfig, seed: int) -> Splits:
    what = f"dataset '{cfg.dataset}'" + (f" (config '{cfg.dataset_config}')" if cfg.dataset_config else "")
    try:
        from .hub import prepare_hub_access

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
        _require_columns(ds.column_names, cfg, src, need_label=True)
        texts = _frame_texts(pd.DataFrame({c: ds[c] for c in _text_columns(cfg)}), _text_columns(cfg))
        _check_texts(texts, src)
        return _Raw(texts, list(ds[cfg.label_column]), False, src)

    train = split("train")
    feature = dd["train"].features.get(cfg.label_column)
    if cfg.label_names is None and isinstance(feature, datasets.ClassLabel):
        names, ids_ok = list(feature.names), True
    else:
        names, ids_ok = _label_set(train, cfg)
    pool = TextLabels(train.texts, _map_labels(train.labels, names, ids_ok, train.source))
    val_name = next((n for n in ("validation", "valid", "dev") if n in dd), None)
    val = test = None
    if val_name is not None:
        r = split(val_name)
        val = TextLabels(r.texts, _map_labels(r.labels, names, ids_ok, r.source))
    if "test" in dd:
        r = split("test")
        # Benchmarks such as GLUE hide test labels as -1: keep the texts, drop the labels.
        unlabelled = all(_as_id(v) is None and not isinstance(v, str) for v in r.labels)
        test = TextLabels(r.texts, None if unlabelled else _map_labels(r.labels, names, ids_ok, r.source))
    return _assemble(pool, val, test, names, cfg, seed, train.source)


# ---------------------------------------------------------------- command-line overrides

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
