"""Choosing an inference backend: the directory each one loads and the classifier it gives.

`torch` runs a trained run (`inference.Classifier`); `onnx` runs an ONNX export, or a run through its
ONNX cache, built once by `onnx_export` (`onnx_backend.OnnxClassifier`, CPU). `predict`, `evaluate`
(and anything else that classifies) go through `load_classifier`, so both give the same outputs.
"""
from __future__ import annotations

from pathlib import Path

from .config.inference import InferenceSettings
from .errors import CheckpointError
from .inference import Classifier, TextClassifier
from .onnx_backend import OnnxClassifier, check_onnx_source, default_batch_size, read_export_info
from .onnx_export import ensure_onnx_cache
from .rundir import RunDir


def open_model_dir(path: str | Path, backend: str = "torch", int8: bool = False) -> RunDir:
    """The directory a backend will load, checked before any data is read or model loaded.

    torch: a finished run (or adapter export). onnx: that, or an ONNX export (`loraclf export --onnx`).

    Raises:
        CheckpointError: the directory lacks the backend's files.
        ModelError: onnx only: onnxruntime is not installed.
    """
    if backend == "onnx":
        return check_onnx_source(path, int8)
    rd = RunDir(path)
    if not rd.adapter_dir.exists() and read_export_info(rd.path) is not None:
        raise CheckpointError(f"'{rd.path}' is an ONNX export, not a run; add --backend onnx")
    return rd.check_loadable()


def load_classifier(path: str | Path | RunDir, settings: InferenceSettings | None = None) -> TextClassifier:
    """A `Classifier` (backend "torch") or an `OnnxClassifier` (backend "onnx", CPU, fp32 or int8), as `settings`
    (already checked when built; default: InferenceSettings()) say.

    Raises:
        CheckpointError, ModelError: see `Classifier.from_run_dir` and `onnx_classifier`.
    """
    s = settings or InferenceSettings()
    if s.backend == "onnx":
        return onnx_classifier(path, int8=s.int8, batch_size=s.batch_size)
    return Classifier.from_run_dir(path, settings=s)


def onnx_classifier(path: str | Path | RunDir, int8: bool = False, batch_size: int | None = None,
                    threads: int | None = None) -> OnnxClassifier:
    """Load an ONNX export, or a finished run through its ONNX cache (RUN/onnx, built on first use).

    Raises:
        ModelError, CheckpointError: see `OnnxClassifier.from_export_dir`; also a run whose export fails its check.
        RunDirError: the cache cannot be written inside the run directory.
    """
    rd = check_onnx_source(path.path if isinstance(path, RunDir) else path, int8)
    if read_export_info(rd.path) is not None:
        return OnnxClassifier.from_export_dir(rd.path, int8, batch_size, threads)
    cache = ensure_onnx_cache(rd, int8)
    return OnnxClassifier.from_export_dir(cache, int8, batch_size or default_batch_size(rd), threads)
