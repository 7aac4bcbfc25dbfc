"""Running the server: uvicorn around `create_app`, until SIGINT/SIGTERM.

uvicorn handles the signals: it stops accepting connections, and the app's lifespan then drains the
`MicroBatcher` (queued and in-flight requests finish) before the process exits. Start-up failures
(a missing base model, a port in use) become one-line LoraclfErrors rather than tracebacks.
"""
from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Sequence

from ..errors import LoraclfError
from .api import create_app
from .settings import ServeSettings

log = logging.getLogger("uvicorn.error")


class _HideUserErrorTracebacks(logging.Filter):
    # Starlette logs the full traceback of a failed lifespan; for our own one-line errors (a missing base
    # model, say) the CLI prints `error: ...` instead.
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Traceback") and "loraclf.errors." in msg)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(run_dirs: Sequence[str | Path | tuple[str, str | Path]], settings: ServeSettings) -> None:
    """Run the server until SIGINT/SIGTERM; queued and in-flight requests finish first.

    Args:
        run_dirs: `[NAME=]DIR[@torch|@onnx|@onnx-int8]` or (name, dir) items; the only adapters the server will load.
        settings: limits and behaviour, including the address, log level and access log.

    Raises:
        ConfigError / CheckpointError / ModelError: bad run directories or models (before serving).
        LoraclfError: the address cannot be bound.
        Anything else raised while loading the models is a bug and is re-raised as it is.
    """
    import uvicorn

    app = create_app(run_dirs, settings)
    if not is_loopback(settings.host) and not settings.auth_token:
        log.warning("serving on %s without authentication: anyone who can reach it can use it (see --auth-token-env)", settings.host)
    logging.getLogger("uvicorn.error").addFilter(_HideUserErrorTracebacks())
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=settings.access_log,
                            lifespan="on", timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:
        error = app.state.startup_error
        if isinstance(error, LoraclfError):
            raise error from None  # one `error:` line
        if error is not None:
            raise error  # a bug while loading the models: it keeps its traceback (and is no port problem)
        raise LoraclfError(f"cannot serve on {settings.host}:{settings.port} (see the log line above); "
                           "is the port in use? choose another --port") from None
