"""`loraclf train`: one training recipe, readable top to bottom.

    TrainRecipe(cfg, run_dir)
      .setup()     data, tokenizer, model + LoRA, accelerator (devices, precision, processes),
                   run directory, token ids, optimizer + schedule
      .resume()    weights, optimizer, schedule, loop position and RNGs from checkpoint.pt
      .fit()       epochs of length-grouped micro-batches -> step -> evaluate / checkpoint / early stop
      .finish()    best weights back in, test score, adapter + tokenizer + metrics.json (last)

Batches are *global*: every process builds the same sequence of `train.batch_size` examples per
micro-batch from the seed and takes its own slice of each one, so a run takes the same optimizer
steps on 1 or N processes and a checkpoint resumes with any process count.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .. import model as M
from ..batching import (DeviceTokens, StaticEpoch, TokenCache, epoch_batches, length_buckets, pad_batch, pad_id_of,
                        process_slice, steps_per_epoch, training_widths)
from ..compiled import inference_compile_enabled, raise_recompile_limit, train_execution
from ..config import Config, config_from_dict
from ..data import Splits, load_splits
from ..errors import RunDirError
from ..io import check_output_dir, replace_dir
from ..inference import run_inference
from ..metrics import compute_metrics
from ..rundir import RunDir, check_replaceable
from .cpu_dropout import restore_dropout, use_cpu_dropout
from .checkpoint import LoopState, check_fingerprints, data_fingerprints, load_checkpoint, save_checkpoint, set_rng_state
from .console import describe_run, progress_bar, run_summary, say
from .optim import make_optimizer
from .step import TrainStep, make_loss, no_sync_unless

# Called after every evaluation with (global_step, metrics); tune uses it to report and prune.
EvalCallback = Callable[[int, dict[str, Any]], None]

def _synchronize(device: torch.device) -> None:
    # Kernels run asynchronously on a GPU: wait for them before reading the clock.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _Stretch:
    """The loop's running sums between two logged steps, and its clocks."""

    loss: torch.Tensor  # summed micro-batch losses, on the device: read back only when logged
    count: int
    started: float  # the run's start (a resumed run's earlier seconds counted in)
    steps_from: float  # start of the current stretch of training steps


