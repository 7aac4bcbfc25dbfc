"""Inference on new text: load a run directory once, then classify lists of strings.

    from loraclf.predict import Classifier
    clf = Classifier.from_run_dir("runs/default")
    clf.predict(["Stocks rally as rates fall"])        # -> ["Business"]
    clf.predict_proba(["..."])                           # -> array [n, num_labels]
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .evaluate import run_inference, softmax
from .model import LoadedRun, load_run


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
        return cls(load_run(run_dir, device=device, precision=precision, base_model=base_model), batch_size)

    @property
    def label_names(self) -> list[str]:
        return self.run.label_names

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
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
        return self.logits(texts).argmax(axis=1).tolist() if len(texts) else []

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Label names, in input order."""
        return [self.label_names[i] for i in self.predict_ids(texts)]
