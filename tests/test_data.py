"""Tests for loraclf.data: formats, labels, splits, one-line errors, hub failure."""
from __future__ import annotations

import collections
import csv
import gzip
import io
import json
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

from loraclf.data import (
    AG_NEWS_LABELS,
    DataConfig,
    Splits,
    TextLabels,
    detect_format,
    load_splits,
    read_labeled,
    read_texts,
)
from loraclf.batching import length_grouped_batches
from loraclf.errors import DataError

AG_DIR = Path(__file__).resolve().parents[2] / "shared/data/ag_news"
needs_ag = pytest.mark.skipif(not (AG_DIR / "test.csv").is_file(), reason=f"shared AG News data not found at {AG_DIR}")
AG_VAL_FRACTION = 0.1


# ---------------------------------------------------------------- helpers

def one_line_error(fn: Callable[[], Any], *parts: str) -> str:
    """Run fn, expect a DataError whose message is one line containing every part."""
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def write_csv(path: Path, header: list[str] | None, rows: list[list[Any]], delimiter: str = ",",
              quoting: int = csv.QUOTE_MINIMAL) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, quoting=quoting)
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return str(path)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def ag_rows(name: str) -> list[list[str]]:
    """The rows (class 1..N, title, description) of a shared AG News file, read with the csv module."""
    with open(AG_DIR / name, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    assert rows and all(len(r) == 3 for r in rows), f"{name} is not in the AG News layout"
    return rows


def ag_label_counts(rows: list[list[str]]) -> collections.Counter[int]:
    """Rows per label id (class 1 is label 0)."""
    return collections.Counter(int(r[0]) - 1 for r in rows)


def balanced_rows(n_per_class: int, classes: list[str]) -> list[list[str]]:
    """Rows (text, label), class-interleaved, every text distinct."""
    return [[f"text {i} about {c}", c] for i in range(n_per_class) for c in classes]


AG_ROWS = [
    ["3", "Wall St. Bears Claw Back", "Reuters - Short-sellers, Wall Street's\\dwindling band"],
    ["4", "Space probe launched", "A probe #39;s launch went well"],
    ["1", "Talks resume", "Diplomats met on Monday"],
    ["2", "Team wins cup", "The home side won 2-1"],
    ["3", "Oil prices rise", "Crude rose on supply fears"],
    ["1", "Election held", "Voters went to the polls"],
    ["2", "Record broken", "A sprinter set a new mark"],
    ["4", "New chip unveiled", "The chip is faster"],
]


@pytest.fixture
def ag_file(tmp_path: Path) -> str:
    return write_csv(tmp_path / "ag.csv", None, AG_ROWS, quoting=csv.QUOTE_ALL)


@pytest.fixture
def text_label_csv(tmp_path: Path) -> str:
    return write_csv(tmp_path / "data.csv", ["text", "label"], balanced_rows(20, ["neg", "pos", "neutral"]))


@pytest.fixture(scope="module")
def ag_splits() -> Splits:
    cfg = DataConfig(train_file=str(AG_DIR / "train.csv"), test_file=str(AG_DIR / "test.csv"),
                     val_fraction=AG_VAL_FRACTION)
    return load_splits(cfg, seed=13)


# ---------------------------------------------------------------- format detection

@pytest.mark.parametrize("name, fmt", [("a.tsv", "tsv"), ("a.jsonl", "jsonl"), ("a.json", "jsonl"),
                                       ("a.parquet", "parquet"), ("a.txt", "txt"), ("a.TSV", "tsv")])
def test_detect_format_by_extension(tmp_path: Path, name: str, fmt: str) -> None:
    """It tells the format from the file extension."""
    assert detect_format(str(tmp_path / name)) == fmt


def test_detect_format_header_csv(text_label_csv: str) -> None:
    """It reads a .csv with a header row as plain CSV."""
    assert detect_format(text_label_csv) == "csv"


def test_detect_format_ag_news_small_file(ag_file: str) -> None:
    """It recognises a small file in the original AG News layout."""
    assert detect_format(ag_file) == "ag_news"


@needs_ag
def test_detect_format_ag_news_real_file() -> None:
    """It recognises the real AG News test.csv."""
    assert detect_format(str(AG_DIR / "test.csv")) == "ag_news"


def test_detect_format_declared_wins(ag_file: str) -> None:
    """It returns a declared format without looking at the file."""
    assert detect_format(ag_file, "csv") == "csv"
    assert detect_format("whatever.bin", "parquet") == "parquet"


def test_detect_format_stdin_is_text() -> None:
    """It treats "-" (stdin) as plain text."""
    assert detect_format("-") == "txt"


def test_detect_format_unknown_declared() -> None:
    """It rejects an unknown declared format, listing the known ones."""
    one_line_error(lambda: detect_format("a.csv", "xml"), "'xml'", "data.format", "jsonl")


def test_detect_format_unknown_extension(tmp_path: Path) -> None:
    """It rejects an unknown extension and says to set data.format."""
    one_line_error(lambda: detect_format(str(tmp_path / "a.xlsx")), "'.xlsx'", "data.format")


# ---------------------------------------------------------------- AG News

@needs_ag
def test_ag_news_real_test_file(ag_splits: Splits) -> None:
    """It reads every row of the real test.csv, in order, with its class and the AG News label names."""
    rows = ag_rows("test.csv")
    assert ag_splits.test is not None
    assert len(ag_splits.test.texts) == len(rows)
    assert ag_splits.test.labels == [int(r[0]) - 1 for r in rows]
    assert ag_splits.label_names == AG_NEWS_LABELS


@needs_ag
def test_ag_news_text_is_title_space_description() -> None:
    """It joins title and description with a space and keeps backslash sequences as they are."""
    rows = ag_rows("test.csv")
    got = read_labeled(str(AG_DIR / "test.csv"), DataConfig(), AG_NEWS_LABELS)
    assert got.texts == [f"{r[1]} {r[2]}" for r in rows]
    assert got.labels == [int(r[0]) - 1 for r in rows]
    assert any("\\" in r[1] + r[2] for r in rows), "test.csv has no backslash sequences to check"


@needs_ag
def test_ag_news_real_train_split_sizes(ag_splits: Splits) -> None:
    """It holds out a stratified val_fraction of the whole real training pool, each class in its share."""
    pool = ag_label_counts(ag_rows("train.csv"))
    n = sum(pool.values())
    assert len(ag_splits.train.texts) + len(ag_splits.validation.texts) == n
    assert len(ag_splits.validation.texts) == math.ceil(AG_VAL_FRACTION * n)  # the held-out share rounds up
    counts = collections.Counter(ag_splits.validation.labels)
    assert counts + collections.Counter(ag_splits.train.labels) == pool
    for label, k in pool.items():
        assert abs(counts[label] - k * AG_VAL_FRACTION) <= 1


def test_ag_news_small_file_labels(ag_file: str) -> None:
    """It maps class 1-4 to label 0-3 with the AG News names."""
    s = load_splits(DataConfig(train_file=ag_file, validation_file=ag_file), seed=0)
    assert s.label_names == AG_NEWS_LABELS
    assert s.train.labels == [int(r[0]) - 1 for r in AG_ROWS]
    assert s.train.texts[0] == "Wall St. Bears Claw Back Reuters - Short-sellers, Wall Street's\\dwindling band"


def test_ag_news_declared_format(tmp_path: Path) -> None:
    """It reads the AG News layout under another extension when data.format is ag_news."""
    path = write_csv(tmp_path / "ag.data", None, AG_ROWS, quoting=csv.QUOTE_ALL)
    assert read_texts(path, DataConfig(format="ag_news"))[1] == "Space probe launched A probe #39;s launch went well"


def test_ag_news_bad_class_in_later_row(tmp_path: Path) -> None:
    """It names the row whose AG News class is not a positive integer."""
    rows = AG_ROWS + [["x", "Title", "Description"]]
    path = write_csv(tmp_path / "ag.csv", None, rows, quoting=csv.QUOTE_ALL)
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0),
                   "row 9", "'x'", "class")


