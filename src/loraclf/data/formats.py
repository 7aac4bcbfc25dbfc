"""Data files as tables: detecting the format and parsing it (bytes and decoding are `files.py`).

Owns the local file formats (CSV, TSV, JSON lines or a JSON array, Parquet, plain text and the
original AG News CSV: no header; class 1..N, title, description), sniffing the AG News layout,
the text and label columns of a table, and `read_texts` for prediction input.
Labelled files come out of `_read_raw` as texts plus raw label cells; `labels` maps those to ids.
Every problem a user can fix becomes one DataError line that names the file, row, value or
option involved and says what to do.
"""
from __future__ import annotations

import csv
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import pandas as pd

from ..config import FORMATS, DataConfig
from ..errors import DataError
from ._util import _ROLES, _as_id, _cell, _listing, _one_line, _setting, _source
from .files import _EXTENSIONS, _SNIFF_BYTES, _check_path, _decode, _not_text, _read_bytes, _utf8_prefix

_AG_TEXT_COLUMNS = ["title", "description"]
_NEWLINE = re.compile(r"\r\n|\r|\n")  # Windows, old Mac (Excel's CR-only CSV) and Unix line ends

class _Raw(NamedTuple):
    texts: list[str]
    labels: list[Any]  # raw cell values (AG News classes: already 0-based ids)
    ag_news: bool
    source: str  # "train file 'x.csv'": the subject of every message about this data
    role: str  # train, validation, test, eval (see _util._ROLES): which command's options a fix names
    ids: bool = False  # the labels are ids, not names (AG News classes, a hub ClassLabel column)


def _text_columns(cfg: DataConfig) -> list[str]:
    # A YAML `text_columns: text` arrives as a string; treat it as the one column it names.
    return [cfg.text_columns] if isinstance(cfg.text_columns, str) else list(cfg.text_columns)


def _ag_class(value: str) -> int | None:
    """The AG News class (1, 2, ...) a first-column cell holds, else None."""
    c = _as_id(value)
    return c if c is not None and c >= 1 else None


# ---------------------------------------------------------------- format

def _delimiter(cfg: DataConfig, fmt: str) -> str:
    """The field separator for `fmt`: a tab for TSV; data.delimiter (default ',') for CSV and AG News."""
    if fmt == "tsv":
        return "\t"
    d = cfg.delimiter
    if d is None:
        return ","
    d = {"\\t": "\t", "tab": "\t"}.get(d, d)  # as the config loader does for a typed \t
    if not isinstance(d, str) or len(d) != 1 or d in '"\r\n':
        raise DataError(f"data.delimiter is {d!r}; give one character other than a quote or line break, "
                        "e.g. ';' (or null for ',')")
    return d


def _separator_hint(sample: str, fmt: str, cfg: DataConfig, role: str) -> str:
    """"it looks ';'-separated: <fix>" when `sample` (a header) holds another separator, else ""."""
    used = _delimiter(cfg, fmt)
    counts = {c: sample.count(c) for c in ("\t", ";", "|", ",") if c != used}
    sep = max(counts, key=lambda c: counts[c])
    if not counts[sep]:
        return ""
    looks = f"it looks {'tab' if sep == chr(9) else repr(sep)}-separated"
    if sep == "\t" or (sep == "," and cfg.delimiter in (None, ",")):
        return f"{looks}: {_setting(role, 'format', 'tsv' if sep == chr(9) else 'csv')}"
    if not _ROLES[role].cli:
        return f"{looks}: set {'data.format=csv and ' if fmt == 'tsv' else ''}data.delimiter='{sep}'"
    run = _delimiter(cfg, "csv")
    return (f"{looks}, but this command reads CSV with the run's data.delimiter ('{run}'): "
            f"re-save it '{run}'-separated, or tab-separated and {_setting(role, 'format', 'tsv')}")


