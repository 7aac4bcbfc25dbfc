"""Multi-process runs: `--nproc N` re-launches the same command under torchrun.

torchrun sets RANK/LOCAL_RANK/WORLD_SIZE; accelerate reads them and starts DDP (NCCL on GPUs,
gloo on CPU). Multi-node runs use torchrun directly with its usual rendezvous options, e.g.
`torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m loraclf.cli train ...`.
"""
from __future__ import annotations

import os
import subprocess
import sys


def strip_nproc(argv: list[str]) -> list[str]:
    """argv without `--nproc N` / `--nproc=N` (the children must not relaunch)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run `loraclf <argv>` as `nproc` processes on this machine; return the exit status."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "loraclf.cli", *strip_nproc(argv),
    ]
    env = dict(os.environ)
    # Two processes each using every core would fight over them on a CPU-only machine.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)
