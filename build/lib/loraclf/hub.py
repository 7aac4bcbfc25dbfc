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
