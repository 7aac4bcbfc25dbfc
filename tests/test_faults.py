"""Fault and bad-input battery: nothing a user types loses their data, runs foreign code, or ends in a traceback.

Every case runs the real CLI (in-process, through Click's runner) in a scratch directory that also holds
files the user cares about, and asserts: exit status 2, exactly one `error:` line, no traceback, and every
file that existed before is byte-identical afterwards (and no run directory was left half-made).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml
from typer.testing import CliRunner

from conftest import AG_NAMES, read_ag_rows
from helpers import LORACLF, TINY_QUICK
from loraclf.cli import app


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256 of its bytes), and every directory (-> "dir")."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Planted:
    """A crafted checkpoint: unpickling it would create a file (code execution on --resume)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (Path.write_text, (self.marker, "pwned"))


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


def _good_rows() -> list[tuple[str, str]]:
    rows = read_ag_rows("train.csv", 80, stride=13)
    return [(f"{r[1]} {r[2]}".replace(",", " ").replace('"', ""), AG_NAMES[int(r[0]) - 1]) for r in rows]


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch working directory with a user's files in it, the current directory during the case."""
    ws = tmp_path / "ws"
    (ws / "notes").mkdir(parents=True)
    (ws / "notes" / "important.txt").write_text("do not lose me\n", encoding="utf-8")
    _csv(ws / "train.csv", _good_rows())
    monkeypatch.chdir(ws)
    return ws


# Each case: (args builder given the workspace and the tiny model dir) -> (CLI args, expected text in the error line).
Case = Callable[[Path, Path], tuple[list[str], str]]


def _crafted_checkpoint(ws: Path, model: Path) -> tuple[list[str], str]:
    run = ws / "runs" / "evil"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: evil\n", encoding="utf-8")
    import torch

    torch.save({"weights": {}, "optimizer": {}, "scheduler": {}, "loop": {}, "rng": Planted(ws / "PWNED"), "config": {}},
               run / "checkpoint.pt")
    return ["--resume", str(run)], "cannot be read"


def _train(*extra: str) -> Case:
    def build(ws: Path, model: Path) -> tuple[list[str], str]:
        return ["--model", str(model), "--train-file", str(ws / "train.csv"), "train.progress=false", *extra], ""
    return build


def _expect(case: Case, needle: str) -> Case:
    def build(ws: Path, model: Path) -> tuple[list[str], str]:
        args, _ = case(ws, model)
        return args, needle
    return build


TRAIN_CASES: dict[str, Case] = {
    "resume-crafted-checkpoint": _crafted_checkpoint,
    "overwrite-current-dir": _expect(_train("--out", ".", "--overwrite"), "holds the current directory"),
    "overwrite-parent-of-cwd": _expect(_train("--out", "..", "--overwrite"), "holds the current directory"),
    "overwrite-non-run-dir": _expect(_train("--out", "notes", "--overwrite"), "only replaces a loraclf run"),
    "out-is-a-file": _expect(_train("--out", "notes/important.txt"), "is a file"),
    "out-under-a-file": _expect(_train("--out", "notes/important.txt/run"), "lies under the file"),
    "lr-nan": _expect(_train("--out", "runs/a", "train.lr=nan"), "train.lr"),
    "weight-decay-inf": _expect(_train("--out", "runs/a", "train.weight_decay=inf"), "train.weight_decay"),
    "max-grad-norm-nan": _expect(_train("--out", "runs/a", "train.max_grad_norm=.nan"), "train.max_grad_norm"),
    "max-length-over-positions": _expect(_train("--out", "runs/a", "model.max_length=1024"), "model.max_length=1024"),
    "unknown-key-suggests": _expect(_train("--out", "runs/a", "train.learning_rate=1e-3"), "did you mean `train.lr`"),
    "resume-with-ignored-options": lambda ws, m: (["--resume", str(ws / "runs" / "x"), "--epochs", "3", "lora.r=4"],
                                                  "--epochs, lora.r=4 would be ignored"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES), ids=list(TRAIN_CASES))
def test_train_fault_is_one_line_and_touches_nothing(case: str, workspace: Path, tiny_model: Path) -> None:
    """It exits 2 with one `error:` line, no traceback, every earlier file unchanged and no run directory made."""
    args, needle = TRAIN_CASES[case](workspace, tiny_model)
    before = snapshot(workspace)
    r = CliRunner().invoke(app, ["train", *args])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.output
    assert snapshot(workspace) == before
    assert not (workspace / "PWNED").exists(), "the crafted checkpoint ran code"


