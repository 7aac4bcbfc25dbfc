"""model.compile: length buckets, fixed-row batches with masked filler rows, the compiled step against the eager
one, and the fall back to eager when compiling fails."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY_QUICK, stopped_and_resumed, train_losses as _train_losses
from loraclf.batching import (DeviceTokens, StaticEpoch, bucket_width, fixed_rows, inference_passes, length_buckets,
                              pad_batch, training_widths)
from loraclf.compiled import AUTO_EXECUTION, CompiledOrEager, train_execution
from loraclf.config import config_from_dict
from loraclf.train.step import CrossEntropy, TrainStep


def compiled_train_loss(model: torch.nn.Module, device: torch.device) -> CompiledOrEager:
    """The compiled training step's forward and loss (`TrainStep.forward_loss` under `CompiledOrEager`)."""
    step = TrainStep(model, CrossEntropy(), "compiled", device=device, precision="fp32")
    assert step.compiled is not None
    return step.compiled


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    yield
    torch._dynamo.reset()  # compiled graphs of one test must not serve (or count against) the next


# ---------------------------------------------------------------------------------------------
# Buckets and fixed shapes


def test_length_buckets_rule() -> None:
    """It gives 2^k and 1.5 * 2^k from 32 up, ending at max_length itself."""
    assert length_buckets(128) == [32, 48, 64, 96, 128]
    assert length_buckets(512) == [32, 48, 64, 96, 128, 192, 256, 384, 512]
    assert length_buckets(100) == [32, 48, 64, 96, 100]
    assert length_buckets(32) == [32] and length_buckets(20) == [20]


def test_training_widths_per_device() -> None:
    """It pads a compiled CUDA step to the length buckets (a CUDA graph each) and a CPU one to multiples of 8, as
    eager does (one graph either way)."""
    assert training_widths(128, torch.device("cuda")) == [32, 48, 64, 96, 128]
    assert training_widths(128, torch.device("cpu")) == list(range(8, 129, 8))
    assert training_widths(100, torch.device("cpu"))[-2:] == [96, 100]


@pytest.mark.parametrize("max_length", [20, 64, 100, 128, 512])
def test_every_length_pads_by_under_half(max_length: int) -> None:
    """It puts every length in a bucket that holds it and pads it by less than 50 % (lengths over 32)."""
    buckets = length_buckets(max_length)
    for length in range(1, max_length + 1):
        width = bucket_width(length, buckets)
        assert length <= width <= max_length
        assert width <= 32 or width < 1.5 * length
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        bucket_width(max_length + 1, buckets)


def test_fixed_rows_repeat_the_first_row() -> None:
    assert fixed_rows([5, 3, 9], 5) == [5, 3, 9, 5, 5]
    assert fixed_rows([1, 2], 2) == [1, 2]
    with pytest.raises(ValueError):
        fixed_rows([1, 2, 3], 2)


def test_static_epoch_fixes_rows_and_marks_the_real_ones() -> None:
    """It pads every batch to the same rows (a short one with copies), marks the real rows, and picks each width."""
    lengths = [40, 10, 70, 33, 5]
    epoch = StaticEpoch([[2, 0], [1, 3], [4]], 2, lengths, length_buckets(128), torch.device("cpu"))
    assert epoch.rows.tolist() == [[2, 0], [1, 3], [4, 4]]
    assert epoch.real.tolist() == [[True, True], [True, True], [True, False]]
    assert epoch.widths == [96, 48, 32]


