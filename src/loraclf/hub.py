"""Reaching the Hugging Face hub: find out quickly when it cannot be reached.

Without this, transformers and datasets retry for a minute or more and print a screen of retry
messages before failing. One short connection attempt tells us; if it fails we switch the
libraries to offline mode, so a cached model or dataset still loads and a missing one fails at once
with our one-line message.
"""
from __future__ import annotations

import functools
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse


@functools.lru_cache(maxsize=None)
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub endpoint opens within `timeout` seconds (or offline mode is off by choice)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def prepare_hub_access() -> bool:
    """Before a hub load: switch transformers/datasets/huggingface_hub to offline mode if the hub is unreachable.

    Returns:
        Whether the hub is reachable.
    """
    if hub_reachable():
        return True
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    # Modules imported earlier read these variables at import time: update their copies too.
    for mod, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                      ("datasets.config", "HF_DATASETS_OFFLINE"), ("transformers.utils.hub", "_is_offline_mode")):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, attr) and not callable(getattr(m, attr)):
            setattr(m, attr, True)
    return False


def check_model_source(name: str) -> None:
    """Fail fast, before transformers loads, on a model name that cannot load: a path that is no model directory,
    a name that is no hub id, or a hub id the hub lacks (when it answers) or the local cache lacks (when it does not).

    Raises:
        ModelError: one line naming the model and the fix.
    """
    from .errors import ModelError

    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"--model '{name}' is a file; give a saved Hugging Face model directory or a hub id")
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise ModelError(f"--model '{name}' has no config.json; check that it is a saved Hugging Face model directory")
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelError(f"--model '{name}' is neither an existing directory nor a hub id (org/name); "
                         "check the path, or pass a local model directory with --model") from None
    if hub_reachable():
        try:
            from huggingface_hub import repo_exists

            exists = repo_exists(name)
        except Exception:  # a slow or refusing hub: the loader reports what it finds
            return
        if not exists:
            raise ModelError(f"cannot load model '{name}': the Hugging Face hub has no such model (or it is private and "
                             "you are not logged in); check the name, or pass a local model directory with --model")
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise ModelError(f"cannot load model '{name}': it is not a local directory, the Hugging Face hub is unreachable "
                         "and the model is not in the local cache; pass a local model directory with --model")
