"""`model.precision=auto` on a CPU: bf16 only with native bf16 instructions that the process may use."""
from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO
from loraclf.model import cpu_supports_bf16, resolve_precision

AMX = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
AVX512_BF16 = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
AVX2 = "flags\t\t: fpu sse2 avx2 fma\n"


@pytest.mark.parametrize("cpuinfo, expected", [(AMX, True), (AVX512_BF16, True), (AVX2, False), ("", False)])
def test_native_bf16_comes_from_the_cpu_flags(cpuinfo: str, expected: bool) -> None:
    assert cpu_supports_bf16(cpuinfo, env={}) is expected


@pytest.mark.parametrize("env", [
    {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    {"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"},
    {"DNNL_MAX_CPU_ISA": "AVX512_CORE"},
    {"ATEN_CPU_CAPABILITY": "avx2"},
    {"ATEN_CPU_CAPABILITY": "default"},
])
def test_an_instruction_set_cap_below_bf16_means_no_native_bf16(env: dict[str, str]) -> None:
    """A process told to use AVX2 at most (to measure an AVX2-only machine's path) must not pick emulated bf16."""
    assert not cpu_supports_bf16(AMX, env=env)


@pytest.mark.parametrize("env", [
    {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},
    {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"},
    {"ONEDNN_MAX_CPU_ISA": "ALL"},
    {"ATEN_CPU_CAPABILITY": "avx512"},
])
def test_caps_at_or_above_bf16_keep_it(env: dict[str, str]) -> None:
    assert cpu_supports_bf16(AMX, env=env)


def test_auto_precision_on_cpu_follows_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_precision reads the real environment: capped to AVX2, auto is fp32 whatever this CPU has."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # an explicit choice stays


def test_benchmarks_name_the_cap_with_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A figure measured under a cap describes a smaller CPU than /proc/cpuinfo: the CPU name says so."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    sys.modules.pop("benchenv", None)
    import benchenv

    for k in benchenv.ISA_CAP_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    assert "capped" not in benchenv.cpu_name()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert benchenv.cpu_name().endswith("[capped: ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2]")