# ---------------------------------------------------------------- formats and columns

def test_csv_string_labels_sorted(text_label_csv: str) -> None:
    """It takes the sorted unique string labels of the training data as the label set."""
    s = load_splits(DataConfig(train_file=text_label_csv), seed=0)
    assert s.label_names == ["neg", "neutral", "pos"]
    ids = {t: l for t, l in zip(s.train.texts + s.validation.texts, s.train.labels + s.validation.labels)}
    assert ids["text 0 about pos"] == 2 and ids["text 0 about neg"] == 0


def test_integer_labels_named_by_id(tmp_path: Path) -> None:
    """It names integer label ids "0".."K-1"."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], balanced_rows(10, ["0", "2", "1"]))
    s = load_splits(DataConfig(train_file=path), seed=0)
    assert s.label_names == ["0", "1", "2"]
    assert sorted(set(s.train.labels)) == [0, 1, 2]


def test_multiple_text_columns_joined(tmp_path: Path) -> None:
    """It joins several text columns with one space, in the configured order."""
    rows = [["Head", "Body text", "a"], ["Other", "More", "b"]] * 5
    path = write_csv(tmp_path / "d.csv", ["title", "body", "y"], rows)
    cfg = DataConfig(train_file=path, validation_file=path, text_columns=["title", "body"], label_column="y")
    assert load_splits(cfg, 0).train.texts[:2] == ["Head Body text", "Other More"]


def test_tsv(tmp_path: Path) -> None:
    """It reads a tab-separated file with a header, commas and quotes inside texts."""
    df = pd.DataFrame({"sentence": ['a, "quoted" b', "c\td", "plain"] * 4, "label": ["x", "y", "x"] * 4})
    path = tmp_path / "d.tsv"
    df.to_csv(path, sep="\t", index=False)
    tl = read_labeled(str(path), DataConfig(text_columns=["sentence"]), ["x", "y"])
    assert tl.texts[:3] == ['a, "quoted" b', "c\td", "plain"]
    assert tl.labels[:3] == [0, 1, 0]


def test_jsonl_int_labels(tmp_path: Path) -> None:
    """It reads JSON lines with integer labels."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(20)])
    s = load_splits(DataConfig(train_file=path), seed=0)
    assert s.label_names == ["0", "1"]
    assert len(s.train.texts) == 18 and len(s.validation.texts) == 2


def test_json_array(tmp_path: Path) -> None:
    """It also reads a .json file holding one array of objects."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a", "label": "p"}, {"text": "b", "label": "q"}]), encoding="utf-8")
    assert read_labeled(str(path), DataConfig(), ["p", "q"]).labels == [0, 1]


def test_parquet(tmp_path: Path) -> None:
    """It reads Parquet with string texts and integer labels."""
    path = tmp_path / "d.parquet"
    pd.DataFrame({"review": [f"r{i}" for i in range(10)], "stars": [i % 3 for i in range(10)]}).to_parquet(path)
    tl = read_labeled(str(path), DataConfig(text_columns=["review"], label_column="stars"), ["a", "b", "c"])
    assert tl.texts[:2] == ["r0", "r1"] and tl.labels[:4] == [0, 1, 2, 0]


def test_na_like_texts_stay_strings(tmp_path: Path) -> None:
    """It keeps "NA", "null" and "" as literal strings rather than missing values."""
    path = write_csv(tmp_path / "d.csv", ["text"], [["NA"], ["null"], [""], ["None"]])
    assert read_texts(path, DataConfig()) == ["NA", "null", "", "None"]


def test_label_names_accept_names_and_ids(tmp_path: Path) -> None:
    """It maps a label column holding names and ids onto explicit label_names."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], [["a", "pos"], ["b", "0"], ["c", "neg"], ["d", "1"]])
    tl = read_labeled(path, DataConfig(), ["neg", "pos"])
    assert tl.labels == [1, 0, 0, 1]


