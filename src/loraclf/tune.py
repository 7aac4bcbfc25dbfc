"""`loraclf tune`: an Optuna study over the same `train()` that `loraclf train` runs.

    check the space and storage -> open (or resume) the study -> load the data once per worker
    -> workers loop: [fail dead trials and queue retries] -> ask -> copy the config with the
       trial's values -> train, reporting validation accuracy at every evaluation (pruned trials
       stop there) -> free memory -> refresh experiment_log.csv and best.*
    -> plots -> [retrain the best config, score the test split, write submission.csv]

One study lives in one RDB storage: an SQLite file in the study directory by default, or any
database URL (PostgreSQL) that several processes and machines share. `tune.trials` counts the
whole study, so workers stop when it holds that many finished trials. A worker that dies leaves a
trial whose heartbeat stops; the next worker to look fails it and queues a retry with its values.
"""
from __future__ import annotations

import csv
import dataclasses
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from .batching import TokenCache, steps_per_epoch
from .config import Config, SearchParam, config_from_dict, set_dotted
from .data import Splits, load_splits, read_labeled
from .errors import ConfigError, LoraclfError
from .io import atomic_write, write_json

SPACE_ATTR = "loraclf_space"  # study user attr: the canonical space, compared on every re-open
LOG_CSV = "experiment_log.csv"
TRIALS_DIR = "trials"
JOB_ENV = "LORACLF_TUNE_JOB"  # a worker subprocess reads its job (JSON) from here
RDB_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")

Say = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet_optuna() -> None:
    # We print one line per trial ourselves; optuna would add a traceback per failed trial.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


# ---------------------------------------------------------------------------------------------
# Inputs: search space, storage


def canonical_space(params: dict[str, SearchParam]) -> dict[str, Any]:
    """The space as stored in the study (JSON round-tripped, so it compares equal after a reload)."""
    return json.loads(json.dumps({k: p.to_dict() for k, p in sorted(params.items())}))


