"""The LoRA levers of the config (rsLoRA, DoRA, adapter init, LoRA+, head lr, label smoothing): each reaches peft,
the optimizer or the loss, and a run trained with them saves an adapter that loads back for inference."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import LORACLF, TINY_QUICK, one_error_line
from loraclf import model as M
from loraclf.config import ModelConfig, config_from_dict
from loraclf.errors import ConfigError
from loraclf.train.optim import param_groups


def lora_model(tiny_model: Path, *overrides: str) -> torch.nn.Module:
    cfg = config_from_dict({}, list(overrides))
    torch.manual_seed(0)
    base = M.load_base_model(ModelConfig(name=str(tiny_model)), ["a", "b", "c", "d"])
    return M.apply_lora(base, cfg.lora)


def lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]


def test_rslora_scales_by_the_square_root_of_the_rank(tiny_model: Path) -> None:
    plain = lora_layers(lora_model(tiny_model, "lora.r=16", "lora.alpha=32", "lora.use_rslora=false"))[0]
    rs = lora_layers(lora_model(tiny_model, "lora.r=16", "lora.alpha=32", "lora.use_rslora=true"))[0]
    assert plain.scaling["default"] == pytest.approx(32 / 16)
    assert rs.scaling["default"] == pytest.approx(32 / math.sqrt(16))


def test_dora_adds_a_trained_magnitude_vector(tiny_model: Path) -> None:
    model = lora_model(tiny_model, "lora.use_dora=true")
    assert model.peft_config["default"].use_dora is True
    magnitudes = [n for n, p in model.named_parameters() if "lora_magnitude_vector" in n and p.requires_grad]
    assert len(magnitudes) == len(lora_layers(model)) > 0
    assert M.store_frozen_linears(model, "bf16") == 0  # DoRA's weight norm reads the base weight: left in fp32


@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_adapter_init_starts_from_the_unchanged_base(tiny_model: Path, init: str) -> None:
    """Every init on offer leaves the model's function as the base's (B @ A = 0) with a different A or B than default."""
    default = lora_layers(lora_model(tiny_model))[0]
    other = lora_layers(lora_model(tiny_model, f"lora.init={init}"))[0]
    a, b = other.lora_A["default"].weight, other.lora_B["default"].weight
    torch.testing.assert_close(b @ a, torch.zeros(b.shape[0], a.shape[1]), atol=1e-6, rtol=0)
    assert not torch.equal(a, default.lora_A["default"].weight) or not torch.equal(b, default.lora_B["default"].weight)


def test_orthogonal_init_refuses_an_odd_rank() -> None:
    with pytest.raises(ConfigError, match=r"lora\.init: orthogonal needs an even lora\.r \(got 5\); use lora\.r=6"):
        config_from_dict({}, ["lora.init=orthogonal", "lora.r=5"])
    with pytest.raises(ConfigError, match=r"lora\.init: 'pissa' is not an option; use one of default, gaussian, orthogonal"):
        config_from_dict({}, ["lora.init=pissa"])


def test_param_groups_give_head_and_lora_b_their_own_rates(tiny_model: Path) -> None:
    model = lora_model(tiny_model)
    groups = param_groups(model, 0.01, 1e-3, head_lr=5e-3, lora_plus_ratio=16)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    names = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(lr_of) == len(names)  # every trainable weight in exactly one group
    for name, p in names.items():
        lr, wd = lr_of[id(p)]
        expected = 5e-3 if "modules_to_save" in name else 16e-3 if "lora_B" in name else 1e-3
        assert lr == pytest.approx(expected), name
        assert wd == (0.0 if p.ndim < 2 else 0.01), name
    # Defaults: one rate for all, so the old two groups (decay / no decay).
    assert sorted((g["lr"], g["weight_decay"]) for g in param_groups(model, 0.01, 1e-3)) == [(1e-3, 0.0), (1e-3, 0.01)]


def test_label_smoothing_reaches_the_training_loss(tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from loraclf.train import train

    seen: list[float] = []
    real = torch.nn.functional.cross_entropy

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003 - torch's own signature
        seen.append(kwargs.get("label_smoothing", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording)
    cfg = config_from_dict({}, [f"model.name={tiny_model}", f"data.train_file={ag_small['train']}", "train.max_steps=3",
                                "train.label_smoothing=0.2", "model.precision=fp32", *TINY_QUICK])  # fp32 as the other in-process runs: accelerate keeps one precision per process
    train(cfg, tmp_path / "run", console=False)
    assert seen and set(seen) == {0.2}


def test_a_run_with_every_lever_saves_an_adapter_that_loads(tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """DoRA + rsLoRA + gaussian init + LoRA+ + head lr + label smoothing through the real CLI; evaluate loads the adapter."""
    out = tmp_path / "run"
    r = subprocess.run(
        [*LORACLF, "train", "--model", str(tiny_model), "--train-file", str(ag_small["train"]), "--out", str(out), *TINY_QUICK,
         "train.max_steps=6", "lora.use_dora=true", "lora.use_rslora=true", "lora.init=gaussian",
         "train.lora_plus_ratio=8", "train.head_lr=3e-3", "train.label_smoothing=0.1"],
        capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter_cfg["use_dora"], adapter_cfg["use_rslora"], adapter_cfg["init_lora_weights"]) == (True, True, "gaussian")
    r = subprocess.run([*LORACLF, "evaluate", str(out), "--data", str(ag_small["test"]), "--out", str(tmp_path / "eval")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 0.0 <= json.loads((tmp_path / "eval" / "metrics.json").read_text())["accuracy"] <= 1.0


def test_bad_lever_values_are_one_line(tmp_path: Path) -> None:
    r = subprocess.run([*LORACLF, "train", "train.lora_plus_ratio=0.5"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "train.lora_plus_ratio: 0.5 is too small" in one_error_line(r)


def test_frozen_linears_stored_in_bf16_train_bit_identically(tiny_model: Path) -> None:
    """store_frozen_linears: the base's frozen Linear layers move to bf16, everything that trains (LoRA A/B, the head,
    a trained bias) stays fp32, and under bf16 autocast the loss and every gradient are bit-identical to fp32
    storage, step after step."""
    torch.manual_seed(0)
    ref = lora_model(tiny_model, "lora.bias=lora_only")
    stored = lora_model(tiny_model, "lora.bias=lora_only")
    stored.load_state_dict(ref.state_dict())
    assert M.store_frozen_linears(stored, "bf16") > 0 and M.store_frozen_linears(stored, "fp32") == 0
    assert all(q.dtype == torch.float32 for q in stored.parameters() if q.requires_grad)
    linears = [m for m in stored.modules() if isinstance(m, torch.nn.Linear)]
    assert any(m.weight.dtype == torch.bfloat16 for m in linears)
    assert all(m.weight.dtype == torch.bfloat16 for m in linears if not m.weight.requires_grad and
               not any(p.requires_grad for p in m.parameters(recurse=False)))
    ids = torch.randint(5, 100, (4, 12))
    labels = torch.tensor([0, 1, 2, 3])
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2) for m in (ref, stored)]
    for _ in range(3):
        losses = []
        for m, opt in zip((ref, stored), opts):
            m.train()
            torch.manual_seed(1)  # the same dropout masks on both sides
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(m(input_ids=ids).logits.float(), labels)
            loss.backward()
            losses.append(loss.detach())
            opt.step()
            opt.zero_grad()
        assert torch.equal(losses[0], losses[1])
    for (name, p), (_, q) in zip(ref.named_parameters(), stored.named_parameters()):
        if p.requires_grad:
            assert torch.equal(p, q), name