def test_label_names_order_from_config(tmp_path: Path) -> None:
    """It uses data.label_names as the label order instead of sorting."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], balanced_rows(10, ["pos", "neg"]))
    s = load_splits(DataConfig(train_file=path, label_names=["pos", "neg"]), seed=0)
    assert s.label_names == ["pos", "neg"]
    rows = list(zip(s.train.texts + s.validation.texts, s.train.labels + s.validation.labels))
    assert len(rows) == 20  # all() over no rows would pass
    assert all(l == (0 if t.endswith("pos") else 1) for t, l in rows)


def test_validation_and_test_files(tmp_path: Path, text_label_csv: str) -> None:
    """It uses given validation and test files as they are (no split) with the training label set."""
    val = write_csv(tmp_path / "v.csv", ["text", "label"], [["v1", "pos"], ["v2", "neg"]])
    test = write_csv(tmp_path / "t.csv", ["text", "label"], [["t1", "neutral"], ["t2", "pos"], ["t3", "neg"]])
    s = load_splits(DataConfig(train_file=text_label_csv, validation_file=val, test_file=test), seed=0)
    assert len(s.train.texts) == 60
    assert s.validation == TextLabels(["v1", "v2"], [2, 0])
    assert s.test == TextLabels(["t1", "t2", "t3"], [1, 2, 0])


def test_max_eval_rows_caps_validation_and_test(tmp_path: Path, text_label_csv: str) -> None:
    """It keeps only the first max_eval_rows of the validation split and the test file."""
    test = write_csv(tmp_path / "t.csv", ["text", "label"], [[f"t{i}", "pos"] for i in range(10)])
    s = load_splits(DataConfig(train_file=text_label_csv, test_file=test, max_eval_rows=3), seed=0)
    assert len(s.validation.texts) == 3
    assert s.test is not None and s.test.texts == ["t0", "t1", "t2"]


def test_max_train_rows_stratified_subsample(tmp_path: Path) -> None:
    """It subsamples the pool to max_train_rows (stratified, seeded) before the validation split."""
    rows = balanced_rows(300, ["a"]) + balanced_rows(100, ["b"])  # 3:1
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    cfg = DataConfig(train_file=path, max_train_rows=80)
    s = load_splits(cfg, seed=1)
    assert len(s.train.texts) + len(s.validation.texts) == 80
    assert collections.Counter(s.train.labels + s.validation.labels) == {0: 60, 1: 20}
    assert load_splits(cfg, seed=1) == s


# ---------------------------------------------------------------- read_texts

def test_read_texts_plain_text(tmp_path: Path) -> None:
    """It reads one text per line, keeping empty lines and dropping CR line endings."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"first text\r\n\nthird, with comma\n")
    assert read_texts(str(path), DataConfig()) == ["first text", "", "third, with comma"]


def test_read_texts_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """It reads plain text from stdin for the path "-"."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("héllo\nworld\n".encode())))
    assert read_texts("-", DataConfig()) == ["héllo", "world"]


def test_read_texts_table_ignores_labels_keeps_empty(tmp_path: Path) -> None:
    """It reads the text column of a table without a label column and keeps empty texts."""
    path = write_csv(tmp_path / "in.csv", ["id", "text"], [["1", "hello"], ["2", ""], ["3", "bye"]])
    assert read_texts(path, DataConfig()) == ["hello", "", "bye"]


def test_read_texts_jsonl_columns(tmp_path: Path) -> None:
    """It joins the configured text columns of JSON lines for prediction."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"t": "A", "d": "b"}, {"t": "C", "d": "d"}])
    assert read_texts(path, DataConfig(text_columns=["t", "d"])) == ["A b", "C d"]


def test_read_texts_ag_news(ag_file: str) -> None:
    """It reads AG News layout files for prediction as title + description."""
    assert read_texts(ag_file, DataConfig())[2] == "Talks resume Diplomats met on Monday"


# ---------------------------------------------------------------- splits

def test_split_reproducible(text_label_csv: str) -> None:
    """It gives the same split for the same seed and a different one for another seed."""
    cfg = DataConfig(train_file=text_label_csv, val_fraction=0.2)
    a, b, c = load_splits(cfg, 7), load_splits(cfg, 7), load_splits(cfg, 8)
    assert a == b
    assert set(a.validation.texts) != set(c.validation.texts)


def test_split_stratified_proportions(tmp_path: Path) -> None:
    """It keeps each class's share in the validation split."""
    rows = balanced_rows(200, ["a"]) + balanced_rows(50, ["b"]) + balanced_rows(150, ["c"])
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    s = load_splits(DataConfig(train_file=path, val_fraction=0.2), seed=3)
    assert collections.Counter(s.validation.labels) == {0: 40, 1: 10, 2: 30}
    assert set(s.train.texts).isdisjoint(s.validation.texts)
    assert len(s.train.texts) == 320


def test_split_falls_back_when_a_class_is_tiny(tmp_path: Path) -> None:
    """It still splits (unstratified, seeded) when a class has a single row."""
    rows = balanced_rows(20, ["a", "b"]) + [["lonely", "c"]]
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    cfg = DataConfig(train_file=path)
    s = load_splits(cfg, seed=0)
    assert len(s.train.texts) + len(s.validation.texts) == 41
    assert s.label_names == ["a", "b", "c"]
    assert load_splits(cfg, seed=0) == s


@pytest.mark.parametrize("fraction", [0.0, -0.1, 0.6, 1.0])
def test_val_fraction_out_of_range(text_label_csv: str, fraction: float) -> None:
    """It rejects val_fraction outside (0, 0.5]."""
    one_line_error(lambda: load_splits(DataConfig(train_file=text_label_csv, val_fraction=fraction), 0),
                   "data.val_fraction", str(fraction), "(0, 0.5]")


def test_val_fraction_half_allowed(text_label_csv: str) -> None:
    """It accepts val_fraction 0.5."""
    assert len(load_splits(DataConfig(train_file=text_label_csv, val_fraction=0.5), 0).validation.texts) == 30


# ---------------------------------------------------------------- errors

