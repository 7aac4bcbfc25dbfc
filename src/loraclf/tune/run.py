"""The `loraclf tune` command: check, open the study, run its workers (here or in subprocesses), report,
and with --train-best retrain the winner, score the test split and write submission.csv.

Everything is checked (space, storage URL, data, then the study) before a trial runs, so bad input
fails once, here, with one line, and leaves no study directory or study.db behind.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data import Splits, load_splits, read_labeled
from ..errors import ConfigError, LoraclfError
from .outputs import LOG_CSV, write_best, write_experiment_log, write_plots
from .space import best_config, check_space_values
from .storage import check_storage_url, default_storage, make_storage, masked, sqlite_path
from .study import finished, open_study, quiet_optuna, state_counts
from .worker import JOB_ENV, Say, WorkerJob, release_memory, run_worker, say_stderr


# ---------------------------------------------------------------------------------------------
# --train-best: retrain the winner, score the test split, write submission.csv


def train_best(cfg: Config, study_dir: Path, say: Say = say_stderr) -> dict[str, Any]:
    """Train `cfg` into STUDY_DIR/best, predict the whole test split and write submission.csv (ID,Label).

    Returns:
        test_accuracy (when the test split has labels), test_rows, run_dir, submission.
    Raises:
        LoraclfError: no test split, bad data.
    """
    from ..inference import Classifier
    from ..metrics import compute_metrics, softmax
    from ..predict import predictions_csv, write_predictions
    from ..train import train

    run_dir = study_dir / "best"
    splits = load_splits(cfg.data, cfg.train.seed)
    say(f"training the best configuration into {run_dir}")
    metrics = train(dataclasses.replace(cfg, out=str(run_dir)), run_dir, overwrite=True, splits=dataclasses.replace(splits, test=None))
    # Every test row, not data.max_eval_rows of them: a submission answers the whole file.
    test = read_labeled(cfg.data.test_file, cfg.data, metrics["label_names"], role="test") if cfg.data.test_file else splits.test
    if test is None:
        raise ConfigError("--train-best needs a test split; pass --test-file (or data.test_file)")
    clf = Classifier.from_run_dir(run_dir)
    logits = clf.logits(test.texts)  # logits, not probabilities: the test score needs them too
    names = clf.label_names
    del clf
    release_memory()
    path = study_dir / "submission.csv"
    # Label names where the data's labels are names, as predict writes them; class ids otherwise (the study's layout).
    write_predictions(path, predictions_csv(softmax(logits), names, label_as_name=splits.labels_are_names))
    out: dict[str, Any] = {"best_run_dir": str(run_dir), "submission": str(path), "test_rows": len(logits),
                           "best_val_accuracy_retrained": metrics["val_accuracy"]}
    if test.labels is not None:
        out["test_accuracy"] = compute_metrics(logits, test.labels, names)["accuracy"]
    return out


# ---------------------------------------------------------------------------------------------
# Local worker processes


def _worker_threads(workers: int, cfg: Config) -> int | None:
    """CPU: split the cores between local workers (unless train.threads says otherwise)."""
    if workers < 2 or cfg.train.threads:
        return cfg.train.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def _visible_gpus() -> list[str]:
    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g.strip() for g in env.split(",") if g.strip()] if env else [str(i) for i in range(torch.cuda.device_count())]


# A launcher's process-group settings (torchrun, accelerate launch): a worker inheriting them would make its
# trial's Accelerator wait for peers that never come. Each worker's trials are single-process runs.
_GROUP_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
              "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
              "TORCHELASTIC_MAX_RESTARTS")


def worker_devices(workers: int, gpus: list[str]) -> list[str | None]:
    """Each worker's GPU (its CUDA_VISIBLE_DEVICES): the visible GPUs in turn, so K workers on one GPU all
    get that GPU and run side by side on it, and K workers on G GPUs share them K/G each; None on CPU."""
    return [gpus[i % len(gpus)] if gpus else None for i in range(workers)]


def worker_env(job: WorkerJob, gpu: str | None, environ: dict[str, str]) -> dict[str, str]:
    """The environment of one worker subprocess: its job, its GPU, no inherited process-group settings."""
    env = {k: v for k, v in environ.items() if k not in _GROUP_ENV}
    env[JOB_ENV] = json.dumps(dataclasses.asdict(job))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu  # seen as cuda:0 inside the worker
    return env


def _spawn_workers(jobs: list[WorkerJob], say: Say) -> list[int]:
    """Start one `python -m loraclf.tune` per job (GPUs shared out by `worker_devices`); wait for all."""
    devices = worker_devices(len(jobs), _visible_gpus())
    procs = [subprocess.Popen([sys.executable, "-m", "loraclf.tune"], env=worker_env(job, gpu, dict(os.environ)))
             for job, gpu in zip(jobs, devices)]
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # workers requeue their trial and exit
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise


# ---------------------------------------------------------------------------------------------
# The command


def _first_missing(path: Path) -> Path | None:
    """The outermost of `path` and its parents that does not exist yet (None when `path` exists)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _open_new_or_existing(cfg: Config, url: str, study_dir: Path, params: dict[str, Any]) -> Any:
    """Create the study directory and open the study; on failure remove the directories and the SQLite
    file this call created (files that were there before stay untouched), so a failed start leaves nothing.
    """
    new_dir = _first_missing(study_dir)
    db = sqlite_path(url)
    new_db = db is not None and not db.exists()
    try:
        study_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives here
        return open_study(cfg, make_storage(url, cfg.tune), params)
    except BaseException:
        if new_db:
            for p in (db, *(db.with_name(db.name + s) for s in ("-journal", "-wal", "-shm"))):
                p.unlink(missing_ok=True)
        if new_dir is not None:
            shutil.rmtree(new_dir, ignore_errors=True)
        raise


