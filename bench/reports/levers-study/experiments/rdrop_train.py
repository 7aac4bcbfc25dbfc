"""Experiment: R-Drop (two dropout passes, symmetric KL between them) patched into the eager train step."""
import contextlib, os, sys, torch
import torch.nn.functional as F
from loraclf.train import recipe as R

ALPHA = float(os.environ.get("RDROP_ALPHA", "1.0"))

def step(self, global_batch, b_idx, boundary):
    cfg, acc, state = self.cfg, self.accelerator, self.state
    assert self.compiled_loss is None
    sync_ctx = acc.no_sync(self.model) if not boundary else contextlib.nullcontext()
    with sync_ctx, R.autocast_context(acc.device, self.precision):
        mine = R.process_slice(global_batch, cfg.train.batch_size, self.rank, self.world)
        inputs = R.pad_batch([self.train_ids[i] for i in mine] * 2, self.pad_id)
        inputs = {k: v.to(acc.device) for k, v in inputs.items()}
        targets = torch.as_tensor([self.train_labels[i] for i in mine], device=acc.device)
        logits = self.model(**inputs).logits.float()
        a, b = logits.chunk(2)
        ce = 0.5 * (F.cross_entropy(a, targets, label_smoothing=cfg.train.label_smoothing)
                    + F.cross_entropy(b, targets, label_smoothing=cfg.train.label_smoothing))
        la, lb = a.log_softmax(-1), b.log_softmax(-1)
        kl = 0.5 * (F.kl_div(la, lb, log_target=True, reduction="batchmean") + F.kl_div(lb, la, log_target=True, reduction="batchmean"))
        loss = ce + ALPHA * kl
        acc.backward(loss / cfg.train.grad_accum)
    state.samples_seen += len(global_batch)
    state.tokens_seen += sum(len(self.train_ids[i]) for i in global_batch)
    return ce.detach()

R.TrainRecipe.step = step
from loraclf.cli import main
sys.exit(main(sys.argv[1:]))
