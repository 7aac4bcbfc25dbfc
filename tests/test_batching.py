"""Tests for loraclf.batching: tokenize + cache, padding, training and inference batches."""
from __future__ import annotations

import numpy as np
import pytest

from loraclf.batching import (TokenCache, epoch_batches, inference_batches, length_grouped_batches, pad_batch,
                              process_slice, steps_per_epoch)

LENGTHS = [int(x) for x in np.random.default_rng(0).integers(1, 200, size=1234)]


def test_grouped_batches_are_a_permutation() -> None:
    """It uses every index exactly once, in full batches but the last."""
    batches = length_grouped_batches(LENGTHS, 16, seed=0, epoch=0, mega_batch_factor=4)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert sum(len(b) < 16 for b in batches) == 1 and all(0 < len(b) <= 16 for b in batches)


def test_grouped_batches_deterministic() -> None:
    """It returns the same batches for the same seed and epoch."""
    assert length_grouped_batches(LENGTHS, 16, 5, 2) == length_grouped_batches(LENGTHS, 16, 5, 2)


def test_grouped_batches_differ_across_epochs_and_seeds() -> None:
    """It returns different batches for another epoch or seed."""
    base = length_grouped_batches(LENGTHS, 16, 5, 2)
    assert length_grouped_batches(LENGTHS, 16, 5, 3) != base
    assert length_grouped_batches(LENGTHS, 16, 6, 2) != base


def test_grouped_batches_longest_first() -> None:
    """It puts the batch holding the longest example first."""
    for epoch in range(5):
        batches = length_grouped_batches(LENGTHS, 8, 0, epoch, mega_batch_factor=10)
        assert int(np.argmax(LENGTHS)) in batches[0]


def test_grouped_batches_small_inputs() -> None:
    """It handles no examples and fewer examples than one batch."""
    assert length_grouped_batches([], 4, 0, 0) == []
    assert sorted(length_grouped_batches([3, 1, 2], 4, 0, 0)[0]) == [0, 1, 2]


def test_batches_reject_bad_batch_size() -> None:
    """It rejects a batch size below 1."""
    with pytest.raises(ValueError):
        length_grouped_batches([1, 2], 0, 0, 0)
    with pytest.raises(ValueError):
        inference_batches([1, 2], 0)



def test_epoch_batches_cover_every_example_once() -> None:
    """It gives every example once per epoch, grouped or random, and the same batches for the same epoch."""
    lengths = list(range(1, 101))
    a = epoch_batches(lengths, 32, 42, 0, True)
    assert sorted(i for b in a for i in b) == list(range(100))
    assert a == epoch_batches(lengths, 32, 42, 0, True)
    assert a != epoch_batches(lengths, 32, 42, 1, True)
    r = epoch_batches(lengths, 32, 42, 0, False)
    assert sorted(i for b in r for i in b) == list(range(100)) and r != a


def test_inference_batches_sorted_longest_first() -> None:
    """It sorts indices by length, longest first, ties in input order, and chunks them."""
    assert inference_batches([3, 5, 1, 5, 2], 2) == [[1, 3], [0, 4], [2]]
    assert inference_batches([], 3) == []


def test_inference_batches_keep_to_the_token_budget() -> None:
    """It packs more short rows than long ones into a batch, never over the budget unless a row alone is."""
    lengths = [int(x) for x in np.random.default_rng(1).integers(1, 300, size=500)] + [3000]
    batches = inference_batches(lengths, 64, max_tokens=2048)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        padded = len(b) * max(lengths[i] for i in b)
        assert len(b) <= 64 and (padded <= 2048 or len(b) == 1)
    assert len(batches[0]) == 1 and lengths[batches[0][0]] == 3000  # over the budget alone
    assert len(batches[-1]) > len(batches[1])  # short rows share bigger batches


def test_inference_token_budget_caps_cpu_passes_only() -> None:
    """A budget given is kept; otherwise the default (or none), which a CPU pass caps at CPU_INFERENCE_MAX_TOKENS."""
    from loraclf.batching import CPU_INFERENCE_MAX_TOKENS as cap, inference_token_budget

    assert inference_token_budget(500, "cpu") == 500 and inference_token_budget(500, "cuda", 10**6) == 500
    assert inference_token_budget(None, "cpu") == cap and inference_token_budget(None, "cpu", 4096) == min(4096, cap)
    assert inference_token_budget(None, "cpu", 10**6) == cap
    assert inference_token_budget(None, "cuda") is None and inference_token_budget(None, "cuda", 10**6) == 10**6


def _modelled_cost(batches: list[list[int]], lengths: list[int], pass_cost: int) -> int:
    return sum(pass_cost + len(b) * -(-max(lengths[i] for i in b) // 8) * 8 for b in batches)


def test_inference_batches_give_long_texts_their_own_pass_when_it_pays() -> None:
    """With a pass cost, one long text among short ones runs alone (less padding than a pass costs), while texts
    of near lengths, or a cost above the padding saved, keep one pass; 0 cuts in order as before."""
    lengths = [120, 20, 22, 24, 18]
    assert inference_batches(lengths, 64) == inference_batches(lengths, 64, pass_cost_tokens=0) == [[0, 3, 2, 1, 4]]
    assert inference_batches(lengths, 64, pass_cost_tokens=192) == [[0], [3, 2, 1, 4]]  # 600 + 2x192 < 5 x 120 + 192
    assert inference_batches(lengths, 64, pass_cost_tokens=1000) == [[0, 3, 2, 1, 4]]  # a pass costs more than it saves
    assert inference_batches([30, 26, 28, 25], 64, pass_cost_tokens=192) == [[0, 2, 1, 3]]
    assert inference_batches(lengths, 2, pass_cost_tokens=192) == [[0], [3, 2], [1, 4]]  # batch_size still holds
    assert inference_batches([], 4, pass_cost_tokens=192) == []


@pytest.mark.parametrize("seed", range(6))
def test_inference_batches_with_a_pass_cost_cost_no_more_and_keep_the_limits(seed: int) -> None:
    """Grouped by pass cost, every row is scored once, batches keep to batch_size and the token budget, and the
    modelled cost (passes x pass cost + padded tokens) is never above the plain in-order cut's."""
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.integers(1, 129, size=int(rng.integers(1, 300)))]
    budget = int(rng.choice([512, 2048, 8192]))
    for batch_size in (1, 16, 64):
        plain = inference_batches(lengths, batch_size, budget)
        grouped = inference_batches(lengths, batch_size, budget, pass_cost_tokens=192)
        assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))
        for b in grouped:
            assert len(b) <= batch_size and (len(b) * max(lengths[i] for i in b) <= budget or len(b) == 1)
            assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
        assert _modelled_cost(grouped, lengths, 192) <= _modelled_cost(plain, lengths, 192)


