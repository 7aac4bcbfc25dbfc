"""`loraclf predict` and the Classifier API: order, row count, truncation, stdin, options, bad input."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import AG_NAMES, read_ag_rows
from helpers import LORACLF, one_error_line
from loraclf.cli import app
from loraclf.inference import Classifier
from loraclf.predict import predictions_csv

runner = CliRunner()
LONG = "breaking news " * 3000  # ~6,000 tokens: far past model.max_length (64 in the tiny run)


def sample_texts(n: int = 30) -> list[str]:
    """AG News texts of varied lengths, plus an empty and a very long one in the middle."""
    texts = [f"{t} {d}" for _, t, d in read_ag_rows("test.csv", n, stride=53)]
    return texts[:10] + ["", LONG] + texts[10:]


@pytest.fixture(scope="module")
def clf(trained_tiny_run: Path) -> Classifier:
    return Classifier.from_run_dir(trained_tiny_run, precision="fp32")


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# ---------------------------------------------------------------------------------------------
# The Python API


def test_classifier_merges_the_adapter_for_inference(trained_tiny_run: Path, clf: Classifier) -> None:
    """from_run_dir merges LoRA into the base (a plain transformers model, no PEFT wrapper) and scores as the unmerged
    PeftModel does; in bf16 on a CPU the whole model is stored in bf16 (embeddings and LayerNorms too) and scored
    without autocast (which would cast LayerNorm's inputs up to fp32 and every Linear's input down again)."""
    import contextlib

    import torch

    from loraclf.inference import autocast_context
    from loraclf.model import stored_in

    texts = sample_texts()
    unmerged = Classifier.from_run_dir(trained_tiny_run, precision="fp32", merge=False)
    assert clf.run.merged and not unmerged.run.merged
    assert not hasattr(clf.run.model, "peft_config") and hasattr(unmerged.run.model, "peft_config")
    np.testing.assert_allclose(clf.logits(texts), unmerged.logits(texts), atol=1e-5)

    bf16 = Classifier.from_run_dir(trained_tiny_run, precision="bf16")
    dtypes = {type(m).__name__: m.weight.dtype for m in bf16.run.model.modules() if hasattr(m, "weight")}
    assert dtypes["Linear"] == dtypes["LayerNorm"] == dtypes["Embedding"] == torch.bfloat16
    assert stored_in(bf16.run.model, torch.bfloat16) and not stored_in(unmerged.run.model, torch.bfloat16)
    assert isinstance(autocast_context(bf16.device, "bf16", bf16.run.model), contextlib.nullcontext)
    assert isinstance(autocast_context(bf16.device, "bf16", unmerged.run.model), torch.autocast)
    assert not any(p.requires_grad for p in bf16.run.model.parameters())
    np.testing.assert_allclose(bf16.predict_proba(texts), unmerged.predict_proba(texts), atol=0.05)


def test_unmerged_bf16_stores_frozen_linears_in_bf16_with_identical_scores(trained_tiny_run: Path) -> None:
    """merge=False in bf16 keeps the PeftModel with its Linear layers stored in bf16 (`model.store_frozen_linears`):
    the probabilities are exactly those of fp32 storage under bf16 autocast, the path before."""
    import dataclasses

    import torch

    from loraclf.rundir import RunDir

    texts = sample_texts()
    stored = Classifier.from_run_dir(trained_tiny_run, precision="bf16", merge=False)
    assert {m.weight.dtype for m in stored.run.model.modules() if isinstance(m, torch.nn.Linear)} == {torch.bfloat16}
    fp32_weights = RunDir(trained_tiny_run).load(device="cpu", precision="fp32")
    autocast_only = Classifier(dataclasses.replace(fp32_weights, precision="bf16"))
    assert np.array_equal(stored.logits(texts), autocast_only.logits(texts))


def test_classifier_batches_return_input_order(clf: Classifier) -> None:
    """It gives each text the logits it gets alone, although batches are grouped by length."""
    texts = sample_texts()
    batched = clf.logits(texts)
    alone = np.stack([clf.logits([t])[0] for t in texts])
    assert batched.shape == (len(texts), len(AG_NAMES))
    assert np.ptp(alone[:, 0]) > 1e-4  # the texts do get different logits, so a reordering would show
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_classifier_truncates_long_and_keeps_empty_texts(clf: Classifier) -> None:
    """It cuts long texts to model.max_length and classifies empty ones rather than dropping either."""
    ids = clf.tokenize(["", LONG, "short text"])
    assert len(ids) == 3 and len(ids[1]) == clf.max_length and 0 < len(ids[0]) <= 2
    assert len(clf.predict(["", LONG])) == 2


def test_classifier_predict_proba_classify_and_names_agree(clf: Classifier) -> None:
    """It returns probabilities summing to 1 whose argmax is the predicted id, name and score."""
    texts = sample_texts(8)
    probs = clf.predict_proba(texts)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    ids = clf.predict_ids(texts)
    assert ids == probs.argmax(axis=1).tolist()
    assert clf.predict(texts) == [AG_NAMES[i] for i in ids]
    out = clf.classify(texts)
    assert [o["id"] for o in out] == ids and [o["label"] for o in out] == clf.predict(texts)
    assert [o["score"] for o in out] == pytest.approx(probs.max(axis=1).tolist())
    assert clf.predict([]) == [] and clf.predict_proba([]).shape == (0, 4)


def test_classifier_rejects_a_bare_string(clf: Classifier) -> None:
    """It refuses a single string (which would be classified character by character)."""
    with pytest.raises(TypeError, match="list of texts"):
        clf.predict("one text")


def test_predictions_csv_layouts() -> None:
    """It writes ID,Label with class ids by default (tune's submission.csv), names with label_as_name, p_<class> and leading columns."""
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert predictions_csv(probs, ["neg", "pos"]) == "ID,Label\n0,0\n1,1\n"
    assert predictions_csv(probs, ["neg", "pos"], label_as_name=True, probabilities=True) == (
        "ID,Label,p_neg,p_pos\n0,neg,0.900000,0.100000\n1,pos,0.200000,0.800000\n"
    )
    assert predictions_csv(probs, ["neg", "pos"], True, leading={"key": ["a7", "b8"], "review": ['say "hi", twice', "two\nlines"]}) == (
        'key,review,ID,Label\na7,"say ""hi"", twice",0,neg\nb8,"two\nlines",1,pos\n'
    )
    # A kept `id` column (any case) is the ID: never both `id` and `ID`.
    assert predictions_csv(probs, ["neg", "pos"], True, leading={"Id": ["a7", "b8"]}) == "Id,Label\na7,neg\nb8,pos\n"


def test_device_path_gives_the_host_path_logits(clf: Classifier) -> None:
    """The eager pass a GPU runs (`run_inference_on_device`: ids on the device, token-budget batches, logits copied
    back once) scores every text as the host path does, in input order, for one text and for many batches."""
    from loraclf.inference import run_inference, run_inference_on_device

    ids = clf.tokenize(sample_texts(40))
    run = clf.run
    want = run_inference(run.model, ids, 4, run.device, run.precision, clf.pad_id)
    for batch_size in (1, 4, 64):
        got = run_inference_on_device(run.model, ids, batch_size, run.device, run.precision, clf.pad_id,
                                      max_length=clf.max_length, compiled=False)
        np.testing.assert_allclose(got, want, atol=1e-5)
    one = run_inference_on_device(run.model, ids[3:4], 8, run.device, run.precision, clf.pad_id, compiled=False)
    np.testing.assert_allclose(one, want[3:4], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The command


def test_predict_compiled_gives_the_eager_probabilities(trained_tiny_run: Path, clf: Classifier, tmp_path: Path) -> None:
    """--compile true runs the merged model compiled (frozen weights, one graph for every batch) and writes the
    probabilities eager scoring gives, in input order; a bad --compile, or --compile with ONNX, is one line, exit 2.
    Frozen means frozen: the Linear weights became constants that inductor pre-packed (a compile with freezing
    only in inductor's options leaves them graph inputs and packs none)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    texts = sample_texts()
    src = tmp_path / "in.txt"
    src.write_text("\n".join(t.replace("\n", " ") or "-" for t in texts) + "\n", encoding="utf-8")
    out = tmp_path / "sub.csv"
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", str(src), "--output", str(out), "--probabilities",
                            "--precision", "fp32", "--compile", "true"])
    assert r.exit_code == 0, r.output
    assert torch._dynamo.utils.counters["stats"].get("unique_graphs", 0) >= 1  # it did compile
    if torch.backends.mkldnn.is_available() and torch._C.has_mkl:  # x86 builds: fp32 Linear packs for MKL
        assert torch._dynamo.utils.counters["inductor"].get("mkldnn_linear_weight_pack_matcher_count", 0) > 0
    rows = read_csv(out.read_text(encoding="utf-8"))
    got = np.array([[float(x[f"p_{n}"]) for n in AG_NAMES] for x in rows])
    want = clf.predict_proba([ln for ln in src.read_text(encoding="utf-8").splitlines()])
    np.testing.assert_allclose(got, want, atol=1e-4)
    for args, words in ((["--compile", "maybe"], "--compile 'maybe'"), (["--backend", "onnx", "--compile", "true"], "torch backend")):
        r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", str(src), "--output", str(tmp_path / "x.csv"), *args])
        assert r.exit_code == 2 and words in r.output, r.output
        assert not (tmp_path / "x.csv").exists()


def test_predict_keeps_order_and_row_count(trained_tiny_run: Path, clf: Classifier, tmp_path: Path) -> None:
    """It writes one row per input row, in input order, including empty and very long texts."""
    texts = sample_texts()
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t, "other": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    out = tmp_path / "sub.csv"
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", str(src), "--output", str(out), "--probabilities", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    rows = read_csv(out.read_text(encoding="utf-8"))
    assert [int(x["ID"]) for x in rows] == list(range(len(texts)))
    got = np.array([[float(x[f"p_{n}"]) for n in AG_NAMES] for x in rows])
    alone = np.stack([clf.predict_proba([t])[0] for t in texts])
    np.testing.assert_allclose(got, alone, atol=2e-6)
    assert [x["Label"] for x in rows] == [AG_NAMES[i] for i in got.argmax(axis=1)]


def test_predict_reads_plain_text_from_stdin(trained_tiny_run: Path, clf: Classifier) -> None:
    """It classifies stdin lines (blank lines included) and prints the CSV, with class names, to stdout."""
    texts = ["Stocks rally as rates fall", "", "Team wins the cup final", "New chip doubles battery life"]
    r = subprocess.run([*LORACLF, "predict", str(trained_tiny_run), "--input", "-"],
                       input="\n".join(texts) + "\n", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = read_csv(r.stdout)
    assert [x["ID"] for x in rows] == ["0", "1", "2", "3"]
    assert [x["Label"] for x in rows] == clf.predict(texts)


def test_predict_stdin_through_clirunner(trained_tiny_run: Path) -> None:
    """It reads CSV from stdin when --format csv is given."""
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", "-", "--format", "csv"], input="text\nhello\nworld\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "ID,Label" and len(r.stdout.splitlines()) == 3


def test_predict_reads_ag_news_and_text_files(trained_tiny_run: Path, ag_small: dict[str, Path], tmp_path: Path) -> None:
    """It accepts the AG News CSV layout (title + description) and a .txt file, one row per line or record."""
    out = tmp_path / "a.csv"
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", str(ag_small["test"]), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert len(read_csv(out.read_text())) == 200
    txt = tmp_path / "t.txt"
    txt.write_text("one\ntwo\n\nfour\n", encoding="utf-8")
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", str(txt)])
    assert r.exit_code == 0, r.output
    assert len(read_csv(r.stdout)) == 4


@pytest.mark.parametrize("case", ["no_text_column", "empty", "not_utf8", "not_a_run", "no_tokenizer", "missing_file"])
def test_predict_bad_input_exits_2_and_keeps_old_output(case: str, trained_tiny_run: Path, tmp_path: Path) -> None:
    """It rejects bad input with one line and exit 2, leaving an existing output file untouched."""
    run = trained_tiny_run
    src = tmp_path / "in.csv"
    src.write_text("text\nhello\n", encoding="utf-8")
    if case == "no_text_column":
        src.write_text("body,label\nhello,1\n", encoding="utf-8")
    elif case == "empty":
        src.write_text("", encoding="utf-8")
    elif case == "not_utf8":
        src.write_bytes(b"text\n\xff\xfe bad\n")
    elif case == "not_a_run":
        run = tmp_path
    elif case == "no_tokenizer":
        run = tmp_path / "run"
        shutil.copytree(trained_tiny_run, run, ignore=shutil.ignore_patterns("tokenizer", "eval"))
    elif case == "missing_file":
        src = tmp_path / "absent.csv"
    out = tmp_path / "sub.csv"
    out.write_text("old\n", encoding="utf-8")
    r = runner.invoke(app, ["predict", str(run), "--input", str(src), "--output", str(out)])
    assert r.exit_code == 2, r.output
    line = one_error_line(r)
    assert {"no_text_column": "text column 'text'", "empty": "empty", "not_utf8": "UTF-8", "not_a_run": "not a finished loraclf run",
            "no_tokenizer": "tokenizer", "missing_file": "does not exist"}[case] in line
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sub.csv")] == []  # no temp file left


def test_predict_empty_stdin_exits_2(trained_tiny_run: Path) -> None:
    """It rejects empty standard input with one line and prints no CSV."""
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", "-"], input="")
    assert r.exit_code == 2
    assert "stdin is empty" in one_error_line(r)
    assert r.stdout == ""


def test_predict_output_that_is_a_directory_exits_2(trained_tiny_run: Path, tmp_path: Path) -> None:
    """It refuses an --output that names a directory, before loading the model, and writes nothing into it."""
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", str(src), "--output", str(outdir)])
    assert r.exit_code == 2
    assert "is a directory" in one_error_line(r)
    assert list(outdir.iterdir()) == []


def test_predict_detects_the_input_format_whatever_the_run_trained_on(trained_tiny_run: Path, tmp_path: Path) -> None:
    """It reads a .txt input as lines even when the run's config fixes data.format to csv."""
    import yaml

    run = tmp_path / "run"
    shutil.copytree(trained_tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["format"] = "csv"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    src = tmp_path / "in.txt"
    src.write_text("text\nsecond line, with a comma\n", encoding="utf-8")
    r = runner.invoke(app, ["predict", str(run), "--input", str(src)])
    assert r.exit_code == 0, r.output
    assert len(read_csv(r.stdout)) == 2  # as CSV it would be one row under a "text" header


@pytest.mark.parametrize("option", [["--precision", "fp8"], ["--device", "gpu"]])
def test_predict_bad_device_or_precision_exits_2(option: list[str], trained_tiny_run: Path, tmp_path: Path) -> None:
    """It rejects an unknown precision or device with one line, before reading the input."""
    out = tmp_path / "sub.csv"
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", "-", "--output", str(out), *option], input="hello\n")
    assert r.exit_code == 2
    assert option[1] in one_error_line(r)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Label names or ids; input columns carried through


def test_predict_writes_names_by_default_and_ids_with_ids(trained_tiny_run: Path, clf: Classifier, tmp_path: Path) -> None:
    """It writes class names in Label unless --ids; --label-names (the old flag) still runs and changes nothing."""
    texts = sample_texts(12)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    ids = clf.predict_ids(texts)
    outputs = {}
    for flags in ([], ["--ids"], ["--label-names"]):
        r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", str(src), *flags])
        assert r.exit_code == 0, r.output
        outputs[" ".join(flags)] = read_csv(r.stdout)
    assert [x["Label"] for x in outputs[""]] == [AG_NAMES[i] for i in ids]
    assert [x["Label"] for x in outputs["--ids"]] == [str(i) for i in ids]
    assert outputs["--label-names"] == outputs[""]
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "--input", str(src), "--ids", "--label-names"])
    assert r.exit_code == 2 and "--ids and --label-names" in one_error_line(r)


def _keep_input(tmp_path: Path, fmt: str, texts: list[str]) -> Path:
    """An input table with columns id, review (the text) and stars, in format `fmt`."""
    import pandas as pd

    df = pd.DataFrame({"id": [f"r{i:03d}" for i in range(len(texts))], "review": texts, "stars": [i % 5 + 1 for i in range(len(texts))]})
    path = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.assign(review=[t.replace("\t", " ").replace("\n", " ") for t in texts]).to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        df.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_predict_keep_columns_carries_input_columns(fmt: str, trained_tiny_run: Path, clf: Classifier, tmp_path: Path) -> None:
    """It copies --keep-columns from a CSV/TSV/JSONL/Parquet input, verbatim and in row order, before Label; the kept
    `id` column takes the place of the row-index ID."""
    texts = sample_texts(10)[:8] + ['a "quoted", comma text', "two\nlines"]
    src = _keep_input(tmp_path, fmt, texts)
    out = tmp_path / "out.csv"
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "-i", str(src), "-o", str(out), "--text-columns", "review",
                            "--keep-columns", "id,stars, review,id"])
    assert r.exit_code == 0, r.output
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "stars", "review", "Label"]
    expected = texts if fmt != "tsv" else [t.replace("\t", " ").replace("\n", " ") for t in texts]
    assert [r[0] for r in rows[1:]] == [f"r{i:03d}" for i in range(len(texts))]
    assert [r[1] for r in rows[1:]] == [str(i % 5 + 1) for i in range(len(texts))]
    assert [r[2] for r in rows[1:]] == expected
    assert [r[3] for r in rows[1:]] == clf.predict(expected)


