"""The HTTP API: pydantic request and response models, the body-size limit, JSON errors, and `create_app`.

Design, in the order a request meets it:
- Optional bearer-token auth (`BearerAuth`, pure ASGI, outermost): with a token, every path but /health,
  /docs and /openapi.json included, answers 401 unless the Authorization header carries it. It looks at the
  headers alone, so an unauthenticated request learns nothing from its body (no 413, no 422, no schema).
- A pure-ASGI middleware (`BodyLimit`) rejects bodies over `max_body_bytes` (413) before anything parses them.
- pydantic models validate the request; their limits come from the settings, so /openapi.json states them.
  Every error, including malformed JSON and unknown routes, is a JSON `{"error", "message"}` with a 4xx.
- The request joins its adapter's queue in the `MicroBatcher` (batcher.py); a full queue answers 503 with
  Retry-After. Adapters come only from the start-up directories; requests name them, never paths.

Models load in the app's lifespan (at server start-up), not in `create_app`, so building an app is cheap.
"""
from __future__ import annotations

import contextlib
import gc
import hmac
import logging
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictStr, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..model import available_cores, resolve_device
from .adapters import Adapter, load_adapters, warm_up
from .batcher import Draining, MicroBatcher, QueueFull
from .settings import ServeSettings, parse_run_specs, resolve_workers

# uvicorn configures this logger, so our start-up line appears beside its own.
log = logging.getLogger("uvicorn.error")


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
    base_model: str = Field(description="config model.name; torch adapters with the same base share one copy in memory.")
    backend: Literal["torch", "onnx"] = Field(description="What runs this adapter: torch (PyTorch + PEFT) or onnx (ONNX Runtime, CPU).")
    precision: str = Field(description="What its forward pass runs in: fp32, bf16 or fp16 (torch); fp32 or int8 (onnx).")
    max_length: int = Field(description="Tokens per text; longer texts are truncated by the tokenizer.")
    merged: bool = Field(description="torch: LoRA merged into a base of its own (a shared base keeps its adapters unmerged).")
    compiled: bool = Field(description="torch: the forward pass runs compiled (serve --compile).")


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


class BearerAuth:
    """Pure-ASGI middleware: 401 unless `Authorization: Bearer <token>` is sent, on every path but `open_paths`.

    It runs before BodyLimit and the routes, from the headers alone: the body is neither read nor parsed for
    a request without the token, and the schema and docs (which list the adapter names) need the token too.
    """

    def __init__(self, app: Any, token: str, open_paths: frozenset[str] = frozenset({"/health"})) -> None:
        self.app, self.token, self.open_paths = app, token.encode(), open_paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, given = header.partition(b" ")
        # compare_digest on every request, even a malformed header, so the timing tells nothing.
        ok = hmac.compare_digest(given.strip(), self.token)
        if not (ok and scheme.lower() == b"bearer"):
            return await _error(401, "unauthorized", "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                                {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        await self.app(scope, receive, send)


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


def _serves_on_gpu(settings: ServeSettings, specs: Sequence[Any]) -> bool:
    # Torch adapters run on --device (default: a GPU when present); ONNX adapters always on the CPU.
    return any(spec.backend == "torch" for spec in specs) and resolve_device(settings.device).type == "cuda"


def create_app(run_dirs: Sequence[str | Path | tuple[str, str | Path]], settings: ServeSettings | None = None,
               load_base: Any = None) -> FastAPI:
    """The HTTP app. Run directories are checked now; models load in the lifespan (at server start-up).

    Args:
        run_dirs: `[NAME=]DIR[@torch|@onnx|@onnx-int8]` or (name, dir) items; the only adapters the server will ever load.
        settings: limits and behaviour (defaults: ServeSettings()).
        load_base: base-model loader passed to `load_adapters` (tests count calls through it).
    Raises:
        ConfigError / CheckpointError: bad names, backends or directories (raised here, before any model loads).
        ModelError: an onnx adapter, and onnxruntime is not installed.
    """
    settings = settings or ServeSettings()
    specs = parse_run_specs(run_dirs, settings.backend, settings.int8)
    settings = resolve_workers(settings, available_cores(), _serves_on_gpu(settings, specs))
    ClassifyRequest = _request_model(settings, [spec.name for spec in specs])

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        try:
            app.state.adapters = load_adapters(specs, settings, load_base)
        except Exception as e:  # serve() re-raises it once uvicorn has given up
            app.state.startup_error = e
            raise
        warm_up(app.state.adapters.values())
        # What is loaded now (models, tokenizers, compiled graphs: ~600,000 objects) lives as long as the server.
        # Frozen out of the cycle collector's reach, it no longer makes a full collection stall the requests in
        # flight (a pause of a few hundred ms with a compiled model; bench/FINDINGS_cpu.md).
        gc.collect()
        gc.freeze()
        app.state.batcher = MicroBatcher(settings)
        app.state.batcher.start()
        log.info("inference: %d worker(s) x %d thread(s) per forward pass (--workers, --threads)", settings.workers, settings.threads)
        log.info("serving %s", ", ".join(f"{a.name} ({len(a.label_names)} labels, {a.backend} {a.precision}"
                                         f"{', merged' if a.merged else ''}{', compiled' if a.compiled else ''}, base {a.base_model})"
                                         for a in app.state.adapters.values()))
        try:
            yield
        finally:
            await app.state.batcher.close()  # in-flight and queued requests finish first
            gc.unfreeze()  # an app that stops in a longer-lived process (tests, notebooks) leaves nothing pinned

    app = FastAPI(title="loraclf", summary="LoRA text classifiers: many adapters over shared base models.",
                  version=_version(), lifespan=lifespan)
    app.state.settings, app.state.startup_error = settings, None
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.auth_token:
        app.add_middleware(BearerAuth, token=settings.auth_token)  # added last: it runs first

    bearer = HTTPBearer(auto_error=False, description="Bearer token, when the server was started with --auth-token-env.")

    # BearerAuth has checked the token already; this dependency puts the scheme and the 401s into the
    # schema, and keeps the routes guarded should the middleware ever be dropped.
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
            AdapterInfo(name=a.name, labels=a.label_names, base_model=a.base_model, backend=a.backend,  # type: ignore[arg-type]
                        precision=a.precision, max_length=a.classifier.max_length, merged=a.merged, compiled=a.compiled)
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
    from .. import __version__

    return __version__
