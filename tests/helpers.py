"""Plain helpers shared by the test modules (fixtures live in conftest.py, which imports these too)."""
from __future__ import annotations

import socket
import sys

# The real command line, run as a child process the way a user runs it.
LORACLF = [sys.executable, "-m", "loraclf.cli"]

# Quick-training overrides for conftest's tiny RoBERTa (test_tune trains another model and has its own QUICK).
TINY_QUICK = ["train.batch_size=16", "train.grad_accum=1", "train.lr=1e-3", "train.warmup_steps=2",
              "train.progress=false", "model.max_length=64", "train.early_stopping_patience=0"]


def train_losses(model, train_file, out, compile_setting: str, extra: tuple[str, ...] = ()) -> tuple[list[float], dict]:  # noqa: ANN001 - Paths
    """Train conftest's tiny RoBERTa (dropout off: `tiny_model_without_dropout`) for one short epoch with
    `model.compile=compile_setting`; returns the logged per-step train losses and the run's metrics.

    360 training rows in batches of 16: 22 full batches and a short one of 8 (filled with masked copies on the
    fixed-shape paths); accumulation 2; max_length 48. `extra`: more overrides."""
    import json

    from loraclf.config import config_from_dict
    from loraclf.train import train

    overrides = [*TINY_QUICK, "model.max_length=48", "train.epochs=1", "train.grad_accum=2", "train.log_every_steps=1",
                 "lora.dropout=0", "model.precision=fp32", f"model.compile={compile_setting}", "train.eval_batch_size=64", *extra]
    cfg = config_from_dict({"model": {"name": str(model)}, "data": {"train_file": str(train_file)}}, overrides)
    metrics = train(cfg, out, console=False)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return [x["train_loss"] for x in log if "train_loss" in x], metrics


def stopped_and_resumed(cfg, root, stop_at_step: int = 8) -> tuple[dict, dict, list[float], list[float]]:  # noqa: ANN001
    """Train `cfg` uninterrupted into root/full, and again into root/stopped, stopped by an exception at the
    evaluation of `stop_at_step` and then resumed from its checkpoint. Returns the metrics of both runs and the
    per-step train losses each one logged (the resumed run's log holds the steps before and after the stop)."""
    import json

    from loraclf.train import resume, train

    class Stop(Exception):
        pass

    def stop(step: int, metrics: dict) -> None:
        if step == stop_at_step:
            raise Stop

    full = train(cfg, root / "full", console=False)
    try:
        train(cfg, root / "stopped", console=False, on_eval=stop)
    except Stop:
        pass
    else:
        raise AssertionError(f"the run was not stopped at step {stop_at_step}")
    resumed = resume(root / "stopped")

    def losses(run) -> list[float]:  # noqa: ANN001
        return [json.loads(x)["train_loss"] for x in (run / "log.jsonl").read_text().splitlines() if "train_loss" in x]

    return full, resumed, losses(root / "full"), losses(root / "stopped")


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
