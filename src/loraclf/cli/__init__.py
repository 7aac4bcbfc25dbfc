"""The `loraclf` command line: parse options, call one stage, print the result.

Only this module imports Typer. It catches LoraclfError alone: the user sees `error: <one line>`
and exit status 2; anything else is a bug and keeps its traceback. `--debug` re-raises everything.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from ..config.inference import InferenceSettings  # light (no torch): the inference options are built from it
from ..config import presets
from ..errors import LoraclfError
from ..serve.settings import RUN_SPEC_HELP as SERVE_RUN_SPEC_HELP, ServeSettings  # light (no torch): the serve options are built from it
from .checks import check_inputs, data_shortcuts, named_after_out, shortcut_items
from .options import from_options, options_from

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 200},  # as wide as the terminal
    # Plain help wraps long option names instead of cutting them ("--max-texts-per-requ…") on an 80-column terminal.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Fine-tune, search, evaluate, predict with and serve LoRA text classifiers.",
)
config_app = typer.Typer(help="Inspect configuration fields and presets.", no_args_is_help=True)
app.add_typer(config_app, name="config")

_state = {"debug": False}


def main(argv: list[str] | None = None) -> None:
    """The `loraclf` entry point: the app, with Click's usage errors (unknown option or command, a missing
    argument) turned into the same single `error:` line as every other user error, exit status 2."""
    try:  # typer >= 0.2x parses with its own copy of click; older ones with click itself
        from typer._click import exceptions as click_errors
    except ImportError:
        from click import exceptions as click_errors

    try:
        code = app(args=argv, prog_name="loraclf", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as e:  # `loraclf` or `loraclf config` alone: show the help
        typer.echo(e.ctx.get_help() if e.ctx else str(e))
        code = 2
    except click_errors.UsageError as e:
        where = e.ctx.command_path if e.ctx else "loraclf"
        message = " ".join(e.format_message().split()).rstrip(".")
        typer.echo(f"error: {message} (see `{where} --help`)", err=True)
        code = 2
    except click_errors.ClickException as e:
        typer.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        code = e.exit_code
    except (getattr(click_errors, "Abort", KeyboardInterrupt), KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


MAX_ERROR_CHARS = 2000  # an error quoting a huge value still fits a terminal


def fail(message: str) -> None:
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS - 3] + "..."
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
        from .. import __version__

        typer.echo(f"loraclf {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    _state["debug"] = debug


def build_config(config: Optional[Path], overrides: list[str], shortcuts: dict[str, Any]) -> Any:
    """YAML file (or defaults) + option shortcuts + `key=value` overrides (these win), validated."""
    from ..config import load_config

    return load_config(config, shortcut_items(shortcuts) + list(overrides or []))


PRESETS_HELP = ", ".join(presets())
DATA_FORMAT_HELP = "File format: auto, ag_news, csv, tsv, jsonl, parquet (data.format)."
DATA_TEXT_COLUMNS_HELP = "Text column(s), comma-separated, joined with a space (data.text_columns)."
DATA_LABEL_COLUMN_HELP = "Label column: integer ids or string names (data.label_column)."

# ---------------------------------------------------------------------------------------------


@app.command(context_settings={"allow_extra_args": False})
@guarded
def train(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Override any config field by its dotted path, e.g. lora.r=16 train.lr=5e-4."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=f"YAML config file, or a preset name: {PRESETS_HELP} (`loraclf config list`)."),
    model: Optional[str] = typer.Option(None, "--model", help="Pretrained encoder: hub id or local directory (model.name)."),
    train_file: Optional[str] = typer.Option(None, "--train-file", help="Local training file (data.train_file)."),
    validation_file: Optional[str] = typer.Option(None, "--validation-file", help="Local validation file (data.validation_file)."),
    test_file: Optional[str] = typer.Option(None, "--test-file", help="Local test file (data.test_file)."),
    format: Optional[str] = typer.Option(None, "--format", help=DATA_FORMAT_HELP),
    text_columns: Optional[str] = typer.Option(None, "--text-columns", help=DATA_TEXT_COLUMNS_HELP),
    label_column: Optional[str] = typer.Option(None, "--label-column", help=DATA_LABEL_COLUMN_HELP),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the training data (train.epochs)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<name>); also names the run, unless name=... is given."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory from its last checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel processes on this machine (torchrun; gloo on CPU, NCCL on GPUs)."),
) -> None:
    """Fine-tune a LoRA text classifier and write a run directory."""
    shortcuts = {"model.name": model, "data.train_file": train_file, "data.validation_file": validation_file,
                 "data.test_file": test_file, **data_shortcuts(format, text_columns, label_column), "train.epochs": epochs,
                 "out": str(out) if out else None, "name": named_after_out(out, overrides or [], "name")}
    if resume is not None:
        # A resumed run keeps its saved config: an option that would change it is refused, not ignored.
        ignored = [name for name, given in (("--config", config), ("--model", model), ("--train-file", train_file),
                                            ("--validation-file", validation_file), ("--test-file", test_file),
                                            ("--format", format), ("--text-columns", text_columns),
                                            ("--label-column", label_column),
                                            ("--epochs", epochs), ("--out", out), ("--overwrite", overwrite)) if given]
        ignored += list(overrides or [])
        if ignored:
            fail(f"--resume continues '{resume}' with its saved config, so {', '.join(ignored)} would be ignored; "
                 f"drop {'it' if len(ignored) == 1 else 'them'}, or start a new run with --out to change settings")
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        from ..distributed import relaunch

        if resume is None:  # fail here with one line rather than once per child process
            cfg = build_config(config, overrides or [], shortcuts)
            if cfg.train.batch_size % nproc:
                fail(f"train.batch_size={cfg.train.batch_size} does not split over {nproc} processes; use a multiple of {nproc}")
            check_inputs(cfg)
        raise typer.Exit(relaunch(nproc, sys.argv[1:]))
    if resume is not None:
        from ..train import resume as resume_run

        metrics = resume_run(resume)  # the checkpoint's config: same data, model and schedule
        run_dir = resume
    else:
        cfg = build_config(config, overrides or [], shortcuts)
        splits = check_inputs(cfg)  # before torch loads: a bad file, column or model fails in a second
        from ..train import train as run_train

        run_dir = cfg.run_dir()
        metrics = run_train(cfg, run_dir, overwrite=overwrite, splits=splits)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_metrics(metrics, run_dir)


def _print_metrics(metrics: dict[str, Any], run_dir: Path) -> None:
    keys = ["val_accuracy", "val_macro_f1", "val_loss", "best_step", "global_step", "stopped_early", "test_accuracy", "test_macro_f1",
            "trainable_params", "train_seconds", "train_samples_per_s", "peak_memory_mb"]
    typer.echo(f"run: {run_dir}")
    for k in keys:
        if k in metrics:
            v = metrics[k]
            typer.echo(f"  {k:22s} {v:.4f}" if isinstance(v, float) else f"  {k:22s} {v}")


@config_app.command("show")
@guarded
def config_show(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]..."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file or preset name to resolve."),
    fields: bool = typer.Option(False, "--fields", help="List every field with its default and help instead."),
) -> None:
    """Print the resolved config as YAML (or every field's help with --fields)."""
    import yaml

    from ..config import describe_fields

    if fields:
        rows = describe_fields()
        name_w = max(len(r[0]) for r in rows)
        default_w = min(max(len(r[1]) for r in rows), 40)  # a long default (the tune space) shifts only its own row
        for name, default, help_text in rows:
            typer.echo(f"{name:{name_w}s}  {default:{default_w}s}  {help_text}")
        return
    cfg = build_config(config, overrides or [], {})
    typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())


