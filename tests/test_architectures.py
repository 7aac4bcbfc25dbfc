"""Any encoder family, with no module names or attention kernel given: `lora.target_modules: auto` and
`model.attn_implementation: auto` resolve them, the run records them, and every command path runs.

One short path per family (tests/tiny_families.py: tiny random models with the shared MiniLM's tokenizer):
train -> predict -> merged export loaded by plain `transformers.pipeline` -> ONNX export agreeing with predict.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import read_ag_rows, write_ag_csv
from tiny_families import available_families, build_tiny

from loraclf.cli import app
from loraclf.inference import Classifier

runner = CliRunner()

# family -> (resolved lora.target_modules, attention kernel, what trains in full beside the adapters,
# whether the merged model computes its last layer for the first position only)
EXPECTED = {
    "bert": (["query", "value"], "sdpa", "classifier,pooler", True),
    "roberta": (["query", "value"], "sdpa", "classifier", True),
    "distilbert": (["q_lin", "v_lin"], "sdpa", "classifier,pre_classifier", False),
    "deberta-v2": (["query_proj", "value_proj"], "eager", "classifier,pooler", False),
    "electra": (["query", "value"], "sdpa", "classifier", True),
    "albert": (["query", "value"], "sdpa", "classifier,pooler", False),
    "xlm-roberta": (["query", "value"], "sdpa", "classifier", True),
    "mpnet": (["q", "v"], "eager", "classifier", False),
    "modernbert": (["Wqkv"], "sdpa", "classifier,head", False),
}
QUICK = ["--epochs", "1", "train.batch_size=16", "train.lr=1e-3", "train.progress=false", "model.max_length=48",
         "train.early_stopping_patience=0", "train.eval_batch_size=64"]


@pytest.fixture(scope="module")
def family_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """48 AG News rows of every class to train on and 24 test texts (a short one and an over-long one among them)."""
    d = tmp_path_factory.mktemp("families-data")
    texts = [f"{t} {x}" for _, t, x in read_ag_rows("test.csv", 22, stride=97)] + ["ok", "markets " * 200]
    (d / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return {"train": write_ag_csv(d / "train.csv", read_ag_rows("train.csv", 48, stride=200)), "texts": d / "texts.txt"}


def predicted(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row["Label"] for row in csv.DictReader(f)]


@pytest.mark.parametrize("family", available_families())
def test_family_runs_every_path_with_auto_settings(family: str, minilm_path: Path, family_data: dict[str, Path],
                                                  tmp_path: Path) -> None:
    from transformers import pipeline

    from loraclf.backends import onnx_classifier
    from loraclf.model import FirstTokenLayer

    targets, kernel, trained, first_token = EXPECTED[family]
    model = build_tiny(family, tmp_path / "model", minilm_path)
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--model", str(model), "--train-file", str(family_data["train"]), "--out", str(run), *QUICK])
    assert r.exit_code == 0, r.output
    # The start block says what auto resolved to, and config.yaml records it (resume and reload use those names).
    assert f"on {','.join(targets)} | trains {trained}" in r.stderr
    assert f"| attention {kernel}" in r.stderr
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["lora"]["target_modules"] == targets and cfg["model"]["attn_implementation"] == kernel

    texts = family_data["texts"].read_text(encoding="utf-8").splitlines()
    # predict with the defaults (merged, bf16 where the CPU has it: its speed paths apply or are skipped), then fp32
    r = runner.invoke(app, ["predict", str(run), "-i", str(family_data["texts"]), "-o", str(tmp_path / "auto.csv")])
    assert r.exit_code == 0, r.output
    assert len(predicted(tmp_path / "auto.csv")) == len(texts)
    r = runner.invoke(app, ["predict", str(run), "-i", str(family_data["texts"]), "-o", str(tmp_path / "fp32.csv"),
                            "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    labels = predicted(tmp_path / "fp32.csv")

    clf = Classifier.from_run_dir(run, device="cpu", precision="fp32")
    layers = getattr(getattr(clf.run.model.base_model, "encoder", None), "layer", None)
    assert (layers is not None and isinstance(layers[-1], FirstTokenLayer)) == first_token

    r = runner.invoke(app, ["export", str(run), str(tmp_path / "merged"), "--merged"])
    assert r.exit_code == 0, r.output
    pipe = pipeline("text-classification", model=str(tmp_path / "merged"), device="cpu")
    assert [o["label"] for o in pipe(texts, truncation=True, max_length=48)] == labels
    raw = pipe(texts, truncation=True, max_length=48, top_k=None, function_to_apply="none")
    logits = [[{d["label"]: d["score"] for d in o}[n] for n in clf.label_names] for o in raw]
    np.testing.assert_allclose(np.array(logits), clf.logits(texts), atol=1e-4, rtol=0)

    r = runner.invoke(app, ["export", str(run), str(tmp_path / "onnx"), "--onnx"])  # checks fp32 logits to 1e-4 itself
    assert r.exit_code == 0, r.output
    assert onnx_classifier(tmp_path / "onnx").predict(texts) == labels


def test_attention_kernel_the_architecture_lacks_is_one_line_naming_the_setting(minilm_path: Path, family_data: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    """model.attn_implementation=sdpa on MPNet (no SDPA in transformers) names the setting and the fix, not the directory."""
    if "mpnet" not in available_families():
        pytest.skip("this transformers has no MPNet")
    model = build_tiny("mpnet", tmp_path / "model", minilm_path)
    r = runner.invoke(app, ["train", "--model", str(model), "--train-file", str(family_data["train"]), "--out",
                            str(tmp_path / "run"), "model.attn_implementation=sdpa", *QUICK])
    assert r.exit_code != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model.attn_implementation=sdpa:"), r.stderr
    assert "model.attn_implementation=auto" in lines[0] and "saved Hugging Face model directory" not in lines[0]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# The resolution rules, on conftest's tiny RoBERTa


@pytest.fixture(scope="module")
def roberta(tiny_model: Path):  # noqa: ANN201 - a transformers model
    from loraclf.config import ModelConfig
    from loraclf.model import load_base_model

    return load_base_model(ModelConfig(name=str(tiny_model)), ["a", "b", "c", "d"])


@pytest.mark.parametrize("requested, names", [
    (["auto"], ["query", "value"]),  # peft's table has roberta
    (["all-linear"], ["query", "key", "value", "dense"]),  # the head's dense and out_proj train in full: no adapters
    (["value", "key"], ["value", "key"]),  # explicit names as given
])
def test_target_modules_resolve(roberta, requested: list[str], names: list[str]) -> None:  # noqa: ANN001
    from loraclf.architectures import resolve_target_modules, trained_modules

    assert trained_modules(roberta, ["pooler"]) == ["classifier"]  # RoBERTa's head has its own dense layer, no pooler
    assert resolve_target_modules(roberta, requested, ["classifier"]) == names


def test_target_modules_detected_where_peft_has_no_entry(roberta, monkeypatch) -> None:  # noqa: ANN001
    """Without peft's table the attention module's own query and value layers are found."""
    import loraclf.architectures as A

    monkeypatch.setattr(A, "_peft_table", dict)
    assert A.resolve_target_modules(roberta, ["auto"], ["classifier"]) == ["query", "value"]


@pytest.mark.parametrize("requested, message", [
    (["q", "v"], r"lora\.target_modules: q, v not found in the model; its linear layers are named: dense, key, out_proj, "
                 r"query, value \(or use lora\.target_modules=auto\)"),
    (["auto", "query"], r"lora\.target_modules: auto stands alone, not in a list of names; use lora\.target_modules=auto or only names"),
])
def test_bad_target_modules_name_the_models_layers(roberta, requested: list[str], message: str) -> None:  # noqa: ANN001
    from loraclf.architectures import resolve_target_modules
    from loraclf.errors import ModelError

    with pytest.raises(ModelError, match=message):
        resolve_target_modules(roberta, requested, ["classifier"])
