"""Data files as texts: detecting the format, reading and decoding bytes, parsing into tables.

Owns the local file formats (CSV, TSV, JSON lines or a JSON array, Parquet, plain text and the
original AG News CSV: no header; class 1..N, title, description), sniffing the AG News layout,
UTF-8 decoding, the text and label columns of a table, and `read_texts` for prediction input.
Labelled files come out of `_read_raw` as texts plus raw label cells; `labels` maps those to ids.
Every problem a user can fix becomes one DataError line that names the file, row, value or
option involved and says what to do.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import pandas as pd

from ..config import FORMATS, DataConfig
from ..errors import DataError
from ._util import _as_id, _cell, _listing, _one_line

_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
               ".parquet": "parquet", ".pq": "parquet", ".txt": "txt"}
_OPTIONS = {"train": "--train-file", "validation": "--validation-file", "test": "--test-file"}
_SNIFF_BYTES = 1 << 16
_AG_TEXT_COLUMNS = ["title", "description"]


class _Raw(NamedTuple):
    texts: list[str]
    labels: list[Any]  # raw cell values; ints are ids (AG News classes are already 0-based here)
    ag_news: bool
    source: str  # "train file 'x.csv'": the subject of every message about this data


def _source(path: str, role: str) -> str:
    return "stdin" if path == "-" else f"{role} file '{path}'"


def _hint(role: str) -> str:
    return f"check {_OPTIONS[role]}" if role in _OPTIONS else "check the path"


def _text_columns(cfg: DataConfig) -> list[str]:
    # A YAML `text_columns: text` arrives as a string; treat it as the one column it names.
    return [cfg.text_columns] if isinstance(cfg.text_columns, str) else list(cfg.text_columns)


def _ag_class(value: str) -> int | None:
    """The AG News class (1, 2, ...) a first-column cell holds, else None."""
    c = _as_id(value)
    return c if c is not None and c >= 1 else None


# ---------------------------------------------------------------- bytes and format

def _check_path(path: str, role: str) -> None:
    """Raise the "does not exist" / "is a directory" message for a path that is not a file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{_source(path, role)} does not exist; {_hint(role)}")
    if p.is_dir():
        raise DataError(f"{_source(path, role)} is a directory, not a file; {_hint(role)}")


def _read_bytes(path: str, role: str) -> bytes:
    """The bytes of `path` (stdin for "-"); callers have checked the path with `_detect`."""
    if path == "-":
        return sys.stdin.buffer.read()
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
    return bool(rows) and all(len(r) == 3 and _ag_class(r[0]) is not None for r in rows)


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


def _detect(path: str, cfg: DataConfig, role: str) -> tuple[str, str]:
    """The message subject and the format of `path`, once it is known to be a file (or stdin)."""
    if path != "-":
        _check_path(path, role)  # before detect_format, so the message names the role and option
    return _source(path, role), detect_format(path, cfg.format)


# ---------------------------------------------------------------- tables

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
        df.columns = ["class", *_AG_TEXT_COLUMNS]
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


def _table_texts(df: pd.DataFrame, fmt: str, cfg: DataConfig, src: str, need_label: bool) -> list[str]:
    """The texts of a table: AG News title + description, else the configured text columns."""
    if fmt == "ag_news":
        return _frame_texts(df, _AG_TEXT_COLUMNS)
    _require_columns(list(map(str, df.columns)), cfg, src, need_label)
    return _frame_texts(df, _text_columns(cfg))


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
        c = _ag_class(s)
        if c is None:
            raise DataError(f"{src} row {row} has class '{s}'; the AG News layout needs an integer class 1, 2, ... "
                            "in the first column (set data.format to csv if the file has a header row)")
        out.append(c - 1)  # class 1 is label 0
    return out


# ---------------------------------------------------------------- readers

def _read_raw(path: str, cfg: DataConfig, role: str) -> _Raw:
    """Read a labelled file: texts (none empty) and raw label values."""
    src, fmt = _detect(path, cfg, role)
    if fmt == "txt":
        raise DataError(f"{src} is plain text, which has no labels; use a CSV, TSV, JSONL or Parquet file "
                        f"with a '{cfg.label_column}' column")
    df = _read_frame(path, fmt, role)
    texts = _table_texts(df, fmt, cfg, src, need_label=True)
    ag_news = fmt == "ag_news"
    labels = _ag_labels(df, src) if ag_news else df[cfg.label_column].tolist()
    _check_texts(texts, src)
    return _Raw(texts, labels, ag_news, src)


def read_table(path: str, cfg: DataConfig) -> tuple[list[str], pd.DataFrame | None]:
    """`read_texts`, plus the table the texts came from, for callers that carry other columns along.

    Returns:
        (the texts, the table with every column as read: AG News as class, title, description),
        or (the lines, None) for plain text.

    Raises:
        DataError: as `read_texts`.
    """
    src, fmt = _detect(path, cfg, "input")
    if fmt == "txt":
        return read_texts(path, cfg), None
    df = _read_frame(path, fmt, "input")
    return _table_texts(df, fmt, cfg, src, need_label=False), df


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
    src, fmt = _detect(path, cfg, "input")
    if fmt != "txt":
        return _table_texts(_read_frame(path, fmt, "input"), fmt, cfg, src, need_label=False)
    text = _decode(_read_bytes(path, "input"), src)
    if not text:
        raise DataError(f"{src} is empty; give one text per line")
    lines = text.split("\n")  # not splitlines(): it also splits on form feeds and U+2028 inside texts
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    return [line[:-1] if line.endswith("\r") else line for line in lines]
