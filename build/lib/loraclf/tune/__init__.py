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

Modules, bottom to top: `space` (the search space), `storage` (URLs, RDB storage), `study`
(sampler, pruner, open, trial counting), `outputs` (experiment_log.csv, best.*, plots), `worker`
(the trial loop; `python -m loraclf.tune` runs one as a subprocess), `run` (the command).
"""
from .outputs import LOG_CSV, PLOTS, trial_line, trial_rows, write_best, write_experiment_log, write_plots
from .run import run_study, train_best
from .space import apply_params, best_config, canonical_space, check_space_values, suggest
from .storage import RDB_BACKENDS, check_storage_url, default_storage, make_storage, masked, sqlite_path, with_installed_driver
from .study import SPACE_ATTR, TrialSeededTPE, counted, eval_interval, finished, make_pruner, make_sampler, open_study
from .worker import JOB_ENV, TRIALS_DIR, Say, WorkerJob, release_memory, run_worker

__all__ = [
    "JOB_ENV", "LOG_CSV", "PLOTS", "RDB_BACKENDS", "SPACE_ATTR", "TRIALS_DIR", "Say", "TrialSeededTPE", "WorkerJob",
    "apply_params", "best_config", "canonical_space", "check_space_values", "check_storage_url", "counted",
    "default_storage", "eval_interval", "finished", "make_pruner", "make_sampler", "make_storage", "masked",
    "open_study", "release_memory", "run_study", "run_worker", "sqlite_path", "suggest", "train_best", "trial_line", "trial_rows",
    "with_installed_driver", "write_best", "write_experiment_log", "write_plots",
]
