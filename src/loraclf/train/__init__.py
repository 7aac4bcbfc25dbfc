"""Training: the recipe (`recipe.py`), its optimizer and schedule (`optim.py`), checkpoints (`checkpoint.py`)
and what a run prints (`console.py`).

`train(cfg, run_dir)` is the one-call API; `resume(run_dir)` continues a run from its checkpoint.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from ..batching import TokenCache
from ..config import Config
from ..data import Splits
from ..io import DirLock, check_output_dir, disk_full_as_error
from .checkpoint import LoopState, load_checkpoint, save_checkpoint
from .optim import lr_factor, param_groups
from .recipe import EvalCallback, TrainRecipe

__all__ = ["EvalCallback", "LoopState", "TrainRecipe", "load_checkpoint", "lr_factor", "param_groups", "resume",
           "save_checkpoint", "train"]


def train(cfg: Config, run_dir: str | Path | None = None, *, overwrite: bool = False, on_eval: EvalCallback | None = None,
          splits: Splits | None = None, token_cache: TokenCache | None = None, console: bool = True) -> dict[str, Any]:
    """Train a LoRA classifier as `cfg` says and write the run directory.

    Args:
        cfg: validated config.
        run_dir: output directory (default `cfg.run_dir()`).
        overwrite: replace an existing run directory.
        on_eval: called as on_eval(global_step, val_metrics) after every evaluation; may raise to stop.
        splits: already loaded data (tune loads it once for all trials).
        token_cache: token ids to reuse across runs over the same texts (tune's trials share one).
        console: print the run's description and one line per evaluation to stderr.
    Returns:
        The metrics written to metrics.json.
    Raises:
        LoraclfError: bad data, model, config or run directory (nothing is written), or another process is
            writing the run directory.
    """
    recipe = TrainRecipe(cfg, run_dir, overwrite=overwrite, on_eval=on_eval, splits=splits, token_cache=token_cache,
                         console=console)
    with run_lock(recipe.run.path), disk_full_as_error(recipe.run.path):
        recipe.setup()
        recipe.fit()
        return recipe.finish()


def run_lock(run_dir: str | Path, option: str = "--out") -> contextlib.AbstractContextManager:
    """The run directory's lock (`DirLock`), held for the whole run: a second `train` (or `--resume`) of the same
    directory, or of the `--overwrite` replacement beside it, is refused with one line. Only rank 0 of a
    multi-process run takes it: the other ranks are part of the same run."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    check_output_dir(run_dir, option)  # a path under a file, or where one cannot write: one line, before the lock file
    return DirLock(run_dir)


def resume(run_dir: str | Path, on_eval: EvalCallback | None = None) -> dict[str, Any]:
    """Continue the run in `run_dir` from its checkpoint (its saved config wins) and finish it.

    Raises:
        RunDirError: no such directory, the run already finished, or another process is writing it.
        CheckpointError: no readable checkpoint.
    """
    with run_lock(run_dir, "--resume"), disk_full_as_error(run_dir):
        recipe = TrainRecipe.for_resume(run_dir, on_eval=on_eval)
        recipe.setup()
        recipe.resume()
        recipe.fit()
        return recipe.finish()
