"""One worker: the trial loop (the objective around `train()`), memory release between trials, interrupts.

A worker runs in the `loraclf tune` process (one worker) or as a subprocess, `python -m loraclf.tune`,
that reads its `WorkerJob` from $LORACLF_TUNE_JOB (`worker_main`). Workers share nothing but the
study's storage (and the study directory, whose files they rewrite after every trial).

    loop: [fail dead trials and queue retries] -> ask -> copy the config with the trial's values
          -> train, reporting validation accuracy at every evaluation (pruned trials stop there)
          -> free memory -> refresh experiment_log.csv and best.*
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import signal
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from optuna.trial import TrialState

from ..batching import TokenCache
from ..config import config_from_dict
from ..data import Splits, load_splits
from ..errors import ConfigError, LoraclfError
from .outputs import trial_line, write_best, write_experiment_log
from .space import apply_params, check_space_values, suggest
from .storage import StorageLockedError, make_storage
from .study import counted, eval_interval, finished, open_study, quiet_optuna, trial_by_number

TRIALS_DIR = "trials"
JOB_ENV = "LORACLF_TUNE_JOB"  # a worker subprocess reads its job (JSON) from here

Say = Callable[[str], None]


def say_stderr(msg: str) -> None:
    """The default `say`: one progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class WorkerJob:
    """What a worker needs; JSON-serialisable so a subprocess can receive it."""

    config: dict[str, Any]
    study_dir: str
    storage: str
    worker: str = "w0"
    threads: int | None = None


class _Surplus(Exception):
    """This trial would exceed tune.trials (another worker got there first)."""


class _Locked(Exception):
    """Carries a StorageLockedError past optuna's `catch` (which holds LoraclfError): it stops the worker."""


def release_memory() -> None:
    """Free the last trial's model and optimizer before the next one is built."""
    gc.collect()  # the model sits in reference cycles (and a pruned trial's traceback) until collected
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _requeue_interrupted(study: Any, number: int | None) -> None:
    """Ctrl-C/SIGTERM mid-trial: queue the trial again so a resumed study runs it (not counted as failed)."""
    t = trial_by_number(study, number)
    if t is not None and t.state == TrialState.FAIL and not t.user_attrs.get("surplus"):
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, t)


def _mark_interrupted(trial: optuna.Trial, run_dir: Path) -> None:
    """Ctrl-C/SIGTERM mid-trial: say so in the trial's error, and remove its partial run (queued again by
    `_requeue_interrupted`, it trains from scratch)."""
    trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM) before it finished; queued to run again")
    for partial in (run_dir, run_dir.parent / f".{run_dir.name}.new"):
        shutil.rmtree(partial, ignore_errors=True)


