"""A user's machine at its worst: two writers of one run, data changed under a paused run, hostile YAML,
a full disk, a FIFO as input, huge inputs. Each case runs the real CLI and must end in one `error:` line
(or do the right thing), never a traceback or a damaged run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import LORACLF, TINY_QUICK, one_error_line
from loraclf.cli import app
from loraclf.errors import RunDirError
from loraclf.io import DirLock


def _start(cmd: list[str], ready, timeout: float = 240) -> subprocess.Popen:  # noqa: ANN001 - a predicate
    """Start `cmd` and return once `ready()` holds (the process still running)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was ready: {proc.stderr.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the run never got ready")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


# ---------------------------------------------------------------------------------------------
# 1. one writer per run directory


def test_dir_lock_refuses_a_second_holder_and_cleans_up(tmp_path: Path) -> None:
    """It refuses a second lock on the same directory (naming this pid), and leaves no lock file or made parent behind."""
    target = tmp_path / "a" / "b" / "run"
    first = DirLock(target).acquire()
    with pytest.raises(RunDirError, match=f"in use by another loraclf process \\(pid {os.getpid()}"):
        DirLock(target).acquire()
    first.release()
    assert not (tmp_path / "a").exists()
    with DirLock(target):
        assert (target.parent / ".run.lock").is_file()
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_a_second_writer_of_a_run_is_refused(trained_tiny_run: Path, tiny_model: Path, ag_small: dict[str, Path],
                                             tmp_path: Path) -> None:
    """While one `train` writes a run (new, or an --overwrite replacement), a second `train` of the same --out,
    with or without --overwrite, and a `--resume` of it are each refused in one line, and the first run's files
    stay its own."""
    base = [*LORACLF, "train", "--model", str(tiny_model), "--train-file", str(ag_small["train"]), "--epochs", "50",
            *TINY_QUICK, "train.checkpoint_every_steps=2"]
    old = tmp_path / "old"
    shutil.copytree(trained_tiny_run, old)
    new = tmp_path / ".old.new"
    first = _start([*base, "--out", str(old), "--overwrite"], lambda: (new / "checkpoint.pt").exists())
    try:
        for extra in (["--out", str(old), "--overwrite"], ["--out", str(old)]):
            r = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=300)
            assert r.returncode == 2 and "in use by another loraclf process" in one_error_line(r), r.stderr
        assert (new / "checkpoint.pt").is_file() and (new / "config.yaml").is_file(), "the replacement was deleted"
        assert first.poll() is None
    finally:
        _stop(first)
    fresh = tmp_path / "fresh"
    first = _start([*base, "--out", str(fresh)], lambda: (fresh / "checkpoint.pt").exists())
    try:
        for extra in (["--out", str(fresh)], ["--resume", str(fresh)]):
            cmd = [*LORACLF, "train", *extra] if extra[0] == "--resume" else [*base, *extra]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            assert r.returncode == 2 and "in use by another loraclf process" in one_error_line(r), r.stderr
        assert first.poll() is None
    finally:
        _stop(first)
    rows = (fresh / "log.jsonl").read_text(encoding="utf-8").splitlines()
    assert len({json.loads(x)["step"] for x in rows if "train_loss" in x}) == len([x for x in rows if "train_loss" in x])


# ---------------------------------------------------------------------------------------------
# 2. a resume reads the same files the run started with


class _Stop(Exception):
    pass


def _stopped_run(tiny_model: Path, train_csv: Path, out: Path, *extra: str) -> Path:
    """A tiny run stopped by an exception at its first evaluation (after a checkpoint), as a crash leaves it."""
    from loraclf.config import config_from_dict
    from loraclf.train import train

    def stop(step: int, metrics: dict) -> None:
        raise _Stop

    cfg = config_from_dict({"model": {"name": str(tiny_model)}, "data": {"train_file": str(train_csv)}},
                           [*TINY_QUICK, "train.epochs=1", "train.max_steps=6", "train.eval_every_steps=3", *extra])
    with pytest.raises(_Stop):
        train(cfg, out, console=False, on_eval=stop)
    assert (out / "checkpoint.pt").is_file()
    return out


def _resume(run: Path):  # noqa: ANN202 - a click Result
    return CliRunner().invoke(app, ["train", "--resume", str(run)])


def test_resume_refuses_changed_data_and_run_files(tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It refuses to resume when the train file grew or gained a class, or labels.json / config.yaml were edited,
    naming the file; with the files restored the resume finishes."""
    train_csv = tmp_path / "train.csv"
    shutil.copy(ag_small["train"], train_csv)
    run = _stopped_run(tiny_model, train_csv, tmp_path / "run")
    original = train_csv.read_bytes()
    grown = original + b"".join(original.splitlines(keepends=True)[:30])
    new_class = original + b'"9","a new class","never seen"\n'
    for changed in (grown, new_class):
        train_csv.write_bytes(changed)
        r = _resume(run)
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert f"data.train_file '{train_csv}' changed since run" in r.output and "restore that file" in r.output
    train_csv.write_bytes(original)
    for name, edit in (("labels.json", lambda t: t.replace("World", "Earth")), ("config.yaml", lambda t: t + "\n# edited\n")):
        path = run / name
        saved = path.read_text(encoding="utf-8")
        path.write_text(edit(saved), encoding="utf-8")
        r = _resume(run)
        assert r.exit_code == 2 and f"'{path}' was changed or removed since the last checkpoint" in r.output, r.output
        path.write_text(saved, encoding="utf-8")
    r = _resume(run)
    assert r.exit_code == 0, r.output
    assert (run / "metrics.json").is_file()