def test_device_tokens_gather_what_pad_batch_builds() -> None:
    """It gathers the same ids and mask as pad_batch, padded on to the bucket's width."""
    seqs = [[0, 5, 6, 2], [0, 7, 2], [0, 8, 9, 10, 11, 2]]
    tokens = DeviceTokens(seqs, pad_id=1, device=torch.device("cpu"), width=16, labels=[3, 1, 2])
    got = tokens.batch(torch.tensor([2, 0]), 8)
    want = pad_batch([seqs[2], seqs[0]], pad_id=1)  # pads to 8 (a multiple of 8)
    assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["attention_mask"], want["attention_mask"])
    assert tokens.labels[torch.tensor([2, 0])].tolist() == [2, 3]


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_on_device_passes_pad_to_eight_within_budget(device_type: str) -> None:
    """Compiled and GPU inference's passes (one graph for every shape): each row once, longest first, padded to the
    longest row rounded up to 8 (capped at max_length), within 8x the rows and batch_size x max_length tokens, in
    fp32 too."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 129, size=1000).tolist()
    batches = inference_passes(lengths, 64, device_type, "fp32", max_width=128, on_device=True)
    assert sorted(p for _, pos in batches for p in pos) == list(range(1000))
    for width, pos in batches:
        longest = max(lengths[p] for p in pos)
        assert longest == lengths[pos[0]] and width == min(128, -(-longest // 8) * 8)
        assert len(pos) <= 512 and len(pos) * lengths[pos[0]] <= 128 * 64
    assert inference_passes([100, 3], 8, device_type, "bf16", max_tokens=10_000, max_width=100,
                            on_device=True) == [(100, [0, 1])]  # 104 > max_length


def test_filler_rows_do_not_count_in_the_loss() -> None:
    """It gives the plain mean cross-entropy of the real rows, even when a filler row's logits are not finite."""
    logits = torch.tensor([[2.0, 0.5], [0.1, 0.3], [float("nan"), 1.0], [5.0, -5.0]])
    targets = torch.tensor([0, 1, 0, 1])
    real = torch.tensor([True, True, False, False])
    want = torch.nn.functional.cross_entropy(logits[:2], targets[:2])
    assert torch.allclose(CrossEntropy()(logits, targets, real), want)


def test_inference_compile_setting_resolves_per_device_and_use() -> None:
    """auto: never on CUDA (large eager batches keep a GPU busy: compiling did not pay, bench/FINDINGS_gpu.md); on
    CPU only a merged model in bf16, and then for a server or a large enough set of texts."""
    from loraclf.compiled import inference_compile_enabled

    CPU_AUTO_COMPILE_MIN_ROWS = AUTO_EXECUTION[("predict", "cpu", "bf16")][1]

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert inference_compile_enabled("auto", cuda, merged=True, rows=100_000) is False
    assert inference_compile_enabled("auto", cuda, merged=True, serving=True) is False
    assert inference_compile_enabled(True, cuda, merged=False) is True
    assert inference_compile_enabled("auto", cpu, merged=True, serving=True) is True
    assert inference_compile_enabled("auto", cpu, merged=False, serving=True) is False  # shared, unmerged base
    assert inference_compile_enabled("auto", cpu, merged=True, rows=7600) is False  # a compile would not pay back
    assert inference_compile_enabled("auto", cpu, merged=True, rows=CPU_AUTO_COMPILE_MIN_ROWS, precision="bf16") is True
    assert inference_compile_enabled("auto", cpu, merged=True, rows=CPU_AUTO_COMPILE_MIN_ROWS, precision="fp32") is False
    # fp32 on CPU stays eager, for a server too: compiled it answered fewer requests/s (bench/FINDINGS_cpu.md)
    assert inference_compile_enabled("auto", cpu, merged=True, serving=True, precision="fp32") is False
    assert inference_compile_enabled(True, cpu, merged=True, serving=True, precision="fp32") is True
    assert inference_compile_enabled(False, cuda, merged=True, serving=True) is False
    assert inference_compile_enabled(True, cpu, merged=False, rows=1) is True


