"""Plain helpers shared by the test modules (fixtures live in conftest.py, which imports these too)."""
from __future__ import annotations

import socket
import sys

# The real command line, run as a child process the way a user runs it.
LORACLF = [sys.executable, "-m", "loraclf.cli"]

# Quick-training overrides for conftest's tiny RoBERTa (test_tune trains another model and has its own QUICK).
TINY_QUICK = ["train.batch_size=16", "train.grad_accum=1", "train.lr=1e-3", "train.warmup_steps=2",
              "train.progress=false", "model.max_length=64", "train.early_stopping_patience=0"]


def one_error_line(result) -> str:  # noqa: ANN001 - a click/typer Result or a CompletedProcess
    """The single `error:` line of a failed command (and nothing else on stderr)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (the caller binds it later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
