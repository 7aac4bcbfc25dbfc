"""The `loraclf` command line: parse options, call one stage, print the result.

Only this module imports Typer. It catches LoraclfError alone: the user sees `error: <one line>`
and exit status 2; anything else is a bug and keeps its traceback. `--debug` re-raises everything.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from .errors import LoraclfError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Fine-tune, search, evaluate, predict with and serve LoRA text classifiers.",
)
config_app = typer.Typer(help="Inspect configuration fields and presets.", no_args_is_help=True)
app.add_typer(config_app, name="config")

_state = {"debug": False}


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn LoraclfError into one `error:` line and exit status 2 (or re-raise under --debug)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LoraclfError as e:
            if _state["debug"]:
                raise
            fail(" ".join(str(e).split("\n")))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"loraclf {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    _state["debug"] = debug


def build_config(config: Optional[Path], overrides: list[str], shortcuts: dict[str, Any]) -> Any:
    """YAML file (or defaults) + option shortcuts + `key=value` overrides (these win), validated."""
    from .config import load_config

    items = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in shortcuts.items() if v is not None]
    return load_config(config, items + list(overrides or []))


# ---------------------------------------------------------------------------------------------


@app.command(context_settings={"allow_extra_args": False})
@guarded
def train(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Override any config field by its dotted path, e.g. lora.r=16 train.lr=5e-4."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (presets in configs/)."),
    model: Optional[str] = typer.Option(None, "--model", help="Pretrained encoder: hub id or local directory (model.name)."),
    train_file: Optional[str] = typer.Option(None, "--train-file", help="Local training file (data.train_file)."),
    validation_file: Optional[str] = typer.Option(None, "--validation-file", help="Local validation file (data.validation_file)."),
    test_file: Optional[str] = typer.Option(None, "--test-file", help="Local test file (data.test_file)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the training data (train.epochs)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<name>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory from its last checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel processes on this machine (torchrun; gloo on CPU, NCCL on GPUs)."),
) -> None:
    """Fine-tune a LoRA text classifier and write a run directory."""
    from .train import train as run_train

    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        from .distributed import relaunch

        raise typer.Exit(relaunch(nproc, sys.argv[1:]))
    if resume is not None:
        from .config import Config

        cfg = Config()  # replaced by the checkpoint's config inside train()
        metrics = run_train(cfg, resume, resume=True)
        run_dir = resume
    else:
        cfg = build_config(
            config,
            overrides or [],
            {"model.name": model, "data.train_file": train_file, "data.validation_file": validation_file, "data.test_file": test_file, "train.epochs": epochs, "out": str(out) if out else None},
        )
        run_dir = cfg.run_dir()
        metrics = run_train(cfg, run_dir, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_metrics(metrics, run_dir)


def _print_metrics(metrics: dict[str, Any], run_dir: Path) -> None:
    keys = ["val_accuracy", "val_macro_f1", "val_loss", "test_accuracy", "test_macro_f1", "trainable_params", "train_seconds", "train_samples_per_s", "peak_memory_mb"]
    typer.echo(f"run: {run_dir}")
    for k in keys:
        if k in metrics:
            v = metrics[k]
            typer.echo(f"  {k:22s} {v:.4f}" if isinstance(v, float) else f"  {k:22s} {v}")


@config_app.command("show")
@guarded
def config_show(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]..."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config to resolve."),
    fields: bool = typer.Option(False, "--fields", help="List every field with its default and help instead."),
) -> None:
    """Print the resolved config as YAML (or every field's help with --fields)."""
    import yaml

    from .config import describe_fields

    if fields:
        for name, default, help_text in describe_fields():
            typer.echo(f"{name:28s} {default:28s} {help_text}")
        return
    cfg = build_config(config, overrides or [], {})
    typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())


# ---------------------------------------------------------------------------------------------
# loraclf tune


@app.command(context_settings={"allow_extra_args": False})
@guarded
def tune(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Override any config field, e.g. tune.pruner=median data.max_train_rows=2000."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config with a tune section (presets in configs/)."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Finished trials the whole study should hold, all workers together (tune.trials)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting trials after this many seconds (tune.timeout)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Database URL shared by workers/machines, e.g. postgresql://user:pass@host/db (default: STUDY_DIR/study.db)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Worker processes on this machine (one GPU each with CUDA; cores split on CPU)."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name; the same name resumes it or joins it from another machine (tune.study_name)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Study directory (default studies/<study_name>)."),
    train_best: bool = typer.Option(False, "--train-best", help="Retrain the best config into STUDY_DIR/best, score the test split, write submission.csv."),
    model: Optional[str] = typer.Option(None, "--model", help="Pretrained encoder: hub id or local directory (model.name)."),
    train_file: Optional[str] = typer.Option(None, "--train-file", help="Local training file (data.train_file)."),
    validation_file: Optional[str] = typer.Option(None, "--validation-file", help="Local validation file (data.validation_file)."),
    test_file: Optional[str] = typer.Option(None, "--test-file", help="Local test file, used only by --train-best (data.test_file)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the training data when the space does not choose it (train.epochs)."),
) -> None:
    """Search hyperparameters with Optuna (pruning, parallel workers, shared studies) and write the study directory."""
    from .tune import run_study

    cfg = build_config(
        config,
        overrides or [],
        {"model.name": model, "data.train_file": train_file, "data.validation_file": validation_file, "data.test_file": test_file,
         "train.epochs": epochs, "tune.trials": trials, "tune.timeout": timeout, "tune.storage": storage, "tune.study_name": study_name},
    )
    s = run_study(cfg, out, workers=workers, retrain_best=train_best)
    typer.echo(f"study: {s['study_name']}  storage: {s['storage']}  dir: {s['study_dir']}  wall: {s['wall_seconds']}s")
    typer.echo("trials: " + ", ".join(f"{k} {v}" for k, v in s["trials"].items()))
    best = s["best"]
    if best:
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        typer.echo(f"best: trial {best['number']} val_accuracy {best['val_accuracy']:.4f}  {params}")
    if "train_best" in s:
        tb = s["train_best"]
        acc = f"test_accuracy {tb['test_accuracy']:.4f} on {tb['test_rows']} rows" if "test_accuracy" in tb else f"{tb['test_rows']} test rows"
        typer.echo(f"train-best: {acc}  run: {tb['best_run_dir']}  submission: {tb['submission']}")
    typer.echo(f"log: {s['experiment_log']}")


if __name__ == "__main__":  # `python -m loraclf.cli` (used by the multi-process launcher)
    app()
