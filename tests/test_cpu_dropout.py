"""Dropout for eager CPU training (loraclf.train.cpu_dropout): same rates and scaling as torch's, same attention."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import TINY_QUICK
from loraclf.compiled import tag_compile_caches_with_cpu_isa
from loraclf.train import cpu_dropout as CD


@pytest.mark.parametrize("p", [0.1, 0.15, 0.5])
def test_keep_mask_keeps_one_minus_p_and_repeats_under_a_seed(p: float) -> None:
    torch.manual_seed(0)
    mask = CD.keep_mask((1001, 999), p)  # not a multiple of 4 elements
    assert mask.shape == (1001, 999) and mask.dtype == torch.bool
    assert mask.float().mean().item() == pytest.approx(1 - p, abs=0.003)
    rows = mask.float().mean(dim=1)  # every part of the tensor, not only the total, gets the rate
    assert rows.min().item() > 1 - p - 0.07 and rows.max().item() < 1 - p + 0.07
    torch.manual_seed(0)
    assert torch.equal(CD.keep_mask((1001, 999), p), mask)
    assert not torch.equal(CD.keep_mask((1001, 999), p), mask)  # the generator moved on


def test_dropout_zeroes_or_scales_each_element_and_is_identity_in_eval() -> None:
    x = torch.rand(64, 48) + 0.5
    for dtype in (torch.float32, torch.bfloat16):
        y = CD.dropout(x.to(dtype), 0.25, training=True)
        assert y.dtype == dtype
        kept = y != 0
        torch.testing.assert_close(y[kept].float(), (x.to(dtype).float() / 0.75)[kept], rtol=1e-2, atol=0)
        assert 0.6 < kept.float().mean().item() < 0.9
    assert torch.equal(CD.dropout(x, 0.25, training=False), x)
    assert torch.equal(CD.dropout(x, 0.0, training=True), x)
    assert torch.equal(CD.dropout(x, 1.0, training=True), torch.zeros_like(x))
    layer = CD.CpuDropout(0.25)
    assert layer(x).ne(x).any() and torch.equal(layer.eval()(x), x)
    assert layer.state_dict() == {}


def test_compiled_dropout_draws_each_mask_once_as_eager_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.compile (inductor) each dropout layer draws its own mask once per call, in eager's order: the same
    outputs and input gradient as eager under the same seed (backward reuses the forward's masks, it does not draw
    again), and two layers reading the same input (LoRA's query and value) get different masks."""
    draws: list[tuple[int, ...]] = []
    real_draw = CD.random_int16
    monkeypatch.setattr(CD, "random_int16", lambda shape, device="cpu": draws.append(tuple(shape)) or real_draw(shape, device))
    layers = [CD.CpuDropout(0.25) for _ in range(3)]
    for site, layer in enumerate(layers):
        layer.site = site
    torch.manual_seed(0)
    w = torch.randn(16, 16)

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(layers[0](x) @ w)
        return layers[1](h), layers[2](h)  # two dropouts of one input

    tag_compile_caches_with_cpu_isa()  # as loraclf's own compiles do: a graph cached under other CPU caps is not reused
    results = []
    for fn in (step, torch.compile(step)):
        x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1)).requires_grad_()
        torch.manual_seed(2)
        draws.clear()
        a, b = fn(x)
        ((a * 2 + b) ** 2).sum().backward()
        assert draws == [(64, 16)] * 3, draws  # one draw per layer, none in backward, none merged
        results.append((a.detach(), b.detach(), x.grad))
    (a0, b0, g0), (a1, b1, g1) = results
    assert torch.equal(a1 == 0, a0 == 0) and torch.equal(b1 == 0, b0 == 0)  # the same masks
    assert not torch.equal(a0 == 0, b0 == 0)
    for got, want in zip((a1, b1, g1), (a0, b0, g0)):
        torch.testing.assert_close(got, want)


def _qkv(b: int = 3, h: int = 2, length: int = 7, d: int = 8) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    return tuple(torch.randn(b, h, length, d) for _ in range(3))


class _Attn(torch.nn.Module):
    is_causal = False


def test_attention_is_sdpa_without_dropout_and_ignores_masked_keys() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv()
    keep = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    keep[0, ..., 5:] = False
    for mask in (None, keep, torch.zeros(3, 1, 1, 7).masked_fill(~keep, torch.finfo(torch.float32).min)):
        want, _ = sdpa_attention_forward(_Attn(), q, k, v, mask, dropout=0.0, scaling=0.3)
        got, _ = CD.cpu_train_attention(_Attn(), q, k, v, mask, dropout=0.0, scaling=0.3)
        torch.testing.assert_close(got, want)
    # With dropout: masked keys still get no weight, and the output's mean over draws is attention without dropout.
    v_poisoned = v.clone()
    v_poisoned[0, :, 5:] = 1e6
    want, _ = sdpa_attention_forward(_Attn(), q, k, v, keep, dropout=0.0, scaling=0.3)
    torch.manual_seed(2)
    draws = torch.stack([CD.cpu_train_attention(_Attn(), q, k, v_poisoned, keep, dropout=0.2, scaling=0.3)[0]
                         for _ in range(3000)])
    assert draws.abs().max().item() < 1e3
    assert (draws[0] != want).any()
    torch.testing.assert_close(draws.mean(0), want, atol=0.05, rtol=0)


def test_training_switches_to_cpu_dropout_and_saves_a_plain_model(
        tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU run, eager or compiled, trains with CpuDropout layers and the CPU attention; the run it saves loads
    with neither."""
    from loraclf.config import config_from_dict
    from loraclf.rundir import RunDir
    from loraclf.train import recipe
    from loraclf.train import train

    seen: list[tuple[int, str]] = []

    def spy(model: torch.nn.Module) -> int:
        changed = CD.use_cpu_dropout(model)
        seen.append((changed, model.get_base_model().config._attn_implementation))
        return changed

    monkeypatch.setattr(recipe, "use_cpu_dropout", spy)
    base = [f"model.name={tiny_model}", f"data.train_file={ag_small['train']}", "train.max_steps=3", *TINY_QUICK]
    metrics = train(config_from_dict({}, base), tmp_path / "on", console=False)
    assert metrics["global_step"] == 3
    # the tiny RoBERTa: embeddings + 2 layers x 2 hidden dropouts + the head's + LoRA's on query and value (2 x 2)
    assert seen and seen[0][0] >= 8 and seen[0][1] == CD.ATTENTION_NAME
    run = RunDir(tmp_path / "on").load(device="cpu", precision="fp32", merge=False)
    assert not any(isinstance(m, CD.CpuDropout) for m in run.model.modules())
    assert run.model.get_base_model().config._attn_implementation == "sdpa"

    seen.clear()
    train(config_from_dict({}, [*base, "train.cpu_dropout=false"]), tmp_path / "off", console=False)
    assert seen == []

    # A compiled CPU step draws its masks the same way (its path run eager here: torch.compile is the identity).
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    metrics = train(config_from_dict({}, [*base, "model.compile=true"]), tmp_path / "compiled", console=False)
    assert metrics["step_execution"] == "compiled" and seen and seen[0][0] >= 8