def run_worker(job: WorkerJob, splits: Splits | None = None, say: Say = say_stderr) -> int:
    """Run trials against the study until it holds tune.trials finished ones (or tune.timeout passes).

    Args:
        job: base config, study directory, storage URL, worker label, torch threads.
        splits: data already loaded (otherwise loaded here, once for all trials).
        say: where progress lines go.
    Returns:
        The number of trials this worker ran.
    Raises:
        LoraclfError: bad storage, study, data or config.
    """
    from ..train import train

    quiet_optuna()
    cfg = config_from_dict(job.config)
    if job.threads:
        torch.set_num_threads(job.threads)
        cfg.train.threads = job.threads
    params = check_space_values(cfg)
    splits = splits or load_splits(cfg.data, cfg.train.seed)
    splits = dataclasses.replace(splits, test=None)  # trials are chosen on validation; the test set stays unseen
    token_cache = TokenCache()  # trials with the same tokenizer and max_length tokenize once
    n_train = len(splits.train.texts)
    study_dir = Path(job.study_dir)
    study = open_study(cfg, make_storage(job.storage, cfg.tune), params, eval_interval(cfg.train, n_train, cfg.tune.eval_points_per_epoch))
    target, who = cfg.tune.trials, f"{socket.gethostname()}:{os.getpid()}"
    current: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        try:
            return run_trial(trial)
        except StorageLockedError as e:
            # Every storage call already waited LOCK_WAIT_S for the lock; failing this trial and starting
            # the next would fail that one too, so the worker stops (one line) and a re-run resumes.
            raise _Locked(e) from None

    def run_trial(trial: optuna.Trial) -> float:
        current["number"] = trial.number
        trial.set_user_attr("worker", who)
        # Two workers may both start "the last" trial; the one with the higher number stands down.
        if sum(t.number < trial.number for t in counted(study.get_trials(deepcopy=False))) >= target:
            trial.set_user_attr("surplus", True)
            raise _Surplus()
        values = suggest(trial, params)
        run_dir = study_dir / TRIALS_DIR / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            tcfg = apply_params(cfg, values, name=run_dir.name, out=str(run_dir))
        except ConfigError as e:
            trial.set_user_attr("error", str(e))
            raise
        tcfg.train.progress = False
        if cfg.tune.eval_points_per_epoch:
            tcfg.train.eval_every_steps = eval_interval(tcfg.train, n_train, cfg.tune.eval_points_per_epoch)

        def on_eval(step: int, m: dict[str, Any]) -> None:
            trial.set_user_attr("val_accuracy", m["val_accuracy"])
            trial.set_user_attr("val_loss", m["val_loss"])
            trial.set_user_attr("epochs_run", round(m["epoch"], 4))
            trial.set_user_attr("steps_run", step)
            trial.report(m["val_accuracy"], step)
            if trial.should_prune():
                trial.set_user_attr("pruned_step", step)
                raise optuna.TrialPruned(f"pruned at step {step} with val_accuracy {m['val_accuracy']:.4f}")

        try:
            metrics = train(tcfg, run_dir, overwrite=True, on_eval=on_eval, splits=splits, token_cache=token_cache,
                            console=False)  # one line per trial from the study instead
            for k in ("val_accuracy", "val_loss", "epochs_run", "global_step"):
                trial.set_user_attr("steps_run" if k == "global_step" else k, metrics[k])
        except optuna.exceptions.UpdateFinishedTrialError:
            current["stale"] = True
            raise
        except KeyboardInterrupt:
            _mark_interrupted(trial, run_dir)
            raise
        except LoraclfError as e:  # the trial fails (optuna catches it); its line and the log say why
            if not isinstance(e, StorageLockedError):  # that one stops the worker, and the storage is busy
                trial.set_user_attr("error", " ".join(str(e).split()))
            raise
        current["returned"] = True
        return float(metrics["val_accuracy"])

    ran, started = 0, time.monotonic()
    poll = min(5.0, max(0.5, cfg.tune.heartbeat_interval / 2))
    catch = (LoraclfError, _Surplus, torch.OutOfMemoryError)
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed, retry queued
        trials = study.get_trials(deepcopy=False)
        if len(finished(trials)) >= target:
            break
        if cfg.tune.timeout is not None and time.monotonic() - started > cfg.tune.timeout:
            say(f"[{job.worker}] tune.timeout ({cfg.tune.timeout:g}s) reached; not starting more trials")
            break
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if len(counted(trials)) >= target and not waiting:
            # The rest are running elsewhere: wait, so a dead worker's trial is retried here.
            time.sleep(poll)
            continue
        current.clear()
        try:
            study.optimize(objective, n_trials=1, catch=catch)
        except KeyboardInterrupt:
            _requeue_interrupted(study, current.get("number"))
            raise
        except _Locked as e:
            raise e.args[0] from None
        except Exception:
            # Another worker saw no heartbeat from this trial for tune.grace_period seconds (an
            # overloaded machine), failed it and queued its retry; optuna then cannot record this
            # run's result (the exception type varies). Anything else is a real error.
            mine = trial_by_number(study, current.get("number"))
            if not (current.get("stale") or current.get("returned")) or mine is None or mine.state != TrialState.FAIL:
                raise
            say(f"[{job.worker}] trial {current.get('number')} was failed by another worker for a missed heartbeat "
                f"(tune.grace_period={cfg.tune.grace_period}s is too short for this machine); its retry runs instead")
            release_memory()
            continue
        release_memory()
        ran += 1
        t = trial_by_number(study, current.get("number"))
        if t is not None and t.user_attrs.get("surplus"):
            continue
        if t is not None:
            say(f"[{job.worker}] {trial_line(t)}")
        write_experiment_log(study_dir, study, list(params))
        write_best(study_dir, study, cfg, job.storage)
    return ran


def worker_main() -> int:
    """Entry point of a worker subprocess: `python -m loraclf.tune` with its job in $LORACLF_TUNE_JOB."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    job = WorkerJob(**json.loads(os.environ[JOB_ENV]))
    try:
        run_worker(job)
    except LoraclfError as e:
        print(f"error: [{job.worker}] " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
