"""`loraclf train`: one explicit training loop, readable top to bottom.

    validate inputs (data, tokenizer, model) -> run directory -> accelerator (devices, precision,
    processes) -> LoRA model -> optimizer + schedule -> [resume] -> epochs of length-grouped batches
    -> evaluate / checkpoint / early stop -> best adapter + metrics.

Batches are *global*: every process builds the same sequence of `train.batch_size` examples per
micro-batch from the seed and takes its own slice of each one, so a run takes the same optimizer
steps on 1 or N processes and a checkpoint resumes with any process count.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import model as M
from .config import Config
from .data import Splits, length_grouped_batches, load_splits
from .errors import CheckpointError, RunDirError
from .evaluate import autocast_context, compute_metrics, pad_batch, run_inference
from .io import atomic_dir, atomic_write, read_json, write_json, write_yaml

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
METRICS_FILE = "metrics.json"

# Called after every evaluation with (global_step, metrics); tune uses it to report and prune.
EvalCallback = Callable[[int, dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------
# Pure helpers


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


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """The global micro-batches of one epoch; identical on every process."""
    if group_by_length:
        return length_grouped_batches(lengths, batch_size, seed, epoch)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def steps_per_epoch(n_batches: int, grad_accum: int) -> int:
    return math.ceil(n_batches / grad_accum)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak resident memory, base model included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (1-D tensors)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------
# State that a checkpoint carries


@dataclass
class LoopState:
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
    eval_seconds: float = 0.0
    stopped_early: bool = False


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: LoopState, cfg: Config) -> None:
    """Everything needed to continue, in one file replaced atomically (the old one stays until then)."""
    payload = {
        "format": 1,
        "weights": M.trainable_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "loop": {k: v for k, v in vars(state).items()},
        "rng": _rng_state(),
        "config": cfg.to_dict(),
    }
    with atomic_write(run_dir / CHECKPOINT_FILE, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"'{run_dir}' has no {CHECKPOINT_FILE} to resume from; start a new run without --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        for key in ("weights", "optimizer", "scheduler", "loop", "rng", "config"):
            ckpt[key]
    except KeyError as e:
        raise CheckpointError(f"'{path}' lacks the key {e}; wrong checkpoint? start a new run") from None
    except Exception as e:
        raise CheckpointError(f"'{path}' cannot be read ({type(e).__name__}); start a new run") from None
    return ckpt


# ---------------------------------------------------------------------------------------------
# The log: one JSON object per line, rewritten atomically on resume so it never runs ahead of the checkpoint


class RunLog:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        import json

        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        with atomic_write(self.path) as f:
            f.write("".join(ln + "\n" for ln in keep))

    def write(self, **row: Any) -> None:
        if not self.enabled:
            return
        import json

        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# The run directory


def prepare_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    if resume:
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(f"run directory '{run_dir}' already exists; pass --overwrite to replace it or --resume {run_dir} to continue it")


_TOKEN_CACHE: dict[tuple, list[list[int]]] = {}


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids without padding, cached in-process: tune's trials reuse them instead of re-tokenizing."""
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), max_length, len(texts), hash(tuple(texts)))
    if key not in _TOKEN_CACHE:
        if len(_TOKEN_CACHE) >= 8:
            _TOKEN_CACHE.pop(next(iter(_TOKEN_CACHE)))
        _TOKEN_CACHE[key] = tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
    return _TOKEN_CACHE[key]


def _distributed_eval(accelerator: Any, model: torch.nn.Module, ids: list[list[int]], labels: list[int], batch: int, precision: str, pad_id: int, names: list[str]) -> dict[str, Any]:
    """Each process scores its shard; rank 0 assembles all logits so every example counts once."""
    from accelerate.utils import gather_object

    shard = list(range(accelerator.process_index, len(ids), accelerator.num_processes))
    inner = accelerator.unwrap_model(model)
    logits = run_inference(inner, ids, batch, accelerator.device, precision, pad_id, indices=shard)
    if accelerator.num_processes > 1:
        parts = gather_object([(shard, logits)])
        full = np.zeros((len(ids), logits.shape[1]), dtype=np.float32)
        for idx, lg in parts:
            full[idx] = lg
        logits = full
    return compute_metrics(logits, labels, names)


