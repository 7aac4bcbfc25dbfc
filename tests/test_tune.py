"""`loraclf tune`: study bookkeeping, bad input, SQLite resume, pruning, workers sharing a GPU, PostgreSQL workers, SIGKILL.

Trials use a learnable tiny encoder on an easy two-class set, so a good learning rate separates the
classes within a couple of dozen steps (one torch thread each: on a loaded 2-core machine several
threads per process mostly wait for each other).
"""
from __future__ import annotations

import csv
import gc
import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from loraclf.cli import app
from loraclf.config import load_config
from loraclf.tune import (TrialSeededTPE, check_space_values, counted, eval_interval, finished, make_storage, open_study,
                          with_installed_driver)
from loraclf.tune.run import worker_devices, worker_env
from loraclf.tune.worker import JOB_ENV, WorkerJob
from pg import postgres_server, why_unavailable

from helpers import LORACLF, free_port

SPACE = "tune.space={train.lr: {type: float, low: 0.02, high: 0.05, log: true}, lora.r: {type: categorical, choices: [4, 8]}}"
QUICK = ["train.batch_size=16", "train.grad_accum=1", "train.warmup_steps=0", "train.warmup_ratio=0", "train.threads=1",
         "train.epochs=2", "train.early_stopping_patience=0", "model.max_length=16", "data.val_fraction=0.25", "lora.dropout=0", "train.progress=false",
         "train.checkpoint_every_steps=1000", "tune.pruner=median", "tune.eval_points_per_epoch=3", SPACE]
DIVERGING = {"train.lr": 1.0, "lora.r": 4}  # Adam moves every weight by ~1 per step: the model turns to noise


@pytest.fixture(scope="module")
def learnable_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conftest's tokenizer with a 1-layer encoder (init std 0.1, no dropout) whose first token sees the text."""
    import shutil

    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    out = tmp_path_factory.mktemp("learnable")
    tok = RobertaTokenizerFast.from_pretrained(str(tiny_model))
    tok.save_pretrained(str(out))
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tiny_model / name, out / name)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=160, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, type_vocab_size=1, initializer_range=0.1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    RobertaForMaskedLM(cfg).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def easy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 three-word texts, sports or business words: learnable in a few dozen steps."""
    rng = random.Random(0)
    words = {"sports": "team game season coach win league player match".split(),
             "business": "stock market shares profit bank oil price trade".split()}
    path = tmp_path_factory.mktemp("easy") / "easy.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(400):
            label = ("sports", "business")[i % 2]
            w.writerow([" ".join(rng.choice(words[label]) for _ in range(3)), label])
    return path


def tune_args(model: Path, data: Path, study_dir: Path, *extra: str) -> list[str]:
    return ["tune", "--model", str(model), "--train-file", str(data), "--out", str(study_dir), *QUICK, *extra]


def read_log(study_dir: Path) -> list[dict[str, str]]:
    with open(study_dir / "experiment_log.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def live_peft_models() -> list[Any]:
    from peft import PeftModel

    gc.collect()
    return [o for o in gc.get_objects() if issubclass(type(o), PeftModel)]


# ---------------------------------------------------------------------------------------------
# Bookkeeping without training


def test_eval_interval_gives_several_points_per_epoch() -> None:
    """It spaces evaluations so an epoch, or max_steps when shorter, holds the requested number."""
    cfg = load_config(None, ["train.batch_size=16", "train.grad_accum=1"])
    assert eval_interval(cfg.train, 300, 3) == 7  # 19 steps per epoch -> every 7
    cfg.train.max_steps = 8
    assert eval_interval(cfg.train, 300, 4) == 2
    cfg.train.grad_accum, cfg.train.max_steps = 2, None
    assert eval_interval(cfg.train, 300, 1) == 10


def test_trial_count_ignores_retried_and_surplus_trials() -> None:
    """It counts complete, pruned, running and unretried failed trials, not a failure a retry replaced."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study()
    d = {"x": FloatDistribution(0, 1)}
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5, params={"x": 0.1}, distributions=d))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": 0.2}, distributions=d))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"x": 0.3}, distributions=d))  # #2: retried by #4
    study.add_trial(create_trial(state=TrialState.FAIL, params={"x": 0.4}, distributions=d))  # #3: not retried
    study.add_trial(create_trial(state=TrialState.WAITING, params={"x": 0.3}, distributions=d,
                                 system_attrs={"failed_trial": 2, "retry_history": [2]}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"surplus": True}))  # #5: stood down
    trials = study.get_trials()
    assert [t.number for t in counted(trials)] == [0, 1, 3, 4]
    assert [t.number for t in finished(trials)] == [0, 1, 3]