def test_missing_train_file(tmp_path: Path) -> None:
    """It names a missing train file and the option to check."""
    path = str(tmp_path / "x.csv")
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0),
                   f"train file '{path}' does not exist", "--train-file")


def test_missing_validation_file(tmp_path: Path, text_label_csv: str) -> None:
    """It names a missing validation file and --validation-file."""
    one_line_error(lambda: load_splits(DataConfig(train_file=text_label_csv, validation_file="nope.jsonl"), 0),
                   "validation file 'nope.jsonl' does not exist", "--validation-file")


def test_missing_input_file_for_predict() -> None:
    """It names a missing input file for prediction."""
    one_line_error(lambda: read_texts("absent.txt", DataConfig()), "'absent.txt' does not exist")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """It says when the path is a directory."""
    one_line_error(lambda: load_splits(DataConfig(train_file=str(tmp_path)), 0), "is a directory", "--train-file")


def test_not_utf8(tmp_path: Path) -> None:
    """It names the first non-UTF-8 byte and its position and says to re-save as UTF-8."""
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\ncaf\xe9,a\n")
    one_line_error(lambda: load_splits(DataConfig(train_file=str(path)), 0),
                   "not valid UTF-8", "byte 0xe9 at position 14", "re-save it as UTF-8", str(path))


def test_corrupt_csv(tmp_path: Path) -> None:
    """It reports a CSV whose rows have more fields than the header."""
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,b\nc,d,e,f\n", encoding="utf-8")
    one_line_error(lambda: load_splits(DataConfig(train_file=str(path)), 0), "cannot parse", "as CSV", str(path))


def test_corrupt_parquet(tmp_path: Path) -> None:
    """It reports a damaged Parquet file."""
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    one_line_error(lambda: load_splits(DataConfig(train_file=str(path)), 0), "cannot read", "as Parquet")


def test_bad_json_line(tmp_path: Path) -> None:
    """It names the JSON lines line that does not parse."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": oops}\n', encoding="utf-8")
    one_line_error(lambda: load_splits(DataConfig(train_file=str(path)), 0), "line 2", "not valid JSON")


def test_unknown_text_column(text_label_csv: str) -> None:
    """It lists the available columns and data.text_columns for an unknown text column."""
    one_line_error(lambda: load_splits(DataConfig(train_file=text_label_csv, text_columns=["body"]), 0),
                   "text column 'body'", "available columns: text, label", "data.text_columns")


def test_unknown_label_column(text_label_csv: str) -> None:
    """It lists the available columns and data.label_column for an unknown label column."""
    one_line_error(lambda: load_splits(DataConfig(train_file=text_label_csv, label_column="y"), 0),
                   "label column 'y'", "available columns: text, label", "data.label_column")


def test_unknown_text_column_for_predict(tmp_path: Path) -> None:
    """It reports an unknown text column in prediction input too."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"body": "x"}])
    one_line_error(lambda: read_texts(path, DataConfig()), "text column 'text'", "available columns: body")


@pytest.mark.parametrize("name", ["d.csv", "d.jsonl", "d.txt"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    """It reports an empty file."""
    path = tmp_path / name
    path.write_bytes(b"")
    reader = read_texts if name.endswith(".txt") else (lambda p, c: load_splits(DataConfig(train_file=p), 0))
    one_line_error(lambda: reader(str(path), DataConfig()), "is empty")


def test_header_only_file(tmp_path: Path) -> None:
    """It reports a file with a header but no data rows."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], [])
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0), "no data rows")


def test_empty_text_in_labeled_split(tmp_path: Path) -> None:
    """It names the file and 1-based data row of a blank text and says to remove or fill it."""
    rows = [["good", "a"], ["fine", "b"], ["   ", "a"], ["ok", "b"]]
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0),
                   f"train file '{path}' row 3 has an empty text", "remove the row or fill in its text")


def test_empty_text_all_columns_blank(tmp_path: Path) -> None:
    """It counts a row empty only when every text column is blank."""
    rows = [["", "body", "a"], ["", "", "b"], ["t", "", "a"]]
    path = write_csv(tmp_path / "d.csv", ["title", "body", "label"], rows)
    one_line_error(lambda: read_labeled(path, DataConfig(text_columns=["title", "body"]), ["a", "b"]),
                   "row 2 has an empty text")


def test_label_not_in_set(tmp_path: Path, text_label_csv: str) -> None:
    """It names an unknown validation label, its file and row, and lists the valid labels."""
    val = write_csv(tmp_path / "v.csv", ["text", "label"], [["x", "pos"], ["y", "positive"]])
    one_line_error(lambda: load_splits(DataConfig(train_file=text_label_csv, validation_file=val), 0),
                   "'positive'", f"validation file '{val}' row 2", "valid labels: neg, neutral, pos")


def test_label_id_out_of_range(tmp_path: Path) -> None:
    """It rejects a label id beyond the explicit label set."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], [["x", "0"], ["y", "5"]])
    one_line_error(lambda: read_labeled(path, DataConfig(), ["a", "b"]), "'5'", "row 2", "valid labels: a, b")


def test_missing_label(tmp_path: Path) -> None:
    """It names a row without a label."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], [["x", "a"], ["y", ""], ["z", "b"]])
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0), "row 2 has no label")


def test_single_class(tmp_path: Path) -> None:
    """It requires at least two classes in the training data."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], balanced_rows(10, ["only"]))
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0), "needs at least 2 classes", "'only'")


def test_plain_text_cannot_train(tmp_path: Path) -> None:
    """It refuses a plain text file as labelled training data."""
    path = tmp_path / "d.txt"
    path.write_text("a\nb\n", encoding="utf-8")
    one_line_error(lambda: load_splits(DataConfig(train_file=str(path)), 0), "plain text", "no labels")


# ---------------------------------------------------------------- hub

