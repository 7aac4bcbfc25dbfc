"""`loraclf export`: adapter copy, merged standalone model (same logits, labels, head), overwrite rules.

The merged model must reproduce the adapter model's logits: peers have shipped merged exports that
dropped the trained head or lost the label names, which only a logits comparison catches.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import AG_NAMES, REPO, read_ag_rows
from helpers import LORACLF, one_error_line
from loraclf.cli import app
from loraclf.inference import Classifier

runner = CliRunner()


def test_texts(n: int, stride: int = 7) -> list[str]:
    return [f"{t} {d}" for _, t, d in read_ag_rows("test.csv", n, stride=stride)]


test_texts.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def run_clf(trained_tiny_run: Path) -> Classifier:
    return Classifier.from_run_dir(trained_tiny_run, precision="fp32")


def test_export_adapter_copies_a_loadable_run(trained_tiny_run: Path, run_clf: Classifier, tmp_path: Path) -> None:
    """It copies adapter, tokenizer, labels and config, reports the size, and the copy predicts like the run."""
    out = tmp_path / "adapter-export"
    r = runner.invoke(app, ["export", str(trained_tiny_run), str(out)])
    assert r.exit_code == 0, r.output
    for rel in ["adapter/adapter_model.safetensors", "adapter/adapter_config.json", "tokenizer/tokenizer_config.json",
                "labels.json", "config.yaml", "loraclf_export.json"]:
        assert (out / rel).is_file(), rel
    assert not (out / "checkpoint.pt").exists()  # resumable state is not part of an export
    size = sum(p.stat().st_size for p in (out / "adapter").rglob("*") if p.is_file())
    assert f"weights  {size / 1024:.1f} KB" in r.stdout
    texts = test_texts(20)
    np.testing.assert_array_equal(Classifier.from_run_dir(out, precision="fp32").logits(texts), run_clf.logits(texts))


def test_export_merged_matches_adapter_logits_labels_and_head(trained_tiny_run: Path, run_clf: Classifier, tmp_path: Path) -> None:
    """It writes a plain transformers model whose logits equal the adapter model's (1e-4), with labels and the trained head."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "merged"
    r = runner.invoke(app, ["export", str(trained_tiny_run), str(out), "--merged"])
    assert r.exit_code == 0, r.output
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.id2label == dict(enumerate(AG_NAMES))
    assert model.config.label2id == {n: i for i, n in enumerate(AG_NAMES)}
    assert tok.model_max_length == run_clf.max_length
    texts = test_texts(40)
    with torch.inference_mode():
        enc = tok(texts, truncation=True, padding=True, return_tensors="pt")
        merged = model(**enc).logits.numpy()
    np.testing.assert_allclose(merged, run_clf.logits(texts), atol=1e-4, rtol=0)
    # The head is the trained one from the adapter, not a fresh random init.
    with safe_open(str(trained_tiny_run / "adapter" / "adapter_model.safetensors"), "pt") as f:
        trained = f.get_tensor("base_model.model.classifier.out_proj.weight")
    torch.testing.assert_close(model.classifier.out_proj.weight, trained)
    # And the LoRA update was folded in: the merged query weights differ from the base model's.
    base = AutoModelForSequenceClassification.from_pretrained(run_clf.run.config.model.name, num_labels=4)
    q = "roberta.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(model.state_dict()[q], base.state_dict()[q])


