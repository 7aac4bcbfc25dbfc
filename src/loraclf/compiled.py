"""`torch.compile` for loraclf: what `auto` compiles (one policy table), and the compile mechanism.

`CompiledOrEager` runs a function compiled and, if compiling or capturing fails, prints one warning line and runs
it eager from then on: a model that cannot compile never fails a run. The training step it compiles is
`train.step.TrainStep`'s; the inference forward pass is `compiled_logits`. The fixed-shape batches a compiled
step trains on live in `batching` (`DeviceTokens`, `StaticEpoch`, `training_widths`). The measurements behind
every choice here are in bench/FINDINGS_cpu.md and bench/FINDINGS_gpu.md ("Why the defaults").
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence

import torch

from .errors import one_line

# What `auto` runs, per (use, device type, precision; "*": any precision): the execution and the smallest run it
# pays for, in training samples per process ("train") or texts scored at once ("predict"); a server ("serve")
# always qualifies. No entry: eager. A compile costs seconds to a minute, so it is chosen only where it pays back.
AUTO_EXECUTION: dict[tuple[str, str, str], tuple[str, int]] = {
    ("train", "cuda", "*"): ("compiled", 0),
    ("train", "cpu", "bf16"): ("compiled", 64_000),
    ("predict", "cpu", "bf16"): ("compiled", 20_000),
    ("serve", "cpu", "bf16"): ("compiled", 0),
}

# torch.compile modes: CUDA graphs for the launch-bound training step; inference batches are big enough
# that launch overhead does not matter, and a graph pool per shape would only cost memory.
CUDA_TRAIN_MODE = "reduce-overhead"
CUDA_INFERENCE_MODE = "default"

# A first call slower than this compiled something: it says so on stderr (a minute of silence looks like a hang).
COMPILE_NOTICE_SECONDS = 2.0


def auto_execution(use: str, device_type: str, precision: str, size: int = 0) -> str:
    """What `auto` runs for `use` ("train", "predict" or "serve") of `size` on this device: `AUTO_EXECUTION`."""
    rule = AUTO_EXECUTION.get((use, device_type, precision)) or AUTO_EXECUTION.get((use, device_type, "*"))
    return rule[0] if rule is not None and size >= rule[1] else "eager"


def train_execution(setting: bool | str, device: torch.device, precision: str, train_samples: int = 0,
                    processes: int = 1) -> tuple[str, str | None]:
    """How a training step runs under `model.compile`: "compiled" (torch.compile; on CUDA with CUDA graphs),
    "cudagraphs" (the eager step captured as CUDA graphs, `train.cudagraphs`) or "eager"; and a one-line
    warning when the setting asked for what this device or process count cannot do. `train_samples`: each
    process's micro-batch rows over the whole run."""
    if setting is True or setting is False:
        return ("compiled" if setting else "eager"), None
    if setting == "auto":
        chosen = auto_execution("train", device.type, precision, train_samples)
        if processes > 1 and chosen != "eager":
            # DDP all-reduces gradients in backward hooks, between what would be a captured graph's kernels;
            # several CPU processes were never measured compiled.
            chosen = "compiled" if device.type == "cuda" else "eager"
        return chosen, None
    if device.type != "cuda" or not torch.cuda.is_available():
        return "eager", f"warning: model.compile=cudagraphs needs a CUDA GPU; training eager on {device.type}"
    if processes > 1:
        return "eager", f"warning: model.compile=cudagraphs runs in one process; training eager on {processes} processes"
    return "cudagraphs", None


def inference_compile_enabled(setting: bool | str, device: torch.device, merged: bool, rows: int | None = None,
                              serving: bool = False, precision: str = "bf16") -> bool:
    """What --compile means for inference: true/false as given; auto follows `AUTO_EXECUTION` for a server, or
    for `rows` texts scored at once, and only for a merged (inference-only) model, whose weights a CPU compile
    freezes: an unmerged model gained too little from a compile to pay for it."""
    if setting is True or setting is False:
        return setting
    if not merged:
        return False
    use, size = ("serve", 0) if serving else ("predict", rows or 0)
    return auto_execution(use, device.type, precision, size) == "compiled"


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


# torch keys its on-disk compile caches without the vector instruction set inductor wrote the CPU kernels for, so a
# graph built for one (e.g. AVX2 caps) can be served to a process that builds it for another and corrupts memory;
# the tag adds that instruction set to the key (bench/FINDINGS_cpu.md, "Compile caches and the instruction set").
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
                print(f"warning: model.compile: the {self.what} could not be compiled ({one_line(err)}); running it eager",
                      file=sys.stderr, flush=True)
        result = self.eager(*args)
        if then is not None:
            then(result)
        return result


def compiled_logits(model: torch.nn.Module, device: torch.device, merged: bool = False) -> CompiledOrEager:
    """logits = f(input_ids, attention_mask) (float32) compiled for `device`; built once per model and kept on it,
    so repeated evaluations (and a server's requests) reuse the compiled graphs.

    merged: the model's weights never change again (a merged inference-only model, `model.merge_for_inference`).
    On CPU such a model compiles with inductor's freezing: weights become constants, pre-packed once for oneDNN's
    matmul instead of repacked at every call, and the elementwise ops around them are fused. A frozen graph is not
    kept in inductor's FX cache, so each process compiles it again. Rows and width are dynamic sizes: one graph
    serves every batch.
    """
    cached = model.__dict__.get("_loraclf_compiled_logits")
    if cached is not None and cached[0] == device:
        return cached[1]

    def logits_of(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()

    cuda = device.type == "cuda"
    fn = CompiledOrEager(logits_of, mode=CUDA_INFERENCE_MODE if cuda else None,
                         options={"freezing": True} if merged and not cuda else None,
                         what="inference forward pass", dynamic_dims=((0, 0), (1, 0), (0, 1), (1, 1)))
    model.__dict__["_loraclf_compiled_logits"] = (device, fn)
    return fn