def check_space_values(cfg: Config) -> dict[str, SearchParam]:
    """The checked space; every choice and bound must also make a valid config.

    Raises:
        ConfigError: one line listing each bad entry (empty space, bad type or range, invalid value).
    """
    errs: list[str] = []
    params = cfg.tune.search_params(errs)
    if errs:
        raise ConfigError("; ".join(errs))
    base = cfg.to_dict()
    for key, p in params.items():
        for value in p.choices if p.type == "categorical" else [p.low, p.high]:
            raw = json.loads(json.dumps(base))
            set_dotted(raw, key, value)
            try:
                config_from_dict(raw)
            except ConfigError as e:
                errs.append(f"tune.space.{key}: the value {value!r} makes an invalid config ({e})")
    if errs:
        raise ConfigError("; ".join(errs))
    return params


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def masked(url: str) -> str:
    """The URL without its password, for messages and best.json."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<storage URL>"


def check_storage_url(url: str) -> str:
    """Return the URL's backend name (sqlite, postgresql, ...).

    Raises:
        ConfigError: not a database URL, or not a relational database Optuna can use.
    """
    from sqlalchemy.engine import make_url

    try:
        backend = make_url(url).get_backend_name()
    except Exception:
        raise ConfigError(f"--storage {url!r} is not a database URL; use e.g. postgresql://user:pass@host:5432/db "
                          "or sqlite:////abs/path/study.db (default: an SQLite file in the study directory)") from None
    if backend not in RDB_BACKENDS:
        raise ConfigError(f"--storage {masked(url)!r}: '{backend}' is not a relational database; use a "
                          f"{', '.join(RDB_BACKENDS[:3])} URL such as postgresql://user:pass@host:5432/db")
    return backend


def with_installed_driver(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only that one is installed."""
    import importlib.util

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return u.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def make_storage(url: str, tune: Any) -> Any:
    """An RDBStorage with heartbeats: a trial whose worker stops beating is failed and retried.

    Raises:
        ConfigError: the database cannot be reached or its driver is not installed.
    """
    import sqlalchemy.exc

    backend = check_storage_url(url)
    url = with_installed_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 60}  # workers share the file: wait for its lock
    elif backend == "postgresql":
        engine_kwargs.update(connect_args={"connect_timeout": 10}, pool_pre_ping=True)
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeats and their retry callback are marked experimental
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=tune.max_retries)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=tune.heartbeat_interval,
                    grace_period=tune.grace_period, heartbeat_stale_trial_callback=retry,
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Two processes creating the tables of a fresh database at once: the loser retries.
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
        except sqlalchemy.exc.OperationalError as e:
            if "locked" in str(e) and attempt < 4:
                time.sleep(0.5 + attempt)
                continue
            reason = " ".join(str(e.orig).split())[:200] if getattr(e, "orig", None) else type(e).__name__
            raise ConfigError(f"cannot reach the study storage {masked(url)} ({reason}); check the host, port, "
                              "database name and credentials, or leave out --storage for a local SQLite file") from None
        except ImportError as e:
            cause = e.__cause__ or e
            raise ConfigError(f"the database driver for {masked(url)} is not installed ({cause}); "
                              "for PostgreSQL: pip install psycopg2-binary") from None
        except sqlalchemy.exc.ArgumentError as e:
            raise ConfigError(f"--storage {masked(url)} is not usable ({e})") from None
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Sampler and pruner


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose random draws depend only on (seed, trial number).

    One seeded TPE per worker would give every worker the same draws; seeding by trial number
    keeps a one-worker study reproducible and makes workers sharing a study draw differently.
    TPE keeps no state but its RNG (it reads the history from the storage), so a fresh one per
    trial loses nothing.
    """

    def __init__(self, seed: int, n_startup_trials: int) -> None:
        self.seed, self.n_startup_trials = seed, n_startup_trials
        self._current: tuple[int, optuna.samplers.TPESampler] | None = None

    def _tpe(self, trial: Any) -> optuna.samplers.TPESampler:
        if self._current is None or self._current[0] != trial.number:
            seed = int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0])
            self._current = (trial.number, optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials))
        return self._current[1]

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        return self._tpe(trial).sample_independent(study, trial, name, dist)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._tpe(trial).before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._tpe(trial).after_trial(study, trial, state, values)


def make_sampler(tune: Any) -> TrialSeededTPE:
    return TrialSeededTPE(tune.sampler_seed, tune.sampler_startup_trials)


def make_pruner(tune: Any, first_eval_step: int) -> Any:
    """The configured pruner; rung sizes are in optimizer steps, starting at the first evaluation."""
    min_resource = tune.min_resource or first_eval_step
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.pruner_startup_trials, n_warmup_steps=0)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=tune.reduction_factor)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource="auto", reduction_factor=tune.reduction_factor)
    return optuna.pruners.NopPruner()


def eval_interval(train_cfg: Any, n_train: int, points_per_epoch: int) -> int:
    """Optimizer steps between evaluations so an epoch (or max_steps, if shorter) has `points_per_epoch`."""
    per_epoch = steps_per_epoch(n_train, train_cfg.batch_size, train_cfg.grad_accum)
    span = min(per_epoch, train_cfg.max_steps) if train_cfg.max_steps else per_epoch
    return max(1, -(-span // max(1, points_per_epoch)))


# ---------------------------------------------------------------------------------------------
# The study and its trial count


def open_study(cfg: Config, storage: Any, params: dict[str, SearchParam], first_eval_step: int = 1) -> Any:
    """Create the study or load it; an existing study must have the same space and direction.

    Raises:
        ConfigError: the study exists with another search space or direction.
    """
    study = optuna.create_study(
        storage=storage, study_name=cfg.tune.study_name, direction=cfg.tune.direction, load_if_exists=True,
        sampler=make_sampler(cfg.tune), pruner=make_pruner(cfg.tune, first_eval_step),
    )
    space = canonical_space(params)
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, space)
    elif stored != space:
        changed = sorted(k for k in set(stored) | set(space) if stored.get(k) != space.get(k))
        raise ConfigError(f"study '{cfg.tune.study_name}' already exists in {masked(storage.url)} with a different search "
                          f"space (differs in: {', '.join(changed)}); use the same tune.space to resume it or a new --study-name")
    if study.direction.name.lower() != cfg.tune.direction:
        raise ConfigError(f"study '{cfg.tune.study_name}' exists with direction {study.direction.name.lower()}; "
                          f"tune.direction={cfg.tune.direction} cannot resume it; use a new --study-name")
    return study


def _retried(trials: list[Any]) -> set[int]:
    """Numbers of failed trials that a later trial retries (they no longer count)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted(trials: list[Any]) -> list[Any]:
    """Trials that count towards tune.trials: all but retried failures and surplus ones."""
    gone = _retried(trials)
    return [t for t in trials if not t.user_attrs.get("surplus") and not (t.state == TrialState.FAIL and t.number in gone)]


