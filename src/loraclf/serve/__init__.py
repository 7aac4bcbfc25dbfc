"""Serve trained classifiers over HTTP: many LoRA adapters over one copy of each base model.

    loraclf serve runs/news runs/spam=runs/spam-v2 fast=runs/news@onnx-int8 --port 8000
    curl -s localhost:8000/v1/classify -H 'content-type: application/json' \\
         -d '{"adapter": "news", "texts": ["Stocks rally as rates fall"]}'

Modules, in the order a request meets them:
    settings.py   ServeSettings (every field a `loraclf serve` option), parse_run_specs -> RunSpec
                  ([NAME=]DIR[@torch|@onnx|@onnx-int8]), ADAPTER_NAME
    api.py        create_app: body limit, auth, pydantic models, JSON errors, the routes
    batcher.py    MicroBatcher: per-adapter queues, micro-batches, --workers worker threads, drain on close
    adapters.py   load_adapters: one base model per model.name for torch runs, an Adapter (its Classifier
                  or OnnxClassifier) per run
    server.py     serve(): uvicorn until SIGINT/SIGTERM, one-line start-up errors; is_loopback

Names are imported on first use, so `from loraclf.serve.settings import ServeSettings` (what cli.py
does to build its options) loads neither torch nor FastAPI.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapters import Adapter, BaseGroup, load_adapters
    from .api import create_app
    from .batcher import Draining, MicroBatcher, QueueFull
    from .server import is_loopback, serve
    from .settings import ADAPTER_NAME, RunSpec, ServeSettings, parse_run_specs

_EXPORTS = {
    "ADAPTER_NAME": "settings", "ServeSettings": "settings", "parse_run_specs": "settings", "RunSpec": "settings",
    "Adapter": "adapters", "BaseGroup": "adapters", "load_adapters": "adapters",
    "Draining": "batcher", "MicroBatcher": "batcher", "QueueFull": "batcher",
    "create_app": "api",
    "is_loopback": "server", "serve": "server",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value