def test_compile_setting_resolves_per_device() -> None:
    """It follows AUTO_EXECUTION on auto: CUDA compiles; on CPU a long bf16 run in one process compiles (its one
    compile pays back), a short one, fp32 or DDP stays eager. true/false are taken as given."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert train_execution(True, cpu, "fp32") == ("compiled", None) and train_execution(False, cuda, "bf16") == ("eager", None)
    assert train_execution("auto", cuda, "bf16") == ("compiled", None)
    enough = AUTO_EXECUTION[("train", "cpu", "bf16")][1]
    assert train_execution("auto", cpu, "bf16", train_samples=enough) == ("compiled", None)
    assert train_execution("auto", cpu, "bf16", train_samples=enough - 1) == ("eager", None)
    assert train_execution("auto", cpu, "fp32", train_samples=enough) == ("eager", None)
    assert train_execution("auto", cpu, "bf16", train_samples=enough, processes=2) == ("eager", None)
    assert train_execution("auto", cpu, "bf16") == ("eager", None)


@pytest.mark.parametrize("override, ok", [("model.compile=auto", "auto"), ("model.compile=true", True),
                                          ("model.compile=false", False), ("model.compile=cudagraphs", "cudagraphs"),
                                          ("model.compile=maybe", None), ("model.compile=1", None)])
def test_config_accepts_the_compile_settings_only(override: str, ok: object) -> None:
    if ok is not None:
        assert config_from_dict({}, [override]).model.compile == ok
        return
    from loraclf.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        config_from_dict({}, [override])
    value = override.split("=", 1)[1]
    assert str(e.value) == f"model.compile: {int(value) if value.isdigit() else repr(value)} is not a compile setting; use auto, true, false or cudagraphs"


# ---------------------------------------------------------------------------------------------
# Falling back to eager


def test_compile_failure_warns_once_and_runs_eager(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    """It prints one warning line when compiling fails (here: torch.compile itself raises) and returns eager results."""
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nsecond line of the error")

    monkeypatch.setattr(torch, "compile", broken_compile)
    calls: list[float] = []
    fn = CompiledOrEager(lambda x: x * 2, mode="default", what="training step")
    outs = [fn(torch.tensor(float(i)), then=lambda r: calls.append(float(r))) for i in range(3)]
    assert [float(o) for o in outs] == [0.0, 2.0, 4.0] and calls == [0.0, 2.0, 4.0]
    err = capfd.readouterr().err.strip().splitlines()
    assert err == ["warning: model.compile: the training step could not be compiled (RuntimeError: no C++ compiler); running it eager"]


def test_first_call_that_compiles_says_so(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    """It prints one line with the seconds of a first call that compiled (a long silent stall looks like a hang),
    and nothing for the calls after it."""
    import loraclf.compiled as C

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    monkeypatch.setattr(C, "COMPILE_NOTICE_SECONDS", 0.0)
    fn = CompiledOrEager(lambda x: x + 1, mode=None, what="inference forward pass")
    fn(torch.zeros(2)), fn(torch.zeros(3))
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("model.compile: the inference forward pass compiled in ")
    assert fn.first_call_seconds is not None


def test_first_compile_tags_the_cache_key_with_the_cpu_instruction_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first call of a CompiledOrEager adds inductor's CPU instruction set to torch.compile's cache key, keeping
    a tag the user set and replacing an earlier instruction-set tag of its own."""
    import loraclf.compiled as C
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    # config.patch, not monkeypatch: monkeypatch's undo leaves a torch config module without the setting
    with torch.compiler.config.patch(cache_key_tag=f"users-own;{C.CPU_ISA_TAG_PREFIX}sse9"):
        fn = CompiledOrEager(lambda x: x + 1, mode=None, what="inference forward pass")
        assert float(fn(torch.zeros(()))) == 1.0
        want = C.CPU_ISA_TAG_PREFIX + str(pick_vec_isa()).replace(" ", "+")
        assert torch.compiler.config.cache_key_tag == f"users-own;{want}"
        assert C.tag_compile_caches_with_cpu_isa() == want and torch.compiler.config.cache_key_tag == f"users-own;{want}"


_COMPILE_AND_COMPARE = """
import torch
from loraclf.compiled import CompiledOrEager
fn = lambda x: torch.tanh(x) * 2.0 + 1.0
x = torch.linspace(-3, 3, 3 * 1024).reshape(3, 1024)
compiled = CompiledOrEager(fn, mode=None, what="test function")
print(max(float((compiled(x) - fn(x)).abs().max()) for _ in range(20)))
"""