def finished(trials: list[Any]) -> list[Any]:
    """Counted trials that are over: complete, pruned, or failed without a retry."""
    return [t for t in counted(trials) if t.state.is_finished()]


# ---------------------------------------------------------------------------------------------
# One worker: the trial loop


@dataclasses.dataclass
class WorkerJob:
    """What a worker needs; JSON-serialisable so a subprocess can receive it."""

    config: dict[str, Any]
    study_dir: str
    storage: str
    worker: str = "w0"
    threads: int | None = None


def suggest(trial: Any, params: dict[str, SearchParam]) -> dict[str, Any]:
    """The trial's value for every dimension (an enqueued or retried trial gets its fixed values)."""
    values = {}
    for key, p in params.items():
        if p.type == "categorical":
            values[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return values


def apply_params(cfg: Config, values: dict[str, Any], **top: Any) -> Config:
    """A copy of `cfg` with `values` at their dotted paths (and top-level fields such as name/out), re-validated."""
    raw = cfg.to_dict()
    for key, value in values.items():
        set_dotted(raw, key, value)
    raw.update(top)
    return config_from_dict(raw)


def release_memory() -> None:
    """Free the last trial's model and optimizer before the next one is built."""
    gc.collect()  # the model sits in reference cycles (and a pruned trial's traceback) until collected
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_worker(job: WorkerJob, splits: Splits | None = None, say: Say = _say) -> int:
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
    from .train import train

    _quiet_optuna()
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
            metrics = train(tcfg, run_dir, overwrite=True, on_eval=on_eval, splits=splits, token_cache=token_cache)
            for k in ("val_accuracy", "val_loss", "epochs_run", "global_step"):
                trial.set_user_attr("steps_run" if k == "global_step" else k, metrics[k])
        except optuna.exceptions.UpdateFinishedTrialError:
            current["stale"] = True
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
        except Exception:
            # Another worker saw no heartbeat from this trial for tune.grace_period seconds (an
            # overloaded machine), failed it and queued its retry; optuna then cannot record this
            # run's result (the exception type varies). Anything else is a real error.
            mine = _trial_by_number(study, current.get("number"))
            if not (current.get("stale") or current.get("returned")) or mine is None or mine.state != TrialState.FAIL:
                raise
            say(f"[{job.worker}] trial {current.get('number')} was failed by another worker for a missed heartbeat "
                f"(tune.grace_period={cfg.tune.grace_period}s is too short for this machine); its retry runs instead")
            release_memory()
            continue
        release_memory()
        ran += 1
        t = _trial_by_number(study, current.get("number"))
        if t is not None and t.user_attrs.get("surplus"):
            continue
        if t is not None:
            say(f"[{job.worker}] {trial_line(t)}")
        write_experiment_log(study_dir, study, list(params))
        write_best(study_dir, study, cfg, job.storage)
    return ran


class _Surplus(Exception):
    """This trial would exceed tune.trials (another worker got there first)."""


def _trial_by_number(study: Any, number: int | None) -> Any:
    return next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)


def _requeue_interrupted(study: Any, number: int | None) -> None:
    """Ctrl-C/SIGTERM mid-trial: queue the trial again so a resumed study runs it (not counted as failed)."""
    t = _trial_by_number(study, number)
    if t is not None and t.state == TrialState.FAIL and not t.user_attrs.get("surplus"):
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, t)


def trial_line(t: Any) -> str:
    """One line about a finished trial."""
    state = t.state.name.lower()
    acc = t.user_attrs.get("val_accuracy")
    parts = [f"trial {t.number} {state}"]
    if acc is not None:
        parts.append(f"val_accuracy={acc:.4f}")
    if "pruned_step" in t.user_attrs:
        parts.append(f"at step {t.user_attrs['pruned_step']}")
    if t.duration is not None:
        parts.append(f"({t.duration.total_seconds():.1f}s)")
    if "error" in t.user_attrs:
        parts.append(f"error: {t.user_attrs['error']}")
    parts.append(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()))
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Outputs: experiment_log.csv, best.json, best.yaml, plots


