"""model.first_token_last_layer: a merged BERT-family classifier computes its last layer for the first position
only, with the same logits."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loraclf import model as M
from loraclf.config import LoraConfig, ModelConfig


def _tiny_bert() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, num_labels=3, attn_implementation="sdpa")
    return BertForSequenceClassification(cfg)


def _tiny_roberta(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    return M.load_base_model(ModelConfig(name=str(path)), ["a", "b", "c", "d"])


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (4, 11), generator=g)
    mask = torch.ones_like(ids)
    for row, length in enumerate([11, 7, 3, 1]):  # padded rows, down to a lone first token
        mask[row, length:] = 0
        ids[row, length:] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_first_token_layer_gives_the_full_models_logits(arch: str, tiny_model: Path) -> None:
    """It swaps the last layer of a merged BERT or RoBERTa classifier and leaves the logits as they were (fp32),
    padding included; a second call changes nothing."""
    base = _tiny_bert() if arch == "bert" else _tiny_roberta(tiny_model)
    peft_model = M.apply_lora(base, LoraConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter change something, so merging matters
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    merged = peft_model.merge_and_unload().eval()
    batch = _batch(merged.config.vocab_size)
    with torch.no_grad():
        want = merged(**batch).logits
        assert M.first_token_last_layer(merged) is True
        assert isinstance(merged.base_model.encoder.layer[-1], M.FirstTokenLayer)
        assert M.first_token_last_layer(merged) is False  # already swapped
        got = merged(**batch).logits
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_merge_for_inference_swaps_the_last_layer(tiny_model: Path) -> None:
    merged = M.merge_for_inference(M.apply_lora(_tiny_roberta(tiny_model), LoraConfig(r=4)), "fp32")
    assert isinstance(merged.base_model.encoder.layer[-1], M.FirstTokenLayer)


def test_other_heads_and_eager_attention_keep_their_last_layer() -> None:
    """A classifier that is not in FIRST_TOKEN_CLASSIFIERS (its head may read every position) or that runs another
    attention than SDPA is left as it is."""
    class MeanPooledClassifier(torch.nn.Module):
        pass

    assert M.first_token_last_layer(MeanPooledClassifier()) is False
    bert = _tiny_bert()
    bert.config._attn_implementation = "eager"
    assert M.first_token_last_layer(bert) is False
    assert not isinstance(bert.base_model.encoder.layer[-1], M.FirstTokenLayer)