def test_hub_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It turns a hub failure into one line that says to pass --train-file, without network waits."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read these at import time, which may have happened before this test.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # no cached copy to fall back on
    monkeypatch.chdir(tmp_path)  # no local folder named ag_news either
    one_line_error(lambda: load_splits(DataConfig(), 0),
                   "cannot load dataset 'ag_news' from the Hugging Face hub (no network or no such dataset: ",
                   "pass a local file with --train-file (CSV/TSV/JSONL/Parquet)")


def test_hub_dataset_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    """It takes hub splits and ClassLabel names, uses a "valid" split, and drops -1 test labels."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)]},
                                            features=features),
        "valid": datasets.Dataset.from_dict({"text": ["v0", "v1"], "label": [1, 0]}, features=features),
        "test": datasets.Dataset.from_dict({"text": ["x", "y"], "label": [-1, -1]}, features=features),
    })
    seen = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: seen.append(a) or dd)
    s = load_splits(DataConfig(dataset="someone/reviews", dataset_config="en"), 0)
    assert seen == [("someone/reviews", "en")]
    assert s.label_names == ["neg", "pos"]
    assert len(s.train.texts) == 10 and s.validation == TextLabels(["v0", "v1"], [1, 0])
    assert s.test == TextLabels(["x", "y"], None)


# ---------------------------------------------------------------- batching on real data

@needs_ag
def test_grouped_batches_cut_padding_on_ag_news(ag_splits: Splits) -> None:
    """It pads far less than random batches on real AG News lengths (word counts)."""
    lengths = [len(t.split()) for t in ag_splits.train.texts]

    def waste(batches: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in batches) - sum(lengths)

    perm = np.random.default_rng(0).permutation(len(lengths)).tolist()
    random_batches = [perm[i:i + 32] for i in range(0, len(perm), 32)]
    assert waste(length_grouped_batches(lengths, 32, 0, 0)) < 0.2 * waste(random_batches)


# ---------------------------------------------------------------- hints name the command's options

def no_data_keys(msg: str) -> None:
    """predict/evaluate have no data.* keys: a hint must name their options instead."""
    assert not re.search(r"data\.(format|text_columns|label_column|label_names)", msg), msg


def test_missing_text_and_label_columns_reported_together(text_label_csv: str) -> None:
    """It names every missing text column and the label column in one line, with the data.* keys to set."""
    cfg = DataConfig(train_file=text_label_csv, text_columns=["title", "body"], label_column="y")
    one_line_error(lambda: load_splits(cfg, 0), "text columns 'title', 'body' and label column 'y' not found",
                   "available columns: text, label", "data.text_columns=[", "data.label_column=")


def test_evaluate_column_hints_name_options(text_label_csv: str) -> None:
    """It tells evaluate to pass --text-columns and --label-column, in one line."""
    cfg = DataConfig(text_columns=["body"], label_column="y")
    msg = one_line_error(lambda: read_labeled(text_label_csv, cfg, ["neg", "pos"]),
                         "text column 'body' and label column 'y' not found", "--text-columns", "--label-column")
    no_data_keys(msg)


def test_predict_column_hint_names_option(tmp_path: Path) -> None:
    """It tells predict to pass --text-columns."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"body": "x"}])
    no_data_keys(one_line_error(lambda: read_texts(path, DataConfig()), "text column 'text'", "--text-columns"))


@pytest.mark.parametrize("reader", ["predict", "evaluate"])
def test_format_hints_name_option(tmp_path: Path, reader: str) -> None:
    """It tells predict and evaluate to pass --format for an unknown format or extension."""
    read = (lambda p, c: read_texts(p, c)) if reader == "predict" else (lambda p, c: read_labeled(p, c, ["a", "b"]))
    path = tmp_path / "in.xlsx"
    path.write_text("x", encoding="utf-8")
    no_data_keys(one_line_error(lambda: read(str(path), DataConfig()), "'.xlsx'", "--format"))
    no_data_keys(one_line_error(lambda: read(str(path), DataConfig(format="xml")), "'xml'", "--format"))


def test_ag_news_header_hint_names_option_for_evaluate(tmp_path: Path) -> None:
    """It tells evaluate to pass --format csv for a headed file that passed for AG News."""
    path = write_csv(tmp_path / "ag.csv", None, AG_ROWS[:2] + [["x", "T", "D"]], quoting=csv.QUOTE_ALL)
    no_data_keys(one_line_error(lambda: read_labeled(path, DataConfig(format="ag_news"), AG_NEWS_LABELS),
                                "row 3", "--format csv"))


