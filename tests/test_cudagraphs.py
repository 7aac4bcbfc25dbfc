"""model.compile=cudagraphs: the eager training step captured per length bucket (`loraclf.train.cudagraphs`).

This machine has no GPU, so torch.cuda's graph API is stood in for by `EmulatedGraphs`, which keeps its contract:
a capture records the step and runs nothing; a replay runs what was recorded, reading the graph's own input
buffers and rewriting its one output tensor. What these tests check is everything around it: the warm-up, one
capture per width, inputs copied into the buffers before each replay, the loss copied out, the fall back to
eager, the settings, and a whole run. `bench/gpu_step_check.py` checks the real graphs on a GPU.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import TINY_QUICK, stopped_and_resumed, train_losses
import loraclf.compiled
from loraclf.compiled import train_execution
from loraclf.config import config_from_dict
from emulated_graphs import EmulatedGraphs
from loraclf.train.cudagraphs import CapturedTrainStep


class TrackedGraphs(EmulatedGraphs):
    """`EmulatedGraphs` that keeps every instance: each training run makes its own."""

    instances: list["TrackedGraphs"] = []

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__(device)
        TrackedGraphs.instances.append(self)


def _sum_of_rows_body(table: torch.Tensor, calls: list[tuple[int, list[int]]]):
    """A step body that records what it was called with and returns a value that depends on every input."""
    def body(width: int, rows: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        calls.append((width, rows.tolist()))
        return (table[rows, :width].sum(dim=1) * real).sum()
    return body


def test_each_width_warms_up_captures_once_then_replays_with_new_inputs() -> None:
    """It runs a width's first use eager (warm-up), captures it at the second and replays it from then on, with
    each call's own rows and mask copied in: every call returns what the body computes for its inputs."""
    table = torch.arange(40 * 64, dtype=torch.float32).reshape(40, 64)
    calls: list = []
    body = _sum_of_rows_body(table, calls)
    graphs = EmulatedGraphs()
    step = CapturedTrainStep(body, graphs)
    g = torch.Generator().manual_seed(0)
    widths = [32, 48, 32, 32, 48, 32, 64, 48]
    for width in widths:
        rows, real = torch.randint(0, 40, (4,), generator=g), torch.rand(4, generator=g) < 0.7
        want = (table[rows, :width].sum(dim=1) * real).sum()
        got = step(width, rows, real)
        assert float(got) == float(want)
        rows.fill_(0)  # the caller's tensors may change after the call: the graph keeps its own copies
    assert graphs.warmups == 3 and graphs.captures == 2  # 32, 48, 64 warm up; 32 and 48 come back and are captured
    assert graphs.replays == len(widths) - 3
    assert sorted(step.captured) == [32, 48] and not step.failed


def test_the_returned_loss_is_not_the_graphs_buffer() -> None:
    """It returns a copy of the graph's output: the next replay (of any graph: they share a memory pool) would
    overwrite the buffer itself."""
    table = torch.ones(8, 32)
    step = CapturedTrainStep(_sum_of_rows_body(table, []), EmulatedGraphs(), warmup_calls=0)
    first = step(32, torch.tensor([0, 1]), torch.tensor([True, True]))
    step(32, torch.tensor([2, 3]), torch.tensor([True, False]))
    assert float(first) == 64.0 and first.data_ptr() != step.captured[32].loss.data_ptr()


def test_a_capture_that_fails_warns_once_and_runs_eager(capfd: pytest.CaptureFixture) -> None:
    """It prints one warning line when a capture fails and runs every later step eager, with the right results."""
    class FailingGraphs(EmulatedGraphs):
        def capture(self, fn):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    table = torch.arange(8 * 32, dtype=torch.float32).reshape(8, 32)
    step = CapturedTrainStep(_sum_of_rows_body(table, []), FailingGraphs())
    for width in (32, 32, 32, 32):
        rows = torch.tensor([1, 2])
        assert float(step(width, rows, torch.tensor([True, True]))) == float(table[rows, :width].sum())
    assert step.failed and not step.captured
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln]
    assert err == ["warning: model.compile=cudagraphs: the training step could not be captured (RuntimeError: CUDA error: "
                   "operation not permitted when stream is capturing); running it eager"]


