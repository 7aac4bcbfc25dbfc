"""Eager vs compiled (CUDA: CUDA graphs) vs captured (model.compile=cudagraphs) training step, and eager vs compiled
inference pass, on the same batches, in one process.

    python bench/gpu_step_check.py                          # CUDA: RoBERTa-base-sized random model, batch 32 x 64, bf16
    python bench/gpu_step_check.py --recipe                 # ... and TrainRecipe itself, model.compile false vs true
    python bench/gpu_step_check.py --smoke                  # any device: tiny model, a few steps (checks the script runs)
    python bench/gpu_step_check.py --model DIR --device cpu --precision bf16 --steps 30   # e.g. MiniLM on this CPU

It uses loraclf's own pieces (`loraclf.train.step.TrainStep` with its loss, `CrossEntropy`, under each execution;
`loraclf.compiled.compiled_logits`; `loraclf.batching.fixed_rows`), so it checks what `train`/`evaluate` run with model.compile
true and cudagraphs (the captured side runs on CUDA only; on CPU an emulation stands in for torch.cuda's graphs, so
that a dry run exercises the script, labelled "captured (emulated)"):
- correctness: per-micro-batch losses of the first optimizer steps from the same start (gradient accumulation 2,
  clipping, AdamW), eager vs compiled and eager vs captured, and the max logits difference of one inference pass;
- speed: steady-state samples/s of each (the sides timed in alternating rounds, so load on a shared machine hits
  them alike), and compile (+ capture) time on its own line.

Dropout is 0 (model and LoRA) so that both sides compute the same function: compiled code draws other
random numbers than eager. Prints a table and writes JSON (default bench/reports/gpu_step_check-<device>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random-roberta-base", help="random-roberta-base, random-tiny, or a model directory")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    ap.add_argument("--batch", type=int, default=32, help="training micro-batch rows")
    ap.add_argument("--width", type=int, default=64, help="padded sequence length (one bucket)")
    ap.add_argument("--accum", type=int, default=2, help="micro-batches per optimizer step")
    ap.add_argument("--compare-steps", type=int, default=6, help="optimizer steps whose losses are compared")
    ap.add_argument("--steps", type=int, default=300, help="timed micro-batches per side (steady state)")
    ap.add_argument("--infer-rows", type=int, default=512, help="rows per inference pass")
    ap.add_argument("--infer-passes", type=int, default=50, help="timed inference passes per side")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per side")
    ap.add_argument("--warm-cache", action="store_true", help="keep the inductor cache (default: a fresh one, cold compile)")
    ap.add_argument("--smoke", action="store_true", help="tiny random model and few steps (a quick run on any device)")
    ap.add_argument("--recipe", action="store_true",
                    help="also train a tiny random model through loraclf's TrainRecipe with model.compile=false, =true and (CUDA) "
                         "=cudagraphs (synthetic texts, 2 length buckets, accumulation 2, a short last batch) and compare the "
                         "logged losses; on CUDA also eager vs cudagraphs with LoRA dropout 0.1 (do graphs draw eager's numbers?)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke:
        args.model, args.batch, args.width, args.compare_steps = "random-tiny", 8, 32, 3
        args.steps, args.infer_rows, args.infer_passes, args.rounds = 6, 16, 4, 2
    return args


ARGS = parse_args()
if not ARGS.warm_cache:  # before torch loads inductor: a cold compile, as a fresh machine sees it
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchenv import cpu_name, random_roberta  # noqa: E402 - bench/ is on sys.path when this runs as a script
from loraclf import model as M  # noqa: E402
from loraclf.batching import fixed_rows  # noqa: E402
from loraclf.compiled import compiled_logits  # noqa: E402
from loraclf.train.step import CrossEntropy, TrainStep  # noqa: E402
from loraclf.config import LoraConfig  # noqa: E402
from loraclf.inference import autocast_context  # noqa: E402

NUM_LABELS = 4


def build_model(name: str) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0}
    torch.manual_seed(0)
    if name == "random-roberta-base":  # RoBERTa-base's shape (125 M parameters), random weights: no download
        base = random_roberta("base", NUM_LABELS, vocab_size=50265, max_position_embeddings=514, pad_token_id=1,
                              type_vocab_size=1, **no_dropout)
    elif name == "random-tiny":
        base = random_roberta("tiny", NUM_LABELS, vocab_size=1000, max_position_embeddings=130, pad_token_id=1,
                              type_vocab_size=1, **no_dropout)
    else:
        base = AutoModelForSequenceClassification.from_pretrained(name, num_labels=NUM_LABELS, **no_dropout)
    base.config.pad_token_id = base.config.pad_token_id or 0
    lora = LoraConfig(r=8, alpha=16, dropout=0.0, target_modules=["query", "value"])
    return M.apply_lora(base, lora)


def make_batches(n: int, rows: int, width: int, vocab: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Random token ids, lengths between width/2 and width (right-padded), random labels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lengths = rng.integers(width // 2, width + 1, size=rows)
        ids = rng.integers(5, vocab, size=(rows, width))
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        ids = np.where(mask == 1, ids, 1)
        out.append({"input_ids": torch.as_tensor(ids), "attention_mask": torch.as_tensor(mask),
                    "targets": torch.as_tensor(rng.integers(0, NUM_LABELS, size=rows))})
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Table:
    """The batches as one table on the device, as `loraclf.batching.DeviceTokens` holds a split: a micro-batch is
    gathered from it by row indices (what the captured step copies into its graph's input buffer)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.ids = torch.cat([b["input_ids"] for b in batches])
        self.mask = torch.cat([b["attention_mask"] for b in batches])
        self.labels = torch.cat([b["targets"] for b in batches])
        self.rows_of = {id(b): torch.arange(i * len(b["targets"]), (i + 1) * len(b["targets"]), device=self.ids.device)
                        for i, b in enumerate(batches)}

    def batch(self, rows: torch.Tensor, width: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[rows, :width], "attention_mask": self.mask[rows, :width]}


class Trainer:
    """One side of the comparison: loraclf's `TrainStep` under one execution, with the same optimizer, clipping and
    accumulation as TrainRecipe. side: eager, compiled or captured (model.compile=cudagraphs)."""

    EXECUTION = {"eager": "eager", "compiled": "compiled", "captured": "cudagraphs"}

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str, side: str, accum: int,
                 table: Table) -> None:
        self.model, self.table = model, table
        graphs = None
        if side == "captured" and device.type != "cuda":
            sys.path.insert(0, str(HERE.parent / "tests"))
            from emulated_graphs import EmulatedGraphs  # a dry run on a CPU: the tests' stand-in for torch.cuda's graphs

            graphs = EmulatedGraphs(device)
        self.step = TrainStep(model, CrossEntropy(), self.EXECUTION[side], device=device, precision=precision,
                              grad_accum=accum, tokens=table, graphs=graphs)
        self.keep_grads = self.step.keep_grads
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-3, fused=device.type == "cuda" or None)
        self.grads: list[torch.Tensor] | None = None
        self.allocate_grads()

    def allocate_grads(self) -> None:
        """A side with CUDA graphs puts back its own .grad buffers, zeroed: the sides share one model, another
        side's zero_grad(set_to_none=True) drops them, and a graph keeps adding into the buffers it captured
        (new ones would leave it writing into freed memory)."""
        if not self.keep_grads:
            return
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.grads is None:
            self.grads = [torch.zeros_like(p) for p in params]
        for p, g in zip(params, self.grads):
            g.zero_()
            p.grad = g

    def micro_step(self, batch: dict[str, torch.Tensor], real: torch.Tensor) -> torch.Tensor:
        if self.step.execution == "eager":
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            return self.step.padded(inputs, batch["targets"]).clone()
        return self.step.fixed(batch["input_ids"].shape[1], self.table.rows_of[id(batch)], real).clone()

    def optimizer_step(self) -> None:
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=not self.keep_grads)


