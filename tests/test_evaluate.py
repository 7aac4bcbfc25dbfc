"""`loraclf evaluate`: metrics against a recount, the files it writes, column options, bad input."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import AG_NAMES, read_ag_rows
from helpers import one_error_line
from loraclf.cli import app
from loraclf.config import DataConfig
from loraclf.errors import DataError
from loraclf.data import data_config_for
from loraclf.evaluate import Evaluation, errors_csv
from loraclf.metrics import compute_metrics, format_metrics

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def true_labels(path: Path) -> list[int]:
    """Label ids of an AG News layout CSV (class 1 is id 0)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [int(r[0]) - 1 for r in csv.reader(f)]


# ---------------------------------------------------------------------------------------------
# Pure helpers (no model)


def test_errors_lists_misclassified_rows_in_file_order_with_confidence() -> None:
    """It lists exactly the rows whose argmax differs from the label, with the predicted class's probability."""
    logits = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 5.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    ev = Evaluation("x.csv", ["a", "b", "c", "d"], labels, logits, ["neg", "pos"], compute_metrics(logits, labels, ["neg", "pos"]))
    errs = ev.errors()
    assert [e["row"] for e in errs] == [1, 2]
    assert errs[0] == {"row": 1, "text": "b", "true": "neg", "predicted": "pos", "confidence": pytest.approx(np.exp(2) / (1 + np.exp(2)))}
    rows = list(csv.DictReader(errors_csv(errs).splitlines()))
    assert [r["text"] for r in rows] == ["b", "c"] and rows[1]["predicted"] == "neg"
    assert ev.metrics["accuracy"] == 0.5


def test_format_metrics_prints_one_line_per_class() -> None:
    """It prints accuracy, macro-F1, loss and a precision/recall/F1/support line for every class."""
    logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
    text = format_metrics(compute_metrics(logits, [0, 1, 2, 1], ["a", "bb", "c"]))
    assert "accuracy   0.7500" in text
    assert [ln.split()[0] for ln in text.splitlines()[-3:]] == ["a", "bb", "c"]
    assert text.splitlines()[-2].split()[-1] == "2"  # support of class bb


def test_data_config_for_applies_only_given_options() -> None:
    """It keeps the run's data settings and replaces only the options given (comma-separated columns split)."""
    base = DataConfig(text_columns=["text"], label_column="label", format="auto")
    cfg = data_config_for(base, text_columns="title, body", label_column="y")
    assert cfg.text_columns == ["title", "body"] and cfg.label_column == "y" and cfg.format == "auto"
    assert data_config_for(base) == base
    with pytest.raises(DataError, match="--text-columns is empty"):
        data_config_for(base, text_columns=" , ")


# ---------------------------------------------------------------------------------------------
# With the trained tiny run


