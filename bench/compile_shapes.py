"""One compile per length bucket, or one compile with the width as a dynamic size? Compile seconds and steady
step/pass times of both, in one process, for loraclf's compiled training loss and inference forward pass.

    python bench/compile_shapes.py --model random-tiny --what train            # a quick look (CPU: ~2 min)
    python bench/compile_shapes.py --model DIR --what infer --widths 32,48,64,96,128
    python bench/compile_shapes.py --model random-roberta-base --device cuda   # on a GPU

Sides (each compiled from scratch: dynamo reset, inductor's FX graph cache off, so every compile is cold):
- per-bucket: the width static, one graph per width (what loraclf did before; CPU inference still does);
- dynamic-width: the width marked dynamic (`maybe_mark_dynamic`), one graph for all widths.
Rows are fixed for training (the micro-batch) and dynamic for inference, as in loraclf. Inference runs a
merged-like frozen model (no grads; inductor freezing on CPU). After every width has compiled on both sides,
steady times are taken per width, the two sides alternating call by call (load hits both alike).
Prints a table and writes JSON (default bench/reports/compile_shapes-<device>-<what>.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random-tiny", help="random-tiny, random-roberta-base or a model directory")
    ap.add_argument("--what", choices=["train", "infer"], default="train")
    ap.add_argument("--widths", default="32,48,64,96", help="comma-separated padded widths (length buckets)")
    ap.add_argument("--rows", type=int, default=None, help="rows per batch (default: 32 train, 64 infer)")
    ap.add_argument("--reps", type=int, default=6, help="timed calls per width and side")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch
    import torch._inductor.config as inductor_config

    sys.argv = [sys.argv[0], "--model", args.model]  # gpu_step_check parses its own arguments at import
    sys.path.insert(0, str(HERE))
    import gpu_step_check as G
    from benchenv import cpu_name
    from loraclf import model as M
    from loraclf.compiled import CompiledOrEager
    from loraclf.train.step import TrainStep, CrossEntropy
    from loraclf.inference import autocast_context

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = M.resolve_precision(args.precision, device)
    widths = [int(w) for w in args.widths.split(",")]
    rows = args.rows or (32 if args.what == "train" else 64)
    inductor_config.fx_graph_cache = False  # every side's compile is cold, as on a fresh machine
    model = G.build_model(args.model).to(device)
    vocab = model.config.vocab_size
    batches = {w: G.make_batches(2, rows, w, vocab, seed=w) for w in widths}
    if args.what == "infer":
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

    train_loss = TrainStep(model, CrossEntropy(), "eager", device=device, precision=precision).forward_loss

    def logits_of(ids, mask):
        return model(input_ids=ids, attention_mask=mask).logits.float()

    row_dims = ((0, 0), (1, 0)) if args.what == "infer" else ()
    sides = {"per-bucket": row_dims, "dynamic-width": row_dims + ((0, 1), (1, 1))}
    mode = "reduce-overhead" if device.type == "cuda" and args.what == "train" else None
    options = {"freezing": True} if device.type == "cpu" and args.what == "infer" else None

    def call(fn: CompiledOrEager, w: int, k: int) -> float:
        b = {key: t.to(device) for key, t in batches[w][k % 2].items()}
        start = time.perf_counter()
        with autocast_context(device, precision):
            if args.what == "train":
                fn(b["input_ids"], b["attention_mask"], b["targets"], torch.ones(rows, dtype=torch.bool, device=device),
                   then=lambda loss: loss.backward())
                for p in model.parameters():
                    p.grad = None
            else:
                with torch.no_grad():
                    fn(b["input_ids"], b["attention_mask"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    compiled: dict[str, CompiledOrEager] = {}
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else cpu_name(), "torch": torch.__version__,
                    "model": args.model, "what": args.what, "rows": rows, "widths": widths, "precision": precision, "sides": {}}
    for side, dims in sides.items():
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        fn = CompiledOrEager(train_loss if args.what == "train" else logits_of, mode=mode, options=options,
                             what=f"{args.what} ({side})", dynamic_dims=dims)
        first = {}
        for w in widths:  # first call per width (compile, or a CUDA graph recording), then one more (cudagraph warm-up)
            first[w] = call(fn, w, 0)
            call(fn, w, 1)
            print(f"{side}: width {w} first call {first[w]:.1f} s", flush=True)
        graphs = torch._dynamo.utils.counters["stats"].get("unique_graphs", 0)
        result["sides"][side] = {"first_call_seconds": first, "compile_seconds_total": sum(first.values()),
                                 "graphs": graphs, "failed": fn.failed}
        compiled[side] = fn
    # Steady state: alternate the sides call by call. Graphs of both stay valid after the resets above (a
    # compiled function keeps its own cache entries until its code object is reset; re-check the counters).
    torch._dynamo.utils.counters.clear()
    times: dict[str, dict[int, list[float]]] = {s: {w: [] for w in widths} for s in sides}
    for w in widths:
        for k in range(args.reps):
            for side in sides:
                times[side][w].append(call(compiled[side], w, k))
    recompiles = torch._dynamo.utils.counters["stats"].get("unique_graphs", 0)
    for side in sides:
        result["sides"][side]["steady_ms"] = {w: 1000 * statistics.median(times[side][w]) for w in widths}
    result["recompiles_during_timing"] = recompiles

    print(f"\n{result['device']} | {args.model} | {args.what} | {rows} rows | {precision} | torch {torch.__version__}")
    print(f"{'':24}" + "".join(f"{s:>16}" for s in sides) + f"{'ratio':>10}")
    a, b = list(sides)
    ca, cb = result["sides"][a]["compile_seconds_total"], result["sides"][b]["compile_seconds_total"]
    print(f"{'compile s (all widths)':24}{ca:>16.1f}{cb:>16.1f}{cb / ca:>9.2f}x")
    print(f"{'graphs':24}{result['sides'][a]['graphs']:>16}{result['sides'][b]['graphs']:>16}")
    for w in widths:
        ma, mb = result["sides"][a]["steady_ms"][w], result["sides"][b]["steady_ms"][w]
        print(f"{f'width {w}: ms per call':24}{ma:>16.1f}{mb:>16.1f}{mb / ma:>9.2f}x")
    print(f"(ratio = {b} / {a}; steady = median of {args.reps} alternating calls; "
          f"graphs compiled while timing: {recompiles})")
    out = args.json or HERE / "reports" / f"compile_shapes-{device.type}-{args.what}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