def test_sampler_draws_depend_on_seed_and_trial_number_only() -> None:
    """It draws the same values for the same seed and trial number, and different ones across trials."""
    def draws(seed: int) -> list[float]:
        study = optuna.create_study(sampler=TrialSeededTPE(seed, 5))
        out = []
        for _ in range(4):
            t = study.ask()
            out.append(t.suggest_float("x", 0.0, 1.0))
            study.tell(t, out[-1])
        return out

    a = draws(7)
    assert a == draws(7)
    assert len(set(a)) == 4
    assert a != draws(8)


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, nothing written


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["tune.space={}"], "tune.space: is empty"),
        (["tune.space={lora.r: {type: normal, low: 1, high: 4}}"], "is not a parameter type"),
        (["tune.space={lora.r: {type: int, low: 8, high: 4}}"], "low (8) must be below high (4)"),
        (["tune.space={lora.r: {type: categorical}}"], "choices: missing or empty"),
        (["tune.space={lora.rank: {type: categorical, choices: [4, 8]}}"], "'lora.rank' is not a config field"),
        (["tune.space={train.lr: {type: categorical, choices: [1e-3, 50]}}"], "the value 50 makes an invalid config"),
        (["--storage", "redis://localhost:6379/0"], "'redis' is not a relational database"),
        (["--storage", "not a url"], "is not a database URL"),
        (["--train-best"], "--train-best needs a test split"),
    ],
    ids=["empty-space", "unknown-type", "low-above-high", "missing-choices", "not-a-field", "invalid-value",
         "wrong-scheme", "not-a-url", "train-best-without-test"],
)
def test_bad_input_is_one_line_exit_2(extra: list[str], expected: str, tmp_path: Path, tiny_model: Path, easy_csv: Path) -> None:
    """It fails with one `error:` line and status 2 before any trial, leaving no study directory."""
    out = tmp_path / "study"
    r = CliRunner().invoke(app, [*tune_args(tiny_model, easy_csv, out), *extra])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert expected in lines[0]
    assert not out.exists()


def test_unreachable_storage_is_one_line_exit_2(tmp_path: Path, tiny_model: Path, easy_csv: Path) -> None:
    """It says the PostgreSQL server cannot be reached (nothing listens on the port), without the password."""
    url = f"postgresql://loraclf:s3cret@127.0.0.1:{free_port()}/studies"
    r = CliRunner().invoke(app, [*tune_args(tiny_model, easy_csv, tmp_path / "study"), "--storage", url])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach the study storage" in lines[0], r.output
    assert "s3cret" not in r.output
    assert not (tmp_path / "study").exists()


def _bad_data(kind: str, path: Path, good: Path) -> Path:
    """A training file `loraclf tune` must refuse: no text column, one class only, or not text at all."""
    rows = list(csv.reader(open(good, newline="", encoding="utf-8")))[1:]
    if kind == "binary":
        path.write_bytes(bytes(b for b in range(256) if b not in b"\r\n") * 64)  # not UTF-8
        return path
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if kind == "no-text-column":
            w.writerow(["body", "label"])
            w.writerows(rows)
        else:  # one class
            w.writerow(["text", "label"])
            w.writerows([r[0], "sports"] for r in rows)
    return path


