"""Encoder + LoRA: devices and precision, the tokenizer and base model, PEFT adapters on top.

Loading a *trained* run back is `loraclf.rundir.RunDir.load`; this module knows models, not files.
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .architectures import resolve_target_modules, trained_modules
from .config import Config, LoraConfig, ModelConfig
from .errors import CheckpointError, ConfigError, ModelError



def _quiet_transformers() -> None:
    # The "newly initialized classifier" load report is expected for us and would alarm users.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*Setting `save_embedding_layers`.*")
    warnings.filterwarnings("ignore", message=".*fine-tuning.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA, or the older DNNL_MAX_CPU_ISA) below AVX512_CORE_BF16: under them
# oneDNN's matmuls have no bf16 instructions. ATen capabilities (ATEN_CPU_CAPABILITY) without AVX-512: its
# bf16 kernels are emulated. Both variables are how one runs a capable CPU as a smaller one (e.g. to measure
# an AVX2-only machine's path), so `auto` precision follows them.
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
_ATEN_CAPABILITIES_WITHOUT_BF16 = {"default", "avx2"}


@functools.lru_cache(maxsize=None)
def _proc_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_supports_bf16(cpuinfo: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True on CPUs with native bf16 matrix instructions (amx_bf16 or avx512_bf16 in /proc/cpuinfo), unless the
    process caps the instruction sets below them (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA, ATEN_CPU_CAPABILITY).

    Without them bf16 is emulated and measured ~28x slower than fp32 for a LoRA step.
    cpuinfo, env: /proc/cpuinfo's text and os.environ (arguments for tests).
    """
    flags = set((_proc_cpuinfo() if cpuinfo is None else cpuinfo).split())
    if not flags & {"amx_bf16", "avx512_bf16"}:
        return False
    env = os.environ if env is None else env
    onednn_cap = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    aten_cap = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return onednn_cap not in _ONEDNN_ISAS_WITHOUT_BF16 and aten_cap not in _ATEN_CAPABILITIES_WITHOUT_BF16


