"""Serve trained classifiers over HTTP: many LoRA adapters over one copy of each base model.

    loraclf serve runs/news runs/spam=runs/spam-v2 --port 8000
    curl -s localhost:8000/v1/classify -H 'content-type: application/json' \
         -d '{"adapter": "news", "texts": ["Stocks rally as rates fall"]}'

Design, in the order a request meets it:
- A pure-ASGI middleware rejects bodies over `max_body_bytes` (413) before anything parses them.
- Optional bearer-token auth on /v1/* (hmac.compare_digest against a token read from the environment).
- pydantic models validate the request; their limits come from the settings, so /openapi.json states them.
  Every error, including malformed JSON and unknown routes, is a JSON `{"error", "message"}` with a 4xx.
- The request joins its adapter's queue in the `MicroBatcher`. One collector task takes the oldest waiting
  adapter, waits up to `max_batch_wait_ms` (from the oldest request's arrival) for up to `max_batch_texts`
  texts of that adapter, and runs the batch on one worker thread, off the event loop. A full queue answers
  503 with Retry-After instead of growing without bound.
- The worker switches the shared PeftModel to the adapter (`set_adapter`, under a lock) and scores the texts
  with that run's `Classifier` (its tokenizer and max_length; `run_inference` sorts them into length groups).

Runs whose configs name the same base model share one base: the first adapter is attached with
`PeftModel.from_pretrained`, the others with `load_adapter`. Each adapter keeps its own classification head
(PEFT `modules_to_save`); a head whose label count differs from the base's is pre-shaped from the saved
weights, so a 4-class and a 2-class run share one encoder. Adapters come only from the start-up directories;
requests name them, never paths.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import ipaddress
import logging
import re
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence

import numpy as np
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictStr, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ConfigError, LoraclfError, ModelError
from .inference import Classifier
from .model import load_base_model, load_tokenizer, resolve_device, resolve_precision
from .rundir import LoadedRun, RunDir

# uvicorn configures this logger, so our start-up and warning lines appear beside its own.
log = logging.getLogger("uvicorn.error")

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _opt(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass
class ServeSettings:
    """Server limits and behaviour; every field is a `loraclf serve` option."""

    host: str = _opt("127.0.0.1", "Interface to bind; loopback unless you mean to expose the server.")
    port: int = _opt(8000, "TCP port.")
    max_texts_per_request: int = _opt(64, "Most texts in one request (more: 422).")
    max_text_chars: int = _opt(10_000, "Most characters per text; see long_text.")
    long_text: Literal["truncate", "reject"] = _opt(
        "truncate", "Longer texts: 'truncate' to max_text_chars (the result says truncated=true) or 'reject' (422)."
    )
    max_body_bytes: int = _opt(1_000_000, "Largest request body in bytes (more: 413).")
    max_queue: int = _opt(256, "Requests waiting for inference, all adapters together (more: 503 + Retry-After).")
    max_batch_texts: int = _opt(64, "Most texts gathered into one micro-batch (a larger request runs alone).")
    max_batch_wait_ms: float = _opt(5.0, "Longest a request waits for others to join its batch; 0: only what is already queued.")
    batching: bool = _opt(True, "Gather concurrent requests into micro-batches; off: one request per forward pass.")
    inference_batch_size: int = _opt(32, "Texts per forward pass inside a batch (length-sorted groups).")
    retry_after_s: int = _opt(1, "Retry-After seconds sent with 503 when the queue is full.")
    device: str | None = _opt(None, "cpu, cuda, cuda:1 ... (default: a GPU when present).")
    precision: str = _opt("auto", "auto, fp32, bf16 or fp16.")
    auth_token: str | None = field(default=None, repr=False, metadata={"help": "Bearer token required on /v1/* (None: no auth)."})

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
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            bad("precision", "must be auto, fp32, bf16 or fp16")
        if self.auth_token is not None and len(self.auth_token) < 8:
            problems.append("the auth token is shorter than 8 characters; use a long random token")
        if problems:
            raise ConfigError("serve: " + "; ".join(problems))


def parse_run_specs(items: Sequence[str | Path | tuple[str, str | Path]]) -> list[tuple[str, Path]]:
    """Resolve `RUN_DIR` or `NAME=RUN_DIR` arguments into unique (adapter name, finished run directory) pairs.

    Raises:
        ConfigError: no runs, a name that is not [A-Za-z0-9._-] (max 64), or a name used twice.
        CheckpointError: a directory that is not a finished run.
    """
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


# ---------------------------------------------------------------------------------------------
# Adapters over shared base models


@dataclass
class BaseGroup:
    """One base model in memory and the PEFT adapters attached to it; `lock` guards set_adapter + forward."""

    base_name: str
    model: Any  # PeftModel holding every adapter of this base
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: str | None = None


@dataclass
class Adapter:
    name: str  # public name used by requests
    key: str  # PEFT adapter name inside the shared model (names with '.' are not valid module keys)
    classifier: Classifier  # tokenization + batched inference; its run.model is the group's PeftModel
    group: BaseGroup

    @property
    def label_names(self) -> list[str]:
        return self.classifier.label_names

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities [n, k] with this adapter active (blocking: call from the worker thread)."""
        with self.group.lock:
            if self.group.active != self.key:
                self.group.model.set_adapter(self.key, inference_mode=True)
                self.group.active = self.key
            return self.classifier.predict_proba(texts)


