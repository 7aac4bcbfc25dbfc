"""Scoring: batched inference over token ids, metrics from logits, and `loraclf evaluate`.

`run_inference` is shared by training's evaluation, `loraclf evaluate`, `predict` and `serve`:
length-sorted batches (little padding), `inference_mode`, results back in input order.
`evaluate_run` scores a labelled file with a trained run and writes metrics.json, a confusion
matrix picture and a CSV of the misclassified rows.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .config import DataConfig
from .data import TextLabels, read_labeled
from .errors import DataError
from .io import atomic_write, write_json

PAD_MULTIPLE = 8  # pad lengths to a multiple of 8: fewer distinct shapes, aligned matrix tiles


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, pad_multiple: int = PAD_MULTIPLE) -> dict[str, torch.Tensor]:
    """Right-pad token id lists to the longest (rounded up to `pad_multiple`); return input_ids and attention_mask."""
    longest = max(len(s) for s in seqs)
    width = -(-longest // pad_multiple) * pad_multiple if pad_multiple > 1 else longest
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def autocast_context(device: torch.device, precision: str) -> Any:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def sorted_order(lengths: Sequence[int]) -> list[int]:
    """Indices from longest to shortest (stable), so each batch holds similar lengths."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def run_inference(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    pad_id: int = 0,
    indices: Sequence[int] | None = None,
) -> np.ndarray:
    """Logits (float32, shape [n, num_labels]) for `token_ids`, in input order.

    Args:
        indices: score only these rows (e.g. this process's shard); the result is in their order.
    """
    rows = list(range(len(token_ids))) if indices is None else list(indices)
    if not rows:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    order = sorted_order([len(token_ids[i]) for i in rows])
    out: np.ndarray | None = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast_context(device, precision):
            for start in range(0, len(order), batch_size):
                pos = order[start : start + batch_size]
                batch = pad_batch([token_ids[rows[p]] for p in pos], pad_id)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                logits = model(**batch).logits.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(rows), logits.shape[1]), dtype=np.float32)
                out[pos] = logits
    finally:
        model.train(was_training)
    assert out is not None
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy loss (natural log), computed stably from logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    logsumexp = np.log(np.exp(z).sum(axis=1))
    return logsumexp - z[np.arange(len(labels)), labels]


def compute_metrics(logits: np.ndarray, labels: Sequence[int], label_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, mean loss and a per-class table from logits and true labels."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y = np.asarray(labels, dtype=np.int64)
    k = logits.shape[1]
    pred = logits.argmax(axis=1)
    names = list(label_names) if label_names is not None else [str(i) for i in range(k)]
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0)),
        "loss": float(cross_entropy(logits, y).mean()),
        "n": int(len(y)),
        "per_class": {
            names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])} for i in range(k)
        },
        "confusion_matrix": confusion_matrix(y, pred, labels=list(range(k))).tolist(),
    }


# ---------------------------------------------------------------------------------------------
# `loraclf evaluate`: score a labelled file with a trained run, write metrics, picture and errors.

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
ERRORS_FILE = "errors.csv"
EVAL_DIR = "eval"


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


def evaluate_data(classifier: Any, data: TextLabels, source: str = "") -> Evaluation:
    """Score labelled texts with a `loraclf.predict.Classifier`.

    Args:
        classifier: a loaded Classifier (its label set indexes `data.labels`).
        data: texts and label ids.
        source: where the data came from (kept for the report).

    Returns:
        The Evaluation: logits in input order and `compute_metrics` over them.
    """
    labels = np.asarray(data.labels if data.labels is not None else [], dtype=np.int64)
    logits = classifier.logits(data.texts)
    names = list(classifier.label_names)
    return Evaluation(source, list(data.texts), labels, logits, names, compute_metrics(logits, labels, names))


def default_eval_dir(run_dir: str | Path, data_path: str) -> Path:
    """RUN_DIR/eval/<data file stem> ("stdin" for standard input)."""
    stem = "stdin" if data_path == "-" else Path(data_path).stem or "data"
    return Path(run_dir) / EVAL_DIR / stem


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
    device: str | None = None,
    precision: str = "auto",
    batch_size: int | None = None,
) -> tuple[Evaluation, dict[str, Path]]:
    """Evaluate a trained run on a labelled file and write the results.

    The data is read (and checked) before the model loads, so bad input fails fast.

    Args:
        run_dir: directory written by `loraclf train`.
        data_path: labelled CSV/TSV/JSONL/Parquet/AG News file ("-": stdin with an explicit format).
        out_dir: where to write (default RUN_DIR/eval/<data file stem>).
        format, text_columns, label_column: override the run's data settings for this file.
        device, precision, batch_size: inference settings.

    Returns:
        (the Evaluation, the paths written).

    Raises:
        ConfigError: unknown device or precision.
        CheckpointError: `run_dir` is not a finished run.
        DataError: the file is missing, unreadable, empty, not UTF-8, lacks a column or has unknown labels;
            `out_dir` is a file.
    """
    from .model import check_run_dir, read_label_names, read_run_config
    from .predict import Classifier, check_inference_options

    check_inference_options(device, precision)
    run_dir = check_run_dir(run_dir)
    out = Path(out_dir) if out_dir is not None else default_eval_dir(run_dir, data_path)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out '{out}' is a file; give a directory for metrics.json, {CONFUSION_FILE} and {ERRORS_FILE}")
    data_cfg = data_config_for(read_run_config(run_dir).data, format, text_columns, label_column)
    data = read_labeled(data_path, data_cfg, read_label_names(run_dir))
    clf = Classifier.from_run_dir(run_dir, device=device, precision=precision, batch_size=batch_size)
    ev = evaluate_data(clf, data, data_path)
    extra = {"run_dir": str(run_dir), "precision": clf.run.precision, "device": str(clf.run.device)}
    return ev, write_evaluation(ev, out, extra)


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text summary: accuracy, macro-F1, loss, then one line per class."""
    names = list(metrics["per_class"])
    width = max([len(n) for n in names] + [5])
    lines = [
        f"accuracy   {metrics['accuracy']:.4f}",
        f"macro_f1   {metrics['macro_f1']:.4f}",
        f"loss       {metrics['loss']:.4f}",
        f"n          {metrics['n']}",
        "",
        f"{'class':{width}s}  precision  recall      f1  support",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:{width}s}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:6.4f}  {m['support']:7d}")
    return "\n".join(lines)