def resolve_device(requested: str | None = None) -> torch.device:
    if requested and requested != "auto":
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(requested: str, device: torch.device) -> str:
    """Map `auto` to what this hardware runs fastest without hurting accuracy: fp32, bf16 or fp16."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def _load_error(kind: str, name: str, err: Exception) -> ModelError:
    local = Path(name).expanduser()
    reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    if local.is_dir() and (local / "config.json").is_file():  # a model directory: the reason is the news
        return ModelError(f"cannot load {kind} from '{name}': {reason}")
    if local.exists():
        return ModelError(f"cannot load {kind} from '{name}': {reason}; check that it is a saved Hugging Face model directory")
    return ModelError(
        f"cannot load {kind} '{name}': it is not a local directory and the Hugging Face hub is unreachable "
        f"or has no such model ({reason}); pass a local model directory with --model"
    )


def _prepare(name: str) -> None:
    if not Path(name).expanduser().exists():
        from .hub import prepare_hub_access

        prepare_hub_access()


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    _quiet_transformers()
    _prepare(name)
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as e:  # transformers raises OSError, ValueError, HF hub errors...
        raise _load_error("tokenizer", name, e) from None


def load_base_model(cfg: ModelConfig, label_names: list[str]) -> torch.nn.Module:
    """The pretrained encoder with a fresh classification head for `label_names` (fp32 weights)."""
    from transformers import AutoModelForSequenceClassification

    _quiet_transformers()
    _prepare(cfg.name)
    id2label = {i: n for i, n in enumerate(label_names)}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            cfg.name,
            num_labels=len(label_names),
            id2label=id2label,
            label2id={n: i for i, n in id2label.items()},
            # auto: transformers' own choice, SDPA where the architecture has it, else eager
            attn_implementation=None if cfg.attn_implementation == "auto" else cfg.attn_implementation,
            ignore_mismatched_sizes=True,  # a checkpoint with another head size gets a fresh head
        )
    except ValueError as e:
        if "does not support an attention implementation" in str(e):
            raise ConfigError(f"model.attn_implementation={cfg.attn_implementation}: '{cfg.name}' "
                              f"({str(e).split(' does not', 1)[0]}) does not support it in this transformers; "
                              f"use model.attn_implementation=auto (its fastest) or eager") from None
        raise _load_error("model", cfg.name, e) from None
    except Exception as e:
        raise _load_error("model", cfg.name, e) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = 0
    return model


def _accepts_length(model: torch.nn.Module, length: int, pad_id: int) -> bool:
    """True when a forward pass over one sequence of `length` tokens runs (positions fit the embeddings)."""
    ids = torch.full((1, length), pad_id, dtype=torch.long)
    try:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except (IndexError, RuntimeError, ValueError):
        return False
    return True


def check_max_length(model: torch.nn.Module, cfg: ModelConfig, tokenizer: Any) -> None:
    """Raise ConfigError when model.max_length exceeds what the model's position embeddings hold.

    Checked once the model is loaded and before the run directory exists. A length within two of the
    table's size is probed with one short forward pass, since some models (RoBERTa) offset positions.
    """
    positions = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(positions, int) or cfg.max_length <= positions - 2:
        return
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if cfg.max_length <= positions and _accepts_length(model, cfg.max_length, pad_id):
        return
    limit = next((n for n in (positions, positions - 1, positions - 2) if n < cfg.max_length and _accepts_length(model, n, pad_id)),
                 positions - 2)
    raise ConfigError(f"model.max_length={cfg.max_length} is more than '{cfg.name}' accepts ({limit} tokens, the size of its "
                      f"position embeddings); set model.max_length={limit} or less")


def attention_kernel(model: torch.nn.Module) -> str:
    """The attention implementation the loaded model runs (sdpa, eager, ...)."""
    return str(getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager")


def resolved_config(model: torch.nn.Module, cfg: Config) -> Config:
    """`cfg` with its `auto` settings resolved for the loaded `model`: the attention kernel it runs and the
    LoRA target modules (`resolved_lora`)."""
    import dataclasses

    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, attn_implementation=attention_kernel(model)),
                               lora=resolved_lora(model, cfg.lora))


def resolved_lora(model: torch.nn.Module, cfg: LoraConfig) -> LoraConfig:
    """`cfg` with lora.target_modules resolved for `model` (auto / all-linear -> the names; explicit names
    checked): what a run records in its config.yaml, so it resumes and reloads with the same adapters."""
    import dataclasses

    names = resolve_target_modules(model, cfg.target_modules, trained_modules(model, cfg.modules_to_save))
    return dataclasses.replace(cfg, target_modules=names)


def apply_lora(model: torch.nn.Module, cfg: LoraConfig) -> Any:
    """Wrap `model` with LoRA adapters; only adapters and the head train (lora.target_modules auto and
    all-linear resolved for the architecture: `resolved_lora`)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    cfg = resolved_lora(model, cfg)
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias=cfg.bias,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        init_lora_weights=True if cfg.init == "default" else cfg.init,
        task_type="SEQ_CLS",
        # Module names by their last part: PEFT matches target_modules and modules_to_save by suffix.
        modules_to_save=trained_modules(model, cfg.modules_to_save),
    )
    return get_peft_model(model, peft_cfg)


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def merge_for_inference(model: Any, precision: str, device: torch.device | None = None) -> torch.nn.Module:
    """The PEFT model as one plain model for inference only: LoRA merged into the base weights
    (`merge_and_unload`; the trained head copies replace the originals) and, for bf16/fp16, every Linear
    weight stored in that dtype; on a CPU in bf16 the whole model (`stored_in`, then scored without autocast).

    Why: unmerged, each adapted layer runs two extra small matmuls, and autocast casts every fp32 weight to
    bf16 again at each forward pass (it caches casts only for weights that require grad). On a CPU in bf16
    autocast still casts activations (LayerNorm, softmax and the residual adds run in fp32, every Linear casts its
    input down again), so there the whole model is stored in bf16 and runs without autocast, at the same accuracy
    (figures: bench/FINDINGS_cpu.md, `bench/cpu_inference.py`). GPUs keep fp32 LayerNorm and embeddings under
    autocast. The result cannot train or take another adapter (serve keeps shared bases unmerged). A BERT-family classifier computes its last
    layer for the first position only (`first_token_last_layer`).
    """
    merged = model.merge_and_unload()
    merged.requires_grad_(False)
    dtype = DTYPES.get(precision)
    if dtype is torch.bfloat16 and device is not None and device.type == "cpu":
        merged.to(dtype)
    else:
        store_frozen_linears(merged, precision)
    first_token_last_layer(merged)
    merged.eval()
    return merged


# Sequence classifiers of the BERT family whose head reads the first position's final hidden state only (BERT's
# pooler, the [CLS]/<s> classification heads of RoBERTa, XLM-R, CamemBERT and ELECTRA).
FIRST_TOKEN_CLASSIFIERS = frozenset({"BertForSequenceClassification", "RobertaForSequenceClassification",
                                     "XLMRobertaForSequenceClassification", "CamembertForSequenceClassification",
                                     "ElectraForSequenceClassification"})


