"""`loraclf predict`: a file (or stdin) in, a submission-style CSV out, written atomically.

The Python API for classifying lists of strings is `loraclf.inference.Classifier`.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from .data import data_config_for, read_table
from .errors import ConfigError, DataError
from .backends import load_classifier, open_model_dir
from .config.inference import InferenceSettings
from .io import atomic_write, os_error_reason

PREDICT_CHUNK_ROWS = 4096  # input rows classified and written at a time
PROGRESS_LOG_SECONDS = 30.0  # the progress bar's refresh when stderr is a log file, not a terminal (as training's)


# ---------------------------------------------------------------------------------------------
# `loraclf predict`: a file or stdin in, a submission-style CSV out.


def predictions_csv(
    probs: np.ndarray,
    label_names: Sequence[str],
    label_as_name: bool = False,
    probabilities: bool = False,
    *,
    leading: Mapping[str, Sequence[str]] | None = None,
    start: int = 0,
    header: bool = True,
) -> str:
    """CSV text in the study's submission layout: `ID,Label` with ID = row index, Label = class id.

    Args:
        probs: class probabilities [n, k], in input order.
        label_names: the k class names.
        label_as_name: write the class name instead of its id in Label.
        probabilities: add one `p_<class name>` column per class.
        leading: columns to write before ID (name -> n cell texts), e.g. input columns kept. One named `id` in any
            case is the ID column: it replaces the row index, so the output never holds both `id` and `ID`.
        start: the ID of the first row (a later chunk of one input).
        header: write the header row (the first chunk only).
    """
    leading = dict(leading or {})
    own_id = any(name.casefold() == "id" for name in leading)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(list(leading) + ([] if own_id else ["ID"]) + ["Label"] + ([f"p_{n}" for n in label_names] if probabilities else []))
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    kept = list(zip(*leading.values())) if leading else [()] * len(pred)
    for i, k in enumerate(pred):
        row: list[Any] = [*kept[i], *([] if own_id else [start + i]), label_names[k] if label_as_name else int(k)]
        if probabilities:
            row.extend(f"{p:.6f}" for p in probs[i])
        writer.writerow(row)
    return buf.getvalue()


def predict_file(
    run_dir: str | Path,
    input_path: str,
    output_path: str = "-",
    *,
    ids: bool = False,
    probabilities: bool = False,
    keep_columns: Sequence[str] | str | None = None,
    format: str | None = None,
    text_columns: Sequence[str] | str | None = None,
    settings: InferenceSettings | None = None,
) -> int:
    """Classify every row of a file (or stdin) and write the predictions in input order.

    The input and the output path are checked before the model loads; the output is written in
    one atomic step (or to stdout in one write), so a failure leaves nothing behind.

    Args:
        run_dir: directory written by `loraclf train`.
        input_path: CSV/TSV/JSONL/Parquet with the run's text columns, AG News CSV, plain text
            (one text per line), or "-" for plain text on stdin (unless `format` says otherwise).
        output_path: the CSV to write (its directory must exist), or "-" for stdout.
        ids: write class ids in Label (the study's submission layout) instead of class names.
        probabilities: add one `p_<class name>` column per class.
        keep_columns: input columns (a list, or one comma-separated string) to copy into the
            output, before ID; a table input only.
        format: the input format (default "auto": detected from the name and content).
        text_columns: the text column(s) (default: the run's data.text_columns).
        settings: how the model runs (device, precision, batch size; backend "torch", or "onnx": ONNX Runtime on
            CPU, `run_dir` may then be an ONNX export and a run is exported once into RUN/onnx; int8; compile).

    Returns:
        The number of rows predicted.

    Raises:
        ConfigError: `keep_columns` names no column or clashes with an output column.
        CheckpointError: `run_dir` is not a finished run (or, for onnx, an ONNX export).
        ModelError: onnx only: onnxruntime missing or a model that does not load.
        DataError: the input is missing, empty, not UTF-8, lacks a text or kept column, or is
            plain text with `keep_columns`; the output is a directory, the input itself, lies in a
            directory that is missing or not writable, or cannot be written.
    """
    settings = settings or InferenceSettings()
    run = open_model_dir(run_dir, settings.backend, settings.int8)
    keep = _keep_columns(keep_columns, ["Label"] + ([f"p_{n}" for n in run.label_names()] if probabilities else []))
    _check_output(output_path, input_path)
    # The format is detected from the input unless given: new text rarely comes in the training
    # file's format (stdin is plain text); the text columns are the run's unless given.
    texts, table = read_table(input_path, data_config_for(run.read_config().data, format or "auto", text_columns))
    leading = _kept_cells(table, keep, input_path) if keep else None
    clf = load_classifier(run, settings)
    if hasattr(clf, "compiled_for"):  # compile or not for the whole input (auto looks at the row count), not per chunk
        clf.compile = clf.compiled_for(len(texts))
    chunks = prediction_chunks(clf, texts, leading, label_as_name=not ids, probabilities=probabilities)
    try:
        write_predictions(output_path, chunks)
    except OSError as e:  # disk full, a directory gone read-only since the check above...
        if output_path == "-":
            raise  # stdout closed early (`| head`) is not a problem with a path
        raise DataError(f"cannot write --output '{output_path}' ({os_error_reason(e)}); choose another path") from e
    return len(texts)


def prediction_chunks(clf: Any, texts: Sequence[str], leading: Mapping[str, Sequence[str]] | None, *,
                      label_as_name: bool, probabilities: bool, chunk_rows: int | None = None) -> Iterator[str]:
    """The predictions CSV in pieces of `chunk_rows` input rows (default PREDICT_CHUNK_ROWS), header first: only one
    chunk's token ids and scores are held at a time (all 200,000 rows at once peaked at 3.41 GB). A progress bar on
    stderr follows an input of more than one chunk."""
    step = chunk_rows or PREDICT_CHUNK_ROWS
    progress = None
    if len(texts) > step:
        from tqdm.auto import tqdm

        interval = {} if sys.stderr.isatty() else {"mininterval": PROGRESS_LOG_SECONDS, "maxinterval": PROGRESS_LOG_SECONDS}
        progress = tqdm(total=len(texts), desc="predict", unit="text", dynamic_ncols=True, file=sys.stderr, **interval)
    try:
        for start in range(0, max(len(texts), 1), step):
            part = texts[start:start + step]
            kept = {k: v[start:start + step] for k, v in leading.items()} if leading else None
            yield predictions_csv(clf.predict_proba(part), clf.label_names, label_as_name, probabilities, leading=kept,
                                  start=start, header=start == 0)
            if progress is not None:
                progress.update(len(part))
    finally:
        if progress is not None:
            progress.close()


def write_predictions(output_path: str | Path, table: str | Iterable[str]) -> None:
    """CSV text (or its pieces) to a file, atomically: the pieces go to a temp file renamed into place at the end,
    so an interrupt or a failure leaves no partial file. For "-", to stdout in one write once every piece is made
    (the CSV is small beside the model's work, and a failure then prints nothing)."""
    pieces = [table] if isinstance(table, str) else table
    if str(output_path) == "-":
        text = "".join(pieces)
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with atomic_write(output_path) as f:
            for piece in pieces:
                f.write(piece)


# ---------------------------------------------------------------------------------------------
# Checks made before the model loads.



def _check_output(output_path: str, input_path: str = "-") -> None:
    """Refuse an --output that cannot be written, or that is the input, before any work is done.

    Raises:
        DataError: the output is a directory or the input file (under any name, or through a
            link); its directory is missing, is a file or is not writable.
    """
    if output_path == "-":
        return
    out = Path(output_path)
    try:
        if out.is_dir():
            raise DataError(f"--output '{output_path}' is a directory; give a file name such as {out / 'submission.csv'}")
        if input_path != "-" and out.exists() and Path(input_path).exists() and os.path.samefile(out, input_path):
            raise DataError(f"--output '{output_path}' is the input file '{input_path}'; write the predictions to another file")
        parent = out.parent
        existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
        if not existing.is_dir():
            raise DataError(f"--output '{output_path}' lies under '{existing}', which is a file; choose a path in a directory")
        if existing != parent:
            raise DataError(f"--output '{output_path}': directory '{parent}' does not exist; create it (mkdir -p {parent}) "
                            "or choose another path")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise DataError(f"--output '{output_path}': directory '{parent}' is not writable; choose a directory you can write to")
    except OSError as e:  # e.g. a directory on the way that may not be searched
        raise DataError(f"cannot use --output '{output_path}' ({os_error_reason(e)}); check the path and its permissions") from e


def _keep_columns(keep_columns: Sequence[str] | str | None, added: list[str]) -> list[str]:
    """The --keep-columns names, without repeats, checked against the columns predict adds."""
    if keep_columns is None:
        return []
    cols = [c.strip() for c in keep_columns.split(",")] if isinstance(keep_columns, str) else [str(c) for c in keep_columns]
    cols = list(dict.fromkeys(c for c in cols if c))
    if not cols:
        raise ConfigError("--keep-columns is empty; name the input columns to copy, e.g. --keep-columns id,review")
    clash = [c for c in cols if c in added]
    if clash:
        raise ConfigError(f"--keep-columns '{clash[0]}' has the name of a column predict writes ({', '.join(added)}); "
                          "rename that column in the input or leave it out")
    return cols


def _kept_cells(table: Any, keep: list[str], input_path: str) -> dict[str, list[str]]:
    """The kept columns of the input table, as CSV cell texts."""
    src = "stdin" if input_path == "-" else f"input file '{input_path}'"
    if table is None:
        hint = "pass --format csv, tsv or jsonl for a table on stdin" if input_path == "-" else \
            "use a CSV, TSV, JSONL or Parquet file, or pass --format if it is one"
        raise DataError(f"--keep-columns needs a table input, but {src} is read as plain text (one text per line); {hint}")
    columns = [str(c) for c in table.columns]
    for c in keep:
        if c not in columns:
            shown = ", ".join(columns[:20]) + (f", ... ({len(columns)} in all)" if len(columns) > 20 else "")
            raise DataError(f"--keep-columns: column '{c}' not found in {src}; available columns: {shown}")
    return {c: [_cell_text(v) for v in table.iloc[:, columns.index(c)].tolist()] for c in keep}


def _cell_text(v: Any) -> str:
    """A cell as it should read in the output CSV: missing -> "", nested JSON values as JSON."""
    if hasattr(v, "tolist"):  # numpy scalars and arrays (Parquet list columns)
        v = v.tolist()
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    if v is None or pd.isna(v):  # None, NaN (a key missing from some JSON records), pd.NA, NaT
        return ""
    return str(v)
