"""`loraclf report`: one self-contained HTML page per run.

The page holds the run's config, its training metrics, learning curves and, when there is labelled
data to score (`--data`, else the run's `data.test_file`), the evaluation: summary, per-class
table, confusion matrix and a sample of misclassified rows. Pictures are embedded as base64 PNG
data URIs and the styles are inline, so the single file can be mailed or archived as is; it loads
nothing from the network and runs no script.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .config.inference import InferenceSettings
from .errors import RunDirError
from .io import atomic_write
from .rundir import REPORT_FILE, RunDir

ERROR_SAMPLE = 20  # misclassified rows shown: enough to see patterns, short enough to read
TEXT_LIMIT = 300  # characters of each error's text shown

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 1rem; min-width: 9rem; background: #fafafa; }
.card .v { font-size: 1.5rem; font-weight: 600; } .card .k { color: #666; font-size: 0.85rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; border: 1px solid #ddd; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 0.8rem; }
td.text { max-width: 620px; }
"""


@dataclass
class ReportResult:
    """What `build_report` wrote and the notes about sections it had to skip."""

    path: Path
    notes: list[str] = field(default_factory=list)
    evaluation: Any = None  # loraclf.evaluate.Evaluation when data was scored


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if n else "text"}">{_esc(_fmt(v))}</td>' for v, n in zip(r, numeric)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _cards(items: Sequence[tuple[str, Any]]) -> str:
    cells = "".join(f'<div class="card"><div class="v">{_esc(_fmt(v))}</div><div class="k">{_esc(k)}</div></div>' for k, v in items)
    return f'<div class="cards">{cells}</div>'


def _per_class_table(per_class: dict[str, dict[str, Any]]) -> str:
    rows = [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in per_class.items()]
    return _table(["class", "precision", "recall", "F1", "support"], rows, [False, True, True, True, True])


