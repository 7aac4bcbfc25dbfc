"""Serve settings and run specs: what the server may do, and which runs it may load.

`ServeSettings` is the single source of the `loraclf serve` options: each field becomes
`--field-name` with the field's type, default and `metadata["help"]` (cli.py builds them). A field
with `metadata["env"]` is given on the command line as `--field-name-env VAR`, the name of an
environment variable holding the value, so secrets stay out of `ps` output.

This module stays light (no torch, no FastAPI): cli.py imports it to build `loraclf --help`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from ..errors import ConfigError

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _opt(default: Any, help_text: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **metadata})


@dataclass
class ServeSettings:
    """Server limits and behaviour; every field is a `loraclf serve` option (`max_queue` -> `--max-queue`)."""

    host: str = _opt("127.0.0.1", "Interface to bind; loopback by default (0.0.0.0 exposes the server: use --auth-token-env).")
    port: int = _opt(8000, "TCP port (0: any free port).")
    max_texts_per_request: int = _opt(64, "Most texts in one request (more: 422).")
    max_text_chars: int = _opt(10_000, "Most characters per text; longer ones are truncated or rejected (see --long-text).")
    long_text: Literal["truncate", "reject"] = _opt(
        "truncate", "Texts over --max-text-chars: 'truncate' them (the result says truncated=true) or 'reject' the request (422)."
    )
    max_body_bytes: int = _opt(1_000_000, "Largest request body in bytes (more: 413).")
    max_queue: int = _opt(256, "Requests waiting for inference, all adapters together, before new ones get 503 + Retry-After.")
    max_batch_texts: int = _opt(64, "Most texts gathered into one micro-batch (a larger request runs alone).")
    max_batch_wait_ms: float = _opt(5.0, "Longest a request waits for others to join its batch (0: only what is already queued).")
    batching: bool = _opt(True, "Gather concurrent requests into micro-batches (off: one request per forward pass).")
    inference_batch_size: int = _opt(32, "Texts per forward pass inside a batch (length-sorted groups).")
    retry_after_s: int = _opt(1, "Retry-After seconds sent with 503 when the queue is full.")
    auth_token: str | None = field(default=None, repr=False, metadata={
        "help": "Bearer token required as 'Authorization: Bearer <token>' on every route but /health, /docs and /openapi.json included (default: no auth).", "env": True})
    device: str | None = _opt(None, "cpu, cuda, cuda:1 ... (default: a GPU when present).")
    precision: str = _opt("auto", "auto, fp32, bf16 or fp16.")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = _opt(
        "info", "uvicorn log level: critical, error, warning, info, debug.")
    access_log: bool = _opt(True, "Log one line per request.")

    def __post_init__(self) -> None:
        problems = []

        def bad(name: str, rule: str) -> None:  # name the field and its --option
            problems.append(f"{name}={getattr(self, name)!r} (--{name.replace('_', '-')}): {rule}")

        for name in ("max_texts_per_request", "max_text_chars", "max_body_bytes", "max_queue", "max_batch_texts",
                     "inference_batch_size", "retry_after_s"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be a positive integer")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            bad("port", "must be 0-65535 (0: any free port)")
        if not 0 <= self.max_batch_wait_ms <= 1000:
            bad("max_batch_wait_ms", "must be between 0 and 1000")
        if self.long_text not in ("truncate", "reject"):
            bad("long_text", "must be 'truncate' or 'reject'")
        if self.log_level not in LOG_LEVELS:
            bad("log_level", "must be critical, error, warning, info or debug")
        if self.auth_token is not None and len(self.auth_token) < 8:
            problems.append("the auth token is shorter than 8 characters; use a long random token")
        # The same device and precision rules as every other inference command (imported here: it needs torch).
        from ..inference import check_inference_options

        try:
            check_inference_options(self.device, self.precision)
        except ConfigError as e:
            problems.append(str(e))
        if problems:
            raise ConfigError("serve: " + "; ".join(problems))


def parse_run_specs(items: Sequence[str | Path | tuple[str, str | Path]]) -> list[tuple[str, Path]]:
    """Resolve `RUN_DIR` or `NAME=RUN_DIR` arguments into unique (adapter name, finished run directory) pairs.

    Raises:
        ConfigError: no runs, a name that is not [A-Za-z0-9._-] (max 64), or a name used twice.
        CheckpointError: a directory that is not a finished run.
    """
    from ..rundir import RunDir  # imports torch; kept out of `loraclf --help`

    if not items:
        raise ConfigError("serve: give at least one run directory (RUN_DIR or NAME=RUN_DIR)")
    specs: list[tuple[str, Path]] = []
    for item in items:
        if isinstance(item, tuple):
            name, path = item[0], Path(item[1])
        else:
            text = str(item)
            head, sep, rest = text.partition("=")
            if sep and ADAPTER_NAME.match(head) and not Path(text).exists():
                name, path = head, Path(rest)
            else:
                path = Path(text)
                name = path.resolve().name
        if not ADAPTER_NAME.match(name):
            raise ConfigError(f"serve: adapter name '{name}' (from '{item}') must be 1-64 letters, digits, '.', '_' or '-'; name it with NAME=RUN_DIR")
        if any(name == n for n, _ in specs):
            raise ConfigError(f"serve: adapter name '{name}' is given twice; name one of them with NAME=RUN_DIR")
        specs.append((name, RunDir(path).check_loadable().path))
    return specs
