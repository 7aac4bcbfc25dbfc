"""What `train` and `tune` check before the heavy libraries (torch, transformers, peft) load, so a bad config,
file, column or model name fails in about a second instead of after their imports."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ..config import Config
    from ..data import Splits


def data_shortcuts(format: Optional[str], text_columns: Optional[str], label_column: Optional[str]) -> dict[str, Any]:
    """`--format`, `--text-columns a,b` and `--label-column` as their data.* fields (None: not given)."""
    cols = None if text_columns is None else [c.strip() for c in text_columns.split(",") if c.strip()]
    return {"data.format": format, "data.text_columns": cols, "data.label_column": label_column}


def named_after_out(out: Optional[Path], overrides: list[str], field: str, given: Any = None) -> Optional[str]:
    """The run's (or study's) name from its --out directory, unless the command line names it (`field=...` or `given`).

    A hidden directory's name is no name (`.x` would name a hidden study directory): None then.
    """
    if out is None or given is not None or any(o.split("=", 1)[0].strip() == field for o in overrides):
        return None
    name = Path(out).expanduser().resolve().name
    return name if name and not name.startswith(".") else None


def shortcut_items(shortcuts: dict[str, Any]) -> list[str]:
    """Option shortcuts as `key=value` overrides; every value JSON-quoted, so a column or path named `null`, `3`
    or `[x]` stays the string it is."""
    return [f"{k}={json.dumps(v)}" for k, v in shortcuts.items() if v is not None]


def check_inputs(cfg: "Config") -> "Splits":
    """Read the data (files, columns, labels) and check the model name; returns the splits for training to reuse.

    Raises:
        DataError, ModelError: one line naming the file, column, label or model.
    """
    from ..data import load_splits  # pandas: only once there is a config to check the data of
    from ..hub import check_model_source

    check_model_source(cfg.model.name)
    return load_splits(cfg.data, cfg.train.seed)