@config_app.command("list")
@guarded
def config_list() -> None:
    """List the presets shipped with loraclf: `--config NAME` (or `-c NAME`) uses one."""
    from ..config import preset_summary, presets

    import shutil
    import textwrap

    known = presets()
    width = max(len(n) for n in known)
    columns = max(60, shutil.get_terminal_size().columns)
    for name, path in known.items():  # whole sentences, wrapped under their own column
        lines = textwrap.wrap(preset_summary(path), columns - width - 2, break_on_hyphens=False, break_long_words=False) or [""]
        typer.echo("\n".join(f"{name if i == 0 else '':{width}s}  {line}" for i, line in enumerate(lines)))


# ---------------------------------------------------------------------------------------------
# serve


@app.command()
@guarded
@options_from(ServeSettings)
def serve(
    run_dirs: List[str] = typer.Argument(..., metavar="[NAME=]DIR[@BACKEND]...", help=SERVE_RUN_SPEC_HELP),
    **options: Any,  # one per ServeSettings field, added by options_from
) -> None:
    """Serve classifiers over HTTP (POST /v1/classify, GET /v1/adapters, GET /health, /docs)."""
    from ..serve import serve as run_server

    run_server(run_dirs, from_options(ServeSettings, options))


# ---------------------------------------------------------------------------------------------
# loraclf tune