def _training_section(metrics: dict[str, Any] | None, label_names: list[str], notes: list[str]) -> str:
    if metrics is None:
        notes.append("the run has no metrics.json (training did not finish): the training metrics are skipped")
        return _note(notes[-1])
    scalars = [(k, v) for k, v in sorted(metrics.items()) if isinstance(v, (int, float, str, bool))]
    out = _cards([(k, metrics[k]) for k in ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1") if k in metrics])
    # Two metric/value pairs per row: the list is long and the values are short.
    half = (len(scalars) + 1) // 2
    left, right = scalars[:half], scalars[half:] + [("", "")] * (half - len(scalars[half:]))
    out += _table(["metric", "value", "metric", "value"], [[*a, *b] for a, b in zip(left, right)], [False, True, False, True])
    per_class = metrics.get("test_per_class")
    if isinstance(per_class, dict):
        order = [n for n in label_names if n in per_class] + [n for n in per_class if n not in label_names]
        out += "<h3>Test split, per class (at the end of training)</h3>" + _per_class_table({n: per_class[n] for n in order})
    return out


def _curves_section(run_dir: Path, notes: list[str]) -> str:
    from .plots import learning_curves_png

    try:
        train_rows, eval_rows = RunDir(run_dir).read_log()
    except RunDirError as e:
        notes.append(f"no learning curves: {e}")
        return _note(notes[-1])
    return _img(learning_curves_png(train_rows, eval_rows, title=run_dir.resolve().name), "learning curves")


def _evaluation_section(ev: Any) -> str:
    from .plots import confusion_matrix_png

    m = ev.metrics
    errors = ev.errors()
    out = f"<p>Scored <code>{_esc(ev.source)}</code>: {m['n']:,} rows, {len(errors):,} misclassified.</p>"
    out += _cards([("accuracy", m["accuracy"]), ("macro-F1", m["macro_f1"]), ("mean loss", m["loss"]), ("rows", m["n"])])
    out += "<h3>Confusion matrix</h3>" + _img(confusion_matrix_png(m["confusion_matrix"], ev.label_names), "confusion matrix")
    out += "<h3>Per class</h3>" + _per_class_table(m["per_class"])
    out += "<h3>Errors</h3>"
    if not errors:
        return out + "<p>No misclassified rows.</p>"
    # A seeded sample shown in file order: representative, and the same page on every rebuild.
    sample = sorted(random.Random(0).sample(errors, min(ERROR_SAMPLE, len(errors))), key=lambda r: r["row"])
    out += f"<p>{len(sample)} of {len(errors):,} misclassified rows (random sample, in file order; row = 0-based data row).</p>"
    rows = [[r["row"], r["text"][:TEXT_LIMIT] + ("..." if len(r["text"]) > TEXT_LIMIT else ""), r["true"], r["predicted"], r["confidence"]]
            for r in sample]
    return out + _table(["row", "text", "true", "predicted", "confidence"], rows, [True, False, False, False, True])


def _evaluate(run_dir: Path, cfg: Any, label_names: list[str], data: str | None, overrides: dict[str, Any],
              settings: InferenceSettings, notes: list[str]) -> Any:
    """Score `data` (or the run's test file); None with a note when there is nothing to score."""
    from .data import data_config_for, read_labeled
    from .backends import load_classifier
    from .evaluate import evaluate_data

    path = data
    if path is None:
        path = cfg.data.test_file
        if not path:
            notes.append("the run's config has no data.test_file and no --data was given: evaluation sections skipped")
            return None
        if not Path(path).is_file():
            notes.append(f"the run's test file '{path}' is not found from here: evaluation sections skipped (pass --data)")
            return None
    data_cfg = data_config_for(cfg.data, overrides.get("format"), overrides.get("text_columns"), overrides.get("label_column"))
    labeled = read_labeled(path, data_cfg, label_names)  # before the model: bad data fails fast
    clf = load_classifier(run_dir, settings)
    return evaluate_data(clf, labeled, path)


def build_report(
    run_dir: str | Path,
    data: str | None = None,
    out: str | Path | None = None,
    *,
    format: str | None = None,
    text_columns: Sequence[str] | str | None = None,
    label_column: str | None = None,
    settings: InferenceSettings | None = None,
) -> ReportResult:
    """Write one self-contained HTML page about a trained run.

    Args:
        run_dir: directory written by `loraclf train`.
        data: labelled file to evaluate; default the run's data.test_file (skipped, with a note,
            when the config has none or it is not found).
        out: the HTML file (default RUN_DIR/report.html).
        format, text_columns, label_column: override the run's data settings for `data`.
        settings: how the evaluation runs the model (device, precision, backend, ...; default: InferenceSettings()).

    Returns:
        The ReportResult: path written, notes on skipped sections, the Evaluation if any.

    Raises:
        CheckpointError: `run_dir` is not a finished run.
        DataError: `data` (or the run's test file) cannot be read or scored.
        RunDirError: `out` is a directory.
    """
    run = RunDir(run_dir).check_loadable()
    run_dir = run.path
    path = Path(out) if out is not None else run_dir / REPORT_FILE
    if path.is_dir():
        raise RunDirError(f"--out '{path}' is a directory; give a file name such as {path / REPORT_FILE}")
    cfg = run.read_config()
    label_names = run.label_names()
    notes: list[str] = []
    metrics = run.read_metrics()
    overrides = {"format": format, "text_columns": text_columns, "label_column": label_column}
    ev = _evaluate(run_dir, cfg, label_names, data, overrides, settings or InferenceSettings(), notes)
    eval_html = _evaluation_section(ev) if ev is not None else _note(notes[-1])

    # Render the whole page in memory, then write it in one atomic step.
    sections = [
        ("Training metrics", _training_section(metrics, label_names, notes)),
        ("Learning curves", _curves_section(run_dir, notes)),
        ("Evaluation", eval_html),
        ("Config", f"<pre>{_esc(yaml.safe_dump(cfg.to_dict(), sort_keys=False))}</pre>"),
    ]
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    head = (
        f"<h1>loraclf run: {_esc(cfg.name)}</h1>"
        f'<p class="sub">{_esc(run_dir.resolve())} &middot; base model {_esc(cfg.model.name)} &middot; '
        f"classes: {_esc(', '.join(label_names))} &middot; report written {_esc(now)}</p>"
    )
    body = head + "".join(f'<section id="{_esc(t.lower().replace(" ", "-"))}"><h2>{_esc(t)}</h2>{s}</section>' for t, s in sections)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>loraclf report: {_esc(cfg.name)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )
    with atomic_write(path) as f:
        f.write(page)
    return ReportResult(path, notes, ev)
