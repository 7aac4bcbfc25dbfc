#!/usr/bin/env python
"""CPU inference benchmark: PyTorch fp32, PyTorch bf16, ONNX Runtime fp32 and int8 on one run.

One process, same machine, same run directory, same labelled rows, same batches:

  torch-fp32   loraclf.inference.Classifier, precision fp32 (LoRA merged into the base: `model.merge_for_inference`)
  torch-bf16   the same in bf16 (Linear weights stored in bf16, autocast); only where the CPU has native bf16
               (AMX or AVX512-BF16, `loraclf.model.cpu_supports_bf16`): elsewhere bf16 is emulated and far slower
  torch-*-unmerged  the PeftModel as loaded, LoRA unmerged, fp32 weights cast by autocast at every call: the
               PyTorch path before merging (the baseline of issue 13's "2x the PyTorch path")
  torch-*-compiled  merged and compiled with inductor's freezing, one graph for every shape (`--compile`
               true, as `loraclf serve` runs a lone adapter on CPU); the compile runs at load, reported as load_s
  onnx-fp32    loraclf.onnx_backend.OnnxClassifier on the run's ONNX cache (RUN/onnx, exported first if missing)
  onnx-int8    the same with the dynamically quantized model.int8.onnx

Every backend scores the rows in the batches `loraclf.batching.inference_batches` cuts from the
token lengths (longest first, as `loraclf predict` does). Each batch is one `clf.logits(texts)`
call, timed with tokenization included, as a server's micro-batch would be; two batches are run
first as a warm-up and not counted. The backends are interleaved: all are loaded, and each batch
is run by every backend in turn, so load from other work on a shared machine hits all alike. Reported per backend: samples/s (rows / summed batch time),
p50/p99 batch latency, accuracy, and agreement of labels with torch-fp32 plus the largest logit
difference from it. Threads: torch and ONNX Runtime both get `--threads` (default: the cores
this process may use); the load average is recorded at the start and end, since other work on a
shared machine shows up in the numbers.

With `--whole-set ROUNDS --before-src DIR`, an earlier checkout's `loraclf predict` path (its
`Classifier.from_run_dir(RUN, device="cpu")` with every other setting at its default) scores the whole set too,
in a worker process of its own that waits idle while the other backends run: a baseline from the same
invocation, e.g. the PyTorch path as it was when issue 13 was filed
(`git worktree add /tmp/loraclf-before e192b28`).

Usage:
    python bench/cpu_inference.py --run-dir /tmp/onnx-minilm                  # AG News test set, 7,600 rows
    python bench/cpu_inference.py --run-dir RUN --rows 500 --backends onnx-fp32,onnx-int8
Results: a table on stdout and JSON in bench/results/ (git-ignored) unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchenv import CPU_FEATURES, checkout_env, cpu_features, cpu_model, is_loraclf_checkout, isa_caps  # bench/ is on sys.path when this runs as a script

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ag_news" / "test.csv"
BACKENDS = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8", "torch-fp32-unmerged", "torch-bf16-unmerged",
            "torch-fp32-compiled", "torch-bf16-compiled")
DEFAULT_BACKENDS = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")


def cpu_info() -> dict:
    """CPU model, the instruction-set flags that decide bf16 / int8 speed, and any caps on them in force."""
    present = cpu_features()
    return {"model": cpu_model(), "flags": {f: f in present for f in CPU_FEATURES}, "logical_cpus": os.cpu_count(),
            "isa_caps": isa_caps()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def load(backend: str, run_dir: Path, batch_size: int | None, threads: int):
    """The classifier for a backend, through the library's own constructors."""
    from loraclf.inference import Classifier
    from loraclf.backends import onnx_classifier

    if backend.startswith("torch"):
        precision, variant = (backend.split("-") + [""])[1:3]
        clf = Classifier.from_run_dir(run_dir, device="cpu", precision=precision, batch_size=batch_size,
                                      merge=variant != "unmerged", compile=variant == "compiled")
        clf.warm_up()  # compiles a compiled variant now (load_s); nothing for the others
        return clf
    return onnx_classifier(run_dir, int8=backend == "onnx-int8", batch_size=batch_size, threads=threads)


