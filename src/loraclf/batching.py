"""From texts to padded tensors: tokenize (with an explicit cache), pad, and cut batches.

Every command meets its rows here: training takes length-grouped global batches in a seeded
order (the same on every process), inference takes length-sorted batches bounded by a batch
size and, optionally, a token budget. Nothing here touches a model.
"""
from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch

PAD_MULTIPLE = 8  # pad lengths to a multiple of 8: fewer distinct shapes, aligned matrix tiles

# The fixed cost of one inference forward pass, in tokens' worth of compute (`inference_batches`): a few long texts
# among short ones then get a pass of their own only where that saves more padding than the pass costs. A GPU is
# launch-bound, so splitting a batch never pays there (fits and figures: bench/FINDINGS_cpu.md, FINDINGS_gpu.md).
PASS_COST_TOKENS = {"cpu": 192, "cuda": 16_384}

# Eager fp32 on a CPU pays several times more per token than bf16, so a pass costs fewer tokens' worth and the
# multiple-of-8 widths buy nothing: there a pass pads to its longest row (bench/experiments/inference_padding.py).
CPU_FP32_PASS_COST_TOKENS = 64

# On CPU an inference pass holds at most this many padded tokens: past ~10,000 its activations outgrow the caches
# and each token costs more (bench/FINDINGS_cpu.md).
CPU_INFERENCE_MAX_TOKENS = 8192


def pass_cost_tokens(device_type: str) -> int:
    """`PASS_COST_TOKENS` for a device type ("cpu", "cuda", ...); other accelerators count as CUDA-like."""
    return PASS_COST_TOKENS.get(device_type, PASS_COST_TOKENS["cuda"])


def inference_token_budget(max_tokens: int | None, device_type: str, default: int | None = None) -> int | None:
    """Padded tokens per inference pass: `max_tokens` when given, else `default` (None: no budget), on CPU at most
    `CPU_INFERENCE_MAX_TOKENS`."""
    if max_tokens is not None or device_type != "cpu":
        return max_tokens if max_tokens is not None else default
    return CPU_INFERENCE_MAX_TOKENS if default is None else min(default, CPU_INFERENCE_MAX_TOKENS)


# Inference on the device (`inference.run_inference_on_device`: every GPU pass, and compiled CPU passes) fills a
# batch up to a token budget (rows x padded width; default batch_size x max_length), with rows capped at this many
# times the batch size: short texts go in big batches.
INFERENCE_ROWS_FACTOR = 8


def inference_padding(device_type: str, precision: str, on_device: bool = False) -> tuple[int, int]:
    """(pad multiple, pass cost in tokens) of inference passes on `device_type` in `precision` ("fp32", "bf16",
    ...): eager fp32 on a CPU pads to the longest row and counts a pass as `CPU_FP32_PASS_COST_TOKENS`; everything
    else pads to `PAD_MULTIPLE` with `pass_cost_tokens(device_type)` (a compiled CPU pass too: its one dynamic-width
    graph was measured so)."""
    if device_type == "cpu" and precision == "fp32" and not on_device:
        return 1, CPU_FP32_PASS_COST_TOKENS
    return PAD_MULTIPLE, pass_cost_tokens(device_type)


