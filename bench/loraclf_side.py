"""Side (b) of bench/train_speed.py: the loraclf path, measured like the baseline.

Training is `loraclf.train.train` itself (the code `loraclf train` runs) with the study's LoRA
config, batch size, accumulation and sample count, and loraclf's own defaults for everything else
(length-grouped batches, max_length 128, precision auto, SDPA). Evaluation and prediction are
`loraclf.evaluate.run_inference` / `loraclf.predict.Classifier` over the same eval rows.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable


def _records(token_ids: list[list[int]], batches: list[list[int]], pad_multiple: int) -> list[dict]:
    """Batch records {n, padded_len, real_tokens, real_sq} for the batches loraclf actually feeds."""
    out = []
    for b in batches:
        lens = [len(token_ids[i]) for i in b]
        longest = max(lens)
        padded = -(-longest // pad_multiple) * pad_multiple
        out.append({"n": len(b), "padded_len": padded, "real_tokens": sum(lens), "real_sq": sum(x * x for x in lens)})
    return out


def run_loraclf(args: Any, texts: list[str], labels: list[int], eval_texts: list[str], eval_labels: list[int],
                *, Meter: Callable, model_geometry: Callable, build_tokenizer_and_model: Callable, STUDY: dict) -> dict:
    import numpy as np
    import torch

    from loraclf.config import Config
    from loraclf.data import Splits, TextLabels
    from loraclf.evaluate import PAD_MULTIPLE, compute_metrics, run_inference
    from loraclf.predict import Classifier
    from loraclf.train import _tokenize, epoch_batches, train

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
    t.lr, t.weight_decay, t.warmup_steps = STUDY["learning_rate"], STUDY["weight_decay"], STUDY["warmup_steps"]
    t.scheduler, t.seed, t.epochs, t.progress = STUDY["lr_scheduler_type"], STUDY["seed"], 1, False
    # Config()'s defaults are our recommendation, not the study's: pin what the baseline does.
    cfg.lora.modules_to_save = []  # the baseline trains the head only, not the pooler
    t.eval_batch_size, t.warmup_ratio, t.early_stopping_patience = STUDY["per_device_eval_batch_size"], 0.0, 0
    t.checkpoint_every_steps = 10**9  # the baseline saves nothing either
    t.log_every_steps = 10**9
    cfg.model.compile = bool(getattr(args, "compile", False))
    # A token validation split: train() evaluates at the end of the epoch; its time is subtracted below.
    splits = Splits(TextLabels(list(texts), list(labels)), TextLabels(list(eval_texts[:64]), list(eval_labels[:64])), None, names)

    meter.mark_base()
    with meter.phase("train"):
        metrics = train(cfg, work / "run", splits=splits)
    train_phase = meter.phases["train"]
    # Count the loop only (like Trainer's train()), not model loading or the end-of-epoch evaluation.
    train_phase["seconds"] = metrics["train_seconds"] - metrics["eval_seconds"]

    ids = _tokenize(tok, list(texts), cfg.model.max_length)
    train_batches = epoch_batches([len(x) for x in ids], t.batch_size, t.seed, 0, t.group_by_length)

    clf = Classifier.from_run_dir(work / "run", device=device)
    eval_ids = clf.tokenize(eval_texts)
    order = sorted(range(len(eval_ids)), key=lambda i: -len(eval_ids[i]))
    eval_batches = [order[i : i + clf.batch_size] for i in range(0, len(order), clf.batch_size)]
    pad_id = clf.pad_id
    with meter.phase("evaluate"):
        logits = run_inference(clf.run.model, eval_ids, clf.batch_size, clf.run.device, clf.run.precision, pad_id)
        ev = compute_metrics(logits, eval_labels, names)
    with meter.phase("predict"):
        proba = clf.predict_proba(eval_texts)
    pred_acc = float((proba.argmax(1) == np.asarray(eval_labels)).mean())

    precision = metrics["precision"]
    return {
        "side": "loraclf",
        "device": device,
        "dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32"),
        "optimizer": "torch.optim.AdamW",
        "model_geometry": model_geometry(clf.run.model),
        "setup_seconds": {},  # model load, tokenization and the end-of-epoch evaluation are outside the timed loop
        "mem_method": meter.method,
        "mem_base_bytes": meter.base,
        "settings": {"precision": precision, "group_by_length": t.group_by_length, "max_length": cfg.model.max_length,
                     "eval_batch_size": clf.batch_size, "compile": cfg.model.compile},
        "phases": {
            "train": {**train_phase, "samples": len(texts), "batches": _records(ids, train_batches, PAD_MULTIPLE),
                      "final_loss": None, "loop_seconds_reported": metrics["train_seconds"]},
            "evaluate": {**meter.phases["evaluate"], "samples": len(eval_texts),
                         "batches": _records(eval_ids, eval_batches, PAD_MULTIPLE), "accuracy": ev["accuracy"]},
            "predict": {**meter.phases["predict"], "samples": len(eval_texts),
                        "batches": _records(eval_ids, eval_batches, PAD_MULTIPLE), "accuracy": pred_acc},
        },
    }
