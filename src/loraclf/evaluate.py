"""Scoring: batched inference over token ids, and metrics from logits.

`run_inference` is shared by training's evaluation, `loraclf evaluate`, `predict` and `serve`:
length-sorted batches (little padding), `inference_mode`, results back in input order.
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch

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
