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
# evaluate, predict, export, plot, report


DEVICE_HELP = "Device for inference: cpu, cuda, cuda:1 ... (default: a GPU when present)."
PRECISION_HELP = "Inference precision: auto, fp32, bf16 or fp16."
FORMAT_HELP = "Input format: auto, ag_news, csv, tsv, jsonl, parquet or txt (default: the run's data.format)."
TEXT_COLUMNS_HELP = "Text column(s), comma-separated, joined with a space (default: the run's data.text_columns)."


@app.command()
@guarded
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory written by `loraclf train`."),
    data: str = typer.Option(..., "--data", help="Labelled file to score (CSV/TSV/JSONL/Parquet/AG News CSV)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default RUN_DIR/eval/<data file stem>)."),
    format: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    text_columns: Optional[str] = typer.Option(None, "--text-columns", help=TEXT_COLUMNS_HELP),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Label column (default: the run's data.label_column)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Texts per forward pass."),
) -> None:
    """Score a trained run on a labelled file: metrics table, metrics.json, confusion matrix, errors CSV."""
    from .evaluate import evaluate_run, format_metrics

    ev, paths = evaluate_run(run_dir, data, out, format=format, text_columns=text_columns, label_column=label_column,
                             device=device, precision=precision, batch_size=batch_size)
    typer.echo(format_metrics(ev.metrics))
    typer.echo("")
    typer.echo(f"wrote {paths['metrics']}")
    typer.echo(f"wrote {paths['confusion_matrix']}")
    typer.echo(f"wrote {paths['errors']} ({len(ev.errors())} misclassified rows)")


@app.command()
@guarded
def predict(
    run_dir: Path = typer.Argument(..., help="Run directory written by `loraclf train` (or an adapter export)."),
    input: str = typer.Option(..., "--input", "-i", help="Texts to classify: CSV/TSV/JSONL/Parquet/AG News CSV, .txt (one per line), or - for stdin."),
    output: str = typer.Option("-", "--output", "-o", help="CSV to write (ID,Label), or - for stdout."),
    label_names: bool = typer.Option(False, "--label-names", help="Write class names instead of class ids in Label."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Add one p_<class> probability column per class."),
    format: Optional[str] = typer.Option(None, "--format", help="Input format: auto, ag_news, csv, tsv, jsonl, parquet or txt (default auto: from the file name and content; stdin is txt)."),
    text_columns: Optional[str] = typer.Option(None, "--text-columns", help=TEXT_COLUMNS_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Texts per forward pass."),
) -> None:
    """Classify texts with a trained run; predictions in input order, written atomically."""
    from .predict import predict_file

    n = predict_file(run_dir, input, output, label_names=label_names, probabilities=probabilities, format=format,
                     text_columns=text_columns, device=device, precision=precision, batch_size=batch_size)
    if output != "-":
        typer.echo(f"wrote {n} predictions to {output}", err=True)


@app.command()
@guarded
def export(
    run_dir: Path = typer.Argument(..., help="Run directory written by `loraclf train`."),
    out_dir: Path = typer.Argument(..., help="Directory to create."),
    merged: bool = typer.Option(False, "--merged", help="Merge LoRA into the base model: a standalone transformers model (pipeline-ready)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT_DIR."),
) -> None:
    """Export a run: the adapter alone (default) or a merged standalone model (--merged)."""
    from .export import export_run, human_size

    res = export_run(run_dir, out_dir, merged=merged, overwrite=overwrite)
    kind = "merged model" if res.merged else "adapter"
    typer.echo(f"exported {kind} to {res.out_dir}")
    typer.echo(f"  weights  {human_size(res.weights_bytes)}")
    typer.echo(f"  total    {human_size(res.size_bytes)} on disk")
    if res.merged:
        typer.echo(f'  use: transformers.pipeline("text-classification", model="{res.out_dir}")(texts, truncation=True)')


@app.command()
@guarded
def plot(
    run_dir: Path = typer.Argument(..., help="Run directory (finished or still training)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN_DIR/learning_curves.png)."),
) -> None:
    """Draw a run's learning curves (train/val loss, val accuracy against steps) from its log.jsonl."""
    from .plots import plot_run

    typer.echo(f"wrote {plot_run(run_dir, out)}")


@app.command()
@guarded
def report(
    run_dir: Path = typer.Argument(..., help="Run directory written by `loraclf train`."),
    data: Optional[str] = typer.Option(None, "--data", help="Labelled file to evaluate (default: the run's data.test_file, if any)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default RUN_DIR/report.html)."),
    format: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    text_columns: Optional[str] = typer.Option(None, "--text-columns", help=TEXT_COLUMNS_HELP),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Label column (default: the run's data.label_column)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Write one self-contained HTML page about a run: config, metrics, curves, confusion matrix, errors."""
    from .report import build_report

    res = build_report(run_dir, data, out, format=format, text_columns=text_columns, label_column=label_column,
                       device=device, precision=precision)
    for note in res.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {res.path}")


if __name__ == "__main__":  # `python -m loraclf.cli` (used by the multi-process launcher)
    app()