@pytest.mark.slow
def test_a_graph_compiled_under_avx2_caps_is_not_served_to_a_wider_cpu(tmp_path: Path) -> None:
    """Two processes share one inductor cache directory: the first runs with ATEN_CPU_CAPABILITY=avx2 (as the
    benchmarks emulate an AVX2-only CPU), the second uncapped. Without the instruction set in the cache key the second
    got the first's 8-float loops built for AVX-512 and aborted with a corrupted heap (torch 2.13, AVX-512 EPYC)."""
    import os
    import subprocess
    import sys

    from torch._inductor.cpu_vec_isa import pick_vec_isa

    if not str(pick_vec_isa()).startswith("avx512"):
        pytest.skip(f"inductor's vector instruction set here is {pick_vec_isa()}: capping it at AVX2 changes nothing")
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "TORCH_COMPILE_CACHE_KEY_TAG")}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    for caps in ({"ATEN_CPU_CAPABILITY": "avx2"}, {}):
        run = subprocess.run([sys.executable, "-c", _COMPILE_AND_COMPARE], env={**env, **caps}, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, (caps, run.stderr[-2000:])
        assert float(run.stdout.split()[-1]) < 1e-5, (caps, run.stdout)


# ---------------------------------------------------------------------------------------------
# The recipe: compiled (static shapes) against eager


def _aot_eager_compile(real_compile):
    # Dynamo + AOTAutograd trace the step as torch.compile does, but run eager kernels (no inductor codegen,
    # seconds instead of minutes on 2 cores); test_inductor_step_matches_eager covers inductor itself.
    def compile_(fn, mode=None, dynamic=None, **kw):
        return real_compile(fn, backend="aot_eager", dynamic=dynamic)
    return compile_


def _no_compile(fn, **kwargs):
    # The static-shape path (buckets, filler rows, ids on the device) run as plain eager code: fast.
    return fn


@pytest.mark.parametrize("compile_backend", [
    pytest.param(_no_compile, id="static-shapes-eager"),
    pytest.param(_aot_eager_compile(torch.compile), id="aot_eager", marks=pytest.mark.slow),  # ~1.5 min on 2 busy cores
])
def test_compiled_run_matches_eager_run(compile_backend, tiny_model_without_dropout: Path, ag_small: dict[str, Path],
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    """It takes the same steps with the same losses and validation metrics compiled (static shapes, filler rows)
    as eager, within fp32 tolerance, and prints no warning."""
    eager_losses, eager = _train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "eager", "false")
    monkeypatch.setattr(torch, "compile", compile_backend)
    compiled_losses, compiled = _train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "compiled", "true")
    assert len(compiled_losses) == len(eager_losses) == eager["global_step"] == 12
    assert compiled_losses == pytest.approx(eager_losses, abs=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-4)
    assert compiled["val_accuracy"] == eager["val_accuracy"]
    assert compiled["train_samples"] == eager["train_samples"]  # filler rows are not samples
    assert compiled["step_execution"] == "compiled" and compiled["compile_fell_back"] is False
    assert "warning" not in capfd.readouterr().err


def test_compile_failure_in_a_run_falls_back_to_eager(tiny_model_without_dropout: Path, ag_small: dict[str, Path],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capfd: pytest.CaptureFixture) -> None:
    """It finishes a run whose compile fails at the first step, with one warning line per compiled function."""
    def compile_that_fails_on_call(fn, **kwargs):  # torch.compile is lazy: its errors come at the first call
        def compiled(*args):
            raise RuntimeError("inductor: C++ compile failed")
        return compiled

    monkeypatch.setattr(torch, "compile", compile_that_fails_on_call)
    losses, metrics = _train_losses(tiny_model_without_dropout, ag_small["train"], tmp_path / "run", "true")
    assert metrics["global_step"] == 12 and len(losses) == 12 and all(np.isfinite(losses))
    assert metrics["compile_fell_back"] is True
    warnings = [ln for ln in capfd.readouterr().err.splitlines() if "warning" in ln]
    assert warnings == [
        "warning: model.compile: the training step could not be compiled (RuntimeError: inductor: C++ compile failed); running it eager",
        "warning: model.compile: the inference forward pass could not be compiled (RuntimeError: inductor: C++ compile failed); running it eager",
    ]


