"""Inference on new text: load a run directory once, then classify lists of strings.

    from loraclf.predict import Classifier
    clf = Classifier.from_run_dir("runs/default")        # loads base model + adapter once
    clf.predict(["Stocks rally as rates fall"])            # -> ["Business"]
    clf.predict_ids(["..."])                               # -> [2]
    clf.predict_proba(["..."])                             # -> array [n, num_labels], rows sum to 1
    clf.classify(["..."])                                  # -> [{"label": "Business", "id": 2, "score": 0.97}]

Texts longer than the run's model.max_length are truncated, never dropped; empty strings are
classified like any other text, so outputs always line up with inputs. `predict_file` is the
`loraclf predict` command: a file (or stdin) in, a submission-style CSV out, written atomically.
"""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import ConfigError, DataError
from .evaluate import data_config_for, run_inference, softmax
from .io import atomic_write
from .model import LoadedRun, check_run_dir, load_run, read_run_config


class Classifier:
    """A trained run ready to classify text; texts longer than model.max_length are truncated, not dropped."""

    def __init__(self, run: LoadedRun, batch_size: int | None = None) -> None:
        self.run = run
        self.batch_size = batch_size or max(run.config.train.eval_batch_size, 64)
        self.max_length = run.config.model.max_length
        tok = run.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | Path,
        device: str | None = None,
        precision: str = "auto",
        batch_size: int | None = None,
        base_model: torch.nn.Module | None = None,
    ) -> "Classifier":
        """Load a trained run once for repeated predictions.

        Args:
            run_dir: directory written by `loraclf train` (or `loraclf export` without --merged).
            device: "cpu", "cuda", ... (default: a GPU when present).
            precision: "auto", "fp32", "bf16" or "fp16".
            batch_size: texts per forward pass (default: max(train.eval_batch_size, 64)).
            base_model: an already loaded base model to attach the adapter to.

        Raises:
            ConfigError: unknown device or precision, or a GPU asked for where there is none.
            CheckpointError: the directory is not a finished run.
            ModelError: the base model or tokenizer cannot be loaded.
        """
        check_inference_options(device, precision)
        return cls(load_run(run_dir, device=device, precision=precision, base_model=base_model), batch_size)

    @property
    def label_names(self) -> list[str]:
        return self.run.label_names

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to model.max_length."""
        _check_texts(texts)
        if not texts:
            return []
        return self.run.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)["input_ids"]

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits [n, num_labels], float32, in input order."""
        ids = self.tokenize(texts)
        if not ids:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        return run_inference(self.run.model, ids, self.batch_size, self.run.device, self.run.precision, self.pad_id)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [n, num_labels], in input order."""
        return softmax(self.logits(texts))

    def predict_ids(self, texts: Sequence[str]) -> list[int]:
        """Class ids, in input order."""
        return self.logits(texts).argmax(axis=1).tolist() if len(texts) else []

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Label names, in input order."""
        return [self.label_names[i] for i in self.predict_ids(texts)]

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One {"label", "id", "score"} per text (score: the predicted class's probability)."""
        probs = self.predict_proba(texts)
        ids = probs.argmax(axis=1) if len(probs) else []
        return [{"label": self.label_names[i], "id": int(i), "score": float(probs[n, i])} for n, i in enumerate(ids)]


def check_inference_options(device: str | None, precision: str) -> None:
    """Raise ConfigError for a device or precision inference cannot use (one line, before any loading)."""
    from .config import PRECISIONS

    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is not a precision; use one of {', '.join(PRECISIONS)}")
    if device is None or device == "auto":
        return
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r}: no CUDA GPU is available here; use --device cpu")


def _check_texts(texts: Sequence[str]) -> None:
    # A bare string is a Sequence[str] too: it would be classified one character at a time.
    if isinstance(texts, (str, bytes)):
        raise TypeError("pass a list of texts, e.g. clf.predict([text]), not a single string")


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

    Returns:
        The number of rows predicted.

    Raises:
        ConfigError: unknown device or precision.
        CheckpointError: `run_dir` is not a finished run.
        DataError: the input is missing, empty, not UTF-8, or lacks a text column; the output is a directory.
    """
    from .data import read_texts

    check_inference_options(device, precision)
    run_dir = check_run_dir(run_dir)
    if output_path != "-" and Path(output_path).is_dir():
        raise DataError(f"--output '{output_path}' is a directory; give a file name such as {Path(output_path) / 'submission.csv'}")
    # The format is detected from the input unless given: new text rarely comes in the training
    # file's format (stdin is plain text); the text columns are the run's unless given.
    texts = read_texts(input_path, data_config_for(read_run_config(run_dir).data, format or "auto", text_columns))
    clf = Classifier.from_run_dir(run_dir, device=device, precision=precision, batch_size=batch_size)
    table = predictions_csv(clf.predict_proba(texts), clf.label_names, label_names, probabilities)
    if output_path == "-":
        sys.stdout.write(table)
        sys.stdout.flush()
    else:
        with atomic_write(output_path) as f:
            f.write(table)
    return len(texts)