@app.command(context_settings={"allow_extra_args": False})
@guarded
def tune(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Override any config field, e.g. tune.pruner=median data.max_train_rows=2000."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file with a tune section, or a preset name (`loraclf config list`)."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Finished trials the whole study should hold, all workers together (tune.trials)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting trials after this many seconds (tune.timeout)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Database URL shared by workers/machines, e.g. postgresql://user:pass@host/db (default: STUDY_DIR/study.db)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Trial processes side by side on this machine: with CUDA they take the visible GPUs in turn (several on one GPU share it); on CPU the cores are split."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name; the same name resumes it or joins it from another machine (tune.study_name)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Study directory (default studies/<study_name>); also names the study, unless --study-name or tune.study_name=... is given."),
    train_best: bool = typer.Option(False, "--train-best", help="Retrain the best config into STUDY_DIR/best, score the test split, write submission.csv."),
    model: Optional[str] = typer.Option(None, "--model", help="Pretrained encoder: hub id or local directory (model.name)."),
    train_file: Optional[str] = typer.Option(None, "--train-file", help="Local training file (data.train_file)."),
    validation_file: Optional[str] = typer.Option(None, "--validation-file", help="Local validation file (data.validation_file)."),
    test_file: Optional[str] = typer.Option(None, "--test-file", help="Local test file, used only by --train-best (data.test_file)."),
    format: Optional[str] = typer.Option(None, "--format", help=DATA_FORMAT_HELP),
    text_columns: Optional[str] = typer.Option(None, "--text-columns", help=DATA_TEXT_COLUMNS_HELP),
    label_column: Optional[str] = typer.Option(None, "--label-column", help=DATA_LABEL_COLUMN_HELP),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the training data when the space does not choose it (train.epochs)."),
) -> None:
    """Search hyperparameters with Optuna (pruning, parallel workers, shared studies) and write the study directory."""
    cfg = build_config(
        config,
        overrides or [],
        {"model.name": model, "data.train_file": train_file, "data.validation_file": validation_file, "data.test_file": test_file,
         **data_shortcuts(format, text_columns, label_column), "train.epochs": epochs, "tune.trials": trials,
         "tune.timeout": timeout, "tune.storage": storage,
         "tune.study_name": study_name or named_after_out(out, overrides or [], "tune.study_name")},
    )
    splits = check_inputs(cfg)  # before torch loads: a bad file, column or model fails in a second
    for warning in splits.warnings:
        typer.echo(f"warning: {warning}", err=True)
    from ..tune import run_study

    s = run_study(cfg, out, workers=workers, retrain_best=train_best, splits=splits)
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


# ---------------------------------------------------------------------------------------------
# evaluate, predict, export, plot, report


FORMAT_HELP = "Input format: auto, ag_news, csv, tsv, jsonl, parquet or txt (default: the run's data.format)."
TEXT_COLUMNS_HELP = "Text column(s), comma-separated, joined with a space (default: the run's data.text_columns)."


@app.command()
@guarded
@options_from(InferenceSettings)
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory written by `loraclf train`."),
    data: str = typer.Option(..., "--data", help="Labelled file to score (CSV/TSV/JSONL/Parquet/AG News CSV)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default RUN_DIR/eval/<data file stem>)."),
    format: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    text_columns: Optional[str] = typer.Option(None, "--text-columns", help=TEXT_COLUMNS_HELP),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Label column (default: the run's data.label_column)."),
    **options: Any,  # one per InferenceSettings field, added by options_from
) -> None:
    """Score a trained run on a labelled file: metrics table, metrics.json, confusion matrix, errors CSV."""
    from ..evaluate import evaluate_run
    from ..metrics import format_metrics

    ev, paths = evaluate_run(run_dir, data, out, format=format, text_columns=text_columns, label_column=label_column,
                             settings=from_options(InferenceSettings, options))
    typer.echo(format_metrics(ev.metrics))
    typer.echo("")
    typer.echo(f"wrote {paths['metrics']}")
    typer.echo(f"wrote {paths['confusion_matrix']}")
    typer.echo(f"wrote {paths['errors']} ({len(ev.errors())} misclassified rows)")


