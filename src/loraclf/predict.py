"""`loraclf predict`: a file (or stdin) in, a submission-style CSV out, written atomically.

The Python API for classifying lists of strings is `loraclf.inference.Classifier`.
"""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data import read_texts, data_config_for
from .errors import DataError
from .inference import check_inference_options, load_classifier, open_model_dir
from .io import atomic_write


# ---------------------------------------------------------------------------------------------
# `loraclf predict`: a file or stdin in, a submission-style CSV out.


def predictions_csv(
    probs: np.ndarray,
    label_names: Sequence[str],
    label_as_name: bool = False,
    probabilities: bool = False,
) -> str:
    """CSV text in the study's submission layout: `ID,Label` with ID = row index, Label = class id.

    Args:
        probs: class probabilities [n, k], in input order.
        label_names: the k class names.
        label_as_name: write the class name instead of its id in Label.
        probabilities: add one `p_<class name>` column per class.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["ID", "Label"] + ([f"p_{n}" for n in label_names] if probabilities else []))
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    for i, k in enumerate(pred):
        row: list[Any] = [i, label_names[k] if label_as_name else int(k)]
        if probabilities:
            row.extend(f"{p:.6f}" for p in probs[i])
        writer.writerow(row)
    return buf.getvalue()


def predict_file(
    run_dir: str | Path,
    input_path: str,
    output_path: str = "-",
    *,
    label_names: bool = False,
    probabilities: bool = False,
    format: str | None = None,
    text_columns: Sequence[str] | str | None = None,
    device: str | None = None,
    precision: str = "auto",
    batch_size: int | None = None,
    backend: str = "torch",
    int8: bool = False,
) -> int:
    """Classify every row of a file (or stdin) and write the predictions in input order.

    The input is read and checked before the model loads; the output is written in one atomic
    step (or to stdout in one write), so a failure leaves nothing behind.

    Args:
        run_dir: directory written by `loraclf train`.
        input_path: CSV/TSV/JSONL/Parquet with the run's text columns, AG News CSV, plain text
            (one text per line), or "-" for plain text on stdin (unless `format` says otherwise).
        output_path: the CSV to write, or "-" for stdout.
        label_names, probabilities: see `predictions_csv`.
        format: the input format (default "auto": detected from the name and content).
        text_columns: the text column(s) (default: the run's data.text_columns).
        device, precision, batch_size: inference settings.
        backend: "torch", or "onnx" (ONNX Runtime on CPU; `run_dir` may then be an ONNX export,
            and a run is exported once into RUN/onnx).
        int8: the ONNX backend's quantized model.

    Returns:
        The number of rows predicted.

    Raises:
        ConfigError: unknown device, precision or backend.
        CheckpointError: `run_dir` is not a finished run (or, for onnx, an ONNX export).
        ModelError: onnx only: onnxruntime missing or a model that does not load.
        DataError: the input is missing, empty, not UTF-8, or lacks a text column; the output is a directory.
    """
    check_inference_options(device, precision, backend, int8)
    run = open_model_dir(run_dir, backend, int8)
    if output_path != "-" and Path(output_path).is_dir():
        raise DataError(f"--output '{output_path}' is a directory; give a file name such as {Path(output_path) / 'submission.csv'}")
    # The format is detected from the input unless given: new text rarely comes in the training
    # file's format (stdin is plain text); the text columns are the run's unless given.
    texts = read_texts(input_path, data_config_for(run.read_config().data, format or "auto", text_columns))
    clf = load_classifier(run, backend, device=device, precision=precision, batch_size=batch_size, int8=int8)
    write_predictions(output_path, predictions_csv(clf.predict_proba(texts), clf.label_names, label_names, probabilities))
    return len(texts)


def write_predictions(output_path: str | Path, table: str) -> None:
    """CSV text to a file (atomically) or, for "-", to stdout in one write."""
    if str(output_path) == "-":
        sys.stdout.write(table)
        sys.stdout.flush()
    else:
        with atomic_write(output_path) as f:
            f.write(table)
