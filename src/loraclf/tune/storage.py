"""Where a study lives: storage URLs (default, checked, masked, driver) and the RDB storage with heartbeats.

The default is an SQLite file in the study directory; any relational database URL (PostgreSQL)
lets several processes and machines share one study.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from ..errors import ConfigError

RDB_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")


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


def make_storage(url: str, tune: Any) -> Any:
    """An RDBStorage with heartbeats: a trial whose worker stops beating is failed and retried.

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