@pytest.mark.parametrize("case", ["missing_column", "txt_file", "stdin_text", "clash", "empty"])
def test_predict_keep_columns_errors(case: str, trained_tiny_run: Path, tmp_path: Path) -> None:
    """It names a missing kept column and lists the available ones, and refuses plain-text input, clashes and an empty list."""
    src = _keep_input(tmp_path, "csv", ["one", "two"])
    keep, stdin = "id,score", None
    if case == "txt_file":
        src = tmp_path / "in.txt"
        src.write_text("one\ntwo\n", encoding="utf-8")
        keep = "id"
    elif case == "stdin_text":
        src, keep, stdin = "-", "id", "one\ntwo\n"
    elif case == "clash":
        keep = "id,Label"
    elif case == "empty":
        keep = " , "
    out = tmp_path / "out.csv"
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "-i", str(src), "-o", str(out), "--text-columns", "review",
                            "--keep-columns", keep], input=stdin)
    assert r.exit_code == 2, r.output
    line = one_error_line(r)
    assert {"missing_column": "column 'score' not found in input file", "txt_file": "needs a table input",
            "stdin_text": "--format csv", "clash": "'Label' has the name of a column predict writes",
            "empty": "--keep-columns is empty"}[case] in line
    if case == "missing_column":
        assert "available columns: id, review, stars" in line
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# The output path: never the input, checked before the model loads, every OS error one line


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as loading the model."""
    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(Classifier, "from_run_dir", boom)


def read_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a directory read-only; as root (whom modes do not stop) os.access is told so too."""
    import os

    path.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == path and mode & os.W_OK else real(p, mode, **kw))


