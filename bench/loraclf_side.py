"""Side (b) of bench/train_speed.py: the loraclf path, measured like the baseline.

Training is `loraclf.train.train` itself (the code `loraclf train` runs) with the study's LoRA
config, batch size, accumulation and sample count, and loraclf's own defaults for everything else
(length-grouped batches, max_length 128, precision auto, SDPA). Evaluation is
`loraclf.inference.run_inference` + `loraclf.metrics.compute_metrics` over the eval rows, prediction
is `loraclf.inference.Classifier.predict_proba` over the same rows. Every batch record below comes
from the library's own batching (`loraclf.batching`), so it describes what the model was fed.

Timing of the train phase comes from the run's own bookkeeping: `step_seconds` (training steps
alone, measured by the recipe: batch assembly, forward, backward, optimizer; no model loading,
tokenization, evaluation, checkpointing or saving) and `train_samples`, read from the checkpoint
written at the end of the first (warm-up) epoch and from metrics.json at the end. Steady state is
the difference: the steps after the first epoch. The wall time of the whole `train()` call is kept
beside it for context.

`compile` ("on", "off", "graphs" or "auto") reaches the library as a config override, `model.compile=true|false`,
`model.compile=cudagraphs` (the eager step captured as CUDA graphs, no torch.compile), or none at all for "auto"
(the library's default).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def _records(token_ids: list[list[int]], passes: list[tuple[int, int, list[int]]]) -> list[dict]:
    """Batch records {n, padded_len, real_tokens, real_sq} for passes (rows fed, width, positions): what loraclf
    actually fed, filler rows included in n."""
    out = []
    for rows, width, b in passes:
        lens = [len(token_ids[i]) for i in b]
        out.append({"n": rows, "padded_len": width, "real_tokens": sum(lens), "real_sq": sum(x * x for x in lens)})
    return out


def _train_passes(token_ids: list[list[int]], batches: list[list[int]], pad_id: int, execution: str,
                  max_length: int, device: str, batch_size: int) -> list[tuple[int, int, list[int]]]:
    """(rows fed, width, positions) of each training micro-batch, as the recipe shapes it: eager pads like
    `pad_batch`; a compiled or captured step runs `batch_size` rows (filler rows included) at its bucket's width
    (`batching.training_widths`, `bucket_width`)."""
    import torch

    from loraclf.batching import pad_batch
    from loraclf.batching import bucket_width, training_widths

    if execution in ("compiled", "cudagraphs"):
        widths = training_widths(max_length, torch.device(device))
        return [(batch_size, bucket_width(max(len(token_ids[i]) for i in b), widths), b) for b in batches]
    # the library's padding rule, not a copy of it
    return [(len(b), int(pad_batch([token_ids[i] for i in b], pad_id)["input_ids"].shape[1]), b) for b in batches]


def _fed_batches(lengths: list[int], t: Any, total_steps: int) -> list[list[list[int]]]:
    """The micro-batches train() feeds, per epoch, up to `total_steps` optimizer steps (loraclf.batching's own)."""
    from loraclf.batching import epoch_batches

    out, steps, epoch = [], 0, 0
    while steps < total_steps:
        batches = epoch_batches(lengths, t.batch_size, t.seed, epoch, t.group_by_length)
        used = []
        for i, b in enumerate(batches):
            used.append(b)
            if i % t.grad_accum == t.grad_accum - 1 or i == len(batches) - 1:
                steps += 1
                if steps >= total_steps:
                    break
        out.append(used)
        epoch += 1
    return out


COMPILE_OVERRIDES = {"on": ["model.compile=true"], "off": ["model.compile=false"], "auto": [],
                     "graphs": ["model.compile=cudagraphs"]}


def run_loraclf(args: Any, texts: list[str], labels: list[int], eval_texts: list[str], eval_labels: list[int],
                *, Meter: Callable, model_geometry: Callable, build_tokenizer_and_model: Callable, STUDY: dict,
                plan: dict, split_warmup: Callable, compile: str = "auto") -> dict:
    import numpy as np
    import torch

    from loraclf.batching import inference_passes, pad_id_of, tokenize
    from loraclf.config import Config, config_from_dict
    from loraclf.data import Splits, TextLabels
    from loraclf.inference import Classifier, run_inference
    from loraclf.metrics import compute_metrics
    from loraclf.rundir import RunDir
    from loraclf.train import train
    from loraclf.train.checkpoint import load_checkpoint

    device = args.device
    meter = Meter(device)
    if device == "cuda":
        torch.cuda.init()
    work = Path(tempfile.mkdtemp(prefix="train_speed_loraclf_"))
    # The same starting weights as the baseline: build them the same way, save, and let loraclf load them.
    tok, plain = build_tokenizer_and_model(args, lora=False)
    model_dir = work / "base"
    plain.save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    del plain

    names = [str(i) for i in range(STUDY["num_labels"])]
    cfg = Config()
    cfg.name, cfg.model.name = "bench", str(model_dir)
    cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout = STUDY["lora_r"], STUDY["lora_alpha"], STUDY["lora_dropout"]
    cfg.lora.target_modules, cfg.lora.bias = list(STUDY["target_modules"]), STUDY["lora_bias"]
    t = cfg.train
    t.batch_size, t.grad_accum = STUDY["per_device_train_batch_size"], STUDY["gradient_accumulation_steps"]
    t.lr, t.weight_decay, t.warmup_steps = plan["lr"], STUDY["weight_decay"], plan["lr_warmup_steps"]
    t.scheduler, t.seed, t.progress = STUDY["lr_scheduler_type"], STUDY["seed"], False
    t.epochs, t.max_steps = plan["epochs"], plan["total_steps"]  # cycles the data: one warm-up epoch + steady steps
    t.eval_every_steps = 0  # evaluations (outside the timed steps) at epoch ends only
    # Config()'s defaults are our recommendation, not the study's: pin what the baseline does.
    cfg.lora.modules_to_save = []  # the baseline trains the head only, not the pooler
    t.eval_batch_size, t.warmup_ratio, t.early_stopping_patience = STUDY["per_device_eval_batch_size"], 0.0, 0
    t.checkpoint_every_steps = 10**9  # the baseline saves nothing either
    t.log_every_steps = 10**9
    cfg = config_from_dict(cfg.to_dict(), COMPILE_OVERRIDES[compile])
    t = cfg.train
    # train() needs a validation split and evaluates it at the end of every epoch: a token one (64 rows).
    # Those evaluations are outside step_seconds, which is what the train phase reports.
    splits = Splits(TextLabels(list(texts), list(labels)), TextLabels(list(eval_texts[:64]), list(eval_labels[:64])), None, names)

    run = RunDir(work / "run")
    meter.mark_base()
    warm: dict = {}

    def at_eval(step: int, m: dict) -> None:
        # The first evaluation ends the warm-up epoch; the checkpoint written just before holds the loop's
        # step_seconds and samples so far.
        if not warm:
            loop = load_checkpoint(run)["loop"]
            warm.update(step=step, step_seconds=loop["step_seconds"], samples=loop["samples_seen"])

    with meter.phase("train"):  # peak memory of the whole call; its wall time is context only
        train(cfg, run.path, splits=splits, on_eval=at_eval)
    call = meter.phases["train"]
    metrics = run.read_metrics()  # metrics.json as written by the run
    if warm.get("step") != plan["warmup_epoch_steps"]:
        raise RuntimeError(f"the first evaluation came at step {warm.get('step')}, not at the end of the first epoch "
                           f"(step {plan['warmup_epoch_steps']})")
    split = split_warmup(metrics["step_seconds"], metrics["train_samples"], warm["step_seconds"], warm["samples"])

    pad_id = pad_id_of(tok)
    ids = tokenize(tok, list(texts), cfg.model.max_length)
    fed = _fed_batches([len(x) for x in ids], t, metrics["global_step"])
    steady_batches = [b for epoch in fed[1:] for b in epoch]

    # Inference as `loraclf evaluate/predict --compile X` runs it: merged, compiled where X (this side's
    # model.compile) says so; a compiled side compiles first, untimed, on its own line.
    clf = Classifier.from_run_dir(run, device=device, compile={"on": True, "off": False}.get(compile, "auto"))
    eval_ids = clf.tokenize(eval_texts)
    compiled = clf.compiled_for(len(eval_ids))
    inference_compile_s = None
    if compiled:
        started = time.perf_counter()
        clf.warm_up()
        inference_compile_s = time.perf_counter() - started
    # The passes run_inference runs (`batching.inference_passes`; on the device a one-row pass runs two rows).
    on_device = compiled or clf.run.device.type == "cuda"
    eval_passes = [(max(2, len(pos)) if on_device else len(pos), width, pos)
                   for width, pos in inference_passes([len(x) for x in eval_ids], clf.batch_size, clf.run.device.type,
                                                      clf.run.precision, max_width=clf.max_length, on_device=on_device)]
    score = lambda: run_inference(clf.run.model, eval_ids, clf.batch_size, clf.run.device, clf.run.precision,  # noqa: E731
                                  clf.pad_id, compiled=compiled, max_length=clf.max_length, merged=clf.run.merged)
    if args.inference_warmup:  # untimed first pass: capture of the inference path, kernel selection
        score()
    with meter.phase("evaluate"):  # token ids prepared outside, as the baseline's evaluate gets a tokenized dataset
        logits = score()
        ev = compute_metrics(logits, eval_labels, names)
    with meter.phase("predict"):  # texts in, probabilities out: includes tokenization
        proba = clf.predict_proba(eval_texts)
    pred_acc = float((proba.argmax(1) == np.asarray(eval_labels)).mean())

    precision = metrics["precision"]
    return {
        "side": "loraclf",
        "device": device,
        "dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32"),
        "optimizer": "torch.optim.AdamW",
        "model_geometry": model_geometry(clf.run.model),
        # Time inside train() but outside its training steps: model load, tokenization, the end-of-epoch
        # evaluation + checkpoint, saving the adapter.
        "setup_seconds": {"train_call_outside_steps": call["seconds"] - metrics["step_seconds"],
                          "of_which_evaluation": metrics["eval_seconds"],
                          "inference_compile": inference_compile_s},
        "inference_compiled": compiled,
        "mem_method": meter.method,
        "mem_base_bytes": meter.base,
        "settings": {"precision": precision, "group_by_length": t.group_by_length, "max_length": cfg.model.max_length,
                     "eval_batch_size": clf.batch_size, "compile_option": compile, "model.compile": cfg.model.compile,
                     # whatever the run itself reports about compiling / capturing (names vary by version)
                     **{k: v for k, v in metrics.items() if any(w in k for w in ("compil", "captur", "graph", "execution"))}},
        "phases": {
            "train": {**call,
                      "seconds": split["steady_seconds"],
                      "seconds_covers": "training steps after the warm-up epoch (step_seconds: metrics.json minus "
                                        "the checkpoint at the end of the first epoch)",
                      "samples": split["steady_samples"],
                      "samples_per_s": split["steady_samples_per_s"],
                      "warmup": split, "plan": plan, "optimizer_steps": metrics["global_step"],
                      "all_steps_samples_per_s": metrics["train_samples_per_s"],
                      "train_call_wall_seconds": call["seconds"],
                      "loop_wall_seconds": metrics["train_seconds"],
                      "batches": _records(ids, _train_passes(ids, steady_batches, pad_id, metrics.get("step_execution", "eager"),
                                                             cfg.model.max_length, device, t.batch_size)),
                      "final_loss": None},
            "evaluate": {**meter.phases["evaluate"], "samples": len(eval_texts),
                         "batches": _records(eval_ids, eval_passes), "accuracy": ev["accuracy"]},
            "predict": {**meter.phases["predict"], "samples": len(eval_texts),
                        "batches": _records(eval_ids, eval_passes), "accuracy": pred_acc},
        },
    }
