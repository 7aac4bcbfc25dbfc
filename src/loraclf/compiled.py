"""Few-shape execution for `torch.compile` and CUDA graphs (`model.compile`).

A compiled graph is built for the input shapes it saw, and a captured CUDA graph for one shape exactly. Eager
runs pad each batch to its own longest row (`batching.pad_batch`), which gives dozens of shapes per epoch; a
compiled training step instead takes

- a width from a few sequence-length buckets (`length_buckets`: 32, 48, 64, 96, 128, ...), and
- a fixed number of rows: a short batch repeats its first row, and those copies are masked out of the loss,

and its width is a dynamic dimension: the step compiles once, and on CUDA each bucket only records its own
CUDA graph (milliseconds) at its first use. A compile per bucket cost ~35 s each for a RoBERTa-base step on an
H100 (issue 10), and 5 of them (plus the evaluation's) did not finish within 260 s on an H200
(bench/reports/gpu_check_h200.log); on a 2-core CPU one dynamic-width compile of a tiny model's step took 13.3 s
where 4 static ones took 59.6 s, at the same step time (`bench/compile_shapes.py`, bench/FINDINGS_cpu.md).

`model.compile=cudagraphs` trains on the same fixed shapes without torch.compile: `loraclf.cudagraphs` captures the
eager step per bucket instead.

Token ids live on the device as one padded table (`DeviceTokens`) and batches are gathered from it by index,
so a step copies nothing from the host. `CompiledOrEager` runs a function compiled and, if compiling or
capturing fails, prints one warning line and runs it eager from then on: a model that cannot compile never
fails a run.
"""
from __future__ import annotations

import bisect
import sys
import time
from typing import Any, Callable, Sequence

import torch

# Bucket widths are 2^k and 1.5 * 2^k from 32 up: neighbours differ by at most 1.5x, so a batch pads
# by under 50 %, while the number of shapes grows only with log(max_length): 5 for 128 tokens
# (32, 48, 64, 96, 128), 9 for 512. Fewer, wider buckets would waste more tokens; more would cost a
# compile each (measured ~35 s per shape on an H100, issue 10). Below 32 tokens a step is too cheap for
# padding to matter. On AG News (10,000 rows, MiniLM tokenizer, 3 epochs of length-grouped batches of 32)
# the padding share is 16.6 % with these buckets vs 7.9 % for eager's pad-to-8 (13 widths): 1.10x the
# tokens (bench/bucket_padding.py).
SMALLEST_BUCKET = 32

# On CPU, `model.compile: auto` compiles the training step of a bf16 run in one process that trains on at least this
# many samples (micro-batch rows, all epochs); None: never. Measured on a 2-core Xeon with AMX (MiniLM, bf16, one
# dynamic-width graph, dropout masks from `train.cpu_dropout`; `bench/train_speed.py --compile both`, two runs):
# compiled 128.2 / 119.6 vs eager 105.3 / 106.9 samples/s in steady state (1.22x / 1.12x) after a one-time compile
# of 32.8 s cold / 14.1 s with inductor's cache warm: it pays back after 14,000-34,000 samples. On a 2-core AMD EPYC
# with AVX-512-BF16 and no AMX: 149.0 vs 127.9 samples/s (1.16x) after 44.3 s cold, paying back after ~40,000
# samples (bench/reports/train_speed_minilm_epyc_avx512bf16.json). A default run on the
# 10,429 shared AG News rows (28,000 samples) stays eager; the study's 3 epochs of 97,200 rows compile. fp32 (0.90x
# on an AVX2-only AMD EPYC, after 71 s of compile; 1.07x under AVX2 caps on the Xeon) and several processes (not
# measured compiled) stay eager (bench/FINDINGS_cpu.md).
CPU_AUTO_COMPILE_MIN_SAMPLES: int | None = 64_000