class FirstTokenLayer(torch.nn.Module):
    """A BERT-family encoder layer computed for the first position only: its query, attention output and
    feed-forward run on one row per text, its keys and values on all of them. The output is [batch, 1, hidden],
    all a first-token head reads.

    Why: the last layer's other positions feed nothing. Dropping them saves ~10/12 of one layer's matmuls, at the
    same accuracy (fp32 logits agree to ~1e-6; figures: bench/FINDINGS_cpu.md)."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args: Any,
                **kwargs: Any) -> torch.Tensor:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        kwargs.pop("encoder_attention_mask", None)  # an encoder's layers get these as None
        kwargs.pop("cache", None)
        attn = self.layer.attention.self
        rows, first = hidden_states.shape[0], hidden_states[:, :1]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(rows, x.shape[1], -1, attn.attention_head_size).transpose(1, 2)

        query, key, value = heads(attn.query(first)), heads(attn.key(hidden_states)), heads(attn.value(hidden_states))
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = attention_mask[:, :, :1]  # the first query's row of a [rows, 1, queries, keys] mask
        attention = ALL_ATTENTION_FUNCTIONS[attn.config._attn_implementation]  # sdpa (first_token_last_layer)
        context, _ = attention(attn, query, key, value, attention_mask, dropout=0.0, scaling=attn.scaling, **kwargs)
        out = self.layer.attention.output(context.reshape(rows, 1, -1), first)
        return self.layer.output(self.layer.intermediate(out), out)


def first_token_last_layer(model: torch.nn.Module) -> bool:
    """Replace the last encoder layer of a merged, inference-only BERT-family classifier (FIRST_TOKEN_CLASSIFIERS)
    by a `FirstTokenLayer`; returns whether it did. Other architectures, decoders and attention other than SDPA
    (eager; flash attention, which takes 2-D padding masks for queries and keys alike) stay as they are."""
    if type(model).__name__ not in FIRST_TOKEN_CLASSIFIERS:
        return False
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return False
    last = layers[-1]
    attn = getattr(getattr(last, "attention", None), "self", None)
    if (isinstance(last, FirstTokenLayer) or getattr(last, "is_decoder", True) or attn is None
            or not all(hasattr(attn, a) for a in ("query", "key", "value", "attention_head_size", "scaling", "config"))
            or not all(hasattr(last, a) for a in ("intermediate", "output"))
            or getattr(attn.config, "_attn_implementation", None) != "sdpa"):  # the one measured and tested
        return False
    layers[-1] = FirstTokenLayer(last)
    return True


def stored_in(model: torch.nn.Module, dtype: torch.dtype) -> bool:
    """Whether every floating-point parameter and buffer of `model` is already in `dtype`: such a model runs
    without autocast, which would cast its LayerNorm and softmax inputs up to fp32 and back."""
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.dtype == dtype for t in tensors if t.is_floating_point())


def store_frozen_linears(model: torch.nn.Module, precision: str) -> int:
    """Store the weight and bias of every Linear layer that does not train in the compute dtype (bf16/fp16;
    fp32: nothing changes); returns how many layers changed.

    Autocast runs a Linear layer's matmul on its weight cast to that dtype anyway, and re-casts a weight that
    does not require grad at every call: stored cast, the results are bit-identical and the casts are gone.
    That made unmerged inference and a training step faster with identical results (bench/FINDINGS_cpu.md). Layers
    with a trained weight or bias (LoRA's A/B, the head, `lora.bias` != none) keep fp32. A DoRA model is left
    as it is: its weight norm reads the base weight in full precision."""
    dtype = DTYPES.get(precision)
    if dtype is None or any(len(getattr(m, "lora_magnitude_vector", ())) for m in model.modules()):
        return 0
    changed = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        if module.weight.dtype != dtype:
            module.to(dtype)
            changed += 1
    return changed


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; the head's saved copy is counted once, as PEFT does."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the trained weights only (adapters + head): small enough to keep in memory."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise CheckpointError(f"checkpoint has weights the model lacks ({missing[0]}, ...); wrong checkpoint for this config?")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def silence_fork_warning() -> None:
    # Tokenizers warns when a process forks after using its thread pool (DataLoader workers, tune workers).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


logging.getLogger("accelerate").setLevel(logging.WARNING)
