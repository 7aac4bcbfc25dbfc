"""train.step: one training step whose loss is a component (train.loss), run eager, compiled or captured."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from emulated_graphs import EmulatedGraphs
from helpers import train_losses
from loraclf.errors import ConfigError
from loraclf.train import step as S


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    yield
    torch._dynamo.reset()  # compiled graphs of one test must not serve (or count against) the next


@dataclass(frozen=True)
class ScaledMargin(S.Loss):
    """A loss the library does not ship: per row, softplus of the best wrong logit minus the true one."""

    def per_row(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        true = logits.gather(1, targets[:, None]).squeeze(1)
        wrong = logits.masked_fill(torch.nn.functional.one_hot(targets, logits.shape[1]).bool(), float("-inf"))
        return torch.nn.functional.softplus(wrong.max(dim=1).values - true)


@pytest.fixture
def margin_loss(monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """train.loss=margin names `ScaledMargin`: the overrides that choose it."""
    monkeypatch.setitem(S.LOSSES, "margin", lambda train_cfg: ScaledMargin())
    return ("train.loss=margin",)


def test_the_default_loss_is_masked_cross_entropy() -> None:
    """cross_entropy with all rows real is torch's own mean (eager runs keep their bits); with filler rows, the mean
    over the real ones, a non-finite filler row included."""
    logits = torch.tensor([[2.0, 0.5], [0.1, 0.3], [float("nan"), 1.0]])
    targets = torch.tensor([0, 1, 0])
    loss = S.CrossEntropy(0.1)
    assert torch.equal(loss(logits[:2], targets[:2]),
                       torch.nn.functional.cross_entropy(logits[:2], targets[:2], label_smoothing=0.1))
    assert torch.allclose(loss(logits, targets, torch.tensor([True, True, False])), loss(logits[:2], targets[:2]))


def test_an_unknown_loss_is_one_line() -> None:
    from loraclf.config import config_from_dict

    with pytest.raises(ConfigError, match=r"^train.loss='hinge' is not a loss; use one of cross_entropy$"):
        S.make_loss(config_from_dict({}, ["train.loss=hinge"]).train)


_REAL_COMPILE = torch.compile


def _no_compile(fn, **kwargs):  # noqa: ANN001, ANN202 - the fixed-shape path as plain eager code: fast
    return fn


def _aot_eager(fn, mode=None, dynamic=None, **kwargs):  # noqa: ANN001, ANN202 - dynamo traces, eager kernels run
    return _REAL_COMPILE(fn, backend="aot_eager", dynamic=dynamic)


@pytest.mark.parametrize("compile_fn", [
    pytest.param(_no_compile, id="static-shapes-eager"),
    pytest.param(_aot_eager, id="aot_eager", marks=pytest.mark.slow),
])
def test_a_loss_swapped_in_by_the_config_trains_eager_and_compiled_alike(
        compile_fn, margin_loss: tuple[str, ...], tiny_model_without_dropout: Path, ag_small: dict[str, Path],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new loss, chosen by train.loss with no change to the recipe, gives the same per-step losses eager and
    compiled (fixed shapes, masked filler rows), and differs from cross-entropy's."""
    ce_losses, _ = train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "ce", "false")
    eager_losses, eager = train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "eager", "false", margin_loss)
    monkeypatch.setattr(torch, "compile", compile_fn)
    compiled_losses, compiled = train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "compiled", "true",
                                             margin_loss)
    assert compiled["step_execution"] == "compiled" and compiled["compile_fell_back"] is False
    assert len(compiled_losses) == len(eager_losses) == 12
    assert compiled_losses == pytest.approx(eager_losses, abs=1e-4)
    assert eager_losses != pytest.approx(ce_losses, abs=1e-3)


def test_a_loss_swapped_in_by_the_config_trains_captured(margin_loss: tuple[str, ...], tiny_model_without_dropout: Path,
                                                         ag_small: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The same loss under the captured execution (torch.cuda's graphs emulated on the CPU) gives eager's losses."""
    import loraclf.train.cudagraphs
    import loraclf.train.recipe
    from loraclf.compiled import train_execution

    def execution(setting, *args, **kwargs):  # noqa: ANN001, ANN202 - cudagraphs on a CPU
        return ("cudagraphs", None) if setting == "cudagraphs" else train_execution(setting, *args, **kwargs)

    monkeypatch.setattr(loraclf.train.recipe, "train_execution", execution)
    monkeypatch.setattr(loraclf.train.cudagraphs, "CudaGraphs", EmulatedGraphs)
    eager_losses, _ = train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "eager", "false", margin_loss)
    losses, captured = train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "graphs", "cudagraphs",
                                    margin_loss)
    assert captured["step_execution"] == "cudagraphs" and captured["cuda_graphs_captured"] >= 1
    assert captured["cuda_graph_capture_fell_back"] is False
    assert losses == pytest.approx(eager_losses, abs=1e-4)


def test_one_step_runs_under_each_execution_with_the_same_loss(tiny_model_without_dropout: Path) -> None:
    """TrainStep itself: one fixed-shape micro-batch with filler rows gives the eager step's loss (the real rows
    alone, padded) compiled (run eager here) and captured (emulated)."""
    from loraclf import model as M
    from loraclf.batching import DeviceTokens, fixed_rows
    from loraclf.config import LoraConfig, ModelConfig

    torch.manual_seed(0)
    model = M.apply_lora(M.load_base_model(ModelConfig(name=str(tiny_model_without_dropout)), ["a", "b", "c", "d"]),
                         LoraConfig(dropout=0.0))
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(5, 700, (int(n),), generator=g).tolist() for n in (20, 9, 31, 14)]
    tokens = DeviceTokens(seqs, 1, torch.device("cpu"), 32, labels=[0, 3, 1, 2])
    rows, real = torch.as_tensor(fixed_rows([0, 1, 2], 4)), torch.tensor([True, True, True, False])
    cpu = torch.device("cpu")
    eager = S.TrainStep(model, S.CrossEntropy(), "eager", device=cpu, precision="fp32")
    want = eager.padded(tokens.batch(torch.tensor([0, 1, 2]), 32), tokens.labels[:3])
    for execution, graphs in (("compiled", None), ("cudagraphs", EmulatedGraphs())):
        step = S.TrainStep(model, S.CrossEntropy(), execution, device=cpu, precision="fp32", tokens=tokens, graphs=graphs)
        if step.compiled is not None:
            step.compiled.compiled = step.compiled.eager  # the mechanism, not inductor, is under test here
        losses = [float(step.fixed(32, rows, real)) for _ in range(3)]  # warm-up, capture + replay, replay
        assert losses == pytest.approx([float(want)] * 3, abs=1e-5), execution
