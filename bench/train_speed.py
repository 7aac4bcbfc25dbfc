#!/usr/bin/env python
"""Training / inference speed benchmark: HF Trainer baseline vs the loraclf path.

One run, same machine, same model, same data, same LoRA config, same batch
size and learning rate, for two sides:

  (a) baseline  - the study's setup: HF ``Trainer`` + ``TrainingArguments``
                  + PEFT LoRA + ``DataCollatorWithPadding`` (random batches,
                  dynamic padding), fp32 on CPU / fp16 on CUDA, then
                  ``trainer.evaluate`` and ``trainer.predict`` on ``--eval-rows`` test rows.
  (b) loraclf   - ``loraclf.train.train`` (what ``loraclf train`` runs) with the
                  study's LoRA config and batch settings and loraclf's defaults for
                  the rest (length-grouped batches, max_length 128, precision auto), then
                  ``loraclf.inference.run_inference`` + ``compute_metrics`` (evaluate)
                  and ``Classifier.predict_proba`` (predict) on the same test rows.
                  See bench/loraclf_side.py. ``--compile both`` (the default) runs it
                  twice, with ``model.compile=false`` and ``=true``; ``--compile all`` three
                  times, ``model.compile=cudagraphs`` first (the eager step captured as
                  CUDA graphs: CUDA only); ``on``/``off``/``graphs``/``auto``: one run
                  (``auto`` passes no override, i.e. the library's default).

Steady state
------------
Each side trains one warm-up epoch over ``--rows`` rows (every batch shape is met,
compiled and captured there), then ``--steps`` more optimizer steps cycling the data
(default 1,000 on CUDA, 25 on CPU; ``--eager-steps`` may give the eager sides, the baseline
and loraclf with ``model.compile=false``, fewer: they have no compile or capture to amortize,
and a GPU check must stay short). Train throughput is the steady state: the steps after
the first epoch. The one-time cost (compile, CUDA-graph capture, first-touch allocations)
is the warm-up epoch's time minus what its samples take at the steady rate, printed on its
own line per side. ``projected_trial_seconds`` (per side, in the JSON) = 324,000 samples
(the study's trial: 3 epochs x 108,000 rows, micro-batch 32, accumulation 2) at the steady
rate, plus that one-time cost, for the model measured.

Learning rate: both sides train at ``--lr`` (default 1e-3), not the study's 2e-5: at 2e-5
neither side leaves chance within a benchmark-length run, so equal accuracies would show
nothing. Warmup is 10% of the run's steps, then cosine decay. Accuracy is scored on the
eval rows. Neither setting changes the work per step.

What each figure covers
-----------------------
- train seconds / samples/s / tokens/s / FLOP/s: the *training steps* after the
  warm-up epoch, timed the same way on both sides: batch assembly (collate/pad),
  forward, backward, gradient clipping, optimizer and schedule steps. Not counted
  on either side: model loading, tokenization, building the optimizer,
  evaluation, checkpointing, saving. loraclf: the recipe's own ``step_seconds`` /
  ``train_samples`` (it times its steps directly and leaves evaluations out):
  metrics.json at the end minus the checkpoint written at the first epoch's end.
  Baseline: a ``TrainerCallback`` timing each epoch from ``on_epoch_begin`` to
  ``on_epoch_end`` (device synchronized), with evaluation, saving and logging off.
  Wider wall times are kept in the JSON for context (baseline: Trainer's own
  ``train_runtime`` and the whole ``trainer.train()`` call; loraclf: the whole
  ``train()`` call and the loop's wall time including its end-of-epoch evaluation).
- evaluate: scoring already tokenized rows plus accuracy (both sides). On CUDA
  (``--inference-warmup``) both sides run one untimed pass first.
- predict: baseline ``trainer.predict`` on the tokenized dataset; loraclf
  ``Classifier.predict_proba`` from raw texts (its tokenization is included).
- peak memory: per phase (below); the train phase covers the whole train call.

Per side: train samples/s, train tokens/s (real tokens, padding excluded),
evaluate / predict samples/s, peak memory, padding share, analytic FLOP/s and
its share of the matmul peak measured in the same run, and loraclf/baseline
ratios.  The matmul peak is measured in the same run for every dtype a side ran
in (fp32 and bf16 on CPU, fp16 and bf16 on CUDA).  Plus a full-fine-tuning vs LoRA peak-memory comparison for one train
step of the same model and batch.

Process layout / memory measurement
-----------------------------------
Every side (and each memory probe) runs in a *fresh subprocess* of this
script (``--_worker``).  On CPU, peak memory is the Linux high-water mark of
the resident set (``VmHWM`` in /proc/self/status), which the worker resets
(``echo 5 > /proc/self/clear_refs``) right before each phase, so we get an
exact per-phase peak (no sampling thread that could miss a short spike) and
report it as a delta over the RSS measured just before the model was loaded
(imports + data already resident).  If clear_refs is not writable, the
fallback is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (process-lifetime
peak, still exact thanks to the fresh process).  The fresh process matters:
glibc/torch allocators keep freed memory, and the HWM is monotonic, so a
second side measured in the same process would inherit the first side's
footprint.  On CUDA: ``torch.cuda.reset_peak_memory_stats`` before the phase
and ``torch.cuda.max_memory_allocated`` after it, minus the memory allocated
before the model was created.

FLOP model (documented in ``flop_counts``)
-------------------------------------------
Counted analytically from the model's nn.Linear shapes and the *real*
(unpadded) token counts ("useful" FLOPs); "executed" FLOPs use the padded
shapes actually fed.  For a Linear with N = in*out weights, per token:
forward 2N; input-gradient (dgrad) 2N when the input needs a gradient;
weight-gradient (wgrad) 2N only when the weight is trainable.  So with LoRA a
frozen encoder Linear costs 4N per token (not the 6N of full fine-tuning),
except layer 0's query/key/value which read the embedding output (frozen, no
grad path): 2N.  LoRA A/B and the trainable classifier: 6N (A of layer 0: 4N).
Encoder Linears run on every token; pooler / classifier head run once per
sequence.  Attention matmuls per layer and sequence of length L, hidden d:
forward QK^T + PV = 4 L^2 d; backward dP, dV, dQ, dK = 8 L^2 d (layer 0 has no
dK: 6 L^2 d).  Evaluation/prediction: forward only.  Embedding lookups,
LayerNorm, softmax, GELU, dropout and the optimizer are not counted.

Usage
-----
    python bench/train_speed.py                         # defaults: MiniLM, 3000 rows (+25 steady steps), 1000 eval rows
    python bench/train_speed.py --rows 200 --eval-rows 100 --steps 5 --compile off   # smoke
    python bench/train_speed.py --model /path/to/tiny-model --rows 96 --eval-rows 32 --steps 2 --compile off --skip-memory  # seconds
    python bench/train_speed.py --model random-roberta-base --device cuda --rows 6000 --eager-steps 200
    python bench/train_speed.py --skip-loraclf          # baseline only
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's loraclf (the workers re-run this file, so they get it too)

from benchenv import cpu_name, default_model, random_roberta  # noqa: E402 - bench/ is on sys.path when this runs as a script
DEFAULT_DATA = Path(os.environ.get("LORACLF_AGNEWS", str(ROOT.parent / "shared" / "data" / "ag_news")))
DEFAULT_JSON = ROOT / "bench" / "results" / "train_speed.json"

# The study's configuration (shared by both sides).
STUDY = dict(
    lora_r=8, lora_alpha=16, lora_dropout=0.15, target_modules=["query", "value"], lora_bias="none",
    learning_rate=2e-5, per_device_train_batch_size=32, per_device_eval_batch_size=64,
    gradient_accumulation_steps=2, weight_decay=0.01, warmup_steps=500, lr_scheduler_type="cosine",
    seed=42, num_train_epochs=1, num_labels=4,
)
# What the bench changes from the study, the same on both sides. The learning rate: at the study's 2e-5 both sides
# still sit at chance after a few hundred steps, so "same accuracy" would show nothing; at 1e-3 LoRA learns within
# the run and the accuracy columns compare two trained models. The warmup: 10% of the run's steps (the study's 500
# would outlast a CPU run). Neither changes the work per step, so the speed figures are the study's.
BENCH_LR = 1e-3
LR_WARMUP_SHARE = 0.1
TRIAL_SAMPLES = 3 * 108_000  # the study's trial: 3 epochs over 108,000 training rows
CPU_STEPS, CUDA_STEPS = 25, 1000  # default steady-state optimizer steps after the warm-up epoch


# =========================================================================== helpers
def load_ag_news(path: Path, rows: int | None) -> tuple[list[str], list[int]]:
    """AG News original CSV: no header, class(1-4),title,description."""
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for i, rec in enumerate(csv.reader(f)):
            if rows is not None and i >= rows:
                break
            labels.append(int(rec[0]) - 1)
            texts.append(rec[1] + " " + rec[2])
    return texts, labels


def run_plan(rows: int, steady_steps: int, lr: float) -> dict:
    """The optimizer steps a side runs: one warm-up epoch over `rows` (every batch shape is met, compiled and
    captured there), then `steady_steps` more steps cycling the data; steady state is timed after the first epoch."""
    import math

    per_epoch = math.ceil(math.ceil(rows / STUDY["per_device_train_batch_size"]) / STUDY["gradient_accumulation_steps"])
    total = per_epoch + steady_steps
    return {"steps_per_epoch": per_epoch, "warmup_epoch_steps": per_epoch, "steady_steps": steady_steps,
            "total_steps": total, "epochs": math.ceil(total / per_epoch), "lr": lr,
            "lr_warmup_steps": max(1, int(LR_WARMUP_SHARE * total))}


def split_warmup(total_seconds: float, total_samples: int, warm_seconds: float, warm_samples: int) -> dict:
    """Steady-state rate from the steps after the warm-up epoch, and the one-time cost: the warm-up epoch's
    time over what its samples take at the steady rate (compile, CUDA-graph capture, first-touch allocations)."""
    steady_s, steady_n = total_seconds - warm_seconds, total_samples - warm_samples
    rate = steady_n / steady_s if steady_s > 0 else None
    one_time = warm_seconds - warm_samples / rate if rate else None
    return {"steady_seconds": steady_s, "steady_samples": steady_n, "steady_samples_per_s": rate,
            "warmup_seconds": warm_seconds, "warmup_samples": warm_samples, "one_time_seconds": one_time}


def projected_trial_seconds(steady_samples_per_s: float | None, one_time_seconds: float | None) -> float | None:
    """One study trial (3 epochs x 108,000 rows) at the measured steady rate, plus the side's one-time cost once."""
    if not steady_samples_per_s:
        return None
    return TRIAL_SAMPLES / steady_samples_per_s + max(0.0, one_time_seconds or 0.0)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _proc_status(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def rss_bytes() -> int:
    v = _proc_status("VmRSS")
    if v is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return v


class Meter:
    """Times phases and records their peak memory (see module docstring).

    Usage (both sides use the same meter so numbers are comparable)::

        meter = Meter(device)
        meter.mark_base()                 # before the model is created
        with meter.phase("train"):
            ...
        meter.phases["train"] -> {"seconds": ..., "peak_mem_bytes": ..., "peak_mem_delta_bytes": ...}
    """

    def __init__(self, device: str):
        self.device = device
        self.base = 0
        self.phases: dict[str, dict] = {}
        self.can_reset = False
        if device == "cpu":
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.can_reset = _proc_status("VmHWM") is not None
            except OSError:
                self.can_reset = False
        self.method = (
            "cuda.max_memory_allocated" if device == "cuda"
            else "VmHWM reset per phase (clear_refs=5)" if self.can_reset
            else "ru_maxrss (process lifetime peak)"
        )

    def _sync(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def mark_base(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = rss_bytes()

    @contextlib.contextmanager
    def phase(self, name: str):
        import torch

        self._sync()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
        else:
            if self.can_reset:
                Path("/proc/self/clear_refs").write_text("5")
            start = rss_bytes()
        t0 = time.perf_counter()
        try:
            yield self
        finally:
            self._sync()
            sec = time.perf_counter() - t0
            if self.device == "cuda":
                peak = torch.cuda.max_memory_allocated()
            elif self.can_reset:
                peak = _proc_status("VmHWM")
            else:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.phases[name] = {"seconds": sec, "peak_mem_bytes": peak,
                                 "peak_mem_delta_bytes": peak - self.base,
                                 "peak_over_phase_start_bytes": peak - start}


class BatchRecorder:
    """Wraps a collate function and records every batch actually fed to the model.

    Each record: {"n": batch size, "padded_len": sequence length after padding,
    "real_tokens": attention_mask.sum(), "real_sq": sum of squared real lengths}.
    ``phase`` selects the list records go to ("train", "evaluate", "predict")."""

    def __init__(self, collate):
        self.collate = collate
        self.phase = "train"
        self.batches: dict[str, list[dict]] = {}

    def __call__(self, features):
        b = self.collate(features)
        mask = b["attention_mask"]
        lens = mask.sum(1)
        self.batches.setdefault(self.phase, []).append(
            {"n": int(mask.shape[0]), "padded_len": int(mask.shape[1]),
             "real_tokens": int(lens.sum()), "real_sq": int((lens * lens).sum())})
        return b


class EpochTimer:
    """Training-step time of an HF Trainer run, timed like loraclf's metrics.json ``step_seconds``.

    Each epoch is timed from ``on_epoch_begin`` (before the first batch is fetched) to
    ``on_epoch_end`` (after the last optimizer step), with the device synchronized at both ends:
    batch assembly, forward, backward, clipping, optimizer and schedule steps. With
    eval/save/logging strategies "no" nothing else runs in between; Trainer's own ``train_runtime``
    also covers its start-up and end, so it is not used for throughput. ``epochs`` holds one record
    per epoch (seconds, batches fed so far, optimizer steps so far), so the first (warm-up) epoch
    can be told apart from the steady state (Trainer calls on_epoch_end for a last, partial epoch too)."""

    def __init__(self, device: str, recorder: "BatchRecorder | None" = None):
        self.device = device
        self.recorder = recorder
        self.seconds = 0.0
        self.epochs: list[dict] = []
        self._t0 = None

    def _now(self) -> float:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class _Cb(TrainerCallback):
            def on_epoch_begin(self, args, state, control, **kw):
                timer._t0 = timer._now()

            def on_epoch_end(self, args, state, control, **kw):
                sec = timer._now() - timer._t0
                timer.seconds += sec
                fed = len(timer.recorder.batches.get("train", [])) if timer.recorder else None
                timer.epochs.append({"seconds": sec, "batches_end": fed, "step_end": state.global_step})

        return _Cb()


def build_tokenizer_and_model(args, lora: bool = True, full_ft: bool = False):
    """(tokenizer, model) for --model; LoRA-wrapped unless lora=False."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(STUDY["seed"])
    if args.model == "random-roberta-base":  # roberta-base geometry, random weights, the tokenizer's vocabulary
        tok = AutoTokenizer.from_pretrained(args.tokenizer or default_model())
        model = random_roberta("base", STUDY["num_labels"], vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                               bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    else:
        tok = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=STUDY["num_labels"])
    if lora and not full_ft:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            task_type="SEQ_CLS", r=STUDY["lora_r"], lora_alpha=STUDY["lora_alpha"],
            lora_dropout=STUDY["lora_dropout"], target_modules=STUDY["target_modules"],
            bias=STUDY["lora_bias"]))
    return tok, model


# =========================================================================== FLOPs
def model_geometry(model) -> dict:
    """Linear-layer inventory for the FLOP model (see module docstring)."""
    import torch

    cfg = model.config
    lin = {"enc_frozen": 0, "enc_frozen_l0_qkv": 0, "enc_trainable": 0, "enc_trainable_l0_lora_a": 0,
           "head_frozen": 0, "head_trainable": 0}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or "original_module" in name:
            continue  # peft keeps an unused frozen copy of modules_to_save (classifier)
        n = mod.in_features * mod.out_features
        trainable = mod.weight.requires_grad
        m = re.search(r"encoder\.layers?\.(\d+)\.", name)
        if m:
            l0_qkv = m.group(1) == "0" and re.search(r"\.(query|key|value)(\.|$)", name) is not None
            if trainable:
                key = "enc_trainable_l0_lora_a" if (l0_qkv and "lora_A" in name) else "enc_trainable"
            else:
                key = "enc_frozen_l0_qkv" if l0_qkv else "enc_frozen"
        else:
            key = "head_trainable" if trainable else "head_frozen"
        lin[key] += n
    return {"linear_params": lin, "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
            "params_total": sum(p.numel() for p in model.parameters()),
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def flop_counts(geom: dict, batches: list[dict], train: bool) -> dict:
    """Useful (real tokens) and executed (padded shapes) FLOPs for a list of batch records."""
    lp, d, nl = geom["linear_params"], geom["hidden"], geom["layers"]
    if train:
        per_tok = (4 * lp["enc_frozen"] + 2 * lp["enc_frozen_l0_qkv"] + 6 * lp["enc_trainable"]
                   + 4 * lp["enc_trainable_l0_lora_a"])
        per_seq = 4 * lp["head_frozen"] + 6 * lp["head_trainable"]
        attn_coef = (nl - 1) * 12 * d + 10 * d  # per L^2: fwd 4d + bwd 8d (layer 0: bwd 6d)
    else:
        per_tok = 2 * (lp["enc_frozen"] + lp["enc_frozen_l0_qkv"] + lp["enc_trainable"]
                       + lp["enc_trainable_l0_lora_a"])
        per_seq = 2 * (lp["head_frozen"] + lp["head_trainable"])
        attn_coef = nl * 4 * d
    seqs = sum(b["n"] for b in batches)
    real = sum(b["real_tokens"] for b in batches)
    real_sq = sum(b["real_sq"] for b in batches)
    fed = sum(b["n"] * b["padded_len"] for b in batches)
    fed_sq = sum(b["n"] * b["padded_len"] ** 2 for b in batches)
    return {"useful": per_tok * real + per_seq * seqs + attn_coef * real_sq,
            "executed": per_tok * fed + per_seq * seqs + attn_coef * fed_sq}


def probe_dtypes(device: str, cuda_fp32: bool = True) -> list[str]:
    """The dtypes whose matmul peak a side can be compared with: on CPU fp32 (the baseline) and bf16
    where loraclf's precision "auto" picks it (native bf16 CPUs); on CUDA fp16 and bf16 (+ fp32)."""
    if device == "cpu":
        from loraclf.model import cpu_supports_bf16

        return ["float32"] + (["bfloat16"] if cpu_supports_bf16() else [])
    return ["float16", "bfloat16"] + (["float32"] if cuda_fp32 else [])


def matmul_peak(device: str, dtypes: list[str], seconds: float = 1.5) -> dict:
    """Achievable matmul FLOP/s per dtype: best chunk rate of repeated square matmuls."""
    import torch

    out = {}
    for dt in dtypes:
        dtype = getattr(torch, dt)
        n = 2048 if device == "cpu" else 8192
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        rates, t_end = [], time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(rates) < 3:
            reps = 1 if device == "cpu" else 20
            t = time.perf_counter()
            for _ in range(reps):
                torch.matmul(a, b)
            if device == "cuda":
                torch.cuda.synchronize()
            rates.append(reps * 2 * n**3 / (time.perf_counter() - t))
        out[dt] = {"n": n, "best_flops": max(rates), "median_flops": sorted(rates)[len(rates) // 2],
                   "samples": len(rates)}
        del a, b
    return out


# =========================================================================== side (a): baseline
def run_baseline(args, texts, labels, eval_texts, eval_labels) -> dict:
    """The study's HF Trainer setup. Returns the side-result structure (see run_loraclf)."""
    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    device = args.device
    meter = Meter(device)
    if device == "cuda":
        torch.cuda.init()
    set_seed(STUDY["seed"])
    meter.mark_base()
    t = time.perf_counter()
    tok, model = build_tokenizer_and_model(args)
    load_s = time.perf_counter() - t

    # tokenization as in the study (batched fast tokenizer, truncation at the tokenizer max length)
    t = time.perf_counter()
    enc = tok(texts, truncation=True)
    train_ds = [{**{k: v[i] for k, v in enc.items()}, "labels": labels[i]} for i in range(len(texts))]
    enc = tok(eval_texts, truncation=True)
    eval_ds = [{**{k: v[i] for k, v in enc.items()}, "labels": eval_labels[i]} for i in range(len(eval_texts))]
    tok_s = time.perf_counter() - t

    recorder = BatchRecorder(DataCollatorWithPadding(tok))
    plan = run_plan(len(texts), args.eager_steps, args.lr)
    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="train_speed_"),
        per_device_train_batch_size=STUDY["per_device_train_batch_size"],
        per_device_eval_batch_size=STUDY["per_device_eval_batch_size"],
        gradient_accumulation_steps=STUDY["gradient_accumulation_steps"],
        learning_rate=plan["lr"], weight_decay=STUDY["weight_decay"],
        warmup_steps=plan["lr_warmup_steps"], lr_scheduler_type=STUDY["lr_scheduler_type"],
        max_steps=plan["total_steps"], seed=STUDY["seed"],  # cycles the data: one warm-up epoch + steady steps
        fp16=(device == "cuda"), use_cpu=(device == "cpu"),
        report_to="none", save_strategy="no", eval_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
    )

    def compute_metrics(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    steps = EpochTimer(device, recorder)
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
                      data_collator=recorder, compute_metrics=compute_metrics, callbacks=[steps.callback()])
    recorder.phase = "train"
    with meter.phase("train"):  # peak memory of the whole call; its wall time is context only
        train_out = trainer.train()
    call = meter.phases["train"]
    fed = recorder.batches["train"]
    # accelerate's loader collates one batch ahead; when max_steps ends an epoch early that batch is never fed.
    last = steps.epochs[-1]
    prev = steps.epochs[-2] if len(steps.epochs) > 1 else {"batches_end": 0, "step_end": 0}
    used_last = min(last["batches_end"] - prev["batches_end"],
                    (last["step_end"] - prev["step_end"]) * STUDY["gradient_accumulation_steps"])
    fed = fed[:prev["batches_end"] + used_last]
    warm_batches = fed[:steps.epochs[0]["batches_end"]]
    split = split_warmup(steps.seconds, sum(b["n"] for b in fed), steps.epochs[0]["seconds"], sum(b["n"] for b in warm_batches))
    recorder.phase = "evaluate_warmup"
    if args.inference_warmup:  # untimed first pass: kernel selection and allocator growth, as loraclf gets
        trainer.evaluate()
    recorder.phase = "evaluate"
    with meter.phase("evaluate"):
        metrics = trainer.evaluate()
    recorder.phase = "predict"
    with meter.phase("predict"):
        pred = trainer.predict(eval_ds)
    return {
        "side": "baseline (HF Trainer)",
        "device": device,
        "dtype": "float16" if device == "cuda" else "float32",
        "optimizer": getattr(targs.optim, "value", str(targs.optim)),
        "model_geometry": model_geometry(model),
        # Outside the timed steps: model load, tokenization, and what trainer.train() does around its epochs
        # (dataloader, optimizer and schedule set-up, final loss sync).
        "setup_seconds": {"model_load": load_s, "tokenize": tok_s, "train_call_outside_steps": call["seconds"] - steps.seconds},
        "mem_method": meter.method,
        "mem_base_bytes": meter.base,
        "phases": {
            "train": {**call,
                      "seconds": split["steady_seconds"],
                      "seconds_covers": "training steps after the warm-up epoch (on_epoch_begin -> on_epoch_end)",
                      "samples": split["steady_samples"],
                      "samples_per_s": split["steady_samples_per_s"],
                      "warmup": split, "plan": plan, "epochs": steps.epochs,
                      "optimizer_steps": train_out.global_step,
                      "train_call_wall_seconds": call["seconds"],
                      "trainer_reported_runtime": train_out.metrics.get("train_runtime"),
                      "batches": fed[len(warm_batches):], "final_loss": train_out.training_loss},
            "evaluate": {**meter.phases["evaluate"], "samples": len(eval_texts),
                         "batches": recorder.batches["evaluate"], "accuracy": metrics.get("eval_accuracy")},
            "predict": {**meter.phases["predict"], "samples": len(eval_texts),
                        "batches": recorder.batches["predict"],
                        "accuracy": float((pred.predictions.argmax(-1) == np.array(eval_labels)).mean())},
        },
    }


# =========================================================================== side (b): loraclf
def run_loraclf(args, texts, labels, eval_texts, eval_labels) -> dict:
    """The fast loraclf path (bench/loraclf_side.py), returning the same structure as ``run_baseline``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from loraclf_side import run_loraclf as run

    steady = args.eager_steps if args._compile == "off" else args.steps
    return run(args, texts, labels, eval_texts, eval_labels, Meter=Meter, model_geometry=model_geometry,
               build_tokenizer_and_model=build_tokenizer_and_model, STUDY=STUDY,
               plan=run_plan(len(texts), steady, args.lr), split_warmup=split_warmup, compile=args._compile)


# =========================================================================== memory probe
def run_mem_probe(args, texts, labels, full_ft: bool) -> dict:
    """Peak memory of a LoRA or full-FT train step (fwd + bwd + AdamW), batch 32 of real rows.

    Two measured steps after a tiny warm-up: step 1 allocates the AdamW state, step 2 is the
    steady state; the reported peak is the larger of the two (per-step numbers under "steps")."""
    import torch

    device = args.device
    meter = Meter(device)
    if device == "cuda":
        torch.cuda.init()
    meter.mark_base()
    tok, model = build_tokenizer_and_model(args, full_ft=full_ft)
    model.to(device).train()
    bs = STUDY["per_device_train_batch_size"]
    batch = tok(texts[:bs], truncation=True, padding=True, return_tensors="pt").to(device)
    batch["labels"] = torch.tensor(labels[:bs], device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=STUDY["learning_rate"], weight_decay=STUDY["weight_decay"])
    ac = (torch.autocast("cuda", dtype=torch.float16) if device == "cuda" else contextlib.nullcontext())
    # warm-up fwd+bwd on a tiny batch (library / thread-pool / kernel init), grads dropped again
    with ac:
        model(**{k: v[:2, :8] for k, v in batch.items() if k != "labels"}, labels=batch["labels"][:2]).loss.backward()
    for p in params:
        p.grad = None
    if device == "cuda":
        torch.cuda.synchronize()
    after_load = torch.cuda.memory_allocated() if device == "cuda" else rss_bytes()
    # step 1 allocates the AdamW state; step 2 is the steady state (state + grads + activations)
    for name in ("step1", "step2"):
        with meter.phase(name):
            with ac:
                loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    ph = max(meter.phases.values(), key=lambda x: x["peak_mem_bytes"])
    return {"mode": "full_ft" if full_ft else "lora", "device": device,
            "steps": meter.phases,
            "batch_shape": list(batch["input_ids"].shape),
            "params_total": sum(p.numel() for p in model.parameters()),
            "params_trainable": sum(p.numel() for p in params),
            "after_load_bytes": after_load, "base_bytes": meter.base,
            "step_peak_bytes": ph["peak_mem_bytes"],
            "step_peak_over_loaded_model_bytes": ph["peak_mem_bytes"] - after_load,
            "step_peak_over_base_bytes": ph["peak_mem_delta_bytes"],
            "step_seconds": meter.phases["step2"]["seconds"], "mem_method": meter.method,
            # analytic persistent state (fp32 master weights): weights, grads, AdamW exp_avg + exp_avg_sq
            "analytic_bytes": {"weights": 4 * sum(p.numel() for p in model.parameters()),
                               "grads": 4 * sum(p.numel() for p in params),
                               "adamw_state": 8 * sum(p.numel() for p in params)}}


# =========================================================================== orchestration
def worker(args) -> None:
    import torch

    if args.device == "cpu":
        torch.set_num_threads(torch.get_num_threads())  # torch default (all cores) on both sides
    texts, labels = load_ag_news(Path(args.data_dir) / "train.csv", args.rows)
    eval_texts, eval_labels = load_ag_news(Path(args.data_dir) / "test.csv", args.eval_rows)
    if args._worker in ("baseline", "loraclf"):
        # same-conditions matmul peak (the machine may be shared: the max over all probes is used)
        dts = probe_dtypes(args.device, cuda_fp32=False)
        probe = matmul_peak(args.device, dts, seconds=1.0)
    if args._worker == "baseline":
        res = run_baseline(args, texts, labels, eval_texts, eval_labels)
    elif args._worker == "loraclf":
        res = run_loraclf(args, texts, labels, eval_texts, eval_labels)
    elif args._worker in ("mem_lora", "mem_full"):
        res = run_mem_probe(args, texts, labels, full_ft=(args._worker == "mem_full"))
    else:
        raise SystemExit(f"unknown worker {args._worker}")
    if args._worker in ("baseline", "loraclf"):
        res["matmul_peak_probe"] = probe
    Path(args._result).write_text(json.dumps(res))


LORACLF_SIDES = {"auto": "loraclf", "on": "loraclf_compiled", "off": "loraclf_eager",
                 "graphs": "loraclf_cudagraphs"}  # --compile -> side name
# --compile -> the loraclf runs, in order: under a time limit the runs that matter most are in first. "all" starts
# with the captured eager step (no compile: its figures come within seconds), then eager, then the compiled step,
# whose compile may not finish within a GPU session's limit (bench/FINDINGS_gpu.md).
COMPILE_RUNS = {"both": ("on", "off"), "all": ("graphs", "off", "on")}


def spawn(args, which: str, compile: str = "auto") -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", which, "--_result", out, "--_compile", compile,
           "--model", args.model, "--rows", str(args.rows), "--eval-rows", str(args.eval_rows),
           "--device", args.device, "--data-dir", str(args.data_dir), "--steps", str(args.steps),
           "--eager-steps", str(args.eager_steps), "--lr", str(args.lr),
           "--inference-warmup", "on" if args.inference_warmup else "off"]
    if args.tokenizer:
        cmd += ["--tokenizer", args.tokenizer]
    label = which if which != "loraclf" else f"loraclf (model.compile {compile})"
    print(f"[{time.strftime('%H:%M:%S')}] running {label} ...", flush=True)
    t = time.perf_counter()
    env = dict(os.environ)
    if which.startswith("mem_") and args.device == "cpu":
        # Make RSS follow live tensor memory: a fixed mmap threshold (no glibc dynamic raise) sends
        # every allocation >= 64 KiB to mmap, which is returned to the OS on free, and heap tops are
        # trimmed. Only for the memory probes (it would slow the timed sides down).
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
        env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    # The worker's stderr is echoed as it comes (its "model.compile: ... compiled in N s" lines show where a run
    # stopped by a time limit spent its time); stdout and the last lines of stderr are kept for a failure.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout_lines: list[str] = []
    out_thread = threading.Thread(target=lambda: stdout_lines.extend(p.stdout), daemon=True)
    out_thread.start()
    err_tail: list[str] = []
    for line in p.stderr:
        err_tail = (err_tail + [line.rstrip()])[-15:]
        if line.startswith(("model.compile:", "warning:")):
            print(f"    | {line.rstrip()}", flush=True)
    returncode = p.wait()
    out_thread.join()
    wall = time.perf_counter() - t
    if returncode != 0:
        tail = err_tail or "".join(stdout_lines).strip().splitlines()[-15:]
        print(f"  {which} failed (rc={returncode}, {wall:.0f}s):\n    " + "\n    ".join(tail), flush=True)
        return {"error": tail[-1] if tail else f"rc={returncode}", "wall_seconds": wall}
    res = json.loads(Path(out).read_text())
    os.unlink(out)
    res["wall_seconds"] = wall
    print(f"  {label} done in {wall:.0f}s", flush=True)
    tr = res.get("phases", {}).get("train", {})
    if tr.get("warmup"):
        w = tr["warmup"]
        print(f"  {label}: steady state {fmt(w['steady_samples_per_s'])} samples/s over {tr['plan']['steady_steps']} steps; "
              f"warm-up epoch {fmt(w['warmup_seconds'])} s, one-time cost (compile/capture/first touch) "
              f"{fmt(w['one_time_seconds'])} s", flush=True)
    return res


def derive(side: dict, peaks: dict) -> dict:
    """Per-side metrics from the raw side result."""
    if "error" in side:
        return {}
    geom = side["model_geometry"]
    peak = peaks.get(side["dtype"], {}).get("best_flops")
    out = {}
    for name, ph in side["phases"].items():
        b = ph["batches"]
        real = sum(x["real_tokens"] for x in b)
        fed = sum(x["n"] * x["padded_len"] for x in b)
        fl = flop_counts(geom, b, train=(name == "train"))
        sec = ph["seconds"]
        out[name] = {
            "seconds": sec, "samples": ph["samples"],
            # the train phase carries its steady-state rate (samples after the warm-up epoch / their step time)
            "samples_per_s": ph.get("samples_per_s", ph["samples"] / sec),
            "real_tokens_per_s": real / sec, "padding_share": 1 - real / fed if fed else 0.0,
            "batches": len(b), "useful_flops": fl["useful"], "executed_flops": fl["executed"],
            "useful_flop_per_s": fl["useful"] / sec, "executed_flop_per_s": fl["executed"] / sec,
            "useful_share_of_peak": fl["useful"] / sec / peak if peak else None,
            "executed_share_of_peak": fl["executed"] / sec / peak if peak else None,
            "peak_mem_bytes": ph["peak_mem_bytes"], "peak_mem_delta_bytes": ph["peak_mem_delta_bytes"],
            "accuracy": ph.get("accuracy"),
            "call_wall_seconds": ph.get("train_call_wall_seconds"),
        }
        if "warmup" in ph:
            w = ph["warmup"]
            out[name].update(steady_steps=ph["plan"]["steady_steps"], warmup_seconds=w["warmup_seconds"],
                             one_time_seconds=w["one_time_seconds"],
                             projected_trial_seconds=projected_trial_seconds(w["steady_samples_per_s"], w["one_time_seconds"]))
    return out


def fmt(v, kind="f"):
    if v is None:
        return "-"
    if kind == "mib":
        return f"{v / 2**20:.0f} MiB"
    if kind == "g":
        return f"{v / 1e9:.1f} G"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "x":
        return f"{v:.2f}x"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def print_table(report: dict) -> None:
    d = report["derived"]
    sides = [s for s in report["sides"] if d.get(s)]
    others = [s for s in sides if s != "baseline" and "baseline" in sides]
    rows = []
    for ph in ("train", "evaluate", "predict"):
        for key, label, kind in (("seconds", "steady step seconds" if ph == "train" else "seconds", "f"),
                                 ("steady_steps", "steady optimizer steps", "f"),
                                 ("samples_per_s", "steady samples/s" if ph == "train" else "samples/s", "f"),
                                 ("warmup_seconds", "warm-up epoch seconds", "f"),
                                 ("one_time_seconds", "one-time cost s (compile/capture)", "f"),
                                 ("projected_trial_seconds", "projected 3x108k trial s", "f"),
                                 ("call_wall_seconds", "call wall seconds (context)", "f"),
                                 ("real_tokens_per_s", "real tokens/s", "f"),
                                 ("padding_share", "padding share", "pct"),
                                 ("useful_flop_per_s", "useful FLOP/s", "g"),
                                 ("useful_share_of_peak", "useful % of mm peak", "pct"),
                                 ("executed_share_of_peak", "executed % of mm peak", "pct"),
                                 ("peak_mem_delta_bytes", "peak mem delta", "mib"),
                                 ("accuracy", "accuracy (eval rows)", "f")):
            vals = [d[s].get(ph, {}).get(key) for s in sides]
            if all(v is None for v in vals):
                continue
            ratios = [report["ratios"].get(s, {}).get(ph, {}).get(key) for s in others]
            rows.append([f"{ph} {label}"] + [fmt(v, kind) for v in vals] + [fmt(r, "x") for r in ratios])
    head = ["metric"] + sides + [f"{s}/baseline" for s in others]
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print()
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    print("  ".join("-" * x for x in w))
    for r in rows:
        print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
    print()
    pl = report["plan"]
    print(f"train: every side runs one warm-up epoch ({pl['warmup_epoch_steps']} optimizer steps over {report['env']['rows']} rows:\n"
          "  every batch shape is met, compiled and captured there), then its steady steps cycling the data\n"
          f"  ({pl['steps']}; eager sides {pl['eager_steps']}: baseline, loraclf_eager). Steady seconds / samples/s / tokens/s / FLOP/s cover\n"
          "  the steps after the warm-up epoch: batch assembly, forward, backward, optimizer; loraclf = the run's step_seconds\n"
          "  (metrics.json minus the checkpoint at the first epoch's end), baseline = Trainer epochs timed on_epoch_begin ->\n"
          "  on_epoch_end. One-time cost = the warm-up epoch's time minus its samples at the steady rate. Projected trial =\n"
          f"  {TRIAL_SAMPLES:,} samples (3 epochs x 108,000 rows, micro-batch 32, accumulation 2) at the steady rate + the\n"
          "  one-time cost, for the model measured here. 'call wall seconds' is the whole train call.\n"
          f"accuracy: both sides train at lr {report['plan']['lr']:g} (not the study's 2e-5, at which neither leaves chance\n"
          f"  within the run), linear warmup over {int(LR_WARMUP_SHARE * 100)}% of the steps, cosine decay; scored on the\n"
          "  eval rows (loraclf keeps the weights of its best epoch-end evaluation on 64 of them, as `loraclf train` does).\n"
          "evaluate: tokenized rows -> metrics (both sides). predict: baseline trainer.predict on the tokenized dataset,\n"
          "  loraclf Classifier.predict_proba on raw texts (tokenization included)."
          + (" Both sides ran one untimed pass first (--inference-warmup)." if report["plan"]["inference_warmup"] else "") + "\n"
          "peak mem delta: phase peak over the memory before the model was built (train: the whole call).")
    print()
    for s in sides:
        tr = d[s].get("train", {})
        if tr.get("warmup_seconds") is not None:
            print(f"warm-up {s}: first epoch {fmt(tr['warmup_seconds'])} s, one-time cost (compile/capture/first touch) "
                  f"{fmt(tr['one_time_seconds'])} s; steady {fmt(tr['samples_per_s'])} samples/s over {tr['steady_steps']} steps; "
                  f"projected_trial_seconds {fmt(tr['projected_trial_seconds'])}")
    pk = report["matmul_peak"]
    print("matmul peak (max over probes): " + ", ".join(
        f"{k} {v['best_flops'] / 1e9:.1f} GFLOP/s (n={v['n']}; probes "
        + ", ".join(f"{n} {x / 1e9:.1f}" for n, x in v.get("probes", {}).items()) + ")" for k, v in pk.items()))
    mem = report.get("memory_full_vs_lora", {})
    if mem.get("lora") and mem.get("full_ft") and "error" not in mem["lora"] and "error" not in mem["full_ft"]:
        lo, fu = mem["lora"], mem["full_ft"]
        print(f"train step (peak of 2 steps), batch {lo['batch_shape']}: peak over loaded model  LoRA {fmt(lo['step_peak_over_loaded_model_bytes'], 'mib')}"
              f" ({lo['params_trainable']:,} trainable)  full FT {fmt(fu['step_peak_over_loaded_model_bytes'], 'mib')}"
              f" ({fu['params_trainable']:,} trainable)  -> full/LoRA {fu['step_peak_over_loaded_model_bytes'] / max(1, lo['step_peak_over_loaded_model_bytes']):.2f}x;"
              f" peak over pre-model base  LoRA {fmt(lo['step_peak_over_base_bytes'], 'mib')}  full {fmt(fu['step_peak_over_base_bytes'], 'mib')}")
    for s in report["sides"]:
        side = report["sides"][s]
        if "error" in side:
            print(f"{s}: FAILED: {side['error']}")
            continue
        print(f"{s}: {side.get('dtype')}, wall {side.get('wall_seconds', 0):.0f}s (subprocess incl. imports), "
              f"setup {side.get('setup_seconds')}" + (f", settings {side['settings']}" if side.get("settings") else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model dir / hub id, or 'random-roberta-base' (default: MiniLM)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's; MiniLM for random-roberta-base)")
    ap.add_argument("--rows", type=int, default=3000, help="training rows; one epoch over them is the warm-up")
    ap.add_argument("--eval-rows", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=None,
                    help=f"steady-state optimizer steps after the warm-up epoch, cycling the data "
                         f"(default {CUDA_STEPS} on CUDA, {CPU_STEPS} on CPU)")
    ap.add_argument("--eager-steps", type=int, default=None,
                    help="steady steps of the eager sides, the baseline and loraclf with model.compile off (default: --steps; "
                         "they have nothing to amortize, and fewer keep a GPU check short)")
    ap.add_argument("--lr", type=float, default=BENCH_LR, help="learning rate of both sides (default %(default)g: both learn)")
    ap.add_argument("--compile", default="both", choices=["auto", "on", "off", "graphs", "both", "all"],
                    help="loraclf side: model.compile on, off, cudagraphs (graphs; CUDA only), the library default (auto), "
                         "both (on, off) or all (graphs, on, off)")
    ap.add_argument("--inference-warmup", default=None, choices=["on", "off"],
                    help="an untimed evaluate pass before the timed one (default: on for CUDA, off for CPU)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--skip-loraclf", action="store_true")
    ap.add_argument("--skip-memory", action="store_true", help="skip the full-FT vs LoRA one-step memory probe")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    ap.add_argument("--_result", help=argparse.SUPPRESS)
    ap.add_argument("--_compile", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.model = args.model or default_model()
    args.device = resolve_device(args.device)
    if args.steps is None:
        args.steps = CUDA_STEPS if args.device == "cuda" else CPU_STEPS
    if args.eager_steps is None:
        args.eager_steps = args.steps
    if min(args.steps, args.eager_steps) < 1:
        ap.error("--steps and --eager-steps must be at least 1 (steady state is what is measured)")
    args.inference_warmup = (args.inference_warmup or ("on" if args.device == "cuda" else "off")) == "on"
    if args._worker:
        worker(args)
        return 0

    import platform

    import torch

    t0 = time.perf_counter()
    env = {"loadavg_start": os.getloadavg(), "torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "platform": platform.platform(), "model": args.model,
           "rows": args.rows, "eval_rows": args.eval_rows, "cpu": cpu_name()}
    try:
        import peft
        import transformers

        env["transformers"], env["peft"] = transformers.__version__, peft.__version__
    except ImportError:
        pass
    if args.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    print("env:", env, flush=True)
    plan = {**run_plan(args.rows, args.steps, args.lr), "steps": args.steps, "eager_steps": args.eager_steps,
            "compile": args.compile, "inference_warmup": args.inference_warmup}
    print(f"plan: warm-up epoch of {plan['warmup_epoch_steps']} optimizer steps, then {args.steps} steady steps "
          f"(eager sides {args.eager_steps}); lr {args.lr:g} on both sides", flush=True)
    dtypes = probe_dtypes(args.device)
    peaks = matmul_peak(args.device, dtypes)
    print("matmul peak:", {k: f"{v['best_flops'] / 1e9:.1f} GFLOP/s" for k, v in peaks.items()}, flush=True)

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.stem + ".partial.json")

    def keep(name: str, res: dict) -> None:
        # each side's raw result as soon as it is in: a run stopped by a time limit still leaves them
        sides[name] = res
        partial.write_text(json.dumps({"env": env, "plan": plan, "sides": sides}, indent=1))

    sides: dict = {}
    if not args.skip_baseline:
        keep("baseline", spawn(args, "baseline"))
    if not args.skip_loraclf:
        for mode in COMPILE_RUNS.get(args.compile, (args.compile,)):
            keep(LORACLF_SIDES[mode], spawn(args, "loraclf", mode))
    mem = {}
    if not args.skip_memory:
        mem = {"lora": spawn(args, "mem_lora"), "full_ft": spawn(args, "mem_full")}

    # matmul peak = best rate over all probes (parent start/end, each side's worker): on a shared
    # machine a single probe can land in a busy moment and understate the peak. A side that ran in a
    # dtype no probe covered (e.g. bf16 where the CPU check said no) gets its own probe here.
    ran = sorted({v["dtype"] for v in sides.values() if v.get("dtype")} - set(dtypes))
    probes = [("parent_start", peaks), ("parent_end", matmul_peak(args.device, dtypes + ran, seconds=1.0))]
    probes += [(k, v["matmul_peak_probe"]) for k, v in sides.items() if "matmul_peak_probe" in v]
    peaks = {dt: {**probes[1][1][dt], "best_flops": max(p[dt]["best_flops"] for _, p in probes if dt in p),
                  "probes": {name: p[dt]["best_flops"] for name, p in probes if dt in p}} for dt in dtypes + ran}
    derived = {k: derive(v, peaks) for k, v in sides.items()}
    ratios = {}
    for s, other in derived.items():
        if s == "baseline" or not other or not derived.get("baseline"):
            continue
        ratios[s] = {ph: {k: (other.get(ph, {})[k] / v if isinstance(v, (int, float)) and v and other.get(ph, {}).get(k) is not None else None)
                          for k, v in base.items()}
                     for ph, base in derived["baseline"].items()}
    env["loadavg_end"] = os.getloadavg()
    report = {"env": env, "study_config": STUDY, "plan": plan, "matmul_peak": peaks, "sides": sides, "derived": derived,
              "ratios": ratios, "memory_full_vs_lora": mem,
              "projected_trial_seconds": {k: v.get("train", {}).get("projected_trial_seconds") for k, v in derived.items()},
              "total_wall_seconds": time.perf_counter() - t0,
              "flop_model": "see bench/train_speed.py docstring (frozen Linear 4N/token with LoRA, trainable 6N, "
                            "layer-0 QKV 2N, attention 4L^2d fwd + 8L^2d bwd per layer)"}
    print_table(report)
    print(f"total wall {report['total_wall_seconds']:.0f}s")
    out.write_text(json.dumps(report, indent=2))
    partial.unlink(missing_ok=True)
    print(f"wrote {out}")
    return 0 if all("error" not in v for v in sides.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
