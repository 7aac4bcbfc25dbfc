"""What a checkpoint carries and how it is written and read.

One file, replaced atomically, holding only tensors and plain values so it loads with
`torch.load(weights_only=True)`: a crafted checkpoint cannot run code on `--resume`.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..errors import CheckpointError
from ..io import atomic_write
from ..model import trainable_state_dict
from ..rundir import CHECKPOINT_FILE, CONFIG_FILE, LABELS_FILE, RunDir

DATA_FILES = ("train_file", "validation_file", "test_file")
RUN_FILES = (CONFIG_FILE, LABELS_FILE)  # what loading the finished run reads besides the adapter it writes last

FORMAT = 2  # 2: RNG state as plain lists (format 1 pickled numpy arrays and needed weights_only=False)


@dataclass
class LoopState:
    """The training loop's position and bookkeeping; everything here survives a resume."""

    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    global_step: int = 0  # optimizer steps taken
    best_val_accuracy: float = -1.0
    best_step: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    evals_since_best: int = 0
    samples_seen: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0  # wall time of the loop, evaluations included
    eval_seconds: float = 0.0  # evaluations alone
    step_seconds: float = 0.0  # training steps alone (forward, backward, optimizer): what throughput counts
    stopped_early: bool = False
    running_loss: float = 0.0  # sum of the micro-batch losses since the last logged step
    running_count: int = 0  # and how many there were


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors and plain lists."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def file_fingerprint(path: str | Any) -> dict[str, Any] | None:
    """{"size", "sha256"} of a file's bytes, or None when it is missing (a hub dataset has no file)."""
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = f.tell()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return {"size": size, "sha256": digest}


def data_fingerprints(cfg: Config) -> dict[str, Any]:
    """The local data files a run reads, by config key: a resume must see the same bytes, or its schedule,
    validation split and label set would silently change (or the head no longer fit)."""
    return {f"data.{key}": {"path": path, **(file_fingerprint(path) or {})}
            for key in DATA_FILES if (path := getattr(cfg.data, key))}


def check_fingerprints(run: RunDir, ckpt: dict[str, Any]) -> None:
    """Raise CheckpointError naming the first data or run file that differs from when the checkpoint was written.
    Checkpoints from before fingerprints were recorded are not checked."""
    prints = ckpt.get("fingerprints") or {}
    for key, was in (prints.get("data") or {}).items():
        now = file_fingerprint(was["path"])
        if now is None:
            raise CheckpointError(f"{key} '{was['path']}' of run '{run.path}' is missing; put the file back to resume, "
                                  "or start a new run (--overwrite)")
        if now != {k: was.get(k) for k in now}:
            raise CheckpointError(f"{key} '{was['path']}' changed since run '{run.path}' started ({was.get('size')} -> "
                                  f"{now['size']} bytes, other sha256); restore that file to resume, or train a new run "
                                  "on the new data (--overwrite)")
    for name, was in (prints.get("run") or {}).items():
        if file_fingerprint(run.path / name) != was:
            raise CheckpointError(f"'{run.path / name}' was changed or removed since the last checkpoint, and the run "
                                  "would not load with it; restore it to resume, or start a new run (--overwrite)")


def save_checkpoint(run: RunDir, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: LoopState, cfg: Config,
                    data_prints: dict[str, Any] | None = None) -> None:
    """Everything needed to continue, in one file replaced atomically (the old one stays until then), with
    fingerprints of the data files (`data_prints`, taken when the run started) and of the run's own files."""
    run_prints = {name: file_fingerprint(run.path / name) for name in RUN_FILES}
    payload = {
        "format": FORMAT,
        "weights": trainable_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "loop": dict(vars(state)),
        "rng": rng_state(),
        "config": cfg.to_dict(),
        "fingerprints": {"data": data_prints or {}, "run": run_prints},
    }
    with atomic_write(run.checkpoint_path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(run: RunDir) -> dict[str, Any]:
    """The checkpoint's contents, loaded without running any code it might hold.

    Raises:
        CheckpointError: no checkpoint, an unreadable or foreign one, or a missing key.
    """
    path = run.checkpoint_path
    if not path.is_file():
        raise CheckpointError(f"'{run.path}' has no {CHECKPOINT_FILE} to resume from (it stopped before its first "
                              "checkpoint); run the same `loraclf train` command without --resume to start it again")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for foreign objects, EOFError/RuntimeError for a damaged file
        raise CheckpointError(f"'{path}' cannot be read ({type(e).__name__}); it is damaged, from an older loraclf, "
                              "or not a loraclf checkpoint: start a new run") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"'{path}' is not a loraclf checkpoint; start a new run")
    for key in ("weights", "optimizer", "scheduler", "loop", "rng", "config"):
        if key not in ckpt:
            raise CheckpointError(f"'{path}' lacks the key '{key}'; wrong checkpoint? start a new run")
    return ckpt
