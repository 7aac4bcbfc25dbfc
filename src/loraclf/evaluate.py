"""`loraclf evaluate`: score a labelled file with a trained run and write metrics.json, a confusion
matrix picture and a CSV of the misclassified rows (into RUN/eval/<data file stem> by default).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data import TextLabels, data_config_for, read_labeled
from .errors import DataError
from .backends import load_classifier, open_model_dir
from .config.inference import InferenceSettings
from .inference import TextClassifier
from .io import atomic_write, os_error_reason, write_json
from .metrics import compute_metrics, softmax
from .rundir import METRICS_FILE

CONFUSION_FILE = "confusion_matrix.png"
ERRORS_FILE = "errors.csv"


@dataclass
class Evaluation:
    """A labelled data set scored by a classifier: inputs, logits and the metrics they give."""

    source: str  # the data file ("-" for stdin)
    texts: list[str]
    labels: np.ndarray  # int64 [n]
    logits: np.ndarray  # float32 [n, k]
    label_names: list[str]
    metrics: dict[str, Any]

    @property
    def probabilities(self) -> np.ndarray:
        return softmax(self.logits)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def errors(self) -> list[dict[str, Any]]:
        """Misclassified rows in file order: row (0-based), text, true, predicted, confidence."""
        probs = self.probabilities
        pred = self.predictions
        return [
            {
                "row": int(i),
                "text": self.texts[i],
                "true": self.label_names[self.labels[i]],
                "predicted": self.label_names[pred[i]],
                "confidence": float(probs[i, pred[i]]),
            }
            for i in np.flatnonzero(pred != self.labels)
        ]


def evaluate_data(classifier: TextClassifier, data: TextLabels, source: str = "") -> Evaluation:
    """Score labelled texts with a Classifier.

    Args:
        classifier: a loaded Classifier or OnnxClassifier (its label set indexes `data.labels`).
        data: texts and label ids.
        source: where the data came from (kept for the report).

    Returns:
        The Evaluation: logits in input order and `compute_metrics` over them.
    """
    labels = np.asarray(data.labels if data.labels is not None else [], dtype=np.int64)
    logits = classifier.logits(data.texts)
    names = list(classifier.label_names)
    return Evaluation(source, list(data.texts), labels, logits, names, compute_metrics(logits, labels, names))


def errors_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The misclassified rows as CSV text (header: row,text,true,predicted,confidence)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["row", "text", "true", "predicted", "confidence"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "confidence": f"{r['confidence']:.6f}"})
    return buf.getvalue()


def write_evaluation(ev: Evaluation, out_dir: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write metrics.json, confusion_matrix.png and errors.csv into `out_dir`.

    Everything is rendered in memory first and each file is written atomically, so a failure
    leaves no half-written file (and other files already in `out_dir` are left alone).

    Returns:
        {"metrics": path, "confusion_matrix": path, "errors": path}.
    """
    from .plots import confusion_matrix_png, write_png

    out_dir = Path(out_dir)
    errors = ev.errors()
    metrics = {**ev.metrics, "label_names": ev.label_names, "data": ev.source, "n_errors": len(errors), **(extra or {})}
    png = confusion_matrix_png(ev.metrics["confusion_matrix"], ev.label_names, title=f"Confusion matrix: {Path(ev.source).name or 'stdin'}")
    table = errors_csv(errors)
    paths = {"metrics": out_dir / METRICS_FILE, "confusion_matrix": out_dir / CONFUSION_FILE, "errors": out_dir / ERRORS_FILE}
    write_png(paths["confusion_matrix"], png)
    with atomic_write(paths["errors"]) as f:
        f.write(table)
    write_json(paths["metrics"], metrics)  # last: its presence means the evaluation is complete
    return paths


def evaluate_run(
    run_dir: str | Path,
    data_path: str,
    out_dir: str | Path | None = None,
    *,
    format: str | None = None,
    text_columns: Sequence[str] | str | None = None,
    label_column: str | None = None,
    settings: InferenceSettings | None = None,
) -> tuple[Evaluation, dict[str, Path]]:
    """Evaluate a trained run on a labelled file and write the results.

    The data is read (and checked) before the model loads, so bad input fails fast.

    Args:
        run_dir: directory written by `loraclf train`.
        data_path: labelled CSV/TSV/JSONL/Parquet/AG News file ("-": stdin with an explicit format).
        out_dir: where to write (default RUN_DIR/eval/<data file stem>).
        format, text_columns, label_column: override the run's data settings for this file.
        settings: how the model runs (device, precision, batch size, backend, int8, compile; default:
            InferenceSettings()).

    Returns:
        (the Evaluation, the paths written).

    Raises:
        CheckpointError: `run_dir` is not a finished run (or, for onnx, an ONNX export).
        ModelError: onnx only: onnxruntime missing or a model that does not load.
        DataError: the file is missing, unreadable, empty, not UTF-8, lacks a column or has unknown labels;
            `out_dir` is a file, lies under a file or cannot be written.
    """
    settings = settings or InferenceSettings()
    run = open_model_dir(run_dir, settings.backend, settings.int8)
    out = Path(out_dir) if out_dir is not None else run.eval_dir(data_path)
    _check_out_dir(out, given=out_dir is not None)
    data_cfg = data_config_for(run.read_config().data, format, text_columns, label_column)
    data = read_labeled(data_path, data_cfg, run.label_names())
    clf = load_classifier(run, settings)
    ev = evaluate_data(clf, data, data_path)
    extra = {"run_dir": str(run.path), "backend": settings.backend, "precision": clf.precision, "device": str(clf.device)}
    try:
        return ev, write_evaluation(ev, out, extra)
    except OSError as e:
        raise DataError(f"cannot write the evaluation into '{out}' ({os_error_reason(e)}); pass --out with a directory you can write to") from e



def _check_out_dir(out: Path, given: bool = True) -> None:
    """Refuse an output directory that cannot be created or written, before any work is done.

    Args:
        out: the directory evaluate writes into (it may not exist yet).
        given: whether the user named it with --out (else it is the run's eval directory).

    Raises:
        DataError: `out` is a file, lies under a file, or it (or the directory it would be
            created in) is not writable.
    """
    name = f"--out '{out}'" if given else f"the evaluation directory '{out}'"
    fix = "choose another --out" if given else "pass --out with a directory you can write to"
    try:
        existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
        if existing == out and not out.is_dir():
            raise DataError(f"{name} is a file; give a directory for metrics.json, {CONFUSION_FILE} and {ERRORS_FILE}")
        if not existing.is_dir():
            raise DataError(f"{name} lies under '{existing}', which is a file; {fix}")
        if not os.access(existing, os.W_OK | os.X_OK):
            where = "is" if existing == out else f"would be created in '{existing}', which is"
            raise DataError(f"{name} {where} not writable; {fix}")
    except OSError as e:  # e.g. a directory on the way that may not be searched
        raise DataError(f"cannot use {name} ({os_error_reason(e)}); {fix}") from e
