"""Pictures of a run: learning curves from its log.jsonl, and a confusion matrix with class names.

Every function renders to PNG bytes in memory first (matplotlib's Agg backend, no display needed),
so a caller can embed them in a page or write them with `loraclf.io.atomic_write` in one step: a
failure while drawing never leaves a half-written file.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from .errors import RunDirError
from .io import atomic_write
from .rundir import CURVES_FILE, RunDir

DPI = 110  # ~1000 px wide figures: sharp in a report, small as base64 (tens of kB)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: servers and CI have no display
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)  # pyplot keeps every figure alive until closed
    return buf.getvalue()


def learning_curves_png(train_rows: Sequence[dict[str, Any]], eval_rows: Sequence[dict[str, Any]], title: str = "") -> bytes:
    """Two panels against optimizer steps: train/val loss, and val accuracy (and macro-F1).

    Args:
        train_rows: rows with `step` and `train_loss`.
        eval_rows: rows with `step`, `val_loss`, `val_accuracy` (and optionally `val_macro_f1`).
        title: figure title (e.g. the run name).

    Returns:
        The figure as PNG bytes.
    """
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train_rows:
        ax_loss.plot([r["step"] for r in train_rows], [r["train_loss"] for r in train_rows], label="train loss", color="tab:blue", alpha=0.8)
    val = [r for r in eval_rows if "val_loss" in r]
    if val:
        ax_loss.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss", color="tab:orange")
    ax_loss.set(xlabel="step", ylabel="cross-entropy loss", title="Loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    acc = [r for r in eval_rows if "val_accuracy" in r]
    if acc:
        ax_acc.plot([r["step"] for r in acc], [r["val_accuracy"] for r in acc], "o-", label="val accuracy", color="tab:green")
        f1 = [r for r in acc if "val_macro_f1" in r]
        if f1:
            ax_acc.plot([r["step"] for r in f1], [r["val_macro_f1"] for r in f1], "s--", label="val macro-F1", color="tab:purple", alpha=0.7)
        ax_acc.legend()
    else:
        ax_acc.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_acc.transAxes)
    ax_acc.set(xlabel="step", ylabel="score", title="Validation")
    ax_acc.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def confusion_matrix_png(matrix: Sequence[Sequence[int]], label_names: Sequence[str], title: str = "") -> bytes:
    """A confusion matrix (rows: true class, columns: predicted) with counts and class names.

    Args:
        matrix: k x k counts, as `compute_metrics` returns them.
        label_names: the k class names, in id order.
        title: figure title.

    Returns:
        The figure as PNG bytes.
    """
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    k = len(label_names)
    side = max(4.0, 0.7 * k + 2.5)  # room for the class names as k grows
    fig, ax = plt.subplots(figsize=(side, side))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(label_names)).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d"
    )
    ax.set_title(title or "Confusion matrix")
    fig.tight_layout()
    return _png(fig)


def write_png(path: str | Path, png: bytes) -> Path:
    """Write PNG bytes atomically; return the path."""
    with atomic_write(path, "wb") as f:
        f.write(png)
    return Path(path)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw a run's learning curves to `out` (default RUN_DIR/learning_curves.png).

    Raises:
        RunDirError: the directory has no usable log.jsonl, or `out` is a directory.
    """
    train_rows, eval_rows = RunDir(run_dir).read_log()
    if out is not None and Path(out).is_dir():
        raise RunDirError(f"--out '{out}' is a directory; give a file name such as {Path(out) / CURVES_FILE}")
    png = learning_curves_png(train_rows, eval_rows, title=Path(run_dir).resolve().name)
    return write_png(Path(out) if out else Path(run_dir) / CURVES_FILE, png)
