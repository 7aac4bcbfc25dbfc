"""What differs between encoder architectures: the attention projections LoRA adapts and the head that trains.

Encoders name their attention projections differently (BERT, RoBERTa, ELECTRA, ALBERT, XLM-R: `query`/`value`;
DistilBERT `q_lin`/`v_lin`; DeBERTa-v2/v3 `query_proj`/`value_proj`; MPNet `q`/`v`; ModernBERT one fused `Wqkv`)
and their heads too (`classifier`, `pre_classifier`, `pooler`, `head`). `lora.target_modules: auto` resolves
the names for whatever model is loaded: peft's own per-architecture table where it has the model type, else the
query and value (or fused) projections found among the linear layers of the model's attention modules.
"""
from __future__ import annotations

import re

import torch

from .errors import ModelError

AUTO = "auto"
ALL_LINEAR = "all-linear"

# Heads that AutoModelForSequenceClassification creates fresh (and ModernBERT's `head`, the dense + norm its
# classifier reads): they must train and be saved with the adapter (PEFT's `modules_to_save`), or a reloaded
# model would get a new random head.
HEAD_MODULE_NAMES = ("classifier", "score", "pre_classifier", "out_proj", "logits_proj", "head")

# Attention projection names, matched against a Linear's own name inside an attention module.
_QUERY = re.compile(r"^(q|query|q_lin|q_proj|query_proj)$", re.IGNORECASE)
_VALUE = re.compile(r"^(v|value|v_lin|v_proj|value_proj)$", re.IGNORECASE)
_FUSED = re.compile(r"^(wqkv|qkv|qkv_proj|in_proj|query_key_value|c_attn)$", re.IGNORECASE)


def _peft_table() -> dict[str, list[str]]:
    """peft's per-architecture LoRA targets (model_type -> names), or {} where this peft has no such table."""
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as table
    except ImportError:  # pragma: no cover - renamed in some peft release
        return {}
    return dict(table)


def _suffixes(model: torch.nn.Module) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}


def head_modules(model: torch.nn.Module) -> list[str]:
    """Names of the top-level head modules of a sequence-classification model present in `model`."""
    names = {n for n, _ in model.named_children()}
    return [h for h in HEAD_MODULE_NAMES if h in names]


def trained_modules(model: torch.nn.Module, extra: list[str]) -> list[str]:
    """What trains in full beside the adapters: the model's head modules, then the names in `extra`
    (lora.modules_to_save, e.g. `pooler`) the model has; a name it lacks is skipped (RoBERTa has no pooler)."""
    present = _suffixes(model)
    return head_modules(model) + [m for m in extra if m not in HEAD_MODULE_NAMES and m in present]


def _attention_projections(model: torch.nn.Module) -> list[str]:
    """The query and value projections (or the fused one) of the first attention module that holds its own
    Linear layers, in the model's order; [] when there is none."""
    for name, module in model.named_modules():
        if "attention" not in type(module).__name__.lower() and not name.rsplit(".", 1)[-1].startswith("attn"):
            continue
        linears = [n for n, m in module.named_children() if isinstance(m, torch.nn.Linear)]
        fused = [n for n in linears if _FUSED.match(n)]
        if fused:
            return fused[:1]
        picked = [n for n in linears if _QUERY.match(n)][:1] + [n for n in linears if _VALUE.match(n)][:1]
        if len(picked) == 2:
            return picked
    return []


def _all_linear(model: torch.nn.Module, trained: list[str]) -> list[str]:
    """The names of every Linear layer of the encoder, outside the modules that train in full (the head, pooler)."""
    names: list[str] = []
    for full, module in model.named_modules():
        parts = full.split(".")
        if not isinstance(module, torch.nn.Linear) or parts[0] in trained or any(p in trained for p in parts[1:]):
            continue
        if parts[-1] not in names:
            names.append(parts[-1])
    return names


def linear_names(model: torch.nn.Module) -> list[str]:
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def resolve_target_modules(model: torch.nn.Module, requested: list[str], trained: list[str]) -> list[str]:
    """The module names LoRA adapts for `requested` (lora.target_modules): [auto] -> the attention's query and
    value projections (a fused QKV projection where the model has one), [all-linear] -> every linear layer
    outside `trained` (the head and pooler), explicit names -> themselves, checked against the model.

    Raises:
        ModelError: an explicit name the model lacks, or `auto` on a model with no recognisable attention.
    """
    requested = list(requested)
    if requested == [AUTO]:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        names = _peft_table().get(model_type or "")
        if names and all(n in _suffixes(model) for n in names):
            return list(names)
        names = _attention_projections(model)
        if not names:
            raise ModelError(f"lora.target_modules=auto: found no attention query/value projections in "
                             f"{type(model).__name__}; name them (its linear layers are named: "
                             f"{', '.join(linear_names(model))}) or use lora.target_modules=all-linear")
        return names
    if requested == [ALL_LINEAR]:
        return _all_linear(model, trained)
    special = [t for t in requested if t in (AUTO, ALL_LINEAR)]
    if special:
        raise ModelError(f"lora.target_modules: {special[0]} stands alone, not in a list of names; use "
                         f"lora.target_modules={special[0]} or only names")
    missing = [t for t in requested if t not in _suffixes(model)]
    if missing:
        raise ModelError(f"lora.target_modules: {', '.join(missing)} not found in the model; its linear layers are named: "
                         f"{', '.join(linear_names(model))} (or use lora.target_modules=auto)")
    return requested
