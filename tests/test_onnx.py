"""The ONNX backend: `export --onnx [--int8]`, `OnnxClassifier`, `--backend onnx` for predict and
evaluate, a run's ONNX cache, an export loaded with plain onnxruntime + tokenizers, and bad input.

The fp32 ONNX model must give the run's logits (1e-4) through the same tokenizer and batches, so
both backends label every text alike; int8 is only required to load and mostly agree.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from conftest import AG_NAMES, read_ag_rows  # noqa: E402
from loraclf.cli import app  # noqa: E402
from loraclf.inference import Classifier  # noqa: E402
from loraclf.backends import onnx_classifier  # noqa: E402
from loraclf.onnx_backend import INT8_FILE, ONNX_FILE  # noqa: E402

runner = CliRunner()
LONG = "breaking news " * 3000  # far past model.max_length (64 in the tiny run)


def texts_sample(n: int = 40) -> list[str]:
    texts = [f"{t} {d}" for _, t, d in read_ag_rows("test.csv", n, stride=41)]
    return texts[:10] + ["", LONG] + texts[10:]


def one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def read_labels(csv_text: str) -> list[str]:
    return [row["Label"] for row in csv.DictReader(io.StringIO(csv_text))]


@pytest.fixture(scope="module")
def torch_clf(trained_tiny_run: Path) -> Classifier:
    return Classifier.from_run_dir(trained_tiny_run, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def onnx_export(trained_tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`loraclf export RUN OUT --onnx --int8` of the tiny run, once per module: (OUT, its stdout)."""
    out = tmp_path_factory.mktemp("onnx-export") / "onnx"
    r = runner.invoke(app, ["export", str(trained_tiny_run), str(out), "--onnx", "--int8"])
    assert r.exit_code == 0, r.output
    return out, r.stdout


