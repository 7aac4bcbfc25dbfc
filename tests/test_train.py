"""`loraclf train`: pure helpers, end-to-end runs of the real CLI, bad input, kill -9 and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import LORACLF, TINY_QUICK
from loraclf.cli import app
from loraclf.train import lr_factor

def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LORACLF, *args], capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Pure helpers


def test_lr_factor_warmup_then_cosine_to_zero() -> None:
    """It rises linearly over warmup, peaks at 1 and decays to 0 at the end."""
    assert lr_factor(0, 10, 100, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, "cosine") == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(55, 10, 100, "linear") == pytest.approx(0.5)
    assert lr_factor(70, 0, 100, "constant") == 1.0


# ---------------------------------------------------------------------------------------------
# End to end with the tiny random RoBERTa: conftest's `trained_tiny_run` (2 epochs, a test file,
# validation every 10 steps), trained once per session and only read here.


def test_train_writes_a_complete_run_directory(trained_tiny_run: Path) -> None:
    """It writes the adapter (with the head), tokenizer, labels, config, metrics and log."""
    for rel in ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer_config.json",
                "labels.json", "config.yaml", "metrics.json", "log.jsonl"]:
        assert (trained_tiny_run / rel).exists(), rel
    assert json.loads((trained_tiny_run / "labels.json").read_text())["label_names"] == ["World", "Sports", "Business", "Sci/Tech"]
    from safetensors import safe_open

    with safe_open(str(trained_tiny_run / "adapter/adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("classifier" in k for k in keys), "the trained head must be saved with the adapter"
    assert any("lora_A" in k for k in keys)


def test_metrics_json_has_the_promised_fields(trained_tiny_run: Path) -> None:
    """It records validation, test, parameter, time, throughput and memory figures."""
    m = json.loads((trained_tiny_run / "metrics.json").read_text())
    for k in ["val_accuracy", "val_loss", "val_macro_f1", "test_accuracy", "trainable_params", "total_params",
              "train_seconds", "train_samples_per_s", "peak_memory_mb"]:
        assert k in m, k
    assert 0 <= m["val_accuracy"] <= 1 and 0 <= m["test_accuracy"] <= 1
    assert 0 < m["trainable_params"] < m["total_params"]
    assert m["train_samples_per_s"] > 0 and m["peak_memory_mb"] > 0


def test_log_has_steps_and_evaluations(trained_tiny_run: Path) -> None:
    """It logs train loss every few steps and validation at every N steps and epoch end."""
    rows = [json.loads(x) for x in (trained_tiny_run / "log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_accuracy" in r]
    trains = [r for r in rows if "train_loss" in r]
    assert len(evals) >= 3  # every 10 steps plus the epoch ends
    assert trains and all({"step", "epoch", "lr"} <= r.keys() for r in trains)


def test_adapter_loads_with_peft(trained_tiny_run: Path, tiny_model: Path) -> None:
    """It saves an adapter that PeftModel.from_pretrained loads, head included: every saved LoRA and head tensor is in the model."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_model), num_labels=4)  # a fresh random head
    model = PeftModel.from_pretrained(base, str(trained_tiny_run / "adapter"))
    saved = load_file(str(trained_tiny_run / "adapter" / "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(model)
    assert sorted(loaded) == sorted(saved)
    assert any("classifier" in k for k in loaded) and any("lora_A" in k for k in loaded)
    for key, tensor in saved.items():
        torch.testing.assert_close(loaded[key], tensor, rtol=0, atol=0, msg=key)


def test_refuses_to_overwrite_without_flag(trained_tiny_run: Path, tiny_model: Path, ag_small: dict[str, Path]) -> None:
    """It will not replace an existing run unless told to, and leaves the run as it was."""
    before = {p: p.stat().st_mtime_ns for p in trained_tiny_run.rglob("*")}
    r = CliRunner().invoke(app, ["train", "--model", str(tiny_model), "--train-file", str(ag_small["train"]), "--out", str(trained_tiny_run)])
    assert r.exit_code == 2
    assert "already exists; pass --overwrite" in r.output
    assert {p: p.stat().st_mtime_ns for p in trained_tiny_run.rglob("*")} == before


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, no run directory


@pytest.mark.parametrize(
    "make_args, expected",
    [
        (lambda d, m: ["--train-file", str(d / "missing.csv")], "does not exist"),
        (lambda d, m: ["--train-file", str(_write(d / "empty.csv", ""))], ""),
        (lambda d, m: ["--train-file", str(_write(d / "cols.csv", "a,b\nx,1\ny,2\n" * 5))], "data.text_columns"),
        (lambda d, m: ["--train-file", str(_write(d / "one.csv", "text,label\n" + "hello there,1\n" * 20))], "class"),
        (lambda d, m: ["--train-file", str(_write(d / "blank.csv", "text,label\n" + "a b,0\nc d,1\n" * 10 + " ,1\n"))], "empty"),
        (lambda d, m: ["--train-file", str(_write(d / "latin1.csv", b"text,label\ncaf\xe9,0\nbar,1\n" * 10))], "UTF-8"),
        (lambda d, m: ["--train-file", str(_write(d / "ok.csv", "text,label\n" + "a b,x\nc d,y\n" * 10)), "--validation-file",
                       str(_write(d / "val.csv", "text,label\na,x\nb,z\n"))], "'z'"),
        (lambda d, m: ["--train-file", str(_write(d / "ok2.csv", "text,label\n" + "a b,x\nc d,y\n" * 10)), "lora.rank=8"], "unknown key"),
        (lambda d, m: ["--train-file", str(_write(d / "ok3.csv", "text,label\n" + "a b,x\nc d,y\n" * 10)), "train.epochs=two"], "wrong type"),
        (lambda d, m: ["--train-file", str(_write(d / "ok4.csv", "text,label\n" + "a b,x\nc d,y\n" * 10)), "--model", str(d / "no-model")], "--model"),
        (lambda d, m: ["--train-file", str(_write(d / "ok5.csv", "text,label\n" + "a b,x\nc d,y\n" * 10)), "--model", "nobody/no-such-model-xyz"], "hub"),
    ],
    ids=["missing-file", "empty-file", "unknown-column", "one-class", "empty-text", "not-utf8", "unknown-label", "unknown-key",
         "wrong-type", "bad-model-dir", "hub-unreachable"],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(make_args, expected, tmp_path: Path, tiny_model: Path) -> None:
    """It fails with one `error:` line and status 2, and leaves no run directory behind."""
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "run"
    args = make_args(data, tiny_model)
    if "--model" not in args:
        args += ["--model", str(tiny_model)]
    r = CliRunner().invoke(app, ["train", *args, "--out", str(out), "train.progress=false"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert expected in lines[0]
    assert not out.exists()


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# ---------------------------------------------------------------------------------------------
# Kill -9 mid-epoch, resume, same number of optimizer steps


@pytest.mark.slow
def test_sigkill_then_resume_finishes_with_same_steps(tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It resumes a run killed with SIGKILL mid-epoch and takes as many steps as an uninterrupted run.

    It trains its own two runs rather than reuse `trained_tiny_run`: it kills and resumes one, and needs
    frequent checkpoints and a log line per step to compare them.
    """
    common = ["--model", str(tiny_model), "--train-file", str(ag_small["train"]), "--epochs", "2", *TINY_QUICK,
              "train.checkpoint_every_steps=3", "train.log_every_steps=1"]
    full = tmp_path / "full"
    r = run_cli("train", *common, "--out", str(full))
    assert r.returncode == 0, r.stderr
    expected = json.loads((full / "metrics.json").read_text())

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*LORACLF, "train", *common, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for a checkpoint part-way through the first epoch
        log = killed / "log.jsonl"
        if (killed / "checkpoint.pt").exists() and log.exists() and len(log.read_text().splitlines()) >= 7:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    steps_at_kill = max(json.loads(x)["step"] for x in (killed / "log.jsonl").read_text().splitlines())
    assert steps_at_kill < expected["global_step"]

    r = run_cli("train", "--resume", str(killed))
    assert r.returncode == 0, r.stderr
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["global_step"] == expected["global_step"]
    steps = [json.loads(x)["step"] for x in (killed / "log.jsonl").read_text().splitlines() if "train_loss" in x]
    assert steps == list(range(1, expected["global_step"] + 1)), "log must hold each step once after resume"
    assert resumed["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-3)


def test_resume_of_missing_or_finished_run(trained_tiny_run: Path, tmp_path: Path) -> None:
    """It says there is nothing to resume."""
    r = CliRunner().invoke(app, ["train", "--resume", str(trained_tiny_run)])
    assert r.exit_code == 2 and "already finished" in r.output
    r = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "does not exist" in r.output


# ---------------------------------------------------------------------------------------------
# Real learning with the pretrained MiniLM


@pytest.mark.slow
def test_minilm_learns_ag_news(minilm_run: Path) -> None:
    """The real MiniLM, trained with the default preset for one epoch on 3,000 AG News rows (`minilm_run`), reaches
    >= 0.85 accuracy on the first 1,000 test rows."""
    m = json.loads((minilm_run / "metrics.json").read_text())
    assert m["test_accuracy"] >= 0.85, m


def test_one_process_trains_runs_of_different_precisions(tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """The Python API (and tune's in-process trials) may train several runs in one process: each gets its own precision."""
    from loraclf.config import config_from_dict
    from loraclf.train import train

    for precision in ("fp32", "bf16", "fp32"):
        cfg = config_from_dict({}, [f"model.name={tiny_model}", f"data.train_file={ag_small['train']}", "train.max_steps=2",
                                    f"model.precision={precision}", *TINY_QUICK])
        assert train(cfg, tmp_path / precision, overwrite=True, console=False)["precision"] == precision


def test_progress_bar_in_a_log_file_refreshes_at_the_log_interval(tiny_model: Path, ag_small: dict[str, Path], tmp_path: Path,
                                                                  capfd: pytest.CaptureFixture) -> None:
    """When stderr is not a terminal (here pytest's capture, as a log file) the bar is drawn at its start, at most every
    PROGRESS_LOG_SECONDS and at its end: not once per step or per logged loss, as tqdm's 0.1 s interval drew it."""
    from loraclf.config import config_from_dict
    from loraclf.train import train
    from loraclf.train import console as recipe  # where the progress bar is made

    assert recipe.PROGRESS_LOG_SECONDS >= 10
    cfg = config_from_dict({}, [f"model.name={tiny_model}", f"data.train_file={ag_small['train']}", "train.max_steps=60",
                                *TINY_QUICK, "train.progress=true", "train.log_every_steps=2"])
    started = time.monotonic()
    train(cfg, tmp_path / "run", overwrite=True, console=False)
    seconds = time.monotonic() - started
    bars = [part for part in capfd.readouterr().err.replace("\n", "\r").split("\r") if part.startswith("train:")]
    assert bars and bars[-1].startswith("train: 100%") and "60/60" in bars[-1], bars[-3:]
    assert len(bars) <= 3 + int(seconds // recipe.PROGRESS_LOG_SECONDS), (seconds, bars)
