"""A stand-in for torch.cuda's graph API on a CPU (`loraclf.train.cudagraphs.CudaGraphs`' contract), for the tests
and for `bench/gpu_step_check.py`'s dry runs."""
from __future__ import annotations

from typing import Callable

import torch


class EmulatedGraphs:
    """`CudaGraphs`' contract without CUDA, for dry runs on a CPU (`bench/gpu_step_check.py`) and tests: a capture
    records the function and runs nothing; a replay runs it and rewrites the captured output tensor, as a graph's
    replay rewrites its output buffer. It counts its warm-ups, captures and replays."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self.warmups = self.captures = self.replays = 0

    def warmup(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        self.warmups += 1
        return fn()

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        self.captures += 1
        out = torch.full((), float("nan"), device=self.device)  # a capture computes nothing

        def replay() -> None:
            self.replays += 1
            out.copy_(fn())

        return replay, out