def test_execution_per_setting_device_and_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """It captures only on a CUDA GPU in one process; elsewhere it trains eager and says why in one line."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert train_execution("cudagraphs", cpu, "bf16") == ("eager", "warning: model.compile=cudagraphs needs a CUDA GPU; training eager on cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train_execution("cudagraphs", cuda, "bf16") == ("cudagraphs", None)
    assert train_execution("cudagraphs", cuda, "bf16", processes=2) == (
        "eager", "warning: model.compile=cudagraphs runs in one process; training eager on 2 processes")
    assert train_execution(True, cpu, "fp32") == ("compiled", None)
    assert train_execution("auto", cuda, "bf16") == ("compiled", None)  # AUTO_EXECUTION
    monkeypatch.setitem(loraclf.compiled.AUTO_EXECUTION, ("train", "cuda", "*"), ("cudagraphs", 0))
    assert train_execution("auto", cuda, "bf16") == ("cudagraphs", None)
    assert train_execution("auto", cuda, "bf16", processes=2) == ("compiled", None)  # DDP: compiled, without graphs
    assert train_execution("auto", cpu, "bf16") == ("eager", None)
    assert train_execution(False, cuda, "bf16") == ("eager", None)


def test_cudagraphs_on_cpu_trains_eager_with_one_warning(tiny_model_without_dropout: Path, ag_small: dict[str, Path],
                                                         tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """It trains a model.compile=cudagraphs run on a CPU eager, with the eager run's losses, and one warning line."""
    eager_losses, _ = train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "eager", "false")
    capfd.readouterr()
    losses, metrics = train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "graphs", "cudagraphs")
    assert losses == eager_losses and metrics["global_step"] == 12
    assert [ln for ln in capfd.readouterr().err.splitlines() if "warning" in ln] == [
        "warning: model.compile=cudagraphs needs a CUDA GPU; training eager on cpu"]


@pytest.fixture
def emulated_cudagraphs(monkeypatch: pytest.MonkeyPatch) -> list[TrackedGraphs]:
    """The recipe on CPU takes the cudagraphs path, with `EmulatedGraphs` (tracked) for torch.cuda's graph API."""
    import loraclf.train.cudagraphs
    import loraclf.train.recipe

    def execution(setting, *args, **kwargs):  # noqa: ANN001, ANN202
        return ("cudagraphs", None) if setting == "cudagraphs" else train_execution(setting, *args, **kwargs)

    monkeypatch.setattr(loraclf.train.recipe, "train_execution", execution)
    monkeypatch.setattr(loraclf.train.cudagraphs, "CudaGraphs", TrackedGraphs)
    TrackedGraphs.instances = []
    return TrackedGraphs.instances


def test_captured_run_matches_eager_run(emulated_cudagraphs: list[TrackedGraphs], tiny_model_without_dropout: Path,
                                        ag_small: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """It takes the same steps with the same losses and validation metrics through the captured step (fixed rows,
    length buckets, the loss and backward inside the graph, gradient accumulation across graphs) as eager,
    within fp32 tolerance; both buckets are captured and replayed, and nothing warns."""
    eager_losses, eager = train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "eager", "false", ("model.max_length=128",))
    losses, graphed = train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "graphs", "cudagraphs", ("model.max_length=128",))
    assert len(losses) == len(eager_losses) == graphed["global_step"] == 12
    assert losses == pytest.approx(eager_losses, abs=1e-4)
    assert graphed["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-4)
    assert graphed["val_accuracy"] == eager["val_accuracy"]
    assert graphed["train_samples"] == eager["train_samples"]  # filler rows are not samples
    (graphs,) = emulated_cudagraphs
    # 23 micro-batches in three buckets (max_length 128): each warms up once, two come back and are captured
    assert (graphs.warmups, graphs.captures, graphs.replays) == (3, 2, 20)
    assert graphed["step_execution"] == "cudagraphs" and graphed["cuda_graphs_captured"] == 2
    assert graphed["cuda_graph_capture_fell_back"] is False and eager["step_execution"] == "eager"
    assert "warning" not in capfd.readouterr().err


def test_captured_run_resumes_exactly(emulated_cudagraphs: list[TrackedGraphs], tiny_model: Path,
                                      ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It resumes a captured run (dropout on) stopped after a mid-epoch evaluation and ends with the same losses
    and validation metrics as the uninterrupted run: the resumed process warms up and captures again."""
    overrides = [*TINY_QUICK, "model.max_length=128", "train.epochs=2", "train.log_every_steps=1", "train.eval_every_steps=8",
                 "model.precision=fp32", "model.compile=cudagraphs", "train.eval_batch_size=64"]
    cfg = config_from_dict({"model": {"name": str(tiny_model)}, "data": {"train_file": str(ag_small["train"])}}, overrides)
    full, resumed, full_losses, resumed_losses = stopped_and_resumed(cfg, tmp_path, stop_at_step=8)
    assert len(emulated_cudagraphs) == 3 and all(g.captures >= 1 for g in emulated_cudagraphs)
    assert resumed["global_step"] == full["global_step"] > 8
    assert resumed_losses == pytest.approx(full_losses, abs=1e-6)
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], abs=1e-6)