def inference_passes(lengths: Sequence[int], batch_size: int, device_type: str, precision: str, *,
                     max_tokens: int | None = None, max_width: int | None = None,
                     on_device: bool = False) -> list[tuple[int, list[int]]]:
    """Every forward pass of one inference call, longest first: (padded width, positions into `lengths`). The one
    rule that `inference.run_inference`, the ONNX backend and the benchmarks' records share.

    Args:
        batch_size: rows per pass at most; `on_device`: per pass of `max_width` tokens, and short texts go in up
            to `INFERENCE_ROWS_FACTOR` x more rows.
        device_type, precision: choose the padding and the pass cost (`inference_padding`) and, on CPU, cap the
            token budget (`inference_token_budget`).
        max_tokens: padded tokens per pass at most (default: none, or `batch_size` x `max_width` on the device).
        max_width: widths never exceed this (the run's model.max_length).
        on_device: the passes of `run_inference_on_device`.
    """
    if not lengths:
        return []
    pad_multiple, pass_cost = inference_padding(device_type, precision, on_device)
    widest = max_width or max(lengths)
    if on_device:
        budget = inference_token_budget(max_tokens, device_type, batch_size * widest)
        max_rows = batch_size * INFERENCE_ROWS_FACTOR
    else:
        budget, max_rows = inference_token_budget(max_tokens, device_type), batch_size
    return [(min(widest, _padded(lengths[pos[0]], pad_multiple)), pos)
            for pos in inference_batches(lengths, max_rows, budget, pass_cost, pad_multiple)]


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


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, pad_multiple: int = PAD_MULTIPLE,
              width: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad token id lists to `width` if given (an `inference_passes` width), else to the longest rounded up to
    `pad_multiple`; return input_ids and attention_mask."""
    longest = max(len(s) for s in seqs)
    if width is None:
        width = _padded(longest, pad_multiple)
    elif width < longest:
        raise ValueError(f"width {width} is narrower than the longest row ({longest} tokens)")
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
# Fixed-shape training batches (model.compile): few shapes, gathered on the device

# Bucket widths are 2^k and 1.5 * 2^k from 32 up: neighbours differ by at most 1.5x, so a batch pads by under
# 50 %, while the number of shapes (a CUDA graph each) grows only with log(max_length); below 32 tokens a step
# is too cheap for padding to matter (bench/FINDINGS_gpu.md, bench/bucket_padding.py).
SMALLEST_BUCKET = 32


def length_buckets(max_length: int) -> list[int]:
    """The padded widths a compiled run uses, ascending; the last is `max_length` itself (ids never exceed it)."""
    widths: list[int] = []
    base = SMALLEST_BUCKET
    while True:
        for width in (base, base * 3 // 2):
            if width >= max_length:
                return widths + [max_length]
            widths.append(width)
        base *= 2


def training_widths(max_length: int, device: torch.device) -> list[int]:
    """The padded widths of a compiled training step, ascending. CUDA: the length buckets, since each width is a
    CUDA graph to record and keep. CPU: every multiple of 8 up to max_length, as eager pads, since one
    dynamic-width graph serves them all and the buckets' extra padding made the step slower (bench/FINDINGS_cpu.md)."""
    if device.type == "cuda":
        return length_buckets(max_length)
    return sorted({*range(PAD_MULTIPLE, max_length, PAD_MULTIPLE), max_length})


