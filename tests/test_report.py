"""`loraclf plot` and `loraclf report`: learning curves from log.jsonl, one self-contained HTML page per run.

The page is opened in headless Chromium to prove it renders and that its embedded pictures decode.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers import one_error_line
from loraclf.cli import app

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
# Injected by the test only (the report itself runs no script): after load, record whether every image decoded.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0);
  document.body.setAttribute("data-probe", (ok ? "IMAGES-OK" : "IMAGES-BROKEN") + ":" + imgs.length + ":" +
    imgs.map(i => i.naturalWidth + "x" + i.naturalHeight).join(","));
});
</script>"""


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


@pytest.fixture()
def run(trained_tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the trained tiny run (report and plot write into it)."""
    dst = tmp_path / "run"
    shutil.copytree(trained_tiny_run, dst, ignore=shutil.ignore_patterns("eval", "report.html", "learning_curves.png"))
    return dst


@pytest.fixture(scope="module")
def report_html(trained_tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the tiny run, evaluated on its config's test file, built once for this module."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    r = runner.invoke(app, ["report", str(trained_tiny_run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


# ---------------------------------------------------------------------------------------------
# Learning curves


def test_plot_writes_learning_curves_png(run: Path) -> None:
    """It draws RUN_DIR/learning_curves.png from log.jsonl."""
    r = runner.invoke(app, ["plot", str(run)])
    assert r.exit_code == 0, r.output
    width, height = png_size((run / "learning_curves.png").read_bytes())
    assert width > 600 and height > 250


@pytest.mark.parametrize("case", ["no_log", "empty_log", "missing_dir"])
def test_plot_bad_run_dir_exits_2_and_writes_nothing(case: str, tmp_path: Path) -> None:
    """It rejects a directory without a usable log: exit 2, one line, no picture."""
    d = tmp_path / "d"
    if case != "missing_dir":
        d.mkdir()
    if case == "empty_log":
        (d / "log.jsonl").write_text("\n", encoding="utf-8")
    r = runner.invoke(app, ["plot", str(d)])
    assert r.exit_code == 2
    assert {"no_log": "no log.jsonl", "empty_log": "no training or evaluation rows", "missing_dir": "does not exist"}[case] in one_error_line(r)
    assert not list(tmp_path.rglob("*.png"))


# ---------------------------------------------------------------------------------------------
# The report page


def test_report_is_self_contained_with_every_section(report_html: Path, trained_tiny_run: Path) -> None:
    """It embeds both pictures as PNG data URIs, loads nothing from outside, and holds config, metrics, curves, evaluation."""
    page = report_html.read_text(encoding="utf-8")
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(?!data:)', page)  # no external file, stylesheet or script
    assert "<script" not in page
    for section in ["training-metrics", "learning-curves", "evaluation", "config"]:
        assert f'id="{section}"' in page
    config = yaml.safe_load((trained_tiny_run / "config.yaml").read_text())
    assert config["data"]["test_file"] in page and "val_accuracy" in page
    errors_table = page.split("<h3>Errors</h3>")[1]
    assert 0 < errors_table.count("<tr>") - 1 <= 20  # a sample of the misclassified rows, plus the header row


def test_report_renders_in_chromium_with_decoded_images(report_html: Path, tmp_path: Path) -> None:
    """It renders in headless Chromium, where every embedded image decodes to a real bitmap."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; scripts/setup.sh does it for CI)")
    probe = tmp_path / "probe.html"
    probe.write_text(report_html.read_text(encoding="utf-8").replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    marker = re.search(r'data-probe="([^"]+)"', dom.stdout)
    assert marker is not None, "the page's load event never ran"
    assert marker.group(1).startswith("IMAGES-OK:2:"), marker.group(1)
    assert "Confusion matrix" in dom.stdout
    shot = tmp_path / "report.png"
    r = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,3000", report_html.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    assert png_size(shot.read_bytes()) == (1200, 3000)


def test_report_without_test_file_notes_the_skipped_evaluation(run: Path) -> None:
    """It still writes RUN_DIR/report.html when the config names no test file, with a note instead of the evaluation."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["test_file"] = None
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    assert "note: " in r.stderr and "no data.test_file" in r.stderr
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "evaluation sections skipped" in page
    assert page.count("<img") == 1  # the learning curves only
    assert "Confusion matrix</h3>" not in page


def test_report_data_option_overrides_the_test_file(run: Path, tmp_path: Path) -> None:
    """It evaluates --data (with column options) instead of the config's test file."""
    data = tmp_path / "few.jsonl"
    data.write_text("".join(json.dumps({"body": f"story {i} about markets", "y": "Business"}) + "\n" for i in range(7)), encoding="utf-8")
    r = runner.invoke(app, ["report", str(run), "--data", str(data), "--text-columns", "body", "--label-column", "y"])
    assert r.exit_code == 0, r.output
    page = (run / "report.html").read_text(encoding="utf-8")
    assert f"<code>{data}</code>: 7 rows" in page


@pytest.mark.parametrize("case", ["not_a_run", "no_labels", "missing_data", "bad_data"])
def test_report_bad_input_exits_2_and_writes_nothing(case: str, run: Path, tmp_path: Path) -> None:
    """It rejects a non-run, a run missing its labels, and missing or unusable --data: exit 2, one line, no page."""
    args = ["report", str(run)]
    if case == "not_a_run":
        args = ["report", str(tmp_path / "nope")]
    elif case == "no_labels":
        (run / "labels.json").unlink()
    elif case == "missing_data":
        args += ["--data", str(tmp_path / "absent.csv")]
    else:
        bad = tmp_path / "bad.csv"
        bad.write_bytes(b"text,label\n\xff,World\n")
        args += ["--data", str(bad)]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert {"not_a_run": "does not exist", "no_labels": "label names", "missing_data": "does not exist", "bad_data": "UTF-8"}[case] in one_error_line(r)
    assert not list(tmp_path.rglob("*.html"))
