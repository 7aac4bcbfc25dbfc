"""Scores from logits: softmax, per-example loss, accuracy / macro-F1 / per-class tables, and a text summary."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


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


class ScoresFromLogits:
    """Probabilities, ids, names and {"label", "id", "score"} rows from a classifier's `logits(texts)`.

    Shared by the PyTorch and the ONNX Runtime classifiers, which differ only in how they compute logits.
    """

    label_names: list[str]

    def logits(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - provided by the classifier
        raise NotImplementedError

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