# The other commands, on conftest's finished tiny run (read-only) and files in the workspace.
def _blob(ws: Path) -> Path:
    (ws / "blob.csv").write_bytes(bytes(range(256)) * 64)  # binary: every byte value, NULs included
    return ws / "blob.csv"


def _million_labels(ws: Path) -> Path:
    rows = [(t, "0" if i % 2 else "1") for i, (t, _) in enumerate(_good_rows())] + [("one typo in the label", "1000000")]
    return _csv(ws / "ints.csv", rows)


def _one_class(ws: Path) -> Path:
    return _csv(ws / "one.csv", [(t, "World") for t, _ in _good_rows()])


OTHER_CASES: dict[str, Callable[[Path, Path, Path], tuple[list[str], str]]] = {
    "train-binary-file": lambda ws, run, m: (["train", "--model", str(m), "--train-file", str(_blob(ws)), "--out", "runs/b"],
                                             "is not a text file"),
    "train-million-class-typo": lambda ws, run, m: (["train", "--model", str(m), "--train-file", str(_million_labels(ws)),
                                                     "--out", "runs/i"], "1000000"),
    "predict-over-its-input": lambda ws, run, m: (["predict", str(run), "-i", "train.csv", "-o", "./train.csv"], "input"),
    "predict-binary-input": lambda ws, run, m: (["predict", str(run), "-i", str(_blob(ws)), "-o", "out.csv"], "is not a text file"),
    "predict-output-under-a-file": lambda ws, run, m: (["predict", str(run), "-i", "train.csv", "-o", "notes/important.txt/p.csv"],
                                                       "important.txt"),
    "predict-keep-missing-column": lambda ws, run, m: (["predict", str(run), "-i", "train.csv", "-o", "out.csv",
                                                        "--keep-columns", "id"], "'id'"),
    "evaluate-out-is-a-file": lambda ws, run, m: (["evaluate", str(run), "--data", "train.csv", "--text-columns", "text",
                                                   "--label-column", "label", "--out", "notes/important.txt"], "important.txt"),
    "evaluate-bad-device": lambda ws, run, m: (["evaluate", str(run), "--data", "train.csv", "--device", "banana"], "banana"),
    "export-overwrite-non-export": lambda ws, run, m: (["export", str(run), "notes", "--overwrite"], "only replaces a loraclf export"),
    "export-overwrite-current-dir": lambda ws, run, m: (["export", str(run), ".", "--overwrite"], "current directory"),
    "tune-one-class-data": lambda ws, run, m: (["tune", "--model", str(m), "--train-file", str(_one_class(ws)), "--out", "studies/s",
                                                "--trials", "1"], "class"),
    "serve-bad-device": lambda ws, run, m: (["serve", str(run), "--device", "banana"], "banana"),
    "serve-cuda-without-gpu": lambda ws, run, m: (["serve", str(run), "--device", "cuda:7"], "cuda:7"),
    "serve-bad-precision": lambda ws, run, m: (["serve", str(run), "--precision", "fp8"], "fp8"),
}


@pytest.mark.parametrize("case", list(OTHER_CASES), ids=list(OTHER_CASES))
def test_command_fault_is_one_line_and_touches_nothing(case: str, workspace: Path, trained_tiny_run: Path, tiny_model: Path) -> None:
    """It exits 2 with one `error:` line and no traceback; no earlier file changes, no run, study or output is left."""
    args, needle = OTHER_CASES[case](workspace, trained_tiny_run, tiny_model)
    before, run_before = snapshot(workspace), snapshot(trained_tiny_run)
    r = CliRunner().invoke(app, args)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.output
    assert snapshot(workspace) == before
    assert snapshot(trained_tiny_run) == run_before


def test_plain_pickle_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    """It refuses a checkpoint holding arbitrary pickled objects (torch.load weights_only), so nothing executes."""
    from loraclf.errors import CheckpointError
    from loraclf.rundir import RunDir
    from loraclf.train import load_checkpoint

    run = RunDir(tmp_path)
    with open(run.checkpoint_path, "wb") as f:
        pickle.dump({"weights": Planted(tmp_path / "PWNED")}, f)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(run)
    assert not (tmp_path / "PWNED").exists()