# On CPU, `auto` compiles inference (a merged, frozen model; see `compiled_logits`) in bf16 only: for a server,
# and for predict/evaluate of at least this many texts. Measured on a 2-core Xeon with AMX (MiniLM, all 7,600 AG News
# test rows scored in one call as predict does, bench/reports/cpu_inference_minilm_default_xeon_amx_budget8k_eager.json):
# the one compile (rows and width dynamic, weights frozen) took 12.8 s, and compiled bf16 scored 841.3 vs 551.3
# texts/s merged eager, so the compile pays back from ~20,500 texts. fp32 gains nothing: 0.97x eager on an AVX2-only
# AMD EPYC (bench/reports/cpu_inference_minilm_default_epyc_avx2.json), so auto leaves it eager.
CPU_AUTO_COMPILE_MIN_ROWS = 20_000

# What `model.compile: auto` trains with on one GPU: "compiled" (torch.compile + CUDA graphs) or "cudagraphs" (the
# eager step captured, no compile; `loraclf.cudagraphs`). "compiled" until a GPU run of `bash bench/gpu_check.sh`
# compares the two, compile and capture time included (bench/FINDINGS_gpu.md): the captured step runs unfused
# kernels, the compiled one fused kernels after a compile of tens of seconds.
CUDA_AUTO_TRAIN_EXECUTION = "compiled"

# On CUDA, `auto` runs inference eager. Measured on an H100 (issue 10: RoBERTa-base-sized model, bf16, fixed
# 64-token batches): batch 256 scored 15,759 samples/s eager vs 15,763 compiled; batch 32 2,733 eager vs 2,571
# compiled and 2,345 with CUDA graphs. Large batches keep the GPU busy without a compile, which costs tens of
# seconds for RoBERTa-base: more than a predict of a few thousand texts takes in all.
CUDA_AUTO_COMPILE_INFERENCE = False

# On CPU, `auto` compiles a server's frozen adapters in bf16 (~12 s of start-up on 2 cores): on a Xeon with AMX,
# bench/serve_load.py at concurrency 16 measured 181.5-183.5 req/s compiled vs 153.1-158.2 merged eager. fp32
# stays eager: on an AVX2-only AMD EPYC the compiled fp32 server answered 61.0-61.1 req/s vs 64.1-68.6 eager and
# took 29-32 s to start instead of 7.5-8.3 (bench/FINDINGS_cpu.md, "A real AVX2-only CPU").
CPU_AUTO_COMPILE_SERVING = True

# torch.compile modes: CUDA graphs for the launch-bound training step; inference batches are big enough
# that launch overhead does not matter, and a graph pool per shape would only cost memory.
CUDA_TRAIN_MODE = "reduce-overhead"
CUDA_INFERENCE_MODE = "default"

# A first call slower than this compiled something: it says so on stderr (a minute of silence looks like a hang).
COMPILE_NOTICE_SECONDS = 2.0

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
    CUDA graph to record and keep. CPU: every multiple of 8 up to max_length, as eager pads: one dynamic-width
    graph serves them all, and the buckets padded 1.10x the tokens (bench/bucket_padding.py). Measured on a
    2-core Xeon with AMX (MiniLM, bf16, `bench/train_speed.py --compile both`): the compiled step ran at 0.95x
    the eager one with these widths, 0.87x with the buckets (bench/FINDINGS_cpu.md)."""
    if device.type == "cuda":
        return length_buckets(max_length)
    return sorted({*range(8, max_length, 8), max_length})


def bucket_width(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `length` tokens."""
    k = bisect.bisect_left(buckets, length)
    if k == len(buckets):
        raise ValueError(f"a sequence of {length} tokens is longer than the largest bucket ({buckets[-1]})")
    return buckets[k]


def compile_enabled(setting: bool | str, device: torch.device, precision: str, train_samples: int | None = None,
                    processes: int = 1) -> bool:
    """What `model.compile` means for a training step on this device: true/false as given; auto compiles on CUDA,
    and on CPU a run in bf16 and one process of at least CPU_AUTO_COMPILE_MIN_SAMPLES `train_samples` (each
    process's micro-batch rows over the whole run)."""
    if setting is True or setting is False:
        return setting
    if device.type == "cuda":
        return True
    return (CPU_AUTO_COMPILE_MIN_SAMPLES is not None and precision == "bf16" and processes == 1
            and train_samples is not None and train_samples >= CPU_AUTO_COMPILE_MIN_SAMPLES)


