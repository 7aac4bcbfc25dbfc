"""The optimizer and learning-rate schedule of a run: pure helpers, testable without a model."""
from __future__ import annotations

import math
from typing import Any

import torch


def lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine to zero


def warmup_steps(train_cfg: Any, total_steps: int) -> int:
    """train.warmup_steps, or else train.warmup_ratio of the run's steps; never more than the run."""
    return min(train_cfg.warmup_steps or int(train_cfg.warmup_ratio * total_steps), total_steps)


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float = 1.0, *, head_lr: float | None = None,
                 lora_plus_ratio: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups of the trainable weights, each with its own peak lr and weight decay.

    - no weight decay on biases and LayerNorm weights (1-D tensors);
    - the head and other modules_to_save (trained in full from a fresh start) at `head_lr` (default `lr`);
    - LoRA+: the adapters' B matrices at `lora_plus_ratio` x `lr`, A matrices at `lr`. (peft's
      create_loraplus_optimizer also raises every bias and LayerNorm weight to B's rate and has no head
      group, so the rule is written out here: B weights only.)
    Empty groups are left out. The schedule scales every group's lr by the same factor.
    """
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "modules_to_save" in name:
            group_lr = head_lr or lr
        elif "lora_B" in name:
            group_lr = lr * lora_plus_ratio
        else:
            group_lr = lr
        groups.setdefault((group_lr, 0.0 if p.ndim < 2 else weight_decay), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def make_optimizer(model: torch.nn.Module, train_cfg: Any, total_steps: int, fused: bool = False) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable weights and its warmup-then-decay schedule (stepped once per optimizer step).
    fused: one kernel for all parameters (CUDA; the parameters must already be on the GPU)."""
    groups = param_groups(model, train_cfg.weight_decay, train_cfg.lr, head_lr=train_cfg.head_lr,
                          lora_plus_ratio=train_cfg.lora_plus_ratio)
    optimizer = torch.optim.AdamW(groups, lr=train_cfg.lr, fused=fused or None)
    warmup = warmup_steps(train_cfg, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total_steps, train_cfg.scheduler)
    )
    return optimizer, scheduler