def test_export_refuses_existing_out_dir_without_overwrite(trained_tiny_run: Path, tmp_path: Path) -> None:
    """It leaves an existing OUT_DIR untouched (exit 2, one line) unless --overwrite, which replaces only an
    earlier export, never a directory of other files."""
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = runner.invoke(app, ["export", str(trained_tiny_run), str(out)])
    assert r.exit_code == 2
    assert "--overwrite" in one_error_line(r)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    r = runner.invoke(app, ["export", str(trained_tiny_run), str(out), "--overwrite"])
    assert r.exit_code == 2 and "only replaces a loraclf export" in one_error_line(r)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    export = tmp_path / "export"
    assert runner.invoke(app, ["export", str(trained_tiny_run), str(export)]).exit_code == 0
    (export / "stale.txt").write_text("from the old export")
    r = runner.invoke(app, ["export", str(trained_tiny_run), str(export), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not (export / "stale.txt").exists() and (export / "adapter" / "adapter_config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "export"]  # no temp or old directory left beside them


@pytest.mark.parametrize("case", ["not_a_run", "no_adapter", "inside_run"])
def test_export_bad_input_exits_2_and_writes_nothing(case: str, trained_tiny_run: Path, tmp_path: Path) -> None:
    """It rejects a non-run, a run missing its adapter and an OUT_DIR inside the run: exit 2, one line, nothing created."""
    run = tmp_path / "run"
    shutil.copytree(trained_tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    out = tmp_path / "out"
    if case == "not_a_run":
        run = tmp_path / "nothing-here"
    elif case == "no_adapter":
        shutil.rmtree(run / "adapter")
    else:
        out = run / "export"
    r = runner.invoke(app, ["export", str(run), str(out), "--merged"])
    assert r.exit_code == 2, r.output
    assert {"not_a_run": "does not exist", "no_adapter": "adapter", "inside_run": "overlaps"}[case] in one_error_line(r)
    assert not out.exists()
    assert not [p for p in tmp_path.rglob(".out*")] and not [p for p in tmp_path.rglob(".export*")]


@pytest.mark.parametrize("merged", [False, True], ids=["adapter", "merged"])
@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_export_files_have_the_users_permissions(merged: bool, umask: int, trained_tiny_run: Path, tmp_path: Path) -> None:
    """It gives every exported file 0666 & ~umask and every directory 0777 & ~umask (safetensors alone writes 0600)."""
    out = tmp_path / "export"
    old = os.umask(umask)
    try:
        r = runner.invoke(app, ["export", str(trained_tiny_run), str(out), *(["--merged"] if merged else [])])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".safetensors") for p in files)
    assert {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in files} == {str(p.relative_to(out)): oct(0o666 & ~umask) for p in files}
    for d in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        assert d.stat().st_mode & 0o777 == 0o777 & ~umask, d


# ---------------------------------------------------------------------------------------------
# The real model: train MiniLM briefly, merge, and load the export with transformers alone.

PIPELINE_ONLY = textwrap.dedent(
    """
    import json, sys
    from transformers import pipeline
    texts = json.load(open(sys.argv[2], encoding="utf-8"))
    pipe = pipeline("text-classification", model=sys.argv[1], device="cpu")
    names = [pipe.model.config.id2label[i] for i in range(pipe.model.config.num_labels)]
    top = [o["label"] for o in pipe(texts, truncation=True, batch_size=32)]
    raw = pipe(texts, truncation=True, batch_size=32, top_k=None, function_to_apply="none")
    logits = [[{d["label"]: d["score"] for d in o}[n] for n in names] for o in raw]
    assert not any(m == "peft" or m.startswith(("peft.", "loraclf")) for m in sys.modules), "peft/loraclf imported"
    print(json.dumps({"names": names, "labels": top, "logits": logits}))
    """
)


@pytest.mark.slow
def test_minilm_merged_export_matches_run_in_plain_pipeline(minilm_run: Path, tmp_path: Path) -> None:
    """The MiniLM run (`minilm_run`, one epoch of the default preset), merged and exported, gives the run's labels
    and logits in transformers.pipeline alone."""
    run = minilm_run
    out = tmp_path / "merged"
    r = subprocess.run([*LORACLF, "export", str(run), str(out), "--merged"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr

    rows = read_ag_rows("test.csv", 200, stride=37)
    texts = [f"{t} {d}" for _, t, d in rows]
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of loraclf on the path
    r = subprocess.run([sys.executable, "-c", PIPELINE_ONLY, str(out), str(tmp_path / "texts.json")],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])

    clf = Classifier.from_run_dir(run, precision="fp32")
    assert got["names"] == clf.label_names == AG_NAMES
    assert got["labels"] == clf.predict(texts)
    np.testing.assert_allclose(np.array(got["logits"]), clf.logits(texts), atol=1e-4, rtol=0)
    # A trained head (not a dropped, freshly initialised one) is well above chance (0.25) on 4 classes.
    accuracy = np.mean([AG_NAMES.index(p) == int(c) - 1 for p, (c, _, _) in zip(got["labels"], rows)])
    assert accuracy > 0.4, accuracy
