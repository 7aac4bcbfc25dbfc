"""Eager inference samples/s against the token budget per pass, the way evaluate/predict/serve score on a GPU.

    python bench/gpu_inference_sweep.py --tokenizer DIR                     # CUDA: random RoBERTa-base, AG News test
    python bench/gpu_inference_sweep.py --tokenizer DIR --device cpu --model random-tiny --rows 300 --batch-sizes 8,16  # dry run

On a GPU every pass runs `loraclf.inference.run_inference_on_device` (ids on the device, length-sorted batches of at
most `batch_size` x `max_length` padded tokens and 8x `batch_size` rows, logits copied back once). Its default
budget is `train.eval_batch_size` (128) x `model.max_length` (128) = 16,384 tokens. This measures what larger and
smaller budgets give on real AG News lengths (issue 10 asks >= 20,000 samples/s for evaluate and predict), with
bf16 weights and autocast as a merged run scores, so that the default can follow a measurement. Each budget:
one untimed pass, then `--reps` timed passes over all rows; peak memory of a pass on CUDA.
Prints a table and writes JSON (default bench/reports/gpu_inference_sweep-<device>.json).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchenv import cpu_name, random_roberta  # noqa: E402
from loraclf.batching import pad_id_of, tokenize  # noqa: E402
from loraclf.inference import run_inference_on_device  # noqa: E402
from loraclf.model import resolve_precision  # noqa: E402


def build_model(name: str, pad_id: int) -> torch.nn.Module:
    sizes = {"random-roberta-base": "base", "random-tiny": "tiny"}
    if name not in sizes:
        raise SystemExit(f"unknown --model {name!r}: random-roberta-base or random-tiny")
    torch.manual_seed(0)
    return random_roberta(sizes[name], num_labels=4, vocab_size=50265, max_position_embeddings=514, pad_token_id=pad_id,
                          type_vocab_size=1)


def read_texts(path: Path, rows: int) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [f"{r[1]} {r[2]}" for _, r in zip(range(rows), csv.reader(f))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random-roberta-base")
    ap.add_argument("--tokenizer", required=True, help="tokenizer directory (e.g. MiniLM's; its ids fit RoBERTa's vocabulary)")
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "ag_news"))
    ap.add_argument("--rows", type=int, default=7600, help="AG News test rows scored per pass")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-sizes", default="64,128,256,512", help="batch_size values: budget = batch_size x max_length")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    device = torch.device(args.device)
    precision = resolve_precision("auto", device)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    texts = read_texts(Path(args.data_dir) / "test.csv", args.rows)
    ids = tokenize(tok, texts, args.max_length)
    pad_id = pad_id_of(tok)
    model = build_model(args.model, pad_id).to(device).eval()
    if precision in ("bf16", "fp16"):
        model.to(torch.bfloat16 if precision == "bf16" else torch.float16)  # as a merged run stores its weights (model.store_frozen_linears)
    tokens = sum(len(x) for x in ids)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    results = []
    for batch_size in [int(x) for x in args.batch_sizes.split(",")]:
        score = lambda: run_inference_on_device(model, ids, batch_size, device, precision, pad_id,  # noqa: E731
                                                max_length=args.max_length, compiled=False)
        score()  # untimed: kernel selection, allocator growth
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        t0 = time.perf_counter()
        for _ in range(args.reps):
            score()
        sync()
        seconds = (time.perf_counter() - t0) / args.reps
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        row = {"batch_size": batch_size, "token_budget": batch_size * args.max_length, "seconds_per_pass_over_rows": seconds,
               "samples_per_s": len(ids) / seconds, "real_tokens_per_s": tokens / seconds, "peak_memory_mib": peak}
        results.append(row)
        print(f"batch_size {batch_size:5d} (budget {row['token_budget']:7,d} tokens): {row['samples_per_s']:10.0f} samples/s, "
              f"{row['real_tokens_per_s'] / 1e6:6.2f} M real tokens/s" + (f", peak {peak:,.0f} MiB" if peak is not None else ""),
              flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {cpu_name()}, {os.cpu_count()} cores"
    report = {"device": name, "torch": torch.__version__, "model": args.model, "precision": precision, "rows": len(ids),
              "mean_tokens": tokens / len(ids), "max_length": args.max_length, "reps": args.reps, "results": results}
    out = args.json or HERE / "reports" / f"gpu_inference_sweep-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    best = max(results, key=lambda r: r["samples_per_s"])
    print(f"{name}: best batch_size {best['batch_size']} ({best['samples_per_s']:.0f} samples/s; mean {tokens / len(ids):.1f} "
          f"tokens per text); json: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