def train_execution(setting: bool | str, device: torch.device, precision: str, train_samples: int | None = None,
                    processes: int = 1) -> tuple[str, str | None]:
    """How a training step runs under `model.compile`: "compiled" (torch.compile; on CUDA with CUDA graphs),
    "cudagraphs" (the eager step captured as CUDA graphs, `loraclf.cudagraphs`) or "eager"; and a one-line
    warning when the setting asked for what this device or process count cannot do."""
    if setting == "cudagraphs":
        if device.type != "cuda" or not torch.cuda.is_available():
            return "eager", f"warning: model.compile=cudagraphs needs a CUDA GPU; training eager on {device.type}"
        if processes > 1:
            # DDP all-reduces gradients in backward hooks, between what would be the graph's kernels.
            return "eager", f"warning: model.compile=cudagraphs runs in one process; training eager on {processes} processes"
        return "cudagraphs", None
    if setting == "auto" and device.type == "cuda" and processes == 1 and CUDA_AUTO_TRAIN_EXECUTION == "cudagraphs":
        return "cudagraphs", None
    return ("compiled" if compile_enabled(setting, device, precision, train_samples, processes) else "eager"), None


def inference_compile_enabled(setting: bool | str, device: torch.device, frozen: bool, rows: int | None = None,
                              serving: bool = False, precision: str = "bf16") -> bool:
    """What --compile means for inference: true/false as given; auto compiles on CUDA only if
    CUDA_AUTO_COMPILE_INFERENCE (not: it did not pay), and on CPU a frozen (merged, inference-only) model in bf16
    when serving, or when scoring at least CPU_AUTO_COMPILE_MIN_ROWS texts at once. fp32 stays eager on CPU: the
    compile paid neither for predict nor for a server there.

    On CPU only a frozen model compiles on `auto`: at 16 texts per batch the unfrozen compile gained ~1.35x
    against ~1.7x frozen (MiniLM, bf16, fixed 96-token batches, 2-core Xeon)."""
    if setting is True or setting is False:
        return setting
    if device.type == "cuda":
        return CUDA_AUTO_COMPILE_INFERENCE
    if not frozen or precision != "bf16":
        return False
    if serving:
        return CPU_AUTO_COMPILE_SERVING
    return rows is not None and rows >= CPU_AUTO_COMPILE_MIN_ROWS


def raise_recompile_limit(n_shapes: int) -> None:
    # Dynamo gives up and runs eager after `recompile_limit` graphs of one function (8 by default); a
    # run needs one per bucket, for training and for evaluation, so make room for all of them.
    import torch._dynamo

    cfg = torch._dynamo.config
    need = 2 * n_shapes + 8
    if cfg.recompile_limit < need:
        cfg.recompile_limit = need
    if hasattr(cfg, "accumulated_recompile_limit") and cfg.accumulated_recompile_limit < 4 * need:
        cfg.accumulated_recompile_limit = 4 * need


# Why the tag: torch 2.13 keys its on-disk compile caches (inductor's FX graph cache and AOTAutograd's, shared by every
# process of a user under TORCHINDUCTOR_CACHE_DIR, default /tmp/torchinductor_$USER) without the vector instruction
# set inductor wrote the CPU kernels for, though it builds them with the flags of the instruction set it picks at load
# time. On an AVX-512 EPYC, a graph compiled under ATEN_CPU_CAPABILITY=avx2 (the AVX2 caps the benchmarks use; loops
# of 8 floats) was served from the cache to a later uncapped process and built for AVX-512, where each 8-float step
# stores 16 floats: the last one wrote past its buffer and glibc aborted ("malloc(): unaligned tcache chunk
# detected"). The other way round, 16-float steps built for AVX2 left outputs unwritten (compiled dropout's test
# failed with 38% of the values wrong). The same would happen with one cache directory shared by machines of
# different CPUs. PyTorch's own fix for the thread count (pytorch/pytorch#184444) is of this kind: it adds the setting the code
# was generated for to the key. torch.compiler.config.cache_key_tag is the key's public extension point.
CPU_ISA_TAG_PREFIX = "loraclf-cpu-isa="


