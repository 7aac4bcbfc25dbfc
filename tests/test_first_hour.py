"""A newcomer's own CSV through the real CLI: the data options of train and tune, warnings about label typos and rare
classes, errors before the heavy imports, the run's name and resolved config, stopped_early, predict's and tune's
output columns, and the help texts."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers import LORACLF, TINY_QUICK, one_error_line
from loraclf.cli import app
from loraclf.config import presets
from loraclf.data import label_warnings

# Tiny and fast: a few steps, short texts, no dropout to wait for; learning is not the point here.
FAST = [*TINY_QUICK, "model.max_length=16", "train.eval_batch_size=64", "train.checkpoint_every_steps=1000"]
WORDS = {"billing": "invoice charged refund payment bill", "weather": "rain sunny storm snow forecast",
         "sports": "match team player coach league"}


def _newcomer_csv(path: Path, rows_per_class: int = 30, typos: dict[int, str] | None = None) -> Path:
    """Columns id, message, category (three string labels); `typos` replaces the label of these data rows (1-based)."""
    rows = []
    for i in range(rows_per_class * len(WORDS)):
        label = list(WORDS)[i % len(WORDS)]
        rows.append([f"m{i + 1:03d}", " ".join(WORDS[label].split()[j % 5] for j in range(i % 3, i % 3 + 3)), label])
    for row, label in (typos or {}).items():
        rows[row - 1][2] = label
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "message", "category"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def newcomer_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`loraclf train` on the newcomer's CSV, columns by option, two mistyped labels, --out .../mine; 2 epochs at a
    learning rate too small to change a prediction, so the second evaluation is no better and patience 1 runs out
    exactly at the last step."""
    d = tmp_path_factory.mktemp("newcomer")
    data = _newcomer_csv(d / "data.csv", typos={5: "Weather", 7: "biling"})
    out = d / "runs" / "mine"
    r = subprocess.run([*LORACLF, "train", "--model", str(tiny_model), "--train-file", str(data), "--text-columns", "message",
                        "--label-column", "category", "--out", str(out), "--epochs", "2", *FAST, "train.lr=1e-12",
                        "train.head_lr=1e-12", "train.early_stopping_patience=1", "train.batch_size=32"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {"out": out, "data": data, "stderr": r.stderr, "metrics": json.loads((out / "metrics.json").read_text()),
            "config": yaml.safe_load((out / "config.yaml").read_text())}


# 1. train and tune take --format, --text-columns and --label-column


def test_train_takes_the_data_options(newcomer_run: dict) -> None:
    """`--text-columns message --label-column category` are data.text_columns and data.label_column."""
    data = newcomer_run["config"]["data"]
    assert data["text_columns"] == ["message"] and data["label_column"] == "category"
    assert newcomer_run["metrics"]["label_names"] == ["Weather", "biling", "billing", "sports", "weather"]


def test_tune_takes_the_data_options(tiny_model: Path, tmp_path: Path) -> None:
    """tune has the same options: a mistyped --label-column is reported by name, before any study exists."""
    data = _newcomer_csv(tmp_path / "data.csv")
    r = CliRunner().invoke(app, ["tune", "--model", str(tiny_model), "--train-file", str(data), "--format", "csv",
                                 "--text-columns", "message", "--label-column", "categry", "--out", str(tmp_path / "study")])
    assert r.exit_code == 2
    assert "label column 'categry' not found" in one_error_line(r) and "id, message, category" in one_error_line(r)
    assert not (tmp_path / "study").exists()


# 2. the start block warns about mistyped labels and rare classes


def test_start_block_names_mistyped_labels_and_their_rows(newcomer_run: dict) -> None:
    warnings = [ln for ln in newcomer_run["stderr"].splitlines() if ln.startswith("warning")]
    assert any("'Weather' (1 row: row 5) differs from 'weather' (29 rows) only by case" in w for w in warnings), warnings
    assert any("'biling' (1 row: row 7) looks like a misspelling of 'billing' (29 rows)" in w for w in warnings), warnings


def test_label_warnings_rare_classes_and_no_false_alarms() -> None:
    """A rare class is named with its rows; balanced look-alikes (label_1, label_2) and id labels are not typos."""
    labels = [0] * 40 + [1] * 40 + [2, 2, 2]
    (rare,) = label_warnings(labels, ["label_1", "label_2", "other"], names_from_data=True)
    assert rare.startswith("class 'other' has only 3 rows: rows 81, 82, 83")
    assert label_warnings([0] * 40 + [1] * 2, ["World", "world"], names_from_data=False)[0].startswith("class 'world'")
    assert label_warnings([0, 1] * 20, ["pos", "neg"], names_from_data=True) == []


# 3. config, file, column and model errors come before torch, transformers and peft load

NO_HEAVY_IMPORTS = """
import json, sys
from loraclf.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)}))
"""


@pytest.mark.parametrize("case, expected", [
    ("config-key", "data.bogus: unknown key"), ("missing-file", "does not exist"), ("missing-column", "text column 'msg' not found"),
    ("model-dir", "neither an existing directory nor a hub id"), ("hub-model", "not in the local cache")])
def test_bad_input_fails_before_the_heavy_imports(case: str, expected: str, tiny_model: Path, tmp_path: Path) -> None:
    data = _newcomer_csv(tmp_path / "data.csv")
    args = {"config-key": ["data.bogus=1"], "missing-file": ["--train-file", str(tmp_path / "nope.csv")],
            "missing-column": ["--text-columns", "msg"], "model-dir": ["--model", "./models/minilm"],
            "hub-model": ["--model", "no-such-org/no-such-model"]}[case]
    argv = ["train", "--model", str(tiny_model), "--train-file", str(data), "--text-columns", "message", "--label-column",
            "category", "--out", str(tmp_path / "run"), *args]
    r = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS, *argv], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == {"code": 2, "heavy": []}, r.stderr
    assert expected in one_error_line(r)


# 4. stopped_early only when the run stopped before its last step


def test_patience_at_the_last_step_is_no_early_stop(newcomer_run: dict) -> None:
    m = newcomer_run["metrics"]
    log = [json.loads(x) for x in (newcomer_run["out"] / "log.jsonl").read_text().splitlines()]
    evals = [x for x in log if "val_accuracy" in x]
    assert len(evals) == 2 and evals[0]["val_accuracy"] == evals[1]["val_accuracy"]  # patience 1 ran out at step 2 of 2
    assert m["global_step"] == evals[-1]["step"] and m["epochs_run"] == 2 and m["stopped_early"] is False


def test_a_real_early_stop_says_so(tiny_model: Path, tmp_path: Path) -> None:
    data = _newcomer_csv(tmp_path / "data.csv")
    r = CliRunner().invoke(app, ["train", "--model", str(tiny_model), "--train-file", str(data), "--text-columns", "message",
                                 "--label-column", "category", "--out", str(tmp_path / "run"), *FAST, "train.lr=1e-12",
                                 "train.head_lr=1e-12", "train.early_stopping_patience=1", "train.eval_every_steps=1"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["stopped_early"] is True and m["global_step"] == 2 < 6  # 81 rows in batches of 16: 6 steps an epoch


# 5. a run is named after its --out directory; a file run's config has no hub dataset


def test_run_is_named_after_its_out_directory(newcomer_run: dict) -> None:
    assert newcomer_run["config"]["name"] == "mine"
    assert newcomer_run["config"]["data"]["dataset"] is None
    assert newcomer_run["config"]["data"]["train_file"] == str(newcomer_run["data"])


def test_name_given_on_the_command_line_wins(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["config", "show", "name=exp1", "out=runs/x"])
    assert r.exit_code == 0 and yaml.safe_load(r.output)["name"] == "exp1"
    from loraclf.cli.checks import named_after_out

    assert named_after_out(Path("runs/mine"), [], "name") == "mine"
    assert named_after_out(Path("runs/mine"), ["name=exp1"], "name") is None
    assert named_after_out(Path("studies/s1"), [], "tune.study_name", given="other") is None


# 7. predict writes one ID column; tune's submission writes label names for string labels


def test_predict_keep_id_column_is_the_id(newcomer_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    r = CliRunner().invoke(app, ["predict", str(newcomer_run["out"]), "-i", str(newcomer_run["data"]), "-o", str(out),
                                 "--keep-columns", "id,message"])
    assert r.exit_code == 0, r.output
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "message", "Label"]
    assert [row[0] for row in rows[1:4]] == ["m001", "m002", "m003"]
    assert {row[2] for row in rows[1:]} <= set(newcomer_run["metrics"]["label_names"])


def test_tune_study_named_after_out_and_submission_has_names(tiny_model: Path, tmp_path: Path) -> None:
    data = _newcomer_csv(tmp_path / "data.csv")
    study = tmp_path / "studies" / "mystudy"
    r = CliRunner().invoke(app, ["tune", "--model", str(tiny_model), "--train-file", str(data), "--test-file", str(data),
                                 "--text-columns", "message", "--label-column", "category", "--out", str(study), "--trials", "1",
                                 "--train-best", *FAST, "train.max_steps=2", "tune.pruner=none",
                                 "tune.space={lora.r: {type: categorical, choices: [4]}}"])
    assert r.exit_code == 0, r.output
    assert "study: mystudy" in r.output
    with open(study / "submission.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 90 and {row["Label"] for row in rows} <= set(WORDS)


# 8. help texts


def test_help_texts() -> None:
    train_help = " ".join(CliRunner().invoke(app, ["train", "--help"]).output.split())
    assert all(name in train_help for name in presets())
    for flag in ("--text-columns", "--label-column", "--format"):
        assert flag in train_help
    tune_help = CliRunner().invoke(app, ["tune", "--help"]).output
    assert "bench/" not in tune_help and "--text-columns" in tune_help
    entries: dict[str, str] = {}
    for line in CliRunner().invoke(app, ["config", "list"]).output.splitlines():
        if line[:1].strip():  # a preset's first line; its wrapped continuation lines are indented
            name, _, text = line.partition(" ")
            entries[name] = text.strip()
        else:
            entries[name] += " " + line.strip()
    assert set(entries) == set(presets())
    for name, text in entries.items():
        assert text.endswith("."), (name, text)  # whole sentences, not cut mid-way