def test_evaluate_unknown_label_hint(tmp_path: Path) -> None:
    """It does not tell evaluate to set data.label_names: the model's labels are fixed."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], [["x", "pos"], ["y", "positive"]])
    no_data_keys(one_line_error(lambda: read_labeled(path, DataConfig(), ["neg", "pos"]),
                                "row 2", "'positive'", "--label-column"))


def test_train_unknown_label_hint_names_key(tmp_path: Path, text_label_csv: str) -> None:
    """It tells train to set data.label_names for a validation label outside the training labels."""
    val = write_csv(tmp_path / "v.csv", ["text", "label"], [["x", "positive"]])
    one_line_error(lambda: load_splits(DataConfig(train_file=text_label_csv, validation_file=val), 0),
                   "'positive'", "data.label_names=")


def test_path_hints_name_the_commands_option(tmp_path: Path) -> None:
    """It tells predict to check --input and evaluate to check --data."""
    one_line_error(lambda: read_texts("absent.csv", DataConfig()), "input file 'absent.csv' does not exist", "--input")
    one_line_error(lambda: read_labeled("absent.csv", DataConfig(), ["a", "b"]), "'absent.csv' does not exist", "--data")


def test_tune_test_file_role(tmp_path: Path) -> None:
    """It names --test-file and data.* keys when tune reads its test file with read_labeled."""
    path = write_csv(tmp_path / "t.csv", ["text", "label"], [["x", "a"]])
    one_line_error(lambda: read_labeled(path, DataConfig(label_column="y"), ["a", "b"], role="test"),
                   f"test file '{path}'", "data.label_column=")


# ---------------------------------------------------------------- binary files and old line endings

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
BINARIES = {
    "random bytes": (np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(), "binary data"),
    "png": (PNG, "a PNG image"),
    "gzip": (gzip.compress(b"text,label\n" + b"some text,a\n" * 50), "gzip-compressed data"),
}
READERS = ["train", "validation", "test", "predict", "evaluate"]


def read_as(reader: str, path: str, good_train: str) -> Any:
    """Read `path` the way `reader` (a file role or a command) does."""
    if reader == "predict":
        return read_texts(path, DataConfig())
    if reader == "evaluate":
        return read_labeled(path, DataConfig(), ["a", "b"])
    if reader == "train":
        return load_splits(DataConfig(train_file=path), 0)
    return load_splits(DataConfig(train_file=good_train, **{f"{reader}_file": path}), 0)


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".tsv", ".txt"])
@pytest.mark.parametrize("kind", list(BINARIES))
@pytest.mark.parametrize("reader", READERS)
def test_binary_file_is_one_line(tmp_path: Path, text_label_csv: str, reader: str, kind: str, ext: str) -> None:
    """It says a binary file is not a text file, what it looks like and which files it reads."""
    data, looks_like = BINARIES[kind]
    path = tmp_path / f"bin{ext}"
    path.write_bytes(data)
    msg = one_line_error(lambda: read_as(reader, str(path), text_label_csv),
                         f"'{path}' is not a text file", f"it looks like {looks_like}", "UTF-8 CSV, TSV")
    assert ("plain text" in msg) == (reader == "predict"), msg  # predict alone reads .txt files
    if kind == "gzip":
        assert "gunzip" in msg


def test_binary_stdin_for_predict(monkeypatch: pytest.MonkeyPatch) -> None:
    """It says binary data on stdin is not text."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(PNG)))
    one_line_error(lambda: read_texts("-", DataConfig()), "stdin is not a text file", "PNG")


def test_parquet_named_csv(tmp_path: Path) -> None:
    """It recognises a Parquet file under a .csv name and says how to read it as Parquet."""
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}).to_parquet(path)
    one_line_error(lambda: load_splits(DataConfig(train_file=str(path)), 0), "Parquet", "data.format=parquet")
    one_line_error(lambda: read_texts(str(path), DataConfig()), "Parquet", "--format parquet")


def test_utf16_file(tmp_path: Path) -> None:
    """It says a UTF-16 file (Excel's "Unicode text") must be re-saved as UTF-8."""
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\nhello,a\n".encode("utf-16"))
    one_line_error(lambda: load_splits(DataConfig(train_file=str(path)), 0), "UTF-16", "re-save it as UTF-8")


def cr_only(rows: list[list[str]]) -> bytes:
    """CSV with old-Mac (Excel) CR-only line ends, quoted fields holding commas and line breaks."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r", quoting=csv.QUOTE_ALL).writerows(rows)
    return buf.getvalue().encode("utf-8")


CR_ROWS = [["text", "label"], ["first, with comma", "a"], ["two\nlines", "b"], ["third", "a"], ["fourth", "b"]]


@pytest.mark.parametrize("reader", ["train", "validation", "evaluate", "predict"])
def test_cr_only_csv_read_correctly(tmp_path: Path, reader: str) -> None:
    """It reads a CSV with CR-only line ends (old Excel) row by row, like any other CSV."""
    path = tmp_path / "cr.csv"
    path.write_bytes(cr_only(CR_ROWS))
    texts = [r[0] for r in CR_ROWS[1:]]
    if reader == "predict":
        assert read_texts(str(path), DataConfig()) == texts
        return
    if reader == "train":
        s = load_splits(DataConfig(train_file=str(path), validation_file=str(path)), 0)
        assert s.label_names == ["a", "b"]
        got = s.train
    elif reader == "validation":
        got = load_splits(DataConfig(train_file=str(path), validation_file=str(path)), 0).validation
    else:
        got = read_labeled(str(path), DataConfig(), ["a", "b"])
    assert got == TextLabels(texts, [0, 1, 0, 1])


def test_cr_only_ag_news(tmp_path: Path) -> None:
    """It still recognises the AG News layout with CR-only line ends."""
    path = tmp_path / "ag.csv"
    path.write_bytes(cr_only(AG_ROWS))
    assert detect_format(str(path)) == "ag_news"
    assert load_splits(DataConfig(train_file=str(path), validation_file=str(path)), 0).train.labels == [
        int(r[0]) - 1 for r in AG_ROWS]


def test_cr_only_jsonl_and_text(tmp_path: Path) -> None:
    """It splits JSON lines and plain text at CR-only line ends too."""
    jl = tmp_path / "d.jsonl"
    jl.write_bytes(b'{"text": "a", "label": "x"}\r{"text": "b", "label": "y"}\r')
    assert read_labeled(str(jl), DataConfig(), ["x", "y"]) == TextLabels(["a", "b"], [0, 1])
    txt = tmp_path / "d.txt"
    txt.write_bytes(b"one\rtwo\r\rfour\r")
    assert read_texts(str(txt), DataConfig()) == ["one", "two", "", "four"]


# ---------------------------------------------------------------- integer labels

def test_integer_label_typo_is_one_line(tmp_path: Path) -> None:
    """It refuses one mistyped integer label instead of making a class for every integer up to it."""
    rows = balanced_rows(10, ["0", "1"]) + [["typo", "1000000"]]
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0),
                   "integer labels 0, 1, 1000000", "0..K-1 or 1..K", "row 21 has 1000000", "2-999999 missing",
                   "data.label_names=[0,1,1000000]", "class names")


@pytest.mark.parametrize("labels, found", [(["0", "1", "3"], "row 3 has 3, after a gap (2 missing)"),
                                           (["2", "3", "4"], "the smallest, 2 (row 1), is not 0 or 1")])
def test_integer_labels_gap_or_start(tmp_path: Path, labels: list[str], found: str) -> None:
    """It names the first label after a gap, or a smallest label other than 0 or 1."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], balanced_rows(5, labels))
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0), found, "data.label_names=")