def tag_compile_caches_with_cpu_isa() -> str | None:
    """Add the CPU vector instruction set inductor generates code for (e.g. "avx512 avx512_vnni", or "avx2" under
    ATEN_CPU_CAPABILITY=avx2; "INVALID_VEC_ISA" where it vectorizes nothing) to torch.compile's cache key, keeping
    any tag the user set. Returns the tag, or None where this torch has no cache key tag (before 2.6)."""
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        current = torch.compiler.config.cache_key_tag
    except (ImportError, AttributeError):
        return None
    tag = CPU_ISA_TAG_PREFIX + str(pick_vec_isa()).replace(" ", "+")
    parts = [p for p in current.split(";") if p and not p.startswith(CPU_ISA_TAG_PREFIX)]
    torch.compiler.config.cache_key_tag = ";".join(parts + [tag])
    return tag


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


class CompiledOrEager:
    """`fn` under torch.compile(mode, dynamic=False); on the first failure to compile or capture it prints one
    warning line to stderr and runs `fn` eager from then on.

    `then(result)` runs inside the same guard: the training step passes its backward pass, because inductor
    compiles the backward graph at its first use, so a failure there must fall back too. (A compile failure
    raises before any kernel of that graph runs, so nothing is half done when the eager retry starts.)
    """

    def __init__(self, fn: Callable[..., Any], *, mode: str | None, what: str, options: dict[str, Any] | None = None,
                 dynamic_dims: Sequence[tuple[int, int]] = ()) -> None:
        """dynamic_dims: (argument, dimension) pairs compiled as dynamic sizes (`torch._dynamo.maybe_mark_dynamic`
        at every call), so one graph serves every size there; all other sizes are static (dynamic=False: no
        automatic dynamic recompiles)."""
        self.eager = fn
        self.mode = mode
        self.options = options  # inductor options (torch.compile takes either a mode or options)
        self.dynamic_dims = tuple(dynamic_dims)
        self.compiled: Callable[..., Any] | None = None  # built at the first call, inside the guard
        self.cuda_graphs = mode == "reduce-overhead"
        self.freezing = bool((options or {}).get("freezing"))
        self.what = what
        self.failed = False
        self.first_call_seconds: float | None = None  # compile included (and, with `then`, the backward's)

    def __call__(self, *args: Any, then: Callable[[Any], None] | None = None) -> Any:
        if not self.failed:
            try:
                first = self.compiled is None
                if first:
                    tag_compile_caches_with_cpu_isa()
                    self.compiled = torch.compile(self.eager, mode=self.mode, options=self.options, dynamic=False)
                    started = time.perf_counter()
                for arg, dim in self.dynamic_dims:
                    torch._dynamo.maybe_mark_dynamic(args[arg], dim)
                if self.cuda_graphs:
                    # A new step: the previous replay's outputs (already consumed) may be overwritten.
                    torch.compiler.cudagraph_mark_step_begin()
                if self.freezing and first:
                    # Freezing must be on while dynamo traces, not only in inductor's options: only then does
                    # dynamo keep the parameters as graph attributes that inductor can turn into constants
                    # (torch._dynamo.utils.is_parameter_freezing). With `options` alone the weights stay
                    # graph inputs and nothing is frozen or pre-packed (torch 2.13: no mkldnn linear at all).
                    # Only the first call, which compiles: the global flag is not thread-safe to flip around
                    # every call (serve --workers), and the graph's guards do not check it.
                    with torch._inductor.config.patch(freezing=True):
                        result = self.compiled(*args)
                else:
                    result = self.compiled(*args)
                if then is not None:
                    then(result)
                if first:
                    self.first_call_seconds = time.perf_counter() - started
                    if self.first_call_seconds >= COMPILE_NOTICE_SECONDS:
                        print(f"model.compile: the {self.what} compiled in {self.first_call_seconds:.1f} s (its first call)",
                              file=sys.stderr, flush=True)
                return result
            except Exception as err:  # dynamo, inductor, a C++ compiler, CUDA graph capture: all mean "run eager"
                self.failed = True
                print(f"warning: model.compile: the {self.what} could not be compiled ({_one_line(err)}); running it eager",
                      file=sys.stderr, flush=True)
        result = self.eager(*args)
        if then is not None:
            then(result)
        return result


