"""`InferenceSettings`: how evaluate, predict, report and serve run a trained model, one name per knob.

Each field is also a command-line option (`cli.options.options_from`: `batch_size` -> `--batch-size`), built once
from the command line, checked once here, and passed on whole; stages never re-check it. This module stays light
(torch is imported only to check a device): cli builds `loraclf --help` from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .schema import PRECISIONS


BACKENDS = ("torch", "onnx")
COMPILE_CHOICES: dict[str, bool | str] = {"auto": "auto", "true": True, "false": False}


def _opt(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


def compile_choice(text: str | bool) -> bool | str:
    """--compile auto|true|false as `compiled.inference_compile_enabled` takes it: "auto", True or False."""
    if isinstance(text, bool):
        return text
    if text not in COMPILE_CHOICES:
        raise ConfigError(f"--compile {text!r} is not a choice; use auto, true or false")
    return COMPILE_CHOICES[text]


@dataclass(frozen=True)
class InferenceSettings:
    """Where and how a trained run classifies text; every field is an option of evaluate, predict and report."""

    device: str | None = _opt(None, "Device for inference: cpu, cuda, cuda:1 ... (default: a GPU when present).")
    precision: str = _opt("auto", "Inference precision: auto, fp32, bf16 or fp16.")
    batch_size: int | None = _opt(None, "Texts per forward pass.")
    backend: str = _opt("torch", "Inference backend: torch, or onnx (ONNX Runtime on CPU; RUN_DIR may be an `export "
                                 "--onnx` directory, a run is exported once into RUN_DIR/onnx).")
    int8: bool = _opt(False, "With --backend onnx: the dynamically quantized int8 model (about half the size; labels "
                             "may differ slightly).")
    compile: str = _opt("auto", "Compile the torch forward pass (one graph for every batch shape): auto (on CPUs in "
                                "bf16 from 20,000 texts, where the compile pays back; not on GPUs, where large eager "
                                "batches do as well), true or false.")

    def __post_init__(self) -> None:
        check_inference_options(self.device, self.precision, self.backend, self.int8, self.compile)
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise ConfigError(f"--batch-size {self.batch_size}: give a number of texts per forward pass of at least 1")


def check_inference_options(device: str | None, precision: str, backend: str = "torch", int8: bool = False,
                            compile: str | bool = "auto") -> None:
    """Raise ConfigError for a device, precision, backend or --compile that inference cannot use (one line, before
    any loading). `InferenceSettings` runs it; so does a server for the knobs its adapters share."""
    if compile_choice(compile) != "auto" and backend == "onnx":
        raise ConfigError(f"--compile {compile}: it applies to the torch backend (ONNX Runtime optimises its own "
                          "graph); drop --compile")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is not a precision; use one of {', '.join(PRECISIONS)}")
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r} is not a backend; use {' or '.join(BACKENDS)}")
    if int8 and backend != "onnx":
        raise ConfigError("--int8 needs --backend onnx (the PyTorch backend has no int8 model); add --backend onnx")
    if backend == "onnx" and precision not in ("auto", "fp32"):
        raise ConfigError(f"--precision {precision!r}: the ONNX backend runs fp32 (or int8 with --int8); drop --precision or use --backend torch")
    if backend == "onnx" and device not in (None, "auto", "cpu"):
        raise ConfigError(f"--device {device!r}: the ONNX backend runs on the CPU only; drop --device or use --backend torch")
    if device is not None and device != "auto":
        _check_device(device)


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: loraclf runs on cpu or cuda; use --device cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r}: no CUDA GPU is available here; use --device cpu")
    n = torch.cuda.device_count() if dev.type == "cuda" else 0
    if dev.type == "cuda" and dev.index is not None and dev.index >= n:
        raise ConfigError(f"--device {device!r}: this machine has {n} CUDA GPU{'' if n == 1 else 's'} "
                          f"(cuda:0 to cuda:{n - 1}); pick one of them or use --device cuda")
