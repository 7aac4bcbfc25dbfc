#!/usr/bin/env python
"""Trials per hour of `loraclf tune --workers K` on one machine, for several K: is K > 1 worth it?

For each K, one fresh study of --trials trials (the config's search space: the study's own table in
configs/seed.yaml by default) runs as the user would run it, `loraclf tune --workers K`, and is timed
from the command's start to its end: worker start-up (imports, CUDA context) is part of the cost. With
one GPU the K workers share it, side by side (each its own process); on CPU the cores are split.

Every K runs the same trials: the sampler's start-up trials are raised to --trials, so each trial's
parameters depend only on the sampler seed and its number (loraclf's TrialSeededTPE), not on which
trials finished first. Pruning is what the config says (seed.yaml: none, as the study ran).

Per K: wall seconds of the command, finished trials, trials/hour, speed-up over the first K, and the
trials' own median duration (how much each trial slows down when it shares the device).

    python bench/tune_workers.py --model MODEL_DIR --train-file train.csv                      # K = 1,2,4, 8 trials
    python bench/tune_workers.py --model M --train-file F --workers 1,2 --trials 4 data.max_train_rows=400  # smoke
    (extra KEY=VALUE arguments go to every `loraclf tune` as config overrides)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "tune_workers.json"
# A study-shaped trial kept short: a few thousand rows instead of 108,000 (the speed-up from sharing the
# device is what is measured, not a trial's length).
DEFAULT_OVERRIDES = ["data.max_train_rows=2000", "data.max_eval_rows=500"]


def study_figures(study_dir: Path, name: str) -> dict:
    """States and durations of the study's trials, read from its SQLite storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}").get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                 if t.datetime_complete is not None and t.datetime_start is not None and t.state.name in ("COMPLETE", "PRUNED")]
    workers = {t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}
    errors = sorted({str(t.user_attrs["error"]) for t in trials if t.user_attrs.get("error")})
    return {"states": states, "finished": states.get("complete", 0) + states.get("pruned", 0),
            "trial_seconds_median": statistics.median(durations) if durations else None,
            "trial_seconds_sum": sum(durations), "workers_seen": len(workers),
            "best_val_accuracy": max((t.value for t in trials if t.value is not None), default=None),
            "trial_errors": errors}


def _stop(p: subprocess.Popen) -> None:
    """SIGTERM to the command's process group (its workers requeue their trials and exit), SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:  # the group is gone once every worker has exited, not only the parent
            p.poll()
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def run_one(args, k: int, work: Path, overrides: list[str]) -> dict:
    name = f"workers{k}"
    study_dir = work / name
    cmd = [sys.executable, "-m", "loraclf.cli", "tune", "--config", args.config, "--model", args.model,
           "--train-file", args.train_file, "--trials", str(args.trials), "--workers", str(k), "--study-name", name,
           "--out", str(study_dir), f"tune.sampler_startup_trials={args.trials}", *overrides]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"[{time.strftime('%H:%M:%S')}] K={k}: {' '.join(cmd[3:])}", flush=True)
    t0 = time.perf_counter()
    # Its own process group, so a timeout (ours, or a SIGTERM from an outer `timeout`) stops the workers too:
    # left running they would share the GPU with the next K.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_stop(p), sys.exit(143)))
    try:
        _, err = p.communicate(timeout=args.timeout)
        rc, tail = p.returncode, (err or "").strip().splitlines()[-5:]
    except subprocess.TimeoutExpired:
        _stop(p)
        _, err = p.communicate()
        rc, tail = "timeout", [f"stopped after --timeout {args.timeout}s"] + (err or "").strip().splitlines()[-3:]
    finally:
        signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - t0
    res: dict = {"workers": k, "returncode": rc, "wall_seconds": wall}
    try:
        res.update(study_figures(study_dir, name))
    except Exception as e:  # no study (the command failed before creating it)
        res["error"] = f"{type(e).__name__}: {e}"
    if rc != 0 or not res.get("finished"):
        res["stderr_tail"] = tail
        print("  " + "\n  ".join(tail), flush=True)
    res["trials_per_hour"] = res.get("finished", 0) / wall * 3600 if wall > 0 else None
    print(f"  K={k}: {res.get('finished', 0)} finished in {wall:.1f}s -> {res['trials_per_hour']:.1f} trials/hour "
          f"(median trial {res.get('trial_seconds_median') or 0:.1f}s, {res.get('workers_seen', 0)} workers ran trials)", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory (or hub id)")
    ap.add_argument("--train-file", required=True, help="training CSV (validation is split off it)")
    ap.add_argument("--config", default="seed", help="config or preset with the search space (default: seed, the study's)")
    ap.add_argument("--workers", default="1,2,4", help="comma-separated K values (default 1,2,4)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per K before its command is stopped")
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    ap.add_argument("overrides", nargs="*", help=f"KEY=VALUE config overrides for every run (default: {' '.join(DEFAULT_OVERRIDES)})")
    args = ap.parse_args(argv)
    ks = [int(x) for x in args.workers.split(",") if x.strip()]
    overrides = args.overrides or DEFAULT_OVERRIDES
    import torch

    env = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "model": args.model, "config": args.config, "trials": args.trials,
           "overrides": overrides, "loadavg_start": os.getloadavg()}
    print("env:", env, flush=True)
    with tempfile.TemporaryDirectory(prefix="tune_workers_") as tmp:
        runs = [run_one(args, k, Path(tmp), overrides) for k in ks]
    env["loadavg_end"] = os.getloadavg()
    base = runs[0].get("trials_per_hour") if runs else None
    for r in runs:
        r["speedup"] = r["trials_per_hour"] / base if base and r.get("trials_per_hour") else None
    print()
    head = ["K", "finished", "wall s", "trials/hour", "speed-up", "median trial s", "best val acc", "status"]
    rows = [[str(r["workers"]), str(r.get("finished", 0)), f"{r['wall_seconds']:.1f}", f"{r['trials_per_hour']:.1f}",
             f"{r['speedup']:.2f}x" if r.get("speedup") else "-",
             f"{r['trial_seconds_median']:.1f}" if r.get("trial_seconds_median") else "-",
             f"{r['best_val_accuracy']:.4f}" if r.get("best_val_accuracy") is not None else "-",
             ("ok" if r.get("finished") == args.trials else "trials failed") if r["returncode"] == 0
             else f"rc {r['returncode']}"] for r in runs]
    w = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    for line in [head, ["-" * x for x in w], *rows]:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(line)))
    print(f"\n{args.trials} trials of the {args.config} space per K, each K a fresh `loraclf tune --workers K` timed from start to "
          f"end (worker start-up included); speed-up over K={ks[0]}. Overrides: {' '.join(overrides)}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": env, "runs": runs}, indent=2))
    print(f"wrote {out}")
    return 0 if all(r["returncode"] == 0 and r.get("finished") == args.trials for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