def _looks_like_ag_news(path: str, delimiter: str = ",") -> bool:
    """True when the first rows have 3 fields and an integer class >= 1 first (so no header row)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False  # the full read that follows reports the problem with the right wording
    head = head[3:] if head.startswith(b"\xef\xbb\xbf") else head  # a UTF-8 BOM (Excel's "CSV UTF-8")
    if b"\x00" in head or not _utf8_prefix(head):
        return False  # not text: the full read says what it is
    try:
        # newline="": the csv module splits rows itself, at \r\n, \n or a lone \r (old Excel).
        text = io.StringIO(head.decode("utf-8", errors="replace"), newline="")
        rows = list(csv.reader(text, delimiter=delimiter))
    except csv.Error:
        return False  # not CSV at all; the full read reports it
    if len(head) == _SNIFF_BYTES:
        rows = rows[:-1]  # a row cut off by the sniff window proves nothing
    rows = [r for r in rows if r][:5]
    return bool(rows) and all(len(r) == 3 and _ag_class(r[0]) is not None for r in rows)


def detect_format(path: str, declared: str = "auto", *, role: str = "data", delimiter: str = ",") -> str:
    """The format of a data file: `declared` unless it is "auto", else judged by extension and content.

    Args:
        path: the file ("-" is stdin, read as plain text unless declared otherwise).
        declared: one of auto, ag_news, csv, tsv, jsonl, parquet, txt.
        role: what the file is to the command reading it (train, input, ...): messages name its options.
        delimiter: the CSV field separator, for recognising the AG News layout.

    Returns:
        One of ag_news, csv, tsv, jsonl, parquet, txt. A .csv file in the original AG News layout
        (no header; 3 fields, the first an integer class 1..N) is "ag_news".

    Raises:
        DataError: unknown declared format, unknown extension, or a .csv file that cannot be read.
    """
    if declared not in FORMATS:
        raise DataError(f"unknown data format '{declared}'; {_setting(role, 'format', 'FORMAT')} (one of "
                        f"{', '.join(FORMATS)})")
    if declared != "auto":
        return declared
    if path == "-":
        return "txt"
    ext = Path(path).suffix.lower()
    fmt = _EXTENSIONS.get(ext)
    if fmt is None:
        raise DataError(f"cannot tell the format of '{path}' from its extension '{ext}'; use .csv, .tsv, .jsonl, "
                        f".parquet or .txt, or {_setting(role, 'format', 'FORMAT')} (one of {', '.join(FORMATS[1:])})")
    if fmt == "csv":
        _check_path(path, role)
        if _looks_like_ag_news(path, delimiter):
            return "ag_news"
    return fmt


def _detect(path: str, cfg: DataConfig, role: str) -> tuple[str, str]:
    """The message subject and the format of `path`, once it is known to be a file (or stdin)."""
    if path != "-":
        _check_path(path, role)  # before detect_format, so the message names the role and option
    return _source(path, role), detect_format(path, cfg.format, role=role, delimiter=_delimiter(cfg, "csv"))


# ---------------------------------------------------------------- tables

def _read_frame(path: str, fmt: str, cfg: DataConfig, role: str) -> pd.DataFrame:
    """Read a CSV/TSV/AG News/JSONL/Parquet file into a DataFrame with at least one row."""
    src = _source(path, role)
    data = _read_bytes(path, role)
    if fmt == "parquet":
        try:
            df = pd.read_parquet(io.BytesIO(data))
        except Exception as e:  # pyarrow raises several unrelated types for a damaged file
            raise DataError(f"cannot read {src} as Parquet ({_one_line(e, 120)}); "
                            f"check that it is a complete Parquet file, or {_setting(role, 'format', 'FORMAT')} "
                            "for another format") from e
    else:
        text = _decode(data, src, role)
        if not text.strip():
            raise DataError(f"{src} is empty; it needs at least one data row")
        if fmt == "jsonl":
            df = _parse_jsonl(text, src)
        else:
            sep = _delimiter(cfg, fmt)
            try:
                with warnings.catch_warnings():
                    # A row with one field more than the header is cut short with only a warning.
                    warnings.simplefilter("error", pd.errors.ParserWarning)
                    # dtype=str + no NA parsing: "NA", "null" or "" in a text stay exactly what they are.
                    # pandas splits rows at \r\n, \n and a lone \r (old Mac Excel) alike.
                    df = pd.read_csv(io.StringIO(text), sep=sep, header=None if fmt == "ag_news" else "infer",
                                     dtype=str, keep_default_na=False, na_filter=False, index_col=False)
            except (ValueError, csv.Error, pd.errors.ParserWarning) as e:  # pandas' ParserError is a ValueError
                long_row = _long_row(text, sep)
                fix = (_separator_hint(_NEWLINE.split(text, 1)[0], fmt, cfg, role)
                       or (f"quote texts that hold a {'tab' if sep == chr(9) else repr(sep)}" if long_row else
                           f"fix the file, or {_setting(role, 'format', 'FORMAT')} for another format"))
                raise DataError(f"cannot parse {src} as {fmt.upper()} ({long_row or _one_line(e, 120)}); {fix}") from e
    if fmt == "ag_news":
        if df.shape[1] != 3:
            raise DataError(f"{src} has {df.shape[1]} columns; the AG News layout has 3 (class, title, "
                            f"description): {_setting(role, 'format', 'csv')} for a file with a header row")
        df.columns = ["class", *_AG_TEXT_COLUMNS]
    if len(df) == 0:
        raise DataError(f"{src} has a header but no data rows; add rows")
    return df


def _long_row(text: str, sep: str) -> str | None:
    """ "row N has K fields, the header M" for the first data row longer than the header, else None."""
    try:
        rows = (r for r in csv.reader(io.StringIO(text, newline=""), delimiter=sep) if r)
        header = len(next(rows))
        for n, r in enumerate(rows, 1):
            if len(r) > header:
                return f"row {n} has {len(r)} fields, the header {header}"
    except (csv.Error, StopIteration):
        pass
    return None


def _parse_jsonl(text: str, src: str) -> pd.DataFrame:
    if text.lstrip().startswith("["):  # a .json file holding one array of objects
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{src} is not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
        except RecursionError:
            raise DataError(f"{src} nests JSON arrays or objects too deeply to read; flatten the file") from None
    else:
        records = []
        for lineno, line in enumerate(_NEWLINE.split(text), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{src} line {lineno} is not valid JSON ({e.msg}); "
                                    "write one JSON object per line") from None
                except RecursionError:
                    raise DataError(f"{src} line {lineno} nests JSON arrays or objects too deeply to read; "
                                    "write one flat JSON object per line") from None
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise DataError(f"{src} record {i} is a JSON {type(r).__name__}, not an object; "
                            'write one object per line, like {"text": "...", "label": "..."}')
    return pd.DataFrame.from_records(records)


def _require_columns(columns: Sequence[str], cfg: DataConfig, src: str, need_label: bool, role: str,
                     fmt: str | None = None) -> None:
    """Every missing text column and the missing label column, in one message.

    fmt: csv or tsv when the columns come from such a file: one column holding another separator
    then gets the fix for the separator instead of the column settings.
    """
    text = [c for c in _text_columns(cfg) if c not in columns]
    label = need_label and cfg.label_column not in columns
    if not text and not label:
        return
    missing, fixes = [], []
    if text:
        missing.append(f"text column{'s' if len(text) > 1 else ''} {', '.join(repr(c) for c in text)}")
        fixes.append(_setting(role, "text_columns", ["COLUMN", "..."]))
    if label:
        missing.append(f"label column '{cfg.label_column}'")
        fixes.append(_setting(role, "label_column", "COLUMN", verb=not fixes))
    what = f"{' and '.join(missing)} not found in {src}"
    hint = _separator_hint(columns[0], fmt, cfg, role) if fmt in ("csv", "tsv") and len(columns) == 1 else ""
    if hint:
        raise DataError(f"{what}, which has one column, {columns[0][:60]!r}: {hint}")
    raise DataError(f"{what}; available columns: {_listing(columns)}; {' and '.join(fixes)}")


def _frame_texts(df: pd.DataFrame, cols: list[str]) -> list[str]:
    columns = [[_cell(v) for v in df[c].tolist()] for c in cols]
    return [" ".join(parts) for parts in zip(*columns)]


def _table_texts(df: pd.DataFrame, fmt: str, cfg: DataConfig, src: str, need_label: bool, role: str) -> list[str]:
    """The texts of a table: AG News title + description, else the configured text columns."""
    if fmt == "ag_news":
        return _frame_texts(df, _AG_TEXT_COLUMNS)
    _require_columns(list(map(str, df.columns)), cfg, src, need_label, role, fmt)
    return _frame_texts(df, _text_columns(cfg))


def _check_texts(texts: list[str], src: str) -> None:
    """A labelled row without text would teach the model nothing and usually means a broken file."""
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        more = f" ({len(empty)} such rows in all)" if len(empty) > 1 else ""
        raise DataError(f"{src} row {empty[0] + 1} has an empty text{more}; remove the row or fill in its text")


def _ag_labels(df: pd.DataFrame, src: str, role: str) -> list[int]:
    out = []
    for row, v in enumerate(df["class"].tolist(), 1):
        s = _cell(v).strip()
        c = _ag_class(s)
        if c is None:
            raise DataError(f"{src} row {row} has class '{s}'; the AG News layout needs an integer class 1, 2, ... "
                            f"in the first column ({_setting(role, 'format', 'csv')} if the file has a header row)")
        out.append(c - 1)  # class 1 is label 0
    return out


# ---------------------------------------------------------------- readers

def _read_raw(path: str, cfg: DataConfig, role: str) -> _Raw:
    """Read a labelled file: texts (none empty) and raw label values."""
    src, fmt = _detect(path, cfg, role)
    if fmt == "txt":
        if path != "-":
            with open(path, "rb") as f:
                problem = _not_text(f.read(_SNIFF_BYTES), src, role)
            if problem:
                raise DataError(problem)
        raise DataError(f"{src} is plain text, which has no labels; use a CSV, TSV, JSONL or Parquet file "
                        f"with a '{cfg.label_column}' column")
    df = _read_frame(path, fmt, cfg, role)
    texts = _table_texts(df, fmt, cfg, src, need_label=True, role=role)
    ag_news = fmt == "ag_news"
    labels = _ag_labels(df, src, role) if ag_news else df[cfg.label_column].tolist()
    _check_texts(texts, src)
    return _Raw(texts, labels, ag_news, src, role, ids=ag_news)


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
    df = _read_frame(path, fmt, cfg, "input")
    return _table_texts(df, fmt, cfg, src, need_label=False, role="input"), df


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
        return _table_texts(_read_frame(path, fmt, cfg, "input"), fmt, cfg, src, need_label=False, role="input")
    text = _decode(_read_bytes(path, "input"), src, "input")
    if not text:
        raise DataError(f"{src} is empty; give one text per line")
    lines = _NEWLINE.split(text)  # not splitlines(): it also splits on form feeds and U+2028 inside texts
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    return lines
