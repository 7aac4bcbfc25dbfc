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


def last_error_line(result) -> str:  # noqa: ANN001 - a click Result
    """The `error:` line that ends a failed command whose run description came first (train prints one)."""
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert "Traceback" not in result.output and [ln for ln in lines if ln.startswith("error: ")] == lines[-1:], result.output
    return lines[-1]


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


# ---------------------------------------------------------------------------------------------
# 3. hostile YAML and JSON


def _alias_bomb(levels: int) -> str:
    """A "billion laughs": each level a list of nine aliases of the one before; the last one in a real field."""
    lines = ['x0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "hidden:\n" + "".join(f"  {line}\n" for line in lines) + f"lora:\n  target_modules: *a{levels - 1}\n"


@pytest.mark.parametrize("command", [["config", "show"], ["train", "--train-file", "t.csv"], ["tune", "--train-file", "t.csv"]])
def test_yaml_alias_bomb_is_refused_at_once(command: list[str], tmp_path: Path) -> None:
    """It refuses a 9-level alias bomb (10^9 values) in one short line, without expanding it."""
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_alias_bomb(9), encoding="utf-8")
    t0 = time.monotonic()
    r = CliRunner().invoke(app, [*command, "--config", str(cfg)])
    assert time.monotonic() - t0 < 20
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "expands to more than 10,000 values" in one_error_line(r) and len(r.output) < 400


def test_error_messages_quote_a_big_value_briefly(tmp_path: Path) -> None:
    """It names a wrong but allowed-size value (a 3-level bomb: 729 strings, 6 KB written out) in a message of a few hundred characters."""
    cfg = tmp_path / "big.yaml"
    cfg.write_text(_alias_bomb(3), encoding="utf-8")
    r = CliRunner().invoke(app, ["config", "show", "--config", str(cfg)])
    line = one_error_line(r)
    assert r.exit_code == 2 and len(line) < 1200 and "..." in line and "more" in line, line


@pytest.mark.parametrize(("text", "needle"), [
    ("train:\n  lr: 1.0e-3\nlora:\n  r: 4\ntrain:\n  epochs: 2\n", "the key 'train' is given twice"),
    ("lora:\n  r: 4\n  r: 8\n", "the key 'r' is given twice"),
    ("lora:\n  target_modules: " + "[" * 900 + "]" * 900 + "\n", "nests deeper than 32 levels"),
], ids=["duplicate-section", "duplicate-key", "900-levels"])
def test_duplicate_keys_and_deep_nesting_are_one_line(text: str, needle: str, tmp_path: Path) -> None:
    """It refuses a key given twice in one mapping (it silently replaced a whole section) and a 900-level list (a
    RecursionError traceback), naming the line."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text, encoding="utf-8")
    r = CliRunner().invoke(app, ["config", "show", "--config", str(cfg)])
    assert r.exit_code == 2 and needle in one_error_line(r) and "at line" in r.output, r.output


def test_yaml_merge_keys_still_override(tmp_path: Path) -> None:
    """It keeps YAML merge keys (`<<: *base`) working: a key after the merge overrides the merged one."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: &t\n  lr: 1.0e-3\n  epochs: 2\ntune:\n  study_name: s\n  fixed:\n    <<: *t\n    lr: 2.0e-3\n", encoding="utf-8")
    from loraclf.config.loader import load_yaml

    assert load_yaml(cfg.read_text())["tune"]["fixed"] == {"lr": 2.0e-3, "epochs": 2}


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000 + "\n", '{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "a"}\n'],
                         ids=["deep-array", "deep-field"])
