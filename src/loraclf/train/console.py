"""What a training run reports: the block before the first step, the progress bar, and its summary in metrics.json."""
from __future__ import annotations

import resource
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..architectures import trained_modules
from .optim import warmup_steps

if TYPE_CHECKING:
    from .recipe import TrainRecipe

# Seconds between progress-bar refreshes when stderr is not a terminal (a log file, nohup, CI): tqdm's 0.1 s wrote
# ~110 bytes a step there (98 KB for the README's 882-step run, on one line of carriage returns).
PROGRESS_LOG_SECONDS = 30.0

MIN_VAL_PER_CLASS = 20  # below this, validation accuracy moves in steps of several points: warn


def _widths(widths: list[int]) -> str:
    """The compiled step's padded widths, short: the buckets listed, or a range of multiples of 8."""
    if len(widths) <= 8:
        return "length buckets " + ",".join(map(str, widths))
    return f"widths {widths[0]}-{widths[-1]} in steps of 8"


def describe_run(r: "TrainRecipe") -> str:
    """The block printed before training: data per split and class, model, device and precision, schedule."""
    cfg, sp = r.cfg, r.splits
    assert sp is not None
    val_source = "--validation-file" if cfg.data.validation_file else f"{cfg.data.val_fraction:.0%} held out, seed {cfg.train.seed}"
    rows = [f"data      train {len(sp.train.texts):,} rows | validation {len(sp.validation.texts):,} ({val_source})"
            + (f" | test {len(sp.test.texts):,}" if sp.test is not None else "")]
    counts = np.bincount(np.asarray(sp.train.labels or [], dtype=np.int64), minlength=len(r.label_names))
    rows.append(f"classes   {len(r.label_names)}: " + " | ".join(f"{n} {c:,}" for n, c in zip(r.label_names, counts)) + " (train)")
    rows.append(f"model     {cfg.model.name} | {r.total_params / 1e6:.1f}M params, {r.trainable_params:,} trainable "
                f"({r.trainable_params / r.total_params:.1%}) | LoRA r={cfg.lora.r} alpha={cfg.lora.alpha} on {','.join(cfg.lora.target_modules)}"
                + f" | trains {','.join(trained_modules(r.model.get_base_model(), cfg.lora.modules_to_save))}")
    execution = {"compiled": "compiled, CUDA graphs" if r.accelerator.device.type == "cuda" and r.world == 1 else "compiled",
                 "cudagraphs": "eager step captured as CUDA graphs", "eager": "eager"}[r.execution]
    rows.append(f"device    {r.accelerator.device} | {r.precision} | {r.world} process{'es' if r.world > 1 else ''} | "
                + (f"{execution} (model.compile={cfg.model.compile}; {_widths(r.buckets)})"
                   if r.static_shapes else f"{execution} (model.compile={cfg.model.compile})")
                + f" | attention {cfg.model.attn_implementation}")
    t = cfg.train
    rows.append(f"schedule  {t.epochs} epoch{'s' if t.epochs > 1 else ''} x {r.steps_per_epoch} steps"
                + (f", capped at {t.max_steps}" if t.max_steps else "") + f" = {r.total_steps} steps | batch {t.batch_size} x accum {t.grad_accum} | "
                f"lr {t.lr:g} {t.scheduler}, warmup {warmup_steps(t, r.total_steps)}")
    if r.replaces is not None:
        rows.append(f"run dir   {r.replaces.path} (--overwrite: the new run trains in {r.run.path} and replaces it when it finishes)")
    else:
        rows.append(f"run dir   {r.run.path}")
    rows.extend(f"warning   {w}" for w in sp.warnings)
    val_counts = np.bincount(np.asarray(sp.validation.labels or [], dtype=np.int64), minlength=len(r.label_names))
    fewest = int(val_counts.min()) if len(val_counts) else 0
    if fewest < MIN_VAL_PER_CLASS:
        name = r.label_names[int(val_counts.argmin())]
        rows.append(f"warning   the validation split has {len(sp.validation.texts)} rows, only {fewest} of class '{name}': "
                    f"its accuracy is noise; add rows, raise data.val_fraction or pass --validation-file")
    return "\n".join(rows)


def progress_bar(total: int, initial: int) -> Any:
    """tqdm's bar on stderr; in a log file (not a terminal) redrawn at most every PROGRESS_LOG_SECONDS."""
    from tqdm.auto import tqdm

    # maxinterval too: tqdm's monitor thread otherwise redraws a bar idle for its 10 s default
    interval = {} if sys.stderr.isatty() else {"mininterval": PROGRESS_LOG_SECONDS, "maxinterval": PROGRESS_LOG_SECONDS}
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr, **interval)


def say(text: str) -> None:
    from tqdm.auto import tqdm

    for line in text.splitlines():
        tqdm.write(line, file=sys.stderr)  # above a progress bar, not through it


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak resident memory, base model included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_summary(r: "TrainRecipe") -> dict[str, Any]:
    """What metrics.json records about the run itself, beside its scores: steps, time, speed, memory, execution."""
    step_seconds = max(r.state.step_seconds, 1e-9)
    n_batches = -(-len(r.train_ids) // r.cfg.train.batch_size)
    return dict(
        best_step=r.state.best_step,
        global_step=r.state.global_step,
        epochs_run=round(r.state.epoch + r.state.batch_in_epoch / max(1, n_batches), 4),
        stopped_early=r.state.stopped_early,
        trainable_params=r.trainable_params,
        total_params=r.total_params,
        trainable_share=r.trainable_params / r.total_params,
        train_seconds=r.state.train_seconds,
        step_seconds=r.state.step_seconds,
        train_samples=r.state.samples_seen,
        eval_seconds=r.state.eval_seconds,
        train_samples_per_s=r.state.samples_seen / step_seconds,
        train_tokens_per_s=r.state.tokens_seen / step_seconds,
        peak_memory_mb=peak_memory_mb(r.accelerator.device),
        precision=r.precision,
        device=str(r.accelerator.device),
        **(r.train_step.metrics() if r.train_step is not None else {"step_execution": r.execution}),
        processes=r.world,
        n_train=len(r.train_ids),
        n_validation=len(r.val_ids),
        label_names=r.label_names,
    )