def recipe_check(device: torch.device, workdir: Path) -> dict:
    """TrainRecipe end to end, eager vs compiled (CUDA: CUDA graphs) and, on CUDA, vs cudagraphs: per-step train
    losses and validation metrics. On CUDA also eager vs cudagraphs with LoRA dropout 0.1: whether the graphs'
    dropout draws eager's random numbers (then the losses match as closely as without dropout)."""
    import csv

    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    from loraclf.config import config_from_dict
    from loraclf.train import train

    rng = np.random.default_rng(0)
    topics = [["market", "stocks", "profit", "bank"], ["match", "goal", "season", "coach"],
              ["election", "minister", "treaty", "vote"], ["software", "chip", "internet", "space"]]
    filler = ["the", "a", "of", "on", "after", "new", "said", "report", "today", "week", "people", "city"]
    rows = []
    for i in range(1000):
        label = i % 4
        words = rng.choice(filler, size=int(rng.integers(8, 40))).tolist()
        for _ in range(3):
            words.insert(int(rng.integers(0, len(words))), str(rng.choice(topics[label])))
        rows.append([str(label), " ".join(words)])
    data = workdir / "train.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([["label", "text"], *rows])
    model_dir = workdir / "tiny"
    model_dir.mkdir(exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([r[1] for r in rows], vocab_size=400, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(model_dir))
    tok = RobertaTokenizerFast(vocab=str(model_dir / "vocab.json"), merges=str(model_dir / "merges.txt"), model_max_length=128)
    tok.save_pretrained(str(model_dir))
    torch.manual_seed(0)
    random_roberta("tiny", 4, vocab_size=len(tok), max_position_embeddings=130, pad_token_id=tok.pad_token_id,
                   type_vocab_size=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).save_pretrained(str(model_dir))

    out: dict = {}
    runs = [("false", 0.0), ("true", 0.0)]
    if device.type == "cuda":
        runs += [("cudagraphs", 0.0), ("false", 0.1), ("cudagraphs", 0.1)]
    for setting, dropout in runs:
        # 900 training rows in batches of 32: 28 full batches and a short one of 4 (masked filler rows when compiled).
        # max_length 48: buckets 32 and 48.
        name = f"{setting}-dropout{dropout:g}"
        cfg = config_from_dict({"model": {"name": str(model_dir)}, "data": {"train_file": str(data)}}, [
            "data.format=csv", "model.max_length=48", "train.batch_size=32", "train.grad_accum=2", "train.epochs=1",
            "train.lr=1e-3", "train.warmup_steps=2", f"lora.dropout={dropout}", "train.log_every_steps=1",
            "train.progress=false", "train.early_stopping_patience=0", f"model.compile={setting}", "train.eval_batch_size=64"])
        metrics = train(cfg, workdir / f"run-{name}", console=False)
        log = [json.loads(x) for x in (workdir / f"run-{name}" / "log.jsonl").read_text().splitlines()]
        out[name] = {"losses": [x["train_loss"] for x in log if "train_loss" in x], "val_loss": metrics["val_loss"],
                     "val_accuracy": metrics["val_accuracy"], "step_seconds": metrics["step_seconds"]}

    def compare(a: str, b: str) -> dict:
        return {"max_loss_diff": max(abs(x - y) for x, y in zip(out[a]["losses"], out[b]["losses"])),
                "same_steps": len(out[a]["losses"]) == len(out[b]["losses"]),
                "val_loss_diff": abs(out[a]["val_loss"] - out[b]["val_loss"])}

    result = {"eager": out["false-dropout0"], "compiled": out["true-dropout0"], **compare("false-dropout0", "true-dropout0")}
    if "cudagraphs-dropout0" in out:
        result["cudagraphs"] = out["cudagraphs-dropout0"]
        result["cudagraphs_vs_eager"] = compare("false-dropout0", "cudagraphs-dropout0")
        result["dropout_runs"] = {"eager": out["false-dropout0.1"], "cudagraphs": out["cudagraphs-dropout0.1"],
                                  **compare("false-dropout0.1", "cudagraphs-dropout0.1")}
    return result


def main() -> int:
    args = ARGS
    device = M.resolve_device(None if args.device == "auto" else args.device)
    precision = M.resolve_precision(args.precision, device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {cpu_name()}, {os.cpu_count()} cores"
    print(f"device {device_name} | precision {precision} | model {args.model} | batch {args.batch} x {args.width} | "
          f"accum {args.accum} | torch {torch.__version__}", file=sys.stderr)

    model = build_model(args.model).to(device)
    model.train()
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    vocab = model.config.vocab_size
    n_micro = args.compare_steps * args.accum
    batches = [{k: v.to(device) for k, v in b.items()}
               for b in make_batches(max(n_micro, 8), args.batch, args.width, vocab, seed=0)]
    all_real = torch.ones(args.batch, dtype=torch.bool, device=device)
    table = Table(batches)
    sides = ("eager", "compiled", "captured")

    def restore() -> None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in start:
                    p.copy_(start[n])
                    p.grad = None

    # ---- correctness: the first optimizer steps from the same weights, eager, then compiled, then captured
    losses: dict[str, list[float]] = {}
    first_steps_s: dict[str, list[float]] = {}
    trainers: dict[str, Trainer] = {}
    for side in sides:
        restore()
        trainer = trainers[side] = Trainer(model, device, precision, side, args.accum, table)
        side_losses, times = [], []
        for s in range(args.compare_steps):
            sync(device)
            t0 = time.perf_counter()
            for k in range(args.accum):
                side_losses.append(trainer.micro_step(batches[s * args.accum + k], all_real))
            trainer.optimizer_step()
            sync(device)
            times.append(time.perf_counter() - t0)
        losses[side] = [float(x) for x in side_losses]
        first_steps_s[side] = times
        print(f"{side}: first {args.compare_steps} optimizer steps took " + ", ".join(f"{t:.1f}" for t in times) + " s",
              file=sys.stderr, flush=True)
    compiled_fell_back = trainers["compiled"].step.metrics()["compile_fell_back"]
    captured_fell_back = trainers["captured"].step.metrics()["cuda_graph_capture_fell_back"]

    # A short batch: filler rows (copies of the first row, masked) leave the loss of the real rows unchanged.
    b0, n_real = batches[0], args.batch // 2 + 1
    fill = torch.as_tensor(fixed_rows(list(range(n_real)), args.batch), device=device)
    filled = {k: v[fill] for k, v in b0.items()}
    real = torch.arange(args.batch, device=device) < n_real
    with torch.no_grad(), autocast_context(device, precision):
        exact = torch.nn.functional.cross_entropy(
            model(input_ids=b0["input_ids"][:n_real], attention_mask=b0["attention_mask"][:n_real]).logits.float(), b0["targets"][:n_real])
        masked = CrossEntropy()(model(input_ids=filled["input_ids"], attention_mask=filled["attention_mask"]).logits,
                                filled["targets"], real)
    filler_diff = abs(float(exact) - float(masked))

    # ---- speed: alternating rounds of steady-state micro-steps (optimizer step every `accum`)
    per_round = max(args.accum, args.steps // args.rounds // args.accum * args.accum)
    train_s = {side: 0.0 for side in sides}
    train_n = {side: 0 for side in sides}
    for _ in range(args.rounds):
        for side, trainer in trainers.items():
            trainer.allocate_grads()
            sync(device)
            t0 = time.perf_counter()
            for i in range(per_round):
                trainer.micro_step(batches[i % len(batches)], all_real)
                if i % args.accum == args.accum - 1:
                    trainer.optimizer_step()
            sync(device)
            train_s[side] += time.perf_counter() - t0
            train_n[side] += per_round
            print(f"{side}: {train_n[side]} micro-steps timed, {train_s[side] / train_n[side]:.3f} s each", file=sys.stderr, flush=True)
    train_sps = {side: train_n[side] * args.batch / train_s[side] for side in trainers}
    step_s = {side: train_s[side] / train_n[side] * args.accum for side in trainers}  # per optimizer step
    # Compile time: the first optimizer steps' time beyond what the same steps take in steady state.
    compile_train_s = sum(first_steps_s["compiled"]) - args.compare_steps * step_s["compiled"]
    capture_train_s = sum(first_steps_s["captured"]) - args.compare_steps * step_s["captured"]

    # ---- inference: one pass over `infer_rows` rows, eager vs compiled
    model.eval()
    ib = make_batches(1, args.infer_rows, args.width, vocab, seed=1)[0]
    ib = {k: v.to(device) for k, v in ib.items()}
    logits_fn = compiled_logits(model, device)
    with torch.inference_mode(), autocast_context(device, precision):
        eager_logits = model(input_ids=ib["input_ids"], attention_mask=ib["attention_mask"]).logits.float()
        sync(device)
        t0 = time.perf_counter()
        comp_logits = logits_fn(ib["input_ids"], ib["attention_mask"]).clone()
        sync(device)
        compile_infer_first_s = time.perf_counter() - t0
        logits_diff = float((eager_logits - comp_logits).abs().max())
        infer_s = {"eager": 0.0, "compiled": 0.0}
        per_round_i = max(1, args.infer_passes // args.rounds)
        for _ in range(args.rounds):
            for side in ("eager", "compiled"):
                sync(device)
                t0 = time.perf_counter()
                for _ in range(per_round_i):
                    if side == "eager":
                        model(input_ids=ib["input_ids"], attention_mask=ib["attention_mask"]).logits.float()
                    else:
                        logits_fn(ib["input_ids"], ib["attention_mask"])
                sync(device)
                infer_s[side] += time.perf_counter() - t0
    infer_sps = {side: args.rounds * per_round_i * args.infer_rows / infer_s[side] for side in infer_s}
    compile_infer_s = compile_infer_first_s - infer_s["compiled"] / (args.rounds * per_round_i)

    loss_diff = max(abs(a - b) for a, b in zip(losses["eager"], losses["compiled"]))
    captured_loss_diff = max(abs(a - b) for a, b in zip(losses["eager"], losses["captured"]))
    tolerance = 5e-2 if precision != "fp32" else 2e-3
    ok = (loss_diff <= tolerance and captured_loss_diff <= tolerance and filler_diff <= tolerance and logits_diff <= tolerance
          and not compiled_fell_back and not captured_fell_back and not logits_fn.failed)
    result = {
        "device": device_name, "device_type": device.type, "precision": precision, "model": args.model,
        "torch": torch.__version__, "batch": args.batch, "width": args.width, "accum": args.accum,
        "compiled_mode": "reduce-overhead (CUDA graphs)" if device.type == "cuda" else "default (inductor)",
        "captured_mode": "torch.cuda.graph of the eager step" if device.type == "cuda" else "emulated (CPU dry run)",
        "compiled_fell_back_to_eager": compiled_fell_back, "captured_fell_back_to_eager": captured_fell_back,
        "losses_eager": losses["eager"], "losses_compiled": losses["compiled"], "max_loss_diff": loss_diff,
        "losses_captured": losses["captured"], "max_captured_loss_diff": captured_loss_diff,
        "filler_rows_loss_diff": filler_diff, "max_logits_diff": logits_diff, "tolerance": tolerance, "ok": ok,
        "train_samples_per_s": train_sps, "train_step_seconds": step_s, "train_micro_steps_timed": train_n,
        "compile_train_seconds": compile_train_s, "capture_train_seconds": capture_train_s,
        "capture_seconds_inside": trainers["captured"].step.metrics()["cuda_graph_capture_seconds"],
        "break_even_optimizer_steps": (compile_train_s / (step_s["eager"] - step_s["compiled"])
                                       if step_s["eager"] > step_s["compiled"] else None),
        "inference_fell_back_to_eager": logits_fn.failed,
        "infer_rows": args.infer_rows, "infer_samples_per_s": infer_sps, "compile_infer_seconds": compile_infer_s,
        "cold_inductor_cache": not args.warm_cache,
    }

    print(f"\n{'':34s} {'eager':>12s} {'compiled':>12s} {'ratio':>7s} {'captured':>12s} {'ratio':>7s}")
    print(f"{'train samples/s (batch %d)' % args.batch:34s} {train_sps['eager']:12.1f} {train_sps['compiled']:12.1f} "
          f"{train_sps['compiled'] / train_sps['eager']:6.2f}x {train_sps['captured']:12.1f} "
          f"{train_sps['captured'] / train_sps['eager']:6.2f}x")
    print(f"{'inference samples/s (%d rows)' % args.infer_rows:34s} {infer_sps['eager']:12.1f} {infer_sps['compiled']:12.1f} "
          f"{infer_sps['compiled'] / infer_sps['eager']:6.2f}x")
    print(f"compile: train step {compile_train_s:.1f} s, inference {compile_infer_s:.1f} s"
          f"{' (inductor cache cold)' if not args.warm_cache else ''}; capture (cudagraphs): first steps' excess "
          f"{capture_train_s:.2f} s, the capture itself {result['capture_seconds_inside']:.3f} s")
    be = result["break_even_optimizer_steps"]
    print(f"break-even: {be:.0f} optimizer steps" if be is not None else "break-even: never (compiled is not faster)")
    print(f"losses: max |eager - compiled| {loss_diff:.2e}, |eager - captured| {captured_loss_diff:.2e} over {n_micro} "
          f"micro-batches; filler rows {filler_diff:.2e}; logits {logits_diff:.2e} (tolerance {tolerance:g}) -> "
          f"{'OK' if ok else 'MISMATCH'}" + ("; the compiled step FELL BACK to eager" if compiled_fell_back else "")
          + ("; the captured step FELL BACK to eager" if captured_fell_back else ""))
    if args.recipe:
        rc = recipe_check(device, Path(tempfile.mkdtemp(prefix="recipe-check-")))

        def agrees(c: dict) -> bool:
            return c["same_steps"] and c["max_loss_diff"] <= tolerance and c["val_loss_diff"] <= tolerance

        rc_ok = agrees(rc) and ("cudagraphs_vs_eager" not in rc or agrees(rc["cudagraphs_vs_eager"]))
        result["recipe_check"], result["ok"], ok = rc, ok and rc_ok, ok and rc_ok
        print(f"recipe (TrainRecipe, tiny model, {len(rc['eager']['losses'])} steps): max |eager - compiled| train loss "
              f"{rc['max_loss_diff']:.2e}, val_loss diff {rc['val_loss_diff']:.2e}, val_accuracy {rc['eager']['val_accuracy']:.3f} / "
              f"{rc['compiled']['val_accuracy']:.3f} -> {'OK' if rc_ok else 'MISMATCH'}")
        if "cudagraphs_vs_eager" in rc:
            cg, dr = rc["cudagraphs_vs_eager"], rc["dropout_runs"]
            print(f"recipe, model.compile=cudagraphs: max |eager - captured| train loss {cg['max_loss_diff']:.2e}, val_loss diff "
                  f"{cg['val_loss_diff']:.2e}; eager {rc['eager']['step_seconds']:.2f} s vs captured "
                  f"{rc['cudagraphs']['step_seconds']:.2f} s of steps; with LoRA dropout 0.1: max |eager - captured| "
                  f"{dr['max_loss_diff']:.2e} (near 0: the graphs draw eager's dropout masks)")
    out = args.json or HERE / "reports" / f"gpu_step_check-{device.type}{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"json: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