def test_integer_labels_with_gap_accepted_with_label_names(tmp_path: Path) -> None:
    """It takes integer labels with a gap as names when data.label_names lists them."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], balanced_rows(5, ["0", "1", "3"]))
    s = load_splits(DataConfig(train_file=path, validation_file=path, label_names=["0", "1", "3"]), 0)
    assert s.label_names == ["0", "1", "3"] and s.train.labels[:3] == [0, 1, 2]


def one_based_file(tmp_path: Path, kind: str) -> str:
    """Labels 1, 2, 3 (as CSV strings, JSON ints or floats, or Parquet ints) on texts "t1 i"..."""
    records = [{"text": f"t{c} {i}", "label": c} for i in range(5) for c in (1, 2, 3)]
    if kind == "csv":
        return write_csv(tmp_path / "d.csv", ["text", "label"], [[r["text"], str(r["label"])] for r in records])
    if kind == "jsonl float":
        return write_jsonl(tmp_path / "d.jsonl", [{**r, "label": float(r["label"])} for r in records])
    if kind == "parquet":
        pd.DataFrame.from_records(records).to_parquet(tmp_path / "d.parquet")
        return str(tmp_path / "d.parquet")
    return write_jsonl(tmp_path / "d.jsonl", records)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "jsonl float", "parquet"])
def test_integer_labels_one_based(tmp_path: Path, kind: str) -> None:
    """It maps labels 1..K to ids 0..K-1 named "1".."K", in training, validation and evaluation alike."""
    path = one_based_file(tmp_path, kind)
    s = load_splits(DataConfig(train_file=path, validation_file=path), 0)
    assert s.label_names == ["1", "2", "3"]
    for split in (s.train, s.validation):
        assert split.labels == [int(t[1]) - 1 for t in split.texts]
    ev = read_labeled(path, DataConfig(), s.label_names)
    assert ev.labels == [int(t[1]) - 1 for t in ev.texts]


def test_integer_labels_zero_based_unchanged(tmp_path: Path) -> None:
    """It keeps 0..K-1 integer labels as ids named "0".."K-1" (JSON ints too)."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": i % 3} for i in range(12)])
    s = load_splits(DataConfig(train_file=path, validation_file=path), 0)
    assert s.label_names == ["0", "1", "2"] and s.validation.labels == [i % 3 for i in range(12)]


def test_one_based_labels_refuse_zero_in_validation(tmp_path: Path) -> None:
    """It refuses label 0 in a validation file when training labels are 1..K (it is no id there)."""
    val = write_csv(tmp_path / "v.csv", ["text", "label"], [["x", "0"]])
    one_line_error(lambda: load_splits(DataConfig(train_file=one_based_file(tmp_path, "csv"), validation_file=val), 0),
                   "validation file", "row 1 has label '0'", "valid labels: 1, 2, 3;")


def test_ag_news_class_gap(tmp_path: Path) -> None:
    """It refuses AG News layout classes with a gap above the four AG News classes."""
    rows = [[c, "Title", f"Description {i}"] for i, c in enumerate(["1", "2", "5", "6"] * 2)]
    path = write_csv(tmp_path / "ag.csv", None, rows, quoting=csv.QUOTE_ALL)
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0),
                   "integer classes 1, 2, 5, 6", "row 3 has 5, after a gap (3-4 missing)", "classes 1..6")


def test_ag_news_layout_more_classes(tmp_path: Path) -> None:
    """It names the classes of an AG News layout file with 5 contiguous classes "1".."5" (ids 0..4)."""
    rows = [[str(c), "Title", f"Description {c} {i}"] for i in range(3) for c in range(1, 6)]
    path = write_csv(tmp_path / "ag.csv", None, rows, quoting=csv.QUOTE_ALL)
    s = load_splits(DataConfig(train_file=path, validation_file=path), 0)
    assert s.label_names == ["1", "2", "3", "4", "5"] and s.train.labels[:5] == [0, 1, 2, 3, 4]


def test_hub_class_label_ints_stay_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """It keeps hub ClassLabel ints as ids even when the class names are digits."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["1", "2"])})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)]},
                                            features=features),
        "validation": datasets.Dataset.from_dict({"text": ["v0", "v1"], "label": [1, 0]}, features=features),
    })
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: dd)
    s = load_splits(DataConfig(dataset="someone/stars"), 0)
    assert s.label_names == ["1", "2"] and s.validation == TextLabels(["v0", "v1"], [1, 0])


# ---------------------------------------------------------------- data.delimiter

@pytest.fixture
def semicolon_csv(tmp_path: Path) -> str:
    rows = [[f"Preis {i}: 3,50 EUR, billig", "ab"[i % 2]] for i in range(10)]
    return write_csv(tmp_path / "eu.csv", ["text", "label"], rows, delimiter=";")


def test_delimiter_reads_semicolon_csv(semicolon_csv: str) -> None:
    """It reads a ';'-separated CSV (commas inside texts) with data.delimiter=';', for every command."""
    cfg = DataConfig(train_file=semicolon_csv, validation_file=semicolon_csv, delimiter=";")
    s = load_splits(cfg, 0)
    assert s.label_names == ["a", "b"] and s.validation.texts[0] == "Preis 0: 3,50 EUR, billig"
    assert read_texts(semicolon_csv, cfg)[1] == "Preis 1: 3,50 EUR, billig"
    assert read_labeled(semicolon_csv, cfg, ["a", "b"]).labels[:2] == [0, 1]


def test_semicolon_csv_hint_for_train(semicolon_csv: str) -> None:
    """It says a ';'-separated file read as CSV looks ';'-separated and to set data.delimiter=';'."""
    one_line_error(lambda: load_splits(DataConfig(train_file=semicolon_csv), 0),
                   "it looks ';'-separated", "set data.delimiter=';'")
    plain = Path(semicolon_csv).with_name("plain.csv")
    plain.write_text("text;label\nx;a\ny;b\n", encoding="utf-8")  # no commas: read as one column
    one_line_error(lambda: load_splits(DataConfig(train_file=str(plain)), 0),
                   "one column, 'text;label'", "it looks ';'-separated", "set data.delimiter=';'")


@pytest.mark.parametrize("reader", ["predict", "evaluate"])
def test_semicolon_csv_hint_for_predict_and_evaluate(semicolon_csv: str, reader: str) -> None:
    """It tells predict and evaluate that they read CSV with the run's data.delimiter."""
    read = (lambda: read_texts(semicolon_csv, DataConfig())) if reader == "predict" else (
        lambda: read_labeled(semicolon_csv, DataConfig(), ["a", "b"]))
    msg = one_line_error(read, "it looks ';'-separated", "the run's data.delimiter (',')", "--format tsv")
    assert "data.delimiter=" not in msg


