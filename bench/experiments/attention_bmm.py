"""Experiment behind bench/FINDINGS_cpu.md: offline whole-test-set scoring, compiled + frozen, SDPA (flash) vs bmm +
fused softmax attention (a transformers AttentionInterface), alternating rounds in one process.

    python bench/experiments/attention_bmm.py RUN_DIR [ROUNDS]
"""
import csv, sys, time
from pathlib import Path

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from loraclf.inference import Classifier

def bmm_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kw):
    scale = scaling if scaling is not None else query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores.float() * scale, dim=-1).to(value.dtype)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None

AttentionInterface.register("bmm", bmm_attention)
AttentionMaskInterface.register("bmm", sdpa_mask)
run = sys.argv[1]
TEST_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "ag_news" / "test.csv"  # ../shared beside the repo
rows = list(csv.reader(open(TEST_CSV)))
texts = [r[1] + " " + r[2] for r in rows]
labels = np.array([int(r[0]) - 1 for r in rows])
clfs = {}
for name in ["sdpa", "bmm"]:
    c = Classifier.from_run_dir(run, device="cpu", compile=True)
    if name == "bmm":
        c.run.model.set_attn_implementation("bmm")
    t = time.perf_counter(); c.logits(texts[:64]); print(name, "warm", round(time.perf_counter() - t, 1), "s", flush=True)
    clfs[name] = c
res = {k: [] for k in clfs}
out = {}
for rnd in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
    for name, c in clfs.items():
        t = time.perf_counter(); lg = c.logits(texts); dt = time.perf_counter() - t
        res[name].append(len(texts) / dt); out[name] = lg
        print(f"round {rnd} {name}: {len(texts)/dt:.1f} texts/s  acc {100*(lg.argmax(1)==labels).mean():.2f}", flush=True)
print("labels agree", (out["sdpa"].argmax(1) == out["bmm"].argmax(1)).mean(), "max |dlogit|", np.abs(out["sdpa"] - out["bmm"]).max())
for k, v in res.items():
    print(k, "median", round(float(np.median(v)), 1))