@pytest.mark.parametrize("kind, expected", [("no-text-column", "text"), ("one-class", "class"), ("binary", "not a text file")])
def test_bad_data_fails_before_the_study_is_created(kind: str, expected: str, tmp_path: Path, tiny_model: Path, easy_csv: Path) -> None:
    """It checks the data before creating the study: one line, status 2, and no study.db or directory left behind."""
    bad = _bad_data(kind, tmp_path / "bad.csv", easy_csv)
    out = tmp_path / "study"
    r = CliRunner().invoke(app, [*tune_args(tiny_model, bad, out), "--study-name", "s"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.output
    assert not out.exists()
    # A study directory that existed before keeps its files, and gains no study.db.
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = CliRunner().invoke(app, [*tune_args(tiny_model, bad, out), "--study-name", "s"])
    assert r.exit_code == 2, r.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_corrected_data_after_a_failed_start_runs(tmp_path: Path, learnable_model: Path, easy_csv: Path) -> None:
    """It runs the corrected command in the same study directory after a start that failed on bad data."""
    out = tmp_path / "study"
    bad = _bad_data("no-text-column", tmp_path / "bad.csv", easy_csv)
    r = CliRunner().invoke(app, [*tune_args(learnable_model, bad, out), "--study-name", "s", "--trials", "1", "train.epochs=1"])
    assert r.exit_code == 2, r.output
    assert not (out / "study.db").exists()
    # The corrected command may change the space too: nothing ran, so no study holds the old one.
    narrower = "tune.space={train.lr: {type: float, low: 0.03, high: 0.05, log: true}, lora.r: {type: categorical, choices: [4, 8]}}"
    r = CliRunner().invoke(app, [*tune_args(learnable_model, easy_csv, out), "--study-name", "s", "--trials", "1", "train.epochs=1", narrower])
    assert r.exit_code == 0, r.output
    assert [row["state"] for row in read_log(out)] in (["complete"], ["pruned"])


def test_existing_study_with_another_space_is_refused(tmp_path: Path, tiny_model: Path, easy_csv: Path) -> None:
    """It refuses to add trials to a study created with a different search space."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    other = load_config(None, ["tune.study_name=shared", "tune.space={lora.r: {type: categorical, choices: [2, 4]}}"])
    open_study(other, make_storage(url, other.tune), check_space_values(other))
    r = CliRunner().invoke(app, [*tune_args(tiny_model, easy_csv, tmp_path / "study"), "--storage", url, "--study-name", "shared"])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: study 'shared' already exists") and "different search space" in r.output
    assert len(r.output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# SQLite "database is locked" in the middle of a trial (faked storage calls; training faked too)


LOCKING = ("set_trial_user_attr", "set_trial_intermediate_value", "_get_trials", "set_trial_state_values")


def _fake_train(cfg: Any, run_dir: Any, *, on_eval: Any, **kw: Any) -> dict[str, Any]:
    """Three evaluations (reports, user attrs, should_prune) and the metrics `loraclf tune` reads: no model."""
    for step in (1, 2, 3):
        on_eval(step, {"val_accuracy": 0.5 + 0.1 * step, "val_loss": 1.0 / step, "epoch": step / 3})
    return {"val_accuracy": 0.8, "val_loss": 0.3, "epochs_run": 1.0, "global_step": 3}


def _lock_storage(monkeypatch: pytest.MonkeyPatch, times: float, names: tuple[str, ...] = LOCKING) -> dict[str, int]:
    """Make each RDBStorage method in `names` raise SQLite's "database is locked" (as optuna wraps it) its first
    `times` calls; returns the number of lock errors raised per method."""
    import sqlite3

    import sqlalchemy.exc

    raised = dict.fromkeys(names, 0)
    for name in names:
        real = getattr(optuna.storages.RDBStorage, name)

        def flaky(self: Any, *args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            if raised[_name] < times:
                raised[_name] += 1
                try:
                    raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, sqlite3.OperationalError("database is locked"))
                except sqlalchemy.exc.OperationalError as e:
                    raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(optuna.storages.RDBStorage, name, flaky)
    return raised


def test_locked_storage_mid_trial_is_retried_and_the_trial_completes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                    tiny_model: Path, easy_csv: Path) -> None:
    """It retries "database is locked" from trial.report, set_user_attr, should_prune and tell; both trials complete."""
    import loraclf.train

    monkeypatch.setattr(loraclf.train, "train", _fake_train)
    out = tmp_path / "study"
    raised = _lock_storage(monkeypatch, 2)
    r = CliRunner().invoke(app, [*tune_args(tiny_model, easy_csv, out), "--study-name", "locked", "--trials", "2"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert raised == dict.fromkeys(LOCKING, 2), "every faked method must have been locked twice"
    assert [(row["state"], row["val_accuracy"]) for row in read_log(out)] == [("complete", "0.8")] * 2
    study = optuna.load_study(study_name="locked", storage=f"sqlite:///{out / 'study.db'}")
    assert [sorted(t.intermediate_values) for t in study.trials] == [[1, 2, 3]] * 2


def test_storage_locked_for_too_long_stops_the_worker_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                  tiny_model: Path, easy_csv: Path) -> None:
    """It gives up after LockRetryingRDBStorage.lock_wait_s with one `error:` line (status 2), not a traceback."""
    import loraclf.train
    from loraclf.tune.storage import LockRetryingRDBStorage

    monkeypatch.setattr(loraclf.train, "train", _fake_train)
    monkeypatch.setattr(LockRetryingRDBStorage, "lock_wait_s", 0.3)
    out = tmp_path / "study"
    _lock_storage(monkeypatch, float("inf"), ("set_trial_intermediate_value",))  # trial.report, mid-trial
    r = CliRunner().invoke(app, [*tune_args(tiny_model, easy_csv, out), "--study-name", "locked", "--trials", "2"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the study storage") and "stayed locked for 0.3s" in lines[0], r.output
    assert "set_trial_intermediate_value" in lines[0]


def test_every_retried_storage_method_exists() -> None:
    """It names only methods RDBStorage has (an optuna upgrade that renames one must fail here, not go unretried)."""
    from loraclf.tune.storage import RETRIED_METHODS

    assert [m for m in RETRIED_METHODS if not callable(getattr(optuna.storages.RDBStorage, m, None))] == []


# ---------------------------------------------------------------------------------------------
# SQLite: run 2 trials, plant a diverging one, resume to 4 (in this process, to check memory)


@pytest.fixture(scope="module")
def resumed_study(learnable_model: Path, easy_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    study_dir = tmp_path_factory.mktemp("sqlite") / "easy"
    before = {id(m) for m in live_peft_models()}
    args = tune_args(learnable_model, easy_csv, study_dir, "--study-name", "easy")
    r1 = CliRunner().invoke(app, [*args, "--trials", "2"])
    assert r1.exit_code == 0, r1.output
    first = read_log(study_dir)
    study = optuna.load_study(study_name="easy", storage=f"sqlite:///{study_dir / 'study.db'}")
    study.enqueue_trial(DIVERGING)  # trial 2: a planted learning rate that diverges
    r2 = CliRunner().invoke(app, [*args, "--trials", "4"])
    assert r2.exit_code == 0, r2.output
    leaked = [m for m in live_peft_models() if id(m) not in before]
    return {"dir": study_dir, "first": first, "final": read_log(study_dir), "output": r2.output, "leaked": len(leaked)}


def test_sqlite_study_resumes_and_keeps_earlier_trials(resumed_study: dict[str, Any]) -> None:
    """It stores the study in STUDY_DIR/study.db with no server and resumes it: 2 trials, then 4 in all."""
    assert (resumed_study["dir"] / "study.db").is_file()
    first, final = resumed_study["first"], resumed_study["final"]
    assert [r["number"] for r in first] == ["0", "1"]
    assert [r["number"] for r in final] == ["0", "1", "2", "3"]
    assert final[:2] == first, "a resumed study must keep its earlier trials unchanged"
    assert all(r["state"] in ("complete", "pruned") for r in final)


def test_diverging_trial_is_pruned_before_its_last_evaluation(resumed_study: dict[str, Any]) -> None:
    """It stops the planted lr=1.0 trial early and logs the step it was pruned at."""
    rows = {r["number"]: r for r in resumed_study["final"]}
    planted = rows["2"]
    assert float(planted["param.train.lr"]) == DIVERGING["train.lr"]
    assert planted["state"] == "pruned", planted
    full_steps = int(rows["0"]["steps_run"])  # a trial that ran to the end
    assert 0 < int(planted["pruned_step"]) < full_steps
    assert int(planted["steps_run"]) == int(planted["pruned_step"])
    assert float(rows["0"]["val_accuracy"]) > float(planted["val_accuracy"])
    assert "trial 2 pruned" in resumed_study["output"]


def test_study_directory_holds_log_best_and_plots(resumed_study: dict[str, Any]) -> None:
    """It writes best.json, a trainable best.yaml, the plots, and a normal run directory per trial, the best one a learned classifier."""
    import json

    d = resumed_study["dir"]
    best = json.loads((d / "best.json").read_text())
    completes = [r for r in resumed_study["final"] if r["state"] == "complete"]
    assert best["val_accuracy"] == pytest.approx(max(float(r["val_accuracy"]) for r in completes))
    cfg = load_config(d / "best.yaml")
    assert cfg.train.lr == pytest.approx(best["params"]["train.lr"]) and cfg.lora.r == best["params"]["lora.r"]
    for name in ("optimization_history", "parallel_coordinate", "param_importances"):
        assert (d / f"{name}.png").stat().st_size > 1000, name
    row = resumed_study["final"][0]
    assert Path(row["run_dir"]) == d / "trials" / "trial-0"
    from loraclf.inference import Classifier

    assert best["val_accuracy"] >= 0.9, best  # two balanced classes: chance is 0.5
    assert Classifier.from_run_dir(best["run_dir"]).predict(["team game win", "stock market profit"]) == ["sports", "business"]
    for col in ("val_loss", "epochs_run", "duration_s", "worker"):
        assert row[col], col


def test_trials_release_their_models(resumed_study: dict[str, Any]) -> None:
    """It leaves no model of a finished or pruned trial alive in the worker process."""
    assert resumed_study["leaked"] == 0


# ---------------------------------------------------------------------------------------------
# Several processes: PostgreSQL shared by two `loraclf tune` processes; a worker killed with SIGKILL


def _study_trials(url: str, name: str) -> list[Any]:
    return optuna.load_study(study_name=name, storage=with_installed_driver(url)).get_trials(deepcopy=False)


@pytest.mark.slow
@pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))
def test_two_processes_share_one_postgres_study(learnable_model: Path, easy_csv: Path, tmp_path: Path) -> None:
    """It runs two separate `loraclf tune` processes on one PostgreSQL study: unique numbers, the count adds up."""
    with postgres_server() as url:
        procs = [subprocess.Popen([*LORACLF, *tune_args(learnable_model, easy_csv, tmp_path / f"machine{i}"), "--storage", url,
                                   "--study-name", "shared", "--trials", "4", "train.epochs=1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=400) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err
        trials = _study_trials(url, "shared")
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert len(finished(trials)) == 4 and len(counted(trials)) == 4
    workers = {t.user_attrs["worker"] for t in counted(trials)}
    assert workers == {f"{socket.gethostname()}:{p.pid}" for p in procs}, "both processes must have run trials"
    for i in range(2):  # each machine's log lists every trial of the study
        assert sorted(int(r["number"]) for r in read_log(tmp_path / f"machine{i}")) == sorted(t.number for t in counted(trials))


def test_trial_that_fails_in_train_says_why(tmp_path: Path, tiny_model: Path, easy_csv: Path) -> None:
    """It writes the one-line reason of a trial that train() refused into the trial's line and experiment_log.csv."""
    study_dir = tmp_path / "study"
    r = CliRunner().invoke(app, [*tune_args(tiny_model, easy_csv, study_dir), "--study-name", "toolong", "--trials", "1",
                                 "model.max_length=4096"])
    assert r.exit_code == 0, r.output
    (row,) = read_log(study_dir)
    assert row["state"] == "fail" and "model.max_length=4096" in row["error"], row
    assert "error: model.max_length=4096" in r.output


def test_workers_share_one_gpu_and_take_several_in_turn() -> None:
    """It gives each of K workers the one GPU (they run side by side on it), spreads them over several GPUs in
    turn, and gives none on CPU."""
    assert worker_devices(4, ["0"]) == ["0"] * 4
    assert worker_devices(3, ["2", "5"]) == ["2", "5", "2"]
    assert worker_devices(2, []) == [None, None]


def test_worker_env_names_its_gpu_and_drops_a_launchers_process_group() -> None:
    """It hands a worker its job and its GPU, and none of a launcher's RANK/WORLD_SIZE (its trials would wait for peers)."""
    job = WorkerJob({"name": "x"}, "studies/x", "sqlite:///x.db", "w1", 2)
    env = worker_env(job, "3", {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "3,4", "RANK": "1", "LOCAL_RANK": "1",
                                "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "29500"})
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["PATH"] == "/bin"
    assert not {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} & set(env)
    assert WorkerJob(**json.loads(env[JOB_ENV])) == job
    assert worker_env(job, None, {"CUDA_VISIBLE_DEVICES": ""})["CUDA_VISIBLE_DEVICES"] == ""  # CPU: left as it was


def test_two_workers_on_one_gpu_run_the_study_side_by_side(monkeypatch: pytest.MonkeyPatch, learnable_model: Path,
                                                           easy_csv: Path, tmp_path: Path) -> None:
    """With one GPU (pretended: the workers train on CPU here), --workers 2 starts two processes, both given that
    GPU, and both run trials until the study holds its count."""
    import loraclf.tune.run as tune_run

    monkeypatch.setattr(tune_run, "_visible_gpus", lambda: ["0"])
    started: list[tuple[int, str | None]] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
        proc = real_popen(*args, **kwargs)
        started.append((proc.pid, (kwargs.get("env") or {}).get("CUDA_VISIBLE_DEVICES")))
        return proc

    monkeypatch.setattr(tune_run.subprocess, "Popen", popen)
    study_dir = tmp_path / "study"
    r = CliRunner().invoke(app, [*tune_args(learnable_model, easy_csv, study_dir), "--study-name", "onegpu", "--workers", "2",
                                 "--trials", "4", "train.epochs=1"])
    assert r.exit_code == 0, r.output
    assert [gpu for _, gpu in started] == ["0", "0"]
    trials = _study_trials(f"sqlite:///{study_dir / 'study.db'}", "onegpu")
    assert len(finished(trials)) == 4 and len(counted(trials)) == 4
    assert {t.user_attrs["worker"] for t in counted(trials)} == {f"{socket.gethostname()}:{pid}" for pid, _ in started}


@pytest.mark.slow
def test_killed_worker_trial_fails_by_heartbeat_and_is_retried(learnable_model: Path, easy_csv: Path, tmp_path: Path) -> None:
    """It fails a SIGKILLed worker's trial by heartbeat, retries it on the other worker, and still reaches the count."""
    study_dir = tmp_path / "study"
    url = f"sqlite:///{study_dir / 'study.db'}"
    proc = subprocess.Popen([*LORACLF, *tune_args(learnable_model, easy_csv, study_dir), "--study-name", "kill", "--workers", "2",
                             "--trials", "5", "tune.heartbeat_interval=1", "tune.grace_period=4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.time() + 300
    while victim is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            trials = _study_trials(url, "kill")
        except Exception:  # the study or its tables do not exist yet
            continue
        running = [t for t in trials if t.state.name == "RUNNING" and "run_dir" in t.user_attrs]
        started_by = {t.user_attrs.get("worker") for t in trials if "worker" in t.user_attrs}
        # Both workers have started, and one is training (its log exists): kill that one mid-trial.
        training = [t for t in running if (Path(t.user_attrs["run_dir"]) / "log.jsonl").exists()]
        if training and len(started_by) == 2:
            victim = training[0]
    if victim is None:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"no trial was seen training (tune exit status {proc.returncode}): {err[-2000:]}")
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    assert "died" in err, err
    trials = _study_trials(url, "kill")
    dead = next(t for t in trials if t.number == victim.number)
    summary = [(t.number, t.state.name, t.system_attrs.get("retry_history")) for t in trials]
    assert dead.state.name == "FAIL", summary
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state.name in ("COMPLETE", "PRUNED"), summary
    assert retries[0].params == dead.params
    assert len(finished(trials)) == 5, summary
    logged = {r["number"]: r for r in read_log(study_dir)}
    assert logged[str(victim.number)]["state"] == "fail"
    assert logged[str(retries[0].number)]["retry_of"] == str(victim.number)


def test_storage_retries_when_another_process_just_created_the_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It opens a fresh SQLite study even when another process created its tables between our check and our
    CREATE TABLE (SQLite then says "table studies already exists"), instead of failing the worker."""
    import sqlalchemy.exc

    from loraclf.tune.storage import LockRetryingRDBStorage

    real_init, calls = LockRetryingRDBStorage.__init__, []

    def racing_init(self, *args, **kwargs):  # noqa: ANN001, ANN202 - the storage's own signature
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(LockRetryingRDBStorage, "__init__", racing_init)
    monkeypatch.setattr("loraclf.tune.storage.time.sleep", lambda s: None)
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", load_config(None).tune)
    assert len(calls) == 2 and storage.get_all_studies() == []
