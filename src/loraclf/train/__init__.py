"""Training: the recipe (`recipe.py`), its optimizer and schedule (`optim.py`) and checkpoints (`checkpoint.py`).

`train(cfg, run_dir)` is the one-call API; `resume(run_dir)` continues a run from its checkpoint.
"""
from .checkpoint import LoopState, load_checkpoint, save_checkpoint
from .optim import lr_factor, param_groups
from .recipe import EvalCallback, TrainRecipe, resume, train

__all__ = ["EvalCallback", "LoopState", "TrainRecipe", "load_checkpoint", "lr_factor", "param_groups", "resume",
           "save_checkpoint", "train"]