def _shape_heads_for(model: Any, adapter_dir: Path, key: str) -> None:
    """Pre-create adapter `key`'s copies of the saved heads (modules_to_save) shaped like its saved weights.

    PEFT copies the base model's head for each new adapter, so a run with another label count would not load
    into it. ModulesToSaveWrapper keeps an existing copy, so we put one of the right shape there first.
    """
    from peft.utils.other import ModulesToSaveWrapper
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.exists():
        return
    with safe_open(str(weights), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    for wname, wrapper in model.named_modules():
        if not isinstance(wrapper, ModulesToSaveWrapper):
            continue
        prefix = wname + "."
        saved = {k[len(prefix):]: s for k, s in shapes.items() if k.startswith(prefix) and k.endswith(".weight")}
        head, changed = copy.deepcopy(wrapper.original_module), False
        for sub, shape in saved.items():
            mod_path = sub[: -len(".weight")]
            mod = head.get_submodule(mod_path)
            if tuple(mod.weight.shape) == shape:
                continue
            if not isinstance(mod, torch.nn.Linear) or len(shape) != 2:
                raise ModelError(f"adapter '{adapter_dir}': its head layer {mod_path} has shape {shape}, "
                                 f"unlike the base model's {tuple(mod.weight.shape)}; serve it on its own")
            new = torch.nn.Linear(shape[1], shape[0], bias=mod.bias is not None, dtype=mod.weight.dtype, device=mod.weight.device)
            head.set_submodule(mod_path, new)
            changed = True
        if changed:
            wrapper.modules_to_save[key] = head


def load_adapters(specs: Sequence[tuple[str, Path]], settings: ServeSettings, load_base: Any = None) -> dict[str, Adapter]:
    """Load every run, sharing one base model among runs whose config names the same model.name
    (except runs trained with lora.bias != none, which change the base's biases and so get their own copy).

    Args:
        specs: (adapter name, run directory) pairs from `parse_run_specs`.
        settings: device, precision and inference batch size.
        load_base: base-model loader (default `loraclf.model.load_base_model`); tests count calls through it.
    Returns:
        adapter name -> Adapter, in the order given.
    Raises:
        CheckpointError / ModelError: a run, its tokenizer, its adapter or its base model cannot be loaded.
    """
    from peft import PeftModel

    load_base = load_base or load_base_model
    dev = resolve_device(settings.device)
    prec = resolve_precision(settings.precision, dev)
    groups: dict[str, BaseGroup] = {}
    adapters: dict[str, Adapter] = {}
    for i, (name, run_dir) in enumerate(specs):
        run = RunDir(run_dir)
        cfg, labels = run.read_config(), run.label_names()
        tokenizer = load_tokenizer(str(run.tokenizer_dir))
        key, adapter_dir = f"adapter{i}", run.adapter_dir
        # A run that trained the base model's biases (lora.bias != none) changes the base itself: it gets its own.
        share = cfg.model.name if cfg.lora.bias == "none" else f"{cfg.model.name} ({name}: lora.bias={cfg.lora.bias})"
        group = groups.get(share)
        try:
            if group is None:
                base = load_base(cfg.model, labels)
                model = PeftModel.from_pretrained(base, str(adapter_dir), adapter_name=key, is_trainable=False, torch_device="cpu")
                group = groups[share] = BaseGroup(cfg.model.name, model, active=key)
            else:
                _shape_heads_for(group.model, adapter_dir, key)
                group.model.load_adapter(str(adapter_dir), adapter_name=key, is_trainable=False, torch_device="cpu")
        except LoraclfError:
            raise
        except Exception as e:  # PEFT raises ValueError/RuntimeError/KeyError for damaged or mismatched adapters
            raise ModelError(f"cannot load the adapter in '{adapter_dir}' onto base model '{cfg.model.name}': "
                             f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}; retrain the run or serve it alone") from None
        loaded = LoadedRun(run_dir, cfg, group.model, tokenizer, labels, dev, prec)
        adapters[name] = Adapter(name, key, Classifier(loaded, settings.inference_batch_size), group)
    for group in groups.values():
        group.model.to(dev)
        group.model.eval()
    return adapters


# ---------------------------------------------------------------------------------------------
# Micro-batching


class QueueFull(Exception):
    """The batcher holds max_queue requests already."""


class Draining(Exception):
    """The server is shutting down and takes no new work."""


@dataclass
class _Job:
    adapter: Adapter
    texts: list[str]
    future: asyncio.Future
    arrived: float


class MicroBatcher:
    """Gathers concurrent requests per adapter into batches and runs them on one worker thread.

    One worker is deliberate: adapters over one base must not run concurrently (set_adapter is global to the
    model), and torch already spreads one forward pass over every core.
    """

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._pending: dict[str, deque[_Job]] = {}
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loraclf-infer")
        self._task: asyncio.Task | None = None
        self.batches_run = 0  # for /health and tests

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def draining(self) -> bool:
        return self._closing

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="loraclf-batcher")

    def submit(self, adapter: Adapter, texts: list[str]) -> asyncio.Future:
        """Queue `texts` for `adapter`; the future resolves to their probabilities [n, k].

        Raises:
            Draining: shutdown has begun.
            QueueFull: max_queue requests are waiting already.
        """
        if self._closing:
            raise Draining()
        if self._queued >= self.settings.max_queue:
            raise QueueFull()
        loop = asyncio.get_running_loop()
        job = _Job(adapter, texts, loop.create_future(), loop.time())
        self._pending.setdefault(adapter.name, deque()).append(job)
        self._queued += 1
        self._wake.set()
        return job.future

    async def close(self) -> None:
        """Stop taking requests, finish every queued one, then stop the worker."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def _oldest(self) -> str | None:
        heads = [(q[0].arrived, name) for name, q in self._pending.items() if q]
        return min(heads)[1] if heads else None

    def _pending_texts(self, name: str) -> int:
        return sum(len(j.texts) for j in self._pending[name])

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        wait_s = self.settings.max_batch_wait_ms / 1000
        while True:
            name = self._oldest()
            if name is None:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.settings.batching and wait_s > 0:
                # Wait for company only while the worker is idle and the oldest request is young.
                deadline = self._pending[name][0].arrived + wait_s
                while not self._closing and self._pending_texts(name) < self.settings.max_batch_texts:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
            await self._run(self._take(name))

    def _take(self, name: str) -> list[_Job]:
        queue, jobs, n = self._pending[name], [], 0
        while queue and (not jobs or (self.settings.batching and n + len(queue[0].texts) <= self.settings.max_batch_texts)):
            job = queue.popleft()
            self._queued -= 1
            if job.future.done():  # the client went away
                continue
            jobs.append(job)
            n += len(job.texts)
        return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        texts = [t for j in jobs for t in j.texts]
        try:
            probs = await asyncio.get_running_loop().run_in_executor(self._executor, jobs[0].adapter.predict_proba, texts)
        except Exception as e:  # a bug or an out-of-memory: fail these requests, keep serving
            log.exception("inference failed for adapter %s", jobs[0].adapter.name)
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        self.batches_run += 1
        start = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(probs[start : start + len(j.texts)])
            start += len(j.texts)


# ---------------------------------------------------------------------------------------------
# HTTP API


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable code, e.g. unknown_adapter, invalid_request, payload_too_large.")
    message: str = Field(description="What is wrong and how to fix it.")


class Prediction(BaseModel):
    label: str = Field(description="Most probable label name.")
    label_id: int = Field(description="Its index in the adapter's label list.")
    probabilities: dict[str, float] = Field(description="Probability of every label, by name.")
    truncated: bool = Field(description="True when the text was cut to the server's max_text_chars before scoring.")


class ClassifyResponse(BaseModel):
    adapter: str
    predictions: list[Prediction] = Field(description="One per input text, in input order.")


class AdapterInfo(BaseModel):
    name: str
    labels: list[str]
    base_model: str = Field(description="config model.name; adapters with the same base share one copy in memory.")
    max_length: int = Field(description="Tokens per text; longer texts are truncated by the tokenizer.")


class AdaptersResponse(BaseModel):
    adapters: list[AdapterInfo]


class Health(BaseModel):
    status: Literal["ok", "draining"]
    adapters: int
    queued: int = Field(description="Requests waiting for inference.")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _doc(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Malformed JSON.", 401: "Missing or wrong bearer token.", 404: "Unknown adapter.",
            413: "Request body over max_body_bytes.", 422: "Invalid request: wrong types, empty or too many texts, over-long text (reject mode), or no adapter named while several are loaded.",
            503: "Queue full (see Retry-After) or shutting down."}
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}


class BodyLimit:
    """Pure-ASGI middleware: 413 for bodies over `max_bytes`, checked before anything buffers or parses them."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = _error(413, "payload_too_large", f"request body is over the server's limit of {self.max_bytes} bytes; send fewer or shorter texts")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            if not length.isdigit():
                return await _error(400, "invalid_request", "Content-Length is not a number")(scope, receive, send)
            return await too_big(scope, receive, send)
        chunks, total = [], 0
        while True:  # also bounds chunked bodies, which carry no Content-Length
            message = await receive()
            if message["type"] != "http.request":
                return  # client disconnected
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > self.max_bytes:
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed_json", "the request body is not valid JSON; send a JSON object such as {\"texts\": [\"...\"]}"
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return 422, "invalid_request", "; ".join(parts) + more + "; see /docs for the request schema"


def _request_model(settings: ServeSettings, names: list[str]) -> type[BaseModel]:
    # Built per app so that the served schema states this server's rules: maxItems, maxLength in reject mode,
    # `adapter` required exactly when several adapters are loaded, and the loaded names as its enum (other
    # names still get the friendlier 404 unknown_adapter rather than a validation error).
    n, chars = settings.max_texts_per_request, settings.max_text_chars
    if settings.long_text == "reject":
        text_type: Any = Annotated[StrictStr, Field(max_length=chars)]
        rule = f"Texts over {chars} characters are rejected (422)."
    else:
        text_type = StrictStr
        rule = f"Texts over {chars} characters are truncated to that length (truncated=true)."
    return create_model(
        "ClassifyRequest",
        __config__=ConfigDict(extra="forbid"),
        adapter=(StrictStr, Field(description="Adapter name (required: several are loaded).", json_schema_extra={"enum": names}))
        if len(names) > 1
        else (Optional[StrictStr], Field(None, description="Adapter name; optional: one is loaded.", json_schema_extra={"enum": [*names, None]})),
        texts=(list[text_type], Field(min_length=1, max_length=n, description=f"1 to {n} texts. {rule}")),
    )


def create_app(run_dirs: Sequence[str | Path | tuple[str, str | Path]], settings: ServeSettings | None = None,
               load_base: Any = None) -> FastAPI:
    """The HTTP app. Run directories are checked now; models load in the lifespan (at server start-up).

    Args:
        run_dirs: `RUN_DIR`, `NAME=RUN_DIR` or (name, dir) items; the only adapters the server will ever load.
        settings: limits and behaviour (defaults: ServeSettings()).
        load_base: base-model loader passed to `load_adapters` (tests count calls through it).
    Raises:
        ConfigError / CheckpointError: bad names or directories (raised here, before any model loads).
    """
    settings = settings or ServeSettings()
    specs = parse_run_specs(run_dirs)
    ClassifyRequest = _request_model(settings, [name for name, _ in specs])

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        try:
            app.state.adapters = load_adapters(specs, settings, load_base)
        except LoraclfError as e:
            app.state.startup_error = e
            raise
        app.state.batcher = MicroBatcher(settings)
        app.state.batcher.start()
        log.info("serving %s", ", ".join(f"{a.name} ({len(a.label_names)} labels, base {a.group.base_name})" for a in app.state.adapters.values()))
        try:
            yield
        finally:
            await app.state.batcher.close()  # in-flight and queued requests finish first

    app = FastAPI(title="loraclf", summary="LoRA text classifiers: many adapters over shared base models.",
                  version=_version(), lifespan=lifespan)
    app.state.settings, app.state.startup_error = settings, None
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    bearer = HTTPBearer(auto_error=False, description="Bearer token, when the server was started with --auth-token-env.")

    async def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        expected = settings.auth_token
        assert expected is not None
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), expected.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": "Bearer"})

    guard = [Depends(require_token)] if settings.auth_token else []
    auth_doc = (401,) if settings.auth_token else ()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = _validation_message(exc)
        if any(tuple(e.get("loc", ())) == ("body", "adapter") and e.get("type") == "missing" for e in exc.errors()):
            code, message = "adapter_required", f"several adapters are loaded ({', '.join(request.app.state.adapters)}); name one in 'adapter'"
        ctype = request.headers.get("content-type", "")
        if status == 422 and "json" not in ctype.lower():
            message = f"send the body as JSON with 'Content-Type: application/json' (got {ctype or 'no content type'}); " + message
        return _error(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.get("/health", response_model=Health, summary="Liveness and readiness", responses={503: {"model": Health, "description": "Shutting down."}})
    async def health(request: Request) -> Any:
        batcher: MicroBatcher = request.app.state.batcher
        body = Health(status="draining" if batcher.draining else "ok", adapters=len(request.app.state.adapters), queued=batcher.queued)
        return JSONResponse(jsonable_encoder(body), status_code=503) if batcher.draining else body

    @app.get("/v1/adapters", response_model=AdaptersResponse, dependencies=guard, responses=_doc(*auth_doc),
             summary="Loaded adapters, their labels and base models")
    async def list_adapters(request: Request) -> AdaptersResponse:
        return AdaptersResponse(adapters=[
            AdapterInfo(name=a.name, labels=a.label_names, base_model=a.group.base_name, max_length=a.classifier.max_length)
            for a in request.app.state.adapters.values()
        ])

    async def classify(body: Any, request: Request) -> ClassifyResponse:
        adapters: dict[str, Adapter] = request.app.state.adapters
        adapter = _pick_adapter(adapters, body.adapter)  # type: ignore[attr-defined]
        texts = list(body.texts)  # type: ignore[attr-defined]
        limit = settings.max_text_chars
        truncated = [len(t) > limit for t in texts]
        texts = [t[:limit] for t in texts]  # reject mode never gets here with long texts: the schema refused them
        batcher: MicroBatcher = request.app.state.batcher
        try:
            future = batcher.submit(adapter, texts)
        except QueueFull:
            raise ApiError(503, "overloaded", f"the server has {settings.max_queue} requests queued; retry after "
                           f"{settings.retry_after_s} s", {"Retry-After": str(settings.retry_after_s)}) from None
        except Draining:
            raise ApiError(503, "shutting_down", "the server is shutting down; retry on another instance",
                           {"Retry-After": str(settings.retry_after_s)}) from None
        probs = (await future).tolist()
        names = adapter.label_names
        preds = []
        for p, cut in zip(probs, truncated):
            best = max(range(len(p)), key=p.__getitem__)
            preds.append(Prediction(label=names[best], label_id=best, probabilities=dict(zip(names, p)), truncated=cut))
        return ClassifyResponse(adapter=adapter.name, predictions=preds)

    # The request model is built at run time, so the annotation is set here rather than written as a string
    # FastAPI could not resolve.
    classify.__annotations__["body"] = ClassifyRequest
    app.post("/v1/classify", response_model=ClassifyResponse, dependencies=guard,
             responses=_doc(400, *auth_doc, 404, 413, 422, 503), summary="Classify texts with one adapter")(classify)
    return app


def _pick_adapter(adapters: dict[str, Adapter], name: str | None) -> Adapter:
    if name is None:
        if len(adapters) == 1:
            return next(iter(adapters.values()))
        raise ApiError(422, "adapter_required", f"several adapters are loaded ({', '.join(adapters)}); name one in 'adapter'")
    adapter = adapters.get(name)
    if adapter is None:
        raise ApiError(404, "unknown_adapter", f"adapter '{name[:64]}' is not loaded; loaded adapters: {', '.join(adapters)} (GET /v1/adapters)")
    return adapter


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# Running the server


class _HideUserErrorTracebacks(logging.Filter):
    # Starlette logs the full traceback of a failed lifespan; for our own one-line errors (a missing base
    # model, say) the CLI prints `error: ...` instead.
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Traceback") and "loraclf.errors." in msg)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(run_dirs: Sequence[str | Path | tuple[str, str | Path]], settings: ServeSettings, log_level: str = "info",
          access_log: bool = True) -> None:
    """Run the server until SIGINT/SIGTERM; queued and in-flight requests finish first.

    Raises:
        ConfigError / CheckpointError / ModelError: bad run directories or models (before serving).
        LoraclfError: the address cannot be bound.
    """
    import uvicorn

    app = create_app(run_dirs, settings)
    if not is_loopback(settings.host) and not settings.auth_token:
        log.warning("serving on %s without authentication: anyone who can reach it can use it (see --auth-token-env)", settings.host)
    logging.getLogger("uvicorn.error").addFilter(_HideUserErrorTracebacks())
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:
        if app.state.startup_error is not None:
            raise app.state.startup_error from None
        raise LoraclfError(f"cannot serve on {settings.host}:{settings.port} (see the log line above); "
                           "is the port in use? choose another --port") from None