@pytest.mark.parametrize("spelling", ["same", "dot_dot", "symlink", "hardlink"])
def test_predict_refuses_to_overwrite_its_input(spelling: str, trained_tiny_run: Path, tmp_path: Path, no_model_load: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """It refuses an --output that is the input file, however spelled or linked: one line, input untouched, nothing written."""
    import os

    src = tmp_path / "data.csv"
    src.write_text("text\nhello\nworld\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    out = {"same": "data.csv", "dot_dot": str(tmp_path / "sub" / ".." / "data.csv"), "symlink": "link.csv", "hardlink": "hard.csv"}[spelling]
    if spelling == "symlink":
        os.symlink("data.csv", "link.csv")
    elif spelling == "hardlink":
        os.link("data.csv", "hard.csv")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "-i", "./data.csv", "-o", out])
    assert r.exit_code == 2, r.output
    assert "is the input file" in one_error_line(r)
    assert src.read_text(encoding="utf-8") == "text\nhello\nworld\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("case", ["no_parent", "parent_is_file", "under_file", "read_only_dir"])
def test_predict_bad_output_path_exits_2_before_the_model_loads(case: str, trained_tiny_run: Path, tmp_path: Path, no_model_load: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """It refuses an --output in a missing, read-only or file 'directory' with one line, before loading the model, creating nothing."""
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    out = {"no_parent": tmp_path / "nodir" / "sub.csv", "parent_is_file": tmp_path / "file" / "sub.csv",
           "under_file": tmp_path / "file" / "a" / "sub.csv", "read_only_dir": tmp_path / "ro" / "sub.csv"}[case]
    if case == "read_only_dir":
        out.parent.mkdir()
        read_only(out.parent, monkeypatch)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "-i", str(src), "-o", str(out)])
    assert r.exit_code == 2, r.output
    line = one_error_line(r)
    assert {"no_parent": "does not exist; create it", "parent_is_file": "which is a file", "under_file": "which is a file",
            "read_only_dir": "is not writable"}[case] in line
    assert str(out) in line
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_predict_write_error_is_one_line(trained_tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It turns an OS error while writing the output (disk full, say) into one line and exit 2."""
    import errno

    import loraclf.predict

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loraclf.predict, "atomic_write", full)
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    r = runner.invoke(app, ["predict", str(trained_tiny_run), "-i", str(src), "-o", str(tmp_path / "sub.csv")])
    assert r.exit_code == 2, r.output
    assert "No space left on device" in one_error_line(r)
    assert not (tmp_path / "sub.csv").exists()