def test_one_training_graph_serves_every_length_bucket(tiny_model_without_dropout: Path) -> None:
    """It traces the compiled training loss once for batches of three bucket widths (the width is a dynamic
    size), with the eager loss at each width (fp32; AOTAutograd traces as inductor would, eager kernels run)."""
    from loraclf import model as M
    from loraclf.config import LoraConfig, ModelConfig

    torch.manual_seed(0)
    base = M.load_base_model(ModelConfig(name=str(tiny_model_without_dropout)), ["a", "b", "c", "d"])
    model = M.apply_lora(base, LoraConfig(dropout=0.0))
    model.train()
    real_compile = torch.compile
    loss_fn = compiled_train_loss(model, torch.device("cpu"))
    loss_fn.compiled = real_compile(loss_fn.eager, backend="aot_eager", dynamic=False)
    torch._dynamo.utils.counters.clear()
    g = torch.Generator().manual_seed(2)
    for width in (32, 48, 64):
        ids = torch.randint(5, 700, (8, width), generator=g)
        mask = torch.ones_like(ids)
        mask[:, width - 7:] = 0
        targets, real = torch.randint(0, 4, (8,), generator=g), torch.arange(8) < 6
        got = loss_fn(ids, mask, targets, real, then=lambda x: x.backward())
        want = torch.nn.functional.cross_entropy(model(input_ids=ids[:6], attention_mask=mask[:6]).logits.float(), targets[:6])
        assert float(got.detach()) == pytest.approx(float(want), abs=1e-5)
    assert not loss_fn.failed
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@pytest.mark.slow
def test_inductor_step_matches_eager(tiny_model_without_dropout: Path) -> None:
    """It computes the same per-step losses with the inductor-compiled training loss as eager (3 AdamW steps,
    one 8 x 32 shape with 3 filler rows), within bf16 or fp32 tolerance."""
    from loraclf import model as M
    from loraclf.config import LoraConfig, ModelConfig
    from loraclf.inference import autocast_context

    precision = M.resolve_precision("auto", torch.device("cpu"))
    torch.manual_seed(0)
    base = M.load_base_model(ModelConfig(name=str(tiny_model_without_dropout)), ["a", "b", "c", "d"])
    model = M.apply_lora(base, LoraConfig(dropout=0.0))
    model.train()
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 700, (3, 8, 32), generator=g)
    mask = torch.ones_like(ids)
    mask[:, :, 20:] = 0
    targets = torch.randint(0, 4, (3, 8), generator=g)
    real = torch.arange(8) < 5

    def run(compiled: bool) -> list[float]:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in start:
                    p.copy_(start[n])
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        loss_fn = compiled_train_loss(model, torch.device("cpu")) if compiled else None
        losses = []
        for s in range(3):
            with autocast_context(torch.device("cpu"), precision):
                if loss_fn is not None:
                    loss = loss_fn(ids[s], mask[s], targets[s], real, then=lambda x: x.backward())
                else:
                    logits = model(input_ids=ids[s][:5], attention_mask=mask[s][:5]).logits
                    loss = torch.nn.functional.cross_entropy(logits.float(), targets[s][:5])
                    loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss))
        assert loss_fn is None or not loss_fn.failed
        return losses

    eager, compiled = run(False), run(True)
    assert compiled == pytest.approx(eager, abs=3e-2 if precision == "bf16" else 1e-4)


@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "cpu-dropout"])
def test_compiled_run_resumes_exactly(dropout: bool, tiny_model_without_dropout: Path, tiny_model: Path,
                                      ag_small: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It resumes a compiled run stopped after an evaluation mid-epoch and ends with the same losses and
    validation metrics as the uninterrupted compiled run, with dropout too (the compiled CPU step draws
    train.cpu_dropout's masks from the generator a checkpoint restores). The compiled path's fixed shapes run as
    plain eager code here (a dynamo trace of three runs took ~35 s of the suite);
    test_compiled_run_matches_eager_run[aot_eager] covers the tracing, and
    test_cpu_dropout.py::test_compiled_dropout_draws_each_mask_once_as_eager_does the compiled draws."""
    monkeypatch.setattr(torch, "compile", _no_compile)
    model = tiny_model if dropout else tiny_model_without_dropout
    overrides = [*TINY_QUICK, "model.max_length=48", "train.epochs=2", "train.log_every_steps=1", "train.eval_every_steps=8",
                 f"lora.dropout={0.1 if dropout else 0}", "model.precision=fp32", "model.compile=true",
                 "train.eval_batch_size=64"]
    cfg = config_from_dict({"model": {"name": str(model)}, "data": {"train_file": str(ag_small["train"])}}, overrides)
    full, resumed, full_losses, resumed_losses = stopped_and_resumed(cfg, tmp_path, stop_at_step=8)
    assert resumed["global_step"] == full["global_step"] > 8
    assert resumed_losses == pytest.approx(full_losses, abs=1e-5)
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], abs=1e-5)


def test_filler_rows_do_not_count_with_label_smoothing() -> None:
    """It matches the plain mean cross-entropy of the real rows with label smoothing too (train.label_smoothing)."""
    logits = torch.tensor([[2.0, 0.5, 0.1], [0.1, 0.3, 0.2], [9.0, -9.0, 0.0]])
    targets = torch.tensor([0, 2, 1])
    real = torch.tensor([True, True, False])
    want = torch.nn.functional.cross_entropy(logits[:2], targets[:2], label_smoothing=0.2)
    assert torch.allclose(CrossEntropy(0.2)(logits, targets, real), want)
