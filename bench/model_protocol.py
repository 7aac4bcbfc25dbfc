#!/usr/bin/env python
"""The AG News protocol for any model directory: one real `loraclf train` run, its figures as a table and JSON.

Protocol: the shared 10,429-row AG News training pool with loraclf's own seeded stratified 90/10
train/validation split (data.val_fraction 0.1, train.seed), keep-best by validation accuracy, and the
full 7,600-row test set scored once at the end with the best adapter. The run is the CLI itself
(`python -m loraclf.cli train`, a fresh process importing this checkout's src/), so it measures what a
user gets from `loraclf train --config PRESET --model DIR ...`.

    python bench/model_protocol.py --model /path/to/all-mpnet-base-v2 --out /tmp/mpnet-run
    python bench/model_protocol.py --model DIR --config quality --out /tmp/r train.epochs=2 lora.r=8

Figures: test and validation accuracy (the run's metrics.json), training seconds (the run's `step_seconds`:
training steps only) and train samples/s, the wall time of the whole command, the resolved settings
from the run's config.yaml and the CPU (name and matmul features). Slow for base-size encoders on a
CPU: run it in the background (`nohup nice -n 19 python bench/model_protocol.py ... &`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchenv import cpu_name, default_model  # bench/ is on sys.path when this runs as a script

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LORACLF_AGNEWS", str(ROOT.parent / "shared" / "data" / "ag_news")))


def run_protocol(model: str, config: str, out: Path, overrides: list[str]) -> dict:
    """Train once on the protocol; the run's figures and settings."""
    cmd = [sys.executable, "-m", "loraclf.cli", "train", "--config", config, "--model", model,
           "--train-file", str(DATA / "train.csv"), "--test-file", str(DATA / "test.csv"), "--out", str(out / "run"),
           "train.progress=false", *overrides]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    started = time.perf_counter()
    with open(out / "train.log", "w") as log:  # the run's own console output, for the record
        log.write(" ".join(cmd) + "\n")
        log.flush()
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    wall = time.perf_counter() - started
    if r.returncode != 0:
        tail = (out / "train.log").read_text()[-2000:]
        raise SystemExit(f"loraclf train failed (exit {r.returncode}); see {out / 'train.log'}:\n{tail}")
    m = json.loads((out / "run" / "metrics.json").read_text())
    import yaml

    settings = yaml.safe_load((out / "run" / "config.yaml").read_text())
    keep = ("test_accuracy", "test_macro_f1", "val_accuracy", "val_macro_f1", "best_step", "global_step", "epochs_run",
            "stopped_early", "n_train", "n_validation", "step_seconds", "train_seconds", "train_samples",
            "train_samples_per_s", "eval_seconds", "precision", "device", "trainable_params", "total_params", "peak_memory_mb")
    return {"command": cmd, "wall_seconds": wall, **{k: m.get(k) for k in keep},
            "settings": {"model": settings.get("model"), "lora": settings.get("lora"), "train": settings.get("train")}}


def table(res: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    rows = [("model", res["model"]), ("config", res["config"]), ("overrides", " ".join(res["overrides"]) or "-"),
            ("test accuracy", pct(res["test_accuracy"])), ("validation accuracy", pct(res["val_accuracy"])),
            ("train rows / validation rows", f"{res['n_train']} / {res['n_validation']}"),
            ("steps (best at)", f"{res['global_step']} ({res['best_step']})"),
            ("training seconds (steps only)", f"{res['step_seconds']:.0f}"),
            ("train samples/s", f"{res['train_samples_per_s']:.1f}"),
            ("wall seconds (whole command)", f"{res['wall_seconds']:.0f}"),
            ("precision / device", f"{res['precision']} / {res['device']}"),
            ("attention / target modules", f"{(res['settings']['model'] or {}).get('attn_implementation')} / "
                                           f"{(res['settings']['lora'] or {}).get('target_modules')}"),
            ("cpu", res["cpu"])]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=default_model(), help="model directory (default: the shared MiniLM)")
    ap.add_argument("--config", default="default", help="preset name or YAML file (default: default)")
    ap.add_argument("--out", type=Path, required=True, help="directory for the run, its log and result.json")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides, as `loraclf train` takes them")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    res = {"model": a.model, "config": a.config, "overrides": a.overrides, "cpu": cpu_name(),
           "cores": len(os.sched_getaffinity(0)), **run_protocol(a.model, a.config, a.out, a.overrides)}
    tmp = a.out / "result.json.tmp"
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(a.out / "result.json")
    print(table(res))
    print(f"\nwrote {a.out / 'result.json'}")


if __name__ == "__main__":
    main()
