"""Experiment (capacity check, validation only): LoRA default + every base weight trained at FT_LR."""
import os, sys, torch
from loraclf.train import optim as O
from loraclf.train import recipe as R
FT_LR = float(os.environ.get("FT_LR", "5e-5"))
orig = O.param_groups
def param_groups(model, weight_decay, lr=1.0, *, head_lr=None, lora_plus_ratio=1.0):
    groups = orig(model, weight_decay, lr, head_lr=head_lr, lora_plus_ratio=lora_plus_ratio)
    base = [p for n, p in model.named_parameters() if not p.requires_grad and "lora_" not in n and "original_module" not in n]
    for p in base:
        p.requires_grad_(True)
    groups.append({"params": [p for p in base if p.ndim >= 2], "lr": FT_LR, "weight_decay": weight_decay})
    groups.append({"params": [p for p in base if p.ndim < 2], "lr": FT_LR, "weight_decay": 0.0})
    print(f"full FT: {sum(p.numel() for p in base):,} base weights at lr {FT_LR}", flush=True)
    return groups
O.param_groups = param_groups
import loraclf.model as MM
MM.store_frozen_linears = lambda *a, **k: None  # fp32 master weights for the trained base
from loraclf.cli import main
sys.exit(main(sys.argv[1:]))
