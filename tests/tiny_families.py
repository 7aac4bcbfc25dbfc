"""Tiny random sequence classifiers of the encoder families people pick, for the architecture tests.

Each is a few-layer, hidden-32 model of its family with random weights, saved with the shared MiniLM's real
WordPiece tokenizer (its ids fit every vocabulary here) and loaded back through `from_pretrained`, as a
user's checkpoint would be. Families the installed transformers lacks are left out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 160}

# model_type -> the config fields that differ from TINY (DistilBERT names its own, ALBERT factorises embeddings,
# ModernBERT's local attention window must fit the short texts).
FAMILIES: dict[str, dict[str, Any]] = {
    "bert": {},
    "roberta": {},
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "max_position_embeddings": 160},
    "deberta-v2": {"relative_attention": True, "position_buckets": 16, "pos_att_type": ["p2c", "c2p"]},
    "electra": {"embedding_size": 16},
    "albert": {"embedding_size": 16},
    "xlm-roberta": {},
    "mpnet": {},
    "modernbert": {"global_attn_every_n_layers": 1, "local_attention": 16},
}


def available_families() -> list[str]:
    from transformers import CONFIG_MAPPING

    return [f for f in FAMILIES if f in CONFIG_MAPPING]


def build_tiny(family: str, out: Path, tokenizer_dir: Path) -> Path:
    """Save a random tiny `family` encoder (no head: the run adds a fresh one) and the tokenizer in `out`."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    fields = FAMILIES[family] if family == "distilbert" else {**TINY, **FAMILIES[family]}
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.cls_token_id, "eos_token_id": tok.sep_token_id}
    if family == "modernbert":
        ids.update(cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id)
    cfg = AutoConfig.for_model(family, vocab_size=len(tok), **ids, **fields)
    torch.manual_seed(0)
    AutoModel.from_config(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
