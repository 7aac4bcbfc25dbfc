"""Experiment behind bench/FINDINGS_cpu.md ("Eager fp32 inference pads to the longest row"): texts/s of one
inference call over evenly spaced AG News test rows for each (pad multiple, pass cost) variant of
`batching.inference_padding`, the variants alternating in one process; labels checked against the first variant.

    python bench/experiments/inference_padding.py RUN_OR_ONNX_EXPORT PRECISION [ROWS] [ROUNDS] [VARIANTS]
    # e.g. fp32 as an AVX2-only CPU runs it (the FINDINGS figures):
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python bench/experiments/inference_padding.py runs/default-minilm fp32 1000 5 8/192,1/192,1/64,1/32

PRECISION onnx scores an `loraclf export --onnx` directory with ONNX Runtime (fp32). VARIANTS: comma-separated
pad/cost pairs (default 8/192,1/64: before and after the change).
"""
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import loraclf.batching as batching
from loraclf.backends import load_classifier
from loraclf.config import InferenceSettings

path, precision = sys.argv[1], sys.argv[2]
rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
variants = [tuple(map(int, v.split("/"))) for v in (sys.argv[5] if len(sys.argv) > 5 else "8/192,1/64").split(",")]

test = list(csv.reader(open(Path(__file__).resolve().parents[3] / "shared/data/ag_news/test.csv", newline="")))
picked = test[:: max(1, len(test) // rows)][:rows]
texts = [f"{title} {body}" for _, title, body in picked]
if precision == "onnx":
    clf = load_classifier(path, InferenceSettings(backend="onnx"))
else:
    clf = load_classifier(path, InferenceSettings(precision=precision, compile="false"))
real = sum(len(ids) for ids in clf.tokenize(texts))


def score(pad: int, cost: int) -> tuple[float, np.ndarray, float]:
    """Seconds, logits and padding share of one call with every pass cut and padded by (pad, cost)."""
    batching.inference_padding = lambda *_args, **_kw: (pad, cost)  # what inference_passes asks for
    started = time.perf_counter()
    logits = clf.logits(texts)
    seconds = time.perf_counter() - started
    passes = batching.inference_passes([len(ids) for ids in clf.tokenize(texts)], clf.batch_size, "cpu", "fp32")
    fed = sum(width * len(pos) for width, pos in passes)
    return seconds, logits, 1 - real / fed


score(*variants[0])  # untimed: first touch of every kernel
times: dict = {v: [] for v in variants}
reference = None
for _ in range(rounds):
    for v in variants:
        seconds, logits, _ = score(*v)
        times[v].append(seconds)
        reference = logits if reference is None else reference
for v in variants:
    _, logits, padding = score(*v)
    print(f"pad {v[0]}, pass cost {v[1]:4d}: median {rows / statistics.median(times[v]):7.1f} texts/s, "
          f"padding {padding:.1%}, labels agree with pad {variants[0][0]}/{variants[0][1]}: "
          f"{(logits.argmax(1) == reference.argmax(1)).mean():.2%}")
