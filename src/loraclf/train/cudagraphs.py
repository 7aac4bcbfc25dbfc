"""`model.compile: cudagraphs`: the eager training step captured as CUDA graphs, with no torch.compile.

A micro-batch of short texts through a base-sized encoder is launch-bound on a GPU: its forward and backward are
about a thousand kernels of a few microseconds each, queued one by one from Python. torch.compile's
"reduce-overhead" mode removes that overhead but compiles first; capturing the eager kernels with
`torch.cuda.graph` compiles nothing, and the graph runs eager's kernels (figures: bench/FINDINGS_gpu.md).

One micro-batch's step (`train.step.TrainStep`'s `body(width, rows, real)`: gather the rows from `batching.DeviceTokens`,
forward, the loss, backward of loss / grad_accum into the kept .grad buffers; it returns the loss) is
captured once per length bucket:
- its first WARMUP_CALLS use(s) run eager on a side stream, as torch.cuda.graph asks (lazy initialisation:
  cuBLAS workspaces, autograd's device threads, must not happen inside a capture);
- the next use captures it (a capture runs nothing), then replays it;
- every later use copies the micro-batch's row indices and real-row mask into the graph's input buffers and
  replays it: one launch.
The backward adds into the .grad tensors that exist at capture, so they must stay the same objects for the whole
run: the recipe allocates them before the first step and zeroes them in place (zero_grad(set_to_none=False)).
Dropout draws from the default CUDA generator inside a graph too: each replay advances its offset as the eager
kernels would, so a seeded run should repeat itself and `--resume` restore it even though a resumed process warms up
at other steps (`bench/gpu_step_check.py --recipe` compares a run with dropout against eager on a GPU; the CPU tests
check the bookkeeping with an emulated graph API). Clipping, fused AdamW and the schedule stay eager: a dozen launches per
optimizer step. A capture that fails prints one warning line and the step runs eager from then on.

All graphs share one memory pool, so they hold the activations of one micro-batch, not one per bucket. That is safe
because a graph's only output, the loss, is copied out right after its replay, before another graph can overwrite
it, and its inputs (row indices, real-row mask) and the .grad buffers live outside the pool.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..compiled import COMPILE_NOTICE_SECONDS
from ..errors import one_line

# Eager uses of a bucket before it is captured. One is enough: what must not happen during a capture is lazy
# initialisation (cuBLAS handles and workspaces, the autograd engine's threads, fused AdamW's state is not involved),
# and the first use does all of it. torch's whole-network example warms up 3 times because of DDP, which this
# path does not run.
WARMUP_CALLS = 1

# body(width, rows, real) -> loss: one micro-batch's forward and backward (see the module docstring).
StepBody = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


class CudaGraphs:
    """torch.cuda's graph API as `CapturedTrainStep` uses it: eager warm-up on a side stream, capture into a shared
    memory pool. (Tests stand in an emulation of these two methods on CPU: tests/emulated_graphs.py.)"""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()
        self.side_stream = torch.cuda.Stream(device)

    def warmup(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        current = torch.cuda.current_stream(self.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            out = fn()
        current.wait_stream(self.side_stream)
        return out

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        """Record `fn` (nothing runs); returns the graph's replay and the tensor each replay rewrites with fn's result."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = fn()
        return graph.replay, out


@dataclass
class _Graph:
    replay: Callable[[], None]
    loss: torch.Tensor  # rewritten by every replay
    rows: torch.Tensor  # the graph's input buffers
    real: torch.Tensor


class CapturedTrainStep:
    """`body` per length bucket: eager for its first WARMUP_CALLS uses, then captured once and replayed (module
    docstring). Call with (width, rows, real) as `body` takes them; returns the micro-batch's loss (a fresh tensor)."""

    def __init__(self, body: StepBody, graphs: CudaGraphs, *, what: str = "training step",
                 warmup_calls: int = WARMUP_CALLS) -> None:
        self.body = body
        self.graphs = graphs
        self.what = what
        self.warmup_calls = warmup_calls
        self.captured: dict[int, _Graph] = {}
        self.uses: dict[int, int] = {}  # eager uses per width before its capture
        self.failed = False
        self.capture_seconds = 0.0  # all captures together

    def __call__(self, width: int, rows: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.body(width, rows, real)
        graph = self.captured.get(width)
        if graph is None:
            uses = self.uses.get(width, 0)
            self.uses[width] = uses + 1
            if uses < self.warmup_calls:
                return self.graphs.warmup(lambda: self.body(width, rows, real))
            graph = self._capture(width, rows, real)
            if graph is None:
                return self.body(width, rows, real)
        graph.rows.copy_(rows)
        graph.real.copy_(real)
        graph.replay()
        return graph.loss.clone()  # the next replay of any graph may overwrite graph.loss (shared pool)

    def _capture(self, width: int, rows: torch.Tensor, real: torch.Tensor) -> _Graph | None:
        started = time.perf_counter()
        rows_buffer, real_buffer = rows.clone(), real.clone()  # outside the graph's pool: they must persist
        try:
            replay, loss = self.graphs.capture(lambda: self.body(width, rows_buffer, real_buffer))
        except Exception as err:  # an op that syncs with the host, an unsupported kernel...: run eager
            self.failed = True
            print(f"warning: model.compile=cudagraphs: the {self.what} could not be captured ({one_line(err)}); "
                  f"running it eager", file=sys.stderr, flush=True)
            return None
        seconds = time.perf_counter() - started
        self.capture_seconds += seconds
        if seconds >= COMPILE_NOTICE_SECONDS:
            print(f"model.compile=cudagraphs: captured the {self.what} for width {width} in {seconds:.1f} s",
                  file=sys.stderr, flush=True)
        graph = self.captured[width] = _Graph(replay, loss, rows_buffer, real_buffer)
        return graph
