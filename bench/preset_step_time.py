#!/usr/bin/env python
"""Training step time of the presets, side by side with the previous default, on the MiniLM protocol.

Each side is a real `loraclf train` (the CLI, a fresh process) for `--steps` optimizer steps on the shared
AG News rows; the figure is the run's own `step_seconds` (training steps only: evaluation, loading and
saving excluded). Sides alternate round by round so a busy machine slows them alike.

    python bench/preset_step_time.py                       # 2 rounds x 60 steps, JSON in bench/results/
    python bench/preset_step_time.py --steps 20 --rounds 1 --json /tmp/p.json

Sides:
  previous-default  the default before the study of the levers (lr 1e-3, plain LoRA r 8 on query+value,
                    no LoRA+, the head at lr, no label smoothing)
  default           configs/default.yaml
  quality           configs/quality.yaml
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchenv import cpu_name, default_model  # bench/ is on sys.path when this runs as a script

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LORACLF_AGNEWS", str(ROOT.parent / "shared" / "data" / "ag_news")))

SIDES: dict[str, list[str]] = {
    "previous-default": ["-c", "default", "lora.r=8", "lora.use_rslora=false", "train.lr=1e-3", "train.head_lr=null",
                         "train.lora_plus_ratio=1", "train.label_smoothing=0"],
    "default": ["-c", "default"],
    "quality": ["-c", "quality"],
}


def run_side(args: list[str], steps: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "loraclf.cli", "train", *args, "--model", default_model(), "--train-file", str(DATA / "train.csv"),
           "--out", str(out), f"train.max_steps={steps}", "train.progress=false", "train.early_stopping_patience=0",
           "data.max_eval_rows=64"]  # the one evaluation at the last step stays short (it is not timed anyway)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"side failed: {' '.join(args)}\n{r.stderr[-2000:]}")
    m = json.loads((out / "metrics.json").read_text())
    return {"step_seconds": m["step_seconds"], "steps": m["global_step"], "samples": m["train_samples"],
            "seconds_per_step": m["step_seconds"] / m["global_step"], "samples_per_s": m["train_samples_per_s"],
            "trainable_params": m["trainable_params"], "precision": m["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "preset_step_time.json")
    a = ap.parse_args()
    runs: dict[str, list[dict]] = {s: [] for s in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(a.rounds):
            for side, args in SIDES.items():
                runs[side].append(run_side(args, a.steps, Path(tmp) / f"{side}-{rnd}"))
                print(f"round {rnd + 1}: {side}: {runs[side][-1]['seconds_per_step']:.3f} s/step", file=sys.stderr)
    base = statistics.median(r["seconds_per_step"] for r in runs["previous-default"])
    summary = {}
    print(f"\nMiniLM protocol, {a.steps} steps x {a.rounds} rounds per side, {cpu_name()}, {os.cpu_count()} CPUs")
    print(f"{'side':<18} {'s/step (median)':>16} {'samples/s':>10} {'x previous':>11} {'trainable':>10}")
    for side, rs in runs.items():
        sps = statistics.median(r["seconds_per_step"] for r in rs)
        summary[side] = {"seconds_per_step": sps, "samples_per_s": statistics.median(r["samples_per_s"] for r in rs),
                         "time_vs_previous_default": sps / base, "trainable_params": rs[0]["trainable_params"],
                         "precision": rs[0]["precision"], "runs": rs}
        print(f"{side:<18} {sps:>16.3f} {summary[side]['samples_per_s']:>10.1f} {sps / base:>10.2f}x {rs[0]['trainable_params']:>10,}")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"cpu": cpu_name(), "cpus": os.cpu_count(), "steps": a.steps, "rounds": a.rounds,
                                  "sides": {s: " ".join(v) for s, v in SIDES.items()}, "results": summary}, indent=2))
    print(f"\nJSON: {a.json}")


if __name__ == "__main__":
    main()