def compiled_train_loss(model: torch.nn.Module, device: torch.device, cuda_graphs: bool = True,
                        label_smoothing: float = 0.0) -> CompiledOrEager:
    """The training forward pass (model + `masked_cross_entropy`) compiled for `device`:
    loss = f(input_ids, attention_mask, targets, real_rows). On CUDA its graphs are captured (CUDA graphs).

    With CUDA graphs, keep every .grad allocated (zero_grad(set_to_none=False)): a backward graph's gradient
    is a buffer the next replay overwrites, and autograd adopts that buffer as .grad when .grad is None,
    which breaks gradient accumulation (pytorch/pytorch#169545). An existing .grad is added into instead.
    cuda_graphs=False compiles without capturing (the recipe's choice with several processes, where DDP's
    gradient all-reduce runs in backward hooks between the graphs; not measured yet).

    The width (dimension 1 of the ids and the mask) is dynamic: one compile serves every length bucket. The
    rows are fixed (`StaticEpoch`), and CUDA graphs are recorded per width, a few milliseconds each."""
    def train_loss(input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor,
                   real: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return masked_cross_entropy(logits, targets, real, label_smoothing)

    mode = CUDA_TRAIN_MODE if device.type == "cuda" and cuda_graphs else "default"
    return CompiledOrEager(train_loss, mode=mode, what="training step", dynamic_dims=((0, 1), (1, 1)))


def compiled_logits(model: torch.nn.Module, device: torch.device, frozen: bool = False) -> CompiledOrEager:
    """logits = f(input_ids, attention_mask) (float32) compiled for `device`; built once per model and kept on it,
    so repeated evaluations (and a server's requests) reuse the compiled graphs.

    frozen: the model's weights never change again (a merged inference-only model, `model.merge_for_inference`).
    On CPU such a model compiles with inductor's freezing: weights become constants, pre-packed once for
    oneDNN's matmul (`mkldnn._linear_pointwise`) instead of repacked at every call (`aten.addmm`), and the
    elementwise ops around them are fused. Measured on a 2-core Xeon with AMX (MiniLM, bf16, in one session):
    1,024 AG News texts in sorted batches of 128, 437 -> 524 texts/s; 16 unsorted texts, 54.0 -> 45.8 ms; logits
    within 0.031 (bf16 rounding), the same labels. A frozen graph is not kept in inductor's FX cache, so each
    process compiles it again (~12 s for MiniLM here).

    Rows and width are dynamic sizes: one graph serves every batch. Measured on a 2-core Xeon (MiniLM, bf16,
    frozen, 64 rows, widths 32-128; bench/reports/compile_shapes_cpu_infer_minilm_xeon_amx.json): one
    dynamic-width compile took 15.6 s against 77.6 s for a graph per length bucket, at 0.98-1.00x the time per
    pass.
    """
    cached = model.__dict__.get("_loraclf_compiled_logits")
    if cached is not None and cached[0] == device:
        return cached[1]

    def logits_of(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()

    cuda = device.type == "cuda"
    fn = CompiledOrEager(logits_of, mode=CUDA_INFERENCE_MODE if cuda else None,
                         options={"freezing": True} if frozen and not cuda else None,
                         what="inference forward pass", dynamic_dims=((0, 0), (1, 0), (0, 1), (1, 1)))
    model.__dict__["_loraclf_compiled_logits"] = (device, fn)
    return fn


class DeviceTokens:
    """Token ids of one split as a single [n, width] table on the device (right-padded with `pad_id`), their
    lengths and labels: a batch is gathered from it by index, with no host-to-device copy.

    `width` is the largest bucket (model.max_length): every bucket then slices the table. Ids are kept as
    int32 (half the memory of a [108,000, 512] table) and widened per batch."""

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


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, real: torch.Tensor,
                         label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the real rows only (filler rows count neither in the sum nor in the mean).

    torch.where, not a multiplication by 0: a filler row's non-finite loss must not leak into the sum."""
    per_row = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none", label_smoothing=label_smoothing)
    return torch.where(real, per_row, torch.zeros_like(per_row)).sum() / real.sum()
