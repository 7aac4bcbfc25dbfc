"""Dropout for CPU training without its random-number cost.

Why: on a CPU, `torch.nn.functional.dropout` draws one Bernoulli sample per element through the scalar
Mersenne Twister (`aten::bernoulli_`), and profiled those draws were a third of a LoRA training step on 2 cores
(32 dropout calls per step: embeddings, attention probabilities, the hidden dropouts, LoRA's and the head's).
Here one 64-bit draw gives the masks of four elements (16 uniform bits each): a dropout call costs ~1/3 of
F.dropout's time (32 x 64 x 384 bf16: 1.7 vs 5.1 ms forward, 2.3 vs 6.1 ms forward + backward).

Same semantics: each element is kept with probability 1 - p (p rounded to a multiple of 2^-16, i.e. within
1.6e-5) and scaled by 1/(1 - p); the masks come from torch's seeded CPU generator, so runs stay reproducible and
`--resume` exact. GPUs keep torch's own dropout (their Philox generator is fast).

Compiled CPU steps (`model.compile`) use it too: the draw is an opaque custom op (`random_int16_like`), and
inductor fuses the comparison and the multiplications with the ops around them. With inductor's own random
numbers the compiled step ran slower than eager; with these draws faster (bench/FINDINGS_cpu.md, "Compiled CPU
training with loraclf's dropout masks").
"""
from __future__ import annotations

import math
from typing import Any

import torch

ATTENTION_NAME = "loraclf_cpu_train"


def random_int16(shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform random int16 values of `shape`, four per 64-bit draw of torch's generator."""
    numel = math.prod(shape)
    values = torch.empty(-(-numel // 4) * 4, dtype=torch.int16, device=device)
    values.view(torch.int64).random_(-2**63, None)  # all 64 bits of each draw
    return values[:numel].view(shape)


def keep_threshold(p: float) -> int:
    """A uniform int16 value at or above this is kept: probability 1 - p (p in multiples of 2^-16)."""
    return round(p * 65536) - 32768


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor of `shape`: True with probability 1 - p (p in multiples of 2^-16)."""
    return random_int16(shape, device) >= keep_threshold(p)


# For a compiled step the draw is an opaque custom op; the comparison and the multiplications around it stay
# visible, so inductor fuses them into its kernels (forward and backward). Backward reuses the forward's numbers:
# the partitioner recomputes only allow-listed ops, never a custom one. The tag marks the op as consuming the
# generator's state (inductor's passes keep such ops in program order); `site` keeps AOTAutograd's
# common-subexpression pass, which spares only aten's own random ops, from merging two draws on the same input
# (LoRA's query and value dropouts both read the layer's input). tests/test_cpu_dropout.py checks that a compiled
# step draws eager's masks, each once.
@torch.library.custom_op("loraclf::random_int16_like", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def random_int16_like(x: torch.Tensor, site: int) -> torch.Tensor:
    """`random_int16` shaped like `x` and on its device; `site` only tells call sites apart."""
    return random_int16(x.shape, x.device)


@random_int16_like.register_fake
def _random_int16_like_shape(x: torch.Tensor, site: int) -> torch.Tensor:
    return torch.empty_like(x, dtype=torch.int16)


def dropout(x: torch.Tensor, p: float, training: bool = True, site: int = -1) -> torch.Tensor:
    """`F.dropout(x, p, training)` with `keep_mask`'s draws on a CPU tensor; torch's own elsewhere. `site`: a
    number of its own for each dropout layer of a model (`use_cpu_dropout`), for a compiled step."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return torch.nn.functional.dropout(x, p, training)
    if p >= 1.0:
        return torch.zeros_like(x)
    # One multiply by a scaled mask (0 or 1/(1-p) in x's dtype): backward is one multiply too. x * mask * scale
    # took 1.5x as long forward and backward (32 x 64 x 384 bf16: 3.5 vs 2.3 ms).
    if torch.compiler.is_compiling():
        keep = random_int16_like(x.detach(), site) >= keep_threshold(p)
    else:  # eager calls draw directly: the custom op's dispatch costs ~60 us a call (32 calls per MiniLM step)
        keep = keep_mask(x.shape, p, x.device)
    scale = torch.full((), 1.0 / (1.0 - p), dtype=x.dtype, device=x.device)
    return x * torch.where(keep, scale, torch.zeros((), dtype=x.dtype, device=x.device))


class CpuDropout(torch.nn.Dropout):
    """nn.Dropout through `dropout` (same p, same state dict: none); `site` is set by `use_cpu_dropout`."""

    site = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.site)


def cpu_train_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Transformers' attention interface: SDPA, except with dropout on a CPU, where SDPA would run its math
    path with F.dropout anyway. Then the same math (scores, mask, softmax, dropout, weighted values) with
    this module's dropout. The mask comes in SDPA's form (bool, True = attend, or additive float; or None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0.0 or query.device.type != "cpu" or kwargs.get("is_causal") or getattr(module, "is_causal", False):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = scaling if scaling is not None else query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)  # accumulates in fp32 for bf16/fp16 scores, returns their dtype
    probs = _dropout(probs, dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


_dropout = dropout  # cpu_train_attention's `dropout` argument is the rate, as transformers names it


def register_attention() -> None:
    """Make ATTENTION_NAME a transformers attention implementation with SDPA's masks (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, cpu_train_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def use_cpu_dropout(model: torch.nn.Module) -> int:
    """Switch `model`'s dropout to this module's for CPU training (eager or compiled); returns how many dropout
    layers changed.

    Every plain nn.Dropout (the encoder's, PEFT's lora_dropout, the head's) becomes a CpuDropout in place, and
    an encoder on SDPA attention gets `cpu_train_attention`, which is SDPA itself whenever dropout is off (in
    evaluation). `restore_dropout` undoes both before the model is saved or served.
    """
    changed = 0
    for m in model.modules():
        if type(m) is torch.nn.Dropout:
            m.__class__ = CpuDropout  # in place: every container that holds the layer sees the change
            m.site = changed
            changed += 1
    base = _hf_model(model)
    if base is not None and getattr(base.config, "_attn_implementation", None) == "sdpa":
        register_attention()
        try:
            base.set_attn_implementation(ATTENTION_NAME)
        except (ValueError, NotImplementedError):  # an architecture without the attention interface: SDPA's dropout stays
            pass
    return changed


def restore_dropout(model: torch.nn.Module) -> None:
    for m in model.modules():
        if type(m) is CpuDropout:
            m.__class__ = torch.nn.Dropout
            m.__dict__.pop("site", None)
    base = _hf_model(model)
    if base is not None and getattr(base.config, "_attn_implementation", None) == ATTENTION_NAME:
        base.set_attn_implementation("sdpa")


def _hf_model(model: torch.nn.Module) -> Any:
    """The transformers model inside a PeftModel (or the model itself), or None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base if hasattr(base, "set_attn_implementation") and hasattr(base, "config") else None