def test_read_only_out_is_one_line(workspace: Path, tiny_model: Path) -> None:
    """It refuses an --out it cannot write before loading anything (skipped as root, who may write anywhere)."""
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    locked = workspace / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = CliRunner().invoke(app, ["train", "--model", str(tiny_model), "--train-file", "train.csv", "--out", "locked/run"])
    finally:
        locked.chmod(0o700)
    assert r.exit_code == 2 and "permission denied" in r.output


# ---------------------------------------------------------------------------------------------
# Crashes: a kill -9 at the wrong moment loses nothing




def kill_when(cmd: list[str], ready: Callable[[], bool], cwd: Path | None = None, timeout: float = 240) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` holds (or fail if it ends or times out first)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "the run never reached the point to kill it at"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_killed_overwrite_keeps_the_old_run(trained_tiny_run: Path, tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It trains an --overwrite run beside the old one: killed mid-run, the old run is byte-identical; run again, it replaces it."""
    old = tmp_path / "run"
    shutil.copytree(trained_tiny_run, old)
    before = snapshot(old)
    cmd = [*LORACLF, "train", "--model", str(tiny_model), "--train-file", str(ag_small["train"]), "--out", str(old),
           "--overwrite", "--epochs", "3", *TINY_QUICK, "train.checkpoint_every_steps=2", "train.log_every_steps=1"]
    new = tmp_path / ".run.new"
    kill_when(cmd, lambda: (new / "checkpoint.pt").exists())
    assert snapshot(old) == before, "a killed --overwrite run damaged the run it was to replace"
    r = subprocess.run([*cmd[:-4], "train.epochs=1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert snapshot(old) != before and (old / "metrics.json").is_file()
    assert not new.exists() and not list(tmp_path.glob(".run.old-*")), "the replacement left a sibling behind"


@pytest.mark.slow
def test_resume_survives_a_torn_last_log_line(tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It resumes a killed run whose log.jsonl ends in half a line (power loss), and the log is whole again."""
    run = tmp_path / "run"
    cmd = [*LORACLF, "train", "--model", str(tiny_model), "--train-file", str(ag_small["train"]), "--out", str(run),
           "--epochs", "2", *TINY_QUICK, "train.checkpoint_every_steps=2", "train.log_every_steps=1"]
    kill_when(cmd, lambda: (run / "checkpoint.pt").exists() and (run / "log.jsonl").exists())
    with open(run / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 9999, "train_lo')
    r = subprocess.run([*LORACLF, "train", "--resume", str(run)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (run / "metrics.json").is_file()
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(row["step"] != 9999 for row in rows)


@pytest.mark.slow
def test_runs_load_from_another_directory(tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It stores absolute paths, so a run trained with relative paths resumes and predicts from anywhere."""
    home = tmp_path / "project"
    home.mkdir()
    shutil.copytree(tiny_model, home / "model")
    shutil.copy(ag_small["train"], home / "train.csv")
    run = home / "runs" / "rel"
    kill_when([*LORACLF, "train", "--model", "model", "--train-file", "train.csv", "--out", "runs/rel", "--epochs", "2", *TINY_QUICK,
               "train.checkpoint_every_steps=2"], lambda: (run / "checkpoint.pt").exists(), cwd=home)
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["model"]["name"] == str(home / "model") and cfg["data"]["train_file"] == str(home / "train.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([*LORACLF, "train", "--resume", str(run)], cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (elsewhere / "in.txt").write_text("markets rally\nteam wins the cup\n", encoding="utf-8")
    r = subprocess.run([*LORACLF, "predict", str(run), "-i", "in.txt", "-o", "out.csv"], cwd=elsewhere,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len((elsewhere / "out.csv").read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.parametrize(("args", "needle"), [(["train", "--epoch", "3"], "--epochs"), (["trian"], "Did you mean 'train'"),
                                              (["predict"], "Missing argument")], ids=["unknown-option", "unknown-command", "missing-argument"])
def test_usage_errors_are_one_line(args: list[str], needle: str) -> None:
    """It reports a mistyped option or command, or a missing argument, as one `error:` line with a close match, exit 2."""
    r = subprocess.run([*LORACLF, *args], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and not r.stdout
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