def train(
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    on_eval: EvalCallback | None = None,
    splits: Splits | None = None,
) -> dict[str, Any]:
    """Train a LoRA classifier as `cfg` says and write the run directory.

    Args:
        cfg: validated config.
        run_dir: output directory (default `cfg.run_dir()`).
        overwrite: replace an existing run directory.
        resume: continue the run in `run_dir` from its checkpoint (the saved config wins).
        on_eval: called as on_eval(global_step, val_metrics) after every evaluation; may raise to stop.
        splits: already loaded data (tune loads it once for all trials).
    Returns:
        The metrics written to metrics.json.
    Raises:
        LoraclfError: bad data, model, config or run directory (nothing is written).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir()
    ckpt = None
    if resume:
        if not run_dir.is_dir():
            raise RunDirError(f"run directory '{run_dir}' does not exist; nothing to resume")
        if (run_dir / METRICS_FILE).exists():
            raise RunDirError(f"run '{run_dir}' already finished (metrics.json exists); nothing to resume")
        ckpt = load_checkpoint(run_dir)
        from .config import config_from_dict

        cfg = config_from_dict(ckpt["config"])  # the checkpoint's config wins: same data, model, schedule
    prepare_run_dir(run_dir, overwrite, resume)

    # -- Inputs first: any bad file, column or model fails here, before the run directory exists.
    M.silence_fork_warning()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    splits = splits or load_splits(cfg.data, cfg.train.seed)
    names = splits.label_names
    tokenizer = M.load_tokenizer(cfg.model.name)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    set_seed(cfg.train.seed)  # before the model: the head's random init depends on it
    base = M.load_base_model(cfg.model, names)
    model = M.apply_lora(base, cfg.lora)
    trainable, total = M.count_parameters(model)

    device = M.resolve_device()
    precision = M.resolve_precision(cfg.model.precision, device)
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision],
        log_with=None if cfg.train.tracker == "none" else cfg.train.tracker,
        project_dir=str(run_dir),
    )
    world, rank = accelerator.num_processes, accelerator.process_index
    is_main = accelerator.is_main_process
    if cfg.train.batch_size % world:
        raise RunDirError(
            f"train.batch_size={cfg.train.batch_size} does not split over {world} processes; use a multiple of {world}"
        )

    # -- Run directory: only rank 0 writes; the others wait until it exists.
    if is_main:
        if overwrite and run_dir.exists() and not resume:
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(run_dir / M.CONFIG_FILE, cfg.to_dict())
        write_json(run_dir / M.LABELS_FILE, {"label_names": names})
    accelerator.wait_for_everyone()
    log = RunLog(run_dir / LOG_FILE, enabled=is_main)

    # -- Tokenize once; the loop only pads.
    train_ids = _tokenize(tokenizer, splits.train.texts, cfg.model.max_length)
    train_labels = list(splits.train.labels or [])
    val_ids = _tokenize(tokenizer, splits.validation.texts, cfg.model.max_length)
    lengths = [len(s) for s in train_ids]

    # -- Optimizer and schedule: the total is known once the batches per epoch are.
    n_batches = len(epoch_batches(lengths, cfg.train.batch_size, cfg.train.seed, 0, cfg.train.group_by_length))
    per_epoch = steps_per_epoch(n_batches, cfg.train.grad_accum)
    total_steps = per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    warmup = min(cfg.train.warmup_steps or int(cfg.train.warmup_ratio * total_steps), total_steps)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total_steps, cfg.train.scheduler)
    )

    state = LoopState()
    if ckpt is not None:
        M.load_trainable_state_dict(model, ckpt["weights"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = LoopState(**ckpt["loop"])
        _set_rng_state(ckpt["rng"])
        log.truncate_after(state.global_step)
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.model.compile:
        model = torch.compile(model, dynamic=True)
    if cfg.train.tracker != "none" and is_main:
        accelerator.init_trackers(cfg.name, config={"lr": cfg.train.lr, "r": cfg.lora.r, "alpha": cfg.lora.alpha})

    def evaluate_and_maybe_checkpoint(epoch_float: float) -> bool:
        """Evaluate on validation, keep the best weights, checkpoint; return True to stop early."""
        t0 = time.perf_counter()
        m = _distributed_eval(accelerator, model, val_ids, list(splits.validation.labels or []), cfg.train.eval_batch_size, precision, pad_id, names)
        state.eval_seconds += time.perf_counter() - t0
        val = {"val_accuracy": m["accuracy"], "val_loss": m["loss"], "val_macro_f1": m["macro_f1"]}
        log.write(step=state.global_step, epoch=round(epoch_float, 4), **val)
        if cfg.train.tracker != "none":
            accelerator.log(val, step=state.global_step)
        if m["accuracy"] > state.best_val_accuracy:
            state.best_val_accuracy, state.best_step, state.best_metrics = m["accuracy"], state.global_step, val
            state.best_weights = M.trainable_state_dict(accelerator.unwrap_model(model))
            state.evals_since_best = 0
        else:
            state.evals_since_best += 1
        if is_main:
            save_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler, state, cfg)
        accelerator.wait_for_everyone()
        if on_eval is not None:
            on_eval(state.global_step, dict(val, step=state.global_step, epoch=epoch_float))
        patience = cfg.train.early_stopping_patience
        return bool(patience and state.evals_since_best >= patience)

    # -- The loop.
    progress = None
    if is_main and cfg.train.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True)
    local = cfg.train.batch_size // world
    model.train()
    running_loss = torch.zeros((), device=accelerator.device)
    running_count = 0
    stop = state.global_step >= total_steps or state.stopped_early
    t_start = time.perf_counter() - state.train_seconds
    while not stop and state.epoch < cfg.train.epochs:
        batches = epoch_batches(lengths, cfg.train.batch_size, cfg.train.seed, state.epoch, cfg.train.group_by_length)
        batches = [b for b in batches if len(b) >= world]  # every process needs at least one example
        for b_idx in range(state.batch_in_epoch, len(batches)):
            global_batch = batches[b_idx]
            mine = global_batch[rank * local : (rank + 1) * local] if len(global_batch) == cfg.train.batch_size else global_batch[rank::world]
            inputs = pad_batch([train_ids[i] for i in mine], pad_id)
            inputs = {k: v.to(accelerator.device, non_blocking=True) for k, v in inputs.items()}
            targets = torch.as_tensor([train_labels[i] for i in mine], device=accelerator.device)
            micro_in_step = b_idx % cfg.train.grad_accum
            boundary = micro_in_step == cfg.train.grad_accum - 1 or b_idx == len(batches) - 1
            # In-step micro-batches skip DDP's gradient all-reduce; the boundary one syncs them all.
            sync_ctx = accelerator.no_sync(model) if not boundary else contextlib.nullcontext()
            with sync_ctx, autocast_context(accelerator.device, precision):
                logits = model(**inputs).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), targets)
                accelerator.backward(loss / cfg.train.grad_accum)
            running_loss += loss.detach()
            running_count += 1
            state.samples_seen += len(global_batch)
            state.tokens_seen += sum(len(train_ids[i]) for i in global_batch)
            state.batch_in_epoch = b_idx + 1
            if not boundary:
                continue
            if cfg.train.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            epoch_float = state.epoch + state.batch_in_epoch / len(batches)
            if progress is not None:
                progress.update(1)
            if state.global_step % cfg.train.log_every_steps == 0 or state.global_step == total_steps:
                mean_loss = (running_loss / max(1, running_count)).item()  # the only host sync, every n steps
                running_loss.zero_()
                running_count = 0
                lr = scheduler.get_last_lr()[0]
                log.write(step=state.global_step, epoch=round(epoch_float, 4), lr=lr, train_loss=mean_loss)
                if progress is not None:
                    elapsed = time.perf_counter() - t_start
                    busy = max(elapsed - state.eval_seconds, 1e-9)
                    progress.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{state.samples_seen / busy:.1f}")
                if cfg.train.tracker != "none":
                    accelerator.log({"train_loss": mean_loss, "lr": lr}, step=state.global_step)
            state.train_seconds = time.perf_counter() - t_start
            end_of_epoch = state.batch_in_epoch == len(batches)
            last_step = state.global_step >= total_steps
            eval_now = end_of_epoch or last_step or (cfg.train.eval_every_steps and state.global_step % cfg.train.eval_every_steps == 0)
            if end_of_epoch:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if eval_now:
                if evaluate_and_maybe_checkpoint(epoch_float):
                    state.stopped_early, stop = True, True
            elif state.global_step % cfg.train.checkpoint_every_steps == 0 and is_main:
                save_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler, state, cfg)
            if last_step or stop:
                stop = True
                break
        if not batches:  # fewer examples than processes: nothing to do this epoch
            state.epoch += 1
    if progress is not None:
        progress.close()
    train_seconds = state.train_seconds
    step_seconds = max(train_seconds - state.eval_seconds, 1e-9)  # throughput counts training steps only

    # -- Finish: best weights back in, test score, then the adapter and metrics (metrics.json last).
    inner = accelerator.unwrap_model(model)
    if getattr(inner, "_orig_mod", None) is not None:
        inner = inner._orig_mod
    if state.best_weights:
        M.load_trainable_state_dict(inner, state.best_weights)
    metrics: dict[str, Any] = dict(state.best_metrics)
    if splits.test is not None and splits.test.labels is not None:
        test_ids = _tokenize(tokenizer, splits.test.texts, cfg.model.max_length)
        tm = _distributed_eval(accelerator, model, test_ids, list(splits.test.labels), cfg.train.eval_batch_size, precision, pad_id, names)
        metrics.update(test_accuracy=tm["accuracy"], test_loss=tm["loss"], test_macro_f1=tm["macro_f1"], test_per_class=tm["per_class"])
    metrics.update(
        best_step=state.best_step,
        global_step=state.global_step,
        epochs_run=round(state.epoch + state.batch_in_epoch / max(1, n_batches), 4),
        stopped_early=state.stopped_early,
        trainable_params=trainable,
        total_params=total,
        trainable_share=trainable / total,
        train_seconds=train_seconds,
        train_samples=state.samples_seen,
        eval_seconds=state.eval_seconds,
        train_samples_per_s=state.samples_seen / step_seconds,
        train_tokens_per_s=state.tokens_seen / step_seconds,
        peak_memory_mb=peak_memory_mb(accelerator.device),
        precision=precision,
        device=str(accelerator.device),
        processes=world,
        n_train=len(train_ids),
        n_validation=len(val_ids),
        label_names=names,
    )
    if is_main:
        with atomic_dir(run_dir / M.ADAPTER_DIR) as tmp:
            inner.save_pretrained(str(tmp))
        with atomic_dir(run_dir / M.TOKENIZER_DIR) as tmp:
            tokenizer.save_pretrained(str(tmp))
        write_json(run_dir / METRICS_FILE, metrics)
    if cfg.train.tracker != "none":
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return metrics

