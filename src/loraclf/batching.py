"""From texts to padded tensors: tokenize (with an explicit cache), pad, and cut batches.

Every command meets its rows here: training takes length-grouped global batches in a seeded
order (the same on every process), inference takes length-sorted batches bounded by a batch
size and, optionally, a token budget. Nothing here touches a model.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch

PAD_MULTIPLE = 8  # pad lengths to a multiple of 8: fewer distinct shapes, aligned matrix tiles


def pad_id_of(tokenizer: Any) -> int:
    """The tokenizer's padding id (0 when it has none, as BERT-style vocabularies use)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


class TokenCache:
    """Token ids per (tokenizer, max_length, texts), kept in memory for reuse.

    Tune's trials and a run's repeated evaluations tokenize the same texts many times; a cache
    owned by the caller (not a module global) makes that reuse visible and bounded.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, list[list[int]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def tokenize(self, tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
        key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), max_length, len(texts), hash(tuple(texts)))
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        ids = tokenize(tokenizer, texts, max_length)
        self._entries[key] = ids
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return ids


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text without padding, truncated to `max_length` (empty texts keep their special tokens)."""
    if not texts:
        return []
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, pad_multiple: int = PAD_MULTIPLE) -> dict[str, torch.Tensor]:
    """Right-pad token id lists to the longest (rounded up to `pad_multiple`); return input_ids and attention_mask."""
    longest = max(len(s) for s in seqs)
    width = -(-longest // pad_multiple) * pad_multiple if pad_multiple > 1 else longest
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------------------------------------
# Training batches


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                           mega_batch_factor: int = 50) -> list[list[int]]:
    """Training batches of similar-length examples, shuffled, reproducible per (seed, epoch).

    Indices are shuffled, cut into mega-batches of `batch_size * mega_batch_factor`, each sorted
    by length (longest first) and chunked, so a batch pads to a near neighbour's length instead of
    the longest text in the data; the batch order is then shuffled again.

    Args:
        lengths: length (e.g. token count) of each example.
        batch_size: examples per batch (the last batch may be short).
        seed: run seed.
        epoch: epoch number; each epoch gets a different but reproducible order.
        mega_batch_factor: batches per sorting window (bigger: less padding, less randomness).

    Returns:
        Batches of indices; every index appears exactly once and the first batch holds the
        longest example, so an out-of-memory error shows up at step 1, not hours later.

    Raises:
        ValueError: batch_size or mega_batch_factor below 1.
    """
    if batch_size < 1 or mega_batch_factor < 1:
        raise ValueError(f"batch_size ({batch_size}) and mega_batch_factor ({mega_batch_factor}) must be >= 1")
    if not len(lengths):
        return []
    lens = np.asarray(lengths)
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lens))
    mega = batch_size * mega_batch_factor
    batches: list[list[int]] = []
    for start in range(0, len(perm), mega):
        chunk = perm[start:start + mega]
        chunk = chunk[np.argsort(-lens[chunk], kind="stable")]
        batches.extend(chunk[j:j + batch_size].tolist() for j in range(0, len(chunk), batch_size))
    batches = [batches[k] for k in rng.permutation(len(batches))]
    longest = int(np.argmax(lens))
    first = next(k for k, b in enumerate(batches) if longest in b)
    batches[0], batches[first] = batches[first], batches[0]
    return batches


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """The global micro-batches of one training epoch; identical on every process."""
    if group_by_length:
        return length_grouped_batches(lengths, batch_size, seed, epoch)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps in one epoch of `n_examples` (the last, short accumulation counts as a step)."""
    return math.ceil(math.ceil(n_examples / batch_size) / grad_accum)


def process_slice(global_batch: Sequence[int], batch_size: int, rank: int, world: int) -> list[int]:
    """This process's share of a global micro-batch: a contiguous slice, or every world-th row of a short batch."""
    if len(global_batch) == batch_size:
        local = batch_size // world
        return list(global_batch[rank * local : (rank + 1) * local])
    return list(global_batch[rank::world])


# ---------------------------------------------------------------------------------------------
# Inference batches


def inference_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Length-sorted inference batches, longest first: at most `batch_size` rows and, when given,
    at most `max_tokens` padded tokens (rows x longest row) each.

    Args:
        lengths: length of each example.
        batch_size: rows per batch at most.
        max_tokens: padded-token budget per batch; short texts then go in bigger batches, long ones
            in smaller (a batch always holds at least one row).

    Returns:
        Batches of indices; the caller puts results back in input order.

    Raises:
        ValueError: batch_size or max_tokens below 1.
    """
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"batch_size ({batch_size}) and max_tokens ({max_tokens}) must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # sorted() is stable
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Longest first: the batch's first row sets its padded width.
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= batch_size or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def dynamic_width_batches(lengths: Sequence[int], max_width: int, token_budget: int, max_rows: int,
                          pad_multiple: int = PAD_MULTIPLE) -> list[tuple[int, list[int]]]:
    """Length-sorted inference batches (longest first) for compiled inference, whose one graph takes any rows and
    width: (width, positions), each batch as `inference_batches` makes it (up to `max_rows` rows and
    `token_budget` padded tokens) and padded to its longest row rounded up to `pad_multiple`, as eager pads."""
    out = []
    for pos in inference_batches(lengths, max_rows, token_budget):
        longest = lengths[pos[0]]
        out.append((min(max_width, -(-longest // pad_multiple) * pad_multiple), pos))
    return out
