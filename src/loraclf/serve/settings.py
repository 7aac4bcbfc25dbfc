"""Serve settings and run specs: what the server may do, and which runs it may load.

`ServeSettings` is the single source of the `loraclf serve` options: each field becomes
`--field-name` with the field's type, default and `metadata["help"]` (cli.py builds them). A field
with `metadata["env"]` is given on the command line as `--field-name-env VAR`, the name of an
environment variable holding the value, so secrets stay out of `ps` output.

This module stays light (no torch, no FastAPI): cli.py imports it to build `loraclf --help`.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Sequence

from pydantic import Field, Strict, TypeAdapter, ValidationError

from ..config.inference import InferenceSettings, check_inference_options
from ..config.schema import PYDANTIC_CONFIG, AtLeast1, Bool, Float, Int, NotNegative
from ..errors import CheckpointError, ConfigError

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
# A run spec's optional `@BACKEND` suffix -> (backend, int8); a spec without one takes --backend/--int8.
BACKEND_SUFFIXES = {"torch": ("torch", False), "onnx": ("onnx", False), "onnx-int8": ("onnx", True)}
RUN_SPEC_HELP = ("Runs to serve: [NAME=]DIR[@BACKEND]. Each is an adapter named after its directory (or NAME). "
                 "@torch, @onnx or @onnx-int8 picks that adapter's backend (default: --backend/--int8). "
                 "DIR is a finished run (@onnx exports it once into DIR/onnx) or, with @onnx, the OUT of "
                 "`loraclf export RUN OUT --onnx`. Torch runs with the same base model share one copy of it; "
                 "ONNX adapters need none.")


class RunSpec(NamedTuple):
    """One adapter to serve: its public name, its directory and the backend that runs it."""

    name: str
    path: Path
    backend: str = "torch"  # "torch" or "onnx"
    int8: bool = False  # onnx only: the quantized model.int8.onnx

    @property
    def backend_label(self) -> str:
        """The spec's suffix spelling: torch, onnx or onnx-int8."""
        return "onnx-int8" if self.int8 else self.backend


def _opt(default: Any, help_text: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **metadata})


@dataclass
class ServeSettings:
    """Server limits and behaviour; every field is a `loraclf serve` option (`max_queue` -> `--max-queue`)."""

    host: str = _opt("127.0.0.1", "Interface to bind; loopback by default (0.0.0.0 exposes the server: use --auth-token-env).")
    port: Annotated[Int, Field(ge=0, le=65535)] = _opt(8000, "TCP port (0: any free port).")
    max_texts_per_request: AtLeast1 = _opt(64, "Most texts in one request (more: 422).")
    max_text_chars: AtLeast1 = _opt(10_000, "Most characters per text; longer ones are truncated or rejected (see --long-text).")
    long_text: Literal["truncate", "reject"] = _opt(
        "truncate", "Texts over --max-text-chars: 'truncate' them (the result says truncated=true) or 'reject' the request (422)."
    )
    max_body_bytes: AtLeast1 = _opt(1_000_000, "Largest request body in bytes (more: 413).")
    max_queue: AtLeast1 = _opt(256, "Requests waiting for inference, all adapters together, before new ones get 503 + Retry-After.")
    max_batch_texts: AtLeast1 = _opt(64, "Most texts gathered into one micro-batch (a larger request runs alone).")
    max_batch_wait_ms: Annotated[Float, Field(ge=0, le=1000)] = _opt(5.0, "Longest a request waits for others to join its batch (0: only what is already queued).")
    batching: Bool = _opt(True, "Gather concurrent requests into micro-batches (off: one request per forward pass).")
    inference_batch_size: AtLeast1 = _opt(32, "Texts per forward pass inside a batch (length-sorted groups).")
    workers: NotNegative = _opt(0, "Inference worker threads: micro-batches run side by side (adapters sharing a base take turns); "
                           "0: auto (2 on a CPU with 2+ cores, 1 on a GPU).")
    threads: NotNegative = _opt(0, "Threads per forward pass (torch intra-op threads; ONNX Runtime's intra-op pool); 0: the "
                           "available cores divided among the workers.")
    retry_after_s: AtLeast1 = _opt(1, "Retry-After seconds sent with 503 when the queue is full.")
    auth_token: Annotated[str, Strict(), Field(min_length=8)] | None = field(default=None, repr=False, metadata={
        "help": "Bearer token required as 'Authorization: Bearer <token>' on every route but /health, /docs and /openapi.json included (default: no auth).", "env": True})
    device: str | None = _opt(None, "cpu, cuda, cuda:1 ... (default: a GPU when present); torch adapters only (ONNX runs on the CPU).")
    precision: str = _opt("auto", "auto, fp32, bf16 or fp16; torch adapters only (ONNX runs fp32, or int8).")
    backend: Literal["torch", "onnx"] = _opt(
        "torch", "Backend of run specs without @BACKEND: torch, or onnx (ONNX Runtime on the CPU; a run is exported once into RUN/onnx).")
    int8: Bool = _opt(False, "With --backend onnx: run those adapters' int8 (dynamically quantized) model.")
    compile: Literal["auto", "true", "false"] = _opt(
        "auto", "Compile torch adapters' forward pass at start-up (torch.compile, one graph for every batch shape): auto "
        "(on CPUs in bf16 for a base serving one adapter, merged and frozen, for ~15 s of start-up on 2 cores; not in fp32, "
        "not on GPUs), true or false.")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = _opt(
        "info", "uvicorn log level: critical, error, warning, info, debug.")
    access_log: Bool = _opt(True, "Log one line per request.")

    def __post_init__(self) -> None:
        # pydantic checks each field against its annotation (strict types, ranges, choices; NaN refused), and
        # every problem is gathered into one error line naming the field and its --option.
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                _field_adapter(f.name).validate_python(value)
            except ValidationError as e:
                rule = e.errors()[0]["msg"]
                if f.name == "auth_token":
                    problems.append("the auth token is shorter than 8 characters; use a long random token")
                else:
                    problems.append(f"{f.name}={value!r} (--{f.name.replace('_', '-')}): {rule[0].lower() + rule[1:]}")
        # The same rules as every other inference command (`InferenceSettings`): --device and --precision apply
        # to torch adapters; --backend/--int8 are checked on their own, since a run spec may pick its own backend.
        for args in ((self.device, self.precision), (None, "auto", self.backend, self.int8)):
            try:
                check_inference_options(*args)
            except ConfigError as e:
                problems.append(str(e) + (" (or pick ONNX per adapter with RUN_DIR@onnx-int8)" if "--int8" in str(e) else ""))
        if problems:
            raise ConfigError("serve: " + "; ".join(problems))

    @property
    def inference(self) -> InferenceSettings:
        """What the torch adapters run with (an ONNX adapter takes its backend from --backend/--int8 or its spec)."""
        return InferenceSettings(device=self.device, precision=self.precision, batch_size=self.inference_batch_size,
                                 compile=self.compile)