@pytest.fixture(scope="module")
def run_copy(trained_tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the tiny run (the ONNX cache goes inside it; the shared run stays read-only)."""
    run = tmp_path_factory.mktemp("onnx-run") / "run"
    shutil.copytree(trained_tiny_run, run, ignore=shutil.ignore_patterns("eval", "checkpoint.pt"))
    return run


# ---------------------------------------------------------------------------------------------
# export --onnx


def test_export_onnx_writes_files_and_matches_pytorch(onnx_export: tuple[Path, str], torch_clf: Classifier) -> None:
    """It writes model, tokenizer.json, labels and export info, prints its check, and fp32 logits match PyTorch within 1e-4."""
    out, stdout = onnx_export
    for rel in [ONNX_FILE, INT8_FILE, "tokenizer/tokenizer.json", "labels.json", "config.yaml", "loraclf_export.json"]:
        assert (out / rel).is_file(), rel
    info = json.loads((out / "loraclf_export.json").read_text())
    assert info["kind"] == "onnx" and info["label_names"] == AG_NAMES and info["max_length"] == torch_clf.max_length
    assert isinstance(info["opset"], int) and info["opset"] >= 17
    assert info["files"]["fp32"] == ONNX_FILE and info["files"]["int8"] == INT8_FILE
    assert info["check"]["fp32_max_abs_logit_diff"] <= 1e-4
    assert "max |logit diff| vs PyTorch" in stdout and "int8 labels agree with fp32" in stdout
    clf = onnx_classifier(out)
    texts = texts_sample()
    np.testing.assert_allclose(clf.logits(texts), torch_clf.logits(texts), atol=1e-4, rtol=0)
    assert clf.predict(texts) == torch_clf.predict(texts)


def test_export_int8_writes_a_quantized_model(onnx_export: tuple[Path, str], torch_clf: Classifier) -> None:
    """It writes model.int8.onnx with integer matmuls, smaller than fp32, that classifies every text; the recipe keeps
    Attention and the FFN output projections in fp32 (the sensitive ones, measured on MiniLM)."""
    import onnx

    from loraclf.onnx_export import int8_fp32_nodes

    out, stdout = onnx_export
    graph = onnx.load(str(out / INT8_FILE)).graph
    nodes = graph.node
    ops = {n.op_type for n in nodes}
    assert {"MatMulInteger", "DynamicQuantizeLinear", "Attention"} <= ops and "QAttention" not in ops
    # The word embeddings (the biggest table) are stored in 8 bits and looked up by a Gather on them.
    vocab, hidden = torch_clf.run.model.config.vocab_size, torch_clf.run.model.config.hidden_size
    big = [t for t in graph.initializer if list(t.dims) == [vocab, hidden]]
    assert big and all(t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for t in big)
    check = json.loads((out / "loraclf_export.json").read_text())["check"]
    assert check["int8_bytes"] == (out / INT8_FILE).stat().st_size < check["fp32_bytes"] == (out / ONNX_FILE).stat().st_size
    assert "int8 " in stdout and "fp32 (" in stdout and "quantized: MatMul, Gather" in stdout
    kept = int8_fp32_nodes(out / ONNX_FILE, ["ffn_down", "last_layer"])
    assert {n.name for n in nodes if n.op_type == "MatMul"} == set(kept) != set()
    assert (out / INT8_FILE).stat().st_size < (out / ONNX_FILE).stat().st_size
    q = onnx_classifier(out, int8=True)
    assert q.precision == "int8"
    texts = texts_sample()
    assert np.mean(np.array(q.predict_ids(texts)) == np.array(torch_clf.predict_ids(texts))) >= 0.8


def test_export_onnx_fuses_the_graph_for_onnxruntime(onnx_export: tuple[Path, str], torch_clf: Classifier) -> None:
    """model.onnx runs onnxruntime's fused kernels: one Attention per layer, SkipLayerNormalization, BiasGelu, no Softmax left."""
    import onnx

    out, stdout = onnx_export
    layers = torch_clf.run.model.config.num_hidden_layers
    ops = Counter(n.op_type for n in onnx.load(str(out / ONNX_FILE)).graph.node)
    assert ops["Attention"] == layers and ops["BiasGelu"] == layers and ops["SkipLayerNormalization"] >= layers, ops
    assert "Softmax" not in ops
    fusions = json.loads((out / "loraclf_export.json").read_text())["check"]["fusions"]
    assert fusions["attention"] == layers and fusions["bias_gelu"] == layers
    assert "fused for onnxruntime" in stdout
    assert not list(out.glob("model.unfused*"))


def test_export_onnx_keeps_the_unfused_graph_when_fusion_fails(trained_tiny_run: Path, torch_clf: Classifier, tmp_path: Path,
                                                               monkeypatch) -> None:
    """A graph the fuser cannot rewrite is exported unfused (checked, and said so), not refused."""
    import onnx

    import loraclf.onnx_export as oe

    def broken(src: Path, dst: Path) -> dict:
        dst.write_bytes(b"half-written")
        raise RuntimeError("no pattern for this block")

    monkeypatch.setattr(oe, "fuse_for_onnxruntime", broken)
    out = tmp_path / "unfused"
    r = runner.invoke(app, ["export", str(trained_tiny_run), str(out), "--onnx"])
    assert r.exit_code == 0, r.output
    assert "not fused (RuntimeError: no pattern for this block)" in r.stdout
    info = json.loads((out / "loraclf_export.json").read_text())
    assert info["check"]["fusions"].startswith("not fused") and info["check"]["fp32_max_abs_logit_diff"] <= 1e-4
    ops = {n.op_type for n in onnx.load(str(out / ONNX_FILE)).graph.node}
    assert "Softmax" in ops and "Attention" not in ops
    assert not list(out.glob("model.unfused*"))
    texts = texts_sample()
    assert onnx_classifier(out).predict(texts) == torch_clf.predict(texts)


def test_int8_recipe_keeps_the_chosen_roles_in_fp32(onnx_export: tuple[Path, str], torch_clf: Classifier, tmp_path: Path,
                                                   monkeypatch) -> None:
    """The int8 recipe quantizes its op types only and leaves the nodes of its fp32 roles (FFN output projections) as fp32 MatMuls."""
    import onnx

    import loraclf.onnx_export as oe

    out, _ = onnx_export
    layers = torch_clf.run.model.config.num_hidden_layers
    ffn_down = oe.int8_fp32_nodes(out / ONNX_FILE, ["ffn_down"])
    assert len(ffn_down) == layers and oe.int8_fp32_nodes(out / ONNX_FILE, []) == []
    last_layer = oe.int8_fp32_nodes(out / ONNX_FILE, ["last_layer"])  # attention output, FFN in, FFN out of the last layer
    assert len(last_layer) == 3 and ffn_down[-1] in last_layer and ffn_down[0] not in last_layer
    monkeypatch.setitem(oe.QUANTIZATION, "op_types", ["MatMul"])
    monkeypatch.setitem(oe.QUANTIZATION, "fp32_roles", ["ffn_down"])
    oe._quantize(out / ONNX_FILE, tmp_path / INT8_FILE)
    nodes = onnx.load(str(tmp_path / INT8_FILE)).graph.node
    ops = Counter(n.op_type for n in nodes)
    assert {n.name for n in nodes if n.op_type == "MatMul"} == set(ffn_down)
    assert ops["MatMulInteger"] > 0 and ops["Attention"] == layers and "QAttention" not in ops  # Attention not in op_types: fp32
    q = oe.OnnxClassifier(oe.load_session(tmp_path / INT8_FILE), torch_clf.run.tokenizer, torch_clf.label_names, torch_clf.max_length)
    texts = texts_sample()
    assert np.mean(np.array(q.predict_ids(texts)) == np.array(torch_clf.predict_ids(texts))) >= 0.8


def test_onnx_classifier_has_the_classifier_interface(onnx_export: tuple[Path, str], torch_clf: Classifier) -> None:
    """It returns input-order logits, probabilities, ids, names and classify dicts as Classifier does."""
    clf = onnx_classifier(onnx_export[0], batch_size=4)
    texts = texts_sample(12)
    alone = np.stack([clf.logits([t])[0] for t in texts])
    np.testing.assert_allclose(clf.logits(texts), alone, atol=1e-5)  # batched by length, returned in order
    assert clf.label_names == torch_clf.label_names
    assert clf.tokenize(texts) == torch_clf.tokenize(texts)  # the same token ids, long text truncated
    probs = clf.predict_proba(texts)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert clf.predict_ids(texts) == probs.argmax(axis=1).tolist()
    assert [c["label"] for c in clf.classify(texts)] == clf.predict(texts) == torch_clf.predict(texts)
    assert clf.predict([]) == [] and clf.predict_proba([]).shape == (0, 4)
    with pytest.raises(TypeError, match="list of texts"):
        clf.predict("one text")


def test_export_onnx_fails_with_one_line_when_logits_differ(trained_tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    """It refuses an export whose fp32 logits are off by more than 1e-4: exit 2, one line, nothing written."""
    import loraclf.onnx_backend as ob

    real = ob.run_onnx_inference
    monkeypatch.setattr(ob, "run_onnx_inference", lambda *a, **k: real(*a, **k) + 1e-3)
    out = tmp_path / "bad"
    r = runner.invoke(app, ["export", str(trained_tiny_run), str(out), "--onnx"])
    assert r.exit_code == 2, r.output
    assert "ONNX export check failed" in one_error_line(r)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# predict / evaluate --backend onnx


def test_predict_backend_onnx_matches_torch_and_caches_the_export(run_copy: Path, tmp_path: Path) -> None:
    """It gives torch's labels from a run (exported once into RUN/onnx, reused next time) and from an --int8 export."""
    src = tmp_path / "in.txt"
    src.write_text("\n".join(t.replace("\n", " ") for t in texts_sample()) + "\n", encoding="utf-8")
    torch_out = runner.invoke(app, ["predict", str(run_copy), "-i", str(src), "--label-names", "--precision", "fp32"])
    assert torch_out.exit_code == 0, torch_out.output
    first = runner.invoke(app, ["predict", str(run_copy), "-i", str(src), "--label-names", "--backend", "onnx"])
    assert first.exit_code == 0, first.output
    assert read_labels(first.stdout) == read_labels(torch_out.stdout)
    assert "exporting" in first.stderr and (run_copy / "onnx" / ONNX_FILE).is_file()
    stamp = (run_copy / "onnx" / ONNX_FILE).stat().st_mtime_ns
    again = runner.invoke(app, ["predict", str(run_copy), "-i", str(src), "--label-names", "--backend", "onnx"])
    assert again.exit_code == 0 and again.stdout == first.stdout
    assert "exporting" not in again.stderr and (run_copy / "onnx" / ONNX_FILE).stat().st_mtime_ns == stamp


def test_predict_and_evaluate_onnx_export_dir(onnx_export: tuple[Path, str], trained_tiny_run: Path, ag_small: dict[str, Path],
                                              tmp_path: Path) -> None:
    """It predicts and evaluates from an ONNX export (fp32: torch's labels and accuracy; int8: every row) with the same files."""
    out, _ = onnx_export
    test = str(ag_small["test"])
    r_torch = runner.invoke(app, ["evaluate", str(trained_tiny_run), "--data", test, "--out", str(tmp_path / "t"), "--precision", "fp32"])
    r_onnx = runner.invoke(app, ["evaluate", str(out), "--data", test, "--out", str(tmp_path / "o"), "--backend", "onnx"])
    assert r_torch.exit_code == 0 and r_onnx.exit_code == 0, r_onnx.output
    m_torch = json.loads((tmp_path / "t" / "metrics.json").read_text())
    m_onnx = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m_onnx["accuracy"] == m_torch["accuracy"] and m_onnx["n_errors"] == m_torch["n_errors"]
    assert (m_onnx["backend"], m_onnx["precision"], m_onnx["device"]) == ("onnx", "fp32", "cpu")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(p.name for p in (tmp_path / "t").iterdir())
    p_torch = runner.invoke(app, ["predict", str(trained_tiny_run), "-i", test, "--precision", "fp32"])
    p_onnx = runner.invoke(app, ["predict", str(out), "-i", test, "--backend", "onnx"])
    assert read_labels(p_onnx.stdout) == read_labels(p_torch.stdout)
    p_int8 = runner.invoke(app, ["predict", str(out), "-i", test, "--backend", "onnx", "--int8", "-o", str(tmp_path / "q.csv")])
    assert p_int8.exit_code == 0, p_int8.output
    assert len(read_labels((tmp_path / "q.csv").read_text())) == 200


# ---------------------------------------------------------------------------------------------
# Plain onnxruntime + tokenizers, in a fresh process: no loraclf, no torch.

PLAIN_ORT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    out, texts = sys.argv[1], json.load(open(sys.argv[2], encoding="utf-8"))
    info = json.load(open(f"{out}/loraclf_export.json", encoding="utf-8"))
    tok = Tokenizer.from_file(f"{out}/{info['files']['tokenizer']}")  # truncates at max_length already
    tok.enable_padding(pad_id=info["pad_id"])
    session = ort.InferenceSession(f"{out}/{info['files']['fp32']}", providers=["CPUExecutionProvider"])
    labels = []
    for i in range(0, len(texts), 16):
        enc = tok.encode_batch(texts[i:i + 16])
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
        logits = session.run(["logits"], feeds)[0]
        labels += [info["label_names"][k] for k in logits.argmax(axis=1)]
    assert "torch" not in sys.modules, "torch imported"
    assert not [m for m in sys.modules if m.startswith(("loraclf", "transformers"))], "loraclf/transformers imported"
    print(json.dumps(labels))
    """
)


def test_onnx_export_runs_in_plain_onnxruntime_and_tokenizers(onnx_export: tuple[Path, str], trained_tiny_run: Path,
                                                             tmp_path: Path) -> None:
    """It loads in a fresh process with only onnxruntime + tokenizers and gives `loraclf predict`'s labels."""
    out, _ = onnx_export
    texts = [t.replace("\n", " ") for t in texts_sample()]
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    child = subprocess.run([sys.executable, "-c", PLAIN_ORT, str(out), str(tmp_path / "texts.json")],
                           capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    plain = json.loads(child.stdout.strip().splitlines()[-1])
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "-i", str(src), "--label-names", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert plain == read_labels(r.stdout)


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2


@pytest.mark.parametrize("case", ["not_a_model_dir", "merged_export", "no_int8", "corrupt_onnx", "no_onnxruntime", "onnx_dir_with_torch"])
def test_predict_onnx_bad_input_exits_2(case: str, onnx_export: tuple[Path, str], trained_tiny_run: Path, tmp_path: Path,
                                        monkeypatch) -> None:
    """It rejects a directory without the backend's files, a broken model and a missing onnxruntime in one line, writing nothing."""
    model_dir = tmp_path / "export"
    shutil.copytree(onnx_export[0], model_dir)
    args = ["--backend", "onnx"]
    if case == "not_a_model_dir":
        model_dir = tmp_path / "empty"
        model_dir.mkdir()
    elif case == "merged_export":  # a transformers export, not an ONNX one
        model_dir = tmp_path / "merged"
        model_dir.mkdir()
        (model_dir / "loraclf_export.json").write_text(json.dumps({"kind": "merged"}))
    elif case == "no_int8":
        (model_dir / INT8_FILE).unlink()
        args.append("--int8")
    elif case == "corrupt_onnx":
        (model_dir / ONNX_FILE).write_bytes(b"not a protobuf")
    elif case == "no_onnxruntime":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
    elif case == "onnx_dir_with_torch":
        args = []
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    out = tmp_path / "sub.csv"
    r = runner.invoke(app, ["predict", str(model_dir), "-i", str(src), "-o", str(out), *args])
    assert r.exit_code == 2, r.output
    expected = {"not_a_model_dir": "neither a loraclf run nor an ONNX export", "merged_export": "neither a loraclf run nor an ONNX export",
                "no_int8": "lacks model.int8.onnx", "corrupt_onnx": "cannot load the ONNX model",
                "no_onnxruntime": "needs onnxruntime", "onnx_dir_with_torch": "add --backend onnx"}[case]
    assert expected in one_error_line(r)
    assert not out.exists()


@pytest.mark.parametrize("args,expected", [
    (["--int8"], "--int8 needs --backend onnx"),
    (["--backend", "tensorrt"], "is not a backend"),
    (["--backend", "onnx", "--device", "cuda"], "CPU only"),
    (["--backend", "onnx", "--precision", "bf16"], "runs fp32"),
])
def test_predict_and_evaluate_reject_bad_backend_options(args: list[str], expected: str, trained_tiny_run: Path, tmp_path: Path) -> None:
    """It rejects impossible backend options with one line, before loading anything."""
    for cmd in (["predict", str(trained_tiny_run), "-i", "-"], ["evaluate", str(trained_tiny_run), "--data", "-", "--out", str(tmp_path)]):
        r = runner.invoke(app, [*cmd, *args], input="hello\n")
        assert r.exit_code == 2, r.output
        assert expected in one_error_line(r)


@pytest.mark.parametrize("case", ["no_onnxruntime", "int8_without_onnx"])
def test_export_onnx_bad_options_exit_2(case: str, trained_tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    """It says how to install onnxruntime, or that --int8 needs --onnx, in one line and writes nothing."""
    args = ["--int8"]
    if case == "no_onnxruntime":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        args = ["--onnx"]
    out = tmp_path / "out"
    r = runner.invoke(app, ["export", str(trained_tiny_run), str(out), *args])
    assert r.exit_code == 2, r.output
    assert {"no_onnxruntime": "pip install 'loraclf[onnx]'", "int8_without_onnx": "add --onnx"}[case] in one_error_line(r)
    assert not out.exists()