@app.command()
@guarded
@options_from(InferenceSettings)
def predict(
    run_dir: Path = typer.Argument(..., help="Run directory written by `loraclf train` (or an adapter export)."),
    input: str = typer.Option(..., "--input", "-i", help="Texts to classify: CSV/TSV/JSONL/Parquet/AG News CSV, .txt (one per line), or - for stdin."),
    output: str = typer.Option("-", "--output", "-o", help="CSV to write (ID,Label; never the input file; its directory must exist), or - for stdout."),
    ids: bool = typer.Option(False, "--ids", help="Write class ids instead of class names in Label (the study's submission layout)."),
    label_names: bool = typer.Option(False, "--label-names", hidden=True, help="Class names in Label: the default now; kept so old scripts run."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Add one p_<class> probability column per class."),
    keep_columns: Optional[str] = typer.Option(None, "--keep-columns", help="Input columns to copy into the output before ID, comma-separated, e.g. id,review (table inputs only); a column named id (any case) takes the place of the row-index ID."),
    format: Optional[str] = typer.Option(None, "--format", help="Input format: auto, ag_news, csv, tsv, jsonl, parquet or txt (default auto: from the file name and content; stdin is txt)."),
    text_columns: Optional[str] = typer.Option(None, "--text-columns", help=TEXT_COLUMNS_HELP),
    **options: Any,  # one per InferenceSettings field, added by options_from
) -> None:
    """Classify texts with a trained run; predictions (class names, or ids with --ids) in input order, written atomically."""
    from ..errors import ConfigError
    from ..predict import predict_file

    if ids and label_names:
        raise ConfigError("--ids and --label-names ask for opposite Label columns; drop --label-names (class names are the default)")
    settings = from_options(InferenceSettings, options)
    n = predict_file(run_dir, input, output, ids=ids, probabilities=probabilities, keep_columns=keep_columns, format=format,
                     text_columns=text_columns, settings=settings)
    if output != "-":
        typer.echo(f"wrote {n} predictions to {output}", err=True)


@app.command()
@guarded
def export(
    run_dir: Path = typer.Argument(..., help="Run directory written by `loraclf train`."),
    out_dir: Path = typer.Argument(..., help="Directory to create."),
    merged: bool = typer.Option(False, "--merged", help="Merge LoRA into the base model: a standalone transformers model (pipeline-ready)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT_DIR."),
    onnx: bool = typer.Option(False, "--onnx", help="The merged model as ONNX (model.onnx) for ONNX Runtime, checked against PyTorch."),
    int8: bool = typer.Option(False, "--int8", help="With --onnx: add model.int8.onnx, dynamically quantized (int8 embeddings and the MatMuls but the FFN output projections and the last layer; attention stays fp32): about half the size, its size and label agreement with fp32 printed."),
) -> None:
    """Export a run: the adapter alone (default), a merged standalone model (--merged) or ONNX (--onnx [--int8])."""
    from ..export import export_run, human_size

    res = export_run(run_dir, out_dir, merged=merged, overwrite=overwrite, onnx=onnx, int8=int8)
    kind = "ONNX model" if res.onnx else "merged model" if res.merged else "adapter"
    typer.echo(f"exported {kind} to {res.out_dir}")
    if res.onnx:
        c = res.check
        typer.echo(f"  check    fp32 max |logit diff| vs PyTorch {c['fp32_max_abs_logit_diff']:.1e} on {c['sample_texts']} sample texts (limit {c['tolerance']:g})")
        fusions = c.get("fusions")
        if isinstance(fusions, dict):
            fusions = ", ".join(f"{k} x{n}" for k, n in fusions.items()) + " fused for onnxruntime" if fusions else "no subgraph fused"
        typer.echo(f"  graph    {fusions}")
        if "int8_label_agreement" in c:
            typer.echo(f"  check    int8 labels agree with fp32 on {c['int8_label_agreement']:.1%} of the sample (max |logit diff| {c['int8_max_abs_logit_diff']:.2g})")
        if "int8_bytes" in c:
            typer.echo(f"  int8     {human_size(c['int8_bytes'])} against {human_size(c['fp32_bytes'])} fp32 "
                       f"({c['int8_bytes'] / c['fp32_bytes']:.0%}); quantized: {', '.join(c['int8_quantization']['op_types'])}")
    typer.echo(f"  weights  {human_size(res.weights_bytes)}")
    typer.echo(f"  total    {human_size(res.size_bytes)} on disk")
    if res.onnx:
        typer.echo(f"  use: loraclf predict {res.out_dir} --backend onnx{' --int8' if int8 else ''} -i texts.txt  (or onnxruntime + tokenizers)")
    elif res.merged:
        typer.echo(f'  use: transformers.pipeline("text-classification", model="{res.out_dir}")(texts, truncation=True)')


@app.command()
@guarded
def plot(
    run_dir: Path = typer.Argument(..., help="Run directory (finished or still training)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN_DIR/learning_curves.png)."),
) -> None:
    """Draw a run's learning curves (train/val loss, val accuracy against steps) from its log.jsonl."""
    from ..plots import plot_run

    typer.echo(f"wrote {plot_run(run_dir, out)}")


@app.command()
@guarded
@options_from(InferenceSettings)
def report(
    run_dir: Path = typer.Argument(..., help="Run directory written by `loraclf train`."),
    data: Optional[str] = typer.Option(None, "--data", help="Labelled file to evaluate (default: the run's data.test_file, if any)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default RUN_DIR/report.html)."),
    format: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    text_columns: Optional[str] = typer.Option(None, "--text-columns", help=TEXT_COLUMNS_HELP),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Label column (default: the run's data.label_column)."),
    **options: Any,  # one per InferenceSettings field, added by options_from
) -> None:
    """Write one self-contained HTML page about a run: config, metrics, curves, confusion matrix, errors."""
    from ..report import build_report

    res = build_report(run_dir, data, out, format=format, text_columns=text_columns, label_column=label_column,
                       settings=from_options(InferenceSettings, options))
    for note in res.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {res.path}")
