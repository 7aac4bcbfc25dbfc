"""A user's first hour: the built wheel, installed outside the repository, trains a preset by name."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import AG_NAMES, REPO, read_ag_rows


def _reviews_csv(path: Path, rows: list[list[str]]) -> Path:
    """A user's own CSV: `review,stars`-style columns with string labels, not the AG News layout."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["review", "topic"])
        w.writerows([f"{r[1]} {r[2]}", AG_NAMES[int(r[0]) - 1]] for r in rows)
    return path


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_trains_the_default_preset(minilm_path: Path, tmp_path: Path) -> None:
    """It builds the wheel, installs it into a new venv outside the repository, and `loraclf train -c default`
    on a small CSV with MiniLM learns: test accuracy far above chance (0.25 for 4 classes)."""
    # Build from a copy: an in-place build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(dist.glob("loraclf-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    # The dependencies (torch, transformers, ...) come from this environment's site-packages, added by a
    # .pth path line: such a line does not run the editable-install hooks there, so `loraclf` can only
    # come from the wheel. loraclf itself is installed from the wheel alone.
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    work = tmp_path / "user"
    work.mkdir()
    train = _reviews_csv(work / "reviews.csv", read_ag_rows("train.csv", 600, stride=15))
    test = _reviews_csv(work / "holdout.csv", read_ag_rows("test.csv", 200, stride=37))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    origin = subprocess.run([str(py), "-c", "import loraclf; print(loraclf.__file__)"], cwd=work, env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert origin.startswith(str(venv)), f"loraclf was imported from {origin}, not from the installed wheel"
    r = subprocess.run([str(venv / "bin" / "loraclf"), "config", "list"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "default" in r.stdout and "seed" in r.stdout, r.stderr
    r = subprocess.run([str(venv / "bin" / "loraclf"), "train", "-c", "default", "--model", str(minilm_path),
                        "--train-file", str(train), "--test-file", str(test), "--out", "run", "--epochs", "2",
                        "data.text_columns=[review]", "data.label_column=topic", "train.progress=false"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data      train" in r.stderr and "eval  step" in r.stderr  # the run said what it was doing
    metrics = json.loads((work / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_accuracy"] >= 0.6, metrics