class TrainRecipe:
    """One training run: build with a config and a run directory, then setup -> [resume] -> fit -> finish."""

    def __init__(self, cfg: Config, run_dir: str | Path | None = None, *, overwrite: bool = False,
                 on_eval: EvalCallback | None = None, splits: Splits | None = None,
                 token_cache: TokenCache | None = None, console: bool = True) -> None:
        self.cfg = cfg.with_absolute_paths()  # the saved config then resumes and loads from any directory
        self.console = console  # the data/model/schedule block and one line per evaluation, on stderr
        self.run = RunDir(run_dir if run_dir is not None else self.cfg.run_dir())
        self.overwrite = overwrite
        self.on_eval = on_eval
        self.splits = splits
        self.token_cache = token_cache or TokenCache()
        self.state = LoopState()
        self.checkpoint: dict[str, Any] | None = None
        self.replaces: RunDir | None = None  # the finished run an --overwrite run replaces at the end
        self.train_step: TrainStep | None = None  # built by fit, around the model accelerate prepared

    # -----------------------------------------------------------------------------------------
    # setup

    @classmethod
    def for_resume(cls, run_dir: str | Path, on_eval: EvalCallback | None = None) -> "TrainRecipe":
        """A recipe that continues the run in `run_dir`; the checkpoint's config wins (same data, model, schedule)."""
        run = RunDir(run_dir)
        if not run.path.is_dir():
            raise RunDirError(f"run directory '{run.path}' {run.missing_reason()}; nothing to resume")
        if run.is_finished():
            raise RunDirError(f"run '{run.path}' already finished (metrics.json exists); nothing to resume")
        ckpt = load_checkpoint(run)
        check_fingerprints(run, ckpt)
        recipe = cls(config_from_dict(ckpt["config"]), run.path, on_eval=on_eval)
        recipe.checkpoint = ckpt
        return recipe

    def setup(self) -> None:
        """Everything before the first step. Inputs come first: a bad file, column or model fails
        before the run directory exists."""
        from accelerate.utils import set_seed

        cfg, resuming = self.cfg, self.checkpoint is not None
        self.loss = make_loss(cfg.train)
        if not resuming:
            self._plan_run_dir()
        M.silence_fork_warning()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.data_prints = (self.checkpoint or {}).get("fingerprints", {}).get("data") or data_fingerprints(cfg)  # before reading
        self.splits = self.splits or load_splits(cfg.data, cfg.train.seed)
        self.label_names = self.splits.label_names
        self.tokenizer = M.load_tokenizer(cfg.model.name)
        self.pad_id = pad_id_of(self.tokenizer)
        set_seed(cfg.train.seed)  # before the model: the head's random init depends on it
        base = M.load_base_model(cfg.model, self.label_names)
        M.check_max_length(base, cfg.model, self.tokenizer)
        cfg = self.cfg = M.resolved_config(base, cfg)  # `auto` resolved: config.yaml records the kernel and modules used
        model = M.apply_lora(base, cfg.lora)
        self.trainable_params, self.total_params = M.count_parameters(model)
        self._start_accelerator(M.resolve_device())
        M.store_frozen_linears(model, self.precision)  # the base's frozen Linears in bf16/fp16: same results, no casts
        self._create_run_dir(resuming)

        # Tokenize once; the loop only pads.
        self.train_ids = self._tokenize(self.splits.train.texts)
        self.train_labels = list(self.splits.train.labels or [])
        self.val_ids = self._tokenize(self.splits.validation.texts)
        self.lengths = [len(s) for s in self.train_ids]

        # The schedule's length is known once the steps per epoch are.
        self.steps_per_epoch = steps_per_epoch(len(self.train_ids), cfg.train.batch_size, cfg.train.grad_accum)
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.model = model
        self._choose_execution()
        device = self.accelerator.device
        # CPU steps spent a third of their time drawing dropout masks: draw them four at a time instead (compiled
        # steps too, where inductor's own random numbers made the step slower than eager).
        self.cpu_dropout = cfg.train.cpu_dropout and device.type == "cpu"
        if self.cpu_dropout:
            use_cpu_dropout(model)
        if device.type == "cuda":
            model.to(device)  # fused AdamW wants its parameters on the GPU when it is built
        self.optimizer, self.scheduler = make_optimizer(model, cfg.train, self.total_steps, fused=device.type == "cuda")
        if self.is_main and self.console:
            say(describe_run(self))

    def _start_accelerator(self, device: torch.device) -> None:
        """The run's precision and accelerate's Accelerator (processes, mixed precision, tracker)."""
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        cfg = self.cfg
        self.precision = M.resolve_precision(cfg.model.precision, device)
        # One process may train several runs (tune's in-process trials, the Python API, a test session), and
        # accelerate keeps one mixed-precision setting per process: drop the previous run's so this run's
        # precision applies. The process group (PartialState) stays.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            cpu=device.type == "cpu",
            mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.precision],
            log_with=None if cfg.train.tracker == "none" else cfg.train.tracker,
            project_dir=str(self.run.path),
        )
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        if cfg.train.batch_size % self.world:
            raise RunDirError(f"train.batch_size={cfg.train.batch_size} does not split over {self.world} processes; "
                              f"use a multiple of {self.world}")

    def _create_run_dir(self, resuming: bool) -> None:
        """Only rank 0 writes the run directory; the others wait until it exists."""
        if self.is_main and not resuming:
            if self.replaces is not None and self.run.path.exists():
                shutil.rmtree(self.run.path)  # a replacement left behind by an interrupted --overwrite
            self.run.path.mkdir(parents=True, exist_ok=True)
            self.run.write_config(self.cfg)
            self.run.write_labels(self.label_names)
        self.accelerator.wait_for_everyone()

    def _choose_execution(self) -> None:
        """model.compile: eager, compiled or captured (`compiled.train_execution`), the widths a fixed-shape step
        pads to, and whether evaluation compiles too (only alongside a compiled step, where inference compiling
        pays: `compiled.inference_compile_enabled`)."""
        cfg, device = self.cfg, self.accelerator.device
        samples_per_process = self.total_steps * cfg.train.batch_size * cfg.train.grad_accum // self.world
        self.execution, warning = train_execution(cfg.model.compile, device, self.precision, samples_per_process,
                                                  self.world)
        if warning and self.is_main:
            print(warning, file=sys.stderr, flush=True)
        compiled = self.execution == "compiled"
        self.compile_eval = compiled and inference_compile_enabled(cfg.model.compile, device, merged=False)
        self.buckets: list[int] = []  # eager pads each batch to its own longest row
        if self.execution == "cudagraphs":
            self.buckets = length_buckets(cfg.model.max_length)  # a graph per width: the few buckets
        elif compiled:
            self.buckets = training_widths(cfg.model.max_length, device)

    @property
    def static_shapes(self) -> bool:
        """Batches of fixed shapes gathered on the device (compiled or captured step), not eager's padded ones."""
        return self.execution != "eager"

    def _plan_run_dir(self) -> None:
        """Check the run directory before anything loads. With --overwrite over an existing run, train into a
        hidden sibling that replaces it only when the new run finishes: a crash or Ctrl-C keeps the old run."""
        check_output_dir(self.run.path, "--out")
        if not self.run.is_nonempty():
            return
        # A run stopped before its first checkpoint has nothing to resume: the same command starts it again.
        if not self.overwrite and not self.run.is_unstarted():
            raise RunDirError(f"run directory '{self.run.path}' already exists; pass --overwrite to replace it "
                              f"or --resume {self.run.path} to continue it")
        check_replaceable(self.run.path, "--out")
        self.replaces = self.run
        self.run = RunDir(self.run.path.parent / f".{self.run.path.name}.new")

    def resume(self) -> None:
        """Restore the checkpoint's weights, optimizer, schedule, loop position and RNGs (no-op for a new run)."""
        ckpt = self.checkpoint
        if ckpt is None:
            return
        M.load_trainable_state_dict(self.model, ckpt["weights"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state = LoopState(**ckpt["loop"])
        set_rng_state(ckpt["rng"])
        if self.is_main:
            self.run.truncate_log_after(self.state.global_step)  # the log never runs ahead of the checkpoint

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.token_cache.tokenize(self.tokenizer, texts, self.cfg.model.max_length)

    # -----------------------------------------------------------------------------------------
    # the loop

    def fit(self) -> None:
        """Train until the last step, the last epoch or early stopping."""
        cfg, state, acc = self.cfg, self.state, self.accelerator
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.train_step = self._make_step()
        if cfg.train.tracker != "none" and self.is_main:
            acc.init_trackers(cfg.name, config={"lr": cfg.train.lr, "r": cfg.lora.r, "alpha": cfg.lora.alpha})
        progress = progress_bar(self.total_steps, self.state.global_step) if self.is_main and cfg.train.progress else None
        self.model.train()
        now = time.perf_counter()
        stretch = _Stretch(torch.tensor(state.running_loss, device=acc.device), state.running_count, now - state.train_seconds, now)
        stop = state.global_step >= self.total_steps or state.stopped_early
        while not stop and state.epoch < cfg.train.epochs:
            batches = epoch_batches(self.lengths, cfg.train.batch_size, cfg.train.seed, state.epoch, cfg.train.group_by_length)
            batches = [b for b in batches if len(b) >= self.world]  # every process needs at least one example
            static = None
            if self.static_shapes:  # this epoch's row indices go to the device once
                static = StaticEpoch([process_slice(b, cfg.train.batch_size, self.rank, self.world) for b in batches],
                                     cfg.train.batch_size // self.world, self.lengths, self.buckets, acc.device)
            for b_idx in range(state.batch_in_epoch, len(batches)):
                boundary = b_idx % cfg.train.grad_accum == cfg.train.grad_accum - 1 or b_idx == len(batches) - 1
                stretch.loss += self.step(batches[b_idx], b_idx, boundary, static)
                stretch.count += 1
                state.batch_in_epoch = b_idx + 1
                if boundary and self._after_micro_batches(len(batches), stretch, progress):
                    stop = True
                    break
            if not batches:  # fewer examples than processes: nothing to do this epoch
                state.epoch += 1
        if progress is not None:
            progress.close()

    def _after_micro_batches(self, n_batches: int, stretch: _Stretch, progress: Any) -> bool:
        """The optimizer step at an accumulation boundary, then logging, evaluation and checkpoints as they fall
        due; returns True when the run is over (last step or early stop)."""
        cfg, state = self.cfg, self.state
        self.optimizer_step()
        epoch_float = state.epoch + state.batch_in_epoch / n_batches
        if progress is not None:
            progress.update(1)
        log_now = state.global_step % cfg.train.log_every_steps == 0 or state.global_step == self.total_steps
        end_of_epoch = state.batch_in_epoch == n_batches
        last_step = state.global_step >= self.total_steps
        eval_now = end_of_epoch or last_step or (cfg.train.eval_every_steps and state.global_step % cfg.train.eval_every_steps == 0)
        checkpoint_now = not eval_now and state.global_step % cfg.train.checkpoint_every_steps == 0
        leaving = log_now or eval_now or checkpoint_now
        if leaving:  # leaving the hot loop: count the steps' time so far
            _synchronize(self.accelerator.device)
            now = time.perf_counter()
            state.step_seconds += now - stretch.steps_from
            stretch.steps_from = now
        if log_now:
            mean_loss = (stretch.loss / max(1, stretch.count)).item()  # the only host sync, every n steps
            stretch.loss.zero_()
            stretch.count = 0
            self._log_train(mean_loss, epoch_float, progress)
        state.train_seconds = time.perf_counter() - stretch.started
        if end_of_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if eval_now or checkpoint_now:  # the running loss since the last log line goes into the checkpoint
            state.running_loss, state.running_count = stretch.loss.item(), stretch.count
        stop = False
        if eval_now and self.evaluate(epoch_float):
            state.stopped_early, stop = not last_step, True  # patience out at the last step: no early stop
        elif checkpoint_now:
            self.save_checkpoint()
        state.train_seconds = time.perf_counter() - stretch.started  # again: evaluations count in wall time
        if leaving:
            stretch.steps_from = time.perf_counter()  # back in the hot loop: steps count again from here
        return last_step or stop

    def _make_step(self) -> TrainStep:
        """The training step under this run's execution; a fixed-shape one gathers its batches from the token ids
        and labels put on the device once."""
        acc = self.accelerator
        tokens = None
        if self.static_shapes:
            tokens = DeviceTokens(self.train_ids, self.pad_id, acc.device, self.buckets[-1], labels=self.train_labels)
        if self.execution == "compiled":
            # Graphs compiled for an earlier run's model in this process (tune's previous trial) can never run
            # again; drop them so they do not count against dynamo's recompile limit.
            torch._dynamo.reset()
            raise_recompile_limit(len(self.buckets))
        return TrainStep(self.model, self.loss, self.execution, device=acc.device, precision=self.precision,
                         grad_accum=self.cfg.train.grad_accum, backward=acc.backward, tokens=tokens,
                         cuda_graphs=self.world == 1)

    def step(self, global_batch: list[int], b_idx: int, boundary: bool, static: StaticEpoch | None = None) -> torch.Tensor:
        """Forward and backward on this process's slice of global micro-batch `b_idx` (its fixed-shape rows in
        `static` for a compiled or captured step); returns its loss (on device)."""
        cfg, acc, state, train_step = self.cfg, self.accelerator, self.state, self.train_step
        assert train_step is not None, "fit() builds the step"
        with no_sync_unless(boundary, acc, self.model):
            if static is not None:
                loss = train_step.fixed(static.widths[b_idx], static.rows[b_idx], static.real[b_idx])
            else:
                mine = process_slice(global_batch, cfg.train.batch_size, self.rank, self.world)
                inputs = pad_batch([self.train_ids[i] for i in mine], self.pad_id)
                inputs = {k: v.to(acc.device, non_blocking=True) for k, v in inputs.items()}
                targets = torch.as_tensor([self.train_labels[i] for i in mine], device=acc.device)
                loss = train_step.padded(inputs, targets)
        state.samples_seen += len(global_batch)
        state.tokens_seen += sum(len(self.train_ids[i]) for i in global_batch)
        return loss

    def optimizer_step(self) -> None:
        if self.cfg.train.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.train.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        keep_grads = self.train_step is not None and self.train_step.keep_grads
        self.optimizer.zero_grad(set_to_none=not keep_grads)
        self.state.global_step += 1

    def _log_train(self, mean_loss: float, epoch_float: float, progress: Any) -> None:
        state = self.state
        lr = self.scheduler.get_last_lr()[0]
        if self.is_main:
            self.run.append_log(step=state.global_step, epoch=round(epoch_float, 4), lr=lr, train_loss=mean_loss)
        if progress is not None:
            # refresh=False: shown at the bar's next refresh (mininterval), not drawn again every log interval
            progress.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{state.samples_seen / max(state.step_seconds, 1e-9):.1f}",
                                 refresh=False)
        if self.cfg.train.tracker != "none":
            self.accelerator.log({"train_loss": mean_loss, "lr": lr}, step=state.global_step)

    # -----------------------------------------------------------------------------------------
    # evaluation and checkpoints

    def score(self, ids: list[list[int]], labels: list[int]) -> dict[str, Any]:
        """Metrics over `ids`: each process scores its shard; all logits are gathered so every example counts once."""
        from accelerate.utils import gather_object

        acc = self.accelerator
        shard = list(range(self.rank, len(ids), self.world))
        logits = run_inference(self._inner_model(), ids, self.cfg.train.eval_batch_size, acc.device, self.precision,
                               self.pad_id, indices=shard, compiled=self.compile_eval, max_length=self.cfg.model.max_length)
        if self.world > 1:
            full = np.zeros((len(ids), logits.shape[1]), dtype=np.float32)
            for idx, part in gather_object([(shard, logits)]):
                full[idx] = part
            logits = full
        return compute_metrics(logits, labels, self.label_names)

    def evaluate(self, epoch_float: float) -> bool:
        """Evaluate on validation, keep the best weights, checkpoint; return True to stop early."""
        state = self.state
        t0 = time.perf_counter()
        m = self.score(self.val_ids, list(self.splits.validation.labels or []))
        state.eval_seconds += time.perf_counter() - t0
        val = {"val_accuracy": m["accuracy"], "val_loss": m["loss"], "val_macro_f1": m["macro_f1"]}
        if self.is_main:
            self.run.append_log(step=state.global_step, epoch=round(epoch_float, 4), **val)
        if self.cfg.train.tracker != "none":
            self.accelerator.log(val, step=state.global_step)
        better = m["accuracy"] > state.best_val_accuracy
        if better:
            state.best_val_accuracy, state.best_step, state.best_metrics = m["accuracy"], state.global_step, val
            state.best_weights = M.trainable_state_dict(self._inner_model())
            state.evals_since_best = 0
        else:
            state.evals_since_best += 1
        if self.is_main and self.console:
            say(f"eval  step {state.global_step}/{self.total_steps} (epoch {epoch_float:.2f}): "
                f"val_accuracy {m['accuracy']:.4f}  val_loss {m['loss']:.4f}  val_macro_f1 {m['macro_f1']:.4f}"
                + ("  (best so far)" if better else f"  (best {state.best_val_accuracy:.4f} at step {state.best_step})"))
        self.save_checkpoint()
        if self.on_eval is not None:
            self.on_eval(state.global_step, dict(val, step=state.global_step, epoch=epoch_float))
        patience = self.cfg.train.early_stopping_patience
        return bool(patience and state.evals_since_best >= patience)

    def save_checkpoint(self) -> None:
        if self.is_main:
            save_checkpoint(self.run, self._inner_model(), self.optimizer, self.scheduler, self.state, self.cfg,
                            self.data_prints)
        self.accelerator.wait_for_everyone()

    def _inner_model(self) -> torch.nn.Module:
        """The PeftModel itself: DDP and torch.compile wrappers removed."""
        inner = self.accelerator.unwrap_model(self.model)
        return getattr(inner, "_orig_mod", inner)

    # -----------------------------------------------------------------------------------------
    # finish

    def finish(self) -> dict[str, Any]:
        """Best weights back in, test score, then the adapter, tokenizer and metrics (metrics.json last)."""
        cfg, state, acc = self.cfg, self.state, self.accelerator
        inner = self._inner_model()
        if self.cpu_dropout:
            restore_dropout(inner)  # the saved and returned model is plain transformers + PEFT again
        if state.best_weights:
            M.load_trainable_state_dict(inner, state.best_weights)
        metrics: dict[str, Any] = dict(state.best_metrics)
        test = self.splits.test
        if test is not None and test.labels is not None:
            tm = self.score(self._tokenize(test.texts), list(test.labels))
            metrics.update(test_accuracy=tm["accuracy"], test_loss=tm["loss"], test_macro_f1=tm["macro_f1"], test_per_class=tm["per_class"])
        metrics.update(run_summary(self))
        if self.is_main:
            self.run.save_model_files(inner, self.tokenizer)
            self.run.write_metrics(metrics)
            if self.replaces is not None:
                replace_dir(self.run.path, self.replaces.path)
                self.run = self.replaces
        if cfg.train.tracker != "none":
            acc.end_training()
        acc.wait_for_everyone()
        return metrics