def bucket_width(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `length` tokens."""
    k = bisect.bisect_left(buckets, length)
    if k == len(buckets):
        raise ValueError(f"a sequence of {length} tokens is longer than the largest bucket ({buckets[-1]})")
    return buckets[k]


class DeviceTokens:
    """Token ids of one split as a single [n, width] table on the device (right-padded with `pad_id`), their
    lengths and labels: a batch is gathered from it by index, with no host-to-device copy.

    `width` is the largest bucket (model.max_length): every bucket then slices the table. Ids are kept as
    int32 (half the memory) and widened per batch."""

    def __init__(self, seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device, width: int,
                 labels: Sequence[int] | None = None) -> None:
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.int32)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(s[:width], dtype=torch.int32)
        self.device = device
        self.ids = ids.to(device)
        self.lengths = torch.as_tensor([min(len(s), width) for s in seqs], dtype=torch.long).to(device)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long).to(device) if labels is not None else None
        self._positions: dict[int, torch.Tensor] = {}

    def batch(self, rows: torch.Tensor, width: int) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask [len(rows), width] of the table rows at `rows` (a device tensor)."""
        if width not in self._positions:
            self._positions[width] = torch.arange(width, device=self.device)
        ids = self.ids[rows, :width].long()
        mask = (self._positions[width] < self.lengths[rows, None]).long()
        return {"input_ids": ids, "attention_mask": mask}


def fixed_rows(rows: Sequence[int], n_rows: int) -> list[int]:
    """`rows` filled up to `n_rows` by repeating its first row (real rows first)."""
    if not rows or len(rows) > n_rows:
        raise ValueError(f"a batch of {len(rows)} rows does not fit a fixed batch of {n_rows}")
    return list(rows) + [rows[0]] * (n_rows - len(rows))


class StaticEpoch:
    """One epoch of this process's micro-batches in fixed shapes, uploaded once: row indices [n_batches, n_rows]
    (short batches filled by `fixed_rows`), each batch's real-row count, and its bucket width (on the host,
    where the shape is chosen)."""

    def __init__(self, local_batches: Sequence[Sequence[int]], n_rows: int, lengths: Sequence[int],
                 buckets: Sequence[int], device: torch.device) -> None:
        self.widths = [bucket_width(max(lengths[i] for i in b), buckets) for b in local_batches]
        self.rows = torch.as_tensor([fixed_rows(b, n_rows) for b in local_batches], dtype=torch.long).to(device)
        self.real = (torch.arange(n_rows).unsqueeze(0)
                     < torch.as_tensor([len(b) for b in local_batches]).unsqueeze(1)).to(device)


# ---------------------------------------------------------------------------------------------
# Inference batches


def inference_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None,
                      pass_cost_tokens: int = 0, pad_multiple: int = PAD_MULTIPLE) -> list[list[int]]:
    """Length-sorted inference batches, longest first: at most `batch_size` rows and, when given,
    at most `max_tokens` padded tokens (rows x longest row) each.

    Args:
        lengths: length of each example.
        batch_size: rows per batch at most.
        max_tokens: padded-token budget per batch; short texts then go in bigger batches, long ones
            in smaller (a batch always holds at least one row).
        pass_cost_tokens: the fixed cost of one forward pass, in tokens' worth of compute (`PASS_COST_TOKENS`).
            When > 0 the sorted rows are cut where padded tokens + passes x this cost is least
            (`_least_cost_cut`): a few long texts among short ones get a pass of their own instead of widening
            every row, but only where the padding saved outweighs the extra pass. 0: cut in order, each batch
            as full as the limits allow.
        pad_multiple: widths round up to this, as `pad_batch` pads; the token budget counts padded widths.

    Returns:
        Batches of indices; the caller puts results back in input order.

    Raises:
        ValueError: batch_size or max_tokens below 1.
    """
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"batch_size ({batch_size}) and max_tokens ({max_tokens}) must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # sorted() is stable
    if pass_cost_tokens > 0:
        return _least_cost_cut(order, lengths, batch_size, max_tokens, pass_cost_tokens, pad_multiple)
    return _cut_in_order(order, lengths, batch_size, max_tokens, pad_multiple)


def _padded(length: int, pad_multiple: int) -> int:
    return -(-max(length, 1) // pad_multiple) * pad_multiple


def _cut_in_order(order: list[int], lengths: Sequence[int], batch_size: int, max_tokens: int | None,
                  pad_multiple: int) -> list[list[int]]:
    # `order` is longest first, so a batch's first row sets its padded width.
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = _padded(lengths[current[0]] if current else lengths[i], pad_multiple)
        if current and (len(current) >= batch_size or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _least_cost_cut(order: list[int], lengths: Sequence[int], batch_size: int, max_tokens: int | None,
                    pass_cost: int, pad_multiple: int) -> list[list[int]]:
    """`order` (longest first) cut into consecutive batches with the least modelled cost, passes x `pass_cost` +
    padded tokens, within `batch_size` rows and `max_tokens` padded tokens per batch. An exact dynamic programme
    over the cut points (the in-order cut is one of the candidates, so it never costs more), vectorised per
    batch end: O(rows x batch_size) in numpy, ~0.1 s for 7,600 texts in batches of up to 512."""
    widths = np.array([_padded(lengths[i], pad_multiple) for i in order], dtype=np.float64)
    n = len(order)
    best = np.zeros(n + 1)  # best[j]: least cost of the first j rows
    start = np.zeros(n + 1, dtype=np.int64)  # start[j]: where the last batch of that best cut begins
    for j in range(1, n + 1):
        lo = max(0, j - batch_size)
        rows = j - np.arange(lo, j)
        tokens = rows * widths[lo:j]  # the batch's first row is its widest
        cost = best[lo:j] + pass_cost + tokens
        if max_tokens is not None:
            fits = tokens <= max_tokens
            fits[-1] = True  # a row alone always makes a batch
            cost = np.where(fits, cost, np.inf)
        k = int(np.argmin(cost))
        best[j], start[j] = cost[k], lo + k
    batches: list[list[int]] = []
    j = n
    while j > 0:
        batches.append(order[int(start[j]):j])
        j = int(start[j])
    return batches[::-1]
