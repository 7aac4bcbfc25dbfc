"""Data-parallel training: `loraclf train --nproc 2` with gloo on CPU (torchrun under the hood)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import read_ag_rows, write_ag_csv
from helpers import LORACLF, TINY_QUICK
from loraclf.distributed import strip_nproc


def test_strip_nproc_removes_both_spellings() -> None:
    """It drops --nproc N and --nproc=N so the children do not relaunch."""
    assert strip_nproc(["train", "--nproc", "2", "--epochs", "1"]) == ["train", "--epochs", "1"]
    assert strip_nproc(["train", "--nproc=4", "x=1"]) == ["train", "x=1"]


@pytest.fixture(scope="module")
def split_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ddp-data")
    return {
        "train": write_ag_csv(d / "train.csv", read_ag_rows("train.csv", 320, stride=29)),
        "val": write_ag_csv(d / "val.csv", read_ag_rows("train.csv", 80, stride=31)[::-1]),
    }


def _train(tiny_model: Path, files: dict[str, Path], out: Path, nproc: int, *extra: str) -> dict:
    # No dropout: its random masks would differ between 1 and 2 processes, whose losses are compared.
    r = subprocess.run([*LORACLF, "train", "--nproc", str(nproc), "--model", str(tiny_model), "--train-file", str(files["train"]),
                        "--validation-file", str(files["val"]), "--epochs", "1", "--out", str(out), *TINY_QUICK, "lora.dropout=0.0", *extra],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one_process(tiny_model: Path, split_files: dict[str, Path], tmp_path: Path) -> None:
    """It writes one run directory from 2 gloo processes, counts each validation example once, and
    reaches the same validation loss as 1 process with the same global batch and seed."""
    two = _train(tiny_model, split_files, tmp_path / "two", 2)
    one = _train(tiny_model, split_files, tmp_path / "one", 1)
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["global_step"] == one["global_step"] == 20  # 320 rows / 16 per global batch
    assert two["n_validation"] == 80
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=2e-3)

    # Only rank 0 wrote: one run dir, one log with each step once, and no stray directories beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if "train_loss" in x]
    assert steps == sorted(set(steps))

    # The reported validation accuracy equals a recount with the saved adapter on the same file.
    from loraclf.config import DataConfig
    from loraclf.data import read_labeled
    from loraclf.inference import Classifier

    clf = Classifier.from_run_dir(tmp_path / "two", device="cpu")
    val = read_labeled(str(split_files["val"]), DataConfig(), clf.label_names)
    pred = clf.predict_ids(val.texts)
    recount = sum(int(p == y) for p, y in zip(pred, val.labels)) / len(val.labels)
    assert recount == pytest.approx(two["val_accuracy"], abs=1e-9)


def test_batch_that_does_not_split_is_refused(tiny_model: Path, split_files: dict[str, Path], tmp_path: Path) -> None:
    """It says the global batch must split evenly over the processes."""
    r = subprocess.run([*LORACLF, "train", "--nproc", "2", "--model", str(tiny_model), "--train-file", str(split_files["train"]),
                        "--out", str(tmp_path / "odd"), "train.batch_size=15", "train.progress=false"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: train.batch_size=15 does not split over 2 processes; use a multiple of 2"]
