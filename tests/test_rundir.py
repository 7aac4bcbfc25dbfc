"""Tests for loraclf.rundir: the run directory's layout, log handling and checks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loraclf.config import load_config
from loraclf.errors import CheckpointError, RunDirError
from loraclf.rundir import RunDir


def test_read_log_keeps_last_row_per_step_and_skips_a_cut_line(tmp_path: Path) -> None:
    """It sorts rows by step, keeps a resumed run's last row for a step, and ignores a final half-written line."""
    rows = [{"step": 20, "train_loss": 1.0}, {"step": 10, "train_loss": 1.5}, {"step": 10, "val_loss": 1.2, "val_accuracy": 0.5},
            {"step": 20, "train_loss": 0.9}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 30, "train_lo', encoding="utf-8")
    train, evals = RunDir(tmp_path).read_log()
    assert [(r["step"], r["train_loss"]) for r in train] == [(10, 1.5), (20, 0.9)]
    assert [(r["step"], r["val_accuracy"]) for r in evals] == [(10, 0.5)]


def test_truncate_log_survives_a_torn_last_line(tmp_path: Path) -> None:
    """It drops rows past the checkpoint's step and a torn last line (power loss), keeping the rest."""
    run = RunDir(tmp_path)
    for step in (10, 20, 30):
        run.append_log(step=step, train_loss=1.0 / step)
    with open(run.log_path, "a", encoding="utf-8") as f:
        f.write('{"step": 40, "tra')
    run.truncate_log_after(20)
    assert [r["step"] for r in run.log_rows()] == [10, 20]
    assert run.log_path.read_text(encoding="utf-8").endswith("}\n")


def test_a_damaged_line_before_the_end_is_an_error(tmp_path: Path) -> None:
    """It refuses a log whose damage is not a torn last line, naming the line."""
    (tmp_path / "log.jsonl").write_text('{"step": 1, "train_loss": 1}\nnot json\n{"step": 2, "train_loss": 1}\n', encoding="utf-8")
    with pytest.raises(RunDirError, match="line 2 is not JSON"):
        RunDir(tmp_path).read_log()


def test_config_labels_and_metrics_round_trip(tmp_path: Path) -> None:
    """It writes and reads back the config, the label names and the metrics; metrics mark a run finished."""
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    cfg = load_config(None, ["lora.r=4", "train.lr=3e-4"])
    run.write_config(cfg)
    run.write_labels(["neg", "pos"])
    assert run.read_config() == cfg
    assert run.label_names() == ["neg", "pos"]
    assert not run.is_finished() and run.read_metrics() is None
    run.write_metrics({"val_accuracy": 0.5})
    assert run.is_finished() and run.read_metrics() == {"val_accuracy": 0.5}


@pytest.mark.parametrize(
    ("present", "missing"),
    [((), "does not exist"), (("config.yaml",), "label names (labels.json) is missing"),
     (("config.yaml", "labels.json", "tokenizer/"), "adapter (adapter/adapter_config.json) is missing")],
)
def test_check_loadable_names_the_missing_piece(tmp_path: Path, present: tuple[str, ...], missing: str) -> None:
    """It says which part of an unfinished or foreign directory is missing."""
    d = tmp_path / "run"
    if present:
        d.mkdir()
    for rel in present:
        if rel.endswith("/"):
            (d / rel).mkdir()
        else:
            (d / rel).write_text("x")
    with pytest.raises(CheckpointError, match=missing.replace("(", r"\(").replace(")", r"\)")):
        RunDir(d).check_loadable()


def test_eval_dir_is_per_data_file(tmp_path: Path) -> None:
    """It puts each data file's evaluation under eval/<stem>, stdin under eval/stdin."""
    run = RunDir(tmp_path)
    assert run.eval_dir("data/test.csv") == tmp_path / "eval" / "test"
    assert run.eval_dir("-") == tmp_path / "eval" / "stdin"