@functools.cache
def _field_adapter(name: str) -> TypeAdapter:
    """pydantic's validator for one ServeSettings field's annotation (with the config sections' settings)."""
    return TypeAdapter(typing.get_type_hints(ServeSettings, include_extras=True)[name], config=PYDANTIC_CONFIG)


# Serve --workers auto on a CPU: two workers, the cores split between them, since one pass on one thread took only a
# little longer than on two, so two passes side by side get more done (bench/FINDINGS_cpu.md, serve_load reports).
CPU_AUTO_WORKERS = 2


def resolve_workers(settings: ServeSettings, cores: int, on_gpu: bool) -> ServeSettings:
    """`settings` with --workers and --threads 0 (auto) made concrete for `cores` available cores."""
    import dataclasses

    workers = settings.workers or (1 if on_gpu else max(1, min(CPU_AUTO_WORKERS, cores)))
    threads = settings.threads or max(1, cores // workers)
    return dataclasses.replace(settings, workers=workers, threads=threads)


def _split_backend(text: str, item: object) -> tuple[str, tuple[str, bool] | None]:
    """`DIR@BACKEND` -> (DIR, (backend, int8)); a path that exists as written keeps its '@'."""
    head, sep, suffix = text.rpartition("@")
    if not sep or not head or "/" in suffix or Path(text).exists():
        return text, None
    if suffix not in BACKEND_SUFFIXES:
        raise ConfigError(f"serve: unknown backend '@{suffix}' in '{item}'; use @{', @'.join(BACKEND_SUFFIXES)} (or none: --backend)")
    return head, BACKEND_SUFFIXES[suffix]


def parse_run_specs(items: Sequence[str | Path | tuple[str, str | Path]], backend: str = "torch", int8: bool = False) -> list[RunSpec]:
    """Resolve `[NAME=]DIR[@BACKEND]` arguments into unique RunSpecs, each directory checked for its backend.

    Args:
        items: `DIR`, `NAME=DIR`, either with `@torch`, `@onnx` or `@onnx-int8`, or (name, dir) pairs.
        backend, int8: what a spec without `@BACKEND` gets (the settings' --backend and --int8).
    Raises:
        ConfigError: no runs, a name that is not [A-Za-z0-9._-] (max 64), a name used twice, an unknown backend.
        CheckpointError: a directory without its backend's files (a finished run; for onnx, or an ONNX export).
        ModelError: an onnx adapter, and onnxruntime is not installed.
    """
    from ..backends import open_model_dir  # imports torch; kept out of `loraclf --help`

    if not items:
        raise ConfigError("serve: give at least one run directory (RUN_DIR or NAME=RUN_DIR)")
    specs: list[RunSpec] = []
    for item in items:
        if isinstance(item, tuple):
            name, text = item[0], str(item[1])
        else:
            head, sep, rest = str(item).partition("=")
            named = sep and ADAPTER_NAME.match(head) and not Path(str(item)).exists()
            name, text = (head, rest) if named else ("", str(item))
        text, chosen = _split_backend(text, item)
        path = Path(text)
        name = name or path.resolve().name
        if not ADAPTER_NAME.match(name):
            raise ConfigError(f"serve: adapter name '{name}' (from '{item}') must be 1-64 letters, digits, '.', '_' or '-'; name it with NAME=RUN_DIR")
        if any(name == s.name for s in specs):
            raise ConfigError(f"serve: adapter name '{name}' is given twice; name one of them with NAME=RUN_DIR")
        spec_backend, spec_int8 = chosen or (backend, int8)
        try:
            checked = open_model_dir(path, spec_backend, spec_int8)
        except CheckpointError as e:
            # open_model_dir speaks in predict's options; a run spec picks its backend with a suffix.
            raise CheckpointError(str(e).replace("add --backend onnx", f"serve it as '{item}@onnx'")) from None
        specs.append(RunSpec(name, checked.path, spec_backend, spec_int8))
    return specs
