"""What a training run tells the person watching it, before the first step."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .optim import warmup_steps

if TYPE_CHECKING:
    from .recipe import TrainRecipe

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
                f"({r.trainable_params / r.total_params:.1%}) | LoRA r={cfg.lora.r} alpha={cfg.lora.alpha} on {','.join(cfg.lora.target_modules)}")
    execution = {"compiled": "compiled, CUDA graphs" if r.accelerator.device.type == "cuda" and r.world == 1 else "compiled",
                 "cudagraphs": "eager step captured as CUDA graphs", "eager": "eager"}[r.execution]
    rows.append(f"device    {r.accelerator.device} | {r.precision} | {r.world} process{'es' if r.world > 1 else ''} | "
                + (f"{execution} (model.compile={cfg.model.compile}; {_widths(r.buckets)})"
                   if r.static_shapes else f"{execution} (model.compile={cfg.model.compile})"))
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