def test_deeply_nested_json_data_is_one_line(body: str, tiny_model: Path, tmp_path: Path) -> None:
    """It refuses a data file nesting JSON 100,000 levels deep in one line (a RecursionError traceback)."""
    data = tmp_path / "d.jsonl"
    data.write_text(body, encoding="utf-8")
    r = CliRunner().invoke(app, ["train", "--train-file", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "too deeply to read" in one_error_line(r), r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


# ---------------------------------------------------------------------------------------------
# 4. a full disk


def _no_space(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - stands in for any writer
    raise OSError(28, os.strerror(28))


def _tiny_train_args(tiny_model: Path, train_csv: Path, out: Path) -> list[str]:
    return ["train", "--model", str(tiny_model), "--train-file", str(train_csv), "--out", str(out), *TINY_QUICK,
            "train.max_steps=4", "train.checkpoint_every_steps=2"]


def test_full_disk_while_checkpointing_is_one_line(tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """It reports a checkpoint write that finds the disk full (torch's writer half done) as one line naming the file,
    leaves no temp file; the run never reached a checkpoint, so `--resume` sends the user to the same command, and
    that starts the run again (each used to send the user to the other)."""
    import torch

    real_save = torch.save

    def half_then_full(obj, f, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        f.write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc] file write failed") from OSError(28, os.strerror(28))

    monkeypatch.setattr(torch, "save", half_then_full)
    run = tmp_path / "run"
    args = _tiny_train_args(tiny_model, ag_small["train"], run)
    r = CliRunner().invoke(app, args)
    line = last_error_line(r)
    assert r.exit_code == 2 and "the disk is full" in line and str(run / "checkpoint.pt") in line, r.output
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "labels.json"]
    r = _resume(run)  # stopped before its first checkpoint: --resume points to the same command, which works
    assert r.exit_code == 2 and "run the same `loraclf train` command without --resume" in one_error_line(r), r.output
    monkeypatch.setattr(torch, "save", real_save)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (run / "metrics.json").is_file()


@pytest.mark.parametrize("kind", [[], ["--merged"]], ids=["adapter", "merged"])
def test_full_disk_while_exporting_is_one_line(kind: list[str], trained_tiny_run: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """It reports an export that finds the disk full (shutil.Error from copytree, safetensors' own error) as one
    line, and leaves nothing behind."""
    import shutil as sh

    import transformers.modeling_utils

    def safetensors_full(*a, **k):  # noqa: ANN002, ANN003, ANN202 - what safetensors raises on a full disk
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(sh, "copyfile", _no_space)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", safetensors_full)
    r = CliRunner().invoke(app, ["export", str(trained_tiny_run), str(tmp_path / "exp"), *kind])
    assert r.exit_code == 2 and "the disk is full" in one_error_line(r), r.output
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def small_tmpfs(tmp_path: Path):  # noqa: ANN201 - yields a Path
    """A 100 KB tmpfs (root only; skipped where it cannot be mounted)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_real_full_disk_is_one_line(small_tmpfs: Path, trained_tiny_run: Path, tiny_model: Path,
                                      ag_small: dict[str, Path]) -> None:
    """On a real 100 KB file system, `train --out` (its 120 KB checkpoint) and `export --merged` each end in one
    line saying the disk is full, with no temp file left."""
    r = CliRunner().invoke(app, _tiny_train_args(tiny_model, ag_small["train"], small_tmpfs / "run"))
    assert r.exit_code == 2 and "the disk is full" in last_error_line(r), r.output
    assert sorted(p.name for p in (small_tmpfs / "run").iterdir()) == ["config.yaml", "labels.json"]
    shutil.rmtree(small_tmpfs / "run")
    (small_tmpfs / "fill").write_bytes(b"\0" * 60_000)
    for kind in ([], ["--merged"]):
        r = CliRunner().invoke(app, ["export", str(trained_tiny_run), str(small_tmpfs / "exp"), *kind])
        assert r.exit_code == 2 and "the disk is full" in one_error_line(r), r.output
        assert sorted(p.name for p in small_tmpfs.iterdir()) == ["fill"]


# ---------------------------------------------------------------------------------------------
# 5. inputs that are not plain files; 7. an AG News CSV saved with a BOM


def test_predict_refuses_a_fifo_at_once(trained_tiny_run: Path, tmp_path: Path) -> None:
    """It refuses a named pipe as --input in one line (it hung: the format sniffer read it, then it was opened
    again), pointing to stdin."""
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    r = subprocess.run([*LORACLF, "predict", str(trained_tiny_run), "-i", str(fifo)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "is a named pipe (FIFO), not a regular file" in one_error_line(r) and "-i -" in r.stderr


def test_ag_news_csv_with_a_bom_is_ag_news(ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It detects the AG News layout in a CSV that starts with a UTF-8 BOM (Excel's "CSV UTF-8") and reads its classes."""
    from loraclf.data import detect_format, read_texts
    from loraclf.config import DataConfig

    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + ag_small["test"].read_bytes())
    assert detect_format(str(bom)) == "ag_news"
    assert read_texts(str(bom), DataConfig()) == read_texts(str(ag_small["test"]), DataConfig())


# ---------------------------------------------------------------------------------------------
# 6. predict works through a big input a chunk at a time


def test_predict_classifies_and_writes_in_chunks(trained_tiny_run: Path, ag_small: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """It scores the input a chunk of rows at a time (never all at once), writes the same CSV as in one piece (IDs
    running on across chunks, kept columns aligned), and an interrupt mid-way leaves no output or temp file."""
    import loraclf.predict as P
    from loraclf.inference import Classifier

    args = ["predict", str(trained_tiny_run), "-i", str(ag_small["test"]), "--probabilities", "--keep-columns", "class",
            "--precision", "fp32"]
    whole = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "whole.csv")])
    assert whole.exit_code == 0, whole.output
    sizes: list[int] = []
    real = Classifier.predict_proba

    def spy(self, texts):  # noqa: ANN001, ANN202
        sizes.append(len(texts))
        if len(sizes) == 4 and (tmp_path / "stop").exists():
            raise KeyboardInterrupt
        return real(self, texts)

    monkeypatch.setattr(Classifier, "predict_proba", spy)
    monkeypatch.setattr(P, "PREDICT_CHUNK_ROWS", 64)
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "chunked.csv")])
    assert r.exit_code == 0, r.output
    assert sizes == [64, 64, 64, 8]  # 200 rows
    whole_rows = (tmp_path / "whole.csv").read_text(encoding="utf-8").splitlines()
    chunked_rows = (tmp_path / "chunked.csv").read_text(encoding="utf-8").splitlines()
    assert len(chunked_rows) == 201 and [row.split(",")[:3] for row in chunked_rows] == [row.split(",")[:3] for row in whole_rows]
    for a, b in zip(whole_rows[1:], chunked_rows[1:]):
        assert [float(x) for x in a.split(",")[3:]] == pytest.approx([float(x) for x in b.split(",")[3:]], abs=2e-6)
    (tmp_path / "stop").touch()
    sizes.clear()
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "stopped.csv")])
    assert r.exit_code == 130 and sizes == [64, 64, 64, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunked.csv", "stop", "whole.csv"]


# ---------------------------------------------------------------------------------------------
# 7. the running loss goes on across a resume


def test_first_log_line_after_a_resume_continues_the_running_loss(tiny_model_without_dropout: Path,
                                                                  ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It logs the same mean train loss at the first log step after a resume as the uninterrupted run (the mean
    restarted at the resume, covering only the steps after it)."""
    from helpers import stopped_and_resumed
    from loraclf.config import config_from_dict

    cfg = config_from_dict({"model": {"name": str(tiny_model_without_dropout)}, "data": {"train_file": str(ag_small["train"])}},
                           [*TINY_QUICK, "train.epochs=1", "train.max_steps=10", "train.log_every_steps=5",
                            "train.eval_every_steps=3", "model.precision=fp32", "lora.dropout=0"])
    full, resumed, full_losses, resumed_losses = stopped_and_resumed(cfg, tmp_path, stop_at_step=3)
    assert len(full_losses) == 2 and resumed_losses == pytest.approx(full_losses, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# 7. tune: a Ctrl-C'd trial says so and leaves no partial run


def test_interrupted_tune_trial_says_interrupted_and_leaves_no_run(tiny_model: Path, ag_small: dict[str, Path],
                                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It records a trial stopped by Ctrl-C with the error 'interrupted ...' (it was a `fail` with an empty error),
    removes its partial run directory, and queues it to run again."""
    import optuna

    import loraclf.train

    def interrupted(cfg, run_dir, **kwargs):  # noqa: ANN001, ANN003, ANN202 - train() as a Ctrl-C mid-run leaves it
        Path(run_dir).mkdir(parents=True)
        (Path(run_dir) / "config.yaml").write_text("name: partial\n", encoding="utf-8")
        raise KeyboardInterrupt

    monkeypatch.setattr(loraclf.train, "train", interrupted)
    study = tmp_path / "study"
    r = CliRunner().invoke(app, ["tune", "--model", str(tiny_model), "--train-file", str(ag_small["train"]), "--out", str(study),
                                 "--trials", "1", "--study-name", "s", *TINY_QUICK,
                                 "tune.space={train.lr: {type: float, low: 0.001, high: 0.01, log: true}}"])
    assert r.exit_code == 130, r.output
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{study / 'study.db'}").get_trials()
    first = trials[0]
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["error"].startswith("interrupted")
    assert [t.state for t in trials[1:]] == [optuna.trial.TrialState.WAITING]
    assert not (study / "trials" / "trial-0").exists()
