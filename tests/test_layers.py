"""The package's import layers (pyproject.toml, [tool.importlinter]): cli -> stages -> engine -> base."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(LINT, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layers() -> None:
    """It finds no upward import and no import between modules of one layer."""
    r = lint(REPO / "src", REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """It fails when an engine module imports a stage (a cycle through the layers), naming the import."""
    shutil.copytree(REPO / "src" / "loraclf", tmp_path / "src" / "loraclf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    batching = tmp_path / "src" / "loraclf" / "batching.py"
    batching.write_text(batching.read_text(encoding="utf-8") + "\nfrom . import evaluate  # an upward import\n", encoding="utf-8")
    r = lint(tmp_path / "src", tmp_path)
    assert r.returncode != 0
    assert "0 kept, 1 broken" in r.stdout and "loraclf.batching -> loraclf.evaluate" in r.stdout