def bench_interleaved(clfs: dict, texts: list[str], warmup: int) -> dict[str, tuple[np.ndarray, list[float]]]:
    """Per backend: logits for all texts in input order and the seconds each batch took (warm-up excluded).

    The batches are cut once (all backends share the tokenizer) and each is run by every backend in turn."""
    from loraclf.batching import inference_batches

    first = next(iter(clfs.values()))
    lengths = [len(ids) for ids in first.tokenize(texts)]
    batches = inference_batches(lengths, first.batch_size)
    for clf in clfs.values():
        for pos in batches[:warmup]:
            clf.logits([texts[i] for i in pos])
    out = {name: (np.zeros((len(texts), len(clf.label_names)), dtype=np.float32), []) for name, clf in clfs.items()}
    for pos in batches:
        batch = [texts[i] for i in pos]
        for name, clf in clfs.items():
            t0 = time.perf_counter()
            out[name][0][pos] = clf.logits(batch)
            out[name][1].append(time.perf_counter() - t0)
    return out


class BeforeWorker:
    """An earlier checkout's loraclf in a child process (PYTHONPATH=DIR/src), loaded once, scoring the whole set
    each time it is told to; it blocks on its stdin in between, so it takes no CPU from the other backends."""

    def __init__(self, src: Path, run_dir: Path, texts_file: Path, threads: int) -> None:
        import subprocess

        self.src = src
        self.commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip() or src.name
        self.proc = subprocess.Popen([sys.executable, __file__, "--before-worker", str(run_dir), str(texts_file),
                                      str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=checkout_env(src))
        self._expect("ready")

    def _expect(self, word: str) -> list[str]:
        line = self.proc.stdout.readline().split()
        if not line or line[0] != word:
            raise SystemExit(f"the worker for --before-src {self.src} failed (it said {' '.join(line) or 'nothing'})")
        return line[1:]

    def score(self) -> tuple[float, list[int]]:
        """(seconds of one logits call over every text, the predicted label ids)."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        seconds, ids = self._expect("done")
        return float(seconds), [int(i) for i in ids.split(",")]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def before_worker(run_dir: str, texts_file: str, threads: str) -> int:
    """The child of BeforeWorker: runs with the earlier checkout first on sys.path (PYTHONPATH)."""
    import json

    import torch

    torch.set_num_threads(int(threads))
    from loraclf.inference import Classifier

    texts = json.loads(Path(texts_file).read_text())
    clf = Classifier.from_run_dir(run_dir, device="cpu")  # what that checkout's `loraclf predict` loaded
    print("ready", flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        logits = clf.logits(texts)
        seconds = time.perf_counter() - t0
        print("done", seconds, ",".join(str(int(i)) for i in np.asarray(logits).argmax(1)), flush=True)
    return 0


def bench_whole_set(clfs: dict, texts: list[str], rounds: int, befores: dict[str, BeforeWorker] | None = None,
                    labels: np.ndarray | None = None) -> dict[str, dict]:
    """Per torch backend (and per --before-src worker): samples/s of one `clf.logits(texts)` call over every row,
    as `loraclf predict` scores (its own batching and passes), the backends alternating round by round after an
    untimed first round."""
    befores = befores or {}
    seen: dict[str, list[float]] = {b: [] for b in [*befores, *(b for b in clfs if b.startswith("torch"))]}
    predicted: dict[str, np.ndarray] = {}
    for rnd in range(rounds + 1):
        for backend in seen:
            if backend in befores:
                seconds, ids = befores[backend].score()
                predicted[backend] = np.asarray(ids)
            else:
                t0 = time.perf_counter()
                predicted[backend] = clfs[backend].logits(texts).argmax(1)
                seconds = time.perf_counter() - t0
            if rnd:
                seen[backend].append(len(texts) / seconds)
    out = {b: {"samples_per_s": round(float(np.median(v)), 1), "rounds": [round(x, 1) for x in v]} for b, v in seen.items()}
    for b in out:
        if labels is not None:
            out[b]["accuracy"] = round(float(np.mean(predicted[b] == labels)), 4)
        if b in befores:
            out[b]["src"] = str(befores[b].src)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, type=Path, help="A finished loraclf run (MiniLM for the reference numbers).")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="Labelled file in a format loraclf reads (default: AG News test.csv).")
    ap.add_argument("--rows", type=int, default=None, help="Evenly spaced rows of --data to score (default: all).")
    ap.add_argument("--batch-size", type=int, default=None, help="Rows per batch (default: the run's, as `loraclf predict`).")
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime intra-op threads (default: available cores).")
    ap.add_argument("--backends", default=",".join(DEFAULT_BACKENDS), help=f"Comma-separated subset of {', '.join(BACKENDS)}.")
    ap.add_argument("--warmup", type=int, default=2, help="Batches run once before timing.")
    ap.add_argument("--whole-set", type=int, default=0, metavar="ROUNDS",
                    help="Also time each torch backend scoring all rows in one call, as `loraclf predict` does: ROUNDS "
                         "alternating rounds after an untimed one; the median round counts.")
    ap.add_argument("--before-src", type=Path, action="append", default=[], metavar="DIR",
                    help="With --whole-set: also time an earlier loraclf checkout's default predict path (repeatable).")
    ap.add_argument("--out", type=Path, default=None, help="JSON to write (default bench/results/cpu_inference_<time>.json).")
    args = ap.parse_args(argv)
    for src in args.before_src:
        if not is_loraclf_checkout(src):
            ap.error(f"--before-src {src}: not a loraclf checkout (no src/loraclf); e.g. git worktree add {src} COMMIT")
    if args.before_src and not args.whole_set:
        ap.error("--before-src needs --whole-set ROUNDS")

    import torch

    from loraclf.data import data_config_for, read_labeled
    from loraclf.io import write_json
    from loraclf.metrics import compute_metrics
    from loraclf.model import cpu_supports_bf16
    from loraclf.model import available_cores
    from loraclf.onnx_export import ensure_onnx_cache
    from loraclf.rundir import RunDir

    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in wanted if b not in BACKENDS]
    if unknown:
        ap.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    run = RunDir(args.run_dir).check_loadable()
    names = run.label_names()
    data = read_labeled(args.data, data_config_for(run.read_config().data), names)
    idx = np.arange(len(data.texts))
    if args.rows and args.rows < len(idx):
        idx = np.unique(np.linspace(0, len(idx) - 1, args.rows).astype(int))
    texts = [data.texts[i] for i in idx]
    labels = np.asarray(data.labels, dtype=np.int64)[idx]

    skipped = {}
    for backend in [b for b in wanted if b.startswith("torch-bf16")]:
        if not cpu_supports_bf16():
            wanted.remove(backend)
            skipped[backend] = "no native bf16 on this CPU (amx_bf16/avx512_bf16)"
    export_s = None
    if any(b.startswith("onnx") for b in wanted):  # build (or reuse) the cache outside the timings
        t0 = time.perf_counter()
        ensure_onnx_cache(run, int8="onnx-int8" in wanted)
        export_s = round(time.perf_counter() - t0, 2)

    env = {
        "cpu": cpu_info(), "available_cores": available_cores(), "threads": threads, "python": platform.python_version(),
        "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__ if export_s is not None else None,
        "load_average_start": load_average(),
    }
    print(f"cpu: {env['cpu']['model']} | flags: {' '.join(f for f, on in env['cpu']['flags'].items() if on)} | "
          f"threads {threads} | load average {env['load_average_start']}", file=sys.stderr)
    results: dict[str, dict] = {}
    clfs, load_s = {}, {}
    for backend in wanted:
        t0 = time.perf_counter()
        clfs[backend] = load(backend, run.path, args.batch_size, threads)
        load_s[backend] = time.perf_counter() - t0
    batch_sizes = {clf.batch_size for clf in clfs.values()}
    if len(batch_sizes) > 1:
        raise SystemExit(f"the backends chose different batch sizes {sorted(batch_sizes)}; pass --batch-size")
    print(f"{', '.join(wanted)}: {len(texts)} rows, batches of {batch_sizes.pop()}, interleaved ...", file=sys.stderr)
    timed = bench_interleaved(clfs, texts, args.warmup)
    reference = timed["torch-fp32"][0] if "torch-fp32" in timed else None
    for backend in wanted:
        logits, seconds = timed[backend]
        ms = np.array(seconds) * 1000
        row = {
            "rows": len(texts), "batch_size": clfs[backend].batch_size, "batches": len(seconds), "load_s": round(load_s[backend], 2),
            "samples_per_s": round(len(texts) / float(np.sum(seconds)), 1), "total_s": round(float(np.sum(seconds)), 2),
            "p50_batch_ms": round(float(np.percentile(ms, 50)), 1), "p99_batch_ms": round(float(np.percentile(ms, 99)), 1),
            "accuracy": round(compute_metrics(logits, labels, names)["accuracy"], 4),
        }
        if reference is not None:
            row["label_agreement_vs_torch_fp32"] = round(float(np.mean(logits.argmax(1) == reference.argmax(1))), 5)
            row["label_differences_vs_torch_fp32"] = int(np.sum(logits.argmax(1) != reference.argmax(1)))
            row["max_abs_logit_diff_vs_torch_fp32"] = float(np.abs(logits - reference).max())
        if "onnx-fp32" in timed and backend != "onnx-fp32":
            fp32 = timed["onnx-fp32"][0]
            row["label_agreement_vs_onnx_fp32"] = round(float(np.mean(logits.argmax(1) == fp32.argmax(1))), 5)
        results[backend] = row
    whole = {}
    if args.whole_set:
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            texts_file = Path(tmp) / "texts.json"
            texts_file.write_text(json.dumps(texts))
            befores = {}
            for src in args.before_src:
                worker = BeforeWorker(src, run.path, texts_file, threads)
                befores[f"before-{worker.commit}"] = worker
            try:
                whole = bench_whole_set(clfs, texts, args.whole_set, befores, labels)
            finally:
                for worker in befores.values():
                    worker.close()
    del clfs

    # Ratios: to torch fp32, to torch bf16 (what `loraclf predict` runs on a CPU with native bf16), and to the
    # unmerged PeftModel of the fastest precision run (the PyTorch path before merging), where those ran.
    before = next((b for b in ("torch-bf16-unmerged", "torch-fp32-unmerged") if b in results), None)
    bases = {"x fp32": "torch-fp32", "x bf16": "torch-bf16", "x unmerged": before}
    header = (f"{'backend':20s} {'samples/s':>10s} " + " ".join(f"{k:>10s}" for k in bases)
              + f" {'p50 ms':>8s} {'p99 ms':>8s} {'load s':>7s} {'accuracy':>9s} {'agree':>8s} {'max|dlogit|':>12s}")
    print(header)
    for backend, r in results.items():
        agree = f"{r['label_agreement_vs_torch_fp32']:.2%}" if "label_agreement_vs_torch_fp32" in r else "-"
        diff = f"{r['max_abs_logit_diff_vs_torch_fp32']:.1e}" if "max_abs_logit_diff_vs_torch_fp32" in r else "-"
        ratios = " ".join(f"{r['samples_per_s'] / results[b]['samples_per_s']:10.2f}" if b in results else f"{'-':>10s}"
                          for b in bases.values())
        print(f"{backend:20s} {r['samples_per_s']:10.1f} {ratios} {r['p50_batch_ms']:8.1f} {r['p99_batch_ms']:8.1f} "
              f"{r['load_s']:7.1f} {r['accuracy']:9.4f} {agree:>8s} {diff:>12s}")
    for backend, why in skipped.items():
        print(f"{backend:11s} skipped: {why}")
    if whole:
        first = next(iter(whole))
        print(f"\nwhole set in one call ({len(texts)} rows; median of {args.whole_set} rounds), samples/s and x {first}:")
        for key, r in whole.items():
            print(f"{key:22s} {r['samples_per_s']:10.1f} {r['samples_per_s'] / whole[first]['samples_per_s']:8.2f}x   "
                  f"accuracy {r['accuracy']:.4f}   rounds {', '.join(f'{x:.1f}' for x in r['rounds'])}")

    env["load_average_end"] = load_average()
    out = args.out or REPO / "bench" / "results" / f"cpu_inference_{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    write_json(out, {"run_dir": str(run.path), "data": args.data, "rows": len(texts), "onnx_export_s": export_s,
                     "environment": env, "results": results, "skipped": skipped, "whole_set": whole,
                     "command": " ".join([Path(sys.executable).name, *sys.argv])})
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--before-worker":
        sys.exit(before_worker(*sys.argv[2:]))
    sys.exit(main())
