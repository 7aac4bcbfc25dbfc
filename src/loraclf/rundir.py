"""The run directory: the one place that knows its layout.

`loraclf train` writes a run; every other command reads it through `RunDir`:

    adapter/        PEFT adapter (safetensors) with the trained classification head
    tokenizer/      the tokenizer
    labels.json     {"label_names": [...]}, in id order
    config.yaml     the resolved config
    metrics.json    final metrics; its presence means the run finished
    log.jsonl       one JSON row per logged step / evaluation
    checkpoint.pt   resumable state (while training, and kept after)
    eval/<stem>/    `loraclf evaluate` outputs per data file
    onnx/           ONNX export cache of `--backend onnx` (an ONNX export directory, rebuilt when the adapter changes)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import Config, config_from_dict, read_yaml
from .errors import CheckpointError, RunDirError
from .io import atomic_dir, atomic_write, disk_full_as_error, read_json, write_json, write_yaml

ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
EVAL_DIR = "eval"
REPORT_FILE = "report.html"
CURVES_FILE = "learning_curves.png"
ONNX_DIR = "onnx"
EXPORT_INFO_FILE = "loraclf_export.json"  # written by `loraclf export` (every kind) and in RUN/onnx


RUN_MARKERS = (CONFIG_FILE, LABELS_FILE, LOG_FILE, CHECKPOINT_FILE, METRICS_FILE)


def check_replaceable(path: str | Path, option: str, markers: tuple[str, ...] = RUN_MARKERS, what: str = "loraclf run") -> None:
    """Raise RunDirError unless `--overwrite` may replace `path`: an empty directory, or one holding `markers`
    of a loraclf run (or export); never `.`, a directory holding the current one, or the home directory."""
    p = Path(path).expanduser().resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if p == cwd or p in cwd.parents:
        raise RunDirError(f"--overwrite would delete '{path}', which holds the current directory; give {option} a directory of its own")
    if p == home or p in home.parents:
        raise RunDirError(f"--overwrite would delete '{path}', which holds your home directory; give {option} a directory of its own")
    if p.exists() and not p.is_dir():
        raise RunDirError(f"{option} '{path}' is a file, not a directory; give a directory path")
    if not p.is_dir() or not any(p.iterdir()):
        return
    first, others = markers[0], markers[1:]
    if (p / first).is_file() and (not others or any((p / m).exists() for m in others)):
        return
    raise RunDirError(f"--overwrite only replaces a {what} directory, and '{path}' is not one (no {first}"
                      f"{' beside ' + ' or '.join(others) if others else ''}); choose another {option} or remove it yourself")


@dataclass
class LoadedRun:
    """A trained classifier ready for inference."""

    run_dir: Path
    config: Config
    model: Any  # PeftModel in eval mode, or (merged=True) a plain transformers model
    tokenizer: Any
    label_names: list[str]
    device: torch.device
    precision: str
    merged: bool = False  # LoRA merged into the base, Linear weights in the compute dtype: inference only


class RunDir:
    """A run directory's paths and the reading and writing of its files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"

    def __str__(self) -> str:
        return str(self.path)

    # -- paths
    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER_DIR

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER_DIR

    @property
    def labels_path(self) -> Path:
        return self.path / LABELS_FILE

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def onnx_dir(self) -> Path:
        return self.path / ONNX_DIR

    def eval_dir(self, data_path: str) -> Path:
        """RUN/eval/<data file stem> ("stdin" for standard input)."""
        stem = "stdin" if data_path == "-" else Path(data_path).stem or "data"
        return self.path / EVAL_DIR / stem

    # -- state
    def missing_reason(self) -> str:
        return "is a file, not a directory" if self.path.exists() else "does not exist"

    def is_finished(self) -> bool:
        return self.metrics_path.is_file()

    def is_nonempty(self) -> bool:
        return self.path.is_dir() and any(self.path.iterdir())

    def is_unstarted(self) -> bool:
        """A run stopped before its first checkpoint: only the files written at its start, nothing to resume."""
        names = {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        return {CONFIG_FILE, LABELS_FILE} <= names <= {CONFIG_FILE, LABELS_FILE, LOG_FILE}

    def check_loadable(self) -> "RunDir":
        """Raise CheckpointError unless the directory holds a loadable run (adapter, tokenizer, labels, config)."""
        if not self.path.is_dir():
            raise CheckpointError(f"run directory '{self.path}' {self.missing_reason()}; pass the --out directory of a `loraclf train` run")
        needed = {
            CONFIG_FILE: "config",
            LABELS_FILE: "label names",
            f"{ADAPTER_DIR}/adapter_config.json": "adapter",
            TOKENIZER_DIR: "tokenizer",
        }
        for rel, what in needed.items():
            if not (self.path / rel).exists():
                raise CheckpointError(
                    f"'{self.path}' is not a finished loraclf run: its {what} ({rel}) is missing; "
                    "train it to the end (or resume it with `loraclf train --resume`)"
                )
        return self

    # -- config, labels, metrics
    def read_config(self) -> Config:
        return config_from_dict(read_yaml(self.config_path))

    def write_config(self, cfg: Config) -> None:
        write_yaml(self.config_path, cfg.to_dict())

    def label_names(self) -> list[str]:
        try:
            names = read_json(self.labels_path)["label_names"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"'{self.labels_path}' is unreadable; the run directory is damaged, retrain it") from None
        return [str(n) for n in names]

    def write_labels(self, names: list[str]) -> None:
        write_json(self.labels_path, {"label_names": list(names)})

    def read_metrics(self) -> dict[str, Any] | None:
        """metrics.json, or None while the run has not finished."""
        return read_json(self.metrics_path) if self.metrics_path.is_file() else None

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics_path, metrics)  # last file of a run: its presence means finished

    def save_model_files(self, model: Any, tokenizer: Any) -> None:
        """The adapter (with the head) and the tokenizer, each replaced atomically."""
        with atomic_dir(self.adapter_dir) as tmp:
            model.save_pretrained(str(tmp))
        with atomic_dir(self.tokenizer_dir) as tmp:
            tokenizer.save_pretrained(str(tmp))

    # -- the log
    def _log_lines(self) -> list[str]:
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RunDirError(f"cannot read '{self.log_path}' (not UTF-8); the run directory is damaged") from None
        except OSError as e:
            raise RunDirError(f"cannot read '{self.log_path}' ({type(e).__name__}); the run directory is damaged") from None
        return text.split("\n")

    def log_rows(self) -> list[dict[str, Any]]:
        """Every row of log.jsonl in file order. A torn last line (a crash mid-write) is skipped; a bad line before it is an error."""
        if not self.log_path.is_file():
            return []
        lines = self._log_lines()
        last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
        rows = []
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if lineno == last:
                    continue
                raise RunDirError(f"'{self.log_path}' line {lineno} is not JSON; the log is damaged") from None
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def append_log(self, **row: Any) -> None:
        with disk_full_as_error(self.log_path), open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def truncate_log_after(self, step: int) -> None:
        """Drop rows past `step` (a resumed run repeats them), rewriting the log atomically."""
        if not self.log_path.exists():
            return
        keep = [r for r in self.log_rows() if r.get("step", 0) <= step]
        with atomic_write(self.log_path) as f:
            f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    def read_log(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(train rows, eval rows) of log.jsonl, each sorted by step; a step logged twice keeps its last row.

        Raises:
            RunDirError: no directory, no log, a damaged line, or no rows at all.
        """
        if not self.path.is_dir():
            raise RunDirError(f"run directory '{self.path}' {self.missing_reason()}; pass the --out directory of a `loraclf train` run")
        if not self.log_path.is_file():
            raise RunDirError(f"'{self.path}' has no {LOG_FILE}; it is not a loraclf run directory (or training never started)")
        train: dict[int, dict[str, Any]] = {}
        evals: dict[int, dict[str, Any]] = {}
        for row in self.log_rows():
            if "step" not in row:
                continue
            if "train_loss" in row:
                train[int(row["step"])] = row
            if "val_loss" in row or "val_accuracy" in row:
                evals[int(row["step"])] = row
        if not train and not evals:
            raise RunDirError(f"'{self.log_path}' has no training or evaluation rows yet; plot it once training has logged a step")
        return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]

    # -- loading for inference
    def load(self, device: str | None = None, precision: str = "auto", base_model: torch.nn.Module | None = None,
             merge: bool = False) -> LoadedRun:
        """The trained classifier, on `device` in eval mode.

        Args:
            device: "cpu", "cuda", ... (default: a GPU when present).
            precision: "auto", "fp32", "bf16" or "fp16" for inference.
            base_model: an already loaded base model to attach the adapter to (serving shares one).
            merge: merge the adapter into the base for inference only (`model.merge_for_inference`): faster,
                but the model then holds no adapter to switch or train.
        Raises:
            CheckpointError: the directory is not a finished run, or its adapter does not load.
            ModelError: the base model or tokenizer cannot be loaded.
        """
        from peft import PeftModel

        from .model import (load_base_model, load_tokenizer, merge_for_inference, resolve_device, resolve_precision,
                            store_frozen_linears)

        self.check_loadable()
        cfg = self.read_config()
        names = self.label_names()
        tokenizer = load_tokenizer(str(self.tokenizer_dir))
        base = base_model if base_model is not None else load_base_model(cfg.model, names)
        try:
            model = PeftModel.from_pretrained(base, str(self.adapter_dir), is_trainable=False)
        except Exception as e:
            raise CheckpointError(f"cannot load the adapter in '{self.adapter_dir}': {str(e).splitlines()[0][:200]}; retrain the run") from None
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        if merge:
            model = merge_for_inference(model, prec, dev)
        else:
            store_frozen_linears(model, prec)  # bit-identical under autocast, without the casts per call
        model.to(dev)
        model.eval()
        return LoadedRun(self.path, cfg, model, tokenizer, names, dev, prec, merged=merge)