def test_evaluate_writes_metrics_picture_and_errors(trained_tiny_run: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It prints the table and writes metrics.json (all fields), a PNG confusion matrix and the error rows."""
    out = tmp_path / "ev"
    r = runner.invoke(app, ["evaluate", str(trained_tiny_run), "--data", str(ag_small["test"]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "macro_f1" in r.stdout and "Sci/Tech" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) >= {"accuracy", "macro_f1", "loss", "n", "per_class", "confusion_matrix", "label_names", "n_errors"}
    assert m["n"] == 200 and m["label_names"] == AG_NAMES and set(m["per_class"]) == set(AG_NAMES)
    assert sum(c["support"] for c in m["per_class"].values()) == 200
    assert np.asarray(m["confusion_matrix"]).sum() == 200
    assert (out / "confusion_matrix.png").read_bytes()[:8] == PNG_MAGIC
    errors = list(csv.DictReader((out / "errors.csv").open(encoding="utf-8")))
    assert len(errors) == m["n_errors"] == round(200 * (1 - m["accuracy"]))
    assert all(e["true"] != e["predicted"] and 0 < float(e["confidence"]) <= 1 for e in errors)
    assert errors[0].keys() == {"row", "text", "true", "predicted", "confidence"}


def test_evaluate_accuracy_equals_recount_from_predict(trained_tiny_run: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It reports the accuracy one gets by comparing predict's output with the file's labels."""
    r = runner.invoke(app, ["evaluate", str(trained_tiny_run), "--data", str(ag_small["test"]), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", str(ag_small["test"]), "--output", str(tmp_path / "p.csv"), "--ids"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    truth = true_labels(ag_small["test"])
    assert [int(x["ID"]) for x in rows] == list(range(len(truth)))
    recount = sum(int(x["Label"]) == t for x, t in zip(rows, truth)) / len(truth)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["accuracy"] == pytest.approx(recount, abs=1e-12)
    errors = list(csv.DictReader((tmp_path / "ev" / "errors.csv").open(encoding="utf-8")))
    assert [int(e["row"]) for e in errors] == [i for i, (x, t) in enumerate(zip(rows, truth)) if int(x["Label"]) != t]


def test_evaluate_defaults_to_run_eval_dir_and_takes_column_options(trained_tiny_run: Path, tmp_path: Path) -> None:
    """It reads a headed CSV through --format/--text-columns/--label-column and writes RUN_DIR/eval/<stem>."""
    run = tmp_path / "run"
    shutil.copytree(trained_tiny_run, run)
    data = tmp_path / "headlines.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["headline", "body", "category"])
        for cls, title, desc in read_ag_rows("test.csv", 40, stride=11):
            w.writerow([title, desc, AG_NAMES[int(cls) - 1]])
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--format", "csv", "--text-columns", "headline,body",
                            "--label-column", "category"])
    assert r.exit_code == 0, r.output
    m = json.loads((run / "eval" / "headlines" / "metrics.json").read_text())
    assert m["n"] == 40 and m["data"] == str(data)


@pytest.mark.parametrize(
    "case",
    ["not_a_dir", "no_adapter", "no_labels", "no_tokenizer", "no_label_column", "no_text_column", "empty", "not_utf8", "header_only"],
)
def test_evaluate_bad_input_exits_2_with_one_line_and_writes_nothing(case: str, trained_tiny_run: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It rejects a non-run directory, a run missing a part, and unusable data: exit 2, one line, no output files."""
    run = tmp_path / "run"
    shutil.copytree(trained_tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    data = ag_small["test"]
    missing = {"no_adapter": "adapter", "no_labels": "labels.json", "no_tokenizer": "tokenizer"}
    if case == "not_a_dir":
        run = tmp_path / "nope"
    elif case in missing:
        target = run / missing[case]
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    elif case == "no_label_column":
        data = tmp_path / "d.csv"
        data.write_text("text,topic\nhello,1\n", encoding="utf-8")
    elif case == "no_text_column":
        data = tmp_path / "d.csv"
        data.write_text("body,label\nhello,1\n", encoding="utf-8")
    elif case == "empty":
        data = tmp_path / "d.csv"
        data.write_text("", encoding="utf-8")
    elif case == "not_utf8":
        data = tmp_path / "d.csv"
        data.write_bytes(b"text,label\ncaf\xe9,1\n")
    elif case == "header_only":
        data = tmp_path / "d.csv"
        data.write_text("text,label\n", encoding="utf-8")
    out = tmp_path / "ev"
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--out", str(out)])
    assert r.exit_code == 2, r.output
    line = one_error_line(r)
    assert {"not_a_dir": "does not exist", "no_adapter": "adapter", "no_labels": "label names", "no_tokenizer": "tokenizer",
            "no_label_column": "label column 'label'", "no_text_column": "text column 'text'", "empty": "empty",
            "not_utf8": "UTF-8", "header_only": "no data rows"}[case] in line
    assert not out.exists()
    assert not (run / "eval").exists()


def test_evaluate_out_that_is_a_file_exits_2(trained_tiny_run: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It refuses an --out that names a file, leaving the file as it was."""
    out = tmp_path / "taken"
    out.write_text("mine", encoding="utf-8")
    r = runner.invoke(app, ["evaluate", str(trained_tiny_run), "--data", str(ag_small["test"]), "--out", str(out)])
    assert r.exit_code == 2
    assert "is a file" in one_error_line(r)
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("case", ["under_file", "read_only_out", "read_only_parent", "default_in_read_only_run"])
def test_evaluate_unwritable_out_exits_2_before_the_model_loads(case: str, trained_tiny_run: Path, ag_small: dict[str, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """It refuses an --out under a file or in a read-only place (its own eval dir included) with one line, before loading the model."""
    import os

    from loraclf.inference import Classifier

    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(Classifier, "from_run_dir", boom)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    run = trained_tiny_run
    ro = tmp_path / "ro"
    ro.mkdir()
    out: Path | None = {"under_file": tmp_path / "file" / "ev", "read_only_out": ro, "read_only_parent": ro / "ev"}.get(case)
    if case == "default_in_read_only_run":
        run = tmp_path / "run"
        shutil.copytree(trained_tiny_run, run, ignore=shutil.ignore_patterns("eval"))
        ro = run
    ro.chmod(0o555)
    if os.geteuid() == 0:  # modes do not stop root: tell os.access what they would say to anyone else
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro and mode & os.W_OK else real(p, mode, **kw))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(ag_small["test"]), *(["--out", str(out)] if out else [])])
    ro.chmod(0o755)
    assert r.exit_code == 2, r.output
    line = one_error_line(r)
    assert {"under_file": f"lies under '{tmp_path / 'file'}', which is a file", "read_only_out": f"--out '{ro}' is not writable",
            "read_only_parent": f"would be created in '{ro}', which is not writable",
            "default_in_read_only_run": "pass --out with a directory you can write to"}[case] in line
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_evaluate_write_error_is_one_line(trained_tiny_run: Path, ag_small: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It turns an OS error while writing the results (a disk gone read-only, say) into one line and exit 2."""
    import errno

    import loraclf.evaluate

    def fail(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(loraclf.evaluate, "write_evaluation", fail)
    r = runner.invoke(app, ["evaluate", str(trained_tiny_run), "--data", str(ag_small["test"]), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 2, r.output
    assert "Read-only file system" in one_error_line(r)