def trial_rows(study: Any, keys: list[str]) -> list[dict[str, Any]]:
    """One row per trial of the study (surplus trials left out), by number."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        ua = t.user_attrs
        if ua.get("surplus"):
            continue
        history = t.system_attrs.get("retry_history", [])
        row = {"number": t.number, "state": t.state.name.lower()}
        row.update({f"param.{k}": t.params.get(k, "") for k in keys})
        row.update(
            val_accuracy=t.value if t.value is not None else ua.get("val_accuracy", ""),
            val_loss=ua.get("val_loss", ""),
            epochs_run=ua.get("epochs_run", ""),
            steps_run=ua.get("steps_run", ""),
            pruned_step=ua.get("pruned_step", ""),
            duration_s=round(t.duration.total_seconds(), 2) if t.duration is not None else "",
            run_dir=ua.get("run_dir", ""),
            worker=ua.get("worker", ""),
            retry_of=history[-1] if history else "",
            error=ua.get("error", ""),
        )
        rows.append(row)
    return rows


def write_experiment_log(study_dir: Path, study: Any, keys: list[str]) -> Path:
    """experiment_log.csv, replaced atomically (readers never see half a file)."""
    rows = trial_rows(study, keys)
    path = study_dir / LOG_CSV
    fields = list(rows[0]) if rows else ["number", "state"]
    with atomic_write(path, encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def best_config(cfg: Config, params: dict[str, Any]) -> Config:
    """The base config with the best trial's values: ready for `loraclf train --config best.yaml`."""
    return apply_params(cfg, params, name=f"{cfg.tune.study_name}-best", out=None)


def write_best(study_dir: Path, study: Any, cfg: Config, url: str, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """best.json and best.yaml for the best complete trial (None while no trial has completed)."""
    import yaml

    try:
        best = study.best_trial
    except ValueError:
        return None
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name.lower() for t in counted(trials)]
    info = {
        "study_name": study.study_name,
        "storage": masked(url),
        "number": best.number,
        "val_accuracy": best.value,
        "val_loss": best.user_attrs.get("val_loss"),
        "params": best.params,
        "run_dir": best.user_attrs.get("run_dir"),
        "trials": {s: states.count(s) for s in ("complete", "pruned", "fail", "running", "waiting")},
        **(extra or {}),
    }
    write_json(study_dir / "best.json", info)
    bcfg = best_config(cfg, best.params)
    with atomic_write(study_dir / "best.yaml") as f:
        f.write(f"# Best trial {best.number} of study '{study.study_name}': val_accuracy {best.value:.4f}.\n"
                f"#   loraclf train --config {study_dir / 'best.yaml'}\n")
        yaml.safe_dump(bcfg.to_dict(), f, sort_keys=False)
    return info


