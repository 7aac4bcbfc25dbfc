"""Where a study lives: storage URLs (default, checked, masked, driver) and the RDB storage with heartbeats.

The default is an SQLite file in the study directory; any relational database URL (PostgreSQL)
lets several processes and machines share one study. Every storage call retries SQLite's
"database is locked" with backoff (LockRetryingRDBStorage), not only the first connection.
"""
from __future__ import annotations

import functools
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna

from ..errors import ConfigError, LoraclfError

RDB_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
LOCK_WAIT_S = 300.0  # how long one storage call keeps retrying "database is locked" before giving up


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The database file of an sqlite:/// URL (None for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        return None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database).absolute()


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


class StorageLockedError(LoraclfError):
    """The study storage stayed locked (SQLite: another process writing) for LOCK_WAIT_S seconds."""


def is_locked_error(e: BaseException) -> bool:
    """True for SQLite's "database is locked" (SQLAlchemy OperationalError), bare or wrapped by optuna.

    RDBStorage turns every SQLAlchemy error inside a session into StorageInternalError `from` the original.
    """
    import sqlalchemy.exc

    seen: set[int] = set()
    err: BaseException | None = e
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, sqlalchemy.exc.OperationalError) and "locked" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


# Every RDBStorage method that opens its own session (those taking a session run inside another's
# transaction and must not be retried alone), including the private ones optuna's _CachedStorage calls.
RETRIED_METHODS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs", "get_all_studies",
    "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param", "get_trial_param",
    "get_trial_id_from_study_id_trial_number", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial_user_attrs", "get_trial_system_attrs", "get_trial",
    "get_all_trials", "_get_trials", "get_best_trial", "_get_best_trial_id", "record_heartbeat", "_get_stale_trial_ids",
)


def _retrying(name: str) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        method = getattr(optuna.storages.RDBStorage, name)  # looked up per call, so tests can fake it
        deadline, delay = None, 0.05
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as e:
                if not is_locked_error(e):
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.lock_wait_s
                if now >= deadline:
                    if name == "record_heartbeat":
                        return None  # a background beat: skip it, the next one tries again
                    raise StorageLockedError(
                        f"the study storage {masked(str(self.url))} stayed locked for {self.lock_wait_s:g}s ({name}); "
                        "another process is holding the SQLite file: stop it and re-run the same command to resume, "
                        "or use a PostgreSQL --storage for many workers") from None
                # The failed transaction was rolled back, so running the call again is safe.
                time.sleep(min(delay * random.uniform(0.5, 1.0), max(0.0, deadline - now)))
                delay = min(delay * 2, 2.0)

    return functools.wraps(getattr(optuna.storages.RDBStorage, name))(call)


class LockRetryingRDBStorage(optuna.storages.RDBStorage):
    """RDBStorage whose every call retries SQLite's "database is locked", with backoff, for `lock_wait_s` seconds.

    SQLite lets one writer in at a time and answers some conflicts at once, without waiting for the busy
    timeout; without this, a lock hit by trial.report or study.tell mid-trial would fail the trial. Still an
    RDBStorage, so optuna wraps it in its trial cache and sends it heartbeats as usual.
    """

    lock_wait_s = LOCK_WAIT_S


for _name in RETRIED_METHODS:
    if hasattr(optuna.storages.RDBStorage, _name):  # tests check that every name is there
        setattr(LockRetryingRDBStorage, _name, _retrying(_name))


def make_storage(url: str, tune: Any) -> Any:
    """An RDBStorage with heartbeats (a trial whose worker stops beating is failed and retried) that retries
    "database is locked" on every call (LockRetryingRDBStorage).

    Args:
        url: the database URL (checked here).
        tune: `cfg.tune` (heartbeat_interval, grace_period, max_retries).
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
                return LockRetryingRDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=tune.heartbeat_interval,
                    grace_period=tune.grace_period, heartbeat_stale_trial_callback=retry,
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Two processes creating the tables of a fresh database at once: the loser retries.
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
        except sqlalchemy.exc.OperationalError as e:
            # "locked": another process is writing; "already exists": it created the tables of a fresh
            # SQLite file between our check and our CREATE TABLE. Both pass once it is done.
            if ("locked" in str(e) or "already exists" in str(e)) and attempt < 4:
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
