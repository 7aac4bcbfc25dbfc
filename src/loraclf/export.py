"""`loraclf export`: a trained run as a standalone model, or as the adapter alone.

- merged (`--merged`): the LoRA weights folded into the base encoder (peft `merge_and_unload`),
  the trained classification head kept, `id2label`/`label2id` set and the tokenizer saved beside
  it, so plain `transformers.pipeline("text-classification", model=OUT_DIR)` works without peft
  or loraclf. The tokenizer's `model_max_length` is the run's `model.max_length`: call the
  pipeline with `truncation=True` to cut long texts where training and `loraclf predict` do.
- adapter (default): a copy of the run's adapter, tokenizer, labels and config (a few MB); it is
  itself a run directory that `loraclf predict` and `Classifier.from_run_dir` accept, given the base
  model named in its config.
- ONNX (`--onnx`, optionally `--int8`): the merged model as model.onnx (dynamic batch and sequence
  axes) for ONNX Runtime, plus a quantized model.int8.onnx, tokenizer.json, labels and export info;
  checked against the run's PyTorch logits on a sample (see `loraclf.onnx_export`). It loads with
  `loraclf predict OUT --backend onnx` or with plain onnxruntime + tokenizers.

The output directory is built under a temporary name and renamed into place (`atomic_dir`), so a
failure leaves nothing behind, and an existing one is replaced only with `overwrite=True`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, RunDirError
from .io import atomic_dir, check_output_dir, write_json
from .rundir import ADAPTER_DIR, CONFIG_FILE, EXPORT_INFO_FILE, LABELS_FILE, METRICS_FILE, TOKENIZER_DIR, RunDir, check_replaceable

EXPORT_INFO = EXPORT_INFO_FILE
ADAPTER_COPY = (ADAPTER_DIR, TOKENIZER_DIR, LABELS_FILE, CONFIG_FILE, METRICS_FILE)


@dataclass
class ExportResult:
    """What `export_run` wrote."""

    out_dir: Path
    merged: bool
    size_bytes: int  # everything under out_dir
    weights_bytes: int  # the model or adapter weights alone
    files: list[str] = field(default_factory=list)
    onnx: bool = False
    check: dict[str, Any] = field(default_factory=dict)  # ONNX only: the comparison with PyTorch (onnx_export)


def dir_size(path: Path) -> int:
    """Bytes of all regular files under `path`."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable; keeps type checkers content


def _check_target(run_dir: Path, out_dir: Path, overwrite: bool) -> None:
    src, dst = run_dir.resolve(), out_dir.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise RunDirError(f"output directory '{out_dir}' overlaps the run directory '{run_dir}'; export to a separate directory")
    if out_dir.exists() and not overwrite:
        raise RunDirError(f"output directory '{out_dir}' already exists; pass --overwrite to replace it or choose another directory")
    check_output_dir(out_dir, "OUT_DIR")
    if overwrite:  # only an earlier export is replaced, never `.`, home or a directory of other files
        check_replaceable(out_dir, "OUT_DIR", markers=(EXPORT_INFO,), what="loraclf export")


def _export_adapter(run_dir: Path, tmp: Path) -> int:
    for name in ADAPTER_COPY:
        src = run_dir / name
        if src.is_dir():
            shutil.copytree(src, tmp / name)
        elif src.is_file():
            shutil.copy2(src, tmp / name)
    return dir_size(tmp / ADAPTER_DIR)


def _export_merged(run: RunDir, tmp: Path) -> int:
    # fp32 on CPU: the merged weights must reproduce the adapter model's logits (to ~1e-6), and
    # the export must not depend on which accelerator this machine happens to have.
    loaded = run.load(device="cpu", precision="fp32")
    merged = loaded.model.merge_and_unload()  # LoRA folded into the linears; modules_to_save head kept
    names = loaded.label_names
    merged.config.id2label = {i: n for i, n in enumerate(names)}
    merged.config.label2id = {n: i for i, n in enumerate(names)}
    merged.config.num_labels = len(names)
    merged.save_pretrained(str(tmp))
    tok = loaded.tokenizer
    tok.model_max_length = loaded.config.model.max_length  # where `truncation=True` cuts, as in training
    tok.save_pretrained(str(tmp))
    return sum(p.stat().st_size for p in tmp.glob("*.safetensors"))


def _export_onnx(run: RunDir, tmp: Path, int8: bool) -> tuple[int, dict[str, Any]]:
    from .onnx_export import write_onnx_export

    check = write_onnx_export(run, tmp, int8=int8)["check"]  # writes labels and the export info itself
    return sum(p.stat().st_size for p in tmp.glob("*.onnx*")), check


def export_run(run_dir: str | Path, out_dir: str | Path, merged: bool = False, overwrite: bool = False,
               onnx: bool = False, int8: bool = False) -> ExportResult:
    """Export a trained run to `out_dir`.

    Args:
        run_dir: directory written by `loraclf train`.
        out_dir: the directory to create.
        merged: write a standalone transformers model (LoRA merged into the base, head kept)
            instead of the adapter alone.
        overwrite: replace an existing `out_dir`.
        onnx: write the merged model as ONNX (implies `merged`), checked against PyTorch.
        int8: with `onnx`, add a dynamically quantized model.int8.onnx.

    Returns:
        The ExportResult (sizes on disk, files written).

    Raises:
        CheckpointError: `run_dir` is not a finished run.
        RunDirError: `out_dir` exists (without `overwrite`) or overlaps `run_dir`.
        ModelError: the base model named in the run's config cannot be loaded (merged only); ONNX:
            the exporter or onnxruntime is missing, or the export fails its check.
        ConfigError: `int8` without `onnx`.
    """
    if int8 and not onnx:
        raise ConfigError("--int8 quantizes the ONNX model; add --onnx")
    if onnx:
        from .onnx_export import check_export_tools

        check_export_tools()  # before loading anything: a missing package is one line
    run = RunDir(run_dir).check_loadable()
    run_dir = run.path
    out_dir = Path(out_dir)
    _check_target(run_dir, out_dir, overwrite)
    names = run.label_names()
    cfg = run.read_config()
    check: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        if onnx:
            weights, check = _export_onnx(run, tmp, int8)
        else:
            weights = _export_merged(run, tmp) if merged else _export_adapter(run_dir, tmp)
            RunDir(tmp).write_labels(names)
            write_json(
                tmp / EXPORT_INFO,
                {
                    "kind": "merged" if merged else "adapter",
                    "source_run": str(run_dir.resolve()),
                    "base_model": cfg.model.name,
                    "max_length": cfg.model.max_length,
                    "label_names": names,
                },
            )
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    return ExportResult(out_dir, merged or onnx, dir_size(out_dir), weights, files, onnx, check)