def test_tab_separated_csv_hint(tmp_path: Path) -> None:
    """It suggests the TSV format for a tab-separated .csv file, as the command's option."""
    path = write_csv(tmp_path / "d.csv", ["text", "label"], [["x", "a"], ["y", "b"]], delimiter="\t")
    one_line_error(lambda: load_splits(DataConfig(train_file=path), 0), "it looks tab-separated", "set data.format=tsv")
    one_line_error(lambda: read_texts(path, DataConfig()), "'text\\tlabel'", "pass --format tsv")


def test_semicolon_hint_on_parse_error(tmp_path: Path) -> None:
    """It gives the separator fix when a ';'-separated file fails to parse as CSV."""
    path = tmp_path / "d.csv"
    path.write_text("text;label\nx;a\ny, with, commas;b\n", encoding="utf-8")
    one_line_error(lambda: load_splits(DataConfig(train_file=str(path)), 0), "cannot parse", "data.delimiter=';'")


def test_tsv_stays_tab_separated(tmp_path: Path) -> None:
    """It reads TSV files with tabs whatever data.delimiter says (it is the CSV separator)."""
    path = write_csv(tmp_path / "d.tsv", ["text", "label"], [["x; y", "a"], ["z", "b"]], delimiter="\t")
    assert read_texts(path, DataConfig(delimiter=";")) == ["x; y", "z"]


def test_ag_news_layout_with_delimiter(tmp_path: Path) -> None:
    """It recognises the AG News layout in a ';'-separated file when data.delimiter is ';'."""
    path = write_csv(tmp_path / "ag.csv", None, AG_ROWS, delimiter=";", quoting=csv.QUOTE_ALL)
    s = load_splits(DataConfig(train_file=path, validation_file=path, delimiter=";"), 0)
    assert s.label_names == AG_NEWS_LABELS and s.train.labels == [int(r[0]) - 1 for r in AG_ROWS]


@pytest.mark.parametrize("value", [";;", "", '"'])
def test_bad_delimiter(text_label_csv: str, value: str) -> None:
    """It refuses a delimiter that is not one character (code-built configs skip the loader's check)."""
    one_line_error(lambda: load_splits(DataConfig(train_file=text_label_csv, delimiter=value), 0), "data.delimiter")


def test_delimiter_from_the_command_line() -> None:
    """It takes data.delimiter=; and data.delimiter=\\t (a tab) from the command line and refuses two characters."""
    from loraclf.config import load_config
    from loraclf.errors import ConfigError

    assert load_config(None, ["data.delimiter=;"]).data.delimiter == ";"
    assert load_config(None, ["data.delimiter=\\t"]).data.delimiter == "\t"
    assert load_config(None, []).data.delimiter is None
    with pytest.raises(ConfigError, match="data.delimiter: ';;' is not a separator"):
        load_config(None, ["data.delimiter=;;"])


# ---------------------------------------------------------------- paths that are not files

@pytest.mark.parametrize("reader, option", [("train", "--train-file"), ("validation", "--validation-file"),
                                            ("predict", "--input"), ("evaluate", "--data")])
def test_directory_says_what_it_holds(tmp_path: Path, text_label_csv: str, reader: str, option: str) -> None:
    """It says a directory is a directory (not missing), lists the data files in it and names the option."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\n", encoding="utf-8")
    (folder / "notes.md").write_text("", encoding="utf-8")
    msg = one_line_error(lambda: read_as(reader, str(folder), text_label_csv),
                         f"'{folder}' is a directory, not a file", "data files in it: train.csv", option)
    assert "does not exist" not in msg and "notes.md" not in msg


def test_path_below_a_file(tmp_path: Path, text_label_csv: str) -> None:
    """It says a path cannot exist because a part of it is a file, not that it "does not exist"."""
    path = f"{text_label_csv}/more/x.csv"
    msg = one_line_error(lambda: load_splits(DataConfig(train_file=path), 0),
                         f"'{text_label_csv}' is a file, not a directory", "--train-file")
    assert "does not exist" not in msg
    one_line_error(lambda: read_texts(path, DataConfig()), "is a file, not a directory", "--input")


def test_broken_symlink(tmp_path: Path) -> None:
    """It says a path is a link to nothing rather than that it does not exist."""
    link = tmp_path / "d.csv"
    link.symlink_to(tmp_path / "gone.csv")
    one_line_error(lambda: load_splits(DataConfig(train_file=str(link)), 0), "broken symbolic link", "gone.csv")


def test_empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It says an empty path is empty (not that the current directory is a directory)."""
    monkeypatch.chdir(tmp_path)
    one_line_error(lambda: load_splits(DataConfig(train_file=""), 0), "train file path is empty", "--train-file")


def test_row_with_one_field_too_many(tmp_path: Path) -> None:
    """It refuses a row with one field more than the header (an unquoted comma) instead of cutting it short."""
    path = tmp_path / "d.csv"
    path.write_text("text,label\nfine,a\n\nhello, world,b\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ParserWarning may leak out either
        one_line_error(lambda: load_splits(DataConfig(train_file=str(path)), 0),
                       "cannot parse", "row 2 has 3 fields, the header 2", "quote texts that hold a ','")