def write_plots(study_dir: Path, study: Any) -> dict[str, str]:
    """PNG plots (and HTML ones when plotly is installed); a plot the study cannot make yet is skipped."""
    import importlib.util

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as ov
    from optuna.visualization import matplotlib as ovm

    done: dict[str, str] = {}
    html = importlib.util.find_spec("plotly") is not None
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = getattr(ovm, f"plot_{name}")(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(9, 5.5)
                fig.tight_layout()
                with atomic_write(study_dir / f"{name}.png", "wb") as f:
                    fig.savefig(f, format="png", dpi=110)
                plt.close(fig)
                done[name] = str(study_dir / f"{name}.png")
                if html:
                    with atomic_write(study_dir / f"{name}.html") as f:
                        getattr(ov, f"plot_{name}")(study).write_html(f, include_plotlyjs="cdn")
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances need 2+ complete trials
            done[name] = f"skipped ({' '.join(str(e).split())[:120]})"
        finally:
            plt.close("all")
    return done


# ---------------------------------------------------------------------------------------------
# --train-best: retrain the winner, score the test split, write submission.csv


def train_best(cfg: Config, study_dir: Path, say: Say = _say) -> dict[str, Any]:
    """Train `cfg` into STUDY_DIR/best, predict the whole test split and write submission.csv (ID,Label).

    Returns:
        test_accuracy (when the test split has labels), test_rows, run_dir, submission.
    Raises:
        LoraclfError: no test split, bad data.
    """
    from .inference import Classifier
    from .metrics import compute_metrics, softmax
    from .predict import predictions_csv, write_predictions
    from .train import train

    run_dir = study_dir / "best"
    splits = load_splits(cfg.data, cfg.train.seed)
    say(f"training the best configuration into {run_dir}")
    metrics = train(dataclasses.replace(cfg, out=str(run_dir)), run_dir, overwrite=True, splits=dataclasses.replace(splits, test=None))
    # Every test row, not data.max_eval_rows of them: a submission answers the whole file.
    test = read_labeled(cfg.data.test_file, cfg.data, metrics["label_names"]) if cfg.data.test_file else splits.test
    if test is None:
        raise ConfigError("--train-best needs a test split; pass --test-file (or data.test_file)")
    clf = Classifier.from_run_dir(run_dir)
    logits = clf.logits(test.texts)
    names = clf.label_names
    del clf
    release_memory()
    path = study_dir / "submission.csv"
    write_predictions(path, predictions_csv(softmax(logits), names))
    out: dict[str, Any] = {"best_run_dir": str(run_dir), "submission": str(path), "test_rows": len(logits),
                           "best_val_accuracy_retrained": metrics["val_accuracy"]}
    if test.labels is not None:
        out["test_accuracy"] = compute_metrics(logits, test.labels, names)["accuracy"]
    return out


# ---------------------------------------------------------------------------------------------
# The command: check, open, run workers here or in subprocesses, report


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


def _spawn_workers(jobs: list[WorkerJob], say: Say) -> list[int]:
    """Start one `python -m loraclf.tune` per job (one GPU each when there are GPUs); wait for all."""
    gpus = _visible_gpus()
    procs = []
    for i, job in enumerate(jobs):
        env = dict(os.environ, **{JOB_ENV: json.dumps(dataclasses.asdict(job))})
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        procs.append(subprocess.Popen([sys.executable, "-m", "loraclf.tune"], env=env))
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


def run_study(cfg: Config, study_dir: str | Path | None = None, *, workers: int = 1, retrain_best: bool = False,
              say: Say = _say) -> dict[str, Any]:
    """Run (or resume) the study `cfg.tune` describes and write its outputs into `study_dir`.

    Args:
        cfg: validated base config; `cfg.tune` holds the study settings and the search space.
        study_dir: outputs (default studies/<study_name>).
        workers: trial processes to run on this machine (1: in this process).
        retrain_best: retrain the best configuration on the full training split, score the test split,
            write submission.csv.
        say: where progress lines go.
    Returns:
        A summary: study, storage, counts, best trial, output files.
    Raises:
        LoraclfError: bad space, storage, study, data or config; nothing is run.
    """
    _quiet_optuna()
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1")
    study_dir = Path(study_dir) if study_dir else Path("studies") / cfg.tune.study_name
    params = check_space_values(cfg)
    if retrain_best and cfg.data.train_file and not cfg.data.test_file:
        raise ConfigError("--train-best needs a test split to score and predict; pass --test-file (or data.test_file)")
    url = cfg.tune.storage or default_storage(study_dir)
    check_storage_url(url)
    if not cfg.tune.storage:
        study_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives here
    study = open_study(cfg, make_storage(url, cfg.tune), params)
    splits = load_splits(cfg.data, cfg.train.seed)  # bad data fails once, here, not in every worker
    study_dir.mkdir(parents=True, exist_ok=True)
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
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name.lower() for t in counted(trials)]
    summary["trials"] = {s: states.count(s) for s in ("complete", "pruned", "fail", "running", "waiting") if states.count(s)}
    if retrain_best:
        if best is None:
            raise LoraclfError(f"study '{cfg.tune.study_name}' has no complete trial yet; nothing to retrain (run more trials)")
        result = train_best(best_config(cfg, best["params"]), study_dir, say)
        summary["train_best"] = result
        write_best(study_dir, study, cfg, url, extra=result)
    return summary


def _worker_main() -> int:
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


if __name__ == "__main__":
    sys.exit(_worker_main())
