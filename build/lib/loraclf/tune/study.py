"""The Optuna study: sampler, pruner, evaluation spacing, opening (or resuming) it, and counting its trials.

`tune.trials` counts the whole study: every trial but a failure that a retry replaced and a
surplus one that stood down. `finished` are the counted trials that are over; workers stop when
the study holds `tune.trials` of them.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ..batching import steps_per_epoch
from ..config import Config, SearchParam
from ..errors import ConfigError
from .space import canonical_space
from .storage import masked

SPACE_ATTR = "loraclf_space"  # study user attr: the canonical space, compared on every re-open
STATES = ("complete", "pruned", "fail", "running", "waiting")  # the states a study summary counts


def quiet_optuna() -> None:
    """We print one line per trial ourselves; optuna would add a traceback per failed trial."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


# ---------------------------------------------------------------------------------------------
# Sampler, pruner, evaluation spacing


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


def state_counts(trials: list[Any]) -> dict[str, int]:
    """Counted trials per state, for every state in STATES (zeros included)."""
    states = [t.state.name.lower() for t in counted(trials)]
    return {s: states.count(s) for s in STATES}


def trial_by_number(study: Any, number: int | None) -> Any:
    """The study's trial with this number, or None."""
    return next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