def test_inference_passes_pad_by_device_and_precision() -> None:
    """Eager fp32 on a CPU pads each pass to its longest row and groups with the fp32 pass cost; bf16 and GPU passes
    pad to multiples of 8 with their own cost; every pass's width fits its rows, and max_width caps it."""
    from loraclf.batching import CPU_FP32_PASS_COST_TOKENS, inference_padding, inference_passes

    assert inference_padding("cpu", "fp32") == (1, CPU_FP32_PASS_COST_TOKENS)
    assert inference_padding("cpu", "bf16") == (8, 192) and inference_padding("cpu", "fp32", on_device=True) == (8, 192)
    assert inference_padding("cuda", "fp32") == (8, 16_384)
    lengths = [int(x) for x in np.random.default_rng(3).integers(2, 129, size=400)]
    for precision, multiple, cost in (("fp32", 1, CPU_FP32_PASS_COST_TOKENS), ("bf16", 8, 192)):
        passes = inference_passes(lengths, 64, "cpu", precision)
        assert [pos for _, pos in passes] == inference_batches(lengths, 64, 8192, cost, multiple)
        assert all(width == -(-lengths[pos[0]] // multiple) * multiple for width, pos in passes)
    fp32 = inference_passes(lengths, 64, "cpu", "fp32")
    bf16 = inference_passes(lengths, 64, "cpu", "bf16")
    assert sum(w * len(p) for w, p in fp32) < sum(w * len(p) for w, p in bf16)  # less padding
    assert inference_passes([127, 5], 64, "cpu", "bf16", max_width=127)[0][0] == 127
    assert inference_passes([], 64, "cpu", "fp32") == []


def test_pad_batch_to_a_given_width() -> None:
    """A width given is kept (the pass's own); one narrower than the longest row is refused."""
    out = pad_batch([[5, 6, 7], [9]], pad_id=1, width=6)
    assert out["input_ids"].tolist() == [[5, 6, 7, 1, 1, 1], [9, 1, 1, 1, 1, 1]]
    assert out["attention_mask"].sum().item() == 4
    with pytest.raises(ValueError, match="narrower"):
        pad_batch([[5, 6, 7]], 0, width=2)


def test_steps_per_epoch_counts_the_short_last_step() -> None:
    """It counts optimizer steps, a short last batch and a short last accumulation included."""
    assert steps_per_epoch(100, 32, 1) == 4
    assert steps_per_epoch(100, 32, 2) == 2
    assert steps_per_epoch(128, 32, 3) == 2
    assert steps_per_epoch(1, 32, 1) == 1


def test_process_slices_partition_a_global_batch() -> None:
    """It splits full and short global batches over processes so every row lands on exactly one."""
    full, short = list(range(10, 18)), [1, 2, 3, 4, 5]
    for batch in (full, short):
        parts = [process_slice(batch, 8, r, 2) for r in range(2)]
        assert sorted(parts[0] + parts[1]) == sorted(batch)
    assert process_slice(full, 8, 1, 2) == [14, 15, 16, 17]


def test_pad_batch_rounds_width_and_masks_padding() -> None:
    """It right-pads to a multiple of 8 and marks real tokens in the attention mask."""
    out = pad_batch([[5, 6, 7], [9]], pad_id=1)
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][1].tolist() == [9] + [1] * 7
    assert out["attention_mask"].sum(dim=1).tolist() == [3, 1]
    assert pad_batch([[5, 6, 7]], 0, pad_multiple=1)["input_ids"].shape == (1, 3)


class _CountingTokenizer:
    name_or_path = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def __len__(self) -> int:
        return 100

    def __call__(self, texts, truncation, max_length, padding):  # noqa: ANN001 - a tokenizer's signature
        self.calls += 1
        return {"input_ids": [[len(t)] * min(len(t), max_length) for t in texts]}


def test_token_cache_reuses_and_bounds_entries() -> None:
    """It tokenizes the same texts once, keys on max_length, and drops the oldest entry past its size."""
    tok, cache = _CountingTokenizer(), TokenCache(max_entries=2)
    a = cache.tokenize(tok, ["abc", "de"], 8)
    assert cache.tokenize(tok, ["abc", "de"], 8) is a and tok.calls == 1
    assert cache.tokenize(tok, ["abc", "de"], 2) == [[3, 3], [2, 2]] and tok.calls == 2
    cache.tokenize(tok, ["x"], 8)
    assert len(cache) == 2
    cache.tokenize(tok, ["abc", "de"], 8)
    assert tok.calls == 4  # the first entry was dropped