def run_study(cfg: Config, study_dir: str | Path | None = None, *, workers: int = 1, retrain_best: bool = False,
              say: Say = say_stderr, splits: Splits | None = None) -> dict[str, Any]:
    """Run (or resume) the study `cfg.tune` describes and write its outputs into `study_dir`.

    Args:
        cfg: validated base config; `cfg.tune` holds the study settings and the search space.
        study_dir: outputs (default studies/<study_name>).
        workers: trial processes to run on this machine (1: in this process). With CUDA they share the
            visible GPUs in turn (K workers on one GPU run side by side on it); on CPU the cores are split.
        retrain_best: retrain the best configuration on the full training split, score the test split,
            write submission.csv.
        say: where progress lines go.
        splits: `load_splits(cfg.data, cfg.train.seed)` when the caller has loaded it already.
    Returns:
        A summary: study, storage, counts, best trial, output files.
    Raises:
        LoraclfError: bad space, storage, study, data or config; nothing is run.
    """
    quiet_optuna()
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1")
    study_dir = Path(study_dir) if study_dir else Path("studies") / cfg.tune.study_name
    params = check_space_values(cfg)
    if retrain_best and cfg.data.train_file and not cfg.data.test_file:
        raise ConfigError("--train-best needs a test split to score and predict; pass --test-file (or data.test_file)")
    url = cfg.tune.storage or default_storage(study_dir)
    check_storage_url(url)
    # Bad data fails once, here, not in every worker, and before the study exists: a study created by a
    # failed start would hold its search space and refuse the corrected command's.
    splits = splits or load_splits(cfg.data, cfg.train.seed)
    study = _open_new_or_existing(cfg, url, study_dir, params)
    base = cfg.to_dict()
    t0 = time.monotonic()
    if workers == 1:
        run_worker(WorkerJob(base, str(study_dir), url, "w0", cfg.train.threads), splits, say)
    else:
        threads = _worker_threads(workers, cfg)
        jobs = [WorkerJob(base, str(study_dir), url, f"w{i}", threads) for i in range(workers)]
        codes = _spawn_workers(jobs, say)
        if any(codes):
            dead = ", ".join(f"w{i} (status {c})" for i, c in enumerate(codes) if c)
            if len(finished(study.get_trials(deepcopy=False))) < cfg.tune.trials:
                write_experiment_log(study_dir, study, list(params))
                raise LoraclfError(f"worker(s) {dead} stopped before the study was done (see above); "
                                   "re-run the same command to resume it")
            say(f"warning: worker(s) {dead} died; the others finished the study (their trials were retried)")
    wall = time.monotonic() - t0
    write_experiment_log(study_dir, study, list(params))
    plots = write_plots(study_dir, study)
    best = write_best(study_dir, study, cfg, url)
    summary: dict[str, Any] = {"study_name": cfg.tune.study_name, "storage": masked(url), "study_dir": str(study_dir),
                               "wall_seconds": round(wall, 1), "best": best, "plots": plots,
                               "experiment_log": str(study_dir / LOG_CSV)}
    summary["trials"] = {s: n for s, n in state_counts(study.get_trials(deepcopy=False)).items() if n}
    if retrain_best:
        if best is None:
            raise LoraclfError(f"study '{cfg.tune.study_name}' has no complete trial yet; nothing to retrain (run more trials)")
        result = train_best(best_config(cfg, best["params"]), study_dir, say)
        summary["train_best"] = result
        write_best(study_dir, study, cfg, url, extra=result)
    return summary
