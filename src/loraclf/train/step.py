"""One training step: a micro-batch's forward pass, its loss and its backward pass, under one execution.

The loss is a component (`Loss`, chosen by train.loss from `LOSSES`) and the forward-and-loss function
(`TrainStep.forward_loss`) is written once; the execution, chosen once by `compiled.train_execution`, only
decides how that function runs:

- eager: on a batch padded to its own longest row (`batching.pad_batch`), every row real;
- compiled: under torch.compile (`compiled.CompiledOrEager`, the width dynamic) on fixed-shape batches gathered
  on the device (`batching.DeviceTokens`, `batching.StaticEpoch`), filler rows masked out of the loss;
- cudagraphs: the eager forward, loss and backward captured per width (`train.cudagraphs.CapturedTrainStep`),
  on the same fixed shapes.

A new loss is a `Loss` subclass and an entry in `LOSSES`: it runs under every execution with no other change.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from ..compiled import CUDA_TRAIN_MODE, CompiledOrEager
from ..errors import ConfigError
from ..inference import autocast_context

EXECUTIONS = ("eager", "compiled", "cudagraphs")


def masked_mean(per_row: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    """The mean of `per_row` over the real rows (all rows when `real` is None).

    torch.where, not a multiplication by 0: a filler row's non-finite loss must not leak into the sum."""
    if real is None:
        return per_row.mean()
    return torch.where(real, per_row, torch.zeros_like(per_row)).sum() / real.sum()


class Loss:
    """A training loss: `per_row` losses (float32 logits), averaged over a batch's real rows by `masked_mean`."""

    def per_row(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean(self.per_row(logits.float(), targets), real)


@dataclass(frozen=True)
class CrossEntropy(Loss):
    """Cross-entropy with label smoothing (train.label_smoothing)."""

    label_smoothing: float = 0.0

    def per_row(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, targets, reduction="none", label_smoothing=self.label_smoothing)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        if real is None:  # torch's own mean: what eager runs have always computed, to the last bit
            return torch.nn.functional.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
        return super().__call__(logits, targets, real)


# train.loss -> the loss it builds from the train section.
LOSSES: dict[str, Callable[[Any], Loss]] = {
    "cross_entropy": lambda train_cfg: CrossEntropy(train_cfg.label_smoothing),
}


def make_loss(train_cfg: Any) -> Loss:
    """The `Loss` that train.loss names.

    Raises:
        ConfigError: train.loss names no loss in `LOSSES`.
    """
    factory = LOSSES.get(train_cfg.loss)
    if factory is None:
        raise ConfigError(f"train.loss={train_cfg.loss!r} is not a loss; use one of {', '.join(LOSSES)}")
    return factory(train_cfg)


class Tokens(Protocol):
    """What the fixed-shape executions gather a micro-batch from (`batching.DeviceTokens`)."""

    labels: torch.Tensor | None

    def batch(self, rows: torch.Tensor, width: int) -> dict[str, torch.Tensor]: ...


class TrainStep:
    """Forward, loss and backward of one micro-batch under `execution` (module docstring).

    `backward(loss)` runs the backward pass (the recipe's is accelerate's); it gets loss / grad_accum. `tokens`:
    the device table the fixed-shape executions gather from. `cuda_graphs`: a compiled step on CUDA also captures
    CUDA graphs (not with several processes, whose gradient all-reduce runs in backward hooks between the
    graphs). `graphs`: torch.cuda's graph API for the captured execution (tests stand in an emulation)."""

    def __init__(self, model: torch.nn.Module, loss: Loss, execution: str, *, device: torch.device, precision: str,
                 grad_accum: int = 1, backward: Callable[[torch.Tensor], None] | None = None,
                 tokens: Tokens | None = None, cuda_graphs: bool = True, graphs: Any = None) -> None:
        if execution not in EXECUTIONS:
            raise ValueError(f"execution {execution!r} is not one of {', '.join(EXECUTIONS)}")
        self.model, self.loss, self.execution = model, loss, execution
        self.device, self.precision, self.grad_accum = device, precision, grad_accum
        self._backward = backward or torch.Tensor.backward
        self.tokens = tokens
        self.compiled: CompiledOrEager | None = None
        self.captured: Any = None
        # A CUDA graph adds into the .grad buffers it saw when recorded: they stay allocated between steps.
        self.keep_grads = False
        if execution == "compiled":
            self.keep_grads = device.type == "cuda" and cuda_graphs
            mode = CUDA_TRAIN_MODE if self.keep_grads else "default"
            self.compiled = CompiledOrEager(self.forward_loss, mode=mode, what="training step",
                                            dynamic_dims=((0, 1), (1, 1)))
        elif execution == "cudagraphs":
            from .cudagraphs import CapturedTrainStep, CudaGraphs

            self.captured = CapturedTrainStep(self._captured_body, graphs if graphs is not None else CudaGraphs(device))
            self.keep_grads = True
        if self.keep_grads:
            for p in model.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)

    def forward_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor,
                     real: torch.Tensor | None = None) -> torch.Tensor:
        """The step's forward pass and loss (`real` masks filler rows; None: every row is real)."""
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return self.loss(logits, targets, real)

    def backward(self, loss: torch.Tensor) -> None:
        self._backward(loss / self.grad_accum)

    def padded(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """The eager step on a padded batch already on the device; returns its loss (detached)."""
        with autocast_context(self.device, self.precision):
            loss = self.forward_loss(inputs["input_ids"], inputs["attention_mask"], targets)
            self.backward(loss)
        return loss.detach()

    def fixed(self, width: int, rows: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The compiled or captured step on the table rows `rows` padded to `width`; returns its loss (detached)."""
        if self.captured is not None:  # the body enters autocast itself
            return self.captured(width, rows, real)
        assert self.compiled is not None and self.tokens is not None, "a fixed-shape step gathers from `tokens`"
        inputs = self.tokens.batch(rows, width)
        with autocast_context(self.device, self.precision):
            loss = self.compiled(inputs["input_ids"], inputs["attention_mask"], self.tokens.labels[rows], real,
                                 then=self.backward)
        return loss.detach()

    def _captured_body(self, width: int, rows: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """What `model.compile=cudagraphs` captures. Everything stays on the device (a host sync cannot be
        captured), and autocast is entered inside, so that its cache of cast weights never outlives one
        micro-batch (a captured cast must redo itself every replay)."""
        assert self.tokens is not None
        inputs = self.tokens.batch(rows, width)
        with autocast_context(self.device, self.precision):
            loss = self.forward_loss(inputs["input_ids"], inputs["attention_mask"], self.tokens.labels[rows], real)
        self.backward(loss)
        return loss.detach()

    def metrics(self) -> dict[str, Any]:
        """How the step ran: its execution, and what compiling or capturing cost or whether it fell back to eager."""
        out: dict[str, Any] = {"step_execution": self.execution}
        if self.compiled is not None:
            out.update(compile_fell_back=self.compiled.failed, compile_first_call_seconds=self.compiled.first_call_seconds)
        if self.captured is not None:
            out.update(cuda_graphs_captured=len(self.captured.captured),
                       cuda_graph_capture_seconds=self.captured.capture_seconds,
                       cuda_graph_capture_fell_back=self.captured.failed)
        return out


def no_sync_unless(boundary: bool, accelerator: Any, model: torch.nn.Module) -> Any:
    """In-step micro-batches skip DDP's gradient all-reduce; the boundary one syncs them all."""
    return contextlib.nullcontext() if boundary else accelerator.no_sync(model)
